"""Our DL0 HDF5 files (ctapipe 0.28 layout): writer and reader of EventBatch streams.

A DL0 file holds the instrument (``/configuration/instrument``), observation and
scheduling block, telescope pointing, simulation run settings and the
shower distribution of all thrown showers, the array and telescope triggers,
the true showers / impacts / images, and per telescope either

- R1 waveforms ``/r1/event/telescope/tel_XXX`` (gain selected, p.e.), optionally
  with raw R0 ``/r0/event/telescope/tel_XXX`` (uint16, all gains) and the
  R0 -> R1 coefficients ``/dl1/monitoring/telescope/calibration/camera/coefficients/tel_XXX``, or
- compact DL0: per telescope event a row of ``/dl0/event/telescope/waveforms/tel_XXX`` (ids,
  time, pixel status, selected gain) and a row of the array ``/dl0/event/telescope/samples/tel_XXX``
  (n_events, n_pixels, n_samples): the raw samples (uint16) of the selected gain only, plus those
  coefficients; read back as R1 (the same float32 values as calibrating R0), in ~0.3 of the
  bytes of R1 float32.  Files of the data model's first version (iactpipe-dl0 v1) kept the
  samples in a ``waveform`` column of the table; they are still read.  Or
- calibrated images ``/dl1/event/telescope/images/tel_XXX`` (images-only files), or
- reduced DL0 (``iactpipe-dl0-to-dl1 --reduced-dl0``): ``/dl0/event/telescope/reduction/tel_XXX``
  with per event the pixels kept by a loose cleaning plus neighbour rings, the charge and
  peak time of every pixel, the selected gain and pixel status; and one row per kept pixel
  with its samples: raw uint16 of the selected gain (``/dl0/event/telescope/reduced_samples/tel_XXX``,
  read back as R1 with the coefficients, bit for bit) or R1 float32 where the input had no R0
  (``/dl0/event/telescope/reduced_waveforms/tel_XXX``); plus the coefficients (time shifts).
  Files of earlier versions (zero-filled R1 in ``/r1/event/telescope/tel_XXX``) are still read.

ctapipe's TableLoader and HDF5EventSource read these files; :class:`DL0Reader`
reads them back as :class:`~iactpipe.io.events.EventBatch` objects, so later
steps treat our DL0 like a sim_telarray file.  Times are written as ctapipe's
``ctao_high_res`` (TAI seconds + quarter nanoseconds since 1970).
"""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import tables

from ..errors import DataError
from ..instrument.subarray import LAYOUT, SubarrayDescription
from ..provenance import DATA_MODEL_VERSION
from .chunks import RowChunkReader
from .events import EVENT_TYPE_SUBARRAY, EventBatch, RunInfo, TelescopeCalibration, TelescopeEvents
from .tables import OPEN_PARAMS, ROWS_OF_ATTR, HDF5Writer

__all__ = ["DL0Writer", "DL0Reader", "mjd_to_high_res", "high_res_to_mjd", "UNIX_TAI_EPOCH_MJD",
           "selected_gain_samples", "r1_from_selected_samples", "r1_from_kept_samples",
           "write_atmosphere_profile", "read_atmosphere_profile"]

#: MJD (TAI) of the epoch of ctapipe's ctao_high_res timestamps (astropy's unix_tai zero)
UNIX_TAI_EPOCH_MJD = 40587.0

TRIGGER = "/dl1/event/subarray/trigger"
TEL_TRIGGER = "/dl1/event/telescope/trigger"
SHOWER = "/simulation/event/subarray/shower"
OBSERVATION_BLOCK = "/configuration/observation/observation_block"
SIM_RUN = "/configuration/simulation/run"
SHOWER_DISTRIBUTION = "/simulation/service/shower_distribution"
ATMOSPHERE = "/simulation/service/atmosphere_density_profile"
_PROFILE_COLUMNS = ("height", "density", "column_density")
R1_GROUP = "/r1/event/telescope"
R0_GROUP = "/r0/event/telescope"
IMAGES_GROUP = "/dl1/event/telescope/images"
TRUE_IMAGES_GROUP = "/simulation/event/telescope/images"
IMPACT_GROUP = "/simulation/event/telescope/impact"
POINTING_GROUP = "/configuration/telescope/pointing"
#: tracking pointing of observed runs (ctapipe's DL0_TEL_POINTING_GROUP: time, azimuth, altitude)
POINTING_MONITORING_GROUP = "/dl0/monitoring/telescope/pointing"
COEFFICIENTS_GROUP = "/dl1/monitoring/telescope/calibration/camera/coefficients"
REDUCTION_GROUP = "/dl0/event/telescope/reduction"
#: reduced DL0: one row of R1 samples per kept pixel (schema dl0_reduced_waveforms) ...
REDUCED_WAVEFORMS_GROUP = "/dl0/event/telescope/reduced_waveforms"
#: ... or of raw samples of the selected gain (schema dl0_reduced_samples), R1 = calibrated with the coefficients
REDUCED_SAMPLES_GROUP = "/dl0/event/telescope/reduced_samples"
#: compact DL0: per telescope event its ids, time, pixel status and selected gain (schema dl0_waveforms) ...
DL0_WAVEFORMS_GROUP = "/dl0/event/telescope/waveforms"
#: ... and, row for row, its raw samples of the selected gain: uint16 arrays (n_events, n_pixels, n_samples)
DL0_SAMPLES_GROUP = "/dl0/event/telescope/samples"
PRODUCER = b"simulation"
#: raw ADC samples (R0, compact and reduced DL0; zstd would bound the DL0 -> DL1 step, lz4 reads ~5x
#: and writes ~7x faster).  lz4 stores table rows in ~0.8 of their size; the compact DL0's uint16
#: arrays, where the shuffle works on 2-byte items, in ~0.6, ~2.4x faster to read (run202 LSTCam rows)
WAVEFORM_FILTERS = tables.Filters(complevel=1, complib="blosc:lz4", shuffle=True, fletcher32=True)
#: float32 R1 waveforms: lz4 saves ~1 % of their bytes and more than doubles the time to read them
#: (LSTCam row: 157 instead of 70 µs); they are stored uncompressed, with the checksum
FLOAT_WAVEFORM_FILTERS = tables.Filters(complevel=0, fletcher32=True)
#: filters of the waveform groups
_GROUP_FILTERS = {R1_GROUP: FLOAT_WAVEFORM_FILTERS, REDUCED_WAVEFORMS_GROUP: FLOAT_WAVEFORM_FILTERS}
DATA_LEVELS = {"r1": "R1", "r0": "R0,R1", "images": "DL1_IMAGES", "reduced": "R1", "dl0": "DL0"}


def mjd_to_high_res(mjd):
    """MJD (TAI) -> (n, 2) uint32 [seconds, quarter nanoseconds] since the unix_tai epoch."""
    mjd = np.asarray(mjd, dtype=np.float64)
    days = mjd - UNIX_TAI_EPOCH_MJD
    whole_days = np.floor(days)
    seconds = (days - whole_days) * 86400.0
    whole_seconds = np.floor(seconds)
    qns = np.round((seconds - whole_seconds) * 4e9)
    carry = qns >= 4e9
    whole_seconds = np.where(carry, whole_seconds + 1, whole_seconds)
    qns = np.where(carry, qns - 4e9, qns)
    out = np.empty(mjd.shape + (2,), np.uint32)
    out[..., 0] = (whole_days * 86400 + whole_seconds).astype(np.uint64)
    out[..., 1] = qns.astype(np.uint64)
    return out


def high_res_to_mjd(stamps):
    """(n, 2) [seconds, quarter nanoseconds] -> MJD (TAI)."""
    stamps = np.asarray(stamps)
    seconds = stamps[..., 0].astype(np.float64)
    fraction = stamps[..., 1].astype(np.float64) * 0.25e-9
    return UNIX_TAI_EPOCH_MJD + (seconds + fraction) / 86400.0


class DL0Writer:
    """Write a run (RunInfo) and its EventBatch stream to a DL0 file.

    ``mode`` is ``"r1"`` (R1 waveforms), ``"r0"`` (R1 + raw R0 + calibration
    coefficients), ``"images"`` (calibrated images, no waveforms) or ``"reduced"``
    (the samples of some pixels, calibration coefficients and the extracted charges:
    telescope events need ``waveform_kept``, ``image``, ``peak_time``, ``selected_gain_channel``
    and ``r0`` (raw samples stored; the run's coefficients must give their R1) or ``r1_kept``
    / ``r1`` (R1 samples stored), the same for all batches of a telescope) or ``"dl0"``
    (the R0 samples of the selected gain channel and the calibration coefficients, which
    must hold for the whole run: telescope events need ``r0`` and ``selected_gain_channel``).
    """

    MODES = ("r1", "r0", "images", "reduced", "dl0")

    def __init__(self, path, run_info, mode="r1"):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.path = Path(path)
        self.run_info = run_info
        self.subarray = run_info.subarray
        self.mode = mode
        self.n_events = 0
        self._tel_ids = [int(t) for t in self.subarray.tel_ids]
        if mode == "dl0":
            missing = sorted(set(self._tel_ids) - set(run_info.calibration))
            if missing:
                raise ValueError(f"mode 'dl0' needs calibration coefficients of every telescope, "
                                 f"tels {missing} have none")
        self._writer = HDF5Writer(path, "w")
        self._tel_index = {t: i for i, t in enumerate(self._tel_ids)}
        self._reduced_raw = {}  # mode reduced: tel_id -> whether it stores raw samples
        self._samples = {}  # mode dl0: tel_id -> its samples array
        self._write_header()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write_header(self):
        w = self._writer
        info = self.run_info
        self.subarray.to_hdf(w)
        start = info.start_time_mjd if info.start_time_mjd is not None else np.nan
        w.write("scheduling_block", {
            "sb_id": np.array([info.obs_id], np.uint64), "sb_type": np.array([0]), "producer_id": [PRODUCER],
            "observing_mode": np.array([-1]), "pointing_mode": np.array([1]),
        })
        w.write("observation_block", {
            "obs_id": np.array([info.obs_id], np.uint64), "sb_id": np.array([info.obs_id], np.uint64),
            "producer_id": [PRODUCER], "state": np.array([1]),
            "subarray_pointing_lat": np.array([info.pointing_alt], np.float32),
            "subarray_pointing_lon": np.array([info.pointing_az], np.float32),
            "subarray_pointing_frame": np.array([0]), "scheduled_duration": np.array([np.nan]),
            "scheduled_start_time": np.array([start]), "actual_start_time": np.array([start]),
            "actual_duration": np.array([np.nan]),
        })
        if info.simulation_config is not None:
            w.write("simulation_run", {k: np.atleast_1d(v) for k, v in info.simulation_config.items()})
        if info.is_simulation and info.atmosphere_profile is not None:
            write_atmosphere_profile(w, info.atmosphere_profile)
        for tel_id in self._tel_ids:
            w.write("telescope_pointing", {
                "obs_id": np.array([info.obs_id], np.int32), "tel_id": np.array([tel_id], np.int64),
                "telescope_pointing_azimuth": np.array([np.deg2rad(info.pointing_az)], np.float32),
                "telescope_pointing_altitude": np.array([np.deg2rad(info.pointing_alt)], np.float32),
            }, tel_id=tel_id)
        if self.mode in ("r0", "reduced", "dl0"):
            stamp = mjd_to_high_res(np.array([start if np.isfinite(start) else UNIX_TAI_EPOCH_MJD]))
            for tel_id, calib in sorted(info.calibration.items()):
                n_gains, n_pixels = calib.dc_to_pe.shape
                w.write("calibration_coefficients", {
                    "obs_id": np.array([info.obs_id], np.int32), "tel_id": np.array([tel_id], np.int16),
                    "time": stamp, "pedestal_per_sample": calib.pedestal_per_sample[None],
                    "dc_to_pe": calib.dc_to_pe[None], "time_shift": calib.time_shift[None],
                    "unusable": calib.unusable[None], "is_valid": np.array([True]),
                }, dims={"n_gains": n_gains, "n_pixels": n_pixels}, tel_id=tel_id)
        waveform_groups = {"images": (), "dl0": (DL0_SAMPLES_GROUP,), "r0": (R1_GROUP, R0_GROUP),
                           "reduced": (REDUCTION_GROUP, REDUCED_WAVEFORMS_GROUP, REDUCED_SAMPLES_GROUP)}
        for group in waveform_groups.get(self.mode, (R1_GROUP,)):
            if group in w.h5:
                continue
            parent, name = group.rsplit("/", 1)
            filters = _GROUP_FILTERS.get(group, WAVEFORM_FILTERS)
            w.h5.create_group(parent, name, createparents=True, filters=filters)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tables.NaturalNameWarning)
            w.set_root_attrs(**{
                "CTA PROCESS TYPE": "Simulation" if info.is_simulation else "Observation",
                "CTA PROCESS SUBTYPE": "iactpipe reduced DL0" if self.mode == "reduced" else "iactpipe toy simulation",
                "CTA PROCESS ID": str(info.obs_id), "CTA INSTRUMENT ID": self.subarray.name,
                "CTA PRODUCT DATA MODEL VERSION": DATA_MODEL_VERSION,
                "CTA PRODUCT DATA LEVELS": DATA_LEVELS[self.mode],
            })

    def write(self, batch):
        """Append one EventBatch (rows ordered by event; telescope rows by event then tel_id)."""
        n = len(batch)
        if n == 0:
            return
        w = self._writer
        obs = np.full(n, batch.obs_id, np.int32)
        w.write("subarray_trigger", {
            "obs_id": obs, "event_id": batch.event_id.astype(np.int64), "time": mjd_to_high_res(batch.time_mjd),
            "tels_with_trigger": batch.tels_with_trigger, "event_type": batch.event_type.astype(np.int64),
        }, dims={"n_tels": len(self._tel_ids)})
        # telescope triggers: one row per (event, triggered telescope), events in batch order
        rows = []
        for tel_id, te in batch.tel.items():
            ev_pos = batch_positions(batch.event_id, te.event_id, batch.tels_with_trigger[:, self._tel_index[tel_id]])
            rows.append((ev_pos, np.full(len(te), tel_id), te))
        ev_pos = np.concatenate([r[0] for r in rows])
        tel_col = np.concatenate([r[1] for r in rows])
        order = np.lexsort((tel_col, ev_pos))

        def gather(attr, default):
            return np.concatenate([getattr(te, attr) if getattr(te, attr) is not None else
                                   np.full(len(te), default) for _, _, te in rows])[order]

        w.write("telescope_trigger", {
            "obs_id": np.full(len(order), batch.obs_id, np.int32), "event_id": batch.event_id[ev_pos[order]],
            "tel_id": tel_col[order].astype(np.int16),
            "time": mjd_to_high_res(gather("time_mjd", np.nan)),
            "event_type": gather("event_type", EVENT_TYPE_SUBARRAY).astype(np.int64),
            "n_trigger_pixels": gather("n_trigger_pixels", -1).astype(np.int64),
        })
        if batch.shower is not None:
            shower = dict(batch.shower)
            shower["obs_id"] = obs
            shower["event_id"] = batch.event_id.astype(np.int64)
            w.write("simulation_shower", shower)
        if self.mode == "dl0":
            self._check_run_calibration(batch)
        for tel_id in sorted(batch.tel):
            self._write_telescope(batch, tel_id, batch.tel[tel_id])
        self.n_events += n

    def _check_run_calibration(self, batch):
        """Mode dl0 stores one set of coefficients per run: a batch must not bring others."""
        for tel_id, calib in (batch.calibration or {}).items():
            header = self.run_info.calibration.get(tel_id)
            if header is None or calib is header:
                continue
            if not all(np.array_equal(np.asarray(getattr(calib, f), np.float32), np.asarray(getattr(header, f),
                                                                                            np.float32))
                       for f in ("pedestal_per_sample", "dc_to_pe")):
                raise ValueError(f"mode 'dl0': the calibration coefficients of tel {tel_id} change within the run")

    def _write_telescope(self, batch, tel_id, te):
        w = self._writer
        m = len(te)
        keys = {
            "obs_id": np.full(m, batch.obs_id, np.int32), "event_id": te.event_id.astype(np.int64),
            "tel_id": np.full(m, tel_id, np.int16),
        }
        n_pixels = self.subarray.tels[tel_id].geometry.n_pixels
        if self.mode == "dl0":
            samples = selected_gain_samples(te.r0, te.selected_gain_channel)
            if samples.shape[1] != n_pixels:
                raise ValueError(f"tel {tel_id}: r0 has {samples.shape[1]} pixels, the camera {n_pixels}")
            w.write("dl0_waveforms", {
                **keys, "event_type": (te.event_type if te.event_type is not None
                                       else np.full(m, EVENT_TYPE_SUBARRAY)).astype(np.int64),
                "event_time": mjd_to_high_res(te.time_mjd),
                "pixel_status": (te.pixel_status if te.pixel_status is not None
                                 else np.where(te.selected_gain_channel == 0, 4, 8).astype(np.uint8)),
                "selected_gain_channel": te.selected_gain_channel,
            }, dims={"n_pixels": n_pixels}, tel_id=tel_id)
            self._append_samples(tel_id, samples)
        elif self.mode == "images":
            w.write("dl1_images", {
                **keys, "image": te.image, "peak_time": te.peak_time,
                "image_mask": np.zeros((m, n_pixels), bool), "is_valid": np.ones(m, bool),
            }, dims={"n_pixels": n_pixels}, tel_id=tel_id)
        elif self.mode == "reduced":
            self._write_reduced(keys, te, n_pixels, tel_id)
        else:
            n_samples = te.r1.shape[-1]
            status = te.pixel_status
            if status is None:
                status = np.where(te.selected_gain_channel == 0, 4, 8).astype(np.uint8)
            w.write("r1_waveforms", {
                **keys, "event_type": (te.event_type if te.event_type is not None
                                       else np.full(m, EVENT_TYPE_SUBARRAY)).astype(np.int64),
                "event_time": mjd_to_high_res(te.time_mjd), "waveform": te.r1[:, None],
                "pixel_status": status, "selected_gain_channel": te.selected_gain_channel,
            }, dims={"n_pixels": n_pixels, "n_samples": n_samples}, tel_id=tel_id)
            if self.mode == "r0":
                w.write("r0_waveforms", {**keys, "waveform": te.r0},
                        dims={"n_gains": te.r0.shape[1], "n_pixels": n_pixels, "n_samples": te.r0.shape[-1]},
                        tel_id=tel_id)
        if te.true_image is not None:
            w.write("simulation_images", {
                **keys, "true_image_sum": te.true_image.sum(axis=1).astype(np.int32),
                "true_image": te.true_image.astype(np.int32),
            }, dims={"n_pixels": n_pixels}, tel_id=tel_id)
        if te.true_impact_distance is not None:
            w.write("simulation_impact", {
                **keys, "true_impact_distance": te.true_impact_distance.astype(np.float64),
                "true_impact_distance_uncert": np.zeros(m),
            }, tel_id=tel_id)

    def _append_samples(self, tel_id, samples):
        """Compact DL0: append rows to ``DL0_SAMPLES_GROUP/tel_XXX`` (created by the first batch)."""
        node = self._samples.get(tel_id)
        if node is None:
            row_shape = tuple(samples.shape[1:])
            node = self._writer.h5.create_earray(
                DL0_SAMPLES_GROUP, f"tel_{tel_id:03d}", atom=tables.UInt16Atom(), shape=(0, *row_shape),
                filters=WAVEFORM_FILTERS, chunkshape=(1, *row_shape),  # one telescope event a chunk
                title="raw samples of the selected gain (n_events, n_pixels, n_samples)")
            node.attrs[ROWS_OF_ATTR] = f"{DL0_WAVEFORMS_GROUP}/tel_{tel_id:03d}"
            self._samples[tel_id] = node
        elif tuple(node.shape[1:]) != tuple(samples.shape[1:]):
            raise ValueError(f"tel {tel_id}: samples of shape {samples.shape[1:]}, earlier batches "
                             f"{tuple(node.shape[1:])}")
        node.append(np.asarray(samples, dtype=np.uint16))

    def _write_reduced(self, keys, te, n_pixels, tel_id):
        """Reduced DL0: per event the pixel table, per kept pixel one row of samples: the raw
        samples of the selected gain where ``te.r0`` is given (2 bytes a sample; the run's
        coefficients turn them into R1), else the R1 samples (``r1_kept`` or ``r1[kept]``)."""
        kept = np.asarray(te.waveform_kept, dtype=bool)
        n_rows = int(np.count_nonzero(kept))
        raw = te.r0 is not None
        if raw:
            if tel_id not in self.run_info.calibration:
                raise ValueError(f"tel {tel_id}: raw samples of a reduced DL0 need its calibration coefficients")
            samples = selected_gain_samples(te.r0, te.selected_gain_channel)[kept]
        else:
            samples = te.r1_kept if te.r1_kept is not None else np.asarray(te.r1)[kept]
        if len(samples) < n_rows:
            raise ValueError(f"tel {tel_id}: waveform_kept marks {n_rows} waveforms, r1_kept has {len(samples)}")
        if self._reduced_raw.setdefault(tel_id, raw) != raw:
            raise ValueError(f"tel {tel_id}: a reduced DL0 stores raw samples (r0) or R1 samples of a "
                             "telescope, not both")
        status = te.pixel_status
        if status is None:
            status = np.where(te.selected_gain_channel == 0, 4, 8).astype(np.uint8)
        self._writer.write("dl0_reduced_pixels", {
            **keys, "waveform_kept": kept, "image": te.image, "peak_time": te.peak_time,
            "selected_gain_channel": te.selected_gain_channel, "pixel_status": status,
        }, dims={"n_pixels": n_pixels}, tel_id=tel_id)
        events, pixels = np.nonzero(kept)
        self._writer.write("dl0_reduced_samples" if raw else "dl0_reduced_waveforms", {
            "event_id": keys["event_id"][events], "pixel_id": pixels.astype(np.uint16),
            "waveform": samples[:n_rows],
        }, dims={"n_samples": samples.shape[-1]}, tel_id=tel_id)

    def abort(self):
        """Close the file as it is (after an error: the caller deletes it)."""
        if self._writer.h5.isopen:
            self._writer.close()

    def close(self, shower_distribution=None):
        """Write the shower distribution (if given) and the (possibly empty) event tables; close the file."""
        if not self._writer.h5.isopen:
            return
        w = self._writer
        if TRIGGER not in w.h5:
            w.write_empty("subarray_trigger", dims={"n_tels": len(self._tel_ids)})
            w.write_empty("telescope_trigger")
        if self.run_info.is_simulation and "/simulation/event/subarray/shower" not in w.h5:
            # no event triggered: still a complete file that ctapipe's readers accept
            w.write_empty("simulation_shower")
        groups = {"images": [IMAGES_GROUP], "dl0": [DL0_WAVEFORMS_GROUP, DL0_SAMPLES_GROUP],
                  "reduced": [REDUCTION_GROUP]}.get(self.mode, [R1_GROUP])
        if self.mode == "r0":
            groups.append(R0_GROUP)
        if self.run_info.is_simulation:
            groups += [TRUE_IMAGES_GROUP, IMPACT_GROUP]
        for group in groups:
            if group not in w.h5:
                where, name = group.rsplit("/", 1)
                w.h5.create_group(where, name, createparents=True)
        if self.mode == "reduced":  # keep the sample table group that is used
            kinds = [g for g in (REDUCED_WAVEFORMS_GROUP, REDUCED_SAMPLES_GROUP) if w.h5.get_node(g)._v_nchildren]
            for group in (REDUCED_WAVEFORMS_GROUP, REDUCED_SAMPLES_GROUP):
                if kinds and group not in kinds:
                    w.h5.remove_node(group)
        dist = shower_distribution if shower_distribution is not None else self.run_info.shower_distribution
        if dist is not None:
            columns, dims = shower_distribution_row(dist)
            w.write("shower_distribution", columns, dims=dims)
        w.close()


def selected_gain_samples(r0, selected_gain_channel):
    """(n_events, n_pixels, n_samples) samples of the selected gain of R0 (n_events, n_gains, n_pixels, n_samples)."""
    r0 = np.asarray(r0)
    if r0.ndim != 4:
        raise ValueError(f"r0 must have shape (n_events, n_gains, n_pixels, n_samples), got {r0.shape}")
    if r0.shape[1] == 1:
        return r0[:, 0]
    index = np.asarray(selected_gain_channel, dtype=np.intp)[:, np.newaxis, :, np.newaxis]
    return np.take_along_axis(r0, index, axis=1)[:, 0]


def r1_from_selected_samples(samples, selected_gain_channel, calibration):
    """R1 (float32) of selected-gain samples: exactly what `calibrate_r1` gives for the R0 they came from."""
    from ..image.calibration import calibrate_selected_samples

    return calibrate_selected_samples(samples, selected_gain_channel, calibration.pedestal_per_sample,
                                      calibration.dc_to_pe)


def r1_from_kept_samples(samples, pixel_id, gain, calibration):
    """R1 (n_rows, n_samples) float32 of rows of raw samples of pixels ``pixel_id`` in gains ``gain``:
    bit for bit what `calibrate_r1` gives for those pixels (the coefficients of each row's pixel and gain)."""
    from ..image.extraction import calibrate_kept_samples

    return calibrate_kept_samples(samples, pixel_id, gain, calibration.pedestal_per_sample, calibration.dc_to_pe)


def batch_positions(event_ids, tel_event_ids, triggered=None):
    """Index into a batch's ``event_ids`` of each of a telescope's rows (both in event order).

    ``triggered`` (bool per event), when given, marks the events the telescope took
    part in; the rows must then be exactly those events.  Without it each row takes
    the next event with its id, so repeated event ids (replayed files) work too.
    """
    event_ids = np.asarray(event_ids)
    tel_event_ids = np.asarray(tel_event_ids)
    if triggered is not None:
        positions = np.flatnonzero(triggered)
        if len(positions) == len(tel_event_ids) and np.array_equal(event_ids[positions], tel_event_ids):
            return positions
    positions = np.empty(len(tel_event_ids), dtype=np.int64)
    start = 0
    for i, event_id in enumerate(tel_event_ids.tolist()):
        match = np.flatnonzero(event_ids[start:] == event_id)
        if len(match) == 0:
            raise ValueError(f"telescope rows name event {event_id}, not in the batch (or out of order)")
        positions[i] = start + match[0]
        start = positions[i] + 1
    return positions


def shower_distribution_row(dist):
    """Columns and dims of one ``/simulation/service/shower_distribution`` row (dict as in ``RunInfo``)."""
    hist = np.asarray(dist["histogram"], np.float32)
    columns = {
        "obs_id": np.array([dist["obs_id"]], np.int32), "hist_id": np.array([dist["hist_id"]], np.int64),
        "n_entries": np.array([dist["n_entries"]], np.int64),
        "bins_energy": np.asarray(dist["bins_energy"], np.float64)[None],
        "bins_core_dist": np.asarray(dist["bins_core_dist"], np.float64)[None],
        "histogram": hist[None],
    }
    dims = {"n_energy_edges": len(dist["bins_energy"]), "n_core_edges": len(dist["bins_core_dist"]),
            "n_energy_bins": hist.shape[0], "n_core_bins": hist.shape[1]}
    return columns, dims


def write_atmosphere_profile(writer, profile):
    """``/simulation/service/atmosphere_density_profile`` from a ``RunInfo.atmosphere_profile`` dict
    (columns in km, g/cm³, g/cm²; the other keys become table attributes, as ctapipe writes them)."""
    attrs = {k: v for k, v in profile.items() if k not in _PROFILE_COLUMNS}
    writer.write("atmosphere_density_profile",
                 {k: np.asarray(profile[k], np.float64) for k in _PROFILE_COLUMNS}, attrs=attrs)


def read_atmosphere_profile(h5):
    """The ``RunInfo.atmosphere_profile`` dict of an open HDF5 file, or None without the table."""
    if ATMOSPHERE not in h5:
        return None
    node = h5.get_node(ATMOSPHERE)
    rows = node.read()
    profile = {k: np.asarray(rows[k], np.float64) for k in _PROFILE_COLUMNS}
    for key in ("atmosphere_id", "atmosphere_name", "observation_level", "atmosphere_height"):
        if key in node.attrs._v_attrnames:
            value = node.attrs[key]
            profile[key] = value.item() if isinstance(value, np.generic) else value
    return profile


def _scalar(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if hasattr(value, "item") else value


def _set_r1(te, reader, raw, start, calibration):
    """A read-ahead job: ``te.r1`` from compact samples (``reader.decode(raw, start)``; ``raw``
    itself where ``reader`` is None), or the samples themselves in ``te.samples`` where
    ``calibration`` is None."""
    samples = raw if reader is None else reader.decode(raw, start)
    if calibration is None:
        te.samples = samples
    else:
        te.r1 = r1_from_selected_samples(samples, te.selected_gain_channel, calibration)


class _BatchTasks:
    """A batch's per-telescope work (decode its compact samples, then ``prepare(batch, tel_id)``),
    done by whichever thread takes a task first: the read-ahead thread, or the caller's thread
    when it needs the batch before that thread is through (`result`).  `cancel` leaves the
    tasks no thread has taken undone (the caller stopped reading)."""

    def __init__(self, batch, jobs, prepare):
        self.batch, self.prepare = batch, prepare
        self.tel_ids = [t for t in batch.tel if t in jobs or prepare is not None]
        self.jobs = jobs
        self.results = {}
        self.errors = {}
        self._next = 0
        self._finished = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not self.tel_ids:
            self._done.set()

    def run(self):
        """Run tasks until none are left to take."""
        while True:
            with self._lock:
                if self._next == len(self.tel_ids):
                    return
                tel_id = self.tel_ids[self._next]
                self._next += 1
            try:
                job = self.jobs.get(tel_id)
                if job is not None:
                    job()
                if self.prepare is not None:
                    self.results[tel_id] = self.prepare(self.batch, tel_id)
            except Exception as err:  # raised again by `result`, in the caller's thread
                self.errors[tel_id] = err
            except BaseException:  # e.g. KeyboardInterrupt in the caller's thread: take no more tasks
                self.cancel()
                raise
            finally:
                self._count_done(1)

    def cancel(self):
        """Take no more tasks (those running finish)."""
        with self._lock:
            untaken = len(self.tel_ids) - self._next
            self._next = len(self.tel_ids)
        self._count_done(untaken)

    def _count_done(self, n):
        with self._lock:
            self._finished += n
            if self._finished == len(self.tel_ids):
                self._done.set()

    def result(self):
        """``{tel_id: prepare(batch, tel_id)}`` once every task is done (helping with those not yet
        taken); the first telescope's error, in batch order, is raised."""
        self.run()
        self._done.wait()
        for tel_id in self.tel_ids:
            if tel_id in self.errors:
                raise self.errors[tel_id]
        return self.results


class DL0Reader:
    """Read our DL0 files as EventBatch objects.

    ``kind`` is ``"r1"``, ``"r0"`` (R0 + calibration, R1 also present), ``"reduced"``
    (``r1_kept``: R1 of the ``waveform_kept`` pixels only, see :class:`DL0Writer`), ``"dl0"`` (selected-gain samples +
    calibration, returned as R1) or ``"images"``.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        try:
            self.h5 = tables.open_file(self.path, "r", **OPEN_PARAMS)
        except (OSError, tables.HDF5ExtError):
            raise DataError(f"{self.path}: not a readable HDF5 file") from None
        try:
            for group in (LAYOUT, TRIGGER, TEL_TRIGGER, OBSERVATION_BLOCK):
                if group not in self.h5:
                    raise DataError(f"{self.path}: not a DL0 file, {group} missing")
            if DL0_WAVEFORMS_GROUP in self.h5 and COEFFICIENTS_GROUP in self.h5:
                self.kind = "dl0"
            elif REDUCTION_GROUP in self.h5:  # (before iactpipe 0.5 with zero-filled R1 in R1_GROUP)
                self.kind = "reduced"
            elif R0_GROUP in self.h5 and COEFFICIENTS_GROUP in self.h5:
                self.kind = "r0"
            elif R1_GROUP in self.h5:
                self.kind = "r1"
            elif IMAGES_GROUP in self.h5:
                self.kind = "images"
            elif self.h5.get_node(TRIGGER).nrows == 0:
                self.kind = "empty"
            else:
                raise DataError(f"{self.path}: no event data, {R1_GROUP} (or {IMAGES_GROUP}) missing")
            self.subarray = SubarrayDescription.from_hdf(self.path)
        except Exception:
            self.h5.close()
            raise
        self._run_info = None
        self._nodes = {}
        self._chunk_readers = {}  # array path -> RowChunkReader

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for reader in getattr(self, "_chunk_readers", {}).values():
            reader.close()
        if self.h5.isopen:
            self.h5.close()

    def __len__(self):
        return self.h5.get_node(TRIGGER).nrows

    @property
    def run_info(self):
        if self._run_info is None:
            self._run_info = self._read_run_info()
        return self._run_info

    def _read_run_info(self):
        h5 = self.h5
        ob = h5.get_node(OBSERVATION_BLOCK).read()
        obs_id = int(ob["obs_id"][0])
        alt, az = float(ob["subarray_pointing_lat"][0]), float(ob["subarray_pointing_lon"][0])
        first_tel = int(self.subarray.tel_ids[0])
        pointing = f"{POINTING_GROUP}/tel_{first_tel:03d}"
        if pointing in h5:
            row = h5.get_node(pointing).read()
            alt = float(np.rad2deg(row["telescope_pointing_altitude"][0]))
            az = float(np.rad2deg(row["telescope_pointing_azimuth"][0]))
        sim_config = None
        if SIM_RUN in h5:
            run = h5.get_node(SIM_RUN).read()
            sim_config = {name: _scalar(run[name][0]) for name in run.dtype.names}
        distribution = None
        if SHOWER_DISTRIBUTION in h5:
            dist = h5.get_node(SHOWER_DISTRIBUTION).read()
            distribution = {name: (dist[name][0] if dist[name].ndim > 1 else _scalar(dist[name][0]))
                            for name in dist.dtype.names}
        calibration = {}
        if COEFFICIENTS_GROUP in h5:
            for node in h5.get_node(COEFFICIENTS_GROUP)._f_iter_nodes("Table"):
                row = node.read()
                tel_id = int(row["tel_id"][0])
                calibration[tel_id] = TelescopeCalibration(
                    tel_id=tel_id, pedestal_per_sample=row["pedestal_per_sample"][0],
                    dc_to_pe=row["dc_to_pe"][0], time_shift=row["time_shift"][0], unusable=row["unusable"][0],
                )
        track = None
        if POINTING_MONITORING_GROUP in h5:
            track = {}
            for node in h5.get_node(POINTING_MONITORING_GROUP)._f_iter_nodes("Table"):
                rows = node.read()
                track[int(node._v_name.removeprefix("tel_"))] = {
                    "time_mjd": high_res_to_mjd(rows["time"]), "alt": np.rad2deg(rows["altitude"]),
                    "az": np.rad2deg(rows["azimuth"]),
                }
        start = float(ob["actual_start_time"][0])
        return RunInfo(
            obs_id=obs_id, subarray=self.subarray, pointing_alt=alt, pointing_az=az,
            simulation_config=sim_config, shower_distribution=distribution, calibration=calibration,
            is_simulation="/simulation" in h5, start_time_mjd=start if np.isfinite(start) else None,
            pointing_track=track or None, atmosphere_profile=read_atmosphere_profile(h5),
            observation_block=({name: ob[name][0] for name in ob.dtype.names}
                               if int(ob["subarray_pointing_frame"][0]) != 0 else None),
        )

    def pointing_at(self, tel_id, time_mjd):
        """Pointing (alt, az) in deg of telescope ``tel_id`` (None: the array) at ``time_mjd``:
        the tracking pointing interpolated linearly where the file has one, else the fixed pointing."""
        info = self.run_info
        track = info.pointing_track
        n = len(time_mjd)
        if not track:
            return np.full(n, info.pointing_alt), np.full(n, info.pointing_az)
        samples = track.get(tel_id) if tel_id is not None else None
        samples = samples if samples is not None else track[min(track)]
        az = np.rad2deg(np.unwrap(np.deg2rad(samples["az"])))
        return (np.interp(time_mjd, samples["time_mjd"], samples["alt"]),
                np.interp(time_mjd, samples["time_mjd"], az) % 360.0)

    def _tel_node(self, group, tel_id):
        """The table node ``group/tel_XXX`` (None if absent), opened once per reader."""
        key = (group, tel_id)
        if key not in self._nodes:
            path = f"{group}/tel_{tel_id:03d}"
            self._nodes[key] = self.h5.get_node(path) if path in self.h5 else None
        return self._nodes[key]

    def _tel_rows(self, group, tel_id, start, stop):
        node = self._tel_node(group, tel_id)
        if node is None:
            return None
        return self._chunk_reader(node, stop).read(start, stop)

    def _chunk_reader(self, node, stop):
        """The RowChunkReader of a node (made once per reader); DataError if the node has fewer than ``stop`` rows."""
        if node.nrows < stop:
            raise DataError(f"{self.path}: {node._v_pathname} has {node.nrows} rows, the triggers need {stop}")
        reader = self._chunk_readers.get(node._v_pathname)
        if reader is None:
            reader = self._chunk_readers[node._v_pathname] = RowChunkReader(node, self.path)
        return reader

    def iter_batches(self, batch_size=1000, tel_ids=None, decode_ahead=False, prepare=None, raw_samples=False,
                     max_events=None):
        """Yield EventBatch objects of at most ``batch_size`` array events, in file order.

        ``tel_ids``: read the telescope data of only these telescopes (``tels_with_trigger``
        still covers the whole subarray); None reads all.  ``prepare``: a callable
        ``prepare(batch, tel_id)`` run on each telescope of a batch once its compact samples are
        decoded; it must not touch the file; the reader then yields ``(batch, {tel_id: prepare(batch,
        tel_id)})``.  ``decode_ahead``: a second thread decodes (and prepares) the next batch,
        telescope by telescope, while the caller works on this batch; the caller's thread takes
        the telescopes that thread has not reached when it asks for the batch.  The HDF5 reads stay
        in the caller's thread (HDF5 is not thread-safe).  Up to three batches are then held at
        once (the caller's, the one being decoded, the one read next); when the caller stops
        reading, the telescopes not yet taken are left undone.  ``raw_samples``: compact DL0
        telescopes get their decoded samples in ``samples`` (``r1`` None), for the caller to calibrate
        with ``run_info.calibration`` (e.g. `~iactpipe.image.extraction.neighbor_peak_window_sum_selected`).
        ``max_events``: read no batch after the one that brings the array events in which one of the
        ``tel_ids`` took part to that number (the caller cuts that batch).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        batches = (_BatchTasks(batch, jobs, prepare)
                   for batch, jobs in self._read_batches(batch_size, tel_ids, raw_samples, max_events))

        def output(tasks):
            results = tasks.result()
            return tasks.batch if prepare is None else (tasks.batch, results)

        if not decode_ahead:
            for tasks in batches:
                yield output(tasks)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="dl0-decode") as pool:
            pending = []  # submitted, not yet yielded
            try:
                for tasks in batches:
                    pool.submit(tasks.run)
                    pending.append(tasks)
                    if len(pending) > 1:
                        yield output(pending.pop(0))
                while pending:
                    yield output(pending.pop(0))
            finally:  # the caller stopped early, or an error: leave the batch read ahead undone
                for tasks in pending:
                    tasks.cancel()

    def _read_batches(self, batch_size, tel_ids, raw_samples=False, max_events=None):
        """(EventBatch, jobs) of the file, in order: the jobs (tel_id -> callable, no HDF5 calls) fill in
        the compact samples' R1."""
        h5 = self.h5
        trigger = h5.get_node(TRIGGER)
        tel_trigger = h5.get_node(TEL_TRIGGER)
        shower_node = h5.get_node(SHOWER) if SHOWER in h5 else None
        if shower_node is not None and shower_node.nrows != trigger.nrows:
            raise DataError(f"{self.path}: {SHOWER} has {shower_node.nrows} rows, {TRIGGER} {trigger.nrows}")
        all_tel_ids = [int(t) for t in self.subarray.tel_ids]
        tel_ids_array = np.array(all_tel_ids)
        tel_ids_sorted = bool(np.all(np.diff(tel_ids_array) > 0))
        wanted = set(all_tel_ids) if tel_ids is None else {int(t) for t in tel_ids}
        if not wanted <= set(all_tel_ids):
            raise ValueError(f"tel_ids {sorted(wanted - set(all_tel_ids))} not in the subarray of {self.path}")
        cursor = {t: 0 for t in all_tel_ids}
        waveform_cursor = {}  # reduced DL0: next kept-waveform row per telescope
        tel_cursor = 0
        wanted_columns = np.array([t in wanted for t in all_tel_ids])
        n_wanted_events = 0  # array events read in which a wanted telescope took part
        for start in range(0, trigger.nrows, batch_size):
            if max_events is not None and n_wanted_events >= max_events:
                return
            stop = min(start + batch_size, trigger.nrows)
            trig = trigger.read(start=start, stop=stop)
            mask = trig["tels_with_trigger"]
            if mask.shape[1] != len(all_tel_ids):
                raise DataError(f"{self.path}: tels_with_trigger has {mask.shape[1]} entries, "
                                f"the subarray {len(all_tel_ids)} telescopes")
            n_wanted_events += int(np.count_nonzero(mask[:, wanted_columns].any(axis=1)))
            n_tel_rows = int(mask.sum())
            tt = tel_trigger.read(start=tel_cursor, stop=tel_cursor + n_tel_rows)
            if len(tt) != n_tel_rows:
                raise DataError(f"{self.path}: {TEL_TRIGGER} ends before the triggers it should list")
            tel_cursor += n_tel_rows
            # telescope-trigger rows grouped by telescope (stable: event order kept within a telescope)
            by_tel = np.argsort(tt["tel_id"], kind="stable")
            tt = tt[by_tel]
            bounds = np.searchsorted(tt["tel_id"], tel_ids_array, side="left")
            bounds = np.append(bounds, len(tt))
            counts = mask.sum(axis=0)
            tel, jobs = {}, {}
            for j, tel_id in enumerate(all_tel_ids):
                count = int(counts[j])
                if count == 0 or tel_id not in wanted:
                    cursor[tel_id] += count
                    continue
                own = tt[bounds[j]:bounds[j + 1]] if tel_ids_sorted else tt[tt["tel_id"] == tel_id]
                tel[tel_id] = self._telescope_events(tel_id, cursor[tel_id], count, trig["event_id"][mask[:, j]], own,
                                                     waveform_cursor, jobs, raw_samples)
                cursor[tel_id] += count
            shower = None
            if shower_node is not None:
                rows = shower_node.read(start=start, stop=stop)
                shower = {name: rows[name] for name in rows.dtype.names if name not in ("obs_id", "event_id")}
            time_mjd = high_res_to_mjd(trig["time"])
            pointing_alt, pointing_az = self.pointing_at(None, time_mjd)
            yield EventBatch(
                obs_id=int(trig["obs_id"][0]), event_id=trig["event_id"].astype(np.int64),
                event_type=trig["event_type"].astype(np.int64), time_mjd=time_mjd,
                tels_with_trigger=mask, pointing_alt=pointing_alt,
                pointing_az=pointing_az, tel=tel, shower=shower,
            ), jobs

    def _telescope_events(self, tel_id, start, count, event_ids, own, waveform_cursor, jobs, raw_samples=False):
        """TelescopeEvents of rows ``start:start+count``; ``own``: this telescope's trigger rows;
        ``waveform_cursor``: tel_id -> first unread row of a reduced DL0's kept waveforms;
        ``jobs``: gets (under ``tel_id``) the job that sets the R1 of compact samples."""
        stop = start + count
        te = TelescopeEvents(tel_id=tel_id, event_id=event_ids.astype(np.int64))
        if len(own) != count or not np.array_equal(own["event_id"], event_ids):
            raise DataError(f"{self.path}: {TEL_TRIGGER} rows of tel {tel_id} do not match tels_with_trigger")
        te.n_trigger_pixels = own["n_trigger_pixels"]
        te.time_mjd = high_res_to_mjd(own["time"])
        te.event_type = own["event_type"]
        if self.run_info.pointing_track:
            te.pointing_alt, te.pointing_az = self.pointing_at(tel_id, te.time_mjd)
        groups = {"r1": R1_GROUP, "r0": R0_GROUP, "images": IMAGES_GROUP}
        if self.kind == "reduced" and R1_GROUP not in self.h5:
            self._reduced_events(te, tel_id, start, stop, event_ids, waveform_cursor)
            self._read_truth(te, tel_id, start, stop, event_ids)
            return te
        main_group = {"r1": R1_GROUP, "r0": R1_GROUP, "reduced": R1_GROUP,
                      "dl0": DL0_WAVEFORMS_GROUP}.get(self.kind, IMAGES_GROUP)
        rows = self._tel_rows(main_group, tel_id, start, stop)
        if rows is None:
            raise DataError(f"{self.path}: {main_group}/tel_{tel_id:03d} missing")
        self._check_ids(rows, event_ids, main_group, tel_id)
        if main_group == DL0_WAVEFORMS_GROUP:
            calibration = self.run_info.calibration.get(tel_id)
            if calibration is None:
                raise DataError(f"{self.path}: no calibration coefficients for tel {tel_id} "
                                f"({COEFFICIENTS_GROUP}/tel_{tel_id:03d})")
            te.selected_gain_channel = rows["selected_gain_channel"]
            te.pixel_status = rows["pixel_status"]
            if len(rows) and (np.max(te.selected_gain_channel) >= calibration.dc_to_pe.shape[0]
                              or np.min(te.selected_gain_channel) < 0):
                raise DataError(f"{self.path}: {main_group}/tel_{tel_id:03d} selects a gain channel "
                                f"the coefficients do not have")
            jobs[tel_id] = partial(_set_r1, te, *self._dl0_samples(rows, tel_id, start, stop), start,
                                   None if raw_samples else calibration)
        elif main_group == R1_GROUP:
            te.r1 = rows["waveform"][:, 0]
            te.selected_gain_channel = rows["selected_gain_channel"]
            te.pixel_status = rows["pixel_status"]
        else:
            te.image = rows["image"]
            te.peak_time = rows["peak_time"]
        if self.kind == "reduced":
            reduction = self._tel_rows(REDUCTION_GROUP, tel_id, start, stop)
            if reduction is None:
                raise DataError(f"{self.path}: {REDUCTION_GROUP}/tel_{tel_id:03d} missing")
            self._check_ids(reduction, event_ids, REDUCTION_GROUP, tel_id)
            te.waveform_kept = reduction["waveform_kept"]
            te.image = reduction["image"]
            te.peak_time = reduction["peak_time"]
        if self.kind == "r0":
            raw = self._tel_rows(groups["r0"], tel_id, start, stop)
            if raw is None:
                raise DataError(f"{self.path}: {R0_GROUP}/tel_{tel_id:03d} missing")
            self._check_ids(raw, event_ids, R0_GROUP, tel_id)
            te.r0 = raw["waveform"]
        self._read_truth(te, tel_id, start, stop, event_ids)
        return te

    def _dl0_samples(self, rows, tel_id, start, stop):
        """Compact DL0: (RowChunkReader or None, what its ``decode`` takes) for the raw samples of
        rows ``start:stop`` (None and the samples of the table's ``waveform`` column in files of
        data model iactpipe-dl0 v1)."""
        if "waveform" in rows.dtype.names:
            return None, rows["waveform"]
        node = self._tel_node(DL0_SAMPLES_GROUP, tel_id)
        path = f"{DL0_SAMPLES_GROUP}/tel_{tel_id:03d}"
        if node is None:
            raise DataError(f"{self.path}: {path} missing")
        n_pixels = rows["selected_gain_channel"].shape[1]
        if not isinstance(node, tables.Array):
            raise DataError(f"{self.path}: {path} is a {type(node).__name__}, not an array of uint16 samples")
        if len(node.shape) != 3 or node.shape[1] != n_pixels or node.atom.dtype != np.uint16:
            raise DataError(f"{self.path}: {path} holds {node.atom.dtype} rows of shape {tuple(node.shape[1:])}, "
                            f"not uint16 samples of {n_pixels} pixels")
        reader = self._chunk_reader(node, stop)
        return reader, reader.read_raw(start, stop)

    def _reduced_events(self, te, tel_id, start, stop, event_ids, waveform_cursor):
        """Reduced DL0: the pixel table's rows ``start:stop`` and the rows of their kept waveforms.

        The waveform rows of a telescope are read in order, from ``waveform_cursor[tel_id]``
        (where the previous batch of this pass stopped; updated).
        """
        reduction = self._tel_rows(REDUCTION_GROUP, tel_id, start, stop)
        if reduction is None:
            raise DataError(f"{self.path}: {REDUCTION_GROUP}/tel_{tel_id:03d} missing")
        self._check_ids(reduction, event_ids, REDUCTION_GROUP, tel_id)
        kept = reduction["waveform_kept"]
        group = REDUCED_WAVEFORMS_GROUP
        node = self._tel_node(group, tel_id)
        if node is None:
            group = REDUCED_SAMPLES_GROUP
            node = self._tel_node(group, tel_id)
        path = f"{group}/tel_{tel_id:03d}"
        if node is None:
            raise DataError(f"{self.path}: {REDUCED_WAVEFORMS_GROUP}/tel_{tel_id:03d} "
                            f"(or {REDUCED_SAMPLES_GROUP}/tel_{tel_id:03d}) missing")
        first = waveform_cursor.get(tel_id, 0)
        n_rows = int(np.count_nonzero(kept))
        if node.nrows < first + n_rows:
            raise DataError(f"{self.path}: {path} has {node.nrows} rows, the kept pixels need {first + n_rows}")
        rows = node.read(start=first, stop=first + n_rows)
        waveform_cursor[tel_id] = first + n_rows
        # the rows must be those of np.nonzero(kept): per event its kept pixels, in increasing order
        events = np.repeat(np.arange(len(kept)), np.count_nonzero(kept, axis=1))
        pixels = rows["pixel_id"].astype(np.int64)
        new_event = np.ones(n_rows, dtype=bool)
        new_event[1:] = events[1:] != events[:-1]
        if not (np.all(pixels < kept.shape[1]) and kept[events, np.minimum(pixels, kept.shape[1] - 1)].all()
                and np.all(new_event[1:] | (pixels[1:] > pixels[:-1]))
                and np.array_equal(rows["event_id"], event_ids[events])):
            raise DataError(f"{self.path}: {path} is out of step with waveform_kept of {REDUCTION_GROUP}")
        te.waveform_kept = kept
        te.image = reduction["image"]
        te.peak_time = reduction["peak_time"]
        te.selected_gain_channel = reduction["selected_gain_channel"]
        te.pixel_status = reduction["pixel_status"]
        if group == REDUCED_WAVEFORMS_GROUP:
            te.r1_kept = np.ascontiguousarray(rows["waveform"])
            return
        calibration = self.run_info.calibration.get(tel_id)
        if calibration is None:
            raise DataError(f"{self.path}: no calibration coefficients for tel {tel_id} "
                            f"({COEFFICIENTS_GROUP}/tel_{tel_id:03d})")
        gains = te.selected_gain_channel[events, pixels]
        if len(gains) and np.max(gains) >= calibration.dc_to_pe.shape[0]:
            raise DataError(f"{self.path}: {REDUCTION_GROUP}/tel_{tel_id:03d} selects a gain channel "
                            f"the coefficients do not have")
        te.r1_kept = r1_from_kept_samples(rows["waveform"], pixels, gains, calibration)

    def _read_truth(self, te, tel_id, start, stop, event_ids):
        truth = self._tel_rows(TRUE_IMAGES_GROUP, tel_id, start, stop)
        if truth is not None:
            self._check_ids(truth, event_ids, TRUE_IMAGES_GROUP, tel_id)
            if "true_image" in truth.dtype.names:
                te.true_image = truth["true_image"]
            te.true_image_sum = truth["true_image_sum"]
        impact = self._tel_rows(IMPACT_GROUP, tel_id, start, stop)
        if impact is not None:
            self._check_ids(impact, event_ids, IMPACT_GROUP, tel_id)
            te.true_impact_distance = impact["true_impact_distance"]

    def _check_ids(self, rows, event_ids, group, tel_id):
        if not np.array_equal(rows["event_id"], event_ids):
            raise DataError(f"{self.path}: {group}/tel_{tel_id:03d} is out of step with the trigger table")
