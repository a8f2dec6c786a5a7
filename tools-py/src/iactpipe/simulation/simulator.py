"""Orchestration: primaries -> showers -> light -> cameras -> triggers, chunk by chunk.

:class:`ShowerSimulator` turns a :class:`SimulationConfig` and a subarray into
:class:`~iactpipe.io.events.EventBatch` objects (triggered array events with
truth), one per chunk of thrown showers, plus the histogram of *all* thrown
showers (energy × core distance) for IRF normalisation.  Memory depends on the
chunk size only.

Per chunk (deterministic for a given seed and configuration):

1. primaries (:mod:`.primaries`) and their EM components and muons (:mod:`.shower`);
2. cheap rejection: the analytic expected p.e. of every telescope
   (:func:`.cherenkov.expected_pe`); showers with fewer than ``min_telescopes``
   telescopes above a fraction of the minimum trigger signal get no images;
3. emission points, Poisson p.e. in each camera, muon rings (:mod:`.cherenkov`);
4. telescope and array triggers (:mod:`.trigger`);
5. for triggered telescopes of triggered events: waveforms + digitisation +
   gain selection, or images with noise (:mod:`.camera`).

The pointing is fixed in :meth:`ShowerSimulator.iter_batches`; the observation
mode (:mod:`.observation`) feeds its own primaries (source + backgrounds, mixed
particle types) with per-shower :class:`ShowerConditions` (pointing tracking a
sky position, night-sky background and transmission factors, telescopes off)
through :meth:`ShowerSimulator.simulate_showers`, which runs steps 2-5.
"""

from dataclasses import dataclass, fields

import numpy as np

from ..errors import ConfigError, DataError
from ..instrument import registry
from ..io.events import EVENT_TYPE_SUBARRAY, EventBatch, RunInfo, TelescopeEvents
from .atmosphere import Atmosphere, density, vertical_depth
from .camera import (
    ADC_MAX,
    GAIN_SELECTION_THRESHOLD,
    INTEGRATION_SAMPLES,
    CameraElectronics,
    digitize,
    make_images,
    make_waveforms,
    select_gain,
)
from .cherenkov import angular_table, expected_pe, render_emitters, render_muons, sample_emitters
from .optics import PixelMap, camera_radius, pointing_basis
from .primaries import CORE_PLANES, PARTICLE_IDS, PrimaryGenerator, distance_to_axis
from .shower import PARTICLE_KIND, build_showers, shower_xmax
from .trigger import array_trigger, telescope_trigger

__all__ = ["SimulationConfig", "ShowerSimulator", "ShowerConditions", "load_subarray", "atmosphere_table", "ENERGY_BINS",
           "CORE_BINS", "START_TIME_MJD", "DEFAULT_ALTITUDE"]

#: shower-distribution binning as sim_telarray/ctapipe: 20 log bins per decade 1 GeV..10 PeV, 20 m core bins
ENERGY_BINS = np.logspace(-3, 4, 141)
CORE_BINS = np.linspace(0.0, 4000.0, 201)
#: start of the simulated run: 2025-01-01T00:00:00 (MJD, TAI)
START_TIME_MJD = 60676.0
MEAN_EVENT_INTERVAL_NS = 1.0e6
DEFAULT_ALTITUDE = 2200.0
WINDOW_PEAK_FRACTION = 0.4  # pulses of the median p.e. peak at this fraction of the readout window
PE_TIME_JITTER_NS = 0.4  # shower-front thickness + photodetector transit-time spread
N_GRID = 48  # depth cells per EM component when sampling emission points
N_GRID_ESTIMATE = 12  # depth cells per EM component in the analytic p.e. estimate
MAX_COMPONENTS = 20000  # per shower
MAX_MUONS = 2000  # per shower
#: CORSIKA IACT option bits (EVTH 77): VOLUMEDET (0x20) and "core offsets counted in the plane
#: perpendicular to the shower axis" (0x80), what the IACT interface sets for such runs
IACT_SHOWER_PLANE = 0x20 | 0x80


@dataclass(frozen=True)
class SimulationConfig:
    """Physics and run settings; units: TeV, m, deg, ns, GHz (p.e./ns)."""

    particle: str = "gamma"
    n_showers: int = 1000
    seed: int = 0
    obs_id: int = 1
    energy_min: float = 0.01
    energy_max: float = 300.0
    spectral_index: float = -2.0
    scatter_radius: float = 1000.0
    core_plane: str = "shower"
    diffuse: bool | None = None
    viewcone: float = 10.0
    source_offset: float = 0.0
    zenith: float = 20.0
    azimuth: float = 0.0
    observation_altitude: float | None = None
    images_only: bool = False
    write_r0: bool = False
    compact_dl0: bool = False
    min_telescopes: int = 2
    trigger_threshold: float = 6.0
    trigger_neighbours: int = 2
    trigger_window: float = 4.0
    nsb_rate: float = 0.25
    photon_detection_efficiency: float = 0.1
    psf: float = 0.035
    electronic_noise: float = 0.15
    gain_spread: float = 0.05
    preselection: float = 0.5
    chunk_size: int = 5000

    @classmethod
    def from_config(cls, config):
        """From a resolved step config (extra keys such as ``subarray`` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    @property
    def is_diffuse(self):
        return (self.particle != "gamma") if self.diffuse is None else bool(self.diffuse)

    def check(self):
        """Raise ConfigError for inconsistent settings (one line naming the keys)."""
        if self.particle not in PARTICLE_IDS:
            raise ConfigError(f"key 'particle': unknown particle {self.particle!r}")
        if not self.energy_min < self.energy_max:
            raise ConfigError(f"keys 'energy_min'/'energy_max': need energy_min < energy_max, "
                              f"got {self.energy_min} TeV and {self.energy_max} TeV")
        if self.n_showers < 1:
            raise ConfigError("key 'n_showers': must be at least 1")
        if self.core_plane not in CORE_PLANES:
            raise ConfigError(f"key 'core_plane': {self.core_plane!r} is not one of: {', '.join(CORE_PLANES)}")
        if self.images_only and self.write_r0:
            raise ConfigError("keys 'images_only'/'write_r0': raw R0 waveforms cannot be written in images-only mode")
        if self.compact_dl0 and (self.images_only or self.write_r0):
            other = "images_only" if self.images_only else "write_r0"
            raise ConfigError(f"keys 'compact_dl0'/'{other}': the compact DL0 holds the selected-gain samples "
                              f"only, choose one of the two")

    @property
    def needs_r0(self):
        """Whether the raw samples (and the calibration coefficients) are written."""
        return self.write_r0 or self.compact_dl0


@dataclass
class ShowerConditions:
    """Observing conditions per shower of a chunk (observation mode).

    ``pointing_alt``/``pointing_az``: (n,) rad array pointing at each shower;
    ``nsb_factor``: (n,) night-sky background relative to the configured rate;
    ``efficiency_factor``: (n,) atmospheric transmission relative to clear sky
    (scales the photon detection efficiency); ``tel_alive``: (n, n_tels) bool,
    False where a telescope takes no data.  None means nominal.
    """

    pointing_alt: np.ndarray
    pointing_az: np.ndarray
    nsb_factor: np.ndarray | None = None
    efficiency_factor: np.ndarray | None = None
    tel_alive: np.ndarray | None = None


ATMOSPHERE_TOP_KM = 120.0


def atmosphere_table(atmosphere, top_km=ATMOSPHERE_TOP_KM):
    """``RunInfo.atmosphere_profile`` dict of an :class:`Atmosphere` (heights in km, every km)."""
    height_km = np.arange(0.0, top_km + 0.5, 1.0)
    h, x0 = atmosphere.scale_height, atmosphere.sea_level_depth
    return {
        "height": height_km,
        "density": np.array([density(z * 1e3, h, x0) for z in height_km]),
        "column_density": np.array([vertical_depth(z * 1e3, h, x0) for z in height_km]),
        "atmosphere_id": 0,
        "atmosphere_name": f"iactpipe exponential atmosphere: scale height {h:g} m, {x0:g} g/cm2 at sea level",
        "observation_level": atmosphere.observation_altitude * 100.0,
        "atmosphere_height": top_km * 1e5,
    }


def load_subarray(name_or_path, tel_ids=()):
    """A subarray by packaged name or instrument/layout file, optionally restricted to ``tel_ids``."""
    subarray = registry.load_subarray(name_or_path)
    if tel_ids:
        unknown = sorted(set(int(t) for t in tel_ids) - set(int(t) for t in subarray.tel_ids))
        if unknown:
            raise ConfigError(f"key 'telescopes': tel_ids {unknown} are not in subarray {subarray.name} "
                              f"(has {', '.join(str(t) for t in subarray.tel_ids)})")
        subarray = subarray.select(sorted(set(int(t) for t in tel_ids)))
    return subarray


def _site_altitude(subarray):
    ref = np.asarray(subarray.reference_itrs, dtype=float)
    if not np.all(np.isfinite(ref)) or np.linalg.norm(ref) < 6.0e6:
        return DEFAULT_ALTITUDE
    from astropy import units as u
    from astropy.coordinates import EarthLocation

    height = EarthLocation.from_geocentric(*ref, unit=u.m).height.to_value(u.m)
    return float(height) if 0.0 <= height <= 6000.0 else DEFAULT_ALTITUDE


class ShowerSimulator:
    """Simulate showers for a subarray; iterate :meth:`iter_batches` for the triggered events."""

    def __init__(self, config, subarray):
        config.check()
        self.config = config
        self.subarray = subarray
        h_obs = config.observation_altitude
        if h_obs is None:
            h_obs = _site_altitude(subarray)
        self.atmosphere = Atmosphere(observation_altitude=float(h_obs))
        self.pointing_alt = np.deg2rad(90.0 - config.zenith)
        self.pointing_az = np.deg2rad(config.azimuth % 360.0)
        self.generator = PrimaryGenerator(
            particle=config.particle, pointing_alt=self.pointing_alt, pointing_az=self.pointing_az,
            energy_min=config.energy_min, energy_max=config.energy_max, spectral_index=config.spectral_index,
            scatter_radius=config.scatter_radius, diffuse=config.is_diffuse,
            viewcone=np.deg2rad(config.viewcone), source_offset=np.deg2rad(config.source_offset),
            core_plane=config.core_plane,
        )
        self.tel_ids = subarray.tel_ids
        self._setup_telescopes()
        self.histogram = np.zeros((len(ENERGY_BINS) - 1, len(CORE_BINS) - 1))
        self.n_thrown = 0
        self.n_candidates = 0
        self.n_triggered = 0
        self._clock_ns = 0
        self.start_time_mjd = START_TIME_MJD
        #: tel_id -> (n_pixels,) bool mask of dead pixels (no light, no background, read ~0)
        self.dead_pixels = {}

    # -- setup ------------------------------------------------------------------
    def _setup_telescopes(self):
        cfg = self.config
        n = len(self.tel_ids)
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        maps, map_index, cams = [], {}, {}
        self.electronics = {}
        self.neighbors = {}
        self.camera_of = {}
        fov = np.empty(n)
        focal = np.empty(n)
        rotation = np.empty(n)
        map_id = np.empty(n, np.int64)
        for j, tel_id in enumerate(self.tel_ids):
            tel = self.subarray.tels[tel_id]
            geom = tel.geometry
            key = id(geom)
            if key not in map_index:
                map_index[key] = len(maps)
                maps.append(PixelMap.from_geometry(geom))
                cams[key] = geom.neighbors
            map_id[j] = map_index[key]
            self.neighbors[int(tel_id)] = cams[key]
            focal[j] = tel.optics.focal_length
            rotation[j] = np.deg2rad(geom.cam_rotation_deg)
            fov[j] = camera_radius(geom) / focal[j]
            self.electronics[int(tel_id)] = CameraElectronics.from_readout(
                tel.readout, rng, gain_spread=cfg.gain_spread, electronic_noise=cfg.electronic_noise)
            if self.electronics[int(tel_id)].n_pixels != geom.n_pixels:
                raise DataError(f"subarray {self.subarray.name}: tel {tel_id} readout has "
                                f"{self.electronics[int(tel_id)].n_pixels} pixels, geometry {geom.n_pixels}")
        ny = max(m.grid.shape[0] for m in maps)
        nx = max(m.grid.shape[1] for m in maps)
        grids = np.full((len(maps), ny, nx), -1, np.int32)
        for i, m in enumerate(maps):
            grids[i, : m.grid.shape[0], : m.grid.shape[1]] = m.grid
        area = np.array([self.subarray.tels[t].optics.mirror_area for t in self.tel_ids], dtype=float)
        self.tel = dict(
            pos=self.subarray.positions.astype(np.float64),
            area=area,
            radius=np.sqrt(area / np.pi),
            basis=np.array([pointing_basis(self.pointing_alt, self.pointing_az)] * n),
            fov=fov,
            eff=np.full(n, cfg.photon_detection_efficiency),
            focal=focal,
            rotation=rotation,
            map_id=map_id,
            maps=grids,
            map_x0=np.array([m.x0 for m in maps]),
            map_y0=np.array([m.y0 for m in maps]),
            map_cell=np.array([m.cell for m in maps]),
        )
        self.calibration = {int(t): self.electronics[int(t)].calibration(t, cfg.nsb_rate) for t in self.tel_ids}

    # -- run description ------------------------------------------------------------
    def simulation_config(self):
        """The row of ``/configuration/simulation/run`` (ctapipe SimulationConfigContainer columns)."""
        cfg = self.config
        diffuse = cfg.is_diffuse
        alt = self.pointing_alt
        az = self.pointing_az
        return dict(
            obs_id=cfg.obs_id, run_number=cfg.obs_id, corsika_version=0, simtel_version=0,
            energy_range_min=cfg.energy_min, energy_range_max=cfg.energy_max,
            prod_site_B_total=np.nan, prod_site_B_declination=np.nan, prod_site_B_inclination=np.nan,
            prod_site_alt=self.atmosphere.observation_altitude, spectral_index=cfg.spectral_index,
            shower_prog_start=0, shower_prog_id=0, detector_prog_start=0, detector_prog_id=0,
            n_showers=cfg.n_showers, shower_reuse=1,
            max_alt=alt, min_alt=alt, max_az=az, min_az=az, diffuse=int(diffuse),
            max_viewcone_radius=cfg.viewcone if diffuse else 0.0, min_viewcone_radius=0.0,
            max_scatter_range=cfg.scatter_radius, min_scatter_range=0.0, core_pos_mode=0,
            atmosphere=0, corsika_iact_options=IACT_SHOWER_PLANE if cfg.core_plane == "shower" else 0,
            corsika_low_E_model=0, corsika_high_E_model=0,
            corsika_bunchsize=1.0, corsika_wlen_min=300.0, corsika_wlen_max=600.0,
            corsika_low_E_detail=0, corsika_high_E_detail=0,
        )

    @property
    def shower_distribution(self):
        """Histogram of all showers thrown so far (ctapipe SimulatedShowerDistribution fields)."""
        return dict(obs_id=self.config.obs_id, hist_id=6, n_entries=self.n_thrown,
                    bins_energy=ENERGY_BINS.copy(), bins_core_dist=CORE_BINS.copy(),
                    histogram=self.histogram.astype(np.float32))

    def run_info(self):
        return RunInfo(
            obs_id=self.config.obs_id, subarray=self.subarray,
            pointing_alt=float(np.rad2deg(self.pointing_alt)), pointing_az=float(np.rad2deg(self.pointing_az)),
            simulation_config=self.simulation_config(), shower_distribution=self.shower_distribution,
            calibration=self.calibration if self.config.needs_r0 else {}, is_simulation=True,
            start_time_mjd=self.start_time_mjd, atmosphere_profile=self.atmosphere_profile(),
        )

    def atmosphere_profile(self):
        """The simulated atmosphere tabulated as ctapipe's ``TableAtmosphereDensityProfile``
        (heights 0-120 km a.s.l. every km; the exponential profile is exact in between when
        interpolated in log density / log column density)."""
        return atmosphere_table(self.atmosphere)

    # -- simulation -------------------------------------------------------------------
    def iter_batches(self):
        """Yield one EventBatch (possibly empty) per chunk of ``chunk_size`` thrown showers."""
        cfg = self.config
        for index, first in enumerate(range(0, cfg.n_showers, cfg.chunk_size)):
            yield self.simulate_chunk(index, first, min(cfg.chunk_size, cfg.n_showers - first))

    def simulate_chunk(self, index, first, n):
        cfg = self.config
        h_obs = self.atmosphere.observation_altitude
        H, x_sea = self.atmosphere.params[:2]
        rng = np.random.default_rng([cfg.seed, index, 1])
        numba_seed = int(rng.integers(0, 2**31 - 1))
        prim = self.generator.sample(rng, n)
        intervals = rng.exponential(MEAN_EVENT_INTERVAL_NS, n)
        times_ns = self._clock_ns + np.cumsum(np.round(intervals).astype(np.int64))
        self._clock_ns = int(times_ns[-1])
        if cfg.core_plane == "shower":  # impact distance in the shower plane (0 .. scatter_radius)
            core_dist = distance_to_axis(prim.core_x, prim.core_y, prim.alt, prim.az)
        else:
            core_dist = np.hypot(prim.core_x, prim.core_y)
        hist, _, _ = np.histogram2d(prim.energy, core_dist, bins=(ENERGY_BINS, CORE_BINS))
        self.histogram += hist
        self.n_thrown += n

        showers = build_showers(
            PARTICLE_KIND[cfg.particle], prim.energy, prim.alt, prim.az, prim.core_x, prim.core_y,
            h_obs, H, x_sea, numba_seed, MAX_COMPONENTS, MAX_MUONS)
        return self.simulate_showers(first, prim, showers, times_ns, rng)

    def simulate_showers(self, first, prim, showers, times_ns, rng, conditions=None):
        """Steps 2-5 for built showers: EventBatch of the triggered ones.

        ``showers``: ``build_showers`` output for ``prim``; ``times_ns``: (n,) int64 ns
        since ``start_time_mjd``; event ids are ``(first + i + 1) * 100``;
        ``conditions``: :class:`ShowerConditions` or None (fixed pointing, nominal).
        """
        cfg = self.config
        atm = self.atmosphere
        h_obs = atm.observation_altitude
        H, x_sea, eta0, ext = atm.params
        tel = self.tel
        table, x_step, k_step = angular_table()
        comp, comp_off, mu, mu_off, h_first = showers[:5]
        basis = tel["basis"]
        if conditions is not None:
            # the cheap estimate uses the chunk's middle pointing (a chunk spans seconds)
            mid = len(prim) // 2
            basis = np.array([pointing_basis(conditions.pointing_alt[mid], conditions.pointing_az[mid])]
                             * len(self.tel_ids))
        lam = expected_pe(comp, comp_off, mu, mu_off, tel["pos"], tel["area"], tel["radius"], basis,
                          tel["fov"], tel["eff"], h_obs, H, x_sea, eta0, ext, table, x_step, k_step, N_GRID_ESTIMATE)
        if conditions is not None and conditions.efficiency_factor is not None:
            lam = lam * conditions.efficiency_factor[:, None]
        lam_cut = cfg.preselection * cfg.trigger_threshold * (cfg.trigger_neighbours + 1)
        tel_candidate = lam >= lam_cut if cfg.preselection > 0 else np.ones_like(lam, dtype=bool)
        if conditions is not None and conditions.tel_alive is not None:
            tel_candidate &= conditions.tel_alive
        candidates = np.nonzero(np.count_nonzero(tel_candidate, axis=1) >= cfg.min_telescopes)[0]
        self.n_candidates += len(candidates)

        nsb_trigger = cfg.nsb_rate * cfg.trigger_window
        psf = np.deg2rad(cfg.psf)
        eff = tel["eff"]
        dead = {j: self.dead_pixels.get(int(t)) for j, t in enumerate(self.tel_ids)}
        events = []
        pe_tel = np.empty(4096, np.int32)
        pe_pix = np.empty(4096, np.int32)
        pe_time = np.empty(4096)
        for i in candidates:
            tels = np.nonzero(tel_candidate[i])[0].astype(np.int64)
            if conditions is not None:
                basis = np.array([pointing_basis(conditions.pointing_alt[i], conditions.pointing_az[i])]
                                 * len(self.tel_ids))
                if conditions.efficiency_factor is not None:
                    eff = tel["eff"] * conditions.efficiency_factor[i]
                if conditions.nsb_factor is not None:
                    nsb_trigger = cfg.nsb_rate * conditions.nsb_factor[i] * cfg.trigger_window
            n_points = int(np.clip(lam[i].max() / 2.0, 64, 20000))
            pts = sample_emitters(comp, comp_off[i], comp_off[i + 1], n_points, h_obs, H, x_sea, eta0, N_GRID)
            pe_tel, pe_pix, pe_time, n_pe = render_emitters(
                pts, tels, tel["pos"], tel["area"], basis, tel["fov"], eff, tel["focal"],
                tel["rotation"], tel["map_id"], tel["maps"], tel["map_x0"], tel["map_y0"], tel["map_cell"],
                psf, PE_TIME_JITTER_NS, h_obs, H, x_sea, eta0, ext, table, x_step, k_step,
                pe_tel, pe_pix, pe_time, 0)
            if mu_off[i + 1] > mu_off[i]:
                pe_tel, pe_pix, pe_time, n_pe = render_muons(
                    mu, mu_off[i], mu_off[i + 1], tels, tel["pos"], tel["area"], tel["radius"], basis,
                    tel["fov"], eff, tel["focal"], tel["rotation"], tel["map_id"], tel["maps"],
                    tel["map_x0"], tel["map_y0"], tel["map_cell"], psf, h_obs, H, eta0,
                    pe_tel, pe_pix, pe_time, n_pe)
            order = np.argsort(pe_tel[:n_pe], kind="stable")
            by_tel = pe_tel[:n_pe][order]
            bounds = np.searchsorted(by_tel, np.arange(len(self.tel_ids) + 1))
            triggered = {}
            for j in tels:
                sel = order[bounds[j]:bounds[j + 1]]
                if dead[j] is not None:
                    sel = sel[~dead[j][pe_pix[sel]]]
                tel_id = int(self.tel_ids[j])
                n_pix = self.electronics[tel_id].n_pixels
                true_image = np.bincount(pe_pix[sel], minlength=n_pix).astype(np.int32)
                indptr, indices = self.neighbors[tel_id]
                fired, n_above = telescope_trigger(true_image, nsb_trigger, cfg.trigger_threshold,
                                                   cfg.trigger_neighbours, indptr, indices)
                if fired:
                    triggered[j] = (true_image, pe_pix[sel].copy(), pe_time[sel].copy(), n_above)
            if array_trigger(len(triggered), cfg.min_telescopes):
                events.append((i, triggered))
        self.n_triggered += len(events)
        return self._make_batch(first, prim, times_ns, comp, comp_off, h_first, events, rng, conditions)

    def _make_batch(self, first, prim, times_ns, comp, comp_off, h_first, events, rng, conditions=None):
        cfg = self.config
        h_obs = self.atmosphere.observation_altitude
        n_ev = len(events)
        n_tel = len(self.tel_ids)
        idx = np.array([i for i, _ in events], dtype=np.int64)
        mask = np.zeros((n_ev, n_tel), dtype=bool)
        for k, (_, triggered) in enumerate(events):
            mask[k, list(triggered)] = True
        event_id = (first + idx + 1) * 100
        time_mjd = self.start_time_mjd + times_ns[idx] * 1e-9 / 86400.0
        xmax = np.full(n_ev, np.nan)
        if n_ev:
            # x_max of the selected showers only (cheap: gammas have one component)
            starts = comp_off[idx]
            stops = comp_off[idx + 1]
            sel_comp = np.concatenate([comp[a:b] for a, b in zip(starts, stops, strict=True)])
            sel_off = np.concatenate([[0], np.cumsum(stops - starts)])
            xmax = shower_xmax(sel_comp, sel_off, prim.alt[idx], h_obs, *self.atmosphere.params[:2])
        shower = dict(
            true_energy=prim.energy[idx], true_alt=np.rad2deg(prim.alt[idx]), true_az=np.rad2deg(prim.az[idx]),
            true_core_x=prim.core_x[idx], true_core_y=prim.core_y[idx], true_h_first_int=h_first[idx],
            true_x_max=xmax, true_starting_grammage=np.zeros(n_ev),
            true_shower_primary_id=np.broadcast_to(np.asarray(prim.particle_id, dtype=np.int64),
                                                   len(prim))[idx].copy(),
        )
        if conditions is None:
            pointing_alt = np.full(n_ev, np.rad2deg(self.pointing_alt))
            pointing_az = np.full(n_ev, np.rad2deg(self.pointing_az))
            nsb = np.full(n_ev, cfg.nsb_rate)
        else:
            pointing_alt = np.rad2deg(conditions.pointing_alt[idx])
            pointing_az = np.rad2deg(conditions.pointing_az[idx])
            factor = conditions.nsb_factor[idx] if conditions.nsb_factor is not None else 1.0
            nsb = np.broadcast_to(cfg.nsb_rate * factor, (n_ev,))
        reference_times = [self._reference_times(triggered) for _, triggered in events]
        tel_data = {}
        for j, tel_id in enumerate(self.tel_ids):
            rows = [(k, events[k][1][j]) for k in range(n_ev) if j in events[k][1]]
            if not rows:
                continue
            tel_data[int(tel_id)] = self._telescope_events(j, int(tel_id), rows, event_id, idx, prim, times_ns,
                                                           reference_times, rng, pointing_alt, pointing_az, nsb)
        return EventBatch(
            obs_id=cfg.obs_id, event_id=event_id, event_type=np.full(n_ev, EVENT_TYPE_SUBARRAY, dtype=np.int64),
            time_mjd=time_mjd, tels_with_trigger=mask,
            pointing_alt=pointing_alt, pointing_az=pointing_az,
            tel=tel_data, shower=shower,
        )

    def _reference_times(self, triggered):
        """Median p.e. time per triggered telescope (ns) of one event."""
        return {j: (np.median(v[2]) if len(v[2]) else 0.0) for j, v in triggered.items()}

    def _telescope_events(self, j, tel_id, rows, event_id, idx, prim, times_ns, reference_times, rng,
                          pointing_alt, pointing_az, nsb):
        """Images or waveforms of telescope ``j`` for its ``rows`` (event index, trigger data);
        ``pointing_alt``/``pointing_az`` (deg) and ``nsb`` (GHz) per event of the batch."""
        cfg = self.config
        dead = self.dead_pixels.get(tel_id)
        elec = self.electronics[tel_id]
        calib = self.calibration[tel_id]
        pos = self.tel["pos"][j]
        n = len(rows)
        ev_index = np.array([k for k, _ in rows], dtype=np.int64)
        true_image = np.stack([r[0] for _, r in rows])
        n_trigger = np.array([r[3] for _, r in rows], dtype=np.int64)
        images = peak_times = r0 = r1 = gains = status = None
        tel_time_ns = np.empty(n)
        if cfg.images_only:
            images = np.empty((n, elec.n_pixels), np.float32)
            peak_times = np.empty((n, elec.n_pixels), np.float32)
        else:
            r1 = np.empty((n, elec.n_pixels, elec.n_samples), np.float32)
            gains = np.empty((n, elec.n_pixels), np.int8)
            status = np.empty((n, elec.n_pixels), np.uint8)
            if cfg.needs_r0:
                r0 = np.empty((n, elec.n_gains, elec.n_pixels, elec.n_samples), np.uint16)
        for r, (k, (_, pix, t, _)) in enumerate(rows):
            refs = reference_times[k]
            t_ref = refs[j]
            tel_time_ns[r] = times_ns[idx[k]] + (t_ref - min(refs.values()))
            t0 = t_ref + elec.peak_time - WINDOW_PEAK_FRACTION * elec.window
            t_rel = t - t0
            if cfg.images_only:
                img, pt = make_images(pix, t_rel, elec.n_pixels, nsb[k], elec.window,
                                      INTEGRATION_SAMPLES / elec.sampling_rate, elec.electronic_noise_pe,
                                      INTEGRATION_SAMPLES, elec.peak_time)
                if dead is not None:
                    img[dead] = 0.0
                images[r] = img
                peak_times[r] = pt
            else:
                wf = make_waveforms(pix, t_rel, elec.n_pixels, elec.n_samples, elec.sampling_rate, elec.pulses,
                                    elec.relative_gain, elec.time_offset, nsb[k])
                if dead is not None:
                    wf[:, dead, :] = 0.0
                raw = digitize(wf, elec.adc_per_pe, elec.pedestal, elec.noise_adc,
                               rng.standard_normal(wf.shape, dtype=np.float32))
                r1[r], gains[r], status[r] = select_gain(raw, calib.pedestal_per_sample.astype(np.float64),
                                                         calib.dc_to_pe.astype(np.float64),
                                                         GAIN_SELECTION_THRESHOLD, ADC_MAX)
                if r0 is not None:
                    r0[r] = raw
        # true impact distance: distance of the telescope to the primary axis
        i_sh = idx[ev_index]
        ax = np.cos(prim.alt[i_sh]) * np.cos(prim.az[i_sh])
        ay = -np.cos(prim.alt[i_sh]) * np.sin(prim.az[i_sh])
        az = np.sin(prim.alt[i_sh])
        dx = pos[0] - prim.core_x[i_sh]
        dy = pos[1] - prim.core_y[i_sh]
        dz = np.full(n, pos[2])
        along = dx * ax + dy * ay + dz * az
        impact = np.sqrt(np.maximum(dx**2 + dy**2 + dz**2 - along**2, 0.0))
        return TelescopeEvents(
            tel_id=tel_id, event_id=event_id[ev_index], r0=r0, r1=r1, selected_gain_channel=gains,
            image=images, peak_time=peak_times, true_image=true_image, true_impact_distance=impact,
            pixel_status=status,
            n_trigger_pixels=n_trigger, time_mjd=self.start_time_mjd + tel_time_ns * 1e-9 / 86400.0,
            event_type=np.full(n, EVENT_TYPE_SUBARRAY, dtype=np.int64),
            true_image_sum=true_image.sum(axis=1).astype(np.int32),
            pointing_alt=pointing_alt[ev_index], pointing_az=pointing_az[ev_index],
        )
