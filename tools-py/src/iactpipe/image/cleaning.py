"""Image cleaning: boolean masks of the pixels that keep signal (ctapipe 0.28 semantics).

Every function takes images ``(n_events, n_pixels)`` (or one ``(n_pixels,)`` image) of a single
camera and the neighbour lists as CSR ``(indptr, indices)`` (``CameraGeometry.neighbors``), and
returns masks of the same shape.  Thresholds may be scalars, per-pixel ``(n_pixels,)`` or
per-event ``(n_events, n_pixels)`` arrays; they are compared with the images at the precision
numpy would use (a Python scalar is rounded to float32 for float32 images).
"""

import numpy as np
from numba import njit

from ._utils import as_batch, per_pixel, weak_cast
from .morphology import island_with_max, label_islands, selected_pixels

__all__ = [
    "tailcuts_clean",
    "mars_cleaning_1st_pass",
    "time_constrained_clean",
    "dilate",
    "touches",
]


@njit(cache=True, nogil=True)
def _any_neighbor(flags, pix, indptr, indices):
    for k in range(indptr[pix], indptr[pix + 1]):
        if flags[indices[k]]:
            return True
    return False


@njit(cache=True, nogil=True)
def _count_neighbors(flags, pix, indptr, indices):
    count = 0
    for k in range(indptr[pix], indptr[pix + 1]):
        if flags[indices[k]]:
            count += 1
    return count


#: bits of the per-pixel flags of `_tailcuts_flags`
_PICTURE = np.uint8(1)
_BOUNDARY = np.uint8(2)
_CORE = np.uint8(4)


@njit(cache=True, nogil=True)
def _any_flag(flags, bit, pix, indptr, indices):
    for k in range(indptr[pix], indptr[pix + 1]):
        if flags[indices[k]] & bit:
            return True
    return False


@njit(cache=True, nogil=True)
def _tailcuts_flags(image, picture, boundary, keep_isolated, min_neighbors, indptr, indices, flags, candidates, out):
    """Tail-cuts mask of one image into ``out`` (`tailcuts_clean` semantics); returns the number of ``candidates``.

    ``flags`` (uint8, n_pixels): scratch, fully rewritten; one byte per pixel holds whether
    it is above the picture and the boundary threshold and whether it is a core pixel.  The
    first pass sets them for all pixels without branches (vectorised); after it only the
    pixels above a threshold (``candidates``, scratch of n_pixels) are looked at.
    """
    n_pixels = image.shape[0]
    for pix in range(n_pixels):
        flags[pix] = np.uint8(image[pix] >= picture[pix]) | (np.uint8(image[pix] >= boundary[pix]) << np.uint8(1))
    n_candidates = selected_pixels(flags, candidates)
    # core: above the picture threshold with enough such neighbours (if asked for)
    need = 0 if keep_isolated or min_neighbors <= 0 else min_neighbors
    for c in range(n_candidates):
        pix = candidates[c]
        if flags[pix] & _PICTURE:
            count = 0
            for k in range(indptr[pix], indptr[pix + 1]):
                if count >= need:
                    break
                count += flags[indices[k]] & _PICTURE
            if count >= need:
                flags[pix] |= _CORE
    # boundary pixels next to a core pixel, plus core pixels next to a boundary pixel (or isolated, if asked)
    out[:] = False
    for c in range(n_candidates):
        pix = candidates[c]
        own = flags[pix]
        keep = False
        if own & _BOUNDARY:
            keep = _any_flag(flags, _CORE, pix, indptr, indices)
        if not keep and own & _CORE:
            keep = keep_isolated or _any_flag(flags, _BOUNDARY, pix, indptr, indices)
        out[pix] = keep
    return n_candidates


@njit(cache=True, nogil=True)
def _tailcuts_batch(images, picture, boundary, keep_isolated, min_neighbors, indptr, indices, out):
    n_pixels = images.shape[1]
    flags = np.empty(n_pixels, dtype=np.uint8)
    candidates = np.empty(n_pixels, dtype=np.int64)
    for event in range(images.shape[0]):
        _tailcuts_flags(
            images[event],
            picture[event if picture.shape[0] > 1 else 0],
            boundary[event if boundary.shape[0] > 1 else 0],
            keep_isolated,
            min_neighbors,
            indptr,
            indices,
            flags,
            candidates,
            out[event],
        )


def tailcuts_clean(
    images,
    neighbors,
    picture_thresh=7,
    boundary_thresh=5,
    keep_isolated_pixels=False,
    min_number_picture_neighbors=0,
):
    """Two-threshold tail-cuts cleaning.

    Core pixels are ``>= picture_thresh`` (and, unless ``keep_isolated_pixels`` or
    ``min_number_picture_neighbors == 0``, have at least that many neighbours ``>= picture_thresh``).
    Kept: pixels ``>= boundary_thresh`` next to a core pixel, and core pixels that either have a
    neighbour ``>= boundary_thresh`` or, with ``keep_isolated_pixels``, always.
    """
    images, single = as_batch(images)
    indptr, indices = neighbors
    out = np.empty(images.shape, dtype=bool)
    _tailcuts_batch(
        images,
        per_pixel(picture_thresh, images, "picture_thresh"),
        per_pixel(boundary_thresh, images, "boundary_thresh"),
        bool(keep_isolated_pixels),
        int(min_number_picture_neighbors),
        indptr,
        indices,
        out,
    )
    return out[0] if single else out


@njit(cache=True, nogil=True)
def _mars_batch(images, picture, boundary, keep_isolated, min_neighbors, indptr, indices, out):
    n_pixels = images.shape[1]
    flags = np.empty(n_pixels, dtype=np.uint8)
    first = np.empty(n_pixels, dtype=np.bool_)
    candidates = np.empty(n_pixels, dtype=np.int64)
    for event in range(images.shape[0]):
        n_candidates = _tailcuts_flags(
            images[event],
            picture[event if picture.shape[0] > 1 else 0],
            boundary[event if boundary.shape[0] > 1 else 0],
            keep_isolated,
            min_neighbors,
            indptr,
            indices,
            flags,
            candidates,
            first,
        )
        # one more ring: boundary pixels next to a pixel of the tail-cuts mask
        # (all pixels of either mask are candidates: above one of the thresholds)
        mask = out[event]
        mask[:] = False
        for c in range(n_candidates):
            pix = candidates[c]
            keep = (flags[pix] & _BOUNDARY) != 0 and _any_neighbor(first, pix, indptr, indices)
            if not keep and first[pix]:
                keep = keep_isolated or _any_flag(flags, _BOUNDARY, pix, indptr, indices)
            mask[pix] = keep


def mars_cleaning_1st_pass(
    images,
    neighbors,
    picture_thresh=7,
    boundary_thresh=5,
    keep_isolated_pixels=False,
    min_number_picture_neighbors=0,
):
    """MARS-like three-level cleaning: tail-cuts, then boundary pixels next to the tail-cuts mask.

    Starting from the `tailcuts_clean` mask, adds pixels ``>= boundary_thresh`` that neighbour
    it; pixels of the first mask stay if they have a neighbour ``>= boundary_thresh`` (or
    always, with ``keep_isolated_pixels``).
    """
    images, single = as_batch(images)
    indptr, indices = neighbors
    out = np.empty(images.shape, dtype=bool)
    _mars_batch(
        images,
        per_pixel(picture_thresh, images, "picture_thresh"),
        per_pixel(boundary_thresh, images, "boundary_thresh"),
        bool(keep_isolated_pixels),
        int(min_number_picture_neighbors),
        indptr,
        indices,
        out,
    )
    return out[0] if single else out


@njit(cache=True, nogil=True)
def _dilate_batch(masks, indptr, indices, out):
    for event in range(masks.shape[0]):
        mask = masks[event]
        for pix in range(masks.shape[1]):
            out[event, pix] = mask[pix] or _any_neighbor(mask, pix, indptr, indices)


def dilate(masks, neighbors):
    """Add one ring of neighbours to the selected pixels."""
    masks, single = as_batch(masks, dtype=np.bool_)
    indptr, indices = neighbors
    out = np.empty(masks.shape, dtype=bool)
    _dilate_batch(masks, indptr, indices, out)
    return out[0] if single else out


@njit(cache=True, nogil=True)
def _touches_batch(masks, flagged, indptr, indices, out):
    for event in range(masks.shape[0]):
        mask = masks[event]
        row = flagged[event if flagged.shape[0] > 1 else 0]
        hit = False
        for pix in range(masks.shape[1]):
            if row[pix] and (mask[pix] or _any_neighbor(mask, pix, indptr, indices)):
                hit = True
                break
        out[event] = hit


def touches(masks, flagged, neighbors):
    """Whether each mask holds or borders a flagged pixel: ``(dilate(masks) & flagged).any(axis=1)``,
    looking only at the flagged pixels.  ``flagged`` is (n_events or 1, n_pixels)."""
    masks, _ = as_batch(masks, dtype=np.bool_)
    flagged, _ = as_batch(flagged, dtype=np.bool_)
    indptr, indices = neighbors
    out = np.empty(masks.shape[0], dtype=bool)
    _touches_batch(masks, flagged, indptr, indices, out)
    return out


@njit(cache=True, nogil=True)
def _time_constrained_batch(
    images, times, picture, boundary, limit_core, limit_boundary, min_neighbors, indptr, indices, out
):
    n_pixels = images.shape[1]
    above_pic = np.empty(n_pixels, dtype=np.bool_)
    core = np.empty(n_pixels, dtype=np.bool_)
    labels = np.empty(n_pixels, dtype=np.int32)
    stack = np.empty(n_pixels, dtype=np.int64)
    for event in range(images.shape[0]):
        image = images[event]
        time = times[event]
        pic = picture[event if picture.shape[0] > 1 else 0]
        bnd = boundary[event if boundary.shape[0] > 1 else 0]
        mask = out[event]

        # core: above the picture threshold with enough neighbours above it
        n_core = 0
        for pix in range(n_pixels):
            above_pic[pix] = image[pix] >= pic[pix]
        for pix in range(n_pixels):
            core[pix] = above_pic[pix] and _count_neighbors(above_pic, pix, indptr, indices) >= min_neighbors
            n_core += core[pix]

        # keep core pixels close in time to the image²-weighted mean time of the brightest island
        if n_core > 0:
            n_islands = label_islands(core, indptr, indices, labels, stack)
            main = island_with_max(labels, n_islands, image)
            sum_tw = 0.0
            sum_w = 0.0
            for pix in range(n_pixels):
                if labels[pix] == main:
                    weight = np.float64(image[pix]) ** 2
                    sum_tw += np.float64(time[pix]) * weight
                    sum_w += weight
            mean_time = sum_tw / sum_w
            for pix in range(n_pixels):
                if core[pix]:
                    limit = limit_core if image[pix] < 2.0 * pic[pix] else 2.0 * limit_core
                    core[pix] = abs(np.float64(time[pix]) - mean_time) < limit

        # boundary: above the boundary threshold, next to enough core pixels close in time
        for pix in range(n_pixels):
            keep = core[pix]
            if not keep and image[pix] >= bnd[pix] and _any_neighbor(core, pix, indptr, indices):
                n_close = 0
                for k in range(indptr[pix], indptr[pix + 1]):
                    neighbor = indices[k]
                    # difference in the times' own precision, like numpy on the arrays
                    if core[neighbor] and abs(time[pix] - time[neighbor]) < limit_boundary:
                        n_close += 1
                keep = n_close >= min_neighbors
            mask[pix] = keep


def time_constrained_clean(
    images,
    peak_times,
    neighbors,
    picture_thresh=7,
    boundary_thresh=5,
    time_limit_core=4.5,
    time_limit_boundary=1.5,
    min_number_picture_neighbors=1,
):
    """MAGIC-like cleaning with time constraints (ctapipe's ``time_constrained_clean``).

    1. Core pixels: ``>= picture_thresh`` with ``>= min_number_picture_neighbors`` such neighbours.
    2. Core pixels stay if their peak time is within ``time_limit_core`` (twice that for pixels
       ``>= 2 * picture_thresh``) of the image²-weighted mean time of the brightest core island.
    3. Boundary pixels (``>= boundary_thresh``, not core) stay if at least
       ``min_number_picture_neighbors`` core neighbours have a peak time within ``time_limit_boundary``.

    The mean time is computed in float64 (ctapipe: in the images' precision); this moves it by
    ~1e-7 of its value, which changes a mask only for a time difference within that of the limit.
    """
    images, single = as_batch(images)
    peak_times, _ = as_batch(peak_times)
    if peak_times.shape != images.shape:
        raise ValueError(f"peak_times shape {peak_times.shape} differs from images shape {images.shape}")
    indptr, indices = neighbors
    out = np.empty(images.shape, dtype=bool)
    _time_constrained_batch(
        images,
        peak_times,
        per_pixel(picture_thresh, images, "picture_thresh"),
        per_pixel(boundary_thresh, images, "boundary_thresh"),
        float(np.asarray(time_limit_core, dtype=np.float64)),
        float(weak_cast(time_limit_boundary, peak_times)),
        int(min_number_picture_neighbors),
        indptr,
        indices,
        out,
    )
    return out[0] if single else out
