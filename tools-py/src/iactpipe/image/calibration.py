"""R0 → R1 waveform calibration, gain selection and pixel time-shift corrections.

All kernels work on a chunk of events of one camera at once.  Array conventions:

- ``r0``: (n_events, n_gains, n_pixels, n_samples) raw ADC samples (uint16);
- per-pixel coefficients (pedestal per sample, dc→p.e. factor, time shift,
  unusable flags): (n_gains, n_pixels) for a whole chunk, or
  (n_events, n_gains, n_pixels) when they change from event to event;
- ``r1``: (n_events, n_pixels, n_samples) float32, gain selected;
- ``selected_gain_channel``: (n_events, n_pixels) int8 (0 high, 1 low gain).

The arithmetic follows ctapipe 0.28 (``SimTelEventSource`` with the
``ThresholdGainSelector`` and ``CameraCalibrator``) operation by operation in
float32, so results are bit-identical to ctapipe's.
"""

import numpy as np
from numba import njit

from ._utils import wide_vectors

__all__ = [
    "DEFAULT_GAIN_THRESHOLD",
    "calibrate_r1",
    "calibrate_selected_samples",
    "selected_samples_arrays",
    "select_gain_values",
    "apply_peak_time_shift",
    "shift_waveforms",
]

#: ctapipe's ThresholdGainSelector default: use low gain if a high-gain sample exceeds this (ADC counts)
DEFAULT_GAIN_THRESHOLD = 4000.0


def _per_event(values, n_events, n_gains, n_pixels, name, dtype):
    """Return coefficients as a (1 or n_events, n_gains, n_pixels) contiguous array."""
    values = np.asarray(values, dtype=dtype)
    if values.ndim == 2:
        values = values[np.newaxis]
    if values.ndim != 3 or values.shape[1:] != (n_gains, n_pixels) or values.shape[0] not in (1, n_events):
        raise ValueError(
            f"{name} must have shape (n_gains, n_pixels) = {(n_gains, n_pixels)} "
            f"or (n_events, n_gains, n_pixels), got {values.shape}"
        )
    return np.ascontiguousarray(values)


#: options of the hot kernels: no bounds checks, numpy's division semantics (no ZeroDivisionError branches)
KERNEL_OPTIONS = {"cache": True, "nogil": True, "boundscheck": False, "error_model": "numpy"}


@njit(**KERNEL_OPTIONS)
def _calibrate_event(r0, pedestal, factor, threshold, forced_channel, shift, r1, selected, unusable, broken):
    """Gain-select and calibrate one event: ``r0`` (n_gains, n_pixels, n_samples) → ``r1[:n_pixels, :n_samples]``.

    The high gain is calibrated while its maximum is searched (one pass over
    the samples); pixels above ``threshold`` are redone in low gain.  Also
    fills ``broken`` with the ``unusable`` (n_gains, n_pixels) flag of the
    selected gain and returns whether any is set.  (Per-event function: in
    numba, passing an array to a function called once per pixel would cost
    atomic reference-count updates.)
    """
    wide_vectors()
    n_gains, n_pixels, n_samples = r0.shape
    first_gain = forced_channel if n_gains > 1 and forced_channel >= 0 else 0
    check = n_gains > 1 and forced_channel < 0
    any_broken = False
    for pixel in range(n_pixels):
        gain = first_gain
        if n_samples > 0:
            ped = pedestal[gain, pixel]
            fac = factor[gain, pixel]
            highest = r0[gain, pixel, 0]
            for sample in range(n_samples):
                raw = r0[gain, pixel, sample]
                # np.maximum keeps the integer dtype (max() would widen to int64): 16 lanes per instruction
                highest = np.maximum(highest, raw)
                r1[pixel, sample] = (np.float32(raw) - ped) * fac + shift
            if check and highest > threshold:
                gain = 1
                ped = pedestal[1, pixel]
                fac = factor[1, pixel]
                for sample in range(n_samples):
                    r1[pixel, sample] = (np.float32(r0[1, pixel, sample]) - ped) * fac + shift
        selected[pixel] = gain
        broken[pixel] = unusable[gain, pixel]
        any_broken |= broken[pixel]
    return any_broken


@njit(**KERNEL_OPTIONS)
def _calibrate_r1_kernel(r0, pedestal, factor, threshold, forced_channel, shift, r1, selected):
    usable = np.zeros((r0.shape[1], r0.shape[2]), dtype=np.bool_)
    broken = np.empty(r0.shape[2], dtype=np.bool_)
    for event in range(r0.shape[0]):
        _calibrate_event(
            r0[event], pedestal[event if pedestal.shape[0] > 1 else 0],
            factor[event if factor.shape[0] > 1 else 0], threshold, forced_channel, shift, r1[event],
            selected[event], usable, broken,
        )


def calibrate_r1(
    r0,
    pedestal_per_sample,
    dc_to_pe,
    threshold=DEFAULT_GAIN_THRESHOLD,
    channel=None,
    calib_scale=1.0,
    calib_shift=0.0,
):
    """Pedestal-subtract, convert to p.e. and gain-select raw waveforms.

    ``r1 = (r0 - pedestal_per_sample) * dc_to_pe * calib_scale + calib_shift`` in
    the selected gain channel.  Gain selection per pixel as ctapipe's
    ``ThresholdGainSelector``: low gain (1) if any *high-gain* R0 sample is
    strictly above ``threshold`` (ADC counts), else high gain (0); single-gain
    cameras always get 0.  ``channel`` (0 or 1) forces one channel instead
    (ctapipe's ``ManualGainSelector``).

    Parameters
    ----------
    r0 : (n_events, n_gains, n_pixels, n_samples) integer array
    pedestal_per_sample, dc_to_pe : (n_gains, n_pixels) or (n_events, n_gains, n_pixels)
        ADC counts per sample and p.e. per ADC count.

    Returns
    -------
    r1 : (n_events, n_pixels, n_samples) float32
    selected_gain_channel : (n_events, n_pixels) int8
    """
    r0 = np.asarray(r0)
    if r0.ndim != 4:
        raise ValueError(f"r0 must have shape (n_events, n_gains, n_pixels, n_samples), got {r0.shape}")
    n_events, n_gains, n_pixels, n_samples = r0.shape
    if n_gains not in (1, 2):
        raise ValueError(f"r0 must have 1 or 2 gain channels, got {n_gains}")
    pedestal = _per_event(pedestal_per_sample, n_events, n_gains, n_pixels, "pedestal_per_sample", np.float32)
    factor = _per_event(dc_to_pe, n_events, n_gains, n_pixels, "dc_to_pe", np.float32)
    if calib_scale != 1.0:
        factor = (factor * np.float32(calib_scale)).astype(np.float32)
    if channel is None:
        forced = -1
    elif channel in (0, 1) and channel < n_gains:
        forced = int(channel)
    else:
        raise ValueError(f"gain channel must be 0 or 1 (and exist in r0), got {channel}")

    r1 = np.empty((n_events, n_pixels, n_samples), dtype=np.float32)
    selected = np.empty((n_events, n_pixels), dtype=np.int8)
    _calibrate_r1_kernel(
        np.ascontiguousarray(r0), pedestal, factor, float(threshold), forced,
        np.float32(calib_shift), r1, selected,
    )
    return r1, selected


@njit(inline="always", **KERNEL_OPTIONS)
def _calibrate_selected_event(samples, selected, pedestal, factor, shift, r1):
    """R1 of one event's gain-selected raw samples (n_pixels, n_samples) into ``r1`` (≥ that shape)."""
    n_pixels, n_samples = samples.shape
    for pixel in range(n_pixels):
        gain = selected[pixel]
        ped = pedestal[gain, pixel]
        fac = factor[gain, pixel]
        for sample in range(n_samples):
            r1[pixel, sample] = (np.float32(samples[pixel, sample]) - ped) * fac + shift


@njit(**KERNEL_OPTIONS)
def _calibrate_selected_kernel(samples, selected, pedestal, factor, shift, r1):
    wide_vectors()
    for event in range(samples.shape[0]):
        _calibrate_selected_event(samples[event], selected[event], pedestal, factor, shift, r1[event])


def selected_samples_arrays(samples, selected_gain_channel, pedestal_per_sample, dc_to_pe):
    """Checked contiguous (samples, selected int8, pedestal float32, factor float32) for the kernels
    of gain-selected raw samples (see `calibrate_selected_samples`)."""
    samples = np.ascontiguousarray(samples)
    if samples.ndim != 3:
        raise ValueError(f"samples must be (n_events, n_pixels, n_samples), got {samples.shape}")
    selected = np.ascontiguousarray(selected_gain_channel, dtype=np.int8)
    pedestal = np.ascontiguousarray(pedestal_per_sample, dtype=np.float32)
    factor = np.ascontiguousarray(dc_to_pe, dtype=np.float32)
    n_pixels = samples.shape[1]
    if selected.shape != samples.shape[:2]:
        raise ValueError(f"selected_gain_channel must have shape {samples.shape[:2]}, got {selected.shape}")
    if pedestal.ndim != 2 or pedestal.shape[1] != n_pixels or factor.shape != pedestal.shape:
        raise ValueError(f"pedestal_per_sample and dc_to_pe must be (n_gains, {n_pixels}), "
                         f"got {pedestal.shape} and {factor.shape}")
    if selected.size and (selected.min() < 0 or selected.max() >= pedestal.shape[0]):
        raise ValueError(f"selected_gain_channel outside the coefficients' {pedestal.shape[0]} gain channels")
    return samples, selected, pedestal, factor


def calibrate_selected_samples(samples, selected_gain_channel, pedestal_per_sample, dc_to_pe):
    """R1 (n_events, n_pixels, n_samples) float32 of raw samples already gain-selected.

    ``samples``: (n_events, n_pixels, n_samples) integers, each pixel's samples in the gain
    ``selected_gain_channel`` (n_events, n_pixels) names; ``pedestal_per_sample``, ``dc_to_pe``:
    (n_gains, n_pixels).  The float32 operations of `calibrate_r1`, so the R1 is bit for bit
    that of calibrating the R0 the samples came from.
    """
    samples, selected, pedestal, factor = selected_samples_arrays(samples, selected_gain_channel,
                                                                  pedestal_per_sample, dc_to_pe)
    r1 = np.empty(samples.shape, dtype=np.float32)
    _calibrate_selected_kernel(samples, selected, pedestal, factor, np.float32(0.0), r1)
    return r1


@njit(cache=True, nogil=True)
def _select_gain_kernel(values, selected, out, subtract):
    """``out`` = (``out`` -) the ``values`` of the selected gain.

    With two gains, a select between both values per pixel (no gather: vectorised);
    ``selected`` -1/-2 count from the end, as in indexing.
    """
    n_events, n_pixels = selected.shape
    n_gains = values.shape[1]
    for event in range(n_events):
        ie = event if values.shape[0] > 1 else 0
        if n_gains == 2:
            high = values[ie, 0]
            low = values[ie, 1]
            for pixel in range(n_pixels):
                h = high[pixel]
                lo = low[pixel]
                value = lo if selected[event, pixel] & 1 else h
                if subtract:
                    out[event, pixel] -= value
                else:
                    out[event, pixel] = value
        elif subtract:
            for pixel in range(n_pixels):
                out[event, pixel] -= values[ie, selected[event, pixel], pixel]
        else:
            for pixel in range(n_pixels):
                out[event, pixel] = values[ie, selected[event, pixel], pixel]


def select_gain_values(values, selected_gain_channel):
    """Pick per-pixel coefficients of the selected gain channel.

    ``values``: (n_gains, n_pixels) or (n_events, n_gains, n_pixels);
    ``selected_gain_channel``: (n_events, n_pixels).  Returns (n_events, n_pixels)
    with the dtype of ``values`` (e.g. time shifts, or unusable-pixel flags).
    """
    values = np.asarray(values)
    selected = np.asarray(selected_gain_channel)
    n_events, n_pixels = selected.shape
    if values.ndim == 3 and values.strides[0] == 0:
        values = values[:1]  # the same for all events (np.broadcast_to): no per-event copy
    values = _per_event(values, n_events, values.shape[-2], n_pixels, "values", values.dtype)
    if values.dtype == np.bool_:
        if not values.any():  # e.g. no unusable pixel at all
            return np.zeros(selected.shape, dtype=bool)
        out = np.empty(selected.shape, dtype=np.uint8)
        _select_gain_kernel(values.view(np.uint8), selected, out, False)
        return out.view(np.bool_)
    out = np.empty(selected.shape, dtype=values.dtype)
    _select_gain_kernel(values, selected, out, False)
    return out


def apply_peak_time_shift(peak_time, time_shift, selected_gain_channel):
    """Subtract the per-pixel time shift (ns) of the selected gain from peak times.

    As ctapipe's ``CameraCalibrator`` with ``apply_peak_time_shift``: ``peak_time``
    (n_events, n_pixels) float32 is modified in place and returned.
    ``time_shift`` is (n_gains, n_pixels) or (n_events, n_gains, n_pixels) ns.
    """
    time_shift = np.asarray(time_shift)
    selected = np.asarray(selected_gain_channel)
    n_events, n_pixels = selected.shape
    if time_shift.ndim == 3 and time_shift.strides[0] == 0:
        time_shift = time_shift[:1]
    time_shift = _per_event(time_shift, n_events, time_shift.shape[-2], n_pixels, "time_shift", time_shift.dtype)
    if (
        isinstance(peak_time, np.ndarray) and peak_time.shape == selected.shape and peak_time.flags.c_contiguous
        and np.can_cast(time_shift.dtype, peak_time.dtype, "same_kind")
    ):
        # in place, in the precision numpy's ``-=`` would use (that of the wider of both types)
        _select_gain_kernel(time_shift, selected, peak_time, True)
    else:
        peak_time -= select_gain_values(time_shift, selected)
    return peak_time


@njit(cache=True, nogil=True)
def _shift_waveforms_kernel(waveforms, integer_shift, out):
    n_events, n_pixels, n_samples = waveforms.shape
    for event in range(n_events):
        for pixel in range(n_pixels):
            shift = integer_shift[event, pixel]
            for sample in range(n_samples):
                source = min(max(sample + shift, 0), n_samples - 1)
                out[event, pixel, sample] = waveforms[event, pixel, source]


def shift_waveforms(waveforms, time_shift_ns, sampling_rate_ghz):
    """Shift waveforms by whole samples to align pixels (ctapipe's ``apply_waveform_time_shift``).

    ``time_shift_ns``: (n_events, n_pixels) gain-selected time shifts.  Each pixel
    is shifted to the left by the integer (round half to even) closest to its
    shift relative to the camera mean; edge samples are repeated.  Returns the
    shifted waveforms and the remaining shift in ns (n_events, n_pixels, float64)
    to subtract from the peak times after extraction.
    """
    shift_samples = np.asarray(time_shift_ns, dtype=np.float64) * sampling_rate_ghz
    mean = shift_samples.mean(axis=-1, keepdims=True)
    integer_shift = np.round(shift_samples - mean).astype(np.int64)
    remaining = (shift_samples - integer_shift) / sampling_rate_ghz
    out = np.empty_like(waveforms)
    _shift_waveforms_kernel(np.ascontiguousarray(waveforms), integer_shift, out)
    return out, remaining
