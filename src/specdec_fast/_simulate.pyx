"""The nogil Monte Carlo kernel behind ``specdec_fast.simulate``.

A scenario is ``K`` fixed per-position pairs (draft ``q_i``, target ``p_i``)
and, optionally, a bonus row ``p_K``.  The distributions do not change from
trial to trial, so everything a trial reads is built once per scenario and
position (``Scenarios``):

- alias tables (Walker 1977, built with Vose's 1991 method by ``alias_tables``)
  of ``q_i``, of the residual ``max(0, p_i - q_i)`` and of the bonus row
  ``p_K``, so that drawing a token costs one uniform and one table lookup,
  whatever the vocabulary size;
- the acceptance ratios ``p_i[v] / q_i[v]``.

One trial is one verify step, drawing from the chunk's xoshiro256+ stream in
this order: for each position reached, the draft token (from ``q_i``) and the
accept test ``u < p_i(t) / q_i(t)``; on a rejection the correction token (from
the residual); then the bonus token (from ``p_K``) when every draft passed or,
under the reference's rule R6, also after a rejection at the last position.
Drafts past the first rejection cannot change the step and are not drawn.

Each chunk of trials runs on its own stream and writes its own counters, so
the totals do not depend on which thread ran which chunk.
"""
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from specdec_fast._rng cimport (xoshiro256plus_jump, xoshiro256plus_next_double,
                                xoshiro256plus_seed, xoshiro256plus_state)

cnp.import_array()


cdef inline Py_ssize_t alias_sample(const double* prob, const int32_t* alias, Py_ssize_t n,
                                    double u) noexcept nogil:
    """A token from an alias table: column ``floor(u n)``, kept with probability
    ``prob`` (the fractional part of ``u n`` is the second uniform), else its alias."""
    cdef double x = u * <double>n
    cdef Py_ssize_t i = <Py_ssize_t>x
    if i >= n:
        i = n - 1
    if x - <double>i < prob[i]:
        return i
    return alias[i]


cdef int build_alias(const double* w, Py_ssize_t n, double* prob, int32_t* alias,
                     double* scaled, int32_t* small, int32_t* large) noexcept nogil:
    """Vose's alias method for the non-negative weights ``w`` (positive sum).

    Column ``i`` keeps token ``i`` with probability ``prob[i]`` and otherwise
    gives ``alias[i]``; a token of weight 0 is never returned.  Returns -1 when
    the weights sum to 0.
    """
    cdef double total = 0.0
    cdef Py_ssize_t i, ns = 0, nl = 0, last = -1
    cdef int32_t l, g
    for i in range(n):
        total += w[i]
        if w[i] > 0.0:
            last = i
    if not total > 0.0:
        return -1
    for i in range(n):
        scaled[i] = w[i] * <double>n / total
        if scaled[i] < 1.0:
            small[ns] = <int32_t>i
            ns += 1
        else:
            large[nl] = <int32_t>i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        l = small[ns]
        g = large[nl - 1]
        prob[l] = scaled[l]
        alias[l] = g
        scaled[g] = (scaled[g] + scaled[l]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    while nl > 0:                     # what is left is full, up to rounding
        nl -= 1
        prob[large[nl]] = 1.0
        alias[large[nl]] = large[nl]
    while ns > 0:
        ns -= 1
        l = small[ns]
        if w[l] > 0.0:
            prob[l] = 1.0
            alias[l] = l
        else:                         # only after heavy rounding: never return l
            prob[l] = 0.0
            alias[l] = <int32_t>last
    return 0


def alias_tables(weights):
    """``(prob, alias)``: alias tables of the rows of ``weights`` (..., V) float64.

    ``prob`` float64 and ``alias`` int32, both of the shape of ``weights``.
    Every row must be non-negative with a positive sum; V < 2**31.
    """
    cdef cnp.ndarray w = cnp.PyArray_FROMANY(weights, cnp.NPY_DOUBLE, 1, 0,
                                             cnp.NPY_ARRAY_C_CONTIGUOUS)
    if cnp.PyArray_NDIM(w) < 1:
        raise ValueError("weights must have at least one axis")
    cdef Py_ssize_t n = cnp.PyArray_DIM(w, cnp.PyArray_NDIM(w) - 1)
    if n < 1 or n >= 2**31:
        raise ValueError(f"rows must hold 1 to 2**31 - 1 entries, got {n}")
    cdef Py_ssize_t rows = cnp.PyArray_SIZE(w) // n, r
    cdef cnp.ndarray prob = cnp.PyArray_ZEROS(w.ndim, w.shape, cnp.NPY_DOUBLE, 0)
    cdef cnp.ndarray alias = cnp.PyArray_ZEROS(w.ndim, w.shape, cnp.NPY_INT32, 0)
    cdef const double* wd = <const double*>cnp.PyArray_DATA(w)
    cdef double* pd = <double*>cnp.PyArray_DATA(prob)
    cdef int32_t* ad = <int32_t*>cnp.PyArray_DATA(alias)
    cdef double* scaled = <double*>malloc(n * sizeof(double))
    cdef int32_t* small = <int32_t*>malloc(n * sizeof(int32_t))
    cdef int32_t* large = <int32_t*>malloc(n * sizeof(int32_t))
    cdef int bad = 0
    try:
        if scaled == NULL or small == NULL or large == NULL:
            raise MemoryError()
        with nogil:
            for r in range(rows):
                if build_alias(wd + r * n, n, pd + r * n, ad + r * n, scaled, small, large):
                    bad = 1
                    break
    finally:
        free(scaled)
        free(small)
        free(large)
    if bad:
        raise ValueError("every row must have a positive sum")
    return prob, alias


cdef struct Tables:
    const double* q_prob
    const int32_t* q_alias
    const double* ratio
    const double* r_prob
    const int32_t* r_alias
    const double* b_prob
    const int32_t* b_alias
    Py_ssize_t K
    Py_ssize_t V
    bint bonus
    bint reference


cdef void run_trials(Tables* t, xoshiro256plus_state* st, int64_t trials,
                     int64_t* accepted_hist, int64_t* emitted_hist,
                     int64_t* token_counts) noexcept nogil:
    """``trials`` verify steps; counts accepted drafts (0..K) and emitted tokens (0..K+1).

    ``token_counts`` (NULL to skip): (K + 1, V) counts of the token emitted at
    each output slot.
    """
    cdef int64_t n
    cdef Py_ssize_t K = t.K, V = t.V, i, a, token, row
    cdef bint rejected
    cdef double u
    for n in range(trials):
        a = 0
        rejected = False
        for i in range(K):
            row = i * V
            token = alias_sample(t.q_prob + row, t.q_alias + row, V,
                                 xoshiro256plus_next_double(st))
            u = xoshiro256plus_next_double(st)
            if u < t.ratio[row + token]:
                if token_counts != NULL:
                    token_counts[row + token] += 1
                a += 1
                continue
            token = alias_sample(t.r_prob + row, t.r_alias + row, V,
                                 xoshiro256plus_next_double(st))
            if token_counts != NULL:
                token_counts[row + token] += 1
            rejected = True
            break
        accepted_hist[a] += 1
        if t.bonus and (not rejected or (t.reference and a == K - 1)):
            token = alias_sample(t.b_prob, t.b_alias, V, xoshiro256plus_next_double(st))
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


cdef const void* data(cnp.ndarray a, int typenum, tuple shape, str name) except NULL:
    if (cnp.PyArray_TYPE(a) != typenum or (<object>a).shape != shape
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        raise ValueError(f"{name} must be a C-contiguous array of shape {shape} "
                         f"and type {cnp.PyArray_DescrFromType(typenum)}")
    return cnp.PyArray_DATA(a)


cdef class Scenarios:
    """The per-scenario tables, kept alive and checked once; ``run`` simulates a chunk.

    ``Scenarios(q_prob, q_alias, ratio, r_prob, r_alias, b_prob, b_alias, bonus,
    reference)``: alias tables (``alias_tables``) of the drafts ``q_i`` and of
    the residuals, (S, K, V) float64 / int32; the ratios ``p_i / q_i`` (S, K, V)
    float64; alias tables of the bonus rows (S, V), ignored when ``bonus`` is
    false.
    """

    cdef tuple _arrays
    cdef const double* q_prob
    cdef const int32_t* q_alias
    cdef const double* ratio
    cdef const double* r_prob
    cdef const int32_t* r_alias
    cdef const double* b_prob
    cdef const int32_t* b_alias
    cdef readonly Py_ssize_t S, K, V
    cdef readonly bint bonus, reference

    def __init__(self, cnp.ndarray q_prob, cnp.ndarray q_alias, cnp.ndarray ratio,
                 cnp.ndarray r_prob, cnp.ndarray r_alias, cnp.ndarray b_prob,
                 cnp.ndarray b_alias, bint bonus, bint reference):
        if cnp.PyArray_NDIM(q_prob) != 3:
            raise ValueError("q_prob must be 3-D (S, K, V)")
        self.S = cnp.PyArray_DIM(q_prob, 0)
        self.K = cnp.PyArray_DIM(q_prob, 1)
        self.V = cnp.PyArray_DIM(q_prob, 2)
        if self.V < 1 or self.V >= 2**31:
            raise ValueError("the vocabulary must hold 1 to 2**31 - 1 tokens")
        shape3, shape2 = (self.S, self.K, self.V), (self.S, self.V)
        self.q_prob = <const double*>data(q_prob, cnp.NPY_DOUBLE, shape3, "q_prob")
        self.q_alias = <const int32_t*>data(q_alias, cnp.NPY_INT32, shape3, "q_alias")
        self.ratio = <const double*>data(ratio, cnp.NPY_DOUBLE, shape3, "ratio")
        self.r_prob = <const double*>data(r_prob, cnp.NPY_DOUBLE, shape3, "r_prob")
        self.r_alias = <const int32_t*>data(r_alias, cnp.NPY_INT32, shape3, "r_alias")
        self.b_prob = <const double*>data(b_prob, cnp.NPY_DOUBLE, shape2, "b_prob")
        self.b_alias = <const int32_t*>data(b_alias, cnp.NPY_INT32, shape2, "b_alias")
        for name, arr in (("q_alias", q_alias), ("r_alias", r_alias), ("b_alias", b_alias)):
            if arr.size and not (0 <= (<object>arr).min() and (<object>arr).max() < self.V):
                raise ValueError(f"{name} must hold tokens in [0, V)")
        self._arrays = (q_prob, q_alias, ratio, r_prob, r_alias, b_prob, b_alias)
        self.bonus = bonus
        self.reference = reference

    def run(self, Py_ssize_t s, cnp.ndarray state, int64_t trials,
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
        cdef Py_ssize_t block = s * self.K * self.V
        t.q_prob = self.q_prob + block
        t.q_alias = self.q_alias + block
        t.ratio = self.ratio + block
        t.r_prob = self.r_prob + block
        t.r_alias = self.r_alias + block
        t.b_prob = self.b_prob + s * self.V
        t.b_alias = self.b_alias + s * self.V
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
