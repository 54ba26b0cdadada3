"""Rng: the xoshiro256+ generator used by specdec_fast.

The state is a C struct (``xoshiro256plus_state``) so the kernel can draw from
it without Python objects.  Seeding follows the generator's authors: the four
state words are four successive outputs of splitmix64 started at the seed.

A generator is only advanced with the GIL held, so threads may share one,
except while ``verify_batch`` holds it (``hold_states``): its rows then draw
from copies of the states without the GIL, and any other use of those
generators waits until the call writes the states back.
"""
import _thread
import copyreg
import operator
import os
import threading
from collections.abc import Mapping, Set

import numpy as np

cimport numpy as cnp
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint64_t

cnp.import_array()

_U64 = 1 << 64
_NAME = "xoshiro256+"


cdef uint64_t seed_word(object seed) except? 0:
    """The 64-bit seed of ``Rng(seed)``: an int in [0, 2**64), or None for OS entropy."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    if isinstance(seed, (bool, float)):
        raise TypeError(f"seed must be an int in [0, 2**64) or None, not {type(seed).__name__}")
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seed must be an int in [0, 2**64) or None, not {type(seed).__name__}") from None
    if not 0 <= value < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {value}")
    return value


cdef Py_ssize_t array_size(object size) except -1:
    if isinstance(size, (bool, float)):
        raise TypeError(f"size must be an int or None, not {type(size).__name__}")
    n = operator.index(size)
    if not 0 <= n <= PY_SSIZE_T_MAX // 8:
        raise ValueError(f"size must be non-negative and fit in memory, got {n}")
    return n


cdef check_words(object words):
    """Refuse what iterates but not as four ordered words: a dict (its keys), a set,
    str or bytes (characters), an array or buffer that is not 1-D of an integer type."""
    if isinstance(words, (cnp.ndarray, memoryview)):
        arr = np.asarray(words)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError("state['s'] must be a sequence of four ints (a list, tuple or "
                            f"1-D integer array), not a {arr.ndim}-D {arr.dtype} "
                            f"{type(words).__name__}")
    elif isinstance(words, (Mapping, Set, str, bytes, bytearray)):
        raise TypeError("state['s'] must be a sequence of four ints (a list, tuple or "
                        f"1-D integer array), not {type(words).__name__}")


def seeded_states(seeds):
    """(n, 4) uint64: row i is the state of ``Rng(seeds[i])``."""
    cdef cnp.ndarray keys = np.ascontiguousarray(seeds, dtype=np.uint64)
    cdef Py_ssize_t i, n = keys.shape[0]
    cdef cnp.ndarray out = np.empty((n, 4), dtype=np.uint64)
    cdef uint64_t* key_data = <uint64_t*>cnp.PyArray_DATA(keys)
    cdef xoshiro256plus_state* states = <xoshiro256plus_state*>cnp.PyArray_DATA(out)
    with nogil:
        for i in range(n):
            xoshiro256plus_seed(&states[i], key_data[i])
    return out


cdef class Rng:
    """xoshiro256+ pseudo-random generator (Blackman & Vigna).

    ``Rng(seed)`` takes an int in [0, 2**64); ``Rng()`` or ``Rng(None)`` seeds
    from OS entropy.  ``random()`` returns ``(next() >> 11) * 2**-53``.
    """

    def __cinit__(self, *args, **kwargs):
        xoshiro256plus_seed(&self.c_state, 0)     # never the stuck all-zero state

    def __init__(self, seed=None):
        cdef uint64_t word = seed_word(seed)
        ready(self)
        xoshiro256plus_seed(&self.c_state, word)

    def random(self, size=None):
        """One float in [0, 1), or a float64 array of ``size`` of them."""
        cdef cnp.ndarray out
        cdef double* data
        cdef Py_ssize_t i, n
        ready(self)
        if size is None:
            return xoshiro256plus_next_double(&self.c_state)
        n = array_size(size)
        out = np.empty(n, dtype=np.float64)
        ready(self)                 # again: code run since (a collection) may have waited
        data = <double*>cnp.PyArray_DATA(out)
        for i in range(n):         # with the GIL: the generator may be shared
            data[i] = xoshiro256plus_next_double(&self.c_state)
        return out

    def next_uint64(self, size=None):
        """The next raw 64-bit output as an int, or a uint64 array of ``size`` of them."""
        cdef cnp.ndarray out
        cdef uint64_t* data
        cdef Py_ssize_t i, n
        ready(self)
        if size is None:
            return xoshiro256plus_next(&self.c_state)
        n = array_size(size)
        out = np.empty(n, dtype=np.uint64)
        ready(self)
        data = <uint64_t*>cnp.PyArray_DATA(out)
        for i in range(n):         # with the GIL: the generator may be shared
            data[i] = xoshiro256plus_next(&self.c_state)
        return out

    def jump(self):
        """Advance by 2**128 steps (the published jump); returns self.

        ``n`` successive jumps give ``n`` non-overlapping streams of 2**128 draws.
        """
        ready(self)
        xoshiro256plus_jump(&self.c_state)
        return self

    @property
    def state(self):
        """``{"bit_generator": "xoshiro256+", "s": (s0, s1, s2, s3)}``; assignable.

        Assigned words come in order: a list, tuple, 1-D integer array or other
        ordered iterable, not a dict, set, str or bytes.
        """
        ready(self)
        return {"bit_generator": _NAME, "s": tuple(self.c_state.s[i] for i in range(4))}

    @state.setter
    def state(self, value):
        if not isinstance(value, dict) or value.get("bit_generator") != _NAME:
            raise ValueError(f"state must be a dict with bit_generator={_NAME!r}")
        words = value.get("s")
        check_words(words)
        try:
            words = list(words)
            if any(isinstance(w, (bool, float)) for w in words):
                raise TypeError
            words = [operator.index(w) for w in words]
        except TypeError:
            raise TypeError("state['s'] must hold four ints") from None
        if len(words) != 4 or not all(0 <= w < _U64 for w in words):
            raise ValueError("state['s'] must hold four ints in [0, 2**64)")
        if not any(words):
            raise ValueError("state['s'] must not be all zero (xoshiro256+ would stay at zero)")
        ready(self)
        for i in range(4):
            self.c_state.s[i] = words[i]

    def __reduce__(self):
        # A subclass keeps its type and its attributes: what its own __getstate__
        # returns, else its __dict__ and its __slots__ (a (dict, slots) pair, as
        # object.__reduce_ex__ gives them).
        cls = type(self)
        if any("__getstate__" in vars(klass) for klass in cls.__mro__[:cls.__mro__.index(Rng)]):
            return (_from_state, (self.state, cls), self.__getstate__())
        attributes = getattr(self, "__dict__", None)
        slots = {name: getattr(self, name) for name in copyreg._slotnames(cls)
                 if hasattr(self, name)}
        return (_from_state, (self.state, cls), (attributes, slots) if slots else attributes)

    def __repr__(self):
        # Neither waits nor raises while a call holds the generator: says so instead.
        words = tuple(self.c_state.s[i] for i in range(4))
        if self.held_by is not None:
            return f"Rng(state={words}, held by a verify_batch call)"
        return f"Rng(state={words})"


cdef int wait_until_free(Rng rng) except -1:
    """Wait (without the GIL) until no ``verify_batch`` call holds ``rng``.

    Code run on a thread that such a call may be waiting for (a signal handler,
    a finalizer, a profiler) gets a RuntimeError instead: on the holding
    thread, on a thread holding generators for a call of its own (two such
    threads could wait for each other), and on a ``verify_batch`` pool thread."""
    me = _thread.get_ident()
    while rng.held_by is not None:
        lock, thread = rng.held_by
        if thread == me:
            raise RuntimeError("this Rng is held by a verify_batch call on this thread; "
                               "it cannot be used until that call returns")
        if me in HOLDERS or getattr(POOL_THREAD, "never_waits", False):
            raise RuntimeError("this Rng is held by a verify_batch call, which this thread "
                               "cannot wait for: " + ("it holds generators for a call of its own"
                                                      if me in HOLDERS else
                                                      "it is a verify_batch worker thread"))
        lock.acquire()
        lock.release()
    return 0


# The generators of each StateHold not yet released, by its address: a forked
# child lets them go (no call runs there to release them).
cdef dict HELD = {}
# How many holds each thread has now, by its ident.
cdef dict HOLDERS = {}
# Marks verify_batch's pool threads, which never wait for a hold (a thread-local: it
# goes with its thread, whose ident a later thread may get).
POOL_THREAD = threading.local()


def never_wait_on_this_thread():
    """For each of ``verify_batch``'s pool threads, as it starts: a call holding its
    generators may be waiting for the thread, which must not wait for the call."""
    POOL_THREAD.never_waits = True


cdef class StateHold:
    """What a ``verify_batch`` call holds while its rows draw from B generators
    (``hold_states``).  Until ``release``, or until the hold is freed, any other
    use of those generators waits.  Each generator's ``held_by`` is the hold's
    (lock, thread) pair, not the hold: a hold dropped unreleased is freed at
    once, and lets them go."""
    cdef tuple generators
    cdef tuple mark                 # (a lock held until release, the holding thread's ident)
    # (B, 4) uint64 copies of the states, to draw from without the GIL; or None: the
    # rows draw from the generators in place, with the GIL held.
    cdef readonly object states

    def release(self, bint write_back):
        """Let the generators go; with the copies' states when ``write_back`` (the rows
        ran to their end), else as they were.  Later calls do nothing."""
        self.let_go(write_back)

    cdef void let_go(self, bint write_back) noexcept:
        cdef Rng rng
        cdef Py_ssize_t b
        cdef xoshiro256plus_state* states = NULL
        if self.generators is None:
            return
        if write_back and self.states is not None:
            states = <xoshiro256plus_state*>cnp.PyArray_DATA(self.states)
        for b in range(len(self.generators)):
            rng = <Rng>self.generators[b]
            if states != NULL:
                rng.c_state = states[b]
            rng.held_by = None
        self.generators = None
        HELD.pop(<size_t><void*>self, None)
        holder = self.mark[1]
        if HOLDERS.get(holder, 0) > 1:
            HOLDERS[holder] -= 1
        else:
            HOLDERS.pop(holder, None)
        (<object>self.mark[0]).release()

    def __dealloc__(self):
        self.let_go(False)


def hold_states(tuple generators):
    """Hold B distinct generators for a ``verify_batch`` call; waits while another
    call holds one of them.  The hold's ``states`` are copies of theirs, or None if
    one of them is being drawn from in place by a ``speculative_decode_sim`` call
    that has run user code (which would not see the hold)."""
    cdef Py_ssize_t b, B = len(generators)
    cdef Rng rng
    cdef StateHold hold = StateHold.__new__(StateHold)
    cdef xoshiro256plus_state* states
    cdef bint in_place = False
    for b in range(B):
        rng = generators[b]         # refuses anything but an Rng
    copies = np.empty((B, 4), dtype=np.uint64)
    states = <xoshiro256plus_state*>cnp.PyArray_DATA(copies)
    lock = _thread.allocate_lock()
    lock.acquire()
    hold.mark = (lock, _thread.get_ident())
    b = 0
    while b < B:                    # restarts after each wait: the GIL was let go
        rng = generators[b]
        b += 1
        if rng.held_by is not None:
            wait_until_free(rng)
            b = 0
    # From here on nothing lets the GIL go: no other thread sees them half held.
    for b in range(B):
        rng = <Rng>generators[b]
        in_place = in_place or rng.drawing_calls > 0
        states[b] = rng.c_state
        rng.held_by = hold.mark
    hold.generators = generators
    hold.states = None if in_place else copies
    HELD[<size_t><void*>hold] = generators
    HOLDERS[hold.mark[1]] = HOLDERS.get(hold.mark[1], 0) + 1
    return hold


def _free_holds_after_fork():
    """In a forked child: no call runs there to release what a parent's thread held,
    and the parent's other threads are gone."""
    for generators in HELD.values():
        for rng in generators:
            (<Rng>rng).held_by = None
    HELD.clear()
    HOLDERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_holds_after_fork)


def _from_state(state, cls=Rng):
    """Unpickle: a ``cls`` (Rng or a subclass) with this state."""
    rng = cls.__new__(cls)
    rng.state = state
    return rng
