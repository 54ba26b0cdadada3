"""Property tests (hypothesis): the drop-in is the reference on arbitrary small inputs.

Settings are derandomized (``derandomize=True``, no example database) so a CI
run is reproducible.  Hypothesis's own cache goes to the system temporary
directory (unless HYPOTHESIS_STORAGE_DIRECTORY says otherwise), not into the
working tree.
"""
import math
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import specdec_fast
from specdec_fast import Rng
from conftest import ONE_MINUS, assert_same, run_reference

fast_sim = specdec_fast.speculative_decode_sim

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "specdec_fast-hypothesis"))

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)

SPECIAL = [0.0, -0.0, 0.1, 0.125, 0.25, 1 / 3, 0.5, 1.0, 2.0, 5e-324, 1e-310, 1e-300, 1e300]
probability = st.one_of(st.sampled_from(SPECIAL),
                        st.floats(0.0, 1.0),
                        st.floats(0.0, 4.0, allow_subnormal=True))
invalid = st.sampled_from([math.nan, -math.inf, math.inf, -1.0, -1e-300, -5e-324])
uniform = st.one_of(st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, ONE_MINUS, 5e-324]),
                    st.floats(0.0, 1.0, exclude_max=True))


@st.composite
def cases(draw, values=probability, max_v=6, max_k=4):
    V = draw(st.integers(1, max_v))
    K = draw(st.integers(0, max_k))
    row = st.lists(values, min_size=V, max_size=V)
    draft = draw(st.lists(row, min_size=K, max_size=K))
    target = draw(st.lists(row, min_size=K, max_size=K + 2))
    # draft tokens: any valid index, biased to where q > 0 half of the time
    tokens = []
    for i in range(K):
        positive = [v for v in range(V) if draft[i][v] > 0]
        if positive and draw(st.booleans()):
            tokens.append(draw(st.sampled_from(positive)))
        else:
            tokens.append(draw(st.integers(0, V - 1)))
    uniforms = draw(st.lists(uniform, min_size=K + 2, max_size=K + 2))
    return draft, target, tokens, V, uniforms


@SETTINGS
@given(cases())
def test_fast_equals_reference(case):
    """R1-R9: same dict (keys, order, types) and exactly the uniforms the reference drew."""
    draft, target, tokens, V, U = case
    ref, used = run_reference(draft, target, tokens, V, U)
    assert_same(fast_sim(draft, target, tokens, V, uniforms=U), ref)
    assert_same(fast_sim(draft, target, tokens, V, uniforms=U[:used]), ref)


@SETTINGS
@given(cases())
def test_output_invariants(case):
    """Tokens in [0, V); at most K + 1 tokens from at most K + 2 uniforms (R8); R9 fields."""
    draft, target, tokens, V, U = case
    K = len(tokens)
    ref, used = run_reference(draft, target, tokens, V, U)
    res = fast_sim(draft, target, tokens, V, uniforms=U)
    assert used <= K + 2
    assert res["num_accepted"] <= K + 2
    assert res["num_accepted"] <= K + 1
    assert res["num_accepted"] == len(res["tokens"])
    assert res["num_draft_tokens"] == K
    assert all(0 <= t < V for t in res["tokens"])
    assert res["speedup_over_sequential"] == res["num_accepted"] / 2
    if K:
        assert res["acceptance_rate"] == round(res["num_accepted"] / (K + 1), 4)
    else:
        assert res["acceptance_rate"] == 0 and type(res["acceptance_rate"]) is int
    # accepted drafts form a prefix of the draft tokens
    n = res["num_accepted"]
    assert res["tokens"][: max(0, min(n, K) - 1)] == list(tokens[: max(0, min(n, K) - 1)])


@SETTINGS
@given(cases(), st.sampled_from(["f64", "f32", "rows", "tuple"]))
def test_list_and_array_inputs_agree(case, form):
    """Arrays, lists of 1-D arrays and tuples give the list result (float32 read as float64)."""
    draft, target, tokens, V, U = case
    K = len(tokens)
    if form == "f32":
        with np.errstate(over="ignore"):   # values beyond float32 become inf, and must raise
            d = np.array(draft, dtype=np.float32).reshape(K, V)
            t = np.array(target, dtype=np.float32).reshape(len(target), V)
        dl, tl = d.tolist(), t.tolist()
    elif form == "f64":
        d = np.array(draft, dtype=np.float64).reshape(K, V)
        t = np.array(target, dtype=np.float64).reshape(len(target), V)
        dl, tl = draft, target
    elif form == "rows":
        d = [np.array(r) for r in draft]
        t = [np.array(r) for r in target]
        dl, tl = draft, target
    else:
        d = tuple(tuple(r) for r in draft)
        t = tuple(tuple(r) for r in target)
        dl, tl = draft, target
    try:
        expected = fast_sim(dl, tl, tokens, V, uniforms=U)
    except ValueError as exc:
        # An invalid value read (float32 overflow): the array form must refuse it too.
        with pytest.raises(ValueError, match=re.escape(str(exc).split(" = ")[0])):
            fast_sim(d, t, np.array(tokens, dtype=np.int64), V, uniforms=np.array(U))
        return
    ref, _ = run_reference(dl, tl, tokens, V, U)
    assert_same(expected, ref)
    assert_same(fast_sim(d, t, np.array(tokens, dtype=np.int64), V, uniforms=np.array(U)), expected)


class TrackedRow(list):
    """A row that records which indices the reference reads."""

    def __init__(self, values, name, i, log):
        super().__init__(values)
        self.name, self.i, self.log = name, i, log

    def __getitem__(self, index):
        value = super().__getitem__(index)
        self.log.append((self.name, self.i, index, value))
        return value


def _is_invalid(x):
    return not (x >= 0.0 and x <= 1.7976931348623157e308)


@SETTINGS
@given(cases(values=st.one_of(probability, probability, invalid)))
def test_invalid_values_read_raise_others_ignored(case):
    """R2-R6: a negative, NaN or infinite value the reference reads -> ValueError naming
    one of the invalid positions it read; otherwise the reference's result.  With
    check_all=True any invalid value in draft rows < K or target rows <= K raises."""
    draft, target, tokens, V, U = case
    K = len(tokens)
    log = []
    tracked_d = [TrackedRow(r, "draft_probs", i, log) for i, r in enumerate(draft)]
    tracked_t = [TrackedRow(r, "target_probs", i, log) for i, r in enumerate(target)]
    try:
        ref, _ = run_reference(tracked_d, tracked_t, tokens, V, U)
    except (ArithmeticError, ValueError):       # the reference may itself fail
        ref = None
    bad_reads = [(name, i, v) for name, i, v, x in log if _is_invalid(x)]
    event("an invalid value was read" if bad_reads else "no invalid value read")
    if bad_reads:
        try:
            fast_sim(draft, target, tokens, V, uniforms=U)
        except ValueError as exc:
            msg = str(exc)
            assert any(f"{name}[{i}][{v}]" in msg for name, i, v in bad_reads), msg
        else:
            raise AssertionError(f"no error although the reference read {bad_reads}")
    else:
        assert ref is not None
        assert_same(fast_sim(draft, target, tokens, V, uniforms=U), ref)
    named = [("draft_probs", i, v) for i in range(K) for v in range(V) if _is_invalid(draft[i][v])]
    named += [("target_probs", i, v) for i in range(min(K + 1, len(target))) for v in range(V)
              if _is_invalid(target[i][v])]
    event("invalid value in the named rows" if named else "named rows all valid")
    if named:
        try:
            fast_sim(draft, target, tokens, V, uniforms=U, check_all=True)
        except ValueError as exc:
            assert any(f"{name}[{i}][{v}]" in str(exc) for name, i, v in named), str(exc)
        else:
            raise AssertionError(f"check_all=True did not raise for {named}")
    elif ref is not None:
        assert_same(fast_sim(draft, target, tokens, V, uniforms=U, check_all=True), ref)


@SETTINGS
@given(cases(), st.integers(0, 2**64 - 1))
def test_rng_is_replayed_uniforms(case, seed):
    """rng=Rng(s) == rng=s == uniforms=Rng(s).random(K+2); Rng advanced by the draws."""
    draft, target, tokens, V, _ = case
    U = Rng(seed).random(len(tokens) + 2)
    ref, used = run_reference(draft, target, tokens, V, U.tolist())
    rng = Rng(seed)
    assert_same(fast_sim(draft, target, tokens, V, rng=rng), ref)
    assert_same(fast_sim(draft, target, tokens, V, rng=seed), ref)
    expected = Rng(seed)
    expected.random(used)
    assert rng.state == expected.state



MATRIX_FORMS = ["list", "tuple", "tuple-rows", "array-rows", "f64", "f32", "int", "fortran",
                "strided", "f64-1d"]
CHANGES = [None, None, None, "token-high", "token-negative", "token-float", "token-bool",
           "token-numpy", "token-big", "tokens-tuple", "tokens-array", "short-row",
           "short-bonus-row", "fewer-rows", "vocab-zero", "vocab-numpy", "vocab-bool",
           "vocab-float", "vocab-big"]


def matrix_as(form, rows):
    """``rows`` in the given form (ragged rows stay lists, whatever the form)."""
    if not rows:
        return []
    if form == "list" or len({len(r) for r in rows}) > 1:
        return [list(r) for r in rows]
    a = np.array(rows, dtype=np.float64)
    if form == "tuple":
        return tuple(list(r) for r in rows)
    if form == "tuple-rows":
        return [tuple(r) for r in rows]
    if form == "array-rows":
        return [np.array(r) for r in rows]
    if form == "f32":
        with np.errstate(over="ignore"):    # beyond float32: inf, an invalid value
            return a.astype(np.float32)
    if form == "int":
        return (a > 0.5).astype(np.int64)
    if form == "fortran":
        return np.asfortranarray(a)
    if form == "strided":
        return np.repeat(a, 2, axis=1)[:, ::2]
    if form == "f64-1d":
        return a.ravel()
    return a


def changed(change, draft, target, tokens, V):
    """The arguments with one thing made odd or wrong (``None``: none)."""
    tokens = list(tokens)
    if change == "token-high" and tokens:
        tokens[-1] = V
    elif change == "token-negative" and tokens:
        tokens[0] = -1
    elif change == "token-float" and tokens:
        tokens[0] = float(tokens[0])
    elif change == "token-bool" and tokens:
        tokens[0] = bool(tokens[0] % 2)
    elif change == "token-numpy" and tokens:
        tokens[-1] = np.int32(tokens[-1])
    elif change == "token-big" and tokens:
        tokens[0] = 2**70
    elif change == "tokens-tuple":
        tokens = tuple(tokens)
    elif change == "tokens-array":
        tokens = np.array(tokens, dtype=np.int64)
    elif change == "short-row" and draft:
        draft = [r[:] for r in draft]
        draft[-1] = draft[-1][:-1]
    elif change == "short-bonus-row" and len(target) > len(tokens):
        target = [r[:] for r in target]
        target[len(tokens)] = target[len(tokens)][:-1]
    elif change == "fewer-rows" and target:
        target = target[:len(tokens) - 1] if tokens else target
    elif change == "vocab-zero":
        V = 0
    elif change == "vocab-numpy":
        V = np.int64(V)
    elif change == "vocab-bool":
        V = True
    elif change == "vocab-float":
        V = float(V)
    elif change == "vocab-big":
        V = 2**70
    return draft, target, tokens, V


def result_or_error(call):
    """("result", the call's dict), or the type and message of the error it raised."""
    try:
        return "result", call()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@SETTINGS
@given(cases(), st.sampled_from(MATRIX_FORMS), st.sampled_from(MATRIX_FORMS),
       st.sampled_from(CHANGES), st.integers(0, 2**64 - 1))
def test_generator_and_its_uniforms_open_a_call_alike(case, draft_form, target_form, change,
                                                      seed):
    """Whatever the arguments' forms, valid or not, a call drawing from a generator gives
    what the same call given that generator's uniforms gives: the same dict, or the same
    error with the same message.  A call refused for its arguments (not for a value it
    read, which may come after draws) draws nothing."""
    draft, target, tokens, V, _ = case
    draft, target, tokens, V = changed(change, draft, target, tokens, V)
    if draft_form == "f64-1d" and draft:
        draft_form = "f64"
    d = matrix_as(draft_form, draft)
    t = matrix_as(target_form, target)
    rng = Rng(seed)
    before = rng.state
    got = result_or_error(lambda: fast_sim(d, t, tokens, V, rng=rng))
    want = result_or_error(lambda: fast_sim(d, t, tokens, V, uniforms=Rng(seed).random(len(tokens) + 2)))
    event(f"{got[0].__name__ if isinstance(got[0], type) else got[0]}")
    assert got[0] == want[0] and (got[0] == "result" or got[1] == want[1]), (got, want)
    if got[0] == "result":
        assert_same(got[1], want[1])
    elif "probabilities must be" not in got[1]:
        assert rng.state == before

@st.composite
def long_cases(draw):
    """Rows of 129-600 entries (past one 128-entry block) built by NumPy from a drawn seed."""
    V = draw(st.integers(129, 600))
    K = draw(st.integers(0, 2))
    extra = draw(st.integers(0, 1))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e-17, 1e-310]))
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.95]))

    def row():
        r = g.random(V) * (g.random(V) >= sparsity)
        total = r.sum()
        return (r / total * scale if total > 0 else r).tolist()

    draft = [row() for _ in range(K)]
    target = [row() for _ in range(K + extra)]
    tokens = [draw(st.integers(0, V - 1)) for _ in range(K)]
    uniforms = draw(st.lists(uniform, min_size=K + 2, max_size=K + 2))
    return draft, target, tokens, V, uniforms


@SETTINGS
@given(long_cases(), st.integers(0, 10**6))
def test_longer_rows_with_boundary_uniforms(case, pick):
    """R4/R6 on rows past one 128-entry block, uniforms on or next to running sums."""
    draft, target, tokens, V, U = case
    K = len(tokens)
    rows = list(target[K:K + 1])
    for i in range(K):                          # the residual of each position, normalised
        a = [max(0.0, x - y) for x, y in zip(target[i], draft[i])]
        z = sum(a)
        rows.append([x / z for x in a] if z > 0 else [1.0 / V] * V)
    U = list(U)
    for j, r in enumerate(rows):
        cums = []
        cum = 0.0
        for x in r:
            cum += x
            cums.append(cum)
        candidates = [c for c in cums if 0.0 <= c < 1.0]
        if candidates:
            c = candidates[(pick + 7 * j) % len(candidates)]
            c = [c, math.nextafter(c, 0.0), math.nextafter(c, 1.0)][(pick + j) % 3]
            U[(pick + j) % len(U)] = min(c, ONE_MINUS)
    ref, _ = run_reference(draft, target, tokens, V, U)
    assert_same(fast_sim(draft, target, tokens, V, uniforms=U), ref)
    assert_same(fast_sim(np.array(draft).reshape(K, V), np.array(target).reshape(-1, V),
                         tokens, V, uniforms=U), ref)
