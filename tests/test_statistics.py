"""Distributional checks with the built-in generator (rng=Rng(seed), not replayed uniforms).

Speculative sampling emits at each position a token distributed exactly as
the target p_i when the draft token is sampled from q_i (R3 + R4; Leviathan et
al. 2023, Chen et al. 2023).  Under R2, a drafted token with q == 0 cannot
occur when drafts are sampled from q, so the first emitted token is
distributed as p exactly.

Chi-square critical values come from the Wilson-Hilferty approximation
(no scipy needed): chi2_{df, 1-alpha} ~= df * (1 - 2/(9 df) + z sqrt(2/(9 df)))^3,
slightly conservative for the df >= 3 used here.  Every test uses fixed
seeds, so it either always passes or always fails; were the seeds random,
each chi-square test would fail falsely with probability about ALPHA = 1e-4
and each 5-standard-error check with probability about 6e-7.
"""
import math
from statistics import NormalDist

import numpy as np
import pytest

import specdec_fast
from specdec_fast import Rng

fast_sim = specdec_fast.speculative_decode_sim

ALPHA = 1e-4
N_CALLS = 50_000


def chi2_critical(df, alpha=ALPHA):
    """Upper ``alpha`` quantile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty)."""
    z = NormalDist().inv_cdf(1.0 - alpha)
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def test_wilson_hilferty_is_close_to_known_quantiles():
    """Sanity: exact chi-square 0.9999 quantiles (scipy.stats.chi2.ppf) vs the approximation.

    The approximation is above the exact value (so the false-failure rate is a
    little below ALPHA) by at most 8% at df = 1 and 3.5% for df >= 3.
    """
    exact = {1: 15.1367, 2: 18.4207, 3: 21.1075, 4: 23.5127, 9: 33.7199, 19: 50.7955,
             99: 160.0557}
    for df, value in exact.items():
        approx = chi2_critical(df)
        assert value <= approx <= value * (1.08 if df < 3 else 1.035)


def assert_distributed_as(counts, probs, label=""):
    """Chi-square goodness of fit at level ALPHA; categories with probs == 0 must be empty."""
    counts = np.asarray(counts, dtype=float)
    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum()
    n = counts.sum()
    assert n > 0
    zero = probs == 0
    assert counts[zero].sum() == 0, f"{label}: tokens with probability 0 were emitted"
    expected = n * probs[~zero]
    assert expected.min() >= 5, "test design: too few expected counts"
    stat = float(((counts[~zero] - expected) ** 2 / expected).sum())
    df = int((~zero).sum()) - 1
    assert df >= 1, "test design: too few categories"
    assert stat < chi2_critical(df), f"{label}: chi2 = {stat:.1f} with df = {df}"


def normalise(x):
    x = np.asarray(x, dtype=float)
    return x / x.sum()


def _pairs():
    g = np.random.default_rng(2023)
    pairs = {}
    pairs["random_v8"] = (normalise(g.random(8) + 0.05), normalise(g.random(8) + 0.05))
    q = normalise(g.random(10) + 0.1)
    q[[1, 4, 7]] = 0.0                                  # q == 0 where p > 0
    pairs["q_zero_where_p_positive"] = (normalise(g.random(10) + 0.1), normalise(q))
    p = np.zeros(10)
    p[:5] = normalise(g.random(5) + 0.2)
    q = np.zeros(10)
    q[5:] = normalise(g.random(5) + 0.2)
    pairs["disjoint_supports"] = (p, q)                 # alpha == 0: always rejected
    p = normalise(g.random(12) + 0.1)
    p[[0, 11]] = 0.0                                    # p == 0 where q > 0
    pairs["p_zero_where_q_positive"] = (normalise(p), normalise(g.random(12) + 0.1))
    p = normalise(g.random(6) + 0.1)
    pairs["p_equals_q"] = (p, p.copy())                 # alpha == 1: always accepted
    pairs["peaked_vs_flat_v20"] = (normalise(np.arange(1, 21) ** 2.0), np.full(20, 1 / 20))
    return pairs


PAIRS = _pairs()


def run_calls(p, q, K, n_calls, seed, bonus_row=None, dtype=np.float64):
    """``n_calls`` calls with drafts sampled from q by NumPy; the library's own Rng."""
    V = len(p)
    draft = np.tile(q, (K, 1)).astype(dtype)
    target = np.tile(p, (K + 1, 1)).astype(dtype)
    if bonus_row is not None:
        target[K] = bonus_row
    g = np.random.default_rng(seed)
    tokens = g.choice(V, size=(n_calls, K), p=q / q.sum())
    rng = Rng(seed)
    return [fast_sim(draft, target, row, V, rng=rng) for row in tokens]


def alpha_of(p, q):
    return float(np.minimum(p, q).sum())


@pytest.mark.parametrize("name", list(PAIRS))
def test_first_token_is_distributed_as_target(name):
    """R3 + R4: the first emitted token ~ p_0 (drafts sampled from q_0; false-fail ~1e-4)."""
    p, q = PAIRS[name]
    results = run_calls(p, q, K=2, n_calls=N_CALLS, seed=11)
    firsts = [r["tokens"][0] for r in results]        # never empty: q > 0 at drafted tokens
    assert_distributed_as(np.bincount(firsts, minlength=len(p)), p, name)


@pytest.mark.parametrize("name", ["random_v8", "q_zero_where_p_positive", "disjoint_supports"])
def test_first_token_float32_rows(name):
    """As above with float32 arrays (read as float64; false-fail ~1e-4)."""
    p, q = PAIRS[name]
    p32 = p.astype(np.float32).astype(np.float64)
    results = run_calls(p, q, K=1, n_calls=N_CALLS, seed=12, dtype=np.float32)
    firsts = [r["tokens"][0] for r in results]
    assert_distributed_as(np.bincount(firsts, minlength=len(p)), p32, name)


def test_first_token_default_generator():
    """rng=None draws from the module generator (seeded); first token ~ p (false-fail ~1e-4)."""
    p, q = PAIRS["random_v8"]
    V = len(p)
    draft, target = np.tile(q, (3, 1)), np.tile(p, (4, 1))
    tokens = np.random.default_rng(13).choice(V, size=(N_CALLS, 3), p=q)
    specdec_fast.seed(13)
    firsts = [fast_sim(draft, target, row, V)["tokens"][0] for row in tokens]
    assert_distributed_as(np.bincount(firsts, minlength=V), p)


def test_bonus_token_with_k_zero_is_distributed_as_p0():
    """R7: with K == 0 the one token is drawn from p_0 (false-fail ~1e-4)."""
    p = normalise(np.arange(1, 11, dtype=float))
    rng = Rng(14)
    out = [fast_sim([], [p], [], len(p), rng=rng)["tokens"][0] for _ in range(N_CALLS)]
    assert_distributed_as(np.bincount(out, minlength=len(p)), p)


@pytest.mark.parametrize("name", ["random_v8", "disjoint_supports", "p_equals_q"])
def test_bonus_token_comes_from_row_k(name):
    """R6: whenever K+1 tokens are emitted (all accepted, or a rejection at the last
    position), the last one is drawn from p_K (here a different row r; false-fail ~1e-4)."""
    p, q = PAIRS[name]
    V = len(p)
    r = normalise(np.arange(V, 0, -1, dtype=float))
    K = 1 if name == "disjoint_supports" else 2      # alpha == 0: only a rejection at i = K-1 gets a bonus
    results = run_calls(p, q, K=K, n_calls=N_CALLS, seed=15, bonus_row=r)
    last = [res["tokens"][-1] for res in results if res["num_accepted"] == K + 1]
    assert len(last) > 1000
    assert_distributed_as(np.bincount(last, minlength=V), r, name)


def expected_tokens(alpha, K):
    """E[num_accepted] under the reference semantics (R6 adds alpha^(K-1) (1 - alpha))."""
    if alpha == 1.0:
        return K + 1.0
    return (1 - alpha ** (K + 1)) / (1 - alpha) + alpha ** (K - 1) * (1 - alpha)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("K", [1, 2, 4])
def test_mean_tokens_per_call(name, K):
    """E[n] = (1 - a^(K+1))/(1 - a) + a^(K-1)(1 - a) within 5 standard errors
    (false-fail ~6e-7 per test); n == K never happens (R6), n == 0 never (R2)."""
    p, q = PAIRS[name]
    a = alpha_of(p, q)
    n = np.array([r["num_accepted"] for r in run_calls(p, q, K, N_CALLS // 2, seed=16 + K)])
    assert (n >= 1).all() and (n <= K + 1).all()
    assert not (n == K).any()                    # R6: K tokens are always followed by a bonus
    mean = n.mean()
    want = expected_tokens(a, K)
    if a in (0.0, 1.0):
        assert (n == (2 if K == 1 else 1) if a == 0.0 else n == K + 1).all()
        return
    se = n.std(ddof=1) / math.sqrt(len(n))
    if K == 1:                                   # R6: always 2 tokens (accept + bonus, or correction + bonus)
        assert (n == 2).all() and want == pytest.approx(2.0)
        return
    assert abs(mean - want) < 5 * se, f"mean {mean:.4f}, expected {want:.4f}, se {se:.4f}"
    # the paper-exact expectation is measurably lower whenever the bonus rule matters
    paper = (1 - a ** (K + 1)) / (1 - a)
    assert want - paper == pytest.approx(a ** (K - 1) * (1 - a))


@pytest.mark.parametrize("K", [2, 3])
def test_distribution_of_tokens_per_call(K):
    """R3 + R6: P(n = j+1) = a^j (1 - a) for j < K-1 and P(n = K+1) = a^(K-1) (false-fail ~1e-4)."""
    p, q = PAIRS["random_v8"]
    a = alpha_of(p, q)
    n = np.array([r["num_accepted"] for r in run_calls(p, q, K, N_CALLS, seed=30 + K)])
    probs = np.zeros(K + 2)
    for j in range(K - 1):
        probs[j + 1] = a ** j * (1 - a)
    probs[K + 1] = a ** (K - 1)
    assert probs.sum() == pytest.approx(1.0)
    counts = np.bincount(n, minlength=K + 2)
    assert counts[0] == 0 and counts[K] == 0
    keep = probs > 0
    expected = len(n) * probs[keep]
    stat = float(((counts[keep] - expected) ** 2 / expected).sum())
    df = int(keep.sum()) - 1
    assert stat < chi2_critical(df)


def test_generator_doubles_are_uniform():
    """Rng.random: 1,000,000 doubles in 100 equal bins (false-fail ~1e-4), mean 1/2 within 5 se."""
    x = Rng(2024).random(1_000_000)
    assert ((x >= 0) & (x < 1)).all()
    counts = np.bincount((x * 100).astype(int), minlength=100)
    assert_distributed_as(counts, np.full(100, 0.01))
    assert abs(x.mean() - 0.5) < 5 * math.sqrt(1 / 12 / len(x))


def test_jumped_streams_are_uncorrelated():
    """Rng.jump gives a stream whose draws are not correlated with the original (|r| < 5/sqrt(n))."""
    a = Rng(7)
    b = Rng(7).jump()
    x, y = a.random(200_000), b.random(200_000)
    r = np.corrcoef(x, y)[0, 1]
    assert abs(r) < 5 / math.sqrt(len(x))
