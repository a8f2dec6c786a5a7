"""Our DL0 HDF5 format: DL0Writer/DL0Reader round trips, schemas, ctapipe interoperability."""

import numpy as np
import pytest
import tables
from iactpipe.errors import DataError
from iactpipe.io.dl0 import DL0Reader, DL0Writer, high_res_to_mjd, mjd_to_high_res
from iactpipe.io.tables import validate_file
from iactpipe.simulation.simulator import ShowerSimulator, SimulationConfig, load_subarray


def _simulate(path, mode, n_showers=200, seed=3, **overrides):
    """A small 4-LST run written with DL0Writer; returns (simulator, list of batches)."""
    subarray = load_subarray("CTAO-North-Alpha", [1, 2, 3, 4])
    config = SimulationConfig(n_showers=n_showers, seed=seed, energy_min=0.1, energy_max=10.0,
                              scatter_radius=250.0, chunk_size=100, images_only=mode == "images",
                              write_r0=mode == "r0", **overrides)
    sim = ShowerSimulator(config, subarray)
    batches = []
    with DL0Writer(path, sim.run_info(), mode=mode) as writer:
        for batch in sim.iter_batches():
            writer.write(batch)
            batches.append(batch)
        writer.close(sim.shower_distribution)
    return sim, batches


@pytest.fixture(scope="module")
def r0_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dl0") / "gamma_r0.dl0.h5"
    sim, batches = _simulate(path, "r0")
    return path, sim, batches


@pytest.fixture(scope="module")
def images_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dl0") / "gamma_images.dl0.h5"
    sim, batches = _simulate(path, "images")
    return path, sim, batches


def _concat(batches, getter):
    parts = [getter(b) for b in batches if len(b)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _tel_concat(batches, tel_id, attr):
    return np.concatenate([getattr(b.tel[tel_id], attr) for b in batches if tel_id in b.tel])


@pytest.mark.parametrize("batch_size", [7, 10000])
def test_r0_round_trip(r0_file, batch_size):
    path, sim, written = r0_file
    assert sum(len(b) for b in written) > 20
    with DL0Reader(path) as reader:
        assert reader.kind == "r0"
        read = list(reader.iter_batches(batch_size))
        info = reader.run_info
    assert all(len(b) <= batch_size for b in read)
    for getter in (lambda b: b.event_id, lambda b: b.tels_with_trigger, lambda b: b.event_type):
        np.testing.assert_array_equal(_concat(read, getter), _concat(written, getter))
    np.testing.assert_allclose(_concat(read, lambda b: b.time_mjd), _concat(written, lambda b: b.time_mjd),
                               rtol=0, atol=1e-6 / 86400)
    for key in written[0].shower:
        np.testing.assert_array_equal(np.concatenate([b.shower[key] for b in read]),
                                      np.concatenate([b.shower[key] for b in written]))
    for tel_id in (1, 2, 3, 4):
        for attr in ("event_id", "r1", "r0", "selected_gain_channel", "pixel_status", "true_image",
                     "true_impact_distance", "n_trigger_pixels"):
            np.testing.assert_array_equal(_tel_concat(read, tel_id, attr), _tel_concat(written, tel_id, attr),
                                          err_msg=f"tel {tel_id} {attr}")
    # run information and calibration coefficients
    assert info.obs_id == 1 and info.is_simulation
    assert info.pointing_alt == pytest.approx(70.0) and info.pointing_az == pytest.approx(0.0, abs=1e-6)
    assert info.simulation_config["n_showers"] == sim.n_thrown
    assert info.shower_distribution["n_entries"] == sim.n_thrown
    assert info.shower_distribution["histogram"].sum() == sim.n_thrown
    for tel_id, calib in sim.calibration.items():
        np.testing.assert_array_equal(info.calibration[tel_id].dc_to_pe, calib.dc_to_pe)
        np.testing.assert_array_equal(info.calibration[tel_id].pedestal_per_sample, calib.pedestal_per_sample)


def test_r1_is_r0_calibrated_with_the_written_coefficients(r0_file):
    path, _, _ = r0_file
    with DL0Reader(path) as reader:
        calib = reader.run_info.calibration
        batch = next(reader.iter_batches(50))
    for tel_id, te in batch.tel.items():
        c = calib[tel_id]
        pix = np.arange(te.r0.shape[2])
        for k in range(len(te)):
            gain = te.selected_gain_channel[k]
            expected = (te.r0[k, gain, pix].astype(np.float64) - c.pedestal_per_sample[gain, pix, None]) \
                * c.dc_to_pe[gain, pix, None]
            np.testing.assert_allclose(te.r1[k], expected, rtol=1e-5, atol=1e-5)
            # low gain exactly where the high gain reached the selection threshold
            np.testing.assert_array_equal(gain == 1, te.r0[k, 0].max(axis=1) >= 4000)
            np.testing.assert_array_equal(te.pixel_status[k] & 12, np.where(gain == 0, 4, 8))


def test_images_round_trip(images_file):
    path, _, written = images_file
    with DL0Reader(path) as reader:
        assert reader.kind == "images"
        read = list(reader.iter_batches(13))
    for tel_id in (1, 2, 3, 4):
        for attr in ("image", "peak_time", "true_image", "true_impact_distance"):
            np.testing.assert_array_equal(_tel_concat(read, tel_id, attr), _tel_concat(written, tel_id, attr))
        assert all(b.tel[tel_id].r1 is None for b in read if tel_id in b.tel)


@pytest.mark.parametrize("fixture", ["r0_file", "images_file"])
def test_every_table_matches_its_schema(request, fixture):
    path = request.getfixturevalue(fixture)[0]
    assert validate_file(path, require_schema=True) == []


def test_high_res_times_match_ctapipe():
    from astropy.time import Time
    from ctapipe.time import ctao_high_res_to_time, time_to_ctao_high_res

    mjd = np.array([60676.0, 60676.5 + 1.234567e-6, 40587.0 + 9 / 86400, 61000.123456789])
    ours = mjd_to_high_res(mjd)
    theirs = time_to_ctao_high_res(Time(mjd, format="mjd", scale="tai"))
    np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])
    np.testing.assert_allclose(ours[:, 1].astype(float), theirs[:, 1].astype(float), atol=4e3)  # < 1 us
    back = ctao_high_res_to_time(ours[:, 0], ours[:, 1]).tai.mjd
    np.testing.assert_allclose(high_res_to_mjd(ours), back, rtol=0, atol=1e-11)


def test_ctapipe_table_loader_reads_the_r0_file(r0_file):
    from ctapipe.io import TableLoader

    path, sim, written = r0_file
    n_events = sum(len(b) for b in written)
    with TableLoader(path) as loader:
        events = loader.read_subarray_events(simulated=True)
        tel_events = loader.read_telescope_events(simulated=True, true_images=True, instrument=True)
        assert loader.subarray.n_tels == 4
    assert len(events) == n_events
    np.testing.assert_array_equal(events["event_id"], _concat(written, lambda b: b.event_id))
    np.testing.assert_allclose(events["true_energy"].quantity.to_value("TeV"),
                               _concat(written, lambda b: b.shower["true_energy"]))
    assert len(tel_events) == sum(b.tels_with_trigger.sum() for b in written)
    for col in ("true_image", "true_impact_distance", "telescope_pointing_altitude", "mirror_area"):
        assert col in tel_events.colnames


def test_true_impact_distance_is_ctapipes(r0_file):
    import astropy.units as u
    from ctapipe.containers import SimulatedShowerContainer
    from ctapipe.coordinates import shower_impact_distance
    from ctapipe.instrument import SubarrayDescription as CtapipeSubarray

    path, _, written = r0_file
    subarray = CtapipeSubarray.from_hdf(path)
    batch = next(b for b in written if len(b))
    for k in range(min(len(batch), 5)):
        s = batch.shower
        shower = SimulatedShowerContainer(alt=s["true_alt"][k] * u.deg, az=s["true_az"][k] * u.deg,
                                          core_x=s["true_core_x"][k] * u.m, core_y=s["true_core_y"][k] * u.m)
        expected = shower_impact_distance(shower, subarray).to_value(u.m)
        for tel_id, te in batch.tel.items():
            row = np.nonzero(te.event_id == batch.event_id[k])[0]
            if len(row):
                assert te.true_impact_distance[row[0]] == pytest.approx(expected[tel_id - 1], rel=1e-6)


def test_ctapipe_hdf5_event_source_iterates_r1(r0_file):
    """ctapipe's own event source reads our R1 events, showers and impacts."""
    from ctapipe.io import HDF5EventSource

    path, sim, written = r0_file
    first = next(b for b in written if len(b))
    with HDF5EventSource(path) as source:
        assert source.is_simulation
        assert source.simulation_config[1].n_showers == sim.n_thrown
        for event, k in zip(source, range(len(first)), strict=False):
            assert event.index.event_id == first.event_id[k]
            assert event.simulation.shower.energy.to_value("TeV") == pytest.approx(first.shower["true_energy"][k])
            for tel_id in event.trigger.tels_with_trigger:
                te = first.tel[int(tel_id)]
                row = np.nonzero(te.event_id == first.event_id[k])[0][0]
                np.testing.assert_array_equal(event.r1.tel[tel_id].waveform[0], te.r1[row])
                assert event.simulation.tel[tel_id].impact.distance.to_value("m") == pytest.approx(
                    te.true_impact_distance[row])


def test_reader_errors_name_file_and_group(tmp_path, r0_file):
    with pytest.raises(DataError, match="no such file"):
        DL0Reader(tmp_path / "missing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        DL0Reader(text)
    # an instrument-only file: the trigger table is missing
    subarray = load_subarray("LSTCam")
    instrument = tmp_path / "instrument.h5"
    subarray.write(instrument)
    with pytest.raises(DataError) as err:
        DL0Reader(instrument)
    assert str(instrument) in str(err.value) and "/dl1/event/subarray/trigger" in str(err.value)
    assert "\n" not in str(err.value)
    # a DL0 file whose waveforms were removed
    broken = tmp_path / "broken.h5"
    broken.write_bytes(r0_file[0].read_bytes())
    with tables.open_file(broken, "a") as h5:
        h5.remove_node("/r1", recursive=True)
        h5.remove_node("/r0", recursive=True)
    with pytest.raises(DataError, match="/r1/event/telescope"):
        DL0Reader(broken)


def test_repeated_event_ids_round_trip(tmp_path, r0_file):
    """A replayed file repeats event ids: telescope rows must still go with their own events."""
    from dataclasses import replace

    path, sim, written = r0_file
    batch = max(written, key=len)
    assert len(batch) >= 6
    # ids 1, 2, 3, 1, 2, 3, ...: each id names several events of the batch
    new_ids = (np.arange(len(batch)) % 3 + 1).astype(np.int64)
    tel = {}
    for tel_id, te in batch.tel.items():
        rows = np.searchsorted(batch.event_id, te.event_id)
        assert np.array_equal(batch.event_id[rows], te.event_id)
        tel[tel_id] = replace(te, event_id=new_ids[rows])
    replayed = replace(batch, event_id=new_ids, tel=tel)
    out = tmp_path / "replayed.dl0.h5"
    with DL0Writer(out, sim.run_info(), mode="r1") as writer:
        writer.write(replayed)
        writer.write(replayed)
    with tables.open_file(out) as h5:
        tt = h5.root.dl1.event.telescope.trigger.read()
    assert len(tt) == 2 * sum(len(te) for te in tel.values())
    with DL0Reader(out) as reader:
        read = list(reader.iter_batches(len(batch) + 1))  # batches straddle the two copies
    np.testing.assert_array_equal(np.concatenate([b.event_id for b in read]), np.tile(new_ids, 2))
    for tel_id, te in tel.items():
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "event_id"), np.tile(te.event_id, 2))
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "r1"), np.concatenate([te.r1, te.r1]))
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "n_trigger_pixels"),
                                      np.tile(te.n_trigger_pixels, 2))


def test_batch_positions_match_rows_sequentially():
    from iactpipe.io.dl0 import batch_positions

    ids = np.array([5, 7, 5, 7, 9])
    np.testing.assert_array_equal(batch_positions(ids, [7, 5, 9]), [1, 2, 4])
    np.testing.assert_array_equal(batch_positions(ids, [5, 5, 7]), [0, 2, 3])
    triggered = np.array([False, True, True, False, False])
    np.testing.assert_array_equal(batch_positions(ids, [7, 5], triggered), [1, 2])
    with pytest.raises(ValueError, match="event 5, not in the batch"):
        batch_positions(ids, [9, 5])  # out of order


def test_reading_a_telescope_selection(r0_file):
    path, _, _ = r0_file
    with DL0Reader(path) as reader:
        full = list(reader.iter_batches(9))
        some = list(reader.iter_batches(9, tel_ids=[2, 4]))
        with pytest.raises(ValueError, match=r"\[7\]"):
            next(reader.iter_batches(9, tel_ids=[2, 7]))
    assert len(some) == len(full)
    for a, b in zip(full, some, strict=True):
        np.testing.assert_array_equal(a.tels_with_trigger, b.tels_with_trigger)
        assert set(b.tel) == set(a.tel) & {2, 4}
        for tel_id, te in b.tel.items():
            for attr in ("event_id", "r1", "r0", "true_image", "n_trigger_pixels"):
                np.testing.assert_array_equal(getattr(te, attr), getattr(a.tel[tel_id], attr))


def test_reduced_round_trip(tmp_path, r0_file):
    """Mode 'reduced': kept waveforms (one row per kept pixel) + kept-pixel flags + charges + coefficients
    read back as written, in batches that cut through a telescope's waveform rows."""
    from dataclasses import replace

    path, sim, written = r0_file
    rng = np.random.default_rng(5)
    batches = []
    for batch in written[:2]:
        tel = {}
        for tel_id, te in batch.tel.items():
            kept = rng.random(te.r1.shape[:2]) < 0.3
            kept[0] = False  # an event without kept waveforms
            tel[tel_id] = replace(te, r0=None, r1=None, r1_kept=te.r1[kept],
                                  waveform_kept=kept, image=rng.normal(size=kept.shape).astype(np.float32),
                                  peak_time=rng.normal(size=kept.shape).astype(np.float32))
        batches.append(replace(batch, tel=tel))
    out = tmp_path / "reduced.dl0.h5"
    with DL0Writer(out, sim.run_info(), mode="reduced") as writer:
        for batch in batches:
            writer.write(batch)
    assert validate_file(out, require_schema=True) == []
    with tables.open_file(out) as h5:
        assert "/r1" not in h5 and "/r0" not in h5
    for batch_size in (3, 1000):
        with DL0Reader(out) as reader:
            assert reader.kind == "reduced"
            read = list(reader.iter_batches(batch_size))
            calibration = reader.run_info.calibration
        for tel_id in batches[0].tel:
            for attr in ("event_id", "r1_kept", "waveform_kept", "image", "peak_time", "selected_gain_channel"):
                np.testing.assert_array_equal(_tel_concat(read, tel_id, attr), _tel_concat(batches, tel_id, attr),
                                              err_msg=attr)
            for b in read:
                te = b.tel.get(tel_id)
                assert te is None or (te.r0 is None and te.r1 is None and len(te.r1_kept) == te.waveform_kept.sum())
            np.testing.assert_array_equal(calibration[tel_id].time_shift,
                                          sim.run_info().calibration[tel_id].time_shift)
    # from R0: the raw samples of the selected gain are stored, and read back as calibrate_r1's R1 of those pixels
    info, compact, expected = _compact_batches(r0_file, 2)
    raw_batches = []
    for batch, r1 in zip(compact, expected, strict=True):
        tel = {}
        for tel_id, te in batch.tel.items():
            kept = rng.random(te.r0.shape[::2]) < 0.3
            tel[tel_id] = replace(te, waveform_kept=kept, image=np.zeros(kept.shape, np.float32),
                                  peak_time=np.zeros(kept.shape, np.float32), r1_kept=r1[tel_id][kept])
        raw_batches.append(replace(batch, tel=tel))
    raw_out = tmp_path / "reduced_raw.dl0.h5"
    with DL0Writer(raw_out, info, mode="reduced") as writer:
        for batch in raw_batches:
            writer.write(batch)
    assert validate_file(raw_out, require_schema=True) == []
    with tables.open_file(raw_out) as h5:
        assert "/dl0/event/telescope/reduced_waveforms" not in h5
        assert h5.get_node("/dl0/event/telescope/reduced_samples/tel_001").dtype["waveform"].base == np.uint16
    with DL0Reader(raw_out) as reader:
        read = list(reader.iter_batches(5))
    for tel_id in raw_batches[0].tel:
        for attr in ("event_id", "waveform_kept", "selected_gain_channel"):
            np.testing.assert_array_equal(_tel_concat(read, tel_id, attr), _tel_concat(raw_batches, tel_id, attr))
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "r1_kept").view(np.uint32),
                                      _tel_concat(raw_batches, tel_id, "r1_kept").view(np.uint32))
    # a waveform table that does not match the kept flags: one clear error
    with tables.open_file(out, "a") as h5:
        node = h5.get_node("/dl0/event/telescope/reduced_waveforms/tel_001")
        node.modify_column(0, 1, column=np.array([node[0]["pixel_id"] + 1], np.uint16), colname="pixel_id")
    with DL0Reader(out) as reader, pytest.raises(DataError, match="reduced_waveforms/tel_001 is out of step"):
        list(reader.iter_batches(1000))


def _compact_batches(r0_file, n_batches=3):
    """The first batches of the r0 file's run, gain-selected by `calibrate_r1` (as the step does),
    with their R1 as calibrate_r1 computes it."""
    from dataclasses import replace

    from iactpipe.image.calibration import calibrate_r1

    _, sim, written = r0_file
    info = sim.run_info()
    batches, expected = [], []
    for batch in written[:n_batches]:
        tel, r1 = {}, {}
        for tel_id, te in batch.tel.items():
            c = info.calibration[tel_id]
            r1[tel_id], selected = calibrate_r1(te.r0, c.pedestal_per_sample, c.dc_to_pe)
            tel[tel_id] = replace(te, r1=None, selected_gain_channel=selected, pixel_status=None)
        batches.append(replace(batch, tel=tel))
        expected.append(r1)
    return info, batches, expected


def test_compact_dl0_reads_back_as_calibrated_r1(tmp_path, r0_file):
    """Mode 'dl0': uint16 samples of the selected gain + coefficients; read back bit for bit as calibrate_r1's R1."""
    info, batches, expected = _compact_batches(r0_file)
    out = tmp_path / "compact.dl0.h5"
    with DL0Writer(out, info, mode="dl0") as writer:
        for batch in batches:
            writer.write(batch)
        writer.close(r0_file[1].shower_distribution)
    assert validate_file(out, require_schema=True) == []
    with DL0Reader(out) as reader:
        assert reader.kind == "dl0"
        read = list(reader.iter_batches(7))
    with tables.open_file(out) as h5:
        assert "/r1/event/telescope" not in h5 and "/r0/event/telescope" not in h5
        assert h5.root._v_attrs["CTA PRODUCT DATA LEVELS"] == "DL0"
        stored = {t: h5.get_node(f"/dl0/event/telescope/samples/tel_{t:03d}").read() for t in (1, 2, 3, 4)}
        node = h5.get_node("/dl0/event/telescope/samples/tel_001")
        assert node.attrs["IACTPIPE_ROWS_OF"] == "/dl0/event/telescope/waveforms/tel_001"
        assert node.chunkshape[0] == 1 and node.filters.shuffle and node.filters.fletcher32
        assert "waveform" not in h5.get_node("/dl0/event/telescope/waveforms/tel_001").colnames
    for tel_id in (1, 2, 3, 4):
        r1 = np.concatenate([e[tel_id] for e in expected if tel_id in e])
        got = _tel_concat(read, tel_id, "r1")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), r1.view(np.uint32), err_msg=f"tel {tel_id} R1 bits")
        selected = _tel_concat(batches, tel_id, "selected_gain_channel")
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "selected_gain_channel"), selected)
        np.testing.assert_array_equal(_tel_concat(read, tel_id, "pixel_status") & 12, np.where(selected == 0, 4, 8))
        for attr in ("event_id", "true_image", "true_impact_distance", "n_trigger_pixels"):
            np.testing.assert_array_equal(_tel_concat(read, tel_id, attr), _tel_concat(batches, tel_id, attr))
        # what is stored: the raw samples of the selected gain, 2 bytes each
        r0 = _tel_concat(batches, tel_id, "r0")
        assert stored[tel_id].dtype == np.uint16
        np.testing.assert_array_equal(stored[tel_id], np.take_along_axis(r0, selected[:, None, :, None], 1)[:, 0])


@pytest.mark.parametrize("decode_ahead", [False, True])
def test_compact_dl0_raw_samples_give_the_dl1_of_their_r1(tmp_path, r0_file, decode_ahead):
    """``raw_samples``: the stored samples instead of the R1; process_telescope_events then
    calibrates them itself (in NeighborPeakWindowSum's loop, or first for other extractors and for
    ``keep_waveforms``) and gives the same DL1, bit for bit."""
    from iactpipe.image.processor import CameraSetup, ImageSettings, process_telescope_events
    from test_reduced_dl0 import assert_same_telescope_dl1

    path = tmp_path / "compact.dl0.h5"
    batches, _ = _write_compact(path, r0_file, 3)
    with DL0Reader(path) as reader:
        info = reader.run_info
        as_r1 = list(reader.iter_batches(5))
        as_samples = list(reader.iter_batches(5, decode_ahead=decode_ahead, raw_samples=True))
    for tel_id in (1, 2):
        r0 = _tel_concat(batches, tel_id, "r0")
        selected = _tel_concat(batches, tel_id, "selected_gain_channel")
        assert all(b.tel[tel_id].r1 is None for b in as_samples if tel_id in b.tel)
        np.testing.assert_array_equal(_tel_concat(as_samples, tel_id, "samples"),
                                      np.take_along_axis(r0, selected[:, None, :, None], 1)[:, 0])
    camera = CameraSetup.from_telescope(info.subarray.tels[1])
    for extractor, keep in [("NeighborPeakWindowSum", False), ("NeighborPeakWindowSum", True),
                            ("LocalPeakWindowSum", False)]:
        settings = ImageSettings(extractor=extractor)
        for one, other in zip(as_r1, as_samples, strict=True):
            for tel_id, te in one.tel.items():
                if tel_id != 1:
                    continue
                a = process_telescope_events(te, camera, settings, info.calibration[tel_id],
                                             np.random.default_rng(0), keep_waveforms=keep)
                b = process_telescope_events(other.tel[tel_id], camera, settings, info.calibration[tel_id],
                                             np.random.default_rng(0), keep_waveforms=keep)
                assert_same_telescope_dl1(a, b)
                assert (a.r1 is not None) is keep


def _write_compact(path, r0_file, n_batches=3):
    info, batches, expected = _compact_batches(r0_file, n_batches)
    with DL0Writer(path, info, mode="dl0") as writer:
        for batch in batches:
            writer.write(batch)
        writer.close(r0_file[1].shower_distribution)
    return batches, expected


def _r1_by_event(path):
    """{(tel_id, event_id): R1 bits} of a DL0 file (the run's event ids are unique)."""
    out = {}
    with DL0Reader(path) as reader:
        for batch in reader.iter_batches(4):
            for tel_id, te in batch.tel.items():
                for event_id, r1 in zip(te.event_id, te.r1, strict=True):
                    out[tel_id, int(event_id)] = r1.view(np.uint32)
    return out


def test_compact_dl0_split_and_merge_keep_samples_with_their_rows(tmp_path, r0_file, capsys, monkeypatch):
    """The samples array goes with its table: split routes its rows with their events, merge appends
    them in the same order; every telescope event reads back with its own R1 (arrays read a few
    rows at a time, so the chunks' row offsets matter)."""
    from iactpipe.io import filemerge
    from iactpipe.steps.merge import MergeStep
    from iactpipe.steps.split import SplitStep

    source = tmp_path / "compact.dl0.h5"
    _write_compact(source, r0_file)
    original = _r1_by_event(source)
    with tables.open_file(source) as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_001")
        assert node.nrows > 6
        monkeypatch.setattr(filemerge, "MAX_CHUNK_BYTES", 3 * node.dtype.itemsize * int(np.prod(node.shape[1:])))
    parts = [tmp_path / "a.dl0.h5", tmp_path / "b.dl0.h5"]
    assert SplitStep().main([str(source), "-o", str(parts[0]), "-o", str(parts[1]), "--fraction", "0.4",
                             "--log-level", "WARNING"]) == 0, capsys.readouterr().err
    read_parts = [_r1_by_event(p) for p in parts]
    assert all(read_parts) and not set(read_parts[0]) & set(read_parts[1])
    assert set(read_parts[0]) | set(read_parts[1]) == set(original)
    for part in read_parts:
        for key, bits in part.items():
            np.testing.assert_array_equal(bits, original[key], err_msg=str(key))
    merged = tmp_path / "merged.dl0.h5"
    assert MergeStep().main([*map(str, parts), "-o", str(merged), "--log-level", "WARNING"]) == 0, \
        capsys.readouterr().err
    back = _r1_by_event(merged)
    assert set(back) == set(original)
    for key, bits in back.items():
        np.testing.assert_array_equal(bits, original[key], err_msg=str(key))
    with tables.open_file(merged) as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_001")
        assert node.attrs["IACTPIPE_ROWS_OF"] == "/dl0/event/telescope/waveforms/tel_001"
        assert node.nrows == h5.get_node("/dl0/event/telescope/waveforms/tel_001").nrows
        assert node.chunkshape[0] == 1 and node.filters.complib == "blosc:lz4"


def test_compact_dl0_of_the_first_layout_is_still_read(tmp_path, r0_file):
    """Data model v1 kept the samples in a ``waveform`` column of the table: same R1."""
    path = tmp_path / "v2.dl0.h5"
    _write_compact(path, r0_file, 2)
    expected = _r1_by_event(path)
    with tables.open_file(path, "a") as h5:
        for tel_id in (1, 2, 3, 4):
            name = f"tel_{tel_id:03d}"
            table = h5.get_node("/dl0/event/telescope/waveforms", name)
            samples = h5.get_node("/dl0/event/telescope/samples", name).read()
            rows = table.read()
            fields = [(n, rows.dtype.fields[n][0]) for n in rows.dtype.names]
            fields.insert(5, ("waveform", np.uint16, samples.shape[1:]))
            old = np.empty(len(rows), fields)
            for n in rows.dtype.names:
                old[n] = rows[n]
            old["waveform"] = samples
            table.remove()
            h5.create_table("/dl0/event/telescope/waveforms", name, obj=old)
        h5.remove_node("/dl0/event/telescope/samples", recursive=True)
    got = _r1_by_event(path)
    assert set(got) == set(expected)
    for key, bits in got.items():
        np.testing.assert_array_equal(bits, expected[key], err_msg=str(key))


def test_compact_dl0_bad_samples(tmp_path, r0_file, capsys):
    """A samples array that is short, missing or of another shape: one clear error each (reader, merge)."""
    from iactpipe.steps.merge import MergeStep

    path = tmp_path / "short.dl0.h5"
    _write_compact(path, r0_file, 2)
    with tables.open_file(path, "a") as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_002")
        n_rows = node.nrows
        node.truncate(n_rows - 1)
    with DL0Reader(path) as reader, pytest.raises(DataError, match=f"samples/tel_002 has {n_rows - 1} rows"):
        list(reader.iter_batches(1000))
    assert MergeStep().main([str(path), "-o", str(tmp_path / "m.h5"), "--log-level", "WARNING"]) == 1
    err = capsys.readouterr().err
    assert f"samples/tel_002 has {n_rows - 1} rows, /dl0/event/telescope/waveforms/tel_002 {n_rows}" in err
    assert not (tmp_path / "m.h5").exists()

    other = tmp_path / "missing.dl0.h5"
    _write_compact(other, r0_file, 2)
    with tables.open_file(other, "a") as h5:
        h5.remove_node("/dl0/event/telescope/samples/tel_003")
    with DL0Reader(other) as reader, pytest.raises(DataError, match="samples/tel_003 missing"):
        list(reader.iter_batches(1000))
    with_samples = tmp_path / "full.dl0.h5"
    _write_compact(with_samples, r0_file, 1)
    assert MergeStep().main([str(with_samples), str(other), "-o", str(tmp_path / "m.h5"),
                             "--allow-duplicate-events", "--log-level", "WARNING"]) == 1
    assert "samples/tel_003 missing" in capsys.readouterr().err

    wrong = tmp_path / "wrong.dl0.h5"
    _write_compact(wrong, r0_file, 1)
    with tables.open_file(wrong, "a") as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_001")
        samples = node.read()
        node.remove()
        h5.create_earray("/dl0/event/telescope/samples", "tel_001", obj=samples[:, :-1])
    with DL0Reader(wrong) as reader, pytest.raises(DataError, match="samples/tel_001 holds uint16 rows of shape"):
        list(reader.iter_batches(1000))

    negative = tmp_path / "negative.dl0.h5"
    _write_compact(negative, r0_file, 1)
    with tables.open_file(negative, "a") as h5:
        node = h5.get_node("/dl0/event/telescope/waveforms/tel_001")
        gains = node.col("selected_gain_channel")
        gains[0, 5] = -1
        node.modify_column(colname="selected_gain_channel", column=gains)
    with DL0Reader(negative) as reader, pytest.raises(DataError, match="selects a gain channel"):
        list(reader.iter_batches(1000))


def test_compact_dl0_samples_are_decoded_past_hdf5_and_checked(tmp_path, r0_file, capsys):
    """The reader decodes the compact samples itself (io/chunks.py), to the same R1 as PyTables' read; a
    corrupt chunk is a one-line error of iactpipe-dl0-to-dl1 naming file, array and row, with no output."""
    from iactpipe.io.chunks import RowChunkReader
    from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step

    path = tmp_path / "compact.dl0.h5"
    _write_compact(path, r0_file, 2)
    with tables.open_file(path) as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_001")
        assert RowChunkReader(node, path).direct
        stored = node.read()
        info = node.chunk_info((1, 0, 0))
    with tables.open_file(path) as h5:
        assert np.array_equal(RowChunkReader(h5.get_node("/dl0/event/telescope/samples/tel_001"), path)
                              .read(0, len(stored)), stored)
    with open(path, "r+b") as f:  # flip a byte of row 1's compressed samples
        f.seek(info.offset + info.size // 2)
        byte = f.read(1)[0]
        f.seek(info.offset + info.size // 2)
        f.write(bytes([byte ^ 0xFF]))
    output = tmp_path / "out.dl1.h5"
    assert Dl0ToDl1Step().main([str(path), "-o", str(output), "--log-level", "WARNING"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"iactpipe-dl0-to-dl1: error: {path}: /dl0/event/telescope/samples/tel_001 row 1: "
                   "fletcher32 checksum mismatch (corrupt file?)"]
    assert not output.exists()


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_compact_dl0_decoded_ahead_is_the_same(tmp_path, r0_file, batch_size):
    """``decode_ahead`` (a second thread decodes the next batch) yields the same batches; a corrupt
    chunk is the same DataError."""
    path = tmp_path / "compact.dl0.h5"
    _write_compact(path, r0_file, 3)

    def batches(decode_ahead):
        with DL0Reader(path) as reader:
            return [{t: (te.event_id, te.r1) for t, te in b.tel.items()}
                    for b in reader.iter_batches(batch_size, decode_ahead=decode_ahead)]

    inline, ahead = batches(False), batches(True)
    assert len(inline) == len(ahead) > (1 if batch_size < 1000 else 0)
    for one, other in zip(inline, ahead, strict=True):
        assert one.keys() == other.keys()
        for tel_id, (event_id, r1) in one.items():
            assert np.array_equal(event_id, other[tel_id][0])
            assert r1 is not None and r1.view(np.uint32).tobytes() == other[tel_id][1].view(np.uint32).tobytes()
    with tables.open_file(path) as h5:
        node = h5.get_node("/dl0/event/telescope/samples/tel_002")
        last, info = node.nrows - 1, node.chunk_info((node.nrows - 1, 0, 0))
    with open(path, "r+b") as f:
        f.seek(info.offset + 20)
        byte = f.read(1)[0]
        f.seek(info.offset + 20)
        f.write(bytes([byte ^ 0x01]))
    with pytest.raises(DataError, match=f"samples/tel_002 row {last}: fletcher32 checksum mismatch"):
        batches(True)


def test_prepare_runs_once_per_telescope_after_decoding(tmp_path, r0_file):
    """``prepare(batch, tel_id)`` sees the telescope's decoded R1, once per telescope, in either
    thread; the reader yields its results with the batch, the same with and without decode-ahead."""
    import threading

    path = tmp_path / "compact.dl0.h5"
    _write_compact(path, r0_file, 3)
    seen = []
    worker_ran = threading.Event()
    decoding_ahead = False

    def prepare(batch, tel_id):
        name = threading.current_thread().name
        if name.startswith("dl0-decode"):
            worker_ran.set()
        elif decoding_ahead:  # give the second thread its chance to take a task (on a busy machine too)
            worker_ran.wait(5)
        seen.append((int(batch.event_id[0]), tel_id, name))
        return float(batch.tel[tel_id].r1.sum())

    def read(decode_ahead):
        nonlocal decoding_ahead
        decoding_ahead = decode_ahead
        seen.clear()
        with DL0Reader(path) as reader:
            out = [(b.event_id.tolist(), results) for b, results in
                   reader.iter_batches(2, decode_ahead=decode_ahead, prepare=prepare)]
        return out, list(seen)

    (inline, inline_calls), (ahead, ahead_calls) = read(False), read(True)
    assert inline == ahead and len(inline) > 1
    for event_ids, results in inline:
        assert results and all(isinstance(v, float) for v in results.values())
    assert sorted(c[:2] for c in inline_calls) == sorted(c[:2] for c in ahead_calls)
    assert len(set(c[:2] for c in ahead_calls)) == len(ahead_calls)  # each telescope once
    assert {c[2] for c in inline_calls} == {threading.current_thread().name}
    assert any(c[2].startswith("dl0-decode") for c in ahead_calls)


def test_batch_tasks_are_taken_by_the_caller_and_fail_in_telescope_order():
    """`_BatchTasks.result` runs the tasks no thread has taken; errors come in batch order."""
    from types import SimpleNamespace

    from iactpipe.io.dl0 import _BatchTasks

    batch = SimpleNamespace(tel={3: None, 1: None, 2: None})
    ran = []

    def fail(tel_id):
        def job():
            ran.append(tel_id)
            raise DataError(f"tel {tel_id} broken")
        return job

    tasks = _BatchTasks(batch, {2: fail(2), 1: fail(1)}, prepare=None)
    assert tasks.tel_ids == [1, 2]  # telescopes with a job, in batch order (3 has none)
    tasks = _BatchTasks(batch, {2: fail(2), 1: fail(1)}, prepare=lambda b, t: t * 10)
    assert tasks.tel_ids == [3, 1, 2]
    with pytest.raises(DataError, match="tel 1 broken"):
        tasks.result()
    assert sorted(ran) == [1, 2]
    tasks = _BatchTasks(batch, {}, prepare=lambda b, t: t * 10)
    assert tasks.result() == {3: 30, 1: 10, 2: 20}
    tasks.run()  # nothing left: returns at once
    assert _BatchTasks(batch, {}, prepare=None).result() == {}


def test_batch_tasks_run_each_telescope_once_with_two_threads():
    """Both threads taking tasks of one batch: every telescope prepared once, all results there."""
    import threading
    import time
    from types import SimpleNamespace

    from iactpipe.io.dl0 import _BatchTasks

    batch = SimpleNamespace(tel={t: None for t in range(40)})
    calls = []

    def prepare(b, tel_id):
        calls.append((tel_id, threading.current_thread().name))
        time.sleep(0.002)
        return tel_id * 2

    tasks = _BatchTasks(batch, {}, prepare)
    worker = threading.Thread(target=tasks.run, name="other")
    worker.start()
    assert tasks.result() == {t: 2 * t for t in range(40)}
    worker.join()
    assert sorted(t for t, _ in calls) == list(range(40))
    assert {name for _, name in calls} == {"other", threading.current_thread().name}


def test_stopping_early_leaves_the_batch_read_ahead_undone(tmp_path, r0_file):
    """A reader closed after its first batch does not prepare the telescopes of the batch it read ahead
    (beyond the one its second thread had started); ``max_events`` stops the reading itself."""
    import time

    path = tmp_path / "compact.dl0.h5"
    _write_compact(path, r0_file, 3)
    calls = []

    def prepare(batch, tel_id):
        calls.append(int(batch.event_id[0]))
        time.sleep(0.05)

    with DL0Reader(path) as reader:
        items = reader.iter_batches(4, decode_ahead=True, prepare=prepare)
        first, _ = next(items)
        items.close()
        second = [c for c in calls if c != int(first.event_id[0])]
        assert len(second) <= 1 and len(calls) == len(first.tel) + len(second)
        assert sum(len(b) for b in reader.iter_batches(4, max_events=5)) == 8 < len(reader)
        # counting only the events the wanted telescopes took part in (tel 1: the first column)
        counts = np.cumsum([b.tels_with_trigger[:, 0].sum() for b in reader.iter_batches(4)])
        read = list(reader.iter_batches(4, tel_ids=[1], max_events=2))
        assert len(read) == int(np.searchsorted(counts, 2)) + 1 < len(counts)


def test_row_aligned_arrays_need_an_event_table_and_its_company(tmp_path, r0_file):
    """Merge/split keep an array with its table: only for event tables, and never one without the other."""
    from iactpipe.io.filemerge import merge_files

    path = tmp_path / "compact.dl0.h5"
    _write_compact(path, r0_file, 1)
    with pytest.raises(DataError, match="samples/tel_001 holds the rows of .*: skip both or neither"):
        merge_files([path], tmp_path / "m.h5", skip_groups=("/dl0/event/telescope/samples",))
    summary = merge_files([path], tmp_path / "both.h5", skip_groups=("/dl0/event/telescope/samples",
                                                                     "/dl0/event/telescope/waveforms"))
    assert summary["n_arrays"] == 0
    with tables.open_file(path, "a") as h5:
        rows = np.zeros(3, [("time", "f8")])
        h5.create_table("/dl0/monitoring", "foo", obj=rows, createparents=True)
        array = h5.create_earray("/dl0/monitoring", "foo_samples", obj=np.zeros((3, 2), np.uint16))
        array.attrs["IACTPIPE_ROWS_OF"] = "/dl0/monitoring/foo"
    with pytest.raises(DataError, match="foo_samples holds the rows of /dl0/monitoring/foo, which is not an event"):
        merge_files([path], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_compact_dl0_needs_one_calibration_per_run(tmp_path, r0_file):
    from dataclasses import replace

    info, batches, _ = _compact_batches(r0_file, 2)
    changed = {t: replace(c, dc_to_pe=c.dc_to_pe * 1.01) for t, c in info.calibration.items()}
    with pytest.raises(ValueError, match="change within the run"):
        with DL0Writer(tmp_path / "a.dl0.h5", info, mode="dl0") as writer:
            writer.write(replace(batches[1], calibration=changed))
    without = replace(info, calibration={t: c for t, c in info.calibration.items() if t != 2})
    with pytest.raises(ValueError, match=r"tels \[2\] have none"):
        DL0Writer(tmp_path / "b.dl0.h5", without, mode="dl0")


def test_reader_opens_files_with_a_small_chunk_cache(r0_file):
    """The reader keeps every table open: PyTables' 16 MiB cache per table would grow with the data read."""
    from iactpipe.io.tables import OPEN_PARAMS

    with DL0Reader(r0_file[0]) as reader:
        assert reader.h5.params["CHUNK_CACHE_SIZE"] == OPEN_PARAMS["chunk_cache_size"] <= 2**20


def test_float_waveforms_are_stored_uncompressed_and_integer_samples_compressed(r0_file):
    """float32 R1 hardly compresses (lz4: ~1 %) but reads >2x slower compressed; raw ADC samples compress."""
    with tables.open_file(r0_file[0]) as h5:
        r1 = list(h5.get_node("/r1/event/telescope"))
        r0 = list(h5.get_node("/r0/event/telescope"))
        assert r1 and r0
        for table in r1:
            assert table.filters.complevel == 0 and table.filters.fletcher32
            assert table.size_on_disk >= table.nrows * table.rowsize
        for table in r0:
            assert table.filters.complib == "blosc:lz4" and table.filters.fletcher32
            assert table.size_on_disk < table.nrows * table.rowsize
