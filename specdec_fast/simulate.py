"""``simulate``: Monte Carlo over verify steps, beside the closed forms of ``theory``.

Each trial is one verify step with fixed per-position distributions: sample
the draft token at each position from ``q_i``, test it against ``p_i``, sample
the correction from the residual on a rejection and the bonus token from
``p_K``, and count what was emitted.  This is not the verify kernel of
``speculative_decode_sim`` (``_kernel``): since the distributions are the same
in every trial, the Monte Carlo loop (``_simulate``) is its own compiled loop
over alias tables (Walker's method) of ``q_i``, of the residual and of ``p_K``,
built once per scenario and position, so that a token costs one uniform and
one lookup at any vocabulary size instead of a scan of the row.  It samples
from the distributions of the kernel's rules (R3; R4, with uniform tokens for
an all-zero residual; R6 under ``semantics="reference"``) with draws of its
own, so it reproduces the kernel's statistics, not its tokens, on normalised
rows: it normalises every row first, which the kernel does not (on rows that
do not sum to 1 the reference's statistics differ from these).  The loop runs
without the GIL in chunks of ``CHUNK_TRIALS`` trials on Python threads.

Randomness and threads: scenario ``s`` draws from ``Rng(key_s)``, where
``key_s`` is the ``s``-th of ``S`` 64-bit outputs (``next_uint64``) of the
given generator, and chunk ``c`` of it from that stream advanced by ``c``
jumps of 2**128 steps.  A chunk's counts depend only on its stream, so the
result does not depend on ``num_threads``; the same seed and arguments give
the same result.
"""
import os
import queue
import statistics
import threading
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from specdec_fast import _simulate, theory
from specdec_fast._core import get_default_rng
from specdec_fast._rng import Rng
from specdec_fast.theory import _flag, _int, _normalised, _probabilities, _real, _semantics

__all__ = ["CHUNK_TRIALS", "SimulationResult", "simulate"]

#: Trials per chunk: the unit of threading, progress and interruption.
CHUNK_TRIALS = 1 << 16

#: At most this many trials (the histograms count in int64).
MAX_TRIALS = 1 << 62


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """What ``simulate`` counted, its summary statistics and the closed forms beside them.

    Arrays carry a leading scenario axis ``S`` when the inputs were a batch of
    scenarios (3-D), and none otherwise.  ``K`` is the number of draft
    positions; emitted counts run over ``0 .. K + 1``.
    """

    k: int                        #: draft positions per step (K)
    vocab_size: int               #: V
    semantics: str                #: "exact" or "reference"
    bonus: bool                   #: whether a bonus row p_K was given
    confidence: float             #: level of every interval below (e.g. 0.95)
    requested_trials: int         #: trials asked for, per scenario
    trials: Union[int, np.ndarray]  #: trials finished, per scenario
    interrupted: bool             #: stopped early (Ctrl-C): the counts are those finished

    histogram: np.ndarray         #: (..., K+2) int64: steps that emitted 0 .. K+1 tokens
    accepted_histogram: np.ndarray  #: (..., K+1) int64: steps that accepted 0 .. K drafts
    reached: np.ndarray           #: (..., K) int64: steps that tested position i
    accepted: np.ndarray          #: (..., K) int64: steps whose draft passed at position i

    mean_tokens: Union[float, np.ndarray]      #: mean tokens emitted per step
    #: (..., 2): the normal interval from the sample variance, widened to take in
    #: an Agresti-Coull-style one (z**2 / 2 more steps at each end of the range of
    #: tokens per step), which does not collapse when few steps reject (NaN < 2 trials)
    mean_tokens_ci: np.ndarray
    frequencies: np.ndarray       #: (..., K+2): histogram / trials
    frequencies_ci: np.ndarray    #: (..., K+2, 2): Wilson score intervals
    acceptance: np.ndarray        #: (..., K): accepted / reached (NaN where never reached)
    acceptance_ci: np.ndarray     #: (..., K, 2): Wilson score intervals

    alpha: np.ndarray             #: (..., K): sum_v min(p_i, q_i), the closed-form acceptance
    expected_tokens: Union[float, np.ndarray]  #: closed form of mean_tokens (theory)
    expected_frequencies: np.ndarray  #: (..., K+2): closed form of frequencies (theory)

    #: (..., K+1, V) int64 counts of the token emitted at each output slot
    #: (slot K: the bonus), or None unless ``count_tokens=True``.
    token_counts: Optional[np.ndarray] = field(default=None, repr=False)

    def speedup(self, cost_ratio):
        """Simulated walltime improvement ``mean_tokens / (K c + 1)`` and its interval.

        Returns ``(value, ci)``; ``ci`` has a last axis of 2.
        """
        d = self._cost_denominator(cost_ratio)
        return self.mean_tokens / d, np.asarray(self.mean_tokens_ci) / d

    def expected_speedup(self, cost_ratio):
        """The closed form of ``speedup``: ``expected_tokens / (K c + 1)``."""
        return self.expected_tokens / self._cost_denominator(cost_ratio)

    def _cost_denominator(self, cost_ratio):
        return self.k * _real(cost_ratio, "cost_ratio", 0.0) + 1.0

    def __str__(self):
        lines = []
        batched = np.ndim(self.mean_tokens) > 0
        count = len(self.mean_tokens) if batched else 1
        for s in range(count):
            pick = (lambda x: np.asarray(x)[s]) if batched else np.asarray
            lo, hi = pick(self.mean_tokens_ci)
            head = f"scenario {s}: " if batched else ""
            lines.append(
                f"{head}K={self.k} V={self.vocab_size} {self.semantics} semantics, "
                f"{int(pick(self.trials)):,} trials{' (interrupted)' if self.interrupted else ''}: "
                f"tokens/step {float(pick(self.mean_tokens)):.4f} "
                f"[{lo:.4f}, {hi:.4f}] vs closed form {float(pick(self.expected_tokens)):.4f}")
        return "\n".join(lines)


def simulate(draft_probs, target_probs, k=None, *, trials, rng=None, semantics="exact",
             progress=False, num_threads=None, confidence=0.95,
             count_tokens=False) -> SimulationResult:
    """Monte Carlo over ``trials`` verify steps with fixed per-position distributions.

    Parameters
    ----------
    draft_probs : (K', V) array, or (S, K', V) for a batch of S scenarios
        ``q_i`` for positions ``i = 0 .. K'-1``; the first ``k`` rows are used.
    target_probs : (R, V) array, or (S, R, V)
        ``p_i``; ``R >= k``.  Row ``k``, when present, is the bonus row (so
        ``(K, V)`` arrays mean no bonus token, ``(K+1, V)`` one); later rows
        are ignored.  Rows must be finite and non-negative with a positive
        sum; each is normalised to sum to 1.
    k : int, optional
        Draft positions per step, ``0 <= k <= K'`` (default ``K'``).  Taking
        the first ``k`` rows of longer arrays sweeps K over one set of
        distributions.
    trials : int
        Verify steps to simulate, per scenario (at least 1).
    rng : None, int or Rng
        None: the module's default generator; an int seeds ``Rng(seed)``.  The
        generator advances by S outputs (one key per scenario).
    semantics : "exact" or "reference"
        "reference" adds the bonus token after a rejection at the last
        position (rule R6).  R2 cannot fire: drafts are sampled from ``q``.
    progress : bool or object with ``update(n)``
        True shows a tqdm progress bar (on stderr); an object (for example a
        ``tqdm`` bar you manage) gets ``update(trials)`` per finished chunk.
    num_threads : int, optional
        Threads running chunks (default: the CPUs).  Results do not depend on it.
    confidence : float
        Level of the intervals, in (0, 1).
    count_tokens : bool
        Also count the token emitted at each output slot (``token_counts``,
        ``(K+1, V)`` int64 per scenario), e.g. to check that slot ``i``
        follows ``p_i``.

    Ctrl-C (KeyboardInterrupt) stops after the running chunks and returns the
    trials finished so far, with ``interrupted=True``.

    Returns
    -------
    SimulationResult
    """
    semantics = _semantics(semantics)
    trials = _int(trials, "trials", 1)
    if trials > MAX_TRIALS:
        raise ValueError(f"trials must be at most 2**62, got {trials}")
    count_tokens = _flag(count_tokens, "count_tokens")
    confidence = _real(confidence, "confidence", 0.0, 1.0)
    if confidence in (0.0, 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    draft = _probabilities(draft_probs, "draft_probs")
    target = _probabilities(target_probs, "target_probs")
    if draft.ndim != target.ndim:
        raise ValueError(f"draft_probs and target_probs must both be 2-D or both 3-D, got "
                         f"shapes {draft.shape} and {target.shape}")
    batched = draft.ndim == 3
    if not batched:
        draft, target = draft[None], target[None]
    S, rows, V = draft.shape
    if target.shape[0] != S or target.shape[2] != V:
        shapes = (target.shape, draft.shape) if batched else (target.shape[1:], draft.shape[1:])
        raise ValueError(f"target_probs {shapes[0]} does not match draft_probs {shapes[1]} "
                         "(same scenarios and vocabulary)")
    if V < 1:
        raise ValueError("the vocabulary must hold at least one token")
    if S < 1:
        raise ValueError("the batch must hold at least one scenario")
    K = rows if k is None else _int(k, "k")
    if K > rows:
        raise ValueError(f"k={K} exceeds the {rows} rows of draft_probs")
    if target.shape[1] < K:
        raise ValueError(f"target_probs needs at least k={K} rows (k+1 with a bonus row), "
                         f"got {target.shape[1]}")
    bonus = target.shape[1] > K
    threads = _threads(num_threads)
    generator = _generator(rng)

    q = _normalised(draft[:, :K], "draft_probs")
    p = _normalised(target[:, :K + 1] if bonus else target[:, :K], "target_probs")
    tables = _tables(p, q, K, bonus, semantics == "reference")

    chunks = -(-trials // CHUNK_TRIALS)
    states = _simulate.chunk_states(Rng.next_uint64(generator, S), chunks)
    accepted_hist = np.zeros((S, chunks, K + 1), dtype=np.int64)
    emitted_hist = np.zeros((S, chunks, K + 2), dtype=np.int64)
    done = np.zeros((S, chunks), dtype=bool)
    jobs = [(s, c, min(CHUNK_TRIALS, trials - c * CHUNK_TRIALS))
            for c in range(chunks) for s in range(S)]
    threads = min(threads, len(jobs))
    buffers = [np.zeros((S, K + 1, V), dtype=np.int64) if count_tokens else None
               for _ in range(threads)]

    bar, close_bar = _progress(progress, S * trials)
    try:
        interrupted = _run(tables, jobs, states, accepted_hist, emitted_hist, done, buffers, bar)
    finally:
        if close_bar:
            bar.close()

    accepted_hist = (accepted_hist * done[..., None]).sum(axis=1)
    emitted_hist = (emitted_hist * done[..., None]).sum(axis=1)
    token_counts = sum(b for b in buffers if b is not None) if count_tokens else None
    alpha = theory.acceptance_rate(p[:, :K], q) if K else np.zeros((S, 0))
    alpha = np.asarray(alpha).reshape(S, K)
    return _result(K, V, semantics, bonus, confidence, trials, interrupted,
                   accepted_hist, emitted_hist, alpha, token_counts, batched)


# --------------------------------------------------------------------------
# Running the chunks.

def _run(tables, jobs, states, accepted_hist, emitted_hist, done, buffers, bar):
    """Run ``jobs`` on ``len(buffers)`` threads; True when stopped by KeyboardInterrupt."""
    stop = threading.Event()
    lock = threading.Lock()
    events = queue.Queue()
    pending = iter(jobs)

    def work(buffer):
        try:
            while not stop.is_set():
                with lock:
                    job = next(pending, None)
                if job is None:
                    break
                s, c, n = job
                tables.run(s, states[s, c], n, accepted_hist[s, c], emitted_hist[s, c],
                           None if buffer is None else buffer[s])
                done[s, c] = True
                events.put(n)
        except BaseException as exc:  # pragma: no cover - a kernel error is a bug
            stop.set()
            events.put(exc)
        finally:
            events.put(None)

    workers = [threading.Thread(target=work, args=(b,), daemon=True,
                                name=f"specdec-simulate-{i}") for i, b in enumerate(buffers)]
    interrupted = False
    running = len(workers)
    error = None
    try:
        # Started inside the try: a Ctrl-C while they start must stop those already running.
        for w in workers:
            w.start()
        while running:
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is None:
                running -= 1
            elif isinstance(event, BaseException):
                error = event
            elif bar is not None:
                bar.update(event)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # On every way out (Ctrl-C, or an error here such as from bar.update) the
        # workers stop after their running chunk; none outlives the call.
        stop.set()
        for w in workers:
            if w.is_alive():    # one not yet running will find stop set and write nothing
                w.join()
    if interrupted:
        while True:              # progress of the chunks that finished meanwhile
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, int) and bar is not None:
                bar.update(event)
    if error is not None:
        raise error
    return interrupted


def _progress(progress, total):
    """(bar or None, whether we own it)."""
    if progress is None:
        return None, False
    if isinstance(progress, (bool, np.bool_)):
        if not progress:
            return None, False
        from tqdm.auto import tqdm
        return tqdm(total=total, unit="trial", unit_scale=True, desc="simulate",
                    leave=False), True
    if not callable(getattr(progress, "update", None)):
        raise TypeError("progress must be a bool or an object with an update(n) method")
    return progress, False


# --------------------------------------------------------------------------
# Inputs.

def _threads(num_threads):
    if num_threads is None:
        return max(1, os.cpu_count() or 1)
    return _int(num_threads, "num_threads", 1)


def _generator(rng):
    if rng is None:
        return get_default_rng()
    if isinstance(rng, Rng):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        try:
            return Rng(int(rng))
        except ValueError as exc:
            raise ValueError(f"rng: {exc}") from None
    raise TypeError(f"rng must be None, an int seed or an Rng, not {type(rng).__name__}")


def _tables(p, q, K, bonus, reference):
    S, _, V = q.shape
    pk = p[:, :K]
    q_prob, q_alias = _simulate.alias_tables(q)
    ratio = np.divide(pk, q, out=np.zeros_like(q), where=q > 0.0)
    residual = np.maximum(pk - q, 0.0)
    residual[residual.sum(axis=-1) <= 0.0] = 1.0    # R4, as in the kernel: uniform when z == 0
    r_prob, r_alias = _simulate.alias_tables(residual)
    if bonus:
        b_prob, b_alias = _simulate.alias_tables(p[:, K])
    else:
        b_prob, b_alias = np.ones((S, V)), np.zeros((S, V), dtype=np.int32)
    return _simulate.Scenarios(q_prob, q_alias, np.ascontiguousarray(ratio), r_prob, r_alias,
                               b_prob, b_alias, bonus, reference)


# --------------------------------------------------------------------------
# Statistics.

def _wilson(x, n, z):
    """Wilson score interval for x successes in n trials; [0, 1] where n == 0.  Its
    ends at x == 0 and x == n are exactly 0 and 1 (the formula's rounding, left
    alone, would exclude the boundary value, an impossible count's 0 say)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = np.where(n > 0, x / np.maximum(n, 1.0), np.nan)
        denom = 1.0 + z * z / n
        centre = (phat + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(phat * (1.0 - phat) / n + z * z / (4.0 * n * n)) / denom
    lo = np.where((n > 0) & (x > 0), np.clip(centre - half, 0.0, 1.0), 0.0)
    hi = np.where((n > 0) & (x < n), np.clip(centre + half, 0.0, 1.0), 1.0)
    return phat, np.stack([lo, hi], axis=-1)


def _mean_interval(hist, counts, possible, z):
    """The mean of ``counts`` under histograms ``hist`` (S, C), and its interval: the
    normal one from the sample variance, widened to take in the one that z**2 / 2
    more steps at each end of the range of counts (the first and the last that
    ``possible`` (S, C) marks) would give, as Agresti and Coull do for a proportion.
    The normal one alone covers far less than its level when steps that fall short
    of the usual count are rare, and has zero width when none did; where they are
    not rare the two agree.  NaN below 2 steps."""
    n = hist.sum(axis=-1)
    rows = np.arange(hist.shape[0])
    extra = np.zeros(hist.shape)
    extra[rows, np.argmax(possible, axis=-1)] += z * z / 2.0
    extra[rows, hist.shape[-1] - 1 - np.argmax(possible[:, ::-1], axis=-1)] += z * z / 2.0
    padded = hist + extra
    m = padded.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (hist @ counts) / n
        var = (hist * (counts - mean[:, None]) ** 2).sum(axis=-1) / np.maximum(n - 1, 1)
        half = z * np.sqrt(var / n)
        padded_mean = (padded @ counts) / m
        padded_var = (padded * (counts - padded_mean[:, None]) ** 2).sum(axis=-1) / m
        padded_half = z * np.sqrt(padded_var / m)
    lo = np.minimum(mean - half, padded_mean - padded_half)
    hi = np.maximum(mean + half, padded_mean + padded_half)
    ci = np.where((n >= 2)[:, None], np.stack([lo, hi], axis=-1), np.nan)
    return mean, ci


def _result(K, V, semantics, bonus, confidence, requested, interrupted, accepted_hist,
            emitted_hist, alpha, token_counts, batched):
    # The upper quantile from the lower tail: 0.5 + confidence / 2 would round to 1
    # for a confidence within 2**-53 of it.
    z = -statistics.NormalDist().inv_cdf((1.0 - confidence) / 2.0)
    n = emitted_hist.sum(axis=-1)                                   # (S,)
    counts = np.arange(K + 2, dtype=np.float64)
    freq, freq_ci = _wilson(emitted_hist, n[:, None], z)
    # reached[i] = steps with at least i accepted drafts; accepted[i] = at least i + 1.
    at_least = np.cumsum(accepted_hist[:, ::-1], axis=-1)[:, ::-1]  # (S, K+1)
    reached = np.ascontiguousarray(at_least[:, :K])
    accepted = np.ascontiguousarray(at_least[:, 1:])
    acceptance, acceptance_ci = _wilson(accepted, reached, z)
    if K:
        expected_freq = theory.emitted_distribution(alpha, semantics=semantics, bonus=bonus)
    else:
        expected_freq = np.zeros((alpha.shape[0], 2))
        expected_freq[:, 1 if bonus else 0] = 1.0
    expected = expected_freq @ counts
    mean, mean_ci = _mean_interval(emitted_hist, counts, expected_freq > 0, z)

    def out(x):
        x = np.asarray(x)
        if batched:
            return x
        x = x[0]
        return x.item() if x.ndim == 0 else x

    return SimulationResult(
        k=K, vocab_size=V, semantics=semantics, bonus=bonus, confidence=confidence,
        requested_trials=requested, trials=out(n), interrupted=interrupted,
        histogram=out(emitted_hist), accepted_histogram=out(accepted_hist),
        reached=out(reached), accepted=out(accepted),
        mean_tokens=out(mean), mean_tokens_ci=out(mean_ci),
        frequencies=out(freq), frequencies_ci=out(freq_ci),
        acceptance=out(acceptance), acceptance_ci=out(acceptance_ci),
        alpha=out(alpha), expected_tokens=out(expected), expected_frequencies=out(expected_freq),
        token_counts=None if token_counts is None else out(token_counts))
