"""Image cleaning kernels against ctapipe 0.28 on real sim_telarray images.

The real images (LSTCam, NectarCam, FlashCam, CHEC) are read once per test session with
ctapipe's SimTelEventSource + CameraCalibrator (default NeighborPeakWindowSum); see
`load_camera_images`, which test_image_parameters.py reuses.
"""

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from iactpipe.image import (
    ImageGeometry,
    brightest_island,
    dilate,
    largest_island,
    mars_cleaning_1st_pass,
    number_of_islands,
    tailcuts_clean,
    time_constrained_clean,
)
from iactpipe.instrument import CameraGeometry

ctapipe_cleaning = pytest.importorskip("ctapipe.image.cleaning")
ctapipe_morphology = pytest.importorskip("ctapipe.image.morphology")

# (file, SimTelEventSource options): cameras covered
SIMTEL_INPUTS = (
    # LSTN-design + MSTx-NectarCam (CTAO-North Alpha, simtools 6.0.0)
    ("gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst", {}),
    # LSTCam + FlashCam protons (prod5)
    ("run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst", {}),
    # CHEC: square pixels
    ("gct_checs_muons.simtel.zst", {}),
    # LSTCam muon rings (prod3: only the equivalent focal length is known)
    ("lst_muons.simtel.zst", {"focal_length_choice": "EQUIVALENT"}),
    # LSTCam + NectarCam gamma (prod5)
    ("history_meta_75.simtel.zst", {}),
)


@dataclass
class CameraImages:
    """Calibrated images of one camera type from one file, with its geometry three ways."""

    label: str
    subarray: object  # ctapipe SubarrayDescription
    tel_ids: list
    ctapipe_geometry: object  # ctapipe CameraGeometry, camera frame
    telescope_geometry: object  # ctapipe CameraGeometry in the TelescopeFrame (what ImageProcessor uses)
    geometry: ImageGeometry  # ours, built from iactpipe's CameraGeometry
    images: np.ndarray  # (n_events, n_pixels) float32
    peak_times: np.ndarray  # (n_events, n_pixels) float32


def image_geometry_from_ctapipe(geometry):
    """Our ImageGeometry for a ctapipe camera-frame geometry (neighbours recomputed by iactpipe)."""
    camera = CameraGeometry(
        name=geometry.name,
        pix_id=np.asarray(geometry.pix_id),
        pix_x=geometry.pix_x.to_value("m"),
        pix_y=geometry.pix_y.to_value("m"),
        pix_area=geometry.pix_area.to_value("m2"),
        pix_type=geometry.pix_type.value,
    )
    return ImageGeometry.from_camera(camera, geometry.frame.focal_length.to_value("m"))


@functools.cache
def load_camera_images(simtel_dir):
    """All calibrated telescope images of `SIMTEL_INPUTS`, grouped by (file, camera) (~1-2 s)."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.coordinates import TelescopeFrame
    from ctapipe.io import SimTelEventSource

    cameras = {}
    for name, options in SIMTEL_INPUTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = SimTelEventSource(simtel_dir / name, **options)
            calibrator = CameraCalibrator(subarray=source.subarray)
            collected = {}
            for event in source:
                calibrator(event)
                for tel_id, dl1 in event.dl1.tel.items():
                    camera = source.subarray.tel[tel_id].camera.name
                    entry = collected.setdefault(camera, ([], [], [], tel_id))
                    entry[0].append(dl1.image)
                    entry[1].append(dl1.peak_time)
                    entry[2].append(tel_id)
        for camera, (images, peak_times, tel_ids, first_tel) in collected.items():
            geometry = source.subarray.tel[first_tel].camera.geometry
            cameras[f"{name.split('.')[0][:24]}:{camera}"] = CameraImages(
                label=f"{name}:{camera}",
                subarray=source.subarray,
                tel_ids=tel_ids,
                ctapipe_geometry=geometry,
                telescope_geometry=geometry.transform_to(TelescopeFrame()),
                geometry=image_geometry_from_ctapipe(geometry),
                images=np.asarray(images, dtype=np.float32),
                peak_times=np.asarray(peak_times, dtype=np.float32),
            )
    return cameras


@pytest.fixture(scope="session")
def camera_images(simtel_dir):
    return load_camera_images(simtel_dir)


def test_real_images_cover_the_camera_types(camera_images):
    names = {key.split(":")[1] for key in camera_images}
    assert {"LSTCam", "NectarCam", "FlashCam", "CHEC"} <= names
    assert sum(len(c.images) for c in camera_images.values()) >= 100


# (picture, boundary, keep_isolated_pixels, min_number_picture_neighbors)
TAILCUTS_SETS = [
    (10, 5, False, 2),  # ctapipe's TailcutsImageCleaner defaults
    (7, 5, False, 0),
    (7, 5, True, 0),
    (6, 3, False, 1),
    (6, 3, True, 2),
    (4, 2, False, 3),
    (3, 1.5, True, 1),
]


@pytest.mark.parametrize("thresholds", TAILCUTS_SETS, ids=str)
def test_tailcuts_equals_ctapipe(camera_images, thresholds):
    picture, boundary, keep_isolated, min_neighbors = thresholds
    n_selected = 0
    for key, cam in camera_images.items():
        ours = tailcuts_clean(cam.images, cam.geometry.neighbors, picture, boundary, keep_isolated, min_neighbors)
        expected = np.array(
            [
                ctapipe_cleaning.tailcuts_clean(
                    cam.telescope_geometry, image, picture, boundary, keep_isolated, min_neighbors
                )
                for image in cam.images
            ]
        )
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        n_selected += expected.sum()
    assert n_selected > 100


@pytest.mark.parametrize("thresholds", TAILCUTS_SETS[:4], ids=str)
def test_mars_cleaning_equals_ctapipe(camera_images, thresholds):
    picture, boundary, keep_isolated, min_neighbors = thresholds
    n_added = 0
    for key, cam in camera_images.items():
        ours = mars_cleaning_1st_pass(
            cam.images, cam.geometry.neighbors, picture, boundary, keep_isolated, min_neighbors
        )
        expected = np.array(
            [
                ctapipe_cleaning.mars_cleaning_1st_pass(
                    cam.telescope_geometry, image, picture, boundary, keep_isolated, min_neighbors
                )
                for image in cam.images
            ]
        )
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        tailcuts = tailcuts_clean(cam.images, cam.geometry.neighbors, picture, boundary, keep_isolated, min_neighbors)
        n_added += (expected & ~tailcuts).sum()
    assert n_added > 0  # the third level really adds pixels


# (picture, boundary, time_limit_core, time_limit_boundary, min_number_picture_neighbors)
TIME_CONSTRAINED_SETS = [
    (7, 5, 4.5, 1.5, 1),  # ctapipe's function defaults
    (10, 5, 4.5, 1.5, 2),  # TimeConstrainedImageCleaner defaults
    (6, 3, 2.0, 1.0, 1),
    (4, 2, 1.0, 0.5, 0),
]


@pytest.mark.parametrize("settings", TIME_CONSTRAINED_SETS, ids=str)
def test_time_constrained_equals_ctapipe(camera_images, settings):
    picture, boundary, limit_core, limit_boundary, min_neighbors = settings
    n_selected = 0
    for key, cam in camera_images.items():
        ours = time_constrained_clean(
            cam.images,
            cam.peak_times,
            cam.geometry.neighbors,
            picture,
            boundary,
            limit_core,
            limit_boundary,
            min_neighbors,
        )
        expected = np.array(
            [
                ctapipe_cleaning.time_constrained_clean(
                    cam.telescope_geometry, image, time, picture, boundary, limit_core, limit_boundary, min_neighbors
                )
                for image, time in zip(cam.images, cam.peak_times, strict=True)
            ]
        )
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        n_selected += expected.sum()
    assert n_selected > 100


def test_per_pixel_and_per_event_thresholds(camera_images):
    rng = np.random.default_rng(1)
    for key, cam in camera_images.items():
        n_events, n_pixels = cam.images.shape
        picture = rng.uniform(4, 10, size=n_pixels)
        boundary = 0.5 * picture
        ours = tailcuts_clean(cam.images, cam.geometry.neighbors, picture, boundary, False, 2)
        expected = [
            ctapipe_cleaning.tailcuts_clean(cam.telescope_geometry, im, picture, boundary, False, 2)
            for im in cam.images
        ]
        np.testing.assert_array_equal(ours, expected, err_msg=key)

        picture = rng.uniform(4, 10, size=(n_events, n_pixels))
        ours = mars_cleaning_1st_pass(cam.images, cam.geometry.neighbors, picture, 3.0)
        expected = [
            ctapipe_cleaning.mars_cleaning_1st_pass(cam.telescope_geometry, im, pic, 3.0)
            for im, pic in zip(cam.images, picture, strict=True)
        ]
        np.testing.assert_array_equal(ours, expected, err_msg=key)


def test_thresholds_compare_like_numpy(camera_images):
    """A Python-float threshold is compared in float32 with float32 images, a numpy float64 one in float64."""
    cam = next(iter(camera_images.values()))
    image = np.zeros(cam.geometry.n_pixels, dtype=np.float32)
    indptr, indices = cam.geometry.neighbors
    image[indices[indptr[0] : indptr[1]]] = 2.1  # float32(2.1) < 2.1 in float64
    image[0] = 3.0
    for boundary in (2.1, np.float64(2.1), np.full(cam.geometry.n_pixels, 2.1)):
        ours = tailcuts_clean(image, cam.geometry.neighbors, 3.0, boundary)
        expected = ctapipe_cleaning.tailcuts_clean(cam.telescope_geometry, image, 3.0, boundary)
        np.testing.assert_array_equal(ours, expected)
    assert tailcuts_clean(image, cam.geometry.neighbors, 3.0, 2.1).sum() > 1
    assert tailcuts_clean(image, cam.geometry.neighbors, 3.0, np.float64(2.1)).sum() == 0


def test_nan_pixels_are_never_selected(camera_images):
    """Broken pixels (NaN charge or time) behave as in ctapipe: they fail every comparison."""
    for key, cam in camera_images.items():
        images = cam.images.copy()
        times = cam.peak_times.copy()
        bright = np.argsort(images, axis=1)[:, -5:]
        np.put_along_axis(images, bright[:, :2], np.nan, axis=1)
        np.put_along_axis(times, bright[:, 2:4], np.nan, axis=1)
        ours = tailcuts_clean(images, cam.geometry.neighbors, 6, 3, False, 1)
        expected = [ctapipe_cleaning.tailcuts_clean(cam.telescope_geometry, im, 6, 3, False, 1) for im in images]
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        ours = time_constrained_clean(images, times, cam.geometry.neighbors, 6, 3)
        expected = [
            ctapipe_cleaning.time_constrained_clean(cam.telescope_geometry, im, t, 6, 3)
            for im, t in zip(images, times, strict=True)
        ]
        np.testing.assert_array_equal(ours, expected, err_msg=key)


def test_dilate_equals_ctapipe(camera_images):
    for key, cam in camera_images.items():
        masks = tailcuts_clean(cam.images, cam.geometry.neighbors, 6, 3)
        ours = dilate(dilate(masks, cam.geometry.neighbors), cam.geometry.neighbors)
        expected = [
            ctapipe_cleaning.dilate(cam.telescope_geometry, ctapipe_cleaning.dilate(cam.telescope_geometry, m))
            for m in masks
        ]
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        assert (ours.sum(axis=1) >= masks.sum(axis=1)).all()


def test_touches_equals_dilated_overlap(camera_images):
    """touches(): whether a mask holds or borders a flagged pixel, per event or with one flag row."""
    from iactpipe.image.cleaning import touches

    rng = np.random.default_rng(3)
    seen = set()
    for key, cam in camera_images.items():
        masks = tailcuts_clean(cam.images, cam.geometry.neighbors, 6, 3)
        near = dilate(masks, cam.geometry.neighbors)
        for flagged in (rng.random((1, masks.shape[1])) < 0.005, rng.random(masks.shape) < 0.002):
            expected = (near & flagged).any(axis=1)
            np.testing.assert_array_equal(touches(masks, flagged, cam.geometry.neighbors), expected, err_msg=key)
            seen.update(expected.tolist())
    assert seen == {True, False}


def test_islands_equal_ctapipe(camera_images):
    n_multi = 0
    for key, cam in camera_images.items():
        masks = tailcuts_clean(cam.images, cam.geometry.neighbors, 4, 2, True, 0)
        n_islands, labels = number_of_islands(masks, cam.geometry.neighbors)
        brightest = brightest_island(n_islands, labels, cam.images)
        largest = largest_island(labels)
        for event, mask in enumerate(masks):
            n, expected_labels = ctapipe_morphology.number_of_islands(cam.telescope_geometry, mask)
            assert n_islands[event] == n, key
            np.testing.assert_array_equal(labels[event], expected_labels, err_msg=key)
            np.testing.assert_array_equal(
                brightest[event],
                ctapipe_morphology.brightest_island(n, expected_labels, cam.images[event]),
                err_msg=key,
            )
            np.testing.assert_array_equal(
                largest[event], ctapipe_morphology.largest_island(expected_labels), err_msg=key
            )
        n_multi += (n_islands > 1).sum()
    assert n_multi > 10


def test_single_image_and_errors(camera_images):
    cam = next(iter(camera_images.values()))
    batch = tailcuts_clean(cam.images, cam.geometry.neighbors, 6, 3)
    single = tailcuts_clean(cam.images[0], cam.geometry.neighbors, 6, 3)
    assert single.shape == (cam.geometry.n_pixels,)
    np.testing.assert_array_equal(single, batch[0])
    n, labels = number_of_islands(batch[0], cam.geometry.neighbors)
    assert isinstance(n, int) and labels.shape == single.shape
    with pytest.raises(ValueError, match="picture_thresh must be a scalar or have shape"):
        tailcuts_clean(cam.images, cam.geometry.neighbors, np.ones(3), 3)
    with pytest.raises(ValueError, match="peak_times shape"):
        time_constrained_clean(cam.images, cam.peak_times[:1], cam.geometry.neighbors)
