"""sim_telarray (DL0) reader: eventio objects -> :class:`~iactpipe.io.events.EventBatch`.

The file is read as a stream of top-level eventio objects.  Each object's bytes
are read completely before ``eventio`` parses them, so an incomplete object (a
truncated file) or a broken decompression stream is seen at a known byte
offset (counted in the decompressed stream) and never half-parsed.  Objects
the pipeline does not need (photon bunches, pixel monitoring, image
parameters, pixel timing, auxiliary traces ...) are skipped without parsing;
MC event and photo-electron blocks are parsed only when an array event follows.
Inside an event, sub-objects are located from their headers alone (`_children`,
no eventio object per sub-object); the blocks that are used are read with
small struct/numba decoders (tracking positions, trigger pixel counts, true
p.e. counts per pixel) or by eventio (trigger block, other layouts).  ADC
samples in sim_telarray's usual layout (no zero suppression / data reduction)
are decoded by a numba kernel straight into the batch's waveform array, which
is reused from batch to batch once the consumer has let go of the previous one;
other layouts and ADC sums go through eventio.  Objects inside one decompressed
chunk are handed on as memoryviews, without copies.

Conventions follow ctapipe's ``SimTelEventSource`` (0.28) so that the same file
gives the same numbers: obs_id = sim_telarray run number; event_id from the
trigger block (negative running numbers where the file has none); telescope
events of telescopes not in the array trigger are dropped; true images missing
in a file that stores them are -1 (or the telescope event is dropped when the
p.e. sum says it was extremely bright); calibration events are skipped by
default, otherwise they get ctapipe's ``EventType`` (sim_telarray calibration
type 0 dark pedestal -> 3, 1 pedestal -> 5, 2 single p.e. -> 1,
3 laser/LED -> 0, anything else -> 15 OTHER_CALIBRATION) and no shower.
"""

import logging
import math
import mmap
import struct
import sys
import threading
import warnings
import zlib
from collections import deque
from io import BytesIO
from pathlib import Path

import numpy as np
import zstandard
from eventio.base import KNOWN_OBJECTS, EventIOObject, parse_extension_field
from eventio.header import parse_header_bytes
from eventio.tools import read_varint
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..errors import DataError, IactpipeError, TruncatedFileError
from ..instrument.simtel import subarray_from_simtel
from ..instrument.subarray import tel_id_ranges
from .events import EVENT_TYPE_SUBARRAY, EventBatch, RunInfo, TelescopeCalibration, TelescopeEvents

__all__ = ["SimTelReader", "CALIBRATION_EVENT_TYPES", "has_true_images"]

log = logging.getLogger(__name__)

SYNC_MARKER = b"\x37\x8a\x1f\xd4"  # little endian 0xD41F8A37
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK_SIZE = 1 << 20
#: decompressed bytes the read-ahead thread may hold ready (it decodes a chunk more only below this) ...
READ_AHEAD_BYTES = 24 << 20
#: ... in chunks of about this size: it reads as much of the file as decompressed to that in the chunk
#: before (replayed or highly compressible files give up to ~16 MB per MiB of file)
READ_AHEAD_CHUNK_BYTES = 3 << 19
_MIN_READ = 1 << 12
#: the decoded pages of a memory-mapped input are released in steps of this many bytes
_RELEASE_BYTES = 4 << 20

# eventio object types
HISTORY, HISTORY_META = 70, 75
HISTOGRAMS = 100
INPUT_CARD, TELESCOPE_DATA, PHOTO_ELECTRONS, ATMOSPHERE = 1212, 1204, 1208, 1216
RUN_HEADER, MC_RUN_HEADER = 2000, 2001
CAMERA_SETTINGS, CAMERA_ORGANIZATION, PIXEL_SETTINGS, DISABLED_PIXELS = 2002, 2003, 2004, 2005
CAMERA_SOFTWARE, POINTING_CORRECTION, DRIVE_SETTINGS = 2006, 2007, 2008
TRIGGER_INFORMATION, ARRAY_EVENT, ADC_SUMS, ADC_SAMPLES = 2009, 2010, 2012, 2013
MC_SHOWER, MC_EVENT, CAMERA_MONITORING, LASER_CALIBRATION = 2020, 2021, 2022, 2023
MC_PE_SUM, PIXEL_LIST, CALIBRATION_EVENT, CALIBRATION_PE = 2026, 2027, 2028, 2034

_DESCRIPTION_KEYS = {
    CAMERA_SETTINGS: "camera_settings",
    CAMERA_ORGANIZATION: "camera_organization",
    PIXEL_SETTINGS: "pixel_settings",
    DISABLED_PIXELS: "disabled_pixels",
}
_HEADER_TYPES = {
    HISTORY, HISTORY_META, RUN_HEADER, MC_RUN_HEADER, INPUT_CARD, ATMOSPHERE,
    CAMERA_SOFTWARE, POINTING_CORRECTION, DRIVE_SETTINGS, *_DESCRIPTION_KEYS,
}

#: sim_telarray calibration type -> ctapipe EventType value
CALIBRATION_EVENT_TYPES = {0: 3, 1: 5, 2: 1, 3: 0}
EVENT_TYPE_OTHER_CALIBRATION = 15
# ctapipe EventType values for telescope trigger types
EVENT_TYPE_MUON, EVENT_TYPE_RANDOM_MONO, EVENT_TYPE_LONG_EVENT = 16, 18, 33
# sim_telarray teltrg_type_mask bits
_LONG_EVENT_BIT, _MUON_BIT, _RANDOM_MONO_BIT = 1 << 8, 1 << 9, 1 << 10
# a missing true image of a brighter telescope event means a damaged event
MISSING_IMAGE_BRIGHTNESS_LIMIT = 1_000_000
_HALF_PI = 0.5 * math.pi
_NS_PER_DAY = 86400e9


class _Broken(Exception):
    """The object stream ends inside an object or holds garbage at ``offset``."""

    def __init__(self, offset, reason, bad_sync=False):
        super().__init__(reason)
        self.offset = int(offset)
        self.reason = reason
        self.bad_sync = bad_sync


# -- byte stream ------------------------------------------------------------

class _ByteStream:
    """Sequential reader of a plain, gzip or zstd file that knows if a compressed stream ended early.

    Bytes come in chunks (1 MiB of file, decompressed).  ``buffer`` is a
    read-only memoryview: objects inside one chunk are handed out as views
    without copying; only an object that spans chunks is copied together.
    With ``read_ahead`` a compressed file is decompressed by a second thread, up to
    `READ_AHEAD_BYTES` ahead in chunks of about `READ_AHEAD_CHUNK_BYTES` (zlib and zstandard
    release the GIL).
    """

    def __init__(self, path, read_ahead=False):
        self._fh = open(path, "rb")
        magic = self._fh.read(4)
        self._fh.seek(0)
        if magic[:2] == GZIP_MAGIC:
            self.kind = "gzip"
        elif magic == ZSTD_MAGIC:
            self.kind = "zstd"
        else:
            self.kind = "plain"
        self._decoder = self._new_decoder() if self.kind != "plain" else None
        # compressed input is read through a memory map: the decoder reads the page cache, no copy
        self._map, self._map_view, self._map_pos, self._released = None, None, 0, 0
        if self._decoder is not None:
            try:
                self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._map.madvise(mmap.MADV_SEQUENTIAL)
                self._map_view = memoryview(self._map)
            except (OSError, ValueError, AttributeError):  # not mappable (a pipe, an empty file): plain reads
                self._map = self._map_view = None
        self.buffer = memoryview(b"")
        self.pos = 0  # read position in ``buffer``
        self.offset = 0  # stream offset of ``buffer[0]``
        self._rest = None  # the part of the last chunk after ``buffer`` (memoryview), if any
        self.complete = True  # False once the compressed input ended inside a frame/member
        self._read_size = CHUNK_SIZE  # compressed bytes per chunk
        self._ahead = None
        if read_ahead and self._decoder is not None:
            self._ahead = deque()  # decoded chunks, then b"" or the exception that ended the decoding
            self._ahead_bytes = 0
            self._ahead_changed = threading.Condition()
            self._stop = False
            self._ended = None  # the last item, once the consumer has taken it
            self._thread = threading.Thread(target=self._decode_ahead, name="simtel-read-ahead", daemon=True)
            self._thread.start()

    def _new_decoder(self):
        if self.kind == "gzip":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        return zstandard.ZstdDecompressor().decompressobj()

    def _fill(self):
        """Next chunk of (decompressed) bytes, b'' at the end of the input."""
        if self._ahead is None:
            return self._decode()
        if self._ended is None:
            with self._ahead_changed:
                while not self._ahead:
                    self._ahead_changed.wait()
                item = self._ahead.popleft()
                if isinstance(item, bytes):
                    self._ahead_bytes -= len(item)
                self._ahead_changed.notify()
            if isinstance(item, bytes) and item:
                return item
            self._ended = item
        if isinstance(self._ended, BaseException):
            raise self._ended
        return b""

    def _decode_ahead(self):
        """The read-ahead thread: decoded chunks into ``_ahead``, then b'' or the exception that stopped it."""
        while True:
            with self._ahead_changed:
                while self._ahead_bytes >= READ_AHEAD_BYTES and not self._stop:
                    self._ahead_changed.wait()
                if self._stop:
                    return
            try:
                item = self._decode()
            except BaseException as err:  # handed to the consumer, raised there
                item = err
            with self._ahead_changed:
                self._ahead.append(item)
                if isinstance(item, bytes):
                    self._ahead_bytes += len(item)
                self._ahead_changed.notify()
            if not isinstance(item, bytes) or not item:
                return

    def _decode(self):
        if self._decoder is None:
            return self._fh.read(CHUNK_SIZE)
        while True:
            compressed = self._read_compressed()
            if not compressed:
                if not self._decoder.eof:
                    self.complete = False
                return b""
            out = self._decoder.decompress(compressed)
            # concatenated gzip members / zstd frames
            while self._decoder.eof and self._decoder.unused_data:
                rest = self._decoder.unused_data
                if self.kind == "gzip" and rest[:2] != GZIP_MAGIC:
                    log.warning("ignoring %d bytes of trailing garbage after the gzip stream", len(rest))
                    self._fh.seek(0, 2)
                    self._map_pos = len(self._map) if self._map is not None else 0
                    break
                self._decoder = self._new_decoder()
                out += self._decoder.decompress(rest)
            if self._ahead is not None and out:  # about READ_AHEAD_CHUNK_BYTES of output next time
                ratio = len(out) / len(compressed)
                self._read_size = min(CHUNK_SIZE, max(_MIN_READ, int(READ_AHEAD_CHUNK_BYTES / ratio)))
            if out:
                return out

    def _read_compressed(self):
        """Next ``_read_size`` bytes of the compressed file (a view of the map, or read).

        The pages of the map already decoded are released every `_RELEASE_BYTES`: mapped
        file pages count in the resident set size, which must not grow with the file.
        """
        if self._map_view is None:
            return self._fh.read(self._read_size)
        start = self._map_pos
        if start - self._released >= _RELEASE_BYTES:
            done = start - start % mmap.PAGESIZE
            self._map.madvise(mmap.MADV_DONTNEED, self._released, done - self._released)
            self._released = done
        self._map_pos = min(start + self._read_size, len(self._map_view))
        return self._map_view[start:self._map_pos]

    def _next_chunk(self):
        if self._rest is not None:
            chunk, self._rest = self._rest, None
            return chunk
        return memoryview(self._fill())

    def ensure(self, n):
        """Make at least ``n`` bytes available after ``pos`` if the stream has them; returns how many are."""
        available = len(self.buffer) - self.pos
        if available >= n:
            return available
        parts = [self.buffer[self.pos:]] if available else []
        self.offset += self.pos
        while available < n:
            chunk = self._next_chunk()
            if not chunk:
                break
            if not parts and len(chunk) >= n:  # all of it in this chunk: no copy
                self.buffer, self.pos = chunk, 0
                return len(chunk)
            take = n - available
            if len(chunk) > take:  # copy only what is needed, keep the rest for later
                chunk, self._rest = chunk[:take], chunk[take:]
            parts.append(chunk)
            available += len(chunk)
        self.buffer = memoryview(b"".join(parts))
        self.pos = 0
        return available

    @property
    def tell(self):
        return self.offset + self.pos

    def close(self):
        if self._ahead is not None:
            with self._ahead_changed:
                self._stop = True
                self._ahead_changed.notify()
            self._thread.join()
            self._ahead = None
        if self._map is not None:
            try:
                self._map_view.release()
                self._map.close()
            except BufferError:  # a view of it is still referenced: the map goes with it
                pass
            self._map = self._map_view = None
        self._fh.close()


@njit(cache=True, nogil=True)
def _mc_run(data, pos):
    """Starts of the objects of the run of MC objects at ``pos`` that the reader must see, in file order.

    A run is a sequence of MC shower, MC event and telescope data (true p.e.)
    objects: most showers are reused many times without a trigger.  What the reader
    keeps of a run (see `SimTelReader.iter_batches`) depends only on the last object of
    each of the three types and on their order: a shower clears the MC event, an
    MC event clears the telescope data.  So those three, in file order, leave the
    reader as the whole run does.  The run stops at anything else: another type, an
    extended header, a bad sync marker, an object past the end of ``data`` (those are
    left to the careful per-object code).  Returns ``[pos]`` if the run is shorter
    than one object.
    """
    end = len(data)
    last = np.full(3, -1, dtype=np.int64)  # shower, MC event, telescope data
    start = pos
    while pos + 16 <= end:
        if data[pos] != 0x37 or data[pos + 1] != 0x8A or data[pos + 2] != 0x1F or data[pos + 3] != 0xD4:
            break
        kind = data[pos + 4] | (np.int64(data[pos + 5]) << 8)
        if kind == MC_SHOWER:
            slot = 0
        elif kind == MC_EVENT:
            slot = 1
        elif kind == TELESCOPE_DATA:
            slot = 2
        else:
            break
        if data[pos + 6] & 0x02:  # extended header
            break
        length = (np.int64(data[pos + 12]) | (np.int64(data[pos + 13]) << 8) | (np.int64(data[pos + 14]) << 16)
                  | (np.int64(data[pos + 15] & 0x3F) << 24))
        following = pos + 16 + length
        if following > end:
            break
        last[slot] = pos
        pos = following
    kept = np.sort(last[last >= 0])
    if len(kept) == 0:
        kept = np.array([start], dtype=np.int64)
    return kept


_MC_TYPE_HIGH = MC_EVENT >> 8
assert MC_SHOWER >> 8 == _MC_TYPE_HIGH
_MC_TYPES_LOW = (MC_SHOWER & 0xFF, MC_EVENT & 0xFF)


def _iter_objects(stream):
    """Top-level objects as ``(offset, header, payload)``; raises :class:`_Broken`.

    Of a run of consecutive MC shower, MC event and telescope data objects (showers
    reused, mostly without trigger) only those that matter to the array event after
    the run are yielded (see `_mc_run`): skipping the others without building header
    objects is most of the speed of walking a file.
    """
    view_of, view = None, None
    pending = []  # starts of the objects of a scanned MC run still to yield, last first
    while True:
        try:
            if pending:  # complete objects inside the current buffer
                buffer, pos = stream.buffer, pending.pop()
                stream.pos = pos
                offset = stream.offset + pos
                available = len(buffer) - pos
            else:
                offset = stream.offset + stream.pos
                available = stream.ensure(20)
                if available == 0:
                    if not stream.complete:
                        raise _Broken(offset, "compressed stream ends early")
                    return
                buffer, pos = stream.buffer, stream.pos
                if available >= 20 and buffer[pos + 5] == _MC_TYPE_HIGH and buffer[pos + 4] in _MC_TYPES_LOW:
                    if view_of is not buffer:
                        view_of, view = buffer, np.frombuffer(buffer, dtype=np.uint8)
                    kept = _mc_run(view, pos)
                    if len(kept) > 1 or kept[0] != pos:
                        pending = [int(p) for p in kept[::-1]]
                        stream.pos = pos = pending.pop()
                        offset = stream.offset + pos
                        available = len(buffer) - pos
            if buffer[pos:pos + 4] != SYNC_MARKER:
                raise _Broken(offset, "no eventio sync marker", bad_sync=available >= 4)
            if available < 16:
                raise _Broken(offset, "incomplete object header")
            header = parse_header_bytes(buffer[pos + 4:pos + 16], toplevel=True)
            head_size = 16
            if header.extended:
                if available < 20:
                    raise _Broken(offset, "incomplete object header")
                header.content_size += parse_extension_field(buffer[pos + 16:pos + 20])
                head_size = 20
            total = head_size + header.content_size
            if available < total:
                available = stream.ensure(total)
                buffer, pos = stream.buffer, stream.pos
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
            raise _Broken(offset, f"decompression failed ({err})") from None
        if available < total:
            raise _Broken(offset, f"object type {header.type} incomplete "
                                  f"({available - head_size} of {header.content_size} bytes)")
        payload = buffer[pos + head_size:pos + total]
        stream.pos = pos + total
        header.content_address = 0  # the object's file handle is its own payload
        yield offset, header, payload


def _make_object(header, payload):
    """The eventio object for a top-level header and its payload bytes."""
    return KNOWN_OBJECTS.get(header.type, EventIOObject)(header, BytesIO(payload))


_SUB_HEADER = struct.Struct("<IiI")
_EXTENDED_BIT, _ONLY_SUBOBJECTS_BIT, _LENGTH_MASK = 1 << 17, 1 << 30, (1 << 30) - 1


class _Sub:
    """Header of a sub-object inside a top-level payload: where its content is, nothing parsed."""

    __slots__ = ("type", "version", "id", "start", "size", "header_start", "only_subobjects")

    def __init__(self, kind, version, ident, start, size, header_start, only_subobjects):
        self.type, self.version, self.id = kind, version, ident
        self.start, self.size, self.header_start, self.only_subobjects = start, size, header_start, only_subobjects


def _children(payload, start, end):
    """The sub-objects of the container whose content is ``payload[start:end]`` (headers only).

    Replaces eventio's object-by-object iteration where only a few children are
    used; raises ValueError for a header or content that runs past the container.
    """
    children = []
    pos = start
    unpack = _SUB_HEADER.unpack_from
    while pos < end:
        if pos + 12 > end:
            raise ValueError("sub-object header runs past its container")
        word, ident, length = unpack(payload, pos)
        size = length & _LENGTH_MASK
        content = pos + 12
        if word & _EXTENDED_BIT:
            if pos + 16 > end:
                raise ValueError("sub-object header runs past its container")
            size += (struct.unpack_from("<I", payload, content)[0] & 0xFFF) << 30
            content += 4
        if content + size > end:
            raise ValueError(f"sub-object type {word & 0xFFFF} runs past its container")
        children.append(_Sub(word & 0xFFFF, word >> 20, ident, content, size, pos,
                             bool(length & _ONLY_SUBOBJECTS_BIT)))
        pos = content + size
    return children


def _sub_object(payload, sub):
    """The eventio object of a sub-object (for the few that eventio parses)."""
    header = parse_header_bytes(payload[sub.header_start:sub.header_start + 12])
    header.content_size = sub.size
    header.content_address = 0
    return KNOWN_OBJECTS.get(sub.type, EventIOObject)(header, BytesIO(payload[sub.start:sub.start + sub.size]))


def _history_lines(payload):
    """(timestamp, line bytes) of the command/config lines (71/72) of a history block (70).

    What eventio's ``HistoryCommandLine.parse`` / ``HistoryConfig.parse`` give, without
    building an object per line (files hold thousands).
    """
    lines = []
    for sub in _children(payload, 0, len(payload)):
        if sub.type not in (71, 72) or sub.size < 6:
            raise ValueError(f"history block holds object type {sub.type} of {sub.size} bytes")
        timestamp, length = _HISTORY_LINE.unpack_from(payload, sub.start)
        available = sub.size - 6
        if length < 0 or length > available:
            length = available
        lines.append((timestamp, bytes(payload[sub.start + 6:sub.start + 6 + length])))
    return lines


_HISTORY_LINE = struct.Struct("<ih")


def _camera_organization(header, payload):
    """The counts of a camera organization block (2003); its per-pixel wiring is not needed."""
    if header.version not in (1, 2):
        raise ValueError(f"camera organization version {header.version} not supported")
    if len(payload) < 16:
        raise ValueError("camera organization block too short")
    n_pixels, n_drawers, n_gains, n_sectors = struct.unpack_from("<iiii", payload, 0)
    return {"telescope_id": int(header.id), "n_pixels": n_pixels, "n_drawers": n_drawers, "n_gains": n_gains,
            "n_sectors": n_sectors}


def _object_tel_id(kind, base):
    """tel_id of a TelescopeEvent (base 2200) / TrackingPosition (base 2100) type, else None.

    sim_telarray encodes the tel_id in the type: base + tel_id % 100 + 1000 * (tel_id // 100).
    """
    offset = kind - base
    if offset < 0 or offset % 1000 >= 100 or offset >= 10_000:
        return None
    return 100 * (offset // 1000) + offset % 1000


_TRACKING = struct.Struct("<ff")


# -- small conversions ---------------------------------------------------------

def _clip_altitude(alt):
    """float32 pi/2 is a bit larger than float64 pi/2: clip such values (like ctapipe)."""
    if _HALF_PI < alt < (1 + 1e-6) * _HALF_PI:
        return _HALF_PI
    if -(1 + 1e-6) * _HALF_PI < alt < -_HALF_PI:
        return -_HALF_PI
    return alt


def _telescope_event_type(mask):
    """ctapipe EventType of a telescope trigger from sim_telarray's trigger type mask."""
    mask = int(mask)
    if mask & _RANDOM_MONO_BIT:
        return EVENT_TYPE_RANDOM_MONO
    if mask & _MUON_BIT:
        return EVENT_TYPE_MUON
    if mask & _LONG_EVENT_BIT:
        return EVENT_TYPE_LONG_EVENT
    return EVENT_TYPE_SUBARRAY


def _unix_to_mjd_tai(seconds, nanoseconds):
    """UTC unix time stamps (s, ns) -> MJD in the TAI scale (float64).

    Unix time counts UTC days of 86400 s: the UTC day and the time into it go
    through ERFA's ``utctai`` (leap seconds, longer days), as astropy's
    ``Time(s, ns, format="unix", scale="utc").tai.mjd`` does (equal within an ulp
    or two), without importing astropy (start-up time).
    """
    import erfa

    seconds = np.asarray(seconds, dtype=np.float64)
    if len(seconds) == 0:
        return np.zeros(0)
    days = np.floor(seconds / 86400.0)
    in_day = seconds - days * 86400.0 + np.asarray(nanoseconds, dtype=np.float64) * 1e-9
    with warnings.catch_warnings():  # "dubious year": beyond the leap-second table, as astropy
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        tai1, tai2 = erfa.utctai(2440587.5 + days, in_day / 86400.0)
    return (tai1 - 2400000.5) + tai2


def has_true_images(history):
    """Whether sim_telarray was configured to store true p.e. images.

    ``history``: (timestamp, line) pairs of the history block.  Checks the global
    ``save_photons`` (bit 2) / ``store_photoelectrons`` settings, then the
    telescope-specific sections; files made by ``merge_simtel`` never have them.
    """
    lines = [line.decode("utf-8", "replace").strip() for _, line in history]
    if not lines:
        return False
    if "merge_simtel" in lines[0]:
        return False
    sections = [[]]
    for line in lines:
        if line.startswith("# Telescope-specific configuration follows"):
            sections.append([])
        sections[-1].append(line.lower())

    save_photons, store_pe = 0, -1
    for line in sections[0]:
        if line.startswith("save_photons"):
            save_photons = int(line.split()[1])
        if line.startswith("store_photoelectrons"):
            store_pe = int(line.split()[1])
    if save_photons & 2 or store_pe > 0:
        return True
    for section in sections[1:]:
        values = [int(line.split()[1]) for line in section if "store_photoelectrons" in line]
        if values and values[-1] > 0:
            return True
    return False


def _simulation_config(obs_id, run_header, mc):
    """Columns of ctapipe's /configuration/simulation/run (ctapipe's units: TeV, uT, rad, deg, m, nm)."""
    return {
        "obs_id": int(obs_id),
        "run_number": int(run_header["run"]),
        "corsika_version": int(mc["shower_prog_vers"]),
        "simtel_version": int(mc["detector_prog_vers"]),
        "energy_range_min": float(mc["E_range"][0]),
        "energy_range_max": float(mc["E_range"][1]),
        "prod_site_B_total": float(mc["B_total"]),
        "prod_site_B_declination": float(mc["B_declination"]),
        "prod_site_B_inclination": float(mc["B_inclination"]),
        "prod_site_alt": float(mc["obsheight"]),
        "spectral_index": float(mc["spectral_index"]),
        "shower_prog_start": int(mc["shower_prog_start"]),
        "shower_prog_id": int(mc["shower_prog_id"]),
        "detector_prog_start": int(mc["detector_prog_start"]),
        "detector_prog_id": int(mc["detector_prog_id"]),
        "n_showers": int(mc["n_showers"]),
        "shower_reuse": int(mc["n_use"]),
        "max_alt": float(_clip_altitude(float(mc["alt_range"][1]))),
        "min_alt": float(_clip_altitude(float(mc["alt_range"][0]))),
        "max_az": float(mc["az_range"][1]),
        "min_az": float(mc["az_range"][0]),
        "diffuse": int(mc["diffuse"]),
        "max_viewcone_radius": float(mc["viewcone"][1]),
        "min_viewcone_radius": float(mc["viewcone"][0]),
        "max_scatter_range": float(mc["core_range"][1]),
        "min_scatter_range": float(mc["core_range"][0]),
        "core_pos_mode": int(mc["core_pos_mode"]),
        "atmosphere": int(mc["atmosphere"]),
        "corsika_iact_options": int(mc["corsika_iact_options"]),
        "corsika_low_E_model": int(mc["corsika_low_E_model"]),
        "corsika_high_E_model": int(mc["corsika_high_E_model"]),
        "corsika_bunchsize": float(mc["corsika_bunchsize"]),
        "corsika_wlen_min": float(mc["corsika_wlen_min"]),
        "corsika_wlen_max": float(mc["corsika_wlen_max"]),
        "corsika_low_E_detail": int(mc["corsika_low_E_detail"]),
        "corsika_high_E_detail": int(mc["corsika_high_E_detail"]),
    }


def _shower_distribution(obs_id, histograms):
    """ctapipe's SimulatedShowerDistribution from histogram 6 (x: core distance, y: log10 energy)."""
    hist = next((h for h in histograms if h["id"] == 6), None)
    if hist is None:
        return None
    return {
        "obs_id": int(obs_id),
        "hist_id": int(hist["id"]),
        "n_entries": int(hist["entries"]),
        "bins_core_dist": np.linspace(hist["lower_x"], hist["upper_x"], hist["n_bins_x"] + 1),
        "bins_energy": 10 ** np.linspace(hist["lower_y"], hist["upper_y"], hist["n_bins_y"] + 1),
        "histogram": np.asarray(hist["data"]),  # (n energy bins, n core distance bins)
    }


def _atmosphere_profile(profile):
    """Tabulated atmosphere: rows with height >= 0 and positive (column) density, as ctapipe keeps."""
    height = np.asarray(profile["altitude_km"], dtype=np.float64)
    density = np.asarray(profile["rho"], dtype=np.float64)
    column_density = np.asarray(profile["thickness"], dtype=np.float64)
    valid = (height >= 0) & (density > 0) & (column_density > 0)
    return {
        "height": height[valid],
        "density": density[valid],
        "column_density": column_density[valid],
        "atmosphere_id": int(profile["id"]),
        "atmosphere_name": profile["name"].decode("utf-8", "replace"),
        "observation_level": float(profile["obslevel"]),
        "atmosphere_height": float(profile["htoa"]) if profile["htoa"] is not None else float("nan"),
    }


def _telescope_calibration(tel_id, monitoring, laser, disabled, n_gains, n_pixels):
    """TelescopeCalibration from camera monitoring (2022) and laser calibration (2023) blocks.

    ``unusable`` marks the HV-disabled pixels of the disabled-pixels block (what
    ctapipe uses as outlier mask); ``hv_off`` the pixels with ``hv_set == 0`` in
    the camera monitoring (ctapipe ignores these; their dc_to_pe is 0).
    """
    pedestal = monitoring["pedestal"] / monitoring["n_ped_slices"]
    time_shift = laser.get("tm_calib")
    if time_shift is None:
        time_shift = np.zeros((n_gains, n_pixels), dtype=np.float32)
    unusable = np.zeros((n_gains, n_pixels), dtype=bool)
    if disabled is not None:
        unusable[:, np.asarray(disabled["HV_disabled"], dtype=np.int64)] = True
    return TelescopeCalibration(
        tel_id=int(tel_id),
        pedestal_per_sample=pedestal,
        dc_to_pe=laser["calib"],
        time_shift=time_shift,
        unusable=unusable,
        hv_off=None if "hv_set" not in monitoring else np.asarray(monitoring["hv_set"]) == 0,
    )


# -- batch assembly ----------------------------------------------------------

class _TelAccumulator:
    """Per-telescope lists of one batch; waveforms go straight into one preallocated array."""

    __slots__ = ("index", "event_id", "event_type", "true_image", "true_image_sum", "n_trigger_pixels",
                 "time_ns", "pointing_alt", "pointing_az", "r0", "n_r0")

    def __init__(self):
        self.index, self.event_id, self.event_type = [], [], []
        self.true_image, self.true_image_sum, self.n_trigger_pixels = [], [], []
        self.time_ns, self.pointing_alt, self.pointing_az = [], [], []
        self.r0 = None  # (capacity, n_gains, n_pixels, n_samples); only touched rows use memory
        self.n_r0 = 0


#: size of the waveform buffer of one telescope in one batch (allocated up front, pages are
#: only used once written); a batch ends early when a telescope's buffer is full
MAX_WAVEFORM_BUFFER = 128 << 20


_SHOWER_COLUMNS = ("true_energy", "true_alt", "true_az", "true_core_x", "true_core_y",
                   "true_h_first_int", "true_x_max", "true_starting_grammage")


class _BatchBuilder:
    def __init__(self, reader, calibration, batch_size):
        self.reader = reader
        self.calibration = calibration
        self.batch_size = batch_size
        self.event_id, self.event_type, self.gps_s, self.gps_ns = [], [], [], []
        self.triggered, self.shower = [], []
        self.tels = {}

    def __len__(self):
        return len(self.event_id)

    def fits(self, tel_events):
        """False if a waveform's shape/dtype differs from this batch's or a buffer is full."""
        for tel_id, t in tel_events.items():
            acc = self.tels.get(tel_id)
            if t["r0"] is None or acc is None or acc.r0 is None:
                continue
            shape, dtype = t["r0"].shape, t["r0"].dtype
            if acc.r0.shape[1:] != shape or acc.r0.dtype != dtype or acc.n_r0 == len(acc.r0):
                return False
        return True

    def add(self, event, tel_events):
        """Add an event; waveforms are decoded first, so a decoding error leaves the batch unchanged."""
        for tel_id, t in tel_events.items():
            if t["r0"] is None:
                continue
            acc = self.tels.get(tel_id)
            if acc is None:
                acc = self.tels[tel_id] = _TelAccumulator()
            if acc.r0 is None:
                shape, dtype = t["r0"].shape, t["r0"].dtype
                per_event = max(1, int(np.prod(shape)) * dtype.itemsize)
                capacity = max(1, min(self.batch_size, MAX_WAVEFORM_BUFFER // per_event))
                acc.r0 = self.reader._waveform_buffer(tel_id, (capacity, *shape), dtype)
            t["r0"].fill(acc.r0[acc.n_r0])

        index = len(self.event_id)
        self.event_id.append(event["event_id"])
        self.event_type.append(event["event_type"])
        self.gps_s.append(event["gps"][0])
        self.gps_ns.append(event["gps"][1])
        self.triggered.append(event["triggered"])
        self.shower.append(event["shower"])
        for tel_id, t in tel_events.items():
            acc = self.tels.get(tel_id)
            if acc is None:
                acc = self.tels[tel_id] = _TelAccumulator()
            acc.index.append(index)
            acc.event_id.append(event["event_id"])
            acc.event_type.append(t["event_type"])
            acc.time_ns.append(t["time_ns"])
            acc.n_trigger_pixels.append(t["n_trigger_pixels"])
            acc.true_image.append(t["true_image"])
            acc.true_image_sum.append(t["true_image_sum"])
            acc.pointing_alt.append(t["pointing"][0])
            acc.pointing_az.append(t["pointing"][1])
            if t["r0"] is not None:
                acc.n_r0 += 1

    def build(self):
        reader = self.reader
        subarray = reader.subarray
        n = len(self.event_id)
        time_mjd = _unix_to_mjd_tai(self.gps_s, self.gps_ns)
        tel_index = subarray.tel_index
        triggered = np.zeros((n, subarray.n_tels), dtype=bool)
        for i, tel_ids in enumerate(self.triggered):
            for tel_id in tel_ids:
                triggered[i, tel_index[tel_id]] = True

        showers = [s for s in self.shower if s is not None]
        shower = None
        if showers:
            shower = {name: np.full(n, np.nan) for name in _SHOWER_COLUMNS}
            shower["true_shower_primary_id"] = np.full(n, -1, dtype=np.int64)
            for i, s in enumerate(self.shower):
                if s is not None:
                    for name, value in s.items():
                        shower[name][i] = value

        tels = {}
        for tel_id in sorted(self.tels):
            acc = self.tels[tel_id]
            index = np.asarray(acc.index, dtype=np.int64)
            true_image = None
            if any(img is not None for img in acc.true_image):
                n_pixels = subarray.tels[tel_id].geometry.n_pixels
                true_image = np.stack([
                    img if img is not None else np.full(n_pixels, -1, dtype=np.int32)
                    for img in acc.true_image
                ]).astype(np.int32, copy=False)
            impact = np.full(len(index), np.nan)
            if shower is not None:
                impact = _impact_distance(shower, index, subarray.tel_positions[tel_id])
            tels[tel_id] = TelescopeEvents(
                tel_id=int(tel_id),
                event_id=np.asarray(acc.event_id, dtype=np.int64),
                r0=None if acc.r0 is None else acc.r0[:acc.n_r0],
                true_image=true_image,
                true_impact_distance=impact,
                n_trigger_pixels=np.asarray(acc.n_trigger_pixels, dtype=np.int64),
                time_mjd=time_mjd[index] + np.asarray(acc.time_ns, dtype=np.float64) / _NS_PER_DAY,
                event_type=np.asarray(acc.event_type, dtype=np.int64),
                true_image_sum=np.asarray(acc.true_image_sum, dtype=np.int32),
                pointing_alt=np.asarray(acc.pointing_alt, dtype=np.float64),
                pointing_az=np.asarray(acc.pointing_az, dtype=np.float64),
            )
        info = reader.run_info
        return EventBatch(
            obs_id=info.obs_id,
            event_id=np.asarray(self.event_id, dtype=np.int64),
            event_type=np.asarray(self.event_type, dtype=np.int64),
            time_mjd=time_mjd,
            tels_with_trigger=triggered,
            pointing_alt=np.full(n, info.pointing_alt),
            pointing_az=np.full(n, info.pointing_az),
            tel=tels,
            shower=shower,
            calibration=dict(self.calibration),
        )


def _impact_distance(shower, index, position):
    """Distance (m) of a telescope to the shower axes of events ``index``."""
    alt = np.deg2rad(shower["true_alt"][index])
    az = np.deg2rad(shower["true_az"][index])
    direction = np.column_stack([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)])
    core = np.column_stack([shower["true_core_x"][index], shower["true_core_y"][index], np.zeros(len(index))])
    return np.linalg.norm(np.cross(position - core, direction), axis=1) / np.linalg.norm(direction, axis=1)


# -- the reader -------------------------------------------------------------------

class _Session:
    """One pass over the file: byte stream, object iterator and look-ahead buffer."""

    def __init__(self, path, read_ahead=False):
        self.stream = _ByteStream(path, read_ahead)
        self.iterator = _iter_objects(self.stream)
        self.pending = deque()
        self.broken = None

    def objects(self):
        while self.pending:
            yield self.pending.popleft()
        if self.broken is not None:
            raise self.broken
        yield from self.iterator

    def close(self):
        self.stream.close()


class _EventState:
    """What the object stream has told so far about the event under construction."""

    def __init__(self):
        self.shower = None  # (header, payload) of the current MC shower
        self.shower_parsed = None
        self.mc_event = None  # (header, payload) of the current MC event
        self.telescope_data = None  # payload object of the TelescopeData (1204) block
        self.pe_sums = None
        self.calib_pe = None
        self.pseudo_event_id = 0


class SimTelReader:
    """Read a sim_telarray file (``.simtel``, ``.simtel.gz``, ``.simtel.zst``).

    Parameters
    ----------
    path : path of the file
    allowed_tels : iterable of tel_ids to read (None: all)
    max_events : stop after this many array events (None: all)
    allow_truncated : on a truncated or corrupt file, log a warning after the
        last complete event instead of raising :class:`TruncatedFileError`
    skip_calibration : drop calibration events (default, like ctapipe);
        otherwise yield them with their calibration EventType
    read_waveforms : decode ADC samples into ``r0`` (False: skip, much faster)
    read_true_images : decode true p.e. images
    read_ahead : decompress a compressed file in a second thread, ahead of the parsing

    Attributes ``subarray`` (SubarrayDescription) and ``run_info`` (RunInfo) are
    set on opening; ``run_info.shower_distribution`` only once the end-of-run
    histograms (the last object of the file) have been read.
    """

    def __init__(self, path, allowed_tels=None, max_events=None, allow_truncated=False,
                 skip_calibration=True, read_waveforms=True, read_true_images=True, read_ahead=False):
        self.path = Path(path)
        self.read_ahead = bool(read_ahead)
        self.allowed_tels = None if allowed_tels is None else frozenset(int(t) for t in allowed_tels)
        self.max_events = None if max_events is None else int(max_events)
        self.allow_truncated = bool(allow_truncated)
        self.skip_calibration = bool(skip_calibration)
        self.read_waveforms = bool(read_waveforms)
        self.read_true_images = bool(read_true_images)
        self.complete = None  # after iterating: True read to its end, False truncated/corrupt, None stopped early
        self.has_histograms = False
        self._buffers = {}  # (tel_id, shape, dtype) -> waveform array of the last batch (see _waveform_buffer)

        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        try:
            self._session = _Session(self.path, self.read_ahead)
        except OSError as err:
            raise DataError(f"{self.path}: cannot open ({err.strerror or err})") from None
        try:
            self._read_header(self._session)
            self._look_ahead(self._session)
        except BaseException:
            self._session.close()
            raise

    def close(self):
        """Close the file if it is still open from reading the header (iterations close their own)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- header ---------------------------------------------------------------------
    def _read_header(self, session):
        history, global_meta, telescope_meta = [], {}, {}
        run_header, mc_run_headers, atmospheres = None, [], []
        descriptions = {}
        allowed = self.allowed_tels
        try:
            for offset, header, payload in session.iterator:
                kind = header.type
                if kind not in _HEADER_TYPES:
                    session.pending.append((offset, header, payload))
                    break
                if kind in _DESCRIPTION_KEYS:
                    if allowed is None or header.id in allowed:
                        descriptions.setdefault(header.id, {})[_DESCRIPTION_KEYS[kind]] = (
                            _camera_organization(header, payload) if kind == CAMERA_ORGANIZATION
                            else _make_object(header, payload).parse())
                elif kind == RUN_HEADER:
                    if run_header is None:
                        run_header = _make_object(header, payload).parse()
                elif kind == MC_RUN_HEADER:
                    mc_run_headers.append(_make_object(header, payload).parse())
                elif kind == HISTORY:
                    history.extend(_history_lines(payload))
                elif kind == HISTORY_META:
                    meta = _make_object(header, payload).parse()
                    if header.id == -1:
                        global_meta = meta
                    else:
                        telescope_meta[header.id] = meta
                elif kind == ATMOSPHERE:
                    atmospheres.append(_make_object(header, payload).parse())
        except _Broken as broken:
            if broken.offset == 0 and broken.bad_sync:
                raise DataError(f"{self.path}: not a sim_telarray (eventio) file") from None
            raise TruncatedFileError(self.path, broken.offset, 0) from None
        except IactpipeError:
            raise
        except Exception as err:  # eventio could not parse a header object
            raise DataError(f"{self.path}: unreadable sim_telarray header ({err.__class__.__name__}: {err})") from None

        if run_header is None:
            raise DataError(f"{self.path}: no sim_telarray run header (not a sim_telarray file?)")
        header_ids = [int(t) for t in run_header["tel_id"]]
        wanted = header_ids if allowed is None else [t for t in header_ids if t in allowed]
        if allowed is not None and set(allowed) - set(header_ids):
            raise DataError(f"{self.path}: allowed_tels {sorted(set(allowed) - set(header_ids))} not in the file "
                            f"(tel_ids {header_ids[0]}..{header_ids[-1]})")
        for tel_id in wanted:
            missing = {"camera_settings", "camera_organization", "pixel_settings"} - set(descriptions.get(tel_id, {}))
            if missing:
                if not session.pending:
                    raise TruncatedFileError(self.path, session.stream.tell, 0)
                raise DataError(f"{self.path}: telescope {tel_id} lacks {', '.join(sorted(missing))}")

        mc = mc_run_headers[-1] if mc_run_headers else None
        observation_level = float(mc["obsheight"]) if mc is not None else None
        self.subarray = subarray_from_simtel(run_header, {t: descriptions[t] for t in wanted},
                                             telescope_meta, global_meta, observation_level)
        if allowed is not None:  # named like ctapipe's selection
            self.subarray.name = f"{self.subarray.name}_{tel_id_ranges(wanted)}"
        self._descriptions = descriptions
        self._header_index = {t: i for i, t in enumerate(header_ids)}
        self._tel_positions = {t: self.subarray.tel_positions[t] for t in wanted}
        try:
            self.has_true_image = has_true_images(history)
        except (ValueError, IndexError):
            log.warning("%s: cannot tell from the history whether true images are stored; assuming yes", self.path)
            self.has_true_image = True

        obs_id = int(run_header["run"])
        if int(run_header["tracking_mode"]) == 0:
            az, alt = (float(v) for v in run_header["direction"])
            pointing_alt, pointing_az = math.degrees(_clip_altitude(alt)), math.degrees(az)
        else:  # RA/Dec tracking: no fixed alt/az
            pointing_alt = pointing_az = float("nan")
        self.run_info = RunInfo(
            obs_id=obs_id,
            subarray=self.subarray,
            pointing_alt=pointing_alt,
            pointing_az=pointing_az,
            simulation_config=_simulation_config(obs_id, run_header, mc) if mc is not None else None,
            shower_distribution=None,
            calibration={},
            is_simulation=True,
            start_time_mjd=float(_unix_to_mjd_tai([int(run_header["time"])], [0])[0]),
            atmosphere_profile=_atmosphere_profile(atmospheres[0]) if atmospheres else None,
        )

    def _look_ahead(self, session):
        """Read on to the first calibration blocks of all telescopes, keeping the objects for iteration.

        Stops at the first array/calibration event: calibration blocks written
        later apply from the events after them (see ``EventBatch.calibration``).
        """
        needed = {(int(t), kind) for t in self.subarray.tel_ids for kind in (CAMERA_MONITORING, LASER_CALIBRATION)}
        monitoring = {}

        def stop_after(item):
            _, header, payload = item
            if header.type in (ARRAY_EVENT, CALIBRATION_EVENT, HISTOGRAMS):
                return True
            if header.type in (CAMERA_MONITORING, LASER_CALIBRATION):
                try:
                    tel_id, parsed = self._parse_monitoring(header, payload)
                except Exception:  # left to the event loop, which reports corrupt objects
                    return True
                if tel_id is not None:
                    monitoring.setdefault(tel_id, {})[header.type] = parsed
                    needed.discard((tel_id, header.type))
            return not needed

        done = any(stop_after(item) for item in session.pending)
        try:
            while not done:
                item = next(session.iterator)
                session.pending.append(item)
                done = stop_after(item)
        except StopIteration:
            pass
        except _Broken as broken:
            session.broken = broken
        for tel_id, blocks in monitoring.items():
            calibration = self._calibration(tel_id, blocks)
            if calibration is not None:
                self.run_info.calibration[tel_id] = calibration

    def _parse_monitoring(self, header, payload):
        obj = _make_object(header, payload)
        tel_id = int(obj.telescope_id)
        if tel_id not in self._tel_positions:
            return None, None
        return tel_id, obj.parse()

    def _calibration(self, tel_id, blocks):
        if CAMERA_MONITORING not in blocks or LASER_CALIBRATION not in blocks:
            return None
        description = self._descriptions[tel_id]
        n_gains = int(description["camera_organization"]["n_gains"])
        n_pixels = int(description["camera_organization"]["n_pixels"])
        return _telescope_calibration(tel_id, blocks[CAMERA_MONITORING], blocks[LASER_CALIBRATION],
                                      description.get("disabled_pixels"), n_gains, n_pixels)

    # -- events ----------------------------------------------------------------------
    def _waveform_buffer(self, tel_id, shape, dtype):
        """An array for the waveforms of one telescope in a batch.

        The previous batch's array is reused once nothing else refers to it (the
        consumer let go of that batch): writing into fresh memory costs page faults
        that are a good part of the decoding time of large batches.
        """
        key = (tel_id, shape, np.dtype(dtype))
        buffer = self._buffers.get(key)
        # references: the pool, ``buffer`` and getrefcount's argument; any more: still in use
        if buffer is None or sys.getrefcount(buffer) > 3:
            buffer = np.empty(shape, dtype=dtype)
            self._buffers[key] = buffer
        return buffer

    def _take_session(self):
        session, self._session = self._session, None
        if session is None:
            session = _Session(self.path, self.read_ahead)
            self._read_header_again(session)
        return session

    def _read_header_again(self, session):
        try:
            for item in session.iterator:
                if item[1].type not in _HEADER_TYPES:
                    session.pending.append(item)
                    return
        except _Broken as broken:
            session.close()
            raise TruncatedFileError(self.path, broken.offset, 0) from None

    def __iter__(self):
        return self.iter_batches()

    def iter_batches(self, batch_size=1000):
        """Yield :class:`EventBatch` objects of up to ``batch_size`` array events.

        Batches can be shorter: when a telescope's waveforms of the batch reach
        :data:`MAX_WAVEFORM_BUFFER` bytes, when waveform shapes change, when the
        calibration changes, and at the end.

        A truncated or corrupt file: all complete events are yielded first, then
        :class:`TruncatedFileError` is raised (or a warning logged with
        ``allow_truncated``).  The offset it reports counts decompressed bytes.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        session = self._take_session()
        state = _EventState()
        blocks = {}  # tel_id -> {type: parsed} of the camera monitoring / laser calibration in force
        calibration = dict(self.run_info.calibration)
        builder = _BatchBuilder(self, calibration, batch_size)
        n_events = 0
        stopped = False
        try:
            for offset, header, payload in session.objects():
                kind = header.type
                try:
                    if kind == MC_EVENT:
                        state.mc_event = (header, payload)
                        state.telescope_data = state.pe_sums = None
                    elif kind == MC_SHOWER:
                        state.shower = (header, payload)
                        state.shower_parsed = None
                        state.mc_event = None
                    elif kind == TELESCOPE_DATA:
                        state.telescope_data = (header, payload)
                    elif kind == MC_PE_SUM:
                        state.pe_sums = (header, payload)
                    elif kind == ARRAY_EVENT or kind == CALIBRATION_EVENT:
                        result = self._event(header, payload, state)
                        if result is None:
                            continue
                        event, tel_events = result
                        if not builder.fits(tel_events):
                            yield builder.build()
                            builder = _BatchBuilder(self, calibration, batch_size)
                        builder.add(event, tel_events)
                        n_events += 1
                        if len(builder) >= batch_size:
                            yield builder.build()
                            builder = _BatchBuilder(self, calibration, batch_size)
                        if self.max_events is not None and n_events >= self.max_events:
                            stopped = True
                            break
                    elif kind == CAMERA_MONITORING or kind == LASER_CALIBRATION:
                        tel_id, parsed = self._parse_monitoring(header, payload)
                        if tel_id is None:
                            continue
                        blocks.setdefault(tel_id, {})[kind] = parsed
                        new = self._calibration(tel_id, blocks[tel_id])
                        if new is None or _same_calibration(new, calibration.get(tel_id)):
                            continue
                        if len(builder):  # the calibration changes within the run
                            yield builder.build()
                        calibration = dict(calibration)
                        calibration[tel_id] = new
                        builder = _BatchBuilder(self, calibration, batch_size)
                    elif kind == CALIBRATION_PE:
                        state.calib_pe = (header, payload)
                    elif kind == HISTOGRAMS:
                        histograms = _make_object(header, payload).parse()
                        self.run_info.shower_distribution = _shower_distribution(self.run_info.obs_id, histograms)
                        self.has_histograms = True
                except IactpipeError:
                    raise
                except Exception as err:  # eventio failed on a complete object: corrupt content
                    log.warning("%s: cannot parse object type %d at byte %d (%s: %s)",
                                self.path, kind, offset, err.__class__.__name__, err)
                    raise _Broken(offset, f"unparsable object type {kind}") from None
        except _Broken as broken:
            self.complete = False
            if len(builder):
                yield builder.build()
            if not self.allow_truncated:
                raise TruncatedFileError(self.path, broken.offset, n_events) from None
            log.warning("%s: truncated or corrupt at byte offset %d (%s); read %d complete events",
                        self.path, broken.offset, broken.reason, n_events)
            return
        finally:
            session.close()
            self._buffers = {}  # the last batch keeps its arrays, the reader lets go of them
        self.complete = None if stopped else True
        if len(builder):
            yield builder.build()
        if not self.has_histograms and self.max_events is None:
            log.info("%s: no end-of-run histograms (file may end early at an object boundary)", self.path)

    def _event(self, header, payload, state):
        """(event dict, {tel_id: tel dict}) of an array/calibration event block, or None to skip it.

        The event's sub-objects are located by `_children` (headers only); eventio
        parses just the trigger block (and true images, MC blocks).
        """
        data = np.frombuffer(payload, dtype=np.uint8)
        pe_block = None
        event_header_id = header.id
        start, end = 0, len(payload)
        if header.type == CALIBRATION_EVENT:
            calibration_type = header.id
            pe_block, state.calib_pe = state.calib_pe, None
            if self.skip_calibration:
                return None
            first = _children(payload, start, end)[:1]
            if not first or first[0].type != ARRAY_EVENT:
                raise ValueError(f"calibration event holds object type {first[0].type if first else None}")
            event_header_id = first[0].id
            start, end = first[0].start, first[0].start + first[0].size
            event_type = CALIBRATION_EVENT_TYPES.get(calibration_type, EVENT_TYPE_OTHER_CALIBRATION)
            is_data = False
        elif state.shower is None:  # array event outside any shower: extracted calibration event
            if self.skip_calibration:
                return None
            event_type = EVENT_TYPE_OTHER_CALIBRATION
            is_data = False
        else:
            event_type = EVENT_TYPE_SUBARRAY
            is_data = True
            pe_block = state.telescope_data

        if not (first[0].only_subobjects if header.type == CALIBRATION_EVENT else header.only_subobjects):
            raise ValueError("array event holds no sub-objects")
        children = _children(payload, start, end)
        if not children or children[0].type != TRIGGER_INFORMATION:
            raise ValueError(f"array event starts with object type {children[0].type if children else None}")
        trigger = _sub_object(payload, children[0]).parse()
        event_id = children[0].id or event_header_id

        allowed = self.allowed_tels
        positions = self._tel_positions
        tel_objects, tracking = {}, {}
        if allowed is None or set(int(t) for t in trigger["telescopes_with_data"]) & allowed:
            for sub in children[1:]:
                tel_id = _object_tel_id(sub.type, 2200)
                if tel_id is not None:
                    if tel_id in positions:
                        tel_objects[tel_id] = sub
                    continue
                tel_id = _object_tel_id(sub.type, 2100)
                if tel_id is not None and tel_id in positions:
                    tracking[tel_id] = sub
        if is_data and not tel_objects:
            return None  # triggered but nothing read out (for these telescopes)

        if event_id == 0:
            state.pseudo_event_id -= 1
            event_id = state.pseudo_event_id

        triggered = [int(t) for t in trigger["triggered_telescopes"] if int(t) in positions]
        shower = self._shower(state) if is_data else None

        # true images and p.e. sums
        photoelectrons = {}
        if self.read_true_images and pe_block is not None:
            wanted = {self._header_index[t] for t in tel_objects if t in self._header_index}
            photoelectrons = _read_photoelectrons(pe_block, wanted)
        pe_sums = None
        if is_data and state.pe_sums is not None:
            pe_sums = _make_object(*state.pe_sums).parse()["n_pe"]

        triggered_ids = [int(t) for t in trigger["triggered_telescopes"]]
        trigger_times = dict(zip(triggered_ids, (float(t) for t in trigger["trigger_times"]), strict=True))
        masks = trigger.get("teltrg_type_mask")  # not in trigger blocks before version 2
        trigger_masks = dict(zip(triggered_ids, masks, strict=True)) if masks is not None else {}
        tel_events = {}
        triggered_set = set(triggered)
        for tel_id in sorted(tel_objects):
            if tel_id not in triggered_set:
                log.warning("%s: event %d: telescope %d has data but is not in the array trigger; dropped",
                            self.path, event_id, tel_id)
                continue
            itel = self._header_index[tel_id]
            image_sum = int(pe_sums[itel]) if pe_sums is not None and itel < len(pe_sums) else -1
            true_image = photoelectrons.get(itel)
            if true_image is None and self.read_true_images and self.has_true_image:
                if image_sum > MISSING_IMAGE_BRIGHTNESS_LIMIT:
                    log.warning("%s: event %d, telescope %d: true image missing for %d p.e.; "
                                "telescope event dropped", self.path, event_id, tel_id, image_sum)
                    continue
                true_image = np.full(self.subarray.tels[tel_id].geometry.n_pixels, -1, dtype=np.int32)
            r0, n_trigger_pixels = self._telescope_event(tel_id, tel_objects[tel_id], payload, data)
            if tel_id not in tracking:
                raise ValueError(f"no tracking position for telescope {tel_id}")
            tel_events[tel_id] = {
                "r0": r0,
                "n_trigger_pixels": n_trigger_pixels,
                "true_image": true_image,
                "true_image_sum": image_sum,
                "time_ns": trigger_times.get(tel_id, 0.0),
                "event_type": _telescope_event_type(trigger_masks.get(tel_id, 0)),
                "pointing": _tracking_pointing(tel_id, tracking[tel_id], payload),
            }
        event = {
            "event_id": int(event_id),
            "event_type": event_type,
            "gps": (int(trigger["gps_time"][0]), int(trigger["gps_time"][1])),
            "triggered": triggered,
            "shower": shower,
        }
        if is_data:
            state.mc_event = None
        return event, tel_events

    def _shower(self, state):
        """True shower dict (ctapipe column names and units) of the current MC shower/event."""
        if state.shower_parsed is None:
            state.shower_parsed = _make_object(*state.shower).parse()
        mc = state.shower_parsed
        core_x = core_y = float("nan")
        if state.mc_event is not None:
            mc_event = _make_object(*state.mc_event).parse()
            core_x, core_y = float(mc_event["xcore"]), float(mc_event["ycore"])
        return {
            "true_energy": float(mc["energy"]),
            "true_alt": math.degrees(_clip_altitude(float(mc["altitude"]))),
            "true_az": math.degrees(float(mc["azimuth"])),
            "true_core_x": core_x,
            "true_core_y": core_y,
            "true_h_first_int": float(mc["h_first_int"]),
            "true_x_max": float(mc["xmax"]),
            "true_starting_grammage": float(mc.get("depth_start", np.nan)),
            "true_shower_primary_id": int(mc["primary_id"]),
        }

    def _telescope_event(self, tel_id, tel_event, payload, data):
        """(waveform source or None, number of trigger pixels) of a telescope event sub-object.

        ``payload``: bytes of the top-level object, ``data`` a uint8 view of them
        (sub-object positions are relative to it).
        """
        samples = sums = None
        n_trigger_pixels = -1
        want = self.read_waveforms
        if not tel_event.only_subobjects:
            raise ValueError(f"telescope event of telescope {tel_id} holds no sub-objects")
        for sub in _children(payload, tel_event.start, tel_event.start + tel_event.size):
            kind = sub.type
            if kind == ADC_SAMPLES:
                if want:
                    samples = sub
            elif kind == ADC_SUMS:
                if want and samples is None:
                    sums = sub
            elif kind == PIXEL_LIST:
                if sub.id // 1_000_000 == 0:
                    n_trigger_pixels = _pixel_list_size(sub, payload)
        if not want:
            return None, n_trigger_pixels
        if samples is not None:
            return _samples_source(samples, payload, data), n_trigger_pixels
        if sums is not None:
            return _ArrayWaveform(_sub_object(payload, sums).parse()[..., np.newaxis]), n_trigger_pixels
        raise ValueError(f"telescope event of telescope {tel_id} has no ADC data")


class _ArrayWaveform:
    """Waveforms eventio already decoded."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def fill(self, out):
        out[...] = self.array


class _EncodedSamples:
    """ADC samples still encoded (sim_telarray 2013 v3, no zero suppression): decoded into the batch buffer."""

    __slots__ = ("data", "start", "shape", "dtype")

    def __init__(self, data, start, shape):
        self.data = data
        self.start = start
        self.shape = shape
        self.dtype = np.dtype(np.uint16)

    def fill(self, out):
        used = decode_adc_samples(self.data, self.start, out)
        if used < 0:
            raise ValueError("ADC samples end early")


_ADC_HEADER = struct.Struct("<ihh")


def _samples_source(sub, payload, data):
    """Waveform source of an ADC samples sub-object: our decoder for the plain layout, else eventio's."""
    flags = sub.id
    plain = sub.version == 3 and (flags & 0x1f) == 0 and (flags >> 5) & 0x1f == 0 and not (flags >> 10) & 1
    if not plain:
        samples = _sub_object(payload, sub).parse()
        if samples.ndim == 2:  # eventio squeezes a single sample
            samples = samples[..., np.newaxis]
        return _ArrayWaveform(samples)
    if sub.size < _ADC_HEADER.size:
        raise ValueError("ADC samples block too short")
    n_pixels, n_gains, n_samples = _ADC_HEADER.unpack_from(payload, sub.start)
    end = sub.start + sub.size
    return _EncodedSamples(data[:end], sub.start + _ADC_HEADER.size, (n_gains, n_pixels, n_samples))


def _pixel_list_size(sub, payload):
    """Number of pixels of a pixel list (2027) sub-object (eventio: ``parse()["pixels"]``)."""
    if sub.version > 1:
        raise ValueError(f"pixel list version {sub.version} not supported")
    if sub.version < 1:
        return int(struct.unpack_from("<h", payload, sub.start)[0])
    return int(read_varint(BytesIO(payload[sub.start:sub.start + min(sub.size, 9)])))


def _tracking_pointing(tel_id, sub, payload):
    """(alt, az) in deg of a tracking position (21xx) sub-object: corrected values where present."""
    if sub.version != 0:
        raise ValueError(f"tracking position version {sub.version} not supported")
    ident = sub.id
    if (ident & 0xFF) | ((ident & 0x3F000000) >> 16) != tel_id:
        raise ValueError("Telescope IDs in type and header do not match")
    has_raw, has_cor = bool(ident & 0x100), bool(ident & 0x200)
    values = {}
    pos = sub.start
    if sub.size < 8 * (has_raw + has_cor):
        raise ValueError("tracking position block too short")
    if has_raw:
        values["azimuth_raw"], values["altitude_raw"] = _TRACKING.unpack_from(payload, pos)
        pos += 8
    if has_cor:
        values["azimuth_cor"], values["altitude_cor"] = _TRACKING.unpack_from(payload, pos)
    return _pointing(values)


@njit(cache=True, nogil=True)
def _long_varint(data, pos, end):
    """(word, position after it) of the prefix varint at ``pos`` (any length); position -1 past ``end``."""
    if pos >= end:
        return np.int64(0), np.int64(-1)
    first = np.int64(data[pos])
    length = 1
    while length < 9 and (first << (length - 1)) & 0x80:
        length += 1
    if pos + length > end:
        return np.int64(0), np.int64(-1)
    word = first & (0xFF >> length) if length < 8 else np.int64(0)
    for k in range(1, length):
        word = (word << 8) | np.int64(data[pos + k])
    return word, np.int64(pos + length)


def _one_byte_run_intrinsic(lanes):
    """An intrinsic ``(data, pos, flat, at, value) -> (value, whole)`` decoding ``lanes`` bytes.

    It decodes ``data[pos:pos + lanes]`` as one-byte differences into ``flat[at:]`` and returns
    (the running value after them, True), or (``value``, False) without writing if a byte has its
    top bit set.  Explicit LLVM vectors: the differences (zigzag: byte >> 1, negated by its lowest
    bit) are summed by a prefix sum across the lanes and added to ``value``; each sample is stored
    as its low 16 bits, which is what the scalar loop of `decode_adc_samples` does.
    """

    def one_byte_run(typingctx, data, pos, flat, at, value):
        if not (isinstance(data, types.Array) and data.dtype == types.uint8 and data.ndim == 1):
            return None
        if not (isinstance(flat, types.Array) and flat.dtype == types.uint16 and flat.ndim == 1):
            return None
        if not all(isinstance(t, types.Integer) for t in (pos, at, value)):
            return None

        def codegen(context, builder, signature, args):
            i8, i16, i32, i64 = (llvm_ir.IntType(b) for b in (8, 16, 32, 64))
            v8, v16, v32 = (llvm_ir.VectorType(t, lanes) for t in (i8, i16, i32))
            source = context.make_array(signature.args[0])(context, builder, value=args[0])
            target = context.make_array(signature.args[2])(context, builder, value=args[2])
            pos_value, _, at_value, start_value = (
                context.cast(builder, args[k], signature.args[k], types.int64) if k != 2 else None for k in range(1, 5)
            )
            raw = builder.load(builder.bitcast(builder.gep(source.data, [pos_value]), v8.as_pointer()), align=1)
            high = builder.bitcast(builder.icmp_signed("<", raw, llvm_ir.Constant(v8, None)), llvm_ir.IntType(lanes))
            whole = builder.icmp_unsigned("==", high, llvm_ir.Constant(llvm_ir.IntType(lanes), 0))
            result = cgutils.alloca_once_value(builder, start_value)
            with builder.if_then(whole, likely=True):
                byte = builder.zext(raw, v32)
                one = llvm_ir.Constant(v32, [1] * lanes)
                total = builder.xor(builder.lshr(byte, one), builder.neg(builder.and_(byte, one)))
                zeros = llvm_ir.Constant(v32, None)
                shift = 1
                while shift < lanes:  # prefix sum: add the lanes `shift` below (zeros shifted in)
                    order = [lanes + lane - shift if lane >= shift else lane for lane in range(lanes)]
                    total = builder.add(total, builder.shuffle_vector(zeros, total, llvm_ir.Constant(v32, order)))
                    shift *= 2
                base = builder.insert_element(zeros, builder.trunc(start_value, i32), i32(0))
                base = builder.shuffle_vector(base, zeros, llvm_ir.Constant(v32, [0] * lanes))
                samples = builder.trunc(builder.add(total, base), v16)
                builder.store(samples, builder.bitcast(builder.gep(target.data, [at_value]), v16.as_pointer()), align=1)
                last = builder.extract_element(total, i32(lanes - 1))
                builder.store(builder.add(start_value, builder.sext(last, i64)), result)
            return context.make_tuple(builder, signature.return_type, [builder.load(result), whole])

        return types.Tuple((types.int64, types.boolean))(data, pos, flat, at, value), codegen

    one_byte_run.__name__ = f"_one_byte_run_{lanes}"
    return intrinsic(one_byte_run)


_one_byte_run_16 = _one_byte_run_intrinsic(16)
_one_byte_run_8 = _one_byte_run_intrinsic(8)


@njit(cache=True, nogil=True)
def decode_adc_samples(data, start, out):
    """Decode sim_telarray's differential varint ADC samples into ``out`` (uint16, (gains, pixels, samples)).

    Each pixel/gain trace is a run of signed differences, each a big-endian
    prefix varint (the number of leading 1 bits of the first byte + 1 is the
    length) whose lowest bit is the sign.  Returns the number of bytes used,
    or -1 if ``data`` ends before ``out`` is full.

    After a trace's first (absolute) value nearly all differences fit in one
    byte: those runs are decoded in a loop whose byte addresses do not depend on
    the data (unsigned offsets, no wrap-around checks), which is what makes it fast.
    """
    n_gains, n_pixels, n_samples = out.shape
    flat = out.reshape(-1)
    end = np.uint64(len(data))
    pos = np.uint64(start)
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    eight, sixteen = np.uint64(8), np.uint64(16)
    n = np.uint64(n_samples)
    row = np.uint64(0)
    for _ in range(n_gains * n_pixels):
        sample = np.uint64(0)
        value = np.int64(0)
        while sample < n:
            # a run of one-byte differences (top bit clear)
            stop = min(n - sample, end - pos) if pos < end else np.uint64(0)
            k = np.uint64(0)
            # 16, then 8 at a time with explicit vectors while no byte has its top bit set
            while k + sixteen <= stop:
                value, whole = _one_byte_run_16(data, pos + k, flat, row + sample + k, value)
                if not whole:
                    break
                k += sixteen
            if k + eight <= stop:
                value, whole = _one_byte_run_8(data, pos + k, flat, row + sample + k, value)
                k += eight if whole else np.uint64(0)
            while k < stop:
                byte = np.int64(data[pos + k])
                if byte >= 0x80:
                    break
                value += (byte >> 1) ^ -(byte & 1)
                flat[row + sample + k] = value & 0xFFFF
                k += one
            pos += k
            sample += k
            if sample == n:
                break
            # a longer difference: two or three bytes in practice
            if pos + three <= end and data[pos] < 0xE0:
                first = np.int64(data[pos])
                if first < 0xC0:
                    word = ((first & 0x3F) << 8) | np.int64(data[pos + one])
                    pos += two
                else:
                    word = ((first & 0x1F) << 16) | (np.int64(data[pos + one]) << 8) | np.int64(data[pos + two])
                    pos += three
            elif pos < end:
                word, next_pos = _long_varint(data, np.int64(pos), np.int64(end))
                if next_pos < 0:
                    return -1
                pos = np.uint64(next_pos)
            else:
                return -1
            value += (word >> 1) ^ -(word & 1)
            flat[row + sample] = value & 0xFFFF
            sample += one
        row += n
    return np.int64(pos) - np.int64(start)


def _same_calibration(a, b):
    if b is None:
        return False
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=f != "hv_off")
               for f in ("pedestal_per_sample", "dc_to_pe", "time_shift", "unusable", "hv_off"))


def _pointing(tracking):
    """(alt, az) in deg of a parsed tracking position (corrected values when present)."""
    az = tracking.get("azimuth_cor", np.nan)
    alt = tracking.get("altitude_cor", np.nan)
    if np.isnan(az):
        az = tracking["azimuth_raw"]
    if np.isnan(alt):
        alt = tracking["altitude_raw"]
    return math.degrees(_clip_altitude(float(alt))), math.degrees(float(az))


def _read_photoelectrons(block, wanted):
    """{telescope index: true p.e. image} from a TelescopeData / calibration p.e. block."""
    header, payload = block
    start, end = 0, len(payload)
    if header.type == CALIBRATION_PE:  # the TelescopeData inside
        first = _children(payload, start, end)[:1]
        if not first:
            return {}
        start, end = first[0].start, first[0].start + first[0].size
    images = {}
    data = None
    for sub in _children(payload, start, end):
        if sub.type == PHOTO_ELECTRONS and sub.id % 1000 in wanted:
            if data is None:
                data = np.frombuffer(payload, dtype=np.uint8)
            images[sub.id % 1000] = _photoelectron_counts(sub, payload, data)
    return images


_PE_HEADER = struct.Struct("<ii")


def _photoelectron_counts(sub, payload, data):
    """Photo-electrons per pixel (int32) of a photo-electron list (1208): eventio's
    ``PhotoElectrons.parse()["photoelectrons"]`` without decoding each p.e.'s time."""
    if sub.version not in (1, 2, 3):
        raise ValueError(f"photo-electrons version {sub.version} not supported")
    pos, end = sub.start, sub.start + sub.size
    if end - pos < (14 if sub.version > 1 else 12):
        raise ValueError("photo-electrons block too short")
    _, n_pixels = _PE_HEADER.unpack_from(payload, pos)
    pos += 8
    flags = 0
    if sub.version > 1:
        flags = struct.unpack_from("<h", payload, pos)[0]
        pos += 2
    non_empty = struct.unpack_from("<i", payload, pos)[0]
    pos += 4
    counts = np.zeros(max(n_pixels, 0), dtype=np.int32)
    if _pe_counts(data, pos, end, non_empty, sub.version, flags & 1, counts) < 0:
        raise ValueError("photo-electrons block ends early or names a pixel outside the camera")
    return counts


@njit(cache=True, nogil=True)
def _pe_counts(data, pos, end, non_empty, version, amplitudes, counts):
    """Fill ``counts`` from the pixel entries of a 1208 block; returns the end position or -1 if corrupt.

    Entry: pixel id (signed varint from version 3 on, else int16), number of p.e.
    (int32), their times (float32 each) and, with ``amplitudes``, their amplitudes.
    """
    for _ in range(non_empty):
        if version > 2:
            if pos >= end:
                return -1
            first = np.int64(data[pos])
            length = 1
            while length < 9 and (first << (length - 1)) & 0x80:
                length += 1
            if pos + length > end:
                return -1
            word = first & (0xFF >> length) if length < 8 else np.int64(0)
            for k in range(1, length):
                word = (word << 8) | np.int64(data[pos + k])
            pixel = (word >> 1) ^ -(word & 1)
            pos += length
        else:
            if pos + 2 > end:
                return -1
            pixel = np.int64(np.int16(np.uint16(data[pos]) | (np.uint16(data[pos + 1]) << 8)))
            pos += 2
        if pos + 4 > end:
            return -1
        n_pe = np.int64(np.int32(np.uint32(data[pos]) | (np.uint32(data[pos + 1]) << 8)
                                 | (np.uint32(data[pos + 2]) << 16) | (np.uint32(data[pos + 3]) << 24)))
        pos += 4
        if pixel < 0 or pixel >= len(counts) or n_pe < 0:
            return -1
        counts[pixel] = n_pe
        pos += 4 * n_pe * (2 if amplitudes else 1)
        if pos > end:
            return -1
    return pos
