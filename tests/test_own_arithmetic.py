"""Numbers with their own arithmetic: the drop-in hands the call to the reference.

NumPy scalars other than float64 (float32, float16, longdouble, integers),
``Decimal``, ``Fraction`` and ints beyond 2**53 are not doubles, and the
reference computes with them in their own arithmetic: NumPy 2 divides two
``float32`` scalars in ``float32`` and compares a float with one in ``float32``,
``Fraction``s divide exactly, and adding a ``Decimal`` to a float raises
``TypeError``.  When the drop-in meets such a number among the entries or
uniforms it reads, it runs the reference itself from the call's first uniform,
on the same rows (read through the same checks).  So the result is the
reference's on the same objects, and so is any error.  Every test here is
deterministic (fixed seeds, no statistics).
"""
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import specdec_fast
from conftest import adversarial_uniforms, assert_same, make_case, run_reference
from specdec_fast import Rng
from specdec_fast.reference import speculative_decode_sim as reference_sim

fast_sim = specdec_fast.speculative_decode_sim

SCALARS = {
    "float32": np.float32,
    "float16": np.float16,
    "longdouble": np.longdouble,
    "fraction": lambda x: Fraction(x).limit_denominator(1000),    # mostly not dyadic
}
FLOAT32_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


def as_objects(rows, kind):
    """Rows of ``kind`` objects near the values of float64 rows."""
    make = SCALARS[kind]
    return [[make(float(x)) for x in row] for row in rows]


def outcome(call):
    """The call's dict, or the type of what it raised."""
    try:
        return call()
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        return type(exc)


@pytest.mark.parametrize("kind", sorted(SCALARS))
def test_rows_of_scalars_equal_the_reference_on_the_same_objects(kind):
    """Random cases (K 0-16, V 1-399, 1-59 for Fractions; the edge features of
    ``make_case``) with rows of NumPy scalars or Fractions and uniforms on the
    reference's own boundaries,
    computed in the objects' arithmetic: the same dict as the reference on the
    same objects.  Read as doubles, which the drop-in did before, the results
    differ from the reference's in some of these cases: the test asserts that
    too, so it holds the hand-over to account."""
    g = np.random.default_rng([20261130, sorted(SCALARS).index(kind)])
    cases, largest_V = (400, 60) if kind == "fraction" else (250, 400)   # Fractions are slow
    as_doubles_differ = skipped = 0
    for _ in range(cases):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, largest_V)))
        if kind == "float16":                   # keep the values finite in float16
            draft, target = np.clip(draft, 0, 1), np.clip(target, 0, 1)
        d, t = as_objects(draft, kind), as_objects(target, kind)
        U = outcome(lambda: adversarial_uniforms(g, d, t, tokens, V))
        if not isinstance(U, list):             # the objects' arithmetic failed on its own
            skipped += 1
            continue
        want = outcome(lambda: run_reference(d, t, tokens, V, U)[0])
        got = outcome(lambda: fast_sim(d, t, tokens, V, uniforms=U))
        if isinstance(want, dict):
            assert_same(got, want)
        else:
            assert got is want
        doubles = [[float(x) for x in row] for row in d], [[float(x) for x in row] for row in t]
        floats_U = [float(u) for u in U]
        as_doubles = outcome(lambda: run_reference(*doubles, tokens, V, floats_U)[0])
        as_doubles_differ += as_doubles != want
    assert as_doubles_differ >= 3
    assert skipped <= cases // 10


def test_uniforms_with_their_own_arithmetic():
    """``float32`` uniforms: the reference compares them with its float ratios and
    running sums in ``float32``; the drop-in hands such calls over, whatever the
    form of the rows (lists or arrays)."""
    g = np.random.default_rng(7)
    differ = 0
    for _ in range(300):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 200)))
        d, t = draft.tolist(), target.tolist()
        U = [min(np.float32(u), FLOAT32_BELOW_ONE)
             for u in adversarial_uniforms(g, d, t, tokens, V)]
        want, _ = run_reference(d, t, tokens, V, U)
        assert_same(fast_sim(d, t, tokens, V, uniforms=U), want)
        assert_same(fast_sim(draft, target, tokens, V, uniforms=U), want)
        differ += run_reference(d, t, tokens, V, [float(u) for u in U])[0] != want
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        assert differ >= 3      # NEP 50: float32 with a float stays float32 (before: float64)



def test_an_array_of_uniforms_stands_for_its_tolist():
    """A ``float32`` array of uniforms, like an array of probabilities, is its
    ``tolist()``, which holds Python floats: the drop-in equals the reference replaying
    those floats, where a list of the same ``float32`` scalars is handed over and
    compared in ``float32`` (so the two differ where the roundings do)."""
    g = np.random.default_rng(8)
    differ = 0
    for _ in range(300):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 200)))
        d, t = draft.tolist(), target.tolist()
        U = np.array([min(np.float32(u), FLOAT32_BELOW_ONE)
                      for u in adversarial_uniforms(g, d, t, tokens, V)], dtype=np.float32)
        want, _ = run_reference(d, t, tokens, V, U.tolist())
        assert_same(fast_sim(d, t, tokens, V, uniforms=U), want)
        assert_same(fast_sim(draft, target, tokens, V, uniforms=U), want)
        differ += fast_sim(d, t, tokens, V, uniforms=list(U)) != want
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        assert differ >= 3      # NEP 50: the scalars compare in float32

def test_other_uniforms_are_read_as_doubles_in_a_handed_over_call():
    """A uniform that is not a number with its own arithmetic (an object with only a
    ``__float__``, which the reference could not compare) is the double read at the
    start, in a handed-over call as in any other."""

    class Half:
        def __float__(self):
            return 0.5

    d = [[np.float32(0.25)] * 4 for _ in range(2)]
    t = [[np.float32(x) for x in (0.1, 0.2, 0.3, 0.4)] for _ in range(3)]
    want, _ = run_reference(d, t, [3, 0], 4, [0.5, 0.0, 0.5])
    assert_same(fast_sim(d, t, [3, 0], 4, uniforms=[Half(), 0.0, 0.5]), want)
    assert_same(fast_sim(d, t, [3, 0], 4, uniforms=[0.5, np.float32(0.0), Half()]),
                run_reference(d, t, [3, 0], 4, [0.5, np.float32(0.0), 0.5])[0])


def test_uniforms_below_one_in_their_own_precision():
    """A ``longdouble`` or a ``Fraction`` just below 1 is a valid uniform though its
    nearest double is 1.0: handed over, the reference compares it as it is; read as a
    double (``semantics="exact"``), it is the largest double below 1."""
    d = [[0.5, 0.5]]
    t = [[0.5, 0.5], [0.5, 0.5]]
    below_one = [Fraction(10**20 - 1, 10**20)]
    if np.finfo(np.longdouble).nmant > 52:     # x87 extended precision, not a double
        below_one.append(np.longdouble(1) - np.finfo(np.longdouble).epsneg)
    for u in below_one:
        assert float(u) == 1.0 and u < 1
        want, _ = run_reference(d, t, [0], 2, [u, 0.2, 0.3])
        assert_same(fast_sim(d, t, [0], 2, uniforms=[u, 0.2, 0.3]), want)
        exact = fast_sim(d, t, [0], 2, uniforms=[u, 0.2, 0.3], semantics="exact")
        assert exact == fast_sim(d, t, [0], 2, uniforms=[1 - 2**-53, 0.2, 0.3],
                                 semantics="exact")
    with pytest.raises(ValueError, match=r"uniforms\[0\] = 1.0 is outside"):
        fast_sim(d, t, [0], 2, uniforms=[np.longdouble(1), 0.2, 0.3])


def test_arrays_beside_rows_of_scalars_stand_for_their_tolist():
    """One matrix an array, the other rows of float32 scalars: the array's entries
    are the Python floats of its ``tolist()``, in the handed-over call too."""
    g = np.random.default_rng(11)
    for _ in range(200):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 300)))
        d = as_objects(draft, "float32")
        U = adversarial_uniforms(g, d, target.tolist(), tokens, V)
        want = outcome(lambda: run_reference(d, target.tolist(), tokens, V, U)[0])
        got = outcome(lambda: fast_sim(d, target, tokens, V, uniforms=U))
        if isinstance(want, dict):
            assert_same(got, want)
        else:
            assert got is want


def test_the_generator_is_drawn_from_the_calls_start():
    """With ``rng``, a call handed over after some draws starts again from the
    call's first draw: the reference drawing from a fresh copy of the generator
    gives the same dict, and leaves that copy where the call left ``rng``."""
    V = 50
    g = np.random.default_rng(3)
    for seed in range(40):
        draft, target, tokens, _ = make_case(g, K=6, V=V)
        # Floats up to the last row, whose float32 scalars only the bonus reads.
        t = target.tolist()
        t[-1] = [np.float32(x) for x in t[-1]]
        rng, twin = Rng(seed), Rng(seed)
        got = fast_sim(draft.tolist(), t, tokens, V, rng=rng)
        want = reference_sim(draft.tolist(), t, tokens, V, random=twin)
        assert_same(got, want)
        assert rng.state == twin.state
    specdec_fast.seed(5)
    got = fast_sim(draft.tolist(), t, tokens, V)
    assert_same(got, reference_sim(draft.tolist(), t, tokens, V, random=Rng(5)))


def test_decimals_raise_where_the_reference_raises():
    """The reference divides and compares Decimals, but cannot add one to its float
    running sum: a call that only accepts gives its dict, one that reaches a scan
    raises its TypeError, which names the last entry the reference read."""
    d = [[Decimal("0.5"), Decimal("0.5")]] * 2
    t = [[Decimal("0.25"), Decimal("0.75")]] * 3
    want, _ = run_reference(d, t[:2], [1, 1], 2, [0.3, 0.9])
    assert_same(fast_sim(d, t[:2], [1, 1], 2, uniforms=[0.3, 0.9]), want)
    assert want["tokens"] == [1, 1]
    for tokens, U, last in (([1, 1], [0.3, 0.9, 0.5], r"target_probs\[2\]\[0\]"),
                            ([0, 1], [0.9, 0.5, 0.5], r"draft_probs\[0\]\[1\]")):
        with pytest.raises(TypeError):
            run_reference(d, t, tokens, 2, U)
        with pytest.raises(TypeError, match=rf"'float' and 'decimal.Decimal'.*{last} = Decimal"):
            fast_sim(d, t, tokens, 2, uniforms=U)


def test_a_failed_handed_over_call_leaves_the_generator_where_the_reference_does():
    """The reference computes the residual before drawing its uniform, and fails there
    on a row that mixes ``Decimal``s and floats: the drop-in reads the rows before
    that draw too, so a call that fails this way has drawn what the reference
    draws, no more.  Position 0 is always accepted; position 1 reads floats at the
    draft token and is rejected when its uniform is at least 0.5."""
    d = [[0.1, 0.9], [0.5, 0.5]]
    t = [[0.9, 0.1], [0.25, Decimal("0.75")], [0.5, 0.5]]
    outcomes = []
    for seed in range(20):
        rng, twin = Rng(seed), Rng(seed)
        want = outcome(lambda: reference_sim(d, t, [0, 0], 2, random=twin))
        got = outcome(lambda: fast_sim(d, t, [0, 0], 2, rng=rng))
        assert got == want, seed
        assert rng.state == twin.state, seed
        outcomes.append(want is TypeError)
    assert 3 <= sum(outcomes) <= 17     # rejections at position 1 fail (4 of these 20)


def test_ints_beyond_two_to_the_53():
    """Ints a double cannot hold: the reference divides and sums them exactly."""
    big = 2**60
    d = [[big, big + 1, big], [big, big, big + 3]]
    t = [[big + 1, big, big + 2], [big - 5, big + 7, big], [1, 2**54 + 1, 2**54]]
    g = np.random.default_rng(2)
    for _ in range(200):
        tokens = [int(x) for x in g.integers(0, 3, 2)]
        U = adversarial_uniforms(g, d, t, tokens, 3)
        want, _ = run_reference(d, t, tokens, 3, U)
        assert_same(fast_sim(d, t, tokens, 3, uniforms=U), want)


@pytest.mark.parametrize("bad", [np.float32(-0.25), np.float32("nan"), np.float16("inf"),
                                 Fraction(-1, 4)])
def test_checks_hold_in_a_handed_over_call(bad):
    """The reference reads through the drop-in's checks: an invalid value among
    those it reads is a ValueError naming the position; one it does not read is
    not checked; too few uniforms is the drop-in's own error."""
    V = 4
    d = [[np.float32(0.25)] * V for _ in range(2)]
    t = [[np.float32(x) for x in (0.1, 0.2, 0.3, 0.4)] for _ in range(3)]
    t[2][1] = bad                               # the bonus reads it when u > 0.1
    with pytest.raises(ValueError, match=r"target_probs\[2\]\[1\] = .*finite and non-negative"):
        fast_sim(d, t, [3, 3], V, uniforms=[0.0, 0.0, 0.5])
    want, _ = run_reference(d, t, [3, 3], V, [0.0, 0.0, 0.05])
    assert_same(fast_sim(d, t, [3, 3], V, uniforms=[0.0, 0.0, 0.05]), want)
    with pytest.raises(ValueError, match=r"uniforms: the call needs more than the 2 values"):
        fast_sim(d, t, [3, 3], V, uniforms=[0.0, 0.0])


def test_exact_semantics_reads_doubles():
    """``semantics="exact"`` (the papers' algorithm, no reference to hand over to)
    reads such numbers as doubles: the result on float32 scalars is the one on
    their values."""
    g = np.random.default_rng(9)
    for _ in range(100):
        draft, target, tokens, V = make_case(g, V=int(g.integers(1, 100)))
        d, t = as_objects(draft, "float32"), as_objects(target, "float32")
        U = g.random(len(tokens) + 2).tolist()
        values = [[float(x) for x in row] for row in d], [[float(x) for x in row] for row in t]
        want = outcome(lambda: fast_sim(*values, tokens, V, uniforms=U, semantics="exact"))
        got = outcome(lambda: fast_sim(d, t, tokens, V, uniforms=U, semantics="exact"))
        assert got == want


LONG_DOUBLE_IS_WIDER = np.finfo(np.longdouble).nmant > 52


def test_arrays_whose_tolist_holds_numbers_with_their_own_arithmetic():
    """An array stands for its ``tolist()``: a ``longdouble`` array's holds long
    doubles (where they are wider than doubles) and an int64 array's Python ints,
    exact beyond 2**53.  Such arrays, as matrices or as uniforms, give the
    reference's result on that ``tolist()``, not on a float64 copy."""
    V = 2
    big = np.array([[2**53 + 2, 0]], np.int64), np.array([[2**53 + 1, 1]], np.int64)
    U = [1 - 2**-52, 0.5, 0.5]                  # p / q is below 1 - 2**-52 only exactly
    want, _ = run_reference(big[0].tolist(), big[1].tolist(), [0], V, U)
    assert_same(fast_sim(*big, [0], V, uniforms=U), want)
    as_doubles, _ = run_reference(big[0].astype(float).tolist(), big[1].astype(float).tolist(),
                                  [0], V, U)
    assert as_doubles != want
    if not LONG_DOUBLE_IS_WIDER:
        return
    third = np.longdouble(1) / 3
    draft = np.array([[1.0, 0.0]], np.longdouble)
    target = np.array([[third, 1 - third]], np.longdouble)
    U = [float(third), 0.5, 0.5]                # below the long double third, so accepted
    want, _ = run_reference(draft.tolist(), target.tolist(), [0], V, U)
    assert want["tokens"][0] == 0
    assert_same(fast_sim(draft, target, [0], V, uniforms=U), want)
    ratio = next(r for r in (np.longdouble(k) / 97 for k in range(1, 97))
                 if np.longdouble(float(r)) > r)     # its nearest double lies above it
    rows = [[float(ratio), 1 - float(ratio)]], [[1.0, 0.0]]
    uniforms = np.array([ratio, 0.5, 0.5], np.longdouble)
    want, _ = run_reference(rows[1], rows[0], [0], V, uniforms.tolist())
    assert_same(fast_sim(rows[1], rows[0], [0], V, uniforms=uniforms), want)
    assert want != run_reference(rows[1], rows[0], [0], V, [float(ratio), 0.5, 0.5])[0]


def test_values_beyond_the_doubles_range_are_checked_in_their_own_arithmetic():
    """An int of 400 digits or a long double of 1e400 is a finite, non-negative
    probability though no double holds it, in a call and in ``check_all``;
    infinities, NaNs and negatives of any type are errors naming the position, and
    complex numbers are not real."""
    cases = [10**400]
    if LONG_DOUBLE_IS_WIDER:
        with np.errstate(over="ignore"):
            cases.append(np.longdouble("1e400"))
    for huge in cases:
        d, t = [[huge, 1]], [[huge, 0], [0.5, 0.5]]
        want = outcome(lambda: run_reference(d, t, [0], 2, [0.5, 0.5, 0.5])[0])
        assert_same(fast_sim(d, t, [0], 2, uniforms=[0.5, 0.5, 0.5]), want)
        assert_same(fast_sim(d, t, [0], 2, uniforms=[0.5, 0.5, 0.5], check_all=True), want)
    bad = [-(10**400), Decimal("Infinity"), Decimal("NaN"), Decimal("-1"), np.longdouble("inf")]
    for x in bad:
        for check_all in (False, True):
            with pytest.raises(ValueError,
                               match=r"draft_probs\[0\]\[0\] = .*finite and non-negative"):
                fast_sim([[x, 1.0]], [[0.5, 0.5]], [0], 2, uniforms=[0.5, 0.5],
                         check_all=check_all)
    for x in (complex(0.1, 0), np.complex128(0.1), np.complex64(0.1)):
        with pytest.raises(TypeError, match=r"draft_probs\[0\]\[0\] must be a real number"):
            fast_sim([[x, 1.0]], [[0.5, 0.5]], [0], 2, uniforms=[0.5, 0.5])


def test_the_generators_own_draws_not_an_override():
    """A subclass of ``Rng`` that overrides ``random()`` does not change the draws of a
    call, handed over or not: both use the generator's state."""

    class Fixed(Rng):
        def random(self, size=None):
            return 0.999

    target = [[0.5, 0.5], [0.5, 0.5]]
    for draft in ([[1.0, 0.0]], [[np.float32(1.0), 0.0]]):
        assert_same(fast_sim(draft, target, [0], 2, rng=Fixed(1)),
                    reference_sim(draft, target, [0], 2, random=Rng(1)))


def test_draws_made_before_a_hand_over_are_replayed_not_drawn_again():
    """A call that drew from ``rng`` before meeting a number with its own arithmetic
    gives the reference those draws again, then draws on from where the generator
    is: it does not rewind ``rng``.  Here a row's ``__getitem__`` (user code, as run
    by another thread while the call waits for the GIL) draws from the same
    generator; every value of the stream then goes to exactly one of the two.
    (Rewinding would hand the call's draws to the reference again and the row's
    ``__getitem__`` the same values as before.)"""
    V, K = 6, 2
    g = np.random.default_rng(11)
    exercised = 0
    for seed in range(30):
        draft, target, tokens, _ = make_case(g, K=K, V=V)
        rng = Rng(seed)
        taken = []                       # what the row's user code drew

        class DrawingRow(list):
            def __getitem__(self, v):
                taken.append(rng.random())
                return np.float32(list.__getitem__(self, v))

        t = target.tolist()
        t[1] = DrawingRow(t[1])
        got = fast_sim(draft.tolist(), t, tokens, V, rng=rng)
        stream = Rng(seed)
        n = 0
        while stream.state != rng.state:
            stream.random()
            n += 1
            assert n <= len(taken) + K + 2, seed
        T = Rng(seed).random(n).tolist()
        assert len(set(T)) == n
        assert set(taken) <= set(T) and len(taken) == len(set(taken)), seed
        consumed = [u for u in T if u not in set(taken)]
        plain = target.tolist()
        plain[1] = [np.float32(x) for x in plain[1]]
        replay = iter(consumed)

        class Replay:
            def random(self):
                return next(replay)

        want = reference_sim(draft.tolist(), plain, tokens, V, random=Replay())
        assert_same(got, want)
        assert next(replay, None) is None, seed      # the call used every value it drew
        exercised += bool(taken) and T.index(taken[0]) > 0   # drew, then handed over
    assert exercised >= 10
