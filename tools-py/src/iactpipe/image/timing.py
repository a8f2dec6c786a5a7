"""Timing parameters: a robust straight-line fit of peak time along the Hillas major axis.

The fit is ctapipe's least-trimmed-squares (LTS) regression: from each of 5 random pairs of
points, refit the 85 % of points with the smallest squared residuals until the residual sum
converges; keep the best.  The random pairs come from a `numpy.random.Generator`; like
ctapipe (``ctapipe.fitting.FIT_RNG``) the default is one process-wide generator seeded with 0,
so results depend on the order in which images are fitted.  With the same generator state and
order, the pairs drawn are those ctapipe draws.
"""

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._utils import VECTOR_COMPRESS, as_batch
from .morphology import selected_pixels

__all__ = ["timing_parameters", "timing_image", "lts_linear_regression", "FIT_RNG"]

#: process-wide generator for the LTS starting pairs (ctapipe: ``ctapipe.fitting.FIT_RNG``)
FIT_RNG = np.random.default_rng(0)

LTS_SAMPLES = 5  # starting pairs per image (ctapipe's timing_parameters)
LTS_RELATIVE_SAMPLE_SIZE = 0.85
LTS_MAX_ITERATIONS = 20
LTS_EPS = 1e-12
#: smallest determinant of the normal equations accepted by a fit
FIT_MIN_DET = 2 * np.finfo(np.float64).eps
DEG_TO_RAD = np.pi / 180.0
#: partial sums of each least-squares sum (see `_selected_line`)
SUM_LANES = 4


@njit(cache=True, nogil=True, error_model="numpy")
def _fit(x, y, sample, n):
    """Least-squares line through points ``sample[:n]``: (slope, intercept, residual sum of squares)."""
    sxx = 0.0
    sx = 0.0
    sxy = 0.0
    sy = 0.0
    for k in range(n):
        i = sample[k]
        sxx += x[i] * x[i]
        sx += x[i]
        sxy += x[i] * y[i]
        sy += y[i]
    det = sxx * n - sx * sx
    if not det >= FIT_MIN_DET:
        return np.nan, np.nan, np.nan
    slope = (n * sxy - sx * sy) / det
    intercept = (sxx * sy - sx * sxy) / det
    rss = 0.0
    for k in range(n):
        i = sample[k]
        r = y[i] - (x[i] * slope + intercept)
        rss += r * r
    return slope, intercept, rss


@njit(cache=True, nogil=True)
def _kth_smallest(work, k):
    """Quickselect on ``work`` (reordered in place): the ``k``-th smallest value (``1 <= k <= len``).

    Branch-free Lomuto partitions around a median-of-three pivot; when the pivot turns out
    to be the smallest value left, the values equal to it are split off too, so repeated
    values cannot make it quadratic.
    """
    lo = 0
    hi = work.shape[0] - 1
    target = k - 1
    while lo < hi:
        mid = (lo + hi) // 2
        a = work[lo]
        b = work[mid]
        c = work[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        if pivot == a:
            work[lo] = c
        elif pivot == b:
            work[mid] = c
        work[hi] = pivot
        store = lo
        for i in range(lo, hi):
            v = work[i]
            work[i] = work[store]
            work[store] = v
            store += v < pivot
        work[hi] = work[store]
        work[store] = pivot
        if target < store:
            hi = store - 1
            continue
        if store == lo:  # nothing below the pivot: also gather the values equal to it
            store += 1
            for i in range(store, hi + 1):
                v = work[i]
                work[i] = work[store]
                work[store] = v
                store += v == pivot
            if target < store:
                return pivot
            lo = store
            continue
        if target == store:
            return pivot
        lo = store + 1
    return work[target]


# -- helpers of the LLVM vector kernels (intrinsics) below


def _vector_load(builder, data, index, lanes):
    """Load ``lanes`` consecutive elements of ``data`` (a pointer) from ``index`` as one LLVM vector."""
    pointer = builder.gep(data, [index])
    vector_type = llvm_ir.VectorType(data.type.pointee, lanes)
    return builder.load(builder.bitcast(pointer, vector_type.as_pointer()), align=1)


def _splat(builder, value, lanes):
    vector = llvm_ir.Constant(llvm_ir.VectorType(value.type, lanes), None)
    for lane in range(lanes):
        vector = builder.insert_element(vector, value, llvm_ir.Constant(llvm_ir.IntType(32), lane))
    return vector


def _is_vector_input(*arrays):
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrays)


#: values per block of `_compress_bracket`
_COMPRESS_LANES = 8


@intrinsic
def _compress_bracket(typingctx, values, lower, upper, work):
    """Copy the values in ``[lower, upper]`` of the whole blocks of ``values`` to the front of ``work``, in order.

    Returns (how many, how many values are below ``lower``).  Per block of `_COMPRESS_LANES`,
    one LLVM vector compress (a single register instruction with AVX-512) and a full-width
    store at the next free place: ``work`` must hold at least ``len(values)`` values, the
    places after the returned count are overwritten.  (A compressing store to memory,
    ``llvm.masked.compressstore``, is slower on Intel CPUs and much slower on AMD Zen 4; it
    is used only with LLVM < 19, which lacks the register compress, see `VECTOR_COMPRESS`.)
    """
    if not _is_vector_input(values, work) or not values.dtype == work.dtype == lower == upper == types.float64:
        return None

    def codegen(context, builder, signature, args):
        lanes = _COMPRESS_LANES
        va, wa = (context.make_array(signature.args[i])(context, builder, value=args[i]) for i in (0, 3))
        i64 = llvm_ir.IntType(64)
        mask_int = llvm_ir.IntType(lanes)
        vector = llvm_ir.VectorType(llvm_ir.DoubleType(), lanes)
        flags = llvm_ir.VectorType(llvm_ir.IntType(1), lanes)
        low = _splat(builder, args[1], lanes)
        high = _splat(builder, args[2], lanes)
        if VECTOR_COMPRESS:
            compress = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(vector, [vector, flags, vector]),
                f"llvm.experimental.vector.compress.v{lanes}f64",
            )
        else:
            compress = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [vector, va.data.type, flags]),
                f"llvm.masked.compressstore.v{lanes}f64",
            )
        count_bits = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(mask_int, [mask_int]), f"llvm.ctpop.i{lanes}"
        )
        inside_count = cgutils.alloca_once_value(builder, i64(0))
        below_count = cgutils.alloca_once_value(builder, i64(0))
        n = builder.extract_value(va.shape, 0)
        with cgutils.for_range(builder, builder.udiv(n, n.type(lanes))) as block:
            value = _vector_load(builder, va.data, builder.mul(block.index, n.type(lanes)), lanes)
            inside = builder.and_(builder.fcmp_ordered(">=", value, low), builder.fcmp_ordered("<=", value, high))
            below = builder.fcmp_ordered("<", value, low)
            m = builder.load(inside_count)
            if VECTOR_COMPRESS:
                packed = builder.call(compress, [value, inside, llvm_ir.Constant(vector, None)])
                builder.store(packed, builder.bitcast(builder.gep(wa.data, [m]), vector.as_pointer()), align=1)
            else:
                builder.call(compress, [value, builder.gep(wa.data, [m]), inside])
            for total, mask in ((inside_count, inside), (below_count, below)):
                added = builder.zext(builder.call(count_bits, [builder.bitcast(mask, mask_int)]), i64)
                builder.store(builder.add(builder.load(total), added), total)
        return context.make_tuple(builder, signature.return_type, [builder.load(inside_count), builder.load(below_count)])

    return types.UniTuple(types.int64, 2)(values, lower, upper, work), codegen


#: `_kth_value` partitions by vector compress down to this many values, then quickselects
_SMALL_SELECT = 16
#: bracket first tried for the cut of an LTS step (from the third on): these times the last cut
_GUESS_LOW = 0.9
_GUESS_HIGH = 1.1


@njit(cache=True, inline="always")
def _bracketed(values, lower, upper, out):
    """Copy the values in ``[lower, upper]`` to the front of ``out``, in order; returns (how many, how many below)."""
    n = values.shape[0]
    m, below = _compress_bracket(values, lower, upper, out)
    for i in range(n - n % _COMPRESS_LANES, n):
        v = values[i]
        out[m] = v
        m += (v >= lower) & (v <= upper)
        below += v < lower
    return m, below


@njit(cache=True, nogil=True)
def _kth_value(values, k, lower, upper, guess_lower, guess_upper, work):
    """The ``k``-th smallest of ``values`` (no NaN, ``1 <= k <= len``), given ``lower <= it <= upper``.

    ``work``: scratch of ``2 * len(values)``.  Only the values inside the bracket are kept;
    first those in the guessed bracket ``[guess_lower, guess_upper]`` (if not empty), which
    is kept only if the counts prove that it holds the ``k``-th value.  They are then split
    around median-of-three pivots, each split one vector-compress pass (no store-to-load
    chain as in an in-place partition), down to `_SMALL_SELECT` values for `_kth_smallest`.
    """
    n = values.shape[0]
    current = work[:n]
    other = work[n:2 * n]
    m = 0
    below = k
    if guess_lower <= guess_upper:
        m, below = _bracketed(values, guess_lower, guess_upper, current)
    if not below < k <= below + m:
        m, below = _bracketed(values, lower, upper, current)
    target = k - below
    while m > _SMALL_SELECT:
        a = current[0]
        b = current[m // 2]
        c = current[m - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        n_le, _ = _bracketed(current[:m], -np.inf, pivot, other)
        if target <= n_le:
            if n_le == m:  # the pivot is the largest value: split off the values equal to it
                n_lt, _ = _bracketed(current[:m], -np.inf, np.nextafter(pivot, -np.inf), other)
                if target > n_lt or n_lt == m:  # (n_lt == m: all are -inf)
                    return pivot
                m = n_lt
            else:
                m = n_le
        else:
            m, _ = _bracketed(current[:m], np.nextafter(pivot, np.inf), np.inf, other)
            target -= n_le
        current, other = other, current
    return _kth_smallest(current[:m], target)


@njit(cache=True, nogil=True)
def _select(values, k, has_nan, selected, lower, upper, work):
    """Set ``selected`` to the ``k`` points with the smallest ``values``, chosen as ``np.argsort`` would.

    ``lower`` <= the ``k``-th smallest value <= ``upper`` (any bracket, e.g. -inf, inf); only
    the values inside it go through the quickselect.  When the ``k``-th and ``k+1``-th smallest
    values differ that set is unique, ``values <= k-th``.  On a tie at the cut (or with NaN) the
    set is ``np.argsort(values)[:k]`` (numba's argsort, as in ctapipe), so that the same tied
    point is picked.  ``work`` is scratch space of ``len(values)``.
    """
    n = values.shape[0]
    if k >= n or k <= 0:
        selected[:] = k > 0
        return
    if not has_nan:
        m, below = _bracketed(values, lower, upper, work)
        cut = _kth_smallest(work[:m], k - below)
        count = 0
        for i in range(n):
            s = values[i] <= cut
            selected[i] = s
            count += s
        if count == k:
            return
    _select_by_argsort(values, k, selected)


@njit(cache=True, nogil=True)
def _select_by_argsort(values, k, selected):
    """``selected`` = the first ``k`` of ``np.argsort(values)`` (numba's, as ctapipe's LTS uses)."""
    order = np.argsort(values)
    selected[:] = False
    for i in range(k):
        selected[order[i]] = True


# -- the least-squares sums in SUM_LANES interleaved partial sums ----------------------------
#
# Point i goes into lane i % SUM_LANES and the lanes are added pairwise at the end, so each
# sum has one fixed order (on any CPU).  The whole blocks of SUM_LANES points are summed with
# explicit LLVM vectors (numba's loop vectoriser only vectorises float sums if it may reorder
# them, i.e. with fastmath); the last n % SUM_LANES points go into their lanes one by one.


@intrinsic
def _block_line_sums(typingctx, x, y, selected, out):
    """Lanes of sum(x²), sum(x), sum(x·y), sum(y) over the selected points of the whole blocks into ``out[:16]``.

    A point that is not selected adds exact zeros (``x * 0``), as skipping it would.
    """
    if not _is_vector_input(x, y, selected, out) or selected.dtype != types.boolean:
        return None
    if not x.dtype == y.dtype == out.dtype == types.float64:
        return None

    def codegen(context, builder, signature, args):
        xa, ya, sa, oa = (context.make_array(t)(context, builder, value=v) for t, v in zip(signature.args, args, strict=True))
        n = builder.extract_value(xa.shape, 0)
        vector = llvm_ir.VectorType(llvm_ir.DoubleType(), SUM_LANES)
        sums = [cgutils.alloca_once_value(builder, llvm_ir.Constant(vector, None)) for _ in range(4)]
        with cgutils.for_range(builder, builder.udiv(n, n.type(SUM_LANES))) as loop:
            first = builder.mul(loop.index, n.type(SUM_LANES))
            weight = builder.uitofp(_vector_load(builder, sa.data, first, SUM_LANES), vector)
            xi = builder.fmul(_vector_load(builder, xa.data, first, SUM_LANES), weight)
            yi = builder.fmul(_vector_load(builder, ya.data, first, SUM_LANES), weight)
            for total, term in zip(sums, (builder.fmul(xi, xi), xi, builder.fmul(xi, yi), yi), strict=True):
                builder.store(builder.fadd(builder.load(total), term), total)
        for k, total in enumerate(sums):
            builder.store(builder.load(total), builder.bitcast(builder.gep(oa.data, [n.type(k * SUM_LANES)]),
                                                               vector.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(x, y, selected, out), codegen


@intrinsic
def _block_residuals(typingctx, x, y, slope, intercept, selected, squared, out):
    """Squared residuals of the whole blocks into ``squared``; lanes into ``out[:16]``.

    Lanes of: the sum over the selected points, any NaN (1.0), the largest over the
    selected points (-inf if none), the smallest over the others (inf if none).
    """
    if not _is_vector_input(x, y, selected, squared, out) or selected.dtype != types.boolean:
        return None
    if not x.dtype == y.dtype == squared.dtype == out.dtype == slope == intercept == types.float64:
        return None

    def codegen(context, builder, signature, args):
        xa, ya, _, _, sa, qa, oa = (
            context.make_array(t)(context, builder, value=v) if isinstance(t, types.Array) else None
            for t, v in zip(signature.args, args, strict=True)
        )
        n = builder.extract_value(xa.shape, 0)
        double = llvm_ir.DoubleType()
        vector = llvm_ir.VectorType(double, SUM_LANES)
        flags = llvm_ir.VectorType(llvm_ir.IntType(1), SUM_LANES)
        v_slope = _splat(builder, args[2], SUM_LANES)
        v_intercept = _splat(builder, args[3], SUM_LANES)
        zero = llvm_ir.Constant(vector, None)
        inf = _splat(builder, double(np.inf), SUM_LANES)
        minus_inf = _splat(builder, double(-np.inf), SUM_LANES)
        rss = cgutils.alloca_once_value(builder, zero)
        nan = cgutils.alloca_once_value(builder, llvm_ir.Constant(flags, None))
        inside = cgutils.alloca_once_value(builder, minus_inf)
        outside = cgutils.alloca_once_value(builder, inf)
        with cgutils.for_range(builder, builder.udiv(n, n.type(SUM_LANES))) as loop:
            first = builder.mul(loop.index, n.type(SUM_LANES))
            vx = _vector_load(builder, xa.data, first, SUM_LANES)
            vy = _vector_load(builder, ya.data, first, SUM_LANES)
            chosen = builder.icmp_unsigned("!=", _vector_load(builder, sa.data, first, SUM_LANES),
                                           llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(8), SUM_LANES), None))
            r = builder.fsub(vy, builder.fadd(builder.fmul(vx, v_slope), v_intercept))
            r2 = builder.fmul(r, r)
            builder.store(r2, builder.bitcast(builder.gep(qa.data, [first]), vector.as_pointer()), align=1)
            builder.store(builder.or_(builder.load(nan), builder.fcmp_unordered("uno", r2, r2)), nan)
            builder.store(builder.fadd(builder.load(rss), builder.select(chosen, r2, zero)), rss)
            candidate = builder.select(chosen, r2, minus_inf)
            largest = builder.load(inside)
            builder.store(builder.select(builder.fcmp_ordered(">", candidate, largest), candidate, largest), inside)
            candidate = builder.select(chosen, inf, r2)
            smallest = builder.load(outside)
            builder.store(builder.select(builder.fcmp_ordered("<", candidate, smallest), candidate, smallest), outside)
        results = (builder.load(rss), builder.uitofp(builder.load(nan), vector), builder.load(inside),
                   builder.load(outside))
        for k, value in enumerate(results):
            builder.store(value, builder.bitcast(builder.gep(oa.data, [n.type(k * SUM_LANES)]), vector.as_pointer()),
                          align=1)
        return context.get_dummy_value()

    return types.none(x, y, slope, intercept, selected, squared, out), codegen


@njit(inline="always")
def _lane_total(lanes, k):
    """The lanes ``k * SUM_LANES ...`` of ``lanes`` added pairwise: (0 + 1) + (2 + 3)."""
    first = k * SUM_LANES
    return (lanes[first] + lanes[first + 1]) + (lanes[first + 2] + lanes[first + 3])


@njit(cache=True, nogil=True, error_model="numpy")
def _selected_line(x, y, selected, k, lanes):
    """Least-squares (slope, intercept) through the ``k`` selected (finite) points; ``lanes``: 16 float64 scratch."""
    _block_line_sums(x, y, selected, lanes)
    n = x.shape[0]
    for i in range(n - n % SUM_LANES, n):
        # x * 0 adds an exact zero: the same sums as skipping the point, without a branch
        w = np.float64(selected[i])
        xi = x[i] * w
        yi = y[i] * w
        lane = i % SUM_LANES
        lanes[lane] += xi * xi
        lanes[SUM_LANES + lane] += xi
        lanes[2 * SUM_LANES + lane] += xi * yi
        lanes[3 * SUM_LANES + lane] += yi
    sxx = _lane_total(lanes, 0)
    sx = _lane_total(lanes, 1)
    sxy = _lane_total(lanes, 2)
    sy = _lane_total(lanes, 3)
    det = sxx * k - sx * sx
    if not det >= FIT_MIN_DET:
        return np.nan, np.nan
    return (k * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det


@njit(cache=True, nogil=True, error_model="numpy")
def _select_and_fit(x, y, squared, k, has_nan, selected, lower, upper, guess_lower, guess_upper, work, lanes):
    """`_select` (with the faster `_kth_value`) then `_selected_line`; ``work``: scratch of ``2 * len(x)``.

    Returns (slope, intercept, the cut: the ``k``-th smallest value, NaN if not computed).
    """
    n = x.shape[0]
    cut = np.nan
    if not has_nan and 0 < k < n:
        cut = _kth_value(squared, k, lower, upper, guess_lower, guess_upper, work)
        count = 0
        for i in range(n):
            s = squared[i] <= cut
            selected[i] = s
            count += s
        if count != k:
            _select_by_argsort(squared, k, selected)
    else:
        _select(squared, k, has_nan, selected, lower, upper, work)
    slope, intercept = _selected_line(x, y, selected, k, lanes)
    return slope, intercept, cut


@njit(cache=True, nogil=True, error_model="numpy")
def _squared_residuals(x, y, slope, intercept, selected, squared, lanes):
    """Fill ``squared`` for all points; ``lanes``: 16 float64 scratch.

    Returns (any NaN, sum over the selected points, largest over the selected points,
    smallest over the others).
    """
    _block_residuals(x, y, slope, intercept, selected, squared, lanes)
    n = x.shape[0]
    for i in range(n - n % SUM_LANES, n):
        r = y[i] - (x[i] * slope + intercept)
        r2 = r * r
        squared[i] = r2
        s = selected[i]
        lane = i % SUM_LANES
        lanes[lane] += r2 if s else 0.0
        lanes[SUM_LANES + lane] += 0.0 if r2 == r2 else 1.0
        lanes[2 * SUM_LANES + lane] = max(lanes[2 * SUM_LANES + lane], r2 if s else -np.inf)
        lanes[3 * SUM_LANES + lane] = min(lanes[3 * SUM_LANES + lane], np.inf if s else r2)
    inside = max(max(lanes[8], lanes[9]), max(lanes[10], lanes[11]))
    outside = min(min(lanes[12], lanes[13]), min(lanes[14], lanes[15]))
    return _lane_total(lanes, 1) > 0, _lane_total(lanes, 0), inside, outside


@njit(cache=True, nogil=True, error_model="numpy")
def lts_fit(x, y, rng, samples, relative_sample_size, max_iterations, eps):
    """LTS straight-line fit of finite points ``(x, y)``; returns (slope, intercept, rss).

    Needs at least 2 points (else NaN, without drawing from ``rng``).  Each refit sums over
    the selected points in index order, so it depends only on the selected set: once a step
    selects the same set again, the refit would repeat the previous one exactly (residual sum
    unchanged, converged), and the iteration stops there without redoing it.  The last
    selection (of any k points) brackets the next cut, and from the third step on a bracket
    around the last cut is tried first, so the selection sees few values (the cut found is
    the same with any bracket).
    """
    n = x.shape[0]
    if n < 2:
        return np.nan, np.nan, np.nan
    sample_size = min(np.int64(relative_sample_size * n), n)
    pair = np.empty(2, dtype=np.int64)
    squared = np.empty(n)
    work = np.empty(2 * n)
    lanes = np.empty(4 * SUM_LANES)
    selected = np.zeros(n, dtype=np.bool_)
    have_selection = False
    best_slope = np.nan
    best_intercept = np.nan
    best_rss = np.inf
    cut = np.nan
    for _ in range(samples):
        # two distinct random points: uniform first, second uniform over the others
        pair[0] = rng.integers(0, n)
        pair[1] = rng.integers(0, n - 1)
        if pair[1] >= pair[0]:
            pair[1] += 1
        slope, intercept, rss = _fit(x, y, pair, 2)
        if np.isnan(slope):
            continue
        # (the residual sum returned here is unused: the pair's own comes from _fit)
        has_nan, _, inside, outside = _squared_residuals(x, y, slope, intercept, selected, squared, lanes)
        if not have_selection:
            inside, outside = np.inf, -np.inf
        for iteration in range(max_iterations):
            if iteration > 0 and not has_nan and inside < outside:
                break  # the same set as the last step: its refit would change nothing
            # any k points bracket the k-th smallest value: min(inside, outside) <= it <= inside;
            # after the first steps from a pair the cut moves little: first try near the last one
            last_rss = rss
            guess_lower, guess_upper = np.inf, -np.inf
            if iteration >= 2 and cut > 0.0:
                guess_lower = max(min(inside, outside), _GUESS_LOW * cut)
                guess_upper = min(inside, _GUESS_HIGH * cut)
            slope, intercept, cut = _select_and_fit(
                x, y, squared, sample_size, has_nan, selected, min(inside, outside), inside, guess_lower, guess_upper,
                work, lanes,
            )
            have_selection = True
            has_nan, rss, inside, outside = _squared_residuals(x, y, slope, intercept, selected, squared, lanes)
            if abs(last_rss - rss) < eps:
                break
        if rss < best_rss:
            best_rss = rss
            best_slope = slope
            best_intercept = intercept
    return best_slope, best_intercept, best_rss


def lts_linear_regression(x, y, samples=20, relative_sample_size=0.85, max_iterations=20, eps=1e-12, rng=None):
    """LTS fit ``y = slope * x + intercept`` of the finite points; returns ``((slope, intercept), rss)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    slope, intercept, rss = lts_fit(
        np.ascontiguousarray(x[finite]),
        np.ascontiguousarray(y[finite]),
        FIT_RNG if rng is None else rng,
        samples,
        relative_sample_size,
        max_iterations,
        eps,
    )
    return np.array([slope, intercept]), rss


@njit(cache=True, nogil=True, error_model="numpy")
def timing_image(x, y, t, cog_x, cog_y, psi_deg, rng, longi, fx, fy):
    """Timing fit of one image given as its selected pixels' ``x``, ``y`` (deg) and peak times ``t`` (float64).

    ``longi``, ``fx``, ``fy``: float64 scratch of at least ``len(x)``.  Returns (intercept,
    deviation, slope); draws from ``rng`` when at least 2 points are finite.
    """
    n = x.shape[0]
    cos_psi = np.cos(psi_deg * DEG_TO_RAD)
    sin_psi = np.sin(psi_deg * DEG_TO_RAD)
    n_finite = 0
    for i in range(n):
        longi[i] = (x[i] - cog_x) * cos_psi + (y[i] - cog_y) * sin_psi
        if np.isfinite(longi[i]) and np.isfinite(t[i]):
            fx[n_finite] = longi[i]
            fy[n_finite] = t[i]
            n_finite += 1
    b0, b1, _ = lts_fit(
        fx[:n_finite], fy[:n_finite], rng, LTS_SAMPLES, LTS_RELATIVE_SAMPLE_SIZE, LTS_MAX_ITERATIONS, LTS_EPS
    )
    # deviation over all selected pixels, not only those used in the fit
    sq = 0.0
    for i in range(n):
        r = longi[i] * b0 + b1 - t[i]
        sq += r * r
    return b1, np.sqrt(sq / n), b0


@njit(cache=True, nogil=True, error_model="numpy")
def _timing_batch(times, masks, valid, pix_x, pix_y, cog_x, cog_y, psi_deg, rng, intercept, deviation, slope):
    n_pixels = times.shape[1]
    kept = np.empty(n_pixels, dtype=np.int64)
    x = np.empty(n_pixels)
    y = np.empty(n_pixels)
    t = np.empty(n_pixels)
    longi = np.empty(n_pixels)
    fx = np.empty(n_pixels)
    fy = np.empty(n_pixels)
    for event in range(times.shape[0]):
        intercept[event] = deviation[event] = slope[event] = np.nan
        if not valid[event]:
            continue
        n = selected_pixels(masks[event], kept)
        for i in range(n):
            pix = kept[i]
            x[i] = pix_x[pix]
            y[i] = pix_y[pix]
            t[i] = times[event, pix]
        intercept[event], deviation[event], slope[event] = timing_image(
            x[:n], y[:n], t[:n], cog_x[event], cog_y[event], psi_deg[event], rng, longi, fx, fy
        )


def timing_parameters(peak_times, masks, geometry, hillas, valid=None, rng=None):
    """``timing_*`` columns: LTS fit of peak time (ns) vs. position along the major axis (deg).

    slope in ns/deg, intercept in ns (time at the centroid), deviation the RMS residual over
    all selected pixels.  Uses ``hillas_fov_lon/lat/psi``.  ``valid`` False, or fewer than 2
    finite points, gives NaN; only events that are fitted draw from ``rng`` (default `FIT_RNG`).
    """
    peak_times, _ = as_batch(peak_times)
    masks, _ = as_batch(masks, dtype=np.bool_)
    n_events = len(peak_times)
    valid = np.ones(n_events, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    intercept, deviation, slope = (np.empty(n_events) for _ in range(3))
    _timing_batch(
        peak_times,
        masks,
        valid,
        geometry.pix_x,
        geometry.pix_y,
        *(np.ascontiguousarray(hillas[f"hillas_{name}"], dtype=np.float64) for name in ("fov_lon", "fov_lat", "psi")),
        FIT_RNG if rng is None else rng,
        intercept,
        deviation,
        slope,
    )
    return {"timing_intercept": intercept, "timing_deviation": deviation, "timing_slope": slope}
