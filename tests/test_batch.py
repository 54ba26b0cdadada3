"""``specdec_fast.verify_batch``: the batched verify step, held to its semantics.

What is checked, row by row (B sequences, K drafts, V tokens):

- semantics="reference" + uniforms U: row b is the pure-Python reference run
  on (draft[b][:n_b], target[b], tokens[b][:n_b], V) inside replaying(U[b]):
  same tokens, num_emitted == reference num_accepted, num_accepted == number
  of drafts that passed their accept test (R1-R8).
- semantics="exact" + uniforms U: row b equals the drop-in with
  semantics="exact" and uniforms=U[b], and an independent Python model of the
  papers' algorithm (q == 0 is a certain rejection, bonus only when every draft
  passed, at most K+1 uniforms).
- draft_probs=None (one-hot drafts), greedy=True, ragged rows, determinism
  (threads, splits, per-row seeds, sequences of Rng), out=, input layouts and
  dtypes, bad input, and that a failed call writes nothing outside its outputs.
- Statistics (exact semantics, the library's own generator, drafts sampled from
  q by NumPy): every emitted position is distributed as p; the number of emitted
  tokens is the truncated geometric law.

Chi-square critical values use the Wilson-Hilferty approximation (no scipy).
Every statistical test uses fixed seeds, so it always passes or always fails;
with fresh seeds each chi-square / z check would fail falsely with probability
about ALPHA = 1e-4 (the docstrings give the per-test rate).
"""
import array
import math
import os
import pickle
import re
import sys
import threading
import time
from statistics import NormalDist

import numpy as np
import pytest

import specdec_fast
from specdec_fast import Rng, VerifyResult, verify_batch
from conftest import (FIVE_P as P5, FIVE_Q as Q5, FIVE_TOKENS as T5, READ_ACCEPT,
                      READ_REJECT, U_ACCEPT, U_REJECT, UNREAD_ACCEPT, UNREAD_REJECT,
                      adversarial_uniforms, make_case, plain_uniforms, random_row, run_python,
                      run_reference)

drop_in = specdec_fast.speculative_decode_sim

ALPHA = 1e-4
Z_TWO_SIDED = NormalDist().inv_cdf(1.0 - ALPHA / 2.0)        # ~3.89


# --------------------------------------------------------------------------
# Helpers: an independent Python model, batch builders, statistics.

def model(draft, target, tokens, V, U, exact):
    """The verify step written out plainly (Python floats, the reference's own arithmetic).

    ``draft`` None means one-hot drafts.  ``exact`` False follows the reference
    rules R1-R8; True the papers' algorithm (q == 0 -> residual sample with one
    uniform; bonus only when every draft was accepted).  Returns
    ``(tokens, accepted, uniforms_used)``.
    """
    K = len(tokens)
    out, accepted, used = [], 0, 0

    def draw():
        nonlocal used
        u = U[used]
        used += 1
        return u

    for i in range(K):
        t = tokens[i]
        qrow = draft[i] if draft is not None else [1.0 if v == t else 0.0 for v in range(V)]
        p, q = target[i][t], qrow[t]
        if q == 0 and not exact:
            return out, accepted, used                       # R2
        if q != 0:
            if draw() < min(1.0, p / q):                     # R3
                out.append(t)
                accepted += 1
                continue
        a = [max(0.0, target[i][v] - qrow[v]) for v in range(V)]
        z = sum(a)
        a = [x / z for x in a] if z > 0 else [1.0 / V] * V
        u2, cum, token = draw(), 0.0, 0
        for v in range(V):
            cum += a[v]
            if u2 <= cum:
                token = v
                break
        out.append(token)
        break
    if len(target) > K and (accepted == K or (not exact and len(out) == K)):
        u, cum, token = draw(), 0.0, 0
        for v in range(V):
            cum += target[K][v]
            if u <= cum:
                token = v
                break
        out.append(token)
    return out, accepted, used


def onehot_rows(tokens, V):
    return [[1.0 if v == t else 0.0 for v in range(V)] for t in tokens]


def build_batch(seed, B, K, V, R, dtype=np.float64, p_equals_q=0.0):
    """A ragged batch of random cases (conftest.make_case rows) and replay uniforms.

    Rows past n_b + 1 of the target, rows past n_b of the draft are NaN, and
    tokens past n_b are out of range: none of them may be read.  Returns
    ``draft, target, tokens, counts, U`` with U of shape (B, K + 2).
    """
    g = np.random.default_rng(seed)
    draft = np.full((B, K, V), np.nan)
    target = np.full((B, R, V), np.nan)
    tokens = np.empty((B, K), dtype=np.int64)
    counts = np.empty(B, dtype=np.int64)
    for b in range(B):
        n = K if g.random() < 0.5 else int(g.integers(0, K + 1))
        d, t, toks, _ = make_case(g, K=n, V=V)
        counts[b] = n
        draft[b, :n] = d
        rows = min(R, n + 1)
        for i in range(rows):
            target[b, i] = t[i] if i < len(t) else random_row(g, V)
        for i in range(n):
            if g.random() < p_equals_q:
                target[b, i] = draft[b, i]
        tokens[b, :n] = toks
        tokens[b, n:] = g.choice([-3, V, V + 11, 10**9], size=K - n)
    draft, target = draft.astype(dtype), target.astype(dtype)
    U = np.empty((B, K + 2))
    for b in range(B):
        n = counts[b]
        if b % 2:
            U[b] = plain_uniforms(g, K + 2)
        else:
            u = adversarial_uniforms(g, draft[b, :n].tolist(), target[b].tolist(),
                                     tokens[b, :n].tolist(), V)
            U[b, :n + 2] = u
            U[b, n + 2:] = g.random(K - n)
    return draft, target, tokens, counts, U


def row_args(draft, target, tokens, counts, b, onehot=False):
    """Row b as the reference sees it: Python lists, drafts and tokens cut to n_b."""
    n = int(counts[b])
    toks = [int(t) for t in tokens[b, :n]]
    d = onehot_rows(toks, target.shape[2]) if onehot else draft[b, :n].tolist()
    return d, target[b].tolist(), toks


def assert_row(result, b, tokens, emitted, accepted):
    W = result.tokens.shape[1]
    assert result.num_emitted[b] == emitted == len(tokens), b
    assert result.tokens[b, :emitted].tolist() == list(tokens), b
    assert (result.tokens[b, emitted:] == -1).all(), b
    assert result.num_accepted[b] == accepted, b
    assert emitted <= W


def assert_same_result(a, b):
    assert isinstance(a, VerifyResult) and isinstance(b, VerifyResult)
    for x, y in zip(a, b):
        assert x.dtype == np.int64 and y.dtype == np.int64
        np.testing.assert_array_equal(x, y)


def chi2_critical(df, alpha=ALPHA):
    """Upper ``alpha`` quantile of chi-square(df), Wilson-Hilferty (slightly conservative)."""
    z = NormalDist().inv_cdf(1.0 - alpha)
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def assert_distributed_as(counts, probs, label=""):
    """Chi-square goodness of fit at level ALPHA; zero-probability categories must be empty."""
    counts = np.asarray(counts, dtype=float)
    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum()
    n = counts.sum()
    zero = probs == 0
    assert counts[zero].sum() == 0, f"{label}: categories of probability 0 occurred"
    expected = n * probs[~zero]
    assert expected.min() >= 5, f"{label}: test design: too few expected counts"
    df = int((~zero).sum()) - 1
    assert df >= 1, f"{label}: test design: too few categories"
    stat = float(((counts[~zero] - expected) ** 2 / expected).sum())
    assert stat < chi2_critical(df), f"{label}: chi2 = {stat:.1f} with df = {df}"


def assert_rate(successes, trials, prob, label=""):
    """Two-sided normal test of a binomial proportion at level ALPHA."""
    se = math.sqrt(prob * (1.0 - prob) / trials)
    diff = successes / trials - prob
    if se == 0.0:
        assert diff == 0.0, label
    else:
        assert abs(diff) < Z_TWO_SIDED * se, f"{label}: {successes}/{trials} vs {prob}"


def normalise(x):
    x = np.asarray(x, dtype=float)
    return x / x.sum()


def simple_batch(seed=0, B=6, K=3, V=5, R=None, dtype=np.float64):
    """A small dense valid batch: draft (B,K,V), target (B,R,V), tokens (B,K)."""
    g = np.random.default_rng(seed)
    R = K + 1 if R is None else R
    draft = g.random((B, K, V)) + 0.05
    draft /= draft.sum(-1, keepdims=True)
    target = g.random((B, R, V)) + 0.05
    target /= target.sum(-1, keepdims=True)
    tokens = g.integers(0, V, (B, K))
    return draft.astype(dtype), target.astype(dtype), tokens


def test_wilson_hilferty_matches_known_quantiles():
    """The approximation is at or above exact 0.9999 quantiles (scipy.stats.chi2.ppf), within 8%."""
    exact = {1: 15.1367, 3: 21.1075, 4: 23.5127, 7: 29.8775, 19: 50.7955}
    for df, value in exact.items():
        assert value <= chi2_critical(df) <= value * 1.08


def test_model_is_the_reference_under_reference_semantics():
    """Sanity: the Python model used below reproduces the reference on random cases."""
    g = np.random.default_rng(99)
    for _ in range(300):
        draft, target, tokens, V = make_case(g)
        U = adversarial_uniforms(g, draft.tolist(), target.tolist(), tokens, V)
        ref, used = run_reference(draft.tolist(), target.tolist(), tokens, V, U)
        toks, _, m_used = model(draft.tolist(), target.tolist(), tokens, V, U, exact=False)
        assert toks == ref["tokens"] and m_used == used


# --------------------------------------------------------------------------
# Semantics, row by row, against the reference, the model and the drop-in.

CASES = [  # (K, V, R - K)
    (4, 1, 1), (3, 6, 0), (6, 7, 1), (2, 40, 1), (5, 3, 0), (1, 700, 1), (0, 5, 1),
    (0, 4, 0), (16, 9, 1), (1, 2500, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("K, V, extra", CASES)
def test_reference_semantics_rows_equal_the_reference(K, V, extra, dtype):
    """semantics="reference": each row is the reference run in replaying(U[b]) (R1-R8)."""
    B = 120 if V < 100 else 30 if V < 1000 else 10
    draft, target, tokens, counts, U = build_batch(1000 * K + V, B, K, V, K + extra, dtype)
    res = verify_batch(draft, target, tokens, uniforms=U, num_draft_tokens=counts,
                       semantics="reference")
    assert res.tokens.shape == (B, K + 1)      # R6 emits at most K + 1 tokens
    for b in range(B):
        d, t, toks = row_args(draft, target, tokens, counts, b)
        ref, _ = run_reference(d, t, toks, V, U[b].tolist())
        _, accepted, _ = model(d, t, toks, V, U[b].tolist(), exact=False)
        assert_row(res, b, ref["tokens"], ref["num_accepted"], accepted)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("K, V, extra", CASES)
def test_exact_semantics_rows_equal_drop_in_and_model(K, V, extra, dtype):
    """semantics="exact": row b == drop-in(semantics="exact", uniforms=U[b]) == the model."""
    B = 120 if V < 100 else 30 if V < 1000 else 10
    draft, target, tokens, counts, U = build_batch(7 + 1000 * K + V, B, K, V, K + extra, dtype)
    U1 = np.ascontiguousarray(U[:, :K + 1])           # exact never needs more than K+1
    res = verify_batch(draft, target, tokens, uniforms=U1, num_draft_tokens=counts,
                       semantics="exact")
    assert res.tokens.shape == (B, K + 1)
    for b in range(B):
        d, t, toks = row_args(draft, target, tokens, counts, b)
        expect, accepted, used = model(d, t, toks, V, U1[b].tolist(), exact=True)
        assert used <= K + 1
        dropped = drop_in(np.array(d, dtype=np.float64).reshape(len(toks), V), t, toks, V,
                          uniforms=U1[b], semantics="exact")
        assert dropped["tokens"] == expect
        assert_row(res, b, expect, len(expect), accepted)


@pytest.mark.parametrize("semantics", ["reference", "exact"])
@pytest.mark.parametrize("K, V, extra", [(3, 6, 1), (5, 2, 0), (2, 300, 1), (0, 3, 1),
                                         (2, 1100, 1)])
def test_one_hot_drafts_equal_reference_with_one_hot_rows(K, V, extra, semantics):
    """draft_probs=None is the reference/model run with one-hot draft rows at the drafted tokens."""
    B = 100 if V < 100 else 30 if V < 1000 else 10
    _, target, tokens, counts, U = build_batch(31 + K * V, B, K, V, K + extra)
    res = verify_batch(None, target, tokens, uniforms=U, num_draft_tokens=counts,
                       semantics=semantics)
    for b in range(B):
        d, t, toks = row_args(None, target, tokens, counts, b, onehot=True)
        expect, accepted, _ = model(d, t, toks, V, U[b].tolist(), exact=semantics == "exact")
        if semantics == "reference":
            ref, _ = run_reference(d, t, toks, V, U[b].tolist())
            assert ref["tokens"] == expect
        assert_row(res, b, expect, len(expect), accepted)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("V", [2, 3, 8, 33, 100, 1500])
def test_one_hot_none_equals_explicit_one_hot_draft_rows(V, dtype):
    """draft_probs=None gives exactly what draft_probs = one-hot rows at the drafted tokens
    gives, for drafted tokens at the ends of the row and of its blocks (0, 31, 32, V-1, ...).

    Calls are made one drafted token at a time (all rows the same token), in sequence, as a
    caller would; a result that depended on memory left over by an earlier call shows here.
    """
    g = np.random.default_rng(V)
    B, K = 400, 2
    target = g.random((B, K + 1, V)) ** 3
    target /= target.sum(-1, keepdims=True)
    target = target.astype(dtype)
    specials = sorted({0, 1, 31, 32, 63, 64, 1023, 1024, V // 2, V - 2, V - 1} & set(range(V)))
    for t in specials:
        tokens = np.full((B, K), t)
        tokens[::3, 1] = g.integers(0, V, len(tokens[::3]))
        onehot = np.zeros((B, K, V), dtype=dtype)
        onehot[np.arange(B)[:, None], np.arange(K), tokens] = 1.0
        for semantics in ("exact", "reference"):
            implicit = verify_batch(None, target, tokens, rng=Rng(t), semantics=semantics)
            explicit = verify_batch(onehot, target, tokens, rng=Rng(t), semantics=semantics)
            assert_same_result(implicit, explicit)


def test_long_rows_with_high_acceptance():
    """K = 80 (longer than the drop-in's stack buffers): long accept chains and bonus tokens."""
    K, V, B = 80, 4, 24
    for semantics, extra in (("reference", 2), ("exact", 1)):
        draft, target, tokens, counts, U = build_batch(5, B, K, V, K + 1, p_equals_q=0.97)
        res = verify_batch(draft, target, tokens, uniforms=U[:, :K + extra],
                           num_draft_tokens=counts, semantics=semantics)
        for b in range(B):
            d, t, toks = row_args(draft, target, tokens, counts, b)
            expect, accepted, _ = model(d, t, toks, V, U[b].tolist(),
                                        exact=semantics == "exact")
            assert_row(res, b, expect, len(expect), accepted)
        assert res.num_emitted.max() >= 20                  # the long chains happened


def test_r6_bonus_after_last_position_rejection():
    """R6 example: K=2, position 1 rejects: reference emits [t0, correction, bonus]; exact stops."""
    q = [0.5, 0.5, 0.0]
    p = [0.2, 0.1, 0.7]
    draft = np.array([[q, q]])
    target = np.array([[p, p, [0.0, 0.0, 1.0]]])
    tokens = np.array([[0, 1]])
    U = np.array([[0.0, 0.9, 0.5, 0.5]])       # accept t0 (0 < 0.4), reject t1 (0.9 >= 0.2)
    ref = verify_batch(draft, target, tokens, uniforms=U, semantics="reference")
    assert ref.tokens.tolist() == [[0, 2, 2]]
    assert ref.num_emitted.tolist() == [3] and ref.num_accepted.tolist() == [1]
    exact = verify_batch(draft, target, tokens, uniforms=U[:, :3], semantics="exact")
    assert exact.tokens.tolist() == [[0, 2, -1]]
    assert exact.num_emitted.tolist() == [2] and exact.num_accepted.tolist() == [1]


def test_q_zero_draft_exact_vs_reference():
    """R2: q(t) == 0 stops the reference with nothing; exact rejects with ONE uniform (residual)."""
    draft = np.array([[[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]]])
    target = np.array([[[0.6, 0.3, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]]])
    tokens = np.array([[0, 2]])
    ref = verify_batch(draft, target, tokens, uniforms=np.zeros((1, 0)), semantics="reference")
    assert ref.tokens.tolist() == [[-1] * 3]
    assert ref.num_emitted.tolist() == [0] and ref.num_accepted.tolist() == [0]
    # Residual max(0, p - q) = [0.6, 0, 0] / 0.6: token 0 for any u; one uniform is enough.
    exact = verify_batch(draft, target, tokens, uniforms=np.array([[0.99]]), semantics="exact")
    assert exact.tokens.tolist() == [[0, -1, -1]]
    assert exact.num_emitted.tolist() == [1] and exact.num_accepted.tolist() == [0]
    # A q == 0 draft later in the row: accepted position 0, then a certain rejection.
    draft2 = np.array([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])
    target2 = np.array([[[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]]])
    ex2 = verify_batch(draft2, target2, np.array([[1, 2]]), uniforms=np.array([[0.3, 0.5]]))
    assert ex2.tokens.tolist() == [[1, 2, -1]] and ex2.num_accepted.tolist() == [1]
    with pytest.raises(ValueError, match="uniforms"):      # needs exactly the two
        verify_batch(draft2, target2, np.array([[1, 2]]), uniforms=np.array([[0.3]]))


def test_uniform_budgets():
    """Exact never needs more than K+1 uniforms; reference may need K+2 (R8) and says so."""
    K, V, B = 3, 5, 200
    draft, target, tokens, counts, U = build_batch(77, B, K, V, K + 1)
    verify_batch(draft, target, tokens, uniforms=U[:, :K + 1], num_draft_tokens=counts)
    verify_batch(draft, target, tokens, uniforms=U, num_draft_tokens=counts,
                 semantics="reference")
    needs = [model(*row_args(draft, target, tokens, counts, b), V, U[b].tolist(), False)[2]
             for b in range(B)]
    b = int(np.argmax(np.array(needs) == counts + 2))
    assert needs[b] == counts[b] + 2, "test design: no row used K+2 uniforms"
    with pytest.raises(ValueError, match=r"uniforms\[0\]"):
        verify_batch(draft[b:b + 1], target[b:b + 1], tokens[b:b + 1],
                     uniforms=U[b:b + 1, :needs[b] - 1], num_draft_tokens=counts[b:b + 1],
                     semantics="reference")


def test_invariants_on_a_large_random_batch():
    """Padding with -1, tokens in [0, V), accepted tokens are the drafts, emitted <= W."""
    B, K, V = 3000, 5, 11
    g = np.random.default_rng(3)
    draft, target, tokens = simple_batch(3, B, K, V)
    counts = g.integers(0, K + 1, B)
    for semantics, W in (("exact", K + 1), ("reference", K + 1)):
        res = verify_batch(draft, target, tokens, rng=Rng(3), num_draft_tokens=counts,
                           semantics=semantics)
        ne, na = res.num_emitted, res.num_accepted
        assert res.tokens.shape == (B, W)
        cols = np.arange(W)
        assert ((res.tokens == -1) == (cols >= ne[:, None])).all()
        assert ((res.tokens >= 0) & (res.tokens < V) | (cols >= ne[:, None])).all()
        assert (na <= counts).all() and (na <= ne).all()
        assert (res.tokens[:, :K] == tokens)[cols[:K] < na[:, None]].all()
        if semantics == "exact":           # q > 0 everywhere and a bonus row: always progress
            assert (ne == na + 1).all()


# --------------------------------------------------------------------------
# Greedy.

def greedy_model(target, tokens, n):
    out, acc = [], 0
    for i in range(n):
        a = int(np.argmax(target[i]))
        out.append(a)
        if a != tokens[i]:
            return out, acc
        acc += 1
    if target.shape[0] > n:
        out.append(int(np.argmax(target[n])))
    return out, acc


@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("with_draft", [True, False])
@pytest.mark.parametrize("extra", [0, 1])
def test_greedy_is_argmax_with_lowest_index_on_ties(semantics, with_draft, extra):
    """greedy: accept while draft == argmax (lowest on ties), emit argmax at mismatch, bonus argmax."""
    g = np.random.default_rng(extra + 2 * with_draft)
    B, K, V = 400, 4, 6
    target = g.integers(0, 4, (B, K + extra, V)) / 8.0          # many ties
    target[:, :, 0] += 1e-300 * (g.random((B, K + extra)) < 0.1)
    draft = np.zeros((B, K, V))                                 # q == 0 everywhere: ignored
    tokens = np.where(g.random((B, K)) < 0.75, np.argmax(target[:, :K], -1),
                      g.integers(0, V, (B, K)))
    counts = g.integers(0, K + 1, B)
    rng = Rng(11)
    state = rng.state
    res = verify_batch(draft if with_draft else None, target, tokens, greedy=True, rng=rng,
                       num_draft_tokens=counts, semantics=semantics)
    assert rng.state == state                                   # no randomness consumed
    for b in range(B):
        expect, acc = greedy_model(target[b], tokens[b], counts[b])
        assert_row(res, b, expect, len(expect), acc)
    assert (res.num_accepted == counts).any() and (res.num_accepted < counts).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_greedy_long_rows(dtype):
    """V = 3000 (several blocks): the argmax, lowest index on ties, tie placed late and early."""
    g = np.random.default_rng(7)
    B, K, V = 40, 3, 3000
    target = (g.integers(0, 50, (B, K + 1, V)) / 64.0).astype(dtype)
    target[::2, :, 2999] = 1.0
    target[::4, :, 1500] = 1.0
    tokens = np.where(g.random((B, K)) < 0.8, np.argmax(target[:, :K], -1), 5)
    res = verify_batch(None, target, tokens, greedy=True)
    for b in range(B):
        expect, acc = greedy_model(target[b], tokens[b], K)
        assert_row(res, b, expect, len(expect), acc)


def test_greedy_consumes_no_randomness_from_any_source():
    draft, target, tokens = simple_batch(4)
    B = len(tokens)
    rngs = [Rng(s) for s in range(B)]
    states = [r.state for r in rngs]
    a = verify_batch(draft, target, tokens, greedy=True, rng=rngs)
    assert [r.state for r in rngs] == states
    specdec_fast.seed(5)
    before = specdec_fast.get_default_rng().state
    b = verify_batch(draft, target, tokens, greedy=True)
    assert specdec_fast.get_default_rng().state == before
    assert_same_result(a, b)
    assert (a.num_emitted >= 1).all()


# --------------------------------------------------------------------------
# Ragged rows.

def test_ignored_tail_does_not_change_a_row():
    """Tokens, drafts and target rows past n_b (+1) never matter, even out of range or NaN."""
    draft, target, tokens = simple_batch(8, B=50, K=6, V=7)
    counts = np.random.default_rng(8).integers(0, 7, 50)
    seeds = np.arange(50) + 1000
    a = verify_batch(draft, target, tokens, rng=seeds, num_draft_tokens=counts)
    mask = np.arange(6) >= counts[:, None]
    tok2 = tokens.copy()
    tok2[mask] = np.where(np.arange(mask.sum()) % 2, -7, 10**12)
    d2, t2 = draft.copy(), target.copy()
    d2[mask] = -1.0
    t2[np.arange(7) > counts[:, None]] = np.nan
    b = verify_batch(d2, t2, tok2, rng=seeds, num_draft_tokens=counts)
    assert_same_result(a, b)
    assert (a.num_accepted <= counts).all()


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_out_of_range_tokens_past_n_b_are_ignored_for_every_dtype(dtype):
    """Tokens past n_b are ignored whatever their value, also beyond intp (uint64 >= 2**63)."""
    draft, target, tokens = simple_batch(9, B=3, K=3, V=4)
    tokens = tokens.astype(dtype)
    tokens[1, 2] = np.iinfo(dtype).max
    counts = np.array([3, 2, 3])
    res = verify_batch(draft, target, tokens, rng=[1, 2, 3], num_draft_tokens=counts)
    ok = verify_batch(draft, target, tokens.astype(np.int64) % 4, rng=[1, 2, 3],
                      num_draft_tokens=counts)
    assert_same_result(res, ok)


def test_zero_rows_and_zero_counts():
    draft, target, tokens = simple_batch(10, B=4, K=3, V=5)
    res = verify_batch(draft, target, tokens, uniforms=np.full((4, 1), 0.5),
                       num_draft_tokens=np.zeros(4, dtype=np.int32))
    for b in range(4):                                   # R7: only the bonus from row 0
        expect, _, _ = model([], target[b].tolist(), [], 5, [0.5], exact=True)
        assert_row(res, b, expect, 1, 0)
    empty = verify_batch(draft[:0], target[:0], tokens[:0], rng=1)
    assert empty.tokens.shape == (0, 4) and empty.num_emitted.shape == (0,)
    assert empty.num_accepted.shape == (0,)


# --------------------------------------------------------------------------
# Randomness: streams, threads, splits, seeds, Rng sequences.

def test_rng_streams_are_the_documented_ones():
    """rng=Rng(s): row b draws from Rng(key_b), key_b = Rng(s).next_uint64(B)[b];
    rng=(B,) seeds: row b's uniforms are Rng(seeds[b]).random(...) in order."""
    B, K, V = 40, 4, 6
    draft, target, tokens, counts, _ = build_batch(12, B, K, V, K + 1)
    keys = Rng(123).next_uint64(B)
    by_rng = verify_batch(draft, target, tokens, rng=Rng(123), num_draft_tokens=counts,
                          semantics="reference")
    by_int = verify_batch(draft, target, tokens, rng=123, num_draft_tokens=counts,
                          semantics="reference")
    by_keys = verify_batch(draft, target, tokens, rng=keys, num_draft_tokens=counts,
                           semantics="reference")
    U = np.stack([Rng(int(k)).random(K + 2) for k in keys])
    by_uniforms = verify_batch(draft, target, tokens, uniforms=U, num_draft_tokens=counts,
                               semantics="reference")
    for other in (by_int, by_keys, by_uniforms):
        assert_same_result(by_rng, other)
    assert len(set(map(tuple, by_rng.tokens.tolist()))) > 5


def test_default_generator_is_used_and_advanced_by_B():
    draft, target, tokens = simple_batch(13, B=30)
    specdec_fast.seed(77)
    a = verify_batch(draft, target, tokens)
    after = specdec_fast.get_default_rng().state
    expected = Rng(77)
    expected.next_uint64(30)
    assert after == expected.state
    assert_same_result(a, verify_batch(draft, target, tokens, rng=Rng(77)))


def test_generator_advances_so_the_next_call_differs():
    draft, target, tokens = simple_batch(14, B=200)
    rng = Rng(5)
    a = verify_batch(draft, target, tokens, rng=rng)
    b = verify_batch(draft, target, tokens, rng=rng)
    assert not np.array_equal(a.tokens, b.tokens)


@pytest.mark.parametrize("source", ["rng", "seeds", "uniforms", "greedy"])
@pytest.mark.parametrize("semantics", ["exact", "reference"])
def test_results_do_not_depend_on_num_threads(source, semantics):
    B, K, V = 3001, 4, 9
    draft, target, tokens = simple_batch(15, B, K, V)
    counts = np.random.default_rng(15).integers(0, K + 1, B)
    kw = {"rng": dict(rng=Rng(1)), "seeds": dict(rng=np.arange(B, dtype=np.uint64) * 7),
          "uniforms": dict(uniforms=np.random.default_rng(1).random((B, K + 2))),
          "greedy": dict(greedy=True)}[source]
    results = []
    for threads in (1, 2, 4, 64):
        if source == "rng":
            kw = dict(rng=Rng(1))
        results.append(verify_batch(draft, target, tokens, num_draft_tokens=counts,
                                    semantics=semantics, num_threads=threads, **kw))
    for r in results[1:]:
        assert_same_result(results[0], r)
    assert results[0].num_emitted.sum() > B


def test_splitting_a_batch_equals_one_call():
    """Sub-batches called in sequence with the same Rng give what one call gives."""
    B, K, V = 1000, 3, 7
    draft, target, tokens = simple_batch(16, B, K, V)
    counts = np.random.default_rng(16).integers(0, K + 1, B)
    one_rng, split_rng = Rng(9), Rng(9)
    whole = verify_batch(draft, target, tokens, rng=one_rng, num_draft_tokens=counts,
                         num_threads=2)
    parts = []
    for lo, hi in ((0, 1), (1, 300), (300, 300), (300, 1000)):
        parts.append(verify_batch(draft[lo:hi], target[lo:hi], tokens[lo:hi], rng=split_rng,
                                  num_draft_tokens=counts[lo:hi], num_threads=1))
    joined = VerifyResult(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    assert_same_result(whole, joined)
    assert one_rng.state == split_rng.state


# A batch and run(threads), its tokens, for the scripts below.
BATCH_SCRIPT = """
import numpy as np
from specdec_fast import verify_batch

g = np.random.default_rng(5)
B, K, V = 16, 3, 64
draft = g.dirichlet(np.ones(V), (B, K))
target = g.dirichlet(np.ones(V), (B, K + 1))
tokens = g.integers(0, V, (B, K))
def run(threads):
    return verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=threads).tokens
want = run(1)
"""

FORKED_CHILD = BATCH_SCRIPT + """
import os, signal, sys
assert (run(2) == want).all()               # the parent's pool threads now exist
pid = os.fork()
if pid == 0:
    signal.alarm(30)                        # a hung child dies of SIGALRM
    os._exit(0 if (run(2) == want).all() else 1)
_, status = os.waitpid(pid, 0)
sys.exit(f"child status {status}" if status else 0)
"""


AT_SHUTDOWN = BATCH_SCRIPT + """
import atexit, threading, time
def late():
    time.sleep(0.3)                         # past the main thread's end: shutdown has begun
    print("thread", (run(2) == want).all(), flush=True)
threading.Thread(target=late).start()
atexit.register(lambda: print("atexit", (run(2) == want).all(), flush=True))
"""


def test_threads_work_while_the_interpreter_shuts_down(tmp_path):
    """A decoding thread still running when the main thread ends, or an atexit handler,
    can call verify_batch with threads: the pool's daemon threads still serve, and the
    calling thread runs what they have not started.  Needs two or more CPUs to use the
    pool at all."""
    done = run_python(AT_SHUTDOWN, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert sorted(done.stdout.split("\n")) == ["", "atexit True", "thread True"], done.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_threads_work_in_a_forked_child(tmp_path):
    """A process forked after verify_batch started its worker threads (a multiprocessing
    worker, by default on Linux before 3.14) gets a pool of its own: the parent's
    threads do not exist in the child, and a call waiting on them would hang.  Needs
    two or more CPUs to start the pool at all (with one, it passes trivially)."""
    done = run_python(FORKED_CHILD, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def counting_runs(monkeypatch, runs, before=None):
    """Record each ``verify_rows`` run as (its out.tokens, start, stop), calling
    ``before(out_tokens)`` first when given."""
    from specdec_fast import _batch
    verify_rows = _batch.verify_rows

    def counted(*args):
        runs.append((args[8], *args[-2:]))
        if before is not None:
            before(args[8])
        return verify_rows(*args)
    monkeypatch.setattr(_batch, "verify_rows", counted)


def recording_state_kinds(monkeypatch):
    """A list that gets (type of the states, start, stop) of each ``verify_rows`` run:
    an ndarray of states, or the tuple of generators advanced in place."""
    from specdec_fast import _batch
    verify_rows = _batch.verify_rows
    seen = []

    def recording(*args):
        seen.append((type(args[4]), int(args[-2]), int(args[-1])))
        return verify_rows(*args)
    monkeypatch.setattr(_batch, "verify_rows", recording)
    return seen


def ranges_run_into(out_tokens, runs):
    return sorted((int(start), int(stop)) for o, start, stop in runs if o is out_tokens)


def drain_pool():
    """Return once every pool thread has finished all that was queued before."""
    from specdec_fast import batch
    pool = batch._pool
    everyone = threading.Barrier(pool.threads + 1)
    for _ in range(pool.threads):
        pool.put(everyone.wait)
    everyone.wait(timeout=60)


@pytest.mark.parametrize("can_start", [0, 1])
def test_worker_threads_that_cannot_start_leave_their_ranges_to_the_calling_thread(
        monkeypatch, can_start):
    """When worker threads cannot start (a process thread limit; none, or only one of
    three), the call still gives what one thread gives, each range runs once, and
    nothing of the call runs after it returned: not once threads start again either."""
    from specdec_fast import batch
    B = 12
    draft, target, tokens = simple_batch(36, B=B, K=3, V=6)
    want = verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=1)
    runs = []
    counting_runs(monkeypatch, runs)
    start = threading.Thread.start
    started = []

    def limited_start(thread):
        if len(started) == can_start:
            raise RuntimeError("can't start new thread")
        started.append(thread)
        start(thread)
    monkeypatch.setattr(batch, "_MAX_THREADS", 4)
    monkeypatch.setattr(batch, "_pool", None)          # a fresh pool, whose threads must start
    monkeypatch.setattr(threading.Thread, "start", limited_start)
    out = tuple(np.full_like(w, -7) for w in want)
    got = verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=4, out=out)
    assert_same_result(got, want)
    returned = tuple(o.copy() for o in out)
    monkeypatch.setattr(threading.Thread, "start", start)
    later = verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=4)
    assert_same_result(later, want)
    drain_pool()
    assert_same_result(VerifyResult(*out), VerifyResult(*returned))
    assert ranges_run_into(out[0], runs) == [(0, 3), (3, 6), (6, 9), (9, 12)]


def test_a_call_that_raises_leaves_none_of_its_ranges_to_run_later(monkeypatch):
    """A call whose own range raises while its other ranges wait behind busy pool
    threads (another call's) takes them back: none of them runs, then or later."""
    from specdec_fast import batch
    B = 12
    draft, target, tokens = simple_batch(37, B=B, K=3, V=6)
    busy_out = tuple(np.empty_like(w) for w in
                     verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=1))
    blocked, release = threading.Semaphore(0), threading.Event()
    caller = threading.current_thread()

    def before(out_tokens):
        if out_tokens is busy_out[0]:
            blocked.release()
            release.wait(60)
        elif threading.current_thread() is caller:
            raise MemoryError
    runs = []
    counting_runs(monkeypatch, runs, before)
    monkeypatch.setattr(batch, "_MAX_THREADS", 3)
    monkeypatch.setattr(batch, "_pool", None)
    busy = threading.Thread(target=verify_batch, args=(draft, target, tokens),
                            kwargs=dict(rng=np.arange(B), num_threads=3, out=busy_out))
    busy.start()
    try:
        for _ in range(3):                  # the busy call's three ranges, two on pool threads
            assert blocked.acquire(timeout=60)
        out = tuple(np.full_like(o, -7) for o in busy_out)
        with pytest.raises(MemoryError):
            verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=3, out=out)
    finally:
        release.set()
        busy.join(60)
    drain_pool()
    assert all((o == -7).all() for o in out)
    assert ranges_run_into(out[0], runs) == [(0, 4)]


def interrupted_at(n, call):
    """Run ``call`` on a thread of its own whose profiler raises KeyboardInterrupt at the
    ``n``-th event in ``specdec_fast/batch.py`` (where a signal handler's exception can
    land: a call's entry and return, a C function's return); returns the events counted
    and how the call ended: "returned" (when it had fewer events: the path through the
    hand-over depends on timing), "interrupted", or "hung" (still running after 10 s)."""
    from specdec_fast import batch
    seen, ended = [], []

    def profile(frame, event, arg):
        if frame.f_code.co_filename == batch.__file__ and event in ("call", "return", "c_return"):
            seen.append(event)
            if len(seen) == n:
                raise KeyboardInterrupt

    def run():
        sys.setprofile(profile)
        try:
            call()
            ended.append("returned")
        except KeyboardInterrupt:
            ended.append("interrupted")
        finally:
            sys.setprofile(None)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    return len(seen), (ended or ["hung"])[0]


@pytest.mark.parametrize("workers", ["idle", "busy"])
def test_an_interrupt_anywhere_in_a_call_leaves_it_ended_and_the_pool_serving(
        monkeypatch, workers):
    """A KeyboardInterrupt (any exception a signal handler raises) at each point of the
    hand-over in turn, with the pool thread free to take the handed range or busy with
    another call's: the call ends at once, and the pool still serves later calls (no
    worker left blocked on a lock the interrupted thread held)."""
    from specdec_fast import batch
    B = 256
    draft, target, tokens = simple_batch(38, B=B, K=4, V=2048)
    want = verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=1)
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)

    def call():
        hold = threading.Event()
        try:
            if workers == "busy":
                batch._pool.put(hold.wait)
            return verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=2)
        finally:
            hold.set()
    verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=2)   # starts the pool
    events, ended = interrupted_at(0, call)
    assert ended == "returned"
    for n in range(1, events + 1):
        seen, ended = interrupted_at(n, call)
        assert ended == "interrupted" or (ended == "returned" and seen < n), (n, ended)
        served = threading.Event()
        batch._pool.put(served.set)
        assert served.wait(10), f"the pool thread is stuck after an interrupt at event {n}"
        assert_same_result(call(), want)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_anywhere_in_a_call_on_generators_leaves_none_of_them_held(monkeypatch):
    """rng=[Rng...] with a KeyboardInterrupt at each point of the call in turn: afterwards
    another thread can draw from every generator at once (none is left held), and
    each is where a call leaves it: as it was, or, when the interrupt came after
    the write-back (or not at all), advanced by the call's draws."""
    from specdec_fast import batch
    B = 64
    draft, target, tokens = simple_batch(40, B=B, K=4, V=2048)
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)
    verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=2)   # starts the pool
    start = [Rng(500 + b).state for b in range(B)]
    done = [Rng(500 + b) for b in range(B)]
    want = verify_batch(draft, target, tokens, rng=done, num_threads=1)
    end = [g.state for g in done]

    def call(rngs, out):
        out.append(verify_batch(draft, target, tokens, rng=rngs, num_threads=2))
    events, ended = interrupted_at(0, lambda: call([Rng(500 + b) for b in range(B)], []))
    assert ended == "returned" and events > 10
    for n in range(1, events + 1):
        rngs = [Rng(500 + b) for b in range(B)]
        out = []
        _, ended = interrupted_at(n, lambda: call(rngs, out))
        assert ended in ("interrupted", "returned"), (n, ended)
        states = [g.state for g in rngs]
        drawer = threading.Thread(target=lambda: [g.random() for g in rngs], daemon=True)
        drawer.start()
        drawer.join(10)
        assert not drawer.is_alive(), f"a generator is still held after an interrupt at event {n}"
        assert states in (start, end), n
        if ended == "returned":     # an exception raised at some events is swallowed
            assert states == end
            assert_same_result(out[0], want)


@pytest.mark.parametrize("started", [True, False])
def test_an_interrupted_thread_start_neither_loses_nor_doubles_a_worker(monkeypatch, started):
    """A KeyboardInterrupt out of Thread.start, after the thread started or before: the
    call raises it, and the next call leaves the pool with exactly its one worker."""
    from specdec_fast import batch
    B = 8
    draft, target, tokens = simple_batch(39, B=B, K=3, V=6)
    want = verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=1)
    start = threading.Thread.start

    def interrupted_start(thread):
        if started:
            start(thread)
        raise KeyboardInterrupt
    before = set(threading.enumerate())
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)
    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=2)
    monkeypatch.setattr(threading.Thread, "start", start)
    assert_same_result(verify_batch(draft, target, tokens, rng=np.arange(B), num_threads=2), want)
    assert len(set(threading.enumerate()) - before) == 1


def test_per_row_seeds_row_alone_equals_row_in_shuffled_mixed_batch():
    """rng=(B,) seeds: a row's tokens depend on its inputs and seed only (not slot, not company)."""
    B, K, V = 60, 5, 8
    draft, target, tokens, counts, _ = build_batch(17, B, K, V, K + 1)
    seeds = np.random.default_rng(17).integers(0, 2**63, B)
    perm = np.random.default_rng(18).permutation(B)
    for semantics in ("exact", "reference"):
        mixed = verify_batch(draft[perm], target[perm], tokens[perm], rng=seeds[perm],
                             num_draft_tokens=counts[perm], semantics=semantics)
        for j, b in enumerate(perm):
            n = int(counts[b])
            alone = verify_batch(draft[b:b + 1, :n], target[b:b + 1, :n + 1],
                                 tokens[b:b + 1, :n], rng=seeds[b:b + 1], semantics=semantics)
            assert_row(mixed, j, alone.tokens[0, :alone.num_emitted[0]].tolist(),
                       alone.num_emitted[0], alone.num_accepted[0])


def test_sequence_of_rngs_are_advanced_by_what_each_row_drew():
    """rng=[Rng(s_b)]: first call == rng=seeds; each Rng ends where row b's draws left it;
    a second call continues the streams (different tokens)."""
    B, K, V = 50, 4, 6
    draft, target, tokens, counts, _ = build_batch(19, B, K, V, K + 1)
    seeds = np.arange(B, dtype=np.uint64) + 555
    rngs = [Rng(int(s)) for s in seeds]
    first = verify_batch(draft, target, tokens, rng=rngs, num_draft_tokens=counts,
                         semantics="reference")
    assert_same_result(first, verify_batch(draft, target, tokens, rng=seeds,
                                           num_draft_tokens=counts, semantics="reference"))
    for b in range(B):
        U = Rng(int(seeds[b])).random(K + 2).tolist()
        _, _, used = model(*row_args(draft, target, tokens, counts, b), V, U, exact=False)
        fresh = Rng(int(seeds[b]))
        fresh.random(used)
        assert rngs[b].state == fresh.state, b
    second = verify_batch(draft, target, tokens, rng=tuple(rngs), num_draft_tokens=counts,
                          semantics="reference")
    assert not np.array_equal(first.tokens, second.tokens)
    for b in range(B):                               # the second call used the continued streams
        cont = Rng(int(seeds[b]))
        U = cont.random(2 * K + 4)
        _, _, used = model(*row_args(draft, target, tokens, counts, b), V, U.tolist(), False)
        d, t, toks = row_args(draft, target, tokens, counts, b)
        expect, acc, _ = model(d, t, toks, V, U[used:].tolist(), exact=False)
        assert_row(second, b, expect, len(expect), acc)


def test_sequence_of_rngs_shared_with_a_drawing_thread():
    """While verify_batch advances rng=[Rng...], another thread draws from one of
    them: every value of the stream goes to exactly one of the two, and the
    generator ends after both.  (The rows draw from copies of the states without the
    GIL; were the generators not held meanwhile, the thread would get the row's
    draws again, and writing the copies back would drop the thread's: thousands of
    them in this test.)  The batch takes about ten milliseconds here, and the
    thread waits for it.  Deterministic: the assertions hold whenever the thread
    draws."""
    B, K, V = 600, 4, 1 << 16
    g = np.random.default_rng(8)
    p = g.random(V) + 0.01
    p /= p.sum()
    q = np.full(V, 0.01 / V)
    q[:4] += 0.99 / 4                      # drafts at tokens 0..3: p / q tiny, first rejected
    target = np.broadcast_to(p, (B, K + 1, V))
    draft = np.broadcast_to(q, (B, K, V))
    tokens = np.tile(np.arange(K), (B, 1))
    rngs = [Rng(1000 + b) for b in range(B)]
    shared = B // 2
    start_state = rngs[shared].state
    drawn, started, stop = [], threading.Event(), threading.Event()

    def draw():
        while not stop.is_set():
            drawn.append(rngs[shared].random())
            started.set()

    drawer = threading.Thread(target=draw)
    drawer.start()
    try:
        assert started.wait(60)
        res = verify_batch(draft, target, tokens, rng=rngs, num_threads=2)
        n_after_call = len(drawn)
        while len(drawn) < n_after_call + 100:  # the thread goes on drawing after the call
            assert drawer.is_alive()
            stop.wait(0.001)
    finally:
        stop.set()
        drawer.join()
    n = len(drawn)
    stream = Rng(0)
    stream.state = start_state
    T = stream.random(n + K + 2).tolist()
    o = next((i for i in range(n) if drawn[i] != T[i]), n)   # the row drew T[o:o + c]
    fits = [c for c in range(1, K + 3) if drawn == T[:o] + T[o + c:n + c]]
    assert fits, (o, n)
    c = fits[0]
    after = Rng(0)
    after.state = start_state
    after.random(n + c)
    assert rngs[shared].state == after.state
    row = Rng(0)
    row.state = start_state
    row.random(o)
    alone = verify_batch(draft[:1], target[:1], tokens[:1], rng=[row])
    assert_row(res, shared, alone.tokens[0, :alone.num_emitted[0]].tolist(),
               alone.num_emitted[0], alone.num_accepted[0])


def test_empty_rng_sequence_for_empty_batch():
    """A sequence of B Rng with B == 0 is the empty list."""
    draft, target, tokens = simple_batch(20)
    res = verify_batch(draft[:0], target[:0], tokens[:0], rng=[])
    assert res.tokens.shape == (0, 4)


def test_sequence_of_rngs_runs_over_threads_on_copies_of_the_states(monkeypatch):
    """rng=[Rng...] with num_threads: the rows run in ranges, each handed the (B, 4)
    copies of the states (not the generators, advanced in place with the GIL held),
    and the result and the final states equal those of one thread."""
    seen = recording_state_kinds(monkeypatch)
    B, K, V = 400, 4, 6
    draft, target, tokens, counts, _ = build_batch(21, B, K, V, K + 1)
    results, states = [], []
    for threads in (1, 2, 4):
        rngs = [Rng(1000 + b) for b in range(B)]
        seen.clear()
        results.append(verify_batch(draft, target, tokens, rng=rngs, num_draft_tokens=counts,
                                    num_threads=threads))
        states.append([r.state for r in rngs])
        n = min(threads, os.cpu_count() or 1)
        assert sorted(seen) == [(np.ndarray, b * B // n, (b + 1) * B // n) for b in range(n)]
    for r, st in zip(results[1:], states[1:]):
        assert_same_result(results[0], r)
        assert st == states[0]
    assert states[0] != [Rng(1000 + b).state for b in range(B)]
    assert_same_result(results[0], verify_batch(draft, target, tokens, rng=1000 + np.arange(B),
                                                num_draft_tokens=counts))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_call_that_raises_leaves_the_generators_as_they_were(threads):
    """A bad value found in the last row (after every other row drew): no generator
    moves, and the same call on good values then starts from the same states."""
    B, K, V = 300, 3, 5
    draft, target, tokens = simple_batch(22, B, K, V)
    bad = target.copy()
    bad[-1, :, :] = np.nan
    rngs = [Rng(7 + b) for b in range(B)]
    before = [r.state for r in rngs]
    with pytest.raises(ValueError, match=rf"target_probs\[{B - 1}\]\[0\]"):
        verify_batch(draft, bad, tokens, rng=rngs, num_threads=threads)
    assert [r.state for r in rngs] == before
    good = verify_batch(draft, target, tokens, rng=rngs, num_threads=threads)
    assert_same_result(good, verify_batch(draft, target, tokens, rng=7 + np.arange(B)))


class Reentrant:
    """A number the drop-in reads through its ``__float__``, which runs ``action`` in
    the middle of the call."""

    def __init__(self, value, action):
        self.value, self.action = value, action

    def __float__(self):
        self.action()
        return self.value


def test_generators_a_drop_in_call_is_drawing_from_are_advanced_in_place(monkeypatch):
    """User code run by speculative_decode_sim(rng=g) calls verify_batch with g: the
    drop-in draws from g in place, so the batch does too, in one range with the GIL
    held (were the drop-in on another thread, a copy written back would drop its
    draws).  The drop-in then draws on from where the batch left g; a batch that
    raises there leaves g as it was."""
    seen = recording_state_kinds(monkeypatch)
    B, K, V = 3, 2, 4
    draft, target, tokens = simple_batch(23, B, K, V)
    g, h = Rng(31), Rng(32)
    inside = {}

    def action():
        if inside:
            return                  # the entry is read again if the draft is rejected
        twin_g, twin_h = Rng(0), Rng(0)
        twin_g.state, twin_h.state = g.state, h.state
        inside["want"] = verify_batch(draft, target, tokens, rng=[twin_g, twin_h, Rng(1)])
        before = g.state, h.state
        bad = draft.copy()
        bad[-1] = np.nan                    # found after rows 0 and 1 drew from g and h
        with pytest.raises(ValueError, match=rf"draft_probs\[{B - 1}\]"):
            verify_batch(bad, target, tokens, rng=[g, h, Rng(1)])
        assert (g.state, h.state) == before
        seen.clear()
        inside["got"] = verify_batch(draft, target, tokens, rng=[g, h, Rng(1)], num_threads=2)
        assert seen == [(tuple, 0, B)]
        assert (g.state, h.state) == (twin_g.state, twin_h.state)
        inside["after"] = g.state

    p = [[0.25, 0.25, 0.25, 0.25]]
    q = [[0.5, 0.5, 0.0, 0.0]]
    result = drop_in(q, [[0.25, Reentrant(0.25, action), 0.25, 0.25], p[0]], [1], 4, rng=g)
    assert_same_result(inside["want"], inside["got"])
    follow = Rng(0)
    follow.state = inside["after"]
    assert result == drop_in(q, [[0.25, 0.25, 0.25, 0.25], p[0]], [1], 4, rng=follow)
    assert g.state == follow.state


def test_a_held_generator_waits_for_the_call_and_raises_on_its_own_thread():
    """While a call holds [g, h] (``hold_states``), another thread's g.random() waits
    for it; on the holding thread every use raises RuntimeError (waiting would never
    end).  ``release(True)`` writes the copies back; a second release does nothing."""
    from specdec_fast._rng import hold_states
    g, h = Rng(3), Rng(4)
    h_before = h.state
    hold = hold_states((g, h))
    got = []
    waiter = threading.Thread(target=lambda: got.append(g.random()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and got == []
    draft, target, tokens = simple_batch(24, B=1)
    uses = [lambda: g.random(), lambda: g.random(3), lambda: h.next_uint64(), lambda: g.jump(),
            lambda: g.state, lambda: setattr(g, "state", h_before), lambda: g.__init__(5),
            lambda: pickle.dumps(g), lambda: drop_in(draft[0], target[0], tokens[0], 5, rng=g),
            lambda: verify_batch(draft, target, tokens, rng=[h]),
            lambda: verify_batch(draft, target, tokens, rng=g)]
    for use in uses:
        with pytest.raises(RuntimeError, match="held by a verify_batch call on this thread"):
            use()
    assert repr(g) == f"Rng(state={Rng(3).state['s']}, held by a verify_batch call)"
    hold.states[0] = Rng(99).state["s"]
    hold.release(True)
    waiter.join(60)
    assert got == [Rng(99).random()]
    assert h.state == h_before
    hold.release(False)
    assert h.state == h_before and g.random() == Rng(99).random(2)[1]


def test_threads_a_holding_call_may_wait_for_raise_instead_of_waiting(monkeypatch):
    """Code run (by the GC, a profiler) on a thread that a call holding generators may be
    waiting for must not wait for that call: a pool thread, and a thread holding
    generators of its own (two of those could wait for each other), get RuntimeError.
    Once the second thread lets go, the first thread waits for the other's hold again."""
    from specdec_fast import batch
    from specdec_fast._rng import hold_states
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)
    draft, target, tokens = simple_batch(26, B=64, V=1024)
    verify_batch(draft, target, tokens, rng=np.arange(64), num_threads=2)   # starts the pool
    assert batch._pool.threads == 1
    g, h = Rng(13), Rng(14)
    mine = hold_states((g,))
    errors, done = [], threading.Event()

    def on_pool_thread():
        try:
            g.random()
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            done.set()
    batch._pool.put(on_pool_thread)
    assert done.wait(60)
    assert errors == ["this Rng is held by a verify_batch call, which this thread cannot "
                      "wait for: it is a verify_batch worker thread"]
    took, go, released = threading.Event(), threading.Event(), threading.Event()

    def other_holder():
        theirs = hold_states((h,))
        took.set()
        try:
            g.random()
        except RuntimeError as exc:
            errors.append(str(exc))
        go.wait(60)
        theirs.release(False)
        released.set()
    other = threading.Thread(target=other_holder)
    other.start()
    assert took.wait(60)
    with pytest.raises(RuntimeError, match="it holds generators for a call of its own"):
        h.random()
    go.set()
    assert released.wait(60)
    other.join(60)
    assert errors[1:] == ["this Rng is held by a verify_batch call, which this thread cannot "
                          "wait for: it holds generators for a call of its own"]
    mine.release(False)
    assert (g.random(), h.random()) == (Rng(13).random(), Rng(14).random())
    took.clear()

    def holder():                           # holds g for 0.2 s, then writes Rng(50)'s state
        theirs = hold_states((g,))
        took.set()
        threading.Event().wait(0.2)
        theirs.states[0] = Rng(50).state["s"]
        theirs.release(True)
    other = threading.Thread(target=holder)
    other.start()
    assert took.wait(60)
    assert g.random() == Rng(50).random()   # this thread holds nothing now: it waited
    other.join(60)


def test_a_range_a_pool_thread_took_but_did_not_run_fails_the_call(monkeypatch):
    """An exception raised on a pool thread between taking a range and running it (by a
    profiler, say): the call raises instead of returning rows never computed, leaves
    its generators as they were, and the pool thread serves on."""
    from specdec_fast import batch
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)
    draft, target, tokens = simple_batch(27, B=64, V=1024)
    want = verify_batch(draft, target, tokens, rng=np.arange(64), num_threads=2)
    run, run_unless_taken = batch._Range._run, batch._Range.run_unless_taken

    def profiled_run(self):
        if threading.current_thread().name == "specdec_fast_worker":
            raise RuntimeError("from a profiler")
        return run(self)

    def after_the_pool_took_it(self):        # the pool thread, idle, takes the range first
        deadline = time.monotonic() + 60
        while self._taker.get("by") != batch._POOL and time.monotonic() < deadline:
            time.sleep(0.001)
        return run_unless_taken(self)
    monkeypatch.setattr(batch._Range, "_run", profiled_run)
    monkeypatch.setattr(batch._Range, "run_unless_taken", after_the_pool_took_it)
    rngs = [Rng(b) for b in range(64)]
    with pytest.raises(RuntimeError, match="stopped before running them"):
        verify_batch(draft, target, tokens, rng=rngs, num_threads=2)
    assert [g.state for g in rngs] == [Rng(b).state for b in range(64)]
    monkeypatch.setattr(batch._Range, "_run", run)
    monkeypatch.setattr(batch._Range, "run_unless_taken", run_unless_taken)
    served = threading.Event()
    batch._pool.put(served.set)
    assert served.wait(60)
    assert_same_result(verify_batch(draft, target, tokens, rng=np.arange(64), num_threads=2),
                       want)


def test_pool_threads_start_before_a_call_holds_its_generators(monkeypatch):
    """A thread that is starting may run user code (a finalizer) that draws from a
    generator; the call waiting for it to start must not be holding that generator."""
    from specdec_fast import batch
    monkeypatch.setattr(batch, "_MAX_THREADS", 2)
    monkeypatch.setattr(batch, "_pool", None)
    draft, target, tokens = simple_batch(28, B=64, V=1024)
    rngs = [Rng(b) for b in range(64)]
    start, drawn = threading.Thread.start, []

    def start_drawing(thread):
        drawn.append(rngs[0].random())      # raises RuntimeError if this thread held it
        start(thread)
    monkeypatch.setattr(threading.Thread, "start", start_drawing)
    verify_batch(draft, target, tokens, rng=rngs, num_threads=2)
    assert len(drawn) == 1 and batch._pool.threads == 1


def test_a_hold_dropped_unreleased_lets_its_generators_go():
    from specdec_fast._rng import hold_states
    g = Rng(5)
    hold = hold_states((g,))
    hold.states[0] = Rng(6).state["s"]
    del hold
    assert g.random() == Rng(5).random()


def test_a_call_waits_for_a_generator_held_by_another_and_holds_none_meanwhile():
    """verify_batch(rng=[h, g]) while another thread holds g: it waits, holding
    nothing (h stays usable), and then draws from g as the other call left it."""
    from specdec_fast._rng import hold_states
    draft, target, tokens = simple_batch(25, B=2)
    g, h = Rng(8), Rng(9)
    hold = hold_states((g,))
    out = []
    caller = threading.Thread(target=lambda: out.append(
        verify_batch(draft, target, tokens, rng=[h, g])))
    caller.start()
    caller.join(0.2)
    assert caller.is_alive() and out == []
    user = threading.Thread(target=h.random)
    user.start()
    user.join(60)
    assert not user.is_alive()
    h_now = h.state
    hold.states[0] = Rng(77).state["s"]
    hold.release(True)
    caller.join(60)
    twin_h = Rng(0)
    twin_h.state = h_now
    assert_same_result(out[0], verify_batch(draft, target, tokens, rng=[twin_h, Rng(77)]))


def test_drop_in_calls_let_go_of_their_generator_however_they_end():
    """After drop-in calls that raised, handed over to the reference, or returned, a
    batch holds the generator on copies (it would run in place if one still counted)."""
    from specdec_fast._rng import hold_states
    from fractions import Fraction
    g = Rng(10)
    with pytest.raises(ValueError, match=r"draft_tokens\[0\]"):
        drop_in([[0.5, 0.5]], [[0.5, 0.5]], [7], 2, rng=g)
    drop_in([[Fraction(1, 2), Fraction(1, 2)]], [[0.5, 0.5], [0.5, 0.5]], [1], 2, rng=g)
    drop_in([[0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]], [1], 2, rng=g)
    hold = hold_states((g,))
    assert hold.states is not None
    hold.release(False)


HELD_AT_FORK = """
import os, signal, sys
from specdec_fast import Rng
from specdec_fast._rng import hold_states
g = Rng(12)
hold = hold_states((g,))
pid = os.fork()
if pid == 0:
    signal.alarm(30)                        # a hung child dies of SIGALRM
    os._exit(0 if g.random() == Rng(12).random() else 1)
_, status = os.waitpid(pid, 0)
hold.release(False)
sys.exit(f"child status {status}" if status else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_can_use_generators_its_parent_held(tmp_path):
    """No call runs in the child to release what the parent held: it lets them go."""
    done = run_python(HELD_AT_FORK, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("semantics, W", [("exact", 4), ("reference", 4)])
def test_out_arrays_are_reused(semantics, W):
    B, K, V = 20, 3, 6
    out = (np.full((B, W), 99, np.int64), np.full(B, 99, np.int64), np.full(B, 99, np.int64))
    for seed in (1, 2, 3):
        draft, target, tokens = simple_batch(seed, B, K, V)
        res = verify_batch(draft, target, tokens, rng=seed, semantics=semantics, out=out)
        assert all(r is o for r, o in zip(res, out))
        fresh = verify_batch(draft, target, tokens, rng=seed, semantics=semantics)
        assert_same_result(res, fresh)


@pytest.mark.parametrize("semantics", ["exact", "reference"])
def test_counts_sharing_memory_with_an_output_are_read_before_it_is_written(semantics):
    """num_draft_tokens living in out.tokens: the call reads its own copy, so rows
    written early cannot change the counts of later rows (this wrote past the
    row buffer and crashed before)."""
    B, K, V = 4, 3, 1000
    target = np.full((B, K + 1, V), 1 / V)
    draft = target[:, :K].copy()
    tokens = np.full((B, K), 900)
    out_tokens = np.zeros((B, K + 1), np.int64)
    counts = out_tokens.reshape(-1)[:B]
    counts[:] = [K, 1, 2, K]
    want = verify_batch(draft, target, tokens, rng=1, num_draft_tokens=[K, 1, 2, K],
                        semantics=semantics, num_threads=1)
    got = verify_batch(draft, target, tokens, rng=1, num_draft_tokens=counts,
                       semantics=semantics, num_threads=1,
                       out=(out_tokens, np.empty(B, np.int64), np.empty(B, np.int64)))
    assert_same_result(got, want)


def test_counts_are_checked_by_the_batch_loop_too():
    """The private loop does not trust a count outside [0, K] (it sizes the row's buffer)."""
    from specdec_fast import _batch
    draft, target, tokens = simple_batch(5, B=2, K=3, V=5)
    tokens = tokens.astype(np.intp)
    out = (np.empty((2, 4), np.int64), np.empty(2, np.int64), np.empty(2, np.int64))
    for bad in (4, 1000, -1):
        counts = np.array([3, bad], dtype=np.intp)
        failure = _batch.verify_rows(target, draft, tokens, counts, None, np.zeros((2, 5)),
                                     False, False, *out, 0, 2)
        with pytest.raises(ValueError, match=r"num_draft_tokens\[1\] is outside"):
            raise _batch.failure_error(failure, target, draft, tokens)


@pytest.mark.parametrize("case", ["emitted_is_accepted", "emitted_in_tokens",
                                  "tokens_over_draft_tokens", "emitted_over_target"])
def test_outputs_sharing_memory_are_refused(case):
    """Outputs overlapping each other or an input would be read back or written
    over while the loop runs: wrong counts, wrong tokens, or errors blaming valid input."""
    B, K, V = 3, 3, 5
    W = K + 1
    draft, target, _ = simple_batch(7, B, K, V)
    base = np.ones(B * W + 2 * B, np.int64)               # int64 tokens are read in place
    draft_tokens = base[:B * K].reshape(B, K)
    tokens, emitted, accepted = (np.zeros((B, W), np.int64), np.zeros(B, np.int64),
                                 np.zeros(B, np.int64))
    if case == "emitted_is_accepted":
        name, other, out = "num_accepted", "out.num_emitted", (tokens, emitted, emitted)
    elif case == "emitted_in_tokens":
        name, other, out = "num_emitted", "out.tokens", (tokens, tokens.reshape(-1)[2:2 + B],
                                                         accepted)
    elif case == "tokens_over_draft_tokens":
        name, other, out = "tokens", "draft_tokens", (base[:B * W].reshape(B, W), emitted,
                                                      accepted)
    else:
        name, other = "num_emitted", "target_probs"
        out = (tokens, target.reshape(-1).view(np.int64)[:B], accepted)
    with pytest.raises(ValueError, match=rf"out\.{name} shares memory with {other}"):
        verify_batch(draft, target, draft_tokens, rng=1, out=out)
    assert (base == 1).all()


def _out(B, W, **change):
    arrs = {"tokens": np.zeros((B, W), np.int64), "emitted": np.zeros(B, np.int64),
            "accepted": np.zeros(B, np.int64)}
    arrs.update(change)
    return (arrs["tokens"], arrs["emitted"], arrs["accepted"])


def _readonly(a):
    a.setflags(write=False)
    return a


BAD_OUTS = {
    "tokens_width_exact_plus_one": lambda: _out(4, 5),
    "tokens_width_short": lambda: _out(4, 3),
    "tokens_rows": lambda: _out(5, 4),
    "tokens_int32": lambda: _out(4, 4, tokens=np.zeros((4, 4), np.int32)),
    "tokens_float": lambda: _out(4, 4, tokens=np.zeros((4, 4))),
    "emitted_shape": lambda: _out(4, 4, emitted=np.zeros(5, np.int64)),
    "emitted_uint64": lambda: _out(4, 4, emitted=np.zeros(4, np.uint64)),
    "accepted_2d": lambda: _out(4, 4, accepted=np.zeros((4, 1), np.int64)),
    "tokens_fortran": lambda: _out(4, 4, tokens=np.zeros((4, 4), np.int64, order="F")),
    "tokens_readonly": lambda: _out(4, 4, tokens=_readonly(np.zeros((4, 4), np.int64))),
    "emitted_list": lambda: _out(4, 4, emitted=[0, 0, 0, 0]),
    "pair": lambda: _out(4, 4)[:2],
    "none_inside": lambda: (None, None, None),
    "not_a_triple": lambda: np.zeros((4, 4), np.int64),
}


@pytest.mark.parametrize("name", list(BAD_OUTS))
def test_bad_out_raises(name):
    draft, target, tokens = simple_batch(21, B=4, K=3, V=5)
    with pytest.raises((TypeError, ValueError)):
        verify_batch(draft, target, tokens, rng=1, out=BAD_OUTS[name]())


# --------------------------------------------------------------------------
# Input layouts and dtypes.

def _reference_result(draft, target, tokens, U, **kw):
    return verify_batch(np.ascontiguousarray(draft, dtype=np.float64) if draft is not None
                        else None, np.ascontiguousarray(target, dtype=np.float64),
                        np.ascontiguousarray(tokens, dtype=np.int64), uniforms=U, **kw)


def test_non_contiguous_and_broadcast_layouts():
    """Batch strides (::2, reversed), strided last axis, Fortran order, stride-0 broadcast."""
    B, K, V = 16, 4, 9
    draft, target, tokens = simple_batch(22, 2 * B, K, V)
    U = np.random.default_rng(22).random((B, K + 2))
    layouts = {
        "step2": (draft[::2], target[::2], tokens[::2]),
        "reversed": (draft[::-2], target[::-2], tokens[::-2]),
        "rows_reversed": (draft[:B, ::-1], target[:B, ::-1], tokens[:B, ::-1]),
        "fortran": (np.asfortranarray(draft[:B]), np.asfortranarray(target[:B]),
                    np.asfortranarray(tokens[:B])),
        "vocab_strided": (np.repeat(draft[:B], 2, -1)[..., ::2],
                          np.repeat(target[:B], 2, -1)[..., ::2], tokens[:B]),
    }
    for name, (d, t, k) in layouts.items():
        for semantics in ("exact", "reference"):
            got = verify_batch(d, t, k, uniforms=U, semantics=semantics)
            want = _reference_result(d, t, k, U, semantics=semantics)
            assert_same_result(got, want)
    # Stride-0 batch axis: read in place (read-only broadcast view is fine).
    d = np.broadcast_to(draft[0], (B, K, V))
    t = np.broadcast_to(target[0], (B, K + 1, V))
    k = np.broadcast_to(tokens[0], (B, K))
    got = verify_batch(d, t, k, uniforms=U)
    assert_same_result(got, _reference_result(d, t, k, U))
    assert len(set(map(tuple, got.tokens.tolist()))) > 1


# Inputs the wrapper must convert: their values as a pair of arrays the kernel cannot read
# in place, and the layouts to present them in.
CONVERTED = {
    "int64": lambda d, t: (np.rint(d * 20).astype(np.int64), np.rint(t * 20).astype(np.int64)),
    "bool": lambda d, t: (d > 0.15, t > 0.15),
    "float16": lambda d, t: (d.astype(np.float16), t.astype(np.float16)),
    "float32_draft": lambda d, t: (d.astype(np.float32), t),
    "float32_target": lambda d, t: (d, t.astype(np.float32)),
}
LAYOUTS = {
    "fortran": np.asfortranarray,
    "vocab_outermost": lambda a: np.moveaxis(np.ascontiguousarray(np.moveaxis(a, -1, 0)), 0, -1),
    "batch_broadcast": lambda a: np.broadcast_to(a[:1], a.shape),
    "vocab_broadcast": lambda a: np.broadcast_to(a[..., :1], a.shape),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", list(CONVERTED))
def test_converted_inputs_are_read_in_any_memory_order(kind, layout):
    """An input that must be converted (another dtype, or float32 beside float64) is
    read as its C-ordered float64 copy whatever its memory order: a conversion that
    kept the order of a Fortran, transposed or broadcast array would leave its rows
    strided, which the kernel must never read as contiguous."""
    draft, target, tokens = simple_batch(31, B=6, K=3, V=7)
    draft, target = CONVERTED[kind](draft, target)
    shown = LAYOUTS[layout]
    U = np.random.default_rng(31).random((6, 5))
    for kw in ({"semantics": "exact"}, {"semantics": "reference"}, {"greedy": True}):
        got = verify_batch(shown(draft), shown(target), tokens, uniforms=U, **kw)
        assert_same_result(got, _reference_result(shown(draft), shown(target), tokens, U, **kw))
        got = verify_batch(None, shown(target), tokens, uniforms=U, **kw)
        assert_same_result(got, _reference_result(None, shown(target), tokens, U, **kw))


def _unaligned(a):
    """A C-contiguous copy of ``a`` at an odd address (numpy flags it not aligned)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    out = raw.view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def test_unaligned_inputs_are_copied():
    """A C-contiguous but unaligned array (a view into a byte buffer) is copied, not
    handed to C code that reads it as aligned doubles."""
    draft, target, tokens = simple_batch(32, B=5, K=3, V=6)
    U = np.random.default_rng(32).random((5, 5))
    for dtype in (np.float64, np.float32):
        d, t = draft.astype(dtype), target.astype(dtype)
        for semantics in ("exact", "reference"):
            got = verify_batch(_unaligned(d), _unaligned(t), tokens, uniforms=U,
                               semantics=semantics)
            assert_same_result(got, verify_batch(d, t, tokens, uniforms=U, semantics=semantics))


def test_unaligned_uniforms_and_tokens_are_copied_and_out_refused():
    """Uniforms and tokens at odd addresses are copied before C code reads them; an
    unaligned out= buffer, which C code would write, is refused."""
    draft, target, tokens = simple_batch(33, B=5, K=3, V=6)
    U = np.random.default_rng(33).random((5, 5))
    want = verify_batch(draft, target, tokens, uniforms=U)
    assert_same_result(verify_batch(draft, target, _unaligned(tokens.astype(np.intp)),
                                    uniforms=_unaligned(U)), want)
    for i in range(3):
        out = [np.zeros((5, 4), np.int64), np.zeros(5, np.int64), np.zeros(5, np.int64)]
        out[i] = _unaligned(out[i])
        with pytest.raises(ValueError, match="must be C-contiguous, aligned and writeable"):
            verify_batch(draft, target, tokens, uniforms=U, out=tuple(out))


def test_kernel_refuses_shapes_it_would_index_out_of_bounds():
    """verify_rows checks every array against the batch it indexes, so a wrapper
    passing too few generator states, rows or output slots gets an error, not a
    read or write past an array's end."""
    from specdec_fast import _batch
    B, K, V = 3, 2, 4
    target = np.ones((B, K + 1, V))
    good = dict(draft=np.ones((B, K, V)), tokens=np.zeros((B, K), np.intp),
                counts=np.full(B, K, np.intp), states=np.zeros((B, 4), np.uint64),
                uniforms=None, reference=True, greedy=False,
                out_tokens=np.zeros((B, K + 1), np.int64), out_emitted=np.zeros(B, np.int64),
                out_accepted=np.zeros(B, np.int64), start=0, stop=B)
    bad = {
        "draft": np.ones((B, K + 1, V)), "tokens": np.zeros((B - 1, K), np.intp),
        "counts": np.full(B - 1, K, np.intp), "states": np.zeros((1, 4), np.uint64),
        "out_tokens": np.zeros((B, K), np.int64), "out_emitted": np.zeros(B - 1, np.int64),
        "out_accepted": np.zeros(B, np.int32), "stop": B + 1,
    }
    assert _batch.verify_rows(target, **good) is None
    for name, value in bad.items():
        with pytest.raises(ValueError, match="verify_rows"):
            _batch.verify_rows(target, **{**good, name: value})
    with pytest.raises(ValueError, match="uniforms"):
        _batch.verify_rows(target, **{**good, "states": None, "uniforms": np.zeros((B - 1, 5))})
    with pytest.raises(ValueError, match="generators"):
        _batch.verify_rows(target, **{**good, "states": (Rng(1),) * (B - 1)})
    with pytest.raises(ValueError, match="vocabulary of at least 1"):
        _batch.verify_rows(np.ones((B, K + 1, 0)), **{**good, "draft": None})


def test_out_of_an_equivalent_int64_type_is_filled():
    """out= arrays of np.longlong (the same 64-bit type under another name on Linux) or
    made from a buffer of C long longs are int64 arrays: filled, and returned as given."""
    draft, target, tokens = simple_batch(35, B=4, K=3, V=6)
    want = verify_batch(draft, target, tokens, rng=3)
    out = (np.zeros((4, 4), np.longlong), np.zeros(4, np.longlong),
           np.asarray(memoryview(array.array("q", [0] * 4))))
    got = verify_batch(draft, target, tokens, rng=3, out=out)
    assert all(g is o for g, o in zip(got, out))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_rng_subclass_draws_its_own_keys_whatever_it_overrides():
    """rng=<an Rng subclass>: the row keys are the generator's own draws, as the drop-in's
    are; an override of next_uint64 (here returning too few keys) is not consulted."""
    class FewKeys(Rng):
        def next_uint64(self, size=None):
            return np.zeros(1, np.uint64)

    draft, target, tokens = simple_batch(34, B=50, K=3, V=6)
    got = verify_batch(draft, target, tokens, rng=FewKeys(5))
    assert_same_result(got, verify_batch(draft, target, tokens, rng=Rng(5)))
    gen, plain = FewKeys(6), Rng(6)
    a = specdec_fast.simulate(draft[:2], target[:2], k=3, trials=1000, rng=gen)
    b = specdec_fast.simulate(draft[:2], target[:2], k=3, trials=1000, rng=plain)
    assert np.array_equal(a.histogram, b.histogram)
    assert gen.state == plain.state


def test_kernel_refuses_rows_it_cannot_read():
    """The compiled loop checks the layout it was handed, so a wrapper that forgot to
    convert gets an error, not tokens read from the wrong places."""
    from specdec_fast import _batch
    B, K, V = 2, 2, 4
    rows = {
        "strided": np.asfortranarray(np.ones((B, K + 1, V))),
        "float16": np.ones((B, K + 1, V), np.float16),
        "big_endian": np.ones((B, K + 1, V), ">f8"),
        "unaligned": _unaligned(np.ones((B, K + 1, V))),
        "2-D": np.ones((B, V)),
    }
    args = (np.zeros((B, K), np.intp), np.full(B, K, np.intp), None, np.zeros((B, K + 2)),
            True, False, np.zeros((B, K + 1), np.int64), np.zeros(B, np.int64),
            np.zeros(B, np.int64), 0, B)
    for name, target in rows.items():
        with pytest.raises(ValueError, match="target_probs: verify_rows needs rows"):
            _batch.verify_rows(target, None, *args)
    with pytest.raises(ValueError, match="draft_probs: verify_rows needs rows"):
        _batch.verify_rows(np.ones((B, K + 1, V)), np.ones((B, K, V), np.float32), *args)
    target = np.ones((B, K + 1, V))
    assert _batch.verify_rows(target, None, *args) is None


def test_read_only_inputs():
    draft, target, tokens = simple_batch(23, 8, 3, 5)
    for a in (draft, target, tokens):
        a.setflags(write=False)
    U = np.random.default_rng(23).random((8, 5))
    U.setflags(write=False)
    counts = np.full(8, 2)
    counts.setflags(write=False)
    got = verify_batch(draft, target, tokens, uniforms=U, num_draft_tokens=counts,
                       semantics="reference")
    assert_same_result(got, _reference_result(draft.copy(), target.copy(), tokens.copy(),
                                              U.copy(), num_draft_tokens=counts.copy(),
                                              semantics="reference"))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.uint64])
def test_token_dtypes(dtype):
    draft, target, tokens = simple_batch(24, 10, 3, 6)
    U = np.random.default_rng(24).random((10, 4))
    got = verify_batch(draft, target, tokens.astype(dtype), uniforms=U,
                       num_draft_tokens=np.array([3, 2, 1, 0, 3, 3, 2, 1, 0, 3], dtype=dtype))
    want = verify_batch(draft, target, tokens, uniforms=U,
                        num_draft_tokens=[3, 2, 1, 0, 3, 3, 2, 1, 0, 3])
    assert_same_result(got, want)


def test_float32_and_mixed_precision():
    """float32 rows are read as their float64 values; float32 + float64 mixes widen to float64."""
    draft, target, tokens = simple_batch(25, 50, 4, 7, dtype=np.float32)
    U = np.random.default_rng(25).random((50, 6))
    want = _reference_result(draft, target, tokens, U, semantics="reference")
    for d, t in ((draft, target), (draft.astype(np.float64), target),
                 (draft, target.astype(np.float64))):
        assert_same_result(verify_batch(d, t, tokens, uniforms=U, semantics="reference"), want)


def test_integer_probabilities_and_nested_lists():
    """Integer probability arrays are converted to float64; nested lists work too."""
    g = np.random.default_rng(26)
    B, K, V = 12, 3, 4
    target = np.zeros((B, K + 1, V), dtype=np.int64)
    target[np.arange(B)[:, None], np.arange(K + 1), g.integers(0, V, (B, K + 1))] = 1
    draft = np.zeros((B, K, V), dtype=np.int32)
    draft[np.arange(B)[:, None], np.arange(K), g.integers(0, V, (B, K))] = 1
    tokens = np.argmax(draft, -1)
    U = g.random((B, K + 1))
    want = verify_batch(draft.astype(np.float64), target.astype(np.float64), tokens, uniforms=U)
    assert_same_result(verify_batch(draft, target, tokens, uniforms=U), want)
    assert_same_result(verify_batch(draft.tolist(), target.tolist(), tokens.tolist(),
                                    uniforms=U.tolist()), want)


def test_reference_semantics_takes_integer_rows_only_where_float64_is_exact():
    """With semantics="reference" a row stands for its tolist(), whose ints the reference
    subtracts and sums exactly: integer rows within 2**53 (values and the sums of the
    target's verify rows) give its tokens; beyond, and for long doubles, an error names
    the argument and the place.  The papers' semantics converts them to float64."""
    g = np.random.default_rng(28)
    B, K, V = 40, 2, 5
    target = g.integers(0, 2**50, (B, K + 1, V))
    target[:, K] = g.integers(2**52, 2**53, (B, V))        # the bonus row is summed as floats
    draft = g.integers(0, 2**50, (B, K, V))
    tokens = g.integers(0, V, (B, K))
    U = g.random((B, K + 2))
    got = verify_batch(draft, target, tokens, uniforms=U, semantics="reference")
    for b in range(B):
        want, _ = run_reference(draft[b].tolist(), target[b].tolist(), tokens[b].tolist(), V,
                                U[b].tolist())
        assert got.tokens[b, :got.num_emitted[b]].tolist() == want["tokens"]
    big = target.copy()
    big[3, 1, 2] = 2**53 + 1
    with pytest.raises(ValueError, match=r"target_probs\[3, 1, 2\] = 9007199254740993"):
        verify_batch(draft, big, tokens, uniforms=U, semantics="reference")
    verify_batch(draft, big, tokens, uniforms=U)                        # exact: converted
    wide = target.copy()
    wide[5, 0, :2] = 2**53 - 1
    with pytest.raises(ValueError, match=r"target_probs\[5, 0\] sums to"):
        verify_batch(draft, wide, tokens, uniforms=U, semantics="reference")
    with pytest.raises(ValueError, match=r"draft_probs\[0, 0, 0\]"):
        verify_batch(draft - 2**60, target, tokens, uniforms=U, semantics="reference")
    lowest = draft.copy()
    lowest[1, 1, 1] = np.iinfo(np.int64).min
    with pytest.raises(ValueError, match=r"draft_probs\[1, 1, 1\] = -9223372036854775808"):
        verify_batch(lowest, target, tokens, uniforms=U, semantics="reference")
    # With a float draft every residual is a float, and the reference rounds an int
    # it computes with a float as the float64 copy does: big ints are exact there.
    fdraft = draft / 2**50
    for t in (big, wide):
        got = verify_batch(fdraft, t, tokens, uniforms=U, semantics="reference")
        for b in range(B):
            want, _ = run_reference(fdraft[b].tolist(), t[b].tolist(), tokens[b].tolist(), V,
                                    U[b].tolist())
            assert got.tokens[b, :got.num_emitted[b]].tolist() == want["tokens"]
    if np.finfo(np.longdouble).nmant > 52:
        with pytest.raises(TypeError, match="target_probs has dtype"):
            verify_batch(draft, target.astype(np.longdouble), tokens, uniforms=U,
                         semantics="reference")
        with pytest.raises(TypeError, match="uniforms has dtype"):
            verify_batch(draft, target, tokens, uniforms=U.astype(np.longdouble),
                         semantics="reference")
        verify_batch(draft, target, tokens, uniforms=U.astype(np.longdouble))    # exact


def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    draft, target, tokens = simple_batch(27, 10, 3, 6, dtype=np.float32)
    U = np.random.default_rng(27).random((10, 4))
    want = verify_batch(draft, target, tokens, uniforms=U)
    got = verify_batch(torch.from_numpy(draft), torch.from_numpy(target),
                       torch.from_numpy(tokens), uniforms=torch.from_numpy(U))
    assert_same_result(got, want)
    got = verify_batch(None, torch.from_numpy(target).double(), torch.from_numpy(tokens),
                       uniforms=U)
    assert_same_result(got, verify_batch(None, target.astype(np.float64), tokens, uniforms=U))


# --------------------------------------------------------------------------
# Bad input.

def _valid():
    draft, target, tokens = simple_batch(30, B=4, K=3, V=5)
    return dict(draft_probs=draft, target_probs=target, draft_tokens=tokens)


def _call(**change):
    args = _valid()
    kw = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    if "uniforms" not in kw and "rng" not in kw and not kw.get("greedy"):
        kw["rng"] = 1
    return verify_batch(args.pop("draft_probs"), args.pop("target_probs"),
                        args.pop("draft_tokens"), **kw)


BAD_SHAPES = {
    "draft_B": dict(draft_probs=np.full((3, 3, 5), 0.2)),
    "draft_K": dict(draft_probs=np.full((4, 2, 5), 0.2)),
    "draft_V": dict(draft_probs=np.full((4, 3, 6), 0.2)),
    "draft_2d": dict(draft_probs=np.full((4, 15), 0.2)),
    "target_B": dict(target_probs=np.full((5, 4, 5), 0.2)),
    "target_rows_K_minus_1": dict(target_probs=np.full((4, 2, 5), 0.2)),
    "target_rows_K_plus_2": dict(target_probs=np.full((4, 5, 5), 0.2)),
    "target_2d": dict(target_probs=np.full((4, 20), 0.2)),
    "target_4d": dict(target_probs=np.full((4, 4, 5, 1), 0.2)),
    "target_V0": dict(target_probs=np.zeros((4, 4, 0)), draft_probs=None),
    "tokens_B": dict(draft_tokens=np.zeros((3, 3), int)),
    "tokens_1d": dict(draft_tokens=np.zeros(4, int)),
    "tokens_3d": dict(draft_tokens=np.zeros((4, 3, 1), int)),
    "counts_shape": dict(num_draft_tokens=np.zeros(3, int)),
    "counts_negative": dict(num_draft_tokens=[3, -1, 0, 0]),
    "counts_above_K": dict(num_draft_tokens=[3, 4, 0, 0]),
    "uniforms_rows": dict(uniforms=np.zeros((3, 5))),
    "uniforms_1d": dict(uniforms=np.zeros(5)),
    "uniforms_one": dict(uniforms=np.full((4, 5), 1.0)),
    "uniforms_negative": dict(uniforms=np.full((4, 5), -0.25)),
    "uniforms_nan": dict(uniforms=np.full((4, 5), np.nan)),
    "uniforms_too_few": dict(uniforms=np.zeros((4, 0))),
    "rng_and_uniforms": dict(uniforms=np.zeros((4, 5)), rng=1),
    "semantics_paper": dict(semantics="paper"),
    "semantics_upper": dict(semantics="EXACT"),
    "num_threads_0": dict(num_threads=0),
    "num_threads_negative": dict(num_threads=-2),
    "rng_negative_int": dict(rng=-1),
    "rng_seeds_shape": dict(rng=np.arange(3)),
    "rng_seeds_2d": dict(rng=np.arange(4).reshape(4, 1)),
    "rng_seeds_negative": dict(rng=np.array([1, 2, -3, 4])),
    "rng_list_length": dict(rng=[Rng(1), Rng(2)]),
}

BAD_TYPES = {
    "draft_complex": dict(draft_probs=np.full((4, 3, 5), 0.2 + 0j)),
    "target_complex": dict(target_probs=np.full((4, 4, 5), 0.2 + 0j)),
    "target_object": dict(target_probs=np.full((4, 4, 5), 0.2, dtype=object)),
    "target_str": dict(target_probs=np.full((4, 4, 5), "0.2")),
    "draft_object": dict(draft_probs=np.full((4, 3, 5), 0.2, dtype=object)),
    "target_none": dict(target_probs=None),
    "tokens_float": dict(draft_tokens=np.zeros((4, 3))),
    "tokens_complex": dict(draft_tokens=np.zeros((4, 3), complex)),
    "tokens_object": dict(draft_tokens=np.zeros((4, 3), object)),
    "tokens_str": dict(draft_tokens=np.full((4, 3), "1")),
    "tokens_bool": dict(draft_tokens=np.zeros((4, 3), bool)),
    "counts_float": dict(num_draft_tokens=np.zeros(4)),
    "uniforms_complex": dict(uniforms=np.zeros((4, 5), complex)),
    "uniforms_str": dict(uniforms=np.full((4, 5), "0.5")),
    "num_threads_float": dict(num_threads=1.5),
    "num_threads_str": dict(num_threads="2"),
    "num_threads_bool": dict(num_threads=True),
    "rng_str": dict(rng="seed"),
    "rng_float": dict(rng=1.5),
    "rng_bool": dict(rng=True),
    "rng_float_seeds": dict(rng=np.zeros(4)),
    "rng_mixed_list": dict(rng=[Rng(1), 2, 3, 4]),
}


@pytest.mark.parametrize("name", list(BAD_SHAPES))
def test_bad_values_raise_value_error(name):
    with pytest.raises(ValueError):
        _call(**BAD_SHAPES[name])


@pytest.mark.parametrize("name", list(BAD_TYPES))
def test_bad_types_raise_type_error(name):
    with pytest.raises(TypeError):
        _call(**BAD_TYPES[name])


@pytest.mark.parametrize("change, exc, message", [
    (dict(rng=-1), ValueError, r"rng = -1 is not a seed in \[0, 2\*\*64\)"),
    (dict(rng=2 ** 64), ValueError, r"rng = 18446744073709551616 is not a seed"),
    (dict(rng=[1, 2 ** 64, 3, 4]), ValueError, r"rng\[1\] = 18446744073709551616 is not a seed"),
    (dict(rng=[1, 2, -3, 4]), ValueError, r"rng\[2\] = -3 is not a seed"),
    (dict(rng=[1, "a", 3, 4]), TypeError, r"rng\[1\] must be an int seed, not str"),
    (dict(rng=[1, 2.0, 3, 4]), TypeError, r"rng\[1\] must be an int seed, not float"),
    (dict(rng=[Rng(1), 2, 3, 4]), TypeError, r"rng\[1\] must be an Rng like the others"),
    (dict(uniforms=[[0.5] * 5, [0.5] * 4, [0.5] * 5, [0.5] * 5]), ValueError,
     r"uniforms must be a rectangular array"),
    (dict(draft_probs=[[[0.2] * 5] * 3] * 3 + [[[0.2] * 4] * 3]), ValueError,
     r"draft_probs must be a rectangular array"),
    (dict(num_draft_tokens=[[1], [1, 2], 3, 3]), ValueError,
     r"num_draft_tokens must be a rectangular array"),
    (dict(greedy="no"), TypeError, r"greedy must be a bool, not str"),
    (dict(greedy=1), TypeError, r"greedy must be a bool, not int"),
    (dict(greedy=True, rng="x"), TypeError, r"rng must be"),
    (dict(greedy=True, rng=-1), ValueError, r"rng = -1"),
    (dict(greedy=True, uniforms=np.full((4, 5), 5.0)), ValueError,
     r"uniforms\[0\]\[0\] = 5\.0 is outside"),
    (dict(greedy=True, uniforms=np.zeros((4, 5)), rng=1), ValueError, r"not both"),
], ids=lambda x: repr(x)[:40] if not isinstance(x, dict) else "-".join(map(str, x)))
def test_bad_arguments_are_named_with_their_position(change, exc, message):
    """Also where greedy ignores the randomness: a bad rng or uniforms is still an error."""
    with pytest.raises(exc, match=message):
        _call(**change)


class RefusesArray:
    """A tensor that will not become an array (as torch's bfloat16 or requires_grad ones)."""

    def __init__(self, exc):
        self.exc = exc

    def __array__(self, dtype=None, copy=None):
        raise self.exc


@pytest.mark.parametrize("exc", [TypeError("Got unsupported ScalarType BFloat16"),
                                 RuntimeError("Can't call numpy() on Tensor that requires grad")],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("argument", ["draft_probs", "target_probs", "draft_tokens",
                                      "uniforms", "num_draft_tokens"])
def test_object_refusing_array_conversion_is_named(exc, argument):
    with pytest.raises(TypeError, match=f"{argument} cannot be read as an array") as info:
        _call(**{argument: RefusesArray(exc)})
    assert str(info.value).endswith(f"({type(exc).__name__}: {exc})")
    assert info.value.__cause__ is exc


def test_overlap_test_agrees_with_numpy_bounds():
    """_batch.may_overlap is np.may_share_memory's bounds test, on views of one buffer
    (strided, reversed, empty, of other dtypes) and on separate arrays."""
    from specdec_fast import _batch
    g = np.random.default_rng(4)
    base = np.zeros(4096, np.uint8)
    views = [np.zeros(3), np.zeros((0, 4)), base[10:10]]
    for _ in range(300):
        start, stop = sorted(g.integers(0, 4096, 2))
        step = int(g.choice([1, 2, 3, -1, -5]))
        v = base[start:stop:step] if step > 0 else base[stop:start:step]
        if v.size >= 8 and g.random() < 0.5:
            v = v[:v.size // 8 * 8]
            v = v.view(np.int64) if v.flags.c_contiguous else v
        views.append(v)
    agree = 0
    for a in views:
        for b in views[:60]:
            assert _batch.may_overlap(a, b) == np.may_share_memory(a, b), (a.strides, b.strides)
            agree += 1
    assert agree > 10000


def test_a_bad_thread_count_draws_nothing():
    rng = Rng(9)
    before = rng.state
    with pytest.raises(ValueError, match="num_threads"):
        _call(rng=rng, num_threads=0)
    assert rng.state == before


def test_greedy_checks_the_generator_without_drawing_from_it():
    rng = Rng(9)
    before = rng.state
    res = _call(greedy=np.True_, rng=rng)
    assert rng.state == before and (res.num_emitted >= 1).all()


def test_valid_baseline_of_the_bad_input_tests():
    """The unmodified arguments are valid (so each failure above is the one change)."""
    res = _call()
    assert res.tokens.shape == (4, 4) and (res.num_emitted >= 1).all()


@pytest.mark.parametrize("value", [-1, 5, 6, 10**9, -(2**40)])
def test_token_out_of_range_names_position(value):
    args = _valid()
    args["draft_tokens"][2, 1] = value
    with pytest.raises(ValueError, match=r"draft_tokens\[2\]\[1\]"):
        verify_batch(args["draft_probs"], args["target_probs"], args["draft_tokens"], rng=1)
    with pytest.raises(ValueError, match=r"draft_tokens\[2\]\[1\]"):
        verify_batch(None, args["target_probs"], args["draft_tokens"], greedy=True)


def test_huge_uint64_token_names_position():
    """A uint64 token >= 2**63 inside n_b is out of range: the error names draft_tokens[b][i]."""
    args = _valid()
    tokens = args["draft_tokens"].astype(np.uint64)
    tokens[2, 1] = 2**63 + 5
    with pytest.raises(ValueError, match=r"draft_tokens\[2\]\[1\]"):
        verify_batch(args["draft_probs"], args["target_probs"], tokens, rng=1)


# The drop-in's test_bad_input case (conftest.FIVE_*), as row 2 of a batch: all rows valid
# except the one value changed.  Which values the reference reads depends on the uniforms.
BAD_VALUES = [float("nan"), -0.5, -1e-30, float("inf")]


def _row2_batch(dtype, which=None, i=0, v=0, value=0.0):
    draft = np.array([Q5] * 4, dtype=dtype)
    target = np.array([P5] * 4, dtype=dtype)
    if which is not None:
        (draft if which == "draft_probs" else target)[2, i, v] = value
    tokens = np.array([T5] * 4)
    return draft, target, tokens


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("uniforms, read, unread",
                         [(U_ACCEPT, READ_ACCEPT, UNREAD_ACCEPT),
                          (U_REJECT, READ_REJECT, UNREAD_REJECT)], ids=["accept", "reject"])
def test_invalid_probabilities_raise_only_where_read(dtype, uniforms, read, unread):
    """A negative/NaN/inf value the reference reads -> ValueError naming [b][i][v];
    values it does not read are ignored (R5), in both semantics."""
    U = np.array([uniforms] * 4)
    for semantics in ("reference", "exact"):
        clean = verify_batch(*_row2_batch(dtype), uniforms=U, semantics=semantics)
        for value in BAD_VALUES:
            for which, i, v in read:
                args = _row2_batch(dtype, which, i, v, value)
                shown = re.escape(repr(float(dtype(value))))      # the value as a float
                with pytest.raises(ValueError, match=rf"{which}\[2\]\[{i}\]\[{v}\] = {shown}:"):
                    verify_batch(*args, uniforms=U, semantics=semantics)
            for which, i, v in unread:
                args = _row2_batch(dtype, which, i, v, value)
                assert_same_result(verify_batch(*args, uniforms=U, semantics=semantics), clean)


def test_first_bad_value_read_is_reported():
    """In a residual, entries are read v = 0, 1, ... with p_v before q_v."""
    draft, target, tokens = _row2_batch(np.float64)   # position 1 drafts token 2
    target[2, 1, 4] = np.nan
    draft[2, 1, 0] = -1.0
    U = np.array([U_REJECT] * 4)
    with pytest.raises(ValueError, match=r"draft_probs\[2\]\[1\]\[0\]"):
        verify_batch(draft, target, tokens, uniforms=U)
    target[2, 1, 0] = -2.0
    with pytest.raises(ValueError, match=r"target_probs\[2\]\[1\]\[0\]"):
        verify_batch(draft, target, tokens, uniforms=U)


def test_long_bonus_row_is_read_only_up_to_the_crossing():
    """V = 4096: a NaN after the crossing of the bonus row is not read (also in the crossing's
    scan block); one before the crossing is."""
    V = 4096
    target = np.full((2, 1, V), 1.0 / V)                 # dyadic: exact running sums
    target[:, 0, 2000] = np.nan
    tokens = np.zeros((2, 0), dtype=np.int64)
    res = verify_batch(None, target, tokens, uniforms=np.array([[0.45], [0.1]]))
    assert res.tokens[:, 0].tolist() == [1843, 409]
    with pytest.raises(ValueError, match=r"target_probs\[1\]\[0\]\[2000\]"):
        verify_batch(None, target, tokens, uniforms=np.array([[0.1], [0.5]]))


def test_error_names_the_lowest_failing_row_across_threads():
    draft, target, tokens = simple_batch(31, B=8, K=3, V=5)
    target[6, 0, tokens[6, 0]] = np.nan
    target[2, 0, tokens[2, 0]] = -1.0
    for threads in (1, 2, 4):
        with pytest.raises(ValueError, match=rf"target_probs\[2\]\[0\]\[{tokens[2, 0]}\]"):
            verify_batch(draft, target, tokens, rng=1, num_threads=threads)


GUARD = 9
SENTINEL = -123456789


def _guarded(B, W):
    bufs = [np.full(B * W + 2 * GUARD, SENTINEL, np.int64),
            np.full(B + 2 * GUARD, SENTINEL, np.int64),
            np.full(B + 2 * GUARD, SENTINEL, np.int64)]
    out = (bufs[0][GUARD:GUARD + B * W].reshape(B, W), bufs[1][GUARD:GUARD + B],
           bufs[2][GUARD:GUARD + B])
    return bufs, out


def _guards_intact(bufs):
    return all((b[:GUARD] == SENTINEL).all() and (b[-GUARD:] == SENTINEL).all() for b in bufs)


def _fail_nan_last_row(draft, target, tokens, B, K):
    target[B - 1, 0, tokens[B - 1, 0]] = np.nan
    return dict(rng=1)


def _fail_draft_first_row(draft, target, tokens, B, K):
    draft[0, 0, tokens[0, 0]] = -1.0
    return dict(rng=1)


def _fail_uniforms(draft, target, tokens, B, K):
    U = np.zeros((B, K + 2))                # zeros accept everything: K accepts + bonus
    return dict(uniforms=U[:, :K])


def _fail_nan_middle_row(draft, target, tokens, B, K):
    target[B // 2, 0, :] = np.nan          # NaN everywhere in one row
    return dict(rng=2)


@pytest.mark.parametrize("failure", [_fail_nan_last_row, _fail_draft_first_row, _fail_uniforms,
                                     _fail_nan_middle_row, None])
@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_nothing_is_written_outside_the_outputs(failure, semantics, threads):
    """With out= slices inside larger buffers, the regions around them stay untouched."""
    B, K, V = 64, 6, 5
    draft, target, tokens = simple_batch(32, B, K, V)
    W = K + 1
    bufs, out = _guarded(B, W)
    if failure is None:
        res = verify_batch(draft, target, tokens, rng=3, semantics=semantics, out=out,
                           num_threads=threads)
        assert_same_result(res, verify_batch(draft, target, tokens, rng=3,
                                             semantics=semantics))
    else:
        kw = failure(draft, target, tokens, B, K)
        with pytest.raises(ValueError):
            verify_batch(draft, target, tokens, semantics=semantics, out=out,
                         num_threads=threads, **kw)
    assert _guards_intact(bufs)


# --------------------------------------------------------------------------
# Statistics (exact semantics, the library's generator, drafts sampled from q by NumPy).

def _sample_drafts(g, q_rows, B):
    return np.stack([g.choice(len(q), size=B, p=q / q.sum()) for q in q_rows], axis=1)


def _pairs_v8():
    g = np.random.default_rng(2024)
    p0, q0 = normalise(g.random(8) + 0.05), normalise(g.random(8) + 0.05)
    q1 = normalise(g.random(8) + 0.1)
    q1[[1, 4]] = 0.0                                        # q == 0 where p > 0
    p1 = normalise(g.random(8) + 0.1)
    p2 = normalise(g.random(8) + 0.1)
    p2[[0, 7]] = 0.0                                        # p == 0 where q > 0
    q2 = normalise(g.random(8) + 0.1)
    p3 = normalise(g.random(8) + 0.1)                       # p == q: always accepted
    bonus = normalise(g.random(8) ** 2 + 0.02)
    return [(p0, q0), (p1, normalise(q1)), (normalise(p2), q2), (p3, p3.copy())], bonus


def _pairs_v20():
    peaked = normalise(np.arange(1, 21) ** 2.0)
    flat = np.full(20, 1 / 20)
    return [(peaked, flat), (flat, peaked)], normalise(np.arange(20, 0, -1) ** 1.5)


@pytest.mark.parametrize("config, dtype, B", [(_pairs_v8, np.float64, 300_000),
                                              (_pairs_v20, np.float32, 200_000)],
                         ids=["v8_f64", "v20_f32"])
def test_every_emitted_position_is_distributed_as_target(config, dtype, B):
    """Exact semantics: conditional on reaching position j, the token there ~ p_j (bonus ~ p_K).

    One chi-square per position (K + 1 of them): false-failure rate about (K+1) * 1e-4.
    """
    pairs, bonus = config()
    K = len(pairs)
    q_rows = np.array([q for _, q in pairs], dtype=dtype)
    p_rows = np.array([p for p, _ in pairs] + [bonus], dtype=dtype)
    g = np.random.default_rng(41)
    tokens = _sample_drafts(g, q_rows.astype(np.float64), B)
    res = verify_batch(np.broadcast_to(q_rows, (B, K, q_rows.shape[1])),
                       np.broadcast_to(p_rows, (B, K + 1, p_rows.shape[1])), tokens,
                       rng=Rng(41), semantics="exact")
    assert (res.num_emitted == res.num_accepted + 1).all()
    V = p_rows.shape[1]
    for j in range(K + 1):
        reached = res.num_accepted >= j
        counts = np.bincount(res.tokens[reached, j], minlength=V)
        assert_distributed_as(counts, p_rows[j].astype(np.float64), f"position {j}")


@pytest.mark.parametrize("seed, p_q", [(51, "random"), (52, "high")])
def test_number_of_emitted_tokens_is_truncated_geometric(seed, p_q):
    """Same (p, q) at every position: P(n) = a^(n-1)(1-a), n <= K; P(K+1) = a^K (a = sum min(p,q)).

    One chi-square over K+1 categories: false-failure rate about 1e-4.
    """
    g = np.random.default_rng(seed)
    V, K, B = 6, 5, 200_000
    q = normalise(g.random(V) + 0.1)
    p = normalise(g.random(V) + 0.1) if p_q == "random" else normalise(q + 0.15 * g.random(V))
    alpha = float(np.minimum(p, q).sum())
    tokens = _sample_drafts(g, [q] * K, B)
    res = verify_batch(np.broadcast_to(q, (B, K, V)), np.broadcast_to(p, (B, K + 1, V)),
                       tokens, rng=Rng(seed), num_threads=2)
    probs = [alpha ** (n - 1) * (1 - alpha) for n in range(1, K + 1)] + [alpha ** K]
    counts = np.bincount(res.num_emitted, minlength=K + 2)
    assert counts[0] == 0
    assert_distributed_as(counts[1:], probs, f"alpha={alpha:.3f}")


def test_reference_semantics_count_law_has_the_r6_excess():
    """Reference semantics: a rejection at the last position is followed by a bonus (R6), so
    P(K) = 0 and P(K+1) = a^(K-1).  Chi-square over K categories: false-failure rate ~1e-4."""
    g = np.random.default_rng(53)
    V, K, B = 6, 3, 200_000
    q = normalise(g.random(V) + 0.1)
    p = normalise(g.random(V) + 0.1)
    alpha = float(np.minimum(p, q).sum())
    tokens = _sample_drafts(g, [q] * K, B)
    res = verify_batch(np.broadcast_to(q, (B, K, V)), np.broadcast_to(p, (B, K + 1, V)),
                       tokens, rng=Rng(53), semantics="reference")
    counts = np.bincount(res.num_emitted, minlength=K + 2)
    assert counts[0] == 0 and counts[K] == 0
    probs = [alpha ** (n - 1) * (1 - alpha) for n in range(1, K)] + [alpha ** (K - 1)]
    assert_distributed_as(np.r_[counts[1:K], counts[K + 1]], probs, f"alpha={alpha:.3f}")


def test_one_hot_drafts_first_token_is_distributed_as_target():
    """draft_probs=None: accept t w.p. p(t); a rejection samples p without t, renormalised;
    so the first token ~ p whatever t is.  Per draft token t: a z-test of the acceptance rate
    and chi-squares of the first token and of the rejection token: false-failure rate about
    3e-4 per t, 1.2e-3 for the test."""
    V, B = 8, 400_000
    p = normalise(np.array([0.0, 3.0, 1.0, 0.5, 6.0, 0.0, 2.0, 1.5]))
    draft_choices = np.array([4, 0, 2, 6])              # argmax, p(t) == 0, two others
    g = np.random.default_rng(61)
    tokens = draft_choices[g.integers(0, len(draft_choices), B)][:, None]
    res = verify_batch(None, np.broadcast_to(p, (B, 2, V)), tokens, rng=Rng(61),
                       num_threads=2)
    for t in draft_choices:
        rows = tokens[:, 0] == t
        accepted = res.num_accepted[rows] == 1
        assert_rate(int(accepted.sum()), int(rows.sum()), p[t], f"accept t={t}")
        first = res.tokens[rows, 0]
        assert_distributed_as(np.bincount(first, minlength=V), p, f"first token, t={t}")
        assert (first[accepted] == t).all()
        without_t = p.copy()
        without_t[t] = 0.0
        assert_distributed_as(np.bincount(first[~accepted], minlength=V), without_t,
                              f"rejection token, t={t}")
