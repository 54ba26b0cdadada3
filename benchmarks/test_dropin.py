"""Drop-in benchmarks: the compiled ``speculative_decode_sim`` against the reference.

Grid: K in {4, 8} x V in {64, 1024, 32000, 128256} x regime in {matched,
mismatched} (see conftest.py for how the inputs are built), three
implementations per point:

``reference``   ``specdec_fast.reference.speculative_decode_sim`` on lists,
                ``random.seed`` fixed before timing;
``fast-list``   the compiled function on the same lists, ``rng=Rng(seed)``;
``fast-numpy``  the compiled function on float64 C-contiguous arrays of the
                same values, ``rng=Rng(seed)``.

Before anything of a case is timed, the compiled function (on both input
kinds) is checked to return exactly the reference's dict on the same uniforms,
so only correct code is timed.  Every benchmark uses ``benchmark.pedantic``
with rounds calibrated to a fixed time budget (conftest.py); a round is one
call of a closure that makes the round's calls in a loop, written as a user's
loop would make them (positional arguments, ``rng=`` keyword).  The report
divides a round's time by its calls (``extra_info["calls_per_round"]``).  So a
call's time holds the loop's few nanoseconds, not pytest-benchmark's dispatch
of a Python function (``f(*args, **kwargs)`` into a fresh frame, about 0.12 µs
here), which would add a third to the fast calls at ``V = 64``.

``test_call_floor`` times ``call_floor``, which takes the same arguments and
builds the same result dict but does no work: the cost of a call's Python
edges, a floor under both fast columns.

These live outside the project's ``testpaths`` and run only when asked for:
``python -m pytest benchmarks --benchmark-json=bench.json -q``; see
``benchmarks/report.py`` for the table.
"""
import random

import numpy as np
import pytest

import specdec_fast
from conftest import REPEATS
from specdec_fast import Rng
from specdec_fast._core import call_floor
from specdec_fast.reference import replaying
from specdec_fast.reference import speculative_decode_sim as reference_sim

KS = (4, 8)
VS = (64, 1024, 32000, 128256)
REGIMES = ("matched", "mismatched")
IMPLEMENTATIONS = ("reference", "fast-list", "fast-numpy")
TIMING_SEED = 12345
CHECK_SEED = 777

INPUT_KIND = {
    "reference": "list[list[float]]",
    "fast-list": "list[list[float]]",
    "fast-numpy": "float64 C-contiguous 2-D ndarray",
}


def verify(case):
    """Assert, once per case, that the compiled function is the reference's twin here."""
    if case.verified:
        return
    K, V = case.K, case.V
    fast = specdec_fast.speculative_decode_sim
    gen = np.random.default_rng([CHECK_SEED, K, V, REGIMES.index(case.regime)])
    for _ in range(3):
        U = gen.random(K + 2).tolist()
        with replaying(U):
            want = reference_sim(case.draft_list, case.target_list, case.tokens, V)
        got_list = fast(case.draft_list, case.target_list, case.tokens, V, uniforms=U)
        got_numpy = fast(case.draft_array, case.target_array, case.tokens, V, uniforms=U)
        assert got_list == want, (U, got_list, want)
        assert got_numpy == want, (U, got_numpy, want)
        assert want["num_accepted"] == case.expected_accepted, (case.regime, want)
    # With an Rng, both input kinds take the same draws and the intended path.
    for seed in range(3):
        a = fast(case.draft_list, case.target_list, case.tokens, V, rng=Rng(seed))
        b = fast(case.draft_array, case.target_array, case.tokens, V, rng=Rng(seed))
        assert a == b, (seed, a, b)
        assert a["num_accepted"] == case.expected_accepted, (case.regime, seed, a)
    case.verified = True


def compiled_loop(fn, d, t, k, V):
    """``make_loop(calls)`` for a compiled function: a closure making ``calls`` calls
    as a user's loop would, ``fn(d, t, k, V, rng=rng)``, from a fresh generator."""
    def make_loop(calls):
        rng = Rng(TIMING_SEED)
        loop = range(calls)

        def run():
            for _ in loop:
                result = fn(d, t, k, V, rng=rng)
            return result
        return run
    return make_loop


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("V", VS)
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("repeat", range(REPEATS))
def test_dropin(benchmark, get_case, plan, repeat, K, V, regime, implementation):
    case = get_case(K, V, regime)
    verify(case)

    if implementation == "reference":
        d, t, k = case.draft_list, case.target_list, case.tokens

        def make_loop(calls):
            random.seed(TIMING_SEED)
            loop = range(calls)

            def run():
                for _ in loop:
                    result = reference_sim(d, t, k, V)
                return result
            return run
    else:
        fast = specdec_fast.speculative_decode_sim
        if implementation == "fast-list":
            d, t, k = case.draft_list, case.target_list, case.tokens
        else:
            d, t, k = case.draft_array, case.target_array, case.tokens

        make_loop = compiled_loop(fast, d, t, k, V)

    rounds, calls, per_call = plan(make_loop(1), implementation, V, regime)

    benchmark.group = f"pass {repeat}: K={K} V={V} {regime}"
    benchmark.extra_info.update({
        "suite": "dropin",
        "repeat": repeat,
        "implementation": implementation,
        "K": K,
        "V": V,
        "regime": regime,
        "input": INPUT_KIND[implementation],
        "draft_tokens": "list[int]",
        "randomness": (f"random.seed({TIMING_SEED})" if implementation == "reference"
                       else f"rng=Rng({TIMING_SEED})"),
        "rounds": rounds,
        "calls_per_round": calls,
        "calibrated_s_per_call": per_call,
    })
    # A fresh generator state for the timing, not where calibration left it.
    result = benchmark.pedantic(make_loop(calls), rounds=rounds, iterations=1, warmup_rounds=1)
    if regime == "matched":   # every call of the matched regime accepts all K
        assert result["num_accepted"] == K + 1, result


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("repeat", range(REPEATS))
def test_call_floor(benchmark, get_case, plan, repeat, K):
    """The drop-in's Python edges alone (``call_floor``: the same arguments, a result
    dict built the same way, no work): a floor under every fast-list and fast-numpy
    time, so reference / floor bounds the ratio any such implementation can reach."""
    V = VS[0]
    case = get_case(K, V, "matched")
    d, t, k = case.draft_list, case.target_list, case.tokens
    make_loop = compiled_loop(call_floor, d, t, k, V)
    rounds, calls, per_call = plan(make_loop(1), "fast-list", V, "matched")
    benchmark.group = f"pass {repeat}: K={K} call floor"
    benchmark.extra_info.update({
        "suite": "dropin",
        "repeat": repeat,
        "implementation": "call-floor",
        "K": K,
        "V": V,
        "regime": "matched",
        "input": INPUT_KIND["fast-list"],
        "draft_tokens": "list[int]",
        "randomness": "none (nothing is drawn)",
        "rounds": rounds,
        "calls_per_round": calls,
        "calibrated_s_per_call": per_call,
    })
    result = benchmark.pedantic(make_loop(calls), rounds=rounds, iterations=1, warmup_rounds=1)
    assert result["num_accepted"] == K + 1 and result["tokens"] == list(range(K + 1))
