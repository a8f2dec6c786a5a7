"""Table-level merging and event selection of iactpipe / ctapipe HDF5 files (no physics).

Both operations walk the tables of ctapipe's data model and treat each by its kind:

- *event* tables (an ``obs_id`` and an ``event_id`` column: triggers, showers, images,
  parameters, DL2 per algorithm, waveforms) are streamed chunk by chunk: appended in
  input order (merge) or routed to one output per event (split);
- the *simulation run* settings and the *shower distribution* are one row per run:
  rows of the same ``obs_id`` (e.g. the two halves of a split run) are summed
  (``n_showers``; ``n_entries`` and ``histogram``), splitting scales them;
- observation/scheduling blocks and the fixed telescope pointing are de-duplicated by id;
- cut-flow *statistics* tables (``criteria``, ``counts``, ``cumulative_counts``) are summed;
- the atmosphere profile must be identical; the instrument description must describe the
  same telescopes (compared by content, so ctapipe- and iactpipe-written files merge);
- any other table (monitoring time series) is appended; an identical copy of one already
  appended (as made by a split) is kept once;
- an array whose attribute ``IACTPIPE_ROWS_OF`` names a table (the compact DL0's samples,
  one row per row of its waveform table) goes with that table: appended in the same input
  order (merge), its rows routed with the table's events (split).

Table and column attributes (``CTAFIELD_*`` and others) are copied as they are, so
ctapipe's readers restore units, times and enums in the output.  Peak memory is bounded
by the chunk size and by the run-level tables, not by the input sizes.
"""

import logging
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import tables
from numba import njit

from ..errors import DataError
from ..instrument import SubarrayDescription
from .tables import FILTERS, OPEN_PARAMS, ROWS_OF_ATTR

__all__ = [
    "INSTRUMENT_GROUP",
    "SIMULATION_RUN",
    "SHOWER_DISTRIBUTION",
    "DL1_IMAGES_GROUP",
    "SIMULATION_IMAGES_GROUP",
    "ROWS_OF_ATTR",
    "table_kind",
    "scan_file",
    "subarray_difference",
    "merge_files",
    "split_file",
    "split_assignment",
    "allocate_counts",
]

log = logging.getLogger(__name__)

INSTRUMENT_GROUP = "/configuration/instrument"
SIMULATION_RUN = "/configuration/simulation/run"
SHOWER_DISTRIBUTION = "/simulation/service/shower_distribution"
OBSERVATION_BLOCK = "/configuration/observation/observation_block"
SCHEDULING_BLOCK = "/configuration/observation/scheduling_block"
POINTING_GROUP = "/configuration/telescope/pointing"
ATMOSPHERE = "/simulation/service/atmosphere_density_profile"
DL1_IMAGES_GROUP = "/dl1/event/telescope/images"
SIMULATION_IMAGES_GROUP = "/simulation/event/telescope/images"
PROVENANCE_GROUP = "/provenance"
#: subarray-level event tables that list a file's events (first present one is used)
EVENT_LIST_TABLES = ("/dl1/event/subarray/trigger", "/simulation/event/subarray/shower")
#: root attributes not carried from an input to an output (set again for the new product)
_PRODUCT_ATTRS = re.compile(r"^(CTA (PRODUCT ID|PRODUCT CREATION TIME|ACTIVITY .*)|IACTPIPE .*)$")
_TEL_TABLE = re.compile(r"^tel_\d+$")
_CTAFIELD = re.compile(r"^CTAFIELD_(\d+)_(.+)$")

EVENTS, ROWS, RUN, DISTRIBUTION, BLOCK, STATISTICS, STATIC = (
    "events", "rows", "simulation run", "shower distribution", "block", "statistics", "static",
)
#: columns that are counts of simulated showers, summed on merge and scaled on split
SUMMED_COLUMNS = {RUN: ("n_showers",), DISTRIBUTION: ("n_entries", "histogram"),
                  STATISTICS: ("counts", "cumulative_counts")}
#: key columns of the run-level tables
KEY_COLUMNS = {RUN: ("obs_id",), DISTRIBUTION: ("obs_id", "hist_id"), STATISTICS: ("criteria",)}

#: rows of one chunk are capped at this many bytes (images: a few thousand rows)
MAX_CHUNK_BYTES = 64 * 2**20


def table_kind(path, colnames):
    """How a table is merged/split: one of the kinds listed in the module docstring."""
    names = set(colnames)
    if path == SIMULATION_RUN:
        return RUN
    if path == SHOWER_DISTRIBUTION:
        return DISTRIBUTION
    if path in (OBSERVATION_BLOCK, SCHEDULING_BLOCK) or path.startswith(POINTING_GROUP + "/"):
        return BLOCK
    if {"criteria", "counts", "cumulative_counts"} <= names:
        return STATISTICS
    if {"obs_id", "event_id"} <= names:
        return EVENTS
    if path == ATMOSPHERE:
        return STATIC
    return ROWS


def block_key(path):
    """Columns identifying a row of an observation-level table."""
    return ("sb_id",) if path == SCHEDULING_BLOCK else ("obs_id",)


def event_group(path):
    """The group a table belongs to for completeness checks: the parent of ``tel_XXX`` tables."""
    parent, name = path.rsplit("/", 1)
    return parent if _TEL_TABLE.match(name) else path


# -- reading inputs ------------------------------------------------------------------------


def open_input(path):
    """Open an HDF5 input read-only; one-line DataError if it is not a readable HDF5 file."""
    try:
        return tables.open_file(path, "r", **OPEN_PARAMS)
    except (OSError, tables.HDF5ExtError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        if "truncated" in first.lower():
            raise DataError(f"{path}: truncated HDF5 file") from None
        raise DataError(f"{path}: not a readable HDF5 file") from None


def _read(node, path, start=None, stop=None):
    try:
        return node.read(start=start, stop=stop)
    except (OSError, tables.HDF5ExtError, ValueError) as err:
        raise DataError(f"{path}: cannot read {node._v_pathname} (truncated or corrupt file: "
                        f"{err.__class__.__name__})") from None


def _user_attrs(node):
    """A node's user attributes as a dict (pickled enum classes come back as stored)."""
    attrs = node._v_attrs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: attrs[name] for name in attrs._v_attrnamesuser}


@dataclass
class InputTable:
    """What a scan learnt about one table of one input."""

    path: str
    kind: str
    dtype: np.dtype  # after dropping columns
    nrows: int


@dataclass
class InputArray:
    """What a scan learnt about one array whose rows are those of a table (``rows_of``)."""

    path: str
    rows_of: str
    dtype: np.dtype
    row_shape: tuple
    nrows: int


@dataclass
class InputFile:
    """What a scan learnt about one input file."""

    path: object
    tables: dict  # node path -> InputTable
    subarray: SubarrayDescription
    root_attrs: dict
    obs_ids: np.ndarray  # of its events
    n_events: int
    event_groups: set = field(default_factory=set)
    arrays: dict = field(default_factory=dict)  # node path -> InputArray


def _drop(dtype, names):
    if not names:
        return dtype
    return np.dtype([(n, dtype.fields[n][0]) for n in dtype.names if n not in names])


def scan_file(path, skip_groups=(), drop_columns=None, h5=None):
    """Check an input and list its tables (without reading their rows).

    ``skip_groups``: group paths whose tables are left out; ``drop_columns``:
    ``{group path: column names}`` left out of the tables of that group; ``h5``: the file,
    already open (kept open), else it is opened and closed here.
    Reads the last row of every table, so truncated files fail here, before any output.
    """
    drop_columns = drop_columns or {}
    with open_input(path) if h5 is None else nullcontext(h5) as h5:
        if INSTRUMENT_GROUP + "/subarray/layout" not in h5:
            raise DataError(f"{path}: no instrument description ({INSTRUMENT_GROUP}/subarray/layout missing)")
        found, arrays = {}, {}
        for node in h5.walk_nodes("/", "Leaf"):
            node_path = node._v_pathname
            if node_path.startswith((INSTRUMENT_GROUP + "/", PROVENANCE_GROUP + "/")):
                continue
            rows_of = _rows_of(node)
            if not isinstance(node, tables.Table) and rows_of is None:
                log.warning("%s: %s is not a table, left out", path, node_path)
                continue
            group = node._v_parent._v_pathname
            if any(node_path.startswith(g + "/") for g in skip_groups):
                if rows_of is not None and not any(rows_of.startswith(g + "/") for g in skip_groups):
                    raise DataError(f"{path}: {node_path} holds the rows of {rows_of}: skip both or neither")
                continue
            if node.nrows:
                _read(node, path, node.nrows - 1, node.nrows)
            if rows_of is not None:
                arrays[node_path] = InputArray(node_path, rows_of, node.dtype, tuple(node.shape[1:]), int(node.nrows))
                continue
            dtype = _drop(node.dtype, drop_columns.get(group, ()))
            found[node_path] = InputTable(node_path, table_kind(node_path, node.colnames), dtype, int(node.nrows))
        obs_ids, n_events = np.zeros(0, np.int64), 0
        for list_path in EVENT_LIST_TABLES:
            if list_path in h5:
                node = h5.get_node(list_path)
                obs_ids = _unique_column(node, "obs_id", path)
                n_events = int(node.nrows)
                break
        root_attrs = {k: v for k, v in _user_attrs(h5.root).items() if not _PRODUCT_ATTRS.match(k)}
    try:
        subarray = SubarrayDescription.from_hdf(path)
    except (KeyError, IndexError, ValueError, tables.NoSuchNodeError) as err:
        raise DataError(f"{path}: unreadable instrument description ({err.__class__.__name__}: {err})") from None
    for array in arrays.values():
        table = found.get(array.rows_of)
        if table is None and any(array.rows_of.startswith(g + "/") for g in skip_groups):
            continue
        if table is None:
            raise DataError(f"{path}: {array.path} holds the rows of {array.rows_of}, which is missing")
        if table.nrows != array.nrows:
            raise DataError(f"{path}: {array.path} has {array.nrows} rows, {array.rows_of} {table.nrows}")
        if table.kind != EVENTS:
            raise DataError(f"{path}: {array.path} holds the rows of {array.rows_of}, which is not an event table")
    arrays = {p: a for p, a in arrays.items() if a.rows_of in found}
    info = InputFile(path, found, subarray, root_attrs, obs_ids.astype(np.int64), n_events, arrays=arrays)
    info.event_groups = {event_group(p) for p, t in found.items() if t.kind == EVENTS}
    return info


def _rows_of(node):
    """The table path an array's rows belong to (attribute ``IACTPIPE_ROWS_OF``), else None."""
    if not isinstance(node, tables.EArray) or ROWS_OF_ATTR not in node.attrs._v_attrnamesuser:
        return None
    return str(node.attrs[ROWS_OF_ATTR])


def _unique_column(node, name, path, chunk_rows=1_000_000):
    values = np.zeros(0, node.coldtypes[name])
    for start in range(0, node.nrows, chunk_rows):
        chunk = _read(node, path, start, min(start + chunk_rows, node.nrows))[name]
        values = np.union1d(values, chunk)
    return values


def _event_ids(path, obs_ids):
    """Event ids of ``path`` whose obs_id is in ``obs_ids``, as (obs_id, event_id) structured array."""
    pairs = np.zeros(0, [("obs_id", np.int64), ("event_id", np.int64)])
    with open_input(path) as h5:
        for list_path in EVENT_LIST_TABLES:
            if list_path not in h5:
                continue
            node = h5.get_node(list_path)
            for chunk in _chunks(node, path):
                keep = np.isin(chunk["obs_id"], obs_ids)
                sel = np.empty(int(keep.sum()), pairs.dtype)
                sel["obs_id"] = chunk["obs_id"][keep]
                sel["event_id"] = chunk["event_id"][keep]
                pairs = np.union1d(pairs, sel)
            break
    return pairs


def _chunks(node, path, chunk_rows=100_000):
    """Rows of a table or an array, at most ``chunk_rows`` and MAX_CHUNK_BYTES at a time."""
    row_bytes = node.dtype.itemsize * int(np.prod(node.shape[1:]))  # an array's row: several items
    step = max(1, min(int(chunk_rows), MAX_CHUNK_BYTES // max(row_bytes, 1)))
    for start in range(0, node.nrows, step):
        yield _read(node, path, start, min(start + step, node.nrows))


# -- checks --------------------------------------------------------------------------------


def _same(a, b):
    """Equal numbers/arrays, NaN equal to NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.array_equal(a, b))


def subarray_difference(a, b):
    """First difference between two subarrays (telescopes, positions, optics, cameras), or None.

    Names are not compared (ctapipe and iactpipe may name the same layout differently).
    """
    if list(a.tel_ids) != list(b.tel_ids):
        return f"telescopes {a.tel_ids.tolist()} vs {b.tel_ids.tolist()}"
    if not np.allclose(a.positions, b.positions, rtol=0, atol=1e-4):
        return "telescope positions"
    for tel_id in a.tel_ids:
        ta, tb = a.tels[tel_id], b.tels[tel_id]
        if ta.type != tb.type:
            return f"tel_id {tel_id}: type {ta.type} vs {tb.type}"
        oa, ob = ta.optics, tb.optics
        for name in ("mirror_area", "equivalent_focal_length", "effective_focal_length"):
            va, vb = getattr(oa, name), getattr(ob, name)
            if not (np.isclose(va, vb, rtol=1e-6) or (np.isnan(va) and np.isnan(vb))):
                return f"tel_id {tel_id}: optics {name} {va} vs {vb}"
        if (oa.reflector_shape, oa.n_mirrors, oa.n_mirror_tiles) != (ob.reflector_shape, ob.n_mirrors,
                                                                     ob.n_mirror_tiles):
            return f"tel_id {tel_id}: optics"
        if ta.geometry != tb.geometry:
            return f"tel_id {tel_id}: camera geometry {ta.geometry.name}"
        if ta.readout != tb.readout:
            return f"tel_id {tel_id}: camera readout {ta.readout.name}"
    return None


def check_compatible(infos):
    """Same instrument in all inputs (DataError otherwise); event tables only where complete.

    A group of event tables (e.g. ``/dl1/event/telescope/images``) that some inputs with events
    lack is left out of the output, with a warning: the merged file holds no table that would
    cover only part of its events.
    """
    first = infos[0]
    for other in infos[1:]:
        diff = subarray_difference(first.subarray, other.subarray)
        if diff is not None:
            raise DataError(f"{other.path}: instrument differs from {first.path} ({diff})")
    with_events = [f for f in infos if f.n_events]
    if len(with_events) < 2:
        return
    every = set.union(*(f.event_groups for f in with_events))
    common = set.intersection(*(f.event_groups for f in with_events))
    for group in sorted(every - common):
        lacking = next(f.path for f in with_events if group not in f.event_groups)
        log.warning("%s left out: not in %s", group, lacking)
        for info in infos:
            for path in [p for p, t in info.tables.items() if t.kind == EVENTS and event_group(p) == group]:
                del info.tables[path]
            for path in [p for p, a in info.arrays.items() if a.rows_of not in info.tables]:
                del info.arrays[path]


def plan_tables(infos):
    """Output dtype per table path (string columns widened to the longest); DataError on column mismatch."""
    plan = {}
    owner = {}
    for info in infos:
        for path, table in info.tables.items():
            if path not in plan:
                plan[path] = table.dtype
                owner[path] = info.path
                continue
            have = plan[path]
            if have.names != table.dtype.names:
                only_a = [n for n in have.names if n not in table.dtype.names]
                only_b = [n for n in table.dtype.names if n not in have.names]
                detail = f"only in {owner[path]}: {only_a}; only in {info.path}: {only_b}" if (only_a or only_b) \
                    else "column order"
                raise DataError(f"{info.path}: table {path} has other columns than in {owner[path]} ({detail})")
            fields = []
            for name in have.names:
                da, db = have.fields[name][0], table.dtype.fields[name][0]
                if da == db:
                    fields.append((name, da))
                elif da.base.kind == db.base.kind == "S" and da.shape == db.shape:
                    fields.append((name, np.dtype((max(da.base, db.base, key=lambda d: d.itemsize), da.shape))))
                else:
                    raise DataError(f"{info.path}: column {path}.{name} is {db} but {da} in {owner[path]}")
            plan[path] = np.dtype(fields)
    return plan


def plan_arrays(infos):
    """(dtype, row shape) per array path; DataError where inputs differ or one lacks an array
    its table's rows need (the output table would have rows without their samples)."""
    plan, owner = {}, {}
    for info in infos:
        for path, array in info.arrays.items():
            layout = (array.dtype, array.row_shape)
            if path not in plan:
                plan[path], owner[path] = layout, info.path
            elif plan[path] != layout:
                raise DataError(f"{info.path}: array {path} has rows of {array.dtype} {array.row_shape}, "
                                f"{plan[path][0]} {plan[path][1]} in {owner[path]}")
    for path in plan:
        rows_of = next(i.arrays[path].rows_of for i in infos if path in i.arrays)
        for info in infos:
            if path not in info.arrays and rows_of in info.tables:
                raise DataError(f"{info.path}: {path} missing (the rows of {rows_of} are in {owner[path]}'s)")
    return plan


def duplicated_events(infos):
    """(obs_id, event_id) pairs present in more than one input (only obs_ids shared by files are read)."""
    seen = {}
    shared = set()
    for info in infos:
        for obs_id in info.obs_ids.tolist():
            if obs_id in seen:
                shared.add(obs_id)
            seen[obs_id] = True
    if not shared:
        return None
    shared = np.array(sorted(shared), np.int64)
    known = None
    for info in infos:
        pairs = _event_ids(info.path, shared)
        if known is not None:
            both = np.intersect1d(known, pairs)
            if len(both):
                return info.path, both
            known = np.union1d(known, pairs)
        else:
            known = pairs
    return None


# -- writing -------------------------------------------------------------------------------


def _cast(rows, dtype):
    if rows.dtype == dtype:
        return rows
    out = np.empty(len(rows), dtype)
    for name in dtype.names:
        out[name] = rows[name]
    return out


def _column_attrs(attrs, old_names, new_names):
    """Table attributes with ``CTAFIELD_<i>_*`` renumbered for the columns kept."""
    if list(old_names) == list(new_names):
        return dict(attrs)
    position = {name: i for i, name in enumerate(new_names)}
    out = {}
    for key, value in attrs.items():
        match = _CTAFIELD.match(key)
        if match is None:
            out[key] = value
            continue
        old = int(match.group(1))
        if old < len(old_names) and old_names[old] in position:
            out[f"CTAFIELD_{position[old_names[old]]}_{match.group(2)}"] = value
    return out


@dataclass
class TableTemplate:
    """What is needed to create an output table like an input one."""

    attrs: dict
    title: str
    filters: object
    old_names: tuple

    @classmethod
    def of(cls, node):
        return cls(_user_attrs(node), node._v_title, node.filters, tuple(node.colnames))


def create_table(h5, path, dtype, template, expected_rows):
    """Create ``path`` in ``h5`` with ``dtype`` and the attributes of ``template``."""
    where, name = path.rsplit("/", 1)
    table = h5.create_table(where or "/", name, description=dtype, title=template.title,
                            filters=template.filters, expectedrows=max(int(expected_rows), 1),
                            createparents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        for key, value in _column_attrs(template.attrs, template.old_names, dtype.names).items():
            table.attrs[key] = value
    return table


@dataclass
class ArrayTemplate:
    """What is needed to create an output array like an input one."""

    attrs: dict
    title: str
    filters: object
    chunkshape: tuple

    @classmethod
    def of(cls, node):
        return cls(_user_attrs(node), node._v_title, node.filters, node.chunkshape)


def create_array(h5, path, dtype, row_shape, template, expected_rows):
    """Create the extendable array ``path`` in ``h5`` (rows of ``row_shape``) like ``template``."""
    where, name = path.rsplit("/", 1)
    array = h5.create_earray(where or "/", name, atom=tables.Atom.from_dtype(np.dtype(dtype)),
                             shape=(0, *row_shape), title=template.title, filters=template.filters,
                             chunkshape=template.chunkshape, expectedrows=max(int(expected_rows), 1),
                             createparents=True)
    for key, value in template.attrs.items():
        array.attrs[key] = value
    return array


def copy_instrument(src_path, h5):
    """Copy ``/configuration/instrument`` (tables and attributes as they are) into an open output.

    Table by table (PyTables' recursive ``copy_node`` between files takes hundreds of MB).
    """
    with open_input(src_path) as src:
        for node in src.walk_nodes(INSTRUMENT_GROUP, "Table"):
            target = create_table(h5, node._v_pathname, node.dtype, TableTemplate.of(node), node.nrows)
            for chunk in _chunks(node, src_path):
                target.append(chunk)
        for group in src.walk_groups(INSTRUMENT_GROUP):
            attrs = _user_attrs(group)
            if attrs and group._v_pathname in h5:
                set_node_attrs(h5.get_node(group._v_pathname), attrs)


def set_node_attrs(node, attrs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        for key, value in attrs.items():
            node._v_attrs[key] = value


def set_root_attrs(h5, attrs):
    set_node_attrs(h5.root, attrs)


def _key_tuple(row, columns):
    return tuple(row[c].item() if hasattr(row[c], "item") else row[c] for c in columns)


def _rows_differ(a, b, ignore=()):
    """First column (not in ``ignore``) where two rows differ, or None."""
    for name in a.dtype.names:
        if name in ignore:
            continue
        if not _same(a[name], b[name]):
            return name
    return None


def combine_run_rows(kind, path, pieces):
    """Sum the rows of run-level tables that share a key; ``pieces`` = [(file, rows)].

    Simulation runs must agree on everything but ``n_showers``; shower distributions on their
    bin edges; statistics on their criteria.  Returns the combined rows in order of first appearance.
    """
    keys = KEY_COLUMNS[kind]
    summed = SUMMED_COLUMNS[kind]
    combined = {}
    origin = {}
    for source, rows in pieces:
        if kind == STATISTICS:  # a cut flow is one unit: its criteria list must match as a whole
            key = tuple(rows["criteria"].tolist())
            if combined and key not in combined:
                first = next(iter(combined))
                raise DataError(f"{source}: {path} has other criteria than {origin[first]} "
                                f"({list(key)} vs {list(first)})")
            if key not in combined:
                combined[key], origin[key] = rows.copy(), source
            else:
                for name in summed:
                    combined[key][name] += rows[name]
            continue
        for row in rows:
            key = _key_tuple(row, keys)
            if key not in combined:
                combined[key], origin[key] = row.copy(), source
                continue
            column = _rows_differ(combined[key], row, ignore=summed)
            if column is not None:
                raise DataError(f"{source}: {path} row {dict(zip(keys, key, strict=True))} differs from "
                                f"{origin[key]} in {column} (cannot sum runs with different settings)")
            for name in summed:
                combined[key][name] = combined[key][name] + row[name]
    if kind == STATISTICS:
        return np.concatenate(list(combined.values())) if combined else None
    return np.array(list(combined.values()), dtype=pieces[0][1].dtype) if combined else None


def dedupe_rows(path, pieces):
    """Rows of an observation-level table, one per id (the first); a warning if copies differ."""
    keys = block_key(path)
    if not set(keys) <= set(pieces[0][1].dtype.names):
        return np.concatenate([rows for _, rows in pieces])
    kept = {}
    for source, rows in pieces:
        for row in rows:
            key = _key_tuple(row, keys)
            if key not in kept:
                kept[key] = row.copy()
            elif _rows_differ(kept[key], row) is not None:
                log.warning("%s: %s row %s differs from an earlier input; first one kept", source, path, key)
    return np.array(list(kept.values()), dtype=pieces[0][1].dtype)


def identical_rows(path, pieces):
    first_source, first = pieces[0]
    for source, rows in pieces[1:]:
        if rows.dtype != first.dtype or len(rows) != len(first) or any(
                not _same(rows[n], first[n]) for n in first.dtype.names):
            raise DataError(f"{source}: {path} differs from {first_source}")
    return first


def combine_small_table(kind, path, pieces):
    """The output rows of a run-level table from the rows of all inputs."""
    if kind in (RUN, DISTRIBUTION, STATISTICS):
        return combine_run_rows(kind, path, pieces)
    if kind == BLOCK:
        return dedupe_rows(path, pieces)
    return identical_rows(path, pieces)


def read_small_tables(infos, plan):
    """Read and combine the run-level tables of all inputs: {path: (template, rows or None)}."""
    pieces = {}
    for info in infos:
        small = [p for p, t in info.tables.items() if t.kind not in (EVENTS, ROWS)]
        if not small:
            continue
        with open_input(info.path) as h5:
            for path in small:
                node = h5.get_node(path)
                entry = pieces.setdefault(path, (info.tables[path].kind, TableTemplate.of(node), []))
                entry[2].append((info.path, _cast(_read(node, info.path), plan[path])))
    return {path: (template, combine_small_table(kind, path, parts))
            for path, (kind, template, parts) in pieces.items()}


def merge_files(paths, output, skip_groups=(), drop_columns=None, allow_duplicates=False, chunk_rows=100_000):
    """Merge HDF5 files of one subarray into ``output`` (see the module docstring); returns a summary dict.

    All checks (instrument, columns, run settings, duplicated events) are done before writing.
    """
    infos = [scan_file(p, skip_groups, drop_columns) for p in paths]
    check_compatible(infos)
    plan = plan_tables(infos)
    array_plan = plan_arrays(infos)
    small = read_small_tables(infos, plan)
    dup = duplicated_events(infos)
    if dup is not None and not allow_duplicates:
        source, pairs = dup
        first = pairs[0]
        raise DataError(f"{source}: {len(pairs)} events already in an earlier input, e.g. obs_id "
                        f"{first['obs_id']} event_id {first['event_id']} (allow with --allow-duplicate-events)")
    expected = {p: sum(i.tables[p].nrows for i in infos if p in i.tables) for p in plan}
    created = {}  # strong references: PyTables would otherwise evict and re-open (slow) output tables
    digests = {}  # path -> digests of the ROWS tables appended (the copies a split made are kept once)
    with tables.open_file(output, "w", filters=FILTERS, **OPEN_PARAMS) as out:
        copy_instrument(infos[0].path, out)
        for info in infos:
            with open_input(info.path) as h5:
                for path, table in info.tables.items():
                    if table.kind not in (EVENTS, ROWS):
                        continue
                    node = h5.get_node(path)
                    dtype = plan[path]
                    if table.kind == ROWS:
                        digest = _table_digest(node, info.path, dtype)
                        if digest in digests.setdefault(path, set()):
                            log.info("%s: %s is identical to an earlier input's, kept once", info.path, path)
                            continue
                        digests[path].add(digest)
                    target = created.get(path)
                    if target is None:
                        target = created[path] = create_table(out, path, dtype, TableTemplate.of(node),
                                                              expected[path])
                    for chunk in _chunks(node, info.path, chunk_rows):
                        target.append(_cast(chunk, dtype))
                for path in info.arrays:
                    node = h5.get_node(path)
                    target = created.get(path)
                    if target is None:
                        dtype, row_shape = array_plan[path]
                        target = created[path] = create_array(
                            out, path, dtype, row_shape, ArrayTemplate.of(node),
                            sum(i.arrays[path].nrows for i in infos if path in i.arrays))
                    for rows in _chunks(node, info.path):
                        target.append(rows)
        for path, (template, rows) in small.items():
            if rows is not None:
                create_table(out, path, rows.dtype, template, len(rows)).append(rows)
        root = dict(infos[0].root_attrs)
        obs = _process_ids(infos)
        if obs:
            root["CTA PROCESS ID"] = obs
        set_root_attrs(out, root)
    return {"n_files": len(infos), "n_events": sum(i.n_events for i in infos), "n_tables": len(plan),
            "n_arrays": len(array_plan), "duplicates": 0 if dup is None else len(dup[1])}


def _table_digest(node, path, dtype):
    """SHA-256 of a table's rows (as ``dtype``)."""
    import hashlib

    digest = hashlib.sha256()
    for chunk in _chunks(node, path):
        digest.update(_cast(chunk, dtype).tobytes())
    return digest.hexdigest()


def _process_ids(infos):
    ids = []
    for info in infos:
        for part in str(info.root_attrs.get("CTA PROCESS ID", "")).split(","):
            part = part.strip()
            if part and part not in ids:
                ids.append(part)
    return ",".join(ids)


# -- split ---------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def _mix64(x):
    """splitmix64 finaliser: a bijection of uint64 with good avalanche."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _assign(obs_id, event_id, seed, edges):
    """Output index per event: a uniform number from the hash of (seed, obs_id, event_id) in [0, 1)
    placed among the cumulative fraction ``edges`` (inner edges only)."""
    n = len(obs_id)
    out = np.empty(n, np.int64)
    scale = 1.0 / 9007199254740992.0  # 2**-53
    base = _mix64(np.uint64(seed))
    for i in range(n):
        h = _mix64(base ^ _mix64(np.uint64(obs_id[i])))
        h = _mix64(h ^ np.uint64(event_id[i]))
        u = np.float64(h >> np.uint64(11)) * scale
        k = 0
        while k < len(edges) and u >= edges[k]:
            k += 1
        out[i] = k
    return out


def split_assignment(obs_id, event_id, seed, fractions):
    """Output index (0 .. len(fractions)-1) of each event, from a seeded hash of (obs_id, event_id).

    Depends only on the event's ids, the seed and the fractions: not on chunking or row order.
    """
    edges = np.cumsum(np.asarray(fractions, np.float64))[:-1]
    return _assign(np.asarray(obs_id).astype(np.int64), np.asarray(event_id).astype(np.int64),
                   np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), edges)


def allocate_counts(counts, fractions):
    """Integer counts shared out by fractions so that the parts sum exactly to ``counts``.

    Part ``i`` is ``round(c F_i) - round(c F_(i-1))`` with ``F`` the cumulative fractions:
    each part is within 1 of ``c f_i`` and merging the parts gives back ``c``.
    Returns an array of shape ``(len(fractions), *counts.shape)`` of the dtype of ``counts``.
    """
    counts = np.asarray(counts)
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(fractions, np.float64))])
    cumulative[-1] = 1.0
    edges = np.rint(np.multiply.outer(cumulative, counts.astype(np.float64)))
    return np.diff(edges, axis=0).astype(counts.dtype)


def scale_rows(kind, rows, fractions):
    """The rows of a run-level table for each output of a split (shower counts shared out)."""
    parts = [rows.copy() for _ in fractions]
    for name in SUMMED_COLUMNS.get(kind, ()):
        shared = allocate_counts(rows[name], fractions)
        for part, values in zip(parts, shared, strict=True):
            part[name] = values
    return parts


def split_file(path, outputs, fractions, seed, chunk_rows=100_000):
    """Write the events of ``path`` into ``outputs`` (one per fraction) by a seeded hash of the event ids.

    Event tables are filtered consistently (all tables of an event go to the same output);
    run-level tables are copied, with shower counts (``n_showers``, shower distribution,
    cut-flow counts) shared out by :func:`allocate_counts`.  Returns events per output.
    """
    fractions = np.asarray(fractions, np.float64)
    n_out = np.zeros(len(outputs), np.int64)
    with open_input(path) as h5:
        info = scan_file(path, h5=h5)  # the same handle: its tables stay open for the copy below
        _split_tables(h5, info, outputs, fractions, seed, chunk_rows, n_out)
    return n_out


def _split_array(h5, path, array, handles, fractions, seed):
    """Route the rows of an array as the events of its (event) table are routed."""
    node, table = h5.get_node(array.path), h5.get_node(array.rows_of)
    targets = [create_array(out, array.path, array.dtype, array.row_shape, ArrayTemplate.of(node),
                            max(1, array.nrows // len(handles))) for out in handles]
    first = 0
    for rows in _chunks(node, path):
        ids = _read(table, path, first, first + len(rows))
        first += len(rows)
        which = split_assignment(ids["obs_id"], ids["event_id"], seed, fractions)
        for k, target in enumerate(targets):
            target.append(rows[which == k])
    for target in targets:
        target.close()


def _split_tables(h5, info, outputs, fractions, seed, chunk_rows, n_out):
    """Write the tables of the open input ``h5`` into the outputs; adds the events per output to ``n_out``."""
    path = info.path
    handles = [tables.open_file(o, "w", filters=FILTERS, **OPEN_PARAMS) for o in outputs]
    try:
        for out in handles:
            copy_instrument(path, out)
        for node_path, table in info.tables.items():
            node = h5.get_node(node_path)
            template = TableTemplate.of(node)
            dtype = table.dtype
            if table.kind in (EVENTS, ROWS):
                targets = [create_table(out, node_path, dtype, template, max(1, table.nrows // len(outputs)))
                           for out in handles]
                for chunk in _chunks(node, path, chunk_rows):
                    if table.kind == ROWS:
                        for target in targets:
                            target.append(chunk)
                        continue
                    which = split_assignment(chunk["obs_id"], chunk["event_id"], seed, fractions)
                    for k, target in enumerate(targets):
                        target.append(chunk[which == k])
                    if node_path == EVENT_LIST_TABLES[0] or (
                            node_path == EVENT_LIST_TABLES[1] and EVENT_LIST_TABLES[0] not in info.tables):
                        n_out += np.bincount(which, minlength=len(outputs))
                for target in targets:  # done with it: free its chunk cache
                    target.close()
            else:
                rows = _read(node, path)
                parts = scale_rows(table.kind, rows, fractions)
                for out, part in zip(handles, parts, strict=True):
                    create_table(out, node_path, dtype, template, len(part)).append(part)
        for array in info.arrays.values():
            _split_array(h5, path, array, handles, fractions, seed)
        for out in handles:
            set_root_attrs(out, info.root_attrs)
    finally:
        for out in handles:
            out.close()
