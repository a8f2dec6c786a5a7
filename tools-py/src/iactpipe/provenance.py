"""Provenance: who made a file, from what, how; and reading that chain back.

Every output of a step records one *activity* (step name, package version,
resolved configuration, command line, host, user, start/stop time, inputs with
their product UUIDs and SHA-256 checksums) and its own product UUID.  HDF5
outputs carry it as ctapipe-style ``CTA ...`` root attributes plus the table
``/provenance/activities``: one JSON record per activity of the whole lineage
(this file's activity first, then its inputs' lineages).  FITS outputs carry the
same as header keywords and a ``PROVENANCE`` HDU.
"""

import datetime
import getpass
import hashlib
import json
import mmap
import os
import platform
import queue
import sys
import threading
import uuid
import warnings
from pathlib import Path

import tables

from . import __version__
from .errors import DataError

__all__ = [
    "Activity",
    "file_checksum",
    "read_product_uuid",
    "read_lineage",
    "write_hdf5_provenance",
    "write_fits_provenance",
    "PROVENANCE_NODE",
    "is_hdf5",
    "is_fits",
]

PROVENANCE_NODE = "/provenance/activities"
DATA_MODEL_VERSION = "v7.1.0"
_SIMTEL_NAMESPACE = uuid.UUID("6c3c1e6e-5e0a-4b0e-9a53-1f3d2b6f2a10")


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _cta_time(iso):
    """ISO time with offset -> 'YYYY-MM-DD hh:mm:ss.sss' UTC, the form ctapipe writes and parses."""
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def file_checksum(path, chunk_size=1 << 22):
    """``sha256:<hex>`` of a file's bytes.

    Through a memory map, hashed ``4 * chunk_size`` bytes at a time and those pages released
    (mapped pages count in the resident set size); read in chunks where it cannot be mapped.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                step = 4 * chunk_size
                with memoryview(mapped) as view:
                    for start in range(0, len(mapped), step):
                        digest.update(view[start:start + step])
                        mapped.madvise(mmap.MADV_DONTNEED, start, min(step, len(mapped) - start))
        except (OSError, ValueError):  # empty files, pipes
            while block := handle.read(chunk_size):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def is_hdf5(path):
    """True if the file starts with the HDF5 signature."""
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89HDF\r\n\x1a\n"


def is_fits(path, name=None):
    """True for a FITS file (plain, or gzipped with a .fits.gz name; ``name`` when ``path`` is a temporary name)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return head == b"SIMPLE  =" or head[:2] == b"\x1f\x8b" and str(name or path).endswith((".fits.gz", ".fit.gz"))


def read_product_uuid(path):
    """The product UUID recorded in an HDF5 or FITS file, or None."""
    path = Path(path)
    try:
        if is_hdf5(path):
            with tables.open_file(path, "r") as h5:
                attrs = h5.root._v_attrs
                if "CTA PRODUCT ID" in attrs._v_attrnames:
                    return str(attrs["CTA PRODUCT ID"])
        elif is_fits(path):
            from astropy.io import fits

            with fits.open(path) as hdul:
                return hdul[0].header.get("PRODID")
    except (OSError, tables.HDF5ExtError):
        return None
    return None


def read_lineage(path):
    """All activity records of a file's lineage, this file's own first.

    Returns a list of dicts (empty for files without iactpipe provenance).
    """
    path = Path(path)
    if is_hdf5(path):
        try:
            with tables.open_file(path, "r") as h5:
                if PROVENANCE_NODE not in h5:
                    return []
                return [json.loads(bytes(rec).decode()) for rec in h5.get_node(PROVENANCE_NODE)]
        except (OSError, tables.HDF5ExtError, ValueError):
            raise DataError(f"{path}: corrupt or truncated HDF5 file (cannot read its provenance)") from None
    if is_fits(path):
        from astropy.io import fits

        with fits.open(path) as hdul:
            if "PROVENANCE" not in hdul:
                text = hdul[0].header.get("PROVJSON")
                return json.loads(text) if text else []
            return [json.loads(rec) for rec in hdul["PROVENANCE"].data["RECORD"]]
    return []


class _Checksum:
    """`file_checksum` of one file, computed by one daemon thread per process, in the order asked for
    (hashlib releases the GIL while hashing, so it runs beside the step's work)."""

    _jobs, _worker_pid = None, None

    def __init__(self, path):
        self.path, self.value, self.error = path, None, None
        self._done = threading.Event()
        if _Checksum._worker_pid != os.getpid():  # first use in this process (or in a forked child)
            _Checksum._jobs, _Checksum._worker_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_Checksum._work, args=(_Checksum._jobs,), name="checksums", daemon=True).start()
        _Checksum._jobs.put(self)

    @staticmethod
    def _work(jobs):
        while True:
            job = jobs.get()
            try:
                job.value = file_checksum(job.path)
            except BaseException as err:  # raised again by the thread that asks for the value
                job.error = err
            job._done.set()

    def result(self):
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class Activity:
    """One run of a step, collecting what its outputs must record.

    Input checksums are computed beside the step's work; reading ``record`` waits for them.
    """

    def __init__(self, step, config, argv=None):
        self._record = {
            "activity_uuid": str(uuid.uuid4()),
            "step": step,
            "software": "iactpipe",
            "version": __version__,
            "config": config,
            "command_line": list(sys.argv if argv is None else argv),
            "host": platform.node(),
            "user": _user(),
            "python": platform.python_version(),
            "start": _now(),
            "stop": None,
            "inputs": [],
            "outputs": [],
        }
        self._input_lineages = []
        self._checksums = []  # (input entry, _Checksum) still to settle

    @property
    def record(self):
        """The activity record (a dict), with the input checksums filled in."""
        for entry, checksum in self._checksums:
            entry["checksum"] = checksum.result()
            if entry["product_uuid"] is None:
                entry["product_uuid"] = str(uuid.uuid5(_SIMTEL_NAMESPACE, entry["checksum"]))
        self._checksums = []
        return self._record

    @property
    def uuid(self):
        return self._record["activity_uuid"]

    def add_input(self, path, role="input"):
        """Register an input file: its product UUID (or a UUID5 of its checksum) and checksum."""
        path = Path(path)
        entry = {"role": role, "path": str(path.resolve()), "product_uuid": read_product_uuid(path), "checksum": None}
        self._checksums.append((entry, _Checksum(path)))
        self._record["inputs"].append(entry)
        self._input_lineages.append(read_lineage(path))

    def add_output(self, path, role="output"):
        """Register an output; returns its new product UUID."""
        product = str(uuid.uuid4())
        self._record["outputs"].append({"role": role, "path": str(Path(path).resolve()), "product_uuid": product})
        return product

    def finish(self):
        self._record["stop"] = _now()

    def lineage(self, product_uuid):
        """This activity's record for one product, followed by the inputs' lineages (deduplicated)."""
        own = dict(self.record, product_uuid=product_uuid)
        seen = {own["activity_uuid"]}
        out = [own]
        for lineage in self._input_lineages:
            for rec in lineage:
                key = (rec.get("activity_uuid"), rec.get("product_uuid"))
                if key not in seen:
                    seen.add(key)
                    out.append(rec)
        return out


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def write_hdf5_provenance(path, activity, product_uuid, data_levels=()):
    """Add root attributes and ``/provenance/activities`` to an (open-able) HDF5 file."""
    lineage = activity.lineage(product_uuid)
    rec = activity.record
    with tables.open_file(path, "a") as h5, warnings.catch_warnings():
        # 'CTA PRODUCT ID' & co. are not Python identifiers: fine for HDF5, PyTables only warns
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        attrs = h5.root._v_attrs
        attrs["CTA PRODUCT ID"] = product_uuid
        attrs["CTA PRODUCT CREATION TIME"] = _cta_time(rec["stop"] or _now())
        attrs["CTA PRODUCT DATA MODEL NAME"] = "ASWG"
        attrs["CTA PRODUCT DATA MODEL VERSION"] = DATA_MODEL_VERSION
        attrs["CTA PRODUCT FORMAT"] = "hdf5"
        attrs["CTA PRODUCT DESCRIPTION"] = f"iactpipe {rec['step']} output"
        if data_levels:
            attrs["CTA PRODUCT DATA LEVELS"] = ",".join(data_levels)
        attrs["CTA ACTIVITY ID"] = rec["activity_uuid"]
        attrs["CTA ACTIVITY NAME"] = f"iactpipe-{rec['step']}"
        attrs["CTA ACTIVITY TYPE"] = "software"
        attrs["CTA ACTIVITY START TIME"] = _cta_time(rec["start"])
        attrs["CTA ACTIVITY STOP TIME"] = _cta_time(rec["stop"] or _now())
        attrs["CTA ACTIVITY SOFTWARE NAME"] = "iactpipe"
        attrs["CTA ACTIVITY SOFTWARE VERSION"] = rec["version"]
        attrs["IACTPIPE CONFIG"] = json.dumps(rec["config"], sort_keys=True)
        attrs["IACTPIPE COMMAND LINE"] = json.dumps(rec["command_line"])
        attrs["IACTPIPE INPUTS"] = json.dumps(rec["inputs"])
        if PROVENANCE_NODE in h5:
            h5.remove_node(PROVENANCE_NODE)
        group = h5.root.provenance if "/provenance" in h5 else h5.create_group("/", "provenance")
        records = h5.create_vlarray(
            group, "activities", tables.VLStringAtom(),
            title="iactpipe provenance: one JSON activity record per row, own activity first",
            filters=tables.Filters(complevel=5, complib="blosc:zstd"),
        )
        for entry in lineage:
            records.append(json.dumps(entry, sort_keys=True).encode())


def write_fits_provenance(path, activity, product_uuid):
    """Add provenance keywords to the primary header and a ``PROVENANCE`` table HDU of a FITS file."""
    from astropy.io import fits

    lineage = activity.lineage(product_uuid)
    rec = activity.record
    with fits.open(path, mode="update") as hdul:
        header = hdul[0].header
        header["PRODID"] = (product_uuid, "product UUID")
        header["ACTID"] = (rec["activity_uuid"], "activity UUID")
        header["CREATOR"] = (f"iactpipe-{rec['step']} {rec['version']}", "software that made this file")
        header["DATE"] = (_cta_time(rec["stop"] or _now()).replace(" ", "T"), "creation time (UTC)")
        records = [json.dumps(entry, sort_keys=True) for entry in lineage]
        if len(hdul) > 1 and str(hdul[1].header.get("HDUCLAS1", "")).strip().upper() == "INDEX":
            # gammapy reads index files' first table without hdu=: keep them single-table and put the
            # lineage into a long-string (CONTINUE) keyword of the primary header instead
            header["PROVJSON"] = (json.dumps(lineage, sort_keys=True), "iactpipe provenance lineage (JSON)")
            return
        width = max(len(r) for r in records)
        table = fits.BinTableHDU.from_columns(
            [fits.Column(name="RECORD", format=f"{width}A", array=records)], name="PROVENANCE"
        )
        table.header["COMMENT"] = "iactpipe provenance: one JSON activity record per row, own activity first"
        if "PROVENANCE" in hdul:
            del hdul["PROVENANCE"]
        hdul.append(table)
