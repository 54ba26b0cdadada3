"""``specdec_fast.simulate``: the Monte Carlo kernel against the closed forms.

Seeds are fixed, so every run of this file draws the same numbers and either
always passes or always fails.  The statistical comparisons use the
simulation's own intervals at ``CONFIDENCE = 1 - 1e-6`` (about 4.9 standard
errors).  Were the seeds drawn at random, a comparison would fail by chance
with probability near 1e-6 where a count is large, and more often where the
expected count is only a few, because the Wilson intervals of frequencies
cover less than their level there: the worst here, the frequency of 9 tokens
at alpha = 0.3, K = 8 (expected count about 10 in 150,000 trials), fails with
probability 1.4e-5 (an exact binomial sum).  The file (a few hundred
comparisons) would fail with probability below 1e-3.
"""
import threading
import time

import numpy as np
import pytest

from specdec_fast import theory
from specdec_fast._rng import Rng
from specdec_fast._simulate import alias_tables, chunk_states
from specdec_fast.simulate import CHUNK_TRIALS, SimulationResult, _mean_interval, _tables, simulate
from specdec_fast.synthetic import zipf_rows
from specdec_fast.theory import _normalised

CONFIDENCE = 1 - 1e-6
Z = 4.8916                          # the normal quantile of 1 - 1e-6 / 2


def inside(value, ci):
    return ci[0] <= value <= ci[1]


def check_against_theory(r):
    """Closed forms inside the simulation's intervals: mean, frequencies, acceptance."""
    assert inside(r.expected_tokens, r.mean_tokens_ci), (r.mean_tokens, r.mean_tokens_ci,
                                                         r.expected_tokens)
    for n in range(r.k + 2):
        assert inside(r.expected_frequencies[n], r.frequencies_ci[n]), n
    for i in range(r.k):
        assert inside(r.alpha[i], r.acceptance_ci[i]), i


@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("alpha", [0.3, 0.7, 0.95])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_closed_form_inside_confidence_interval(semantics, alpha, k):
    draft, target = zipf_rows(200, [alpha] * k, rng=k)
    r = simulate(draft, target, trials=150_000, rng=1000 * k + int(alpha * 100),
                 semantics=semantics, confidence=CONFIDENCE)
    assert isinstance(r, SimulationResult)
    assert r.trials == 150_000 and not r.interrupted
    np.testing.assert_allclose(r.alpha, alpha, atol=1e-12)
    assert r.expected_tokens == pytest.approx(theory.expected_tokens(alpha, k,
                                                                     semantics=semantics))
    check_against_theory(r)


def test_reference_exceeds_exact_by_r6_term():
    alpha, k = 0.6, 4
    draft, target = zipf_rows(100, [alpha] * k, rng=5)
    exact = simulate(draft, target, trials=400_000, rng=11, semantics="exact")
    ref = simulate(draft, target, trials=400_000, rng=12, semantics="reference")
    excess = alpha ** (k - 1) * (1 - alpha)
    assert ref.expected_tokens - exact.expected_tokens == pytest.approx(excess, abs=1e-12)
    # The difference of two independent means: its standard error from both intervals.
    se = np.hypot(*(np.diff(x.mean_tokens_ci)[0] / (2 * 1.95996) for x in (exact, ref)))
    assert abs((ref.mean_tokens - exact.mean_tokens) - excess) < Z * se
    # R6: a reference step never emits exactly K tokens.
    assert ref.histogram[k] == 0 and exact.histogram[k] > 0


def test_per_position_alphas_and_no_bonus_row():
    alphas = [0.9, 0.5, 0.75, 0.3]
    draft, target = zipf_rows(300, alphas, rng=9)
    for semantics in ("exact", "reference"):
        r = simulate(draft, target, trials=200_000, rng=3, semantics=semantics,
                     confidence=CONFIDENCE)
        np.testing.assert_allclose(r.alpha, alphas, atol=1e-12)
        check_against_theory(r)
        nb = simulate(draft, target[:4], trials=200_000, rng=4, semantics=semantics,
                      confidence=CONFIDENCE)
        assert not nb.bonus
        assert nb.expected_tokens == pytest.approx(theory.expected_tokens(alphas, bonus=False))
        assert nb.histogram[5] == 0
        check_against_theory(nb)


def test_counts_are_consistent():
    draft, target = zipf_rows(50, [0.8, 0.6, 0.9], rng=2)
    r = simulate(draft, target, trials=100_000, rng=8)
    assert r.histogram.sum() == r.trials == r.accepted_histogram.sum()
    assert r.reached[0] == r.trials
    np.testing.assert_array_equal(r.accepted[:-1], r.reached[1:])
    # Exact semantics with a bonus row: N = A + 1.
    np.testing.assert_array_equal(r.histogram[1:], r.accepted_histogram)
    assert r.histogram[0] == 0
    assert r.mean_tokens == pytest.approx(r.histogram @ np.arange(5) / r.trials)
    np.testing.assert_allclose(r.acceptance, r.accepted / r.reached)
    lo, hi = r.speedup(0.1)[1]
    assert lo < r.speedup(0.1)[0] < hi
    assert r.expected_speedup(0.1) == pytest.approx(theory.speedup(r.alpha, None, 0.1))
    assert "closed form" in str(r)


def test_independent_of_threads_and_reproducible():
    draft, target = zipf_rows(64, [0.7, 0.8], rng=1)
    trials = 3 * CHUNK_TRIALS + 1234        # several chunks and a partial one
    runs = [simulate(draft, target, trials=trials, rng=42, num_threads=n, count_tokens=True)
            for n in (1, 2, 3)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.histogram, runs[0].histogram)
        np.testing.assert_array_equal(r.accepted_histogram, runs[0].accepted_histogram)
        np.testing.assert_array_equal(r.token_counts, runs[0].token_counts)
    other = simulate(draft, target, trials=trials, rng=43, num_threads=2)
    assert not np.array_equal(other.histogram, runs[0].histogram)
    # An Rng is advanced by one output per scenario, so two calls draw fresh streams.
    g = Rng(42)
    first = simulate(draft, target, trials=trials, rng=g)
    np.testing.assert_array_equal(first.histogram, runs[0].histogram)
    h = Rng(42)
    h.next_uint64()
    assert g.state == h.state
    second = simulate(draft, target, trials=trials, rng=g)
    assert not np.array_equal(second.histogram, first.histogram)


def test_batch_of_scenarios():
    d1, t1 = zipf_rows(80, [0.5] * 3, rng=1)
    d2, t2 = zipf_rows(80, [0.95, 0.9, 0.85], rng=2)
    r = simulate(np.stack([d1, d2]), np.stack([t1, t2]), trials=100_000, rng=6,
                 confidence=CONFIDENCE, num_threads=2)
    assert r.histogram.shape == (2, 5)
    assert r.mean_tokens.shape == (2,) and r.mean_tokens_ci.shape == (2, 2)
    assert r.acceptance_ci.shape == (2, 3, 2)
    np.testing.assert_array_equal(r.trials, [100_000, 100_000])
    np.testing.assert_allclose(r.alpha, [[0.5] * 3, [0.95, 0.9, 0.85]], atol=1e-12)
    for s in range(2):
        assert inside(r.expected_tokens[s], r.mean_tokens_ci[s])
    sp, ci = r.speedup(0.05)
    assert sp.shape == (2,) and ci.shape == (2, 2)


def test_first_k_rows_and_k_zero():
    draft, target = zipf_rows(40, [0.9, 0.2, 0.5, 0.5], rng=3)
    # k = 2: rows 0, 1 verify, target row 2 is the bonus row.
    r = simulate(draft, target, 2, trials=50_000, rng=1, confidence=CONFIDENCE)
    assert r.k == 2 and r.bonus
    np.testing.assert_allclose(r.alpha, [0.9, 0.2], atol=1e-12)
    check_against_theory(r)
    z = simulate(draft, target, 0, trials=1000, rng=1)
    assert z.k == 0 and z.mean_tokens == 1.0 and z.histogram.tolist() == [0, 1000]
    z = simulate(draft, target[:0], 0, trials=1000, rng=1)
    assert not z.bonus and z.mean_tokens == 0.0 and z.expected_tokens == 0.0


def test_identical_rows_and_intervals_at_the_boundaries():
    """A draft equal to its target (rows whose sum rounds above 1): alpha is 1, every
    draft passes, and the Wilson intervals reach exactly 1 for the certain counts and
    exactly 0 for the impossible ones."""
    row = np.array([14.0, 16.0, 4.0, 13.0, 11.0, 16.0, 14.0])
    assert (row / row.sum()).sum() > 1.0
    rows = np.tile(row, (3, 1))
    r = simulate(rows[:2], rows, 2, trials=2000, rng=5)
    assert r.alpha.tolist() == [1.0, 1.0] and r.expected_tokens == 3.0
    assert r.histogram.tolist() == [0, 0, 0, 2000] and r.mean_tokens == 3.0
    assert (r.acceptance_ci[:, 1] == 1.0).all()
    assert (r.frequencies_ci[:3, 0] == 0.0).all() and r.frequencies_ci[3, 1] == 1.0
    assert (r.frequencies_ci[:3, 1] > 0.0).all() and r.frequencies_ci[3, 0] < 1.0


def test_emitted_tokens_follow_the_target():
    """Speculative sampling's guarantee: the token at output slot i is distributed as p_i."""
    draft, target = zipf_rows(12, [0.5, 0.8, 0.4], exponent=0.8, rng=4)
    draft[1, 0] = 0.0                                 # a zero-probability draft token
    draft[1] /= draft[1].sum()
    r = simulate(draft, target, trials=300_000, rng=21, count_tokens=True)
    for semantics_run in (r, simulate(draft, target, trials=300_000, rng=22,
                                      count_tokens=True, semantics="reference")):
        counts = semantics_run.token_counts
        assert counts.shape == (4, 12)
        for i in range(4):
            n = counts[i].sum()
            f = counts[i] / n
            p = target[i] / target[i].sum()
            sd = np.sqrt(p * (1 - p) / n)
            assert (np.abs(f - p) <= Z * sd + 1e-12).all(), (i, f, p)
        assert counts[0].sum() == semantics_run.trials


def test_unnormalised_and_float32_inputs():
    draft, target = zipf_rows(30, [0.7, 0.7], rng=5)
    r = simulate((draft * 3).astype(np.float32), (target * 0.5).astype(np.float32),
                 trials=100_000, rng=2, confidence=CONFIDENCE)
    np.testing.assert_allclose(r.alpha, 0.7, atol=1e-6)
    check_against_theory(r)


def test_rows_whose_sum_overflows_are_normalised():
    """A row of 1e308s sums to inf; normalised it is uniform, as a row of 0.25s is."""
    q = np.array([[0.7, 0.1, 0.1, 0.1]])
    huge = simulate(q, np.array([[1e308] * 4, [0.25] * 4]), trials=100_000, rng=0)
    plain = simulate(q, np.array([[0.25] * 4, [0.25] * 4]), trials=100_000, rng=0)
    assert huge.alpha[0] == pytest.approx(0.55)
    assert huge.expected_tokens == pytest.approx(1.55)
    np.testing.assert_array_equal(huge.histogram, plain.histogram)
    # Ordinary rows beside an overflowing one are divided by their plain sums, as before.
    x = np.array([[[1e308, 1.7e308, 0.0, 3e300], [0.1, 0.7, 0.3, 0.2]]])
    out = _normalised(x, "x")
    np.testing.assert_allclose(out[0, 0], np.array([1.0, 1.7, 0.0, 3e-8]) / 2.70000003,
                               rtol=1e-14)
    assert out[0, 1].tolist() == (x[0, 1] / x[0, 1].sum()).tolist()
    assert np.isfinite(out).all() and out.sum(axis=-1) == pytest.approx(1.0)


def test_zero_draft_mass_never_drafted():
    # q puts no mass on token 1, p does: the draft never proposes it, and only
    # the correction can emit it.
    q = np.array([[0.5, 0.0, 0.5]])
    p = np.array([[0.2, 0.6, 0.2], [1.0, 0.0, 0.0]])
    r = simulate(q, p, trials=100_000, rng=3, count_tokens=True, confidence=CONFIDENCE)
    assert r.alpha[0] == pytest.approx(0.4)
    check_against_theory(r)
    assert r.token_counts[1, 1:].sum() == 0           # the bonus row is one-hot


@pytest.mark.parametrize("reference", [False, True])
def test_empty_residual_corrects_uniformly(reference):
    """R4 as the verify kernel runs it: an all-zero residual gives uniform corrections.

    ``simulate`` normalises its rows, so ``p <= q`` everywhere means ``p == q``
    and a rejection only by rounding; the tables it builds take unnormalised
    rows, where ``p <= q`` still rejects with probability ``1 - sum(p) = 0.6``.
    """
    p = np.array([[[0.1, 0.2, 0.1]]])
    q = np.array([[[0.5, 0.3, 0.2]]])
    n = 300_000
    accepted, emitted = np.zeros(2, np.int64), np.zeros(3, np.int64)
    counts = np.zeros((2, 3), np.int64)
    _tables(p, q, 1, False, reference).run(0, chunk_states([5], 1)[0, 0], n, accepted, emitted,
                                           counts)
    assert accepted.sum() == n and abs(accepted[1] / n - 0.4) < Z * np.sqrt(0.24 / n)
    # Accepted drafts follow p (0.1, 0.2, 0.1); the rejections (0.6) spread 0.2 on each token.
    want = np.array([0.3, 0.4, 0.3])
    f = counts[0] / n
    assert (np.abs(f - want) <= Z * np.sqrt(want * (1 - want) / n)).all(), f


def test_alias_tables_reproduce_the_weights():
    g = np.random.default_rng(0)
    w = g.random((5, 257)) * (g.random((5, 257)) < 0.6)
    w[0] = 0.0
    w[0, 17] = 2.5                                    # a single token
    prob, alias = alias_tables(w)
    V = w.shape[1]
    for row in range(5):
        mass = prob[row].copy()
        np.add.at(mass, alias[row], 1.0 - prob[row])
        np.testing.assert_allclose(mass / V, w[row] / w[row].sum(), atol=1e-13)
        zero = w[row] == 0
        assert (prob[row][zero] == 0).all()           # column never keeps a zero-weight token
        assert (w[row][alias[row][prob[row] < 1]] > 0).all()
    with pytest.raises(ValueError):
        alias_tables(np.zeros((1, 4)))


def test_progress_object_and_bar(capsys):
    draft, target = zipf_rows(20, [0.5], rng=1)

    class Counter:
        total = 0

        def update(self, n):
            self.total += n

    c = Counter()
    simulate(np.stack([draft] * 2), np.stack([target] * 2), trials=2 * CHUNK_TRIALS + 5,
             rng=1, progress=c)
    assert c.total == 2 * (2 * CHUNK_TRIALS + 5)
    simulate(draft, target, trials=1000, rng=1, progress=True)
    simulate(draft, target, trials=1000, rng=1, progress=np.True_)
    assert "simulate" in capsys.readouterr().err                  # the tqdm bar
    r = simulate(draft, target, trials=1000, rng=1, progress=np.False_, count_tokens=np.True_)
    assert r.token_counts.sum() == r.histogram @ np.arange(3)
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError):
        simulate(draft, target, trials=10, progress="yes")


def test_keyboard_interrupt_returns_what_finished(ctrl_c_after):
    draft, target = zipf_rows(100, [0.8] * 8, rng=1)
    ctrl_c_after(1.0)
    start = time.perf_counter()
    r = simulate(draft, target, trials=10**9, rng=1, num_threads=2)
    assert time.perf_counter() - start < 30
    assert r.interrupted
    assert 0 < r.trials < 10**9
    assert r.trials % CHUNK_TRIALS == 0              # whole chunks only
    assert r.histogram.sum() == r.trials == r.reached[0]
    assert abs(r.mean_tokens - r.expected_tokens) < 0.05


def test_keyboard_interrupt_while_threads_start_stops_them(monkeypatch):
    """A Ctrl-C that lands while the workers are being started (here: as the second
    starts) stops the one already running; none is left running after the call."""
    draft, target = zipf_rows(100, [0.8] * 8, rng=1)
    start_thread = threading.Thread.start

    def start(thread):
        if thread.name == "specdec-simulate-1":
            raise KeyboardInterrupt
        start_thread(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    began = time.perf_counter()
    r = simulate(draft, target, trials=10**9, rng=1, num_threads=2)
    assert time.perf_counter() - began < 30
    assert r.interrupted and r.trials < 10**9
    assert not [t for t in threading.enumerate() if t.name.startswith("specdec-simulate")]


def test_error_in_progress_update_stops_the_workers():
    """An exception raised on the calling thread (here by progress.update) stops and
    joins the workers instead of leaving them to run all the trials."""
    draft, target = zipf_rows(100, [0.8] * 8, rng=1)

    class Failing:
        def update(self, n):
            raise RuntimeError("bar")

    began = time.perf_counter()
    with pytest.raises(RuntimeError, match="bar"):
        simulate(draft, target, trials=10**9, rng=0, progress=Failing(), num_threads=2)
    assert time.perf_counter() - began < 30

    def alive():
        return [t for t in threading.enumerate() if t.name.startswith("specdec-simulate")]

    deadline = time.perf_counter() + 5.0
    while alive() and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert not alive()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(semantics="paper"), ValueError, "semantics"),
    (dict(trials=0), ValueError, "trials"),
    (dict(trials=1.5), TypeError, "trials"),
    (dict(rng="x"), TypeError, "rng"),
    (dict(num_threads=0), ValueError, "num_threads"),
    (dict(confidence=1.0), ValueError, "confidence"),
    (dict(confidence=0.0), ValueError, "confidence"),
    (dict(confidence="high"), TypeError, "confidence"),
    (dict(trials=True), TypeError, "trials"),
    (dict(k=-1), ValueError, "k must be at least 0"),
    (dict(k=5), ValueError, "exceeds"),
    (dict(count_tokens="False"), TypeError, "count_tokens must be a bool"),
    (dict(count_tokens=1), TypeError, "count_tokens must be a bool"),
    (dict(progress=1), TypeError, "progress must be a bool"),
])
def test_bad_arguments(kwargs, error, match):
    draft, target = zipf_rows(10, [0.5, 0.5], rng=1)
    kwargs.setdefault("trials", 10)
    with pytest.raises(error, match=match):
        simulate(draft, target, **kwargs)


def test_bad_arrays():
    draft, target = zipf_rows(10, [0.5, 0.5], rng=1)
    with pytest.raises(ValueError, match="2-D or both 3-D"):
        simulate(draft[None], target, trials=10)
    with pytest.raises(ValueError, match="does not match"):
        simulate(draft, target[:, :9], trials=10)
    with pytest.raises(ValueError, match="at least k"):
        simulate(draft, target[:1], trials=10)
    bad = target.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="finite and non-negative"):
        simulate(draft, bad, trials=10)
    bad = draft.copy()
    bad[0, 2] = -0.1
    with pytest.raises(ValueError, match="finite and non-negative"):
        simulate(bad, target, trials=10)
    bad = draft.copy()
    bad[1] = 0.0
    with pytest.raises(ValueError, match="sums to 0"):
        simulate(bad, target, trials=10)
    with pytest.raises(TypeError):
        simulate(None, target, trials=10)
    with pytest.raises(ValueError):
        simulate(draft[0], target[0], trials=10)


@pytest.mark.parametrize("draft, target, match", [
    ([[0.5, 0.5], [0.5]], [[0.5, 0.5]] * 3,
     r"draft_probs must be a rectangular .*: draft_probs\[1\] has 1 entry where "
     r"draft_probs\[0\] has 2 entries"),
    ([[0.5, 0.5]] * 2, [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0, 0.0]],
     r"target_probs must be .*: target_probs\[2\] has 3 entries where target_probs\[0\] has 2"),
    ([[0.5, 0.5]] * 2, [[0.5, 0.5], 0.3, [1.0, 0.0]],
     r"target_probs\[1\] is a scalar where target_probs\[0\] has 2 entries"),
    ([[[0.5, 0.5]], [[0.2, 0.3, 0.5]]], [[[0.5, 0.5]] * 2] * 2,
     r"draft_probs\[1\]\[0\] has 3 entries where draft_probs\[0\]\[0\] has 2 entries"),
    ([np.ones((2, 2)), np.ones((3, 2))], [[0.5, 0.5]] * 3,
     r"draft_probs\[1\] has 3 entries where draft_probs\[0\] has 2 entries"),
])
def test_ragged_lists_name_the_argument_and_the_row(draft, target, match):
    with pytest.raises(ValueError, match=match):
        simulate(draft, target, trials=10, rng=0)


@pytest.mark.parametrize("seed", [-1, 2**64, np.int64(-5)])
def test_seed_out_of_range_names_rng(seed):
    draft, target = zipf_rows(10, [0.5, 0.5], rng=1)
    with pytest.raises(ValueError, match=r"^rng: seed must be in \[0, 2\*\*64\), got "
                       + str(int(seed)) + "$"):
        simulate(draft, target, trials=10, rng=seed)


def test_confidence_a_rounding_step_below_one():
    """confidence = 1 - 2**-53 lies in (0, 1): its intervals are wider than at 1 - 1e-6
    (0.5 + confidence / 2 rounds to 1 there, where the normal quantile is infinite)."""
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = np.array([[0.3, 0.3, 0.4]])
    edge = simulate(q, p, trials=1000, rng=3, confidence=1 - 2**-53)
    usual = simulate(q, p, trials=1000, rng=3, confidence=1 - 1e-6)
    assert edge.mean_tokens == usual.mean_tokens
    lo, hi = edge.mean_tokens_ci
    assert np.isfinite(lo) and np.isfinite(hi)
    assert lo < usual.mean_tokens_ci[0] and hi > usual.mean_tokens_ci[1]


Z95 = 1.959963984540054


def mean_interval_coverage(semantics, bonus, k, alpha, trials, replicates=4000, seed=0):
    """Coverage of ``_mean_interval`` at level 0.95, and its median width over the
    normal interval's, on histograms drawn from the closed-form law of tokens per step."""
    p = theory.emitted_distribution(np.full((1, k), alpha), semantics=semantics, bonus=bonus)
    counts = np.arange(k + 2, dtype=np.float64)
    truth = float(p[0] @ counts)
    hist = np.random.default_rng(seed).multinomial(trials, p[0], size=replicates)
    mean, ci = _mean_interval(hist, counts, np.repeat(p > 0, replicates, axis=0), Z95)
    var = (hist * (counts - mean[:, None]) ** 2).sum(axis=-1) / (trials - 1)
    normal = 2 * Z95 * np.sqrt(var / trials)
    covered = np.mean((ci[:, 0] <= truth) & (truth <= ci[:, 1]))
    return covered, np.median(np.diff(ci, axis=-1)[:, 0] / np.maximum(normal, 1e-300))


@pytest.mark.parametrize("semantics, bonus, k, alpha, trials", [
    ("exact", True, 8, 0.9999, 2000),       # the normal interval covered 71% here
    ("exact", True, 1, 0.999, 100),         # 10%: no step rejects in most samples
    ("reference", True, 16, 0.999, 300),
    ("exact", False, 4, 0.99, 100),
    ("exact", True, 32, 0.3, 2000),         # far from the top of the range
])
def test_mean_interval_covers_where_steps_seldom_fall_short(semantics, bonus, k, alpha, trials):
    """Where rejections are rare the normal interval covers far less than 95% (zero
    width when no step rejected); the widened one covers at least its level.  Seeded:
    at these points its coverage was 0.95-1.0 over 1,008 (semantics, bonus, K, alpha,
    trials) points; with 4,000 replicates the estimate's standard error is at most
    0.0035, so 0.935 would fail by chance with probability below 1e-5 per point."""
    covered, _ = mean_interval_coverage(semantics, bonus, k, alpha, trials)
    assert covered >= 0.935


@pytest.mark.parametrize("k, alpha", [(4, 0.8), (8, 0.6), (16, 0.9)])
def test_mean_interval_is_the_normal_one_where_rejections_are_common(k, alpha):
    covered, width = mean_interval_coverage("exact", True, k, alpha, 1_000_000, replicates=500)
    assert width == pytest.approx(1.0, abs=0.01)
    assert covered >= 0.9


def test_no_rejection_in_the_sample_gives_an_interval_around_the_truth():
    """alpha = 0.9999, K = 8, 2,000 steps, all accepted: the normal interval was
    [9, 9], which excludes the closed form 8.9964; a deterministic count (K = 1 under
    R6 always emits 2 tokens) keeps a zero-width interval."""
    draft, target = zipf_rows(30, [0.9999] * 8, rng=1)
    r = simulate(draft, target, trials=2000, rng=2)
    assert r.histogram[9] == 2000 and r.mean_tokens == 9.0
    assert r.mean_tokens_ci[0] < r.expected_tokens < r.mean_tokens_ci[1]
    draft, target = zipf_rows(30, [0.6], rng=1)
    r = simulate(draft, target, trials=2000, rng=0, semantics="reference")
    assert r.mean_tokens == 2.0 and tuple(r.mean_tokens_ci) == (2.0, 2.0)
