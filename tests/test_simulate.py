"""iactpipe-simulate: physics properties of the toy simulation, CLI behaviour, ctapipe interop.

Image moments are computed here with plain numpy (independent of the project's
own image code): tail-cuts cleaning 10/5 p.e. and Hillas second moments, in the
telescope frame (deg) like ctapipe.
"""

import numpy as np
import pytest
import tables
from iactpipe.instrument.frames import altaz_to_fov, altaz_to_ground_direction, camera_to_fov
from iactpipe.io.dl0 import DL0Reader
from iactpipe.io.tables import validate_file
from iactpipe.simulation.cherenkov import angular_table, expected_pe, render_muons
from iactpipe.simulation.optics import direction_to_fov, pointing_basis
from iactpipe.simulation.shower import RADIATION_LENGTH, build_showers, shower_xmax
from iactpipe.simulation.simulator import ENERGY_BINS, ShowerSimulator, SimulationConfig, load_subarray
from iactpipe.simulation.trigger import telescope_trigger
from iactpipe.steps.simulate import SimulateStep

H_OBS = 2200.0
ATM = (8400.0, 1030.0)  # scale height (m), sea-level depth (g/cm²)


# --------------------------------------------------------------------------- helpers


def run_cli(*args):
    return SimulateStep().main([*map(str, args), "--log-level", "WARNING"])


def tailcuts(image, neighbors, picture=10.0, boundary=5.0):
    indptr, indices = neighbors
    rows = np.repeat(np.arange(len(image)), np.diff(indptr))
    above = image >= picture
    n_bright = np.zeros(len(image), int)
    np.add.at(n_bright, rows, above[indices])
    core = above & (n_bright >= 2)
    n_core = np.zeros(len(image), int)
    np.add.at(n_core, rows, core[indices])
    return core | ((image >= boundary) & (n_core > 0))


def hillas(weights, x, y):
    """intensity, cog x/y, length, width, psi (rad) of a weighted pixel set."""
    s = weights.sum()
    cx, cy = (weights * x).sum() / s, (weights * y).sum() / s
    dx, dy = x - cx, y - cy
    sxx, syy, sxy = (weights * dx * dx).sum() / s, (weights * dy * dy).sum() / s, (weights * dx * dy).sum() / s
    half_trace, det = (sxx + syy) / 2, sxx * syy - sxy**2
    root = np.sqrt(max(half_trace**2 - det, 0.0))
    length, width = np.sqrt(half_trace + root), np.sqrt(max(half_trace - root, 0.0))
    return s, cx, cy, length, width, 0.5 * np.arctan2(2 * sxy, sxx - syy)


def image_parameters(path, min_pixels=5):
    """One row per cleaned DL1 image of an images-only file, with truth."""
    rows = []
    with DL0Reader(path) as reader:
        subarray = reader.subarray
        info = reader.run_info
        p_alt, p_az = np.deg2rad(info.pointing_alt), np.deg2rad(info.pointing_az)
        for batch in reader.iter_batches(5000):
            src_lon, src_lat = altaz_to_fov(np.deg2rad(batch.shower["true_alt"]), np.deg2rad(batch.shower["true_az"]),
                                            p_alt, p_az)
            for tel_id, te in batch.tel.items():
                tel = subarray.tels[tel_id]
                lon, lat = camera_to_fov(tel.geometry.pix_x, tel.geometry.pix_y, tel.optics.focal_length, 0.0)
                x, y = np.rad2deg(lon), np.rad2deg(lat)
                ev = np.searchsorted(batch.event_id, te.event_id)
                for k in range(len(te)):
                    mask = tailcuts(te.image[k], tel.geometry.neighbors)
                    if mask.sum() < min_pixels:
                        continue
                    w = te.image[k] * mask
                    size, cx, cy, length, width, psi = hillas(w, x, y)
                    sx, sy = np.rad2deg(src_lon[ev[k]]), np.rad2deg(src_lat[ev[k]])
                    # distance of the true source from the major axis, and from the centroid
                    miss = abs(-(sx - cx) * np.sin(psi) + (sy - cy) * np.cos(psi))
                    # peak-time slope along the major axis, oriented away from the source (ns/deg)
                    along = (x - cx) * np.cos(psi) + (y - cy) * np.sin(psi)
                    sign = np.sign((cx - sx) * np.cos(psi) + (cy - sy) * np.sin(psi))
                    sw = np.sqrt(w[mask])
                    design = np.column_stack([along[mask], np.ones(mask.sum())]) * sw[:, None]
                    slope = np.linalg.lstsq(design, te.peak_time[k][mask] * sw, rcond=None)[0][0] * sign
                    rows.append((tel_id, batch.shower["true_energy"][ev[k]], te.true_impact_distance[k], size,
                                 length, width, miss, np.hypot(cx - sx, cy - sy), np.hypot(cx, cy), slope))
    names = ["tel_id", "energy", "impact", "intensity", "length", "width", "miss", "dist", "cog_r", "slope"]
    return np.rec.fromrecords(rows, names=names)


def simulate(subarray, **config):
    """In-process run; returns (simulator, list of batches)."""
    sim = ShowerSimulator(SimulationConfig(**config), subarray)
    return sim, list(sim.iter_batches())


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gamma_file(tmp_path_factory):
    """Point-like gammas 0.5 deg above the pointing, full Alpha array, images only."""
    path = tmp_path_factory.mktemp("sim") / "gamma.dl1.h5"
    assert run_cli("--particle", "gamma", "--n-showers", 1500, "--seed", 11, "--output", path, "--images-only",
                   "--energy-min", "50 GeV", "--energy-max", 50, "--scatter-radius", 400,
                   "--source-offset", 0.5) == 0
    return path


@pytest.fixture(scope="module")
def gamma_params(gamma_file):
    return image_parameters(gamma_file)


@pytest.fixture(scope="module")
def proton_params(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "proton.dl1.h5"
    assert run_cli("--particle", "proton", "--n-showers", 600, "--seed", 12, "--output", path, "--images-only",
                   "--energy-min", 0.2, "--energy-max", 5, "--scatter-radius", 250, "--viewcone", 3) == 0
    return image_parameters(path)


# --------------------------------------------------------------------------- file content, ctapipe interop


def test_images_only_file_is_read_by_ctapipe_table_loader(gamma_file):
    from ctapipe.io import TableLoader

    assert validate_file(gamma_file, require_schema=True) == []
    with TableLoader(gamma_file) as loader:
        events = loader.read_subarray_events(simulated=True)
        tel = loader.read_telescope_events(dl1_images=True, simulated=True, true_images=True)
        assert loader.subarray.n_tels == 13
    assert len(events) > 100
    assert set(np.unique(events["true_shower_primary_id"])) == {0}
    energy = events["true_energy"].quantity.to_value("TeV")
    assert energy.min() >= 0.05 and energy.max() <= 50
    assert len(tel) == events["tels_with_trigger"].sum()
    for col in ("image", "peak_time", "true_image", "true_image_sum", "true_impact_distance"):
        assert col in tel.colnames
    np.testing.assert_array_equal(tel["true_image"].sum(axis=1), tel["true_image_sum"])
    with tables.open_file(gamma_file) as h5:
        attrs = h5.root._v_attrs
        assert attrs["CTA PRODUCT DATA LEVELS"] == "DL1_IMAGES"
        run = h5.root.configuration.simulation.run.read()
        dist = h5.root.simulation.service.shower_distribution.read()
        assert "/r1" not in h5
    assert run["n_showers"][0] == 1500 and run["shower_reuse"][0] == 1 and run["diffuse"][0] == 0
    assert run["max_scatter_range"][0] == 400 and run["energy_range_min"][0] == pytest.approx(0.05)
    assert run["spectral_index"][0] == -2.0
    # all thrown showers are histogrammed, triggered or not
    assert dist["n_entries"][0] == 1500 and dist["histogram"][0].sum() == 1500
    assert dist["histogram"][0].shape == (len(dist["bins_energy"][0]) - 1, len(dist["bins_core_dist"][0]) - 1)


def test_atmosphere_profile_is_read_by_ctapipe(gamma_file):
    """The simulated exponential atmosphere, tabulated for ctapipe, gives back the simulator's depths."""
    import astropy.units as u
    from ctapipe.atmosphere import TableAtmosphereDensityProfile
    from ctapipe.io.hdf5eventsource import read_atmosphere_density_profile

    with tables.open_file(gamma_file) as h5:
        profile = read_atmosphere_density_profile(h5)
        node = h5.get_node("/simulation/service/atmosphere_density_profile")
        obs_level = node.attrs["observation_level"]
        site_alt = h5.root.configuration.simulation.run.col("prod_site_alt")[0]
    assert isinstance(profile, TableAtmosphereDensityProfile)
    assert obs_level == pytest.approx(site_alt * 100.0)  # cm, as ctapipe writes it
    heights = np.array([2.2, 5.3, 9.87, 14.1, 31.4]) * u.km
    scale, x0 = ATM
    expected = x0 * np.exp(-heights.to_value(u.m) / scale)
    np.testing.assert_allclose(profile.integral(heights).to_value(u.g / u.cm**2), expected, rtol=1e-6)
    np.testing.assert_allclose(profile(heights).to_value(u.g / u.cm**3), expected / (scale * 100.0), rtol=1e-6)
    np.testing.assert_allclose(profile.height_from_overburden(expected * u.g / u.cm**2).to_value(u.km),
                               heights.to_value(u.km), rtol=1e-6)
    with DL0Reader(gamma_file) as reader:
        info = reader.run_info
    assert info.atmosphere_profile["observation_level"] == pytest.approx(site_alt * 100.0)
    np.testing.assert_array_equal(info.atmosphere_profile["column_density"],
                                  profile.table["column_density"].to_value(u.g / u.cm**2))


def test_trigger_efficiency_rises_with_energy(gamma_file):
    with tables.open_file(gamma_file) as h5:
        dist = h5.root.simulation.service.shower_distribution.read()[0]
        energy = h5.root.simulation.event.subarray.shower.col("true_energy")
    thrown = dist["histogram"].sum(axis=1)
    triggered, _ = np.histogram(energy, dist["bins_energy"])
    edges = dist["bins_energy"]
    efficiency = []
    for lo, hi in [(0.05, 0.1), (0.2, 0.5), (1.0, 50.0)]:
        sel = (edges[:-1] >= lo * 0.999) & (edges[1:] <= hi * 1.001)
        efficiency.append(triggered[sel].sum() / thrown[sel].sum())
    assert efficiency[0] < efficiency[1] < efficiency[2]
    assert efficiency[0] < 0.6 and efficiency[2] > 0.9


# --------------------------------------------------------------------------- image physics


def test_image_axes_point_to_the_source(gamma_params):
    p = gamma_params[(gamma_params.intensity > 300) & (gamma_params.cog_r < 1.6) & (gamma_params.dist > 0.4)]
    assert len(p) > 200
    # the major axis passes the true source position (0.5 deg off the pointing) ...
    assert np.median(p.miss) < 0.05
    assert np.median(p.miss / p.dist) < 0.1
    # ... and the images are elongated ellipses
    assert np.median(p.width) < 0.12 and np.median(p.length / p.width) > 2


def test_image_displacement_and_time_gradient_grow_with_impact(gamma_params):
    p = gamma_params[(gamma_params.intensity > 200) & (gamma_params.cog_r < 1.6)]
    near = p[p.impact < 80]
    far = p[(p.impact > 200) & (p.impact < 400)]
    assert len(near) > 30 and len(far) > 30
    assert np.median(far.dist) > np.median(near.dist) + 0.3
    # light from the shower head arrives last at large impact: positive gradient away from the source
    assert np.median(far.slope) > 3.0
    assert np.median(far.slope) > np.median(near.slope) + 3.0


def test_proton_images_are_wider_than_gamma_images(gamma_params, proton_params):
    def widths(p):
        sel = (p.intensity > 300) & (p.intensity < 3000) & (p.cog_r < 1.5)
        return p.width[sel]

    gamma, proton = widths(gamma_params), widths(proton_params)
    assert len(gamma) > 100 and len(proton) > 20
    assert np.median(proton) > 1.5 * np.median(gamma)


def test_intensity_grows_linearly_with_energy_at_fixed_impact():
    """Median true p.e. of one LST for 60-120 m impacts, at 0.3 and 3 TeV."""
    subarray = load_subarray("LSTCam")
    sums = []
    for energy in (0.3, 3.0):
        sim, batches = simulate(subarray, particle="gamma", n_showers=200, seed=5, energy_min=energy,
                                energy_max=energy * 1.01, scatter_radius=150.0, min_telescopes=1,
                                images_only=True)
        te = [b.tel[1] for b in batches if 1 in b.tel]
        impact = np.concatenate([t.true_impact_distance for t in te])
        true_sum = np.concatenate([t.true_image.sum(axis=1) for t in te])
        image_sum = np.concatenate([t.image.sum(axis=1) for t in te])
        sel = (impact > 60) & (impact < 120)
        assert sel.sum() > 40
        sums.append((np.median(true_sum[sel]), np.median(image_sum[sel])))
    (true_lo, img_lo), (true_hi, img_hi) = sums
    assert 8.0 < true_hi / true_lo < 13.0
    assert 8.0 < img_hi / img_lo < 13.0
    # 0.3 TeV gives a few hundred to a few thousand p.e. in an LST at ~100 m
    assert 300 < true_lo < 3000


# --------------------------------------------------------------------------- shower and light kernels


def test_photon_directions_project_like_the_instrument_frames():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p_alt, p_az = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * np.pi)
        alt = p_alt + rng.normal(0, 0.05)
        az = p_az + rng.normal(0, 0.05) / np.cos(p_alt)
        ux, uy, uz = altaz_to_ground_direction(alt, az)
        ours = direction_to_fov(ux, uy, uz, pointing_basis(p_alt, p_az))
        np.testing.assert_allclose(ours, altaz_to_fov(alt, az, p_alt, p_az), atol=1e-12)


def test_telescope_trigger_needs_neighbouring_pixels():
    geometry = load_subarray("LSTCam").tels[1].geometry
    indptr, indices = geometry.neighbors
    first = 900
    cluster = [first, *indices[indptr[first]:indptr[first] + 2]]
    isolated = [0, 600, 1200]
    for pixels, neighbours, expected in ((cluster, 2, True), (isolated, 2, False), (isolated, 0, True)):
        image = np.zeros(geometry.n_pixels, np.int32)
        image[pixels] = 7
        triggered, n_above = telescope_trigger(image, 0.0, 6.0, neighbours, indptr, indices)
        assert triggered == expected and n_above == 3
    # pure night-sky background at a high rate fires pixels at random, but rarely three neighbours
    image = np.zeros(geometry.n_pixels, np.int32)
    n_fired = [telescope_trigger(image, 1.0, 6.0, 2, indptr, indices)[1] for _ in range(200)]
    expected = geometry.n_pixels * (1 - sum(np.exp(-1.0) / np.prod(range(1, k + 1)) for k in range(6)))
    assert np.mean(n_fired) == pytest.approx(expected, rel=0.2)


def _light_density(energy, zenith_deg, distances, n=60, kind=0):
    """Mean expected photons per m² (efficiency 1) at ground distances perpendicular to the shower."""
    table, x_step, k_step = angular_table()
    alt = np.deg2rad(90.0 - zenith_deg)
    n_d = len(distances)
    pos = np.zeros((n_d, 3))
    pos[:, 1] = distances
    basis = np.array([pointing_basis(alt, 0.0)] * n_d)
    comp, c_off, mu, m_off, _, _ = build_showers(kind, np.full(n, energy), np.full(n, alt), np.zeros(n),
                                                 np.zeros(n), np.zeros(n), H_OBS, *ATM, 1, 20000, 2000)
    lam = expected_pe(comp, c_off, mu, m_off, pos, np.ones(n_d), np.ones(n_d), basis, np.full(n_d, 1.0),
                      np.ones(n_d), H_OBS, *ATM, 2.9e-4, 1500.0, table, x_step, k_step, 24)
    return lam.mean(axis=0)


def test_light_pool_plateau_then_falling():
    d = np.array([30.0, 60.0, 100.0, 200.0, 300.0])
    rho = _light_density(0.05, 0.0, d)
    assert 0.7 < rho[2] / rho[0] < 1.3  # plateau out to ~120 m
    assert rho[3] < 0.5 * rho[2] and rho[4] < 0.25 * rho[2]
    # ~100 photons / m² at 100 m per TeV (300-600 nm, 2200 m a.s.l.)
    assert 50 < rho[2] / 0.05 < 200


ZENITHS = (20.0, 40.0, 60.0)


def test_larger_zenith_gives_larger_dimmer_light_pool():
    """Farther shower maximum: fewer photons per m² near the core, spread over a wider pool (20, 40, 60 deg)."""
    d = np.array([50.0, 300.0])
    near, far = np.array([_light_density(0.5, zenith, d) for zenith in ZENITHS]).T
    assert np.all(np.diff(near) < 0)
    assert near[2] < 0.3 * near[0]
    ratio = far / near
    assert np.all(np.diff(ratio) > 0)
    assert ratio[2] > 2 * ratio[0]


def test_larger_zenith_raises_the_threshold():
    """Energy at which half of the thrown showers (within 150 m) trigger 4 LSTs: rises with zenith."""
    subarray = load_subarray("CTAO-North-Alpha", [1, 2, 3, 4])
    thresholds = []
    for zenith in ZENITHS:
        sim, batches = simulate(subarray, particle="gamma", n_showers=1000, seed=7, zenith=zenith, energy_min=0.01,
                                energy_max=0.3, spectral_index=-1.0, scatter_radius=150.0, images_only=True)
        energy = np.concatenate([b.shower["true_energy"] for b in batches])
        edges = np.geomspace(0.01, 0.3, 11)
        thrown = sim.histogram.sum(axis=1)
        centres = np.sqrt(ENERGY_BINS[1:] * ENERGY_BINS[:-1])
        n_thrown = np.histogram(centres, edges, weights=thrown)[0]
        efficiency = np.histogram(energy, edges)[0] / np.maximum(n_thrown, 1)
        assert efficiency[-1] > 0.8
        thresholds.append(edges[np.argmax(efficiency >= 0.5)])
    assert thresholds[0] < thresholds[1] < thresholds[2]
    assert thresholds[2] > 2.5 * thresholds[0]


def test_image_intensity_at_fixed_energy_falls_with_zenith():
    """1 TeV gammas, one LST, 60-120 m from the axis: the median p.e. per image falls with zenith."""
    subarray = load_subarray("LSTCam")
    medians = []
    for zenith in ZENITHS:
        _, batches = simulate(subarray, particle="gamma", n_showers=250, seed=5, zenith=zenith, energy_min=1.0,
                              energy_max=1.01, scatter_radius=300.0, min_telescopes=1, images_only=True)
        te = [b.tel[1] for b in batches if 1 in b.tel]
        impact = np.concatenate([t.true_impact_distance for t in te])
        size = np.concatenate([t.true_image.sum(axis=1) for t in te])
        sel = (impact > 60) & (impact < 120)
        assert sel.sum() > 20
        medians.append(np.median(size[sel]))
    assert medians[0] > medians[1] > medians[2]
    assert medians[2] < 0.3 * medians[0]


def test_cores_in_the_shower_plane_keep_the_thrown_area_at_any_zenith():
    """core_plane=shower: cores uniform within scatter_radius of each shower axis (the area the flux sees is
    pi R² at every zenith), so pi R² x triggered/thrown is the effective area; the ground plane only gives
    pi R² cos(zenith)."""
    from iactpipe.simulation.primaries import PrimaryGenerator, distance_to_axis

    rng = np.random.default_rng(2)
    for diffuse in (False, True):
        generator = PrimaryGenerator("proton", np.deg2rad(30.0), 0.5, 0.1, 10.0, -2.0, 500.0, diffuse,
                                     np.deg2rad(8.0), 0.0, core_plane="shower")
        prim = generator.sample(rng, 20000)
        radial = distance_to_axis(prim.core_x, prim.core_y, prim.alt, prim.az)
        assert radial.max() <= 500.0 + 1e-6
        assert np.mean(radial < 250.0) == pytest.approx(0.25, abs=0.015)
        assert np.hypot(prim.core_x, prim.core_y).max() > 900.0  # stretched by 1/cos(60 deg) on the ground
    subarray = load_subarray("CTAO-North-Alpha", [1, 2, 3, 4])
    areas = {}
    for plane in ("ground", "shower"):
        sim, _ = simulate(subarray, particle="gamma", n_showers=1500, seed=3, zenith=60.0, energy_min=0.3,
                          energy_max=0.31, scatter_radius=1000.0, core_plane=plane, images_only=True)
        areas[plane] = np.pi * 1000.0**2 * sim.n_triggered / sim.n_thrown
        assert sim.simulation_config()["corsika_iact_options"] == (0xA0 if plane == "shower" else 0)
    assert areas["shower"] / areas["ground"] == pytest.approx(np.cos(np.deg2rad(60.0)), abs=0.1)


def test_xmax_elongation_and_particle_differences():
    n = 400
    alt = np.full(n, np.deg2rad(70.0))
    zeros = np.zeros(n)
    cos_z = np.sin(alt[0])
    means, spreads = {}, {}
    for kind, name in ((0, "gamma"), (1, "electron"), (2, "proton")):
        for energy in (0.1, 10.0):
            comp, c_off, _, _, h_first, x_first = build_showers(kind, np.full(n, energy), alt, zeros, zeros, zeros,
                                                                H_OBS, *ATM, 3, 20000, 2000)
            xmax = shower_xmax(comp, c_off, alt, H_OBS, *ATM) * cos_z  # vertical-equivalent depth
            means[name, energy] = xmax.mean()
            spreads[name, energy] = xmax.std()
            if name == "electron":
                assert np.median(x_first) < 10.0  # electrons start radiating at the top
    # Heitler: X_max grows by X0 ln(100) over two decades for EM showers
    for name in ("gamma", "electron"):
        assert means[name, 10.0] - means[name, 0.1] == pytest.approx(RADIATION_LENGTH * np.log(100), rel=0.2)
    assert 250 < means["gamma", 0.1] < 320
    assert means["electron", 10.0] < means["gamma", 10.0] - 15
    assert spreads["proton", 10.0] > 1.5 * spreads["gamma", 10.0]


def test_xmax_is_higher_above_ground_at_larger_zenith():
    """Deeper atmosphere along inclined axes: X_max (slant g/cm²) is the same, its distance along the axis grows."""
    n = 200
    distances, slant = [], []
    for zenith in ZENITHS:
        alt = np.full(n, np.deg2rad(90.0 - zenith))
        comp, c_off, _, _, _, _ = build_showers(0, np.full(n, 1.0), alt, np.zeros(n), np.zeros(n), np.zeros(n),
                                                H_OBS, *ATM, 4, 20000, 2000)
        xmax = shower_xmax(comp, c_off, alt, H_OBS, *ATM)
        slant.append(np.median(xmax))
        height = -ATM[0] * np.log(xmax * np.sin(alt) / ATM[1])
        distances.append(np.median(height - H_OBS) / np.sin(alt[0]))
    # the maximum sits at the same slant depth (it depends on the energy only) ...
    assert max(slant) - min(slant) < 10.0
    # ... which is higher up and much farther away at large zenith angles
    assert distances[0] < distances[1] < distances[2]
    assert distances[2] > 2 * distances[0]
    # the ground (observation level) lies deeper in slant depth: 1/cos(zenith)
    ground = ATM[1] * np.exp(-H_OBS / ATM[0]) / np.cos(np.deg2rad(np.array(ZENITHS)))
    assert np.all(np.diff(ground - np.array(slant)) > 0)


def test_muon_through_the_mirror_makes_a_ring_of_the_cherenkov_angle():
    subarray = load_subarray("LSTCam")
    sim = ShowerSimulator(SimulationConfig(zenith=0.0, psf=0.0), subarray)
    tel = sim.tel
    h_obs = sim.atmosphere.observation_altitude
    scale_height, _, eta0, _ = sim.atmosphere.params
    # 20 GeV muon, 0.5 deg off axis, hitting the mirror centre, produced 3 km up
    theta = np.deg2rad(0.5)
    mu = np.array([[20.0, 3000.0 * np.tan(theta), 0.0, 3000.0, np.sin(theta), 0.0, np.cos(theta), 0.0]])
    out = render_muons(mu, 0, 1, np.array([0]), tel["pos"], tel["area"], tel["radius"], tel["basis"], tel["fov"],
                       tel["eff"], tel["focal"], tel["rotation"], tel["map_id"], tel["maps"], tel["map_x0"],
                       tel["map_y0"], tel["map_cell"], 0.0, h_obs, scale_height, eta0,
                       np.empty(16, np.int32), np.empty(16, np.int32), np.empty(16), 0)
    pix, n_pe = out[1], out[3]
    geom = subarray.tels[1].geometry
    f = subarray.tels[1].optics.focal_length
    x, y = geom.pix_x[pix[:n_pe]] / f, geom.pix_y[pix[:n_pe]] / f
    radius = np.hypot(x - x.mean(), y - y.mean())
    expected = np.sqrt(2 * eta0 * np.exp(-h_obs / scale_height) - (0.1056584 / 20.0) ** 2)
    assert np.median(radius) == pytest.approx(expected, rel=0.1)
    assert np.hypot(x.mean(), y.mean()) == pytest.approx(theta, rel=0.1)
    assert 800 < n_pe < 3000  # full LST muon rings have ~ 1000-3000 p.e.


# --------------------------------------------------------------------------- reproducibility, pre-selection


def _tables(path):
    with tables.open_file(path) as h5:
        return {node._v_pathname: node.read() for node in h5.walk_nodes("/", "Table")
                if not node._v_pathname.startswith("/provenance")}


def test_same_seed_gives_identical_tables(tmp_path):
    common = ["--particle", "proton", "--n-showers", 150, "--energy-min", 0.3, "--energy-max", 10,
              "--telescopes", 1, 2, 3, 4, "--scatter-radius", 200, "--write-r0", "-c", tmp_path / "chunks.yaml"]
    (tmp_path / "chunks.yaml").write_text("chunk_size: 64\n")
    paths = [tmp_path / name for name in ("a.h5", "b.h5", "c.h5")]
    assert run_cli(*common, "--seed", 1, "--output", paths[0]) == 0
    assert run_cli(*common, "--seed", 1, "--output", paths[1]) == 0
    assert run_cli(*common, "--seed", 2, "--output", paths[2]) == 0
    a, b, c = (_tables(p) for p in paths)
    assert a.keys() == b.keys()
    assert "/r0/event/telescope/tel_001" in a
    assert "/dl1/monitoring/telescope/calibration/camera/coefficients/tel_001" in a
    assert len(a["/dl1/event/subarray/trigger"]) > 5
    for key in a:
        assert _equal_with_nan(a[key], b[key]), key
    assert not np.array_equal(a["/simulation/event/subarray/shower"]["true_energy"][:5],
                              c["/simulation/event/subarray/shower"]["true_energy"][:5])
    assert a["/simulation/service/shower_distribution"]["n_entries"][0] == 150


def test_compact_dl0_holds_the_selected_gain_samples_of_the_r0_run(tmp_path):
    """--compact-dl0 and --write-r0 with one seed simulate the same events: the compact file stores the R0 of
    the selected gain, DL0Reader calibrates it in float32 as calibrate_r1 does, and iactpipe-dl0-to-dl1 processes it."""
    from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step

    common = ["--particle", "gamma", "--n-showers", 120, "--energy-min", 0.5, "--energy-max", 20,
              "--telescopes", 1, 2, 3, 4, "--scatter-radius", 200, "--seed", 4]
    full, compact = tmp_path / "r0.dl0.h5", tmp_path / "compact.dl0.h5"
    assert run_cli(*common, "--write-r0", "--output", full) == 0
    assert run_cli(*common, "--compact-dl0", "--output", compact) == 0
    assert validate_file(compact, require_schema=True) == []
    with tables.open_file(compact) as h5:
        assert h5.root._v_attrs["CTA PRODUCT DATA LEVELS"] == "DL0"
        assert "/r1/event/telescope" not in h5 and "/dl0/event/telescope/samples/tel_001" in h5
    with DL0Reader(full) as a, DL0Reader(compact) as b:
        assert b.kind == "dl0"
        calibration = a.run_info.calibration
        pairs = list(zip(a.iter_batches(50), b.iter_batches(50), strict=True))
    n_tel_events = 0
    for batch_r0, batch_dl0 in pairs:
        np.testing.assert_array_equal(batch_r0.event_id, batch_dl0.event_id)
        assert batch_r0.tel.keys() == batch_dl0.tel.keys()
        for tel_id, te in batch_r0.tel.items():
            other = batch_dl0.tel[tel_id]
            np.testing.assert_array_equal(other.selected_gain_channel, te.selected_gain_channel)
            c = calibration[tel_id]
            gain = te.selected_gain_channel.astype(np.intp)
            samples = np.take_along_axis(te.r0, gain[:, None, :, None], axis=1)[:, 0].astype(np.float32)
            pixels = np.arange(gain.shape[1])
            pedestal = c.pedestal_per_sample.astype(np.float32)[gain, pixels][..., None]
            factor = c.dc_to_pe.astype(np.float32)[gain, pixels][..., None]
            r1 = (samples - pedestal) * factor  # float32 numpy: the same two roundings as the kernel
            np.testing.assert_array_equal(other.r1.view(np.uint32), r1.view(np.uint32))
            n_tel_events += len(te)
    assert n_tel_events > 20
    assert compact.stat().st_size < 0.5 * full.stat().st_size
    dl1 = tmp_path / "compact.dl1.h5"
    assert Dl0ToDl1Step().main([str(compact), "-o", str(dl1), "--log-level", "WARNING"]) == 0
    with tables.open_file(dl1) as h5:
        rows = sum(n.nrows for n in h5.get_node("/dl1/event/telescope/parameters")._f_iter_nodes("Table"))
    assert rows == n_tel_events


def _equal_with_nan(x, y):
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    for name in x.dtype.names:
        u, v = x[name], y[name]
        if u.dtype.kind == "f":
            if not np.array_equal(u, v, equal_nan=True):
                return False
        elif not np.array_equal(u, v):
            return False
    return True


def test_cheap_preselection_does_not_lose_triggers():
    """Same showers with and without the analytic pre-selection: the triggered fraction agrees."""
    subarray = load_subarray("CTAO-North-Alpha", [1, 2, 3, 4])
    counts = []
    for preselection in (0.0, 0.5):
        sim, _ = simulate(subarray, particle="gamma", n_showers=4000, seed=9, energy_min=0.01, energy_max=3.0,
                          scatter_radius=800.0, images_only=True, preselection=preselection)
        counts.append(sim.n_triggered)
        if preselection:
            assert sim.n_candidates < 0.5 * sim.n_thrown  # most showers are rejected cheaply
    full, fast = counts
    assert full > 50
    assert abs(full - fast) < 3 * np.sqrt(full)


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("args,message", [
    (["--particle", "iron"], "particle"),
    (["--n-showers", "-5"], "n_showers"),
    (["--energy-min", "1 m"], "energy_min"),
    (["--energy-min", "10", "--energy-max", "1"], "energy_min"),
    (["--telescopes", "1", "99"], "telescopes"),
    (["--subarray", "NoSuchArray"], "subarray"),
    (["-c", "{config}"], "no_such_key"),
    (["--telescopes", "1", "--min-telescopes", "2"], "min_telescopes"),
    (["--images-only", "--write-r0"], "write_r0"),
    (["--compact-dl0", "--write-r0"], "compact_dl0"),
    (["--compact-dl0", "--images-only"], "compact_dl0"),
    (["--zenith", "nan"], "zenith"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, args, message):
    config = tmp_path / "bad.yaml"
    config.write_text("no_such_key: 1\n")
    out = tmp_path / "out.h5"
    assert run_cli(*[a.format(config=config) for a in args], "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [config]


def test_run_without_any_trigger_gives_a_complete_empty_file(tmp_path, caplog):
    """Nothing triggers at 10 GeV: the file still holds the run config and shower distribution,
    ctapipe's readers open it, and the user is warned."""
    from ctapipe.io import EventSource, TableLoader

    out = tmp_path / "empty.h5"
    assert SimulateStep().main(["--energy-min", "0.01", "--energy-max", "0.011", "--n-showers", "50",
                                "--output", str(out)]) == 0
    assert "no shower triggered the array" in caplog.text
    with EventSource(out) as source:
        assert sum(1 for _ in source) == 0
    with TableLoader(out) as loader:
        assert len(loader.read_subarray_events()) == 0
        assert loader.read_shower_distribution()["n_entries"].sum() == 50
    assert validate_file(out, require_schema=True) == []
