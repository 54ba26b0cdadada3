"""Fixtures for the drop-in benchmarks: the input cases and the timing policy.

A *case* is one (K, V, regime) point of the grid.  Its inputs are built once
from a fixed NumPy seed and shared by the three implementations:

* target rows are Zipf-like: ``p[perm[r]] ~ 1 / (r + 1) ** 1.1`` with a fresh
  random permutation ``perm`` of the vocabulary for every row;
* ``matched``: ``q = 0.9 * p + 0.1 / V`` and each draft token is drawn from ``q``
  restricted to the tokens with ``p >= q`` (i.e. the tokens that a draft sampled
  from ``q`` lands on most of the time).  Then ``p / q >= 1`` at every position,
  so all K drafts are accepted whatever the uniforms and every call ends with the
  bonus draw, a cumulative scan of the target's row K;
* ``mismatched``: ``q`` puts 0.99 of its mass on the 4 tokens where ``p`` is
  smallest (plus ``0.01 / V`` everywhere) and the draft token is one of those,
  so ``p / q`` is tiny (about 1e-2 at V=64, below 1e-3 from V=1024) and the first
  draft is rejected; the correction token is drawn from the residual
  ``max(0, p - q)`` over the whole vocabulary.

``target_probs`` has K + 1 rows, ``draft_probs`` K rows; the draft tokens are a
list of ints for every implementation.  The ``fast-numpy`` inputs are float64
C-contiguous arrays holding exactly the values of the lists.

The timing budget per benchmark is in seconds of measured calls; set the
environment variable ``SPECDEC_BENCH_SCALE`` (default 1.0) to scale all of them,
e.g. ``SPECDEC_BENCH_SCALE=0.1`` for a quick smoke run.

The grid is timed ``REPEATS`` times (``SPECDEC_BENCH_REPEATS``, default 7), one
whole pass after another, each with its share of the budget.  This machine's
speed drifts by tens of percent over seconds to minutes, and stretches of it run
at half speed; a ratio taken within one pass compares times measured within
about a second, and the report takes the median over passes, so a slow
stretch that catches one implementation of a case in two passes of the seven
leaves the ratio as it is.  More passes cost little: the budget is shared
among them.
"""
import dataclasses
import glob
import hashlib
import math
import os
import time

import numpy as np
import pytest

import specdec_fast

BASE_SEED = 20250101
ZIPF_EXPONENT = 1.1
REGIMES = ("matched", "mismatched")
MISMATCH_TOKENS = 4

SCALE = float(os.environ.get("SPECDEC_BENCH_SCALE", "1.0"))
REPEATS = max(1, int(os.environ.get("SPECDEC_BENCH_REPEATS", "7")))
# Seconds of measured calls per benchmark (before SCALE).  The reference at
# large V is the noisiest (its cost depends on where the scan stops), so it gets
# the most rounds; every benchmark stays within ~2-3 s including calibration.
BUDGET_S = {"reference": 1.5, "fast-list": 1.0, "fast-numpy": 1.0}
BUDGET_LARGE_REFERENCE_S = 2.5   # reference at V >= 32000
ROUND_TARGET_S = 0.005           # aim for rounds at least this long (timer resolution)
# In the matched regime the cost of a call is proportional to where the bonus
# scan stops (u * V on average), so a round must average over several draws for
# its time to estimate the mean cost (the fast paths run hundreds of calls per
# round; the reference at large V would otherwise run one or two).
MIN_CALLS_PER_ROUND = {"matched": 10, "mismatched": 1}
MIN_ROUNDS, MAX_ROUNDS = 5, 200


def build_identity():
    """sha256 (first 16 hex digits) and mtime of each compiled module of the package.

    The modules are rebuilt in place during development; recording which build
    was timed (and whether it changed during the run) keeps results honest.
    """
    ident = {}
    for path in sorted(glob.glob(os.path.join(os.path.dirname(specdec_fast.__file__), "*.so"))):
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()[:16]
        mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(os.path.getmtime(path)))
        ident[os.path.basename(path)] = f"{digest} ({mtime}Z)"
    return ident


BUILD_AT_START = build_identity()      # right after the import: the build being timed
LOAD_AT_START = os.getloadavg()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    build_at_end = build_identity()
    output_json["specdec_fast"] = {
        "build": BUILD_AT_START,
        "rebuilt_during_run": build_at_end != BUILD_AT_START,
        "build_at_end": build_at_end,
        "loadavg_at_start": list(LOAD_AT_START),
        "loadavg_at_end": list(os.getloadavg()),
    }


@dataclasses.dataclass
class Case:
    K: int
    V: int
    regime: str
    draft_list: list
    target_list: list
    tokens: list
    draft_array: np.ndarray
    target_array: np.ndarray
    expected_accepted: int   # num_accepted on the intended path
    verified: bool = False


def zipf_rows(gen, nrows, V):
    ranks = np.arange(V, dtype=np.float64)
    weights = 1.0 / (ranks + 1.0) ** ZIPF_EXPONENT
    weights /= weights.sum()
    rows = np.empty((nrows, V), dtype=np.float64)
    for i in range(nrows):
        rows[i, gen.permutation(V)] = weights
    return rows


def build_case(K, V, regime):
    gen = np.random.default_rng([BASE_SEED, K, V, REGIMES.index(regime)])
    target = zipf_rows(gen, K + 1, V)
    draft = np.empty((K, V), dtype=np.float64)
    tokens = []
    for i in range(K):
        p = target[i]
        if regime == "matched":
            q = 0.9 * p + 0.1 / V
            allowed = np.flatnonzero(p >= q)
            w = q[allowed] / q[allowed].sum()
            t = int(gen.choice(allowed, p=w))
            assert p[t] / q[t] >= 1.0
        else:
            low = np.argsort(p, kind="stable")[:MISMATCH_TOKENS]
            q = np.full(V, 0.01 / V)
            q[low] += 0.99 / MISMATCH_TOKENS
            t = int(gen.choice(low))
        draft[i] = q
        tokens.append(t)
    draft = np.ascontiguousarray(draft, dtype=np.float64)
    target = np.ascontiguousarray(target, dtype=np.float64)
    return Case(
        K=K, V=V, regime=regime,
        draft_list=draft.tolist(), target_list=target.tolist(), tokens=tokens,
        draft_array=draft, target_array=target,
        expected_accepted=K + 1 if regime == "matched" else 1,
    )


@pytest.fixture(scope="session")
def get_case():
    """``get_case(K, V, regime)``: the case's inputs, built once per session."""
    cache = {}

    def get(K, V, regime):
        key = (K, V, regime)
        if key not in cache:
            cache[key] = build_case(K, V, regime)
        return cache[key]

    return get


def plan_rounds(fn, implementation, V, regime):
    """Calibrate ``fn`` (no arguments, one call) and choose (rounds, calls per round)
    for its budget.

    Runs the function for about 50 ms (at least 2 calls) to estimate the cost of
    one call, then picks the calls per round so a round lasts >= ROUND_TARGET_S
    (and holds at least MIN_CALLS_PER_ROUND[regime] calls) and as many rounds as
    fit in the budget (MIN_ROUNDS..MAX_ROUNDS).
    """
    budget = BUDGET_S[implementation]
    if implementation == "reference" and V >= 32000:
        budget = BUDGET_LARGE_REFERENCE_S
    budget *= SCALE / REPEATS
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= 0.05 * min(SCALE, 1.0):
            break
    per_call = elapsed / calls
    calls = max(MIN_CALLS_PER_ROUND[regime], math.ceil(ROUND_TARGET_S / per_call))
    rounds = int(budget / (per_call * calls))
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, rounds))
    return rounds, calls, per_call


@pytest.fixture(scope="session")
def plan():
    """``plan(fn, implementation, V, regime) -> (rounds, calls_per_round, seconds_per_call)``."""
    return plan_rounds
