"""Unusable (broken, switched-off, dead) pixels: masks and their treatment in DL1 images.

Masks are (n_events or 1, n_pixels) bool arrays, True where a pixel's value
must not be used.  They come from calibration flags (e.g. sim_telarray's
HV-disabled pixels, ctapipe's ``outlier_mask``; reduce a per-gain flag with
:func:`iactpipe.image.calibration.select_gain_values`) or from the data
(:func:`flat_waveform_mask`).  Images and peak times are (n_events, n_pixels).
"""

import numpy as np
from numba import njit

__all__ = ["flat_waveform_mask", "interpolate_invalid_pixels", "zero_invalid_pixels"]


@njit(cache=True, nogil=True)
def _flat_kernel(r0, out):
    n_events, n_gains, n_pixels, n_samples = r0.shape
    for event in range(n_events):
        for pixel in range(n_pixels):
            flat = True
            for gain in range(n_gains):
                first = r0[event, gain, pixel, 0]
                for sample in range(1, n_samples):
                    if r0[event, gain, pixel, sample] != first:
                        flat = False
                        break
                if not flat:
                    break
            out[event, pixel] = flat


def flat_waveform_mask(r0):
    """Pixels whose raw waveform is constant in every gain channel (no signal, no noise).

    A live pixel always shows electronic noise, so a flat waveform means a
    pixel that is off or not read out (e.g. the zero waveforms in
    sim_telarray's ``n_hv_disabled`` file).  ``r0``: (n_events, n_gains,
    n_pixels, n_samples); returns (n_events, n_pixels) bool.  Waveforms with a
    single sample are never flagged.
    """
    r0 = np.ascontiguousarray(r0)
    if r0.ndim != 4:
        raise ValueError(f"r0 must have shape (n_events, n_gains, n_pixels, n_samples), got {r0.shape}")
    n_events, _, n_pixels, n_samples = r0.shape
    out = np.zeros((n_events, n_pixels), dtype=np.bool_)
    if n_samples > 1:
        _flat_kernel(r0, out)
    return out


@njit(cache=True, nogil=True)
def _interpolate_kernel(values, mask, indptr, indices, out):
    n_events, n_pixels = values.shape
    zero = np.zeros(1, dtype=values.dtype)[0]
    for event in range(n_events):
        im = event if mask.shape[0] > 1 else 0
        for pixel in range(n_pixels):
            if not mask[im, pixel]:
                continue
            # accumulate in the value dtype, neighbours in ascending pixel order
            total = zero
            count = 0
            for k in range(indptr[pixel], indptr[pixel + 1]):
                neighbor = indices[k]
                if mask[im, neighbor]:
                    continue
                total += values[event, neighbor]
                count += 1
            if count > 0:
                out[event, pixel] = total / np.float64(count)
            else:
                out[event, pixel] = 0


def _check_mask(mask, shape):
    mask = np.asarray(mask, dtype=np.bool_)
    if mask.ndim == 1:
        mask = mask[np.newaxis]
    if mask.ndim != 2 or mask.shape[1] != shape[1] or mask.shape[0] not in (1, shape[0]):
        raise ValueError(f"pixel mask must have shape (n_events or 1, {shape[1]}), got {mask.shape}")
    return np.ascontiguousarray(mask)


def interpolate_invalid_pixels(image, peak_time, mask, neighbors):
    """Replace masked pixels by the mean of their unmasked neighbours (ctapipe's ``NeighborAverage``).

    Both ``image`` and ``peak_time`` (may be None) are averaged; masked pixels
    without any unmasked neighbour become 0.  ``neighbors`` is the camera's
    ``(indptr, indices)``.  Returns new arrays ``(image, peak_time)``; the
    inputs are left unchanged.
    """
    image = np.asarray(image)
    mask = _check_mask(mask, image.shape)
    indptr, indices = (np.asarray(a, dtype=np.int64) for a in neighbors)
    if len(indptr) != image.shape[1] + 1:
        raise ValueError(f"neighbours are for {len(indptr) - 1} pixels, image has {image.shape[1]}")
    results = []
    for values in (image, peak_time):
        if values is None:
            results.append(None)
            continue
        values = np.ascontiguousarray(values)
        out = values.copy()
        if mask.any():
            _interpolate_kernel(values, mask, indptr, indices, out)
        results.append(out)
    return results[0], results[1]


def zero_invalid_pixels(image, peak_time, mask):
    """Exclude masked pixels: set image and peak time to 0 there.

    Returns new arrays ``(image, peak_time)`` and the (n_events, n_pixels) bool
    mask of the pixels that were set (to store as a per-pixel flag).
    """
    image = np.asarray(image)
    mask = _check_mask(mask, image.shape)
    full = np.broadcast_to(mask, image.shape)
    image = np.where(full, np.zeros((), image.dtype), image)
    if peak_time is not None:
        peak_time = np.asarray(peak_time)
        peak_time = np.where(full, np.zeros((), peak_time.dtype), peak_time)
    return image, peak_time, np.array(full)
