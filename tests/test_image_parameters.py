"""DL1 image parameters against ctapipe 0.28 (real images) and analytic cases."""

import warnings

import astropy.units as u
import numpy as np
import pytest
from iactpipe.image import (
    IMAGE_QUALITY_CRITERIA,
    PARAMETER_COLUMNS,
    ImageGeometry,
    default_parameters,
    descriptive_statistics,
    hillas_parameters,
    image_parameters,
    image_quality_criteria,
    image_quality_mask,
    lts_linear_regression,
    tailcuts_clean,
    time_constrained_clean,
    timing_parameters,
)
from iactpipe.image.timing import _kth_smallest, _select, lts_fit
from iactpipe.instrument.camera import neighbors_csr
from scipy import stats
from test_image_cleaning import load_camera_images

ctapipe_image = pytest.importorskip("ctapipe.image")
ctapipe_fitting = pytest.importorskip("ctapipe.fitting")
from ctapipe.containers import (  # noqa: E402
    ArrayEventContainer,
    DL1CameraContainer,
    ImageParametersContainer,
    IntensityStatisticsContainer,
    PeakTimeStatisticsContainer,
)
from ctapipe.image.image_processor import DEFAULT_IMAGE_PARAMETERS, ImageQualityQuery  # noqa: E402

EPS = np.finfo(np.float64).eps
SEED = 20240617

# cleanings for the parameter comparisons: (picture, boundary, keep_isolated, min_neighbours)
CLEANINGS = [(10, 5, False, 2), (6, 3, False, 1), (4, 2, True, 0)]


@pytest.fixture(scope="session")
def camera_images(simtel_dir):
    return load_camera_images(simtel_dir)


def flat_values(container):
    """ctapipe container -> {column: value} in the DL1 table's units (deg, 1/deg)."""
    columns = {}
    for name, value in container.as_dict(recursive=True, flatten=True, add_prefix=True).items():
        if isinstance(value, u.Quantity):
            value = value.to_value(u.deg if value.unit.is_equivalent(u.deg) else 1 / u.deg)
        columns[name] = value
    columns.pop("core_psi", None)  # DL2
    return columns


def ctapipe_parameters(geometry, image, mask, peak_time):
    """What ctapipe's ImageProcessor computes for one cleaned image (telescope-frame geometry)."""
    selected = image[mask]
    if not all(ImageQualityQuery()(image=selected)):
        return flat_values(DEFAULT_IMAGE_PARAMETERS)
    geom_selected = geometry[mask]
    hillas = ctapipe_image.hillas_parameters(geom_selected, selected)
    parameters = ImageParametersContainer(
        hillas=hillas,
        timing=ctapipe_image.timing_parameters(geom_selected, selected, peak_time[mask], hillas),
        leakage=ctapipe_image.leakage_parameters(geometry, image, mask),
        concentration=ctapipe_image.concentration_parameters(geom_selected, selected, hillas),
        morphology=ctapipe_image.morphology_parameters(geometry, mask),
        intensity_statistics=ctapipe_image.descriptive_statistics(selected, IntensityStatisticsContainer),
        peak_time_statistics=ctapipe_image.descriptive_statistics(peak_time[mask], PeakTimeStatisticsContainer),
    )
    return flat_values(parameters)


def reference_columns(cam, images, masks, peak_times, seed):
    """ctapipe's parameters for a chunk, with ctapipe's fit generator set to ``seed``."""
    ctapipe_fitting.FIT_RNG.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    rows = [
        ctapipe_parameters(cam.telescope_geometry, image, mask, time)
        for image, mask, time in zip(images, masks, peak_times, strict=True)
    ]
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in rows[0]}


def tolerances(name, expected, float32_reference=False):
    """(rtol, atol) arrays for comparing column ``name`` with ctapipe's columns ``expected``.

    - Default: 1e-6 relative (1e-12 absolute for values that are 0).
    - hillas_width, hillas_width_uncertainty: ctapipe takes the minor eigenvalue from LAPACK's
      eigh, whose absolute error ~eps * length² becomes a relative error ~eps * (length/width)²
      for thin images (seen: 9e-6 for a 3-pixel FlashCam image with width/length = 4e-6).  We
      compute the minor-axis variance directly (checked against 40-digit arithmetic in
      test_hillas_thin_image_accuracy), so the allowance is ctapipe's own error.
    - hillas_psi: the eigenvector direction has an absolute error ~eps * length²/(length² - width²)
      rad, which matters only for nearly round images.
    - float32_reference (ctapipe fed float32 images, as in production): ctapipe sums image values
      in float32 for leakage_intensity_*, concentration_cog/core and the intensity/peak-time
      statistics, we in float64; those columns then agree to float32 precision (rtol 1e-5), and
      skewness/kurtosis, computed by ctapipe in float32 from float32 means, to 1e-3 absolute.
    """
    n_events = len(expected[name])
    rtol = np.full(n_events, 1e-6)
    atol = np.full(n_events, 1e-12)
    length, width = expected["hillas_length"], expected["hillas_width"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if name in ("hillas_width", "hillas_width_uncertainty"):
            rtol += np.where(width > 0, 4 * EPS * (length / width) ** 2, 0.0)
        elif name == "hillas_psi":
            atol += np.where(length > width, np.rad2deg(4 * EPS * length**2 / (length**2 - width**2)), 0.0)
    if float32_reference:
        if name.startswith(("leakage_intensity", "concentration_cog", "concentration_core")):
            rtol[:] = 1e-5
            atol[:] = 1e-7
        elif name.endswith(("_mean", "_std")):
            rtol[:] = 1e-5
        elif name.endswith(("_skewness", "_kurtosis")) and name.startswith(("intensity", "peak_time")):
            atol[:] = 1e-3
    return rtol, atol


def three_point_fits(masks, peak_times, valid):
    """Images whose timing fit has exactly 3 points: ctapipe's choice among them is rounding noise.

    The LTS fit keeps int(0.85 * 3) = 2 points, so every starting pair fits its 2 points exactly
    and the residual sums compared to pick the best are all ~1e-30: which pair ctapipe keeps
    depends on the rounding in its matrix inverse.  We check instead that our line passes
    through 2 of the 3 points.
    """
    n_fit = (masks & np.isfinite(peak_times)).sum(axis=1)
    return valid & (n_fit == 3)


def assert_three_point_fits(ours, masks, peak_times, geometry, rows):
    for event in np.flatnonzero(rows):
        psi = np.deg2rad(ours["hillas_psi"][event])
        mask = masks[event]
        longi = (geometry.pix_x[mask] - ours["hillas_fov_lon"][event]) * np.cos(psi) + (
            geometry.pix_y[mask] - ours["hillas_fov_lat"][event]
        ) * np.sin(psi)
        residual = peak_times[event, mask] - (ours["timing_slope"][event] * longi + ours["timing_intercept"][event])
        assert np.sum(np.abs(residual) < 1e-9) >= 2


def assert_columns_match(ours, expected, label, float32_reference=False, skip_timing=None):
    assert list(ours) == [name for name, _ in PARAMETER_COLUMNS]
    assert set(expected) == set(ours)
    for name, values in ours.items():
        want = expected[name]
        got = values.astype(np.float64)
        if skip_timing is not None and name.startswith("timing_"):
            want, got = want[~skip_timing], got[~skip_timing]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{label} {name}: NaN pattern")
        if np.issubdtype(values.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=f"{label} {name}")
            continue
        rtol, atol = tolerances(name, expected, float32_reference)
        if skip_timing is not None and name.startswith("timing_"):
            rtol, atol = rtol[~skip_timing], atol[~skip_timing]
        finite = np.isfinite(want)
        bad = np.abs(got[finite] - want[finite]) > atol[finite] + rtol[finite] * np.abs(want[finite])
        assert not bad.any(), f"{label} {name}: ours {got[finite][bad]} ctapipe {want[finite][bad]}"


def test_columns_are_ctapipes(camera_images):
    """Names and order of ctapipe's DL1 parameter columns (without DL2's core_psi), and defaults."""
    expected = flat_values(ImageParametersContainer())
    assert [name for name, _ in PARAMETER_COLUMNS] == list(expected)
    defaults = default_parameters(3)
    for name, value in flat_values(DEFAULT_IMAGE_PARAMETERS).items():
        if np.isnan(value):
            assert np.isnan(defaults[name]).all(), name
        else:
            assert (defaults[name] == value).all(), name
    assert [name for name, _ in IMAGE_QUALITY_CRITERIA] == ImageQualityQuery().criteria_names
    assert list(IMAGE_QUALITY_CRITERIA) == [tuple(c) for c in ImageQualityQuery().quality_criteria]


def test_geometry_matches_ctapipe_telescope_frame(camera_images):
    for key, cam in camera_images.items():
        ref = cam.telescope_geometry
        geometry = cam.geometry
        np.testing.assert_allclose(geometry.pix_x, ref.pix_x.to_value(u.deg), rtol=1e-12, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(geometry.pix_y, ref.pix_y.to_value(u.deg), rtol=1e-12, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(geometry.pix_area, ref.pix_area.to_value(u.deg**2), rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(geometry.pixel_width, ref.pixel_width.to_value(u.deg), rtol=1e-12, err_msg=key)
        np.testing.assert_array_equal(geometry.indptr, ref.neighbor_matrix_sparse.indptr, err_msg=key)
        np.testing.assert_array_equal(geometry.indices, ref.neighbor_matrix_sparse.indices, err_msg=key)
        for width, ours in ((1, geometry.border_1), (2, geometry.border_2)):
            np.testing.assert_array_equal(ours, np.ravel(ref.get_border_pixel_mask(width)), err_msg=key)
        assert 0 < geometry.border_1.sum() < geometry.border_2.sum() < geometry.n_pixels


@pytest.mark.parametrize("cleaning", CLEANINGS, ids=str)
def test_parameters_equal_ctapipe_functions(camera_images, cleaning):
    """Every column equal to ctapipe's functions within 1e-6 relative (float64 images and times)."""
    n_valid = 0
    for key, cam in camera_images.items():
        images = cam.images.astype(np.float64)
        peak_times = cam.peak_times.astype(np.float64)
        masks = tailcuts_clean(images, cam.geometry.neighbors, *cleaning)
        expected = reference_columns(cam, images, masks, peak_times, SEED)
        ours = image_parameters(images, masks, cam.geometry, peak_times, rng=np.random.default_rng(SEED))
        valid = image_quality_mask(images, masks)
        skip = three_point_fits(masks, peak_times, valid)
        assert_columns_match(ours, expected, f"{key} {cleaning}", skip_timing=skip)
        assert_three_point_fits(ours, masks, peak_times, cam.geometry, skip)
        n_valid += valid.sum()
    assert n_valid > 50


def test_parameters_of_small_and_degenerate_masks(camera_images):
    """Empty, 1-pixel, 2-pixel (width 0), 3 collinear pixels, negative sum: ctapipe's values/defaults."""
    for key, cam in camera_images.items():
        geometry = cam.geometry
        n_pixels = geometry.n_pixels
        image = np.abs(cam.images[0]).astype(np.float64) + 1.0
        start = int(np.argmin(np.hypot(geometry.pix_x, geometry.pix_y)))
        first = geometry.indices[geometry.indptr[start]]
        # the pixel opposite ``first`` across ``start`` continues the line
        opposite = geometry.indices[geometry.indptr[start] : geometry.indptr[start + 1]]
        d_first = np.array(
            [geometry.pix_x[first] - geometry.pix_x[start], geometry.pix_y[first] - geometry.pix_y[start]]
        )
        d_other = np.column_stack(
            [geometry.pix_x[opposite] - geometry.pix_x[start], geometry.pix_y[opposite] - geometry.pix_y[start]]
        )
        third = opposite[np.argmin(d_other @ d_first)]
        selections = [[], [start], [start, first], [start, first, third], list(range(0, n_pixels, 7))]
        masks = np.zeros((len(selections) + 1, n_pixels), dtype=bool)
        for row, pixels in enumerate(selections):
            masks[row, pixels] = True
        masks[-1, [start, first]] = True
        images = np.repeat(image[np.newaxis], len(masks), axis=0)
        images[-1, [start, first]] = [-2.0, 1.0]  # negative intensity
        times = np.repeat(cam.peak_times[:1].astype(np.float64), len(masks), axis=0)
        expected = reference_columns(cam, images, masks, times, SEED)
        ours = image_parameters(images, masks, geometry, times, rng=np.random.default_rng(SEED))
        skip = three_point_fits(masks, times, image_quality_mask(images, masks))
        assert skip[3]
        assert_columns_match(ours, expected, key, skip_timing=skip)
        assert_three_point_fits(ours, masks, times, geometry, skip)
        np.testing.assert_array_equal(image_quality_mask(images, masks), [False, False, True, True, True, False])
        assert ours["hillas_width"][2] == 0 and np.isnan(ours["hillas_width_uncertainty"][2])
        assert ours["morphology_n_pixels"][1] == -1


@pytest.mark.parametrize(
    "cleaner",
    [
        {},  # TailcutsImageCleaner 10/5, 2 neighbours: includes images failing the quality query
        {
            "TailcutsImageCleaner": {
                "picture_threshold_pe": [("type", "*", 6.0)],
                "boundary_threshold_pe": [("type", "*", 3.0)],
                "min_picture_neighbors": [("type", "*", 1)],
            }
        },
        {"ImageProcessor": {"image_cleaner_type": "TimeConstrainedImageCleaner"}},
    ],
    ids=["tailcuts-default", "tailcuts-6-3-1", "time-constrained"],
)
def test_image_processor_equivalence(camera_images, cleaner):
    """Our cleaning + parameters on float32 images reproduce ctapipe's ImageProcessor output."""
    from ctapipe.image import ImageProcessor
    from traitlets.config import Config

    n_default = 0
    for key, cam in camera_images.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            processor = ImageProcessor(subarray=cam.subarray, config=Config(cleaner))
            ctapipe_fitting.FIT_RNG.bit_generator.state = np.random.default_rng(SEED).bit_generator.state
            rows = []
            ct_masks = []
            for tel_id, image, time in zip(cam.tel_ids, cam.images, cam.peak_times, strict=True):
                event = ArrayEventContainer()
                event.dl1.tel[tel_id] = DL1CameraContainer(image=image, peak_time=time)
                processor(event)
                ct_masks.append(event.dl1.tel[tel_id].image_mask)
                rows.append(flat_values(event.dl1.tel[tel_id].parameters))
        expected = {name: np.array([row[name] for row in rows], dtype=np.float64) for name in rows[0]}

        clean = processor.clean
        tel_id = cam.tel_ids[0]
        if "TimeConstrainedImageCleaner" in str(cleaner):
            masks = time_constrained_clean(
                cam.images,
                cam.peak_times,
                cam.geometry.neighbors,
                clean.picture_threshold_pe.tel[tel_id],
                clean.boundary_threshold_pe.tel[tel_id],
                clean.time_limit_core_ns.tel[tel_id],
                clean.time_limit_boundary_ns.tel[tel_id],
                clean.min_picture_neighbors.tel[tel_id],
            )
        else:
            masks = tailcuts_clean(
                cam.images,
                cam.geometry.neighbors,
                clean.picture_threshold_pe.tel[tel_id],
                clean.boundary_threshold_pe.tel[tel_id],
                clean.keep_isolated_pixels.tel[tel_id],
                clean.min_picture_neighbors.tel[tel_id],
            )
        np.testing.assert_array_equal(masks, ct_masks, err_msg=key)
        ours = image_parameters(cam.images, masks, cam.geometry, cam.peak_times, rng=np.random.default_rng(SEED))
        skip = three_point_fits(masks, cam.peak_times, image_quality_mask(cam.images, masks))
        assert_columns_match(ours, expected, key, float32_reference=True, skip_timing=skip)
        assert_three_point_fits(ours, masks, cam.peak_times.astype(np.float64), cam.geometry, skip)
        n_default += (~image_quality_mask(cam.images, masks)).sum()
    if not cleaner:
        assert n_default > 0  # the default-value path was exercised


def test_image_quality_criteria_equal_ctapipe(camera_images):
    cam = camera_images[next(k for k in camera_images if "CHEC" in k)]
    masks = tailcuts_clean(cam.images, cam.geometry.neighbors, 10, 5, False, 2)
    masks[0] = False
    masks[1] = False
    masks[1, 0] = True
    criteria = image_quality_criteria(cam.images, masks)
    query = ImageQualityQuery()
    for event, (image, mask) in enumerate(zip(cam.images, masks, strict=True)):
        expected = query(image=image[mask])
        assert [criteria[name][event] for name, _ in IMAGE_QUALITY_CRITERIA] == list(expected)
    assert (~image_quality_mask(cam.images, masks)).sum() >= 2


def gaussian_geometry(spacing=0.02, half_size=3.0):
    """A fine square-pixel grid in the telescope frame."""
    axis = np.arange(-half_size, half_size + spacing / 2, spacing)
    pix_x, pix_y = (v.ravel() for v in np.meshgrid(axis, axis))
    indptr, indices = neighbors_csr(pix_x, pix_y, "square")
    return ImageGeometry.from_arrays(pix_x, pix_y, np.full(pix_x.size, spacing**2), "square", indptr, indices)


@pytest.mark.parametrize("psi_deg", [35.0, -50.0, 90.0])
def test_hillas_of_gaussian_image(psi_deg):
    """A 2D Gaussian image: length/width are its sigmas, psi its axis angle, kurtosis 3."""
    geometry = gaussian_geometry()
    cog = (0.4, -0.3)
    sigma_long, sigma_trans = 0.3, 0.1
    psi = np.deg2rad(psi_deg)
    dx, dy = geometry.pix_x - cog[0], geometry.pix_y - cog[1]
    longi = dx * np.cos(psi) + dy * np.sin(psi)
    trans = -dx * np.sin(psi) + dy * np.cos(psi)
    image = 1000 * np.exp(-0.5 * ((longi / sigma_long) ** 2 + (trans / sigma_trans) ** 2))
    mask = image > 1e-12
    hillas = hillas_parameters(image, mask, geometry)
    close = dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(hillas["hillas_fov_lon"], cog[0], **close)
    np.testing.assert_allclose(hillas["hillas_fov_lat"], cog[1], **close)
    np.testing.assert_allclose(hillas["hillas_r"], np.hypot(*cog), **close)
    np.testing.assert_allclose(hillas["hillas_phi"], np.rad2deg(np.arctan2(cog[1], cog[0])), **close)
    np.testing.assert_allclose(hillas["hillas_length"], sigma_long, **close)
    np.testing.assert_allclose(hillas["hillas_width"], sigma_trans, **close)
    np.testing.assert_allclose(hillas["hillas_psi"], psi_deg, **close)
    np.testing.assert_allclose(hillas["hillas_skewness"], 0.0, atol=1e-8)
    np.testing.assert_allclose(hillas["hillas_kurtosis"], 3.0, **close)
    np.testing.assert_allclose(hillas["hillas_intensity"], image[mask].sum(), rtol=1e-12)

    # peak time linear along the major axis: the timing fit returns it exactly
    peak_time = 20.0 + 7.5 * longi
    timing = timing_parameters(peak_time, mask, geometry, hillas, rng=np.random.default_rng(0))
    np.testing.assert_allclose(timing["timing_slope"], 7.5, rtol=1e-9)
    np.testing.assert_allclose(timing["timing_intercept"], 20.0, rtol=1e-9)
    np.testing.assert_allclose(timing["timing_deviation"], 0.0, atol=1e-8)


def test_hillas_thin_image_accuracy():
    """Three nearly collinear pixels: width from the direct minor-axis variance, to ~1e-12 relative.

    Reference: the same moments evaluated in exact rational arithmetic (fractions), where the
    minor-axis variance is the smaller root of the covariance matrix.
    """
    from fractions import Fraction

    x = np.array([0.0, 0.1, 0.2])
    y = np.array([0.0, 1e-7, 0.0])
    w = np.array([3.0, 5.0, 2.0])
    geometry = ImageGeometry.from_arrays(
        x, y, np.full(3, 1e-3), "hexagon", np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64)
    )
    hillas = hillas_parameters(w, np.ones(3, dtype=bool), geometry)

    fx, fy, fw = ([Fraction(v) for v in a] for a in (x, y, w))
    size = sum(fw)
    cx = sum(a * b for a, b in zip(fw, fx, strict=True)) / size
    cy = sum(a * b for a, b in zip(fw, fy, strict=True)) / size
    cxx = sum(a * (b - cx) ** 2 for a, b in zip(fw, fx, strict=True)) / size
    cyy = sum(a * (b - cy) ** 2 for a, b in zip(fw, fy, strict=True)) / size
    cxy = sum(a * (b - cx) * (c - cy) for a, b, c in zip(fw, fx, fy, strict=True)) / size
    det, half_trace = cxx * cyy - cxy**2, (cxx + cyy) / 2
    # smaller root = det / larger root, evaluated without cancellation
    lam_minor = det / (float(half_trace) + np.sqrt(float(half_trace**2 - det)))
    np.testing.assert_allclose(hillas["hillas_width"], np.sqrt(float(lam_minor)), rtol=1e-9)
    assert hillas["hillas_width"][0] / hillas["hillas_length"][0] < 1e-5


def test_lts_fit_ignores_outliers():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 200)
    y = 3.0 * x - 2.0
    outliers = rng.choice(200, 20, replace=False)
    y[outliers] += rng.uniform(5, 10, 20)
    (slope, intercept), rss = lts_linear_regression(x, y, samples=5, rng=np.random.default_rng(1))
    np.testing.assert_allclose([slope, intercept], [3.0, -2.0], rtol=1e-10)
    assert rss < 1e-20
    # the same as ctapipe's implementation with the same generator state
    expected, expected_rss = ctapipe_fitting.lts_linear_regression(x, y, samples=5, rng=np.random.default_rng(1))
    np.testing.assert_allclose([slope, intercept], expected, rtol=1e-12)


def test_select_chooses_what_argsort_chooses():
    """The same points as numba's np.argsort (what ctapipe's LTS uses), ties at the cut included."""
    from numba import njit

    numba_argsort = njit(lambda values: np.argsort(values))
    rng = np.random.default_rng(3)
    for n in (2, 3, 10, 57, 300):
        for with_ties in (False, True):
            values = rng.normal(size=n) ** 2
            if with_ties:
                values = np.round(values, 1)
            k = int(0.85 * n)
            kth = np.sort(values)[k - 1]
            expected = np.zeros(n, bool)
            expected[numba_argsort(values)[:k]] = True
            # any bracket of the k-th smallest value: none, exact, loose
            for lower, upper in ((-np.inf, np.inf), (kth, kth), (kth / 2, 2 * kth + 1)):
                selected = rng.random(n) < 0.5  # whatever the last step left
                _select(values, k, False, selected, lower, upper, np.empty(n))
                np.testing.assert_array_equal(selected, expected)
    values = np.array([1.0, np.nan, 0.5, 2.0])
    selected = np.zeros(4, bool)
    _select(values, 3, True, selected, -np.inf, np.inf, np.empty(4))
    np.testing.assert_array_equal(np.flatnonzero(selected), np.sort(numba_argsort(values)[:3]))


def test_kth_smallest_with_repeated_values():
    rng = np.random.default_rng(4)
    for values in (rng.normal(size=41), rng.integers(0, 3, 41).astype(float), np.zeros(41), np.arange(41.0)[::-1]):
        for k in range(1, len(values) + 1):
            work = values.copy()
            assert _kth_smallest(work, k) == np.sort(values)[k - 1]
            assert sorted(work) == sorted(values)  # a permutation


def plain_lts(x, y, rng, samples=5, relative_sample_size=0.85, max_iterations=20, eps=1e-12):
    """The LTS iteration written out plainly (no brackets, no early stop).

    Each sum in index order over 4 interleaved partial sums (point i into lane i % 4, the lanes
    added as (0 + 1) + (2 + 3)): the summation order of iactpipe's kernels.
    """

    def lanes(terms):
        partial = [0.0] * 4
        for i, term in terms:
            partial[i % 4] += term
        return (partial[0] + partial[1]) + (partial[2] + partial[3])

    def line(points):
        sxx = lanes((i, x[i] * x[i]) for i in points)
        sx = lanes((i, x[i]) for i in points)
        sxy = lanes((i, x[i] * y[i]) for i in points)
        sy = lanes((i, y[i]) for i in points)
        k = len(points)
        det = sxx * k - sx * sx
        return ((k * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det) if det >= 2 * EPS else (np.nan, np.nan)

    def rss(points, slope, intercept):
        return lanes((i, (y[i] - (x[i] * slope + intercept)) ** 2) for i in points)

    n = len(x)
    k = int(relative_sample_size * n)
    best = (np.nan, np.nan, np.inf)
    for _ in range(samples):
        first = rng.integers(0, n)
        second = rng.integers(0, n - 1)
        pair = [first, second + (second >= first)]
        sx2 = x[pair[0]] * x[pair[0]] + x[pair[1]] * x[pair[1]]
        det = sx2 * 2 - (x[pair[0]] + x[pair[1]]) ** 2
        if not det >= 2 * EPS:
            continue
        slope, intercept = line(pair)
        error = rss(pair, slope, intercept)
        for _ in range(max_iterations):
            points = sorted(np.argsort((y - (x * slope + intercept)) ** 2)[:k])
            slope, intercept = line(points)
            last, error = error, rss(points, slope, intercept)
            if abs(last - error) < eps:
                break
        if error < best[2]:
            best = (slope, intercept, error)
    return best


@pytest.mark.parametrize("n", [3, 10, 57, 300])
def test_lts_fit_equals_the_plain_iteration(n):
    """Bracketed selection and stopping once the selection repeats change no bit of the result."""
    rng = np.random.default_rng(n)
    for trial in range(10):
        x = rng.normal(size=n)
        y = 1.5 * x + rng.normal(scale=0.2, size=n)
        y[rng.random(n) < 0.2] += rng.uniform(2, 5)
        for max_iterations in (1, 3, 20):
            got = lts_fit(x, y, np.random.default_rng(trial), 5, 0.85, max_iterations, 1e-12)
            expected = plain_lts(x, y, np.random.default_rng(trial), max_iterations=max_iterations)
            np.testing.assert_array_equal(got, expected)


def test_descriptive_statistics_equal_scipy(camera_images):
    cam = next(iter(camera_images.values()))
    values = cam.peak_times.astype(np.float64)
    masks = tailcuts_clean(cam.images, cam.geometry.neighbors, 4, 2, True, 0)
    ours = descriptive_statistics(values, masks, "peak_time")
    for event, mask in enumerate(masks):
        selected = values[event, mask]
        if selected.size == 0:
            assert np.isnan(ours["peak_time_mean"][event])
            continue
        np.testing.assert_allclose(ours["peak_time_mean"][event], selected.mean(), rtol=1e-7)
        np.testing.assert_allclose(ours["peak_time_std"][event], selected.std(), rtol=1e-7)
        np.testing.assert_allclose(ours["peak_time_skewness"][event], stats.skew(selected), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours["peak_time_kurtosis"][event], stats.kurtosis(selected), rtol=1e-9, atol=1e-12)
    assert ours["peak_time_mean"].dtype == np.float32 and ours["peak_time_skewness"].dtype == np.float64
