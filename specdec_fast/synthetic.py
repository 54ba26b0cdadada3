"""Synthetic (target, draft) distributions with a chosen acceptance rate, exactly.

The target is Zipf-like, ``p[v] ~ (rank(v) + 1) ** -exponent``.  The draft is
the target mixed with a "wrong" distribution ``r`` that ranks the vocabulary
the other way round (its mass sits on the target's rarest tokens, with a
steeper exponent ``2 * exponent``):

    q = w p + (1 - w) r.

For a mixture, ``min(p, q) = p`` where ``r >= p`` and ``p - (1 - w)(p - r)``
where ``r < p``, so

    alpha(w) = sum_v min(p[v], q[v]) = 1 - (1 - w) d,   d = sum_v max(0, p[v] - r[v]),

linear in ``w``; ``w = 1 - (1 - alpha) / d`` gives ``alpha`` exactly (up to
the rounding of the sums, about ``V * 1e-16``).  The smallest reachable alpha
is the overlap ``1 - d`` of ``p`` and ``r`` at ``w = 0`` (``min_alpha``): about
0.0095 for V = 1,000 and 0.001 for V = 32,000 at the default exponent 1.1.

Because the positions of a verify step are independent, the number of tokens a
step emits depends on the pairs only through their acceptance rates; the shape
of the family matters only for which tokens come out.
"""
import numpy as np

from specdec_fast._rng import Rng
from specdec_fast.theory import _int, _real

__all__ = ["zipf", "zipf_pair", "zipf_rows", "min_alpha"]


def zipf(V, exponent=1.1, *, rng=None):
    """A Zipf-like distribution over ``V`` tokens: ``p[v] ~ (rank(v) + 1) ** -exponent``.

    ``rng`` None: rank ``v`` is token ``v`` (token 0 the most likely);
    otherwise (an int seed, an ``Rng`` or a ``numpy.random.Generator``) the
    ranks are a random permutation of the tokens.
    """
    V = _int(V, "V", 1)
    s = _real(exponent, "exponent", 0.0)
    weights = np.arange(1, V + 1, dtype=np.float64) ** -s
    p = weights / weights.sum()
    perm = _permutation(V, rng)
    return p if perm is None else p[np.argsort(perm)]


def min_alpha(V, exponent=1.1):
    """The smallest acceptance rate ``zipf_pair(V, alpha, exponent)`` can reach."""
    return _overlap(*_target_and_wrong(_int(V, "V", 1), _real(exponent, "exponent", 0.0)))


def zipf_pair(V, alpha, exponent=1.1, *, rng=None):
    """``(p, q)``: a Zipf-like target and a draft with ``sum(min(p, q)) == alpha``.

    Both are float64 arrays of ``V`` probabilities summing to 1; ``alpha`` in
    ``[min_alpha(V, exponent), 1]``.  ``rng`` permutes the token ids of both
    (see ``zipf``); the acceptance rate does not depend on it.
    """
    V = _int(V, "V", 1)
    s = _real(exponent, "exponent", 0.0)
    a = _real(alpha, "alpha", 0.0, 1.0)
    p, r = _target_and_wrong(V, s)
    overlap = _overlap(p, r)
    if a < overlap:
        raise ValueError(f"alpha={a!r} is below {overlap:.4g}, the smallest this family "
                         f"reaches at V={V}, exponent={s} (a larger V or exponent reaches lower)")
    d = float(np.maximum(p - r, 0.0).sum())
    # d == 0: p == r (V = 1 or exponent 0), so q = p whatever w, and alpha = 1.
    w = min(max(1.0 - (1.0 - a) / d, 0.0), 1.0) if d > 0.0 else 1.0
    q = w * p + (1.0 - w) * r
    perm = _permutation(V, rng)
    if perm is not None:
        inverse = np.argsort(perm)
        p, q = p[inverse], q[inverse]
    return p, q


def zipf_rows(V, alphas, exponent=1.1, *, rng=None, bonus=True):
    """Inputs for ``simulate``: ``(draft (K, V), target (K + 1, V))`` with per-position alphas.

    Row ``i`` is ``zipf_pair(V, alphas[i], exponent)`` (each row with its own
    token permutation when ``rng`` is given); the target's last row, the
    bonus row, is ``zipf(V, exponent)``.  ``bonus=False`` returns a ``(K, V)``
    target instead.
    """
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"alphas must be 1-D (one per position), got shape {a.shape}")
    gen = _numpy_generator(rng)
    pairs = [zipf_pair(V, float(x), exponent, rng=gen) for x in a]
    V = _int(V, "V", 1)
    draft = np.array([q for _, q in pairs]).reshape(len(a), V)
    target = [p for p, _ in pairs]
    if bonus:
        target.append(zipf(V, exponent, rng=gen))
    return draft, np.array(target).reshape(len(target), V)


# --------------------------------------------------------------------------

def _target_and_wrong(V, s):
    p = np.arange(1, V + 1, dtype=np.float64) ** -s
    p /= p.sum()
    r = np.arange(V, 0, -1, dtype=np.float64) ** -(2.0 * s)
    r /= r.sum()
    return p, r


def _overlap(p, r):
    """``sum(min(p, r))``; at most 1, which rounding can exceed when ``p == r``."""
    return min(float(np.minimum(p, r).sum()), 1.0)


def _numpy_generator(rng):
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Rng):
        return np.random.default_rng(Rng.next_uint64(rng))      # its own draw, not an override
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(_int(rng, "rng"))
    raise TypeError("rng must be None, an int seed, an Rng or a numpy Generator, "
                    f"not {type(rng).__name__}")


def _permutation(V, rng):
    gen = _numpy_generator(rng)
    return None if gen is None else gen.permutation(V)
