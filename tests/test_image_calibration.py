"""R0→R1 calibration, gain selection, time shifts and invalid pixels against ctapipe 0.28.

Real sim_telarray waveforms are read once per session with ctapipe's
SimTelEventSource; the calibration values it used (pedestal per sample, dc→p.e.
factor) are captured from its R1 calibration call, the time shifts and outlier
masks come from its monitoring container.  ``camera_events()`` is shared with
test_image_extraction.py.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from unittest import mock

import numpy as np
import pytest
from iactpipe.image.calibration import (
    apply_peak_time_shift,
    calibrate_r1,
    calibrate_selected_samples,
    select_gain_values,
    shift_waveforms,
)
from iactpipe.image.extraction import extract_images
from iactpipe.image.invalid_pixels import (
    flat_waveform_mask,
    interpolate_invalid_pixels,
    zero_invalid_pixels,
)
from iactpipe.instrument.camera import CameraGeometry, CameraReadout

ctapipe_io = pytest.importorskip("ctapipe.io")

#: (file, max_events): LST + NectarCam, LST + FlashCam (HV-disabled pixels), CHEC, dead pixels
FILES = {
    "alpha": ("gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst", None),
    "prod5": ("run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst", None),
    "chec": ("gct_checs_muons.simtel.zst", 8),
    "hv_disabled": ("n_hv_disabled.simtel.gz", None),
}


@dataclass
class CameraEvents:
    """Telescope events of one camera type, stacked over events and telescopes."""

    name: str
    subarray: object
    geometry: CameraGeometry
    readout: CameraReadout
    tel_id: list = field(default_factory=list)
    r0: list = field(default_factory=list)
    r1: list = field(default_factory=list)
    selected_gain: list = field(default_factory=list)
    pedestal: list = field(default_factory=list)
    dc_to_pe: list = field(default_factory=list)
    time_shift: list = field(default_factory=list)
    outlier_mask: list = field(default_factory=list)
    dl1_image: list = field(default_factory=list)
    dl1_peak_time: list = field(default_factory=list)
    dl1_shifted_image: list = field(default_factory=list)
    dl1_shifted_peak_time: list = field(default_factory=list)

    def stack(self):
        for key, value in vars(self).items():
            if isinstance(value, list):
                setattr(self, key, np.stack(value) if key != "tel_id" else np.array(value))
        return self

    def __len__(self):
        return len(self.tel_id)


def _our_camera(camera):
    geom, readout = camera.geometry, camera.readout
    geometry = CameraGeometry(
        name=camera.name,
        pix_id=np.asarray(geom.pix_id),
        pix_x=geom.pix_x.to_value("m"),
        pix_y=geom.pix_y.to_value("m"),
        pix_area=geom.pix_area.to_value("m2"),
        pix_type=geom.pix_type.value,
    )
    ours = CameraReadout(
        name=readout.name,
        sampling_rate_ghz=readout.sampling_rate.to_value("GHz"),
        reference_pulse_shape=np.asarray(readout.reference_pulse_shape),
        reference_pulse_sample_width_ns=readout.reference_pulse_sample_width.to_value("ns"),
        n_channels=readout.n_channels,
        n_pixels=readout.n_pixels,
        n_samples=readout.n_samples,
    )
    return geometry, ours


@lru_cache(maxsize=1)
def camera_events(simtel_dir):
    """Read the test files once: {camera name: CameraEvents} (one source per camera name)."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.io import simteleventsource

    original = simteleventsource.apply_simtel_r1_calibration
    captured = {}

    def capture(r0_waveforms, pedestal, factor, *args, **kwargs):
        captured[id(r0_waveforms)] = (np.array(pedestal), np.array(factor))
        return original(r0_waveforms, pedestal, factor, *args, **kwargs)

    cameras = {}
    with mock.patch.object(simteleventsource, "apply_simtel_r1_calibration", capture):
        for path, max_events in FILES.values():
            source = ctapipe_io.SimTelEventSource(simtel_dir / path, max_events=max_events)
            calibrator = CameraCalibrator(source.subarray)
            shifted = CameraCalibrator(source.subarray, apply_waveform_time_shift=True)
            names_here = set()
            for event in source:
                tel_ids = list(event.r0.tel)
                calibrator(event)
                dl1 = {t: (event.dl1.tel[t].image.copy(), event.dl1.tel[t].peak_time.copy()) for t in tel_ids}
                shifted(event)
                for tel_id in tel_ids:
                    camera = source.subarray.tel[tel_id].camera
                    if camera.name in cameras and camera.name not in names_here:
                        continue  # a camera name read from another file already
                    names_here.add(camera.name)
                    if camera.name not in cameras:
                        geometry, readout = _our_camera(camera)
                        cameras[camera.name] = CameraEvents(camera.name, source.subarray, geometry, readout)
                    store = cameras[camera.name]
                    r0 = event.r0.tel[tel_id].waveform
                    r1 = event.r1.tel[tel_id]
                    coefficients = event.monitoring.tel[tel_id].camera.coefficients
                    pedestal, factor = captured.pop(id(r0))
                    store.tel_id.append(tel_id)
                    store.r0.append(r0)
                    store.r1.append(r1.waveform[0])
                    store.selected_gain.append(r1.selected_gain_channel)
                    store.pedestal.append(pedestal)
                    store.dc_to_pe.append(factor)
                    store.time_shift.append(coefficients.time_shift)
                    store.outlier_mask.append(coefficients.outlier_mask)
                    store.dl1_image.append(dl1[tel_id][0])
                    store.dl1_peak_time.append(dl1[tel_id][1])
                    store.dl1_shifted_image.append(event.dl1.tel[tel_id].image)
                    store.dl1_shifted_peak_time.append(event.dl1.tel[tel_id].peak_time)
                captured.clear()
    return {name: store.stack() for name, store in cameras.items()}


CAMERAS = ["LSTN-design", "MSTx-NectarCam", "LSTCam", "FlashCam", "CHEC", "UNKNOWN-7987PX"]


@pytest.fixture(scope="session")
def cameras(simtel_dir):
    return camera_events(simtel_dir)


@pytest.fixture(params=CAMERAS)
def cam(request, cameras):
    return cameras[request.param]


def test_reference_data_cover_the_cameras(cameras):
    assert set(CAMERAS) <= set(cameras)
    for name in CAMERAS:
        assert len(cameras[name]) > 0
    # the cases that make the comparisons meaningful are really present
    assert (cameras["LSTCam"].selected_gain == 1).sum() > 0, "no low-gain pixels in the LSTCam sample"
    assert cameras["FlashCam"].outlier_mask.any(), "no HV-disabled FlashCam pixels"


def test_r1_from_r0_equals_ctapipe(cam):
    r1, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe)
    assert r1.dtype == np.float32 and selected.dtype == np.int8
    np.testing.assert_array_equal(selected, cam.selected_gain)
    np.testing.assert_array_equal(r1, cam.r1)


def test_r1_with_chunk_constant_calibration(cameras):
    cam = cameras["LSTCam"]
    first = cam.tel_id == cam.tel_id[0]
    r1, selected = calibrate_r1(cam.r0[first], cam.pedestal[first][0], cam.dc_to_pe[first][0])
    np.testing.assert_array_equal(r1, cam.r1[first])
    np.testing.assert_array_equal(selected, cam.selected_gain[first])


def test_selected_samples_give_ctapipe_r1(cameras):
    """The compact DL0's samples (R0 of the selected gain only) calibrate to ctapipe's R1, bit for bit."""
    cam = cameras["LSTCam"]
    first = cam.tel_id == cam.tel_id[0]
    r0, selected = cam.r0[first], cam.selected_gain[first]
    samples = np.take_along_axis(r0, selected[:, None, :, None].astype(np.intp), axis=1)[:, 0]
    r1 = calibrate_selected_samples(samples, selected, cam.pedestal[first][0], cam.dc_to_pe[first][0])
    assert r1.dtype == np.float32
    np.testing.assert_array_equal(r1.view(np.uint32), cam.r1[first].view(np.uint32))
    with pytest.raises(ValueError, match="outside the coefficients' 1 gain channels"):
        calibrate_selected_samples(samples, selected, cam.pedestal[first][0][:1], cam.dc_to_pe[first][0][:1])
    with pytest.raises(ValueError, match="selected_gain_channel must have shape"):
        calibrate_selected_samples(samples, selected[:, :-1], cam.pedestal[first][0], cam.dc_to_pe[first][0])


def test_gain_selection_threshold_and_manual_channel(cameras):
    cam = cameras["LSTCam"]
    high_max = cam.r0[:, 0].max(axis=-1)
    for threshold in (1000.0, 4000.0):
        _, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe, threshold=threshold)
        np.testing.assert_array_equal(selected, (high_max > threshold).astype(np.int8))
    r1_low, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe, channel=1)
    assert (selected == 1).all()
    expected = (cam.r0[:, 1] - cam.pedestal[:, 1, :, None]) * cam.dc_to_pe[:, 1, :, None]
    np.testing.assert_array_equal(r1_low, expected.astype(np.float32))
    # single-gain cameras always select channel 0
    _, selected = calibrate_r1(cameras["FlashCam"].r0, cameras["FlashCam"].pedestal, cameras["FlashCam"].dc_to_pe,
                               threshold=0.0)
    assert (selected == 0).all()


def test_calib_scale_and_shift_as_ctapipe():
    from ctapipe.calib.camera.gainselection import ThresholdGainSelector
    from ctapipe.io.simteleventsource import apply_simtel_r1_calibration

    rng = np.random.default_rng(1)
    r0 = rng.integers(200, 4500, size=(3, 2, 50, 20), dtype=np.uint16)
    pedestal = rng.uniform(250, 350, size=(2, 50)).astype(np.float32)
    factor = rng.uniform(0.005, 0.1, size=(2, 50)).astype(np.float32)
    ours, selected = calibrate_r1(r0, pedestal, factor, calib_scale=0.9, calib_shift=0.25)
    for event in range(3):
        r1, gain = apply_simtel_r1_calibration(r0[event], pedestal, factor, ThresholdGainSelector(), 0.9, 0.25)
        np.testing.assert_array_equal(gain, selected[event])
        np.testing.assert_array_equal(r1[0], ours[event])


def test_calibration_shape_errors():
    r0 = np.zeros((2, 2, 10, 5), dtype=np.uint16)
    with pytest.raises(ValueError, match="pedestal_per_sample must have shape"):
        calibrate_r1(r0, np.zeros((2, 9)), np.ones((2, 10)))
    with pytest.raises(ValueError, match="dc_to_pe must have shape"):
        calibrate_r1(r0, np.zeros((2, 10)), np.ones((3, 2, 10)))
    with pytest.raises(ValueError, match="r0 must have shape"):
        calibrate_r1(r0[0], np.zeros((2, 10)), np.ones((2, 10)))


def test_select_gain_values():
    values = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]], dtype=np.float32)
    selected = np.array([[0, 1, 0], [1, 1, 0]], dtype=np.int8)
    np.testing.assert_array_equal(select_gain_values(values, selected), [[1, 20, 3], [10, 20, 3]])
    flags = np.array([[[True, False, False], [False, False, True]]] * 2)
    np.testing.assert_array_equal(select_gain_values(flags, selected), [[True, False, False], [False, False, False]])


def _ours_dl1(cam, waveform_time_shift=False):
    """Our calibrate → extract → time shift → NeighborAverage chain (ctapipe's CameraCalibrator defaults)."""
    r1, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe)
    broken = select_gain_values(cam.outlier_mask, selected)
    remaining = None
    if waveform_time_shift:
        time_shift = select_gain_values(cam.time_shift, selected)
        r1, remaining = shift_waveforms(r1, time_shift, cam.readout.sampling_rate_ghz)
    image, peak_time = extract_images(
        "NeighborPeakWindowSum", r1, selected, cam.readout, cam.geometry.neighbors, broken_pixels=broken
    )
    if remaining is None:
        apply_peak_time_shift(peak_time, cam.time_shift, selected)
    else:
        peak_time -= remaining
    # ctapipe's CameraCalibrator passes the high-gain row of the outlier mask for gain-selected data
    return interpolate_invalid_pixels(image, peak_time, cam.outlier_mask[:, 0], cam.geometry.neighbors)


def test_full_dl1_chain_equals_ctapipe_camera_calibrator(cam):
    image, peak_time = _ours_dl1(cam)
    np.testing.assert_array_equal(image, cam.dl1_image)
    np.testing.assert_array_equal(peak_time, cam.dl1_peak_time)


def test_waveform_time_shift_equals_ctapipe(cam):
    image, peak_time = _ours_dl1(cam, waveform_time_shift=True)
    np.testing.assert_allclose(image, cam.dl1_shifted_image, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(peak_time, cam.dl1_shifted_peak_time, rtol=1e-6, atol=1e-5)


def test_interpolation_of_hv_disabled_flashcam_pixels(cameras):
    cam = cameras["FlashCam"]
    mask = cam.outlier_mask[:, 0]
    image, peak_time = _ours_dl1(cam)
    # interpolated pixels equal the mean of their unmasked neighbours (independently of ctapipe)
    matrix = cam.geometry.neighbor_matrix
    event, pixel = np.argwhere(mask)[0]
    neighbors = matrix[pixel] & ~mask[event]
    r1, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe)
    raw_image, raw_time = extract_images(
        "NeighborPeakWindowSum", r1, selected, cam.readout, cam.geometry.neighbors,
        broken_pixels=mask,
    )
    assert np.isclose(image[event, pixel], raw_image[event, neighbors].mean(), rtol=1e-6)
    assert not np.isclose(image[event, pixel], raw_image[event, pixel])


def test_neighbor_average_on_dead_pixels_equals_ctapipe(cameras):
    """n_hv_disabled: 409 pixels read out as constant zero, flagged from the data."""
    from ctapipe.image.invalid_pixels import NeighborAverage

    cam = cameras["UNKNOWN-7987PX"]
    mask = flat_waveform_mask(cam.r0)
    assert mask.sum() == 409
    assert (cam.r0[mask[:, None, :].repeat(cam.r0.shape[1], 1)] == 0).all()
    for other in ("LSTCam", "FlashCam", "CHEC", "MSTx-NectarCam"):
        assert not flat_waveform_mask(cameras[other].r0).any()

    r1, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe)
    image, peak_time = extract_images("NeighborPeakWindowSum", r1, selected, cam.readout, cam.geometry.neighbors,
                                      broken_pixels=mask)
    ours_image, ours_time = interpolate_invalid_pixels(image, peak_time, mask, cam.geometry.neighbors)
    handler = NeighborAverage(cam.subarray)
    for event in range(len(cam)):
        expected_image, expected_time = handler(
            cam.tel_id[event], image[event].copy(), peak_time[event].copy(), mask[event][np.newaxis]
        )
        np.testing.assert_array_equal(ours_image[event], expected_image)
        np.testing.assert_array_equal(ours_time[event], expected_time)
    # inputs unchanged, unmasked pixels untouched
    np.testing.assert_array_equal(ours_image[~mask], image[~mask])
    assert not np.array_equal(ours_image[mask], image[mask])


def test_interpolation_without_valid_neighbours_gives_zero():
    # pixels 0-1-2 in a chain, 0 and 1 masked: 0 has only masked neighbours
    indptr = np.array([0, 1, 3, 4])
    indices = np.array([1, 0, 2, 1])
    image = np.array([[5.0, 7.0, 3.0]], dtype=np.float32)
    out, time = interpolate_invalid_pixels(image, None, np.array([True, True, False]), (indptr, indices))
    np.testing.assert_array_equal(out, [[0.0, 3.0, 3.0]])
    assert time is None


def test_zero_invalid_pixels():
    image = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    peak_time = image * 2
    mask = np.array([[False, True, False], [True, False, False]])
    out, time, flags = zero_invalid_pixels(image, peak_time, mask)
    np.testing.assert_array_equal(out, np.where(mask, 0, image))
    np.testing.assert_array_equal(time, np.where(mask, 0, peak_time))
    np.testing.assert_array_equal(flags, mask)
    out, _, flags = zero_invalid_pixels(image, None, mask[:1])
    assert flags.shape == (2, 3) and (out[:, 1] == 0).all() and (out[:, 0] != 0).all()
