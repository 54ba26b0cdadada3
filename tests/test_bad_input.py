"""Invalid input: TypeError or ValueError naming the argument and the position.

The drop-in validates what the reference reads (R2-R6): p_i[t_i] and q_i[t_i]
at each visited position, the whole rows p_i and q_i at a rejection (R4),
p_K[0..crossing] for the bonus (R6).  Values the reference does not read
never raise unless ``check_all=True`` (R5).
"""
import gc
import itertools
import math

import numpy as np
import pytest

import specdec_fast
from specdec_fast import Rng
from conftest import (FIVE_P as P, FIVE_Q as Q, FIVE_TOKENS as TOKENS, FIVE_V as V, ONE_MINUS,
                      READ_ACCEPT, READ_REJECT, U_ACCEPT, U_REJECT, UNREAD_ACCEPT,
                      UNREAD_REJECT, assert_same, run_reference)

fast_sim = specdec_fast.speculative_decode_sim


def base(form):
    if form == "list":
        return [r[:] for r in Q], [r[:] for r in P]
    dt = np.float64 if form == "f64" else np.float32
    return np.array(Q, dtype=dt), np.array(P, dtype=dt)


def with_value(form, which, i, v, value):
    draft, target = base(form)
    m = draft if which == "draft_probs" else target
    m[i][v] = value
    return draft, target


BAD_VALUES = [float("nan"), -0.5, -1e-40, float("inf"), -float("inf")]
FORMS = ["list", "f64", "f32"]


def position(which, i, v):
    return rf"{which}\[{i}\]\[{v}\]"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("uniforms, read", [(U_ACCEPT, READ_ACCEPT), (U_REJECT, READ_REJECT)],
                         ids=["accept", "reject"])
def test_invalid_value_that_is_read_raises(form, value, uniforms, read):
    """R2-R6: a negative, NaN or infinite probability the reference reads -> ValueError."""
    for which, i, v in read:
        draft, target = with_value(form, which, i, v, value)
        with pytest.raises(ValueError, match=position(which, i, v)):
            fast_sim(draft, target, TOKENS, V, uniforms=uniforms)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("uniforms, unread", [(U_ACCEPT, UNREAD_ACCEPT),
                                              (U_REJECT, UNREAD_REJECT)],
                         ids=["accept", "reject"])
def test_invalid_value_not_read_is_ignored(form, value, uniforms, unread):
    """R5: values the reference does not read never raise; the result is the reference's.

    With ``check_all=True`` the same inputs raise, naming the position.
    """
    for which, i, v in unread:
        draft, target = with_value(form, which, i, v, value)
        ref, _ = run_reference(np.asarray(draft, dtype=float).tolist(),
                               np.asarray(target, dtype=float).tolist(), TOKENS, V, uniforms)
        assert_same(fast_sim(draft, target, TOKENS, V, uniforms=uniforms), ref)
        with pytest.raises(ValueError, match=position(which, i, v)):
            fast_sim(draft, target, TOKENS, V, uniforms=uniforms, check_all=True)


def test_q_zero_stops_before_reading_anything_else():
    """R2: q_0[t_0] == 0 ends the call; only p_0[t_0] and q_0[t_0] are read."""
    draft, target = base("list")
    draft[0][1] = 0.0
    for which, i, v in [("target_probs", 0, 0), ("draft_probs", 0, 0), ("target_probs", 1, 2),
                        ("target_probs", 3, 0), ("draft_probs", 2, 3)]:
        d = [r[:] for r in draft]
        t = [r[:] for r in target]
        (d if which == "draft_probs" else t)[i][v] = float("nan")
        res = fast_sim(d, t, TOKENS, V, uniforms=[])
        assert res["tokens"] == []
    t = [r[:] for r in target]
    t[0][1] = -1.0
    with pytest.raises(ValueError, match=r"target_probs\[0\]\[1\]"):
        fast_sim(draft, t, TOKENS, V, uniforms=[])


def test_bonus_reads_only_up_to_the_crossing():
    """R6: with a no-crossing bonus (row sum < u) the whole of p_K is read."""
    draft, target = base("list")
    target[3] = [0.1, 0.1, 0.1, 0.1, float("nan")]
    with pytest.raises(ValueError, match=r"target_probs\[3\]\[4\]"):
        fast_sim(draft, target, TOKENS, V, uniforms=[0.0, 0.0, 0.0, 0.9])
    # the same row, u = 0.35 crosses at v = 3: p_3[4] is not read
    ref, _ = run_reference(Q, target, TOKENS, V, [0.0, 0.0, 0.0, 0.35])
    assert_same(fast_sim(draft, target, TOKENS, V, uniforms=[0.0, 0.0, 0.0, 0.35]), ref)
    # crossing at v = 0 (u = 0.0): nothing after p_3[0] is read
    draft, target = base("f64")
    target[3, 1:] = np.nan
    assert fast_sim(draft, target, TOKENS, V, uniforms=[0.0, 0.0, 0.0, 0.0])["tokens"] == [1, 2, 3, 0]


def test_long_row_bonus_validation_stops_at_crossing():
    """R6 with V = 10,000 (block scan): NaN after the crossing is ignored, before it raises."""
    n = 10_000
    row = np.full(n, 1.0 / n)
    for bad_at, u, raises in [(9_000, 0.5, False), (4_000, 0.5, True), (5_001, 0.5, False),
                              (4_999, 0.5, True), (n - 1, ONE_MINUS, True)]:
        t = row.copy()
        t[bad_at] = np.nan
        for target in (t[None, :], t[None, :].astype(np.float32), [t.tolist()]):
            if raises:
                with pytest.raises(ValueError, match=rf"target_probs\[0\]\[{bad_at}\]"):
                    fast_sim([], target, [], n, uniforms=[u])
            else:
                res = fast_sim([], target, [], n, uniforms=[u])
                ref, _ = run_reference([], np.asarray(target, dtype=float).tolist(), [], n, [u])
                assert_same(res, ref)


def test_long_row_residual_validation_reads_whole_rows():
    """R4 with V = 10,000: any invalid value anywhere in p_i or q_i raises at a rejection."""
    n = 10_000
    q = np.full((1, n), 1.0 / n)
    p = np.full((2, n), 0.5 / n)
    p[0, 0] = 1.0
    for which, v in [("target_probs", n - 1), ("draft_probs", n - 1), ("target_probs", 4097),
                     ("draft_probs", 0)]:
        d, t = q.copy(), p.copy()
        (d if which == "draft_probs" else t)[0, v] = -1.0
        with pytest.raises(ValueError, match=rf"{which}\[0\]\[{v}\]"):
            fast_sim(d, t, [5], n, uniforms=[0.9, 0.5, 0.5])
        # accepted: the rows are not read past the drafted token
        d, t = q.copy(), p.copy()
        (d if which == "draft_probs" else t)[0, v] = -1.0
        if v != 5:
            assert fast_sim(d, t, [5], n, uniforms=[0.1, 0.5])["num_accepted"] == 2


@pytest.mark.parametrize("form", ["list", "f64"])
def test_check_all_raises_anywhere_in_named_rows(form):
    """check_all=True: a NaN anywhere in draft rows 0..K-1 or target rows 0..K raises."""
    uniforms = [0.0, 0.0, 0.0, 0.0]           # would accept everything, bonus token 0
    for which, nrows in (("draft_probs", 3), ("target_probs", 4)):
        for i in range(nrows):
            for v in range(V):
                draft, target = with_value(form, which, i, v, float("nan"))
                with pytest.raises(ValueError, match=position(which, i, v)):
                    fast_sim(draft, target, TOKENS, V, uniforms=uniforms, check_all=True)
    draft, target = base(form)
    assert_same(fast_sim(draft, target, TOKENS, V, uniforms=uniforms, check_all=True),
                fast_sim(draft, target, TOKENS, V, uniforms=uniforms))


def test_check_all_ignores_rows_past_those_named():
    """check_all checks draft rows < K and target rows <= K only (R5)."""
    draft = [r[:] for r in Q] + [[float("nan")] * V]
    target = [r[:] for r in P] + [[float("nan")] * V]
    ref, _ = run_reference(Q, P, TOKENS, V, U_ACCEPT)
    assert_same(fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT, check_all=True), ref)


# --------------------------------------------------------------------------
# Non-numeric probabilities.

@pytest.mark.parametrize("value", ["0.5", b"x", None, 1j, [0.5], object()],
                         ids=["str", "bytes", "None", "complex", "list", "object"])
@pytest.mark.parametrize("which, i, v", [("target_probs", 1, 2), ("draft_probs", 2, 3),
                                          ("target_probs", 3, 0)])
def test_non_numeric_probability_read_raises_type_error(value, which, i, v):
    draft, target = with_value("list", which, i, v, value)
    with pytest.raises(TypeError, match=position(which, i, v)):
        fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT)


def test_non_numeric_probability_not_read_is_ignored():
    """R5: a str where the reference never looks is never converted."""
    draft, target = with_value("list", "target_probs", 2, 0, "junk")
    ref, _ = run_reference(Q, P, TOKENS, V, U_ACCEPT)
    assert_same(fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT), ref)
    with pytest.raises(TypeError, match=r"target_probs\[2\]\[0\]"):
        fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT, check_all=True)


# --------------------------------------------------------------------------
# Shapes: rows, row lengths.

@pytest.mark.parametrize("form", FORMS)
def test_too_few_rows(form):
    draft, target = base(form)
    with pytest.raises(ValueError, match=r"draft_probs has 2 rows.*3"):
        fast_sim(draft[:2], target, TOKENS, V, uniforms=U_ACCEPT)
    with pytest.raises(ValueError, match=r"target_probs has 2 rows.*3"):
        fast_sim(draft, target[:2], TOKENS, V, uniforms=U_ACCEPT)
    with pytest.raises(ValueError, match=r"draft_probs has 0 rows"):
        fast_sim(draft[:0], target, TOKENS, V, uniforms=U_ACCEPT)


def test_row_shorter_than_vocab_list():
    for which, i in [("draft_probs", 0), ("draft_probs", 2), ("target_probs", 1),
                     ("target_probs", 3)]:
        draft, target = base("list")
        m = draft if which == "draft_probs" else target
        m[i] = m[i][:V - 1]
        with pytest.raises(ValueError, match=rf"{which}\[{i}\] has {V - 1} entries.*vocab_size"):
            fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT)


@pytest.mark.parametrize("form", ["f64", "f32"])
def test_row_shorter_than_vocab_array(form):
    draft, target = base(form)
    with pytest.raises(ValueError, match=r"draft_probs(\[\d+\])? has 4 entries.*vocab_size"):
        fast_sim(draft[:, :4], target, TOKENS, V, uniforms=U_ACCEPT)
    with pytest.raises(ValueError, match=r"target_probs(\[\d+\])? has 4 entries.*vocab_size"):
        fast_sim(draft, target[:, :4], TOKENS, V, uniforms=U_ACCEPT)


def test_row_of_wrong_kind():
    for row, exc in [(None, TypeError), ("abcde", TypeError), (5, TypeError),
                     (np.zeros((1, V)), ValueError), (np.array(["a"] * V), TypeError),
                     (np.zeros(V, complex), TypeError)]:
        draft, target = base("list")
        target[1] = row
        with pytest.raises(exc, match=r"target_probs\[1\]"):
            fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT)


def test_extra_draft_row_is_never_read():
    """R5: draft_probs[K] is not one of the rows the reference reads (it reads q_0..q_{K-1}).

    A call with an extra, malformed draft row must behave like the reference,
    which never looks at it.
    """
    ref, _ = run_reference(Q, P, TOKENS, V, U_ACCEPT)
    for extra in ([0.1], None, "junk"):
        draft = [r[:] for r in Q] + [extra]
        assert_same(fast_sim(draft, P, TOKENS, V, uniforms=U_ACCEPT), ref)
    ref, _ = run_reference([], [[0.5, 0.5]], [], 2, [0.7])
    assert_same(fast_sim([[0.1]], [[0.5, 0.5]], [], 2, uniforms=[0.7]), ref)


# --------------------------------------------------------------------------
# Tokens and vocab_size.

@pytest.mark.parametrize("tokens, exc, pattern", [
    ([1, 5, 3], ValueError, r"draft_tokens\[1\] = 5"),
    ([1, 2, -1], ValueError, r"draft_tokens\[2\] = -1"),
    ([1, 2, 2**80], ValueError, r"draft_tokens\[2\]"),
    ([-(2**80), 2, 3], ValueError, r"draft_tokens\[0\]"),
    ([1, np.int64(7), 3], ValueError, r"draft_tokens\[1\]"),
    ([1, np.uint64(2**64 - 1), 3], ValueError, r"draft_tokens\[1\]"),
    (np.array([1, 5, 3]), ValueError, r"draft_tokens\[1\]"),
    (np.array([1, 2, -1], dtype=np.int8), ValueError, r"draft_tokens\[2\]"),
    (np.array([1, 2, 2**63 + 1], dtype=np.uint64), ValueError, r"draft_tokens\[2\]"),
    ([1, 2.0, 3], TypeError, r"draft_tokens\[1\]"),
    ([1, np.float64(2), 3], TypeError, r"draft_tokens\[1\]"),
    ([1, np.float32(2), 3], TypeError, r"draft_tokens\[1\]"),
    ([1, "2", 3], TypeError, r"draft_tokens\[1\]"),
    ([1, 2, None], TypeError, r"draft_tokens\[2\]"),
    ([1, [2], 3], TypeError, r"draft_tokens\[1\]"),
    (np.array([1.0, 2.0, 3.0]), TypeError, r"draft_tokens"),
    (np.array([True, False, True]), TypeError, r"draft_tokens"),
    (np.array([[1, 2, 3]] * 3), ValueError, r"draft_tokens"),
    ("123", TypeError, r"draft_tokens"),
    (None, TypeError, r"draft_tokens"),
    (7, TypeError, r"draft_tokens"),
], ids=lambda x: repr(x)[:30])
def test_bad_tokens(tokens, exc, pattern):
    draft, target = base("list")
    with pytest.raises(exc, match=pattern):
        fast_sim(draft, target, tokens, V, uniforms=U_ACCEPT)


def test_token_at_vocab_boundary_is_valid():
    ok = fast_sim(Q, P, [0, V - 1, 3], V, uniforms=U_ACCEPT)
    ref, _ = run_reference(Q, P, [0, V - 1, 3], V, U_ACCEPT)
    assert_same(ok, ref)


@pytest.mark.parametrize("vocab, exc", [
    (0, ValueError), (-1, ValueError), (-2, ValueError), (-(2**70), ValueError),
    (np.int64(-1), ValueError), (np.int64(0), ValueError),
    (5.0, TypeError), ("5", TypeError), (None, TypeError), ([5], TypeError),
    (np.float64(5), TypeError),
], ids=repr)
def test_bad_vocab_size(vocab, exc):
    with pytest.raises(exc, match="vocab_size"):
        fast_sim(Q, P, TOKENS, vocab, uniforms=U_ACCEPT)


@pytest.mark.parametrize("vocab", [6, 2**40, 2**63 - 1, 2**63, 2**64, 2**100])
def test_vocab_size_larger_than_rows(vocab):
    """A vocab_size past the row length is an error naming vocab_size, whatever its size."""
    with pytest.raises(ValueError, match="vocab_size"):
        fast_sim(Q, P, TOKENS, vocab, uniforms=U_ACCEPT)
    with pytest.raises(ValueError, match="vocab_size"):
        fast_sim(np.array(Q), np.array(P), TOKENS, vocab, uniforms=U_ACCEPT)


def test_numpy_integer_vocab_size_is_accepted():
    ref, _ = run_reference(Q, P, TOKENS, V, U_ACCEPT)
    for vocab in (np.int64(V), np.uint8(V), np.int32(V)):
        assert_same(fast_sim(Q, P, TOKENS, vocab, uniforms=U_ACCEPT), ref)


# --------------------------------------------------------------------------
# Uniforms and rng.

@pytest.mark.parametrize("uniforms, exc, pattern", [
    ([0.0, 1.0, 0.0, 0.3], ValueError, r"uniforms\[1\]"),
    ([0.0, 0.0, 0.0, 1.5], ValueError, r"uniforms\[3\]"),
    ([-0.1, 0.0, 0.0, 0.3], ValueError, r"uniforms\[0\]"),
    ([-1e-300, 0.0, 0.0, 0.3], ValueError, r"uniforms\[0\]"),
    ([0.0, float("nan"), 0.0, 0.3], ValueError, r"uniforms\[1\]"),
    ([0.0, 0.0, float("inf"), 0.3], ValueError, r"uniforms\[2\]"),
    (np.array([0.0, 0.0, 0.0, 1.0]), ValueError, r"uniforms\[3\]"),
    (np.array([0.0, 0.0, np.nan, 0.3], dtype=np.float32), ValueError, r"uniforms\[2\]"),
    ([0.0, 0.0, 0.0], ValueError, r"uniforms"),
    ([], ValueError, r"uniforms"),
    (np.array([0.0]), ValueError, r"uniforms"),
    ([0.0, "0.5", 0.0, 0.3], TypeError, r"uniforms\[1\]"),
    ([0.0, None, 0.0, 0.3], TypeError, r"uniforms\[1\]"),
    ([0.0, 0.5j, 0.0, 0.3], TypeError, r"uniforms\[1\]"),
    ([0.0, [0.5], 0.0, 0.3], TypeError, r"uniforms\[1\]"),
    ("0.5", TypeError, r"uniforms"),
    (0.5, TypeError, r"uniforms"),
    (np.array(["a"] * 4), TypeError, r"uniforms"),
    (np.zeros(4, complex), TypeError, r"uniforms"),
    (np.zeros((2, 4)), ValueError, r"uniforms"),
], ids=lambda x: repr(x)[:30])
def test_bad_uniforms(uniforms, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fast_sim(Q, P, TOKENS, V, uniforms=uniforms)


def test_uniforms_edge_values_are_valid():
    for u in (0.0, ONE_MINUS, 5e-324):
        U = [u] * 5
        ref, _ = run_reference(Q, P, TOKENS, V, U)
        assert_same(fast_sim(Q, P, TOKENS, V, uniforms=U), ref)


def test_rng_and_uniforms_together():
    with pytest.raises(ValueError, match=r"rng.*uniforms|uniforms.*rng"):
        fast_sim(Q, P, TOKENS, V, rng=Rng(1), uniforms=U_ACCEPT)
    with pytest.raises(ValueError, match=r"rng.*uniforms|uniforms.*rng"):
        fast_sim(Q, P, TOKENS, V, rng=3, uniforms=U_ACCEPT)


@pytest.mark.parametrize("rng, exc", [(1.5, TypeError), ("1", TypeError), (True, TypeError),
                                      (object(), TypeError), (-1, ValueError),
                                      (2**64, ValueError)], ids=repr)
def test_bad_rng(rng, exc):
    with pytest.raises(exc, match="seed|rng"):
        fast_sim(Q, P, TOKENS, V, rng=rng)


def test_failed_call_does_not_advance_rng():
    """Validation of shapes and tokens happens before any draw."""
    rng = Rng(5)
    before = rng.state
    with pytest.raises(ValueError):
        fast_sim(Q, P, [1, 9, 3], V, rng=rng)
    with pytest.raises(ValueError):
        fast_sim(Q[:1], P, TOKENS, V, rng=rng)
    assert rng.state == before


# --------------------------------------------------------------------------
# Weird objects: a clean TypeError or ValueError, never a crash.

WEIRD = [None, {}, {0: [0.2] * V}, "abc", b"abc", 3, 2.5, set(), object(),
         np.zeros((4, V, 2)), np.zeros(V), np.array(0.5), np.array([[object()] * V] * 4, dtype=object),
         np.zeros((4, V), complex), np.array([["a"] * V] * 4), [None] * 4, [[None] * V] * 4,
         [np.zeros((2, V))] * 4, [[[0.1]] * V] * 4, [b"abcde"] * 4, [[1j] * V] * 4,
         [np.zeros(V, complex)] * 4, [np.array([object()] * V, dtype=object)] * 4,
         (x for x in range(3)), [1, 2, 3, 4]]


@pytest.mark.parametrize("obj", WEIRD, ids=lambda x: type(x).__name__)
@pytest.mark.parametrize("argument", ["draft_probs", "target_probs"])
def test_weird_matrices(obj, argument):
    kwargs = {"draft_probs": Q, "target_probs": P}
    kwargs[argument] = obj
    with pytest.raises((TypeError, ValueError), match=argument):
        fast_sim(kwargs["draft_probs"], kwargs["target_probs"], TOKENS, V, uniforms=U_ACCEPT)


class RefusesArray:
    """A tensor that will not become an array (as torch's bfloat16 or requires_grad ones)."""

    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 4

    def __array__(self, dtype=None, copy=None):
        raise self.exc


@pytest.mark.parametrize("exc", [TypeError("Got unsupported ScalarType BFloat16"),
                                 RuntimeError("Can't call numpy() on Tensor that requires grad")],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("argument", ["draft_probs", "target_probs"])
def test_object_refusing_array_conversion_is_named(exc, argument):
    kwargs = {"draft_probs": Q, "target_probs": P, argument: RefusesArray(exc)}
    with pytest.raises(TypeError, match=f"{argument} cannot be read as an array") as info:
        fast_sim(kwargs["draft_probs"], kwargs["target_probs"], TOKENS, V, uniforms=U_ACCEPT)
    assert str(info.value).endswith(f"({type(exc).__name__}: {exc})")
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("obj", [None, 3, 2.5, "abc", object(), np.zeros((3, 1, 1), int),
                                 np.array([object()] * 3, dtype=object),
                                 np.zeros(3, complex), [1j, 2, 3], [{}, 1, 2], [(1,), 2, 3]],
                         ids=lambda x: type(x).__name__)
def test_weird_tokens(obj):
    with pytest.raises((TypeError, ValueError), match="draft_tokens"):
        fast_sim(Q, P, obj, V, uniforms=U_ACCEPT)


@pytest.mark.parametrize("obj", [object(), np.zeros((2, 2, 2)), [{}], [object()],
                                 np.array([object()] * 5, dtype=object), {"a": 1}],
                         ids=lambda x: type(x).__name__)
def test_weird_uniforms(obj):
    with pytest.raises((TypeError, ValueError), match="uniforms"):
        fast_sim(Q, P, TOKENS, V, uniforms=obj)


def test_check_all_takes_a_bool():
    """check_all is a bool (or NumPy bool): a string such as "no" would otherwise
    turn the full check on by its truthiness."""
    draft, target = with_value("list", "target_probs", 2, 0, math.nan)
    with pytest.raises(ValueError, match=r"target_probs\[2\]\[0\]"):
        fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT, check_all=np.True_)
    assert fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT,
                    check_all=np.False_)["num_accepted"] == 4
    for flag in ("no", 1, 0, None, [True]):
        with pytest.raises(TypeError, match="check_all must be a bool"):
            fast_sim(draft, target, TOKENS, V, uniforms=U_ACCEPT, check_all=flag)


@pytest.mark.parametrize("semantics", ["paper", "", "Reference", None, 1, b"reference",
                                       np.array(["reference"]), np.array(["reference", "exact"]),
                                       ["reference"]])
def test_semantics_names_itself_whatever_it_is(semantics):
    """Only the strings "reference" and "exact": anything else, an array included (whose
    == answers with an array), is a ValueError naming the argument."""
    with pytest.raises(ValueError, match="^semantics must be 'reference' or 'exact', got "):
        fast_sim(Q, P, TOKENS, V, uniforms=U_ACCEPT, semantics=semantics)


class Label(str):
    pass


def test_semantics_may_be_a_str_subclass():
    want = fast_sim(Q, P, TOKENS, V, uniforms=U_ACCEPT, semantics="exact")
    assert fast_sim(Q, P, TOKENS, V, uniforms=U_ACCEPT, semantics=Label("exact")) == want


@pytest.mark.parametrize("uniforms", [itertools.repeat(0.1), (u for u in U_ACCEPT),
                                      iter(U_ACCEPT), set(U_ACCEPT), frozenset(U_ACCEPT),
                                      dict.fromkeys(U_ACCEPT)],
                         ids=lambda x: type(x).__name__)
def test_uniforms_must_be_a_sized_ordered_sequence(uniforms):
    """An iterator may never end (itertools.repeat would fill memory); a set or a
    mapping has no order to consume in."""
    with pytest.raises(TypeError, match=r"uniforms must be a 1-D sequence"):
        fast_sim(Q, P, TOKENS, V, uniforms=uniforms)


class LyingLength(list):
    """A list whose len() promises more items than indexing gives."""

    def __len__(self):
        return list.__len__(self) + 1


@pytest.mark.parametrize("argument", ["draft_probs", "target_probs", "draft_tokens"])
def test_a_sequence_whose_length_lies_is_a_clear_error(argument):
    """Its last promised item is one the call reads (the reference would fail there)."""
    K = len(TOKENS)
    stored = {"draft_probs": Q[:K - 1], "target_probs": P[:K], "draft_tokens": TOKENS[:-1]}
    args = {"draft_probs": Q, "target_probs": P, "draft_tokens": TOKENS}
    args[argument] = LyingLength(stored[argument])
    n = len(stored[argument])
    with pytest.raises(ValueError, match=rf"{argument}\[{n}\] cannot be read although "
                                         rf"len\({argument}\) is {n + 1}"):
        fast_sim(args["draft_probs"], args["target_probs"], args["draft_tokens"], V,
                 uniforms=U_ACCEPT)
    with pytest.raises(IndexError):         # the reference, for comparison
        run_reference(args["draft_probs"], args["target_probs"], args["draft_tokens"], V,
                      U_ACCEPT)


def test_bonus_scan_of_a_list_row_converts_only_what_the_reference_reads():
    """R6 on list rows: the scan reads ahead, but an item past the sampled bonus token
    is never converted, and one before it is (TypeError naming its position)."""
    V = 5000
    row = [1.0 / V] * V
    row[3000] = "not a number"                 # u = 0.25 crosses near 1249
    row[4000] = float("nan")
    got = specdec_fast.speculative_decode_sim([], [row], [], V, uniforms=[0.25])
    assert got["tokens"] == [1249]
    row[1000] = "not a number"
    with pytest.raises(TypeError, match=r"target_probs\[0\]\[1000\]"):
        specdec_fast.speculative_decode_sim([], [row], [], V, uniforms=[0.25])


@pytest.mark.parametrize("case", ["position", "residual", "bonus-serial", "bonus-read-ahead"])
def test_of_several_bad_values_the_first_read_is_named(case):
    """Where several read values are bad, the error names the first the reference reads:
    ``p`` before ``q`` at a position, entries in order in a residual and a bonus scan,
    whatever their kinds (a NaN or negative is a ValueError, a string a TypeError)."""
    nan = float("nan")
    V = 200
    draft = [[1.0 / V] * V]
    target = [[1.0 / V] * V, [1.0 / V] * V]
    if case == "position":
        target[0][5], draft[0][5] = nan, "x"
        where, U = r"target_probs\[0\]\[5\] = nan", [0.5, 0.5, 0.5]
    elif case == "residual":
        target[0][5] = 0.1 / V                              # p / q = 0.1 < 0.9: rejected
        target[0][40], draft[0][60] = -0.5, "x"
        where, U = r"target_probs\[0\]\[40\] = -0.5", [0.9, 0.5]
    else:
        at = 10 if case == "bonus-serial" else 100
        target[1][at], target[1][at + 50] = nan, "x"
        where, U = rf"target_probs\[1\]\[{at}\] = nan", [0.0, 0.9]
    with pytest.raises(ValueError, match=where):
        fast_sim(draft, target, [5], V, uniforms=U)


@pytest.mark.parametrize("kind", ["numpy-float64", "int", "float-subclass"])
@pytest.mark.parametrize("V", [100, 20000])
def test_rows_of_numbers_that_are_not_floats_agree_with_the_reference(kind, V):
    """List rows whose items are NumPy float64 scalars, ints or float subclasses are
    read item by item as the reference reads them, at any length (these once took
    time quadratic in the row's length in the bonus scan)."""
    gen = np.random.default_rng([V, len(kind)])
    weights = gen.integers(0, 3, size=V).astype(float)
    weights[-1] = 1.0
    weights /= weights.sum()
    row = {"numpy-float64": lambda: [np.float64(w) for w in weights],
           "int": lambda: [0] * (V - 1) + [1],             # scanned to its end for any u > 0
           "float-subclass": lambda: [FloatSubclass(w) for w in weights]}[kind]()
    draft = [[1.0 / V] * V]
    target = [[1.0 / V] * V, row]
    for u in [0.0, 0.3, 0.999999]:
        want, _ = run_reference(draft, target, [3], V, [0.0, u])
        assert_same(fast_sim(draft, target, [3], V, uniforms=[0.0, u]), want)
    if kind == "int":
        assert want["tokens"][-1] == V - 1


class FloatSubclass(float):
    pass


class Meddler:
    """A probability whose conversion to float runs user code first."""

    def __init__(self, value, action):
        self.value = value
        self.action = action

    def __float__(self):
        self.action()
        return self.value


class ArithmeticMeddler(Meddler):
    """A Meddler the reference can compute with: its arithmetic runs the action too."""

    def __truediv__(self, other):       # p / q (R3)
        return float(self) / other

    def __radd__(self, other):          # cum += p (R6)
        return other + float(self)

    def __sub__(self, other):           # p - q (R4)
        return float(self) - other

    def __rsub__(self, other):
        return other - float(self)


@pytest.mark.parametrize("V", [5, 300])
@pytest.mark.parametrize("where", ["accept", "bonus-early", "bonus-late"])
@pytest.mark.parametrize("action", ["clear-target", "clear-row", "replace-row", "shrink-row",
                                    "clear-draft", "clear-tokens"])
def test_inputs_mutated_during_the_call(V, where, action):
    """User code run by the call (a __float__) that empties or replaces rows of the
    inputs must not crash it nor make it read freed or missing items: the
    call either completes or raises a ValueError saying a row changed size."""
    K = 2
    draft = [[1.0 / V] * V for _ in range(K)]
    target = [[1.0 / V] * V for _ in range(K + 1)]
    tokens = [0, 1]
    actions = {
        "clear-target": lambda: target.clear(),
        "clear-row": lambda: target[K].clear(),
        "replace-row": lambda: target.__setitem__(K, [0.5]),
        "shrink-row": lambda: target[K].__delitem__(slice(2, None)),
        "clear-draft": lambda: [row.clear() for row in draft],
        "clear-tokens": lambda: tokens.clear(),
    }
    if where == "accept":
        i, v = 0, tokens[0]
    else:
        i, v = K, (0 if where == "bonus-early" else V - 2)
    target[i][v] = Meddler(1.0 / V, actions[action])
    try:
        got = fast_sim(draft, target, tokens, V, uniforms=[0.0, 0.0, 1.0 - 1.5 / V])
    except ValueError as exc:
        assert "changed size" in str(exc)
    else:
        assert got["num_accepted"] == K + 1
        assert all(0 <= t < V for t in got["tokens"])


@pytest.mark.parametrize("where", ["accept", "bonus-early", "bonus-late"])
@pytest.mark.parametrize("new_row", ["list", "tuple", "float64", "float32", "short-list",
                                     "short-array", "empty", "2-D array", "string"])
def test_rows_replaced_during_the_call_are_read_as_the_reference_reads_them(where, new_row):
    """The call reads rows where they are when it reaches them, as the reference does
    (``target_probs[i][v]``): a row that user code (a __float__) replaces while the
    call runs, even the row being scanned, is read from then on, with the
    reference's result; where the reference fails on the new row (an entry it
    needs is missing, or is not a number) the call raises an error naming the row,
    never reading out of bounds."""
    V, K = 300, 2
    fresh = {
        "list": lambda: [1.0 / (2 * V)] * (V - 1) + [0.5],
        "tuple": lambda: tuple([1.0 / (2 * V)] * (V - 1) + [0.5]),
        "float64": lambda: np.full(V, 1.0 / (2 * V)),
        "float32": lambda: np.full(V, 1.0 / (2 * V), dtype=np.float32),
        "short-list": lambda: [0.125] * 4,          # the scan crosses within it
        "short-array": lambda: np.full(4, 0.125),
        "empty": lambda: [],
        "2-D array": lambda: np.full((V, 2), 0.5),
        "string": lambda: "x" * V,
    }[new_row]

    def inputs():
        draft = [[1.0 / V] * V for _ in range(K)]
        target = [[1.0 / V] * V for _ in range(K + 1)]
        i, v = {"accept": (0, 5), "bonus-early": (K, 0), "bonus-late": (K, 70)}[where]
        target[i][v] = ArithmeticMeddler(1.0 / V, lambda: target.__setitem__(K, fresh()))
        return draft, target, [5, 6]

    U = [0.0, 0.0, 0.2505]
    try:
        want, _ = run_reference(*inputs(), V, U)
    except (TypeError, ValueError, IndexError):
        with pytest.raises((TypeError, ValueError), match=r"target_probs\[2\]"):
            fast_sim(*inputs(), V, uniforms=U)
        return
    assert_same(fast_sim(*inputs(), V, uniforms=U), want)


@pytest.mark.parametrize("meddler_in", ["target", "draft"])
@pytest.mark.parametrize("new_row", ["zeros", "float64", "short-list"])
def test_rows_replaced_during_a_residual_are_read_in_the_reference_order(meddler_in, new_row):
    """The residual reads ``target_probs[i][v]`` and ``draft_probs[i][v]`` in turn, as
    the reference does: when user code run at entry v (the target's or the draft's)
    replaces the other matrix's row, entries from v + 1 on come from the new row."""
    V = 300

    def inputs():
        draft = [[1.0 / V] * V, [1.0 / V] * V]
        target = [[0.0] * (V // 2) + [2.0 / V] * (V // 2), [1.0 / V] * V]   # token 5: p = 0
        rows, other = (target, draft) if meddler_in == "target" else (draft, target)
        fresh = {"zeros": lambda: [0.0] * V, "float64": lambda: np.full(V, 2.0 / V),
                 "short-list": lambda: [0.0] * (V // 2)}[new_row]
        rows[0][200] = ArithmeticMeddler(rows[0][200],
                                         lambda: other.__setitem__(0, fresh()))
        return draft, target, [5, 6]

    U = [0.5, 0.6]
    try:
        want, _ = run_reference(*inputs(), V, U)
    except (TypeError, ValueError, IndexError):
        with pytest.raises(ValueError, match=r"_probs\[0\] changed size"):
            fast_sim(*inputs(), V, uniforms=U)
        return
    assert want["num_accepted"] == 1            # the correction token, no bonus
    assert_same(fast_sim(*inputs(), V, uniforms=U), want)


@pytest.mark.parametrize("where", ["accept-target", "accept-draft", "residual", "bonus-serial",
                                   "bonus-read-ahead", "check_all"])
def test_entry_that_drops_itself_and_is_not_a_number(where):
    """An entry whose __float__ removes it from its row (dropping the row's reference,
    its last one) and returns something that is not a number: the call must hold its
    own reference while converting it, and report a TypeError naming the position
    (reading the freed object instead once gave 'frame' object errors or a crash)."""
    V, K = 300, 1
    draft = [[1.0 / V] * V for _ in range(K)]
    target = [[1.0 / V] * V for _ in range(K + 1)]
    matrix, i, v, U, check_all = {
        "accept-target": (target, 0, 5, [0.5, 0.5], False),
        "accept-draft": (draft, 0, 5, [0.5, 0.5], False),
        "residual": (target, 0, 200, [0.999, 0.5], False),
        "bonus-serial": (target, 1, 10, [0.0, 0.5], False),
        "bonus-read-ahead": (target, 1, 100, [0.0, 0.5], False),
        "check_all": (target, 1, 250, [0.0, 0.1], True),
    }[where]
    if where == "residual":
        target[0][5] = 0.5 / V                  # p / q = 0.5 < 0.999: rejected

    class SelfRemover:
        def __float__(self):
            matrix[i][v] = 1.0 / V              # the row's reference to self, the last one
            gc.collect()
            return "not a number"

    matrix[i][v] = SelfRemover()
    name = "target_probs" if matrix is target else "draft_probs"
    with pytest.raises(TypeError, match=rf"{name}\[{i}\]\[{v}\] must be a real number, "
                                        r"not SelfRemover"):
        fast_sim(draft, target, [5], V, uniforms=U, check_all=check_all)


@pytest.mark.parametrize("tokens_form", ["list", "copy"])
def test_draft_tokens_replaced_during_the_call_are_read_as_the_reference_reads_them(tokens_form):
    """The reference reads ``draft_tokens[i]`` when position i comes: a token that
    user code (a __float__) replaces meanwhile is read as it is then, and comes back
    as the value read; a copy of the list passed instead is not affected."""
    V, K = 1000, 2

    def inputs():
        tokens = [700, 800]
        draft = [[1.0 / V] * V for _ in range(K)]
        target = [[1.0 / V] * V for _ in range(K + 1)]
        target[0][700] = ArithmeticMeddler(1.0 / V,
                                           lambda: tokens.__setitem__(slice(None), [900, 950]))
        return draft, target, (tokens if tokens_form == "list" else [*tokens]), tokens

    U = [0.0, 0.0, 0.5]
    draft, target, passed, tokens = inputs()
    want, _ = run_reference(draft, target, passed, V, U)
    assert tokens == [900, 950]
    draft, target, passed, tokens = inputs()
    got = fast_sim(draft, target, passed, V, uniforms=U)
    assert tokens == [900, 950]
    assert_same(got, want)
    assert want["tokens"][:2] == ([700, 950] if tokens_form == "list" else [700, 800])


class Index:
    """A draft token whose conversion to an index runs user code first."""

    def __init__(self, value, action):
        self.value = value
        self.action = action

    def __index__(self):
        self.action()
        return self.value


@pytest.mark.parametrize("source", ["list-entry", "token"])
@pytest.mark.parametrize("new_value", [7.0, math.nan, 0.999])
def test_uniforms_written_during_the_call_are_not_seen(source, new_value):
    """The call draws the uniforms as they were when checked: user code (a __float__
    or an __index__) that writes into the caller's uniforms array meanwhile, even an
    invalid value, changes nothing."""
    V, K = 4, 2
    draft = [[0.25] * V for _ in range(K)]
    target = [[0.1, 0.2, 0.3, 0.4] for _ in range(K + 1)]
    U = np.array([0.3, 0.5, 0.5])      # accept (0.3 < 0.4), accept (0.5 < 0.8), bonus 2
    want, _ = run_reference(draft, target, [0, 1], V, U.tolist())
    overwrite = lambda: U.__setitem__(1, new_value)     # 0.999 would reject position 1
    if source == "list-entry":
        target[0][0] = Meddler(0.1, overwrite)
        got = fast_sim(draft, target, [0, 1], V, uniforms=U)
    else:
        got = fast_sim(np.array(draft), np.array(target), [Index(0, overwrite), 1], V,
                       uniforms=U)
    assert U[1] == new_value or math.isnan(U[1])
    assert_same(got, want)
    assert want["tokens"] == [0, 1, 2]


@pytest.mark.parametrize("source", ["uniform", "row-len"])
def test_token_list_emptied_by_an_index_it_was_given_mid_call(source):
    """User code run before the tokens are read (a uniform's __float__, a row's __len__)
    puts into the caller's token list an object whose __index__ empties that list: a
    ValueError, never a read past the list's end (this used to crash)."""
    draft = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]
    target = [[0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]]
    tokens = [0, 2, 1]
    swap = lambda: tokens.__setitem__(0, Index(0, tokens.clear))
    uniforms = [0.3, 0.6, 0.2, 0.9, 0.5]
    if source == "uniform":
        uniforms[0] = Meddler(0.3, swap)
    else:
        class SwappingRow(list):
            def __len__(self):
                swap()
                return list.__len__(self)
        target[0] = SwappingRow(target[0])
    with pytest.raises(ValueError, match="draft_tokens changed size"):
        fast_sim(draft, target, tokens, 3, uniforms=uniforms)


@pytest.mark.parametrize("argument, value, pattern", [
    ("draft_tokens", np.array([[0], [2]], dtype=object), "draft_tokens must be 1-D"),
    ("draft_tokens", np.array(0, dtype=object), "draft_tokens must be 1-D"),
    ("target_probs", np.array(None, dtype=object), "target_probs must be 2-D"),
    ("target_probs", np.zeros((2, 2, 2), dtype=object), "target_probs must be 2-D"),
])
def test_object_arrays_of_the_wrong_shape(argument, value, pattern):
    kwargs = {"draft_probs": [[0.5, 0.5]] * 2, "target_probs": [[0.5, 0.5]] * 3,
              "draft_tokens": [0, 1]}
    kwargs[argument] = value
    with pytest.raises(ValueError, match=pattern):
        fast_sim(kwargs["draft_probs"], kwargs["target_probs"], kwargs["draft_tokens"], 2,
                 uniforms=[0.1] * 4)


def test_object_arrays_are_read_as_their_items():
    """Object arrays of floats and ints, as the reference takes them (it indexes them
    like lists): the same dict as the reference on the same arrays."""
    draft = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], dtype=object)
    target = np.array([[0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]], dtype=object)
    tokens = np.array([0, 2], dtype=object)
    gen = np.random.default_rng(5)
    for _ in range(50):
        U = gen.random(4).tolist()
        want, _ = run_reference(draft, target, tokens, 3, U)
        assert_same(fast_sim(draft, target, tokens, 3, uniforms=np.array(U, dtype=object)), want)
    ragged = np.empty(2, dtype=object)              # rows that are lists
    ragged[0], ragged[1] = [0.5, 0.5], [0.25, 0.75, 9.0]
    want, _ = run_reference([], ragged, [], 2, [0.6])
    assert_same(fast_sim([], ragged, [], 2, uniforms=[0.6]), want)


def test_zero_dimensional_arrays_in_a_uniforms_list_are_numbers():
    got = fast_sim(Q, P, TOKENS, V, uniforms=[np.array(u) for u in U_ACCEPT])
    assert_same(got, fast_sim(Q, P, TOKENS, V, uniforms=U_ACCEPT))
    with pytest.raises(TypeError, match=r"uniforms\[0\]"):
        fast_sim(Q, P, TOKENS, V, uniforms=[np.array([0.5])] + U_ACCEPT[1:])


class ShrinkingRow(list):
    """A row (a list subclass, so read as a generic sequence) whose len() empties
    another list first."""

    def __init__(self, values, victim):
        super().__init__(values)
        self.victim = victim

    def __len__(self):
        self.victim.clear()
        return super().__len__()


def test_tokens_emptied_while_the_rows_are_checked():
    """draft_tokens emptied by user code that runs while the rows are checked (after
    the call counted K) is reported, never read past its end."""
    V = 4
    tokens = [1, 2]
    draft = [ShrinkingRow([0.25] * V, tokens), [0.25] * V]
    target = [[0.25] * V for _ in range(3)]
    with pytest.raises(ValueError, match="draft_tokens changed size"):
        fast_sim(draft, target, tokens, V, uniforms=[0.0, 0.0, 0.5])
