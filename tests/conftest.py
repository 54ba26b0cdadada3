"""Shared helpers for the specdec_fast test suite.

``run_reference`` runs the pure-Python reference inside ``replaying(uniforms)``;
``assert_same`` compares two result dicts key by key, order and types included
(R9).  ``make_case`` builds a random case with the edge features the rules
single out: zero draft probabilities at drafted tokens (R2), residuals of zero
(R4, uniform buckets), unnormalised rows (R4/R6 shortfall), target_probs with
K, K+1 or K+3 rows (R6), K == 0 (R7), V == 1, subnormal entries.
``adversarial_uniforms`` walks the rules on the reference's own numbers to put
uniforms exactly on, or within a few ulps of, the accept thresholds (R3) and
the bucket boundaries (R4, R6) -- where a fast scan is most likely to differ.
"""
import _thread
import itertools
import math
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from specdec_fast.reference import replaying
from specdec_fast.reference import speculative_decode_sim as reference_sim

ONE_MINUS = 1.0 - 2.0**-53          # the largest double below 1


@pytest.fixture
def ctrl_c_after():
    """``ctrl_c_after(seconds)``: a Ctrl-C (KeyboardInterrupt in the main thread) that
    many seconds later, cancelled at the end of the test.

    ``_thread.interrupt_main`` does nothing where SIGINT is not handled by Python,
    as in a process started in the background by a shell, which ignores SIGINT
    from the start; Python's own handler is installed for the test so that the
    interrupt arrives wherever the suite runs.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers = []

    def arm(seconds):
        timer = threading.Timer(seconds, _thread.interrupt_main)
        timers.append(timer)
        timer.start()

    yield arm
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGINT, previous)
KEYS = ["num_draft_tokens", "num_accepted", "acceptance_rate", "tokens",
        "speedup_over_sequential"]


# A small case whose reads are known, shared by test_bad_input (the drop-in) and
# test_batch (as row 2 of a batch): V = 5, K = 3.
FIVE_V = 5
FIVE_TOKENS = [1, 2, 3]
FIVE_Q = [[0.2] * FIVE_V for _ in range(3)]
FIVE_P = [[0.3, 0.1, 0.1, 0.1, 0.4] for _ in range(3)] + [[0.25, 0.25, 0.25, 0.25, 0.0]]
# All three accepted (u = 0 < 0.5), bonus u = 0.3 crosses at v = 1:
# reads p_i[t_i], q_i[t_i] for i < 3 and p_3[0], p_3[1].
U_ACCEPT = [0.0, 0.0, 0.0, 0.3, 0.5]
# Position 1 rejected (0.9 >= 0.5): reads p_0[1], q_0[1], whole rows p_1 and q_1.
U_REJECT = [0.0, 0.9, 0.5, 0.5, 0.5]
# (argument, row, entry) that the reference reads, or does not, under each.
READ_ACCEPT = [("target_probs", 0, 1), ("draft_probs", 0, 1), ("target_probs", 1, 2),
               ("draft_probs", 2, 3), ("target_probs", 2, 3), ("target_probs", 3, 0),
               ("target_probs", 3, 1)]
UNREAD_ACCEPT = [("target_probs", 0, 0), ("draft_probs", 1, 0), ("target_probs", 3, 2),
                 ("target_probs", 3, 4), ("draft_probs", 2, 4), ("target_probs", 1, 4)]
READ_REJECT = [("target_probs", 1, 0), ("target_probs", 1, 4), ("draft_probs", 1, 0),
               ("draft_probs", 1, 4), ("target_probs", 0, 1), ("draft_probs", 0, 1),
               ("target_probs", 1, 2), ("draft_probs", 1, 3)]
UNREAD_REJECT = [("target_probs", 2, 3), ("draft_probs", 2, 3), ("target_probs", 3, 0),
                 ("target_probs", 0, 0), ("draft_probs", 0, 4), ("target_probs", 2, 0)]

def run_reference(draft, target, tokens, vocab_size, uniforms):
    """The reference's dict and the number of uniforms it drew."""
    with replaying(uniforms) as replay:
        result = reference_sim(draft, target, tokens, vocab_size)
    return result, replay.used


def assert_same(fast, ref):
    """Equal dicts with the same key order and the same value types (R9)."""
    assert list(fast) == KEYS
    assert list(ref) == KEYS
    assert fast == ref
    for key in KEYS:
        assert type(fast[key]) is type(ref[key]), key
    assert type(fast["tokens"]) is list
    assert all(type(t) is int for t in fast["tokens"])
    if fast["num_draft_tokens"] == 0:
        assert type(fast["acceptance_rate"]) is int
    else:
        assert type(fast["acceptance_rate"]) is float


# --------------------------------------------------------------------------
# Random cases.

def pick_vocab(g):
    """V skewed towards small sizes (most cases are cheap for the reference)."""
    r = g.random()
    if r < 0.6:
        return int(g.integers(1, 9))
    if r < 0.85:
        return int(g.integers(9, 65))
    if r < 0.95:
        return int(g.integers(65, 513))
    return int(g.integers(513, 5001))


def random_row(g, V):
    """One row of V probabilities in one of several shapes (not always normalised)."""
    kind = int(g.integers(0, 7))
    if kind == 0:                                   # dense, normalised
        r = g.random(V)
        return r / r.sum()
    if kind == 1:                                   # sparse: a few non-zero entries
        r = np.zeros(V)
        idx = g.choice(V, size=min(V, int(g.integers(1, 4))), replace=False)
        r[idx] = g.random(len(idx)) + 0.01
        return r / r.sum()
    if kind == 2:                                   # dyadic, exact cumulative sums
        return g.integers(0, 5, V) / 8.0
    if kind == 3:                                   # peaked
        r = g.random(V) ** 8 + 1e-12
        return r / r.sum()
    if kind == 4:                                   # unnormalised: sum < 1 or > 1
        r = g.random(V)
        return r / r.sum() * float(g.choice([0.25, 0.6, 1.3, 2.0]))
    if kind == 5:                                   # tiny and subnormal entries
        r = g.random(V)
        r = r / r.sum()
        mask = g.random(V) < 0.3
        r[mask] = g.choice([1e-310, 5e-324, 1e-300, 0.0], size=int(mask.sum()))
        return r
    r = np.zeros(V)                                 # uniform over a prefix
    r[: int(g.integers(1, V + 1))] = 1.0
    return r / r.sum()


def make_case(g, K=None, V=None):
    """A random valid case ``(draft, target, tokens, V)`` as float64 2-D arrays and a list.

    Features: q == 0 at some drafted tokens (R2), target rows proportional
    to and below the draft rows, so the residual is zero (R4 uniform
    buckets), target with K, K+1 or K+3 rows (R6), tokens at 0 and V-1.
    """
    if K is None:
        K = int(g.integers(0, 17))
    if V is None:
        V = pick_vocab(g)
    n_target = K + int(g.choice([0, 1, 1, 1, 1, 3]))
    draft = np.array([random_row(g, V) for _ in range(K)]).reshape(K, V)
    target = np.array([random_row(g, V) for _ in range(n_target)]).reshape(n_target, V)
    tokens = []
    for i in range(K):
        r = g.random()
        q = draft[i]
        if r < 0.1 and (q == 0).any():              # a zero-probability draft (R2)
            t = int(g.choice(np.flatnonzero(q == 0)))
        elif r < 0.2:
            t = int(g.choice([0, V - 1]))
        elif r < 0.3:
            t = int(g.integers(0, V))
        else:
            w = q / q.sum() if q.sum() > 0 else np.full(V, 1.0 / V)
            t = int(g.choice(V, p=w))
        tokens.append(t)
        r = g.random()
        if r < 0.12:                                # residual zero: p <= q everywhere
            target[i] = draft[i] * float(g.choice([0.5, 0.25]))
        elif r < 0.2:                               # p == q except a lower p at t
            target[i] = draft[i]
            target[i, t] = draft[i, t] * 0.5
        elif r < 0.25:                              # p == q: always accepted
            target[i] = draft[i]
    return draft, target, tokens, V


def plain_uniforms(g, n):
    """``n`` uniforms, mostly random, sometimes 0.0, 1 - 2**-53 or dyadic."""
    out = []
    for _ in range(n):
        r = g.random()
        if r < 0.06:
            out.append(0.0)
        elif r < 0.12:
            out.append(ONE_MINUS)
        elif r < 0.2:
            out.append(int(g.integers(0, 8)) / 8.0)
        else:
            out.append(float(g.random()))
    return out


def _near(g, x):
    """``x`` or a value a few ulps either side of it, kept inside [0, 1)."""
    k = int(g.integers(-3, 4))
    y = x
    for _ in range(abs(k)):
        y = math.nextafter(y, math.inf if k > 0 else -math.inf)
    if not y < 1.0:
        y = ONE_MINUS
    if not y >= 0.0:
        y = 0.0
    return y


def _boundary_uniform(g, cums):
    """A uniform on or near one of the running sums ``cums`` (the bucket ends)."""
    finite = [c for c in cums if 0.0 <= c < 1.0]
    if not finite or g.random() < 0.1:
        return float(g.random())
    # Prefer distinct boundaries; the last few matter for shortfalls.
    return _near(g, finite[int(g.integers(0, len(finite)))])


def residual_bucket_ends(target_row, draft_row, V):
    """The reference's running sums of its normalised residual (R4), computed as it
    computes them, on the row objects themselves: bucket v ends at the v-th."""
    a = [max(0.0, target_row[v] - draft_row[v]) for v in range(V)]
    z = sum(a)
    a = [x / z for x in a] if z > 0 else [1.0 / V] * V
    return list(itertools.accumulate(a))


def adversarial_uniforms(g, draft, target, tokens, V):
    """K + 2 uniforms placed at the reference's decision boundaries.

    Walks R1-R6 on the given (list) rows: an accept test gets ``u`` equal to
    ``min(1, p/q)`` (R3: strict ``<`` rejects) or an ulp below it or a random
    value; a correction gets a value on or near a running sum of the
    normalised residual (R4); the bonus one near a running sum of ``p_K``
    (R6).  Extra uniforms are random.
    """
    K = len(tokens)
    out = []
    accepted = 0
    for i in range(K):
        t = tokens[i]
        p, q = target[i][t], draft[i][t]
        if q == 0:
            break
        ratio = min(1.0, p / q)
        r = g.random()
        if ratio >= 1.0:
            u = _near(g, ONE_MINUS) if r < 0.3 else float(g.random())
        elif r < 0.35:
            u = ratio
        elif r < 0.6:
            u = _near(g, ratio)
        else:
            u = float(g.random())
        out.append(u)
        if u < ratio:
            accepted += 1
            continue
        out.append(_boundary_uniform(g, residual_bucket_ends(target[i], draft[i], V)))
        accepted += 1
        break
    if accepted == K and len(target) > K:
        out.append(_boundary_uniform(g, list(itertools.accumulate(target[K][:V]))))
    while len(out) < K + 2:
        out.append(float(g.random()))
    return out


def run_python(script, cwd):
    """``python -c script`` importing the specdec_fast these tests import (installed, or
    built in place), from a directory without a source tree that would shadow it."""
    import specdec_fast
    root = os.path.dirname(os.path.dirname(os.path.abspath(specdec_fast.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
