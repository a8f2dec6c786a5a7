"""Descriptive statistics of the selected pixels: the ``intensity_*`` and ``peak_time_*`` columns."""

import numpy as np
from numba import njit

from ._utils import as_batch

__all__ = ["descriptive_statistics", "moments", "STATISTICS"]

#: statistics in ctapipe's column order
STATISTICS = ("max", "min", "mean", "std", "skewness", "kurtosis")


@njit(cache=True, nogil=True, error_model="numpy")
def moments(v, row):
    """Max, min, mean, std, skewness, kurtosis (`STATISTICS`) of the float64 values ``v`` (not empty) into ``row``."""
    n = v.shape[0]
    mean = v.sum() / n
    var = 0.0
    for i in range(n):
        var += (v[i] - mean) ** 2
    std = np.sqrt(var / n)
    m3 = 0.0
    m4 = 0.0
    for i in range(n):
        z = (v[i] - mean) / std
        m3 += z**3
        m4 += z**4
    store_statistics(row, v.max(), v.min(), mean, std, m3, m4, n)


@njit(cache=True, inline="always")
def store_statistics(out, maximum, minimum, mean, std, sum_z3, sum_z4, n):
    """`STATISTICS` (max, min, mean, std, skewness, excess kurtosis) from the sums of the standardised values."""
    out[0] = maximum
    out[1] = minimum
    out[2] = mean
    out[3] = std
    out[4] = sum_z3 / n
    out[5] = sum_z4 / n - 3.0


@njit(cache=True, nogil=True, error_model="numpy")
def _statistics_batch(values, masks, valid, out):
    selected = np.empty(values.shape[1])
    for event in range(values.shape[0]):
        n = 0
        if valid[event]:
            for pix in range(values.shape[1]):
                if masks[event, pix]:
                    selected[n] = values[event, pix]
                    n += 1
        if n == 0:
            out[event, :] = np.nan
        else:
            moments(selected[:n], out[event])


def descriptive_statistics(values, masks, prefix, valid=None):
    """Max, min, mean, std, skewness and (Fisher) kurtosis of each event's selected pixels.

    Returns ``{prefix}_{stat}`` columns; max/min/mean/std are float32 and skewness/kurtosis
    float64, the DL1 column types (all computed in float64; std with ddof=0).  A constant
    selection has NaN skewness and kurtosis; an empty one or ``valid`` False all NaN.
    """
    values, _ = as_batch(values)
    masks, _ = as_batch(masks, dtype=np.bool_)
    n_events = len(values)
    valid = np.ones(n_events, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = np.empty((n_events, len(STATISTICS)))
    _statistics_batch(values, masks, valid, out)
    return {
        f"{prefix}_{name}": out[:, i].astype(np.float32 if i < 4 else np.float64) for i, name in enumerate(STATISTICS)
    }
