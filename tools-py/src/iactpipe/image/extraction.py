"""Charge and peak-time extraction from calibrated (R1/DL0) waveforms.

The extractors reproduce ctapipe 0.28's ``ImageExtractor`` classes of the same
names on gain-selected waveforms, for a chunk of events of one camera at once:

- ``waveforms``: (n_events, n_pixels, n_samples) float32 (or float64);
- ``selected_gain_channel``: (n_events, n_pixels) int (picks the per-gain
  integration correction of each pixel);
- ``neighbors``: ``(indptr, indices)`` CSR arrays, see
  :attr:`iactpipe.instrument.camera.CameraGeometry.neighbors`;
- ``broken_pixels``: (n_events or 1, n_pixels) bool, pixels ignored when
  searching the peak (ctapipe's ``broken_pixels`` of the selected gain);
- ``correction``: (n_gains,) float64 integration correction (see
  :func:`integration_correction`) or None for no correction.

Each returns ``(image, peak_time)``, both (n_events, n_pixels) float32, image
in the waveform unit × samples (p.e. for R1) and peak time in ns from the
first sample.  The window sum and its peak time follow ctapipe's
``extract_around_peak``: the sum over ``[peak - shift, peak - shift + width)``
clipped to the readout window, and the peak time as the mean sample index
weighted by the positive samples in that window (the peak index where there
are none), divided by the sampling rate.

Results are bit-identical to ctapipe's, including its arithmetic types: the
neighbour sums of NeighborPeakWindowSum are float32 for float32 waveforms
(float64 for float64 ones), the window sums float64, and argmax follows
numpy (first maximum; the first NaN if there is one).  The neighbour-peak
functions take ``n_threads`` to split a chunk's events over numba threads.
"""

from functools import lru_cache

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._utils import wide_vectors
from .calibration import (
    DEFAULT_GAIN_THRESHOLD,
    KERNEL_OPTIONS,
    _calibrate_event,
    _calibrate_selected_event,
    _per_event,
    selected_samples_arrays,
)
from .cleaning import tailcuts_clean
from .hillas import HILLAS_COLUMNS, I_FOV_LAT, I_FOV_LON, I_PSI, hillas_image
from .invalid_pixels import interpolate_invalid_pixels
from .morphology import brightest_island, number_of_islands
from .timing import FIT_MIN_DET as _FIT_MIN_DET
from .timing import FIT_RNG, LTS_EPS, LTS_MAX_ITERATIONS, LTS_RELATIVE_SAMPLE_SIZE, LTS_SAMPLES

__all__ = [
    "EXTRACTORS",
    "integration_correction",
    "sliding_window_correction",
    "neighbor_peak_window_sum",
    "neighbor_peak_window_sum_kept",
    "neighbor_peak_window_sum_selected",
    "calibrate_kept_samples",
    "calibrate_and_extract",
    "local_peak_window_sum",
    "global_peak_window_sum",
    "fixed_window_sum",
    "full_waveform_sum",
    "sliding_window_max_sum",
    "flashcam_parameters",
    "flashcam_extractor",
    "baseline_subtracted_neighbor_peak_window_sum",
    "two_pass_window_sum",
    "two_pass_core_threshold",
    "variance_extractor",
    "extract_images",
]


# --------------------------------------------------------------------------- kernels
#
# Speed notes (the hot path is NeighborPeakWindowSum, alone or fused with the R1 calibration):
# - helpers called once per pixel take scalars only: in numba, passing an array to a function
#   or making a view of it costs atomic reference-count updates, so the kernels loop over the
#   pixels of an event inside per-event functions and address rows as ``wf[pixel, sample]``;
# - inner loops run over contiguous samples and vectorise (8 float32 or int32 lanes; the hot
#   kernels call `wide_vectors`, which lets LLVM use 16 with AVX-512); buffers are padded to
#   whole vector iterations; maxima are taken on the float bits as int32 (numba does not
#   vectorise float max reductions, and widens int32 scalar arithmetic to int64 unless the
#   numpy ufuncs are used); the neighbour sums and their argmax are written with explicit LLVM
#   vectors (`_neighbor_sum_peak`), whose lengths the loop vectoriser would not get right for
#   40-sample rows, and so are the window sums, vectorised over pixels (`_window_sum_blocks`);
# - ctapipe's ``neighbor_average_maximum`` sums float32 waveforms in float32 (numba types
#   ``float32_array * int`` as float32), neighbour by neighbour in CSR order: the fast path
#   does the same additions in the same order, so its sums and peaks are bit-identical.

_ABS_BITS = np.int32(0x7FFFFFFF)
_INF_BITS = np.int32(0x7F800000)
_MIN_BITS = np.int32(-(2**31))
_SIGN_SHIFT = np.int32(31)
#: neighbours per pixel in the fast neighbour-sum path (hexagonal pixels: 6, square: 4)
_FAST_NEIGHBORS = 6
#: float32 waveforms up to this many samples take the fast path
_MAX_FAST_SAMPLES = 480
#: padding samples of the fast path's buffer: their neighbour sums are below any real sum
#: that is not itself about -2e38 or less (then the pixel takes the exact path)
_PAD_VALUE = np.float32(-3e37)


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE bits of a float32 as int32 (no conversion)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, value):
    """Inverse of `_float_bits`."""
    if value != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to fetch the cache line of element ``index`` (flat) of the C-contiguous ``array``."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        byte_pointer = llvm_ir.IntType(8).as_pointer()
        int32 = llvm_ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_pointer, int32, int32, int32]),
            "llvm.prefetch.p0",
        )
        # read, into L2 (not L1, which holds the working rows), data cache
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)
        builder.call(function, [address, int32(0), int32(2), int32(1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen


def _is_float32(array):
    """Whether ``array`` holds float32 (a compile-time constant inside the kernels)."""
    return np.asarray(array).dtype == np.float32


@overload(_is_float32)
def _is_float32_overload(array):
    value = array.dtype == types.float32
    return lambda array: value


@njit(inline="always", **KERNEL_OPTIONS)
def _ordered_bits(bits):
    """IEEE bits of a float32 with the magnitude flipped for negative numbers: orders like the floats."""
    return np.bitwise_xor(bits, np.bitwise_and(np.right_shift(bits, _SIGN_SHIFT), _ABS_BITS))


@njit(inline="always", **KERNEL_OPTIONS)
def _ordered_float(ordered):
    """Inverse of `_ordered_bits`, as float32."""
    return _bits_float(ordered if ordered >= 0 else np.bitwise_xor(ordered, _ABS_BITS))


@njit(inline="always", **KERNEL_OPTIONS)
def _corrected(total, correction):
    """float32 charge times the float64 correction of its gain, rounded to float32."""
    return np.float32(np.float64(np.float32(total)) * correction)


#: pixels per block of `_window_sum_blocks`
_WINDOW_LANES = 8


def _transpose8(builder, rows):
    """The 8 x 8 transpose of 8 LLVM vectors of 8 lanes: ``out[k][p] = rows[p][k]`` (unpack, shuffle, permute)."""

    def shuffle(x, y, mask):
        return builder.shuffle_vector(x, y, llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), 8), mask))

    low, high = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    even, odd = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    first, second = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    a = []
    for i in range(4):
        a += [shuffle(rows[2 * i], rows[2 * i + 1], low), shuffle(rows[2 * i], rows[2 * i + 1], high)]
    b = []
    for i, j in ((0, 2), (1, 3), (4, 6), (5, 7)):
        b += [shuffle(a[i], a[j], even), shuffle(a[i], a[j], odd)]
    return ([shuffle(b[i], b[i + 4], first) for i in range(4)]
            + [shuffle(b[i], b[i + 4], second) for i in range(4)])


@intrinsic
def _window_sum_blocks(typingctx, wf, n_samples, peaks, width, shift, sampling_rate_ghz, correction, selected, image,
                       peak_time):
    """`_window_sums` of the first ``n_pixels // _WINDOW_LANES * _WINDOW_LANES`` pixels; returns that number.

    The pixels go through in blocks of `_WINDOW_LANES`, one per lane of LLVM vectors: each
    lane adds its own pixel's samples one after the other, exactly the scalar arithmetic
    (numba's vectoriser cannot do this: the samples of the lanes are at different offsets).
    Offsets ``k`` of the window are the loop; a sample outside the readout adds an exact 0.
    When the 8 windows of a block (float32, at most 8 samples) lie inside their rows, each is
    one vector load and the block is transposed in registers (`_transpose8`); otherwise each
    sample is loaded on its own (LSTCam: ~8 µs less per image).
    """
    arrays = (wf, peaks, correction, selected, image, peak_time)
    if not all(isinstance(a, types.Array) for a in arrays) or wf.ndim != 2:
        return None
    if wf.dtype not in (types.float32, types.float64) or peaks.dtype != types.int64:
        return None
    if correction.dtype != types.float64 or not isinstance(selected.dtype, types.Integer):
        return None
    if image.dtype != types.float32 or peak_time.dtype != types.float32:
        return None
    if not all(isinstance(t, types.Integer) for t in (n_samples, width, shift)):
        return None
    signature = types.int64(wf, n_samples, peaks, width, shift, types.float64, correction, selected, image, peak_time)

    def codegen(context, builder, signature, args):
        lanes = _WINDOW_LANES
        i64 = llvm_ir.IntType(64)
        f64 = llvm_ir.DoubleType()
        f32 = llvm_ir.FloatType()
        vi64 = llvm_ir.VectorType(i64, lanes)
        vf64 = llvm_ir.VectorType(f64, lanes)
        vf32 = llvm_ir.VectorType(f32, lanes)
        (wf_t, n_t, peaks_t, width_t, shift_t, rate_t, corr_t, sel_t, image_t, time_t) = signature.args
        wf_a, peaks_a, corr_a, sel_a, image_a, time_a = (
            context.make_array(t)(context, builder, value=args[i])
            for i, t in ((0, wf_t), (2, peaks_t), (6, corr_t), (7, sel_t), (8, image_t), (9, time_t))
        )
        n_samples_v, width_v, shift_v = (
            context.cast(builder, args[i], signature.args[i], types.int64) for i in (1, 3, 4)
        )
        rate = context.cast(builder, args[5], rate_t, types.float64)

        def splat(value, vector_type):
            vector = llvm_ir.Constant(vector_type, None)
            for lane in range(lanes):
                vector = builder.insert_element(vector, value, i64(lane))
            return vector

        def pointer(array_type, array, indices):
            return cgutils.get_item_pointer(context, builder, array_type, array, indices, wraparound=False)

        zero_i = llvm_ir.Constant(vi64, None)
        zero_f = llvm_ir.Constant(vf64, None)
        n_vec = splat(n_samples_v, vi64)
        last_vec = splat(builder.sub(n_samples_v, i64(1)), vi64)
        shift_vec = splat(shift_v, vi64)
        rate_vec = splat(rate, vf64)
        total = cgutils.alloca_once(builder, vf64)
        numerator = cgutils.alloca_once(builder, vf64)
        denominator = cgutils.alloca_once(builder, vf64)
        n_pixels = builder.extract_value(peaks_a.shape, 0)
        n_blocks = builder.udiv(n_pixels, i64(lanes))
        row_width = builder.extract_value(wf_a.shape, 1)
        # the transposed loads: float32 rows with contiguous samples, windows of at most `lanes`
        # samples, rows of at least `lanes`
        transposable = wf_t.dtype == types.float32
        if transposable:
            contiguous = builder.icmp_signed("==", builder.extract_value(wf_a.strides, 1), i64(4))
            can_transpose = builder.and_(
                contiguous, builder.and_(builder.icmp_signed("<=", width_v, i64(lanes)),
                                         builder.icmp_signed(">=", row_width, i64(lanes)))
            )
            max_start = splat(builder.sub(row_width, i64(lanes)), vi64)

        def accumulate(offset, loaded):
            """Add the samples ``loaded`` (a vector: lane = pixel) at window offset ``offset`` (i64)."""
            sample = builder.add(start, splat(offset, vi64))
            inside = builder.and_(builder.icmp_signed(">=", sample, zero_i),
                                  builder.icmp_signed("<", sample, n_vec))
            value = builder.fpext(loaded, vf64) if wf_t.dtype == types.float32 else loaded
            value = builder.select(inside, value, zero_f)
            builder.store(builder.fadd(builder.load(total), value), total)
            positive = builder.select(builder.fcmp_ordered(">", value, zero_f), value, zero_f)
            position = builder.sitofp(sample, vf64)
            builder.store(builder.fadd(builder.load(numerator), builder.fmul(positive, position)), numerator)
            builder.store(builder.fadd(builder.load(denominator), positive), denominator)

        def gathered():
            """Offsets one by one, each lane's sample loaded on its own (any window)."""
            with cgutils.for_range(builder, width_v) as offset:
                sample = builder.add(start, splat(offset.index, vi64))
                index = builder.select(builder.icmp_signed("<", sample, zero_i), zero_i, sample)
                index = builder.select(builder.icmp_signed(">", index, last_vec), last_vec, index)
                loaded = llvm_ir.Constant(llvm_ir.VectorType(context.get_value_type(wf_t.dtype), lanes), None)
                for lane, row in enumerate(rows):
                    element = pointer(wf_t, wf_a, [row, builder.extract_element(index, i64(lane))])
                    loaded = builder.insert_element(loaded, builder.load(element), i64(lane))
                accumulate(offset.index, loaded)

        def transposed():
            """Each pixel's window as one vector load, the 8 x 8 block transposed in registers;
            offsets past the window add exact zeros (the sums start at +0)."""
            vector_type = llvm_ir.VectorType(f32, lanes)
            loads = []
            for lane, row in enumerate(rows):
                element = pointer(wf_t, wf_a, [row, builder.extract_element(start, i64(lane))])
                loads.append(builder.load(builder.bitcast(element, vector_type.as_pointer()), align=4))
            for offset, loaded in enumerate(_transpose8(builder, loads)):
                in_window = builder.icmp_signed("<", i64(offset), width_v)
                accumulate(i64(offset), builder.select(in_window, loaded, llvm_ir.Constant(vector_type, 0.0)))

        with cgutils.for_range(builder, n_blocks) as block:
            first = builder.mul(block.index, i64(lanes))
            rows = [builder.add(first, i64(lane)) for lane in range(lanes)]
            peak = zero_i
            for lane, row in enumerate(rows):
                peak = builder.insert_element(peak, builder.load(pointer(peaks_t, peaks_a, [row])), i64(lane))
            start = builder.sub(peak, shift_vec)
            for accumulator in (total, numerator, denominator):
                builder.store(zero_f, accumulator)
            if transposable:
                # every lane's window [start, start + lanes) inside its row
                within = builder.and_(builder.icmp_signed(">=", start, zero_i),
                                      builder.icmp_signed("<=", start, max_start))
                all_within = builder.icmp_unsigned(
                    "==", builder.bitcast(within, llvm_ir.IntType(lanes)), llvm_ir.Constant(llvm_ir.IntType(lanes), -1)
                )
                with builder.if_else(builder.and_(can_transpose, all_within)) as (fast, slow):
                    with fast:
                        transposed()
                    with slow:
                        gathered()
            else:
                gathered()
            den = builder.load(denominator)
            ratio = builder.fptrunc(builder.fdiv(builder.load(numerator), den), vf32)
            time = builder.select(builder.fcmp_ordered(">", den, zero_f), ratio, builder.sitofp(peak, vf32))
            factor = zero_f
            for lane, row in enumerate(rows):
                gain = builder.load(pointer(sel_t, sel_a, [row]))
                gain = builder.zext(builder.trunc(gain, llvm_ir.IntType(8)), i64)  # np.uint8(selected[pixel])
                factor = builder.insert_element(factor, builder.load(pointer(corr_t, corr_a, [gain])), i64(lane))
            charge = builder.fptrunc(
                builder.fmul(builder.fpext(builder.fptrunc(builder.load(total), vf32), vf64), factor), vf32
            )
            time_ns = builder.fptrunc(builder.fdiv(builder.fpext(time, vf64), rate_vec), vf32)
            for lane, row in enumerate(rows):
                builder.store(builder.extract_element(charge, i64(lane)), pointer(image_t, image_a, [row]))
                builder.store(builder.extract_element(time_ns, i64(lane)), pointer(time_t, time_a, [row]))
        return builder.mul(n_blocks, i64(lanes))

    return signature, codegen


@njit(**KERNEL_OPTIONS)
def _window_sums(wf, n_samples, peaks, width, shift, sampling_rate_ghz, correction, selected, image, peak_time):
    """Window sums and peak times (ns) of one event's pixels around ``peaks`` (ctapipe's ``extract_around_peak``).

    ``wf``: (≥ n_pixels, ≥ n_samples); ``image[pixel]`` is the float32 sum
    times ``correction[selected[pixel]]``.  Whole blocks of pixels go through
    `_window_sum_blocks`, the rest here, with the same arithmetic.
    (Unsigned indices spare numba's negative-index handling.)
    """
    wide_vectors()
    done = _window_sum_blocks(
        wf, n_samples, peaks, width, shift, np.float64(sampling_rate_ghz), correction, selected, image, peak_time
    )
    for pixel in range(done, peaks.shape[0]):
        peak = peaks[pixel]
        start = max(peak - shift, 0)
        end = max(min(peak - shift + width, n_samples), start)
        total = 0.0
        numerator = 0.0
        denominator = 0.0
        position = np.float64(start)
        for sample in range(np.uint64(start), np.uint64(end)):
            value = np.float64(wf[pixel, sample])
            total += value
            # adding exact zeros for non-positive samples keeps the sums bit-identical (and branch free)
            positive = value if value > 0 else 0.0
            numerator += positive * position
            denominator += positive
            position += 1.0
        # ctapipe stores the time in samples as float32 before converting to ns
        if denominator > 0:
            time = np.float32(numerator / denominator)
        else:
            time = np.float32(peak)
        image[pixel] = _corrected(total, correction[np.uint8(selected[pixel])])
        peak_time[pixel] = np.float32(np.float64(time) / sampling_rate_ghz)


@njit(**KERNEL_OPTIONS)
def _first_argmax(values):
    """Index of the first maximum of a 1-d array, as numpy's ``argmax`` (the first NaN wins)."""
    best = values[0]
    if best != best:
        return 0
    peak = 0
    for sample in range(1, values.shape[0]):
        value = values[sample]
        if value > best:
            best = value
            peak = sample
        elif value != value:
            return sample
    return peak


@njit(**KERNEL_OPTIONS)
def _row_peaks(wf, peaks):
    """``np.argmax(wf[:len(peaks)], axis=-1)`` into ``peaks``.

    float32 rows go through their ordered integer bits: the maximum is a
    vectorised int32 reduction, and the first sample equal to it (±0 compare
    equal) is numpy's argmax.  Rows with a NaN, and float64 rows, take the
    scalar loop.
    """
    n_samples = wf.shape[1]
    for pixel in range(peaks.shape[0]):
        largest = _MIN_BITS
        magnitude = np.int32(0)
        if _is_float32(wf):
            for sample in range(n_samples):
                bits = _float_bits(np.float32(wf[pixel, sample]))
                largest = np.maximum(largest, _ordered_bits(bits))
                magnitude = np.maximum(magnitude, np.bitwise_and(bits, _ABS_BITS))
        if _is_float32(wf) and magnitude <= _INF_BITS:
            best = _ordered_float(largest)
            peak = np.int32(n_samples)
            for sample in range(n_samples):
                peak = np.minimum(peak, np.int32(sample) if wf[pixel, sample] == best else np.int32(n_samples))
        else:
            best = wf[pixel, 0]
            peak = 0
            if best == best:
                for sample in range(1, n_samples):
                    value = wf[pixel, sample]
                    if value > best:
                        best = value
                        peak = sample
                    elif value != value:
                        peak = sample
                        break
        peaks[pixel] = peak


@njit(**KERNEL_OPTIONS)
def _exact_neighbor_peaks(wf, n_samples, pixels, n_todo, indptr, indices, local_weight, broken, peaks):
    """ctapipe's ``neighbor_average_maximum`` for ``pixels[:n_todo]``, with its very array operations.

    The sums have the waveform dtype, the neighbours are added in CSR order,
    the peak is numba's ``np.argmax``.  Used where the fast path does not apply.
    """
    for i in range(n_todo):
        pixel = pixels[i]
        average = wf[pixel, :n_samples] * local_weight
        for k in range(indptr[pixel], indptr[pixel + 1]):
            neighbor = indices[k]
            if not broken[neighbor]:
                average += wf[neighbor, :n_samples]
        peaks[pixel] = np.argmax(average)


@njit(inline="always", **KERNEL_OPTIONS)
def _n_cache_lines(array):
    """Cache lines (64 bytes) spanned by the C-contiguous ``array``."""
    step = max(64 // array.itemsize, 1)
    return (array.size + step - 1) // step


@njit(inline="always", **KERNEL_OPTIONS)
def _prefetch_lines(upcoming, line, count, n_lines):
    """Prefetch cache lines ``line``, ``line + 1`` ... (``count`` of them, up to ``n_lines``) of the
    C-contiguous ``upcoming``; returns the next line.  (No division per call: two 64-bit divisions
    per pixel cost ~10 µs per LSTCam image.)"""
    step = max(64 // upcoming.itemsize, 1)
    end = min(line + count, n_lines)
    for k in range(line, end):
        _prefetch(upcoming, k * step)
    return max(end, line)


#: float32 lanes of the vectors in `_neighbor_sum_peak` (the fast path's buffers are padded to this)
_PEAK_LANES = 16
#: rows of up to this many vectors take the unrolled code of `_neighbor_sum_peak`
_UNROLLED_CHUNKS = 8


@intrinsic
def _neighbor_sum_peak(typingctx, buf, pixel, j0, j1, j2, j3, j4, j5, weight, check):
    """(first sample of the largest neighbour sum of ``pixel``, whether a sum is NaN (with ``check``)).

    ``buf``: the fast path's (n_pixels + 1, n_pad) float32 buffer, n_pad a multiple of
    `_PEAK_LANES`.  Written with explicit LLVM vectors of `_PEAK_LANES` samples: each
    sum is ``own * weight + n0 + ... + n5`` in this order (ctapipe's), so the sums are
    ctapipe's bit for bit.  Their maximum is the int32 maximum of their ordered bits (see
    `_ordered_bits`), the peak the first sample equal to it (±0 compare equal): numpy's
    argmax.  A NaN sum makes the pixel ``bad``.  Rows of up to `_UNROLLED_CHUNKS` vectors keep
    their sums in registers; longer ones on the stack between two passes.  With weight 0
    and no ``check`` the pixel's own row is not read (``own * 0`` is ±0).
    """
    if not (isinstance(buf, types.Array) and buf.ndim == 2 and buf.layout == "C" and buf.dtype == types.float32):
        return None
    if not all(isinstance(t, types.Integer) for t in (pixel, j0, j1, j2, j3, j4, j5)):
        return None
    if weight != types.float32 or not isinstance(check, types.Boolean):
        return None
    signature = types.Tuple((types.int64, types.boolean))(buf, pixel, j0, j1, j2, j3, j4, j5, weight, check)

    def codegen(context, builder, signature, args):
        lanes = _PEAK_LANES
        i1 = llvm_ir.IntType(1)
        i32 = llvm_ir.IntType(32)
        i64 = llvm_ir.IntType(64)
        f32 = llvm_ir.FloatType()
        vf = llvm_ir.VectorType(f32, lanes)
        vb = llvm_ir.VectorType(i1, lanes)
        vi = llvm_ir.VectorType(i32, lanes)
        mask_type = llvm_ir.IntType(lanes)
        array = context.make_array(signature.args[0])(context, builder, value=args[0])
        n_pad = builder.extract_value(array.shape, 1)
        rows = [context.cast(builder, args[k], signature.args[k], types.int64) for k in range(1, 8)]
        offsets = [builder.mul(row, n_pad) for row in rows]
        check_value = context.cast(builder, args[9], signature.args[9], types.boolean)

        def splat(value, vector_type):
            vector = llvm_ir.Constant(vector_type, None)
            for lane in range(lanes):
                vector = builder.insert_element(vector, value, i32(lane))
            return vector

        def load(offset):
            pointer = builder.bitcast(builder.gep(array.data, [offset]), vf.as_pointer())
            return builder.load(pointer, align=4)

        def neighbor_sum(first, with_own):
            if with_own:
                value = builder.fmul(load(builder.add(offsets[0], first)), weight)
                value = builder.fadd(value, load(builder.add(offsets[1], first)))
            else:
                value = load(builder.add(offsets[1], first))
            for offset in offsets[2:]:
                value = builder.fadd(value, load(builder.add(offset, first)))
            return value

        def ordered_bits(value):
            bits = builder.bitcast(value, vi)
            return builder.xor(bits, builder.and_(builder.ashr(bits, shift), magnitude_bits))

        def vector_max(a, b):
            return builder.select(builder.icmp_signed(">", a, b), a, b)

        def best_of(largest):
            """The largest sum as a splat float vector, from the lane maxima of the ordered bits."""
            best_bits = builder.call(reduce_max, [largest])
            best_bits = builder.select(builder.icmp_signed(">=", best_bits, i32(0)), best_bits,
                                       builder.xor(best_bits, i32(0x7FFFFFFF)))
            return splat(builder.bitcast(best_bits, f32), vf)

        def equal_mask(value, best):
            return builder.bitcast(builder.fcmp_ordered("==", value, best), mask_type)

        def has_nan(nan):
            return builder.icmp_unsigned("!=", builder.bitcast(nan, mask_type), llvm_ir.Constant(mask_type, 0))

        weight = splat(args[8], vf)
        shift = splat(i32(31), vi)
        magnitude_bits = splat(i32(0x7FFFFFFF), vi)
        reduce_max = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(i32, [vi]), f"llvm.vector.reduce.smax.v{lanes}i32"
        )
        count_zeros = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(i64, [i64, i1]), "llvm.cttz.i64"
        )

        def emit_variant(with_own):
            """The sums, their maximum and its first position, for rows of any length; branches to ``done``."""
            generic = builder.append_basic_block(f"neighbor_peak.loop{int(with_own)}")
            switch = builder.switch(n_chunks, generic)

            # rows of up to _UNROLLED_CHUNKS vectors: the sums stay in registers, the first
            # position equal to the maximum is one count of trailing zeros per 64 samples
            for n_unrolled in range(1, _UNROLLED_CHUNKS + 1):
                block = builder.append_basic_block(f"neighbor_peak.unrolled{n_unrolled}.{int(with_own)}")
                switch.add_case(i64(n_unrolled), block)
                builder.position_at_end(block)
                values = [neighbor_sum(i64(chunk * lanes), with_own) for chunk in range(n_unrolled)]
                largest = ordered_bits(values[0])
                nan = builder.fcmp_unordered("uno", values[0], values[0])
                for value in values[1:]:
                    largest = vector_max(largest, ordered_bits(value))
                    nan = builder.or_(nan, builder.fcmp_unordered("uno", value, value))
                best = best_of(largest)
                peak = i64(n_unrolled * lanes)  # no sample equal to the maximum (a NaN maximum)
                per_word = 64 // lanes
                for word_start in reversed(range(0, n_unrolled, per_word)):
                    word = i64(0)
                    for chunk in range(word_start, min(word_start + per_word, n_unrolled)):
                        bits = builder.zext(equal_mask(values[chunk], best), i64)
                        word = builder.or_(word, builder.shl(bits, i64((chunk - word_start) * lanes)))
                    position = builder.add(builder.call(count_zeros, [word, i1(0)]), i64(word_start * lanes))
                    peak = builder.select(builder.icmp_unsigned("!=", word, i64(0)), position, peak)
                builder.store(peak, peak_out)
                builder.store(has_nan(nan), nan_out)
                builder.branch(done)

            # longer rows: two passes over the sums, kept on the stack in between
            builder.position_at_end(generic)
            sums = cgutils.alloca_once(builder, f32, size=_MAX_FAST_SAMPLES)
            largest = cgutils.alloca_once_value(builder, splat(i32(-(2**31)), vi))
            nan = cgutils.alloca_once_value(builder, llvm_ir.Constant(vb, None))
            with cgutils.for_range(builder, n_chunks) as chunk:
                first = builder.mul(chunk.index, i64(lanes))
                value = neighbor_sum(first, with_own)
                builder.store(value, builder.bitcast(builder.gep(sums, [first]), vf.as_pointer()), align=4)
                builder.store(vector_max(ordered_bits(value), builder.load(largest)), largest)
                builder.store(builder.or_(builder.load(nan), builder.fcmp_unordered("uno", value, value)), nan)
            best = best_of(builder.load(largest))
            builder.store(n_pad, peak_out)
            with cgutils.for_range(builder, n_chunks) as chunk:
                first = builder.mul(chunk.index, i64(lanes))
                stored = builder.load(builder.bitcast(builder.gep(sums, [first]), vf.as_pointer()), align=4)
                mask = builder.zext(equal_mask(stored, best), i64)
                position = builder.add(first, builder.call(count_zeros, [mask, i1(0)]))
                current = builder.load(peak_out)
                earlier = builder.and_(builder.icmp_unsigned("!=", mask, i64(0)),
                                       builder.icmp_unsigned("<", position, current))
                builder.store(builder.select(earlier, position, current), peak_out)
            builder.store(has_nan(builder.load(nan)), nan_out)
            builder.branch(done)

        peak_out = cgutils.alloca_once(builder, i64)
        nan_out = cgutils.alloca_once(builder, i1)
        n_chunks = builder.udiv(n_pad, i64(lanes))
        done = builder.append_basic_block("neighbor_peak.done")
        # weight 0 without check: own * 0 is ±0 (the samples are finite), and ±0 + n0 equals n0
        # but for the sign of a zero, so the own row is not read
        own_zero = builder.and_(builder.fcmp_ordered("==", args[8], f32(0)), builder.not_(check_value))
        with builder.if_else(own_zero) as (skip_own, read_own):
            with skip_own:
                emit_variant(False)
            with read_own:
                emit_variant(True)
        builder.unreachable()  # both variants branch to done

        builder.position_at_end(done)
        bad = builder.and_(check_value, builder.load(nan_out))
        return context.make_tuple(builder, signature.return_type, [builder.load(peak_out), bad])

    return signature, codegen


@njit(**KERNEL_OPTIONS)
def _fast_neighbor_peaks(buf, n_samples, table, local_weight, check, peaks, todo, upcoming):
    """Neighbour-sum peak of every pixel; returns how many pixels it left to the exact path (in ``todo``).

    ``buf`` (n_pixels + 1, n_samples padded to 16) float32 holds the event
    (see `_scratch`), ``table`` (n_pixels, 6) the neighbours in CSR order,
    broken or missing ones pointing to the zero row n_pixels.  Each sum is
    ``own * local_weight + n0 + n1 + ...`` in float32, the additions of
    ctapipe in its order (adding +0 for a skipped neighbour changes no value
    but the sign of a zero, which compares equal), so it is ctapipe's sum
    bit for bit; the peak is its first maximum (see `_neighbor_sum_peak`).
    Pixels whose maximum is in the padding, and with ``check`` pixels with a
    NaN sum (numpy's argmax takes the first NaN), are listed in ``todo``;
    ``check`` may be False only if all samples are finite and small enough
    for no sum to overflow.  Meanwhile the rows of ``upcoming`` (the next
    event's input) are prefetched.
    """
    wide_vectors()
    n_pixels = table.shape[0]
    weight = np.float32(local_weight)
    n_todo = 0
    n_lines = _n_cache_lines(upcoming)
    lines_per_pixel = (n_lines + n_pixels - 1) // max(n_pixels, 1)
    line = 0
    for pixel in range(n_pixels):
        line = _prefetch_lines(upcoming, line, lines_per_pixel, n_lines)
        peak, bad = _neighbor_sum_peak(
            buf, pixel, table[pixel, 0], table[pixel, 1], table[pixel, 2], table[pixel, 3], table[pixel, 4],
            table[pixel, 5], weight, check,
        )
        peaks[pixel] = peak
        if peak >= n_samples or bad:
            todo[n_todo] = pixel
            n_todo += 1
    return n_todo


@njit(**KERNEL_OPTIONS)
def _scratch(n_pixels, n_samples, table):
    """Per-thread buffers of the neighbour-peak kernels.

    ``buf`` (n_pixels + 1, n_samples padded to 16) float32: the event's
    waveforms, a zero last row and padding samples (the sum loop does 16
    samples per iteration: padded rows need no remainder loop).
    """
    n_pad = -(-max(n_samples, 1) // _PEAK_LANES) * _PEAK_LANES
    buf = np.full((n_pixels + 1, n_pad), _PAD_VALUE, dtype=np.float32)
    buf[:, :n_samples] = 0
    peaks = np.zeros(n_pixels, dtype=np.int64)
    todo = np.empty(n_pixels, dtype=np.int64)
    return buf, table.copy(), peaks, todo


@njit(**KERNEL_OPTIONS)
def _event_table(table, broken, out):
    """``table`` with broken neighbours replaced by the zero row n_pixels."""
    n_pixels = table.shape[0]
    for pixel in range(n_pixels):
        for k in range(table.shape[1]):
            neighbor = table[pixel, k]
            out[pixel, k] = n_pixels if neighbor < n_pixels and broken[neighbor] else neighbor


@njit(**KERNEL_OPTIONS)
def _neighbor_peak_event(
    wf, n_samples, buf, fast, check, table, event_table, indptr, indices, local_weight, broken, any_broken, width,
    shift, sampling_rate_ghz, correction, selected, image, peak_time, peaks, todo, upcoming,
):
    """NeighborPeakWindowSum of one event: the peaks (fast path from ``buf`` where ``fast``), then the window sums.

    ``wf`` (≥ n_pixels rows, ≥ n_samples): the event's waveforms; in the
    fast path ``buf`` holds their float32 copy with a zero row and padding.
    """
    n_pixels = peaks.shape[0]
    if fast:
        if any_broken:
            _event_table(table, broken, event_table)
            n_todo = _fast_neighbor_peaks(buf, n_samples, event_table, local_weight, check, peaks, todo, upcoming)
        else:
            n_todo = _fast_neighbor_peaks(buf, n_samples, table, local_weight, check, peaks, todo, upcoming)
    else:
        n_todo = n_pixels
        for pixel in range(n_pixels):
            todo[pixel] = pixel
    _exact_neighbor_peaks(wf, n_samples, todo, n_todo, indptr, indices, local_weight, broken, peaks)
    _window_sums(wf, n_samples, peaks, width, shift, sampling_rate_ghz, correction, selected, image, peak_time)


@njit(inline="always", **KERNEL_OPTIONS)
def _broken_row(broken, event):
    """The broken-pixel flags of ``event`` ((1 or n_events, n_pixels): one row for all, or one per event)
    and whether any is set."""
    row = broken[event if broken.shape[0] > 1 else 0]
    any_broken = False
    for pixel in range(row.shape[0]):
        any_broken |= row[pixel]
    return row, any_broken


@njit(**KERNEL_OPTIONS)
def _neighbor_peak_events(
    first, last, waveforms, selected, indptr, indices, table, fast, local_weight, broken, width, shift,
    sampling_rate_ghz, correction, image, peak_time,
):
    """NeighborPeakWindowSum of events ``first``..``last - 1``, with this call's own scratch buffers."""
    _, n_pixels, n_samples = waveforms.shape
    buf, event_table, peaks, todo = _scratch(n_pixels, n_samples, table)
    # any sample may be NaN or large (scanning the input for that costs more than it saves)
    check = True
    any_broken = False
    event_broken = broken[0]
    for event in range(first, last):
        wf = waveforms[event]
        if fast:
            for pixel in range(n_pixels):
                for sample in range(n_samples):
                    buf[pixel, sample] = wf[pixel, sample]
        if event == first or broken.shape[0] > 1:
            event_broken, any_broken = _broken_row(broken, event)
        _neighbor_peak_event(
            wf, n_samples, buf, fast, check, table, event_table, indptr, indices, local_weight, event_broken,
            any_broken, width, shift, sampling_rate_ghz, correction, selected[event], image[event], peak_time[event],
            peaks, todo, waveforms[min(event + 1, last - 1)],
        )


@njit(parallel=True, **KERNEL_OPTIONS)
def _neighbor_peak_parallel(
    n_chunks, waveforms, selected, indptr, indices, table, fast, local_weight, broken, width, shift,
    sampling_rate_ghz, correction, image, peak_time,
):
    n_events = waveforms.shape[0]
    for chunk in prange(n_chunks):
        _neighbor_peak_events(
            chunk * n_events // n_chunks, (chunk + 1) * n_events // n_chunks, waveforms, selected, indptr,
            indices, table, fast, local_weight, broken, width, shift, sampling_rate_ghz, correction, image,
            peak_time,
        )


@njit(**KERNEL_OPTIONS)
def _calibrate_neighbor_peak_events(
    first, last, r0, pedestal, factor, threshold, forced_channel, calib_shift, unusable, indptr, indices, table,
    fast, check, local_weight, width, shift, sampling_rate_ghz, correction, r1_out, keep_r1, selected, image,
    peak_time,
):
    """R0 → image of events ``first``..``last - 1``: each event is calibrated into a cache-resident buffer.

    ``check``: whether R1 samples may be non-finite or large enough for a neighbour sum to overflow.
    """
    _, _, n_pixels, n_samples = r0.shape
    buf, event_table, peaks, todo = _scratch(n_pixels, n_samples, table)
    broken = np.zeros(n_pixels, dtype=np.bool_)
    for event in range(first, last):
        event_selected = selected[event]
        any_broken = _calibrate_event(
            r0[event], pedestal[event if pedestal.shape[0] > 1 else 0], factor[event if factor.shape[0] > 1 else 0],
            threshold, forced_channel, calib_shift, buf, event_selected,
            unusable[event if unusable.shape[0] > 1 else 0], broken,
        )
        if keep_r1:
            r1_out[event] = buf[:n_pixels, :n_samples]
        _neighbor_peak_event(
            buf, n_samples, buf, fast, check, table, event_table, indptr, indices, local_weight, broken, any_broken,
            width, shift, sampling_rate_ghz, correction, event_selected, image[event], peak_time[event], peaks, todo,
            r0[min(event + 1, last - 1), 0],
        )


@njit(**KERNEL_OPTIONS)
def _selected_neighbor_peak_events(
    samples, selected, pedestal, factor, calib_shift, broken, indptr, indices, table, fast, check, local_weight, width,
    shift, sampling_rate_ghz, correction, image, peak_time,
):
    """Gain-selected raw samples → image, event by event: each event is calibrated into a cache-resident buffer
    (`_calibrate_selected_event`, as `calibrate_selected_samples` does), then NeighborPeakWindowSum."""
    n_events, n_pixels, n_samples = samples.shape
    buf, event_table, peaks, todo = _scratch(n_pixels, n_samples, table)
    any_broken = False
    event_broken = broken[0]
    for event in range(n_events):
        event_selected = selected[event]
        _calibrate_selected_event(samples[event], event_selected, pedestal, factor, calib_shift, buf)
        if event == 0 or broken.shape[0] > 1:
            event_broken, any_broken = _broken_row(broken, event)
        _neighbor_peak_event(
            buf, n_samples, buf, fast, check, table, event_table, indptr, indices, local_weight, event_broken,
            any_broken, width, shift, sampling_rate_ghz, correction, event_selected, image[event], peak_time[event],
            peaks, todo, samples[min(event + 1, n_events - 1)],
        )


@njit(parallel=True, **KERNEL_OPTIONS)
def _calibrate_neighbor_peak_parallel(
    n_chunks, r0, pedestal, factor, threshold, forced_channel, calib_shift, unusable, indptr, indices, table, fast,
    check, local_weight, width, shift, sampling_rate_ghz, correction, r1_out, keep_r1, selected, image, peak_time,
):
    n_events = r0.shape[0]
    for chunk in prange(n_chunks):
        _calibrate_neighbor_peak_events(
            chunk * n_events // n_chunks, (chunk + 1) * n_events // n_chunks, r0, pedestal, factor, threshold,
            forced_channel, calib_shift, unusable, indptr, indices, table, fast, check, local_weight, width, shift,
            sampling_rate_ghz, correction, r1_out, keep_r1, selected, image, peak_time,
        )


@njit(**KERNEL_OPTIONS)
def _local_peak_kernel(waveforms, selected, width, shift, sampling_rate_ghz, correction, image, peak_time):
    n_events, n_pixels, n_samples = waveforms.shape
    peaks = np.empty(n_pixels, dtype=np.int64)
    for event in range(n_events):
        _row_peaks(waveforms[event], peaks)
        _window_sums(
            waveforms[event], n_samples, peaks, width, shift, sampling_rate_ghz, correction, selected[event],
            image[event], peak_time[event],
        )


@njit(**KERNEL_OPTIONS)
def _fixed_peak_kernel(waveforms, selected, peaks, width, shift, sampling_rate_ghz, correction, image, peak_time):
    """Window sums around one peak index per event (``peaks``: (n_events,))."""
    n_events, n_pixels, n_samples = waveforms.shape
    pixel_peaks = np.empty(n_pixels, dtype=np.int64)
    for event in range(n_events):
        pixel_peaks[:] = peaks[event]
        _window_sums(
            waveforms[event], n_samples, pixel_peaks, width, shift, sampling_rate_ghz, correction, selected[event],
            image[event], peak_time[event],
        )


@njit(**KERNEL_OPTIONS)
def _global_peak_all_kernel(waveforms, broken, peaks):
    """Peak of the mean waveform of the non-broken pixels, one per event.

    Accumulates in the waveform dtype pixel by pixel, as numpy's ``mean`` over
    the pixel axis does, so ties and near-ties resolve as in ctapipe.
    """
    n_events, n_pixels, n_samples = waveforms.shape
    total = np.empty(n_samples, dtype=waveforms.dtype)
    mean = np.empty(n_samples, dtype=waveforms.dtype)
    for event in range(n_events):
        ie = event if broken.shape[0] > 1 else 0
        total[:] = 0
        count = 0
        for pixel in range(n_pixels):
            if broken[ie, pixel]:
                continue
            count += 1
            for sample in range(n_samples):
                total[sample] += waveforms[event, pixel, sample]
        if count == 0:
            peaks[event] = 0
            continue
        for sample in range(n_samples):
            mean[sample] = total[sample] / np.float64(count)
        peaks[event] = _first_argmax(mean)


@njit(**KERNEL_OPTIONS)
def _global_peak_brightest_kernel(waveforms, broken, n_brightest, peaks):
    """Peak of the mean waveform of the ``n_brightest`` pixels with the highest maximum.

    Pixels are ranked by their maximum sample (broken ones last), ties by the
    higher pixel index first, and summed in that order (as ctapipe does).
    """
    n_events, n_pixels, n_samples = waveforms.shape
    maxima = np.empty(n_pixels, dtype=waveforms.dtype)
    pixel_peaks = np.empty(n_pixels, dtype=np.int64)
    reversed_index = np.arange(n_pixels)[::-1]
    total = np.empty(n_samples, dtype=waveforms.dtype)
    mean = np.empty(n_samples, dtype=waveforms.dtype)
    for event in range(n_events):
        ie = event if broken.shape[0] > 1 else 0
        _row_peaks(waveforms[event], pixel_peaks)
        for pixel in range(n_pixels):
            if broken[ie, pixel]:
                maxima[pixel] = -np.inf
            else:
                maxima[pixel] = waveforms[event, pixel, pixel_peaks[pixel]]
        # stable sort of the reversed order: equal maxima keep higher index first
        order = np.argsort(-maxima[::-1], kind="mergesort")
        total[:] = 0
        for rank in range(n_brightest):
            pixel = reversed_index[order[rank]]
            for sample in range(n_samples):
                total[sample] += waveforms[event, pixel, sample]
        for sample in range(n_samples):
            mean[sample] = total[sample] / np.float64(n_brightest)
        peaks[event] = _first_argmax(mean)


@njit(**KERNEL_OPTIONS)
def _sliding_window_kernel(waveforms, selected, width, sampling_rate_ghz, correction, image, peak_time):
    n_events, n_pixels, n_samples = waveforms.shape
    cumulative = np.empty(n_samples + 1, dtype=np.float64)
    for event in range(n_events):
        for pixel in range(n_pixels):
            running = 0.0
            cumulative[0] = 0.0
            for sample in range(n_samples):
                running += waveforms[event, pixel, sample]
                cumulative[sample + 1] = running
            # numpy's argmax of the window sums: the first maximum, or the first NaN (possible
            # only with a NaN or inf sample, which makes the float64 total non-finite)
            start = 0
            best = cumulative[width] - cumulative[0]
            for first in range(1, n_samples - width + 1):
                value = cumulative[first + width] - cumulative[first]
                if value > best:
                    best = value
                    start = first
            if not abs(running) < np.inf:
                for first in range(n_samples - width + 1):
                    value = cumulative[first + width] - cumulative[first]
                    if value != value:
                        best = value
                        start = first
                        break
            numerator = 0.0
            denominator = 0.0
            for sample in range(start, start + width):
                value = np.float64(waveforms[event, pixel, sample])
                positive = value if value > 0 else 0.0
                numerator += positive * sample
                denominator += positive
            if denominator > 0:
                time = np.float32(numerator / denominator)
            else:
                time = np.float32(start + 0.5 * width)
            image[event, pixel] = _corrected(best, correction[selected[event, pixel]])
            peak_time[event, pixel] = np.float32(np.float64(time) / sampling_rate_ghz)


@njit(cache=True, nogil=True)
def _box_filter(source, width, out):
    """scipy.ndimage.convolve1d(source, ones(width) / width, mode="nearest"), same summation order.

    ``source`` may be a reversed view.  Even widths put the extra tap after the
    sample (origin -1 of the reversed filter), odd ones are centred; scipy
    adds the taps of even filters starting with the last one and sums
    symmetric (odd) filters in pairs around the centre.
    """
    n = source.shape[0]
    weight = 1.0 / width
    half = width // 2
    if width % 2 == 1:
        for i in range(n):
            value = source[i] * weight
            for j in range(-half, 0):
                left = source[min(max(i + j, 0), n - 1)]
                right = source[min(max(i - j, 0), n - 1)]
                value += (left + right) * weight
            out[i] = value
    else:
        # taps cover i - half + 1 ... i + half
        last = half
        for i in range(n):
            value = source[min(i + last, n - 1)] * weight
            for j in range(-half + 1, last):
                value += source[min(max(i + j, 0), n - 1)] * weight
            out[i] = value


@njit(cache=True, nogil=True)
def _deconvolve(waveform, pole_zero, upsampling, out, scratch):
    """Pole-zero deconvolution and upsampling of one waveform (ctapipe's ``deconvolve``).

    ``y[i] = x[i] - pole_zero * x[i - 1]`` (``y[0] = 0``), each sample
    repeated ``upsampling`` times and smoothed forward and backward with a
    box filter of that width.  ``out`` and ``scratch`` have n × upsampling samples.
    """
    n = waveform.shape[0]
    if upsampling == 1:
        out[0] = 0.0
        for i in range(1, n):
            out[i] = np.float64(waveform[i]) - pole_zero * np.float64(waveform[i - 1])
        return
    # repeated samples into out, forward filter into scratch, backward filter into out
    for i in range(n):
        value = 0.0 if i == 0 else np.float64(waveform[i]) - pole_zero * np.float64(waveform[i - 1])
        for k in range(upsampling):
            out[i * upsampling + k] = value
    _box_filter(out, upsampling, scratch)
    _box_filter(scratch[::-1], upsampling, out[::-1])


@njit(cache=True, nogil=True)
def _adaptive_centroid(waveform, peak, rel_descend_limit):
    """Mean sample index around ``peak`` over the contiguous samples above ``rel_descend_limit`` × peak value."""
    peak_amplitude = waveform[peak]
    if peak_amplitude < 0.0:
        return np.float32(peak)
    limit = rel_descend_limit * peak_amplitude
    total = 0.0
    weighted = 0.0
    j = peak
    while j >= 0 and waveform[j] > limit:
        total += waveform[j]
        weighted += j * waveform[j]
        j -= 1
    j = peak + 1
    n = waveform.shape[0]
    while j < n and waveform[j] > limit:
        total += waveform[j]
        weighted += j * waveform[j]
        j += 1
    if total != 0.0:
        return np.float32(weighted / total)
    return np.float32(peak)


@njit(cache=True, nogil=True)
def _flashcam_kernel(
    waveforms, indptr, indices, local_weight, broken, upsampling, width, shift, sampling_rate_ghz,
    pole_zero, gain, time_shift_ns, leading_edge_shift, clipping, leading_edge, rel_descend_limit,
    image, peak_time,
):
    n_events, n_pixels, n_samples = waveforms.shape
    n_up = n_samples * upsampling
    deconvolved = np.empty((n_pixels, n_up), dtype=np.float64)
    clipped = np.empty((n_pixels, n_up), dtype=np.float64)
    scratch = np.empty(n_up, dtype=np.float64)
    derivative = np.empty(n_up, dtype=np.float64)
    average = np.empty(n_up, dtype=np.float64)
    rate = sampling_rate_ghz * upsampling
    peaks = np.empty(n_pixels, dtype=np.int64)
    no_correction = np.ones(1)
    high_gain = np.zeros(n_pixels, dtype=np.int8)
    for event in range(n_events):
        broken_row = broken[event if broken.shape[0] > 1 else 0]
        for pixel in range(n_pixels):
            _deconvolve(waveforms[event, pixel], pole_zero, upsampling, deconvolved[pixel], scratch)
            for i in range(n_up):
                value = deconvolved[pixel, i]
                if clipping > 0.0:
                    value = value / clipping
                    value = value / (1.0 + abs(value))
                    value = max(value, 0.0) if value == value else value
                clipped[pixel, i] = value
        for pixel in range(n_pixels):
            for i in range(n_up):
                average[i] = clipped[pixel, i] * local_weight
            for k in range(indptr[pixel], indptr[pixel + 1]):
                neighbor = indices[k]
                if broken_row[neighbor]:
                    continue
                for i in range(n_up):
                    average[i] += clipped[neighbor, i]
            peaks[pixel] = _first_argmax(average)
        _window_sums(
            deconvolved, n_up, peaks, width, shift, rate, no_correction, high_gain, image[event], peak_time[event]
        )
        for pixel in range(n_pixels):
            time = peak_time[event, pixel]
            if leading_edge:
                _deconvolve(waveforms[event, pixel], 1.0, upsampling, derivative, scratch)
                edge_peak = int(np.round(peaks[pixel] - leading_edge_shift))
                edge_peak = min(max(edge_peak, 0), n_up - 1)
                time = np.float32(np.float64(_adaptive_centroid(derivative, edge_peak, rel_descend_limit)) / rate)
            if gain != 0.0:
                image[event, pixel] = np.float32(np.float64(image[event, pixel]) / gain)
            if time_shift_ns != 0.0:
                time = np.float32(np.float64(time) - time_shift_ns)
            peak_time[event, pixel] = time


# TwoPassWindowSum (CTA-MARS): a first pass with a 5-sample window around the largest 3-sample
# sum, a preliminary cleaning of that image, and a second pass for all but the core pixels of
# its brightest island, with windows placed at the times of a straight-line time fit.

#: (width, shift) of the TwoPassWindowSum windows: first pass and default second pass, a
#: second-pass window before the readout window, one after it
_TWO_PASS_WINDOW = (5, 2)
_TWO_PASS_BEFORE = (5, 0)
_TWO_PASS_AFTER = (6, 4)


@njit(cache=True, nogil=True)
def _two_pass_first_kernel(waveforms, sampling_rate_ghz, image, peak_time):
    """First pass: uncorrected sums of 5 samples centred on the largest 3-sample sum, and their times.

    The 3-sample sums are rounded to the waveform dtype after summing in float64 as
    ``x[i] + (x[i-1] + x[i+1])`` (scipy's ``convolve1d`` with a symmetric filter); the
    centre is searched in ``2 .. n_samples - 3`` (numpy's argmax: first maximum or NaN).
    """
    n_events, n_pixels, n_samples = waveforms.shape
    sums = np.empty(n_samples - 4, dtype=waveforms.dtype)
    peaks = np.empty(n_pixels, dtype=np.int64)
    ones = np.ones(2)
    high_gain = np.zeros(n_pixels, dtype=np.int8)
    for event in range(n_events):
        wf = waveforms[event]
        for pixel in range(n_pixels):
            for i in range(2, n_samples - 2):
                sums[i - 2] = np.float64(wf[pixel, i]) + (np.float64(wf[pixel, i - 1]) + np.float64(wf[pixel, i + 1]))
            peaks[pixel] = _first_argmax(sums) + 2
        _window_sums(wf, n_samples, peaks, 5, 2, sampling_rate_ghz, ones, high_gain, image[event], peak_time[event])


@njit(cache=True, nogil=True)
def _window_sum_at(row, n_samples, peak, width, shift, sampling_rate_ghz):
    """(float64 sum, float32 time in ns) of one waveform's window ``[peak - shift, + width)`` (as `_window_sums`)."""
    start = max(peak - shift, 0)
    end = max(min(peak - shift + width, n_samples), start)
    total = 0.0
    numerator = 0.0
    denominator = 0.0
    for sample in range(start, end):
        value = np.float64(row[sample])
        total += value
        if value > 0:
            numerator += value * sample
            denominator += value
    time = np.float32(numerator / denominator) if denominator > 0 else np.float32(peak)
    return total, np.float32(np.float64(time) / sampling_rate_ghz)


@njit(cache=True, nogil=True)
def _lapack_line(X, y):
    """Least-squares line ``(slope, intercept)`` through the rows of the design matrix ``X`` (n, 2).

    Solved as ``inv(X.T X) X.T y`` with numba's LAPACK/BLAS routines, the operations
    of ctapipe's ``linear_regression``, so that ties between equally good fits of
    degenerate point sets (e.g. any 2 of 3 points) resolve as in ctapipe.
    """
    normal = X.T @ X
    if np.linalg.det(normal) < _FIT_MIN_DET:
        return np.full(2, np.nan)
    return np.linalg.inv(normal) @ X.T @ y


@njit(cache=True, nogil=True)
def _two_pass_time_fit(x, y, rng):
    """LTS fit of the TwoPassWindowSum time gradient: (slope, intercept), NaN for fewer than 2 points.

    5 starts from random pairs (drawn from ``rng`` as ctapipe draws them), each refitted
    on the 85 % of points closest to the line until the residual sum changes by less than
    1e-12 (at most 20 times); the start with the smallest residual sum wins.
    """
    n = x.shape[0]
    if n < 2:
        return np.nan, np.nan
    X = np.empty((n, 2))
    X[:, 0] = x
    X[:, 1] = 1
    keep = np.int64(LTS_RELATIVE_SAMPLE_SIZE * n)
    best = np.full(2, np.nan)
    best_rss = np.inf
    pair = np.empty(2, dtype=np.int64)
    for _ in range(LTS_SAMPLES):
        pair[0] = rng.integers(0, n)
        pair[1] = rng.integers(0, n - 1)
        if pair[1] >= pair[0]:
            pair[1] += 1
        beta = _lapack_line(X[pair], y[pair])
        if np.isnan(beta[0]):
            continue
        rss = np.sum((y[pair] - (X[pair][:, 0] * beta[0] + beta[1])) ** 2)
        for _ in range(LTS_MAX_ITERATIONS):
            chosen = np.argsort((y - (X[:, 0] * beta[0] + beta[1])) ** 2)[:keep]
            beta = _lapack_line(X[chosen], y[chosen])
            previous = rss
            rss = np.sum((y[chosen] - (X[chosen][:, 0] * beta[0] + beta[1])) ** 2)
            if abs(previous - rss) < LTS_EPS:
                break
        if rss < best_rss:
            best_rss = rss
            best[:] = beta
    return best[0], best[1]


@njit(cache=True, nogil=True, error_model="numpy")
def _two_pass_second_kernel(
    waveforms, selected, charge, time, brightest, second, pix_x, pix_y, pix_area, sampling_rate_ghz,
    corrections, rng, image, peak_time, is_valid,
):
    """Second pass of each event (events in order: the time fits draw from ``rng`` in that order).

    ``charge`` (float64) / ``time``: first-pass results after in-painting; ``brightest``:
    the brightest island of the preliminary cleaning; ``second``: pixels to integrate again;
    ``corrections`` (3, n_gains): default / before / after window.  Images whose island has
    fewer than 3 pixels, or whose time fit fails, keep the first pass (``is_valid`` False).
    """
    n_events, n_pixels, n_samples = waveforms.shape
    w = np.empty(n_pixels)
    x = np.empty(n_pixels)
    y = np.empty(n_pixels)
    area = np.empty(n_pixels)
    fit_x = np.empty(n_pixels)
    fit_y = np.empty(n_pixels)
    hillas = np.empty(len(HILLAS_COLUMNS))
    for event in range(n_events):
        for pixel in range(n_pixels):
            image[event, pixel] = np.float32(charge[event, pixel])
            peak_time[event, pixel] = time[event, pixel]
        is_valid[event] = False
        n = 0
        for pixel in range(n_pixels):
            if brightest[event, pixel]:
                w[n] = charge[event, pixel]
                x[n] = pix_x[pixel]
                y[n] = pix_y[pixel]
                area[n] = pix_area[pixel]
                n += 1
        if n < 3:
            continue
        hillas_image(w[:n], x[:n], y[:n], area[:n], hillas)
        cog_x = hillas[I_FOV_LON]
        cog_y = hillas[I_FOV_LAT]
        cos_psi = np.cos(hillas[I_PSI])
        sin_psi = np.sin(hillas[I_PSI])
        n_fit = 0
        for pixel in range(n_pixels):
            if brightest[event, pixel]:
                longitude = (pix_x[pixel] - cog_x) * cos_psi + (pix_y[pixel] - cog_y) * sin_psi
                t = np.float64(time[event, pixel])
                if np.isfinite(longitude) and np.isfinite(t):
                    fit_x[n_fit] = longitude
                    fit_y[n_fit] = t
                    n_fit += 1
        slope, intercept = _two_pass_time_fit(fit_x[:n_fit].copy(), fit_y[:n_fit].copy(), rng)
        if np.isnan(slope):
            continue
        is_valid[event] = True
        for pixel in range(n_pixels):
            if not second[event, pixel]:
                continue
            longitude = (pix_x[pixel] - cog_x) * cos_psi + (pix_y[pixel] - cog_y) * sin_psi
            peak = np.int64(np.rint((slope * longitude + intercept) * sampling_rate_ghz))
            start = peak - 2
            kind = 0
            if start < 0:
                kind = 1
            if start + 5 > n_samples - 1:
                kind = 2
            width, shift = 5, 2
            if kind == 1:
                width, shift = 5, 0
            elif kind == 2:
                width, shift = 6, 4
            if peak < 2:
                peak = 0
            if peak > n_samples - 3:
                peak = n_samples - 1
            total, t = _window_sum_at(waveforms[event, pixel], n_samples, peak, width, shift, sampling_rate_ghz)
            image[event, pixel] = _corrected(total, corrections[kind, selected[event, pixel]])
            peak_time[event, pixel] = t


# --------------------------------------------------------------------------- corrections


def integration_correction(
    reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz, window_width, window_shift
):
    """Charge correction per gain channel for a window around the pulse peak.

    The reference pulse of each channel is rebinned to the camera sampling
    (bins of ``1 / sampling_rate_ghz`` ns starting at 0, normalised to unit
    area); the correction is one over the fraction of that pulse inside a
    window of ``window_width`` samples starting ``window_shift`` samples before
    its highest bin, so a noise-free single p.e. pulse integrates to 1.
    Returns a (n_channels,) float64 array (1 where the window is empty).
    """
    pulses = np.atleast_2d(np.asarray(reference_pulse_shape, dtype=np.float64))
    sample_width_ns = 1.0 / sampling_rate_ghz
    correction = np.ones(len(pulses), dtype=np.float64)
    for channel, pulse in enumerate(pulses):
        duration = pulse.size * reference_pulse_sample_width_ns
        times = np.arange(0, duration, reference_pulse_sample_width_ns)
        edges = np.arange(0, duration, sample_width_ns)
        sampled, _ = np.histogram(times, edges, weights=pulse, density=True)
        start = max(int(np.argmax(sampled)) - window_shift, 0)
        end = min(start + window_width, sampled.size)
        if start < end:
            correction[channel] = 1.0 / (sampled[start:end].sum() * sample_width_ns)
    return correction


def sliding_window_correction(reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz, window_width):
    """Charge correction per gain channel for :func:`sliding_window_max_sum`.

    Total area of the reference pulse over its largest sum in a window as long
    as ``window_width`` camera samples (rounded to reference-pulse bins).
    """
    pulses = np.atleast_2d(np.asarray(reference_pulse_shape, dtype=np.float64))
    n_bins = int(round(window_width / sampling_rate_ghz / reference_pulse_sample_width_ns))
    correction = np.ones(len(pulses), dtype=np.float64)
    for channel, pulse in enumerate(pulses):
        cumulative = np.concatenate([[0.0], np.cumsum(pulse)])
        best = np.max(cumulative[n_bins:] - cumulative[:-n_bins])
        correction[channel] = pulse.sum() / best
    return correction


def _deconvolve_array(pulse, pole_zero, upsampling):
    pulse = np.ascontiguousarray(pulse, dtype=np.float64)
    out = np.empty(pulse.size * upsampling)
    _deconvolve(pulse, float(pole_zero), int(upsampling), out, np.empty_like(out))
    return out


def flashcam_parameters(
    reference_pulse_shape, reference_pulse_sample_width_ns, sampling_rate_ghz, upsampling=4, window_width=7,
    window_shift=3, leading_edge_timing=True, leading_edge_rel_descend_limit=0.05, effective_time_profile_std=2.0,
):
    """Deconvolution constants of :func:`flashcam_extractor` from the reference pulse, per gain channel.

    The reference pulse is sampled at the camera rate (at every phase of the
    finer reference sampling).  ``pole_zero`` is the ratio of the samples after
    the steepest fall, which flattens the pulse tail; ``gain`` is the fraction
    of the pulse (smeared by a Gaussian arrival-time profile of
    ``effective_time_profile_std`` ns) that the deconvolved window keeps;
    ``time_shift`` (ns) is the offset of the deconvolved (or leading-edge)
    time from the pulse maximum; ``leading_edge_shift`` (upsampled samples)
    is the offset of the derivative peak from the deconvolved peak.
    Returns a dict of (n_channels,) float64 arrays, averaged over phases.
    """
    if upsampling < 1:
        raise ValueError(f"upsampling must be > 0, got {upsampling}")
    if window_width < 1:
        raise ValueError(f"window_width must be > 0, got {window_width}")
    pulses = np.atleast_2d(np.asarray(reference_pulse_shape, dtype=np.float64))
    camera_width_ns = 1.0 / sampling_rate_ghz
    if camera_width_ns < reference_pulse_sample_width_ns:
        raise ValueError(
            f"reference pulse sampling ({reference_pulse_sample_width_ns} ns) must be finer than the camera "
            f"sampling ({camera_width_ns} ns)"
        )
    step = int(round(camera_width_ns / reference_pulse_sample_width_ns))
    result = {"pole_zero": [], "gain": [], "time_shift": [], "leading_edge_shift": []}
    for pulse in pulses:
        ratios = []
        for phase in range(step):
            sampled = pulse[phase::step]
            steepest = np.argmin(np.diff(sampled)) + 1
            ratios.append(sampled[steepest + 1] / sampled[steepest])
        pole_zero = np.mean(ratios)
        if effective_time_profile_std:
            times = (np.arange(pulse.size) - pulse.size / 2) * reference_pulse_sample_width_ns
            import scipy.stats  # only for FlashCam's deconvolution; keeps start-up fast

            profile = scipy.stats.norm(0.0, effective_time_profile_std).pdf(times)
            pulse = np.convolve(pulse, profile, "same")
        integral = pulse.sum() * reference_pulse_sample_width_ns / camera_width_ns
        gains, shifts, edge_shifts = [], [], []
        for phase in range(step):
            sampled = pulse[phase::step]
            deconvolved = _deconvolve_array(sampled, pole_zero, upsampling)
            peak = deconvolved.argmax()
            start = peak - window_shift
            if start < 0 or start + window_width > deconvolved.size:
                continue
            time = peak
            if leading_edge_timing:
                derivative = _deconvolve_array(sampled, 1.0, upsampling)
                derivative_peak = derivative.argmax()
                edge_shifts.append(peak - derivative_peak)
                # float32 as in ctapipe, which keeps that precision in the arithmetic below
                time = np.float32(_adaptive_centroid(derivative, derivative_peak, leading_edge_rel_descend_limit))
            shifts.append((time / int(upsampling) * step - pulse.argmax()) * reference_pulse_sample_width_ns)
            gains.append(deconvolved[start:start + window_width].sum() / integral)
        if not gains:
            raise ValueError("reference pulse shape is malformed: its peak is not contained in the window")
        result["pole_zero"].append(pole_zero)
        result["gain"].append(np.mean(gains))
        result["time_shift"].append(np.mean(shifts))
        result["leading_edge_shift"].append(np.mean(edge_shifts) if edge_shifts else np.nan)
    return {key: np.array(value, dtype=np.float64) for key, value in result.items()}


# --------------------------------------------------------------------------- wrappers


def _prepare(waveforms, selected_gain_channel, correction):
    waveforms = np.asarray(waveforms)
    if waveforms.dtype not in (np.float32, np.float64):
        waveforms = waveforms.astype(np.float32)
    if waveforms.ndim != 3 or waveforms.shape[2] == 0:
        raise ValueError(f"waveforms must have shape (n_events, n_pixels, n_samples > 0), got {waveforms.shape}")
    waveforms = np.ascontiguousarray(waveforms)
    n_events, n_pixels, _ = waveforms.shape
    if selected_gain_channel is None:
        selected = np.zeros((n_events, n_pixels), dtype=np.int8)
    else:
        selected = np.ascontiguousarray(np.broadcast_to(selected_gain_channel, (n_events, n_pixels)), dtype=np.int8)
    if correction is None:
        correction = np.ones(2, dtype=np.float64)
    else:
        correction = np.atleast_1d(np.asarray(correction, dtype=np.float64))
        if selected.size and selected.max() >= len(correction):
            raise ValueError(f"no integration correction for gain channel {selected.max()}")
    image = np.empty((n_events, n_pixels), dtype=np.float32)
    peak_time = np.empty((n_events, n_pixels), dtype=np.float32)
    return waveforms, selected, correction, image, peak_time


def _broken(broken_pixels, n_events, n_pixels):
    if broken_pixels is None:
        return np.zeros((1, n_pixels), dtype=np.bool_)
    broken = np.asarray(broken_pixels, dtype=np.bool_)
    if broken.ndim == 1:
        broken = broken[np.newaxis]
    if broken.ndim != 2 or broken.shape[1] != n_pixels or broken.shape[0] not in (1, n_events):
        raise ValueError(f"broken_pixels must have shape (n_events or 1, {n_pixels}), got {broken.shape}")
    return np.ascontiguousarray(broken)


def _neighbors(neighbors, n_pixels):
    """CSR ``(indptr, indices)`` as int64 plus the (n_pixels, 6) uint32 table of the fast path.

    Missing neighbours point to row ``n_pixels`` (the zero row of the kernels'
    buffers); the table has no columns if some pixel has more than 6 neighbours.
    The arrays are cached by content (built once per camera): the kernels only read them.
    The same array objects as last time are checked against the cached copy, not hashed again.
    """
    indptr, indices = (np.ascontiguousarray(a, dtype=np.int64) for a in neighbors)
    if len(indptr) != n_pixels + 1:
        raise ValueError(f"neighbours are for {len(indptr) - 1} pixels, waveforms have {n_pixels}")
    key = (id(indptr), id(indices))
    seen = _RECENT_NEIGHBORS.get(key)
    if (seen is not None and seen[0] is indptr and seen[1] is indices and np.array_equal(seen[2][0], indptr)
            and np.array_equal(seen[2][1], indices)):
        return seen[2]
    arrays = _neighbor_arrays(indptr.tobytes(), indices.tobytes(), n_pixels)
    if len(_RECENT_NEIGHBORS) >= 32:
        _RECENT_NEIGHBORS.clear()
    _RECENT_NEIGHBORS[key] = (indptr, indices, arrays)
    return arrays


#: ``(id(indptr), id(indices))`` -> (indptr, indices, `_neighbor_arrays`) of recent calls
_RECENT_NEIGHBORS = {}


@lru_cache(maxsize=32)
def _neighbor_arrays(indptr_bytes, indices_bytes, n_pixels):
    indptr = np.frombuffer(indptr_bytes, dtype=np.int64).copy()
    indices = np.frombuffer(indices_bytes, dtype=np.int64).copy()
    counts = np.diff(indptr)
    if counts.size and counts.max() > _FAST_NEIGHBORS:
        return indptr, indices, np.zeros((n_pixels, 0), dtype=np.uint32)
    table = np.full((n_pixels, _FAST_NEIGHBORS), n_pixels, dtype=np.uint32)
    rows = np.repeat(np.arange(n_pixels), counts)
    table[rows, np.arange(len(indices)) - indptr[rows]] = indices
    return indptr, indices, table


def _fast_path(table, local_weight, n_samples):
    """Whether the fast neighbour-sum path applies to float32 waveforms (else all pixels take the exact path).

    The weight must convert to float32 exactly (|w| ≤ 2**24) for ``own * w``
    to round as ctapipe's; negative weights would lift the padding above the
    real sums.
    """
    return (
        table.shape[1] == _FAST_NEIGHBORS and 0 <= local_weight <= 2**24 and 0 < n_samples <= _MAX_FAST_SAMPLES
    )


def _may_overflow(r0, pedestal, factor, calib_shift, local_weight):
    """Whether R1 = (r0 - pedestal) * factor + shift may be non-finite or so large that a neighbour sum overflows."""
    if r0.dtype.kind not in "ui":
        return True
    info = np.iinfo(r0.dtype)
    # Python floats: inf and NaN propagate without warnings (a NaN makes the comparison False)
    largest_pedestal = max(float(pedestal.max(initial=0.0)), -float(pedestal.min(initial=0.0)))
    largest_factor = max(float(factor.max(initial=0.0)), -float(factor.min(initial=0.0)))
    largest = (max(-float(info.min), float(info.max)) + largest_pedestal) * largest_factor + abs(float(calib_shift))
    # 2: generous margin for the float32 rounding of each step
    return not 2 * largest * (abs(local_weight) + _FAST_NEIGHBORS) < 1e38


def _n_chunks(n_threads, n_events):
    """Number of event chunks for the parallel kernels (1: run the serial kernel)."""
    if n_threads is None or n_threads <= 1 or n_events < 2:
        return 1
    return int(min(n_threads, numba.config.NUMBA_NUM_THREADS, n_events))


def _run(serial, parallel, n_chunks, n_events, *args):
    if n_chunks == 1:
        serial(0, n_events, *args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_chunks)
    try:
        parallel(n_chunks, *args)
    finally:
        numba.set_num_threads(previous)


def neighbor_peak_window_sum(
    waveforms, selected_gain_channel, neighbors, sampling_rate_ghz, correction=None,
    window_width=7, window_shift=3, local_weight=0, broken_pixels=None, n_threads=1,
):
    """ctapipe's ``NeighborPeakWindowSum``: window around the peak of the neighbours' summed waveform.

    The peak index of a pixel is the first maximum of the sum of its
    non-broken neighbours' waveforms plus ``local_weight`` times its own.
    ``n_threads`` > 1 splits the events over that many numba threads.
    """
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, correction)
    n_events, n_pixels, _ = waveforms.shape
    indptr, indices, table = _neighbors(neighbors, n_pixels)
    local_weight = int(local_weight)
    fast = _fast_path(table, local_weight, waveforms.shape[2]) and waveforms.dtype == np.float32
    _run(
        _neighbor_peak_events, _neighbor_peak_parallel, _n_chunks(n_threads, n_events), n_events,
        waveforms, selected, indptr, indices, table, fast, local_weight,
        _broken(broken_pixels, n_events, n_pixels), int(window_width), int(window_shift), float(sampling_rate_ghz),
        correction, image, peak_time,
    )
    return image, peak_time


@njit(**KERNEL_OPTIONS)
def _kept_neighbor_peak_kernel(
    samples, kept, selected, indptr, indices, table, fast, local_weight, broken, width, shift, sampling_rate_ghz,
    correction, complete, image, peak_time,
):
    """NeighborPeakWindowSum of the kept pixels whose neighbours are all kept, into ``image``/``peak_time``.

    ``samples`` (n_rows, n_samples): the waveforms of the ``kept`` (n_events, n_pixels)
    pixels, event by event, pixels in increasing order.  The neighbour sums and peaks are
    those of the full-camera kernel: with ``fast`` `_neighbor_sum_peak` on a padded copy of
    the event's kept rows (``table``: the neighbours in CSR order, see `_neighbors`), else,
    and for the pixels it leaves, `_exact_neighbor_peaks`' arithmetic (float32, ``own *
    weight`` then the non-broken neighbours in CSR order; numpy's argmax).  The window sums
    are `_window_sums`'.  Sets ``complete`` and overwrites ``image``/``peak_time``
    (n_events, n_pixels) of those pixels only.
    """
    wide_vectors()
    n_events, n_pixels = kept.shape
    n_rows, n_samples = samples.shape
    row_of = np.full(n_pixels, -1, dtype=np.int64)
    row_event = np.empty(n_rows, dtype=np.int64)
    row_pixel = np.empty(n_rows, dtype=np.int64)
    row_selected = np.empty(n_rows, dtype=np.int8)
    row_complete = np.zeros(n_rows, dtype=np.bool_)
    peaks = np.zeros(n_rows, dtype=np.int64)
    weight = np.float32(local_weight)
    # fast path: the event's kept rows from 0, the zero row n_pixels, padding samples (see `_scratch`)
    buf, _, _, _ = _scratch(n_pixels if fast else 0, n_samples, table)
    zero_row = buf.shape[0] - 1
    j = np.empty(_FAST_NEIGHBORS, dtype=np.int64)
    sums = np.empty(n_samples, dtype=np.float32)
    row = 0
    for event in range(n_events):
        first = row
        for pixel in range(n_pixels):
            if kept[event, pixel]:
                row_of[pixel] = row
                row_event[row] = event
                row_pixel[row] = pixel
                row_selected[row] = selected[event, pixel]
                row += 1
        if fast:
            for own in range(first, row):
                for sample in range(n_samples):
                    buf[own - first, sample] = samples[own, sample]
        event_broken = broken[event if broken.shape[0] > 1 else 0]
        for own in range(first, row):
            pixel = row_pixel[own]
            whole = True
            for k in range(indptr[pixel], indptr[pixel + 1]):
                if row_of[indices[k]] < 0:
                    whole = False
                    break
            if not whole:
                continue
            row_complete[own] = True
            if fast:
                for k in range(_FAST_NEIGHBORS):
                    neighbor = table[pixel, k]
                    if neighbor >= n_pixels or event_broken[neighbor]:
                        j[k] = zero_row
                    else:
                        j[k] = row_of[neighbor] - first
                peak, bad = _neighbor_sum_peak(buf, own - first, j[0], j[1], j[2], j[3], j[4], j[5], weight, True)
                if peak < n_samples and not bad:
                    peaks[own] = peak
                    continue
            for sample in range(n_samples):
                sums[sample] = samples[own, sample] * weight
            for k in range(indptr[pixel], indptr[pixel + 1]):
                neighbor = indices[k]
                if not event_broken[neighbor]:
                    other = row_of[neighbor]
                    for sample in range(n_samples):
                        sums[sample] += samples[other, sample]
            peaks[own] = _first_argmax(sums)  # numpy's argmax: the first maximum, or the first NaN
        for own in range(first, row):
            row_of[row_pixel[own]] = -1
    charge = np.empty(n_rows, dtype=np.float32)
    time = np.empty(n_rows, dtype=np.float32)
    _window_sums(samples, n_samples, peaks, width, shift, sampling_rate_ghz, correction, row_selected, charge, time)
    for own in range(n_rows):
        if row_complete[own]:
            event = row_event[own]
            pixel = row_pixel[own]
            complete[event, pixel] = True
            image[event, pixel] = charge[own]
            peak_time[event, pixel] = time[own]


@njit(**KERNEL_OPTIONS)
def _calibrate_rows_kernel(samples, pixel_id, gain, pedestal, factor, shift, r1):
    wide_vectors()
    n_rows, n_samples = samples.shape
    for row in range(n_rows):
        ped = pedestal[gain[row], pixel_id[row]]
        fac = factor[gain[row], pixel_id[row]]
        for sample in range(n_samples):
            r1[row, sample] = (np.float32(samples[row, sample]) - ped) * fac + shift


def calibrate_kept_samples(samples, pixel_id, gain, pedestal_per_sample, dc_to_pe):
    """R1 (n_rows, n_samples) float32 of rows of raw samples of pixels ``pixel_id`` in gains ``gain``.

    ``pedestal_per_sample``/``dc_to_pe``: (n_gains, n_pixels).  The float32 arithmetic of
    `~iactpipe.image.calibration.calibrate_r1` sample by sample, so the R1 of the kept pixels
    of a reduced DL0 is bit for bit that of the full data.
    """
    samples = np.ascontiguousarray(samples)  # a column of a table's rows: contiguous samples vectorise
    if samples.ndim != 2:
        raise ValueError(f"samples must be (n_rows, n_samples), got {samples.shape}")
    pixel_id = np.asarray(pixel_id, dtype=np.int64)
    gain = np.asarray(gain, dtype=np.int64)
    pedestal = np.ascontiguousarray(pedestal_per_sample, dtype=np.float32)
    factor = np.ascontiguousarray(dc_to_pe, dtype=np.float32)
    if pixel_id.shape != (len(samples),) or gain.shape != (len(samples),):
        raise ValueError(f"need one pixel_id and gain per row ({len(samples)}), got {pixel_id.shape} and {gain.shape}")
    if len(samples) and (pixel_id.min() < 0 or pixel_id.max() >= pedestal.shape[1] or gain.min() < 0
                         or gain.max() >= pedestal.shape[0]):
        raise ValueError(f"pixel_id or gain outside the coefficients' {pedestal.shape} (n_gains, n_pixels)")
    r1 = np.empty(samples.shape, dtype=np.float32)
    _calibrate_rows_kernel(samples, pixel_id, gain, pedestal, factor, np.float32(0.0), r1)
    return r1


def neighbor_peak_window_sum_kept(
    samples, kept, selected_gain_channel, neighbors, sampling_rate_ghz, correction=None,
    window_width=7, window_shift=3, local_weight=0, broken_pixels=None, fill_image=None, fill_peak_time=None,
):
    """`neighbor_peak_window_sum` of the pixels whose own and all neighbours' waveforms are known.

    ``samples`` (n_rows, n_samples) holds the waveforms of the pixels where ``kept``
    (n_events, n_pixels) is True, event by event, pixels in increasing order (that is
    ``waveforms[kept]``).  Returns ``(image, peak_time, complete)``, each (n_events,
    n_pixels): where ``complete`` (the pixel and all its neighbours kept) exactly what
    `neighbor_peak_window_sum` gives on the full waveforms, elsewhere ``fill_image`` and
    ``fill_peak_time`` (NaN if not given).
    """
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    kept = np.ascontiguousarray(kept, dtype=np.bool_)
    if samples.ndim != 2 or kept.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"samples must be (n_rows, n_samples > 0) and kept (n_events, n_pixels), "
                         f"got {samples.shape} and {kept.shape}")
    n_events, n_pixels = kept.shape
    n_rows = int(np.count_nonzero(kept))
    if len(samples) != n_rows:
        raise ValueError(f"kept marks {n_rows} waveforms, samples has {len(samples)}")
    if selected_gain_channel is None:
        selected = np.zeros(kept.shape, dtype=np.int8)
    else:
        selected = np.ascontiguousarray(np.broadcast_to(selected_gain_channel, kept.shape), dtype=np.int8)
    correction = np.ones(2) if correction is None else np.atleast_1d(np.asarray(correction, dtype=np.float64))
    if selected.size and selected.max() >= len(correction):
        raise ValueError(f"no integration correction for gain channel {selected.max()}")
    indptr, indices, table = _neighbors(neighbors, n_pixels)
    fast = _fast_path(table, int(local_weight), samples.shape[1])
    outputs = []
    for fill in (fill_image, fill_peak_time):
        if fill is None:
            outputs.append(np.full(kept.shape, np.nan, dtype=np.float32))
        else:
            outputs.append(np.array(np.broadcast_to(fill, kept.shape), dtype=np.float32, order="C"))
    image, peak_time = outputs
    complete = np.zeros(kept.shape, dtype=np.bool_)
    _kept_neighbor_peak_kernel(
        samples, kept, selected, indptr, indices, table, fast, int(local_weight),
        _broken(broken_pixels, n_events, n_pixels),
        int(window_width), int(window_shift), float(sampling_rate_ghz), correction, complete, image, peak_time,
    )
    return image, peak_time, complete


def calibrate_and_extract(
    r0, pedestal_per_sample, dc_to_pe, neighbors, sampling_rate_ghz, correction=None, window_width=7,
    window_shift=3, local_weight=0, unusable=None, threshold=DEFAULT_GAIN_THRESHOLD, channel=None,
    calib_scale=1.0, calib_shift=0.0, return_r1=False, n_threads=1,
):
    """R0 → (image, peak_time) in one pass: :func:`~iactpipe.image.calibration.calibrate_r1`
    followed by :func:`neighbor_peak_window_sum`, event by event in cache.

    Identical results to the two calls; the R1 waveforms of an event stay in
    cache instead of being written out for the whole chunk and read back.  ``unusable``: per-gain pixel flags (n_gains,
    n_pixels) or (n_events, n_gains, n_pixels), used for the selected gain as
    ctapipe's ``broken_pixels``.  Returns ``(image, peak_time,
    selected_gain_channel)``, plus the R1 waveforms with ``return_r1``.
    ``n_threads`` > 1 splits the events over that many numba threads.
    """
    r0 = np.ascontiguousarray(r0)
    if r0.ndim != 4 or r0.shape[3] == 0:
        raise ValueError(f"r0 must have shape (n_events, n_gains, n_pixels, n_samples > 0), got {r0.shape}")
    n_events, n_gains, n_pixels, n_samples = r0.shape
    pedestal = _per_event(pedestal_per_sample, n_events, n_gains, n_pixels, "pedestal_per_sample", np.float32)
    factor = _per_event(dc_to_pe, n_events, n_gains, n_pixels, "dc_to_pe", np.float32)
    if calib_scale != 1.0:
        factor = (factor * np.float32(calib_scale)).astype(np.float32)
    if unusable is None:
        unusable = np.zeros((1, n_gains, n_pixels), dtype=np.bool_)
    unusable = _per_event(unusable, n_events, n_gains, n_pixels, "unusable", np.bool_)
    forced = -1 if channel is None else int(channel)
    if forced not in (-1, 0, 1) or forced >= n_gains:
        raise ValueError(f"gain channel must be 0 or 1 (and exist in r0), got {channel}")
    indptr, indices, table = _neighbors(neighbors, n_pixels)
    correction = np.ones(2) if correction is None else np.atleast_1d(np.asarray(correction, dtype=np.float64))
    if len(correction) < n_gains:
        raise ValueError(f"integration correction has {len(correction)} values for {n_gains} gain channels")
    local_weight = int(local_weight)
    r1 = np.empty((n_events if return_r1 else 0, n_pixels, n_samples), dtype=np.float32)
    selected = np.empty((n_events, n_pixels), dtype=np.int8)
    image = np.empty((n_events, n_pixels), dtype=np.float32)
    peak_time = np.empty((n_events, n_pixels), dtype=np.float32)
    _run(
        _calibrate_neighbor_peak_events, _calibrate_neighbor_peak_parallel, _n_chunks(n_threads, n_events), n_events,
        r0, pedestal, factor, float(threshold), forced, np.float32(calib_shift), unusable, indptr, indices, table,
        _fast_path(table, local_weight, n_samples), _may_overflow(r0, pedestal, factor, calib_shift, local_weight),
        local_weight, int(window_width), int(window_shift), float(sampling_rate_ghz), correction, r1, bool(return_r1),
        selected, image, peak_time,
    )
    if return_r1:
        return image, peak_time, selected, r1
    return image, peak_time, selected


def neighbor_peak_window_sum_selected(
    samples, selected_gain_channel, pedestal_per_sample, dc_to_pe, neighbors, sampling_rate_ghz, correction=None,
    window_width=7, window_shift=3, local_weight=0, broken_pixels=None,
):
    """Compact DL0 → (image, peak_time): :func:`~iactpipe.image.calibration.calibrate_selected_samples`
    followed by :func:`neighbor_peak_window_sum`, event by event in cache (identical results; the R1
    is never written out).  ``samples`` (n_events, n_pixels, n_samples) raw samples of the gain
    ``selected_gain_channel`` names; coefficients (n_gains, n_pixels); ``broken_pixels`` of the
    selected gain, (n_pixels,) or (n_events, n_pixels).
    """
    samples, selected, pedestal, factor = selected_samples_arrays(samples, selected_gain_channel,
                                                                  pedestal_per_sample, dc_to_pe)
    n_events, n_pixels, n_samples = samples.shape
    if n_samples == 0:
        raise ValueError(f"samples must have shape (n_events, n_pixels, n_samples > 0), got {samples.shape}")
    indptr, indices, table = _neighbors(neighbors, n_pixels)
    correction = np.ones(2) if correction is None else np.atleast_1d(np.asarray(correction, dtype=np.float64))
    if selected.size and selected.max() >= len(correction):
        raise ValueError(f"no integration correction for gain channel {selected.max()}")
    local_weight = int(local_weight)
    image = np.empty((n_events, n_pixels), dtype=np.float32)
    peak_time = np.empty((n_events, n_pixels), dtype=np.float32)
    shift = np.float32(0.0)
    _selected_neighbor_peak_events(
        samples, selected, pedestal, factor, shift, _broken(broken_pixels, n_events, n_pixels), indptr, indices,
        table, _fast_path(table, local_weight, n_samples), _may_overflow(samples, pedestal, factor, 0.0, local_weight),
        local_weight, int(window_width), int(window_shift), float(sampling_rate_ghz), correction, image, peak_time,
    )
    return image, peak_time


def local_peak_window_sum(
    waveforms, selected_gain_channel, sampling_rate_ghz, correction=None, window_width=7, window_shift=3
):
    """ctapipe's ``LocalPeakWindowSum``: window around each pixel's own (first) maximum."""
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, correction)
    _local_peak_kernel(
        waveforms, selected, int(window_width), int(window_shift), float(sampling_rate_ghz),
        correction, image, peak_time,
    )
    return image, peak_time


def global_peak_window_sum(
    waveforms, selected_gain_channel, sampling_rate_ghz, correction=None, window_width=7, window_shift=3,
    pixel_fraction=1.0, broken_pixels=None,
):
    """ctapipe's ``GlobalPeakWindowSum``: one window per event around the peak of the camera-mean waveform.

    With ``pixel_fraction < 1`` only the ``int(pixel_fraction * n_pixels)``
    pixels with the highest maxima enter the mean.
    """
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, correction)
    n_events, n_pixels, _ = waveforms.shape
    broken = _broken(broken_pixels, n_events, n_pixels)
    peaks = np.empty(n_events, dtype=np.int64)
    if pixel_fraction == 1.0:
        _global_peak_all_kernel(waveforms, broken, peaks)
    else:
        n_brightest = int(pixel_fraction * n_pixels)
        if not 0 < n_brightest <= n_pixels:
            raise ValueError(f"pixel_fraction {pixel_fraction} selects {n_brightest} of {n_pixels} pixels")
        _global_peak_brightest_kernel(waveforms, broken, n_brightest, peaks)
    _fixed_peak_kernel(
        waveforms, selected, peaks, int(window_width), int(window_shift), float(sampling_rate_ghz),
        correction, image, peak_time,
    )
    return image, peak_time


def fixed_window_sum(
    waveforms, selected_gain_channel, sampling_rate_ghz, correction=None, peak_index=0, window_width=7,
    window_shift=0,
):
    """ctapipe's ``FixedWindowSum``: the same window ``[peak_index - shift, + width)`` for all pixels."""
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, correction)
    peaks = np.full(len(waveforms), int(peak_index), dtype=np.int64)
    _fixed_peak_kernel(
        waveforms, selected, peaks, int(window_width), int(window_shift), float(sampling_rate_ghz),
        correction, image, peak_time,
    )
    return image, peak_time


def full_waveform_sum(waveforms, selected_gain_channel, sampling_rate_ghz):
    """ctapipe's ``FullWaveformSum``: the sum of all samples (no correction)."""
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, None)
    peaks = np.zeros(len(waveforms), dtype=np.int64)
    _fixed_peak_kernel(
        waveforms, selected, peaks, waveforms.shape[-1], 0, float(sampling_rate_ghz), correction, image, peak_time,
    )
    return image, peak_time


def sliding_window_max_sum(waveforms, selected_gain_channel, sampling_rate_ghz, correction=None, window_width=7):
    """ctapipe's ``SlidingWindowMaxSum``: the largest sum of ``window_width`` consecutive samples.

    Use :func:`sliding_window_correction` for its integration correction.
    """
    waveforms, selected, correction, image, peak_time = _prepare(waveforms, selected_gain_channel, correction)
    if not 0 < window_width <= waveforms.shape[-1]:
        raise ValueError(f"window_width {window_width} must be in 1..{waveforms.shape[-1]} (n_samples)")
    _sliding_window_kernel(
        waveforms, selected, int(window_width), float(sampling_rate_ghz), correction, image, peak_time
    )
    return image, peak_time


def flashcam_extractor(
    waveforms, neighbors, sampling_rate_ghz, parameters, upsampling=4, window_width=7, window_shift=3,
    local_weight=0, neighbour_sum_clipping=5.0, leading_edge_timing=True, leading_edge_rel_descend_limit=0.05,
    broken_pixels=None,
):
    """ctapipe's ``FlashCamExtractor``: deconvolve, upsample, neighbour peak, leading-edge time.

    Each waveform is pole-zero deconvolved and upsampled (see
    :func:`flashcam_parameters`, whose first-channel values ``parameters``
    are used for all pixels, as ctapipe does); the window position comes
    from the neighbours' sum of the soft-clipped deconvolved waveforms
    (``x / (1 + |x|)`` of ``x = waveform / neighbour_sum_clipping``, negative
    parts cut; 0 or inf disables clipping); the charge is the window sum over
    ``gain``, and the time, with ``leading_edge_timing``, the centroid of the
    derivative pulse down to ``leading_edge_rel_descend_limit`` of its peak,
    minus ``time_shift``.
    """
    waveforms, _, _, image, peak_time = _prepare(waveforms, None, None)
    n_events, n_pixels, _ = waveforms.shape
    indptr, indices = (np.asarray(a, dtype=np.int64) for a in neighbors)
    if len(indptr) != n_pixels + 1:
        raise ValueError(f"neighbours are for {len(indptr) - 1} pixels, waveforms have {n_pixels}")
    clipping = float(neighbour_sum_clipping)
    if not np.isfinite(clipping):
        clipping = 0.0
    leading_edge_shift = float(parameters["leading_edge_shift"][0]) if leading_edge_timing else 0.0
    _flashcam_kernel(
        waveforms, indptr, indices, int(local_weight), _broken(broken_pixels, n_events, n_pixels),
        int(upsampling), int(window_width), int(window_shift), float(sampling_rate_ghz),
        float(parameters["pole_zero"][0]), float(parameters["gain"][0]), float(parameters["time_shift"][0]),
        leading_edge_shift, clipping, bool(leading_edge_timing), float(leading_edge_rel_descend_limit),
        image, peak_time,
    )
    return image, peak_time


def baseline_subtracted_neighbor_peak_window_sum(
    waveforms, selected_gain_channel, neighbors, sampling_rate_ghz, correction=None, window_width=7,
    window_shift=3, local_weight=0, baseline_start=0, baseline_end=10, broken_pixels=None,
):
    """ctapipe's ``BaselineSubtractedNeighborPeakWindowSum``: :func:`neighbor_peak_window_sum` after
    subtracting each waveform's mean over samples ``baseline_start .. baseline_end - 1``.

    The mean is numpy's (in the waveform dtype), as ctapipe computes it.
    """
    waveforms = np.asarray(waveforms)
    if waveforms.dtype not in (np.float32, np.float64):
        waveforms = waveforms.astype(np.float32)
    n_samples = waveforms.shape[-1]
    start, end = int(baseline_start), int(baseline_end)
    if not 0 <= start < min(end, n_samples):
        raise ValueError(f"baseline window {start}..{end} holds no sample of the {n_samples}-sample waveforms")
    baseline = np.mean(waveforms[..., start:end], axis=-1)
    return neighbor_peak_window_sum(
        waveforms - baseline[..., np.newaxis], selected_gain_channel, neighbors, sampling_rate_ghz, correction,
        window_width, window_shift, local_weight, broken_pixels,
    )


def two_pass_core_threshold(tel_type):
    """ctapipe's default TwoPassWindowSum core threshold (p.e.) for a telescope type: SST 4, MST 8, else 6."""
    if tel_type.startswith("MST"):
        return 8.0
    if tel_type.startswith("SST"):
        return 4.0
    return 6.0


def two_pass_window_sum(
    waveforms, selected_gain_channel, neighbors, sampling_rate_ghz, camera_geometry, corrections=None,
    core_threshold=6.0, disable_second_pass=False, broken_pixels=None, rng=None,
):
    """ctapipe's ``TwoPassWindowSum`` (the CTA-MARS extractor); returns ``(image, peak_time, is_valid)``.

    1. Each pixel: 5 samples around the largest sum of 3 consecutive samples (window
       centre in samples 2 .. n - 3); the charge times the (5, 2) integration correction.
    2. ``broken_pixels`` of that image are in-painted (ctapipe's ``NeighborAverage``).
    3. Tail cuts (``core_threshold``, half of it, one core neighbour); its brightest island.
    4. Islands of at least 3 pixels: Hillas parameters in the camera frame (``camera_geometry``
       pixel positions, m) and an LTS fit of peak time along the major axis (from ``rng``,
       default :data:`iactpipe.image.timing.FIT_RNG`, events in order).
    5. All pixels but the island's core ones (>= ``core_threshold``) are integrated again
       over 5 samples around the fitted time (the first 5, or the last 6 from 4 before it,
       where the window leaves the readout), with the matching integration correction.

    ``corrections``: (3, n_gains) integration corrections of the (width, shift) windows
    (5, 2), (5, 0) and (6, 4), or None.  ``is_valid`` is False where step 4 failed (fewer
    than 3 pixels or no fit): those images are the first pass.  With
    ``disable_second_pass`` only step 1 is done.
    """
    waveforms, selected, _, image, peak_time = _prepare(waveforms, selected_gain_channel, None)
    n_events, n_pixels, n_samples = waveforms.shape
    if n_samples < 5:
        raise ValueError(f"TwoPassWindowSum needs at least 5 samples, the waveforms have {n_samples}")
    corrections = np.ones((3, 2)) if corrections is None else np.asarray(corrections, dtype=np.float64)
    if corrections.ndim != 2 or corrections.shape[0] != 3 or (selected.size and selected.max() >= corrections.shape[1]):
        raise ValueError(f"corrections must have shape (3, n_gains), got {corrections.shape}")
    sampling_rate_ghz = float(sampling_rate_ghz)
    _two_pass_first_kernel(waveforms, sampling_rate_ghz, image, peak_time)
    charge = image.astype(np.float64) * corrections[0][selected]
    if disable_second_pass:
        return charge.astype(np.float32), peak_time, np.ones(n_events, dtype=bool)
    broken = _broken(broken_pixels, n_events, n_pixels)
    if broken.any():
        charge, peak_time = interpolate_invalid_pixels(charge, peak_time, broken, neighbors)
    core_threshold = float(core_threshold)
    masks = tailcuts_clean(charge, neighbors, core_threshold, core_threshold / 2, False, 1)
    n_islands, labels = number_of_islands(masks, neighbors)
    brightest = brightest_island(n_islands, labels, charge)
    second = ~brightest | (charge < core_threshold)
    out_image = np.empty_like(image)
    out_time = np.empty_like(peak_time)
    is_valid = np.empty(n_events, dtype=bool)
    f8 = np.float64
    _two_pass_second_kernel(
        waveforms, selected, charge, peak_time, brightest, second,
        np.ascontiguousarray(camera_geometry.pix_x, dtype=f8), np.ascontiguousarray(camera_geometry.pix_y, dtype=f8),
        np.ascontiguousarray(camera_geometry.pix_area, dtype=f8), sampling_rate_ghz, corrections,
        FIT_RNG if rng is None else rng, out_image, out_time, is_valid,
    )
    return out_image, out_time, is_valid


def variance_extractor(waveforms, selected_gain_channel=None):
    """ctapipe's ``VarianceExtractor``: the variance of each waveform's samples (NaN ignored), float32.

    There is no peak time: it is NaN.
    """
    waveforms = np.asarray(waveforms)
    if waveforms.ndim != 3 or waveforms.shape[2] == 0:
        raise ValueError(f"waveforms must have shape (n_events, n_pixels, n_samples > 0), got {waveforms.shape}")
    image = np.nanvar(waveforms, dtype=np.float32, axis=2).astype(np.float32)
    return image, np.full(image.shape, np.nan, dtype=np.float32)


# --------------------------------------------------------------------------- dispatch

#: extractor name -> (function, default options, uses neighbours, correction kind)
EXTRACTORS = {
    "NeighborPeakWindowSum": (
        neighbor_peak_window_sum, {"window_width": 7, "window_shift": 3, "local_weight": 0}, True, "window"
    ),
    "LocalPeakWindowSum": (local_peak_window_sum, {"window_width": 7, "window_shift": 3}, False, "window"),
    "GlobalPeakWindowSum": (
        global_peak_window_sum, {"window_width": 7, "window_shift": 3, "pixel_fraction": 1.0}, False, "window"
    ),
    "FixedWindowSum": (
        fixed_window_sum, {"peak_index": 0, "window_width": 7, "window_shift": 0}, False, "window"
    ),
    "FullWaveformSum": (full_waveform_sum, {}, False, None),
    "SlidingWindowMaxSum": (sliding_window_max_sum, {"window_width": 7}, False, "sliding"),
    "FlashCamExtractor": (
        flashcam_extractor,
        {
            "upsampling": 4, "window_width": 7, "window_shift": 3, "local_weight": 0,
            "effective_time_profile_std": 2.0, "neighbour_sum_clipping": 5.0, "leading_edge_timing": True,
            "leading_edge_rel_descend_limit": 0.05,
        },
        True,
        "flashcam",
    ),
    "BaselineSubtractedNeighborPeakWindowSum": (
        baseline_subtracted_neighbor_peak_window_sum,
        {"window_width": 7, "window_shift": 3, "local_weight": 0, "baseline_start": 0, "baseline_end": 10},
        True,
        "window",
    ),
    # core_threshold: ctapipe's default depends on the telescope type, see two_pass_core_threshold
    "TwoPassWindowSum": (two_pass_window_sum, {"core_threshold": 6.0, "disable_second_pass": False}, True, "two_pass"),
    "VarianceExtractor": (variance_extractor, {}, False, None),
}

_TAKES_BROKEN = {
    "NeighborPeakWindowSum", "GlobalPeakWindowSum", "FlashCamExtractor", "BaselineSubtractedNeighborPeakWindowSum",
    "TwoPassWindowSum",
}
_FLASHCAM_PARAMETER_KEYS = (
    "upsampling", "window_width", "window_shift", "leading_edge_timing", "leading_edge_rel_descend_limit",
    "effective_time_profile_std",
)


@lru_cache(maxsize=64)
def _cached_flashcam_parameters(pulse_bytes, shape, ref_width_ns, sampling_rate_ghz, options):
    pulse = np.frombuffer(pulse_bytes, dtype=np.float64).reshape(shape)
    return flashcam_parameters(pulse, ref_width_ns, sampling_rate_ghz, **dict(options))


@lru_cache(maxsize=256)
def _cached_correction(kind, pulse_bytes, shape, ref_width_ns, sampling_rate_ghz, width, shift):
    pulse = np.frombuffer(pulse_bytes, dtype=np.float64).reshape(shape)
    if kind == "sliding":
        return sliding_window_correction(pulse, ref_width_ns, sampling_rate_ghz, width)
    return integration_correction(pulse, ref_width_ns, sampling_rate_ghz, width, shift)


def extract_images(
    name, waveforms, selected_gain_channel, readout, neighbors=None, broken_pixels=None,
    apply_integration_correction=True, camera_geometry=None, rng=None, return_valid=False, **options,
):
    """Run the extractor ``name`` (a key of :data:`EXTRACTORS`) with ctapipe's defaults.

    ``readout`` is a :class:`~iactpipe.instrument.camera.CameraReadout` (sampling
    rate and reference pulse for the integration correction); ``options``
    override the extractor's defaults.  TwoPassWindowSum also needs
    ``camera_geometry`` (pixel positions in the camera frame) and draws its time
    fits from ``rng``.  Returns ``(image, peak_time)``, with ``return_valid`` also
    ``is_valid`` (n_events,) bool (False only where TwoPassWindowSum's second pass failed).
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown image extractor {name!r}, choose one of {', '.join(EXTRACTORS)}")
    function, defaults, uses_neighbors, kind = EXTRACTORS[name]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"{name} has no option(s) {', '.join(sorted(unknown))}")
    config = {**defaults, **options}
    kwargs = dict(config)
    if kind == "flashcam":
        pulse = np.ascontiguousarray(np.atleast_2d(readout.reference_pulse_shape), dtype=np.float64)
        kwargs["parameters"] = _cached_flashcam_parameters(
            pulse.tobytes(), pulse.shape, float(readout.reference_pulse_sample_width_ns),
            float(readout.sampling_rate_ghz), tuple((key, config[key]) for key in _FLASHCAM_PARAMETER_KEYS),
        )
        del kwargs["effective_time_profile_std"]
    elif kind == "two_pass":
        if apply_integration_correction:
            pulse = np.ascontiguousarray(np.atleast_2d(readout.reference_pulse_shape), dtype=np.float64)
            kwargs["corrections"] = np.stack([
                _cached_correction(
                    "window", pulse.tobytes(), pulse.shape, float(readout.reference_pulse_sample_width_ns),
                    float(readout.sampling_rate_ghz), *window,
                )
                for window in (_TWO_PASS_WINDOW, _TWO_PASS_BEFORE, _TWO_PASS_AFTER)
            ])
        if camera_geometry is None:
            raise ValueError(f"{name} needs the camera geometry (pixel positions in the camera frame)")
        kwargs["camera_geometry"] = camera_geometry
        kwargs["rng"] = rng
    elif kind is not None:
        correction = None
        if apply_integration_correction:
            pulse = np.ascontiguousarray(np.atleast_2d(readout.reference_pulse_shape), dtype=np.float64)
            correction = _cached_correction(
                kind, pulse.tobytes(), pulse.shape, float(readout.reference_pulse_sample_width_ns),
                float(readout.sampling_rate_ghz), int(config["window_width"]), int(config.get("window_shift", 0)),
            )
        kwargs["correction"] = correction
    if name in _TAKES_BROKEN:
        kwargs["broken_pixels"] = broken_pixels
    if uses_neighbors and neighbors is None:
        raise ValueError(f"{name} needs the camera's pixel neighbours")
    if kind == "flashcam":
        result = function(waveforms, neighbors, readout.sampling_rate_ghz, **kwargs)
    elif name == "VarianceExtractor":
        result = function(waveforms, selected_gain_channel)
    elif uses_neighbors:
        result = function(waveforms, selected_gain_channel, neighbors, readout.sampling_rate_ghz, **kwargs)
    else:
        result = function(waveforms, selected_gain_channel, readout.sampling_rate_ghz, **kwargs)
    if len(result) == 3:
        return result if return_valid else result[:2]
    return (*result, np.ones(len(result[0]), dtype=bool)) if return_valid else result
