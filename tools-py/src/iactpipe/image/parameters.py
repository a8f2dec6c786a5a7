"""All DL1 image parameters of a chunk of cleaned images, as ctapipe's ImageProcessor writes them.

Images failing the image-quality query (ctapipe's ``ImageQualityQuery`` defaults: selected
intensity > 0 and at least 2 selected pixels) get ctapipe's default values: NaN for every
float column and -1 for the morphology counts.
"""

import numpy as np
from numba import njit

from ._utils import as_batch
from .concentration import concentration_parameters
from .hillas import hillas_parameters
from .leakage import leakage_parameters
from .morphology import morphology_parameters
from .statistics import descriptive_statistics
from .timing import timing_parameters

__all__ = [
    "IMAGE_QUALITY_CRITERIA",
    "image_quality_criteria",
    "image_quality_mask",
    "image_parameters",
    "default_parameters",
    "PARAMETER_COLUMNS",
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


@njit(cache=True)
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


def image_parameters(images, masks, geometry, peak_times=None, rng=None, valid=None):
    """All DL1 parameter columns (`PARAMETER_COLUMNS`) of a chunk of images of one camera.

    ``images`` and ``peak_times`` ``(n_events, n_pixels)``, ``masks`` the cleaning masks,
    ``geometry`` an `~iactpipe.image.geometry.ImageGeometry` (telescope frame, deg).
    ``valid`` (default: `image_quality_mask`) selects the images to parametrise; the others
    get `default_parameters`.  Without ``peak_times`` the timing and peak-time columns are NaN.
    ``rng`` feeds the timing fit (see `iactpipe.image.timing`).
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

    hillas = hillas_parameters(images, masks, geometry, valid=valid)
    columns = dict(hillas)
    columns.update(leakage_parameters(images, masks, geometry, valid=valid))
    columns.update(concentration_parameters(images, masks, geometry, hillas, valid=valid))
    morphology = morphology_parameters(masks, geometry.neighbors)
    for name, values in morphology.items():
        columns[name] = np.where(valid, values, -1)
    columns.update(descriptive_statistics(images, masks, "intensity", valid=valid))
    if peak_times is not None:
        peak_times, _ = as_batch(peak_times)
        if peak_times.shape != images.shape:
            raise ValueError(f"peak_times shape {peak_times.shape} differs from images shape {images.shape}")
        columns.update(timing_parameters(peak_times, masks, geometry, hillas, valid=valid, rng=rng))
        columns.update(descriptive_statistics(peak_times, masks, "peak_time", valid=valid))
    # the columns no kernel gave (timing and peak-time statistics without peak times) keep their defaults
    return {
        name: columns[name].astype(dtype, copy=False) if name in columns else np.full(n_events, fill, dtype=dtype)
        for name, dtype, fill in _DEFAULTS
    }
