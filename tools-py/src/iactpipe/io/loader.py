"""Read DL1/DL2 event data of ctapipe-layout HDF5 files (ours and ctapipe's) as plain numpy columns.

The counterpart of ctapipe's ``TableLoader`` without astropy tables: every reader returns
dicts of column name -> numpy array, with the column names of the file (``hillas_intensity``,
``true_energy``, ``HillasReconstructor_alt``, ...) and the values as stored (units as in the
file, see :meth:`EventFile.units`; times as MJD floats in TAI).

Telescope events (one row per ``(obs_id, event_id, tel_id)``) carry, like ctapipe's
``read_telescope_events``:

- the telescope trigger (``time_mono``, ``event_type_mono``, ``n_trigger_pixels``),
- DL1 parameters (``dl1``), images (``images``, off by default),
- every per-telescope DL2 table ``/dl2/event/telescope/<kind>/<algorithm>/tel_XXX`` (``dl2``),
- the true impact, true-image parameters and true image sum (``truth``),
- the telescope pointing (``telescope_pointing_altitude/azimuth``, rad; ``pointing``),
- the columns of their subarray event: trigger (``time``, ``tels_with_trigger``, ``event_type``),
  true shower (``true_*``) and every subarray DL2 table (``<algorithm>_*``),
- ``event_index``: the row of the subarray event in the file (``/dl1/event/subarray/trigger``).

Tables that are absent give absent columns; rows missing in one table (a left join) get
NaN / -1 / 0 / False / empty.  Reading is by ranges of subarray events (``start``/``stop``),
so large files can be streamed (:meth:`EventFile.iter_telescope_events`).
"""

from pathlib import Path

import numpy as np
import tables

from ..errors import DataError
from ..instrument.subarray import SubarrayDescription
from .dl0 import high_res_to_mjd
from .tables import OPEN_PARAMS

__all__ = [
    "EventFile",
    "telescope_types",
    "read_subarray_events",
    "read_telescope_events",
    "read_telescope_events_by_id",
    "iter_telescope_events",
    "SUBARRAY_TRIGGER",
    "TELESCOPE_TRIGGER",
    "PARAMETERS_GROUP",
]

SUBARRAY_TRIGGER = "/dl1/event/subarray/trigger"
TELESCOPE_TRIGGER = "/dl1/event/telescope/trigger"
PARAMETERS_GROUP = "/dl1/event/telescope/parameters"
IMAGES_GROUP = "/dl1/event/telescope/images"
DL2_SUBARRAY_GROUP = "/dl2/event/subarray"
DL2_TELESCOPE_GROUP = "/dl2/event/telescope"
SHOWER_TABLE = "/simulation/event/subarray/shower"
TRUE_IMPACT_GROUP = "/simulation/event/telescope/impact"
TRUE_PARAMETERS_GROUP = "/simulation/event/telescope/parameters"
TRUE_IMAGES_GROUP = "/simulation/event/telescope/images"
POINTING_GROUP = "/configuration/telescope/pointing"
#: pointing time series of tracking runs (ctapipe's DL1 monitoring, and our DL0's)
MONITORING_POINTING_GROUPS = ("/dl1/monitoring/telescope/pointing", "/dl0/monitoring/telescope/pointing")
OBSERVATION_BLOCK = "/configuration/observation/observation_block"

_EVENT_KEYS = ("obs_id", "event_id")
_TEL_KEYS = ("obs_id", "event_id", "tel_id")


def _time_to_mjd(values):
    """Times as stored (ctao_high_res uint32 pairs, or MJD floats) -> MJD (TAI) float64."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 2:
        return high_res_to_mjd(values)
    return values.astype(np.float64)


def _fill_value(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or dtype.kind == "c":
        return np.nan
    if dtype.kind == "i":
        return -1
    if dtype.kind == "b":
        return False
    if dtype.kind in "SU":
        return ""
    return 0


def _take(column, index):
    """``column[index]`` where ``index`` is -1 for missing rows (filled, see :func:`_fill_value`)."""
    missing = index < 0
    if not missing.any():
        return column[index]
    out = column[np.where(missing, 0, index)] if len(column) else np.empty((len(index),) + column.shape[1:],
                                                                          column.dtype)
    out[missing] = _fill_value(column.dtype)
    return out


def _event_keys(obs_id, event_id):
    """One sortable key per (obs_id, event_id) as a structured array."""
    keys = np.empty(len(obs_id), dtype=[("obs_id", np.int64), ("event_id", np.int64)])
    keys["obs_id"] = obs_id
    keys["event_id"] = event_id
    return keys


def _match(base_keys, other_keys):
    """For each base key its row in ``other_keys``, -1 where absent (a left join)."""
    if len(other_keys) == 0:
        return np.full(len(base_keys), -1, np.int64)
    order = np.argsort(other_keys, kind="stable")
    sorted_keys = other_keys[order]
    pos = np.searchsorted(sorted_keys, base_keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    found = sorted_keys[pos] == base_keys
    return np.where(found, order[pos], -1).astype(np.int64)


class EventFile:
    """An open ctapipe-layout event file (DL1 or DL2): subarray, event count and readers.

    Use as a context manager or call :meth:`close`.  All readers take ``start``/``stop`` in
    subarray events (rows of ``/dl1/event/subarray/trigger``).
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        try:
            self.h5 = tables.open_file(self.path, "r", **OPEN_PARAMS)
        except (OSError, tables.HDF5ExtError, ValueError):
            raise DataError(f"{self.path}: not a readable HDF5 file") from None
        try:
            if SUBARRAY_TRIGGER not in self.h5:
                raise DataError(f"{self.path}: not a DL1/DL2 event file ({SUBARRAY_TRIGGER} missing)")
            self.subarray = SubarrayDescription.from_hdf(self.path)
            self._trigger = self.h5.get_node(SUBARRAY_TRIGGER)
            self.n_events = int(self._trigger.nrows)
        except BaseException:
            self.h5.close()
            raise
        self.tel_ids = [int(t) for t in self.subarray.tel_ids]
        self._tel_index = {t: i for i, t in enumerate(self.tel_ids)}
        self._counts = None
        self._key_cache = {}
        self._pointing = {}
        self._obs_blocks = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.n_events

    def close(self):
        if self.h5.isopen:
            self.h5.close()

    # -- description -------------------------------------------------------------------
    def telescope_types(self):
        """Telescope type (ctapipe's ``str(TelescopeDescription)``, e.g. ``LST_LST_LSTCam``) -> tel_ids."""
        types = {}
        for tel_id in self.tel_ids:
            types.setdefault(self.subarray.tels[tel_id].type, []).append(tel_id)
        return types

    def has(self, node_path):
        return node_path in self.h5

    def telescope_tables(self, group):
        """``{tel_id: node}`` of the ``tel_XXX`` tables of a group (empty if the group is absent)."""
        if group not in self.h5:
            return {}
        found = {}
        for node in self.h5.get_node(group)._f_iter_nodes("Table"):
            if node._v_name.startswith("tel_"):
                found[int(node._v_name[4:])] = node
        return found

    def dl2_groups(self, level):
        """``[(kind, algorithm, path)]`` of the DL2 subarray tables (``level='subarray'``) or
        per-telescope groups (``level='telescope'``) in the file."""
        root = DL2_SUBARRAY_GROUP if level == "subarray" else DL2_TELESCOPE_GROUP
        if root not in self.h5:
            return []
        found = []
        for kind_group in self.h5.get_node(root)._f_iter_nodes("Group"):
            for child in kind_group._f_iter_nodes():
                found.append((kind_group._v_name, child._v_name, child._v_pathname))
        return sorted(found)

    def units(self):
        """Column name -> unit string of the event tables (from ctapipe's ``CTAFIELD_<i>_UNIT`` attributes)."""
        units = {}
        for node in self.h5.walk_nodes("/", "Table"):
            path = node._v_pathname
            if not path.startswith(("/dl1/event", "/dl2/event", "/simulation/event", POINTING_GROUP,
                                    OBSERVATION_BLOCK)):
                continue
            attrs = node.attrs
            for i, name in enumerate(node.colnames):
                key = f"CTAFIELD_{i}_UNIT"
                if key in attrs._v_attrnames:
                    units.setdefault(name, str(attrs[key]))
        return units

    # -- indexing ------------------------------------------------------------------------
    def _range(self, start, stop):
        start = 0 if start is None else max(0, int(start))
        stop = self.n_events if stop is None else min(int(stop), self.n_events)
        return start, max(start, stop)

    @property
    def tel_counts(self):
        """``(n_events + 1, n_tels)``: telescope events of each telescope before each subarray event."""
        if self._counts is None:
            triggered = self._trigger.col("tels_with_trigger")
            counts = np.zeros((self.n_events + 1, triggered.shape[1] if triggered.ndim == 2 else 0), np.int64)
            np.cumsum(triggered, axis=0, out=counts[1:])
            self._counts = counts
        return self._counts

    def _all_keys(self, node):
        path = node._v_pathname
        if path not in self._key_cache:
            self._key_cache[path] = _event_keys(node.col("obs_id"), node.col("event_id"))
        return self._key_cache[path]

    def _read_aligned(self, node, base_keys, start_row, stop_row):
        """Rows of ``node`` for ``base_keys``: (rows, index into rows, -1 where absent).

        Fast path: the rows ``[start_row, stop_row)`` have exactly the wanted keys (tables
        written in trigger order, as ctapipe and iactpipe write them); otherwise the
        table's keys are searched.
        """
        if start_row is not None:
            stop_row = min(stop_row, node.nrows)
            rows = node.read(start_row, stop_row) if stop_row > start_row else node.read(0, 0)
            if len(rows) == len(base_keys) and np.array_equal(
                    rows["event_id"], base_keys["event_id"]) and np.array_equal(rows["obs_id"], base_keys["obs_id"]):
                return rows, np.arange(len(rows), dtype=np.int64)
        keys = self._all_keys(node)
        index = _match(base_keys, keys)
        wanted = index[index >= 0]
        if len(wanted) == 0:
            return node.read(0, 0), index
        lo, hi = int(wanted.min()), int(wanted.max()) + 1
        rows = node.read(lo, hi)
        return rows, np.where(index >= 0, index - lo, -1)

    # -- subarray events ---------------------------------------------------------------
    def read_subarray_events(self, start=None, stop=None, *, dl2=True, truth=True, pointing=True):
        """One row per subarray event in ``[start, stop)``: ``{column: array}``.

        Columns: ``obs_id, event_id, event_index, time`` (MJD, TAI), ``tels_with_trigger``
        (n, n_tels), ``event_type``; with ``truth`` the true shower (``true_energy`` ...);
        with ``dl2`` every ``/dl2/event/subarray/<kind>/<algorithm>`` table; with
        ``pointing`` the array pointing of the observation block (``subarray_pointing_lat``/
        ``_lon``/``_frame``, deg).
        """
        start, stop = self._range(start, stop)
        rows = self._trigger.read(start, stop)
        out = {
            "obs_id": rows["obs_id"], "event_id": rows["event_id"],
            "event_index": np.arange(start, stop, dtype=np.int64),
            "time": _time_to_mjd(rows["time"]), "tels_with_trigger": rows["tels_with_trigger"],
            "event_type": rows["event_type"],
        }
        keys = _event_keys(rows["obs_id"], rows["event_id"])
        if truth and SHOWER_TABLE in self.h5:
            self._merge(out, self.h5.get_node(SHOWER_TABLE), keys, start, stop, _EVENT_KEYS)
        if dl2:
            for _, _, path in self.dl2_groups("subarray"):
                node = self.h5.get_node(path)
                if isinstance(node, tables.Table):
                    self._merge(out, node, keys, start, stop, _EVENT_KEYS)
        if pointing:
            self._merge_observation_pointing(out)
        return out

    def _merge(self, out, node, keys, start_row, stop_row, skip, rename=None):
        rows, index = self._read_aligned(node, keys, start_row, stop_row)
        for name in rows.dtype.names:
            if name in skip:
                continue
            target = (rename or {}).get(name, name)
            out[target] = _take(rows[name], index)

    def _merge_observation_pointing(self, out):
        if OBSERVATION_BLOCK not in self.h5:
            return
        if self._obs_blocks is None:
            self._obs_blocks = self.h5.get_node(OBSERVATION_BLOCK).read()
        blocks = self._obs_blocks
        names = [n for n in ("subarray_pointing_lat", "subarray_pointing_lon", "subarray_pointing_frame")
                 if n in blocks.dtype.names]
        index = _match(np.asarray(out["obs_id"], np.int64), blocks["obs_id"].astype(np.int64))
        for name in names:
            out[name] = _take(blocks[name], index)

    # -- telescope events --------------------------------------------------------------
    def _telescope_base(self, start, stop, tel_ids):
        """Per tel_id the telescope-trigger rows of events ``[start, stop)`` (or None if no trigger table)."""
        counts = self.tel_counts
        if TELESCOPE_TRIGGER not in self.h5:
            return None
        node = self.h5.get_node(TELESCOPE_TRIGGER)
        total = counts.sum(axis=1)
        lo, hi = int(total[start]), int(total[stop])
        rows = node.read(lo, min(hi, node.nrows)) if hi > lo else node.read(0, 0)
        expected_ok = len(rows) == hi - lo
        by_tel = {}
        for tel_id in tel_ids:
            sel = rows[rows["tel_id"] == tel_id]
            by_tel[tel_id] = sel
        if not expected_ok:  # trigger table not in event order: search it
            keys_all = node.read()
            for tel_id in tel_ids:
                by_tel[tel_id] = keys_all[keys_all["tel_id"] == tel_id]
        return by_tel

    def read_telescope_events_by_id(self, tel_ids=None, start=None, stop=None, *, dl1=True, dl2=True, truth=True,
                                    pointing=True, images=False, subarray_columns=True):
        """``{tel_id: {column: array}}`` of the telescope events of subarray events ``[start, stop)``.

        Telescopes without events in the range are left out.  Rows are in file order.
        ``subarray_columns=False`` leaves out the columns of the subarray events (trigger,
        true shower, subarray DL2) except ``event_index``.
        """
        start, stop = self._range(start, stop)
        tel_ids = self.tel_ids if tel_ids is None else [int(t) for t in tel_ids]
        unknown = sorted(set(tel_ids) - set(self.tel_ids))
        if unknown:
            raise DataError(f"{self.path}: tel_ids {unknown} not in the subarray (tel_ids {self.tel_ids})")
        events = self.read_subarray_events(start, stop, dl2=dl2, truth=truth, pointing=False)
        event_keys = _event_keys(events["obs_id"], events["event_id"])
        base = self._telescope_base(start, stop, tel_ids)
        params = self.telescope_tables(PARAMETERS_GROUP) if dl1 else {}
        counts = self.tel_counts
        groups = []
        if dl1:
            groups.append((params, {}))
        if images:
            groups.append((self.telescope_tables(IMAGES_GROUP), {}))
        if dl2:
            for _, _, path in self.dl2_groups("telescope"):
                groups.append((self.telescope_tables(path), {}))
        if truth:
            groups.append((self.telescope_tables(TRUE_IMPACT_GROUP), {}))
            groups.append((self.telescope_tables(TRUE_PARAMETERS_GROUP), {}))
            groups.append((self.telescope_tables(TRUE_IMAGES_GROUP), {"true_image": None}))
        result = {}
        for tel_id in tel_ids:
            col = self._tel_index[tel_id]
            lo, hi = (int(counts[start, col]), int(counts[stop, col])) if counts.shape[1] else (None, None)
            if base is not None:
                trig = base[tel_id]
                out = {
                    "obs_id": trig["obs_id"], "event_id": trig["event_id"], "tel_id": trig["tel_id"],
                    "time_mono": _time_to_mjd(trig["time"]), "event_type_mono": trig["event_type"],
                }
                if "n_trigger_pixels" in trig.dtype.names:
                    out["n_trigger_pixels"] = trig["n_trigger_pixels"]
            elif tel_id in params:
                rows, _ = self._read_aligned_range(params[tel_id], lo, hi)
                out = {k: rows[k] for k in _TEL_KEYS}
            else:
                continue
            if len(out["event_id"]) == 0:
                continue
            keys = _event_keys(out["obs_id"], out["event_id"])
            for tables_by_tel, skip_columns in groups:
                node = tables_by_tel.get(tel_id)
                if node is None:
                    continue
                rows, index = self._read_aligned(node, keys, lo, hi)
                for name in rows.dtype.names:
                    if name in _TEL_KEYS or name in skip_columns or name in out:
                        continue
                    out[name] = _take(rows[name], index)
            event_pos = _match(keys, event_keys)
            if pointing:
                event_time = out.get("time_mono")
                if event_time is None and "time" in events:
                    event_time = _take(events["time"], event_pos)
                self._merge_telescope_pointing(out, tel_id, event_time)
                if subarray_columns:
                    self._merge_observation_pointing(out)
            out["event_index"] = np.where(event_pos >= 0, events["event_index"][np.maximum(event_pos, 0)], -1)
            if subarray_columns:
                for name, values in events.items():
                    if name in _EVENT_KEYS or name == "event_index":
                        continue
                    out[name] = _take(values, event_pos)
            result[tel_id] = out
        return result

    def _read_aligned_range(self, node, lo, hi):
        rows = node.read(lo, min(hi, node.nrows)) if lo is not None else node.read()
        return rows, np.arange(len(rows))

    def _pointing_track(self, tel_id):
        """``(time_mjd, alt, unwrapped az)`` in rad of a tracking telescope's pointing samples, or None."""
        key = ("track", tel_id)
        if key not in self._pointing:
            self._pointing[key] = None
            for group in MONITORING_POINTING_GROUPS:
                path = f"{group}/tel_{tel_id:03d}"
                if path in self.h5:
                    rows = self.h5.get_node(path).read()
                    if len(rows):
                        order = np.argsort(_time_to_mjd(rows["time"]), kind="stable")
                        rows = rows[order]
                        self._pointing[key] = (_time_to_mjd(rows["time"]), rows["altitude"].astype(np.float64),
                                               np.unwrap(rows["azimuth"].astype(np.float64)))
                    break
        return self._pointing[key]

    def _merge_telescope_pointing(self, out, tel_id, event_time=None):
        """Telescope pointing per row: interpolated in time from a monitoring pointing series when the file
        has one (tracking runs), else the fixed pointing of /configuration/telescope/pointing."""
        track = self._pointing_track(tel_id)
        if track is not None and event_time is not None:
            t, alt, az = track
            out["telescope_pointing_altitude"] = np.interp(event_time, t, alt)
            out["telescope_pointing_azimuth"] = np.mod(np.interp(event_time, t, az), 2 * np.pi)
            return
        if tel_id not in self._pointing:
            path = f"{POINTING_GROUP}/tel_{tel_id:03d}"
            self._pointing[tel_id] = self.h5.get_node(path).read() if path in self.h5 else None
        table = self._pointing[tel_id]
        if table is None:
            return
        index = _match(np.asarray(out["obs_id"], np.int64), table["obs_id"].astype(np.int64))
        for name in ("telescope_pointing_azimuth", "telescope_pointing_altitude"):
            if name in table.dtype.names:
                out[name] = _take(table[name], index)

    def read_telescope_events(self, tel_ids=None, start=None, stop=None, **kwargs):
        """``{tel_type: {column: array}}``: the telescope events of each telescope type, rows ordered by
        subarray event then tel_id.  Keyword arguments as :meth:`read_telescope_events_by_id`."""
        by_id = self.read_telescope_events_by_id(tel_ids, start, stop, **kwargs)
        result = {}
        for tel_type, type_ids in self.telescope_types().items():
            parts = [by_id[t] for t in type_ids if t in by_id]
            if parts:
                result[tel_type] = _concatenate(parts)
        return result

    def iter_telescope_events(self, chunk_size, tel_ids=None, start=None, stop=None, **kwargs):
        """Yield ``(start, stop, {tel_type: {column: array}})`` for consecutive chunks of subarray events."""
        first, last = self._range(start, stop)
        for lo in range(first, last, int(chunk_size)):
            hi = min(lo + int(chunk_size), last)
            yield lo, hi, self.read_telescope_events(tel_ids, lo, hi, **kwargs)

    def iter_subarray_events(self, chunk_size, start=None, stop=None, **kwargs):
        """Yield ``(start, stop, {column: array})`` for consecutive chunks of subarray events."""
        first, last = self._range(start, stop)
        for lo in range(first, last, int(chunk_size)):
            hi = min(lo + int(chunk_size), last)
            yield lo, hi, self.read_subarray_events(lo, hi, **kwargs)


def _concatenate(parts):
    """Concatenate per-telescope column dicts (absent columns filled) and order by (event_index, tel_id)."""
    names = []
    for part in parts:
        names.extend(n for n in part if n not in names)
    out = {}
    for name in names:
        pieces = []
        for part in parts:
            n = len(part["event_id"])
            if name in part:
                pieces.append(part[name])
            else:
                ref = next(p[name] for p in parts if name in p)
                fill = np.empty((n,) + ref.shape[1:], ref.dtype)
                fill[...] = _fill_value(ref.dtype)
                pieces.append(fill)
        out[name] = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    order = np.lexsort((out["tel_id"], out["event_index"]))
    if not np.array_equal(order, np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out


# -- convenience functions ---------------------------------------------------------------


def telescope_types(path):
    """Telescope type string (e.g. ``LST_LST_LSTCam``, ``MST_MST_NectarCam``) -> tel_ids of a file."""
    try:
        subarray = SubarrayDescription.from_hdf(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    types = {}
    for tel_id in subarray.tel_ids:
        types.setdefault(subarray.tels[tel_id].type, []).append(int(tel_id))
    return types


def read_subarray_events(path, start=None, stop=None, *, dl2=True, truth=True, pointing=True):
    """``{column: array}`` per subarray event (see :meth:`EventFile.read_subarray_events`)."""
    with EventFile(path) as f:
        return f.read_subarray_events(start, stop, dl2=dl2, truth=truth, pointing=pointing)


def read_telescope_events(path, tel_ids=None, *, dl1=True, dl2=True, truth=True, pointing=True, images=False,
                          start=None, stop=None):
    """``{tel_type: {column: array}}`` of telescope events (see :meth:`EventFile.read_telescope_events`)."""
    with EventFile(path) as f:
        return f.read_telescope_events(tel_ids, start, stop, dl1=dl1, dl2=dl2, truth=truth, pointing=pointing,
                                       images=images)


def read_telescope_events_by_id(path, tel_ids=None, *, dl1=True, dl2=True, truth=True, pointing=True,
                                images=False, start=None, stop=None):
    """``{tel_id: {column: array}}`` of telescope events (see :meth:`EventFile.read_telescope_events_by_id`)."""
    with EventFile(path) as f:
        return f.read_telescope_events_by_id(tel_ids, start, stop, dl1=dl1, dl2=dl2, truth=truth,
                                             pointing=pointing, images=images)


def iter_telescope_events(path, chunk_size, tel_ids=None, **kwargs):
    """Yield ``(start, stop, {tel_type: {column: array}})`` for chunks of ``chunk_size`` subarray events."""
    with EventFile(path) as f:
        yield from f.iter_telescope_events(chunk_size, tel_ids, **kwargs)
