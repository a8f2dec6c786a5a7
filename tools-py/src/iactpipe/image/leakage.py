"""Leakage: the share of a cleaned image at the camera border, the ``leakage_*`` columns."""

import numpy as np
from numba import njit

from ._utils import as_batch

__all__ = ["leakage_parameters", "leakage_image"]


@njit(cache=True, nogil=True, error_model="numpy")
def leakage_image(w, kept, border_1, border_2):
    """Leakage of one image: its selected pixels ``kept`` and their values ``w`` (float64).

    Returns the fractions (pixels width 1, pixels width 2, intensity width 1, intensity width 2).
    """
    n = w.shape[0]
    n_1 = 0
    n_2 = 0
    total = 0.0
    sum_1 = 0.0
    sum_2 = 0.0
    for i in range(n):
        value = w[i]
        total += value
        if border_1[kept[i]]:
            n_1 += 1
            sum_1 += value
        if border_2[kept[i]]:
            n_2 += 1
            sum_2 += value
    return n_1 / n, n_2 / n, sum_1 / total, sum_2 / total


@njit(cache=True, nogil=True, error_model="numpy")
def _leakage_batch(images, masks, valid, border_1, border_2, pixels_1, pixels_2, intensity_1, intensity_2):
    kept = np.empty(images.shape[1], dtype=np.int64)
    w = np.empty(images.shape[1])
    for event in range(images.shape[0]):
        if not valid[event]:
            pixels_1[event] = pixels_2[event] = intensity_1[event] = intensity_2[event] = np.nan
            continue
        n = 0
        for pix in range(images.shape[1]):
            if masks[event, pix]:
                kept[n] = pix
                w[n] = images[event, pix]
                n += 1
        pixels_1[event], pixels_2[event], intensity_1[event], intensity_2[event] = leakage_image(
            w[:n], kept[:n], border_1, border_2
        )


def leakage_parameters(images, masks, geometry, valid=None):
    """``leakage_*`` columns: fractions of the selected pixels and of their intensity in the border.

    Borders of width 1 and 2 pixels come from ``geometry.border_1``/``border_2``.  Pixel
    fractions are float64, intensity fractions float32 (the DL1 column types; computed in
    float64).  Empty masks and ``valid`` False give NaN.
    """
    images, _ = as_batch(images)
    masks, _ = as_batch(masks, dtype=np.bool_)
    n_events = len(images)
    valid = np.ones(n_events, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    pixels_1, pixels_2, intensity_1, intensity_2 = (np.empty(n_events) for _ in range(4))
    _leakage_batch(
        images, masks, valid, geometry.border_1, geometry.border_2, pixels_1, pixels_2, intensity_1, intensity_2
    )
    return {
        "leakage_pixels_width_1": pixels_1,
        "leakage_pixels_width_2": pixels_2,
        "leakage_intensity_width_1": intensity_1.astype(np.float32),
        "leakage_intensity_width_2": intensity_2.astype(np.float32),
    }
