"""Camera geometry and readout as plain arrays (SI units at the edges: m, m², ns, GHz)."""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CameraGeometry", "CameraReadout", "neighbors_csr"]


@dataclass(eq=False)
class CameraGeometry:
    """Pixel layout of a camera in the camera frame (metres).

    ``pix_type`` is ``hexagon``, ``square`` or ``circle``; rotations are in degrees.
    """

    name: str
    pix_id: np.ndarray
    pix_x: np.ndarray
    pix_y: np.ndarray
    pix_area: np.ndarray
    pix_type: str = "hexagon"
    pix_rotation_deg: float = 0.0
    cam_rotation_deg: float = 0.0
    _neighbors: tuple | None = field(default=None, repr=False)

    @property
    def n_pixels(self):
        return len(self.pix_id)

    @property
    def neighbors(self):
        """Neighbour lists as CSR arrays ``(indptr, indices)`` (like ctapipe's neighbor matrix)."""
        if self._neighbors is None:
            try:
                self._neighbors = neighbors_csr(self.pix_x, self.pix_y, self.pix_type)
            except ValueError as err:
                raise ValueError(f"camera {self.name}: {err}") from None
        return self._neighbors

    @property
    def neighbor_matrix(self):
        """Dense boolean ``(n_pixels, n_pixels)`` neighbour matrix."""
        indptr, indices = self.neighbors
        matrix = np.zeros((self.n_pixels, self.n_pixels), dtype=bool)
        rows = np.repeat(np.arange(self.n_pixels), np.diff(indptr))
        matrix[rows, indices] = True
        return matrix

    def __eq__(self, other):
        return (
            isinstance(other, CameraGeometry)
            and self.name == other.name
            and self.pix_type == other.pix_type
            and np.array_equal(self.pix_x, other.pix_x)
            and np.array_equal(self.pix_y, other.pix_y)
            and np.array_equal(self.pix_area, other.pix_area)
        )

    __hash__ = None


def neighbors_csr(pix_x, pix_y, pix_type, diagonal=False):
    """Pixel neighbours with ctapipe's rule (k nearest, distance < r × the nearest distance).

    Hexagonal and circular pixels: up to 6 neighbours within 1.4× the nearest
    distance (L2).  Square pixels: up to 4 within 1.5× (L1), or 8 within 1.95×
    (L2) with ``diagonal``.  Returns ``(indptr, indices)`` int64 arrays.
    """
    n = len(pix_x)
    if n <= 1:
        return np.array([0] * (n + 1), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if pix_type in ("hexagon", "circle"):
        k, radius, norm = 6, 1.4, 2
    elif diagonal:
        k, radius, norm = 8, 1.95, 2
    else:
        k, radius, norm = 4, 1.5, 1
    if not (np.isfinite(pix_x).all() and np.isfinite(pix_y).all()):
        raise ValueError("pixel positions must be finite")
    from ._neighbors import k_nearest  # numba, imported here: loaded only by steps that need neighbours

    k = min(k, n - 1)
    distances, candidates = k_nearest(np.asarray(pix_x, np.float64), np.asarray(pix_y, np.float64), k, norm == 1)
    inside = distances < radius * distances.min(axis=1)[:, np.newaxis]
    counts = inside.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.empty(indptr[-1], dtype=np.int64)
    for pix in range(n):
        indices[indptr[pix]:indptr[pix + 1]] = np.sort(candidates[pix][inside[pix]])
    return indptr, indices


@dataclass(eq=False)
class CameraReadout:
    """Digitisation of a camera: sampling and reference pulse shape per gain channel."""

    name: str
    sampling_rate_ghz: float
    reference_pulse_shape: np.ndarray  # (n_channels, n_ref_samples)
    reference_pulse_sample_width_ns: float
    n_channels: int
    n_pixels: int
    n_samples: int

    def __eq__(self, other):
        return (
            isinstance(other, CameraReadout)
            and self.name == other.name
            and self.sampling_rate_ghz == other.sampling_rate_ghz
            and self.reference_pulse_sample_width_ns == other.reference_pulse_sample_width_ns
            and (self.n_channels, self.n_pixels, self.n_samples)
            == (other.n_channels, other.n_pixels, other.n_samples)
            and np.array_equal(self.reference_pulse_shape, other.reference_pulse_shape)
        )

    __hash__ = None

    @property
    def reference_pulse_sample_time(self):
        """Time of each reference pulse sample in ns."""
        n = self.reference_pulse_shape.shape[-1]
        return np.arange(n) * self.reference_pulse_sample_width_ns
