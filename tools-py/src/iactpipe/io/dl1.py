"""DL1 HDF5 files in ctapipe 0.28's layout, and camera calibration coefficient files.

:class:`DL1Writer` writes what ``ctapipe-process`` writes for DL0 -> DL1: the
instrument, observation/scheduling blocks, telescope pointing, simulation run
settings, atmosphere profile and shower distribution; per event the array and
telescope triggers and the true shower; per telescope event the DL1 parameters
(always) with iactpipe's image quality flags (``/dl1/event/telescope/image_quality``,
schema ``dl1_image_quality``), the images (optional), the true image sum / true image, the true
impact distance and the parameters of the true image; at the end the cut flow of
the image quality criteria (``/dl1/service/image_statistics``).

Calibration coefficient files (``/dl1/monitoring/telescope/calibration/camera/
coefficients/tel_XXX``, schema ``calibration_coefficients``) hold per-pixel R0 -> R1
coefficients, one row per start of validity: :func:`write_calibration_coefficients`,
:func:`read_calibration_coefficients`, :func:`coefficients_at`.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tables

from ..errors import DataError
from ..image.processor import event_positions
from .dl0 import (
    COEFFICIENTS_GROUP,
    PRODUCER,
    UNIX_TAI_EPOCH_MJD,
    high_res_to_mjd,
    mjd_to_high_res,
    shower_distribution_row,
)
from .events import EVENT_TYPE_SUBARRAY, TelescopeCalibration
from .tables import HDF5Writer

__all__ = [
    "DL1Writer",
    "CalibrationSeries",
    "write_calibration_coefficients",
    "read_calibration_coefficients",
    "coefficients_at",
]


#: rows collected before they are appended (a chunk's per-telescope appends are a few rows each)
BUFFER_BYTES = 8 << 20


class DL1Writer:
    """Write DL1 (parameters, optional images, truth) of one or more runs of one subarray.

    Call :meth:`write_run` once per input run (before its events), :meth:`write_batch`
    per processed :class:`~iactpipe.io.events.EventBatch`, :meth:`close` at the end.
    """

    def __init__(self, path, subarray, write_images=False, mode="w"):
        self.path = Path(path)
        self.subarray = subarray
        self.write_images = bool(write_images)
        self._tel_ids = [int(t) for t in subarray.tel_ids]
        self._writer = HDF5Writer(path, mode, buffer_bytes=BUFFER_BYTES)
        # strong references keep PyTables from evicting and re-opening tables (and re-reading
        # their attributes) on every append when a file has more tables than its node cache
        self._tables = {}
        self._obs_ids = []
        self._atmosphere_written = False
        self._is_simulation = False
        self.n_events = 0
        self.n_telescope_events = 0
        subarray.to_hdf(self._writer)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def h5(self):
        return self._writer.h5

    def _write(self, schema, data, **kwargs):
        table = self._writer.write(schema, data, **kwargs)
        self._tables[table._v_pathname] = table
        return table

    def write_run(self, run_info):
        """Run-level tables of one input: observation/scheduling block, pointing, simulation settings."""
        obs_id = int(run_info.obs_id)
        self._obs_ids.append(obs_id)
        start = run_info.start_time_mjd if run_info.start_time_mjd is not None else np.nan
        self._write("scheduling_block", {
            "sb_id": np.array([obs_id], np.uint64), "sb_type": np.array([0]), "producer_id": [PRODUCER],
            "observing_mode": np.array([-1]), "pointing_mode": np.array([1]),
        })
        ob = run_info.observation_block
        self._write("observation_block", {k: np.atleast_1d(v) for k, v in ob.items()} if ob is not None else {
            "obs_id": np.array([obs_id], np.uint64), "sb_id": np.array([obs_id], np.uint64),
            "producer_id": [PRODUCER], "state": np.array([1]),
            "subarray_pointing_lat": np.array([run_info.pointing_alt], np.float32),
            "subarray_pointing_lon": np.array([run_info.pointing_az], np.float32),
            "subarray_pointing_frame": np.array([0]), "scheduled_duration": np.array([np.nan]),
            "scheduled_start_time": np.array([start]), "actual_start_time": np.array([start]),
            "actual_duration": np.array([np.nan]),
        })
        for tel_id in self._tel_ids:
            self._write("telescope_pointing", {
                "obs_id": np.array([obs_id], np.int32), "tel_id": np.array([tel_id], np.int64),
                "telescope_pointing_azimuth": np.array([np.deg2rad(run_info.pointing_az)], np.float32),
                "telescope_pointing_altitude": np.array([np.deg2rad(run_info.pointing_alt)], np.float32),
            }, tel_id=tel_id)
        for tel_id, samples in sorted((run_info.pointing_track or {}).items()):
            if tel_id in self._tel_ids:
                self._write("dl0_telescope_pointing", {
                    "time": mjd_to_high_res(samples["time_mjd"]),
                    "azimuth": np.deg2rad(samples["az"]), "altitude": np.deg2rad(samples["alt"]),
                }, tel_id=tel_id)
        if run_info.is_simulation:
            self._is_simulation = True
        if run_info.simulation_config is not None:
            self._write("simulation_run", {k: np.atleast_1d(v) for k, v in run_info.simulation_config.items()})
        # the simulated atmosphere (sim_telarray's table, or our simulator's via its DL0 file); observed
        # runs have none
        profile = run_info.atmosphere_profile if run_info.is_simulation else None
        if profile is not None and not self._atmosphere_written:
            attrs = {k: v for k, v in profile.items() if k not in ("height", "density", "column_density")}
            self._write("atmosphere_density_profile", {
                "height": np.asarray(profile["height"], np.float64),
                "density": np.asarray(profile["density"], np.float64),
                "column_density": np.asarray(profile["column_density"], np.float64),
            }, attrs=attrs)
            self._atmosphere_written = True

    def write_shower_distribution(self, dist):
        """One row of ``/simulation/service/shower_distribution`` (dict as in ``RunInfo``)."""
        if dist is None:
            return
        columns, dims = shower_distribution_row(dist)
        self._write("shower_distribution", columns, dims=dims)

    def write_batch(self, batch, dl1):
        """Append one EventBatch and its DL1 (``{tel_id: TelescopeDL1}``, same telescope events)."""
        n = len(batch)
        if n == 0:
            return
        obs = np.full(n, batch.obs_id, np.int32)
        self._write("subarray_trigger", {
            "obs_id": obs, "event_id": batch.event_id.astype(np.int64), "time": mjd_to_high_res(batch.time_mjd),
            "tels_with_trigger": batch.tels_with_trigger, "event_type": batch.event_type.astype(np.int64),
        }, dims={"n_tels": len(self._tel_ids)})
        self._write_telescope_triggers(batch)
        if batch.shower is not None:
            self._write("simulation_shower", {"obs_id": obs, "event_id": batch.event_id.astype(np.int64),
                                          **batch.shower})
        for tel_id in sorted(batch.tel):
            self._write_telescope(batch, tel_id, batch.tel[tel_id], dl1[tel_id])
        self.n_events += n

    def _write_telescope_triggers(self, batch):
        """One row per (event, telescope), ordered by event then tel_id."""
        tel_ids = sorted(batch.tel)
        if not tel_ids:
            return
        events = [batch.tel[t] for t in tel_ids]
        ev_pos = np.concatenate([event_positions(batch.event_id, te.event_id) for te in events]).astype(np.int64)
        tel_col = np.concatenate([np.full(len(te), t) for t, te in zip(tel_ids, events, strict=True)])
        order = np.lexsort((tel_col, ev_pos))

        def gather(attr, default):
            return np.concatenate([
                getattr(te, attr) if getattr(te, attr) is not None else np.full(len(te), default) for te in events
            ])[order]

        self._write("telescope_trigger", {
            "obs_id": np.full(len(order), batch.obs_id, np.int32), "event_id": batch.event_id[ev_pos[order]],
            "tel_id": tel_col[order].astype(np.int16), "time": mjd_to_high_res(gather("time_mjd", np.nan)),
            "event_type": gather("event_type", EVENT_TYPE_SUBARRAY).astype(np.int64),
            "n_trigger_pixels": gather("n_trigger_pixels", -1).astype(np.int64),
        })

    def _write_telescope(self, batch, tel_id, te, result):
        m = len(te)
        self.n_telescope_events += m
        keys = {
            "obs_id": np.full(m, batch.obs_id, np.int32), "event_id": te.event_id.astype(np.int64),
            "tel_id": np.full(m, tel_id, np.int16),
        }
        n_pixels = self.subarray.tels[tel_id].geometry.n_pixels
        self._write("dl1_parameters", {**keys, **result.parameters, "core_psi": np.full(m, np.nan)}, tel_id=tel_id)
        if result.quality_flags is not None:
            self._write("dl1_image_quality", {**keys, "image_quality_flags": result.quality_flags}, tel_id=tel_id)
        if self.write_images:
            self._write("dl1_images", {
                **keys, "image": result.image, "peak_time": result.peak_time,
                "image_mask": result.image_mask, "is_valid": result.is_valid,
            }, dims={"n_pixels": n_pixels}, tel_id=tel_id)
        if te.true_image is not None or te.true_image_sum is not None:
            true_sum = te.true_image_sum
            if true_sum is None:
                true_sum = te.true_image.sum(axis=1)
            columns = {**keys, "true_image_sum": np.asarray(true_sum).astype(np.int32)}
            if self.write_images and te.true_image is not None:
                columns["true_image"] = te.true_image.astype(np.int32)
            self._write("simulation_images", columns, dims={"n_pixels": n_pixels}, tel_id=tel_id)
        if te.true_impact_distance is not None:
            self._write("simulation_impact", {
                **keys, "true_impact_distance": te.true_impact_distance.astype(np.float64),
                "true_impact_distance_uncert": np.zeros(m),
            }, tel_id=tel_id)
        if result.true_parameters is not None:
            self._write("simulation_parameters", {**keys, **result.true_parameters}, tel_id=tel_id)

    def write_image_statistics(self, criteria, counts, cumulative_counts):
        """The image quality cut flow: ``criteria`` [(name, expression)], counts incl. the TOTAL first."""
        names = ["TOTAL", *(name for name, _ in criteria)]
        funcs = ["True", *(expr for _, expr in criteria)]
        self._write("dl1_image_statistics", {
            "criteria": [s.encode() for s in names], "counts": np.asarray(counts, np.int64),
            "cumulative_counts": np.asarray(cumulative_counts, np.int64), "func": [s.encode() for s in funcs],
        })

    def close(self):
        """Write the empty event tables of a file without events, the root attributes; close."""
        if not self._writer.h5.isopen:
            return
        w = self._writer
        if "/dl1/event/subarray/trigger" not in self._tables:
            w.write_empty("subarray_trigger", dims={"n_tels": len(self._tel_ids)})
            w.write_empty("telescope_trigger")
        self._tables.clear()
        with warnings.catch_warnings():  # 'CTA PROCESS TYPE' & co. are not Python identifiers: fine for HDF5
            warnings.simplefilter("ignore", tables.NaturalNameWarning)
            w.set_root_attrs(**{
                "CTA PROCESS TYPE": "Simulation" if self._is_simulation else "Observation",
                "CTA PROCESS ID": ",".join(str(o) for o in self._obs_ids),
                "CTA INSTRUMENT ID": self.subarray.name,
            })
        w.close()


# -- calibration coefficients ------------------------------------------------------------


@dataclass
class CalibrationSeries:
    """Coefficients of one telescope over time: row ``i`` is valid from ``time_mjd[i]`` on.

    Arrays as in :class:`~iactpipe.io.events.TelescopeCalibration` with a leading
    row axis: (n_rows, n_gains, n_pixels).
    """

    tel_id: int
    time_mjd: np.ndarray
    pedestal_per_sample: np.ndarray
    dc_to_pe: np.ndarray
    time_shift: np.ndarray
    unusable: np.ndarray

    @property
    def n_gains(self):
        return self.dc_to_pe.shape[1]

    @property
    def n_pixels(self):
        return self.dc_to_pe.shape[2]


def write_calibration_coefficients(path, obs_id, calibrations, time_mjd=None, mode="w"):
    """Write ``{tel_id: TelescopeCalibration}`` as one row per telescope (valid from ``time_mjd``)."""
    stamp = mjd_to_high_res(np.array([UNIX_TAI_EPOCH_MJD if time_mjd is None else time_mjd]))
    with HDF5Writer(path, mode) as writer:
        for tel_id, calib in sorted(calibrations.items()):
            n_gains, n_pixels = np.shape(calib.dc_to_pe)
            writer.write("calibration_coefficients", {
                "obs_id": np.array([obs_id], np.int32), "tel_id": np.array([tel_id], np.int16), "time": stamp,
                "pedestal_per_sample": np.asarray(calib.pedestal_per_sample, np.float32)[None],
                "dc_to_pe": np.asarray(calib.dc_to_pe, np.float32)[None],
                "time_shift": np.asarray(calib.time_shift, np.float32)[None],
                "unusable": np.asarray(calib.unusable, bool)[None], "is_valid": np.array([True]),
            }, dims={"n_gains": n_gains, "n_pixels": n_pixels}, tel_id=int(tel_id))


def read_calibration_coefficients(path):
    """``{tel_id: CalibrationSeries}`` of the valid rows of a coefficients file, sorted by time."""
    path = Path(path)
    try:
        h5 = tables.open_file(path, "r")
    except (OSError, tables.HDF5ExtError):
        raise DataError(f"{path}: not a readable HDF5 file") from None
    series = {}
    with h5:
        if COEFFICIENTS_GROUP not in h5:
            raise DataError(f"{path}: no calibration coefficients ({COEFFICIENTS_GROUP} missing)")
        for node in h5.get_node(COEFFICIENTS_GROUP)._f_iter_nodes("Table"):
            try:
                rows = node.read()
                rows = rows[rows["is_valid"]]
                rows = rows[np.argsort(high_res_to_mjd(rows["time"]), kind="stable")]
                tel_ids = np.unique(rows["tel_id"])
                if len(tel_ids) > 1:
                    raise DataError(f"{path}: {node._v_pathname} mixes tel_ids {tel_ids.tolist()}")
                tel_id = int(tel_ids[0]) if len(tel_ids) else int(node._v_name.removeprefix("tel_"))
                if not len(rows):
                    continue
                series[tel_id] = CalibrationSeries(
                    tel_id=tel_id, time_mjd=high_res_to_mjd(rows["time"]),
                    pedestal_per_sample=rows["pedestal_per_sample"].astype(np.float32),
                    dc_to_pe=rows["dc_to_pe"].astype(np.float32),
                    time_shift=rows["time_shift"].astype(np.float32), unusable=rows["unusable"].astype(bool),
                )
            except (KeyError, ValueError) as err:
                raise DataError(f"{path}: {node._v_pathname} is not a calibration coefficients table ({err})") from None
    if not series:
        raise DataError(f"{path}: no valid calibration coefficients")
    return series


def coefficients_at(series, time_mjd):
    """TelescopeCalibration for events at ``time_mjd`` (n,): the last row valid at each time.

    Events before the first row get the first row.  One row in force for all events
    gives (n_gains, n_pixels) arrays, else (n, n_gains, n_pixels).
    """
    index = np.searchsorted(series.time_mjd, np.asarray(time_mjd, np.float64), side="right") - 1
    index = np.clip(index, 0, len(series.time_mjd) - 1)
    if len(index) == 0 or np.all(index == index[0]):
        index = int(index[0]) if len(index) else 0
    return TelescopeCalibration(
        tel_id=series.tel_id,
        pedestal_per_sample=series.pedestal_per_sample[index],
        dc_to_pe=series.dc_to_pe[index],
        time_shift=series.time_shift[index],
        unusable=series.unusable[index],
    )
