"""Instrument description from the header objects of a sim_telarray file.

Takes the dictionaries that ``eventio`` parses from the run header (2000), the
telescope description objects (2002 camera settings, 2003 camera organisation,
2004 pixel settings) and the metadata (75) and builds a
:class:`~iactpipe.instrument.subarray.SubarrayDescription` that equals what
ctapipe's ``SimTelEventSource`` derives from the same file:

- telescope/camera names from the ``OPTICS_CONFIG_NAME``/``CAMERA_CONFIG_NAME``
  metadata, else from a lookup by (number of pixels, equivalent focal length,
  number of mirror tiles), else ``UNKNOWN-<area>M2``/``UNKNOWN-<n>PX``;
- pixel positions de-rotated by the camera rotation (so ``cam_rotation`` is 0
  and the pixel rotation absorbs it);
- the effective focal length is NaN where the file does not store it (prod3,
  HESS-era files); :attr:`OpticsDescription.focal_length` then falls back to the
  equivalent one.
"""

import logging
import math

import numpy as np

from .camera import CameraGeometry, CameraReadout
from .subarray import OpticsDescription, SubarrayDescription, TelescopeDescription

__all__ = [
    "PIXEL_SHAPES",
    "KNOWN_TELESCOPES",
    "size_type_from_mirror_area",
    "lookup_telescope",
    "telescope_from_meta",
    "camera_from_simtel",
    "optics_from_simtel",
    "reference_itrs",
    "subarray_from_simtel",
]

log = logging.getLogger(__name__)

#: sim_telarray pixel shape code -> (pix_type, rotation of the pixel shape in deg)
PIXEL_SHAPES = {
    0: ("circle", 0.0),
    1: ("hexagon", 0.0),  # flat side up
    2: ("square", 0.0),
    3: ("hexagon", 30.0),  # pointy side up
}

# Reflector shape names as written by ctapipe (ReflectorShape values)
PARABOLIC = "PARABOLIC"
DAVIES_COTTON = "DAVIES_COTTON"
HYBRID = "HYBRID"
SCHWARZSCHILD_COUDER = "SCHWARZSCHILD_COUDER"
UNKNOWN = "UNKNOWN"

#: Telescopes recognised when a file carries no name metadata, keyed by
#: (n_pixels, equivalent focal length in m rounded to 1 cm, n_mirror_tiles or None):
#: value (size_type, optics name, camera name, n_mirrors, reflector shape).
#: The keys and names follow ctapipe.instrument.guess so that names agree.
KNOWN_TELESCOPES = {
    (2048, 2.28, None): ("SST", "GCT", "CHEC", 2, SCHWARZSCHILD_COUDER),
    (2368, 2.15, None): ("SST", "ASTRI", "ASTRICam", 2, SCHWARZSCHILD_COUDER),
    (2048, 2.15, None): ("SST", "ASTRI", "CHEC", 2, SCHWARZSCHILD_COUDER),
    (1296, 5.60, None): ("SST", "1M", "DigiCam", 1, DAVIES_COTTON),
    (1764, 16.0, None): ("MST", "MST", "FlashCam", 1, HYBRID),
    (1855, 16.0, None): ("MST", "MST", "NectarCam", 1, HYBRID),
    (1855, 28.0, None): ("LST", "LST", "LSTCam", 1, PARABOLIC),
    (11328, 5.59, None): ("MST", "SCT", "SCTCam", 1, SCHWARZSCHILD_COUDER),
    (1039, 16.97, 964): ("LST", "MAGIC-1", "MAGICCam", 1, PARABOLIC),
    (1039, 16.97, 247): ("LST", "MAGIC-2", "MAGICCam", 1, PARABOLIC),
    (1039, 17.0, 964): ("LST", "MAGIC-1", "MAGICCam", 1, PARABOLIC),
    (1039, 17.0, 247): ("LST", "MAGIC-2", "MAGICCam", 1, PARABOLIC),
    (960, 15.0, None): ("MST", "HESS-I", "HESS-I", 1, DAVIES_COTTON),
    (2048, 36.0, None): ("LST", "HESS-II", "HESS-II", 1, PARABOLIC),
    (1440, 4.89, None): ("SST", "FACT", "FACT", 1, HYBRID),
}


def size_type_from_mirror_area(mirror_area):
    """``SST``/``MST``/``LST`` from the mirror area (m²): diameter < 8 m, < 16 m, else."""
    diameter = 2.0 * math.sqrt(mirror_area / math.pi)
    if diameter < 8:
        return "SST"
    if diameter < 16:
        return "MST"
    return "LST"


def lookup_telescope(n_pixels, focal_length, n_mirror_tiles=None, mirror_area=None):
    """(size_type, name, camera_name, n_mirrors, reflector_shape) of a telescope.

    Looked up in :data:`KNOWN_TELESCOPES` (first with, then without the number of
    mirror tiles); unknown telescopes get names built from mirror area and pixel
    count, like ctapipe's ``unknown_telescope``.
    """
    f = round(float(focal_length), 2)
    for key in ((n_pixels, f, n_mirror_tiles), (n_pixels, f, None)):
        if key in KNOWN_TELESCOPES:
            return KNOWN_TELESCOPES[key]
    area = float(mirror_area) if mirror_area is not None else float("nan")
    return (size_type_from_mirror_area(area), f"UNKNOWN-{area:.0f}M2", f"UNKNOWN-{n_pixels}PX", -1, UNKNOWN)


def _meta_str(meta, key):
    value = meta.get(key)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def telescope_from_meta(meta, mirror_area):
    """Telescope identity from sim_telarray telescope metadata, or None if incomplete.

    Needs ``OPTICS_CONFIG_NAME``, ``CAMERA_CONFIG_NAME`` and ``MIRROR_CLASS``
    (0: segmented single mirror, 1: solid parabolic, 2: dual mirror).
    """
    optics_name = _meta_str(meta, b"OPTICS_CONFIG_NAME")
    camera_name = _meta_str(meta, b"CAMERA_CONFIG_NAME")
    mirror_class = meta.get(b"MIRROR_CLASS")
    if optics_name is None or camera_name is None or mirror_class is None:
        return None
    mirror_class = int(mirror_class)
    if mirror_class not in (0, 1, 2):
        raise ValueError(f"unknown MIRROR_CLASS {mirror_class}")
    shape = UNKNOWN
    if mirror_class == 2:
        shape = SCHWARZSCHILD_COUDER
    elif mirror_class == 0:
        if int(meta.get(b"PARABOLIC_DISH", 0)) == 1:
            shape = PARABOLIC
        elif float(meta.get(b"DISH_SHAPE_Length", 0)) != float(meta.get(b"FOCAL_Length", 0)):
            shape = HYBRID
        else:
            shape = DAVIES_COTTON
    n_mirrors = 2 if mirror_class == 2 else 1
    return (size_type_from_mirror_area(mirror_area), optics_name, camera_name, n_mirrors, shape)


def camera_from_simtel(description, camera_name):
    """(CameraGeometry, CameraReadout) from one telescope's eventio description dicts.

    ``description`` holds ``camera_settings``, ``camera_organization`` and
    ``pixel_settings``.  Pixel positions are rotated by the camera rotation
    ``cam_rot`` (rad) so that the stored camera rotation is zero.
    """
    cam = description["camera_settings"]
    org = description["camera_organization"]
    pix = description["pixel_settings"]

    shape_code = int(np.atleast_1d(cam["pixel_shape"])[0])
    if shape_code in PIXEL_SHAPES:
        pix_type, shape_rotation = PIXEL_SHAPES[shape_code]
    else:
        log.warning("camera %s: unknown pixel shape code %d, assuming hexagons", camera_name, shape_code)
        pix_type, shape_rotation = "hexagon", 0.0

    # rotating by +cam_rot: same matrix product as ctapipe's de-rotation, so
    # that positions agree to the last bit
    cam_rot = float(cam["cam_rot"])
    psi = -cam_rot
    rotation = np.array([[math.cos(psi), -math.sin(psi)], [math.sin(psi), math.cos(psi)]])
    x, y = np.dot(rotation.T, [np.asarray(cam["pixel_x"]), np.asarray(cam["pixel_y"])])
    n_pixels = int(cam["n_pixels"])

    geometry = CameraGeometry(
        name=camera_name,
        pix_id=np.arange(n_pixels),
        pix_x=np.asarray(x, dtype=np.float64),
        pix_y=np.asarray(y, dtype=np.float64),
        pix_area=np.asarray(cam["pixel_area"], dtype=np.float64),
        pix_type=pix_type,
        pix_rotation_deg=shape_rotation - math.degrees(psi),
        cam_rotation_deg=0.0,
    )
    readout = CameraReadout(
        name=camera_name,
        sampling_rate_ghz=1.0 / float(np.float64(pix["time_slice"])),
        reference_pulse_shape=np.atleast_2d(np.asarray(pix["ref_shape"], dtype=np.float64)),
        reference_pulse_sample_width_ns=float(np.float64(pix["ref_step"])),
        n_channels=int(org["n_gains"]),
        n_pixels=int(org["n_pixels"]),
        n_samples=int(pix["sum_bins"]),
    )
    return geometry, readout


def optics_from_simtel(camera_settings, identity):
    """OpticsDescription from camera settings and (size, name, camera, n_mirrors, shape)."""
    size_type, name, _, n_mirrors, shape = identity
    return OpticsDescription(
        name=name,
        size_type=size_type,
        reflector_shape=shape,
        mirror_area=float(camera_settings["mirror_area"]),
        n_mirrors=int(n_mirrors),
        n_mirror_tiles=int(camera_settings["n_mirrors"]),
        equivalent_focal_length=float(camera_settings["focal_length"]),
        effective_focal_length=float(camera_settings.get("effective_focal_length", np.nan)),
    )


def reference_itrs(global_meta, observation_level=None):
    """Geocentric (ITRS) x, y, z in m of the array reference point.

    From the ``*LATITUDE``, ``*LONGITUDE`` and ``ALTITUDE`` metadata; without
    them, ctapipe's placeholder (lon = lat = 0 at the observation level).
    """
    import erfa  # astropy's EarthLocation does the same (WGS84 gd2gc), but importing astropy.coordinates costs 0.4 s

    lat = global_meta.get(b"*LATITUDE")
    lon = global_meta.get(b"*LONGITUDE")
    height = global_meta.get(b"ALTITUDE")
    if lat is None or lon is None or height is None:
        if observation_level is None:
            return (np.nan, np.nan, np.nan)
        lat, lon, height = 0.0, 0.0, observation_level
    # longitude wrapped to [0, 360) deg like astropy's Longitude: the result is bit-identical to EarthLocation's
    xyz = erfa.gd2gc(1, math.radians(float(lon) % 360.0), math.radians(float(lat)), float(height))
    return tuple(float(c) for c in xyz)


def subarray_from_simtel(header, descriptions, telescope_meta=None, global_meta=None, observation_level=None):
    """SubarrayDescription of all telescopes of a sim_telarray run.

    ``header``: the parsed run header (``tel_id``, ``tel_pos``);
    ``descriptions``: tel_id -> dict of parsed description objects;
    ``telescope_meta``/``global_meta``: parsed metadata (may be empty);
    ``observation_level``: m, for the placeholder reference point.
    """
    telescope_meta = telescope_meta or {}
    global_meta = global_meta or {}
    header_ids = [int(t) for t in header["tel_id"]]
    positions = np.asarray(header["tel_pos"], dtype=np.float64)

    tels = {}
    tel_positions = {}
    cameras = []  # reuse identical geometry/readout objects
    for tel_id in sorted(descriptions):
        description = descriptions[tel_id]
        cam = description["camera_settings"]
        mirror_area = float(cam["mirror_area"])
        identity = telescope_from_meta(telescope_meta.get(tel_id, {}), mirror_area)
        if identity is None:
            identity = lookup_telescope(
                int(cam["n_pixels"]), float(cam["focal_length"]), int(cam["n_mirrors"]), mirror_area
            )
        optics = optics_from_simtel(cam, identity)
        geometry, readout = camera_from_simtel(description, identity[2])
        for known_geometry, known_readout in cameras:
            if known_geometry == geometry and known_readout == readout:
                geometry, readout = known_geometry, known_readout
                break
        else:
            cameras.append((geometry, readout))
        tels[tel_id] = TelescopeDescription(name=identity[1], optics=optics, geometry=geometry, readout=readout)
        tel_positions[tel_id] = positions[header_ids.index(tel_id)].copy()

    name = _meta_str(global_meta, b"ARRAY_CONFIG_NAME")  # may be present but empty, like ctapipe keep it
    if name is None:
        name = "MonteCarloArray"
    return SubarrayDescription(
        name=name,
        tel_positions=tel_positions,
        tels=tels,
        reference_itrs=reference_itrs(global_meta, observation_level),
    )
