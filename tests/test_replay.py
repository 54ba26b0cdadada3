"""The compiled function replays the reference exactly (rules R1-R9).

``speculative_decode_sim(..., uniforms=U)`` must return the dict the reference
returns inside ``replaying(U)``, for every input form the drop-in accepts.
Float32 (and float16, int) inputs are read as float64 exactly, so they are
compared against the reference run on ``arr.tolist()``.
"""
import array
import math
import sys

import numpy as np
import pytest

import specdec_fast
from specdec_fast import Rng
from conftest import (ONE_MINUS, adversarial_uniforms, assert_same, make_case,
                      plain_uniforms, residual_bucket_ends, run_reference)

fast_sim = specdec_fast.speculative_decode_sim


def check(draft, target, tokens, V, uniforms, ref_draft=None, ref_target=None, ref_tokens=None):
    """Run both; return (fast dict, uniforms the reference used)."""
    ref, used = run_reference(draft if ref_draft is None else ref_draft,
                              target if ref_target is None else ref_target,
                              tokens if ref_tokens is None else ref_tokens, V, uniforms)
    fast = fast_sim(draft, target, tokens, V, uniforms=uniforms)
    assert_same(fast, ref)
    return fast, used


def pick_uniforms(g, draft_list, target_list, tokens, V):
    if g.random() < 0.6:
        return adversarial_uniforms(g, draft_list, target_list, tokens, V)
    return plain_uniforms(g, len(tokens) + 2)


# --------------------------------------------------------------------------
# Many random cases in four input forms (10,500 comparisons in all).

def _mixed_matrix(g, mat, V):
    """``mat`` in a random accepted form, and the lists the reference reads."""
    kind = int(g.integers(0, 9))
    n = mat.shape[0]
    if kind == 0:                                   # non-contiguous columns
        wide = np.full((n, 2 * V), np.nan)
        wide[:, ::2] = mat
        return wide[:, ::2], mat.tolist()
    if kind == 1:                                   # Fortran order
        return np.asfortranarray(mat), mat.tolist()
    if kind == 2:                                   # read-only
        a = mat.copy()
        a.setflags(write=False)
        return a, mat.tolist()
    if kind == 3:                                   # list of 1-D arrays, mixed dtypes
        rows, ref = [], []
        for i in range(n):
            r = mat[i].astype(np.float32) if i % 2 else mat[i].copy()
            rows.append(r)
            ref.append(r.tolist())
        return rows, ref
    if kind == 4:                                   # tuple of tuples
        return tuple(tuple(r) for r in mat.tolist()), mat.tolist()
    if kind == 5:                                   # rows longer than V with junk (R5)
        rows = [r + ["junk", float("nan"), None, -1.0] for r in mat.tolist()]
        return rows, mat.tolist()
    if kind == 6:                                   # 2-D array with NaN columns past V (R5)
        wide = np.full((n, V + 3), np.nan)
        wide[:, :V] = mat
        return wide, mat.tolist()
    if kind == 7:                                   # float32 2-D array
        a = mat.astype(np.float32)
        return a, a.tolist()
    rows, ref = [], []                              # list mixing lists, tuples, arrays
    for i in range(n):
        form = i % 4
        if form == 0:
            rows.append(mat[i].tolist())
        elif form == 1:
            rows.append(tuple(mat[i].tolist()))
        elif form == 2:
            rows.append(mat[i][::-1].copy()[::-1])  # negative stride view
        else:
            rows.append(mat[i].astype(">f8"))       # byte-swapped
        ref.append(mat[i].tolist())
    return rows, ref


def _mixed_tokens(g, tokens, V):
    kind = int(g.integers(0, 5))
    if kind == 0:
        return list(tokens)
    if kind == 1:
        return tuple(tokens)
    if kind == 2:
        dtypes = [np.int64, np.int32, np.uint32, np.uint64, np.intp]
        if V <= 128:
            dtypes += [np.int8, np.uint8]
        if V <= 32768:
            dtypes += [np.int16, np.uint16]
        return np.array(tokens, dtype=dtypes[int(g.integers(0, len(dtypes)))])
    if kind == 3:
        return [np.int64(t) if i % 2 else np.uint16(t) if t < 65536 else t
                for i, t in enumerate(tokens)]
    return np.array(tokens, dtype=np.int64)[::-1].copy()[::-1]


def _uniform_container(g, U):
    kind = int(g.integers(0, 3))
    return U if kind == 0 else tuple(U) if kind == 1 else np.array(U)


FORMS = {"list": 8, "f64": 5, "f32": 4, "mixed": 4}   # chunks of 500 cases
FORM_SEEDS = {"list": 101, "f64": 202, "f32": 303, "mixed": 404}


@pytest.mark.parametrize("form, chunk",
                         [(f, c) for f, n in FORMS.items() for c in range(n)])
def test_random_cases_replay(form, chunk):
    """R1-R9 on random cases: equal dicts, key order and value types included."""
    g = np.random.default_rng([FORM_SEEDS[form], chunk])
    for _ in range(500):
        draft, target, tokens, V = make_case(g)
        if form == "list":
            dl, tl = draft.tolist(), target.tolist()
            U = pick_uniforms(g, dl, tl, tokens, V)
            check(dl, tl, tokens, V, U)
        elif form == "f64":
            U = pick_uniforms(g, draft.tolist(), target.tolist(), tokens, V)
            check(draft, target, tokens, V, U, draft.tolist(), target.tolist())
        elif form == "f32":
            d32, t32 = draft.astype(np.float32), target.astype(np.float32)
            dl, tl = d32.tolist(), t32.tolist()
            U = pick_uniforms(g, dl, tl, tokens, V)
            check(d32, t32, tokens, V, U, dl, tl)
        else:
            d, dl = _mixed_matrix(g, draft, V)
            t, tl = _mixed_matrix(g, target, V)
            toks = _mixed_tokens(g, tokens, V)
            U = pick_uniforms(g, dl, tl, tokens, V)
            ref, _ = run_reference(dl, tl, tokens, V, U)
            fast = fast_sim(d, t, toks, V, uniforms=_uniform_container(g, U))
            assert_same(fast, ref)


def test_uniform_consumption_matches_reference():
    """R8: the fast path draws exactly as many uniforms as the reference.

    With exactly ``used`` uniforms it succeeds; with one fewer it raises a
    ValueError naming ``uniforms``.
    """
    g = np.random.default_rng(77)
    counts = set()
    for _ in range(600):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 12)))
        dl, tl = draft.tolist(), target.tolist()
        U = pick_uniforms(g, dl, tl, tokens, V)
        ref, used = run_reference(dl, tl, tokens, V, U)
        assert used <= len(tokens) + 2
        counts.add(used - len(tokens))
        assert_same(fast_sim(dl, tl, tokens, V, uniforms=U[:used]), ref)
        if used:
            with pytest.raises(ValueError, match="uniforms"):
                fast_sim(dl, tl, tokens, V, uniforms=U[:used - 1])
    assert {1, 2}.issubset(counts)       # both bonus kinds were exercised


# --------------------------------------------------------------------------
# The generator: rng=Rng(s), rng=s and the default generator.

def test_rng_equals_replayed_uniforms():
    """rng=Rng(s) == uniforms=Rng(s).random(K+2) == rng=s; Rng advanced by the draws."""
    g = np.random.default_rng(5)
    for s in range(300):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 40)))
        U = Rng(s).random(len(tokens) + 2)
        ref, used = run_reference(draft.tolist(), target.tolist(), tokens, V, U.tolist())
        by_uniforms = fast_sim(draft, target, tokens, V, uniforms=U)
        rng = Rng(s)
        by_rng = fast_sim(draft, target, tokens, V, rng=rng)
        by_seed = fast_sim(draft, target, tokens, V, rng=s)
        assert_same(by_uniforms, ref)
        assert_same(by_rng, ref)
        assert_same(by_seed, ref)
        expected = Rng(s)
        expected.random(used)
        assert rng.state == expected.state


def test_rng_object_is_advanced_across_calls():
    draft = [[0.5, 0.5]] * 3
    target = [[0.2, 0.8]] * 4
    rng = Rng(123)
    stream = Rng(123).random(1000).tolist()
    pos = 0
    for _ in range(100):
        ref, used = run_reference(draft, target, [0, 1, 0], 2, stream[pos:pos + 5])
        assert_same(fast_sim(draft, target, [0, 1, 0], 2, rng=rng), ref)
        pos += used
    expected = Rng(123)
    expected.random(pos)
    assert rng.state == expected.state


def test_default_generator_is_reseeded_by_seed():
    draft, target, tokens = [[0.3, 0.7]] * 4, [[0.6, 0.4]] * 5, [1, 1, 0, 1]
    specdec_fast.seed(99)
    first = [fast_sim(draft, target, tokens, 2) for _ in range(20)]
    specdec_fast.seed(99)
    second = [fast_sim(draft, target, tokens, 2, rng=None) for _ in range(20)]
    assert first == second
    stream = Rng(99).random(200).tolist()
    pos = 0
    for res in first:
        ref, used = run_reference(draft, target, tokens, 2, stream[pos:pos + 6])
        assert_same(res, ref)
        pos += used
    expected = Rng(99)
    expected.random(pos)
    specdec_fast.seed(99)
    for _ in range(20):
        fast_sim(draft, target, tokens, 2)
    assert specdec_fast.get_default_rng().state == expected.state


# --------------------------------------------------------------------------
# Edge cases, one rule each.

def test_q_zero_at_first_drafted_token():
    """R2: q == 0 at t_0 stops at once: no token, no uniform drawn, no bonus."""
    draft = [[0.0, 1.0], [0.5, 0.5]]
    target = [[0.9, 0.1], [0.5, 0.5], [1.0, 0.0]]
    fast, used = check(draft, target, [0, 1], 2, [0.5] * 4)
    assert used == 0
    assert fast["tokens"] == [] and fast["num_accepted"] == 0
    assert fast["acceptance_rate"] == 0.0 and fast["speedup_over_sequential"] == 0.0
    assert_same(fast_sim(draft, target, [0, 1], 2, uniforms=[]), fast)
    assert_same(fast_sim(np.array(draft), np.array(target), [0, 1], 2, uniforms=[]), fast)


def test_q_zero_after_accepted_tokens():
    """R2: q == 0 at t_2 after two accepts: exactly 2 uniforms, tokens [t0, t1], no bonus."""
    draft = [[0.5, 0.5, 0.0]] * 3
    target = [[0.3, 0.3, 0.4]] * 4
    tokens = [1, 0, 2]
    U = [0.1, 0.2, 0.3, 0.4, 0.5]
    fast, used = check(draft, target, tokens, 3, U)
    assert used == 2
    assert fast["tokens"] == [1, 0]
    assert_same(fast_sim(draft, target, tokens, 3, uniforms=U[:2]), fast)
    with pytest.raises(ValueError, match="uniforms"):
        fast_sim(draft, target, tokens, 3, uniforms=U[:1])


def test_q_negative_zero_counts_as_zero():
    """R2: -0.0 == 0, so a draft probability of -0.0 stops the call too."""
    fast, used = check([[-0.0, 1.0]], [[0.5, 0.5], [1.0, 0.0]], [0], 2, [0.5, 0.5, 0.5])
    assert used == 0 and fast["tokens"] == []


@pytest.mark.parametrize("u2, token", [(0.0, 0), (0.25, 0), (math.nextafter(0.25, 1), 1),
                                       (0.5, 1), (0.75, 2), (0.8, 3), (ONE_MINUS, 3)])
def test_zero_residual_uses_uniform_buckets(u2, token):
    """R4: p <= q everywhere, so z == 0 and the correction is drawn from 1/V buckets.

    (p == q exactly can never reject, since p/q == 1 > u; p = q/2 rejects.)
    """
    q = [0.25, 0.25, 0.25, 0.25]
    p = [0.125, 0.125, 0.125, 0.125]
    fast, used = check([q], [p], [1], 4, [0.5, u2])
    assert used == 2
    assert fast["tokens"] == [token]


def test_zero_residual_p_equal_q_except_at_drafted_token():
    """R4: p == q except a lower p at the drafted token -> z == 0 -> 1/V buckets."""
    q = [0.1, 0.2, 0.3, 0.4]
    p = [0.1, 0.05, 0.3, 0.4]
    for u2, token in [(0.2, 0), (0.26, 1), (0.5, 1), (0.51, 2), (0.9, 3)]:
        fast, _ = check([q], [p], [1], 4, [0.5, u2])
        assert fast["tokens"] == [token]


def test_uniform_buckets_shortfall_gives_token_0():
    """R4: with V == 7, seven additions of 1/7 end below 1 - 2**-53; u past it -> token 0."""
    V = 7
    cum = 0.0
    for _ in range(V):
        cum += 1.0 / V
    assert cum < ONE_MINUS
    q = [1.0 / V] * V
    p = [0.5 / V] * V
    fast, used = check([q], [p], [3], V, [0.9, ONE_MINUS])
    assert used == 2 and fast["tokens"] == [0]
    fast, _ = check([q], [p], [3], V, [0.9, cum])
    assert fast["tokens"] == [6]


@pytest.mark.parametrize("u, token", [(0.0, 0), (0.25, 0), (math.nextafter(0.25, 1), 1),
                                      (0.5, 1), (0.625, 2), (0.75, 2), (0.7500000000000001, 3),
                                      (ONE_MINUS, 3)])
def test_bonus_on_dyadic_bucket_boundaries(u, token):
    """R6/R7: u equal to an exact cumulative sum picks the bucket ending there (u <= cum)."""
    p0 = [0.25, 0.25, 0.25, 0.25]
    fast, used = check([], [p0], [], 4, [u])
    assert used == 1 and fast["tokens"] == [token]
    fast, _ = check(np.empty((0, 4)), np.array([p0], dtype=np.float32), [], 4, [u],
                    [], [p0])
    assert fast["tokens"] == [token]


def test_bonus_on_short_list_rows_at_every_running_sum():
    """R6 on list rows of 1-70 floats, whose first items are summed four at a time and
    the crossing certified: u on each of the reference's running sums and an ulp
    either side gives its token, where the sums of fours round otherwise too."""
    g = np.random.default_rng(64)
    for V in range(1, 71):
        for shape in ("uniform", "spread", "thirds"):
            if shape == "uniform":
                row = g.random(V)
            elif shape == "spread":
                row = g.random(V) * 10.0 ** g.integers(-18, 1, V)
            else:
                row = np.full(V, 1 / 3) + g.integers(0, 2, V) * 2.0**-40
            row = (row / (row.sum() * g.uniform(0.9, 1.3))).tolist()
            cums, cum = [], 0.0
            for x in row:
                cum += x
                cums.append(cum)
            for v in sorted(set(g.integers(0, V, 6).tolist()) | {0, V - 1}):
                for u in (cums[v], math.nextafter(cums[v], 0), math.nextafter(cums[v], 1)):
                    if 0 <= u < 1:
                        check([], [row], [], V, [u])

@pytest.mark.parametrize("u2, token", [(0.0, 0), (0.5, 0), (math.nextafter(0.5, 1), 1),
                                       (0.75, 1), (0.7500000000000001, 3), (ONE_MINUS, 3)])
def test_correction_on_dyadic_bucket_boundaries(u2, token):
    """R4: residual [0.25, 0.125, 0, 0.125] / 0.5 -> cums 0.5, 0.75, 0.75, 1.0 (exact)."""
    q = [0.25, 0.125, 0.5, 0.125]
    p = [0.5, 0.25, 0.0, 0.25]
    fast, used = check([q], [p], [2], 4, [0.3, u2])
    assert used == 2 and fast["tokens"] == [token]
    fast, _ = check(np.array([q], np.float32), np.array([p], np.float32), [2], 4,
                    [0.3, u2], [q], [p])
    assert fast["tokens"] == [token]


def test_accept_threshold_is_strict():
    """R3: accept iff u < min(1, p/q); u == p/q rejects, the double below accepts."""
    q, p = [0.5, 0.5], [0.25, 0.75]            # ratio at token 0: 0.5
    fast, used = check([q], [p, [1.0, 0.0]], [0], 2, [0.5, 0.5, 0.0])
    assert fast["tokens"] == [1, 0] and used == 3      # rejected, correction, bonus (R6)
    fast, used = check([q], [p, [0.0, 1.0]], [0], 2, [math.nextafter(0.5, 0), 0.5, 0.0])
    assert fast["tokens"] == [0, 1] and used == 2
    # p == 0: ratio 0, even u == 0.0 rejects (and u2 == 0.0 <= cum_0 == 0.0 picks 0)
    fast, used = check([[0.5, 0.5]], [[0.0, 1.0]], [0], 2, [0.0, 0.5])
    assert fast["tokens"] == [1] and used == 2
    fast, used = check([[0.5, 0.5]], [[0.0, 1.0]], [0], 2, [0.0, 0.0])
    assert fast["tokens"] == [0] and used == 2
    # ratio >= 1: even the largest uniform accepts
    fast, used = check([[0.5, 0.5]], [[0.5, 0.5]], [0], 2, [ONE_MINUS])
    assert fast["tokens"] == [0] and used == 1


def test_unnormalised_rows():
    """R4/R6: rows summing above or below 1 are used as given; no crossing -> token 0."""
    # bonus row summing to 0.5: u above it finds no crossing -> token 0 (R6)
    fast, _ = check([], [[0.1, 0.2, 0.2]], [], 3, [0.7])
    assert fast["tokens"] == [0]
    fast, _ = check([], [[0.1, 0.2, 0.2]], [], 3, [0.45])
    assert fast["tokens"] == [2]
    # bonus row summing to 1.8
    fast, _ = check([], [[0.6, 0.6, 0.6]], [], 3, [0.7])
    assert fast["tokens"] == [1]
    # all-zero bonus row: cum stays 0, only u == 0 qualifies
    fast, _ = check([], [[0.0, 0.0, 0.0]], [], 3, [0.0])
    assert fast["tokens"] == [0]
    fast, _ = check([], [[0.0, 0.0, 0.0]], [], 3, [0.3])
    assert fast["tokens"] == [0]
    # unnormalised rows in the accept test and the (normalised) residual
    fast, used = check([[1.5, 0.5, 2.0]], [[3.0, 0.2, 0.1], [0.1, 0.1, 0.1]], [2], 3,
                       [0.01, 0.99, 0.25])
    assert used == 2 and fast["tokens"] == [2, 0]       # bonus row sums to 0.3 < 0.99
    fast, used = check(np.array([[1.5, 0.5, 2.0]]), np.array([[3.0, 0.2, 0.1], [0.1] * 3]),
                       [2], 3, [0.9, 0.5, 0.31], [[1.5, 0.5, 2.0]], [[3.0, 0.2, 0.1], [0.1] * 3])
    assert fast["tokens"] == [0, 0]


def test_rejection_at_last_position_gets_bonus():
    """R6: K=2, position 1 rejects -> [t_0, correction, bonus], 3 tokens, rate 1.0."""
    draft = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    target = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    fast, used = check(draft, target, [1, 2], 3, [0.3, 0.6, 0.5, 0.5])
    assert used == 4
    assert fast["tokens"] == [1, 0, 2]
    assert fast["num_accepted"] == 3
    assert fast["acceptance_rate"] == 1.0
    assert fast["speedup_over_sequential"] == 1.5
    # with only K target rows there is no bonus
    fast, used = check(draft, target[:2], [1, 2], 3, [0.3, 0.6, 0.5, 0.5])
    assert used == 3 and fast["tokens"] == [1, 0]


def test_rejection_before_last_position_has_no_bonus():
    """R6: a rejection at i < K-1 leaves fewer than K tokens: no bonus."""
    draft = [[0.5, 0.5]] * 3
    target = [[0.0, 1.0]] * 4
    fast, used = check(draft, target, [1, 0, 1], 2, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert used == 3 and fast["tokens"] == [1, 1]
    assert fast["acceptance_rate"] == 0.5


@pytest.mark.parametrize("extra", [0, 1, 3])
def test_target_rows_k_k1_k3(extra):
    """R6/R5: only row K of target_probs is used for the bonus; rows past K never read."""
    K, V = 3, 4
    draft = [[0.25] * V] * K
    target = [[0.25] * V] * K + [[0.0, 0.0, 1.0, 0.0]]
    target = target[:K + min(extra, 1)] + [[float("nan")] * V, ["junk"] * V][:max(extra - 1, 0)]
    assert len(target) == K + extra
    fast, used = check(draft, target, [0, 1, 2], V, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert used == K + (1 if extra else 0)
    assert fast["tokens"] == ([0, 1, 2, 2] if extra else [0, 1, 2])
    arr = np.array(target[:K + min(extra, 1)] + [[float("nan")] * V] * max(extra - 1, 0))
    fast2 = fast_sim(np.array(draft), arr, np.array([0, 1, 2]), V, uniforms=[0.0, 0.1, 0.2, 0.3, 0.4])
    assert_same(fast2, fast)


def test_k_zero():
    """R7: K == 0: one bonus token from p_0 when target has a row, acceptance_rate int 0."""
    fast, used = check([], [[0.1, 0.9]], [], 2, [0.5])
    assert used == 1 and fast["tokens"] == [1]
    assert fast["acceptance_rate"] == 0 and type(fast["acceptance_rate"]) is int
    assert fast["speedup_over_sequential"] == 0.5
    fast, used = check([], [], [], 2, [0.5])
    assert used == 0 and fast["tokens"] == [] and fast["num_accepted"] == 0
    fast, used = check([], [], [], 2, [])
    assert used == 0
    for toks in ([], (), np.array([], dtype=np.int64), np.array([])):
        res = fast_sim(np.empty((0, 2)), np.array([[0.1, 0.9]]), toks, 2, uniforms=[0.05])
        assert res["tokens"] == [0] and type(res["acceptance_rate"]) is int
    # junk rows of target_probs past row K are never read (R5)
    fast, used = check([], [[0.1, 0.9], ["junk"], None], [], 2, [0.5])
    assert fast["tokens"] == [1]


def test_vocab_size_one():
    """V == 1: every token is 0; all rules still apply (R3, R4 residual, R6 bonus)."""
    g = np.random.default_rng(1)
    for _ in range(200):
        K = int(g.integers(0, 6))
        draft = [[float(g.choice([0.0, 0.5, 1.0, 2.0]))] for _ in range(K)]
        target = [[float(g.choice([0.0, 0.3, 1.0]))] for _ in range(K + int(g.integers(0, 2)))]
        U = plain_uniforms(g, K + 2)
        fast, _ = check(draft, target, [0] * K, 1, U)
        assert set(fast["tokens"]) <= {0}


def test_tokens_at_vocabulary_edges():
    """R2-R4 at t = 0 and t = V-1."""
    V = 6
    q = [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]
    p = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    for t in (0, V - 1):
        for U in ([0.0, 0.5, 0.5], [0.9, 0.1, 0.2], [ONE_MINUS, 0.99, 0.5]):
            check([q], [p, q], [t], V, U)
            check(np.array([q]), np.array([p, q]), np.array([t], dtype=np.uint8), V, U,
                  [q], [p, q], [t])


def test_extremes_of_uniforms():
    """R3/R4/R6 with uniforms 0.0 and 1 - 2**-53 everywhere."""
    g = np.random.default_rng(8)
    for _ in range(400):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 30)))
        for u in (0.0, ONE_MINUS):
            check(draft.tolist(), target.tolist(), tokens, V, [u] * (len(tokens) + 2))


def test_large_vocabulary():
    """R4/R6 with V = 100,000 and 300,000 (block scans, GIL released), uniforms near boundaries."""
    g = np.random.default_rng(2024)
    for V, n_cases in ((100_000, 5), (300_000, 2)):
        for _ in range(n_cases):
            draft, target, tokens, _ = make_case(g, K=int(g.integers(0, 3)), V=V)
            for dt in (np.float64, np.float32):
                d, t = draft.astype(dt), target.astype(dt)
                dl, tl = d.tolist(), t.tolist()
                for _ in range(2):
                    U = adversarial_uniforms(g, dl, tl, tokens, V)
                    check(d, t, tokens, V, U, dl, tl)


def test_large_vocabulary_many_tiny_values():
    """R4/R6: 100,000 entries of 1e-5 (inexact) with u on or next to a running sum."""
    V = 100_000
    row = [1e-5] * V
    q = [2e-5] * (V // 2) + [0.0] * (V // 2)
    cums = []
    cum = 0.0
    for x in row:
        cum += x
        cums.append(cum)
    for idx in (0, 1, 999, 4096, 50_000, 77_777, V - 2, V - 1):
        for u in (cums[idx], math.nextafter(cums[idx], 0), math.nextafter(cums[idx], 1)):
            if u < 1.0:
                check([], [row], [], V, [u])
                check([], np.array([row]), [], V, [u], [], [row])
                check([q], [row, row], [3], V, [0.9, u, u])
                check(np.array([q]), np.array([row, row]), [3], V, [0.9, u, u], [q], [row, row])


def test_tiny_and_subnormal_probabilities():
    """R3/R4/R6 with subnormal entries: residual sums of 5e-324, ratios that underflow."""
    cases = [
        ([[0.0, 1.0, 0.0]], [[5e-324, 0.0, 0.0], [5e-324, 1e-310, 0.5]], [1]),
        ([[1e-310, 2e-310, 0.0]], [[3e-310, 1e-310, 1e-310], [1e-310] * 3], [1]),
        ([[1.0, 1e-310]], [[1e-300, 1e-308], [1e-310, 1e-310]], [0]),
        ([[1e-310, 1e-310]], [[1.0, 1e-320], [1e-320, 1.0]], [1]),
        ([[0.5, 5e-324]], [[0.5, 0.0], [0.0, 5e-324]], [1]),
        ([[1e300, 1e-300]], [[1e-300, 0.0], [1.0, 0.0]], [0]),
    ]
    g = np.random.default_rng(3)
    for draft, target, tokens in cases:
        V = len(draft[0])
        for U in ([0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [ONE_MINUS] * 3, [1e-320, 0.3, 1e-310]):
            check(draft, target, tokens, V, U)
            check(np.array(draft), np.array(target), tokens, V, U, draft, target)
        for _ in range(20):
            check(draft, target, tokens, V, adversarial_uniforms(g, draft, target, tokens, V))
    # random rows where most entries are tiny or subnormal
    for _ in range(300):
        V = int(g.integers(2, 300))
        scale = float(g.choice([1e-310, 1e-305, 1e-300, 5e-324]))
        draft = (g.random((2, V)) * scale).tolist()
        target = (g.random((3, V)) * scale).tolist()
        tokens = [int(g.integers(0, V)) for _ in range(2)]
        U = adversarial_uniforms(g, draft, target, tokens, V)
        check(draft, target, tokens, V, U)
        check(np.array(draft), np.array(target), tokens, V, U, draft, target)


def test_huge_probabilities_overflow_the_sums():
    """R4/R6 with values near DBL_MAX: z and cum overflow to inf exactly as in Python."""
    big = 1.7e308
    cases = [
        ([[0.0, 0.0, 1.0]], [[big, big, 0.0], [big, big, 1.0]], [2]),
        ([[1e300, 0.0, 1e300]], [[1e-300, 1e300, 1e300], [1e300, 1e300, 1e300]], [0]),
        ([[1e-300, 1.0]], [[1e300, 1.0], [0.0, big]], [0]),
        ([[big, 1.0, 1.0]], [[1.0, big, big], [0.0, 0.0, big]], [0]),
    ]
    for draft, target, tokens in cases:
        V = len(draft[0])
        for U in ([0.0] * 3, [0.5] * 3, [ONE_MINUS] * 3, [0.99, 1e-300, 0.5]):
            check(draft, target, tokens, V, U)
            check(np.array(draft), np.array(target), tokens, V, U, draft, target)
    g = np.random.default_rng(4)
    for _ in range(200):
        V = int(g.integers(2, 400))
        draft = (g.random((2, V)) * 1e300 * g.integers(0, 2, (2, V))).tolist()
        target = (g.random((3, V)) * big).tolist()
        tokens = [int(g.integers(0, V)) for _ in range(2)]
        U = plain_uniforms(g, 4)
        check(draft, target, tokens, V, U)
        check(np.array(draft), np.array(target), tokens, V, U, draft, target)


def test_rows_longer_than_vocab_are_cut():
    """R5: only the first V entries are read; NaN, str and None after them are ignored."""
    V = 3
    junk = [float("nan"), "junk", None, -1.0, float("inf")]
    draft = [[0.2, 0.3, 0.5] + junk, [0.5, 0.5, 0.0] + junk]
    target = [[0.6, 0.3, 0.1] + junk, [0.0, 0.2, 0.8] + junk, [0.3, 0.3, 0.4] + junk]
    ref_d = [r[:V] for r in draft]
    ref_t = [r[:V] for r in target]
    for U in ([0.1, 0.2, ONE_MINUS, 0.5], [0.9, ONE_MINUS, 0.5, 0.5], [0.1, 0.9, 0.99, 0.5],
              [0.1, 0.9, 0.999, ONE_MINUS]):
        check(draft, target, [2, 1], V, U, ref_d, ref_t)
        wide_d = np.array([r[:V] + [np.nan, -1.0] for r in ref_d])
        wide_t = np.array([r[:V] + [np.inf, -1.0] for r in ref_t])
        check(wide_d, wide_t, [2, 1], V, U, ref_d, ref_t)


def test_integer_and_other_dtypes():
    """Inputs are read as doubles: int arrays and lists of ints, float16, big-endian."""
    g = np.random.default_rng(12)
    for _ in range(300):
        K = int(g.integers(0, 5))
        V = int(g.integers(1, 10))
        draft = g.integers(0, 4, (K, V))
        target = g.integers(0, 4, (K + 1, V))
        tokens = [int(g.integers(0, V)) for _ in range(K)]
        U = plain_uniforms(g, K + 2)
        check(draft.tolist(), target.tolist(), tokens, V, U)            # Python ints
        for dt in (np.int64, np.int32, np.uint8, np.float16, ">f8", "<f4", np.bool_):
            check(draft.astype(dt), target.astype(dt), tokens, V, U,
                  draft.astype(dt).tolist(), target.astype(dt).tolist())


def test_list_of_numpy_scalars_and_array_rows():
    """Rows as lists of np.float64 scalars (compared with the reference on those very
    objects: from CPython 3.12 on its sum() does not compensate them) or as 1-D
    float32/float64 arrays (an array stands for its tolist())."""
    g = np.random.default_rng(13)
    for _ in range(300):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 20)))
        U = pick_uniforms(g, draft.tolist(), target.tolist(), tokens, V)
        check([list(r) for r in draft], [list(r) for r in target], tokens, V, U)
        check(list(draft), list(target), tokens, V, U, draft.tolist(), target.tolist())
        d32 = [r.astype(np.float32) for r in draft]
        t32 = [r.astype(np.float32) for r in target]
        U = pick_uniforms(g, [r.tolist() for r in d32], [r.tolist() for r in t32], tokens, V)
        check(d32, t32, tokens, V, U, [r.tolist() for r in d32], [r.tolist() for r in t32])
        # mixed precision between the two rows of a residual
        check(d32, list(target), tokens, V, U, [r.tolist() for r in d32], target.tolist())


class Reversed2(tuple):
    """A pair whose indexing swaps its items: not what its storage (or iter) says."""

    def __getitem__(self, i):
        return tuple.__getitem__(self, 1 - i)


class ShortLength(list):
    """A list whose len() is one less than its storage."""

    def __len__(self):
        return list.__len__(self) - 1


class RowsBackwards(list):
    """Rows 0 .. 2 of a three-row matrix indexed back to front."""

    def __getitem__(self, i):
        return list.__getitem__(self, 2 - i)


@pytest.mark.parametrize("case", ["tokens by __getitem__", "tokens by __len__",
                                  "target by __len__", "target by __getitem__",
                                  "draft by __getitem__"])
def test_sequence_subclasses_are_read_through_their_own_methods(case):
    """The reference reads ``len(x)`` and ``x[i]``; so does the drop-in, for lists and
    tuples of a subclass too (not their storage). Each case's answer differs from what
    the storage says."""
    draft = [[0.5, 0.5], [0.5, 0.5]]
    target = [[0.2, 0.8], [0.9, 0.1], [0.3, 0.7]]
    tokens = [0, 1]
    if case == "tokens by __getitem__":
        tokens = Reversed2((0, 1))
    elif case == "tokens by __len__":
        tokens = ShortLength([0, 1])
    elif case == "target by __len__":
        target = ShortLength(target)
    elif case == "target by __getitem__":
        target = RowsBackwards(target)
    else:
        draft = RowsBackwards([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    stored = [list(tuple.__iter__(x) if isinstance(x, tuple) else list.__iter__(x))
              for x in (draft, target, tokens)]
    differ = 0
    for U in ([0.1, 0.45, 0.35, 0.2], [0.6, 0.1, 0.5, 0.5], [0.1, 0.1, 0.25, 0.5],
              [0.95, 0.3, 0.6, 0.2]):
        fast, _ = check(draft, target, tokens, 2, U)
        differ += fast != specdec_fast.speculative_decode_sim(*stored, 2, uniforms=U)
    assert differ, "the case must tell the subclass's methods from its storage"


class LabelledTokens:
    """Array-like tokens whose ``[i]`` looks up a label, as a pandas Series with an
    index of its own does: read as its array, by position."""

    def __init__(self, values, labels):
        self.values, self.labels = list(values), list(labels)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, label):
        return self.values[self.labels.index(label)]

    def __array__(self, dtype=None, copy=None):
        return np.array(self.values, dtype=dtype)


class OldStyleSequence:
    """A sequence by ``__len__`` and ``__getitem__`` alone (no ``__iter__``)."""

    def __init__(self, values):
        self.values = list(values)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return self.values[i]


def test_array_like_tokens_and_old_style_uniforms():
    g = np.random.default_rng(31)
    for _ in range(50):
        draft, target, tokens, V = make_case(g, V=int(g.integers(2, 9)))
        U = pick_uniforms(g, draft.tolist(), target.tolist(), tokens, V)
        want = specdec_fast.speculative_decode_sim(draft, target, tokens, V, uniforms=U)
        labelled = LabelledTokens(tokens, labels=list(range(len(tokens)))[::-1])
        assert specdec_fast.speculative_decode_sim(draft, target, labelled, V,
                                                   uniforms=U) == want
        assert specdec_fast.speculative_decode_sim(draft, target, tokens, V,
                                                   uniforms=OldStyleSequence(U)) == want


def test_many_draft_tokens():
    """R1/R8 with K well past 64 (heap buffers for tokens and output)."""
    g = np.random.default_rng(21)
    for K in (64, 65, 100, 300):
        for _ in range(10):
            V = int(g.integers(2, 6))
            draft = np.full((K, V), 1.0 / V)
            target = np.tile(g.random(V), (K + 1, 1))
            target /= target.sum(axis=1, keepdims=True)
            tokens = g.integers(0, V, K).tolist()
            U = [float(x) * 0.3 for x in g.random(K + 2)]         # mostly accepts
            check(draft, target, tokens, V, U, draft.tolist(), target.tolist())
            check(draft.tolist(), target.tolist(), tokens, V, U)
        # all accepted: K + 1 tokens
        fast, used = check([[0.5, 0.5]] * K, [[0.5, 0.5]] * (K + 1), [1] * K, 2, [0.0] * (K + 2))
        assert fast["num_accepted"] == K + 1 and used == K + 1
        # rejection at the last position: K + 1 tokens and K + 2 uniforms (R6, R8)
        target = [[0.5, 0.5]] * (K - 1) + [[1.0, 0.0], [0.0, 1.0]]
        fast, used = check([[0.5, 0.5]] * K, target, [1] * K, 2, [0.0] * (K - 1) + [0.5, 0.5, 0.5])
        assert fast["num_accepted"] == K + 1 and used == K + 2


# --------------------------------------------------------------------------
# sum() of the running interpreter.

def _neumaier(values):
    total = 0.0
    c = 0.0
    for x in values:
        t = total + x
        if abs(total) >= abs(x):
            c += (total - t) + x
        else:
            c += (x - t) + total
        total = t
    return total + c if c else total


def test_residual_sum_follows_running_interpreter():
    """R4 / Floating point: z is ``sum()`` of the running interpreter.

    The residual [1.0, 1e-16 x 10, 0] sums to 1.0 left to right but to
    1 + 1e-15 compensated (CPython >= 3.12).  u = 1 - 5e-16 lies between the two
    resulting ends of bucket 0, so the token depends on which sum() is used; the
    fast path must agree with the reference in this interpreter.
    """
    small = [1e-16] * 10
    p = [1.0] + small + [0.0]
    q = [0.0] * 11 + [1.0]
    V = len(p)
    a = [max(0.0, x - y) for x, y in zip(p, q)]
    plain = 0.0
    for x in a:
        plain += x
    compensated = _neumaier(a)
    assert plain == 1.0 and compensated > 1.0
    u2 = 1.0 - 5e-16
    assert 1.0 / compensated < u2 <= 1.0 / plain        # the two sums disagree on bucket 0
    fast, used = check([q], [p], [V - 1], V, [0.5, u2])
    assert used == 2
    running = sum(a)                                    # this interpreter's sum()
    assert running in (plain, compensated)
    if running == plain:                                # CPython <= 3.11
        assert fast["tokens"] == [0]
    else:                                               # CPython >= 3.12
        assert fast["tokens"][0] != 0
    fast2 = fast_sim(np.array([q]), np.array([p]), [V - 1], V, uniforms=[0.5, u2])
    assert_same(fast2, fast)


class PlainFloat(float):
    """A float subclass that keeps float's arithmetic: ``x - y`` gives a float."""


def _bucket_end_cases(seed, count, v_low, v_high, make_rows):
    """(V, draft, target, ends, v) for ``count`` draws of ``make_rows(g, V)`` (one
    rejected draft, token V - 1): ``ends`` the reference's residual bucket ends,
    ``v`` a random bucket with a nonempty end inside (0, 1); other draws skipped."""
    g = np.random.default_rng(seed)
    for _ in range(count):
        V = int(g.integers(v_low, v_high))
        draft, target = make_rows(g, V)
        ends = residual_bucket_ends(target[0], draft[0], V)
        v = int(g.integers(0, V - 1))
        if 0.0 < ends[v] < 1.0 and not (v > 0 and ends[v - 1] == ends[v]):
            yield V, draft, target, ends, v


def _typed_residual_case(g, V):
    """Rows whose entries are floats, NumPy float64 scalars, ints, bools and float
    subclasses, mixing sizes near 1 with ones near 1e-16 so that compensated and
    plain sums of the residual differ.  The draft token V - 1 (p = 0, q = 1) is
    rejected; both rows are lists of the objects themselves.

    The type of ``p - q`` is Python's dispatch: float64 - float and int - float64
    give a float64, but PlainFloat - float64 a float (float's subtraction goes first,
    as float64 is no subclass of PlainFloat, and takes any float)."""
    target, draft = [], []
    for _ in range(V - 1):
        kind = g.choice(["float", "float", "np-target", "np-draft", "int", "bool", "subclass",
                         "subclass-np", "int-np"])
        x = float(g.random()) if g.random() < 0.3 else float(g.random()) * 10.0 ** -int(
            g.integers(13, 17))
        y = 0.0 if g.random() < 0.7 else x * float(g.random())
        if kind == "int":
            x, y = int(g.integers(0, 3)), int(g.integers(0, 2))
        elif kind == "bool":
            x, y = bool(g.integers(0, 2)), False
        elif kind == "np-target":
            x = np.float64(x)
        elif kind == "np-draft":
            y = np.float64(y)
        elif kind == "subclass":
            x = PlainFloat(x)
        elif kind == "subclass-np":
            x, y = PlainFloat(x), np.float64(y)
        elif kind == "int-np":
            x, y = int(g.integers(1, 3)), np.float64(y)
        target.append(x)
        draft.append(y)
    return [draft + [1.0]], [target + [0.0]]


def test_residual_sum_follows_the_python_types_of_list_entries():
    """R4 / Floating point: the reference's ``sum()`` of the residual depends on the
    Python types of its items from CPython 3.12 on (Neumaier's compensation over
    floats; ints added as they are; plain additions from the first item of another
    type, such as a NumPy float64).  With list rows the drop-in must give the
    reference's token on the objects themselves.

    Each case puts the correction draw exactly on the end of a residual bucket as
    the reference computes it on those objects, where the token depends on the last
    bit of z.  On CPython >= 3.12 the same values as plain floats must give another
    token in some cases (so the types are what decides); deterministic seed.
    """
    decided_by_types = 0
    for V, draft, target, ends, v in _bucket_end_cases(41, 400, 3, 30, _typed_residual_case):
        U = [0.5, float(ends[v])]
        fast, used = check(draft, target, [V - 1], V, U)
        assert used == 2 and fast["tokens"] == [v]
        as_floats, _ = run_reference([[float(x) for x in draft[0]]],
                                     [[float(x) for x in target[0]]], [V - 1], V, U)
        decided_by_types += as_floats["tokens"] != [v]
    if sys.version_info >= (3, 12):
        assert decided_by_types >= 10, decided_by_types
    else:
        assert decided_by_types == 0       # sum() is a plain left-to-right sum


def _large_int_rows(g, V):
    """Integer rows whose residual's exact sum passes 2**53, in some cases a C long
    (2**63): a left-to-right float sum rounds on the way.  The draft token V - 1
    (p = 0, q = 1) is rejected, and its residual, the float 0.0, ends the ints'
    run in the reference's sum(), as half the time an earlier ``p = q = 0`` does."""
    big = int(g.choice([2**52 + 1, 2**53 - 1, 2**53]))
    high = 2**53 if g.random() < 0.8 else 2**62     # ints beyond 2**53: handed over
    target = [big] + [int(g.choice([1, 1, 3, big, int(g.integers(1, high))]))
                      for _ in range(V - 2)] + [0]
    draft = [int(g.integers(0, 2)) if g.random() < 0.2 else 0 for _ in range(V - 1)] + [1]
    if g.random() < 0.5:
        j = int(g.integers(0, V - 1))
        target[j] = draft[j] = 0
    return [draft], [target]


def _token_of_a_double_sum(draft_row, target_row, u):
    """R4's token with ``z`` summed left to right in doubles, not as sum() does."""
    a = [max(0.0, float(p) - float(q)) for p, q in zip(target_row, draft_row)]
    z = 0.0
    for x in a:
        z += x
    cum = 0.0
    for v, x in enumerate(a):
        cum += x / z if z > 0 else 1.0 / len(a)
        if u <= cum:
            return v
    return 0


@pytest.mark.parametrize("form", ["lists", "int64", "uint64", "object", "array-rows",
                                  "mixed", "buffer"])
def test_residual_sum_of_ints_is_exact(form):
    """R4 / Floating point: CPython's sum() adds ints exactly (in a C long, then as
    Python ints) until the first float, which it adds to that exact sum rounded;
    so on integer rows whose residual sums past 2**53 a double sum is off by some
    ulps.  Every input form whose entries the reference sees as ints (lists of
    ints, integer arrays, which stand for their ``tolist()``, buffers) must give the
    reference's token with the correction draw on the reference's bucket ends, and
    in some cases a double sum must give another token (deterministic seed)."""
    decided_by_exactness = 0
    for V, draft, target, ends, v in _bucket_end_cases(53, 150, 3, 12, _large_int_rows):
        if form == "lists":
            d, t = draft, target
        elif form == "int64":
            d, t = np.array(draft, dtype=np.int64), np.array(target, dtype=np.int64)
        elif form == "uint64":
            d, t = np.array(draft, dtype=np.uint64), np.array(target, dtype=np.uint64)
        elif form == "object":
            d, t = np.array(draft, dtype=object), np.array(target, dtype=object)
        elif form == "array-rows":
            d, t = [np.array(r, dtype=np.int64) for r in draft], target
        elif form == "mixed":
            d, t = draft, np.array(target, dtype=np.int64)
        else:
            d, t = memoryview(np.array(draft, dtype=np.int64)), np.array(target, dtype=np.int64)
        for u in (ends[v], math.nextafter(ends[v], 1.0)):
            if u >= 1.0:
                continue
            token = next((w for w in range(V) if u <= ends[w]), 0)
            U = [0.5, float(u)]
            fast, used = check(d, t, [V - 1], V, U, draft, target)
            assert used == 2 and fast["tokens"] == [token]
            decided_by_exactness += _token_of_a_double_sum(draft[0], target[0], u) != token
    assert decided_by_exactness >= 20, decided_by_exactness


@pytest.mark.parametrize("form", ["list", "tuple", "int64", "uint64", "array-rows"])
@pytest.mark.parametrize("draft_row, target_row, token, want", [
    ([0, 0, 0, 1], [2**53, 1, 1, 0], 3, [1]),     # ints first: summed exactly, 2**53 + 2
    ([1, 0, 0, 0], [0, 2**53, 1, 1], 0, [1]),     # a float first: the ints after it as ints
])
def test_ints_in_the_residual_sum_as_in_cpython(form, draft_row, target_row, token, want):
    """Two cases where the reference's sum() of integer residuals is not a double sum
    (3.11) nor a compensated one (3.12+): the correction draw at 1 - 2**-53 takes the
    token that the exact int phase, or plain additions of ints after a float, give."""
    U = [0.5, 0.9999999999999999]
    d, t = [draft_row], [target_row]
    if form == "tuple":
        d, t = (tuple(draft_row),), (tuple(target_row),)
    elif form in ("int64", "uint64"):
        d, t = np.array(d, dtype=form), np.array(t, dtype=form)
    elif form == "array-rows":
        d, t = [array.array("q", draft_row)], [array.array("q", target_row)]
    fast, used = check(d, t, [token], 4, U, [draft_row], [target_row])
    assert used == 2 and fast["tokens"] == want


def test_ints_past_a_c_long_then_floats_add_plainly():
    """Once the leading ints' sum passes a C long (2**63 here: 1024 times 2**53),
    CPython's sum() leaves its fast paths and adds everything after plainly, from
    3.12 on too: three 1000.0s are each lost against 2**63 (half an ulp is 1024),
    where a compensated sum would keep them and round z up to 2**63 + 2048.  The
    draw on the reference's bucket end at 0.5 then tells the two apart."""
    V = 1028
    target = [[2**53] * 1024 + [1000.0, 1000.0, 1000.0, 0]]
    draft = [[0] * (V - 1) + [1]]
    assert sum(max(0.0, p - q) for p, q in zip(target[0], draft[0])) == 2.0**63
    U = [0.5, 0.5]
    fast, used = check(draft, target, [V - 1], V, U)
    assert used == 2 and fast["tokens"] == [511]            # 512 * 2**53 / 2**63 = 0.5
    compensated_z = 2.0**63 + 2048.0
    assert 512 * (2.0**53 / compensated_z) < 0.5            # where a compensated z would go


@pytest.mark.parametrize("K", [0, 1, 8])
def test_call_floor_builds_the_result_of_a_call_that_accepts_everything(K):
    """benchmarks time call_floor as the drop-in's edges alone: its dict must be the one
    the reference returns when every draft (0 .. K-1) and the bonus token K come out."""
    from specdec_fast._core import call_floor
    V = K + 2
    draft = [[1.0 / V] * V for _ in range(K)]
    target = [[1.0 / V] * V for _ in range(K)] + [[0.0] * K + [1.0, 0.0]]
    tokens = list(range(K))
    want, _ = run_reference(draft, target, tokens, V, [0.0] * K + [0.5])
    assert want["tokens"] == list(range(K + 1))
    assert_same(call_floor(draft, target, tokens, V), want)


@pytest.mark.parametrize("kind", ["list", "numpy"])
@pytest.mark.parametrize("K", [64, 65, 130])
def test_many_drafts_use_heap_buffers_exactly(kind, K):
    """Past 64 drafts the call's token and uniform buffers are allocated, not on the
    stack: the same dicts, including all K accepted (K + 1 draws) and a rejection at
    the last position (K + 2 draws, every uniform given)."""
    V = 5
    draft = np.full((K, V), 0.2)
    target = np.tile([0.4, 0.1, 0.1, 0.2, 0.2], (K + 1, 1))
    tokens = [0] * (K - 1) + [1]           # p/q = 2 (accepted), then 0.5 at the last
    form = (lambda m: m.tolist()) if kind == "list" else (lambda m: m)
    for last in (0.3, 0.7):                # accepted / rejected at position K - 1
        U = [0.5] * (K - 1) + [last, 0.45, 0.9]
        fast, used = check(form(draft), form(target), tokens, V, U, draft.tolist(),
                           target.tolist())
        assert used == (K + 1 if last < 0.5 else K + 2)
        assert fast["num_accepted"] == K + 1
    with pytest.raises(ValueError, match=f"more than the {K + 1} values"):
        fast_sim(form(draft), form(target), tokens, V, uniforms=[0.5] * (K - 1) + [0.7, 0.45])


# --------------------------------------------------------------------------
# List rows of floats take quick loops (the accept tests, four bonus entries at a
# time); anything else, at any position, hands over to the general loop there.

def _hand_over_case(kind, j):
    """K = 6 drafts that all pass before position ``j``, where an entry, a row or
    the uniforms are of ``kind``; what the reference reads there is the same number."""
    K, V = 6, 5
    g = np.random.default_rng(1000 + j)
    draft = [[float(x) for x in g.dirichlet(np.ones(V))] for _ in range(K)]
    target = [[float(x) for x in g.dirichlet(np.ones(V))] for _ in range(K + 1)]
    tokens = [int(t) for t in g.integers(0, V, K)]
    U = [0.0] * j + [float(u) for u in g.random(K + 2 - j)]
    ref_draft, ref_target = [list(r) for r in draft], [list(r) for r in target]
    t = tokens[j]
    if kind == "int-entries":
        target[j][t] = ref_target[j][t] = 1
        draft[j][t] = ref_draft[j][t] = 1
    elif kind == "float64-entries":
        target[j][t], draft[j][t] = np.float64(target[j][t]), np.float64(draft[j][t])
    elif kind == "q-zero":
        draft[j][t] = ref_draft[j][t] = 0.0
    elif kind == "q-negative-zero":
        draft[j][t] = ref_draft[j][t] = -0.0
    elif kind == "tuple-row":
        target[j] = tuple(target[j])
    elif kind == "array-row":
        draft[j] = np.array(draft[j])
    elif kind == "float32-array-row":
        draft[j] = np.array(draft[j], dtype=np.float32)
        ref_draft[j] = draft[j].tolist()
    elif kind == "short-row":                   # R5: only the first V entries count
        target[j] = target[j] + ["junk"]
    return draft, target, tokens, V, U, ref_draft, ref_target


HAND_OVER_KINDS = ["int-entries", "float64-entries", "q-zero", "q-negative-zero", "tuple-row",
                   "array-row", "float32-array-row", "short-row"]


@pytest.mark.parametrize("kind", HAND_OVER_KINDS)
@pytest.mark.parametrize("j", range(6))
def test_quick_accept_loop_hands_over_at_any_position(kind, j):
    """Positions before ``j`` go through the quick loop, ``j`` on in the general one:
    the reference's dict and draws; under "exact", the dict of the same values as a
    2-D float64 array (the kernel's own loop)."""
    draft, target, tokens, V, U, ref_draft, ref_target = _hand_over_case(kind, j)
    fast, used = check(draft, target, tokens, V, U, ref_draft, ref_target)
    assert fast["tokens"][:j] == tokens[:j]
    exact = fast_sim(draft, target, tokens, V, uniforms=U, semantics="exact")
    assert_same(exact, fast_sim(np.array(ref_draft, dtype=float), np.array(ref_target, dtype=float),
                                tokens, V, uniforms=U, semantics="exact"))


@pytest.mark.parametrize("j", range(6))
@pytest.mark.parametrize("bad", ["target", "draft"])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_quick_accept_loop_leaves_bad_values_to_the_checks(j, bad, value):
    """An invalid probability at position ``j``, after ``j`` accepts: the error names it."""
    draft, target, tokens, V, U, _, _ = _hand_over_case("none", j)
    (target if bad == "target" else draft)[j][tokens[j]] = value
    name = "target_probs" if bad == "target" else "draft_probs"
    with pytest.raises(ValueError, match=rf"^{name}\[{j}\]\[{tokens[j]}\] = "):
        fast_sim(draft, target, tokens, V, uniforms=U)


@pytest.mark.parametrize("j", range(6))
def test_quick_accept_loop_runs_out_of_uniforms_where_the_reference_does(j):
    draft, target, tokens, V, U, _, _ = _hand_over_case("none", j)
    with pytest.raises(ValueError, match=f"more than the {j} values"):
        fast_sim(draft, target, tokens, V, uniforms=U[:j])


BONUS_V = 11                    # two blocks of four and three entries one at a time


def _bonus_row():
    """Dyadic entries: every running sum is exact, so a uniform can sit on each."""
    return [(v + 1) / 128 for v in range(BONUS_V)]


@pytest.mark.parametrize("v", range(BONUS_V))
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_bonus_block_scan_finds_the_reference_crossing_in_every_lane(v, offset):
    """u on, just below and just above the running sum at each entry."""
    row = _bonus_row()
    u = math.fsum(row[:v + 1])
    u = math.nextafter(u, 0) if offset < 0 else math.nextafter(u, 1) if offset > 0 else u
    fast, used = check([], [row], [], BONUS_V, [u])
    assert used == 1
    assert fast["tokens"] == [v + 1 if offset > 0 and v + 1 < BONUS_V else v
                              if offset <= 0 else 0]


@pytest.mark.parametrize("v", range(BONUS_V))
@pytest.mark.parametrize("value, ok", [(-0.0, True), (0.0, True), (1e308, True),
                                       (-1e-300, False), (float("nan"), False),
                                       (float("inf"), False), (1, True), (np.float64(0.5), True)])
def test_bonus_block_scan_hands_over_any_entry_in_any_lane(v, value, ok):
    """An entry that is not a plain valid float at ``v``: read one at a time from the
    block holding it, as the reference reads it; an invalid one is named."""
    row = _bonus_row()
    row[v] = value
    u = 0.9999
    if ok:
        fast, used = check([], [row], [], BONUS_V, [u])
        assert used == 1
    else:
        with pytest.raises(ValueError, match=rf"^target_probs\[0\]\[{v}\] = "):
            fast_sim([], [row], [], BONUS_V, uniforms=[u])


@pytest.mark.parametrize("crossing, bad", [(j, k) for j in range(BONUS_V) for k in range(j + 1, BONUS_V)])
def test_bonus_block_scan_reads_no_further_than_the_crossing(crossing, bad):
    """An invalid entry after the crossing, in its block of four or a later one, is not
    read by the reference: no error, the crossing's token."""
    row = _bonus_row()
    row[bad] = float("nan")
    fast, used = check([], [row], [], BONUS_V, [math.fsum(row[:crossing + 1])])
    assert used == 1 and fast["tokens"] == [crossing]
