"""Batch benchmarks: ``specdec_fast.verify_batch`` against two peers and the DRAM floor.

Run from the project root (``PYTHONPATH=.`` when the package is built in place)::

    PYTHONPATH=. python -m pytest benchmarks/test_batch.py --benchmark-json=batch.json -q
    python benchmarks/report_batch.py batch.json

What is measured (every benchmark is ``benchmark.pedantic`` with explicit
rounds; the file runs in about a minute):

* ``test_peers_match_target_distribution`` (not timed, runs first): on one
  (p, q) pair with drafts sampled from q, the first emitted token of
  ``numpy_verify``, ``torch_verify`` and ``verify_batch`` is distributed as p
  (chi-square against a Wilson-Hilferty critical value, fixed seed), and the
  first draft is accepted with probability sum(min(p, q)).  So the peers are
  known correct before they are timed.
* ``test_dram_bandwidth``: ``np.add.reduce`` over a 1 GiB float64 array; the
  read bandwidth (array bytes / median time) is the floor's denominator.  The
  extra_info also holds the bandwidth ``np.maximum.reduce`` reaches (median of
  5, untimed by pytest-benchmark), for comparison.
* ``test_verify_large``: B=256, K=8, V=32000, float32 and float64, regimes
  ``matched`` and ``mismatched`` (see ``build_inputs``), implementations
  ``verify_batch`` with 1 and 2 threads, ``numpy`` and ``torch`` (skipped
  without torch).  Each round is one call on a *cold* cache: the untimed
  setup of every round reads 512 MiB of another array, so the probabilities
  come from DRAM as the floor assumes (the machine's L3 is 300 MiB, larger
  than the 65-131 MB one call reads).  ``verify_batch-warm`` times the same
  1-thread call without the flush, for comparison.  For ``verify_batch`` the
  extra_info holds ``bytes_read``, what the algorithm must read (below), and
  ``floor_ms`` = bytes_read / bandwidth.
* ``test_thread_scaling``: B=4096, K=8, V=1024 float64, every row reading the
  same sequence's rows (a stride-0 batch axis: the work stays in cache and is
  CPU-bound, as in a simulation),
  ``verify_batch`` with 1 and 2 threads, both regimes, with a seed and with
  one ``Rng`` per row (advanced by each call, so calls differ a little).  The 2-thread test
  also records 1- and 2-thread medians from alternated calls (robust to load
  that drifts between benchmarks), and ``test_thread_control`` times a
  GIL-free NumPy loop split the same way, to show how far this machine lets
  two threads scale during the run.

Bytes the algorithm must read, per row, from the result of one call: an
accepted draft costs its two probabilities p_i(t_i), q_i(t_i); a rejection
at position i reads p_i and q_i whole (2 V elements: the residual needs its
normaliser); when every draft passes, the bonus reads target row K up to the
emitted token (index + 1 elements).  ``verify_batch`` is timed with a fixed
integer seed, so every timed call does exactly the work counted.

Inputs (fixed seed, built once per module): targets are Zipf-like,
``p[perm[r]] = w_r ~ 1 / (r + 1) ** 1.1`` with a fresh random permutation per
row; ``matched`` drafts ``q = 0.9 p + 0.1 w[perm']`` (another permutation),
``mismatched`` drafts ``q[perm] = w[::-1]`` (the Zipf weights in reverse rank
order, so q is large where p is small); draft tokens are sampled from q.
Matched: about 0.9 accepted per position, about half the rows accept all 8;
mismatched: the first draft is rejected in over 90 % of rows.

The machine may be shared: the report quotes medians, and the JSON records the
load average (from ``conftest.py``).
"""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from specdec_fast import Rng, verify_batch

from peers import HAVE_TORCH, numpy_verify, torch_verify

if HAVE_TORCH:
    import torch

SEED = 20250607
ZIPF_EXPONENT = 1.1
REGIMES = ("matched", "mismatched")
DTYPES = ("float32", "float64")
B, K, V = 256, 8, 32000
SCALE_B, SCALE_V = 4096, 1024
VERIFY_SEED = 12345           # fixed: every timed call does the same work
BANDWIDTH_WORDS = 1 << 27     # 1 GiB of float64
FLUSH_WORDS = 1 << 26         # 512 MiB read before every cold round
ROUNDS = {"verify_batch": 25, "verify_batch-warm": 25, "numpy": 7, "torch": 5}
IMPLEMENTATIONS = ("verify_batch", "verify_batch-warm", "numpy", "torch")
THREADS = {"verify_batch": (1, 2), "verify_batch-warm": (1,), "numpy": (1,), "torch": (None,)}


# ----------------------------------------------------------------------------- inputs

def zipf_weights(n):
    w = 1.0 / (np.arange(n, dtype=np.float64) + 1.0) ** ZIPF_EXPONENT
    return w / w.sum()


def sample_tokens(q, gen):
    """(B, K) tokens, token [b, i] drawn from q[b, i] (inverse CDF)."""
    nb, nk, nv = q.shape
    u = gen.random((nb, nk))
    tokens = np.empty((nb, nk), dtype=np.int64)
    for b in range(nb):
        c = np.cumsum(q[b], axis=1)
        t = [np.searchsorted(c[i], u[b, i] * c[i, -1], side="right") for i in range(nk)]
        tokens[b] = np.minimum(t, nv - 1)
    return tokens


def build_inputs(nb, nk, nv, seed):
    """float64 target (nb, nk+1, nv) and, per regime, (draft, tokens)."""
    gen = np.random.default_rng(seed)
    w = zipf_weights(nv)
    w_rev = w[::-1].copy()
    w_other = 0.1 * w
    target = np.empty((nb, nk + 1, nv))
    matched = np.empty((nb, nk, nv))
    mismatched = np.empty((nb, nk, nv))
    for b in range(nb):
        for i in range(nk + 1):
            perm = gen.permutation(nv)
            target[b, i, perm] = w
            if i < nk:
                mismatched[b, i, perm] = w_rev
                row = matched[b, i]
                np.multiply(target[b, i], 0.9, out=row)
                row[gen.permutation(nv)] += w_other
    return target, {"matched": (matched, sample_tokens(matched, gen)),
                    "mismatched": (mismatched, sample_tokens(mismatched, gen))}


@pytest.fixture(scope="module")
def large_inputs():
    """{(dtype, regime): (draft, target, tokens)} at B=256, K=8, V=32000.

    float64: target 590 MB + two drafts 524 MB each; float32 half of that.
    The float32 arrays are the float64 values rounded; tokens are shared.
    """
    target, drafts = build_inputs(B, K, V, [SEED, V])
    cases = {}
    target32 = target.astype(np.float32)
    for regime in REGIMES:
        draft, tokens = drafts[regime]
        cases[("float64", regime)] = (draft, target, tokens)
        cases[("float32", regime)] = (draft.astype(np.float32), target32, tokens)
    yield cases
    cases.clear()


@pytest.fixture(scope="module")
def scaling_inputs():
    """One sequence's rows shared by all SCALE_B rows (a stride-0 batch axis, so the
    work stays in cache and is CPU-bound); each row draws its own draft tokens."""
    gen = np.random.default_rng([SEED, SCALE_V])
    target, drafts = build_inputs(1, K, SCALE_V, [SEED, SCALE_V])
    target = np.broadcast_to(target, (SCALE_B,) + target.shape[1:])
    cases = {}
    for regime, (draft, _) in drafts.items():
        draft = np.broadcast_to(draft, (SCALE_B,) + draft.shape[1:])
        cases[regime] = (draft, target, sample_tokens(draft, gen))
    yield cases


@pytest.fixture(scope="module")
def dram():
    """The 1 GiB array behind the bandwidth measurement and the cache flush."""
    arr = np.ones(BANDWIDTH_WORDS, dtype=np.float64)
    state = {"array": arr, "bandwidth": None}
    yield state
    state.clear()


def flusher(dram):
    part = dram["array"][:FLUSH_WORDS]

    def flush():
        np.add.reduce(part)
    return flush


# ----------------------------------------------------------------------------- helpers

def bytes_read(result, nk, nv, itemsize):
    """Bytes verify_batch must read to produce ``result`` (see the module docstring)."""
    n = result.num_accepted.astype(np.int64)
    rejected = n < nk
    elements = 2 * n + np.where(rejected, 2 * nv, 0)
    full = ~rejected
    if full.any():
        bonus = result.tokens[full, nk]
        elements[full] += bonus + 1
    return int(elements.sum()) * itemsize


def check_result(result, tokens, nb, nk):
    """The output format every implementation shares."""
    out, emitted, accepted = (np.asarray(a) for a in result)
    assert out.shape == (nb, nk + 1) and out.dtype == np.int64
    assert emitted.shape == accepted.shape == (nb,)
    assert np.array_equal(emitted, accepted + 1)
    assert ((accepted >= 0) & (accepted <= nk)).all()
    cols = np.arange(nk + 1)
    assert (out[cols > accepted[:, None]] == -1).all()
    keep = cols[:nk] < accepted[:, None]
    assert np.array_equal(out[:, :nk][keep], np.asarray(tokens)[keep])
    assert (out[np.arange(nb), accepted] >= 0).all()


def wilson_hilferty(df, z):
    """Upper chi-square quantile with df degrees of freedom at standard-normal z."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * np.sqrt(h)) ** 3


# ----------------------------------------------------------------------------- correctness first

STAT_N, STAT_K, STAT_V = 200_000, 2, 12
Z_CRIT = 3.719   # one-sided standard-normal quantile for alpha = 1e-4


def stat_inputs(dtype):
    gen = np.random.default_rng([SEED, 1])
    w = zipf_weights(STAT_V)
    p = w[gen.permutation(STAT_V)]
    q = w[np.argsort(np.argsort(p))] + 0.02   # large where p is small
    q[np.argsort(p)[-2:]] = 0.0                      # and zero on p's two largest
    q /= q.sum()
    target = np.ascontiguousarray(np.broadcast_to(p, (STAT_N, STAT_K + 1, STAT_V)), dtype=dtype)
    draft = np.ascontiguousarray(np.broadcast_to(q, (STAT_N, STAT_K, STAT_V)), dtype=dtype)
    c = np.cumsum(q)
    tokens = np.minimum(np.searchsorted(c, gen.random((STAT_N, STAT_K)) * c[-1], side="right"),
                        STAT_V - 1).astype(np.int64)
    return p, q, draft, target, tokens


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ("numpy", "torch", "verify_batch"))
def test_peers_match_target_distribution(impl, dtype):
    """First emitted token ~ p; first draft accepted with probability sum(min(p, q))."""
    if impl == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    p, q, draft, target, tokens = stat_inputs(np.dtype(dtype))
    if impl == "numpy":
        result = numpy_verify(draft, target, tokens, np.random.default_rng([SEED, 2]))
    elif impl == "torch":
        result = torch_verify(draft, target, tokens, torch.Generator().manual_seed(SEED))
    else:
        result = verify_batch(draft, target, tokens, rng=SEED)
    check_result(result, tokens, STAT_N, STAT_K)
    first = np.asarray(result.tokens)[:, 0]
    counts = np.bincount(first, minlength=STAT_V)
    expected = STAT_N * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    critical = wilson_hilferty(STAT_V - 1, Z_CRIT)
    assert chi2 < critical, (impl, dtype, chi2, critical, counts, expected)
    rate = np.minimum(p, q).sum()
    accepted0 = float((np.asarray(result.num_accepted) > 0).mean())
    z = (accepted0 - rate) / np.sqrt(rate * (1 - rate) / STAT_N)
    assert abs(z) < 5, (impl, dtype, accepted0, rate)


# ----------------------------------------------------------------------------- floor

def test_dram_bandwidth(benchmark, dram):
    arr = dram["array"]
    benchmark.group = "dram"
    benchmark.pedantic(np.add.reduce, args=(arr,), rounds=7, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    dram["bandwidth"] = arr.nbytes / median
    # For comparison only (not the floor): np.maximum.reduce is SIMD-vectorised
    # where add.reduce's pairwise sum is not, so it shows how far one core's
    # reads can go beyond what add.reduce reaches.
    times = []
    for _ in range(5):
        start = time.perf_counter()
        np.maximum.reduce(arr)
        times.append(time.perf_counter() - start)
    benchmark.extra_info.update(
        impl="np.add.reduce", dtype="float64", array_bytes=int(arr.nbytes),
        bandwidth_bytes_per_s=dram["bandwidth"], bandwidth_GBps=dram["bandwidth"] / 1e9,
        max_reduce_bandwidth_bytes_per_s=arr.nbytes / float(np.median(times)))


# ----------------------------------------------------------------------------- B=256, V=32000

def large_params():
    for dtype in DTYPES:
        for regime in REGIMES:
            for impl in IMPLEMENTATIONS:
                for threads in THREADS[impl]:
                    tid = f"{dtype}-{regime}-{impl}" + (f"-{threads}t" if threads else "")
                    yield pytest.param(dtype, regime, impl, threads, id=tid)


@pytest.mark.parametrize("dtype, regime, impl, threads", list(large_params()))
def test_verify_large(benchmark, large_inputs, dram, dtype, regime, impl, threads):
    draft, target, tokens = large_inputs[(dtype, regime)]
    benchmark.group = f"{dtype} {regime}"
    info = dict(impl=impl, dtype=dtype, regime=regime, threads=threads, B=B, K=K, V=V,
                cache="warm" if impl == "verify_batch-warm" else "cold")
    if impl.startswith("verify_batch"):
        def fn():
            return verify_batch(draft, target, tokens, rng=VERIFY_SEED, num_threads=threads)
    elif impl == "numpy":
        gen = np.random.default_rng([SEED, 3])

        def fn():
            return numpy_verify(draft, target, tokens, gen)
    else:
        if not HAVE_TORCH:
            pytest.skip("torch is not installed")
        generator = torch.Generator().manual_seed(SEED)
        info["threads"] = torch.get_num_threads()

        def fn():
            return torch_verify(draft, target, tokens, generator)

    result = fn()                  # untimed: check the format and count the bytes
    check_result(result, tokens, B, K)
    info["mean_accepted"] = float(np.mean(result.num_accepted))
    info["all_accepted_fraction"] = float(np.mean(np.asarray(result.num_accepted) == K))
    if impl.startswith("verify_batch"):
        info["bytes_read"] = bytes_read(result, K, V, target.itemsize)
        if dram.get("bandwidth"):
            info["bandwidth_bytes_per_s"] = dram["bandwidth"]
            info["floor_ms"] = info["bytes_read"] / dram["bandwidth"] * 1e3
    benchmark.extra_info.update(info)
    setup = None if impl == "verify_batch-warm" else flusher(dram)
    benchmark.pedantic(fn, setup=setup, rounds=ROUNDS[impl], iterations=1, warmup_rounds=1)


# ----------------------------------------------------------------------------- threads

def interleaved_medians(calls, repeats=21):
    """Median seconds of each callable, calling them in turn ``repeats`` times.

    Alternating the calls exposes them to the same background load, which on a
    shared machine drifts between consecutive benchmarks.
    """
    times = [[] for _ in calls]
    for _ in range(repeats):
        for fn, acc in zip(calls, times):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


@pytest.mark.parametrize("source", ("seed", "generators"))
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("threads", (1, 2))
def test_thread_scaling(benchmark, scaling_inputs, regime, threads, source):
    draft, target, tokens = scaling_inputs[regime]
    benchmark.group = f"scaling float64 {regime} {source}"
    # "generators": one Rng per row (per-request generators), advanced by every call.
    rng = VERIFY_SEED if source == "seed" else [Rng(VERIFY_SEED + b) for b in range(SCALE_B)]

    def call(n):
        return verify_batch(draft, target, tokens, rng=rng, num_threads=n)

    result = call(threads)
    check_result(result, tokens, SCALE_B, K)
    info = dict(impl="verify_batch", dtype="float64", regime=regime, threads=threads, B=SCALE_B,
                K=K, V=SCALE_V, cache="warm", mean_accepted=float(np.mean(result.num_accepted)),
                bytes_read=bytes_read(result, K, SCALE_V, target.itemsize), source=source)
    if threads == 2:
        one, two = interleaved_medians([lambda: call(1), lambda: call(2)])
        info.update(interleaved_1t_ms=one * 1e3, interleaved_2t_ms=two * 1e3)
    benchmark.extra_info.update(info)
    benchmark.pedantic(call, args=(threads,), rounds=20, iterations=3, warmup_rounds=2)


CONTROL_WORDS, CONTROL_REPEATS = 1 << 15, 48


@pytest.mark.parametrize("threads", (1, 2))
def test_thread_control(benchmark, threads):
    """A GIL-free NumPy loop (np.sin on an in-cache array) split like verify_batch
    splits rows (a ThreadPoolExecutor per call): how far the machine lets two
    threads scale during this run.  Not a target; context for the one above."""
    x = np.linspace(0.0, 1.0, CONTROL_WORDS)
    benchmark.group = "scaling control"

    def part(count):
        for _ in range(count):
            np.sin(x)

    def call(n):
        if n == 1:
            part(CONTROL_REPEATS)
        else:
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(part, [CONTROL_REPEATS // n] * n))

    info = dict(impl="np.sin control", threads=threads, words=CONTROL_WORDS,
                repeats=CONTROL_REPEATS)
    if threads == 2:
        one, two = interleaved_medians([lambda: call(1), lambda: call(2)])
        info.update(interleaved_1t_ms=one * 1e3, interleaved_2t_ms=two * 1e3)
    benchmark.extra_info.update(info)
    benchmark.pedantic(call, args=(threads,), rounds=20, iterations=3, warmup_rounds=2)
