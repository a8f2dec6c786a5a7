"""Rows of an HDF5 array stored one row a chunk, read past HDF5's filter pipeline.

The compact DL0 keeps each telescope event's samples in its own chunk, blosc-compressed
and fletcher32-checked.  Read through PyTables, a row costs ~220 µs: HDF5's byte-wise
fletcher32, a blosc filter that decompresses into a scratch buffer, and a copy through the
chunk cache.  Here HDF5 only says where each chunk lies: for all rows of an array in one
pass of ``H5Dchunk_iter`` (~2 µs a chunk, once), else row by row with ``Leaf.chunk_info``
(~7 µs); the stored bytes are read from the file directly (``os.preadv``, adjacent chunks in
one call), then one numba call (`~iactpipe.io._row_decode.decode_rows`, without the GIL)
verifies each chunk's checksum and decompresses its blosc frame straight into the output.  Arrays of any other layout or filter pipeline are read through
PyTables.
"""

import ctypes
import importlib.util
import os
import sys
import threading
from functools import cache
from pathlib import Path

import numpy as np
import tables
from llvmlite import binding as llvm_binding

from ..errors import DataError
from ._row_decode import BLOSC_SYMBOL, ROW_PROBLEMS, decode_rows

__all__ = ["RowChunkReader", "blosc_decompress"]

#: filter pipelines (in HDF5's order) whose chunks are decoded here
_DIRECT_PIPELINES = {(), ("fletcher32",), ("blosc",), ("blosc", "fletcher32")}


def _pipeline(node):
    """The names of the node's HDF5 filters in pipeline order (None if PyTables cannot list them)."""
    try:
        from tables.utilsextension import get_filters

        return tuple(get_filters(node._v_parent._v_objectid, node.name) or ())
    except Exception:  # noqa: BLE001 - a PyTables without this helper: read through PyTables
        return None


#: a blosc1 frame (lz4, byte shuffle) of PyTables' blosc filter: uint16 ``(arange(256) % 17) * 3``
_PROBE_FRAME = bytes.fromhex(
    "020121020002000000020000a90000001400000082000000ff68000306090c0f1215181b1e2124272a2d30000306090c0f121518"
    "1b1e2124272a2d30000306090c0f1215181b1e2124272a2d30000306090c0f1215181b1e2124272a2d30000306090c0f1215181b"
    "1e2124272a2d30000306090c0f1215181b1e2124272a2d30000306090c0f1215181b1e2124272a2d3077007150272a2d30000b00"
    "00001f000100e7500000000000"
)


def _pread_into(fd, buffer, offset):
    """``os.preadv`` where the OS has none: read at ``offset`` into ``buffer``; returns the bytes read."""
    data = os.pread(fd, buffer.size, offset)
    buffer[:len(data)] = np.frombuffer(data, np.uint8)
    return len(data)


def blosc_decompress():
    """``decompress(frame, n_bytes, out)``: c-blosc2's ``blosc2_decompress`` of the blosc frame at the
    start of the contiguous uint8 array ``frame`` (``n_bytes`` of it) into the contiguous uint8 array
    ``out`` (never more than ``out.size`` bytes); returns the bytes written, < 0 for a bad frame.

    Through ctypes, from the copy of c-blosc2 that the blosc2 wheel (a PyTables dependency)
    ships for C users, after it decoded a known frame; None where that copy is not found or
    fails (blosc-compressed arrays are then read through PyTables).  (The blosc2 module is not
    used: it takes ~0.2 s to import, and crashed on some corrupt frames.)
    """
    return _load_c_blosc2()


#: what `decode_rows` calls where c-blosc2 is not found (it then decodes no blosc frame): fails every call
_NO_BLOSC = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32)(
    lambda *args: -1
)


@cache
def _load_c_blosc2():
    """`blosc_decompress`'s function, once per process; registers the address `decode_rows` calls by name
    (c-blosc2's, else `_NO_BLOSC`) before that kernel is compiled or loaded from numba's cache."""
    spec = importlib.util.find_spec("blosc2")
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    name = {"linux": "libblosc2.so", "darwin": "libblosc2.dylib"}.get(sys.platform, "libblosc2.dll")
    for folder in folders:
        path = Path(folder) / "lib" / name
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            lib.blosc2_init.restype = None
            lib.blosc2_init()
            function = lib.blosc2_decompress
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32]
        function.restype = ctypes.c_int

        def decompress(frame, n_bytes, out, function=function):
            if n_bytes > frame.size:
                raise ValueError("n_bytes beyond the frame")
            return function(frame.ctypes.data, n_bytes, out.ctypes.data, out.size)

        probe = np.zeros(512, np.uint8)
        expected = ((np.arange(256, dtype=np.uint16) % 17) * 3).view(np.uint8)
        frame = np.frombuffer(_PROBE_FRAME, np.uint8)
        if decompress(frame, frame.size, probe) == probe.size and np.array_equal(probe, expected):
            llvm_binding.add_symbol(BLOSC_SYMBOL, ctypes.cast(function, ctypes.c_void_p).value)
            return decompress
    llvm_binding.add_symbol(BLOSC_SYMBOL, ctypes.cast(_NO_BLOSC, ctypes.c_void_p).value)
    return None


@cache
def _hdf5_chunk_iter():
    """``H5Dchunk_iter`` (HDF5 ≥ 1.14) of the HDF5 library PyTables uses, through ctypes: looked up from
    PyTables' extension module, so in the libraries it was linked with (not another copy of HDF5 the
    process may hold, e.g. h5py's); None where it is not found (chunks are then located one by one
    with ``Leaf.chunk_info``)."""
    try:
        from tables import hdf5extension

        function = ctypes.CDLL(hdf5extension.__file__).H5Dchunk_iter
    except (ImportError, OSError, AttributeError):
        return None
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint,
                                     ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)
    function.argtypes = [ctypes.c_int64, ctypes.c_int64, callback_type, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function, callback_type


def _chunk_index(node):
    """``(offset, size, filter_mask)`` int64 arrays, one entry per row of a one-row-a-chunk node (offset -1:
    chunk never written), from one pass of ``H5Dchunk_iter`` over its chunk index; None if that fails."""
    found = _hdf5_chunk_iter()
    if found is None:
        return None
    function, callback_type = found
    n_rows = int(node.shape[0])
    index = np.full((3, n_rows), -1, dtype=np.int64)
    index[1:] = 0
    bad = []

    def visit(coords, filter_mask, address, size, _data):
        row = coords[0]
        if not 0 <= row < n_rows:
            bad.append(row)
            return -1
        index[0, row], index[1, row], index[2, row] = address, size, filter_mask
        return 0

    try:
        if function(node._v_objectid, 0, callback_type(visit), None) < 0 or bad:
            return None
        written = np.flatnonzero(index[0] >= 0)
        for row in {int(written[0]), int(written[-1])} if len(written) else ():  # as HDF5 says one by one
            info = node.chunk_info((row,) + (0,) * (node.ndim - 1))
            if (info.offset, info.size, info.filter_mask) != tuple(int(v) for v in index[:, row]):
                return None
    except (ctypes.ArgumentError, AttributeError, tables.HDF5ExtError):
        return None
    return index


class RowChunkReader:
    """``read(start, stop)``: rows ``start:stop`` of an array or table, as ``node.read`` gives them.

    Decoded here when the node is chunked one row a chunk, native-endian, and filtered by
    nothing, fletcher32, blosc, or blosc then fletcher32 (for a table: when its first row
    decoded here equals PyTables' first row, so the stored record layout is numpy's); else
    read by PyTables.  ``direct`` says which.  In a file opened read-only, the stored chunks are
    read from the file at the offsets HDF5 gives, once the first chunk read so equals
    ``read_chunk``'s bytes; else through ``read_chunk``.  ``close`` closes the file descriptor
    of those reads.
    """

    def __init__(self, node, file_name):
        self.node, self.file_name = node, file_name
        self.path = node._v_pathname
        self.direct = False
        self._fd, self._fd_lock, self._closed = None, threading.Lock(), False
        is_table = isinstance(node, tables.Table)
        if (not (is_table or isinstance(node, tables.Array)) or node.chunkshape is None
                or not hasattr(node, "read_chunk")):  # PyTables < 3.10 has no direct chunk access
            return
        shape = tuple(int(n) for n in node.shape)
        dtype = node.dtype if is_table else node.atom.dtype
        if (tuple(int(n) for n in node.chunkshape) != (1, *shape[1:]) or dtype.kind not in "biufV"
                or node.byteorder not in (sys.byteorder, "irrelevant")):
            return
        pipeline = _pipeline(node)
        if pipeline not in _DIRECT_PIPELINES or ("blosc" in pipeline and blosc_decompress() is None):
            return
        self.row_shape, self.dtype = shape[1:], dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        self.checked = "fletcher32" in pipeline
        self.blosc_bit = 1 << pipeline.index("blosc") if "blosc" in pipeline else 0
        self._zeros = (0,) * (len(shape) - 1)
        self._fill = np.zeros((), dtype) if is_table else np.asarray(node.atom.dflt, dtype)
        # the file's bytes are read directly only from files opened read-only (written ones may not be flushed)
        self._by_offset = None if node._v_file.mode == "r" else False  # None: decided at the first chunk read
        self._index = None  # (offset, size, filter mask) of each row's chunk (`_chunk_index`), or False
        self.direct = True
        if is_table and shape[0] > 0:  # the stored record layout must be numpy's (first and last rows)
            try:
                self.direct = all(self.read(row, row + 1).tobytes() == self.node.read(row, row + 1).tobytes()
                                  for row in {0, shape[0] - 1})
            except DataError:  # e.g. records of another size: PyTables converts them
                self.direct = False

    def read(self, start, stop, out=None):
        """Rows ``start:stop``; into ``out`` (a C-contiguous array of their shape and dtype) if given."""
        start = max(start, 0)
        return self.decode(self.read_raw(start, stop), start, out)

    def read_raw(self, start, stop):
        """What ``decode`` needs of rows ``start:stop``: where their chunks lie in the file (or their
        stored bytes; for a node read by PyTables, the rows).  This makes the HDF5 calls: call it
        from the thread that uses the file (HDF5 is not thread-safe)."""
        if not self.direct:
            return self.node.read(start, stop)
        start, stop = max(start, 0), min(stop, self.node.nrows)
        chunks = []
        for row in range(start, stop):
            coords = (row, *self._zeros)
            try:
                if self._by_offset is None:  # first chunk: may the file's bytes be read at HDF5's offsets?
                    self._by_offset = self._offsets_work(coords)
                if self._by_offset and self._index is None:
                    index = _chunk_index(self.node)
                    self._index = False if index is None else index
                if self._by_offset and self._index is not False:  # where each chunk lies, listed once by HDF5
                    offsets, sizes, masks = (a[start:stop].tolist() for a in self._index)
                    return [None if offset < 0 else (offset, size, bool(mask & self.blosc_bit))
                            for offset, size, mask in zip(offsets, sizes, masks, strict=True)]
                if self._by_offset:
                    info = self.node.chunk_info(coords)
                    if info.offset is None:  # never written: HDF5 gives the fill value
                        chunks.append(None)
                    else:
                        chunks.append((info.offset, info.size, bool(info.filter_mask & self.blosc_bit)))
                    continue
                raw = self.node.read_chunk(coords)
                skipped = (self.blosc_bit and len(raw) - 4 * self.checked == self.row_bytes
                           and self._blosc_skipped(row))
                chunks.append((np.frombuffer(raw, np.uint8), skipped))
            except tables.NoSuchChunkError:
                chunks.append(None)
            except (tables.HDF5ExtError, IndexError) as err:
                self._corrupt(row, f"cannot read its chunk ({type(err).__name__})")
        return chunks

    def _offsets_work(self, coords):
        """Whether a chunk's bytes at the offset HDF5 gives are those ``read_chunk`` gives (e.g. not for
        a file with a user block, or opened with another driver); None: no chunk there to tell."""
        try:
            info = self.node.chunk_info(coords)
            if info.offset is None or info.size is None:
                return None  # ask again at the next chunk
            return self._pread(info.offset, info.size).tobytes() == self.node.read_chunk(coords)
        except (OSError, AttributeError, tables.NoSuchChunkError):
            return False

    def _pread(self, offset, size):
        """``size`` bytes of the file at ``offset`` (uint8 array; fewer where the file ends)."""
        buffer = np.empty(size, np.uint8)
        return buffer[:self._pread_into(buffer, offset)]

    def _pread_into(self, buffer, offset):
        """Read the file at ``offset`` into the uint8 array ``buffer``; returns the bytes read (fewer where the
        file ends)."""
        with self._fd_lock:
            if self._closed:
                raise OSError(f"{self.path}: read after its reader was closed")
            if self._fd is None:
                self._fd = os.open(self.node._v_file.filename, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            fd = self._fd
        n_read = 0
        while n_read < buffer.size:  # a read may return fewer bytes than asked for
            got = os.preadv(fd, [buffer[n_read:]], offset + n_read) if hasattr(os, "preadv") else \
                _pread_into(fd, buffer[n_read:], offset + n_read)
            if got == 0:
                break
            n_read += got
        return n_read

    def close(self):
        """Close the file descriptor the direct reads use; no read after this."""
        with self._fd_lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def decode(self, chunks, start, out=None):
        """The rows of ``read_raw(start, ...)``; makes no HDF5 call, so any thread may run it."""
        if not self.direct:
            if out is None:
                return chunks
            out[...] = chunks
            return out
        if out is None:
            out = np.empty((len(chunks), *self.row_shape), self.dtype)
        elif out.dtype != self.dtype or out.shape != (len(chunks), *self.row_shape) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {self.dtype} array of shape {(len(chunks), *self.row_shape)}")
        flat = out.reshape(-1).view(np.uint8).reshape(len(chunks), self.row_bytes)
        present = []
        for i, chunk in enumerate(chunks):
            if chunk is None:  # never written: the fill value
                flat[i] = np.full(self.row_shape, self._fill, self.dtype).reshape(-1).view(np.uint8)
            else:
                present.append(i)
        if not present:
            return out
        data, starts, sizes, skipped = self._gather(chunks, present, start)
        _load_c_blosc2()  # the kernel's c-blosc2 symbol
        status = np.empty(len(present), np.uint8)
        targets = np.asarray(present, dtype=np.int64)
        decode_rows(data, starts, sizes, skipped, targets, self.checked, bool(self.blosc_bit), flat, status)
        if status.any():
            k = int(np.flatnonzero(status)[0])
            problem = ROW_PROBLEMS[status[k]]
            if status[k] == 5:
                problem = f"{int(sizes[k]) - 4 * self.checked} bytes stored, a row has {self.row_bytes}"
            self._corrupt(start + present[k], problem)
        return out

    def _gather(self, chunks, present, start):
        """(data, starts, sizes, skipped) of the ``present`` chunks, their stored bytes side by side in
        ``data``: chunks at file offsets read (those next to each other in one call), others copied."""
        sizes = np.array([len(chunks[i][0]) if len(chunks[i]) == 2 else chunks[i][1] for i in present], np.int64)
        starts = np.zeros(len(present), np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        skipped = np.array([chunks[i][-1] for i in present], dtype=np.bool_)
        data = np.empty(int(sizes.sum()), np.uint8)
        k = 0
        while k < len(present):
            chunk = chunks[present[k]]
            if len(chunk) == 2:  # bytes from read_chunk
                data[starts[k]:starts[k] + sizes[k]] = chunk[0]
                k += 1
                continue
            end = k + 1  # chunks next to each other in the file: one read
            while (end < len(present) and len(chunks[present[end]]) == 3
                   and chunks[present[end]][0] == chunks[present[end - 1]][0] + chunks[present[end - 1]][1]):
                end += 1
            first, n_bytes = starts[k], int(starts[end - 1] + sizes[end - 1] - starts[k])
            try:
                n_read = self._pread_into(data[first:first + n_bytes], chunk[0])
            except OSError as err:
                self._corrupt(start + present[k], f"cannot read its chunk ({err.strerror or err})")
            if n_read < n_bytes:
                for j in range(k, end):  # the first chunk the file does not hold in full
                    at = chunks[present[j]][0] + chunks[present[j]][1]
                    if at > self._file_size():
                        self._corrupt(start + present[j],
                                      f"its chunk ends past the end of the file ({chunks[present[j]][1]} bytes)")
                self._corrupt(start + present[k], "cannot read its chunk")
            k = end
        return data, starts, sizes, skipped

    def _file_size(self):
        return os.fstat(self._fd).st_size

    def _blosc_skipped(self, row):
        """HDF5 stores a chunk unfiltered when blosc fails on it (an optional filter)."""
        return bool(self.node.chunk_info((row, *self._zeros)).filter_mask & self.blosc_bit)

    def _corrupt(self, row, why):
        raise DataError(f"{self.file_name}: {self.path} row {row}: {why} (corrupt file?)")
