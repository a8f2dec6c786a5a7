"""The faster DL1 kernels give the numbers of the plain ones, bit for bit.

`image_parameters` computes every column in one kernel per image; it must equal the
single-parameter functions (each checked against ctapipe in test_image_parameters.py).
The cut of the LTS timing fit, the tail-cuts flags, the island counts, the quality
criterion on the intensity and the gain selection are checked against plain numpy.
"""

import numpy as np
import pytest
from iactpipe.image import (
    concentration_parameters,
    descriptive_statistics,
    hillas_parameters,
    image_parameters,
    leakage_parameters,
    morphology_parameters,
    number_of_islands,
    tailcuts_clean,
    timing_parameters,
)
from iactpipe.image.calibration import apply_peak_time_shift, select_gain_values
from iactpipe.image.processor import ImageSettings, quality_criteria
from iactpipe.image.timing import _bracketed, _kth_value
from test_image_cleaning import load_camera_images

SEED = 1234
CLEANINGS = [(10, 5, False, 2), (6, 3, False, 1), (4, 2, True, 0)]


@pytest.fixture(scope="module")
def camera_images(simtel_dir):
    return load_camera_images(simtel_dir)


def assert_same(got, expected, name):
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, name
    np.testing.assert_array_equal(got, expected, err_msg=name, strict=True)


def separate_parameters(images, masks, geometry, peak_times, valid, seed, fit_timing=True):
    """The columns from the single-parameter functions."""
    hillas = hillas_parameters(images, masks, geometry, valid=valid)
    columns = dict(hillas)
    columns.update(leakage_parameters(images, masks, geometry, valid=valid))
    columns.update(concentration_parameters(images, masks, geometry, hillas, valid=valid))
    for name, values in morphology_parameters(masks, geometry.neighbors).items():
        columns[name] = np.where(valid, values, -1)
    columns.update(descriptive_statistics(images, masks, "intensity", valid=valid))
    columns.update(descriptive_statistics(peak_times, masks, "peak_time", valid=valid))
    if fit_timing:
        columns.update(timing_parameters(peak_times, masks, geometry, hillas, valid=valid,
                                         rng=np.random.default_rng(seed)))
    return columns


@pytest.mark.parametrize("cleaning", CLEANINGS)
def test_image_parameters_equal_the_single_kernels(camera_images, cleaning):
    rng = np.random.default_rng(SEED)
    for cam in camera_images.values():
        images = cam.images
        peak_times = cam.peak_times.copy()
        peak_times[rng.random(peak_times.shape) < 0.02] = np.nan  # non-finite times are left out of the fit
        masks = tailcuts_clean(images, cam.geometry.neighbors, *cleaning)
        n = len(images)
        for valid in (masks.sum(axis=1) > 1, np.ones(n, bool), np.arange(n) % 3 == 0):
            ours = image_parameters(images, masks, cam.geometry, peak_times, rng=np.random.default_rng(SEED),
                                    valid=valid)
            expected = separate_parameters(images, masks, cam.geometry, peak_times, valid, SEED)
            for name, values in expected.items():
                assert_same(ours[name], values.astype(ours[name].dtype), f"{cam.label} {name}")
                assert ours[name].dtype == values.dtype or name.startswith("morphology")
        # without the timing fit: timing NaN, the peak-time statistics as with it
        valid = masks.sum(axis=1) > 1
        ours = image_parameters(images, masks, cam.geometry, peak_times, valid=valid, fit_timing=False)
        expected = separate_parameters(images, masks, cam.geometry, peak_times, valid, SEED, fit_timing=False)
        for name, values in expected.items():
            assert_same(ours[name], values, f"{cam.label} {name}")
        assert np.isnan(ours["timing_slope"]).all()


def test_kth_value_is_the_sorted_value():
    """Any bracket holding the k-th value, any guess (right, wrong or empty): the same value."""
    rng = np.random.default_rng(SEED)
    cases = [rng.normal(size=301) ** 2, np.round(rng.normal(size=200) ** 2, 1), np.zeros(77),
             np.array([0.0, -0.0] * 40), np.concatenate([rng.random(50), [np.inf] * 9]), np.arange(130.0)[::-1].copy(),
             rng.integers(0, 4, 999).astype(float)]
    for values in cases:
        n = len(values)
        ordered = np.sort(values)
        for k in sorted({1, 2, n // 2, int(0.85 * n), n - 1, n}):
            kth = ordered[k - 1]
            for lower, upper in ((-np.inf, np.inf), (kth, kth), (ordered[0], ordered[-1])):
                for guess in ((np.inf, -np.inf), (kth, kth), (0.9 * kth, 1.1 * kth), (kth + 1, kth + 2),
                              (ordered[0], ordered[max(k - 2, 0)])):
                    got = _kth_value(values, k, lower, upper, guess[0], guess[1], np.empty(2 * n))
                    assert got == kth, (n, k, lower, upper, guess)


def test_bracketed_keeps_the_order():
    rng = np.random.default_rng(SEED)
    for n in (0, 1, 7, 8, 9, 64, 101):
        values = rng.normal(size=n)
        out = np.full(n, np.nan)
        m, below = _bracketed(values, -0.5, 0.7, out)
        inside = values[(values >= -0.5) & (values <= 0.7)]
        assert (m, below) == (len(inside), np.count_nonzero(values < -0.5))
        np.testing.assert_array_equal(out[:m], inside)


def plain_tailcuts(image, indptr, indices, picture, boundary, keep_isolated, min_neighbors):
    """Tail-cuts cleaning written out with numpy (ctapipe's definition)."""
    neighbors = [indices[indptr[p]:indptr[p + 1]] for p in range(len(image))]
    above_pic = image >= picture
    above_bnd = image >= boundary
    count = np.array([above_pic[nb].sum() for nb in neighbors])
    if keep_isolated or min_neighbors == 0:
        core = above_pic
    else:
        core = above_pic & (count >= min_neighbors)
    near_core = np.array([core[nb].any() for nb in neighbors])
    near_bnd = np.array([above_bnd[nb].any() for nb in neighbors])
    return (above_bnd & near_core) | (core & (keep_isolated | near_bnd))


def test_tailcuts_equal_the_plain_definition(camera_images):
    rng = np.random.default_rng(SEED)
    cam = next(c for c in camera_images.values() if "LST" in c.label)
    indptr, indices = cam.geometry.neighbors
    images = np.concatenate([cam.images[:6], rng.normal(3, 4, (6, cam.images.shape[1])).astype(np.float32)])
    images[0, ::50] = np.nan
    per_pixel = rng.uniform(3, 9, images.shape[1])
    for picture, boundary, keep_isolated, min_neighbors in [(8, 4, False, 2), (6, 3, True, 0), (5, 5, False, 0),
                                                            (7, 2, False, 3), (4, 6, False, 1), (6, 3, False, -1),
                                                            (per_pixel, 0.6 * per_pixel, False, 2)]:
        masks = tailcuts_clean(images, (indptr, indices), picture, boundary, keep_isolated, min_neighbors)
        for image, mask in zip(images, masks, strict=True):
            expected = plain_tailcuts(image, indptr, indices, np.float32(picture) if np.isscalar(picture) else picture,
                                      np.float32(boundary) if np.isscalar(boundary) else boundary, keep_isolated,
                                      min_neighbors)
            np.testing.assert_array_equal(mask, expected)


def test_island_counts_equal_the_labels(camera_images):
    rng = np.random.default_rng(SEED)
    for cam in list(camera_images.values())[:3]:
        n_pixels = cam.images.shape[1]
        masks = np.concatenate([tailcuts_clean(cam.images, cam.geometry.neighbors, 6, 3, True, 0),
                                rng.random((20, n_pixels)) < rng.uniform(0.05, 0.6, (20, 1)),
                                np.zeros((1, n_pixels), bool), np.ones((1, n_pixels), bool)])
        counts = morphology_parameters(masks, cam.geometry.neighbors)
        n_islands, labels = number_of_islands(masks, cam.geometry.neighbors)
        for event, row in enumerate(labels):
            sizes = np.bincount(row, minlength=n_islands[event] + 1)[1:]
            assert counts["morphology_n_pixels"][event] == masks[event].sum()
            assert counts["morphology_n_islands"][event] == n_islands[event]
            assert counts["morphology_n_small_islands"][event] == np.count_nonzero(sizes <= 2)
            assert counts["morphology_n_large_islands"][event] == np.count_nonzero(sizes > 50)
            assert counts["morphology_n_medium_islands"][event] == np.count_nonzero((sizes > 2) & (sizes <= 50))


def test_quality_intensity_equals_numpys_sum():
    """Also for sums that round to either side of the threshold depending on the order of the additions."""
    rng = np.random.default_rng(SEED)
    n_pixels = 1855
    images = rng.normal(0, 1, (40, n_pixels)).astype(np.float32)
    masks = rng.random((40, n_pixels)) < 0.3
    # cancelling sums: huge +x and -x and small values, exactly at the threshold, NaN and inf, nothing selected
    images[0, :4] = [1e30, 1.0, -1e30, -1.0]
    masks[0] = False
    masks[0, :4] = True
    images[1, masks[1]] = 0.0
    images[2, 5] = np.nan
    masks[2, 5] = True
    images[3, 7] = np.inf
    masks[3, 7] = True
    masks[4] = False
    images[5, masks[5]] = np.float32(0.1)
    for row, places in ((6, [0, 1000, 1]), (7, [0, 5, 1500])):  # the sum is 1 or 0 depending on the order
        images[row, places] = [1e30, -1e30, 1.0]
        masks[row] = False
        masks[row, places] = True
    counts = np.round(rng.normal(0, 20, images.shape)).astype(np.int32)
    for min_intensity in (0.0, 0.5, 1e-3, float(images[5, masks[5]].astype(np.float64).sum()), -5.0):
        settings = ImageSettings(min_intensity=min_intensity)
        for values in (images, images.astype(np.float64), counts):
            got = quality_criteria(values, masks, settings)
            (size_name, _), (pixels_name, _) = settings.quality_criteria
            expected = np.where(masks, values, 0).sum(axis=1, dtype=np.float64) > min_intensity
            np.testing.assert_array_equal(got[size_name], expected)
            np.testing.assert_array_equal(got[pixels_name], masks.sum(axis=1) >= settings.min_pixels)


@pytest.mark.parametrize("n_gains", [1, 2, 3])
def test_select_gain_values_and_time_shift_equal_indexing(n_gains):
    rng = np.random.default_rng(SEED)
    n_events, n_pixels = 7, 101
    selected = rng.integers(0, n_gains, (n_events, n_pixels)).astype(np.int8)
    for per_event in (False, True):
        shape = (n_events, n_gains, n_pixels) if per_event else (n_gains, n_pixels)
        for values in (rng.normal(size=shape).astype(np.float32), rng.normal(size=shape), rng.random(shape) < 0.1,
                       np.zeros(shape, bool)):
            full = np.broadcast_to(values, (n_events, n_gains, n_pixels))
            expected = np.take_along_axis(full, selected[:, np.newaxis, :].astype(np.intp), axis=1)[:, 0]
            assert_same(select_gain_values(values, selected), expected, "select_gain_values")
            assert_same(select_gain_values(full, selected), expected, "select_gain_values (broadcast)")
            if values.dtype != bool:
                peak_time = rng.normal(20, 5, (n_events, n_pixels)).astype(np.float32)
                reference = peak_time.copy()
                reference -= expected  # numpy's in-place arithmetic (float64 shifts: computed in float64)
                got = apply_peak_time_shift(peak_time, values, selected)
                assert got is peak_time
                assert_same(got, reference, "apply_peak_time_shift")


def test_selected_pixels_equal_flatnonzero():
    from iactpipe.image.morphology import selected_pixels

    rng = np.random.default_rng(SEED)
    for n in (0, 1, 7, 8, 9, 63, 1855):
        for density in (0.0, 0.1, 0.5, 1.0):
            mask = rng.random(n) < density
            for flags in (mask, (mask * rng.integers(1, 8, n)).astype(np.uint8)):
                kept = np.full(n, -1, dtype=np.int64)
                count = selected_pixels(flags, kept)
                np.testing.assert_array_equal(kept[:count], np.flatnonzero(flags))
