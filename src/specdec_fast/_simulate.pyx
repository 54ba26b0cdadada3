"""The nogil Monte Carlo kernel behind ``specdec_fast.simulate``.

A scenario is ``K`` fixed per-position pairs (draft ``q_i``, target ``p_i``)
and, optionally, a bonus row ``p_K``.  The Python layer (``simulate.py``)
normalises the rows and precomputes, once per scenario and position, the
tables every trial reads (all float64, C-contiguous):

``cdf_q``      (S, K, V)  prefix sums of ``q_i``
``ratio``      (S, K, V)  ``p_i[v] / q_i[v]`` (unused where ``q_i[v] == 0``)
``cdf_r``      (S, K, V)  prefix sums of the residual ``max(0, p_i - q_i)``
``cdf_b``      (S, V)     prefix sums of the bonus row ``p_K`` (ignored without one)

Sampling from a row is by inverse CDF: ``x = u * total`` and the first ``v``
with ``cdf[v] > x``, found by binary search.  The strict ``>`` never returns a
token of zero mass; when rounding leaves ``x >= total`` the last token of
positive mass is taken (``last`` arrays).

One trial is one verify step, drawing from the chunk's xoshiro256+ stream in
this order: for each position reached, the draft token (inverse CDF of
``q_i``) and the accept test ``u < p_i(t) / q_i(t)``; on a rejection the
correction token (inverse CDF of the residual); then the bonus token (inverse
CDF of ``p_K``) when every draft passed, or, under the reference's rule R6,
also after a rejection at the last position.  Drafts past the first rejection
cannot change the step and are not drawn.

Each chunk of trials runs on its own stream and writes its own counters, so
the totals do not depend on which thread ran which chunk.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from specdec_fast._rng cimport (xoshiro256plus_jump, xoshiro256plus_next_double,
                                xoshiro256plus_seed, xoshiro256plus_state)

cnp.import_array()


cdef inline Py_ssize_t search(const double* cdf, Py_ssize_t n, double total, Py_ssize_t last,
                              double u) noexcept nogil:
    """The first ``v`` with ``cdf[v] > u * total``; ``last`` when there is none."""
    cdef double x = u * total
    cdef const double* base = cdf
    cdef Py_ssize_t length = n, half
    while length > 1:
        half = length >> 1
        base = base + half if base[half - 1] <= x else base
        length -= half
    if base[0] > x:
        return base - cdf
    if base - cdf + 1 < n:
        return base - cdf + 1
    return last


cdef struct Tables:
    const double* cdf_q
    const double* tot_q
    const Py_ssize_t* last_q
    const double* ratio
    const double* cdf_r
    const double* tot_r
    const Py_ssize_t* last_r
    const double* cdf_b
    double tot_b
    Py_ssize_t last_b
    Py_ssize_t K
    Py_ssize_t V
    bint bonus
    bint reference


cdef void run_trials(Tables* t, xoshiro256plus_state* st, Py_ssize_t trials,
                     int64_t* accepted_hist, int64_t* emitted_hist,
                     int64_t* token_counts) noexcept nogil:
    """``trials`` verify steps; counts accepted drafts (0..K) and emitted tokens (0..K+1).

    ``token_counts`` (NULL to skip): (K + 1, V) counts of the token emitted at
    each output slot.
    """
    cdef Py_ssize_t K = t.K, V = t.V, n, i, a, token, row
    cdef bint rejected
    cdef double u
    for n in range(trials):
        a = 0
        rejected = False
        for i in range(K):
            row = i * V
            u = xoshiro256plus_next_double(st)
            token = search(t.cdf_q + row, V, t.tot_q[i], t.last_q[i], u)
            u = xoshiro256plus_next_double(st)
            if u < t.ratio[row + token]:
                if token_counts != NULL:
                    token_counts[row + token] += 1
                a += 1
                continue
            u = xoshiro256plus_next_double(st)
            token = search(t.cdf_r + row, V, t.tot_r[i], t.last_r[i], u)
            if token_counts != NULL:
                token_counts[row + token] += 1
            rejected = True
            break
        accepted_hist[a] += 1
        if t.bonus and (not rejected or (t.reference and a == K - 1)):
            u = xoshiro256plus_next_double(st)
            token = search(t.cdf_b, V, t.tot_b, t.last_b, u)
            if token_counts != NULL:
                token_counts[K * V + token] += 1
            emitted_hist[K + 1] += 1
        elif rejected:
            emitted_hist[a + 1] += 1
        else:
            emitted_hist[K] += 1          # all K accepted, no bonus row


def chunk_states(keys, Py_ssize_t chunks):
    """(S, chunks, 4) uint64: chunk ``c`` of scenario ``s`` starts at ``Rng(keys[s])``
    advanced by ``c`` jumps of 2**128 steps (non-overlapping streams)."""
    cdef cnp.ndarray k = cnp.PyArray_FROMANY(keys, cnp.NPY_UINT64, 1, 1,
                                             cnp.NPY_ARRAY_C_CONTIGUOUS)
    cdef Py_ssize_t S = cnp.PyArray_DIM(k, 0), s, c
    cdef cnp.ndarray out = cnp.PyArray_ZEROS(3, [S, chunks, 4], cnp.NPY_UINT64, 0)
    cdef const uint64_t* key_data = <const uint64_t*>cnp.PyArray_DATA(k)
    cdef xoshiro256plus_state* states = <xoshiro256plus_state*>cnp.PyArray_DATA(out)
    cdef xoshiro256plus_state st
    with nogil:
        for s in range(S):
            xoshiro256plus_seed(&st, key_data[s])
            for c in range(chunks):
                memcpy(&states[s * chunks + c], &st, sizeof(xoshiro256plus_state))
                xoshiro256plus_jump(&st)
    return out


cdef const double* f64(cnp.ndarray a, int ndim, str name) except NULL:
    if (cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D float64 array")
    return <const double*>cnp.PyArray_DATA(a)


cdef const Py_ssize_t* intp(cnp.ndarray a, int ndim, str name) except NULL:
    if (cnp.PyArray_TYPE(a) != cnp.NPY_INTP or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D intp array")
    return <const Py_ssize_t*>cnp.PyArray_DATA(a)


cdef class Scenarios:
    """The per-scenario tables, kept alive and checked once; ``run`` simulates a chunk."""

    cdef tuple _arrays
    cdef const double* cdf_q
    cdef const double* tot_q
    cdef const Py_ssize_t* last_q
    cdef const double* ratio
    cdef const double* cdf_r
    cdef const double* tot_r
    cdef const Py_ssize_t* last_r
    cdef const double* cdf_b
    cdef const double* tot_b
    cdef const Py_ssize_t* last_b
    cdef readonly Py_ssize_t S, K, V
    cdef readonly bint bonus, reference

    def __init__(self, cnp.ndarray cdf_q, cnp.ndarray tot_q, cnp.ndarray last_q,
                 cnp.ndarray ratio, cnp.ndarray cdf_r, cnp.ndarray tot_r, cnp.ndarray last_r,
                 cnp.ndarray cdf_b, cnp.ndarray tot_b, cnp.ndarray last_b,
                 bint bonus, bint reference):
        self._arrays = (cdf_q, tot_q, last_q, ratio, cdf_r, tot_r, last_r, cdf_b, tot_b, last_b)
        self.cdf_q = f64(cdf_q, 3, "cdf_q")
        self.S = cnp.PyArray_DIM(cdf_q, 0)
        self.K = cnp.PyArray_DIM(cdf_q, 1)
        self.V = cnp.PyArray_DIM(cdf_q, 2)
        if self.V < 1:
            raise ValueError("the vocabulary must hold at least one token")
        shape3, shape2, shape1 = (self.S, self.K, self.V), (self.S, self.K), (self.S,)
        for name, arr, shape in (("ratio", ratio, shape3), ("cdf_r", cdf_r, shape3),
                                 ("tot_q", tot_q, shape2), ("tot_r", tot_r, shape2),
                                 ("last_q", last_q, shape2), ("last_r", last_r, shape2),
                                 ("cdf_b", cdf_b, (self.S, self.V)), ("tot_b", tot_b, shape1),
                                 ("last_b", last_b, shape1)):
            if (<object>arr).shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {(<object>arr).shape}")
        self.tot_q = f64(tot_q, 2, "tot_q")
        self.last_q = intp(last_q, 2, "last_q")
        self.ratio = f64(ratio, 3, "ratio")
        self.cdf_r = f64(cdf_r, 3, "cdf_r")
        self.tot_r = f64(tot_r, 2, "tot_r")
        self.last_r = intp(last_r, 2, "last_r")
        self.cdf_b = f64(cdf_b, 2, "cdf_b")
        self.tot_b = f64(tot_b, 1, "tot_b")
        self.last_b = intp(last_b, 1, "last_b")
        for v in (<object>last_q).ravel().tolist() + (<object>last_r).ravel().tolist() + (
                (<object>last_b).ravel().tolist() if bonus else []):
            if not 0 <= v < self.V:
                raise ValueError("last indices must lie in [0, V)")
        self.bonus = bonus
        self.reference = reference

    def run(self, Py_ssize_t s, cnp.ndarray state, Py_ssize_t trials,
            cnp.ndarray accepted_hist, cnp.ndarray emitted_hist, object token_counts=None):
        """Simulate ``trials`` steps of scenario ``s`` without the GIL, adding to the counters.

        ``state``: a (4,) uint64 generator state, advanced in place.
        ``accepted_hist`` (K + 1,) and ``emitted_hist`` (K + 2,) int64 counters;
        ``token_counts``: None or a (K + 1, V) int64 counter of emitted tokens.
        """
        cdef Tables t
        cdef int64_t* tokens = NULL
        cdef cnp.ndarray tc
        if not 0 <= s < self.S:
            raise IndexError(f"scenario {s} is outside [0, {self.S})")
        if trials < 0:
            raise ValueError("trials must be non-negative")
        check_counter(state, cnp.NPY_UINT64, (4,), "state")
        check_counter(accepted_hist, cnp.NPY_INT64, (self.K + 1,), "accepted_hist")
        check_counter(emitted_hist, cnp.NPY_INT64, (self.K + 2,), "emitted_hist")
        if token_counts is not None:
            tc = token_counts
            check_counter(tc, cnp.NPY_INT64, (self.K + 1, self.V), "token_counts")
            tokens = <int64_t*>cnp.PyArray_DATA(tc)
        cdef xoshiro256plus_state* st = <xoshiro256plus_state*>cnp.PyArray_DATA(state)
        if st.s[0] == 0 and st.s[1] == 0 and st.s[2] == 0 and st.s[3] == 0:
            raise ValueError("state must not be all zero")
        t.cdf_q = self.cdf_q + s * self.K * self.V
        t.tot_q = self.tot_q + s * self.K
        t.last_q = self.last_q + s * self.K
        t.ratio = self.ratio + s * self.K * self.V
        t.cdf_r = self.cdf_r + s * self.K * self.V
        t.tot_r = self.tot_r + s * self.K
        t.last_r = self.last_r + s * self.K
        t.cdf_b = self.cdf_b + s * self.V
        t.tot_b = self.tot_b[s]
        t.last_b = self.last_b[s]
        t.K = self.K
        t.V = self.V
        t.bonus = self.bonus
        t.reference = self.reference
        cdef int64_t* acc = <int64_t*>cnp.PyArray_DATA(accepted_hist)
        cdef int64_t* emi = <int64_t*>cnp.PyArray_DATA(emitted_hist)
        with nogil:
            run_trials(&t, st, trials, acc, emi, tokens)


cdef int check_counter(cnp.ndarray a, int typenum, tuple shape, str name) except -1:
    if (cnp.PyArray_TYPE(a) != typenum or (<object>a).shape != shape
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISWRITEABLE(a)):
        raise ValueError(f"{name} must be a writeable C-contiguous array of shape {shape} "
                         f"and type {cnp.PyArray_DescrFromType(typenum)}")
    return 0
