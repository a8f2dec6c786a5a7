"""Decode stored one-row chunks (fletcher32 check, blosc frame) in one numba call, without the GIL.

c-blosc2's ``blosc2_decompress`` is called by name: `iactpipe.io.chunks.blosc_decompress`
registers its address with LLVM as ``BLOSC_SYMBOL`` before this kernel is first compiled
or loaded from numba's cache.  One call per batch of rows keeps the thread that decodes
from handing the GIL back and forth for every row.
"""

import numpy as np
from numba import njit, types

from ._fletcher32 import fletcher32

__all__ = ["BLOSC_SYMBOL", "decode_rows", "ROW_PROBLEMS"]

BLOSC_SYMBOL = "iactpipe_blosc2_decompress"
_blosc2_decompress = types.ExternalFunction(
    BLOSC_SYMBOL, types.int32(types.voidptr, types.int32, types.voidptr, types.int32)
)
_HEADER = 16  # bytes of a blosc frame's header: version, flags, typesize, nbytes, blocksize, cbytes

#: status code (index) -> what is wrong with a row's chunk
ROW_PROBLEMS = (
    None,
    "shorter than its checksum",
    "fletcher32 checksum mismatch",
    "not a blosc frame of one row",
    "blosc cannot decompress it",
    "stored bytes are not one row",
)


@njit(cache=True, nogil=True)
def _le32(data, at):
    return (np.uint32(data[at]) | (np.uint32(data[at + 1]) << np.uint32(8)) | (np.uint32(data[at + 2]) << np.uint32(16))
            | (np.uint32(data[at + 3]) << np.uint32(24)))


@njit(cache=True, nogil=True)
def decode_rows(data, starts, sizes, skipped, targets, checked, blosc, out, status):
    """Rows ``out[targets[i]]`` (uint8, one row each) from the chunks ``data[starts[i]:starts[i] + sizes[i]]``.

    ``checked``: each chunk ends with its fletcher32; ``blosc``: chunks are blosc frames except
    where ``skipped``.  ``status[i]``: 0, or the index in `ROW_PROBLEMS` of what is wrong (the row
    is then left unspecified).
    """
    row_bytes = out.shape[1]
    for i in range(starts.size):
        status[i] = 0
        raw = data[starts[i]:starts[i] + sizes[i]]
        n_bytes = raw.size
        if checked:
            n_bytes -= 4
            if n_bytes < 0:
                status[i] = 1
                continue
            if fletcher32(raw[:n_bytes]) != _le32(raw, n_bytes):
                status[i] = 2
                continue
        if blosc and not skipped[i]:
            if n_bytes < _HEADER or _le32(raw, 4) != row_bytes or _le32(raw, 12) != n_bytes:
                status[i] = 3
                continue
            row = out[targets[i]]
            if _blosc2_decompress(raw.ctypes, n_bytes, row.ctypes, row_bytes) != row_bytes:
                status[i] = 4
        elif n_bytes == row_bytes:
            out[targets[i], :] = raw[:n_bytes]
        else:
            status[i] = 5
