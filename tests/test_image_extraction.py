"""Charge / peak-time extractors against ctapipe 0.28's ImageExtractors on real waveforms."""

import numpy as np
import pytest
from iactpipe.image.calibration import calibrate_r1, select_gain_values
from iactpipe.image.extraction import (
    EXTRACTORS,
    calibrate_and_extract,
    extract_images,
    fixed_window_sum,
    flashcam_parameters,
    full_waveform_sum,
    integration_correction,
    local_peak_window_sum,
    neighbor_peak_window_sum,
    sliding_window_correction,
    sliding_window_max_sum,
)
from test_image_calibration import CAMERAS, camera_events

pytest.importorskip("ctapipe")

#: (extractor, options); every configuration runs with and without the integration correction
CONFIGS = [
    ("NeighborPeakWindowSum", {}),
    ("NeighborPeakWindowSum", {"window_width": 5, "window_shift": 2, "local_weight": 1}),
    ("NeighborPeakWindowSum", {"window_width": 4, "window_shift": 1, "local_weight": 3}),
    ("LocalPeakWindowSum", {}),
    ("LocalPeakWindowSum", {"window_width": 3, "window_shift": 1}),
    ("GlobalPeakWindowSum", {}),
    ("GlobalPeakWindowSum", {"window_width": 5, "window_shift": 2, "pixel_fraction": 0.05}),
    ("FixedWindowSum", {"peak_index": 12, "window_width": 6, "window_shift": 2}),
    ("FixedWindowSum", {"peak_index": 2, "window_width": 7, "window_shift": 4}),
    ("FullWaveformSum", {}),
    ("SlidingWindowMaxSum", {}),
    ("SlidingWindowMaxSum", {"window_width": 3}),
]


@pytest.fixture(scope="session")
def calibrated(simtel_dir):
    """Per camera: (events, r1, selected gain, broken pixels of the selected gain)."""
    out = {}
    for name, cam in camera_events(simtel_dir).items():
        r1, selected = calibrate_r1(cam.r0, cam.pedestal, cam.dc_to_pe)
        out[name] = (cam, r1, selected, select_gain_values(cam.outlier_mask, selected))
    return out


def _ctapipe_extract(cam, r1, selected, name, options, correct):
    from ctapipe.image.extractor import ImageExtractor

    config = dict(options)
    if name != "FullWaveformSum":
        config["apply_integration_correction"] = correct
    extractor = ImageExtractor.from_name(name, subarray=cam.subarray, **config)
    image = np.empty(r1.shape[:2], dtype=np.float32)
    peak_time = np.empty(r1.shape[:2], dtype=np.float32)
    for event in range(len(cam)):
        dl1 = extractor(r1[event][np.newaxis], cam.tel_id[event], selected[event], cam.outlier_mask[event])
        image[event], peak_time[event] = dl1.image, dl1.peak_time
    return image, peak_time


@pytest.mark.parametrize("correct", [True, False], ids=["corrected", "uncorrected"])
@pytest.mark.parametrize("name,options", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
@pytest.mark.parametrize("camera", CAMERAS)
def test_extractor_equals_ctapipe(calibrated, camera, name, options, correct):
    cam, r1, selected, broken = calibrated[camera]
    ours = extract_images(
        name, r1, selected, cam.readout, cam.geometry.neighbors, broken_pixels=broken,
        apply_integration_correction=correct, **options,
    )
    expected = _ctapipe_extract(cam, r1, selected, name, options, correct)
    for got, want in zip(ours, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


FLASHCAM_CONFIGS = [
    {},
    {"upsampling": 3, "leading_edge_timing": False, "neighbour_sum_clipping": 0.0, "local_weight": 1},
    {"upsampling": 1, "window_width": 3, "window_shift": 1, "effective_time_profile_std": 0.0},
    {"upsampling": 2, "window_width": 5, "neighbour_sum_clipping": 2.0, "leading_edge_rel_descend_limit": 0.2},
]


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
@pytest.mark.parametrize("options", FLASHCAM_CONFIGS, ids=range(len(FLASHCAM_CONFIGS)))
@pytest.mark.parametrize("camera", ["FlashCam", "LSTCam", "MSTx-NectarCam"])
def test_flashcam_extractor_equals_ctapipe(calibrated, camera, options):
    from ctapipe.image.extractor import FlashCamExtractor

    cam, r1, selected, broken = calibrated[camera]
    extractor = FlashCamExtractor(cam.subarray, **options)
    expected = {
        key: np.array(value)
        for key, value in zip(
            ["pole_zero", "gain", "time_shift", "leading_edge_shift"],
            extractor._get_deconvolution_parameters(cam.tel_id[0]),
            strict=True,
        )
    }
    parameter_options = {k: v for k, v in options.items() if k not in ("neighbour_sum_clipping", "local_weight")}
    parameters = flashcam_parameters(
        cam.readout.reference_pulse_shape, cam.readout.reference_pulse_sample_width_ns,
        cam.readout.sampling_rate_ghz, **parameter_options,
    )
    for key in ("pole_zero", "gain", "time_shift"):
        np.testing.assert_array_equal(parameters[key], expected[key])
    if options.get("leading_edge_timing", True):
        np.testing.assert_array_equal(parameters["leading_edge_shift"], expected["leading_edge_shift"])

    image, peak_time = extract_images(
        "FlashCamExtractor", r1, selected, cam.readout, cam.geometry.neighbors, broken_pixels=broken, **options
    )
    for event in range(len(cam)):
        dl1 = extractor(r1[event][np.newaxis], cam.tel_id[event], selected[event], cam.outlier_mask[event])
        np.testing.assert_array_equal(image[event], dl1.image)
        np.testing.assert_array_equal(peak_time[event], dl1.peak_time)


@pytest.mark.parametrize("camera", CAMERAS)
def test_integration_corrections_equal_ctapipe(calibrated, camera):
    from ctapipe.image.extractor import SlidingWindowMaxSum
    from ctapipe.image.extractor import integration_correction as ctapipe_correction

    cam = calibrated[camera][0]
    readout = cam.subarray.tel[cam.tel_id[0]].camera.readout
    for width, shift in [(7, 3), (5, 2), (3, 0), (12, 6), (200, 100)]:
        expected = ctapipe_correction(
            readout.reference_pulse_shape, readout.reference_pulse_sample_width.to_value("ns"),
            (1 / readout.sampling_rate).to_value("ns"), width, shift,
        )
        ours = integration_correction(
            cam.readout.reference_pulse_shape, cam.readout.reference_pulse_sample_width_ns,
            cam.readout.sampling_rate_ghz, width, shift,
        )
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
        if width == 200:  # the window holds the whole pulse
            np.testing.assert_allclose(ours, 1.0, rtol=1e-9)
            continue
        ctapipe_sliding = SlidingWindowMaxSum(cam.subarray, window_width=width)._calculate_correction(cam.tel_id[0])
        ours_sliding = sliding_window_correction(
            cam.readout.reference_pulse_shape, cam.readout.reference_pulse_sample_width_ns,
            cam.readout.sampling_rate_ghz, width,
        )
        np.testing.assert_allclose(ours_sliding, ctapipe_sliding, rtol=1e-12)


@pytest.mark.parametrize("camera", ["LSTCam", "FlashCam", "CHEC"])
def test_fused_calibrate_and_extract_equals_two_steps(calibrated, camera):
    cam, r1, selected, broken = calibrated[camera]
    correction = integration_correction(
        cam.readout.reference_pulse_shape, cam.readout.reference_pulse_sample_width_ns,
        cam.readout.sampling_rate_ghz, 5, 2,
    )
    image, peak_time, gain, fused_r1 = calibrate_and_extract(
        cam.r0, cam.pedestal, cam.dc_to_pe, cam.geometry.neighbors, cam.readout.sampling_rate_ghz, correction,
        window_width=5, window_shift=2, local_weight=1, unusable=cam.outlier_mask, return_r1=True,
    )
    expected = neighbor_peak_window_sum(
        r1, selected, cam.geometry.neighbors, cam.readout.sampling_rate_ghz, correction, 5, 2, 1, broken
    )
    np.testing.assert_array_equal(gain, selected)
    np.testing.assert_array_equal(fused_r1, r1)
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(peak_time, expected[1])
    # chunk-constant coefficients, no R1 returned
    first = cam.tel_id == cam.tel_id[0]
    out = calibrate_and_extract(
        cam.r0[first], cam.pedestal[first][0], cam.dc_to_pe[first][0], cam.geometry.neighbors,
        cam.readout.sampling_rate_ghz, correction, 5, 2, 1, unusable=cam.outlier_mask[first][0],
    )
    assert len(out) == 3
    np.testing.assert_array_equal(out[0], expected[0][first])


@pytest.mark.parametrize("camera", ["LSTCam", "FlashCam", "CHEC"])
def test_compact_samples_extract_as_their_r1(calibrated, camera):
    """neighbor_peak_window_sum_selected (calibration in the extractor's loop) gives, bit for bit,
    calibrate_selected_samples followed by neighbor_peak_window_sum: fast and exact neighbour paths,
    per-event and fixed broken pixels, and coefficients large enough to overflow float32."""
    from iactpipe.image.calibration import calibrate_selected_samples
    from iactpipe.image.extraction import neighbor_peak_window_sum_selected
    from iactpipe.io.dl0 import selected_gain_samples

    cam, _, selected, broken = calibrated[camera]
    first = cam.tel_id == cam.tel_id[0]
    selected, broken = selected[first], broken[first]
    samples = selected_gain_samples(cam.r0[first], selected)
    pedestal, dc_to_pe = cam.pedestal[first][0], cam.dc_to_pe[first][0]
    correction = np.array([1.25, 2.5])
    huge = dc_to_pe * np.float32(3e34)
    varying = broken | (np.random.default_rng(4).random(broken.shape) < 0.03)  # other pixels in each event
    cases = [(pedestal, dc_to_pe, 7, 3, 0, varying), (pedestal, dc_to_pe, 5, 2, 1, broken[0]),
             (pedestal, dc_to_pe, 4, 1, -1, None), (pedestal, huge, 7, 3, 3, broken)]
    for ped, factor, width, shift, weight, bad in cases:
        r1 = calibrate_selected_samples(samples, selected, ped, factor)
        expected = neighbor_peak_window_sum(r1, selected, cam.geometry.neighbors, cam.readout.sampling_rate_ghz,
                                            correction, width, shift, weight, bad)
        got = neighbor_peak_window_sum_selected(samples, selected, ped, factor, cam.geometry.neighbors,
                                                cam.readout.sampling_rate_ghz, correction, width, shift, weight, bad)
        for ours, ref in zip(got, expected, strict=True):
            np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
    if pedestal.shape[0] == 2:  # each pixel's own gain: its coefficients and its correction
        assert (selected == 1).any()
        args = (pedestal, dc_to_pe, cam.geometry.neighbors, 1.0, correction)
        assert not np.array_equal(neighbor_peak_window_sum_selected(samples, selected, *args)[0],
                                  neighbor_peak_window_sum_selected(samples, np.zeros_like(selected), *args)[0])
        with pytest.raises(ValueError, match="no integration correction for gain channel 1"):
            neighbor_peak_window_sum_selected(samples, selected, *args[:-1], correction[:1])


def test_correction_is_applied_per_selected_gain(calibrated):
    cam, r1, selected, broken = calibrated["LSTCam"]
    assert (selected == 1).any()
    correction = np.array([1.5, 3.0])
    image, _ = neighbor_peak_window_sum(r1, selected, cam.geometry.neighbors, 1.0, correction, broken_pixels=broken)
    raw, _ = neighbor_peak_window_sum(r1, selected, cam.geometry.neighbors, 1.0, None, broken_pixels=broken)
    np.testing.assert_allclose(image, raw * correction[selected], rtol=1e-6)


def test_unit_pulse_integrates_to_one_with_correction(calibrated):
    """A noise-free 1 p.e. pulse (samples summing to 1) extracts to 1 p.e. after correction."""
    readout = calibrated["LSTCam"][0].readout
    step = 1 / readout.sampling_rate_ghz / readout.reference_pulse_sample_width_ns
    assert step == int(step)
    for channel, pulse in enumerate(readout.reference_pulse_shape):
        n_bins = len(pulse) // int(step)
        sampled = pulse[: n_bins * int(step)].reshape(n_bins, int(step)).mean(axis=1)
        sampled /= sampled.sum()
        waveform = np.zeros((1, 1, n_bins + 10), dtype=np.float32)
        waveform[0, 0, 5:5 + n_bins] = sampled
        for width, shift in [(7, 3), (4, 1), (3, 0)]:
            correction = integration_correction(
                readout.reference_pulse_shape, readout.reference_pulse_sample_width_ns,
                readout.sampling_rate_ghz, width, shift,
            )
            image, peak_time = local_peak_window_sum(
                waveform, np.array([[channel]]), readout.sampling_rate_ghz, correction, width, shift
            )
            assert image[0, 0] == pytest.approx(1.0, rel=1e-3)
            peak = 5 + np.argmax(sampled)
            assert peak - 1 <= peak_time[0, 0] * readout.sampling_rate_ghz <= peak + 1


def test_window_sum_analytic():
    waveforms = np.zeros((2, 3, 10), dtype=np.float32)
    waveforms[0, 0, 4:7] = [1.0, 2.0, 1.0]  # symmetric pulse around sample 5
    waveforms[0, 1, :] = -1.0  # no positive sample: time falls back to the peak index
    waveforms[1, 2, 8:] = 3.0  # window clipped at the end of the readout
    image, peak_time = fixed_window_sum(waveforms, None, 2.0, peak_index=5, window_width=5, window_shift=2)
    np.testing.assert_array_equal(image[0], [4.0, -5.0, 0.0])
    np.testing.assert_allclose(peak_time[0], [5 / 2.0, 5 / 2.0, 5 / 2.0])
    image, peak_time = fixed_window_sum(waveforms, None, 2.0, peak_index=8, window_width=7, window_shift=1)
    assert image[1, 2] == 6.0 and peak_time[1, 2] == pytest.approx(8.5 / 2.0)
    image, peak_time = full_waveform_sum(waveforms, None, 1.0)
    np.testing.assert_array_equal(image[:, 0], [4.0, 0.0])
    assert peak_time[0, 0] == 5.0 and peak_time[1, 0] == 0.0


def test_float64_waveforms_give_float32_results(calibrated):
    cam, r1, selected, broken = calibrated["CHEC"]
    image32, time32 = neighbor_peak_window_sum(r1, selected, cam.geometry.neighbors, 1.0)
    image64, time64 = neighbor_peak_window_sum(r1.astype(np.float64), selected, cam.geometry.neighbors, 1.0)
    assert image64.dtype == np.float32 and time64.dtype == np.float32
    np.testing.assert_array_equal(image64, image32)
    np.testing.assert_array_equal(time64, time32)


def test_extractor_errors(calibrated):
    cam, r1, selected, _ = calibrated["CHEC"]
    with pytest.raises(ValueError, match="unknown image extractor 'Foo'"):
        extract_images("Foo", r1, selected, cam.readout)
    with pytest.raises(ValueError, match="has no option.*window_shift"):
        extract_images("SlidingWindowMaxSum", r1, selected, cam.readout, window_shift=2)
    with pytest.raises(ValueError, match="needs the camera's pixel neighbours"):
        extract_images("NeighborPeakWindowSum", r1, selected, cam.readout)
    with pytest.raises(ValueError, match="neighbours are for"):
        neighbor_peak_window_sum(r1[:, :10], selected[:, :10], cam.geometry.neighbors, 1.0)
    with pytest.raises(ValueError, match="broken_pixels must have shape"):
        extract_images("GlobalPeakWindowSum", r1, selected, cam.readout, broken_pixels=np.zeros((3, 5), bool))
    with pytest.raises(ValueError, match="upsampling must be > 0"):
        flashcam_parameters(cam.readout.reference_pulse_shape, 0.1, 0.25, upsampling=0)
    with pytest.raises(ValueError, match="must be finer than the camera"):
        flashcam_parameters(cam.readout.reference_pulse_shape, 5.0, 1.0)
    assert set(EXTRACTORS) >= {"NeighborPeakWindowSum", "LocalPeakWindowSum", "GlobalPeakWindowSum",
                               "FixedWindowSum", "FullWaveformSum", "FlashCamExtractor"}


# --------------------------------------------------------------------------- exactness of the fast paths


def _ctapipe_neighbor_peak(waveforms, neighbors, local_weight, broken, width, shift, rate):
    """ctapipe's NeighborPeakWindowSum kernels (no integration correction), event by event."""
    from ctapipe.image.extractor import extract_around_peak, neighbor_average_maximum

    indptr, indices = neighbors
    image = np.empty(waveforms.shape[:2], dtype=np.float32)
    peak_time = np.empty(waveforms.shape[:2], dtype=np.float32)
    for event, wf in enumerate(waveforms):
        mask = broken[event if len(broken) > 1 else 0][np.newaxis]
        peak = neighbor_average_maximum(wf[np.newaxis], indices, indptr, local_weight, mask)
        image[event], peak_time[event] = extract_around_peak(wf[np.newaxis], peak, width, shift, rate)
    return image, peak_time


def _hard_waveforms(rng, n_pixels, n_samples):
    """Waveforms full of exact and near ties, extreme magnitudes, NaN and inf (one kind per event)."""
    shape = (n_pixels, n_samples)
    ties = rng.integers(0, 4, shape).astype(np.float32)
    # 4 or 5 plus multiples of 2**-21 (exact in float32): the float32 sums of 6 neighbours (about 27)
    # round them away and tie where float64 sums would not
    near_ties = (4 + rng.integers(0, 2, shape) + rng.integers(0, 4, shape) * 2.0**-21).astype(np.float32)
    wide = (rng.normal(size=shape) * 10.0 ** rng.uniform(-30, 30, (n_pixels, 1))).astype(np.float32)
    wide[rng.random(shape) < 0.05] = -0.0
    huge = (rng.choice([-1, 1], shape) * rng.uniform(1e36, 3e38, shape)).astype(np.float32)  # sums overflow
    tiny = (rng.integers(-3, 4, shape) * np.float32(1e-45)).astype(np.float32)  # subnormals
    special = rng.normal(size=shape).astype(np.float32)
    for value, fraction in ((np.nan, 0.01), (np.inf, 0.01), (-np.inf, 0.01)):
        special[rng.random(shape) < fraction] = value
    flat = np.zeros(shape, dtype=np.float32)
    flat[::7] = 5.0
    very_negative = -np.abs(huge)
    return np.stack([ties, near_ties, wide, huge, tiny, special, flat, very_negative])


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
@pytest.mark.parametrize("local_weight", [0, 1, 3, -2])
def test_neighbor_peak_exact_on_hard_waveforms(calibrated, local_weight):
    """Bit-identical to ctapipe at exact and near ties, on overflow, NaN, inf, ±0, subnormals, broken pixels.

    ctapipe sums float32 waveforms in float32 (numba types ``float32_array *
    int`` as float32), neighbour by neighbour; the near-tie event shows that
    float64 sums would pick other peaks, so the test tells the two apart.
    """
    geometry = calibrated["LSTCam"][0].geometry
    rng = np.random.default_rng(local_weight + 10)
    for n_samples in (40, 25):
        waveforms = _hard_waveforms(rng, geometry.n_pixels, n_samples)
        broken = rng.random((len(waveforms), geometry.n_pixels)) < 0.03
        for mask in (np.zeros((1, geometry.n_pixels), bool), broken):
            ours = neighbor_peak_window_sum(waveforms, None, geometry.neighbors, 1.3, None, 5, 2, local_weight, mask)
            expected = _ctapipe_neighbor_peak(waveforms, geometry.neighbors, local_weight, mask, 5, 2, 1.3)
            for got, want in zip(ours, expected, strict=True):
                np.testing.assert_array_equal(got, want)

    indptr, indices = geometry.neighbors
    near_ties = waveforms[1]
    in_float64 = near_ties.astype(np.float64) * local_weight
    for pixel in range(geometry.n_pixels):
        in_float64[pixel] += near_ties[indices[indptr[pixel]:indptr[pixel + 1]]].astype(np.float64).sum(axis=0)
    peaks64 = in_float64.argmax(axis=-1)
    _, time = _ctapipe_neighbor_peak(near_ties[np.newaxis], geometry.neighbors, local_weight, mask[:1], 1, 0, 1.0)
    assert (time[0] != peaks64).any()


@pytest.mark.parametrize("n_samples", [1, 16, 17, 40, 64, 65, 128, 129, 200])
def test_calibrate_and_extract_exact_for_every_row_length(calibrated, n_samples):
    """Every vector count of the neighbour sums (unrolled up to 8 vectors, a loop beyond) equals ctapipe.

    Integer R0 with plain coefficients: the fused kernel skips the finiteness checks, and with
    ``local_weight`` 0 it does not read a pixel's own samples.  Small ADC counts make ties.
    """
    geometry = calibrated["LSTCam"][0].geometry
    rng = np.random.default_rng(n_samples)
    r0 = rng.integers(0, 4, (3, 2, geometry.n_pixels, n_samples)).astype(np.uint16)
    r0[0, 0, ::5, rng.integers(0, n_samples)] = 4001  # some pixels switch to low gain
    pedestal = np.full((2, geometry.n_pixels), 1.0, np.float32)
    dc_to_pe = np.ones((2, geometry.n_pixels), np.float32)
    broken = np.zeros((1, geometry.n_pixels), bool)
    for local_weight in (0, 1):
        image, peak_time, _, r1 = calibrate_and_extract(
            r0, pedestal, dc_to_pe, geometry.neighbors, 1.0, None, 5, 2, local_weight, return_r1=True
        )
        expected = _ctapipe_neighbor_peak(r1, geometry.neighbors, local_weight, broken, 5, 2, 1.0)
        np.testing.assert_array_equal(image, expected[0])
        np.testing.assert_array_equal(peak_time, expected[1])


def test_neighbor_peak_exact_paths_equal_ctapipe(calibrated):
    """Inputs outside the fast path (float64, >6 neighbours, long waveforms, huge weights) stay exact."""
    geometry = calibrated["FlashCam"][0].geometry
    rng = np.random.default_rng(3)
    n_pixels = geometry.n_pixels
    waveforms = (rng.integers(0, 3, (3, n_pixels, 40)) + rng.integers(0, 8, (3, n_pixels, 40)) * 2.0**-21)
    waveforms = waveforms.astype(np.float32)
    broken = np.zeros((1, n_pixels), bool)
    broken[0, ::11] = True
    indptr, indices = geometry.neighbors
    # pixel 0 gets every pixel of the camera as neighbour
    counts = np.diff(indptr)
    many = (np.concatenate([[0], np.cumsum(np.r_[n_pixels, counts[1:]])]),
            np.concatenate([np.arange(n_pixels), indices[indptr[1]:]]))
    cases = [
        (waveforms.astype(np.float64), geometry.neighbors, 1),
        (waveforms, many, 0),
        (np.tile(waveforms[:1], (1, 1, 13)), geometry.neighbors, 0),  # 520 samples
        (waveforms, geometry.neighbors, 2**24 + 1),
        (waveforms, geometry.neighbors, -1),
    ]
    for wf, neighbors, weight in cases:
        ours = neighbor_peak_window_sum(wf, None, neighbors, 0.25, None, 7, 3, weight, broken)
        expected = _ctapipe_neighbor_peak(wf, neighbors, weight, broken, 7, 3, 0.25)
        for got, want in zip(ours, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_fast_path_decides_all_real_pixels(calibrated):
    """Guard against a silently unused fast path: real (NaN-free) waveforms need no exact-path pixel."""
    from iactpipe.image.extraction import _fast_neighbor_peaks, _neighbors, _scratch

    cam, r1, _, _ = calibrated["LSTCam"]
    n_pixels, n_samples = r1.shape[1:]
    _, _, table = _neighbors(cam.geometry.neighbors, n_pixels)
    buf, _, peaks, todo = _scratch(n_pixels, n_samples, table)
    for wf in r1:
        buf[:n_pixels, :n_samples] = wf
        for check in (True, False):
            assert _fast_neighbor_peaks(buf, n_samples, table, 0, check, peaks, todo, wf) == 0


def test_calibrate_and_extract_exact_on_integer_waveforms(calibrated):
    """Integer R1 samples (exact ties everywhere) through the fused kernel equal ctapipe's kernels."""
    geometry = calibrated["LSTCam"][0].geometry
    rng = np.random.default_rng(5)
    n_pixels = geometry.n_pixels
    r0 = rng.integers(400, 404, (4, 2, n_pixels, 30)).astype(np.uint16)
    pedestal = np.full((2, n_pixels), 400.0, np.float32)
    dc_to_pe = np.ones((2, n_pixels), np.float32)
    unusable = rng.random((4, 2, n_pixels)) < 0.02
    image, peak_time, selected, r1 = calibrate_and_extract(
        r0, pedestal, dc_to_pe, geometry.neighbors, 1.0, None, 7, 3, 1, unusable=unusable, return_r1=True,
    )
    np.testing.assert_array_equal(selected, 0)
    np.testing.assert_array_equal(r1, r0[:, 0] - np.float32(400))
    expected = _ctapipe_neighbor_peak(r1, geometry.neighbors, 1, unusable[:, 0], 7, 3, 1.0)
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(peak_time, expected[1])


def test_threads_give_identical_results(calibrated):
    cam, r1, selected, broken = calibrated["LSTCam"]
    serial = neighbor_peak_window_sum(r1, selected, cam.geometry.neighbors, 1.0, None, broken_pixels=broken)
    threaded = neighbor_peak_window_sum(
        r1, selected, cam.geometry.neighbors, 1.0, None, broken_pixels=broken, n_threads=2
    )
    for got, want in zip(threaded, serial, strict=True):
        np.testing.assert_array_equal(got, want)
    fused = calibrate_and_extract(cam.r0, cam.pedestal, cam.dc_to_pe, cam.geometry.neighbors, 1.0, n_threads=3)
    fused_serial = calibrate_and_extract(cam.r0, cam.pedestal, cam.dc_to_pe, cam.geometry.neighbors, 1.0)
    for got, want in zip(fused, fused_serial, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_local_peak_argmax_edge_cases():
    """numpy's argmax semantics: first maximum, ±0 equal, the first NaN wins, -inf rows."""
    from ctapipe.image.extractor import extract_around_peak

    rows = np.array([
        [1.0, 3.0, 3.0, 2.0, 0.0, 0.0],
        [-0.0, 0.0, -1.0, -0.0, -2.0, -3.0],
        [0.0, -0.0, -1.0, 0.0, -2.0, -3.0],
        [1.0, np.nan, 5.0, np.nan, 0.0, 0.0],
        [np.nan, 1.0, 5.0, 0.0, 0.0, 0.0],
        [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
        [-5.0, -4.0, -3.0, -2.0, -1.0, -1.0],
        [np.inf, 1.0, np.inf, 0.0, 0.0, 0.0],
    ])
    for dtype in (np.float32, np.float64):
        waveforms = rows.astype(dtype)[np.newaxis]
        image, peak_time = local_peak_window_sum(waveforms, None, 2.0, None, 3, 1)
        peak = waveforms.argmax(axis=-1).astype(np.int64)
        expected = extract_around_peak(waveforms, peak, 3, 1, 2.0)
        np.testing.assert_array_equal(image, expected[0])
        np.testing.assert_array_equal(peak_time, expected[1])


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
def test_calibrate_and_extract_exact_with_extreme_coefficients(calibrated):
    """NaN pedestals and huge dc→p.e. factors (±inf R1 samples, NaN sums): the fused kernel still equals ctapipe."""
    cam = calibrated["LSTCam"][0]
    geometry = cam.geometry
    r0 = cam.r0[:2]
    pedestal = cam.pedestal[0].copy()
    dc_to_pe = cam.dc_to_pe[0].copy()
    pedestal[:, ::97] = np.nan
    dc_to_pe[:, ::5] = 1e34
    dc_to_pe[:, 1::7] = 3e38
    dc_to_pe[:, 2::7] = -3e38
    image, peak_time, selected, r1 = calibrate_and_extract(
        r0, pedestal, dc_to_pe, geometry.neighbors, 1.0, None, 5, 2, 1, return_r1=True
    )
    expected_r1, expected_selected = calibrate_r1(r0, pedestal, dc_to_pe)
    np.testing.assert_array_equal(r1, expected_r1)
    np.testing.assert_array_equal(selected, expected_selected)
    expected = _ctapipe_neighbor_peak(r1, geometry.neighbors, 1, np.zeros((1, geometry.n_pixels), bool), 5, 2, 1.0)
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(peak_time, expected[1])


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:overflow encountered")
def test_window_extractors_exact_on_hard_waveforms():
    """Local/Global(all pixels)/Fixed/SlidingWindowMaxSum kernels equal ctapipe's on ties, overflow, NaN, inf."""
    from ctapipe.image.extractor import extract_around_peak, extract_sliding_window

    rng = np.random.default_rng(7)
    waveforms = _hard_waveforms(rng, 300, 40)
    broken = rng.random((len(waveforms), 300)) < 0.05
    results = {
        "local": (
            local_peak_window_sum(waveforms, None, 1.5, None, 5, 2),
            extract_around_peak(waveforms, waveforms.argmax(axis=-1).astype(np.int64), 5, 2, 1.5),
        ),
        "fixed": (
            fixed_window_sum(waveforms, None, 1.5, None, 38, 5, 2),
            extract_around_peak(waveforms, np.full(waveforms.shape[:2], 38), 5, 2, 1.5),
        ),
        "sliding": (
            sliding_window_max_sum(waveforms, None, 1.5, None, 4), extract_sliding_window(waveforms, 4, 1.5)
        ),
    }
    with np.errstate(all="ignore"):
        peak = waveforms.mean(axis=-2, where=~broken[..., np.newaxis]).argmax(axis=-1)
    results["global"] = (
        extract_images("GlobalPeakWindowSum", waveforms, None, _Readout(1.5), broken_pixels=broken,
                       apply_integration_correction=False, window_width=5, window_shift=2),
        extract_around_peak(waveforms, peak[:, np.newaxis], 5, 2, 1.5),
    )
    for name, (ours, expected) in results.items():
        for got, want in zip(ours, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)



@pytest.mark.parametrize("n_samples", [5, 8, 9, 16, 25, 40, 48, 64])
def test_window_sums_equal_ctapipe_for_every_window_position(n_samples):
    """Blocks of 8 pixels whose windows all lie inside the row take transposed vector loads, the others
    per-sample loads: both equal ctapipe's extract_around_peak for peaks at every sample, any width/shift."""
    from ctapipe.image.extractor import extract_around_peak

    rng = np.random.default_rng(n_samples)
    n_pixels = 203  # not a multiple of 8: the last pixels take the scalar loop
    waveforms = rng.normal(0, 3, (4, n_pixels, n_samples)).astype(np.float32)
    waveforms[..., rng.integers(0, n_samples, 50)] *= -1
    waveforms[0, :5, 0] = -0.0
    peaks = rng.integers(0, n_samples, (4, n_pixels))
    peaks[1] = np.arange(n_pixels) % n_samples  # every position, in mixed blocks
    peaks[2, :64] = 0  # whole blocks at the row's start ...
    peaks[2, 64:128] = n_samples - 1  # ... and end
    peaks[3] = n_samples // 2  # whole blocks inside
    np.put_along_axis(waveforms, peaks[..., None], np.float32(1000.0), axis=-1)  # the peak is each row's maximum
    for width, shift in ((7, 3), (1, 0), (8, 4), (5, 0), (3, 5), (9, 4), (8, 0)):
        ours = local_peak_window_sum(waveforms, None, 1.5, None, width, shift)
        expected = extract_around_peak(waveforms, peaks, width, shift, 1.5)
        for got, want in zip(ours, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"width {width} shift {shift}")
    # rows whose samples are not contiguous (every other sample of a wider array) take the per-sample loads
    from iactpipe.image.extraction import _window_sums

    wide = np.repeat(waveforms[1], 2, axis=-1)
    wide[:, 1::2] = -7.0
    image, peak_time = np.empty(n_pixels, np.float32), np.empty(n_pixels, np.float32)
    _window_sums(wide[:, ::2], n_samples, peaks[1].astype(np.int64), 7, 3, 1.5, np.ones(2), np.zeros(n_pixels, np.int8),
                 image, peak_time)
    expected = extract_around_peak(waveforms[1], peaks[1], 7, 3, 1.5)
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(peak_time, expected[1])


class _Readout:
    """The part of a CameraReadout the extractors read, for synthetic tests."""

    def __init__(self, sampling_rate_ghz):
        self.sampling_rate_ghz = sampling_rate_ghz


# --------------------------------------------------------------------------- TwoPass, baseline-subtracted, variance

NEW_EXTRACTORS = [
    ("TwoPassWindowSum", {}),
    ("TwoPassWindowSum", {"core_threshold": 3.0}),
    ("TwoPassWindowSum", {"disable_second_pass": True}),
    ("BaselineSubtractedNeighborPeakWindowSum", {}),
    ("BaselineSubtractedNeighborPeakWindowSum", {"baseline_start": 2, "baseline_end": 7, "local_weight": 1}),
    ("VarianceExtractor", {}),
]


def _ctapipe_type_options(cam, name, options):
    """ctapipe's per-type TwoPassWindowSum core threshold where the options leave it to the type."""
    from iactpipe.image.extraction import two_pass_core_threshold

    if name != "TwoPassWindowSum" or "core_threshold" in options:
        return options
    tel_type = str(cam.subarray.tel[cam.tel_id[0]])
    return {**options, "core_threshold": two_pass_core_threshold(tel_type)}


@pytest.mark.filterwarnings("ignore:TelescopeParameter type argument")
@pytest.mark.parametrize("correct", [True, False], ids=["corrected", "uncorrected"])
@pytest.mark.parametrize("name,options", NEW_EXTRACTORS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEW_EXTRACTORS)])
@pytest.mark.parametrize("camera", CAMERAS)
def test_new_extractors_equal_ctapipe(calibrated, camera, name, options, correct):
    """Same charges, peak times and validity as ctapipe, the time fits drawing from the same generator state."""
    from ctapipe.fitting import FIT_RNG
    from ctapipe.image.extractor import ImageExtractor

    cam, r1, selected, broken = calibrated[camera]
    ours_options = _ctapipe_type_options(cam, name, options)
    correction = {} if name == "VarianceExtractor" else {"apply_integration_correction": correct}
    image, peak_time, is_valid = extract_images(
        name, r1, selected, cam.readout, cam.geometry.neighbors, broken_pixels=broken, camera_geometry=cam.geometry,
        rng=np.random.default_rng(0), return_valid=True, apply_integration_correction=correct, **ours_options,
    )
    FIT_RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    extractor = ImageExtractor.from_name(name, subarray=cam.subarray, **options, **correction)
    if name == "TwoPassWindowSum" and "core_threshold" not in options:
        assert extractor.core_threshold.tel[cam.tel_id[0]] == ours_options["core_threshold"]
    for event in range(len(cam)):
        dl1 = extractor(r1[event][np.newaxis], cam.tel_id[event], selected[event], cam.outlier_mask[event])
        np.testing.assert_array_equal(image[event], np.squeeze(dl1.image), err_msg=f"event {event}")
        assert image.dtype == np.float32 and peak_time.dtype == np.float32
        if name == "VarianceExtractor":
            assert dl1.peak_time is None and np.isnan(peak_time[event]).all()
        else:
            np.testing.assert_array_equal(peak_time[event], dl1.peak_time)
            assert is_valid[event] == dl1.is_valid


def test_two_pass_second_pass_changes_dim_pixels_only(calibrated):
    """Core pixels of the main island keep the first pass; the others are integrated again."""
    from iactpipe.image.extraction import two_pass_window_sum

    cam, r1, selected, _ = calibrated["LSTCam"]
    args = (r1, selected, cam.geometry.neighbors, cam.readout.sampling_rate_ghz, cam.geometry)
    first, first_time, _ = two_pass_window_sum(*args, disable_second_pass=True)
    second, second_time, valid = two_pass_window_sum(*args, rng=np.random.default_rng(1))
    assert valid.any()
    core = (first >= 6.0) & (second == first) & (second_time == first_time)
    changed = second != first
    assert changed[valid].any() and core[valid].any()
    # first pass with a unit correction: the plain 5-sample window sums around the largest 3-sample sum
    wf = r1[0, 0].astype(np.float64)
    sums = wf[1:-2] + wf[:-3] + wf[2:-1]
    peak = int(np.argmax(sums[1:-1])) + 2
    np.testing.assert_allclose(first[0, 0], wf[peak - 2:peak + 3].sum(), rtol=1e-5)


def test_new_extractor_errors(calibrated):
    from iactpipe.image.extraction import baseline_subtracted_neighbor_peak_window_sum, two_pass_window_sum

    cam, r1, selected, _ = calibrated["CHEC"]
    with pytest.raises(ValueError, match="needs the camera geometry"):
        extract_images("TwoPassWindowSum", r1, selected, cam.readout, cam.geometry.neighbors)
    with pytest.raises(ValueError, match="at least 5 samples"):
        two_pass_window_sum(r1[..., :4], selected, cam.geometry.neighbors, 1.0, cam.geometry)
    with pytest.raises(ValueError, match="baseline window 5..5"):
        baseline_subtracted_neighbor_peak_window_sum(
            r1, selected, cam.geometry.neighbors, 1.0, baseline_start=5, baseline_end=5
        )
