"""``iactpipe-dl0-to-dl1``: calibrate, extract, clean and parametrise camera images (DL0 -> DL1).

Example::

    iactpipe-dl0-to-dl1 gamma.simtel.zst --output gamma.dl1.h5
    iactpipe-dl0-to-dl1 run1.simtel.zst run2.simtel.zst --write-images --picture-threshold 8 -o runs.dl1.h5
    iactpipe-dl0-to-dl1 sim.dl0.h5 --calibration-file camcalib.h5 --config cleaning.yaml -o sim.dl1.h5
    iactpipe-dl0-to-dl1 run.simtel.zst -o run.dl1.h5 --reduced-dl0 run.reduced.dl0.h5

Inputs are sim_telarray files or iactpipe DL0 HDF5 files (R0, R1 or images-only)
of one subarray; the output is one DL1 file in ctapipe's HDF5 layout (see
:mod:`iactpipe.io.dl1`).  The image pipeline is :mod:`iactpipe.image.processor`.
"""

import copy
import os
import sys
import time
from fnmatch import fnmatchcase

import numpy as np
import tables

from ..cli import Step, progress
from ..errors import ConfigError, DataError, UsageError
from ..image.cleaning import dilate, tailcuts_clean
from ..image.extraction import EXTRACTORS, two_pass_core_threshold
from ..image.processor import (
    CameraSetup,
    CleaningSettings,
    ImageSettings,
    event_positions,
    finish_batch,
    process_batch,
    settings_for_type,
    telescope_images,
)
from ..io.dl0 import DL0Reader, DL0Writer, r1_from_kept_samples, selected_gain_samples
from ..io.dl1 import DL1Writer, coefficients_at, read_calibration_coefficients
from ..io.events import TelescopeCalibration, TelescopeEvents
from ..io.simtel import SimTelReader

__all__ = ["Dl0ToDl1Step", "main", "image_settings"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_EXTRACTOR_OPTIONS = (
    "window_width", "window_shift", "local_weight", "pixel_fraction", "peak_index", "core_threshold",
    "disable_second_pass", "baseline_start", "baseline_end",
)


# -- configuration ----------------------------------------------------------------------


def extraction_for_type(extraction, tel_type):
    """The image_extraction settings of one telescope type.

    The plain keys hold the settings of all types; mapping-valued keys (``*``, types,
    glob patterns) override them as in `settings_for_type`.
    """
    common = {key: value for key, value in extraction.items() if not isinstance(value, dict)}
    per_type = {key: value for key, value in extraction.items() if isinstance(value, dict)}
    return {**common, **settings_for_type(per_type, tel_type)}


def image_settings(config, tel_type):
    """The :class:`ImageSettings` of one telescope type from the resolved step configuration."""
    extraction = extraction_for_type(config["image_extraction"], tel_type)
    name = extraction["extractor"]
    if name not in EXTRACTORS:
        raise ConfigError(f"key 'image_extraction.extractor': unknown extractor {name!r}")
    defaults = EXTRACTORS[name][1]
    options = {
        k: extraction[k] for k in _EXTRACTOR_OPTIONS if k in defaults and extraction.get(k) is not None
    }
    if name == "TwoPassWindowSum" and "core_threshold" not in options:
        options["core_threshold"] = two_pass_core_threshold(tel_type)
    cleaning = settings_for_type(config["image_cleaning"], tel_type)
    try:
        return ImageSettings(
            extractor=name,
            extractor_options=tuple(sorted(options.items())),
            integration_correction=extraction["apply_integration_correction"],
            gain_threshold=config["calibration"]["gain_selection_threshold"],
            peak_time_shift=config["calibration"]["apply_peak_time_shift"],
            invalid_pixels=config["invalid_pixels"]["treatment"],
            flag_hv_off=config["invalid_pixels"]["flag_hv_off"],
            flag_flat_waveforms=config["invalid_pixels"]["flag_flat_waveforms"],
            cleaning=CleaningSettings(**cleaning),
            min_intensity=config["image_quality"]["min_intensity"],
            min_pixels=config["image_quality"]["min_pixels"],
            max_leakage=config["image_quality"]["max_leakage"],
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"image settings for telescope type {tel_type}: {err}") from None


# -- inputs -----------------------------------------------------------------------------


def _is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == HDF5_MAGIC


class _DL0File:
    """An iactpipe DL0 HDF5 file as a source: telescope selection, like the sim_telarray reader's."""

    def __init__(self, path, allowed_tels, max_events=None, read_ahead=False):
        self.reader = DL0Reader(path)
        self.max_events = max_events
        self.read_ahead = read_ahead and self.reader.kind != "images"  # images: nothing to do ahead
        self.path = path
        self.run_info = self.reader.run_info
        full = self.reader.subarray
        self.subarray = full
        self._columns = None
        if allowed_tels:
            missing = sorted(set(allowed_tels) - set(int(t) for t in full.tel_ids))
            if missing:
                self.reader.close()
                raise DataError(f"{path}: allowed_tels {missing} not in the file (tel_ids {full.tel_ids.tolist()})")
            self.subarray = full.select(sorted(allowed_tels))
            index = full.tel_index
            self._columns = np.array([index[t] for t in self.subarray.tel_ids])
            self.run_info.subarray = self.subarray
        self.complete = True

    def iter_batches(self, batch_size, prepare=None, raw_samples=False):
        """Batches of the selected telescopes; with ``prepare``, ``(batch, {tel_id: prepare(batch, tel_id)})``
        (see `DL0Reader.iter_batches`, also for ``raw_samples``), None in place of that dict for a batch cut
        short by ``max_events``."""
        remaining = self.max_events
        if remaining is not None and remaining <= 0:
            return
        tel_ids = None if self._columns is None else [int(t) for t in self.subarray.tel_ids]
        # reads only these telescopes
        ahead = self.read_ahead and (prepare is not None or self.reader.kind == "dl0")
        items = self.reader.iter_batches(batch_size, tel_ids=tel_ids, decode_ahead=ahead, prepare=prepare,
                                         raw_samples=raw_samples, max_events=self.max_events)
        for item in items:
            batch, prepared = item if prepare is not None else (item, None)
            if self._columns is not None:  # drops array events without rows of the selected telescopes
                mask = batch.tels_with_trigger[:, self._columns]
                batch = _select_events(batch, mask.any(axis=1))
                batch.tels_with_trigger = mask[mask.any(axis=1)]
            if remaining is not None:
                if len(batch) > remaining:
                    batch = _first_events(batch, remaining, self.subarray)
                    prepared = None  # computed for the telescope rows just cut
                remaining -= len(batch)
            if len(batch):
                yield batch if prepare is None else (batch, prepared)
            if remaining == 0:  # read no further (with decode-ahead, the next batches are being read)
                return

    def close(self):
        self.reader.close()


def _select_events(batch, keep):
    if keep.all():
        return batch
    batch.event_id = batch.event_id[keep]
    batch.event_type = batch.event_type[keep]
    batch.time_mjd = batch.time_mjd[keep]
    batch.tels_with_trigger = batch.tels_with_trigger[keep]
    batch.pointing_alt = batch.pointing_alt[keep]
    batch.pointing_az = batch.pointing_az[keep]
    if batch.shower is not None:
        batch.shower = {k: v[keep] for k, v in batch.shower.items()}
    return batch


def _first_events(batch, n, subarray):
    """The first ``n`` events of a batch (telescope rows are in event order)."""
    keep = np.arange(len(batch)) < n
    index = subarray.tel_index
    for tel_id, te in list(batch.tel.items()):
        n_rows = int(batch.tels_with_trigger[:n, index[tel_id]].sum())
        if n_rows == 0:
            del batch.tel[tel_id]
            continue
        for name, value in vars(te).items():
            if (isinstance(value, np.ndarray) and len(value) == len(te.event_id)
                    and name not in ("event_id", "r1_kept")):
                setattr(te, name, value[:n_rows])
        if te.r1_kept is not None:  # reduced DL0: the kept waveforms of the first n_rows events
            te.r1_kept = te.r1_kept[:int(np.count_nonzero(te.waveform_kept))]
        te.event_id = te.event_id[:n_rows]
    return _select_events(batch, keep)


def usable_cpus():
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. a Slurm allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def open_source(path, config, max_events=None):
    """A reader (``.subarray``, ``.run_info``, ``.iter_batches``) for a sim_telarray or DL0 HDF5 file."""
    allowed = config["allowed_tels"] or None
    read_ahead = config["read_ahead"]
    if read_ahead is None:
        read_ahead = usable_cpus() > 1
    if _is_hdf5(path):
        return _DL0File(path, allowed, max_events, read_ahead=read_ahead)
    return SimTelReader(path, allowed_tels=allowed, max_events=max_events, allow_truncated=config["allow_truncated"],
                        read_ahead=read_ahead)


def _check_same_subarray(first, other, path, first_path):
    same = list(first.tel_ids) == list(other.tel_ids) and all(
        first.tels[t].type == other.tels[t].type
        and first.tels[t].geometry.n_pixels == other.tels[t].geometry.n_pixels for t in first.tel_ids
    )
    if not same:
        raise DataError(f"{path}: telescopes differ from those of {first_path} (all inputs must have one subarray)")


def _check_calibration_file(path, series, subarray):
    """One-line errors for coefficients that do not fit the cameras; returns those of our telescopes."""
    used = {}
    for tel_id, s in series.items():
        if tel_id not in subarray.tels:
            continue
        tel = subarray.tels[tel_id]
        if s.n_pixels != tel.geometry.n_pixels:
            raise DataError(
                f"{path}: coefficients of tel {tel_id} have {s.n_pixels} pixels, its camera "
                f"{tel.camera_name} has {tel.geometry.n_pixels} (calibration file for another camera?)"
            )
        if s.n_gains != tel.readout.n_channels:
            raise DataError(
                f"{path}: coefficients of tel {tel_id} have {s.n_gains} gain channels, its camera "
                f"{tel.camera_name} has {tel.readout.n_channels}"
            )
        used[tel_id] = s
    if not used:
        raise DataError(f"{path}: no coefficients for any telescope of the input (tel_ids {sorted(series)})")
    return used


def _telescope_calibration(batch, tel_id, run_info, file_series):
    """The coefficients of a telescope for its events in ``batch`` (those of a calibration file's
    series at the event times, those read with the batch, or the run's)."""
    series = file_series.get(tel_id)
    te = batch.tel.get(tel_id)
    if series is None or te is None:
        return (batch.calibration or {}).get(tel_id, run_info.calibration.get(tel_id))
    times = te.time_mjd
    if times is None:
        times = batch.time_mjd[event_positions(batch.event_id, te.event_id)]
    return coefficients_at(series, times)


def _batch_calibration(batch, run_info, file_series):
    calibration = dict(run_info.calibration)
    calibration.update(batch.calibration or {})
    for tel_id in file_series:
        if tel_id in batch.tel:
            calibration[tel_id] = _telescope_calibration(batch, tel_id, run_info, file_series)
    return calibration


# -- reduced DL0 ------------------------------------------------------------------------


def kept_pixels(images, neighbors, reduction):
    """Pixels whose waveforms a reduced DL0 keeps: loose tail cuts of ``images`` plus neighbour rings."""
    masks = tailcuts_clean(
        images, neighbors, reduction["picture_threshold"], reduction["boundary_threshold"], False,
        reduction["min_picture_neighbors"],
    )
    for _ in range(reduction["neighbor_rings"]):
        masks = dilate(masks, neighbors)
    return masks


class _ReducedDL0:
    """Writes the reduced DL0 of one input while it is processed, and counts what it keeps."""

    #: bytes per pixel of the stored charge, peak time, kept flag, selected gain and pixel status
    PIXEL_BYTES = 4 + 4 + 1 + 1 + 1

    def __init__(self, path, settings, log):
        self.path = path
        self.settings = settings
        self.log = log
        self.writer = None
        self.coefficients = {}  # tel_id -> the run's coefficients stored in the reduced file
        self.raw = {}  # tel_id -> whether its kept waveforms are stored as raw samples
        self.full_bytes = 0
        self.kept_bytes = 0
        self.n_pixels = 0
        self.n_kept = 0

    def _open(self, run_info, calibration):
        coefficients = {}
        for tel_id, calib in calibration.items():
            fields = ("pedestal_per_sample", "dc_to_pe", "time_shift", "unusable")
            values = [getattr(calib, f, None) for f in fields]
            if any(v is None for v in values):
                continue
            values = [np.asarray(v)[0] if np.ndim(v) == 3 else np.asarray(v) for v in values]
            coefficients[tel_id] = TelescopeCalibration(tel_id, *values)
        self.coefficients = coefficients
        info = copy.copy(run_info)
        info.calibration = coefficients
        self.writer = DL0Writer(self.path, info, mode="reduced")

    def write(self, path, batch, dl1, calibration, cameras, run_info):
        if self.writer is None:
            self._open(run_info, calibration)
        reduced = copy.copy(batch)
        reduced.tel = {}
        for tel_id, te in batch.tel.items():
            result = dl1[tel_id]
            if result.r1 is None:
                raise DataError(f"{path}: a reduced DL0 needs waveforms (R0 or R1), the input has images only")
            shift = getattr(calibration.get(tel_id), "time_shift", None)
            if shift is not None and tel_id in self.coefficients:
                if not np.all(np.asarray(shift) == self.coefficients[tel_id].time_shift):
                    raise DataError(f"{path}: time shifts of tel {tel_id} change within the run "
                                    "(not supported by --reduced-dl0)")
            kept = kept_pixels(result.image, cameras[tel_id].geometry.neighbors, self.settings)
            selected = result.selected_gain_channel
            status = te.pixel_status
            if status is None:
                status = np.where(selected == 0, 4, 8).astype(np.uint8)
            # pixels unusable in this event: no gain channel stored, as ctapipe marks pixels not read out
            status = np.where(result.unusable, status & np.uint8(~12 & 0xFF), status).astype(np.uint8)
            r1_kept = result.r1[kept]  # event by event, pixels in increasing order
            raw = self._raw_samples(path, tel_id, te, selected, kept, r1_kept)
            reduced.tel[tel_id] = TelescopeEvents(
                tel_id=tel_id, event_id=te.event_id, r1_kept=None if raw else r1_kept, r0=te.r0 if raw else None,
                selected_gain_channel=selected, pixel_status=status,
                image=result.extracted_image, peak_time=result.extracted_peak_time, waveform_kept=kept,
                true_image=te.true_image, true_impact_distance=te.true_impact_distance,
                n_trigger_pixels=te.n_trigger_pixels, time_mjd=te.time_mjd, event_type=te.event_type,
            )
            n_samples = result.r1.shape[-1]
            self.full_bytes += result.r1.size * 4
            sample_bytes = 2 if raw else 4
            self.kept_bytes += int(kept.sum()) * n_samples * sample_bytes + kept.size * self.PIXEL_BYTES
            self.n_pixels += kept.size
            self.n_kept += int(kept.sum())
        self.writer.write(reduced)

    def _raw_samples(self, path, tel_id, te, selected, kept, r1_kept):
        """Whether to store the raw samples (uint16) of a telescope's kept pixels instead of R1 (float32).

        Decided on the telescope's first events: raw samples where the input has them and the
        coefficients of the file turn them into exactly the R1 the images come from; checked
        again on every later batch (the coefficients must hold for the whole run).
        """
        calibration = self.coefficients.get(tel_id)
        possible = te.r0 is not None and calibration is not None
        if possible:
            samples = selected_gain_samples(te.r0, selected)[kept]
            gains = selected[kept]
            again = r1_from_kept_samples(samples, np.nonzero(kept)[1], gains, calibration)
            possible = np.array_equal(again.view(np.uint32), np.ascontiguousarray(r1_kept).view(np.uint32))
        raw = self.raw.setdefault(tel_id, possible)
        if raw and not possible:
            raise DataError(f"{path}: the R0 -> R1 coefficients of tel {tel_id} change within the run "
                            "(not supported by --reduced-dl0)")
        return raw

    @property
    def factor(self):
        return self.full_bytes / self.kept_bytes if self.kept_bytes else float("nan")

    def close(self, run_info):
        if self.writer is None:  # no events
            self._open(run_info, {})
        self.writer.close(run_info.shower_distribution)
        with tables.open_file(self.path, "a") as h5:
            h5.root._v_attrs["IACTPIPE_REDUCTION_FACTOR"] = self.factor

    def summary(self):
        return {
            "reduction_factor": self.factor,
            "kept_pixel_fraction": self.n_kept / self.n_pixels if self.n_pixels else float("nan"),
            "full_waveform_bytes": self.full_bytes,
            "reduced_bytes": self.kept_bytes,
        }


# -- the step ---------------------------------------------------------------------------


class _CutFlow:
    """Counts of the image quality criteria over all images (ctapipe's QualityQuery table)."""

    def __init__(self):
        self.criteria = None
        self.counts = None
        self.cumulative = None

    def add(self, criteria, quality):
        if self.criteria is None:
            self.criteria = criteria
            self.counts = np.zeros(len(criteria) + 1, np.int64)
            self.cumulative = np.zeros(len(criteria) + 1, np.int64)
        values = [quality[name] for name, _ in criteria]
        n = len(values[0])
        passing = np.ones(n, bool)
        self.counts[0] += n
        self.cumulative[0] += n
        for i, value in enumerate(values, 1):
            self.counts[i] += np.count_nonzero(value)
            passing &= value
            self.cumulative[i] += np.count_nonzero(passing)


class Dl0ToDl1Step(Step):
    name = "dl0-to-dl1"
    description = ("Calibrate, extract, clean and parametrise camera images: sim_telarray or iactpipe DL0 files -> "
                   "DL1 parameters (and optionally images) in ctapipe's HDF5 layout, truth copied through.")


    def add_arguments(self, parser):
        parser.add_argument("inputs", nargs="+", metavar="INPUT",
                            help="sim_telarray files (.simtel, .simtel.gz, .simtel.zst) or iactpipe DL0 HDF5 files "
                                 "of one subarray")
        parser.add_argument("-o", "--output", required=True, help="output DL1 HDF5 file (e.g. gamma.dl1.h5)")
        parser.add_argument("--calibration-file", metavar="FILE",
                            help="HDF5 file of camera calibration coefficients (replaces those of the input)")
        parser.add_argument("--reduced-dl0", metavar="FILE",
                            help="also write a reduced DL0 file: waveforms of the pixels of a loose cleaning plus "
                                 "neighbour rings, charges of the others (one input only; see reduced_dl0 config)")

    def run(self, ctx):
        cfg = ctx.config
        inputs = [ctx.input(p) for p in ctx.args.inputs]
        file_series = None
        if ctx.args.calibration_file:
            calib_path = ctx.input(ctx.args.calibration_file, role="calibration coefficients")
            file_series = read_calibration_coefficients(calib_path)
        levels = ("DL1_IMAGES", "DL1_PARAMETERS") if cfg["write_images"] else ("DL1_PARAMETERS",)
        tmp = ctx.output(ctx.args.output, role="DL1", data_levels=levels)
        reduction = None
        if ctx.args.reduced_dl0:
            if len(inputs) > 1:
                raise UsageError("--reduced-dl0 takes a single input file")
            if ctx.args.calibration_file:
                raise UsageError("--reduced-dl0 cannot be combined with --calibration-file")
            reduced_tmp = ctx.output(ctx.args.reduced_dl0, role="reduced DL0", data_levels=("R1",))
            reduction = _ReducedDL0(reduced_tmp, cfg["reduced_dl0"], ctx.log)
        cut_flow = _CutFlow()
        remaining = cfg["max_events"]
        writer = None
        first = None
        t0 = time.perf_counter()
        try:
            for path in inputs:
                if remaining is not None and remaining <= 0:
                    ctx.log.info("%s: skipped, max_events reached", path)
                    continue
                source = open_source(path, cfg, remaining)
                try:
                    if writer is None:
                        first = (path, source.subarray)
                        series = (None if file_series is None
                                  else _check_calibration_file(ctx.args.calibration_file, file_series, source.subarray))
                        cameras, settings = self._setup(source.subarray, cfg, ctx.log)
                        writer = DL1Writer(tmp, source.subarray, write_images=cfg["write_images"])
                    else:
                        _check_same_subarray(first[1], source.subarray, path, first[0])
                    writer.write_run(source.run_info)
                    # timing fits draw from a generator started afresh for each input, as in one
                    # ctapipe-process run per file: results do not depend on other inputs or runs
                    rng = np.random.default_rng(0)
                    n_events = self._process(source, path, writer, cameras, settings, series, rng, cut_flow, cfg,
                                             reduction)
                    if remaining is not None:
                        remaining -= n_events
                    writer.write_shower_distribution(source.run_info.shower_distribution)
                    if reduction is not None:
                        reduction.close(source.run_info)
                finally:
                    source.close()
            if cut_flow.criteria is not None:
                writer.write_image_statistics(cut_flow.criteria, cut_flow.counts, cut_flow.cumulative)
        finally:
            if writer is not None:
                writer.close()
            if reduction is not None and reduction.writer is not None:
                reduction.writer.abort()  # no-op after a successful close
        elapsed = time.perf_counter() - t0
        ctx.log.info("%d array events, %d telescope events (%.0f telescope events/s)", writer.n_events,
                     writer.n_telescope_events, writer.n_telescope_events / max(elapsed, 1e-9))
        if reduction is not None:
            summary = reduction.summary()
            ctx.activity.record["reduced_dl0"] = {"path": str(ctx.args.reduced_dl0), **summary}
            ctx.log.info("reduced DL0 %s: waveforms of %.1f %% of the pixels kept, reduction factor %.2f",
                         ctx.args.reduced_dl0, 100 * summary["kept_pixel_fraction"], summary["reduction_factor"])
        if writer.n_events == 0:
            ctx.log.warning("the input holds no array events for the selected telescopes: %s has the run "
                            "configuration but no events", ctx.args.output)

    @staticmethod
    def _setup(subarray, cfg, log):
        """CameraSetup and ImageSettings per tel_id.

        Settings are per telescope type; camera setups per distinct camera (telescopes of
        one type may differ in readout, e.g. reference pulse shapes in prod6 files).
        """
        types = {}
        unique = []  # (telescope, setup)
        cameras = {}
        for tel_id in subarray.tel_ids:
            tel = subarray.tels[tel_id]
            if tel.type not in types:
                types[tel.type] = image_settings(cfg, tel.type)
            same = [s for known, s in unique if known.geometry == tel.geometry and known.readout == tel.readout
                    and known.optics.focal_length == tel.optics.focal_length]
            if not same:
                same = [CameraSetup.from_telescope(tel, cfg["focal_length_choice"])]
                unique.append((tel, same[0]))
            cameras[int(tel_id)] = same[0]
        entries = [("image_cleaning", key) for key in cfg["image_cleaning"]]
        entries += [("image_extraction", key) for key, value in cfg["image_extraction"].items()
                    if isinstance(value, dict)]
        for section, key in entries:
            if key != "*" and not any(key == t or fnmatchcase(t, key) for t in types):
                log.warning("%s entry %r matches no telescope type of the input (%s)",
                            section, key, ", ".join(types))
        settings = {int(t): types[subarray.tels[t].type] for t in subarray.tel_ids}
        return cameras, settings

    @staticmethod
    def _process(source, path, writer, cameras, settings, series, rng, cut_flow, cfg, reduction=None):
        """Process all batches of one input; returns the number of array events."""
        recalibrate = series is not None
        keep_waveforms = reduction is not None

        def prepare(batch, tel_id):  # a telescope's images and parameters, in the reader's threads
            calibration = _telescope_calibration(batch, tel_id, source.run_info, series or {})
            try:
                return telescope_images(batch.tel[tel_id], cameras[tel_id], settings[tel_id], calibration, recalibrate,
                                        keep_waveforms)
            except ValueError:  # raised again, and reported, where process_batch computes them
                return None

        if isinstance(source, _DL0File):
            # TwoPassWindowSum's time fits draw from rng, so its batches are processed event by event, here.
            # Compact DL0 samples are calibrated in the extractor's loop (the R1 never written out) with the
            # coefficients given to the processor: DL0Reader batches carry none of their own, so these are
            # the file's, unless a calibration file replaces them (then the reader calibrates, as before)
            two_pass = any(s.extractor == "TwoPassWindowSum" for s in settings.values())
            items = source.iter_batches(cfg["chunk_size"], prepare=None if two_pass else prepare,
                                        raw_samples=series is None)
            if two_pass:
                items = ((batch, None) for batch in items)
        else:
            items = ((batch, None) for batch in source.iter_batches(cfg["chunk_size"]))
        n_events = 0
        for batch, prepared in progress(items, desc=str(path.name)):
            n_events += len(batch)
            calibration = _batch_calibration(batch, source.run_info, series or {})
            try:
                if prepared is not None and all(prepared.get(t) is not None for t in batch.tel):
                    # the timing fits draw from rng in event order, here
                    dl1 = finish_batch(batch, {t: prepared[t] for t in sorted(batch.tel)}, cameras, settings, rng)
                else:
                    dl1 = process_batch(batch, cameras, settings, calibration, rng, recalibrate, keep_waveforms)
            except ValueError as err:
                raise DataError(f"{path}: {err}") from None
            for tel_id, result in dl1.items():
                criteria = settings[tel_id].quality_criteria
                cut_flow.add(criteria, result.quality)
                if result.true_quality is not None:
                    cut_flow.add(criteria, result.true_quality)
            writer.write_batch(batch, dl1)
            if reduction is not None:
                reduction.write(path, batch, dl1, calibration, cameras, source.run_info)
            # release this chunk before the reader builds the next one (peak memory: one chunk)
            del batch, dl1, calibration, prepared
        return n_events


def main():
    sys.exit(Dl0ToDl1Step().main())
