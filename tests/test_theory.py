"""``specdec_fast.theory`` and ``specdec_fast.synthetic`` against hand-computed values.

Everything here is deterministic (no sampling), so nothing can fail by chance;
the hypothesis test checks identities between the functions.
"""
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_fast import synthetic, theory
from specdec_fast.simulate import simulate


def geometric(alpha, k):
    """Leviathan et al. 2023, Eq. 1, for alpha < 1."""
    return (1 - alpha ** (k + 1)) / (1 - alpha)


# --------------------------------------------------------------------------
# Hand-computed values.

@pytest.mark.parametrize("k", [0, 1, 2, 5, 12])
def test_alpha_zero_and_one(k):
    # alpha = 0: the first draft is always rejected, one token (the correction).
    assert theory.expected_tokens(0.0, k) == 1.0
    # alpha = 1: every draft passes, then the bonus: K + 1 tokens, in both semantics.
    assert theory.expected_tokens(1.0, k) == k + 1
    assert theory.expected_tokens(1.0, k, semantics="reference") == k + 1
    # Reference at alpha = 0: R6 fires after the (certain) rejection at position 1 only when K = 1.
    assert theory.expected_tokens(0.0, k, semantics="reference") == (2.0 if k == 1 else 1.0)
    # Without a bonus row, alpha = 1 gives K tokens (K = 0 emits nothing).
    assert theory.expected_tokens(1.0, k, bonus=False) == k
    assert theory.expected_tokens(0.0, k, bonus=False) == (0.0 if k == 0 else 1.0)


def test_alpha_half_small_k():
    # K = 1: 1 + 1/2; K = 2: 1 + 1/2 + 1/4; K = 3: + 1/8.
    assert theory.expected_tokens(0.5, 1) == 1.5
    assert theory.expected_tokens(0.5, 2) == 1.75
    assert theory.expected_tokens(0.5, 3) == 1.875
    # Reference adds alpha^(K-1) (1 - alpha): K = 1: 1/2, K = 2: 1/4, K = 3: 1/8.
    assert theory.expected_tokens(0.5, 1, semantics="reference") == 2.0
    assert theory.expected_tokens(0.5, 2, semantics="reference") == 2.0
    assert theory.expected_tokens(0.5, 3, semantics="reference") == 2.0
    # Distributions over 0 .. K+1 tokens, K = 2.
    np.testing.assert_array_equal(theory.emitted_distribution(0.5, 2), [0, 0.5, 0.25, 0.25])
    np.testing.assert_array_equal(theory.emitted_distribution(0.5, 2, semantics="reference"),
                                  [0, 0.5, 0, 0.5])
    np.testing.assert_array_equal(theory.emitted_distribution(0.5, 2, bonus=False),
                                  [0, 0.5, 0.5, 0])
    np.testing.assert_array_equal(theory.emitted_distribution(0.5, 0), [0, 1])
    np.testing.assert_array_equal(theory.emitted_distribution(0.5, 0, bonus=False), [1, 0])


def test_per_position_alphas():
    a = [0.9, 0.5, 0.2]
    assert theory.expected_tokens(a) == pytest.approx(1 + 0.9 + 0.45 + 0.09, abs=1e-15)
    # R6: + a1 a2 (1 - a3)
    assert theory.expected_tokens(a, semantics="reference") == pytest.approx(
        2.44 + 0.45 * 0.8, abs=1e-15)
    assert theory.expected_tokens(a, bonus=False) == pytest.approx(2.35, abs=1e-15)
    np.testing.assert_allclose(theory.emitted_distribution(a),
                               [0, 0.1, 0.45, 0.36, 0.09], atol=1e-15)
    np.testing.assert_allclose(theory.emitted_distribution(a, semantics="reference"),
                               [0, 0.1, 0.45, 0, 0.45], atol=1e-15)
    # Equal per-position alphas give the scalar form.
    assert theory.expected_tokens([0.7] * 6) == pytest.approx(theory.expected_tokens(0.7, 6))
    # A batch of per-position rows.
    rows = np.array([[0.9, 0.5, 0.2], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(theory.expected_tokens(rows), [2.44, 4.0])


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_geometric_closed_form_and_reference_excess(alpha, k):
    exact = theory.expected_tokens(alpha, k)
    assert exact == pytest.approx(geometric(alpha, k), rel=1e-13)
    ref = theory.expected_tokens(alpha, k, semantics="reference")
    assert ref - exact == pytest.approx(alpha ** (k - 1) * (1 - alpha), abs=1e-13)
    c = 0.05
    assert theory.speedup(alpha, k, c) == pytest.approx(
        (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1)), rel=1e-13)


def test_vectorised_shapes():
    alpha = np.array([0.0, 0.5, 0.9, 1.0])
    ks = np.arange(1, 6)[:, None]
    e = theory.expected_tokens(alpha, ks)
    assert e.shape == (5, 4)
    for i, k in enumerate(range(1, 6)):
        for j, a in enumerate(alpha):
            assert e[i, j] == pytest.approx(theory.expected_tokens(float(a), k))
    s = theory.speedup(alpha, ks, np.array([0.0, 0.1])[:, None, None])
    assert s.shape == (2, 5, 4)
    np.testing.assert_allclose(s[0], e)
    np.testing.assert_allclose(s[1], e / (ks * 0.1 + 1))
    d = theory.emitted_distribution(alpha, 3)
    assert d.shape == (4, 5)
    np.testing.assert_allclose(d.sum(-1), 1.0)
    assert isinstance(theory.expected_tokens(0.3, 2), float)
    assert isinstance(theory.acceptance_rate([0.5, 0.5], [1.0, 0.0]), float)


def test_speedup_and_optimal_k():
    # Brute force over K for the README's scenarios.
    c = 0.05
    for alpha, want in ((0.6, 4), (0.8, 8), (0.9, 13)):
        speeds = [theory.speedup(alpha, k, c) for k in range(1, 65)]
        assert int(np.argmax(speeds)) + 1 == want
        assert theory.optimal_k(alpha, c, 64) == want
    np.testing.assert_array_equal(theory.optimal_k([0.6, 0.8, 0.9], c, 64), [4, 8, 13])
    # Ties go to the lowest K: alpha = 0 with free drafts is 1 token at any K.
    assert theory.optimal_k(0.0, 0.0, 10) == 1
    # alpha = 1 with free drafts: the more the better.
    assert theory.optimal_k(1.0, 0.0, 10) == 10
    # Expensive drafts: K = 1, and speculation does not pay (speedup < 1).
    assert theory.optimal_k(0.3, 1.0, 10) == 1
    assert theory.speedup(0.3, 1, 1.0) < 1
    # Broadcasting alpha against cost_ratio.
    grid = theory.optimal_k(np.array([0.6, 0.9]), np.array([[0.01], [0.2]]), 32)
    assert grid.shape == (2, 2)
    assert grid.dtype == np.int64
    # Reference semantics favour K = 1 at low alpha (R6 makes it 2 tokens always).
    assert theory.expected_tokens(0.1, 1, semantics="reference") == 2.0


@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("bonus", [True, False])
def test_array_k_matches_scalar_k(semantics, bonus):
    alpha = np.array([0.0, 0.5, 1.0, 0.13, 0.77, 0.999])
    ks = np.array([0, 1, 2, 3, 7, 40])[:, None]
    e = theory.expected_tokens(alpha, ks, semantics=semantics, bonus=bonus)
    for i, k in enumerate(ks[:, 0]):
        for j, a in enumerate(alpha):
            want = theory.expected_tokens(float(a), int(k), semantics=semantics, bonus=bonus)
            if a in (0.0, 0.5, 1.0):
                assert e[i, j] == want, (a, k)           # sums of powers of two: exact
            else:
                assert e[i, j] == pytest.approx(want, rel=1e-14, abs=0), (a, k)


@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("bonus", [True, False])
def test_array_k_is_as_accurate_as_scalar_k_for_long_drafts(semantics, bonus):
    """Near alpha = 1 a running sum of E's terms (each near 1) would lose about K
    ulps; the array path sums the distribution's terms as the scalar path does."""
    alpha = np.array([1 - 2.0 ** -53, 1 - 1e-10, 0.999, 0.5, 1e-3])
    ks = np.array([[1000], [10000]])
    e = theory.expected_tokens(alpha, ks, semantics=semantics, bonus=bonus)
    for i, k in enumerate(ks[:, 0]):
        for j, a in enumerate(alpha):
            want = theory.expected_tokens(float(a), int(k), semantics=semantics, bonus=bonus)
            assert e[i, j] == pytest.approx(want, rel=1e-14, abs=0), (a, k)


def test_array_k_memory_does_not_grow_with_alphas_times_the_largest_k():
    """One long draft among many alphas: tables are built a few alphas at a time
    (the whole (alphas, max K) table would take 800 MB here)."""
    import tracemalloc
    g = np.random.default_rng(3)
    alpha = g.random(20000)
    ks = np.ones(20000, dtype=np.int64)
    ks[0] = 5000
    tracemalloc.start()
    try:
        e = theory.expected_tokens(alpha, ks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, peak
    np.testing.assert_allclose(e[1:], 1 + alpha[1:], rtol=1e-15)
    assert e[0] == pytest.approx(theory.expected_tokens(float(alpha[0]), 5000), rel=1e-14)


def test_k_beyond_the_limit_is_refused():
    for k in (theory.K_MAX_LIMIT + 1, np.array([1, 10**9])):
        with pytest.raises(ValueError, match="k must be at most 1,000,000"):
            theory.expected_tokens(0.5, k)


def test_optimal_k_takes_one_cumulative_product(monkeypatch):
    """The array-k path shares one alpha^j, j <= k_max, across all K: linear, not
    quadratic, in k_max (it took seconds at k_max = 10**4)."""
    sizes = []
    cumprod = np.cumprod

    def counting(x, *args, **kwargs):
        sizes.append(np.size(x))
        return cumprod(x, *args, **kwargs)

    monkeypatch.setattr(np, "cumprod", counting)
    assert theory.optimal_k(0.8, 0.05, 2000) == 8
    assert 0 < sum(sizes) <= 2000


def test_optimal_k_limit_and_blocks(monkeypatch):
    assert theory.optimal_k(0.8, 0.05, theory.K_MAX_LIMIT) == 8
    for k_max in (theory.K_MAX_LIMIT + 1, 10**9):
        with pytest.raises(ValueError, match="k_max must be at most 1,000,000"):
            theory.optimal_k(0.8, 0.05, k_max)
    # Grids are evaluated a few rows at a time; every row as if alone.
    monkeypatch.setattr(theory, "_BLOCK", 64)
    alpha, c = np.linspace(0.0, 1.0, 7), np.array([[0.0], [0.02], [0.3]])
    grid = theory.optimal_k(alpha, c, 32)
    assert grid.shape == (3, 7) and grid.dtype == np.int64
    for i in range(3):
        for j in range(7):
            assert grid[i, j] == theory.optimal_k(alpha[j], c[i, 0], 32)
    assert theory.optimal_k(np.array([]), 0.1).shape == (0,)


def test_acceptance_rate():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    assert theory.acceptance_rate(p, p) == pytest.approx(1.0)
    assert theory.acceptance_rate([1.0, 0.0], [0.0, 1.0]) == 0.0
    q = np.array([0.25, 0.25, 0.25, 0.25])
    # sum min = 0.25 + 0.25 + 0.2 + 0 = 0.7 = 1 - TV
    assert theory.acceptance_rate(p, q) == pytest.approx(0.7)
    assert theory.acceptance_rate(p, q) == pytest.approx(1 - 0.5 * np.abs(p - q).sum())
    rows = np.stack([p, q, p])
    np.testing.assert_allclose(theory.acceptance_rate(rows, q), [0.7, 1.0, 0.7])
    assert theory.acceptance_rate(rows[None], rows[:, None]).shape == (3, 3)


def test_alpha_rounded_above_one_counts_as_one():
    """acceptance_rate is at most 1 (alpha <= sum(q)), though the sum of a normalised
    row with itself rounds above 1, in float64 by an ulp, in float32 by more; the
    closed forms take alphas up to ALPHA_ROUNDING above 1 as 1, and refuse more."""
    p = np.array([1.0, 6.0, 3.0, 3.0]) / 13.0
    assert np.minimum(p, p).sum() > 1.0
    assert theory.acceptance_rate(p, p) == 1.0
    g = np.random.default_rng(4)
    rows = g.dirichlet(np.ones(1000), size=50).astype(np.float32)
    rows /= rows.sum(axis=-1, keepdims=True)
    sums = rows.astype(np.float64).sum(axis=-1)
    assert (sums > 1.0 + theory.ALPHA_ROUNDING).any()
    alphas = theory.acceptance_rate(rows, rows)
    assert (alphas[sums > 1.0] == 1.0).all() and (alphas[sums <= 1.0] == sums[sums <= 1.0]).all()
    alpha = 1.0 + 2.0**-52
    assert theory.expected_tokens(alpha, 4) == 5.0
    assert theory.speedup(alpha, 4, 0.0) == 5.0
    assert theory.optimal_k([alpha, 1.0], 0.1).tolist() == [theory.optimal_k(1.0, 0.1)] * 2
    assert theory.emitted_distribution([alpha, alpha]).tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="alpha must be finite and in"):
        theory.expected_tokens(1.0 + 2 * theory.ALPHA_ROUNDING, 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        theory.expected_tokens(1.5, 2)
    with pytest.raises(ValueError, match="alpha"):
        theory.expected_tokens(-0.1, 2)
    with pytest.raises(ValueError, match="finite"):
        theory.expected_tokens(float("nan"), 2)
    with pytest.raises(ValueError, match="k must be at least 0"):
        theory.expected_tokens(0.5, -1)
    with pytest.raises(TypeError):
        theory.expected_tokens(0.5, 2.5)
    with pytest.raises(ValueError, match="semantics"):
        theory.expected_tokens(0.5, 2, semantics="paper")
    with pytest.raises(ValueError, match="cost_ratio"):
        theory.speedup(0.5, 2, -0.1)
    with pytest.raises(ValueError, match="last axis"):
        theory.expected_tokens(0.5)
    with pytest.raises(ValueError, match="single int"):
        theory.emitted_distribution(0.5, [1, 2])
    with pytest.raises(ValueError, match="k_max"):
        theory.optimal_k(0.5, 0.1, 0)
    with pytest.raises(ValueError, match="vocabulary"):
        theory.acceptance_rate([0.5, 0.5], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="q must be finite and >= 0, got -0.5"):
        theory.acceptance_rate([0.5, 0.5], [1.5, -0.5])
    with pytest.raises(ValueError, match="p must be finite"):
        theory.acceptance_rate([np.nan, 1.0], [0.5, 0.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10), st.booleans())
def test_distribution_identities(alphas, bonus):
    K = len(alphas)
    for semantics in ("exact", "reference"):
        d = theory.emitted_distribution(alphas, semantics=semantics, bonus=bonus)
        assert d.shape == (K + 2,)
        assert (d >= 0).all()
        assert d.sum() == pytest.approx(1.0, abs=1e-12)
        assert d @ np.arange(K + 2) == pytest.approx(
            theory.expected_tokens(alphas, semantics=semantics, bonus=bonus), abs=1e-12)
    exact = theory.expected_tokens(alphas, bonus=bonus)
    ref = theory.expected_tokens(alphas, semantics="reference", bonus=bonus)
    excess = np.prod(alphas[:-1]) * (1 - alphas[-1]) if bonus else 0.0
    assert ref - exact == pytest.approx(excess, abs=1e-12)


# --------------------------------------------------------------------------
# synthetic: exact in alpha.

@pytest.mark.parametrize("V", [2, 10, 1000, 32000])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.6, 0.8, 0.9, 0.99, 1.0])
def test_zipf_pair_alpha_exact(V, alpha):
    if alpha < synthetic.min_alpha(V):
        with pytest.raises(ValueError, match="smallest"):
            synthetic.zipf_pair(V, alpha)
        return
    p, q = synthetic.zipf_pair(V, alpha, rng=V)
    assert p.shape == q.shape == (V,)
    assert (p > 0).all() and (q >= 0).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)
    assert abs(theory.acceptance_rate(p, q) - alpha) < 1e-12


def test_zipf_family():
    p = synthetic.zipf(100)
    assert (np.diff(p) < 0).all()                      # token 0 the most likely
    shuffled = synthetic.zipf(100, rng=1)
    np.testing.assert_allclose(np.sort(shuffled), np.sort(p))
    assert not np.array_equal(shuffled, p)
    assert synthetic.min_alpha(1000) < 0.01
    a = synthetic.min_alpha(1000)
    p, q = synthetic.zipf_pair(1000, a)
    assert abs(theory.acceptance_rate(p, q) - a) < 1e-12
    draft, target = synthetic.zipf_rows(500, [0.9, 0.4, 0.7], rng=3)
    assert draft.shape == (3, 500) and target.shape == (4, 500)
    np.testing.assert_allclose(theory.acceptance_rate(target[:3], draft), [0.9, 0.4, 0.7],
                               atol=1e-12)
    d2, t2 = synthetic.zipf_rows(500, [0.9, 0.4, 0.7], rng=3, bonus=False)
    assert t2.shape == (3, 500)
    np.testing.assert_array_equal(d2, draft)
    with pytest.raises(ValueError):
        synthetic.zipf_pair(10, 1.5)
    with pytest.raises(ValueError):
        synthetic.zipf(0)
    with pytest.raises(TypeError):
        synthetic.zipf(10, rng="seed")


@pytest.mark.parametrize("V, exponent", [(1, 1.1), (1, 0.0), (1000, 0.0)])
def test_zipf_pair_when_target_and_wrong_coincide(V, exponent):
    # V = 1 or exponent 0: the target and the "wrong" distribution are equal, so
    # the only reachable alpha is 1 and the draft is the target itself.
    assert synthetic.min_alpha(V, exponent) == 1.0
    p, q = synthetic.zipf_pair(V, 1.0, exponent)
    np.testing.assert_array_equal(q, p)
    assert theory.acceptance_rate(p, q) == pytest.approx(1.0, abs=1e-12)
    draft, target = synthetic.zipf_rows(V, [1.0, 1.0], exponent, rng=1)
    assert draft.shape == (2, V) and target.shape == (3, V)
    if V > 1:
        with pytest.raises(ValueError, match="smallest"):
            synthetic.zipf_pair(V, 0.5, exponent)


@pytest.mark.parametrize("call, error, match", [
    (lambda: synthetic.zipf(0), ValueError, "V must be at least 1"),
    (lambda: synthetic.zipf(True), TypeError, "V must be an int"),
    (lambda: synthetic.zipf(2.0), TypeError, "V must be an int"),
    (lambda: synthetic.zipf(10, exponent=-1), ValueError, "exponent"),
    (lambda: synthetic.zipf(10, exponent=[1.0, 2.0]), TypeError, "exponent"),
    (lambda: synthetic.zipf(10, rng=-1), ValueError, "rng"),
    (lambda: synthetic.zipf_pair(10, float("nan")), ValueError, "alpha"),
    (lambda: synthetic.min_alpha(10, float("inf")), ValueError, "exponent"),
    (lambda: theory.optimal_k(0.5, 0.1, 2.0), TypeError, "k_max"),
    (lambda: theory.expected_tokens(0.5, True), TypeError, "k must be an int"),
    (lambda: theory.expected_tokens(0.5, np.array([1, -2])), ValueError, "k must be at least 0"),
    (lambda: theory.acceptance_rate([0.5, "x"], [0.5, 0.5]), TypeError, "p must be"),
    (lambda: theory.speedup(0.5, 2, float("inf")), ValueError, "cost_ratio"),
    # Strings and arrays that are not of real numbers are refused, not converted.
    (lambda: theory.expected_tokens("0.5", 4), TypeError, "alpha must be .* not str"),
    (lambda: theory.expected_tokens(b"0.5", 4), TypeError, "alpha must be .* not bytes"),
    (lambda: theory.expected_tokens(np.array(["0.5"]), 4), TypeError, "alpha .* dtype <U3"),
    (lambda: theory.expected_tokens(["0.9", "0.5"]), TypeError, "alpha .* dtype <U3"),
    (lambda: theory.speedup(0.5, 2, "0.1"), TypeError, "cost_ratio must be .* not str"),
    (lambda: theory.optimal_k(np.array(["0.5"], dtype=object), 0.1), TypeError,
     "alpha .* dtype object"),
    (lambda: theory.acceptance_rate(np.array([0.5, 0.5j], dtype=object), [0.5, 0.5]),
     TypeError, "p .* dtype object"),
    (lambda: synthetic.zipf(10, exponent="1.1"), TypeError, "exponent must be .* not str"),
    # Flags take bools only: the string "False" is truthy.
    (lambda: theory.expected_tokens(0.5, 2, bonus="False"), TypeError, "bonus must be a bool"),
    (lambda: theory.expected_tokens(0.5, [1, 2], bonus=0), TypeError, "bonus must be a bool"),
    (lambda: theory.expected_tokens([0.5], bonus=None), TypeError, "bonus must be a bool"),
    (lambda: theory.emitted_distribution(0.5, 2, bonus=1), TypeError, "bonus must be a bool"),
    (lambda: theory.speedup(0.5, 2, 0.1, bonus="no"), TypeError, "bonus must be a bool"),
    (lambda: theory.optimal_k(0.5, 0.1, bonus="False"), TypeError, "bonus must be a bool"),
    (lambda: theory.optimal_k(np.array([]), 0.1, bonus=1), TypeError, "bonus must be a bool"),
    (lambda: theory.optimal_k(np.array([]), 0.1, semantics="paper"), ValueError, "semantics"),
])
def test_argument_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_real_dtypes_accepted():
    assert theory.expected_tokens(Fraction(1, 2), 2) == 1.75
    assert theory.acceptance_rate([Fraction(1, 2), Fraction(1, 2)], [1.0, 0]) == 0.5
    assert theory.expected_tokens(Decimal("0.5"), 2) == 1.75
    assert theory.expected_tokens(np.float32(0.5), 2) == 1.75
    assert theory.expected_tokens(True, 2) == 3.0
    np.testing.assert_array_equal(theory.expected_tokens(np.array([0, 1], np.uint8), 2), [1, 3])
    assert theory.speedup(0.5, 2, np.int64(0)) == 1.75
    # NumPy bools are bools.
    assert theory.expected_tokens(1.0, 2, bonus=np.False_) == 2.0
    assert theory.optimal_k(1.0, 0.0, 4, bonus=np.True_) == 4


@pytest.mark.parametrize("call, message", [
    (lambda: theory.expected_tokens(0.5, 2**64), "k must be at most 1,000,000"),
    (lambda: theory.speedup(0.5, 2**63, 0.1), "k must be at most 1,000,000"),
    (lambda: theory.speedup(0.8, [1, 2], [0.1, 0.2, 0.3]),
     r"alpha, k and cost_ratio do not broadcast: shapes \(\), \(2,\) and \(3,\)"),
    (lambda: theory.expected_tokens(0.5, 3, semantics=np.array(["exact", "exact"])),
     "semantics must be 'exact' or 'reference'"),
    (lambda: simulate(np.full((1, 4), 0.25), np.full((2, 4), 0.25), trials=2**63),
     r"trials must be at most 2\*\*62"),
], ids=["k_huge", "speedup_k_huge", "speedup_broadcast", "semantics_array", "trials_huge"])
def test_out_of_range_arguments_are_named(call, message):
    """Ints too large for the machine and shapes that do not fit get an error naming the
    argument, not OverflowError or NumPy's own message."""
    with pytest.raises(ValueError, match=message):
        call()
