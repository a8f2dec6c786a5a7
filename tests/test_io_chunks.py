"""io/chunks.py: rows of one-row-a-chunk HDF5 arrays decoded past HDF5's filter pipeline."""

import ctypes

import numpy as np
import pytest
import tables
from iactpipe.errors import DataError
from iactpipe.io._fletcher32 import fletcher32
from iactpipe.io.chunks import RowChunkReader, blosc_decompress


def _hdf5_fletcher32(data):
    """HDF5's H5_checksum_fletcher32, word by word (the oracle for the block-wise kernel)."""
    sum1 = sum2 = 0
    words = [(data[i] << 8) | data[i + 1] for i in range(0, len(data) - 1, 2)]
    for start in range(0, len(words), 360):
        for word in words[start:start + 360]:
            sum1 += word
            sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[-1] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@pytest.mark.parametrize("n_bytes", [0, 1, 2, 3, 719, 720, 721, 1441, 5000])
def test_fletcher32_is_hdf5s_algorithm(n_bytes):
    rng = np.random.default_rng(n_bytes)
    for data in (rng.integers(0, 256, n_bytes).astype(np.uint8), np.full(n_bytes, 255, np.uint8)):
        assert int(fletcher32(data)) == _hdf5_fletcher32(data.tolist())


def _array(h5, name, data, filters, chunkshape=None):
    chunkshape = chunkshape or (1, *data.shape[1:])
    node = h5.create_earray("/", name, obj=data, filters=filters, chunkshape=chunkshape)
    return node


def test_fletcher32_matches_the_checksums_hdf5_stored(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (6, 37, 11)).astype(np.uint16)  # 814-byte rows: more than 360 words
    odd = rng.integers(0, 256, (4, 721)).astype(np.uint8)  # an odd number of bytes
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        for node in (_array(h5, "a", data, tables.Filters(fletcher32=True)),
                     _array(h5, "b", data, tables.Filters(1, "blosc:lz4", shuffle=True, fletcher32=True)),
                     _array(h5, "c", odd, tables.Filters(fletcher32=True))):
            for row in range(node.nrows):
                raw = node.read_chunk((row,) + (0,) * (node.ndim - 1))
                assert int(fletcher32(np.frombuffer(raw[:-4], np.uint8))) == int.from_bytes(raw[-4:], "little")


PIPELINES = {
    "none": tables.Filters(complevel=0),
    "fletcher32": tables.Filters(complevel=0, fletcher32=True),
    "blosc:lz4": tables.Filters(1, "blosc:lz4", shuffle=True),
    "blosc:lz4+fletcher32": tables.Filters(1, "blosc:lz4", shuffle=True, fletcher32=True),
    "blosc:zstd+fletcher32": tables.Filters(5, "blosc:zstd", shuffle=True, fletcher32=True),
    "blosc:blosclz bitshuffle": tables.Filters(3, "blosc:blosclz", bitshuffle=True, fletcher32=True),
}


def test_c_blosc2_is_found():
    """The blosc2 wheel's c-blosc2 loads and decodes PyTables' blosc frames (else nothing is decoded here)."""
    assert blosc_decompress() is not None


def test_without_c_blosc2_blosc_arrays_are_read_by_pytables(tmp_path, monkeypatch):
    monkeypatch.setattr("iactpipe.io.chunks.blosc_decompress", lambda: None)
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        blosc = RowChunkReader(_array(h5, "a", data, PIPELINES["blosc:lz4+fletcher32"]), "f.h5")
        plain = RowChunkReader(_array(h5, "b", data, PIPELINES["fletcher32"]), "f.h5")
        assert not blosc.direct and plain.direct
        assert np.array_equal(blosc.read(0, 3), data)
        assert np.array_equal(plain.read(0, 3), data)  # checked row by row, without the kernel


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_rows_decoded_here_equal_pytables_rows(tmp_path, name):
    """In a file being written, chunks come from ``read_chunk``; read-only, from the file at HDF5's
    offsets (adjacent chunks in one read, others one by one): the rows are PyTables' rows."""
    rng = np.random.default_rng(2)
    data = (300 + rng.poisson(20, (9, 50, 16))).astype(np.uint16)
    path = tmp_path / "f.h5"
    for mode in ("w", "r"):
        with tables.open_file(path, mode) as h5:
            node = _array(h5, "a", data, PIPELINES[name]) if mode == "w" else h5.root.a
            reader = RowChunkReader(node, "f.h5")
            assert reader.direct
            for start, stop in [(0, 9), (2, 5), (8, 9), (4, 4), (5, 3), (7, 20)]:  # as node.read: empty, clipped
                assert np.array_equal(reader.read(start, stop), node.read(start, stop))
                assert np.array_equal(reader.read(start, stop), data[start:stop])
            out = np.zeros((3, 50, 16), np.uint16)
            assert reader.read(1, 4, out=out) is out
            assert np.array_equal(out, data[1:4])
            chunks = reader.read_raw(0, 9)
            assert reader._by_offset is (mode == "r")
            if mode == "r":  # (offset, size, blosc skipped): the file's order, or any other
                assert [c[0] for c in chunks] == sorted(c[0] for c in chunks)
                assert np.array_equal(reader.decode(chunks[::-1], 0), data[::-1])
                assert np.array_equal(reader.decode(chunks[::2], 0), data[::2])
            reader.close()
            assert reader._fd is None


def test_chunk_index_lists_what_chunk_info_gives(tmp_path):
    """One pass of H5Dchunk_iter gives each row's (offset, size, filter mask) as chunk_info does, -1 for
    chunks never written; a read-only reader then locates rows without HDF5 calls."""
    from iactpipe.io.chunks import _chunk_index, _hdf5_chunk_iter

    if _hdf5_chunk_iter() is None:
        pytest.skip("no H5Dchunk_iter in this process's HDF5 library")
    rng = np.random.default_rng(8)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        node = h5.create_carray("/", "a", atom=tables.UInt16Atom(), shape=(9, 300), chunkshape=(1, 300),
                                filters=PIPELINES["blosc:lz4+fletcher32"])
        node[0] = np.arange(300) % 7  # compresses
        node[2:5] = rng.integers(0, 65535, (3, 300))  # does not: stored unfiltered (blosc bit in the mask)
        node[7] = 1
    with tables.open_file(path) as h5:
        node = h5.root.a
        index = _chunk_index(node)
        for row in range(9):
            info = node.chunk_info((row, 0))
            if info.offset is None:
                assert index[0, row] == -1
            else:
                assert tuple(index[:, row]) == (info.offset, info.size, info.filter_mask)
        assert {int(m) for m in index[2]} == {0, 1}
        reader = RowChunkReader(node, path)
        assert np.array_equal(reader.read(0, 9), node.read())
        assert reader._index is not False and reader.read_raw(5, 7) == [None, None]
        reader.close()


def test_a_chunk_index_that_disagrees_with_chunk_info_is_not_used(tmp_path, monkeypatch):
    """An index whose first or last chunk is not where chunk_info says (e.g. from another HDF5 library
    than PyTables') is dropped: rows are located one by one, and read right."""
    from iactpipe.io import chunks as module

    real = module._hdf5_chunk_iter()
    if real is None:
        pytest.skip("no H5Dchunk_iter in PyTables' HDF5 library")
    function, callback_type = real

    def shifted(dataset, dxpl, callback, data):  # the chunks' places, the last one 8 bytes off
        places = []
        function(dataset, dxpl, callback_type(lambda c, m, a, n, d: places.append((c[0], m, a, n)) or 0), None)
        coords = (ctypes.c_uint64 * 3)()
        for i, (row, mask, address, size) in enumerate(places):
            coords[0] = row
            callback(coords, mask, address + 8 * (i == len(places) - 1), size, None)
        return 0

    data = np.arange(5 * 40, dtype=np.uint16).reshape(5, 40)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        _array(h5, "a", data, PIPELINES["blosc:lz4+fletcher32"])
    with tables.open_file(path) as h5:
        assert module._chunk_index(h5.root.a) is not None
        monkeypatch.setattr(module, "_hdf5_chunk_iter", lambda: (shifted, callback_type))
        assert module._chunk_index(h5.root.a) is None
        reader = RowChunkReader(h5.root.a, path)
        assert np.array_equal(reader.read(0, 5), data) and reader._index is False
        reader.close()


def test_chunks_past_the_end_of_the_file_are_errors(tmp_path):
    data = np.arange(4 * 64, dtype=np.uint16).reshape(4, 64)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        _array(h5, "a", data, PIPELINES["fletcher32"])
    with tables.open_file(path) as h5:
        reader = RowChunkReader(h5.root.a, path)
        offset, size, _ = reader.read_raw(3, 4)[0]
        end = path.stat().st_size
        with pytest.raises(DataError, match=r"/a row 3: its chunk ends past the end of the file \(132 bytes\)"):
            reader.decode([(end - 20, size, False)], 3)
        assert np.array_equal(reader.decode([(offset, size, False)], 3), data[3:])
        reader.close()
        with pytest.raises(DataError, match=r"/a row 3: cannot read its chunk \(.*closed\)"):
            reader.decode([(offset, size, False)], 3)


def test_a_user_block_is_no_trouble(tmp_path):
    """A file with a user block (offsets may not be file positions): the rows are still PyTables'."""
    data = np.arange(5 * 40, dtype=np.uint16).reshape(5, 40)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w", user_block_size=4096) as h5:
        _array(h5, "a", data, PIPELINES["blosc:lz4+fletcher32"])
    with tables.open_file(path) as h5:
        reader = RowChunkReader(h5.root.a, path)
        assert np.array_equal(reader.read(0, 5), data)
        reader.close()


def test_rows_of_a_one_row_chunk_table(tmp_path):
    """Tables too (the R1 DL0): records decoded here are PyTables' records."""
    rng = np.random.default_rng(3)
    rows = np.zeros(5, dtype=[("event_id", "<i8"), ("waveform", "<f4", (1, 20, 8)), ("flag", "?"), ("gain", "i1", (20,))])
    rows["event_id"] = np.arange(5) * 7
    rows["waveform"] = rng.normal(size=(5, 1, 20, 8))
    rows["flag"] = [True, False, True, True, False]
    rows["gain"] = rng.integers(0, 2, (5, 20))
    with tables.open_file(tmp_path / "t.h5", "w") as h5:
        table = h5.create_table("/", "t", obj=rows, filters=tables.Filters(complevel=0, fletcher32=True),
                                chunkshape=(1,))
        reader = RowChunkReader(table, "t.h5")
        assert reader.direct
        got = reader.read(1, 5)
        assert got.dtype == table.read(1, 5).dtype
        assert got.tobytes() == table.read(1, 5).tobytes()


def test_other_layouts_are_read_by_pytables(tmp_path):
    data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        nodes = [
            _array(h5, "rows2", data, tables.Filters(1, "blosc:lz4"), chunkshape=(2, 6, 5)),  # two rows a chunk
            _array(h5, "zlib", data, tables.Filters(1, "zlib", shuffle=True)),  # HDF5's shuffle + deflate
            h5.create_earray("/", "big", atom=tables.UInt16Atom(), shape=(0, 6, 5), byteorder="big",
                             chunkshape=(1, 6, 5)),  # stored big-endian
            _array(h5, "blosc2", data, tables.Filters(1, "blosc2:lz4")),  # blosc2 frames: not decoded here
        ]
        nodes[2].append(data)
        for node in nodes:
            reader = RowChunkReader(node, "f.h5")
            assert not reader.direct, node.name
            assert np.array_equal(reader.read(1, 4), data[1:4])


def test_chunks_blosc_could_not_compress_are_read(tmp_path):
    """HDF5 stores a chunk unfiltered when the (optional) blosc filter fails on it: its filter mask says so."""
    rng = np.random.default_rng(4)
    data = rng.integers(0, 2**63, (6, 64), dtype=np.uint64)  # incompressible
    data[::2] = 7  # every other row compresses
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        node = _array(h5, "a", data, tables.Filters(9, "blosc:lz4", fletcher32=True))
        masks = [node.chunk_info((row, 0)).filter_mask for row in range(6)]
        assert masks.count(0) == 3 and all(masks[1::2]), masks  # the test needs both kinds of chunk
        reader = RowChunkReader(node, "f.h5")
        assert reader.direct
        assert np.array_equal(reader.read(0, 6), data)


def _corrupt_chunk(path, node_path, row, position):
    with tables.open_file(path) as h5:
        info = h5.get_node(node_path).chunk_info((row, 0, 0))
    with open(path, "r+b") as f:
        f.seek(info.offset + position)
        byte = f.read(1)[0]
        f.seek(info.offset + position)
        f.write(bytes([byte ^ 0x5A]))


def test_corrupt_chunks_are_errors_naming_file_array_and_row(tmp_path):
    data = (300 + np.random.default_rng(5).poisson(20, (5, 40, 10))).astype(np.uint16)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        _array(h5, "checked", data, tables.Filters(1, "blosc:lz4", shuffle=True, fletcher32=True))
        _array(h5, "unchecked", data, tables.Filters(1, "blosc:lz4", shuffle=True))
    _corrupt_chunk(path, "/checked", 3, 40)
    _corrupt_chunk(path, "/unchecked", 2, 13)  # the frame's compressed size
    with tables.open_file(path) as h5:
        reader = RowChunkReader(h5.root.checked, path)
        assert np.array_equal(reader.read(0, 3), data[:3])
        with pytest.raises(DataError, match=rf"^{path}: /checked row 3: fletcher32 checksum mismatch"):
            reader.read(0, 5)
        reader = RowChunkReader(h5.root.unchecked, path)
        with pytest.raises(DataError, match=r"/unchecked row 2: not a blosc frame of one row"):
            reader.read(0, 5)


def test_chunks_of_the_wrong_size_are_errors(tmp_path):
    """Checked chunks too short for their checksum, or holding another number of bytes than a row."""
    data = np.arange(4 * 10, dtype=np.uint16).reshape(4, 10)
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        reader = RowChunkReader(_array(h5, "a", data, PIPELINES["fletcher32"]), "f.h5")
        def checked(raw):
            raw = np.frombuffer(raw, np.uint8)
            return np.concatenate([raw, np.frombuffer(int(fletcher32(raw)).to_bytes(4, "little"), np.uint8)]), False

        assert np.array_equal(reader.decode([checked(data[1].tobytes())], 1), data[1:2])
        with pytest.raises(DataError, match=r"f.h5: /a row 2: 18 bytes stored, a row has 20 \(corrupt file\?\)"):
            reader.decode([checked(data[1].tobytes()), checked(data[2].tobytes()[:-2])], 1)
        with pytest.raises(DataError, match=r"/a row 0: shorter than its checksum"):
            reader.decode([(np.zeros(3, np.uint8), False)], 0)


def test_corrupt_frames_without_a_checksum_never_crash(tmp_path):
    """Without fletcher32, bit flips in blosc frames give the rows blosc decodes or a one-line
    DataError (c-blosc2 checks its bounds), never a crash or a write past the row."""
    rng = np.random.default_rng(6)
    data = (300 + rng.poisson(20, (40, 64, 12))).astype(np.uint16)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        _array(h5, "a", data, tables.Filters(1, "blosc:lz4", shuffle=True))
        node = h5.root.a
        reader = RowChunkReader(node, path)
        raws = [node.read_chunk((row, 0, 0)) for row in range(node.nrows)]
    errors = 0
    guard = np.empty(64 * 12 * 2 + 64, np.uint8)
    for row, raw in enumerate(raws):
        for _ in range(25):
            bad = bytearray(raw)
            bad[rng.integers(16, len(bad))] ^= 1 << rng.integers(0, 8)
            guard[:] = 0xAB
            try:
                reader.decode([(np.frombuffer(bytes(bad), np.uint8), False)], row, out=guard[:-64].view(np.uint16).reshape(1, 64, 12))
            except DataError as err:
                errors += 1
                assert str(err).startswith(f"{path}: /a row {row}: ")
            assert np.all(guard[-64:] == 0xAB)  # nothing written past the row
    assert errors > 0


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    data = np.arange(3 * 7, dtype=np.int32).reshape(3, 7)
    with tables.open_file(tmp_path / "f.h5", "w") as h5:
        node = h5.create_carray("/", "a", atom=tables.Int32Atom(dflt=-5), shape=(6, 7), chunkshape=(1, 7),
                                filters=PIPELINES["blosc:lz4+fletcher32"])
        node[1:4] = data
        reader = RowChunkReader(node, "f.h5")
        assert reader.direct
        assert np.array_equal(reader.read(0, 6), node.read())
        assert np.all(reader.read(4, 6) == -5)


def test_decode_kernel_loads_from_numba_s_cache(tmp_path):
    """`decode_rows` calls c-blosc2 by a symbol name registered at run time: compiled in one process, it
    loads from numba's cache in the next and decodes the same rows; in a process without c-blosc2 a
    stand-in takes the name, blosc arrays are read by PyTables and the others still by the kernel."""
    import os
    import subprocess
    import sys

    data = (np.arange(6 * 50 * 8) % 251).astype(np.uint16).reshape(6, 50, 8)
    path = tmp_path / "f.h5"
    with tables.open_file(path, "w") as h5:
        _array(h5, "a", data, PIPELINES["blosc:lz4+fletcher32"])
        _array(h5, "b", data, PIPELINES["fletcher32"])
    hide = "import importlib.util as u; f = u.find_spec; u.find_spec = lambda n, *a: None if n == 'blosc2' else f(n, *a); "
    code = ("import numpy as np, tables; from iactpipe.io.chunks import RowChunkReader; "
            "from iactpipe.io._row_decode import decode_rows; "
            f"h5 = tables.open_file({str(path)!r}); a, b = (RowChunkReader(n, 'f') for n in (h5.root.a, h5.root.b)); "
            "print(int(a.read(0, 6).astype(np.int64).sum() + b.read(0, 6).astype(np.int64).sum()), "
            "a.direct, sum(decode_rows.stats.cache_hits.values()))")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [subprocess.run([sys.executable, "-c", prefix + code], capture_output=True, text=True, env=env)
            for prefix in ("", "", hide)]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert [run.stdout.split() for run in runs] == [
        [str(2 * int(data.astype(np.int64).sum())), "True", "0"],
        [str(2 * int(data.astype(np.int64).sum())), "True", "1"],
        [str(2 * int(data.astype(np.int64).sum())), "False", "1"],
    ]
