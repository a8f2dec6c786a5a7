"""All DL1 image parameters of a chunk of cleaned images, as ctapipe's ImageProcessor writes them.

Images failing the image-quality query (ctapipe's ``ImageQualityQuery`` defaults: selected
intensity > 0 and at least 2 selected pixels) get ctapipe's default values: NaN for every
float column and -1 for the morphology counts.
"""

import numpy as np
from numba import njit

from ._utils import as_batch
from .concentration import DEG_TO_RAD
from .hillas import (
    HILLAS_COLUMNS,
    I_FOV_LAT,
    I_FOV_LON,
    I_INTENSITY,
    I_LENGTH,
    I_LENGTH_UNC,
    I_PHI,
    I_PSI,
    I_R,
    I_WIDTH,
    I_WIDTH_UNC,
    axis_moments,
    principal_axes,
    to_degrees,
)
from .morphology import MORPHOLOGY_COLUMNS, island_counts, selected_pixels
from .statistics import STATISTICS, store_statistics
from .timing import FIT_RNG, timing_image

__all__ = [
    "IMAGE_QUALITY_CRITERIA",
    "image_quality_criteria",
    "image_quality_mask",
    "image_parameters",
    "default_parameters",
    "PARAMETER_COLUMNS",
    "selected_sums",
]

#: criteria of ctapipe's default ImageQualityQuery (name, expression on the selected pixels)
IMAGE_QUALITY_CRITERIA = (
    ("size_greater_0", "image.sum() > 0"),
    ("at_least_2_pixels", "image.size > 1"),
)

#: (column, dtype) of the DL1 parameter table after obs_id/event_id/tel_id, in ctapipe's order
PARAMETER_COLUMNS = (
    *(
        (f"hillas_{name}", np.float64)
        for name in (
            "intensity",
            "skewness",
            "kurtosis",
            "fov_lon",
            "fov_lat",
            "r",
            "phi",
            "length",
            "length_uncertainty",
            "width",
            "width_uncertainty",
            "psi",
            "psi_uncertainty",
            "transverse_cog_uncertainty",
        )
    ),
    ("timing_intercept", np.float64),
    ("timing_deviation", np.float64),
    ("timing_slope", np.float64),
    ("leakage_pixels_width_1", np.float64),
    ("leakage_pixels_width_2", np.float64),
    ("leakage_intensity_width_1", np.float32),
    ("leakage_intensity_width_2", np.float32),
    ("concentration_cog", np.float64),
    ("concentration_core", np.float64),
    ("concentration_pixel", np.float64),
    *(
        (f"morphology_{name}", np.int64)
        for name in ("n_pixels", "n_islands", "n_small_islands", "n_medium_islands", "n_large_islands")
    ),
    *(
        (f"{prefix}_{name}", np.float32 if name in ("max", "min", "mean", "std") else np.float64)
        for prefix in ("intensity", "peak_time")
        for name in ("max", "min", "mean", "std", "skewness", "kurtosis")
    ),
)


#: (column, dtype, value of an image that is not parametrised)
_DEFAULTS = tuple((name, dtype, -1 if np.issubdtype(dtype, np.integer) else np.nan) for name, dtype in PARAMETER_COLUMNS)


def default_parameters(n_events):
    """Columns for images that are not parametrised: NaN, and -1 for morphology counts."""
    return {name: np.full(n_events, fill, dtype=dtype) for name, dtype, fill in _DEFAULTS}


@njit(cache=True, nogil=True)
def _quality_batch(images, masks, size_positive, two_pixels):
    for event in range(images.shape[0]):
        total = 0.0
        n = 0
        for pix in range(images.shape[1]):
            if masks[event, pix]:
                total += images[event, pix]
                n += 1
        size_positive[event] = total > 0.0
        two_pixels[event] = n > 1


#: the sum of n values in any order is within (n - 1) * eps / 2 * (sum of magnitudes) of the exact one
_SUM_MARGIN = 4.0 * np.finfo(np.float64).eps


@njit(cache=True, fastmath={"reassoc", "nsz"})
def selected_sums(images, masks, threshold, above, unsure, count):
    """Per image: whether the sum of the selected pixels (float64) is ``> threshold``, and how many there are.

    The sum is taken in any order (vectorised); ``unsure`` flags the images whose sum is so
    close to the threshold, or not finite, that another order might land on the other side
    (margin: ``_SUM_MARGIN`` * n_pixels * the sum of magnitudes; none if that is 0).
    """
    margin = _SUM_MARGIN * images.shape[1]
    for event in range(images.shape[0]):
        s = 0.0
        a = 0.0
        n = 0
        for pix in range(images.shape[1]):
            selected = masks[event, pix]
            value = np.float64(images[event, pix]) if selected else 0.0
            s += value
            a += abs(value)
            n += selected
        above[event] = s > threshold
        unsure[event] = not (abs(s - threshold) > margin * a or a == 0.0)
        count[event] = n


def image_quality_criteria(images, masks):
    """Each `IMAGE_QUALITY_CRITERIA` entry evaluated per event: ``{name: bool (n_events,)}``."""
    images, _ = as_batch(images)
    masks, _ = as_batch(masks, dtype=np.bool_)
    size_positive = np.empty(len(images), dtype=bool)
    two_pixels = np.empty(len(images), dtype=bool)
    _quality_batch(images, masks, size_positive, two_pixels)
    return {"size_greater_0": size_positive, "at_least_2_pixels": two_pixels}


def image_quality_mask(images, masks):
    """True for images that ctapipe's default ImageQualityQuery lets through to parametrisation."""
    criteria = image_quality_criteria(images, masks)
    return np.logical_and.reduce(list(criteria.values()))


#: rows of the float64 block of `_parameters_batch`: every column but the morphology counts, in table order
_FLOAT_COLUMNS = tuple(name for name, dtype in PARAMETER_COLUMNS if not np.issubdtype(dtype, np.integer))
_ROW = {name: i for i, name in enumerate(_FLOAT_COLUMNS)}
assert _FLOAT_COLUMNS[: len(HILLAS_COLUMNS)] == HILLAS_COLUMNS
_TIMING_ROW = _ROW["timing_intercept"]  # intercept, deviation, slope
_LEAKAGE_ROW = _ROW["leakage_pixels_width_1"]  # pixels 1, pixels 2, intensity 1, intensity 2
_CONCENTRATION_ROW = _ROW["concentration_cog"]  # cog, core, pixel
_INTENSITY_ROW = _ROW["intensity_max"]  # STATISTICS of the image, then of the peak times
_PEAK_TIME_ROW = _ROW["peak_time_max"]
assert _FLOAT_COLUMNS[_TIMING_ROW:_TIMING_ROW + 3] == ("timing_intercept", "timing_deviation", "timing_slope")
assert _FLOAT_COLUMNS[_PEAK_TIME_ROW:] == tuple(f"peak_time_{name}" for name in STATISTICS)
#: (column, block: 0 float64 rows / 1 morphology counts, row, stored as float32) in `PARAMETER_COLUMNS` order
_LAYOUT = tuple(
    (name, 1, MORPHOLOGY_COLUMNS.index(name), False) if name in MORPHOLOGY_COLUMNS
    else (name, 0, _ROW[name], dtype == np.float32)
    for name, dtype in PARAMETER_COLUMNS
)
assert all(dtype in (np.float32, np.float64, np.int64) for _, dtype in PARAMETER_COLUMNS)


@njit(cache=True, nogil=True, error_model="numpy")
def _image_columns(w, x, y, area, t, size_pix, kept, have_times, border_1, border_2, scratch, col):
    """Every column but timing and morphology of one image from its selected pixels, into ``col`` (`_FLOAT_COLUMNS`).

    ``w``, ``x``, ``y``, ``area``, ``t``, ``size_pix``: the selected pixels' values, positions,
    areas, peak times and widths (float64), ``kept`` their indices; ``scratch``: (5, >= n)
    float64.  The numbers are those of `hillas_image`, `leakage_image`,
    `concentration_image` and `moments`, operation by operation (the same sums in the same
    order); their independent sums share four passes over the pixels instead of one or
    more passes each, which overlaps the additions, and the per-pixel divisions are done
    before the sums that use them, in loops without sums (vectorised).
    """
    n = w.shape[0]
    ratio = scratch[0, :n]
    z_w = scratch[1, :n]
    z_t = scratch[2, :n]
    term_len = scratch[3, :n]
    term_wid = scratch[4, :n]
    hillas = col[: len(HILLAS_COLUMNS)]
    hillas[:] = np.nan
    col[_INTENSITY_ROW:] = np.nan

    # max and min as numba's ``v.max()``/``v.min()``: the first NaN if any, else by strict comparisons
    # from the first value on (so the same zero, +0 or -0, wins); the four in one loop
    max_w = min_w = w[0] if n > 0 else np.nan
    max_t = min_t = t[0] if n > 0 else np.nan
    any_nan = False
    for i in range(n):
        max_w = w[i] if w[i] > max_w else max_w
        min_w = w[i] if w[i] < min_w else min_w
        max_t = t[i] if t[i] > max_t else max_t
        min_t = t[i] if t[i] < min_t else min_t
        any_nan |= (w[i] != w[i]) | (t[i] != t[i])
    if any_nan:
        max_w = w.max()
        min_w = w.min()
        max_t = t.max()
        min_t = t.min()

    # pass 1: intensity-weighted sums (hillas), border sums (leakage), sum of the peak times
    size = 0.0
    sum_x = 0.0
    sum_y = 0.0
    n_1 = 0
    n_2 = 0
    sum_1 = 0.0
    sum_2 = 0.0
    sum_t = 0.0
    for i in range(n):
        size += w[i]
        sum_x += w[i] * x[i]
        sum_y += w[i] * y[i]
        if border_1[kept[i]]:
            n_1 += 1
            sum_1 += w[i]
        if border_2[kept[i]]:
            n_2 += 1
            sum_2 += w[i]
        sum_t += t[i]
    col[_LEAKAGE_ROW] = n_1 / n
    col[_LEAKAGE_ROW + 1] = n_2 / n
    col[_LEAKAGE_ROW + 2] = sum_1 / size
    col[_LEAKAGE_ROW + 3] = sum_2 / size
    hillas[I_INTENSITY] = size
    fit_hillas = n > 0 and size != 0.0
    cog_x = sum_x / size
    cog_y = sum_y / size
    mean_w = size / n
    mean_t = sum_t / n

    # pass 2: covariance (hillas), variances (statistics)
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    var_w = 0.0
    var_t = 0.0
    for i in range(n):
        dx = x[i] - cog_x
        dy = y[i] - cog_y
        sxx += w[i] * dx * dx
        syy += w[i] * dy * dy
        sxy += w[i] * dx * dy
        var_w += (w[i] - mean_w) ** 2
        var_t += (t[i] - mean_t) ** 2
    std_w = np.sqrt(var_w / n)
    std_t = np.sqrt(var_t / n)

    length = np.nan
    width = np.nan
    psi = np.nan
    cos_psi = np.nan
    sin_psi = np.nan
    if fit_hillas:
        hillas[I_FOV_LON] = cog_x
        hillas[I_FOV_LAT] = cog_y
        hillas[I_R] = np.sqrt(cog_x * cog_x + cog_y * cog_y)
        hillas[I_PHI] = np.arctan2(cog_y, cog_x)
        lam_minor, length, width, psi = principal_axes(sxx / size, syy / size, sxy / size)
        if length != 0.0:
            cos_psi = np.cos(psi)
            sin_psi = np.sin(psi)
    moments_along = fit_hillas and length != 0.0

    # pass 3: moments along the axes and the transverse fit (hillas), skewness and kurtosis (statistics)
    for i in range(n):
        ratio[i] = w[i] / area[i]
        z_w[i] = (w[i] - mean_w) / std_w
        z_t[i] = (t[i] - mean_t) / std_t
    m2_long = 0.0
    m2_trans = 0.0
    m3 = 0.0
    m4 = 0.0
    s0 = 0.0
    sl = 0.0
    sll = 0.0
    st = 0.0
    slt = 0.0
    m3_w = 0.0
    m4_w = 0.0
    m3_t = 0.0
    m4_t = 0.0
    for i in range(n):
        if moments_along:
            dx = x[i] - cog_x
            dy = y[i] - cog_y
            longi = dx * cos_psi + dy * sin_psi
            trans = -dx * sin_psi + dy * cos_psi
            l2 = longi * longi
            m2_long += w[i] * l2
            m2_trans += w[i] * trans * trans
            m3 += w[i] * l2 * longi
            m4 += w[i] * l2 * l2
            v = ratio[i]
            s0 += v
            sl += v * longi
            sll += v * l2
            st += v * trans
            slt += v * longi * trans
        z = z_w[i]
        m3_w += z**3
        m4_w += z**4
        z = z_t[i]
        m3_t += z**3
        m4_t += z**4
    var_long = m2_long / size
    var_trans = m2_trans / size
    if moments_along:
        width = axis_moments(hillas, size, lam_minor, length, width, psi, var_trans, m3, m4, s0, sl, sll, st, slt)
    if fit_hillas:
        hillas[I_LENGTH] = length
        hillas[I_WIDTH] = width
    to_degrees(hillas)

    # pass 4: uncertainties of length and width (hillas), concentration
    psi_deg = hillas[I_PSI]
    intensity = hillas[I_INTENSITY]
    cx = hillas[I_FOV_LON]
    cy = hillas[I_FOV_LAT]
    c_length = hillas[I_LENGTH]
    c_width = hillas[I_WIDTH]
    cos_c = np.cos(psi_deg * DEG_TO_RAD)
    sin_c = np.sin(psi_deg * DEG_TO_RAD)
    use_ellipse = c_width != 0.0
    for i in range(n):
        dx = x[i] - cog_x
        dy = y[i] - cog_y
        longi = dx * cos_psi + dy * sin_psi
        trans = -dx * sin_psi + dy * cos_psi
        term_len[i] = (longi * longi - var_long) / size
        term_wid[i] = (trans * trans - var_trans) / size
        # (reused for the ellipse test of the concentration)
        dx = x[i] - cx
        dy = y[i] - cy
        longi = dx * cos_c + dy * sin_c
        trans = -dx * sin_c + dy * cos_c
        ratio[i] = longi**2 / c_length**2 + trans**2 / c_width**2
    sum_len = 0.0
    sum_wid = 0.0
    sum_cog = 0.0
    sum_core = 0.0
    brightest = -np.inf
    for i in range(n):
        if moments_along:
            t_len = term_len[i]
            t_wid = term_wid[i]
            sum_len += t_len * t_len * w[i]
            sum_wid += t_wid * t_wid * w[i]
        value = w[i]
        brightest = max(brightest, value)
        dx = x[i] - cx
        dy = y[i] - cy
        if dx * dx + dy * dy < size_pix[i] ** 2:
            sum_cog += value
        if use_ellipse and ratio[i] <= 1.0:
            sum_core += value
    if moments_along:
        hillas[I_LENGTH_UNC] = np.sqrt(sum_len) / (2.0 * length)
        if width != 0.0:
            hillas[I_WIDTH_UNC] = np.sqrt(sum_wid) / (2.0 * width)
    col[_CONCENTRATION_ROW] = sum_cog / intensity
    col[_CONCENTRATION_ROW + 1] = sum_core / intensity
    col[_CONCENTRATION_ROW + 2] = brightest / intensity

    if n > 0:
        store_statistics(col[_INTENSITY_ROW:_INTENSITY_ROW + len(STATISTICS)], max_w, min_w, mean_w, std_w, m3_w,
                          m4_w, n)
        if have_times:
            store_statistics(col[_PEAK_TIME_ROW:_PEAK_TIME_ROW + len(STATISTICS)], max_t, min_t, mean_t, std_t, m3_t,
                              m4_t, n)


@njit(cache=True, nogil=True, error_model="numpy")
def _parameters_batch(
    images, peak_times, masks, valid, fit_timing, pix_x, pix_y, pix_area, pixel_width, border_1, border_2, indptr,
    indices, rng, out, counts,
):
    """All parameters of the ``valid`` images into ``out`` (`_FLOAT_COLUMNS`, n_events) and ``counts`` (morphology).

    Each image's selected pixels are gathered once and every parameter is computed from
    them (see `_image_columns`).  ``peak_times`` with 0 rows: no peak times (timing and
    peak-time rows NaN).  Timing fits draw from ``rng`` in row order.
    """
    n_pixels = images.shape[1]
    have_times = peak_times.shape[0] > 0
    kept = np.empty(n_pixels, dtype=np.int64)
    w = np.empty(n_pixels)
    x = np.empty(n_pixels)
    y = np.empty(n_pixels)
    area = np.empty(n_pixels)
    size_pix = np.empty(n_pixels)
    scratch = np.empty((5, n_pixels))
    t = np.zeros(n_pixels)
    longi = np.empty(n_pixels)
    fx = np.empty(n_pixels)
    fy = np.empty(n_pixels)
    todo = np.zeros(n_pixels, dtype=np.bool_)
    stack = np.empty(n_pixels, dtype=np.int64)
    col = np.empty(out.shape[0])
    for event in range(images.shape[0]):
        if not valid[event]:
            out[:, event] = np.nan
            counts[:, event] = -1
            continue
        n = selected_pixels(masks[event], kept)
        for i in range(n):
            pix = kept[i]
            w[i] = images[event, pix]
            x[i] = pix_x[pix]
            y[i] = pix_y[pix]
            area[i] = pix_area[pix]
            size_pix[i] = pixel_width[pix]
        if have_times:
            for i in range(n):
                t[i] = peak_times[event, kept[i]]
        _image_columns(
            w[:n], x[:n], y[:n], area[:n], t[:n], size_pix[:n], kept[:n], have_times, border_1, border_2, scratch, col
        )
        island_counts(kept, n, indptr, indices, todo, stack, counts[:, event])
        if have_times and fit_timing:
            col[_TIMING_ROW], col[_TIMING_ROW + 1], col[_TIMING_ROW + 2] = timing_image(
                x[:n], y[:n], t[:n], col[I_FOV_LON], col[I_FOV_LAT], col[I_PSI], rng, longi, fx, fy
            )
        else:
            col[_TIMING_ROW:_TIMING_ROW + 3] = np.nan
        out[:, event] = col


def image_parameters(images, masks, geometry, peak_times=None, rng=None, valid=None, fit_timing=True):
    """All DL1 parameter columns (`PARAMETER_COLUMNS`) of a chunk of images of one camera.

    ``images`` and ``peak_times`` ``(n_events, n_pixels)``, ``masks`` the cleaning masks,
    ``geometry`` an `~iactpipe.image.geometry.ImageGeometry` (telescope frame, deg).
    ``valid`` (default: `image_quality_mask`) selects the images to parametrise; the others
    get `default_parameters`.  Without ``peak_times`` the timing and peak-time columns are NaN;
    with ``fit_timing`` False only the timing columns.  ``rng`` feeds the timing fit (see
    `iactpipe.image.timing`).
    """
    images, _ = as_batch(images)
    masks, _ = as_batch(masks, dtype=np.bool_)
    if masks.shape != images.shape:
        raise ValueError(f"masks shape {masks.shape} differs from images shape {images.shape}")
    if images.shape[1] != geometry.n_pixels:
        raise ValueError(f"images have {images.shape[1]} pixels, the geometry {geometry.n_pixels}")
    n_events = len(images)
    if valid is None:
        valid = image_quality_mask(images, masks)
    valid = np.asarray(valid, dtype=bool)
    if peak_times is None:
        peak_times = np.empty((0, images.shape[1]), dtype=images.dtype)
    else:
        peak_times, _ = as_batch(peak_times)
        if peak_times.shape != images.shape:
            raise ValueError(f"peak_times shape {peak_times.shape} differs from images shape {images.shape}")

    out = np.empty((len(_FLOAT_COLUMNS), n_events))
    counts = np.empty((len(MORPHOLOGY_COLUMNS), n_events), dtype=np.int64)
    _parameters_batch(
        images, peak_times, masks, valid, bool(fit_timing), geometry.pix_x, geometry.pix_y, geometry.pix_area,
        geometry.pixel_width, geometry.border_1, geometry.border_2, geometry.indptr, geometry.indices,
        FIT_RNG if rng is None else rng, out, counts,
    )
    blocks = (out, counts)
    return {
        name: blocks[block][row].astype(np.float32) if single else blocks[block][row]
        for name, block, row, single in _LAYOUT
    }
