"""Closed forms for draft-target speculative decoding: acceptance, tokens per step, speedup.

One verify step proposes ``K`` draft tokens; position ``i`` (1-based) accepts its
draft with probability ``alpha_i = sum_v min(p_i[v], q_i[v])`` when the draft
token is sampled from ``q_i`` (Leviathan et al. 2023, Definition 3.1 and
Corollary 3.6: ``alpha = 1 - TV(p, q)``).  The positions are independent, so
the number ``A`` of accepted drafts has

    P(A >= j) = alpha_1 * ... * alpha_j        (the probability of reaching j+1)

and the tokens emitted per step are ``N = A + 1`` (the accepted drafts, then a
correction token or, after all ``K`` accepted, the bonus token):

    E[N] = 1 + alpha_1 + alpha_1 alpha_2 + ... + alpha_1 ... alpha_K.

With one ``alpha`` at every position this is the geometric sum
``(1 - alpha^(K+1)) / (1 - alpha)`` (Leviathan et al. 2023, Equation 1; Chen et
al. 2023), evaluated here as a sum so that ``alpha = 1`` (``K + 1`` tokens) and
``alpha = 0`` (one token) need no limit.

Two variants, selected by keyword:

``semantics="reference"``
    The reference implementation's rule R6 (the README's *Semantics*)
    also draws the bonus token after a rejection at the last position ``K``, so
    that outcome emits ``K + 1`` tokens instead of ``K``:
    ``E_ref = E_exact + alpha_1 ... alpha_{K-1} (1 - alpha_K)``, which for one
    alpha is ``alpha^(K-1) (1 - alpha)``.  Under it a step never emits exactly
    ``K`` tokens (for ``K >= 1``).  Rule R2 (a draft with ``q == 0`` ends the
    step empty) cannot fire when drafts are sampled from ``q``, so it changes
    no expectation here.
``bonus=False``
    The target gave no row for position ``K + 1``: after all ``K`` accepted no
    bonus token follows (either semantics), so ``E = E_exact - alpha_1 ... alpha_K``.

Walltime (Leviathan et al. 2023, Theorem 3.8): with ``c`` the cost of one draft
run relative to one target run, a step costs ``K c + 1`` target runs, so the
improvement over plain decoding is ``E[N] / (K c + 1)``, which for one alpha is
``(1 - alpha^(K+1)) / ((1 - alpha)(K c + 1))``.

References: Y. Leviathan, M. Kalman, Y. Matias, "Fast Inference from
Transformers via Speculative Decoding", ICML 2023; C. Chen et al.,
"Accelerating Large Language Model Decoding with Speculative Sampling", 2023.

Alphas are given in one of two forms.  ``k`` given: ``alpha`` holds scalar
acceptance rates (any shape), each the same at every position, and broadcasts
against ``k`` (and ``cost_ratio``).  ``k=None``: the last axis of ``alpha``
holds one rate per position, ``alpha[..., i]`` for position ``i + 1``, and
``K = alpha.shape[-1]``.
"""
import numbers
import operator
from decimal import Decimal

import numpy as np

__all__ = ["acceptance_rate", "expected_tokens", "emitted_distribution", "speedup",
           "optimal_k"]

_SEMANTICS = ("exact", "reference")

#: The largest draft length the closed forms take (``k``, and ``optimal_k``'s ``k_max``).
K_MAX_LIMIT = 10**6
_BLOCK = 1 << 20                    # values per table of E or of speedups


def acceptance_rate(p, q):
    """``alpha = sum_v min(p[v], q[v])`` along the last axis (broadcasting the rest).

    The probability that a draft token sampled from ``q`` passes the test
    ``u < p(t)/q(t)``, and ``1 - TV(p, q)`` for normalised rows (Leviathan et
    al. 2023, Corollary 3.6).  Returns a float for 1-D inputs, else an array of
    the broadcast shape without the last axis.  At most 1: ``alpha <= sum(q)``,
    and a sum that rounds above 1 (rows that agree, float32 rows) is 1.
    """
    p = _reals(p, "p", 0.0)
    q = _reals(q, "q", 0.0)
    if p.ndim == 0 or q.ndim == 0:
        raise ValueError("p and q must have at least one axis (the vocabulary)")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"p and q must have the same vocabulary size, got "
                         f"{p.shape[-1]} and {q.shape[-1]}")
    try:
        alpha = np.minimum(np.minimum(p, q).sum(axis=-1), 1.0)
    except ValueError:
        raise ValueError(f"p and q do not broadcast: shapes {p.shape} and {q.shape}") from None
    return float(alpha) if alpha.ndim == 0 else alpha


def expected_tokens(alpha, k=None, *, semantics="exact", bonus=True):
    """Expected tokens emitted per verify step.

    ``E = sum_{j=0..K} alpha_1 ... alpha_j`` (the ``j = 0`` term is 1): the
    probability of reaching each position, summed.  One alpha:
    ``(1 - alpha^(K+1)) / (1 - alpha)``, and ``K + 1`` at ``alpha = 1``
    (Leviathan et al. 2023, Eq. 1).  ``semantics="reference"`` adds
    ``alpha_1 ... alpha_{K-1} (1 - alpha_K)`` (one alpha:
    ``alpha^(K-1) (1 - alpha)``) for the reference's bonus after a rejection
    at the last position (rule R6); ``bonus=False`` drops the bonus token,
    ``E = sum_{j=0..K-1} alpha_1 ... alpha_j``.

    See the module docstring for the two forms of ``alpha`` / ``k``; with
    ``k`` given, ``alpha`` and ``k`` broadcast.  Returns a float for scalar
    results, else an array.  A scalar ``k`` is summed from the distribution of
    emitted tokens; an array ``k`` from running sums shared by all its ``K``:
    the two agree to a relative ``K * 2**-53`` or so, not always bit for bit.
    """
    semantics = _semantics(semantics)
    bonus = _flag(bonus, "bonus")
    if k is None or np.ndim(k) == 0:
        dist = emitted_distribution(alpha, k, semantics=semantics, bonus=bonus)
        return _out(dist @ np.arange(dist.shape[-1], dtype=np.float64))
    ks = _ks(k)
    a = _alphas(alpha)
    try:
        a, ks = np.broadcast_arrays(a, ks)
    except ValueError:
        raise ValueError(f"alpha and k do not broadcast: shapes {a.shape} and "
                         f"{ks.shape}") from None
    return _tokens_at(a, ks, semantics, bonus)


def emitted_distribution(alpha, k=None, *, semantics="exact", bonus=True):
    """Probabilities of emitting ``0, 1, ..., K + 1`` tokens in one step: shape ``(..., K + 2)``.

    With ``P(A = j) = alpha_1 ... alpha_j (1 - alpha_{j+1})`` for ``j < K`` and
    ``P(A = K) = alpha_1 ... alpha_K`` accepted drafts, a step emits ``j + 1``
    tokens when ``A = j < K`` and ``K + 1`` when ``A = K`` (``K`` with
    ``bonus=False``).  Under ``semantics="reference"`` (rule R6, with a bonus
    row) a rejection at the last position also emits ``K + 1``, so
    ``P(N = K) = 0`` and ``P(N = K + 1) = alpha_1 ... alpha_{K-1}``.  Count 0
    happens only for ``K = 0`` without a bonus row.

    ``k`` (when given) must be a single int here, since it fixes the length
    of the last axis; ``alpha`` may then be an array of scalar rates.
    """
    semantics = _semantics(semantics)
    bonus = _flag(bonus, "bonus")
    a = _alphas(alpha)
    if k is None:
        if a.ndim == 0:
            raise ValueError("alpha must have a last axis of per-position rates when k is None "
                             "(pass k for one alpha at every position)")
        return _distribution(a, semantics, bonus)
    ks = _ks(k)
    if ks.ndim != 0:
        raise ValueError("emitted_distribution needs a single int k (it sets the length "
                         "of the last axis)")
    K = int(ks)
    return _distribution(np.broadcast_to(a[..., None], a.shape + (K,)), semantics, bonus)


def speedup(alpha, k, cost_ratio, *, semantics="exact", bonus=True):
    """Walltime improvement over plain decoding: ``E[tokens per step] / (K c + 1)``.

    Leviathan et al. 2023, Theorem 3.8: ``(1 - alpha^(K+1)) / ((1 - alpha)(K c + 1))``
    for one alpha, where ``c = cost_ratio`` is the time of one draft run over
    the time of one target run (``c >= 0``); a step runs the draft ``K`` times
    and the target once.  Generalised to per-position alphas (``k=None``) and
    to the reference's semantics through ``expected_tokens``.  Broadcasts over
    ``alpha``, ``k`` and ``cost_ratio``.
    """
    c = _reals(cost_ratio, "cost_ratio", 0.0)
    bonus = _flag(bonus, "bonus")
    e = np.asarray(expected_tokens(alpha, k, semantics=semantics, bonus=bonus))
    K = np.shape(np.asarray(alpha))[-1] if k is None else _ks(k)
    try:
        np.broadcast_shapes(e.shape, np.shape(K), c.shape)
    except ValueError:
        raise ValueError(f"alpha, k and cost_ratio do not broadcast: shapes "
                         f"{np.shape(alpha)}, {np.shape(K)} and {c.shape}") from None
    return _out(e / (np.asarray(K, dtype=np.float64) * c + 1.0))


def optimal_k(alpha, cost_ratio, k_max=32, *, semantics="exact", bonus=True):
    """The ``K`` in ``1 .. k_max`` of the largest ``speedup(alpha, K, cost_ratio)``.

    The lowest such ``K`` on ties (``alpha = 0`` with ``c = 0``: 1).  ``alpha``
    (one rate for every position) and ``cost_ratio`` broadcast; returns an int
    for scalar inputs, else an int64 array.  ``K = 0`` (no speculation) has
    speedup 1: when ``speedup(alpha, optimal_k(...), c) < 1`` speculation does
    not pay at all.  ``k_max`` is at most ``K_MAX_LIMIT`` (10**6); time grows
    as the number of alphas times ``k_max``, memory only with ``k_max``.
    """
    k_max = _int(k_max, "k_max", 1)
    if k_max > K_MAX_LIMIT:
        raise ValueError(f"k_max must be at most {K_MAX_LIMIT:,}, got {k_max}")
    semantics = _semantics(semantics)
    bonus = _flag(bonus, "bonus")
    a = _alphas(alpha)
    c = _reals(cost_ratio, "cost_ratio", 0.0)
    try:
        a, c = np.broadcast_arrays(a, c)
    except ValueError:
        raise ValueError(f"alpha and cost_ratio do not broadcast: shapes {a.shape} and "
                         f"{c.shape}") from None
    ks = np.arange(1, k_max + 1)
    flat_a, flat_c = a.ravel(), c.ravel()
    best = np.empty(flat_a.size, dtype=np.int64)
    rows = max(1, _BLOCK // k_max)         # (rows, k_max) speedups at a time
    for start in range(0, flat_a.size, rows):
        block = slice(start, start + rows)
        s = speedup(flat_a[block, None], ks, flat_c[block, None], semantics=semantics,
                    bonus=bonus)
        best[block] = np.argmax(s, axis=-1) + 1       # argmax: the first maximum
    best = best.reshape(a.shape)
    return int(best) if best.ndim == 0 else best


# --------------------------------------------------------------------------

def _distribution(a, semantics, bonus):
    """(..., K) per-position alphas -> (..., K + 2) probabilities of 0 .. K + 1 tokens."""
    K = a.shape[-1]
    lead = a.shape[:-1]
    reach = np.ones(lead + (K + 1,), dtype=np.float64)      # P(A >= j), j = 0 .. K
    if K:
        reach[..., 1:] = np.cumprod(a, axis=-1)
    p_accepted = np.empty_like(reach)                        # P(A = j)
    p_accepted[..., :K] = reach[..., :K] * (1.0 - a)
    p_accepted[..., K] = reach[..., K]
    dist = np.zeros(lead + (K + 2,), dtype=np.float64)
    dist[..., 1:K + 1] = p_accepted[..., :K]                 # A = j < K: j + 1 tokens
    if bonus:
        dist[..., K + 1] += p_accepted[..., K]
        if semantics == "reference" and K >= 1:              # R6: rejection at position K
            dist[..., K + 1] += dist[..., K]
            dist[..., K] = 0.0
    else:
        dist[..., K] += p_accepted[..., K]
    return dist


def _tokens_at(a, ks, semantics, bonus):
    """``E`` for one alpha at every position, ``a`` and ``ks`` of one shape.

    Each distinct alpha gets one table of ``E`` for ``K = 0 ..`` its largest
    ``K`` (``_tokens_table``), so a grid of many ``K`` costs one pass per alpha,
    not one per ``K``.  The tables are built for a few alphas at a time, the
    alphas with the largest ``K`` first, at most about ``_BLOCK`` values each.
    """
    values, inverse = np.unique(a, return_inverse=True)
    inverse, k = inverse.ravel(), ks.ravel()
    top = np.zeros(values.size, dtype=np.int64)
    np.maximum.at(top, inverse, k)                          # each alpha's largest K
    order = np.argsort(-top, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    element_rank = rank[inverse]
    by_rank = np.argsort(element_rank, kind="stable")
    sorted_rank = element_rank[by_rank]
    out = np.empty(k.size, dtype=np.float64)
    start = 0
    while start < values.size:
        width = int(top[order[start]]) + 1
        stop = start + max(1, _BLOCK // width)
        table = _tokens_table(values[order[start:stop]], width - 1, semantics, bonus)
        lo, hi = np.searchsorted(sorted_rank, [start, stop])
        members = by_rank[lo:hi]
        out[members] = table[element_rank[members] - start, k[members]]
        start = stop
    return out.reshape(a.shape)


def _tokens_table(alphas, K, semantics, bonus):
    """(n, K + 1): ``E`` for each alpha at every position and ``K' = 0 .. K``.

    The terms are those of ``emitted_distribution`` times their counts, summed
    left to right: ``E(K') = sum_{j<K'} (j + 1) alpha^j (1 - alpha)`` plus
    ``(K' + 1) alpha^K'`` for the bonus (``K' alpha^K'`` without it), plus
    ``alpha^(K'-1) (1 - alpha)`` under rule R6.  Each term is positive, so the
    running sums (``np.cumsum``) have a relative error below about
    ``K' * 2**-53`` (measured against a 60-digit closed form: ``13 * 2**-53``
    at alpha = 0.9, K' = 1000, and ``311 * 2**-53`` at alpha = 0.999,
    K' = 10**5).
    """
    j = np.arange(K + 1, dtype=np.float64)
    miss = (1.0 - alphas)[:, None]
    power = np.ones((alphas.size, K + 1), dtype=np.float64)     # alpha^j
    if K:
        power[:, 1:] = np.cumprod(np.broadcast_to(alphas[:, None], (alphas.size, K)), axis=-1)
    rejected = np.zeros_like(power)                             # E's terms for A < K'
    rejected[:, 1:] = np.cumsum((j[:-1] + 1.0) * power[:, :-1] * miss, axis=-1)
    if not bonus:
        return rejected + j * power
    tokens = rejected + (j + 1.0) * power
    if semantics == "reference":                                # R6: rejection at K'
        tokens[:, 1:] += power[:, :-1] * miss
    return tokens


def _out(x):
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _ks(k):
    """Draft lengths in [0, K_MAX_LIMIT] (beyond it a table of E would not fit in memory)."""
    if np.ndim(k) == 0:
        value = _int(k, "k")
        if value > K_MAX_LIMIT:
            raise ValueError(f"k must be at most {K_MAX_LIMIT:,}, got {value}")
        arr = np.asarray(value, dtype=np.int64)
    else:
        arr = np.asarray(k)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"k must be an int or an int array, not {arr.dtype}")
        if (arr < 0).any():
            raise ValueError(f"k must be at least 0, got {arr.min()}")
    if (arr > K_MAX_LIMIT).any():
        raise ValueError(f"k must be at most {K_MAX_LIMIT:,}, got {arr.max()}")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------
# Argument checks, shared with synthetic, simulate and cli (this module imports
# none of them).  Every message names the argument.

def _int(x, name, least=0):
    """``x`` as a Python int >= ``least``: ints and NumPy ints, not bools or floats."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(x).__name__}") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")
    return value


def _reals(x, name, low=-np.inf, high=np.inf):
    """``x`` as a float64 array of finite numbers in ``[low, high]``.

    Only real numbers (NumPy kinds f, i, u, b, or objects that are
    ``numbers.Real``, such as ``Fraction``, or ``Decimal``): strings, bytes and
    arrays of other dtypes (str, complex, ...) are refused, not converted.
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a real number or an array of them, not "
                        f"{type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or an array of them") from None
    if arr.dtype.kind not in "fiub" and not (
            arr.dtype.kind == "O" and all(isinstance(v, (numbers.Real, Decimal))
                                          for v in arr.flat)):
        raise TypeError(f"{name} must be a real number or an array of them, got dtype "
                        f"{arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~(np.isfinite(arr) & (arr >= low) & (arr <= high))
    if bad.any():
        if high < np.inf:
            bounds = f" and in [{low:g}, {high:g}]"
        elif low > -np.inf:
            bounds = f" and >= {low:g}"
        else:
            bounds = ""
        raise ValueError(f"{name} must be finite{bounds}, got {float(arr[bad][0])!r}")
    return arr


#: How far above 1 an alpha may be and count as 1: a float64 sum of probabilities
#: that add to 1 rounds up by up to about ``V * 2**-53``.
ALPHA_ROUNDING = 1e-9


def _alphas(x):
    """Acceptance rates as a float64 array in [0, 1] (values up to ``ALPHA_ROUNDING``
    above 1 are rounding, and become 1)."""
    return np.minimum(_reals(x, "alpha", 0.0, 1.0 + ALPHA_ROUNDING), 1.0)


def _real(x, name, low=-np.inf, high=np.inf):
    """One finite number in ``[low, high]``, as a float."""
    arr = _reals(x, name, low, high)
    if arr.ndim:
        raise TypeError(f"{name} must be a single number, got shape {arr.shape}")
    return float(arr)


def _flag(x, name):
    """``x`` as a bool: a Python or NumPy bool, not any truthy object."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, not {type(x).__name__}")
    return bool(x)


def _semantics(semantics):
    if not isinstance(semantics, str) or semantics not in _SEMANTICS:
        raise ValueError(f"semantics must be 'exact' or 'reference', got {semantics!r}")
    return semantics


def _probabilities(x, name):
    """``x`` as a 2-D (K, V) or 3-D (S, K, V) float64 array of a real dtype."""
    if x is None:
        raise TypeError(f"{name} must be an array, not None")
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        where = _ragged(x, name)
        raise ValueError(f"{name} must be a rectangular (K, V) or (S, K, V) array"
                         + (f": {where}" if where else f" ({exc})")) from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (K, V) or 3-D (S, K, V), got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _ragged(x, name):
    """Where nested lists ``x`` stop being rectangular: ``x[1] has 3 entries where x[0] has 4``.

    Every entry at depth ``d`` (up to 3) is compared with the first one there,
    ``x[0]...[0]``, level by level; None when no entry differs.
    """
    def size(y):
        if isinstance(y, (list, tuple)) or isinstance(y, np.ndarray) and y.ndim:
            return len(y)
        return None

    def has(n):
        return "is a scalar" if n is None else f"has {n} entr{'y' if n == 1 else 'ies'}"

    first, y = [], x                   # the sizes of x, x[0], x[0][0], x[0][0][0]
    while len(first) < 4:
        first.append(size(y))
        if not first[-1]:
            break
        y = y[0]

    def walk(y, at, depth):            # y has the size of the first entry at its depth
        want = first[depth + 1] if depth + 1 < len(first) else None
        for i in range(len(y)):        # the entries of y, then what they hold
            n = size(y[i])
            if n != want:
                return f"{name}{at}[{i}] {has(n)} where {name}{'[0]' * (depth + 1)} {has(want)}"
        if want is None or depth + 1 >= 3:
            return None
        for i in range(len(y)):
            found = walk(y[i], f"{at}[{i}]", depth + 1)
            if found:
                return found
        return None

    return walk(x, "", 0) if first[0] is not None else None


def _normalised(x, name):
    """The (S, K, V) rows of ``x`` divided by their sums: finite, non-negative, sums > 0.

    A row whose sum overflows to inf is first divided by its largest entry
    (its sum is then at most V); every other row is divided by its plain sum.
    """
    bad = ~(np.isfinite(x) & (x >= 0.0))
    if bad.any():
        s, i, v = np.argwhere(bad)[0]
        raise ValueError(f"{name}: row {i} (scenario {s}) holds {float(x[s, i, v])!r} at {v}; "
                         "probabilities must be finite and non-negative")
    with np.errstate(over="ignore"):
        totals = x.sum(axis=-1, keepdims=True)
    if (totals <= 0.0).any():
        s, i, _ = np.argwhere(totals <= 0.0)[0]
        raise ValueError(f"{name}: row {i} (scenario {s}) sums to 0")
    out = x / totals
    overflow = np.isinf(totals[..., 0])
    if overflow.any():
        big = x[overflow] / x[overflow].max(axis=-1, keepdims=True)
        out[overflow] = big / big.sum(axis=-1, keepdims=True)
    return out
