"""Peer implementations of the paper-exact verify step, for the batch benchmarks.

Both take the arrays ``verify_batch`` takes -- ``draft`` (B, K, V), ``target``
(B, K+1, V) (row K gives the bonus token), ``tokens`` (B, K) -- and return what
it returns: ``(tokens, num_emitted, num_accepted)`` with ``tokens`` (B, K+1)
int64 padded with -1.  The algorithm is the papers' (Leviathan et al. 2023,
Chen et al. 2023): draft i is accepted when ``u_i < p_i(t_i) / q_i(t_i)``; at
the first rejection the correction is drawn from ``max(0, p_i - q_i)``
normalised; when all K pass, a bonus token is drawn from ``target[:, K]``.

``numpy_verify``  NumPy, vectorised over the batch (one Python-level loop of
                  B ``searchsorted`` calls for the inverse-CDF draws).
``torch_verify``  PyTorch on CPU, a batched version of the logic of Hugging
                  Face transformers' ``_speculative_sampling`` (written from a
                  reading of it, not copied): ``torch.rand``, probability
                  ratio, cumulative sum of rejections, residual by
                  ``clamp(min=0)`` and normalisation, ``torch.multinomial``.

torch is optional: ``torch_verify`` raises ``RuntimeError`` when it is absent
(``HAVE_TORCH`` says which).  The peers are for benchmarking and for the
distribution check in ``test_batch.py``; they do no input validation.
"""
from typing import NamedTuple

import numpy as np

try:  # optional peer
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

HAVE_TORCH = torch is not None

__all__ = ["HAVE_TORCH", "PeerResult", "numpy_verify", "torch_verify"]


class PeerResult(NamedTuple):
    """Same fields and layout as ``specdec_fast.VerifyResult``."""

    tokens: np.ndarray        #: (B, K+1) int64: emitted tokens, then -1
    num_emitted: np.ndarray   #: (B,) int64
    num_accepted: np.ndarray  #: (B,) int64


def _assemble(tokens, n, sampled, K):
    """(B, K+1) output: the accepted drafts, the sampled token at column n, then -1."""
    B = tokens.shape[0]
    out = np.full((B, K + 1), -1, dtype=np.int64)
    keep = np.arange(K) < n[:, None]
    out[:, :K][keep] = tokens[keep]
    out[np.arange(B), n] = sampled
    n = n.astype(np.int64, copy=False)
    return PeerResult(out, n + 1, n)


def _inverse_cdf(dist, u):
    """One draw per row of the non-negative rows ``dist`` (R, V), in place.

    ``dist`` is overwritten by its cumulative sums; the row total normalises
    the draw (token j is the first with ``cumsum_j > u * total``), so the rows
    need not sum to 1.  A row whose total is 0 raises.
    """
    R, V = dist.shape
    c = np.cumsum(dist, axis=1, out=dist)
    totals = c[:, -1]
    if R and not (totals > 0).all():
        raise ValueError("a row to sample from has no mass")
    x = u * totals
    idx = np.empty(R, dtype=np.int64)
    for r in range(R):
        idx[r] = np.searchsorted(c[r], x[r], side="right")
    # u * total can round up to total: take the last token with mass then.
    for r in np.flatnonzero(idx >= V):
        row = c[r]
        idx[r] = int(np.searchsorted(row, row[-1], side="left"))
    return idx


def numpy_verify(draft, target, tokens, rng):
    """The verify step in NumPy, vectorised over the batch.

    ``rng`` is a ``numpy.random.Generator``; each call draws B*K accept
    uniforms and B sampling uniforms from it.  Arithmetic is in the inputs'
    dtype (float32 stays float32).
    """
    draft = np.asarray(draft)
    target = np.asarray(target)
    tokens = np.asarray(tokens, dtype=np.intp)
    B, K, V = draft.shape
    rows = np.arange(B)
    b_idx = rows[:, None]
    k_idx = np.arange(K)[None, :]
    p_tok = target[b_idx, k_idx, tokens]              # (B, K) gathers
    q_tok = draft[b_idx, k_idx, tokens]
    u = rng.random((B, K))
    with np.errstate(divide="ignore", invalid="ignore"):
        # q == 0 is a certain rejection (the papers' rule; never hit when the
        # drafts were sampled from q).
        accept = (q_tok > 0) & (u < p_tok / q_tok)
    n = np.cumprod(accept, axis=1).sum(axis=1)        # first rejection, or K
    rejected = n < K

    # One (B, V) gather of the rows to sample from, rejected rows first so that
    # they form a contiguous block the residual is computed on in place.
    order = np.argsort(~rejected, kind="stable")
    R = int(rejected.sum())
    dist = target[order, n[order]]                    # p_n (rejected) / p_K (bonus)
    if R:
        head = dist[:R]
        np.subtract(head, draft[order[:R], n[order[:R]]], out=head)
        np.maximum(head, 0, out=head)                 # residual max(0, p - q)
    sampled = np.empty(B, dtype=np.int64)
    sampled[order] = _inverse_cdf(dist, rng.random(B))
    return _assemble(tokens, n, sampled, K)


def torch_verify(draft, target, tokens, generator=None):
    """The verify step in PyTorch (CPU), batched Hugging Face style.

    Takes NumPy arrays or tensors (NumPy inputs are wrapped without a copy);
    ``generator`` is a ``torch.Generator`` (or None for torch's default).
    Returns NumPy arrays, like ``numpy_verify``.
    """
    if torch is None:
        raise RuntimeError("torch is not installed")
    with torch.no_grad():
        q = torch.as_tensor(draft)
        p = torch.as_tensor(target)
        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        B, K, V = q.shape
        # Probabilities of the candidate tokens under both models.
        q_i = q.gather(-1, ids.unsqueeze(-1)).squeeze(-1)          # (B, K)
        p_i = p[:, :K].gather(-1, ids.unsqueeze(-1)).squeeze(-1)   # (B, K)
        probability_ratio = p_i / q_i
        r_i = torch.rand(probability_ratio.shape, generator=generator,
                         dtype=probability_ratio.dtype)
        is_accepted = r_i <= probability_ratio
        # Number of leading accepts: rejections counted cumulatively.
        n_matches = ((~is_accepted).cumsum(dim=-1) < 1).sum(dim=-1)  # (B,)
        rows = torch.arange(B)
        p_next = p[rows, n_matches]                                  # (B, V)
        q_next = q[rows, n_matches.clamp(max=K - 1)]
        p_prime = torch.clamp(p_next - q_next, min=0)
        p_prime.div_(p_prime.sum(dim=-1, keepdim=True))
        rejected = (n_matches < K).unsqueeze(-1)
        p_prime = torch.where(rejected, p_prime, p_next)
        t = torch.multinomial(p_prime, num_samples=1, generator=generator).squeeze(1)
    return _assemble(ids.numpy(), n_matches.numpy(), t.numpy(), K)
