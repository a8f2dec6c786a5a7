"""In-memory event batches: what DL0 readers (sim_telarray, our HDF5, the simulator) produce.

Arrays are plain numpy, one batch holds a chunk of array events; per-telescope
data are stacked over the events in which that telescope took part.  Units:
energies TeV, angles deg, lengths m, times ns (within a waveform) and MJD (TAI)
for event time stamps.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TelescopeCalibration", "TelescopeEvents", "EventBatch", "RunInfo", "EVENT_TYPE_SUBARRAY"]

#: ctapipe.containers.EventType.SUBARRAY: a normal (physics) array event
EVENT_TYPE_SUBARRAY = 32


@dataclass
class TelescopeCalibration:
    """Per-pixel camera calibration of one telescope (CalibPipe-like coefficients).

    ``pedestal_per_sample``: (n_gains, n_pixels) ADC counts per sample;
    ``dc_to_pe``: (n_gains, n_pixels) p.e. per ADC count (integrated);
    ``time_shift``: (n_gains, n_pixels) ns to subtract from peak times;
    ``unusable``: (n_gains, n_pixels) True where a pixel/gain must not be used.
    Added for the sim_telarray reader: ``hv_off`` (n_pixels,) bool, pixels whose
    high voltage the camera monitoring reports as off (None if unknown).
    """

    tel_id: int
    pedestal_per_sample: np.ndarray
    dc_to_pe: np.ndarray
    time_shift: np.ndarray
    unusable: np.ndarray
    hv_off: np.ndarray | None = None


@dataclass
class TelescopeEvents:
    """Data of one telescope for the events of a batch in which it was read out.

    Exactly the fields the source provides are set, the others are None:
    ``r0`` (n, n_gains, n_pixels, n_samples) uint16 raw ADC samples;
    ``r1`` (n, n_pixels, n_samples) float32 calibrated, gain-selected samples (p.e.);
    ``selected_gain_channel`` (n, n_pixels) int8;
    ``image``/``peak_time`` (n, n_pixels) float32 (p.e., ns) for images-only data;
    ``true_image`` (n, n_pixels) int32 true p.e.; ``true_impact_distance`` (n,) m;
    ``n_trigger_pixels`` (n,) int64; ``time_mjd`` (n,) float64 TAI.
    Added for the sim_telarray reader: ``event_type`` (n,) int64 telescope
    trigger type (ctapipe EventType values); ``true_image_sum`` (n,) int32
    (sim_telarray's p.e. sum, -1 if unknown); ``pointing_alt``/``pointing_az``
    (n,) deg telescope pointing at each event.
    Added for the DL0 simulator/reader: ``pixel_status`` (n, n_pixels) uint8
    ctapipe PixelStatus bits of R1 data (4 high gain, 8 low gain, 16 saturated).
    Added for reduced DL0: ``waveform_kept`` (n, n_pixels) bool, the pixels whose
    ``r1`` waveforms were kept; ``image``/``peak_time`` then hold the charges and
    times extracted from the full waveforms (used for the other pixels);
    ``r1_kept`` (n_kept, n_samples) float32: the R1 waveforms of just those pixels
    (``r1[waveform_kept]``: event by event, pixels in increasing order), instead of ``r1``.
    Rows of the first k events are its first ``waveform_kept[:k].sum()`` rows.
    Compact DL0 read with ``raw_samples``: ``samples`` (n, n_pixels, n_samples) uint16 raw samples
    of the gain ``selected_gain_channel`` names, instead of ``r1`` (calibrated with the run's coefficients).
    """

    tel_id: int
    event_id: np.ndarray
    r0: np.ndarray | None = None
    r1: np.ndarray | None = None
    selected_gain_channel: np.ndarray | None = None
    image: np.ndarray | None = None
    peak_time: np.ndarray | None = None
    true_image: np.ndarray | None = None
    true_impact_distance: np.ndarray | None = None
    n_trigger_pixels: np.ndarray | None = None
    time_mjd: np.ndarray | None = None
    event_type: np.ndarray | None = None
    true_image_sum: np.ndarray | None = None
    pointing_alt: np.ndarray | None = None
    pointing_az: np.ndarray | None = None
    pixel_status: np.ndarray | None = None
    waveform_kept: np.ndarray | None = None
    r1_kept: np.ndarray | None = None
    samples: np.ndarray | None = None

    def __len__(self):
        return len(self.event_id)


@dataclass
class EventBatch:
    """A chunk of array events.

    ``tels_with_trigger`` is (n, n_tels) bool in the order of ``subarray.tel_ids``;
    ``shower`` maps ctapipe column names (``true_energy`` ...) to (n,) arrays or is None;
    ``pointing_alt``/``pointing_az`` are (n,) deg (array pointing at each event).
    Rows of ``shower`` for events without a simulated shower (calibration
    events) hold NaN (``true_shower_primary_id``: -1).  ``calibration``
    (optional): tel_id -> :class:`TelescopeCalibration` valid for every event
    of this batch (None: use ``RunInfo.calibration``).
    """

    obs_id: int
    event_id: np.ndarray
    event_type: np.ndarray
    time_mjd: np.ndarray
    tels_with_trigger: np.ndarray
    pointing_alt: np.ndarray
    pointing_az: np.ndarray
    tel: dict = field(default_factory=dict)
    shower: dict | None = None
    calibration: dict | None = None

    def __len__(self):
        return len(self.event_id)


@dataclass
class RunInfo:
    """What a DL0 source knows about a run besides its events.

    ``simulation_config``: dict with the columns of ``/configuration/simulation/run``
    (or None for observed data); ``shower_distribution``: dict with
    ``bins_energy`` (TeV), ``bins_core_dist`` (m), ``histogram``, ``n_entries``
    (or None); ``calibration``: tel_id -> :class:`TelescopeCalibration`.
    Added for the sim_telarray reader: ``start_time_mjd`` run start (MJD, TAI);
    ``atmosphere_profile``: dict with ``height`` (km), ``density`` (g/cm³),
    ``column_density`` (g/cm²) arrays and ``atmosphere_id``,
    ``atmosphere_name``, ``observation_level``/``atmosphere_height`` (cm), or None.
    Added for simulated observation runs: ``pointing_track``: tel_id -> dict with
    ``time_mjd`` (TAI), ``alt``/``az`` (deg) samples of a tracking pointing, or None
    (fixed pointing); events carry the pointing interpolated at their times;
    ``observation_block``: the observation-block row (column -> value) of an
    observed run whose target is not fixed in alt/az (ICRS RA/Dec, duration), to be
    copied as is by writers, or None.
    """

    obs_id: int
    subarray: object
    pointing_alt: float
    pointing_az: float
    simulation_config: dict | None = None
    shower_distribution: dict | None = None
    calibration: dict = field(default_factory=dict)
    is_simulation: bool = True
    start_time_mjd: float | None = None
    atmosphere_profile: dict | None = None
    pointing_track: dict | None = None
    observation_block: dict | None = None
