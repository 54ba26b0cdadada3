"""``verify_batch``: the verify step for a batch of sequences, on arrays.

This module validates and prepares the arrays; the loop over rows runs in the
compiled kernel (``_batch.verify_rows`` over ``_kernel.verify_row``) without the
GIL, on disjoint row ranges when more than one thread is asked for.

Randomness is keyed by row, never by thread or split: every row b draws from
its own xoshiro256+ stream, so a row's tokens depend only on its inputs and
its stream.

- ``rng`` an ``Rng`` (or an int seed, or None for the default generator):
  row b's stream is ``Rng(key_b)``, where ``key_b`` is the b-th of B 64-bit
  outputs (``next_uint64``) drawn from that generator.  The generator
  advances by B outputs, so the next call draws fresh streams, and verifying
  rows 0..B1 then B1..B in two calls gives what one call gives.
- ``rng`` a (B,) array of seeds: row b's stream is ``Rng(seeds[b])``, so a
  request's tokens do not depend on its slot or on who shares its batch.
  Derive a fresh seed per request and step (for example from a counter).
- ``rng`` a sequence of B ``Rng``: row b draws from (and advances) ``rng[b]``.
  The call holds those generators: the rows draw from copies of their states
  without the GIL, and the states are written back when every row is done;
  meanwhile any other use of them (``Rng.random``, another call) waits.  A
  call that raises leaves them as they were (short of a KeyboardInterrupt
  landing just after the write-back).  (If one of them is being drawn
  from by a ``speculative_decode_sim`` call that is running user code, the rows
  advance them in place instead, on the calling thread with the GIL held, and
  an interrupt after the rows ran leaves them advanced.)
"""
import _thread
import os
import queue
import threading
from typing import NamedTuple

import numpy as np

from specdec_fast import _batch
from specdec_fast._core import get_default_rng
from specdec_fast._rng import Rng, hold_states, never_wait_on_this_thread, seeded_states
from specdec_fast.theory import _flag, _semantics

__all__ = ["VerifyResult", "verify_batch"]

# Rows per thread below which a second thread costs more than it saves.
_MIN_WORK_PER_THREAD = 1 << 16


class VerifyResult(NamedTuple):
    """What ``verify_batch`` emitted, one row per sequence."""

    tokens: np.ndarray        #: (B, W) int64: emitted tokens, then -1
    num_emitted: np.ndarray   #: (B,) int64: tokens written (correction and bonus included)
    num_accepted: np.ndarray  #: (B,) int64: draft tokens that passed


def _array(x, name):
    """``np.asarray(x)``, with an error naming the argument when ``x`` is ragged or
    its ``__array__`` refuses (a bfloat16 or ``requires_grad`` torch tensor)."""
    try:
        return np.asarray(x)
    except ValueError as exc:
        raise ValueError(f"{name} must be a rectangular array: {exc}") from None
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"{name} cannot be read as an array "
                        f"({type(exc).__name__}: {exc})") from exc


def _real_array(x, name, ndim=3):
    """``x`` as an array of real numbers with ``ndim`` dimensions, not yet converted."""
    if x is None:
        raise TypeError(f"{name} must be an array, not None")
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
            x = np.from_dlpack(x)
        x = _array(x, name)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return x


def _kernel_dtype(x):
    """The dtype the kernel reads ``x`` as: its own when float32/float64, else float64."""
    return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _kernel_array(x, dtype):
    """``x`` as the kernel reads it: ``dtype`` (float32/float64), native byte order,
    aligned, last axis contiguous.  Otherwise a C-ordered copy: a conversion that
    kept ``x``'s memory order (``astype``) would leave the last axis strided for a
    Fortran-ordered, transposed or broadcast ``x``."""
    if (x.dtype != dtype or not x.flags.aligned
            or (x.shape[-1] > 1 and x.strides[-1] != x.itemsize)):
        x = np.array(x, dtype=dtype, order="C")
    return x


_EXACT_INT_LIMIT = 2**53


def _wider_than_double(x):
    return x.dtype.kind == "f" and x.dtype.itemsize > 8 and np.finfo(x.dtype).nmant > 52


def _reference_reads_as_float64(target, draft, K):
    """Raise unless the reference, run on each sequence's rows as their ``tolist()``,
    computes what the kernel computes on float64 copies.  Long doubles keep more
    bits, wherever they are.  Ints matter only where the reference computes with
    two of them, ``p - q``, ``p / q`` and the residual's sum (a float or one-hot
    draft makes every residual a float, and a float with an int rounds the int as
    the copy does): those are exact in doubles while the values and the sums of
    the target's verify rows stay within 2**53 (a residual never sums to more)."""
    for x, name in ((target, "target_probs"), (draft, "draft_probs")):
        if x is not None and _wider_than_double(x):
            raise TypeError(f"{name} has dtype {x.dtype}, wider than float64: with "
                            "semantics='reference' convert it to float64 first, or use "
                            "speculative_decode_sim, which computes in its arithmetic")
    if draft is None or target.dtype.kind not in "iub" or draft.dtype.kind not in "iub":
        return
    hint = ("with semantics='reference' pass floats, or use speculative_decode_sim, "
            "which computes with the ints")
    verify_rows = target[:, :K]
    for x, name in ((verify_rows, "target_probs"), (draft, "draft_probs")):
        if x.dtype.kind == "b" or x.size == 0:
            continue
        big = (x > _EXACT_INT_LIMIT) | (x < -_EXACT_INT_LIMIT)
        if big.any():
            b, i, v = np.argwhere(big)[0]
            raise ValueError(f"{name}[{b}, {i}, {v}] = {x[b, i, v]} is beyond 2**53, where the "
                             f"reference's int arithmetic is not float64's: {hint}")
    if verify_rows.size == 0 or verify_rows.max() <= _EXACT_INT_LIMIT // target.shape[-1]:
        return
    sums = np.add.reduce(verify_rows.astype(object), axis=-1)
    over = sums > _EXACT_INT_LIMIT
    if over.any():
        b, i = np.argwhere(over)[0]
        raise ValueError(f"target_probs[{b}, {i}] sums to {sums[b, i]}, beyond 2**53: the "
                         f"reference sums its residual's ints exactly, float64 cannot: {hint}")


def _integers(x, name, shape):
    """An intp array; unsigned values beyond intp become -1 (caught by range checks)."""
    x = _array(x, name)
    if x.dtype.kind not in "iu" and not (x.size == 0 and x.dtype.kind == "f"):
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if x.dtype.kind == "u" and x.dtype.itemsize >= np.dtype(np.intp).itemsize:
        x = np.where(x > np.iinfo(np.intp).max, -1, x.astype(np.intp))
    return _c_array(x, np.intp)


def _c_array(x, dtype):
    """``x`` as a C-contiguous, aligned array of ``dtype``, copied only if it is not
    (``np.ascontiguousarray`` alone passes an unaligned array through)."""
    x = np.ascontiguousarray(x, dtype=dtype)
    return x if x.flags.aligned else x.copy()


def _uniforms(uniforms, B, semantics):
    given = _array(uniforms, "uniforms")
    if given.dtype.kind not in "fiu":
        raise TypeError(f"uniforms must hold real numbers, got dtype {given.dtype}")
    if given.ndim != 2 or given.shape[0] != B:
        raise ValueError(f"uniforms must have shape (B={B}, M), got {given.shape}")
    if semantics == "reference" and _wider_than_double(given):
        raise TypeError(f"uniforms has dtype {given.dtype}, wider than float64, in which the "
                        "reference would compare: with semantics='reference' convert it to "
                        "float64 first, or use speculative_decode_sim")
    u = _c_array(given, np.float64)
    bad = ~((u >= 0.0) & (u < 1.0))
    if bad.any():
        b, j = np.argwhere(bad)[0]
        note = "" if not _wider_than_double(given) else (
            f" as float64 (given as {given.dtype} "
            f"{np.format_float_positional(given[b, j], precision=21, unique=False, trim='-')})")
        raise ValueError(f"uniforms[{b}][{j}] = {float(u[b, j])!r}{note} is outside [0, 1)")
    return u


_RNG_FORMS = "None, an int seed, an Rng, a (B,) array of seeds or a sequence of B Rng"


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _rng_source(rng, B):
    """``rng`` checked, nothing drawn: an Rng, a tuple of B Rng, or (B,) uint64 seeds."""
    if rng is None:
        return get_default_rng()
    if isinstance(rng, Rng):
        return rng
    if _is_int(rng):
        if not 0 <= rng < 1 << 64:
            raise ValueError(f"rng = {rng} is not a seed in [0, 2**64)")
        return Rng(rng)
    kinds = set(map(type, rng)) if isinstance(rng, (list, tuple)) else None
    if kinds and any(issubclass(kind, Rng) for kind in kinds):
        return _generators(rng, kinds, B)
    seeds = _array(rng, "rng")
    if kinds is not None:
        if seeds.dtype.kind not in "iu" or bool in kinds or np.bool_ in kinds:
            for b, seed in enumerate(rng):      # name the first seed that is not one
                if not _is_int(seed):
                    raise TypeError(f"rng[{b}] must be an int seed, not {type(seed).__name__}")
                if not 0 <= seed < 1 << 64:
                    raise ValueError(f"rng[{b}] = {seed} is not a seed in [0, 2**64)")
            seeds = np.array([int(seed) for seed in rng], dtype=np.uint64)
    if seeds.dtype.kind not in "iu":
        raise TypeError(f"rng must be {_RNG_FORMS}, not {type(rng).__name__}")
    if seeds.shape != (B,):
        raise ValueError(f"rng seeds must have shape ({B},), got {seeds.shape}")
    if seeds.dtype.kind == "i" and (seeds < 0).any():
        b = int(np.argmax(seeds < 0))
        raise ValueError(f"rng[{b}] = {seeds[b]} is not a seed in [0, 2**64)")
    return seeds.astype(np.uint64)


def _generators(rng, kinds, B):
    """A list or tuple holding an Rng (``kinds``: the types of its items): a tuple of B
    distinct Rng, or an error naming the odd one."""
    generators = tuple(rng)
    if not all(issubclass(kind, Rng) for kind in kinds):
        b, g = next((b, g) for b, g in enumerate(generators) if not isinstance(g, Rng))
        raise TypeError(f"rng[{b}] must be an Rng like the others, not {type(g).__name__}")
    if len(generators) != B:
        raise ValueError(f"rng holds {len(generators)} generators for a batch of {B}")
    # Rng hashes and compares by identity; a subclass might not.
    if len(set(generators) if kinds == {Rng} else set(map(id, generators))) != B:
        raise ValueError("rng holds the same Rng twice: rows would share a stream")
    return generators


def _row_states(source, B):
    """(B, 4) uint64 generator states, one per row, or a tuple of B Rng to advance in place."""
    if isinstance(source, Rng):         # Rng's own draws, whatever a subclass overrides
        return seeded_states(Rng.next_uint64(source, B))
    if isinstance(source, tuple):
        return source
    return seeded_states(source)


def _outputs(out, B, width):
    if out is None:
        return (np.empty((B, width), dtype=np.int64), np.empty(B, dtype=np.int64),
                np.empty(B, dtype=np.int64))
    try:
        tokens, emitted, accepted = out
    except (TypeError, ValueError):
        raise TypeError("out must be a (tokens, num_emitted, num_accepted) triple of arrays") from None
    for name, arr, shape in (("tokens", tokens, (B, width)), ("num_emitted", emitted, (B,)),
                             ("num_accepted", accepted, (B,))):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.int64:
            raise TypeError(f"out.{name} must be an int64 array")
        if arr.shape != shape:
            raise ValueError(f"out.{name} must have shape {shape}, got {arr.shape}")
        if not (arr.flags.c_contiguous and arr.flags.aligned and arr.flags.writeable):
            raise ValueError(f"out.{name} must be C-contiguous, aligned and writeable")
    return tokens, emitted, accepted


def _check_disjoint(outputs, inputs):
    """The loop writes each output while it reads the inputs: none may share memory
    with an input or with another output."""
    for i, (name, arr) in enumerate(outputs):
        for other_name, other in outputs[:i] + inputs:
            if other is not None and _batch.may_overlap(arr, other):
                raise ValueError(f"{name} shares memory with {other_name}")


def verify_batch(draft_probs, target_probs, draft_tokens, *, rng=None, uniforms=None,
                 num_draft_tokens=None, semantics="exact", greedy=False, out=None,
                 num_threads=None) -> VerifyResult:
    """Verify B sequences of K draft tokens each against the target.

    Parameters
    ----------
    draft_probs : (B, K, V) array, or None
        The draft's distributions.  None means a deterministic proposer
        (n-gram, prompt lookup, greedy draft): q is one-hot at the draft token,
        so a draft is accepted with probability p(t) and a rejection samples p
        with t removed, renormalised.
    target_probs : (B, K+1, V) or (B, K, V) array
        The target's distributions; row K (when present) gives the bonus token.
        float32 or float64, any strides; read in place when the last axis is
        contiguous.  Other real dtypes are converted to float64; with
        semantics="reference", not those whose ``tolist()`` the reference would
        compute with otherwise (long doubles; where draft and target both hold
        ints, values beyond 2**53 or target rows summing beyond it): a TypeError
        or ValueError says so.
    draft_tokens : (B, K) integer array
    rng : None, int, Rng, (B,) seeds, or a sequence of B Rng
        Where the randomness comes from; see the module docstring.
    uniforms : (B, M) floats in [0, 1), optional
        Replay: row b consumes uniforms[b] in the reference's order (one per
        accept test, one per correction, one for the bonus).  Read as float64
        (long doubles: only with semantics="exact").
    num_draft_tokens : (B,) ints in [0, K], optional
        Row b uses only its first n_b drafts; its bonus comes from row n_b.
    semantics : "exact" or "reference"
        "exact": the papers' algorithm (a draft with q == 0 is a certain
        rejection, drawn from the residual without an accept draw; the bonus
        only when every draft passed; at most K+1 uniforms).  "reference": rules
        R1-R8 of the reference, row by row (at most K+2 uniforms).
    greedy : bool
        Accept while the draft equals the target row's argmax (lowest index on
        ties); on the first mismatch emit the argmax; all accepted: the bonus
        row's argmax.  Consumes no randomness.
    out : (tokens, num_emitted, num_accepted) arrays, optional
        Preallocated int64 outputs, (B, K+1), (B,), (B,), C-contiguous and aligned.
    num_threads : int, optional
        Threads over rows (default: the CPUs, for batches large enough).
        Results do not depend on it.

    Returns
    -------
    VerifyResult(tokens, num_emitted, num_accepted)
    """
    semantics = _semantics(semantics)
    greedy = _flag(greedy, "greedy")
    target = _real_array(target_probs, "target_probs")
    B, R, V = target.shape
    tokens = _array(draft_tokens, "draft_tokens")
    if tokens.ndim != 2 or tokens.shape[0] != B:
        raise ValueError(f"draft_tokens must have shape (B={B}, K), got {tokens.shape}")
    K = tokens.shape[1]
    given_tokens, tokens = tokens, _integers(tokens, "draft_tokens", (B, K))
    if R not in (K, K + 1):
        raise ValueError(f"target_probs must have K={K} or K+1={K + 1} rows per sequence, got {R}")
    if V < 1:
        raise ValueError("target_probs must have a vocabulary of at least 1")
    draft = None
    if draft_probs is not None:
        draft = _real_array(draft_probs, "draft_probs")
        if draft.shape != (B, K, V):
            raise ValueError(f"draft_probs must have shape {(B, K, V)}, got {draft.shape}")
    if semantics == "reference" and not greedy:
        _reference_reads_as_float64(target, draft, K)
    dtype = _kernel_dtype(target)
    if draft is not None and _kernel_dtype(draft) != dtype:
        dtype = np.dtype(np.float64)
    target = _kernel_array(target, dtype)
    if draft is not None:
        draft = _kernel_array(draft, dtype)
    if num_draft_tokens is None:
        counts = np.full(B, K, dtype=np.intp)
    else:
        # A private copy: the loop reads it without the GIL and trusts it to index rows.
        given = _array(num_draft_tokens, "num_draft_tokens")
        counts = np.array(_integers(given, "num_draft_tokens", (B,)))
        bad = (counts < 0) | (counts > K)
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(f"num_draft_tokens[{b}] = {given[b]} is outside [0, K={K}]")
    outside = (tokens < 0) | (tokens >= V)
    outside &= np.arange(K) < counts[:, None]
    if outside.any():
        b, i = np.argwhere(outside)[0]
        raise ValueError(f"draft_tokens[{b}][{i}] = {given_tokens[b, i]} is outside [0, V={V})")
    out_tokens, out_emitted, out_accepted = _outputs(out, B, K + 1)

    # Checked even where greedy ignores them, but nothing is drawn until used.
    states = replay = source = None
    if uniforms is not None:
        if rng is not None:
            raise ValueError("pass rng or uniforms, not both")
        replay = _uniforms(uniforms, B, semantics)
    else:
        source = _rng_source(rng, B)
    if out is not None:
        _check_disjoint([("out.tokens", out_tokens), ("out.num_emitted", out_emitted),
                         ("out.num_accepted", out_accepted)],
                        [("target_probs", target), ("draft_probs", draft),
                         ("draft_tokens", tokens), ("uniforms", replay)])
    threads = _thread_count(num_threads, B, K * V)      # checked before anything is drawn
    if greedy:
        replay = np.zeros((B, 0))
    elif source is not None:
        states = _row_states(source, B)
    # The pool grows before any generator is held: user code that a starting thread runs
    # (a finalizer) could wait for the hold while this thread waits for that one to start.
    pool = _grown_pool() if threads > 1 else None
    hold = None
    try:
        if isinstance(states, tuple):   # a sequence of Rng, held until the rows are done
            hold = hold_states(states)
            if hold.states is None:     # one is in use in place: advance them so, on this thread
                threads = 1
            else:                       # the rows draw from copies, written back at the end
                states = hold.states
        failures = _run_ranges(threads, B, (target, draft, tokens, counts, states, replay,
                                            semantics == "reference", greedy, out_tokens,
                                            out_emitted, out_accepted), pool)
        result = VerifyResult(out_tokens, out_emitted, out_accepted)
        if hold is not None and not failures:
            hold.release(True)          # last: an interrupt after it still finds them written
    finally:
        if hold is not None:
            hold.release(False)         # a call that raises leaves the generators as they were
    if failures:
        raise _batch.failure_error(min(failures, key=lambda f: f[1]), target, draft, given_tokens)
    return result


def _run_ranges(threads, B, args, pool):
    """``verify_rows`` over rows 0 .. B in ``threads`` ranges; returns their failures.

    The first range runs on this thread; the others are handed to the threads of
    ``pool`` (if it has any), and this thread runs those none has taken by the time
    its own range is done."""
    bounds = np.linspace(0, B, threads + 1).astype(int)
    ranges = list(zip(bounds[:-1], bounds[1:]))
    handed = [_Range(args, start, stop) for start, stop in ranges[1:]]
    try:
        if handed and pool.threads:
            for r in handed:
                pool.put(r)
        failures = [_batch.verify_rows(*args, *ranges[0])]
        for r in handed:
            r.run_unless_taken()
    finally:
        for r in handed:
            r.close()
    failures += [r.failure() for r in handed]
    return [f for f in failures if f is not None]


class _Range:
    """``verify_rows`` over rows ``start .. stop`` of one call, handed to the pool: it runs
    once, on whichever takes it first, a pool thread or the calling thread.  Running it
    twice would not give the same outputs: it advances its rows' generator states.

    Taking the range is one atomic step (a ``dict.setdefault``), so an exception that a
    signal handler raises on the calling thread (a ``KeyboardInterrupt``) cannot fall
    between taking it and recording who did; and the calling thread waits for a pool
    thread on a bare lock, whose ``acquire`` leaves nothing held when interrupted."""

    def __init__(self, args, start, stop):
        self._args = (*args, start, stop)
        self._taker = {}                    # {"by": POOL or CALLER}, set once
        self._done = _thread.allocate_lock()
        self._done.acquire()                # released by the pool thread that took the range
        self._outcome = None                # (verify_rows's return, or what it raised)

    def _take(self, who):
        return self._taker.setdefault("by", who) == who

    def __call__(self):
        """On a pool thread.  Whatever is raised here (by a profiler, say), a range this
        thread took is marked done, and one it did not run raises on the calling thread."""
        try:
            if self._take(_POOL):
                self._run()
        finally:
            if self._taker.get("by") == _POOL:
                self._done.release()

    def run_unless_taken(self):
        """On the calling thread: run the range here unless a pool thread has taken it."""
        if self._take(_CALLER):
            self._run()

    def close(self):
        """On the calling thread, last: wait for the pool thread that took the range, or
        take it so that none will.  Afterwards nothing of the range runs, now or later."""
        if not self._take(_CALLER):
            self._done.acquire()
        self._args = None                   # a pool thread may still hold the emptied range

    def failure(self):
        """What ``verify_rows`` returned (None, or the range's first failure), or raise
        what it raised."""
        if self._outcome is None:
            raise RuntimeError("a verify_batch worker thread took rows of this call and "
                               "stopped before running them (an exception from a profiler?)")
        failure, exc = self._outcome
        if exc is not None:
            raise exc
        return failure

    def _run(self):
        try:
            self._outcome = _batch.verify_rows(*self._args), None
        except BaseException as exc:        # raised again on the calling thread
            self._outcome = None, exc


_POOL, _CALLER = "pool", "caller"


class _Pool:
    """Daemon threads, kept between calls, running the ``_Range``s put on one queue.

    Threads are started before any work is queued, so one that cannot start (a process
    thread limit) leaves the pool smaller, not work queued that might run after its call
    returned.  Daemon threads: the interpreter's exit does not wait for them, and they
    keep serving while it shuts down (a thread still decoding, an ``atexit`` handler)."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._workers = []

    @property
    def threads(self):
        """This pool's threads that run or are starting, as ``threading.enumerate`` lists
        them: one whose ``start`` an interrupt broke off is listed while it starts, so it
        is counted once, not replaced.  (If the interrupt came before the thread existed,
        CPython lists it for good: the pool then has one thread fewer.)"""
        running = set(threading.enumerate())
        return sum(thread in running for thread in self._workers)

    def grow(self, n):
        """Start threads until ``n`` run, or one cannot start."""
        while self.threads < n:
            thread = threading.Thread(target=self._serve, name="specdec_fast_worker", daemon=True)
            self._workers.append(thread)
            try:
                thread.start()
            except RuntimeError:
                self._workers.pop()
                return

    def put(self, task):
        self._queue.put(task)

    def _serve(self):
        never_wait_on_this_thread()
        while True:
            try:
                self._queue.get()()
            except BaseException:       # from a profiler or tracer, say: the thread serves on
                pass


_pool = None
_pool_lock = threading.Lock()
_MAX_THREADS = os.cpu_count() or 1


def _grown_pool():
    """The pool, made on first use and grown to ``_MAX_THREADS - 1`` threads as the
    process allows (it may have none)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
        _pool.grow(_MAX_THREADS - 1)
        return _pool


def _forget_pool():
    """In a forked child (a multiprocessing worker): the parent's pool threads do not
    exist there, and its lock may have been held, so start without either."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _thread_count(num_threads, B, work_per_row):
    if num_threads is None:
        enough = max(1, B * work_per_row // _MIN_WORK_PER_THREAD)
        return max(1, min(_MAX_THREADS, B, enough))
    if not _is_int(num_threads):
        raise TypeError(f"num_threads must be an int, not {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    return int(min(num_threads, _MAX_THREADS, max(B, 1)))
