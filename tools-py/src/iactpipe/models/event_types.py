"""Event types: quality classes of events by quantiles of a per-event quality estimator (UC-130-2.1.4).

An event-type model holds, per reconstructed-energy bin, the boundaries of an estimator of the angular
error (any expression over the DL2 subarray columns, low = better) that split the training gammas into
classes of fixed fractions (default quartiles).  Type 1 holds the best-estimated events, type N the worst,
like CTAO's PSF-quartile event types.  Applying the model is a lookup: an event's type is 1 + the number of
boundaries of its energy bin that its estimator value reaches (energies outside the bins use the first /
last bin); events without a finite energy or estimator get type -1 (``NO_TYPE``).

Pure functions over numpy arrays first; the file I/O (model file, DL2 columns, the event-type table) last.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tables

from ..errors import DataError
from ..expressions import compile_expression
from ..io.tables import FILTERS
from ._json import json_default

__all__ = ["EventTypeModel", "quantile_boundaries", "classify", "containment", "resolution_per_type",
           "write_event_type_model", "read_event_type_model", "aligned_columns", "read_subarray_columns",
           "write_event_type_table", "NO_TYPE", "EVENT_TYPE_GROUP"]

NO_TYPE = -1
EVENT_TYPE_GROUP = "/dl2/event/subarray/event_type"
MODEL_FORMAT = "iactpipe-event-type-model"
MODEL_FORMAT_VERSION = 1
MULTIPLICITY = "multiplicity"


@dataclass
class EventTypeModel:
    """Energy bins (TeV, ``n_bins + 1`` edges), estimator boundaries ``(n_bins, n_types - 1)`` and metadata.

    ``metadata`` has at least ``estimator`` (expression), ``geometry`` and ``energy`` (algorithm names),
    ``prefix`` (name of the output table/column), ``fractions``; training adds counts and resolutions.
    """

    energy_bins: np.ndarray
    boundaries: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def n_types(self):
        return self.boundaries.shape[1] + 1

    @property
    def estimator(self):
        return self.metadata["estimator"]

    @property
    def prefix(self):
        return self.metadata.get("prefix") or "EventType"


# -- physics: boundaries, classification, resolution -----------------------------------------------
def energy_bin_index(energy, energy_bins):
    """Bin of each energy (first / last bin below / above the edges; -1 for NaN or non-positive energies)."""
    energy = np.asarray(energy, np.float64)
    n_bins = len(energy_bins) - 1
    index = np.clip(np.searchsorted(energy_bins, energy, side="right") - 1, 0, n_bins - 1)
    return np.where(np.isfinite(energy) & (energy > 0), index, -1)


def quantile_boundaries(energy, estimator, energy_bins, fractions, min_events=10):
    """Per energy bin, the estimator values splitting the events into classes of the given ``fractions``.

    Returns ``(boundaries (n_bins, n_types - 1), counts (n_bins,), filled (n_bins,) bool)``.  Bins with
    fewer than ``min_events`` events take the boundaries of the nearest bin that has enough (``filled``);
    if no bin has enough, ValueError.
    """
    fractions = np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or len(fractions) < 2 or np.any(fractions <= 0):
        raise ValueError("fractions must be >= 2 positive numbers")
    cuts = np.cumsum(fractions / fractions.sum())[:-1]
    estimator = np.asarray(estimator, np.float64)
    index = energy_bin_index(energy, energy_bins)
    ok = (index >= 0) & np.isfinite(estimator)
    n_bins = len(energy_bins) - 1
    counts = np.bincount(index[ok], minlength=n_bins)[:n_bins]
    boundaries = np.full((n_bins, len(cuts)), np.nan)
    good = np.flatnonzero(counts >= max(min_events, 1))
    if len(good) == 0:
        raise ValueError(f"no energy bin has {min_events} events with a finite energy and estimator "
                         f"(most: {counts.max() if n_bins else 0})")
    for b in good:
        boundaries[b] = np.quantile(estimator[ok & (index == b)], cuts)
    for b in np.setdiff1d(np.arange(n_bins), good):
        boundaries[b] = boundaries[good[np.argmin(np.abs(good - b))]]
    filled = counts < max(min_events, 1)
    return boundaries, counts, filled


def classify(energy, estimator, energy_bins, boundaries):
    """Event type per event: 1 (best, lowest estimator) .. n_types; ``NO_TYPE`` without energy/estimator."""
    estimator = np.asarray(estimator, np.float64)
    index = energy_bin_index(energy, energy_bins)
    ok = (index >= 0) & np.isfinite(estimator)
    types = np.full(len(estimator), NO_TYPE, np.int16)
    if ok.any():
        b = boundaries[index[ok]]
        types[ok] = 1 + np.count_nonzero(estimator[ok, np.newaxis] >= b, axis=1)
    return types


def angular_separation(alt1, az1, alt2, az2):
    """Great-circle distance (deg) between alt/az directions given in deg."""
    alt1, az1, alt2, az2 = (np.deg2rad(np.asarray(a, np.float64)) for a in (alt1, az1, alt2, az2))
    hav = np.sin((alt2 - alt1) / 2) ** 2 + np.cos(alt1) * np.cos(alt2) * np.sin((az2 - az1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0))))


def containment(theta, fraction=0.68):
    """Radius containing ``fraction`` of the separations ``theta`` (NaN for no events)."""
    theta = np.asarray(theta, np.float64)
    theta = theta[np.isfinite(theta)]
    return float(np.quantile(theta, fraction)) if len(theta) else np.nan


def resolution_per_type(theta, types, bin_index, n_types, n_bins, fraction=0.68):
    """68 % containment of ``theta`` per (energy bin, type) and per type over all bins, with the counts.

    Returns ``(per_bin (n_bins, n_types), counts (n_bins, n_types), total (n_types,), total_counts (n_types,))``.
    """
    per_bin = np.full((n_bins, n_types), np.nan)
    counts = np.zeros((n_bins, n_types), np.int64)
    total = np.full(n_types, np.nan)
    total_counts = np.zeros(n_types, np.int64)
    for t in range(1, n_types + 1):
        sel_t = types == t
        total_counts[t - 1] = np.count_nonzero(sel_t)
        total[t - 1] = containment(theta[sel_t], fraction)
        for b in range(n_bins):
            sel = sel_t & (bin_index == b)
            counts[b, t - 1] = np.count_nonzero(sel)
            per_bin[b, t - 1] = containment(theta[sel], fraction)
    return per_bin, counts, total, total_counts


def log_energy_bins(e_min, e_max, per_decade):
    """Logarithmic energy bin edges from ``e_min`` to ``e_max`` (TeV) with ``per_decade`` bins per decade."""
    n = max(int(np.ceil(np.log10(e_max / e_min) * per_decade - 1e-9)), 1)
    return np.geomspace(e_min, e_max, n + 1)


# -- model file ----------------------------------------------------------------------------------
def write_event_type_model(path, model):
    """Write an :class:`EventTypeModel` to a new HDF5 file (arrays + JSON metadata; no pickle)."""
    meta = dict(model.metadata)
    with tables.open_file(path, "w") as h5:
        attrs = h5.root._v_attrs
        attrs["IACTPIPE_MODEL_FORMAT"] = MODEL_FORMAT
        attrs["IACTPIPE_MODEL_FORMAT_VERSION"] = MODEL_FORMAT_VERSION
        attrs["IACTPIPE_MODEL_KIND"] = "event_types"
        group = h5.create_group("/", "event_types", title="iactpipe event-type model")
        edges = h5.create_array(group, "energy_bins", obj=np.asarray(model.energy_bins, np.float64),
                                title="reconstructed-energy bin edges")
        edges.attrs["unit"] = "TeV"
        h5.create_array(group, "boundaries", obj=np.asarray(model.boundaries, np.float64),
                        title="estimator boundaries between consecutive types, per energy bin")
        records = h5.create_vlarray(group, "metadata", tables.VLUnicodeAtom(), title="model metadata (JSON)")
        records.append(json.dumps(meta, sort_keys=True, default=json_default))
        # a quick look without JSON (h5dump): the estimator and resolution per type
        attrs["IACTPIPE_EVENT_TYPE_ESTIMATOR"] = str(meta.get("estimator", ""))
        if "angular_resolution_68" in meta:
            attrs["IACTPIPE_EVENT_TYPE_RESOLUTION_DEG"] = json.dumps(meta["angular_resolution_68"],
                                                                    default=json_default)


def read_event_type_model(path):
    """Read an event-type model file; DataError naming the file if it is not one."""
    path = Path(path)
    try:
        h5 = tables.open_file(path, "r")
    except (OSError, tables.HDF5ExtError, ValueError):
        raise DataError(f"{path}: not a readable HDF5 file (expected an event-type model from "
                        "iactpipe-train-event-types)") from None
    with h5:
        attrs = h5.root._v_attrs
        fmt = attrs["IACTPIPE_MODEL_FORMAT"] if "IACTPIPE_MODEL_FORMAT" in attrs._v_attrnames else None
        fmt = fmt.decode() if isinstance(fmt, bytes | np.bytes_) else fmt
        if fmt != MODEL_FORMAT or "/event_types/boundaries" not in h5:
            raise DataError(f"{path}: not an event-type model file (iactpipe-train-event-types)")
        version = int(attrs["IACTPIPE_MODEL_FORMAT_VERSION"])
        if version > MODEL_FORMAT_VERSION:
            raise DataError(f"{path}: event-type model format version {version} is newer than this iactpipe "
                            f"reads ({MODEL_FORMAT_VERSION})")
        bins = np.asarray(h5.get_node("/event_types/energy_bins").read(), np.float64)
        boundaries = np.asarray(h5.get_node("/event_types/boundaries").read(), np.float64)
        meta = json.loads(h5.get_node("/event_types/metadata")[0])
    if boundaries.ndim != 2 or boundaries.shape[0] != len(bins) - 1 or not meta.get("estimator"):
        raise DataError(f"{path}: inconsistent event-type model (boundaries {boundaries.shape}, "
                        f"{len(bins)} energy edges)")
    return EventTypeModel(bins, boundaries, meta)


# -- DL2 columns ---------------------------------------------------------------------------------
def _keys(obs_id, event_id, obs_values):
    """One int64 key per (obs_id, event_id); ``obs_values`` = the sorted obs_ids of both sides."""
    event_id = np.asarray(event_id, np.int64)
    if len(event_id) and (event_id.min() < 0 or event_id.max() >= 2**43):
        raise DataError(f"event_id {event_id.min()}..{event_id.max()} outside 0..2**43")
    return (np.searchsorted(obs_values, np.asarray(obs_id, np.int64)).astype(np.int64) << 43) | event_id


def aligned_columns(node, obs_id, event_id, names):
    """Columns ``names`` of table ``node`` on the rows of the events ``(obs_id, event_id)`` (NaN / False where
    the table has no row for an event)."""
    n = len(event_id)
    if node.nrows == 0:
        out = {}
        for name in names:
            dt = node.coldtypes[name]
            shape = (n, *dt.shape)
            out[name] = np.zeros(shape, bool) if dt.base == np.dtype(bool) else np.full(shape, np.nan)
        return out
    rows = node.read()
    if len(rows) == n and np.array_equal(rows["event_id"], event_id) and np.array_equal(rows["obs_id"], obs_id):
        return {name: rows[name] for name in names}
    obs_values = np.union1d(np.asarray(obs_id, np.int64), rows["obs_id"].astype(np.int64))
    keys = _keys(obs_id, event_id, obs_values)
    node_keys = _keys(rows["obs_id"], rows["event_id"], obs_values)
    order = np.argsort(node_keys, kind="stable")
    pos = np.clip(np.searchsorted(node_keys[order], keys), 0, len(order) - 1)
    found = node_keys[order][pos] == keys
    out = {}
    for name in names:
        col = rows[name][order][pos]
        if col.dtype == np.dtype(bool):
            col = col & (found if col.ndim == 1 else found[:, np.newaxis])
        else:
            col = col.astype(np.float64)
            col[~found] = np.nan
        out[name] = col
    return out


def read_subarray_columns(h5, names, geometry=None):
    """Columns ``names`` of the DL2 subarray tables (any table under /dl2/event/subarray), aligned on the
    trigger table's events, plus ``obs_id``, ``event_id``.  ``multiplicity`` is derived from
    ``<geometry>_telescopes`` when asked for.  DataError naming the file and column if one is missing."""
    if "/dl1/event/subarray/trigger" not in h5:
        raise DataError(f"{h5.filename}: not a DL2 event file (/dl1/event/subarray/trigger missing)")
    trigger = h5.get_node("/dl1/event/subarray/trigger")
    obs_id, event_id = trigger.col("obs_id"), trigger.col("event_id")
    out = {"obs_id": obs_id.astype(np.int32), "event_id": event_id.astype(np.int64)}
    wanted = [n for n in dict.fromkeys(names) if n not in out]
    derived = []
    if MULTIPLICITY in wanted:
        wanted.remove(MULTIPLICITY)
        derived.append(MULTIPLICITY)
        if geometry and f"{geometry}_telescopes" not in wanted:
            wanted.append(f"{geometry}_telescopes")
    if wanted and "/dl2/event/subarray" in h5:
        for node in h5.walk_nodes("/dl2/event/subarray", "Table"):
            if node._v_pathname.startswith(EVENT_TYPE_GROUP + "/"):
                continue
            found = [n for n in wanted if n in node.colnames]
            if found:
                out.update(aligned_columns(node, obs_id, event_id, found))
                wanted = [n for n in wanted if n not in found]
    if wanted:
        raise DataError(f"{h5.filename}: column {wanted[0]!r} not in the DL2 subarray tables "
                        "(/dl2/event/subarray/...)")
    if derived:
        if not geometry:
            raise DataError(f"{h5.filename}: 'multiplicity' needs the geometry algorithm")
        out[MULTIPLICITY] = np.count_nonzero(out[f"{geometry}_telescopes"], axis=1)
    return out


def event_type_inputs(h5, estimator, geometry, energy, extra=()):
    """Per event: ``obs_id, event_id, energy`` (TeV, NaN if invalid), ``estimator`` (NaN if the geometry is
    invalid), plus the ``extra`` columns, from the DL2 subarray tables of an open file."""
    expr = compile_expression(estimator)
    e_col, e_valid = f"{energy}_energy", f"{energy}_is_valid"
    g_valid = f"{geometry}_is_valid"
    names = [e_col, e_valid, g_valid, *expr.names, *extra]
    cols = read_subarray_columns(h5, names, geometry=geometry)
    n = len(cols["event_id"])
    value = np.asarray(expr(cols, n), np.float64)
    energy_tev = np.where(cols[e_valid], cols[e_col], np.nan).astype(np.float64)
    value = np.where(cols[g_valid], value, np.nan)
    out = {"obs_id": cols["obs_id"], "event_id": cols["event_id"], "energy": energy_tev, "estimator": value}
    out.update({n: cols[n] for n in extra})
    return out


def default_estimator(geometry):
    """Default quality estimator: 1 / sqrt(mean image intensity), a photon-statistics proxy of the direction
    error (ctapipe's HillasReconstructor ``alt_uncert`` is 0 for two-telescope events, so not usable)."""
    return f"1 / sqrt({geometry}_average_intensity)"


def write_event_type_table(h5, prefix, obs_id, event_id, types):
    """Append ``/dl2/event/subarray/event_type/<prefix>`` (obs_id, event_id, <prefix>_event_type,
    <prefix>_is_valid) to an open, writable file, with ctapipe's CTAFIELD attributes."""
    dtype = np.dtype([("obs_id", np.int32), ("event_id", np.int64), (f"{prefix}_event_type", np.int16),
                      (f"{prefix}_is_valid", bool)])
    rows = np.empty(len(event_id), dtype)
    rows["obs_id"], rows["event_id"], rows[f"{prefix}_event_type"] = obs_id, event_id, types
    rows[f"{prefix}_is_valid"] = np.asarray(types) != NO_TYPE
    path = f"{EVENT_TYPE_GROUP}/{prefix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        if path in h5:
            h5.remove_node(path)
        table = h5.create_table(EVENT_TYPE_GROUP, prefix, description=dtype, createparents=True,
                                expectedrows=max(len(rows), 1), title="event type per subarray event",
                                filters=FILTERS)
    descriptions = ["Observation Block ID", "Array Event ID",
                    "event type (1 = best angular-error class ... n; -1 = no type)", "true if the event has a type"]
    names = ["obs_id", "event_id", "event_type", "is_valid"]
    for i, (name, desc) in enumerate(zip(names, descriptions, strict=True)):
        table.attrs[f"CTAFIELD_{i}_NAME"] = name
        table.attrs[f"CTAFIELD_{i}_DESC"] = desc
    table.append(rows)
    return table
