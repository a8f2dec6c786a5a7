"""sim_telarray reader vs ctapipe 0.28's SimTelEventSource on every shared simtel file.

Also: truncated/corrupt copies (cut plain, gzip and zstd streams, broken sync
markers and object contents), reader options and user errors.
"""

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
import zstandard
from astropy import units as u
from conftest import simtel_files
from iactpipe.errors import DataError, TruncatedFileError
from iactpipe.io.simtel import SimTelReader
from test_instrument import assert_subarray_matches, ctapipe_source

FILES = simtel_files()
CALIBRATION_FILES = ["calib_events.simtel.gz", "calib_true_pe.simtel.zst", "extracted_pedestals.simtel.zst"]
SMALL_FILE = "gct_checs_muons.simtel.zst"  # 20 single-telescope events, 6 MB decompressed


def stream_complete(path):
    """Whether a (compressed) file's stream ends properly: decoded independently of the reader."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif raw[:4] == b"\x28\xb5\x2f\xfd":
        decoder = zstandard.ZstdDecompressor().decompressobj()
    else:
        return True
    decoder.decompress(raw)
    return decoder.eof


def decompressed(path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(raw)
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def read_all(reader, batch_size=1000):
    return list(reader.iter_batches(batch_size=batch_size))


def ctapipe_events(path, **kwargs):
    """ctapipe's events as a list (and the source, for its run-level information)."""
    source = ctapipe_source(path, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = list(source)
    return source, events


def flatten(batches):
    """(array event rows, {(event_id, tel_id): telescope row}) of a list of EventBatch."""
    events, tel_events = [], {}
    for batch in batches:
        for i in range(len(batch)):
            row = {
                "event_id": batch.event_id[i], "event_type": batch.event_type[i], "time": batch.time_mjd[i],
                "tels_with_trigger": batch.tels_with_trigger[i], "pointing_alt": batch.pointing_alt[i],
                "pointing_az": batch.pointing_az[i],
                "shower": None if batch.shower is None else {k: v[i] for k, v in batch.shower.items()},
            }
            events.append(row)
        for tel_id, tel in batch.tel.items():
            for j in range(len(tel)):
                tel_events[(int(tel.event_id[j]), tel_id)] = {
                    name: (None if getattr(tel, name) is None else getattr(tel, name)[j])
                    for name in ("r0", "true_image", "true_image_sum", "true_impact_distance", "n_trigger_pixels",
                                 "time_mjd", "event_type", "pointing_alt", "pointing_az")
                } | {"calibration": batch.calibration[tel_id]}
    return events, tel_events


def assert_events_match(subarray, ours_batches, theirs_events):
    events, tel_events = flatten(ours_batches)
    assert [e["event_id"] for e in events] == [e.index.event_id for e in theirs_events]
    tel_ids = list(subarray.tel_ids)
    n_tel_events = 0
    for ours, theirs in zip(events, theirs_events, strict=True):
        event_id = theirs.index.event_id
        assert ours["event_type"] == theirs.trigger.event_type.value
        mask = np.isin(tel_ids, theirs.trigger.tels_with_trigger)
        np.testing.assert_array_equal(ours["tels_with_trigger"], mask)
        # float64 MJD: microsecond precision
        assert ours["time"] == pytest.approx(theirs.trigger.time.tai.mjd, abs=2e-11)
        # pointing: float32 radians in the file, ctapipe converts in float32
        pointing = theirs.monitoring.pointing
        assert ours["pointing_alt"] == pytest.approx(pointing.array_altitude.to_value(u.deg), rel=1e-7)
        assert ours["pointing_az"] == pytest.approx(pointing.array_azimuth.to_value(u.deg), rel=1e-7, abs=1e-6)

        shower = theirs.simulation.shower
        if shower is None:
            assert ours["shower"] is None or np.isnan(ours["shower"]["true_energy"])
        else:
            s = ours["shower"]
            assert s["true_energy"] == shower.energy.to_value(u.TeV)
            assert s["true_alt"] == pytest.approx(shower.alt.to_value(u.deg), rel=1e-15)
            assert s["true_az"] == pytest.approx(shower.az.to_value(u.deg), rel=1e-15)
            assert s["true_core_x"] == shower.core_x.to_value(u.m)
            assert s["true_core_y"] == shower.core_y.to_value(u.m)
            assert s["true_h_first_int"] == shower.h_first_int.to_value(u.m)
            assert s["true_x_max"] == shower.x_max.to_value(u.g / u.cm**2)
            np.testing.assert_array_equal(s["true_starting_grammage"], shower.starting_grammage.to_value(u.g / u.cm**2))
            assert s["true_shower_primary_id"] == shower.shower_primary_id

        assert sorted(t for (e, t) in tel_events if e == event_id) == sorted(theirs.r0.tel)
        for tel_id in theirs.r0.tel:
            n_tel_events += 1
            t = tel_events[(event_id, tel_id)]
            r0 = theirs.r0.tel[tel_id].waveform
            np.testing.assert_array_equal(t["r0"], r0)
            assert t["r0"].dtype == r0.dtype

            # calibration: R1 from our r0/pedestal/dc_to_pe with ctapipe's formula equals ctapipe's R1
            cal = t["calibration"]
            r1 = (t["r0"] - cal.pedestal_per_sample[..., np.newaxis]) * cal.dc_to_pe[..., np.newaxis] * 1.0 + 0.0
            r1_theirs = theirs.r1.tel[tel_id]
            if r1_theirs.selected_gain_channel is not None:
                r1 = r1[r1_theirs.selected_gain_channel, np.arange(r1.shape[1])][np.newaxis]
            np.testing.assert_array_equal(r1, r1_theirs.waveform)
            coefficients = theirs.monitoring.tel[tel_id].camera.coefficients
            np.testing.assert_array_equal(cal.time_shift, coefficients.time_shift)
            np.testing.assert_array_equal(cal.unusable, coefficients.outlier_mask)

            sim = theirs.simulation.tel.get(tel_id)
            if sim is None or sim.true_image is None:
                assert t["true_image"] is None
            else:
                np.testing.assert_array_equal(t["true_image"], sim.true_image)
            if sim is not None and np.isfinite(sim.true_image_sum):
                assert t["true_image_sum"] == sim.true_image_sum
            if shower is not None:
                assert t["true_impact_distance"] == pytest.approx(sim.impact.distance.to_value(u.m), rel=1e-12)
            else:
                assert np.isnan(t["true_impact_distance"])

            trigger = theirs.trigger.tel[tel_id]
            assert t["n_trigger_pixels"] == trigger.n_trigger_pixels
            assert t["event_type"] == trigger.event_type.value
            assert t["time_mjd"] == pytest.approx(trigger.time.tai.mjd, abs=2e-11)
            pointing = theirs.monitoring.tel[tel_id].pointing
            assert t["pointing_alt"] == pytest.approx(pointing.altitude.to_value(u.deg), rel=1e-7)
            assert t["pointing_az"] == pytest.approx(pointing.azimuth.to_value(u.deg), rel=1e-7, abs=1e-6)
    assert n_tel_events == len(tel_events)


def assert_run_info_matches(reader, source):
    info = reader.run_info
    assert info.obs_id == source.obs_id
    theirs = source.simulation_config[source.obs_id]
    ours = info.simulation_config
    assert set(ours) - {"obs_id"} == set(theirs.keys()) - {"obs_id"}
    for key, value in theirs.items():
        expected = np.asarray(value.value if isinstance(value, u.Quantity) else value)
        # ctapipe stores some columns as float32: compare at that precision
        np.testing.assert_array_equal(np.asarray(ours[key]).astype(expected.dtype), expected, err_msg=key)
    block = source.observation_blocks[source.obs_id]
    assert info.pointing_alt == pytest.approx(block.subarray_pointing_lat.to_value(u.deg), rel=1e-7)
    assert info.pointing_az == pytest.approx(block.subarray_pointing_lon.to_value(u.deg), rel=1e-7, abs=1e-6)
    assert info.start_time_mjd == pytest.approx(block.actual_start_time.tai.mjd, abs=1e-11)

    atmosphere = source.atmosphere_density_profile
    if atmosphere:
        table = atmosphere.table
        profile = info.atmosphere_profile
        np.testing.assert_array_equal(profile["height"], table["height"].to_value(u.km))
        np.testing.assert_array_equal(profile["density"], table["density"].to_value(u.g / u.cm**3))
        np.testing.assert_array_equal(profile["column_density"], table["column_density"].to_value(u.g / u.cm**2))
        assert info.atmosphere_profile["atmosphere_id"] == table.meta["atmosphere_id"]
        assert info.atmosphere_profile["observation_level"] == table.meta["observation_level"].to_value(u.cm)
    else:
        assert info.atmosphere_profile is None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distributions = source.simulated_shower_distributions
    if distributions:
        theirs = distributions[source.obs_id]
        ours = info.shower_distribution
        assert ours["n_entries"] == theirs.n_entries and ours["hist_id"] == theirs.hist_id
        np.testing.assert_array_equal(ours["bins_energy"], theirs.bins_energy.to_value(u.TeV))
        np.testing.assert_array_equal(ours["bins_core_dist"], theirs.bins_core_dist.to_value(u.m))
        np.testing.assert_array_equal(ours["histogram"], theirs.histogram)
    else:
        assert info.shower_distribution is None


# -- every shared file against ctapipe ----------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_file_matches_ctapipe(path):
    truncated = not stream_complete(path)
    reader = SimTelReader(path, skip_calibration=False, allow_truncated=truncated)
    batches = read_all(reader, batch_size=4)
    source, events = ctapipe_events(path, skip_calibration_events=False)
    assert_subarray_matches(reader.subarray, source.subarray)
    assert_events_match(reader.subarray, batches, events)
    assert_run_info_matches(reader, source)
    assert reader.complete is not truncated
    # calibration blocks of the run, as ctapipe attached them to the events
    for event in events:
        for tel_id in event.r0.tel:
            assert tel_id in reader.run_info.calibration


@pytest.mark.parametrize("name", CALIBRATION_FILES)
def test_calibration_events_skipped_by_default(simtel_dir, name):
    reader = SimTelReader(simtel_dir / name)
    _, default_events = ctapipe_events(simtel_dir / name)  # ctapipe skips them too
    assert sum(len(b) for b in read_all(reader)) == len(default_events) == 0
    batches = read_all(SimTelReader(simtel_dir / name, skip_calibration=False))
    types = np.concatenate([b.event_type for b in batches])
    assert len(types) > 0 and np.all(types < 32)  # calibration EventTypes, no SUBARRAY


def test_calibration_types(simtel_dir):
    # calib_true_pe: laser events (sim_telarray types 3 and 4) with true p.e.
    batches = read_all(SimTelReader(simtel_dir / "calib_true_pe.simtel.zst", skip_calibration=False))
    assert list(np.concatenate([b.event_type for b in batches])) == [0, 15]  # FLATFIELD, OTHER_CALIBRATION
    assert all(b.shower is None for b in batches)
    assert all(b.tel[1].true_image is not None and b.tel[1].true_image.sum() > 0 for b in batches)


def test_hv_disabled_pixels(simtel_dir):
    # n_hv_disabled: its disabled-pixels block lists no HV-disabled pixel (so ctapipe's
    # outlier mask, our `unusable`, is empty); the camera monitoring has HV off for 409
    # pixels, which read out nothing and have dc_to_pe = 0: our `hv_off`
    from eventio import SimTelFile

    path = simtel_dir / "n_hv_disabled.simtel.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SimTelFile(str(path)) as f:
            listed = f.telescope_descriptions[1]["disabled_pixels"]["HV_disabled"]
            event = next(iter(f))
    hv_set = event["camera_monitorings"][1]["hv_set"]

    reader = SimTelReader(path)
    calibration = reader.run_info.calibration[1]
    readout = reader.subarray.tels[1].readout
    assert calibration.unusable.shape == (readout.n_channels, readout.n_pixels)
    np.testing.assert_array_equal(np.flatnonzero(calibration.unusable[0]), np.sort(listed))
    np.testing.assert_array_equal(calibration.hv_off, hv_set == 0)
    assert calibration.hv_off.sum() == 409
    r0 = read_all(reader)[0].tel[1].r0[0]
    np.testing.assert_array_equal(np.all(r0 == 0, axis=(0, 2)), calibration.hv_off)
    assert np.all(calibration.dc_to_pe[:, calibration.hv_off] == 0)


# -- options --------------------------------------------------------------------------------

def test_batches_split_consistently(alpha_simtel):
    one = flatten(read_all(SimTelReader(alpha_simtel), batch_size=1))
    all_ = flatten(read_all(SimTelReader(alpha_simtel), batch_size=100))
    assert [e["event_id"] for e in one[0]] == [e["event_id"] for e in all_[0]]
    assert one[1].keys() == all_[1].keys()
    for key in one[1]:
        np.testing.assert_array_equal(one[1][key]["r0"], all_[1][key]["r0"])


def test_iterating_twice_gives_the_same(simtel_dir):
    with SimTelReader(simtel_dir / SMALL_FILE) as reader:
        first = read_all(reader, batch_size=7)
        second = read_all(reader, batch_size=7)
    assert [len(b) for b in first] == [7, 7, 6]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.event_id, b.event_id)
        np.testing.assert_array_equal(a.tel[1].r0, b.tel[1].r0)
    assert reader.complete is True


def test_allowed_tels_and_max_events(simtel_dir):
    path = simtel_dir / "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
    reader = SimTelReader(path, allowed_tels=[7, 8, 12], max_events=3)
    assert list(reader.subarray.tel_ids) == [7, 8, 12]
    batches = read_all(reader)
    source, events = ctapipe_events(path, allowed_tels={7, 8, 12}, max_events=3)
    assert_subarray_matches(reader.subarray, source.subarray)
    assert_events_match(reader.subarray, batches, events)
    assert reader.run_info.shower_distribution is None  # the histograms are at the end
    assert reader.complete is None  # stopped before the end


def _read_ahead_threads():
    return [t for t in threading.enumerate() if t.name == "simtel-read-ahead"]


@pytest.mark.parametrize("name", ["run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst",
                                  "calib_events.simtel.gz"])
def test_read_ahead_gives_the_same_batches(simtel_dir, name, monkeypatch):
    monkeypatch.setattr("iactpipe.io.simtel.CHUNK_SIZE", 1 << 16)  # many chunks, objects across them
    monkeypatch.setattr("iactpipe.io.simtel.READ_AHEAD_BYTES", 1 << 17)  # the decoder waits for the reader
    plain = flatten(read_all(SimTelReader(simtel_dir / name), batch_size=7))
    reader = SimTelReader(simtel_dir / name, read_ahead=True)
    assert reader._session.stream._ahead is not None and len(_read_ahead_threads()) == 1
    ahead = flatten(read_all(reader, batch_size=7))
    assert not _read_ahead_threads()  # the iteration's end stopped the thread
    assert [e["event_id"] for e in ahead[0]] == [e["event_id"] for e in plain[0]]
    assert ahead[1].keys() == plain[1].keys()
    for key in plain[1]:
        np.testing.assert_array_equal(ahead[1][key]["r0"], plain[1][key]["r0"])
        np.testing.assert_array_equal(ahead[1][key]["true_image"], plain[1][key]["true_image"])
    assert reader.complete is True


def test_read_ahead_thread_stops_with_an_early_end(simtel_dir, monkeypatch):
    monkeypatch.setattr("iactpipe.io.simtel.CHUNK_SIZE", 1 << 14)
    path = simtel_dir / "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
    reader = SimTelReader(path, max_events=2, read_ahead=True)
    assert sum(len(b) for b in read_all(reader)) == 2 and reader.complete is None
    assert not _read_ahead_threads()
    SimTelReader(path, read_ahead=True).close()  # opened, header read, never iterated
    assert not _read_ahead_threads()


def test_allowed_tels_not_in_file(simtel_dir):
    with pytest.raises(DataError, match=r"allowed_tels \[99\] not in the file"):
        SimTelReader(simtel_dir / SMALL_FILE, allowed_tels=[1, 99])


def test_without_waveforms_and_true_images(alpha_simtel):
    full = flatten(read_all(SimTelReader(alpha_simtel)))
    light = flatten(read_all(SimTelReader(alpha_simtel, read_waveforms=False, read_true_images=False)))
    assert full[1].keys() == light[1].keys()
    for key, tel in light[1].items():
        assert tel["r0"] is None and tel["true_image"] is None
        assert tel["n_trigger_pixels"] == full[1][key]["n_trigger_pixels"]
        assert tel["true_impact_distance"] == full[1][key]["true_impact_distance"]


def test_impact_distance_is_distance_to_shower_axis(alpha_simtel):
    reader = SimTelReader(alpha_simtel, read_waveforms=False)
    for batch in read_all(reader):
        for tel_id, tel in batch.tel.items():
            index = np.searchsorted(batch.event_id, tel.event_id)
            alt = np.deg2rad(batch.shower["true_alt"][index])
            az = np.deg2rad(batch.shower["true_az"][index])
            axis = np.stack([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)], axis=1)
            core = np.stack([batch.shower["true_core_x"][index], batch.shower["true_core_y"][index],
                             np.zeros(len(index))], axis=1)
            relative = reader.subarray.tel_positions[tel_id] - core
            along = np.sum(relative * axis, axis=1)
            expected = np.sqrt(np.sum(relative**2, axis=1) - along**2)
            np.testing.assert_allclose(tel.true_impact_distance, expected, rtol=1e-9)


# -- truncated and corrupt files ------------------------------------------------------------

def object_offsets(data):
    """(offset, type, end) of the top-level objects of decompressed eventio bytes."""
    from eventio.header import parse_header_bytes

    result, pos = [], 0
    while pos < len(data):
        header = parse_header_bytes(data[pos + 4:pos + 16], toplevel=True)
        end = pos + header.header_size + header.content_size
        result.append((pos, header.type, end))
        pos = end
    return result


@pytest.fixture(scope="module")
def small_file(simtel_dir):
    data = decompressed(simtel_dir / SMALL_FILE)
    objects = object_offsets(data)
    event_ids = np.concatenate([b.event_id for b in read_all(SimTelReader(simtel_dir / SMALL_FILE))])
    return data, objects, event_ids


def events_before(objects, cut):
    """Number of array events complete before byte ``cut`` and the offset of the first incomplete object."""
    complete = [o for o in objects if o[2] <= cut]
    first_broken = next(o[0] for o in objects if o[2] > cut)
    return sum(1 for o in complete if o[1] == 2010), first_broken


@pytest.mark.parametrize("where", ["array_event_middle", "object_header", "sync_marker", "last_byte"])
def test_truncated_plain_file(tmp_path, small_file, where):
    data, objects, event_ids = small_file
    arrays = [o for o in objects if o[1] == 2010]
    target = arrays[5]
    cut = {"array_event_middle": (target[0] + target[2]) // 2, "object_header": target[0] + 9,
           "sync_marker": target[0] + 2, "last_byte": len(data) - 1}[where]
    path = tmp_path / "cut.simtel"
    path.write_bytes(data[:cut])
    n_complete, offset = events_before(objects, cut)

    reader = SimTelReader(path)
    seen = []
    with pytest.raises(TruncatedFileError) as info:
        for batch in reader.iter_batches(batch_size=3):
            seen.extend(batch.event_id)
    assert info.value.offset == offset and info.value.n_complete == n_complete
    assert str(path) in str(info.value) and f"byte offset {offset}" in str(info.value)
    np.testing.assert_array_equal(seen, event_ids[:n_complete])
    assert reader.complete is False


def test_truncated_allowed_logs_warning(tmp_path, small_file, caplog):
    data, objects, event_ids = small_file
    cut = len(data) * 2 // 3
    path = tmp_path / "cut.simtel"
    path.write_bytes(data[:cut])
    n_complete, offset = events_before(objects, cut)
    with caplog.at_level(logging.WARNING, logger="iactpipe.io.simtel"):
        batches = read_all(SimTelReader(path, allow_truncated=True))
    np.testing.assert_array_equal(np.concatenate([b.event_id for b in batches]), event_ids[:n_complete])
    assert any(f"byte offset {offset}" in r.getMessage() for r in caplog.records)


def test_cut_at_object_boundary_is_a_clean_end(tmp_path, small_file):
    # undetectable in an uncompressed file: the events before the cut, no error
    data, objects, event_ids = small_file
    boundary = [o for o in objects if o[1] == 2010][9][2]
    path = tmp_path / "cut.simtel"
    path.write_bytes(data[:boundary])
    batches = read_all(SimTelReader(path))
    np.testing.assert_array_equal(np.concatenate([b.event_id for b in batches]), event_ids[:10])


@pytest.mark.parametrize("fraction", [0.3, 0.75, 0.999])
@pytest.mark.parametrize("compression", ["zst", "gz"])
@pytest.mark.parametrize("read_ahead", [False, True], ids=["inline", "read-ahead"])
def test_truncated_compressed_file(tmp_path, small_file, fraction, compression, read_ahead):
    data, objects, event_ids = small_file
    if compression == "zst":
        packed = zstandard.ZstdCompressor(level=3).compress(data)
        decoder = zstandard.ZstdDecompressor().decompressobj()
    else:
        packed = gzip.compress(data, compresslevel=1)
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    cut_packed = packed[:int(len(packed) * fraction)]
    available = len(decoder.decompress(cut_packed))  # what any decoder can recover
    path = tmp_path / f"cut.simtel.{compression}"
    path.write_bytes(cut_packed)
    if available >= len(data):  # the cut only removed the stream's end marker/checksum
        n_complete, offset = len(event_ids), len(data)
    else:
        n_complete, offset = events_before(objects, available)
    seen = []
    with pytest.raises(TruncatedFileError) as info:
        for batch in SimTelReader(path, read_ahead=read_ahead).iter_batches():
            seen.extend(batch.event_id)
    assert (info.value.offset, info.value.n_complete) == (offset, n_complete)
    np.testing.assert_array_equal(seen, event_ids[:n_complete])


def test_corrupt_compressed_stream_same_with_read_ahead(tmp_path, small_file, monkeypatch):
    # a decoder error in the read-ahead thread reaches the reader after the chunks before it
    monkeypatch.setattr("iactpipe.io.simtel.CHUNK_SIZE", 1 << 16)
    data, objects, event_ids = small_file
    packed = bytearray(zstandard.ZstdCompressor(level=3).compress(data))
    packed[len(packed) // 2:len(packed) // 2 + 64] = bytes(64)
    path = tmp_path / "corrupt.simtel.zst"
    path.write_bytes(bytes(packed))
    outcomes = []
    for read_ahead in (False, True):
        seen = []
        with pytest.raises(TruncatedFileError) as info:
            for batch in SimTelReader(path, read_ahead=read_ahead).iter_batches(batch_size=1):
                seen.extend(batch.event_id)
        outcomes.append((info.value.offset, info.value.n_complete, seen))
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0][1] < len(event_ids)


def test_truncated_compressed_stream_at_object_boundary(tmp_path, small_file):
    # a gzip member without its end: detected although the objects are complete
    data, objects, event_ids = small_file
    boundary = [o for o in objects if o[1] == 2010][9][2]
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    packed = compressor.compress(data[:boundary]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    path = tmp_path / "cut.simtel.gz"
    path.write_bytes(packed)
    with pytest.raises(TruncatedFileError) as info:
        read_all(SimTelReader(path))
    assert (info.value.offset, info.value.n_complete) == (boundary, 10)


def test_real_truncated_file(simtel_dir):
    path = simtel_dir / "test_lasercal_v3.simtel.gz"
    assert not stream_complete(path)
    with pytest.raises(TruncatedFileError) as info:
        read_all(SimTelReader(path))
    assert info.value.n_complete == 3
    assert len(read_all(SimTelReader(path, allow_truncated=True))[0]) == 3


def test_corrupt_sync_marker(tmp_path, small_file):
    data, objects, event_ids = small_file
    target = [o for o in objects if o[1] == 2010][6]
    broken = bytearray(data)
    broken[target[0]:target[0] + 4] = b"\0\0\0\0"
    path = tmp_path / "corrupt.simtel"
    path.write_bytes(bytes(broken))
    with pytest.raises(TruncatedFileError) as info:
        read_all(SimTelReader(path))
    assert (info.value.offset, info.value.n_complete) == (target[0], 6)


def test_corrupt_object_content(tmp_path, small_file):
    # the first sub-object of an array event must be its trigger block
    data, objects, event_ids = small_file
    target = [o for o in objects if o[1] == 2010][4]
    broken = bytearray(data)
    broken[target[0] + 16:target[0] + 18] = (4321).to_bytes(2, "little")
    path = tmp_path / "corrupt.simtel.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(broken)))
    seen = []
    with pytest.raises(TruncatedFileError) as info:
        for batch in SimTelReader(path).iter_batches(batch_size=1):
            seen.extend(batch.event_id)
    assert (info.value.offset, info.value.n_complete) == (target[0], 4)
    np.testing.assert_array_equal(seen, event_ids[:4])


def test_truncated_in_header(tmp_path, small_file):
    data, objects, _ = small_file
    settings = next(o for o in objects if o[1] == 2002)
    path = tmp_path / "cut.simtel"
    path.write_bytes(data[:settings[0] + 100])
    with pytest.raises(TruncatedFileError) as info:
        SimTelReader(path, allow_truncated=True)
    assert (info.value.offset, info.value.n_complete) == (settings[0], 0)


# -- user errors ----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        SimTelReader(tmp_path / "missing.simtel.zst")
    assert str(info.value) == f"{tmp_path / 'missing.simtel.zst'}: no such file"


@pytest.mark.parametrize("content", [b"", b"hello world, not eventio",
                                     gzip.compress(b"plain text in gzip " * 10, mtime=0),
                                     zstandard.ZstdCompressor().compress(b"\x00" * 100)],
                         ids=["empty", "text", "gzip-text", "zstd-zeros"])
def test_not_a_simtel_file(tmp_path, content):
    path = tmp_path / "fake.simtel.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        SimTelReader(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert not isinstance(info.value, TruncatedFileError)


# -- ADC sample decoding ----------------------------------------------------------------------

def encode_differential_varints(traces):
    """sim_telarray's ADC sample encoding, written from its description (for the decoder test).

    Per trace: differences to the previous sample, sign in the lowest bit, as
    big-endian varints whose first byte starts with (length - 1) one bits and a
    zero (7 data bits per byte; 9 bytes = 0xFF + 64 bits).
    """
    out = bytearray()
    for trace in traces.reshape(-1, traces.shape[-1]):
        previous = 0
        for value in trace.tolist():
            delta, previous = value - previous, value
            word = (delta << 1) if delta >= 0 else ((-delta - 1) << 1) | 1
            length = next((n for n in range(1, 9) if word < 1 << (7 * n)), 9)
            if length == 9:
                out += b"\xff" + word.to_bytes(8, "big")
            else:
                data = bytearray(word.to_bytes(length, "big"))
                data[0] |= (0xFF << (9 - length)) & 0xFF
                out += data
    return bytes(out)


@pytest.mark.parametrize("jump", [0, 200, 70_000, 20_000_000])
def test_adc_decoder_equals_eventio(jump):
    from eventio.var_int import unsigned_varint_arrays_differential
    from iactpipe.io.simtel import decode_adc_samples

    rng = np.random.default_rng(jump)
    traces = rng.integers(0, 4096, size=(2, 50, 30)) + rng.integers(0, 2, size=(2, 50, 30)) * jump
    encoded = encode_differential_varints(traces)
    expected, used = unsigned_varint_arrays_differential(encoded, n_arrays=100, n_elements=30)
    assert used == len(encoded)
    expected = expected.reshape(2, 50, 30).astype(np.uint16)
    np.testing.assert_array_equal(expected, traces.astype(np.uint16))

    out = np.empty((2, 50, 30), dtype=np.uint16)
    assert decode_adc_samples(np.frombuffer(encoded, np.uint8), 0, out) == len(encoded)
    np.testing.assert_array_equal(out, expected)
    # offset start and data ending early
    shifted = np.frombuffer(b"xyz" + encoded, np.uint8)
    assert decode_adc_samples(shifted, 3, out) == len(encoded)
    np.testing.assert_array_equal(out, expected)
    assert decode_adc_samples(np.frombuffer(encoded[:-1], np.uint8), 0, out) == -1


@pytest.mark.parametrize("n_samples", [1, 7, 8, 9, 15, 16, 17, 24, 25, 33, 40, 64, 75])
def test_adc_decoder_vector_runs_equal_eventio(n_samples):
    """Runs of one-byte differences (decoded 16 and 8 at a time) broken by a longer one at every
    position, negative and positive differences, 16-bit wrap-around, and data ending early."""
    from eventio.var_int import unsigned_varint_arrays_differential
    from iactpipe.io.simtel import decode_adc_samples

    rng = np.random.default_rng(n_samples)
    n_traces = 3 * n_samples + 5
    steps = rng.integers(-63, 64, size=(n_traces, n_samples))
    for trace in range(n_traces):  # one longer difference at position trace % n_samples in most traces
        if trace % 4:
            steps[trace, trace % n_samples] += rng.choice([-1, 1]) * rng.integers(70, 3000)
    traces = np.cumsum(steps, axis=1) + rng.integers(0, 65536, size=(n_traces, 1))
    traces %= 65536
    encoded = encode_differential_varints(traces[np.newaxis])
    expected, _ = unsigned_varint_arrays_differential(encoded, n_arrays=n_traces, n_elements=n_samples)
    np.testing.assert_array_equal(expected.astype(np.uint16).reshape(n_traces, n_samples), traces)
    out = np.empty((1, n_traces, n_samples), dtype=np.uint16)
    assert decode_adc_samples(np.frombuffer(encoded, np.uint8), 0, out) == len(encoded)
    np.testing.assert_array_equal(out[0], traces)
    for cut in (1, 9, 17, len(encoded) // 2):
        assert decode_adc_samples(np.frombuffer(encoded[:-cut], np.uint8), 0, out) == -1


def test_adc_decoder_on_pedestal_like_traces():
    """Real traces: one two-byte first value, then one-byte differences with a few longer ones (pulses)."""
    from iactpipe.io.simtel import decode_adc_samples

    rng = np.random.default_rng(1)
    traces = 300 + rng.integers(-20, 21, size=(2, 64, 40))
    traces[0, 5, 10:14] += [150, 2000, 900, 30]  # a pulse: two- and three-byte differences mid-trace
    traces[1, 63, 39] = 65535  # a long difference in the last sample
    encoded = encode_differential_varints(traces)
    out = np.zeros((2, 64, 40), dtype=np.uint16)
    assert decode_adc_samples(np.frombuffer(encoded, np.uint8), 0, out) == len(encoded)
    np.testing.assert_array_equal(out, traces.astype(np.uint16))
    for cut in (1, 2, 5, len(encoded) // 2, len(encoded) - 1):  # data ending inside runs and long values
        assert decode_adc_samples(np.frombuffer(encoded[:-cut], np.uint8), 0, out) == -1


def test_batches_end_when_waveform_buffer_is_full(simtel_dir, monkeypatch):
    import iactpipe.io.simtel as simtel

    full = read_all(SimTelReader(simtel_dir / SMALL_FILE))
    per_event = 2048 * 128 * 2  # CHEC: 1 gain, 2048 pixels, 128 samples, uint16
    monkeypatch.setattr(simtel, "MAX_WAVEFORM_BUFFER", 3 * per_event)
    batches = read_all(SimTelReader(simtel_dir / SMALL_FILE), batch_size=10)
    assert [len(b) for b in batches] == [3] * 6 + [2]
    np.testing.assert_array_equal(np.concatenate([b.tel[1].r0 for b in batches]), full[0].tel[1].r0)


@pytest.mark.parametrize("name", ["run201_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst",
                                  "calib_events.simtel.gz"])
def test_object_walk_keeps_the_mc_event_of_every_array_event(simtel_dir, name):
    """Runs of MC-event objects are skipped to their last one: each array event still sees its own."""
    from eventio import EventIOFile
    from iactpipe.io.simtel import _ByteStream, _iter_objects

    def last_mc_before_events(objects):
        pairs, mc_event, n_mc = [], None, 0
        for kind, header_id, offset in objects:
            if kind == 2021:
                mc_event, n_mc = (header_id, offset), n_mc + 1
            elif kind in (2010, 2028):
                pairs.append((kind, header_id, mc_event))
                mc_event = None
        return pairs, n_mc

    path = simtel_dir / name
    stream = _ByteStream(path)
    ours, n_ours = last_mc_before_events((h.type, h.id, off) for off, h, _ in _iter_objects(stream))
    stream.close()
    with EventIOFile(str(path)) as f:
        theirs, n_theirs = last_mc_before_events((o.header.type, o.header.id, o.address - o.header.header_size)
                                                     for o in f)
    assert ours == theirs and len(ours) > 0
    assert n_ours <= n_theirs
    if n_theirs > len(ours) + 1:
        assert n_ours < n_theirs  # the walk really skipped untriggered showers


def _object(kind, content=b"", extended=False):
    """An eventio top-level object: sync marker, type word, id, length, content."""
    word = kind | (1 << 17 if extended else 0)
    return b"\x37\x8a\x1f\xd4" + np.array([word, 0, len(content)], dtype="<u4").tobytes() + content


@pytest.mark.parametrize("kinds, expected", [
    ([2021, 1204, 2021, 2020, 2021, 1204, 2010], [3, 4, 5]),  # last shower, then its event and true p.e.
    ([2021, 1204, 2020], [0, 1, 2]),  # the event before the last shower still clears telescope data
    ([2020, 2021, 2021, 2021], [0, 3]),
    ([1204, 1204, 2020], [1, 2]),
    ([2021, 2010], [0]),
])
def test_mc_run_keeps_the_objects_that_set_the_reader_state(kinds, expected):
    """Of a run of MC shower/event/telescope-data objects, the last of each type, in file order."""
    from iactpipe.io.simtel import _mc_run

    objects = [_object(kind, bytes(8 * (i + 1))) for i, kind in enumerate(kinds)]
    starts = np.cumsum([0] + [len(o) for o in objects])[:-1]
    data = np.frombuffer(b"".join(objects), dtype=np.uint8)
    np.testing.assert_array_equal(_mc_run(data, 0), starts[expected])


def test_mc_run_stops_before_incomplete_and_extended_objects():
    from iactpipe.io.simtel import _mc_run

    head = _object(2021, bytes(8)) + _object(2020, bytes(8))
    extended = np.frombuffer(head + _object(2021, bytes(8), extended=True), dtype=np.uint8)
    np.testing.assert_array_equal(_mc_run(extended, 0), [0, 24])
    cut = np.frombuffer(head + _object(2021, bytes(8))[:-1], dtype=np.uint8)
    np.testing.assert_array_equal(_mc_run(cut, 0), [0, 24])
    np.testing.assert_array_equal(_mc_run(cut[:10], 0), [0])  # not one whole object: the careful path


def _resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_mapped_input_does_not_stay_resident(tmp_path):
    """Mapped file pages count in the resident set: the stream and the checksum release what they have read."""
    from iactpipe.io.simtel import _ByteStream

    size = 96 << 20
    path = tmp_path / "big.zst"
    payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(payload))  # incompressible: 96 MB on disk
    expected = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    del payload
    # the checksum's peak: the resident high-water mark, reset just before (Linux clear_refs 5)
    script = ("import sys; from iactpipe.provenance import file_checksum\n"
              "def kb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
              "open('/proc/self/clear_refs', 'w').write('5'); before = kb('VmRSS:')\n"
              "print(file_checksum(sys.argv[1]), (kb('VmHWM:') - before) / 1024)")
    checksum, growth = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                                      check=True).stdout.split()
    assert checksum == expected and float(growth) < 40
    before = _resident_mb()
    stream = _ByteStream(path)
    assert stream._map is not None  # read through the map
    total = 0
    while stream.ensure(1 << 16):
        total += len(stream.buffer) - stream.pos
        stream.pos = len(stream.buffer)
        assert _resident_mb() - before < 40
    stream.close()
    assert total == size
