"""The DL0 -> DL1 image pipeline for a chunk of events of one telescope.

calibrate (R0 -> R1 with gain selection) -> extract charges and peak times ->
peak-time correction -> unusable pixels (in-painted or excluded) -> cleaning ->
image quality criteria -> parameters, plus the parameters of the true p.e. image
for simulations.  The order of operations and the defaults are ctapipe 0.28's
(``CameraCalibrator`` + ``ImageProcessor`` of ``ctapipe-process``), so the same
input and settings give the same numbers.

Everything here is a function of plain arrays and small frozen settings objects;
reading, writing and the command line live in :mod:`iactpipe.io` and
:mod:`iactpipe.steps.dl0_to_dl1`.
"""

import copy
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import cached_property
from types import SimpleNamespace

import numpy as np

from .calibration import (
    DEFAULT_GAIN_THRESHOLD,
    apply_peak_time_shift,
    calibrate_r1,
    calibrate_selected_samples,
    select_gain_values,
)
from .cleaning import dilate, mars_cleaning_1st_pass, tailcuts_clean, time_constrained_clean, touches
from .extraction import (
    EXTRACTORS,
    calibrate_and_extract,
    extract_images,
    integration_correction,
    neighbor_peak_window_sum_kept,
    neighbor_peak_window_sum_selected,
)
from .geometry import ImageGeometry
from .invalid_pixels import flat_waveform_mask, interpolate_invalid_pixels, zero_invalid_pixels
from .parameters import PARAMETER_COLUMNS, image_parameters, selected_sums
from .timing import timing_parameters

__all__ = [
    "CLEANING_METHODS",
    "INVALID_PIXEL_TREATMENTS",
    "TRUE_PARAMETER_COLUMNS",
    "CleaningSettings",
    "ImageSettings",
    "CameraSetup",
    "TelescopeDL1",
    "settings_for_type",
    "quality_criteria",
    "clean_images",
    "unusable_pixels",
    "true_image_parameters",
    "process_telescope_events",
    "process_batch",
    "batch_images",
    "telescope_images",
    "finish_batch",
    "fit_timing_in_event_order",
    "event_positions",
    "QUALITY_FLAG_BITS",
    "image_quality_flags",
]

CLEANING_METHODS = ("tailcuts", "time_constrained", "mars")
#: interpolate: mean of the usable neighbours (ctapipe's NeighborAverage); exclude: set to 0; keep: leave as read
INVALID_PIXEL_TREATMENTS = ("interpolate", "exclude", "keep")
#: bit of each image quality flag (``image_quality_flags``, see `image_quality_flags`)
QUALITY_FLAG_BITS = {
    "few_pixels": 0,
    "low_intensity": 1,
    "leakage": 2,
    "no_width": 3,
    "unusable_pixels": 4,
    "extraction_failed": 5,
    "no_timing_fit": 6,
}
#: R1 pixel_status bits telling which gain channel was stored (none: pixel not read out)
_GAIN_STORED_BITS = 4 | 8

#: (column, dtype) of the true-image parameter table (ctapipe: no timing or peak-time columns;
#: the true image is int32, hence int32 intensity max/min)
TRUE_PARAMETER_COLUMNS = tuple(
    (f"true_{name}", np.int32 if name in ("intensity_max", "intensity_min") else
     np.float64 if dtype == np.float32 else dtype)
    for name, dtype in PARAMETER_COLUMNS
    if not name.startswith(("timing_", "peak_time_"))
)


@dataclass(frozen=True)
class CleaningSettings:
    """Image cleaning of one telescope type; thresholds in p.e., time limits in ns.

    ``min_picture_neighbors`` is the tail-cuts/MARS ``min_number_picture_neighbors``
    and the time-constrained cleaning's minimum number of core neighbours.
    """

    method: str = "tailcuts"
    picture_threshold: float = 10.0
    boundary_threshold: float = 5.0
    min_picture_neighbors: int = 2
    keep_isolated_pixels: bool = False
    time_limit_core: float = 4.5
    time_limit_boundary: float = 1.5

    def __post_init__(self):
        if self.method not in CLEANING_METHODS:
            raise ValueError(f"unknown cleaning method {self.method!r}, choose one of {', '.join(CLEANING_METHODS)}")


@dataclass(frozen=True)
class ImageSettings:
    """Everything that decides how the images of one telescope type are made and parametrised.

    ``extractor_options`` are ``(name, value)`` pairs overriding the extractor's
    defaults (see :data:`iactpipe.image.extraction.EXTRACTORS`).  Images pass the
    quality criteria when their cleaned intensity is ``> min_intensity`` and they
    have at least ``min_pixels`` pixels (ctapipe's default ImageQualityQuery for 0 and 2).
    ``max_leakage`` only sets a quality flag (see `image_quality_flags`).
    """

    extractor: str = "NeighborPeakWindowSum"
    extractor_options: tuple = ()
    integration_correction: bool = True
    gain_threshold: float = DEFAULT_GAIN_THRESHOLD
    peak_time_shift: bool = True
    invalid_pixels: str = "interpolate"
    flag_hv_off: bool = True
    flag_flat_waveforms: bool = False
    cleaning: CleaningSettings = field(default_factory=CleaningSettings)
    min_intensity: float = 0.0
    min_pixels: int = 2
    max_leakage: float = 0.2

    def __post_init__(self):
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"unknown image extractor {self.extractor!r}, choose one of {', '.join(EXTRACTORS)}")
        unknown = {name for name, _ in self.extractor_options} - set(EXTRACTORS[self.extractor][1])
        if unknown:
            raise ValueError(f"{self.extractor} has no option(s) {', '.join(sorted(unknown))}")
        if self.invalid_pixels not in INVALID_PIXEL_TREATMENTS:
            raise ValueError(f"invalid_pixels must be one of {', '.join(INVALID_PIXEL_TREATMENTS)}")

    @property
    def options(self):
        """The extractor's options: its defaults updated with ``extractor_options``."""
        return {**EXTRACTORS[self.extractor][1], **dict(self.extractor_options)}

    @property
    def quality_criteria(self):
        """(name, expression) of each image quality criterion, named as ctapipe names its defaults."""
        return (
            (f"size_greater_{self.min_intensity:g}", f"image.sum() > {self.min_intensity:g}"),
            (f"at_least_{self.min_pixels}_pixels", f"image.size > {self.min_pixels - 1}"),
        )


def settings_for_type(table, tel_type):
    """Merge the entries of a per-telescope-type mapping that apply to ``tel_type``.

    ``table`` maps ``"*"`` (all types), glob patterns (``"MST_*"``) and exact type
    names to dicts of settings; later, more specific entries override earlier ones:
    ``"*"`` first, then matching patterns from the shortest to the longest, then
    the exact name.  Types not listed get the ``"*"`` entry.
    """
    merged = dict(table.get("*", {}))
    patterns = [
        key for key in table
        if key not in ("*", tel_type) and any(c in key for c in "*?[") and fnmatchcase(tel_type, key)
    ]
    for key in sorted(patterns, key=len):
        merged.update(table[key])
    merged.update(table.get(tel_type, {}))
    return merged


@dataclass(frozen=True, eq=False)
class CameraSetup:
    """What the pipeline needs to know about one telescope: image geometry (telescope frame) and readout."""

    tel_type: str
    geometry: ImageGeometry
    readout: object  # iactpipe.instrument.camera.CameraReadout
    #: iactpipe.instrument.camera.CameraGeometry (camera frame, m): TwoPassWindowSum's preliminary image
    camera_geometry: object = None

    @classmethod
    def from_telescope(cls, telescope, focal_length_choice="effective"):
        """From an :class:`~iactpipe.instrument.subarray.TelescopeDescription`.

        ``focal_length_choice``: ``effective`` (the equivalent one where the effective one
        is unknown) or ``equivalent``.
        """
        optics = telescope.optics
        if focal_length_choice == "equivalent":
            focal_length = optics.equivalent_focal_length
        elif focal_length_choice == "effective":
            focal_length = optics.focal_length
        else:
            raise ValueError(f"focal_length_choice must be effective or equivalent, got {focal_length_choice!r}")
        return cls(
            tel_type=telescope.type,
            geometry=ImageGeometry.from_camera(telescope.geometry, focal_length),
            readout=telescope.readout,
            camera_geometry=telescope.geometry,
        )

    @property
    def n_pixels(self):
        return self.geometry.n_pixels

    @cached_property
    def _corrections(self):
        return {}

    def correction(self, settings):
        """Integration correction per gain channel for the settings' window extractor (None if not applicable)."""
        if not settings.integration_correction or EXTRACTORS[settings.extractor][3] != "window":
            return None
        options = settings.options
        key = (int(options["window_width"]), int(options["window_shift"]))
        if key not in self._corrections:
            readout = self.readout
            self._corrections[key] = integration_correction(
                readout.reference_pulse_shape, readout.reference_pulse_sample_width_ns,
                readout.sampling_rate_ghz, *key,
            )
        return self._corrections[key]


@dataclass
class TelescopeDL1:
    """DL1 of a chunk of events of one telescope.

    ``image``/``peak_time`` float32 (p.e., ns), ``image_mask`` bool (cleaning),
    all (n_events, n_pixels); ``is_valid`` (n_events,) image extraction succeeded;
    ``parameters``: column -> (n_events,) array (``PARAMETER_COLUMNS``);
    ``quality``: criterion name -> (n_events,) bool and ``valid`` all of them
    (the images that were parametrised); ``unusable``: the pixels
    treated as unusable; ``true_parameters``/``true_quality``: the same for the
    true p.e. image, or None; ``quality_flags`` (n_events,) uint16 (see
    `image_quality_flags`), None until the timing fits are done; ``r1``,
    ``extracted_image``, ``extracted_peak_time``: see ``keep_waveforms`` of
    `process_telescope_events`.
    """

    image: np.ndarray
    peak_time: np.ndarray
    image_mask: np.ndarray
    is_valid: np.ndarray
    parameters: dict
    quality: dict
    valid: np.ndarray
    unusable: np.ndarray
    selected_gain_channel: np.ndarray | None = None
    true_parameters: dict | None = None
    true_quality: dict | None = None
    quality_flags: np.ndarray | None = None
    r1: np.ndarray | None = None
    extracted_image: np.ndarray | None = None
    extracted_peak_time: np.ndarray | None = None


# -- single operations ------------------------------------------------------------------


def quality_criteria(images, masks, settings):
    """Each image quality criterion per image: ``{name: (n_events,) bool}`` (see `ImageSettings`).

    The selected intensity is compared as numpy's float64 sum of the image with the
    other pixels set to 0 (``np.where(masks, images, 0).sum(axis=1, dtype=np.float64)``).
    It is summed here in a faster order; two orders differ by at most ``(n - 1) eps``
    times the sum of magnitudes, and images whose sum is within ``4 n eps`` times it of the
    threshold (or not finite) are summed again numpy's way (see `selected_sums`).
    """
    images = np.asarray(images)
    masks = np.ascontiguousarray(masks, dtype=bool)
    n_events = len(images)
    size_ok = np.empty(n_events, dtype=bool)
    unsure = np.empty(n_events, dtype=bool)
    n_pixels = np.empty(n_events, dtype=np.int64)
    selected_sums(np.ascontiguousarray(images), masks, float(settings.min_intensity), size_ok, unsure, n_pixels)
    if unsure.any():
        exact = np.where(masks[unsure], images[unsure], 0).sum(axis=1, dtype=np.float64)
        size_ok[unsure] = exact > settings.min_intensity
    (size_name, _), (pixels_name, _) = settings.quality_criteria
    return {size_name: size_ok, pixels_name: n_pixels >= settings.min_pixels}


def clean_images(images, peak_times, geometry, cleaning):
    """Cleaning masks (n_events, n_pixels) of a chunk of images with one `CleaningSettings`."""
    neighbors = geometry.neighbors
    if cleaning.method == "time_constrained":
        return time_constrained_clean(
            images, peak_times, neighbors, cleaning.picture_threshold, cleaning.boundary_threshold,
            cleaning.time_limit_core, cleaning.time_limit_boundary, cleaning.min_picture_neighbors,
        )
    clean = mars_cleaning_1st_pass if cleaning.method == "mars" else tailcuts_clean
    return clean(
        images, neighbors, cleaning.picture_threshold, cleaning.boundary_threshold,
        cleaning.keep_isolated_pixels, cleaning.min_picture_neighbors,
    )


def unusable_pixels(calibration, n_gains, n_pixels, settings, r0=None):
    """Per-gain unusable-pixel flags (1 or n_events, n_gains, n_pixels) from calibration and data.

    Sources: ``calibration.unusable`` (ctapipe's outlier mask), with
    ``settings.flag_hv_off`` the pixels the camera monitoring reports with HV off
    (``calibration.hv_off``), with ``settings.flag_flat_waveforms`` pixels whose raw
    waveform is constant (``r0`` given).
    """
    flags = np.zeros((1, n_gains, n_pixels), dtype=bool)
    if calibration is not None and calibration.unusable is not None:
        unusable = np.asarray(calibration.unusable, dtype=bool)
        flags = flags | (unusable if unusable.ndim == 3 else unusable[np.newaxis])
    if settings.flag_hv_off and calibration is not None and getattr(calibration, "hv_off", None) is not None:
        flags = flags | np.asarray(calibration.hv_off, dtype=bool)[..., np.newaxis, :]
    if settings.flag_flat_waveforms and r0 is not None:
        flags = flags | flat_waveform_mask(r0)[:, np.newaxis, :]
    return flags


def _selected_flags(flags, selected_gain_channel, n_events):
    """Per-gain flags -> (1 or n_events, n_pixels) of the selected gain."""
    if flags.shape[1] == 1 or selected_gain_channel is None:
        return flags[:, 0]
    return select_gain_values(np.broadcast_to(flags, (n_events, *flags.shape[1:])), selected_gain_channel)


def image_quality_flags(result, geometry, settings):
    """Bit mask (n_events,) uint16 of each image's quality problems (`QUALITY_FLAG_BITS`).

    few_pixels / low_intensity: the image quality criteria (``min_pixels``,
    ``min_intensity``) failed; for images passing them: leakage:
    ``leakage_intensity_width_2 > max_leakage``; no_width: ``hillas_width`` NaN
    or 0; no_timing_fit: ``timing_slope`` NaN.  For all images:
    unusable_pixels: an unusable pixel is in the cleaned image or a neighbour of
    it; extraction_failed: the extractor marked the image invalid.
    """
    (size_name, _), (pixels_name, _) = settings.quality_criteria
    parameters = result.parameters
    valid = result.valid
    width = parameters["hillas_width"]
    bits = QUALITY_FLAG_BITS
    flags = np.zeros(len(valid), dtype=np.uint16)
    conditions = [
        ("few_pixels", ~result.quality[pixels_name]),
        ("low_intensity", ~result.quality[size_name]),
        ("leakage", valid & (parameters["leakage_intensity_width_2"] > settings.max_leakage)),
        ("no_width", valid & ~(width > 0)),
        ("no_timing_fit", valid & np.isnan(parameters["timing_slope"])),
        ("extraction_failed", ~np.asarray(result.is_valid, dtype=bool)),
    ]
    unusable = np.asarray(result.unusable, dtype=bool)
    if unusable.any():
        conditions.append(("unusable_pixels", touches(result.image_mask, unusable, geometry.neighbors)))
    for name, condition in conditions:
        flags |= np.where(condition, np.uint16(1 << bits[name]), np.uint16(0))
    return flags


def true_image_parameters(true_images, geometry, settings):
    """Parameters of true p.e. images (mask ``true_image > 0``), named ``true_*`` with ctapipe's dtypes.

    Returns ``(columns, quality)``; images failing the quality criteria get -1
    for the counts and intensity max/min, NaN elsewhere (ctapipe's defaults).
    """
    true_images = np.asarray(true_images)
    masks = true_images > 0
    quality = quality_criteria(true_images, masks, settings)
    valid = np.logical_and.reduce(list(quality.values()))
    columns = image_parameters(true_images, masks, geometry, peak_times=None, valid=valid)
    out = {}
    for name, dtype in TRUE_PARAMETER_COLUMNS:
        values = columns[name.removeprefix("true_")]
        if dtype == np.int32:
            values = np.where(valid, np.nan_to_num(values, nan=-1), -1)
        out[name] = values.astype(dtype)
    return out, quality


# -- the whole chain ----------------------------------------------------------------------


def _calibration_arrays(calibration, name, n_gains, n_pixels):
    value = getattr(calibration, name, None) if calibration is not None else None
    if value is None:
        return None
    value = np.asarray(value)
    if value.shape[-2:] != (n_gains, n_pixels):
        raise ValueError(f"calibration {name} has shape {value.shape}, expected (..., {n_gains}, {n_pixels})")
    return value


def _complete_pixels(kept, neighbors):
    """Pixels whose own and all neighbours' waveforms are in ``kept`` (n_events, n_pixels)."""
    return ~dilate(~kept, neighbors)


def _kept_samples(events):
    """The kept waveforms (n_kept, n_samples) of a reduced DL0's events, or None."""
    return getattr(events, "r1_kept", None)


def _dense_r1(kept, samples):
    """(n_events, n_pixels, n_samples) R1 with the kept waveforms and zeros elsewhere."""
    kept = np.asarray(kept, dtype=bool)
    r1 = np.zeros(kept.shape + (samples.shape[1],), dtype=np.float32)
    r1[kept] = samples[:np.count_nonzero(kept)]
    return r1


def _images_from_kept_waveforms(events, camera, settings, selected, broken):
    """Reduced DL0 with NeighborPeakWindowSum: extract only the pixels whose own and all
    neighbours' waveforms were kept, the others keep the stored charge and peak time
    (what extracting zero-filled full waveforms and `_complete_pixels` give, without them)."""
    if events.image is None or events.peak_time is None:
        raise ValueError(f"tel {events.tel_id}: reduced DL0 waveforms without the stored charges and peak times")
    kept = np.asarray(events.waveform_kept, dtype=bool)
    options = settings.options
    image, peak_time, _ = neighbor_peak_window_sum_kept(
        events.r1_kept[:np.count_nonzero(kept)], kept, selected, camera.geometry.neighbors,
        camera.readout.sampling_rate_ghz, camera.correction(settings), options["window_width"],
        options["window_shift"], options["local_weight"], broken_pixels=broken, fill_image=events.image,
        fill_peak_time=events.peak_time,
    )
    return image, peak_time


def _waveforms_to_images(events, camera, settings, calibration, recalibrate, rng=None, keep_waveforms=False):
    """(image, peak_time, selected_gain_channel, per-gain unusable flags, is_valid, r1) from R0, R1 or images.

    ``r1``: the gain-selected waveforms, with ``keep_waveforms`` (None for images).
    Reduced DL0 (``events.waveform_kept``): pixels whose own or a neighbour's
    waveform was dropped take the stored ``events.image``/``peak_time``.  With only the
    kept waveforms (``events.r1_kept``), NeighborPeakWindowSum extracts just the other
    pixels (`_images_from_kept_waveforms`); other extractors, and ``keep_waveforms``, get
    the zero-filled R1 back, so all give what zero-filled R1 input gives.
    """
    n_events = len(events)
    n_pixels = camera.n_pixels
    neighbors = camera.geometry.neighbors
    n_gains = max(camera.readout.n_channels, 1)
    if events.r0 is not None and (events.r1 is None or recalibrate):
        if calibration is None:
            raise ValueError(f"tel {events.tel_id}: R0 waveforms need calibration coefficients")
        r0 = events.r0
        n_gains = r0.shape[1]
        pedestal = _calibration_arrays(calibration, "pedestal_per_sample", n_gains, n_pixels)
        dc_to_pe = _calibration_arrays(calibration, "dc_to_pe", n_gains, n_pixels)
        flags = unusable_pixels(calibration, n_gains, n_pixels, settings, r0)
        if settings.extractor == "NeighborPeakWindowSum":
            # fused calibration + extraction: the R1 waveforms of an event stay in cache
            options = settings.options
            image, peak_time, selected, *r1 = calibrate_and_extract(
                r0, pedestal, dc_to_pe, neighbors, camera.readout.sampling_rate_ghz, camera.correction(settings),
                options["window_width"], options["window_shift"], options["local_weight"],
                unusable=flags, threshold=settings.gain_threshold, return_r1=keep_waveforms,
            )
            return image, peak_time, selected, flags, np.ones(n_events, dtype=bool), r1[0] if r1 else None
        r1, selected = calibrate_r1(r0, pedestal, dc_to_pe, threshold=settings.gain_threshold)
    elif events.r1 is not None or _kept_samples(events) is not None or events.samples is not None:
        r1 = events.r1
        selected = events.selected_gain_channel
        if selected is None:
            selected = np.zeros((n_events, n_pixels), dtype=np.int8)
        flags = unusable_pixels(calibration, n_gains, n_pixels, settings)
        if events.pixel_status is not None:
            # no gain channel stored: the pixel was not read out (ctapipe's disabled pixels)
            off = (np.asarray(events.pixel_status) & _GAIN_STORED_BITS) == 0
            flags = flags | off[:, np.newaxis, :]
        if r1 is None and events.samples is not None:  # compact DL0: raw samples of the selected gain,
            # calibrated with ``calibration``'s coefficients ((n_gains, n_pixels): one set for the chunk)
            if calibration is None:
                raise ValueError(f"tel {events.tel_id}: raw samples need calibration coefficients")
            pedestal, dc_to_pe = calibration.pedestal_per_sample, calibration.dc_to_pe
            if settings.extractor == "NeighborPeakWindowSum" and not keep_waveforms:
                options = settings.options
                image, peak_time = neighbor_peak_window_sum_selected(
                    events.samples, selected, pedestal, dc_to_pe, neighbors, camera.readout.sampling_rate_ghz,
                    camera.correction(settings), options["window_width"], options["window_shift"],
                    options["local_weight"], broken_pixels=_selected_flags(flags, selected, n_events),
                )
                return image, peak_time, selected, flags, np.ones(n_events, dtype=bool), None
            r1 = calibrate_selected_samples(events.samples, selected, pedestal, dc_to_pe)
        if r1 is None:  # reduced DL0 with the kept waveforms only
            if settings.extractor == "NeighborPeakWindowSum" and not keep_waveforms:
                image, peak_time = _images_from_kept_waveforms(
                    events, camera, settings, selected, _selected_flags(flags, selected, n_events)
                )
                return image, peak_time, selected, flags, np.ones(n_events, dtype=bool), None
            r1 = _dense_r1(events.waveform_kept, events.r1_kept)
    elif events.image is not None:
        image = np.array(events.image, dtype=np.float32)
        peak_time = (np.zeros_like(image) if events.peak_time is None
                     else np.array(events.peak_time, dtype=np.float32))
        flags = unusable_pixels(calibration, n_gains, n_pixels, settings)
        return image, peak_time, None, flags, np.ones(n_events, dtype=bool), None
    else:
        raise ValueError(f"tel {events.tel_id}: no R0, R1 or image data")
    image, peak_time, is_valid = extract_images(
        settings.extractor, r1, selected, camera.readout, neighbors=neighbors,
        broken_pixels=_selected_flags(flags, selected, n_events),
        apply_integration_correction=settings.integration_correction, camera_geometry=camera.camera_geometry,
        rng=rng, return_valid=True, **dict(settings.extractor_options),
    )
    kept = getattr(events, "waveform_kept", None)
    if kept is not None and (events.r1 is not None or _kept_samples(events) is not None) and events.image is not None:
        complete = _complete_pixels(np.asarray(kept, dtype=bool), neighbors)
        image = np.where(complete, image, np.asarray(events.image, dtype=np.float32))
        peak_time = np.where(complete, peak_time, np.asarray(events.peak_time, dtype=np.float32))
    return image, peak_time, selected, flags, is_valid, r1 if keep_waveforms else None


def process_telescope_events(events, camera, settings, calibration=None, rng=None, recalibrate=False,
                             fit_timing=True, keep_waveforms=False):
    """DL0 -> DL1 for the events of one telescope in a chunk.

    Parameters
    ----------
    events : iactpipe.io.events.TelescopeEvents
        R0 (``r0``), R1 (``r1`` + ``selected_gain_channel``) or images (``image``/``peak_time``);
        ``true_image`` when simulated.
    camera : CameraSetup
    settings : ImageSettings
        For this telescope's type (see `settings_for_type`).
    calibration : iactpipe.io.events.TelescopeCalibration or None
        Coefficients (n_gains, n_pixels), or (n_events, n_gains, n_pixels) when they
        change within the chunk.  Needed for R0; for R1 only ``time_shift`` and
        ``unusable`` are used; for images only ``unusable``.
    rng : numpy.random.Generator
        Feeds the timing fit (see :mod:`iactpipe.image.timing`) and TwoPassWindowSum's time
        fits; images are fitted in row order.
    recalibrate : bool
        Calibrate R0 even when R1 waveforms are present (new coefficients).
    fit_timing : bool
        False: leave the ``timing_*`` columns NaN (for `fit_timing_in_event_order`).
    keep_waveforms : bool
        Also return the R1 waveforms and the images as extracted (before the peak-time
        shift and the unusable-pixel treatment): ``r1``, ``extracted_image``,
        ``extracted_peak_time`` (for a reduced DL0).

    Returns
    -------
    TelescopeDL1
    """
    n_events = len(events)
    image, peak_time, selected, flags, is_valid, r1 = _waveforms_to_images(
        events, camera, settings, calibration, recalibrate, rng, keep_waveforms
    )
    extracted = (image.copy(), peak_time.copy()) if keep_waveforms else (None, None)
    if (events.r0 is not None or events.r1 is not None or _kept_samples(events) is not None
            or events.samples is not None):
        time_shift = _calibration_arrays(calibration, "time_shift", flags.shape[1], camera.n_pixels)
        if settings.peak_time_shift and time_shift is not None:
            if selected is None:
                selected = np.zeros((n_events, camera.n_pixels), dtype=np.int8)
            apply_peak_time_shift(peak_time, time_shift, selected)
    unusable = np.broadcast_to(_selected_flags(flags, selected, n_events), image.shape)
    if settings.invalid_pixels != "keep" and unusable.any():
        if settings.invalid_pixels == "interpolate":
            image, peak_time = interpolate_invalid_pixels(image, peak_time, unusable, camera.geometry.neighbors)
        else:
            image, peak_time, _ = zero_invalid_pixels(image, peak_time, unusable)

    masks = clean_images(image, peak_time, camera.geometry, settings.cleaning)
    quality = quality_criteria(image, masks, settings)
    valid = np.logical_and.reduce(list(quality.values()))
    parameters = image_parameters(
        image, masks, camera.geometry, peak_times=peak_time, rng=rng, valid=valid, fit_timing=fit_timing
    )

    result = TelescopeDL1(
        image=image, peak_time=peak_time, image_mask=masks, is_valid=is_valid,
        parameters=parameters, quality=quality, valid=valid, unusable=np.array(unusable),
        selected_gain_channel=selected, r1=r1, extracted_image=extracted[0], extracted_peak_time=extracted[1],
    )
    if fit_timing:
        result.quality_flags = image_quality_flags(result, camera.geometry, settings)
    if events.true_image is not None:
        result.true_parameters, result.true_quality = true_image_parameters(
            events.true_image, camera.geometry, settings
        )
    return result


def event_positions(event_ids, tel_event_ids):
    """Index into ``event_ids`` (a batch's events) of each telescope row (rows in event order).

    Works with repeated event ids (replayed files): each row takes the next event with its id.
    """
    event_ids = np.asarray(event_ids)
    tel_event_ids = np.asarray(tel_event_ids)
    order = np.argsort(event_ids, kind="stable")
    sorted_ids = event_ids[order]
    first = np.searchsorted(sorted_ids, tel_event_ids, side="left")
    if len(np.unique(event_ids)) == len(event_ids):
        if np.any(first >= len(sorted_ids)) or np.any(sorted_ids[np.minimum(first, len(sorted_ids) - 1)]
                                                        != tel_event_ids):
            raise ValueError("telescope rows name events that are not in the batch")
        return order[first]
    positions = np.empty(len(tel_event_ids), dtype=np.int64)
    start = 0
    for i, event_id in enumerate(tel_event_ids):
        while start < len(event_ids) and event_ids[start] != event_id:
            start += 1
        if start == len(event_ids):
            raise ValueError("telescope rows name events that are not in the batch (or are out of order)")
        positions[i] = start
        start += 1
    return positions


@dataclass(frozen=True)
class _PixelPositions:
    pix_x: np.ndarray
    pix_y: np.ndarray


def fit_timing_in_event_order(batch, results, cameras, rng=None):
    """Fill the ``timing_*`` columns of ``results``, fitting images event by event (tel_id order within).

    The LTS timing fit draws its starting pairs from one generator, so the results
    depend on the order in which images are fitted; ctapipe fits event by event.
    Here the parametrised images of all telescopes are stacked in that order into
    one call, on the pixels of all their cameras side by side (a row only selects
    the pixels of its own camera).  ``results``: ``{tel_id: TelescopeDL1}`` of the
    batch, computed with ``fit_timing=False``.
    """
    entries = []
    for tel_id, result in results.items():
        rows = np.flatnonzero(result.valid)
        if len(rows) == 0:
            continue
        positions = event_positions(batch.event_id, batch.tel[tel_id].event_id)[rows]
        entries.append((tel_id, rows, positions))
    if not entries:
        return
    offsets = {}
    geometries = []
    total = 0
    for tel_id, _, _ in entries:
        geometry = cameras[tel_id].geometry
        if id(geometry) not in offsets:
            offsets[id(geometry)] = total
            geometries.append(geometry)
            total += geometry.n_pixels
    positions = np.concatenate([e[2] for e in entries])
    tels = np.concatenate([np.full(len(e[1]), e[0]) for e in entries])
    order = np.lexsort((tels, positions))
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.arange(len(order))
    times = np.zeros((len(order), total), dtype=np.float32)
    masks = np.zeros((len(order), total), dtype=bool)
    hillas = {name: np.empty(len(order)) for name in ("hillas_fov_lon", "hillas_fov_lat", "hillas_psi")}
    start = 0
    spans = []
    for tel_id, rows, _ in entries:
        result = results[tel_id]
        target = slot[start:start + len(rows)]
        first = offsets[id(cameras[tel_id].geometry)]
        last = first + cameras[tel_id].geometry.n_pixels
        times[target, first:last] = result.peak_time[rows]
        masks[target, first:last] = result.image_mask[rows]
        for name, values in hillas.items():
            values[target] = result.parameters[name][rows]
        spans.append((tel_id, rows, target))
        start += len(rows)
    union = _PixelPositions(
        pix_x=np.concatenate([g.pix_x for g in geometries]), pix_y=np.concatenate([g.pix_y for g in geometries])
    )
    timing = timing_parameters(times, masks, union, hillas, rng=rng)
    for tel_id, rows, target in spans:
        parameters = results[tel_id].parameters
        for name, values in timing.items():
            parameters[name][rows] = values[target]


def process_batch(batch, cameras, settings, calibrations=None, rng=None, recalibrate=False, keep_waveforms=False):
    """DL0 -> DL1 of every telescope of an :class:`~iactpipe.io.events.EventBatch`.

    ``cameras`` and ``settings`` map tel_id -> `CameraSetup` / `ImageSettings`;
    ``calibrations`` tel_id -> coefficients (see `process_telescope_events`).
    Telescopes are processed in tel_id order; timing fits in event order (see
    `fit_timing_in_event_order`), as ctapipe does.  Returns ``{tel_id: TelescopeDL1}``.
    Equal to `finish_batch` of `batch_images` (which may run ahead, in another thread).
    """
    results = batch_images(batch, cameras, settings, calibrations, recalibrate, keep_waveforms)
    if results is None:
        return _process_event_by_event(batch, cameras, settings, calibrations or {}, rng, recalibrate,
                                       keep_waveforms)
    return finish_batch(batch, results, cameras, settings, rng)


def batch_images(batch, cameras, settings, calibrations=None, recalibrate=False, keep_waveforms=False):
    """The part of `process_batch` that draws no random numbers: ``{tel_id: TelescopeDL1}`` without the
    timing fits and quality flags (see `finish_batch`), or None where an extractor draws from the
    generator (TwoPassWindowSum: its fits run event by event, in `process_batch`)."""
    calibrations = calibrations or {}
    if any(settings[tel_id].extractor == "TwoPassWindowSum" for tel_id in batch.tel):
        return None
    return {
        tel_id: telescope_images(batch.tel[tel_id], cameras[tel_id], settings[tel_id], calibrations.get(tel_id),
                                 recalibrate, keep_waveforms)
        for tel_id in sorted(batch.tel)
    }


def telescope_images(events, camera, settings, calibration=None, recalibrate=False, keep_waveforms=False):
    """`batch_images` of one telescope (any thread may run it, in any order): its `TelescopeDL1` without
    timing fits and quality flags.  Not for TwoPassWindowSum, whose fits draw random numbers."""
    if settings.extractor == "TwoPassWindowSum":
        raise ValueError("TwoPassWindowSum draws from the generator: process its events in order (process_batch)")
    return process_telescope_events(events, camera, settings, calibration, None, recalibrate, fit_timing=False,
                                    keep_waveforms=keep_waveforms)


def finish_batch(batch, results, cameras, settings, rng=None):
    """`batch_images`' ``results`` completed in place: timing fits in event order from ``rng``, then
    the quality flags.  Returns ``results``."""
    fit_timing_in_event_order(batch, results, cameras, rng)
    for tel_id, result in results.items():
        result.quality_flags = image_quality_flags(result, cameras[tel_id].geometry, settings[tel_id])
    return results


# -- event by event (TwoPassWindowSum) ------------------------------------------------------

_PER_EVENT_CALIBRATION = {"pedestal_per_sample": 3, "dc_to_pe": 3, "time_shift": 3, "unusable": 3, "hv_off": 2}


def _telescope_rows(events, rows):
    """The telescope events ``rows`` (a slice) of a `TelescopeEvents`."""
    n = len(events)
    out = copy.copy(events)
    for name, value in vars(events).items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
            setattr(out, name, value[rows])
    samples = _kept_samples(events)
    if samples is not None:  # rows of the kept waveforms: per event, as many as it kept
        counts = np.count_nonzero(events.waveform_kept, axis=1)
        start = int(counts[:rows.start].sum())
        out.r1_kept = samples[start:start + int(counts[rows].sum())]
    return out


def _calibration_rows(calibration, rows):
    """Coefficients of the telescope events ``rows`` where they are given per event."""
    if calibration is None:
        return None
    changes = {}
    for name, per_event_ndim in _PER_EVENT_CALIBRATION.items():
        value = getattr(calibration, name, None)
        if value is not None and np.ndim(value) == per_event_ndim:
            changes[name] = np.asarray(value)[rows]
    return replace(calibration, **changes) if changes else calibration


def _concatenate_results(parts):
    """One `TelescopeDL1` from those of consecutive rows."""
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for name in vars(parts[0]):
        values = [getattr(part, name) for part in parts]
        if values[0] is None:
            merged[name] = None
        elif isinstance(values[0], dict):
            merged[name] = {key: np.concatenate([v[key] for v in values]) for key in values[0]}
        else:
            merged[name] = np.concatenate(values)
    return TelescopeDL1(**merged)


def _process_event_by_event(batch, cameras, settings, calibrations, rng, recalibrate, keep_waveforms=False):
    """`process_batch` one array event at a time.

    TwoPassWindowSum draws its time fits from the same generator as the parameter timing
    fits; ctapipe calibrates (TwoPassWindowSum fits of all telescopes) and then
    parametrises (timing fits) each event before the next, and so does this.
    """
    tel_ids = sorted(batch.tel)
    positions = {tel_id: event_positions(batch.event_id, batch.tel[tel_id].event_id) for tel_id in tel_ids}
    parts = {tel_id: [] for tel_id in tel_ids}
    for event in range(len(batch)):
        events = {}
        results = {}
        for tel_id in tel_ids:
            row = np.flatnonzero(positions[tel_id] == event)  # at most one row per event
            if len(row) == 0:
                continue
            rows = slice(row[0], row[0] + 1)
            events[tel_id] = _telescope_rows(batch.tel[tel_id], rows)
            results[tel_id] = process_telescope_events(
                events[tel_id], cameras[tel_id], settings[tel_id], _calibration_rows(calibrations.get(tel_id), rows),
                rng, recalibrate, fit_timing=False, keep_waveforms=keep_waveforms,
            )
        one_event = SimpleNamespace(event_id=batch.event_id[event:event + 1], tel=events)
        fit_timing_in_event_order(one_event, results, cameras, rng)
        for tel_id, result in results.items():
            result.quality_flags = image_quality_flags(result, cameras[tel_id].geometry, settings[tel_id])
            parts[tel_id].append(result)
    results = {}
    for tel_id in tel_ids:
        if parts[tel_id]:
            results[tel_id] = _concatenate_results(parts[tel_id])
        else:  # a telescope without rows in this batch
            results[tel_id] = process_telescope_events(
                batch.tel[tel_id], cameras[tel_id], settings[tel_id], calibrations.get(tel_id), rng, recalibrate,
                keep_waveforms=keep_waveforms,
            )
    return results
