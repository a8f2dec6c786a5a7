"""Schema-driven HDF5 table I/O: round trips, chunked streaming, compression, validation."""

import numpy as np
import pytest
import tables
from iactpipe.io.tables import HDF5Writer, iter_table_chunks, read_table, table_schema, validate_file


def optics_rows(n, start=0):
    return {
        "optics_name": [f"opt{i}".encode() for i in range(start, start + n)],
        "size_type": [b"MST"] * n, "reflector_shape": [b"DAVIES_COTTON"] * n,
        "mirror_area": np.arange(start, start + n, dtype=float), "n_mirrors": np.ones(n, int),
        "n_mirror_tiles": np.full(n, 86), "equivalent_focal_length": np.full(n, 16.0),
        "effective_focal_length": np.full(n, 16.44),
    }


def test_round_trip_in_chunks(tmp_path):
    path = tmp_path / "t.h5"
    with HDF5Writer(path) as writer:
        for chunk in range(7):
            writer.write("instrument_optics", optics_rows(1000, chunk * 1000))
    full = read_table(path, "/configuration/instrument/telescope/optics")
    assert len(full) == 7000
    np.testing.assert_array_equal(full["mirror_area"], np.arange(7000.0))
    assert full["optics_name"][4321] == b"opt4321"
    with tables.open_file(path) as h5:
        node = h5.get_node("/configuration/instrument/telescope/optics")
        assert node.filters.complib == "blosc:zstd" and node.filters.fletcher32
        assert node.chunkshape[0] < 7000  # chunked storage
        sizes = [len(c) for c in iter_table_chunks(h5, node._v_pathname, chunk_size=3000)]
    assert sizes == [3000, 3000, 1000]
    assert validate_file(path) == []


@pytest.mark.parametrize("buffer_bytes, appended", [(1, 35), (2000, 21), (1 << 30, 0)])
def test_buffered_writer_gives_the_same_tables(tmp_path, buffer_bytes, appended):
    """Rows collected in memory reach their tables in order: on crossing the size, on flush and on close."""
    path = tmp_path / "t.h5"
    node = "/configuration/instrument/telescope/optics"
    with HDF5Writer(path, buffer_bytes=buffer_bytes) as writer:
        for chunk in range(5):  # 7 rows of 112 bytes each time
            writer.write("instrument_optics", optics_rows(7, chunk * 7))
        table = writer.h5.get_node(node)
        assert table.nrows == appended  # 2000 bytes: appended at the third write, the last two held
        writer.flush()
        assert table.nrows == 35
        writer.write("instrument_optics", optics_rows(3, 35))
    rows = read_table(path, node)
    np.testing.assert_array_equal(rows["mirror_area"], np.arange(38.0))
    assert rows["optics_name"][37] == b"opt37"
    assert validate_file(path) == []


def test_ctapipe_attributes_give_units(tmp_path):
    from ctapipe.io import read_table as ctapipe_read_table

    path = tmp_path / "t.h5"
    with HDF5Writer(path) as writer:
        writer.write("instrument_optics", optics_rows(2))
    table = ctapipe_read_table(path, "/configuration/instrument/telescope/optics")
    assert table["equivalent_focal_length"].unit == "m"
    assert table["mirror_area"].unit == "m2"
    assert table["optics_name"][1] == "opt1"  # string transform restored


def test_tables_without_pytables_attributes_keep_compression_and_ctapipe_attributes(tmp_path):
    """Tables are written without PyTables' CLASS/TITLE/FIELD_* attributes, take the FILTERS of
    their nearest group, and carry the same ctapipe attributes as PyTables' own setter writes."""
    from iactpipe.io.tables import FILTERS, _column_attrs

    lz4 = tables.Filters(complevel=1, complib="blosc:lz4", shuffle=True)
    path = tmp_path / "t.h5"
    schema = table_schema("dl1_parameters")
    dtype = schema.dtype({}, schema.columns, tel_id=1)
    with HDF5Writer(path) as writer:
        writer.h5.create_group("/dl1/event", "telescope", createparents=True, filters=lz4)
        writer.write("dl1_parameters", np.zeros(3, dtype), tel_id=1)
        writer.write("instrument_optics", optics_rows(2))
        reference = writer.h5.create_table("/", "reference", description=dtype)
        for key, value in _column_attrs(schema, schema.columns, {"tel_id": 1}).items():
            reference.attrs[key] = value
    with tables.open_file(path) as h5:
        params = h5.get_node("/dl1/event/telescope/parameters/tel_001")
        optics = h5.get_node("/configuration/instrument/telescope/optics")
        assert not {"CLASS", "TITLE", "FIELD_0_NAME", "FIELD_0_FILL"} & set(params.attrs._v_attrnames)
        assert (params.filters.complib, optics.filters.complib) == ("blosc:lz4", FILTERS.complib)
        ours, theirs = params.attrs, h5.get_node("/reference").attrs
        assert ours._v_attrnamesuser == theirs._v_attrnamesuser
        for key in theirs._v_attrnamesuser:
            assert type(getattr(ours, key)) is type(getattr(theirs, key)), key
            assert getattr(ours, key) == getattr(theirs, key), key
        assert params.nrows == 3 and params.colnames == list(dtype.names)


def test_writer_rejects_columns_not_in_schema(tmp_path):
    rows = optics_rows(2)
    with HDF5Writer(tmp_path / "t.h5") as writer:
        with pytest.raises(ValueError, match=r"missing \['n_mirrors'\], unexpected \['n_mirror'\]"):
            writer.write("instrument_optics", {**{k: v for k, v in rows.items() if k != "n_mirrors"},
                                               "n_mirror": [1, 1]})
        with pytest.raises(ValueError, match="has 3 rows, expected 2"):
            writer.write("instrument_optics", {**rows, "n_mirrors": [1, 1, 1]})


def test_validate_file_reports_mismatches(tmp_path):
    path = tmp_path / "t.h5"
    schema = table_schema("instrument_optics")
    dtype = schema.dtype()
    wrong = np.dtype([(n, np.float32 if n == "mirror_area" else dtype[n]) for n in dtype.names])
    with tables.open_file(path, "w") as h5:
        h5.create_table("/configuration/instrument/telescope", "optics", wrong, createparents=True)
    problems = validate_file(path)
    prefix = "/configuration/instrument/telescope/optics."
    assert prefix + "mirror_area: dtype float32 != schema float64" in problems
    assert prefix + "equivalent_focal_length: missing unit m" in problems
    assert len(problems) == 4  # the dtype + three missing units (mirror_area and both focal lengths)


def test_unknown_schema_name():
    with pytest.raises(KeyError, match="no table schema named 'nope'"):
        table_schema("nope")


_READ_THROUGH = """
import sys, numpy as np, tables
sys.path.insert(0, sys.argv[3])
from iactpipe.io.tables import OPEN_PARAMS
def kb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))
params = OPEN_PARAMS if sys.argv[2] == 'ours' else {}
with tables.open_file(sys.argv[1], 'r', **params) as h5:
    table = h5.root.waveforms
    table.read(0, 1)
    open('/proc/self/clear_refs', 'w').write('5'); before = kb('VmRSS:')
    for start in range(0, table.nrows, 8):
        table.read(start, start + 8)
    print((kb('VmHWM:') - before) / 1024)
"""


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_open_params_keep_the_chunk_cache_from_growing_with_the_data_read(tmp_path):
    """PyTables' default chunk cache (16 MiB per open table) fills as a table is read front to back;
    with OPEN_PARAMS memory stays flat.  The DL0 reader and the table writer open files with them."""
    import subprocess
    import sys
    from pathlib import Path

    from iactpipe.io import tables as tables_io
    from iactpipe.io.tables import OPEN_PARAMS

    path = tmp_path / "w.h5"
    rows = np.random.default_rng(1).normal(size=(192, 20_000)).astype(np.float32)  # 80 kB rows, 15 MB
    with tables.open_file(path, "w") as h5:
        table = h5.create_table("/", "waveforms", np.dtype([("waveform", "<f4", (20_000,))]), chunkshape=(2,),
                                filters=tables.Filters(1, "blosc:lz4", shuffle=True))
        table.append(np.rec.fromarrays([rows], names="waveform"))
    package = str(Path(tables_io.__file__).parents[2])
    growth = {kind: float(subprocess.run([sys.executable, "-c", _READ_THROUGH, str(path), kind, package],
                                         capture_output=True, text=True, check=True).stdout)
              for kind in ("default", "ours")}
    assert growth["default"] > 10  # the data read stays cached: the test sees the effect
    assert growth["ours"] < 4
    assert OPEN_PARAMS["chunk_cache_size"] <= 2**20
    with HDF5Writer(tmp_path / "o.h5") as writer:
        assert writer.h5.params["CHUNK_CACHE_SIZE"] == OPEN_PARAMS["chunk_cache_size"]
