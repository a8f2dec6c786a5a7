"""iactpipe.io.loader against ctapipe's TableLoader on the same files (ours and ctapipe's)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tables
from iactpipe.errors import DataError
from iactpipe.io.loader import (
    EventFile,
    iter_telescope_events,
    read_subarray_events,
    read_telescope_events,
    read_telescope_events_by_id,
    telescope_types,
)

CTAPIPE_DL2 = Path("/tmp/ref/g.dl2.h5")


def _plain(column):
    """A column of an astropy table as a plain numpy array in the stored unit."""
    from astropy.time import Time

    if isinstance(column, Time):
        return column.tai.mjd
    value = getattr(column, "value", column)
    if np.ma.isMaskedArray(value):
        value = value.filled(np.nan if value.dtype.kind == "f" else -1)
    return np.asarray(value)


def _assert_same_columns(ours, theirs, context):
    # ctapipe names the telescope trigger's time and event_type "<name>_mono" after its join too
    compared = 0
    for name in theirs.colnames:
        if name not in ours:
            continue
        expected = _plain(theirs[name])
        got = ours[name]
        if name.startswith("time"):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=f"{context}: {name}")
        elif expected.dtype.kind == "f":
            np.testing.assert_array_equal(got.astype(np.float64), expected.astype(np.float64),
                                          err_msg=f"{context}: {name}")
        else:
            np.testing.assert_array_equal(got, expected, err_msg=f"{context}: {name}")
        compared += 1
    return compared


@pytest.fixture(scope="module")
def gamma_dl1(sim_dl1_sample):
    return sim_dl1_sample["gamma"]


def _reference_files(gamma_dl1):
    files = [gamma_dl1]
    if CTAPIPE_DL2.exists():
        files.append(CTAPIPE_DL2)
    return files


def test_telescope_types_match_ctapipe(gamma_dl1):
    from ctapipe.instrument import SubarrayDescription

    for path in _reference_files(gamma_dl1):
        subarray = SubarrayDescription.from_hdf(path)
        expected = {}
        for tel_id, tel in subarray.tel.items():
            expected.setdefault(str(tel), []).append(tel_id)
        assert telescope_types(path) == {k: sorted(v) for k, v in expected.items()}


def test_telescope_events_equal_tableloader(gamma_dl1):
    from ctapipe.io import TableLoader

    for path in _reference_files(gamma_dl1):
        ours = read_telescope_events(path)
        with TableLoader(path) as loader:
            theirs = loader.read_telescope_events_by_type(dl2=True, simulated=True, true_parameters=True,
                                                          pointing=True)
        assert set(ours) == set(theirs)
        for tel_type, table in theirs.items():
            missing = set(table.colnames) - set(ours[tel_type])
            assert not missing, f"{path.name} {tel_type}: columns of ctapipe's TableLoader missing: {missing}"
            assert len(ours[tel_type]["event_id"]) == len(table)
            n = _assert_same_columns(ours[tel_type], table, f"{path.name} {tel_type}")
            assert n == len(table.colnames)


def test_subarray_events_equal_tableloader(gamma_dl1):
    from ctapipe.io import TableLoader

    for path in _reference_files(gamma_dl1):
        ours = read_subarray_events(path)
        with TableLoader(path) as loader:
            theirs = loader.read_subarray_events(dl2=True, simulated=True)
        assert set(theirs.colnames) <= set(ours)
        assert _assert_same_columns(ours, theirs, path.name) == len(theirs.colnames)
        assert np.array_equal(ours["event_index"], np.arange(len(theirs)))


def test_chunks_concatenate_to_full_read(gamma_dl1):
    full = read_telescope_events(gamma_dl1)
    chunks = list(iter_telescope_events(gamma_dl1, chunk_size=97))
    with EventFile(gamma_dl1) as f:
        n_events = len(f)
    assert chunks[0][0] == 0 and chunks[-1][1] == n_events
    for tel_type, columns in full.items():
        for name, values in columns.items():
            joined = np.concatenate([c[tel_type][name] for _, _, c in chunks if tel_type in c])
            np.testing.assert_array_equal(joined, values, err_msg=f"{tel_type} {name}")


def test_by_id_selection_and_flags(gamma_dl1):
    by_id = read_telescope_events_by_id(gamma_dl1, tel_ids=[1, 5], dl2=False, truth=False, pointing=False,
                                        start=10, stop=200)
    assert set(by_id) <= {1, 5}
    with EventFile(gamma_dl1) as f:
        sub = f.read_subarray_events(10, 200)
        index = f.subarray.tel_index
    for tel_id, cols in by_id.items():
        assert np.all(cols["tel_id"] == tel_id)
        assert not any(name.startswith("true_") for name in cols)
        assert "telescope_pointing_altitude" not in cols
        # exactly the events in which this telescope triggered
        expected = sub["event_id"][sub["tels_with_trigger"][:, index[tel_id]]]
        np.testing.assert_array_equal(cols["event_id"], expected)
        assert np.all((cols["event_index"] >= 10) & (cols["event_index"] < 200))


def test_missing_rows_are_filled_not_shifted(gamma_dl1, tmp_path):
    """A per-telescope table with a row less: that row gets NaN, all others keep their values."""
    path = tmp_path / "holes.h5"
    shutil.copy(gamma_dl1, path)
    with tables.open_file(path, "a") as h5:
        node = h5.get_node("/simulation/event/telescope/impact/tel_001")
        removed = node.read(3, 4)[0]
        node.remove_rows(3, 4)
    cols = read_telescope_events_by_id(path, tel_ids=[1])[1]
    ref = read_telescope_events_by_id(gamma_dl1, tel_ids=[1])[1]
    hole = (cols["event_id"] == removed["event_id"])
    assert hole.sum() == 1
    assert np.isnan(cols["true_impact_distance"][hole]).all()
    np.testing.assert_array_equal(cols["true_impact_distance"][~hole], ref["true_impact_distance"][~hole])
    np.testing.assert_array_equal(cols["hillas_intensity"], ref["hillas_intensity"])


def test_units_from_file(gamma_dl1):
    with EventFile(gamma_dl1) as f:
        units = f.units()
    assert units["hillas_fov_lon"] == "deg"
    assert units["true_energy"] == "TeV"
    assert units["telescope_pointing_altitude"] == "rad"


def test_errors_name_the_file(tmp_path, gamma_dl1):
    with pytest.raises(DataError, match="nothere.h5: no such file"):
        read_telescope_events(tmp_path / "nothere.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="text.h5: not a readable HDF5 file"):
        read_subarray_events(text)
    empty = tmp_path / "instrument_only.h5"
    from iactpipe.instrument.subarray import SubarrayDescription

    SubarrayDescription.from_hdf(gamma_dl1).write(empty)
    with pytest.raises(DataError, match=r"instrument_only.h5: .*/dl1/event/subarray/trigger missing"):
        read_telescope_events(empty)
    with pytest.raises(DataError, match=r"tel_ids \[99\]"):
        read_telescope_events(gamma_dl1, tel_ids=[99])


def test_tracking_pointing_is_interpolated_per_event_like_ctapipe(tmp_path):
    """An observed (tracking) run: per-event telescope pointing from the monitoring series equals ctapipe's."""
    import astropy.units as u
    from ctapipe.io import TableLoader
    from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step
    from iactpipe.steps.simulate import SimulateStep

    dl0, dl1 = tmp_path / "obs.dl0.h5", tmp_path / "obs.dl1.h5"
    assert SimulateStep().main(["--observation", "--duration", "20", "--seed", "5", "--images-only",
                                "--telescopes", "1", "2", "5", "6", "--output", str(dl0), "--log-level", "WARNING"]) == 0
    assert Dl0ToDl1Step().main([str(dl0), "--output", str(dl1), "--log-level", "WARNING"]) == 0
    ours = read_telescope_events_by_id(dl1, truth=False, dl2=False)
    with TableLoader(dl1) as loader:
        theirs = loader.read_telescope_events_by_id(dl1_parameters=True, pointing=True)
    for tel_id, cols in ours.items():
        ref = theirs[tel_id]
        np.testing.assert_array_equal(cols["event_id"], ref["event_id"])
        for name in ("telescope_pointing_altitude", "telescope_pointing_azimuth"):
            np.testing.assert_allclose(cols[name], u.Quantity(ref[name], ref[name].unit).to_value(u.rad), rtol=0, atol=1e-9,
                                       err_msg=name)
        assert np.ptp(cols["telescope_pointing_altitude"]) > 1e-5  # the pointing moves during the run


def test_no_unpickling_keeps_class_references_raw(tmp_path):
    """Inside no_unpickling, attributes that pickle a class stay their raw bytes (nothing imported),
    plain pickled data still loads, and a copy writes the bytes back unchanged."""
    import pickle
    from collections import OrderedDict

    import tables.attributeset
    from iactpipe.io.tables import _enum_reference, no_unpickling

    path, copy = tmp_path / "attrs.h5", tmp_path / "copy.h5"
    enum_ref = _enum_reference("ctapipe.containers", "EventType")
    with tables.open_file(path, "w") as h5:
        table = h5.create_table("/", "t", {"x": tables.Int32Col()})
        table.attrs["ENUM"] = enum_ref
        table.attrs["CLS"] = OrderedDict  # pickled by PyTables
        table.attrs["DATA"] = {"a": [1, 2.5]}
    with no_unpickling():
        with tables.open_file(path) as h5:
            attrs = h5.root.t.attrs
            assert attrs["ENUM"] == enum_ref
            assert isinstance(attrs["CLS"], bytes) and pickle.loads(attrs["CLS"]) is OrderedDict
            assert attrs["DATA"] == {"a": [1, 2.5]}
            with tables.open_file(copy, "w") as out:
                h5.root.t._f_copy(out.root, "t", copyuserattrs=True)
    assert tables.attributeset.pickle is pickle  # restored
    with tables.open_file(path) as h5, tables.open_file(copy) as h5_copy:
        node, node_copy = h5.root.t, h5_copy.root.t
        assert node_copy.attrs._g_getattr(node_copy, "ENUM") == node.attrs._g_getattr(node, "ENUM")
        from ctapipe.containers import EventType

        assert node_copy.attrs["ENUM"] is EventType  # outside the context: ctapipe's reading is unchanged
        assert node_copy.attrs["CLS"] is OrderedDict


def test_dl1_to_dl2_does_not_import_ctapipe(gamma_dl1, tmp_path):
    """Start-up: the step reads our DL1 file (enum attributes included) without importing ctapipe."""
    from conftest import modules_imported_by_step

    argv = [gamma_dl1, "-o", tmp_path / "out.h5", "--log-level", "WARNING"]
    assert modules_imported_by_step("dl1_to_dl2", argv, ("ctapipe", "astropy")) == []
    assert (tmp_path / "out.h5").exists()
