"""Concentration: shares of the intensity near the centroid, in the ellipse and in the brightest pixel."""

import numpy as np
from numba import njit

from ._utils import as_batch

__all__ = ["concentration_parameters", "concentration_image"]

DEG_TO_RAD = np.pi / 180.0


@njit(cache=True, nogil=True, error_model="numpy")
def concentration_image(w, kept, pix_x, pix_y, pixel_width, intensity, cog_x, cog_y, length, width, psi_deg):
    """Concentration of one image: its selected pixels ``kept``, their values ``w`` (float64) and Hillas parameters.

    Returns (cog, core, pixel).
    """
    cos_psi = np.cos(psi_deg * DEG_TO_RAD)
    sin_psi = np.sin(psi_deg * DEG_TO_RAD)
    use_ellipse = width != 0.0
    sum_cog = 0.0
    sum_core = 0.0
    brightest = -np.inf
    for i in range(w.shape[0]):
        pix = kept[i]
        value = w[i]
        brightest = max(brightest, value)
        dx = pix_x[pix] - cog_x
        dy = pix_y[pix] - cog_y
        # within one pixel width of the centroid
        if dx * dx + dy * dy < pixel_width[pix] ** 2:
            sum_cog += value
        if use_ellipse:
            longi = dx * cos_psi + dy * sin_psi
            trans = -dx * sin_psi + dy * cos_psi
            if longi**2 / length**2 + trans**2 / width**2 <= 1.0:
                sum_core += value
    return sum_cog / intensity, sum_core / intensity, brightest / intensity


@njit(cache=True, nogil=True, error_model="numpy")
def _concentration_batch(
    images, masks, valid, pix_x, pix_y, pixel_width, intensity, cog_x, cog_y, length, width, psi_deg, cog, core, pixel
):
    kept = np.empty(images.shape[1], dtype=np.int64)
    w = np.empty(images.shape[1])
    for event in range(images.shape[0]):
        if not valid[event]:
            cog[event] = core[event] = pixel[event] = np.nan
            continue
        n = 0
        for pix in range(images.shape[1]):
            if masks[event, pix]:
                kept[n] = pix
                w[n] = images[event, pix]
                n += 1
        cog[event], core[event], pixel[event] = concentration_image(
            w[:n], kept[:n], pix_x, pix_y, pixel_width, intensity[event], cog_x[event], cog_y[event], length[event],
            width[event], psi_deg[event],
        )


def concentration_parameters(images, masks, geometry, hillas, valid=None):
    """``concentration_*`` columns (float64) from the images and their ``hillas_*`` columns.

    cog: share of the intensity in pixels closer than one pixel width to the centroid;
    core: share inside the Hillas ellipse (0 when width is 0); pixel: share of the brightest
    pixel.  ``valid`` False gives NaN.
    """
    images, _ = as_batch(images)
    masks, _ = as_batch(masks, dtype=np.bool_)
    n_events = len(images)
    valid = np.ones(n_events, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    cog, core, pixel = (np.empty(n_events) for _ in range(3))
    columns = ("intensity", "fov_lon", "fov_lat", "length", "width", "psi")
    _concentration_batch(
        images,
        masks,
        valid,
        geometry.pix_x,
        geometry.pix_y,
        geometry.pixel_width,
        *(np.ascontiguousarray(hillas[f"hillas_{name}"], dtype=np.float64) for name in columns),
        cog,
        core,
        pixel,
    )
    return {"concentration_cog": cog, "concentration_core": core, "concentration_pixel": pixel}
