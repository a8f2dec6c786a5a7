"""Schema-driven HDF5 tables in ctapipe's data model (PyTables, blosc:zstd).

Each table the project reads or writes is described by ``schemas/tables/<name>.yaml``:
its group path (a template such as ``/dl1/event/telescope/parameters/tel_{tel_id:03d}``),
and its columns with dtype, shape, unit and description.  The writer creates the
table from that schema and writes ctapipe's column attributes (``CTAFIELD_<i>_UNIT``
and friends) so that ctapipe's ``read_table``/``TableLoader`` restore units, times
and enums.  Rows are appended chunk by chunk: memory does not grow with file size.
"""

import io
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

import numpy as np
import tables
import tables.attributeset
import yaml

__all__ = [
    "Column",
    "TableSchema",
    "table_schema",
    "all_table_schemas",
    "schema_for_path",
    "schemas_for_path",
    "HDF5Writer",
    "read_table",
    "iter_table_chunks",
    "validate_file",
    "FILTERS",
    "load_packaged_yaml",
    "no_unpickling",
]

FILTERS = tables.Filters(complevel=5, complib="blosc:zstd", fletcher32=True)
#: HDF5 chunk cache per open table: PyTables' default, 16 MiB, fills as a table is read or written,
#: so with the ~100 tables of a file kept open, memory grows with the data passed through
#: (up to ~100 x 16 MiB); tables are read and written front to back, a chunk rarely twice
CHUNK_CACHE_SIZE = 2**20
#: PyTables keeps this many nodes open per file (default 64): a DL1 file has ~100 tables, and
#: re-opening an evicted table re-reads its ~100 attributes
NODE_CACHE_SLOTS = 4096
#: keyword arguments of ``tables.open_file`` for event files
OPEN_PARAMS = {"node_cache_slots": NODE_CACHE_SLOTS, "chunk_cache_size": CHUNK_CACHE_SIZE}
#: attribute of an array whose rows are those of a table (same number, same order), e.g. the compact DL0's samples
ROWS_OF_ATTR = "IACTPIPE_ROWS_OF"
_TEMPLATE = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Column:
    """One column of a table schema."""

    name: str
    dtype: str
    shape: tuple = ()
    unit: str | None = None
    description: str = ""
    field_name: str | None = None
    transform: str | None = None
    extra: dict = field(default_factory=dict)

    def numpy_dtype(self, dims, fmt):
        shape = tuple(dims[d] if isinstance(d, str) else int(d) for d in self.shape)
        if self.dtype == "string":
            return (self.name.format(**fmt), f"S{self.extra['maxlen']}", shape)
        return (self.name.format(**fmt), self.dtype, shape)


@dataclass(frozen=True)
class TableSchema:
    """A table's path template, columns and static attributes."""

    name: str
    path: str
    description: str
    columns: tuple
    attrs: dict

    def present(self, names, **keys):
        """Columns to write: all required ones, optional ones only if present in ``names``."""
        names = set(names)
        return tuple(
            c for c in self.columns
            if not c.extra.get("optional") or _format_partial(c.name, keys) in names
        )

    @property
    def keys(self):
        """Template keys in the path (e.g. ``tel_id``) and column names (e.g. ``algorithm``)."""
        found = set(_TEMPLATE.findall(self.path))
        for col in self.columns:
            found.update(_TEMPLATE.findall(col.name))
        return found

    def node_path(self, **keys):
        return self.path.format(**keys)

    def dtype(self, dims=None, columns=None, **keys):
        dims = dims or {}
        return np.dtype([c.numpy_dtype(dims, keys) for c in (columns or self.columns)])

    def path_regex(self):
        return _template_regex(self.path)


def _template_regex(template, known=None):
    """Regex matching ``template`` with its ``{key}`` fields; ``known`` keys are fixed."""
    known = known or {}
    pattern = ""
    pos = 0
    seen = set()
    for match in _TEMPLATE.finditer(template):
        pattern += re.escape(template[pos:match.start()])
        key = match.group(1)
        if key in known:
            pattern += re.escape(match.group(0).format(**known))
        elif key in seen:
            pattern += rf"(?P={key})"
        else:
            pattern += rf"(?P<{key}>\d+)" if key in ("tel_id", "index") else rf"(?P<{key}>[^/]+?)"
            seen.add(key)
        pos = match.end()
    pattern += re.escape(template[pos:])
    return re.compile(f"^{pattern}$")


def _format_partial(template, keys):
    """Format ``template`` if all its keys are given, else return it unchanged."""
    try:
        return template.format(**keys)
    except KeyError:
        return template


def load_packaged_yaml(text):
    """Parse one of the package's own YAML files (schemas): libyaml's C parser, ~10x faster than
    pure Python at start-up. User configuration files are read with ruamel.yaml (config.py)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _load_schema(text, name):
    raw = load_packaged_yaml(text)
    columns = []
    for col in raw["columns"]:
        col = dict(col)
        known = {k: col.pop(k) for k in ("name", "dtype", "shape", "unit", "description", "transform") if k in col}
        if "field" in col:
            known["field_name"] = col.pop("field")
        known["shape"] = tuple(known.get("shape", ()))
        columns.append(Column(**known, extra=col))
    return TableSchema(
        name=raw.get("name", name),
        path=raw["path"],
        description=raw.get("description", ""),
        columns=tuple(columns),
        attrs=dict(raw.get("attrs", {})),
    )


@cache
def table_schema(name):
    """Load ``schemas/tables/<name>.yaml``."""
    path = files("iactpipe") / "schemas" / "tables" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no table schema named {name!r}")
    return _load_schema(path.read_text(), name)


@cache
def all_table_schemas():
    """All table schemas, by name."""
    folder = files("iactpipe") / "schemas" / "tables"
    return {p.name[:-5]: table_schema(p.name[:-5]) for p in folder.iterdir() if p.name.endswith(".yaml")}


def schemas_for_path(node_path):
    """All schemas whose path template matches an HDF5 node path, most specific first.

    Returns a list of ``(schema, keys)``; a literal path beats a template, fewer
    template keys beat more, then schemas are ordered by name (deterministic).
    """
    found = []
    for name in sorted(all_table_schemas()):
        schema = all_table_schemas()[name]
        match = schema.path_regex().match(node_path)
        if match:
            keys = {k: int(v) if k in ("tel_id", "index") else v for k, v in match.groupdict().items()}
            found.append((schema, keys))
    found.sort(key=lambda item: (len(item[1]), -len(item[0].path)))
    return found


def schema_for_path(node_path):
    """The most specific schema whose path template matches an HDF5 node path, and the keys."""
    found = schemas_for_path(node_path)
    return found[0] if found else (None, {})


def _infer_column_keys(schema, colnames, keys):
    """Fill template keys used only in column names (e.g. ``{prefix}``) from the actual names."""
    keys = dict(keys)
    colnames = list(colnames)
    for i, col in enumerate(schema.columns):
        if set(_TEMPLATE.findall(col.name)) <= set(keys):
            continue
        regex = _template_regex(col.name, keys)
        # the column at the same position first (a name like true_energy must not
        # fill {prefix}_energy), then any column
        for name in colnames[i:i + 1] + colnames:
            match = regex.match(name)
            if match:
                keys.update(match.groupdict())
                break
    return keys


def _enum_reference(module, name):
    """The attribute ctapipe stores for an enum column: its class, pickled (protocol 0).

    ctapipe's readers call the stored class to turn integers back into enum members.  Written
    here as the bare pickle reference, so no import of ctapipe is needed to write it; PyTables
    unpickles it on reading where ctapipe is installed and returns these bytes otherwise.
    """
    return np.bytes_(f"c{module}\n{name}\np0\n.".encode())


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}: not unpickled")


class _NoGlobalsPickle:
    """Stands in for the ``pickle`` module inside PyTables' attribute reader: ``loads`` refuses
    every class or function reference (plain data still loads); the rest is the real module."""

    def __getattr__(self, name):
        return getattr(pickle, name)

    @staticmethod
    def loads(data, **kwargs):
        return _NoGlobalsUnpickler(io.BytesIO(data), **kwargs).load()


@contextmanager
def no_unpickling():
    """Read HDF5 attributes without importing or calling anything they reference.

    PyTables unpickles every attribute that looks like a pickle when it opens a node; ctapipe's
    enum columns store their enum class that way (see :func:`_enum_reference`), so merely
    opening a table would import ``ctapipe.containers`` (about 1 s).  Inside this context such
    attributes stay the raw pickle bytes, exactly as PyTables returns them where the class is
    not importable; copied on, they are written back unchanged.
    """
    module = tables.attributeset
    previous = module.pickle
    module.pickle = _NoGlobalsPickle()
    try:
        yield
    finally:
        module.pickle = previous


def _column_attrs(schema, columns, keys):
    attrs = dict(schema.attrs)
    for i, col in enumerate(columns):
        name = col.name.format(**keys)
        prefix = f"CTAFIELD_{i}_"
        attrs[prefix + "NAME"] = (col.field_name or name).format(**keys)
        if col.description:
            attrs[prefix + "DESC"] = col.description
        if col.dtype == "string":
            attrs[prefix + "TRANSFORM"] = "string"
            attrs[prefix + "MAXLEN"] = int(col.extra["maxlen"])
        elif col.transform == "time":
            attrs[prefix + "TRANSFORM"] = "time"
            attrs[prefix + "TIME_FORMAT"] = col.extra.get("time_format", "ctao_high_res")
            attrs[prefix + "TIME_SCALE"] = col.extra.get("time_scale", "tai")
        elif col.transform == "enum":
            attrs[prefix + "TRANSFORM"] = "enum"
            attrs[prefix + "ENUM"] = _enum_reference(col.extra.get("enum_module", "ctapipe.containers"),
                                                     col.extra["enum"])
        elif col.transform == "tel_list_to_mask":
            attrs[prefix + "TRANSFORM"] = "tel_list_to_mask"
        elif col.unit is not None:
            attrs[prefix + "TRANSFORM"] = "quantity"
            attrs[prefix + "UNIT"] = col.unit
    return attrs


def _as_rows(data, dtype):
    """Turn a dict of columns (or a structured array) into a structured array of ``dtype``."""
    names = set(dtype.names)
    given = set(data.dtype.names) if isinstance(data, np.ndarray) else set(data)
    if given != names:
        missing = sorted(names - given)
        extra = sorted(given - names)
        raise ValueError(f"columns do not match the schema: missing {missing}, unexpected {extra}")
    first = data[dtype.names[0]]
    n_rows = len(first)
    rows = np.empty(n_rows, dtype=dtype)
    for name in dtype.names:
        col = np.asarray(data[name])
        if len(col) != n_rows:
            raise ValueError(f"column {name!r} has {len(col)} rows, expected {n_rows}")
        rows[name] = col
    return rows


_SCALAR_TYPES = (bool, bytes, int, float, complex, str, np.str_)


def _set_new_attrs(node, attrs):
    """Add attributes (new names, plain scalars or numpy values) to ``node``.

    Stores exactly what ``node.attrs[key] = value`` stores (Python scalars as 0-d numpy
    arrays), through PyTables' own HDF5 setter but without its per-attribute Python
    bookkeeping, which costs more than the HDF5 write itself; the attribute set's name
    lists are updated once at the end (values are read back lazily, as for an opened node).
    """
    aset = node._v_attrs
    names = aset._v_attrnames
    for key, value in attrs.items():
        if key in names or tables.attributeset.issysattrname(key):
            raise ValueError(f"{node._v_pathname}: attribute {key!r} exists or is reserved")
        aset._g_setattr(node, key, np.array(value) if type(value) in _SCALAR_TYPES else value)
    names.extend(attrs)
    names.sort()
    aset._v_attrnamesuser.extend(attrs)
    aset._v_attrnamesuser.sort()


class HDF5Writer:
    """Append rows to schema-described tables of one HDF5 file.

    Tables are created without PyTables' own per-table attributes (``CLASS``, ``TITLE``,
    ``FIELD_<i>_NAME``/``_FILL``), as h5py would write them: HDF5 attributes cost tens of
    microseconds each, and a parameters table has ~90 of those besides ctapipe's ~120
    ``CTAFIELD_*`` ones.  PyTables and ctapipe read such tables the same way (column names and
    dtypes come from the HDF5 compound type).  Groups keep theirs; a new table is compressed
    with the ``FILTERS`` of its nearest group that has them, else :data:`FILTERS`.  One
    PyTables ``Description`` is built per row dtype and shared by the tables that have it.

    ``buffer_bytes`` > 0 collects appended rows and writes them to their tables when the
    collected rows exceed that size, on `flush` and on `close`: a PyTables append costs
    ~90 µs however few rows it has (writers that append a few rows per table at a time).
    Tables are still created, with their attributes, at their first `write`.
    """

    def __init__(self, path, mode="w", buffer_bytes=0):
        self.h5 = tables.open_file(path, mode, filters=FILTERS, **OPEN_PARAMS)
        self._descriptions = {}
        self._filters = {}
        self._layouts = {}  # (schema, column names, dims, keys) -> (schema, node path, columns, dtype)
        self.buffer_bytes = int(buffer_bytes)
        self._pending = {}  # node path -> (table, [row arrays]) not yet appended
        self._pending_bytes = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.h5.isopen:
            try:
                self.flush()
            finally:
                self.h5.close()

    def flush(self):
        """Append the collected rows to their tables."""
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        for table, parts in pending.values():
            table.append(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def write(self, schema_name, data, dims=None, attrs=None, expected_rows=10000, **keys):
        """Append ``data`` (dict of columns or structured array) to a table; create it if new.

        ``dims`` gives the sizes of symbolic shapes (e.g. ``{"n_pixels": 1855}``),
        ``keys`` the path/column template values (e.g. ``tel_id=1``).
        """
        given = data.dtype.names if isinstance(data, np.ndarray) else tuple(data)
        layout_key = (schema_name, given, tuple(sorted((dims or {}).items())), tuple(sorted(keys.items())))
        layout = self._layouts.get(layout_key)
        if layout is None:
            schema = table_schema(schema_name)
            columns = schema.present(given, **keys)
            layout = self._layouts[layout_key] = (schema, schema.node_path(**keys), columns,
                                                  schema.dtype(dims, columns, **keys))
        schema, node_path, columns, dtype = layout
        rows = _as_rows(data, dtype)
        if node_path in self.h5:
            table = self.h5.get_node(node_path)
            if table.dtype != dtype:
                raise ValueError(f"{node_path}: dtype changed between appends")
        else:
            where, name = node_path.rsplit("/", 1)
            table = self._create_table(where or "/", name, dtype, max(expected_rows, len(rows)))
            _set_new_attrs(table, _column_attrs(schema, columns, keys))
            for key, value in (attrs or {}).items():
                table.attrs[key] = value
        if not len(rows):
            return table
        if self.buffer_bytes <= 0:
            table.append(rows)
            return table
        self._pending.setdefault(node_path, (table, []))[1].append(rows)
        self._pending_bytes += rows.nbytes
        if self._pending_bytes >= self.buffer_bytes:
            self.flush()
        return table

    def _create_table(self, where, name, dtype, expected_rows):
        """An empty table ``where/name`` of ``dtype``, without PyTables' per-table attributes."""
        if where not in self.h5:
            parent, group = where.rsplit("/", 1)
            self.h5.create_group(parent or "/", group, createparents=True)
        description = self._descriptions.get(dtype)
        if description is None:
            description = self._descriptions[dtype] = tables.description.descr_from_dtype(dtype)[0]
        params = self.h5.params
        params["PYTABLES_SYS_ATTRS"] = False
        try:
            return self.h5.create_table(where, name, description=description, filters=self._group_filters(where),
                                        expectedrows=expected_rows)
        finally:
            params["PYTABLES_SYS_ATTRS"] = True

    def _group_filters(self, where):
        """The FILTERS of the group ``where`` or of its nearest ancestor that has them."""
        if where not in self._filters:
            filters = getattr(self.h5.get_node(where)._v_attrs, "FILTERS", None)
            if filters is None:
                filters = FILTERS if where == "/" else self._group_filters(where.rsplit("/", 1)[0] or "/")
            self._filters[where] = filters
        return self._filters[where]

    def write_empty(self, schema_name, dims=None, **keys):
        """Create a table with no rows (a file without events still has every table readers expect)."""
        schema = table_schema(schema_name)
        return self.write(schema_name, np.zeros(0, dtype=schema.dtype(dims, **keys)), dims=dims, **keys)

    def set_root_attrs(self, **attrs):
        for key, value in attrs.items():
            self.h5.root._v_attrs[key] = value


def _open(h5file_or_path):
    if isinstance(h5file_or_path, tables.File):
        return h5file_or_path, False
    return tables.open_file(h5file_or_path, "r"), True


def read_table(h5file_or_path, node_path, start=None, stop=None):
    """Read (part of) a table as a structured numpy array (units per schema)."""
    h5, owned = _open(h5file_or_path)
    try:
        return h5.get_node(node_path).read(start=start, stop=stop)
    finally:
        if owned:
            h5.close()


def iter_table_chunks(h5file, node_path, chunk_size=10000):
    """Yield consecutive structured-array chunks of at most ``chunk_size`` rows."""
    table = h5file.get_node(node_path)
    for start in range(0, table.nrows, chunk_size):
        yield table.read(start=start, stop=min(start + chunk_size, table.nrows))


def _table_problems(node, schema, keys):
    """Differences between one HDF5 table and one schema (names, order, dtypes, ranks, units)."""
    import astropy.units as u

    path = node._v_pathname
    keys = _infer_column_keys(schema, node.colnames, keys)
    missing = schema.keys - set(keys)
    if missing:
        return [f"{path}: cannot resolve template keys {sorted(missing)} for schema {schema.name}"]
    columns = schema.present(node.colnames, **keys)
    names = [c.name.format(**keys) for c in columns]
    if list(node.colnames) != names:
        return [f"{path}: columns {list(node.colnames)} != schema {schema.name} {names}"]
    problems = []
    for i, col in enumerate(columns):
        name = names[i]
        have = node.coldtypes[name]
        base = np.dtype(have.base)
        if col.dtype == "string":
            if base.kind != "S":
                problems.append(f"{path}.{name}: dtype {base} is not a byte string")
        elif base not in [np.dtype(d) for d in [col.dtype, *col.extra.get("alt_dtypes", [])]]:
            problems.append(f"{path}.{name}: dtype {base} != schema {col.dtype}")
        shape = have.shape
        if len(shape) != len(col.shape) or any(
            not isinstance(d, str) and d != s for d, s in zip(col.shape, shape, strict=False)
        ):
            problems.append(f"{path}.{name}: shape {shape} != schema {col.shape}")
        unit = node.attrs[f"CTAFIELD_{i}_UNIT"] if f"CTAFIELD_{i}_UNIT" in node.attrs else None
        if col.unit is not None and unit is not None:
            if u.Unit(str(unit)) != u.Unit(col.unit):
                problems.append(f"{path}.{name}: unit {unit} != schema {col.unit}")
        elif col.unit is not None and col.transform is None:
            problems.append(f"{path}.{name}: missing unit {col.unit}")
    return problems


def validate_file(h5file_or_path, require_schema=False):
    """Check every table of a file against its schema; return a list of problems.

    Tables with no matching schema are skipped (or reported with ``require_schema``).
    Where several schemas match a path (e.g. ctapipe tools that write the same table
    in different column orders), a table is valid if one of them fits; otherwise the
    problems against the most specific one are reported.
    Checks: column names and order, dtypes, fixed shapes and ranks, unit attributes.
    """
    h5, owned = _open(h5file_or_path)
    problems = []
    try:
        for node in h5.walk_nodes("/", "Table"):
            path = node._v_pathname
            candidates = schemas_for_path(path)
            if not candidates:
                if require_schema:
                    problems.append(f"{path}: no schema")
                continue
            first = None
            for schema, keys in candidates:
                found = _table_problems(node, schema, keys)
                if not found:
                    break
                first = first if first is not None else found
            else:
                problems.extend(first)
    finally:
        if owned:
            h5.close()
    return problems
