"""Reduced DL0 (iactpipe-dl0-to-dl1 --reduced-dl0): what it keeps, and DL1 from it equals DL1 from the full data."""

import logging

import numpy as np
import pytest
import tables
from iactpipe.image.cleaning import dilate, tailcuts_clean
from iactpipe.image.processor import CameraSetup, ImageSettings, process_telescope_events
from iactpipe.io.dl0 import DL0Reader
from iactpipe.io.events import TelescopeEvents
from iactpipe.io.tables import validate_file
from iactpipe.provenance import read_lineage
from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step
from test_dl0_to_dl1 import toy_square_camera

RUN202 = "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
GROUPS = [
    "/dl1/event/telescope/parameters", "/dl1/event/telescope/images", "/dl1/event/telescope/image_quality",
    "/simulation/event/telescope/parameters", "/simulation/event/telescope/images",
    "/simulation/event/telescope/impact",
]
TABLES = ["/dl1/event/subarray/trigger", "/dl1/event/telescope/trigger", "/simulation/event/subarray/shower",
          "/dl1/service/image_statistics"]


def run_step(args, capsys=None):
    code = Dl0ToDl1Step().main([str(a) for a in args])
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


@pytest.fixture(scope="module")
def reduced(simtel_dir, tmp_path_factory):
    """(full DL1, reduced DL0, DL1 of the reduced DL0, log records of the first run)."""
    work = tmp_path_factory.mktemp("reduced")
    full, dl0, again = work / "full.dl1.h5", work / "reduced.dl0.h5", work / "again.dl1.h5"
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("iactpipe.dl0-to-dl1")
    keep, level = Keep(), log.level
    log.addHandler(keep)
    log.setLevel(logging.INFO)
    try:
        assert run_step([simtel_dir / RUN202, "-o", full, "--write-images", "--reduced-dl0", dl0])[0] == 0
    finally:
        log.removeHandler(keep)
        log.setLevel(level)
    assert run_step([dl0, "-o", again, "--write-images"])[0] == 0
    return full, dl0, again, records


def _tel_tables(path, group):
    with tables.open_file(path) as h5:
        if group not in h5:
            return {}
        return {node._v_name: node.read() for node in h5.get_node(group)._f_iter_nodes("Table")}


def test_dl1_from_reduced_dl0_equals_dl1_from_full_data(reduced):
    full, _, again, _ = reduced
    for group in GROUPS:
        ours, ref = _tel_tables(again, group), _tel_tables(full, group)
        assert sorted(ours) == sorted(ref) and ref, group
        for tel, table in ref.items():
            assert ours[tel].dtype == table.dtype, (group, tel)
            for name in table.dtype.names:
                np.testing.assert_array_equal(ours[tel][name], table[name], err_msg=f"{group} {tel} {name}")
    with tables.open_file(full) as a, tables.open_file(again) as b:
        for path in TABLES:
            x, y = a.get_node(path).read(), b.get_node(path).read()
            for name in x.dtype.names:
                np.testing.assert_array_equal(x[name], y[name], err_msg=f"{path} {name}")


@pytest.mark.parametrize("n_events", [1, 7])
def test_first_events_of_a_reduced_dl0(reduced, tmp_path, n_events):
    """--max-events cuts the kept waveforms with the events: the first rows of the whole file's DL1."""
    _, dl0, again, _ = reduced
    first = tmp_path / "first.dl1.h5"
    assert run_step([dl0, "-o", first, "--max-events", n_events])[0] == 0
    ours, ref = _tel_tables(first, GROUPS[0]), _tel_tables(again, GROUPS[0])
    assert ours
    for tel, table in ours.items():
        assert set(table["event_id"]) <= set(ref[tel]["event_id"][:len(table)])
        for name in table.dtype.names:
            np.testing.assert_array_equal(table[name], ref[tel][name][:len(table)], err_msg=f"{tel} {name}")


def _full_r1(simtel):
    """tel_id -> (event_id, R1 float32, selected gain) of a sim_telarray file, calibrated as the step does."""
    from iactpipe.image.calibration import calibrate_r1
    from iactpipe.io.simtel import SimTelReader

    parts = {}
    with SimTelReader(simtel) as reader:
        for batch in reader.iter_batches(100):
            calibration = {**reader.run_info.calibration, **(batch.calibration or {})}
            for tel_id, te in batch.tel.items():
                c = calibration[tel_id]
                r1, selected = calibrate_r1(te.r0, c.pedestal_per_sample, c.dc_to_pe)
                parts.setdefault(tel_id, []).append((te.event_id, r1, selected))
    return {t: tuple(np.concatenate(x) for x in zip(*p, strict=True)) for t, p in parts.items()}


def test_reduced_dl0_keeps_loose_cleaning_plus_ring(reduced, simtel_dir):
    full, dl0, _, _ = reduced
    assert validate_file(dl0, require_schema=True) == []
    images = _tel_tables(full, "/dl1/event/telescope/images")
    r1 = _full_r1(simtel_dir / RUN202)
    n_kept = n_pixels = 0
    with DL0Reader(dl0) as reader:
        assert reader.kind == "reduced"
        subarray = reader.subarray
        for batch in reader.iter_batches(7):  # batches cut through the waveform rows of a telescope
            for tel_id, te in batch.tel.items():
                kept = te.waveform_kept
                full_images = images[f"tel_{tel_id:03d}"]
                rows = np.searchsorted(full_images["event_id"], te.event_id)
                neighbors = subarray.tels[tel_id].geometry.neighbors
                loose = tailcuts_clean(full_images["image"][rows], neighbors, 5.0, 2.5, False, 1)
                np.testing.assert_array_equal(kept, dilate(loose, neighbors))
                # only the kept waveforms are stored, bit for bit the R1 of the full data
                event_ids, full_r1, selected = r1[tel_id]
                rows = np.searchsorted(event_ids, te.event_id)
                assert te.r1 is None and te.r1_kept.dtype == np.float32
                np.testing.assert_array_equal(te.r1_kept.view(np.uint32), full_r1[rows][kept].view(np.uint32))
                np.testing.assert_array_equal(te.selected_gain_channel, selected[rows])
                assert np.isfinite(te.image).all() and np.isfinite(te.peak_time).all()
                n_kept += kept.sum()
                n_pixels += kept.size
    assert 0 < n_kept < 0.5 * n_pixels
    with tables.open_file(dl0) as h5:
        # from R0: the raw samples of the selected gain (2 bytes each), no zero-filled R1 table
        assert "/r1" not in h5 and "/dl0/event/telescope/reduced_waveforms" not in h5
        nodes = list(h5.get_node("/dl0/event/telescope/reduced_samples")._f_iter_nodes("Table"))
        assert all(n.dtype["waveform"].base == np.uint16 for n in nodes)
        assert sum(n.nrows for n in nodes) == n_kept


def test_reduced_dl0_of_a_reduced_dl0_keeps_r1_samples(reduced, tmp_path):
    """Input without R0 (here the reduced file itself): the kept waveforms are stored as R1 float32,
    and the DL1 is still that of the full data."""
    full, dl0, _, _ = reduced
    dl1, again = tmp_path / "again.dl1.h5", tmp_path / "again.dl0.h5"
    assert run_step([dl0, "-o", dl1, "--reduced-dl0", again])[0] == 0
    assert validate_file(again, require_schema=True) == []
    with tables.open_file(again) as h5:
        assert "/dl0/event/telescope/reduced_samples" not in h5
        nodes = list(h5.get_node("/dl0/event/telescope/reduced_waveforms")._f_iter_nodes("Table"))
        assert nodes and all(n.dtype["waveform"].base == np.float32 for n in nodes)
    twice = tmp_path / "twice.dl1.h5"
    assert run_step([again, "-o", twice, "--write-images"])[0] == 0
    for group in GROUPS[:3]:
        ours, ref = _tel_tables(twice, group), _tel_tables(full, group)
        assert sorted(ours) == sorted(ref) and ref, group
        for tel, table in ref.items():
            for name in table.dtype.names:
                np.testing.assert_array_equal(ours[tel][name], table[name], err_msg=f"{group} {tel} {name}")


def test_ctapipe_reads_the_event_tables_of_the_reduced_file(reduced):
    """No zero-filled R1 table: ctapipe sees no waveforms, but its readers still open the file."""
    from ctapipe.io import HDF5EventSource, TableLoader

    full, dl0, _, _ = reduced
    with tables.open_file(full) as h5:
        trigger = h5.root.dl1.event.subarray.trigger.read()
    with TableLoader(dl0) as loader:
        events = loader.read_subarray_events()
    np.testing.assert_array_equal(events["event_id"], trigger["event_id"])
    with HDF5EventSource(dl0) as source:
        assert source.datalevels == ()
        ids = [event.index.event_id for event in source if not event.r1.tel]
    np.testing.assert_array_equal(ids, trigger["event_id"])


def test_reduction_factor_in_log_provenance_and_file(reduced):
    _, dl0, again, records = reduced
    record = read_lineage(dl0)[0]["reduced_dl0"]
    assert record["reduction_factor"] == pytest.approx(record["full_waveform_bytes"] / record["reduced_bytes"])
    assert 1.5 < record["reduction_factor"] < 100
    with tables.open_file(dl0) as h5:
        assert h5.root._v_attrs["IACTPIPE_REDUCTION_FACTOR"] == pytest.approx(record["reduction_factor"])
    assert any("reduction factor" in line and f"{record['reduction_factor']:.2f}" in line for line in records)
    # the DL1 made from the reduced file carries the reduction in its lineage
    assert any(r.get("reduced_dl0") == record for r in read_lineage(again))


@pytest.mark.parametrize("sparse", [False, True], ids=["zero-filled R1", "kept waveforms only"])
def test_dropped_pixels_and_their_neighbours_take_the_stored_charges(sparse):
    camera = toy_square_camera()
    rng = np.random.default_rng(4)
    r1 = rng.normal(0, 1, (2, 36, 20)).astype(np.float32)
    r1[:, [7, 8, 13, 14], 8] += 30.0
    settings = ImageSettings(invalid_pixels="keep")
    base = dict(tel_id=1, event_id=np.arange(2), selected_gain_channel=np.zeros((2, 36), np.int8))
    full = process_telescope_events(TelescopeEvents(r1=r1, **base), camera, settings)
    kept = np.zeros((2, 36), bool)
    kept[:, [0, 1, 2, 6, 7, 8, 12, 13, 14, 20]] = True
    stored = np.full((2, 36), -7.0, np.float32)
    waveforms = dict(r1_kept=r1[kept]) if sparse else dict(r1=np.where(kept[..., None], r1, 0))
    events = TelescopeEvents(waveform_kept=kept, image=stored, peak_time=stored, **waveforms, **base)
    result = process_telescope_events(events, camera, settings)
    indptr, indices = camera.geometry.neighbors
    complete = np.array([kept[0, p] and kept[0, indices[indptr[p]:indptr[p + 1]]].all() for p in range(36)])
    assert 0 < complete.sum() < kept[0].sum()
    np.testing.assert_array_equal(result.image[:, complete], full.image[:, complete])
    assert (result.image[:, ~complete] == -7.0).all()


def test_reduced_dl0_errors(simtel_dir, alpha_simtel, tmp_path, capsys, reduced):
    full = reduced[0]
    out, dl0 = tmp_path / "out.h5", tmp_path / "red.h5"
    code, err = run_step([full, "-o", out, "--reduced-dl0", dl0], capsys)
    assert code == 1 and "a reduced DL0 needs waveforms (R0 or R1), the input has images only" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists() and not dl0.exists()
    code, err = run_step([simtel_dir / RUN202, simtel_dir / RUN202, "-o", out, "--reduced-dl0", dl0], capsys)
    assert code == 2 and "--reduced-dl0 takes a single input file" in err
    assert list(tmp_path.glob("*")) == []


def _lst_events(n_events, seed):
    """Random LSTCam R1 events with showers, a random kept mask (some rings), unusable pixels."""
    from iactpipe.simulation.simulator import load_subarray

    tel = load_subarray("LSTCam").tels[1]
    camera = CameraSetup.from_telescope(tel)
    n_pixels, n_samples = tel.geometry.n_pixels, tel.readout.n_samples
    rng = np.random.default_rng(seed)
    r1 = rng.normal(0, 1.5, (n_events, n_pixels, n_samples)).astype(np.float32)
    seeds = rng.integers(0, n_pixels, n_events)
    kept = np.zeros((n_events, n_pixels), bool)
    kept[np.arange(n_events), seeds] = True
    for _ in range(4):  # a shower-like blob: the seed and 4 rings
        kept = dilate(kept, tel.geometry.neighbors)
    peak = rng.integers(5, n_samples - 5, (n_events, 1))
    r1[kept] += np.float32(20.0) * (np.arange(n_samples) == peak[np.nonzero(kept)[0]]).astype(np.float32)
    kept[rng.random(kept.shape) < 0.02] = True  # isolated kept pixels: kept, but not complete
    selected = (rng.random((n_events, n_pixels)) < 0.1).astype(np.int8)
    status = np.where(selected == 0, 4, 8).astype(np.uint8)
    # not read out: unusable, excluded from the neighbour sums (a spike that would move their peaks otherwise)
    status[kept & (rng.random(status.shape) < 0.05)] = 0
    r1[..., 2] += np.where(status == 0, np.float32(300.0), np.float32(0.0))
    stored = rng.normal(3, 1, (n_events, n_pixels)).astype(np.float32)
    base = dict(tel_id=1, event_id=np.arange(n_events), selected_gain_channel=selected, pixel_status=status,
                waveform_kept=kept, image=stored, peak_time=stored + 10)
    dense = TelescopeEvents(r1=np.where(kept[..., None], r1, 0).astype(np.float32), **base)
    sparse = TelescopeEvents(r1_kept=r1[kept], **base)
    return camera, dense, sparse


@pytest.mark.parametrize("options", [(), (("local_weight", 1),), (("window_width", 5), ("window_shift", 1)),
                                     (("local_weight", 2**25),)])  # the last: no fast neighbour-sum path
def test_kept_waveforms_give_the_dl1_of_zero_filled_r1(options):
    """Extracting only the complete pixels from the kept rows equals extracting the zero-filled R1 (all of DL1)."""
    camera, dense, sparse = _lst_events(40, seed=len(options))
    settings = ImageSettings(extractor_options=options)
    a = process_telescope_events(dense, camera, settings, rng=np.random.default_rng(1))
    b = process_telescope_events(sparse, camera, settings, rng=np.random.default_rng(1))
    assert a.valid.sum() > 5 and a.unusable.any()
    assert_same_telescope_dl1(a, b)


def assert_same_telescope_dl1(a, b):
    """Two `TelescopeDL1` hold the same arrays, column by column (NaN equal to NaN)."""
    from dataclasses import fields

    for field in fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{field.name} {key}")
        elif x is None:
            assert y is None, field.name
        else:
            np.testing.assert_array_equal(x, y, err_msg=field.name)


def test_kept_waveforms_kernel_equals_the_full_extraction_on_complete_pixels():
    from iactpipe.image.extraction import neighbor_peak_window_sum, neighbor_peak_window_sum_kept
    from iactpipe.image.processor import _complete_pixels

    camera, dense, sparse = _lst_events(30, seed=7)
    # NaN samples: numpy's argmax takes the first NaN of a neighbour sum
    rows = np.arange(0, len(sparse.r1_kept), 97)
    sparse.r1_kept[rows, 5 + rows % 20] = np.nan
    dense.r1 = np.zeros(dense.r1.shape, np.float32)
    dense.r1[dense.waveform_kept] = sparse.r1_kept
    neighbors = camera.geometry.neighbors
    broken = (dense.pixel_status & 12) == 0
    correction = camera.correction(ImageSettings())
    rate = camera.readout.sampling_rate_ghz
    image, peak_time = neighbor_peak_window_sum(dense.r1, dense.selected_gain_channel, neighbors, rate, correction,
                                                broken_pixels=broken)
    kept = sparse.waveform_kept
    charge, time, complete = neighbor_peak_window_sum_kept(sparse.r1_kept, kept, sparse.selected_gain_channel,
                                                           neighbors, rate, correction, broken_pixels=broken,
                                                           fill_image=-1.0)
    np.testing.assert_array_equal(complete, _complete_pixels(kept, neighbors))
    assert 0 < complete.sum() < kept.sum()
    assert np.isnan(image[complete]).any()
    np.testing.assert_array_equal(charge[complete], image[complete])
    np.testing.assert_array_equal(time[complete], peak_time[complete])
    assert (charge[~complete] == -1).all() and np.isnan(time[~complete]).all()
    with pytest.raises(ValueError, match="kept marks"):
        neighbor_peak_window_sum_kept(sparse.r1_kept[1:], kept, None, neighbors, rate)


@pytest.mark.parametrize("extractor", ["LocalPeakWindowSum", "TwoPassWindowSum"])
def test_other_extractors_on_kept_waveforms_see_zero_filled_r1(extractor):
    """Extractors without a kept-pixel kernel get the zero-filled R1 back (as before): same DL1."""
    from iactpipe.image.processor import process_batch
    from iactpipe.io.events import EventBatch

    camera, dense, sparse = _lst_events(6, seed=11)
    settings = ImageSettings(extractor=extractor, extractor_options=(("core_threshold", 6.0),)
                             if extractor == "TwoPassWindowSum" else ())
    results = []
    for events in (dense, sparse):
        batch = EventBatch(obs_id=1, event_id=events.event_id, event_type=np.full(6, 32), time_mjd=np.zeros(6),
                           tels_with_trigger=np.ones((6, 1), bool), pointing_alt=np.full(6, 70.0),
                           pointing_az=np.zeros(6), tel={1: events})
        results.append(process_batch(batch, {1: camera}, {1: settings}, rng=np.random.default_rng(2))[1])
    np.testing.assert_array_equal(results[0].image, results[1].image)
    np.testing.assert_array_equal(results[0].peak_time, results[1].peak_time)
    np.testing.assert_array_equal(results[0].parameters["hillas_intensity"], results[1].parameters["hillas_intensity"])
