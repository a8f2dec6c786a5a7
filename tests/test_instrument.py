"""Instrument descriptions: from sim_telarray files, packaged data, layout tables, frames.

Reference: ctapipe 0.28 (SimTelEventSource, CameraGeometry, SubarrayDescription.from_hdf).
"""

import warnings

import numpy as np
import pytest
from astropy import units as u
from iactpipe.errors import ConfigError, DataError
from iactpipe.instrument import registry
from iactpipe.instrument.build_data import SOURCES, build_all
from iactpipe.instrument.camera import neighbors_csr
from iactpipe.instrument.frames import geometry_to_telescope_frame
from iactpipe.instrument.simtel import lookup_telescope, size_type_from_mirror_area
from iactpipe.instrument.subarray import SubarrayDescription
from iactpipe.io.simtel import SimTelReader

CAMERAS = ("LSTCam", "NectarCam", "FlashCam", "CHEC")


# -- comparison helpers (also used by test_simtel_reader) ---------------------------

def ctapipe_source(path, **kwargs):
    """ctapipe's SimTelEventSource; EQUIVALENT focal length where the file has no effective one."""
    from ctapipe.io import SimTelEventSource

    reader = SimTelReader(path, allow_truncated=True)
    choice = "EFFECTIVE"
    if any(not np.isfinite(t.optics.effective_focal_length) for t in reader.subarray.tels.values()):
        choice = "EQUIVALENT"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SimTelEventSource(path, focal_length_choice=choice, **kwargs)


def assert_telescope_matches(ours, theirs):
    """Our TelescopeDescription equals ctapipe's (names, optics, geometry, readout)."""
    assert ours.type == str(theirs)
    assert ours.name == theirs.name
    o, t = ours.optics, theirs.optics
    assert (o.name, o.size_type) == (t.name, t.size_type)
    assert o.reflector_shape == getattr(t.reflector_shape, "value", t.reflector_shape)
    assert o.mirror_area == t.mirror_area.to_value(u.m**2)
    assert (o.n_mirrors, o.n_mirror_tiles) == (t.n_mirrors, t.n_mirror_tiles)
    assert o.equivalent_focal_length == t.equivalent_focal_length.to_value(u.m)
    np.testing.assert_array_equal(o.effective_focal_length, t.effective_focal_length.to_value(u.m))

    g, tg = ours.geometry, theirs.camera.geometry
    assert g.name == tg.name == theirs.camera.name
    assert g.pix_type == tg.pix_type.value
    np.testing.assert_array_equal(g.pix_id, tg.pix_id)
    np.testing.assert_array_equal(g.pix_x, tg.pix_x.to_value(u.m))
    np.testing.assert_array_equal(g.pix_y, tg.pix_y.to_value(u.m))
    np.testing.assert_array_equal(g.pix_area, tg.pix_area.to_value(u.m**2))
    assert g.pix_rotation_deg == pytest.approx(tg.pix_rotation.to_value(u.deg), abs=1e-12)
    assert g.cam_rotation_deg == tg.cam_rotation.to_value(u.deg) == 0

    r, tr = ours.readout, theirs.camera.readout
    assert r.name == tr.name
    assert r.sampling_rate_ghz == tr.sampling_rate.to_value(u.GHz)
    np.testing.assert_array_equal(r.reference_pulse_shape, tr.reference_pulse_shape)
    assert r.reference_pulse_sample_width_ns == tr.reference_pulse_sample_width.to_value(u.ns)
    np.testing.assert_array_equal(r.reference_pulse_sample_time, tr.reference_pulse_sample_time.to_value(u.ns))
    assert (r.n_channels, r.n_pixels, r.n_samples) == (tr.n_channels, tr.n_pixels, tr.n_samples)


def assert_subarray_matches(ours, theirs, check_name=True):
    """Our SubarrayDescription equals ctapipe's (positions, reference point, telescopes)."""
    if check_name:
        assert ours.name == theirs.name
    assert [int(t) for t in ours.tel_ids] == sorted(theirs.tel)
    for tel_id in ours.tel_ids:
        np.testing.assert_array_equal(ours.tel_positions[tel_id], theirs.positions[tel_id].to_value(u.m))
        assert_telescope_matches(ours.tels[tel_id], theirs.tel[tel_id])
    ref = theirs.reference_location
    np.testing.assert_allclose(ours.reference_itrs, [c.to_value(u.m) for c in (ref.x, ref.y, ref.z)],
                               rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def source_subarrays(simtel_dir):
    """ctapipe's subarray of each source file of the packaged data."""
    result = {}
    for filename, _ in SOURCES.values():
        if filename not in result:
            source = ctapipe_source(simtel_dir / filename)
            result[filename] = source.subarray
            source.close()
    return result


def ctapipe_telescope(source_subarrays, name):
    filename, tel_id = SOURCES[name]
    return source_subarrays[filename].tel[tel_id]


# -- telescope identification -----------------------------------------------------

def test_lookup_telescope_matches_ctapipe_guess():
    from ctapipe.instrument.guess import TELESCOPE_NAMES, guess_telescope

    for key, _ in TELESCOPE_NAMES:
        theirs = guess_telescope(key.n_pixels, key.focal_length * u.m, key.n_mirror_tiles)
        ours = lookup_telescope(key.n_pixels, key.focal_length, key.n_mirror_tiles)
        assert ours == (theirs.type, theirs.name, theirs.camera_name, theirs.n_mirrors, theirs.reflector_shape.value)
    # unknown telescopes are named from mirror area and pixel count
    assert lookup_telescope(7987, 28.0, 100, mirror_area=387.0) == (
        "LST", "UNKNOWN-387M2", "UNKNOWN-7987PX", -1, "UNKNOWN")


@pytest.mark.parametrize("area", [10.0, 50.0, 49.5, 200.0, 201.2, 400.0])
def test_size_type_from_mirror_area(area):
    from ctapipe.instrument.guess import type_from_mirror_area

    assert size_type_from_mirror_area(area) == type_from_mirror_area(area * u.m**2)


# -- packaged data ------------------------------------------------------------------

def test_packaged_alpha_equals_ctapipe_view_of_source(source_subarrays):
    ours = registry.load_subarray()  # default
    assert ours.n_tels == 13
    sizes = [ours.tels[t].optics.size_type for t in ours.tel_ids]
    assert sizes.count("LST") == 4 and sizes.count("MST") == 9
    assert {ours.tels[t].camera_name for t in ours.tel_ids} == {"LSTN-design", "MSTx-NectarCam"}
    assert_subarray_matches(ours, source_subarrays[SOURCES["CTAO-North-Alpha"][0]])


@pytest.mark.parametrize("name", CAMERAS)
def test_packaged_camera_equals_ctapipe_view_of_source(source_subarrays, name):
    subarray = registry.load_subarray(name)
    assert list(subarray.tel_ids) == [1]
    np.testing.assert_array_equal(subarray.tel_positions[1], [0, 0, 0])
    assert_telescope_matches(subarray.tels[1], ctapipe_telescope(source_subarrays, name))
    assert name in subarray.tels[1].camera_name or name == "LSTCam"


@pytest.mark.parametrize("name", list(registry.PACKAGED_SUBARRAYS))
def test_ctapipe_reads_packaged_files(source_subarrays, name):
    from ctapipe.instrument import SubarrayDescription as CtapipeSubarray

    path = registry._data_path(registry.PACKAGED_SUBARRAYS[name])
    theirs = CtapipeSubarray.from_hdf(path)
    ours = registry.load_subarray(name)
    assert_subarray_matches(ours, theirs)
    filename, tel_id = SOURCES[name]
    source = source_subarrays[filename]
    if tel_id is None:
        assert theirs == source
    else:
        assert theirs.tel[1] == source.tel[tel_id]


def test_packaged_files_small_and_documented():
    total = sum(registry._data_path(f).stat().st_size for f in registry.PACKAGED_SUBARRAYS.values())
    assert total < 2 * 1024**2
    readme = registry._data_path("README.md").read_text()
    for name, (filename, _) in SOURCES.items():
        assert f"{name}.h5" in readme and filename[:30] in readme


def test_build_data_regenerates_packaged_files(simtel_dir, tmp_path):
    written = build_all(simtel_dir, tmp_path)
    assert sorted(p.name for p in written) == sorted(registry.PACKAGED_SUBARRAYS.values())
    for path in written:
        rebuilt = SubarrayDescription.from_hdf(path)
        packaged = registry.load_subarray(path.stem)
        assert rebuilt.name == packaged.name
        assert list(rebuilt.tel_ids) == list(packaged.tel_ids)
        for tel_id in rebuilt.tel_ids:
            a, b = rebuilt.tels[tel_id], packaged.tels[tel_id]
            assert a.optics == b.optics and a.geometry == b.geometry and a.readout == b.readout
            np.testing.assert_array_equal(rebuilt.tel_positions[tel_id], packaged.tel_positions[tel_id])
        assert rebuilt.reference_itrs == packaged.reference_itrs


def test_build_data_cli_error_is_one_line(tmp_path, capsys):
    from iactpipe.instrument.build_data import main

    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err


def test_available_telescopes():
    types = registry.available_telescopes()
    for expected in ("LST_LST_LSTCam", "MST_MSTx-NectarCam_MSTx-NectarCam", "MST_MST_FlashCam",
                     "SST_GCT_CHEC", "LST_LSTN-design_LSTN-design"):
        assert expected in types
    assert len(types) == len(set(types))
    assert registry.telescope_description("SST_GCT_CHEC").geometry.pix_type == "square"


def test_load_subarray_names_are_case_insensitive_and_copies():
    a = registry.load_subarray("lstcam")
    a.tel_positions[1][:] = 5.0
    b = registry.load_subarray("LSTCam")
    np.testing.assert_array_equal(b.tel_positions[1], [0, 0, 0])


# -- user files -----------------------------------------------------------------------

def test_load_subarray_from_hdf5(tmp_path, alpha_simtel, source_subarrays):
    # our own instrument file and a ctapipe-written one (DL1 of the Alpha file)
    ours = SimTelReader(alpha_simtel).subarray
    path = tmp_path / "inst.h5"
    ours.write(path)
    assert_subarray_matches(registry.load_subarray(path), source_subarrays[alpha_simtel.name])
    ctapipe_file = tmp_path / "ctapipe_inst.h5"
    source_subarrays[alpha_simtel.name].to_hdf(ctapipe_file)
    assert_subarray_matches(registry.load_subarray(str(ctapipe_file)), source_subarrays[alpha_simtel.name])


def test_layout_ecsv_with_units(tmp_path):
    from astropy.table import Table

    table = Table({
        "tel_id": [3, 1, 7],
        "pos_x": [10.0, -20.0, 0.5] * u.km,
        "pos_y": [0.0, 1.0, 2.0] * u.m,
        "pos_z": [1.0, 2.0, 3.0] * u.m,
        "telescope": ["LST_LST_LSTCam", "MST_MST_FlashCam", "SST_GCT_CHEC"],
    }, meta={"name": "my-array", "reference_itrs": [1.0, 2.0, 3.0]})
    path = tmp_path / "layout.ecsv"
    table.write(path)
    subarray = registry.load_subarray(path)
    assert subarray.name == "my-array"
    assert list(subarray.tel_ids) == [1, 3, 7]
    np.testing.assert_allclose(subarray.tel_positions[3], [10000.0, 0.0, 1.0])
    np.testing.assert_allclose(subarray.tel_positions[1], [-20000.0, 1.0, 2.0])
    assert subarray.tels[3].type == "LST_LST_LSTCam"
    assert subarray.tels[7].geometry == registry.load_subarray("CHEC").tels[1].geometry
    assert subarray.reference_itrs == (1.0, 2.0, 3.0)
    # and it round-trips through our HDF5 and ctapipe reads it
    from ctapipe.instrument import SubarrayDescription as CtapipeSubarray

    h5 = tmp_path / "layout.h5"
    subarray.write(h5)
    theirs = CtapipeSubarray.from_hdf(h5)
    assert sorted(theirs.tel) == [1, 3, 7]
    assert str(theirs.tel[1]) == "MST_MST_FlashCam"


def test_layout_csv(tmp_path):
    path = tmp_path / "north.csv"
    path.write_text("tel_id,pos_x,pos_y,pos_z,telescope\n"
                    "1,-70.91,-52.35,45.0,LST_LSTN-design_LSTN-design\n"
                    "5,-0.02,-0.01,2.5,MST_MSTx-NectarCam_MSTx-NectarCam\n")
    subarray = registry.load_subarray(str(path))
    assert subarray.name == "north"
    np.testing.assert_allclose(subarray.tel_positions[1], [-70.91, -52.35, 45.0])
    alpha = registry.load_subarray()
    assert subarray.tels[1].readout == alpha.tels[1].readout
    assert subarray.tels[5].geometry == alpha.tels[5].geometry


@pytest.mark.parametrize("content, message", [
    ("tel_id,pos_x,pos_y,telescope\n1,0,0,LST_LST_LSTCam\n", "lacks column(s) pos_z"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1,0,0,0,LST_LST_NoSuchCam\n", "unknown telescope type 'LST_LST_NoSuchCam'"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1,0,0,0,SST_GCT_CHEC\n1,5,0,0,SST_GCT_CHEC\n", "duplicate tel_id 1"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1,abc,0,0,SST_GCT_CHEC\n", "column pos_x must be numeric"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1.5,0,0,0,SST_GCT_CHEC\n", "tel_id must hold integers"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n0,0,0,0,SST_GCT_CHEC\n", "tel_id must be between"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n", "no rows"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1,,0,0,SST_GCT_CHEC\n", "column pos_x has missing values"),
    ("tel_id,pos_x,pos_y,pos_z,telescope\n1,0,0,0,\n", "column telescope has missing values"),
])
def test_bad_layout_tables_give_one_line_config_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        registry.load_subarray(path)
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text
    assert info.value.exit_code == 2


def test_bad_ecsv_unit(tmp_path):
    from astropy.table import Table

    path = tmp_path / "bad.ecsv"
    Table({"tel_id": [1], "pos_x": [1.0] * u.s, "pos_y": [0.0], "pos_z": [0.0],
           "telescope": ["SST_GCT_CHEC"]}).write(path)
    with pytest.raises(ConfigError, match="pos_x has unit s"):
        registry.load_subarray(path)


def test_unknown_name_and_missing_or_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown subarray 'CTAO-South'") as info:
        registry.load_subarray("CTAO-South")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        registry.load_subarray(tmp_path / "missing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="garbage.h5"):
        registry.load_subarray(garbage)
    other = tmp_path / "layout.txt"
    other.write_text("x")
    with pytest.raises(ConfigError, match="unknown subarray file type"):
        registry.load_subarray(other)
    with pytest.raises(ConfigError, match="unknown telescope type"):
        registry.telescope_description("MST_MST_NoCam")


# -- neighbours and frames --------------------------------------------------------------

@pytest.mark.parametrize("name", CAMERAS)
def test_neighbors_equal_ctapipe(source_subarrays, name):
    theirs = ctapipe_telescope(source_subarrays, name).camera.geometry
    geometry = registry.load_subarray(name).tels[1].geometry
    np.testing.assert_array_equal(geometry.neighbor_matrix, theirs.neighbor_matrix)
    indptr, indices = geometry.neighbors
    assert indptr[-1] == theirs.neighbor_matrix.sum()
    if geometry.pix_type == "square":  # CHEC: also the 8-neighbourhood
        indptr, indices = neighbors_csr(geometry.pix_x, geometry.pix_y, "square", diagonal=True)
        dense = np.zeros((geometry.n_pixels, geometry.n_pixels), dtype=bool)
        dense[np.repeat(np.arange(geometry.n_pixels), np.diff(indptr)), indices] = True
        np.testing.assert_array_equal(dense, theirs.calc_pixel_neighbors(diagonal=True).toarray())
        assert np.diff(indptr).max() == 8


def _kdtree_neighbors(x, y, k, radius, norm):
    """ctapipe's own construction (scipy k-d tree), as the reference for ours."""
    from scipy.spatial import cKDTree

    distances, candidates = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=k + 1, p=norm)
    inside = distances[:, 1:] < radius * distances[:, 1:].min(axis=1)[:, np.newaxis]
    return [sorted(c[1:][m]) for c, m in zip(candidates, inside, strict=True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbors_equal_a_kdtree_on_irregular_pixels(seed):
    """Jittered hexagonal and square grids with holes (no exact distance ties): the same lists as scipy's k-d tree."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(40), np.arange(35))
    hex_x, hex_y = (i + 0.5 * (j % 2)).ravel() * 0.05, j.ravel() * 0.05 * np.sqrt(3) / 2
    cases = [(hex_x, hex_y, "hexagon", False, 6, 1.4, 2), (i.ravel() * 0.006, j.ravel() * 0.006, "square", False, 4, 1.5, 1),
             (i.ravel() * 0.006, j.ravel() * 0.006, "square", True, 8, 1.95, 2)]
    for x, y, pix_type, diagonal, k, radius, norm in cases:
        keep = rng.uniform(size=len(x)) > 0.1
        scale = 0.05 if pix_type == "hexagon" else 0.006
        x = x[keep] + rng.normal(0, 0.03 * scale, keep.sum())
        y = y[keep] + rng.normal(0, 0.03 * scale, keep.sum())
        indptr, indices = neighbors_csr(x, y, pix_type, diagonal=diagonal)
        expected = _kdtree_neighbors(x, y, k, radius, norm)
        assert [list(indices[indptr[p]:indptr[p + 1]]) for p in range(len(x))] == expected, (pix_type, diagonal)
    assert neighbors_csr(np.zeros(1), np.zeros(1), "hexagon")[0].tolist() == [0, 0]
    indptr, indices = neighbors_csr(np.array([0.0, 1.0, 3.0]), np.zeros(3), "hexagon")
    assert indptr.tolist() == [0, 1, 2, 3] and indices.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="pixel positions must be finite"):
        neighbors_csr(np.arange(5.0), np.array([0, np.nan, 0, 0, 0]), "hexagon")


@pytest.mark.parametrize("name", CAMERAS)
def test_telescope_frame_equals_ctapipe(source_subarrays, name):
    from ctapipe.coordinates import TelescopeFrame

    tel = ctapipe_telescope(source_subarrays, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tel.camera.geometry.transform_to(TelescopeFrame())
    ours = registry.load_subarray(name).tels[1]
    assert ours.optics.focal_length == tel.camera.geometry.frame.focal_length.to_value(u.m)
    lon, lat, area = geometry_to_telescope_frame(ours.geometry, ours.optics.focal_length)
    np.testing.assert_allclose(lon, theirs.pix_x.to_value(u.deg), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lat, theirs.pix_y.to_value(u.deg), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(area, theirs.pix_area.to_value(u.deg**2), rtol=1e-10)


def test_prod3_files_fall_back_to_equivalent_focal_length(simtel_dir):
    reader = SimTelReader(simtel_dir / "lst_muons.simtel.zst")
    optics = reader.subarray.tels[1].optics
    assert np.isnan(optics.effective_focal_length)
    assert optics.focal_length == optics.equivalent_focal_length == 28.0
    source = ctapipe_source(simtel_dir / "lst_muons.simtel.zst")
    assert_subarray_matches(reader.subarray, source.subarray)
    assert source.subarray.tel[1].camera.geometry.frame.focal_length.to_value(u.m) == optics.focal_length



def test_selection_names_like_ctapipe():
    from ctapipe.instrument.subarray import _range_extraction
    from iactpipe.instrument.subarray import tel_id_ranges

    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.choice(np.arange(1, 40), size=rng.integers(1, 20), replace=False)
        assert tel_id_ranges(ids) == _range_extraction(ids.tolist())
    alpha = registry.load_subarray()
    assert alpha.select([1, 2, 3, 4, 9]).name == "alpha_1-4,9"
