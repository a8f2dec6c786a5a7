"""Hillas (moment) parameters of cleaned images in the telescope frame: the ``hillas_*`` columns."""

import numpy as np
from numba import njit

from ._utils import as_batch

__all__ = ["hillas_parameters", "HILLAS_COLUMNS", "HILLAS_ATOL"]

#: eigenvalues of the covariance closer to 0 than this are set to 0 (as in ctapipe)
HILLAS_ATOL = np.finfo(np.float64).eps

#: column names in ctapipe's order (all float64; lengths and angles in deg)
HILLAS_COLUMNS = (
    "hillas_intensity",
    "hillas_skewness",
    "hillas_kurtosis",
    "hillas_fov_lon",
    "hillas_fov_lat",
    "hillas_r",
    "hillas_phi",
    "hillas_length",
    "hillas_length_uncertainty",
    "hillas_width",
    "hillas_width_uncertainty",
    "hillas_psi",
    "hillas_psi_uncertainty",
    "hillas_transverse_cog_uncertainty",
)
(
    I_INTENSITY,
    I_SKEWNESS,
    I_KURTOSIS,
    I_FOV_LON,
    I_FOV_LAT,
    I_R,
    I_PHI,
    I_LENGTH,
    I_LENGTH_UNC,
    I_WIDTH,
    I_WIDTH_UNC,
    I_PSI,
    I_PSI_UNC,
    I_TRANSVERSE_COG_UNC,
) = range(len(HILLAS_COLUMNS))

RAD_TO_DEG = 180.0 / np.pi


@njit(inline="always")
def principal_axes(cxx, cyy, cxy):
    """(minor eigenvalue, length, width, psi in rad) of the covariance [[cxx, cxy], [cxy, cyy]].

    Eigenvalues within `HILLAS_ATOL` of 0 count as 0; psi, the major-axis angle in
    (-pi/2, pi/2], is NaN for a zero length.
    """
    half_trace = 0.5 * (cxx + cyy)
    root = np.hypot(0.5 * (cxx - cyy), cxy)
    lam_major = half_trace + root
    lam_minor = half_trace - root
    if abs(lam_major) <= HILLAS_ATOL:
        lam_major = 0.0
    if abs(lam_minor) <= HILLAS_ATOL:
        lam_minor = 0.0
    length = np.sqrt(lam_major)
    width = np.sqrt(lam_minor)
    psi = np.nan
    if length != 0.0:
        if cxy == 0.0 and cxx == cyy:
            psi = 0.5 * np.pi  # degenerate: LAPACK's eigh returns the y axis as second vector
        else:
            psi = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
            if psi <= -0.5 * np.pi:
                psi += np.pi
    return lam_minor, length, width, psi


@njit(inline="always")
def axis_moments(out, size, lam_minor, length, width, psi, var_trans, m3, m4, s0, sl, sll, st, slt):
    """Skewness, kurtosis, psi and the psi and transverse-cog uncertainties into ``out`` (`HILLAS_COLUMNS`),
    from the moments along the axes (``m3``, ``m4``) and the sums of the weighted fit of the
    transverse against the longitudinal offsets; returns the width (the minor-axis variance's root
    where the minor eigenvalue is positive)."""
    if lam_minor > 0.0:
        # the minor-axis variance directly: free of the cancellation in half_trace - root,
        # which leaves a relative error ~eps * (length / width)² (ctapipe's eigh has it too)
        width = np.sqrt(var_trans)
    out[I_SKEWNESS] = (m3 / size) / length**3
    out[I_KURTOSIS] = (m4 / size) / length**4

    det = sll * s0 - sl * sl
    var_slope = s0 / det
    var_offset = sll / det
    slope = (s0 * slt - sl * st) / det
    elongation = np.tan(width / length * np.pi / 2.0)
    out[I_PSI] = psi
    out[I_PSI_UNC] = np.sqrt(var_slope + slope * slope) * (1.0 + elongation * elongation)
    sin_slope = np.sin(slope)
    out[I_TRANSVERSE_COG_UNC] = np.sqrt(var_offset * (1.0 + sin_slope * sin_slope))
    return width


@njit(cache=True, nogil=True, error_model="numpy")
def hillas_image(w, x, y, area, out):
    """Hillas parameters of one image given as the selected pixels' values ``w`` (float64).

    ``x``, ``y`` in deg, ``area`` in deg²; fills ``out`` in `HILLAS_COLUMNS` order
    (phi, psi and psi uncertainty in rad, converted by the caller).
    """
    n = w.shape[0]
    out[:] = np.nan
    size = 0.0
    sum_x = 0.0
    sum_y = 0.0
    for i in range(n):
        size += w[i]
        sum_x += w[i] * x[i]
        sum_y += w[i] * y[i]
    out[I_INTENSITY] = size
    if n == 0 or size == 0.0:
        return
    cog_x = sum_x / size
    cog_y = sum_y / size
    out[I_FOV_LON] = cog_x
    out[I_FOV_LAT] = cog_y
    out[I_R] = np.sqrt(cog_x * cog_x + cog_y * cog_y)
    out[I_PHI] = np.arctan2(cog_y, cog_x)

    # weighted covariance (normalised by the total weight)
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for i in range(n):
        dx = x[i] - cog_x
        dy = y[i] - cog_y
        sxx += w[i] * dx * dx
        syy += w[i] * dy * dy
        sxy += w[i] * dx * dy
    cxx = sxx / size
    cyy = syy / size
    cxy = sxy / size

    lam_minor, length, width, psi = principal_axes(cxx, cyy, cxy)
    if length != 0.0:
        cos_psi = np.cos(psi)
        sin_psi = np.sin(psi)

        # second to fourth moments along the axes; weighted straight-line fit of the
        # transverse offsets against the longitudinal ones (weights: intensity per area)
        m2_long = 0.0
        m2_trans = 0.0
        m3 = 0.0
        m4 = 0.0
        s0 = 0.0
        sl = 0.0
        sll = 0.0
        st = 0.0
        slt = 0.0
        for i in range(n):
            dx = x[i] - cog_x
            dy = y[i] - cog_y
            longi = dx * cos_psi + dy * sin_psi
            trans = -dx * sin_psi + dy * cos_psi
            l2 = longi * longi
            m2_long += w[i] * l2
            m2_trans += w[i] * trans * trans
            m3 += w[i] * l2 * longi
            m4 += w[i] * l2 * l2
            v = w[i] / area[i]
            s0 += v
            sl += v * longi
            sll += v * l2
            st += v * trans
            slt += v * longi * trans
        var_long = m2_long / size
        var_trans = m2_trans / size
        width = axis_moments(out, size, lam_minor, length, width, psi, var_trans, m3, m4, s0, sl, sll, st, slt)

        # propagated uncertainties: each pixel changes the variance along an axis by
        # (offset² - variance) * weight / size (the MAGIC formulae written in the rotated frame)
        sum_len = 0.0
        sum_wid = 0.0
        for i in range(n):
            dx = x[i] - cog_x
            dy = y[i] - cog_y
            longi = dx * cos_psi + dy * sin_psi
            trans = -dx * sin_psi + dy * cos_psi
            t_len = (longi * longi - var_long) / size
            t_wid = (trans * trans - var_trans) / size
            sum_len += t_len * t_len * w[i]
            sum_wid += t_wid * t_wid * w[i]
        out[I_LENGTH_UNC] = np.sqrt(sum_len) / (2.0 * length)
        if width != 0.0:
            out[I_WIDTH_UNC] = np.sqrt(sum_wid) / (2.0 * width)

    out[I_LENGTH] = length
    out[I_WIDTH] = width


@njit(cache=True, nogil=True, error_model="numpy")
def to_degrees(row):
    row[I_PHI] *= RAD_TO_DEG
    row[I_PSI] *= RAD_TO_DEG
    row[I_PSI_UNC] *= RAD_TO_DEG


@njit(cache=True, nogil=True, error_model="numpy")
def _hillas_batch(images, masks, valid, pix_x, pix_y, pix_area, out):
    n_pixels = images.shape[1]
    w = np.empty(n_pixels)
    x = np.empty(n_pixels)
    y = np.empty(n_pixels)
    area = np.empty(n_pixels)
    for event in range(images.shape[0]):
        row = out[event]
        if not valid[event]:
            row[:] = np.nan
            continue
        n = 0
        for pix in range(n_pixels):
            if masks[event, pix]:
                w[n] = images[event, pix]
                x[n] = pix_x[pix]
                y[n] = pix_y[pix]
                area[n] = pix_area[pix]
                n += 1
        hillas_image(w[:n], x[:n], y[:n], area[:n], row)
        to_degrees(row)


def hillas_parameters(images, masks, geometry, valid=None):
    """``hillas_*`` columns of cleaned images (telescope frame; lengths and angles in deg).

    ``images`` ``(n_events, n_pixels)``, ``masks`` the cleaning masks, ``geometry`` an
    `~iactpipe.image.geometry.ImageGeometry`.  Sums run in float64.  Events with an empty
    mask or zero intensity, and those with ``valid`` False, get NaN (intensity 0 for an empty
    mask); length == 0 gives NaN psi, skewness, kurtosis and uncertainties; width == 0 NaN
    width uncertainty.
    """
    images, single = as_batch(images)
    masks, _ = as_batch(masks, dtype=np.bool_)
    valid = np.ones(len(images), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = np.empty((len(images), len(HILLAS_COLUMNS)))
    _hillas_batch(images, masks, valid, geometry.pix_x, geometry.pix_y, geometry.pix_area, out)
    return {name: out[:, i].copy() for i, name in enumerate(HILLAS_COLUMNS)}
