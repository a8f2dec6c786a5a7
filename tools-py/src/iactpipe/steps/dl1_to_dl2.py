"""``iactpipe-dl1-to-dl2``: stereo shower geometry from Hillas parameters (DL1 -> DL2).

Example::

    iactpipe-dl1-to-dl2 gamma.dl1.h5 --output gamma.dl2.h5
    iactpipe-dl1-to-dl2 gamma.dl1.h5 -o gamma.dl2.h5 --min-telescopes 3 --config stereo_cuts.yaml

The input is a DL1 file of iactpipe or ctapipe.  The output keeps all of its content
(configuration, simulation, DL1 parameters; images only with ``--keep-images``), so it can
be used for training directly, and adds, as ``ctapipe-process`` writes them:

- ``/dl2/event/subarray/geometry/HillasReconstructor`` (direction, core, h_max, validity, ...),
- ``/dl2/event/telescope/impact/HillasReconstructor/tel_XXX`` (distance to the shower axis),
- ``/dl2/service/tel_event_statistics/HillasReconstructor`` (cut flow of the quality query),

and fills the ``core_psi`` column of the DL1 parameters (the image axis angle in the array's
nominal frame, for the telescopes used).  The reconstruction is :mod:`iactpipe.reco.geometry`.
"""

import shutil
import sys
import time

import numpy as np
import tables

from ..cli import Step, progress
from ..errors import DataError
from ..expressions import QualityQuery
from ..io.dl2 import (
    IMAGES_GROUP,
    TRUE_IMAGES_GROUP,
    copy_event_file,
    copy_true_image_sums,
    geometry_columns,
    impact_columns,
    update_column,
)
from ..io.loader import PARAMETERS_GROUP, EventFile
from ..io.tables import HDF5Writer
from ..reco.geometry import camera_radius_deg, reconstruct_hillas_geometry

__all__ = ["Dl1ToDl2Step", "main", "ALGORITHM"]

ALGORITHM = "HillasReconstructor"
HILLAS_COLUMNS = ("hillas_intensity", "hillas_fov_lon", "hillas_fov_lat", "hillas_psi", "hillas_length",
                  "hillas_width")
#: telescope-event columns the loader adds to those of the DL1 parameter tables
_LOADER_COLUMNS = ("time_mono", "event_type_mono", "n_trigger_pixels", "telescope_pointing_altitude",
                   "telescope_pointing_azimuth")


def _outputs_of(algorithm):
    return (
        f"/dl2/event/subarray/geometry/{algorithm}",
        f"/dl2/event/telescope/impact/{algorithm}",
        f"/dl2/service/tel_event_statistics/{algorithm}",
    )


def _below(path, group):
    return path == group or path.startswith(group + "/")


def _has_nodes_to_skip(h5, skip):
    """Whether ``skip`` rejects any node of the file (true images only if they hold the images themselves)."""
    for group in h5.walk_groups("/"):
        for name in group._v_children:
            path = f"{group._v_pathname.rstrip('/')}/{name}"
            if not skip(path):
                continue
            if _below(path, TRUE_IMAGES_GROUP):
                node = h5.get_node(path)
                if isinstance(node, tables.Group) or "true_image" not in node.colnames:
                    continue
            return True
    return False


def observatory_height(subarray):
    """Height above sea level (m) of the array reference position (0 if unknown)."""
    ref = np.asarray(subarray.reference_itrs, np.float64)
    if not np.all(np.isfinite(ref)):
        return 0.0
    import erfa  # WGS84 geodetic height, as astropy's EarthLocation.geodetic (without importing astropy)

    return float(erfa.gc2gd(1, ref)[2])


class _Instrument:
    """Per-telescope constants of the reconstruction, indexed like ``subarray.tel_ids``."""

    def __init__(self, subarray):
        self.tel_ids = np.asarray(subarray.tel_ids, np.int64)
        self.positions = subarray.positions
        self.focal_length = np.array([subarray.tels[t].optics.focal_length for t in self.tel_ids])
        radius = {}
        self.cam_radius = np.empty(len(self.tel_ids))
        for i, t in enumerate(self.tel_ids):
            tel = subarray.tels[t]
            key = (tel.camera_name, self.focal_length[i])
            if key not in radius:
                radius[key] = camera_radius_deg(tel.geometry, self.focal_length[i])
            self.cam_radius[i] = radius[key]
        self.lookup = np.full(int(self.tel_ids.max()) + 1 if len(self.tel_ids) else 1, -1, np.int64)
        self.lookup[self.tel_ids] = np.arange(len(self.tel_ids))
        self.height = observatory_height(subarray)


def _combine(by_id, names):
    """Telescope rows of all telescopes, ordered by subarray event then tel_id.

    A telescope without a DL1 parameter table (triggered, but no parameters written) gets NaN
    parameters and ``has_parameters`` false.
    """
    parts = [cols for _, cols in sorted(by_id.items())]
    if not parts:
        return None
    out = {}
    for name in names:
        pieces = []
        for part in parts:
            n = len(part["event_id"])
            pieces.append(part[name] if name in part else np.full(n, np.nan))
        out[name] = np.concatenate(pieces)
    out["has_parameters"] = np.concatenate([np.full(len(p["event_id"]), "hillas_intensity" in p) for p in parts])
    order = np.lexsort((out["tel_id"], out["event_index"]))
    return {n: v[order] for n, v in out.items()}


def _array_pointing(sub, rows, offsets):
    """Array pointing (rad) per event: the observation block's, else the first telescope's of the event."""
    n = len(sub["event_id"])
    alt = np.deg2rad(np.asarray(sub.get("subarray_pointing_lat", np.full(n, np.nan)), np.float64))
    az = np.deg2rad(np.asarray(sub.get("subarray_pointing_lon", np.full(n, np.nan)), np.float64))
    frame = sub.get("subarray_pointing_frame")
    if frame is not None:  # only AltAz pointings can define the tilted frame
        alt = np.where(frame == 0, alt, np.nan)
        az = np.where(frame == 0, az, np.nan)
    missing = ~(np.isfinite(alt) & np.isfinite(az))
    if missing.any() and rows is not None:
        has_rows = offsets[1:] > offsets[:-1]
        first = np.minimum(offsets[:-1], len(rows["tel_id"]) - 1)
        fill = missing & has_rows
        alt[fill] = rows["telescope_pointing_altitude"][first[fill]]
        az[fill] = rows["telescope_pointing_azimuth"][first[fill]]
    return alt, az


class Dl1ToDl2Step(Step):
    name = "dl1-to-dl2"
    description = ("Stereo shower geometry from Hillas parameters (ctapipe's HillasReconstructor): a DL1 file "
                   "(iactpipe or ctapipe) -> DL2 in ctapipe's layout, keeping the DL1 content for training.")

    def add_arguments(self, parser):
        parser.add_argument("input", metavar="INPUT", help="DL1 HDF5 file (iactpipe-dl0-to-dl1 or ctapipe-process)")
        parser.add_argument("-o", "--output", required=True, help="output DL2 HDF5 file (e.g. gamma.dl2.h5)")

    def run(self, ctx):
        cfg = ctx.config
        path = ctx.input(ctx.args.input)
        query = QualityQuery(cfg["stereo_quality_query"])
        with EventFile(path) as events:
            params = events.telescope_tables(PARAMETERS_GROUP)
            if not params:
                raise DataError(f"{path}: not a DL1 file (no DL1 parameters: {PARAMETERS_GROUP} missing or empty)")
            available = set(next(iter(params.values())).colnames) | set(_LOADER_COLUMNS)
            missing = [c for c in HILLAS_COLUMNS if c not in available]
            if missing:
                raise DataError(f"{path}: DL1 parameters lack the column(s) {', '.join(missing)}")
            query.check_columns(available, context=f"the DL1 parameters of {path}")
            levels = ("DL1_IMAGES", "DL1_PARAMETERS", "DL2") if cfg["keep_images"] else ("DL1_PARAMETERS", "DL2")
            tmp = ctx.output(ctx.args.output, role="DL2", data_levels=levels)
            t0 = time.perf_counter()
            self._copy(events.h5, tmp, cfg["keep_images"])
            n_tel_events = self._reconstruct(ctx, events, tmp, query, cfg)
        elapsed = time.perf_counter() - t0
        ctx.log.info("%d subarray events, %d telescope events (%.0f telescope events/s)", events.n_events,
                     n_tel_events, n_tel_events / max(elapsed, 1e-9))

    @staticmethod
    def _copy(source, tmp, keep_images):
        rewritten = _outputs_of(ALGORITHM)

        def skip(node_path):
            if node_path == "/provenance":
                return False
            if not keep_images and (_below(node_path, IMAGES_GROUP) or _below(node_path, TRUE_IMAGES_GROUP)):
                return True
            return any(_below(node_path, p) for p in rewritten)

        if not _has_nodes_to_skip(source, skip):
            # nothing to leave out: a byte copy is much faster than copying node by node
            shutil.copyfile(source.filename, tmp)
            return
        with tables.open_file(tmp, "w") as out:
            copy_event_file(source, out, skip)
        if not keep_images:
            with HDF5Writer(tmp, "a") as writer:
                copy_true_image_sums(source, writer)

    @staticmethod
    def _reconstruct(ctx, events, tmp, query, cfg):
        instrument = _Instrument(events.subarray)
        n_tels = len(instrument.tel_ids)
        names = sorted({"obs_id", "event_id", "tel_id", "event_index", "telescope_pointing_altitude",
                        "telescope_pointing_azimuth", *HILLAS_COLUMNS, *query.columns})
        chunk = cfg["chunk_size"]
        n_tel_events = 0
        counts = events.tel_counts
        dims = {"n_telescopes": n_tels}
        with HDF5Writer(tmp, "a") as writer:
            param_tables = {int(n._v_name[4:]): n for n in writer.h5.get_node(PARAMETERS_GROUP)._f_iter_nodes("Table")}
            chunks = range(0, events.n_events, chunk)
            for lo in progress(chunks, desc=events.path.name):
                hi = min(lo + chunk, events.n_events)
                sub = events.read_subarray_events(lo, hi, dl2=False, truth=False, pointing=True)
                by_id = events.read_telescope_events_by_id(None, lo, hi, dl2=False, truth=False, pointing=True,
                                                           subarray_columns=False)
                for tel_id, cols in by_id.items():
                    if "telescope_pointing_altitude" not in cols:
                        raise DataError(f"{events.path}: no pointing of telescope {tel_id} "
                                        f"(/configuration/telescope/pointing/tel_{tel_id:03d} missing)")
                rows = _combine(by_id, names)
                n_rows = 0 if rows is None else len(rows["tel_id"])
                n_tel_events += n_rows
                if rows is None:
                    offsets = np.zeros(hi - lo + 1, np.int64)
                    rows = {n: np.zeros(0) for n in names}
                    rows["tel_id"] = np.zeros(0, np.int64)
                else:
                    offsets = np.searchsorted(rows["event_index"], np.arange(lo, hi + 1)).astype(np.int64)
                # the cut flow counts telescope events with DL1 parameters, as ctapipe's does
                use = np.zeros(n_rows, bool)
                with_params = rows.get("has_parameters", use)
                use[with_params] = query.mask({n: rows[n][with_params] for n in query.columns},
                                              int(with_params.sum()))
                array_alt, array_az = _array_pointing(sub, rows, offsets)
                geometry, per_row = reconstruct_hillas_geometry(
                    offsets, instrument.lookup[rows["tel_id"].astype(np.int64)], rows, use,
                    rows["telescope_pointing_altitude"], rows["telescope_pointing_azimuth"], array_alt, array_az,
                    instrument.positions, instrument.focal_length, instrument.cam_radius,
                    min_telescopes=cfg["min_telescopes"], observatory_height=instrument.height,
                )
                writer.write("dl2_geometry", geometry_columns(ALGORITHM, sub["obs_id"], sub["event_id"], geometry),
                             dims=dims, algorithm=ALGORITHM)
                for tel_id in sorted(by_id):
                    sel = rows["tel_id"] == tel_id
                    writer.write("dl2_tel_impact", impact_columns(
                        ALGORITHM, rows["obs_id"][sel], rows["event_id"][sel], tel_id,
                        per_row["impact_distance"][sel]), algorithm=ALGORITHM, tel_id=tel_id)
                    table = param_tables.get(tel_id)
                    if table is not None and "core_psi" in table.colnames:
                        keys = {"obs_id": rows["obs_id"][sel], "event_id": rows["event_id"][sel]}
                        start = int(counts[lo, instrument.lookup[tel_id]])
                        update_column(table, "core_psi", start, keys, per_row["core_psi"][sel])
                del sub, by_id, rows, geometry, per_row
            if events.n_events == 0:
                writer.write_empty("dl2_geometry", dims=dims, algorithm=ALGORITHM)
            writer.write("dl2_tel_event_statistics", query.table(), algorithm=ALGORITHM)
        return n_tel_events


def main():
    sys.exit(Dl1ToDl2Step().main())
