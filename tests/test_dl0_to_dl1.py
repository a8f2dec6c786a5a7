"""iactpipe-dl0-to-dl1 against ctapipe-process 0.28 on real sim_telarray files, plus its own contracts.

The comparisons run ctapipe's ProcessorTool in this process (its timing-fit generator reset, as
in a fresh ``ctapipe-process``) and our step on the same file with the same settings, then compare
per (obs_id, event_id, tel_id).  Documented differences (see ``tolerances`` and
``three_point_fits`` in test_image_parameters.py): ctapipe computes leakage/concentration sums and
the intensity/peak-time statistics in float32, we in float64; thin-image widths and 3-point timing
fits are rounding noise in ctapipe.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tables
from iactpipe.config import resolve_config
from iactpipe.image.processor import (
    TRUE_PARAMETER_COLUMNS,
    CameraSetup,
    ImageSettings,
    event_positions,
    fit_timing_in_event_order,
    process_telescope_events,
    settings_for_type,
)
from iactpipe.image.timing import timing_parameters
from iactpipe.io.dl0 import DL0Reader, DL0Writer
from iactpipe.io.dl1 import coefficients_at, read_calibration_coefficients, write_calibration_coefficients
from iactpipe.io.events import TelescopeCalibration, TelescopeEvents
from iactpipe.io.simtel import SimTelReader
from iactpipe.io.tables import validate_file
from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step, image_settings
from test_image_parameters import three_point_fits, tolerances

pytest.importorskip("ctapipe")

ROOT = Path(__file__).resolve().parents[1]
ALPHA = "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst"
RUN202 = "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
RUN201 = "run201_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
PARAMETERS = "/dl1/event/telescope/parameters"
IMAGES = "/dl1/event/telescope/images"
TRUE_PARAMETERS = "/simulation/event/telescope/parameters"


# -- helpers -------------------------------------------------------------------------------


def run_step(args, capsys=None):
    code = Dl0ToDl1Step().main([str(a) for a in args])
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def run_ctapipe(simtel, output, extra=()):
    """ctapipe-process in this process, as a fresh run: FIT_RNG reset to its seed."""
    from ctapipe.core import run_tool
    from ctapipe.fitting import FIT_RNG
    from ctapipe.tools.process import ProcessorTool

    FIT_RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    argv = [f"--input={simtel}", f"--output={output}", "--write-images", "--overwrite", *extra]
    assert run_tool(ProcessorTool(), argv=argv, cwd=output.parent) == 0
    return output


def tel_tables(path, group):
    with tables.open_file(path) as h5:
        if group not in h5:
            return {}
        return {node._v_name: node.read() for node in h5.get_node(group)._f_iter_nodes("Table")}


def assert_rows_equal(ours, ref, label=""):
    """Structured arrays equal column by column (NaN == NaN)."""
    assert ours.dtype == ref.dtype, label
    for name in ref.dtype.names:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=f"{label} {name}")


def compare_parameters(ours, ref, images=None):
    """Problems (list of str) between two parameter tables of one telescope."""
    problems = []
    if not np.array_equal(ours[["obs_id", "event_id", "tel_id"]], ref[["obs_id", "event_id", "tel_id"]]):
        return ["rows (obs_id, event_id, tel_id) differ"]
    expected = {name: ref[name].astype(np.float64) for name in ref.dtype.names}
    skip_timing = np.zeros(len(ref), bool)
    if images is not None:
        skip_timing = three_point_fits(images["image_mask"], images["peak_time"], np.isfinite(ref["hillas_intensity"]))
    for name in ref.dtype.names:
        if name not in ours.dtype.names:
            problems.append(f"{name} missing")
            continue
        if ours.dtype[name] != ref.dtype[name]:
            problems.append(f"{name}: dtype {ours.dtype[name]} != {ref.dtype[name]}")
        got, want = ours[name].astype(np.float64), expected[name]
        rows = ~skip_timing if name.startswith("timing_") else np.ones(len(ref), bool)
        got, want = got[rows], want[rows]
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            problems.append(f"{name}: NaN pattern differs")
            continue
        if np.issubdtype(ref.dtype[name], np.integer):
            if not np.array_equal(got, want):
                problems.append(f"{name}: {got} != {want}")
            continue
        if name == "core_psi" or name.startswith("true_"):
            rtol, atol = np.full(len(got), 1e-6), np.full(len(got), 1e-12)
        else:
            rtol, atol = tolerances(name, expected, float32_reference=True)
            rtol, atol = rtol[rows], atol[rows]
        finite = np.isfinite(want)
        bad = np.abs(got[finite] - want[finite]) > atol[finite] + rtol[finite] * np.abs(want[finite])
        if bad.any():
            problems.append(f"{name}: ours {got[finite][bad]} ctapipe {want[finite][bad]}")
    return problems


def assert_same_dl1(ours_path, ref_path, images=True):
    """Parameters, masks, images, truth and cut flow of two DL1 files agree (see module doc)."""
    ours_params, ref_params = tel_tables(ours_path, PARAMETERS), tel_tables(ref_path, PARAMETERS)
    assert sorted(ours_params) == sorted(ref_params)
    ours_images, ref_images = tel_tables(ours_path, IMAGES), tel_tables(ref_path, IMAGES)
    problems = []
    for tel in sorted(ref_params):
        if images:
            a, b = ours_images[tel], ref_images[tel]
            np.testing.assert_array_equal(a["image_mask"], b["image_mask"], err_msg=f"{tel} cleaning masks")
            np.testing.assert_array_equal(a["image"], b["image"], err_msg=f"{tel} images")
            np.testing.assert_array_equal(a["peak_time"], b["peak_time"], err_msg=f"{tel} peak times")
        problems += [f"{tel} {p}" for p in compare_parameters(
            ours_params[tel], ref_params[tel], ref_images.get(tel) if images else None
        )]
    ours_true, ref_true = tel_tables(ours_path, TRUE_PARAMETERS), tel_tables(ref_path, TRUE_PARAMETERS)
    assert sorted(ours_true) == sorted(ref_true)
    for tel in sorted(ref_true):
        problems += [f"{tel} true {p}" for p in compare_parameters(ours_true[tel], ref_true[tel])]
    assert not problems, "\n".join(problems)
    for group in ("/simulation/event/telescope/images", "/simulation/event/telescope/impact"):
        ours, ref = tel_tables(ours_path, group), tel_tables(ref_path, group)
        assert sorted(ours) == sorted(ref), group
        for tel in ref:
            for name in ref[tel].dtype.names:
                # impact distances: the reader's geometry differs from ctapipe's in the last bit
                np.testing.assert_allclose(ours[tel][name], ref[tel][name], rtol=1e-14, atol=0,
                                           err_msg=f"{group} {tel} {name}")
    with tables.open_file(ours_path) as a, tables.open_file(ref_path) as b:
        for path, skip in [("/dl1/event/subarray/trigger", {"time"}), ("/dl1/event/telescope/trigger", {"time"}),
                           ("/simulation/event/subarray/shower", set()), ("/dl1/service/image_statistics", set())]:
            x, y = a.get_node(path).read(), b.get_node(path).read()
            assert x.dtype.names == y.dtype.names, path
            for name in set(y.dtype.names) - skip:
                np.testing.assert_array_equal(x[name], y[name], err_msg=f"{path} {name}")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dl0_to_dl1")


@pytest.fixture(scope="module")
def alpha_pair(simtel_dir, workdir):
    """(ours, ctapipe) DL1 files with images of the Alpha prod6 file (LST + NectarCam)."""
    ref = run_ctapipe(simtel_dir / ALPHA, workdir / "alpha.ctapipe.h5")
    ours = workdir / "alpha.dl1.h5"
    assert run_step([simtel_dir / ALPHA, "-o", ours, "--write-images"])[0] == 0
    return ours, ref


@pytest.fixture(scope="module")
def run202_pair(simtel_dir, workdir):
    """(ours, ctapipe) DL1 files with images of the prod5 proton file (LST + FlashCam)."""
    ref = run_ctapipe(simtel_dir / RUN202, workdir / "run202.ctapipe.h5")
    ours = workdir / "run202.dl1.h5"
    assert run_step([simtel_dir / RUN202, "-o", ours, "--write-images", "--read-ahead"])[0] == 0
    return ours, ref


@pytest.fixture(scope="module")
def dl0_files(workdir):
    """Simulator output: R0+R1 waveforms with coefficients, and images-only (same showers)."""
    from iactpipe.steps.simulate import SimulateStep

    paths = {}
    for kind, extra in [("r0", ["--write-r0"]), ("images", ["--images-only"])]:
        paths[kind] = workdir / f"sim_{kind}.dl0.h5"
        args = ["--n-showers", "150", "--seed", "3", "--telescopes", "1", "2", "5", "6", "7", "8", "9",
                "-o", str(paths[kind]), *extra]
        assert SimulateStep().main(args) == 0
    return paths


# -- correctness against ctapipe -------------------------------------------------------------


def test_equals_ctapipe_lst_nectarcam(alpha_pair):
    assert_same_dl1(*alpha_pair)


def test_equals_ctapipe_lst_flashcam(run202_pair):
    assert_same_dl1(*run202_pair)


def test_trigger_times_equal_ctapipe(run202_pair):
    ours, ref = run202_pair
    with tables.open_file(ours) as a, tables.open_file(ref) as b:
        for path in ("/dl1/event/subarray/trigger", "/dl1/event/telescope/trigger"):
            x, y = a.get_node(path).col("time"), b.get_node(path).col("time")
            seconds = (x[:, 0].astype(np.int64) - y[:, 0]) + (x[:, 1].astype(np.int64) - y[:, 1]) * 0.25e-9
            assert np.all(np.abs(seconds) < 2e-6), path  # float64 MJD in EventBatch: ~0.5 us resolution


def test_parameters_from_ctapipe_dl1_images(run202_pair, workdir):
    """Images of a ctapipe DL1 file as input: the same parameters and truth as ctapipe's."""
    _, ref = run202_pair
    ours = workdir / "from_ctapipe_images.dl1.h5"
    assert run_step([ref, "-o", ours, "--write-images"])[0] == 0
    assert_same_dl1(ours, ref)


def test_hdf5_inputs_do_not_import_ctapipe(run202_pair, dl0_files, tmp_path):
    """Opening a table unpickles its enum attributes, which would import ctapipe.containers (~0.5 s of start-up)."""
    from conftest import modules_imported_by_step

    _, ctapipe_dl1 = run202_pair
    for name, path in (("ctapipe DL1 with images", ctapipe_dl1), ("our DL0", dl0_files["r0"])):
        argv = [path, "-o", tmp_path / "out.h5", "--overwrite", "--max-events", "5", "--log-level", "WARNING"]
        assert modules_imported_by_step("dl0_to_dl1", argv, ("ctapipe",)) == [], name


@pytest.mark.slow
@pytest.mark.parametrize("name, ctapipe_args, our_args", [
    ("gamma_prod6_tel_event_header_v4.simtel.zst", [], []),
    ("history_meta_75.simtel.zst", [], []),
    ("gct_checs_muons.simtel.zst", [], []),
    ("camsettings_v6.simtel.zst", [], []),
    ("lst_muons.simtel.zst", ["--SimTelEventSource.focal_length_choice=EQUIVALENT"], []),
    ("gamma_with_obslevel_particles.simtel.zst", [], []),
    ("n_hv_disabled.simtel.gz", [], ["--config", "NO_HV_OFF"]),
    ("gamma_with_obslevel_particles.simtel.zst", ["--SimTelEventSource.focal_length_choice=EQUIVALENT"],
     ["--focal-length-choice", "equivalent"]),
])
def test_equals_ctapipe_more_files(simtel_dir, tmp_path, name, ctapipe_args, our_args):
    ref = run_ctapipe(simtel_dir / name, tmp_path / "ctapipe.h5", ctapipe_args)
    config = tmp_path / "no_hv_off.yaml"
    config.write_text("invalid_pixels: {flag_hv_off: false}\n")
    args = [str(config) if a == "NO_HV_OFF" else a for a in our_args]
    ours = tmp_path / "ours.h5"
    assert run_step([simtel_dir / name, "-o", ours, "--write-images", *args])[0] == 0
    assert_same_dl1(ours, ref)


def _extractor_per_type(tmp_path, pattern, name):
    """(ctapipe --config, our --config) selecting extractor ``name`` for telescope types ``pattern``."""
    ctapipe_config = tmp_path / "ctapipe.json"
    ctapipe_config.write_text(json.dumps({"CameraCalibrator": {"image_extractor_type": [
        ["type", "*", "NeighborPeakWindowSum"], ["type", pattern, name]]}}))
    ours = tmp_path / "ours.yaml"
    ours.write_text(f"image_extraction:\n  '{pattern}': {{extractor: {name}}}\n")
    return ctapipe_config, ours


@pytest.mark.filterwarnings("ignore:TelescopeParameter type argument")
def test_two_pass_for_lst_only_equals_ctapipe(simtel_dir, tmp_path):
    """TwoPassWindowSum for the LSTs, NeighborPeakWindowSum for NectarCam: images, masks and parameters as ctapipe's."""
    ctapipe_config, ours_config = _extractor_per_type(tmp_path, "LST*", "TwoPassWindowSum")
    ref = run_ctapipe(simtel_dir / ALPHA, tmp_path / "ctapipe.h5", ["--config", str(ctapipe_config)])
    ours = tmp_path / "ours.h5"
    assert run_step([simtel_dir / ALPHA, "-o", ours, "--write-images", "--config", ours_config])[0] == 0
    assert_same_dl1(ours, ref)
    with tables.open_file(ours) as h5:
        lst_rows = [h5.get_node(IMAGES, f"tel_{t:03d}").nrows for t in (1, 2, 3, 4) if f"{IMAGES}/tel_{t:03d}" in h5]
    assert sum(lst_rows) > 0  # TwoPassWindowSum did run


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:TelescopeParameter type argument")
@pytest.mark.parametrize("name", ["TwoPassWindowSum", "BaselineSubtractedNeighborPeakWindowSum"])
def test_new_extractors_for_all_equal_ctapipe(simtel_dir, tmp_path, name):
    ctapipe_config, ours_config = _extractor_per_type(tmp_path, "*", name)
    ref = run_ctapipe(simtel_dir / RUN202, tmp_path / "ctapipe.h5", ["--config", str(ctapipe_config)])
    ours = tmp_path / "ours.h5"
    assert run_step([simtel_dir / RUN202, "-o", ours, "--write-images", "--config", ours_config])[0] == 0
    assert_same_dl1(ours, ref)


def test_two_pass_batches_with_per_event_coefficients(simtel_dir):
    """The event-by-event path of TwoPassWindowSum slices per-event coefficients row by row."""
    from dataclasses import replace

    from iactpipe.image.processor import process_batch

    reader = SimTelReader(simtel_dir / RUN202, allowed_tels=[1, 2, 5, 6])
    batch = next(reader.iter_batches(6))
    static = {**reader.run_info.calibration, **(batch.calibration or {})}
    per_event = {
        tel_id: replace(c, **{name: np.repeat(np.asarray(getattr(c, name))[None], len(batch.tel[tel_id]), axis=0)
                              for name in ("pedestal_per_sample", "dc_to_pe", "time_shift", "unusable")})
        for tel_id, c in static.items() if tel_id in batch.tel
    }
    cameras = {t: CameraSetup.from_telescope(reader.subarray.tels[t]) for t in batch.tel}
    settings = {t: ImageSettings(extractor="TwoPassWindowSum", extractor_options=(("core_threshold", 6.0),))
                for t in batch.tel}
    a = process_batch(batch, cameras, settings, static, np.random.default_rng(0))
    b = process_batch(batch, cameras, settings, per_event, np.random.default_rng(0))
    assert sorted(a) == sorted(batch.tel) and sum(len(r.image) for r in a.values()) > 5
    for tel_id in a:
        np.testing.assert_array_equal(a[tel_id].image, b[tel_id].image)
        np.testing.assert_array_equal(a[tel_id].quality_flags, b[tel_id].quality_flags)
        for name, values in a[tel_id].parameters.items():
            np.testing.assert_array_equal(values, b[tel_id].parameters[name], err_msg=name)


def test_extraction_settings_per_type():
    """Plain keys apply to all types (the old form); '*', patterns and exact types override them in that order."""
    schema = Dl0ToDl1Step().config_schema()
    old = resolve_config(schema, overrides={"image_extraction": {"extractor": "LocalPeakWindowSum", "window_width": 5}})
    for tel_type in ("LST_LST_LSTCam", "MST_MST_FlashCam"):
        settings = image_settings(old, tel_type)
        assert settings.extractor == "LocalPeakWindowSum" and dict(settings.extractor_options)["window_width"] == 5
    config = resolve_config(schema, overrides={"image_extraction": {
        "window_width": 5,
        "*": {"extractor": "GlobalPeakWindowSum"},
        "MST_*": {"extractor": "TwoPassWindowSum"},
        "MST_MST_NectarCam": {"extractor": "NeighborPeakWindowSum", "window_width": None},
        "SST_*": {"extractor": "TwoPassWindowSum", "core_threshold": 3.5},
    }})
    lst = image_settings(config, "LST_LST_LSTCam")
    assert lst.extractor == "GlobalPeakWindowSum" and dict(lst.extractor_options)["window_width"] == 5
    flashcam = image_settings(config, "MST_MST_FlashCam")
    assert flashcam.extractor == "TwoPassWindowSum"
    assert dict(flashcam.extractor_options) == {"core_threshold": 8.0, "disable_second_pass": False}
    nectarcam = image_settings(config, "MST_MST_NectarCam")
    assert nectarcam.extractor == "NeighborPeakWindowSum" and "window_width" not in dict(nectarcam.extractor_options)
    assert dict(image_settings(config, "SST_ASTRI_CHEC").extractor_options)["core_threshold"] == 3.5
    assert dict(image_settings(config, "LST_LST_LSTCam").extractor_options).get("core_threshold") is None


@pytest.mark.filterwarnings("ignore::astropy.utils.metadata.MergeConflictWarning")  # column descriptions
@pytest.mark.filterwarnings("ignore:Could not read reference metadata")  # see provenance.py creation-time format
def test_ctapipe_reads_our_file(alpha_pair):
    """TableLoader joins our parameters, images, truth and instrument; every table matches its schema."""
    from ctapipe.instrument import SubarrayDescription
    from ctapipe.io import TableLoader

    ours, ref = alpha_pair
    assert validate_file(ours) == []
    opts = dict(dl1_parameters=True, dl1_images=True, simulated=True, true_parameters=True, instrument=True,
                observation_info=True, pointing=True)
    with TableLoader(ours, **opts) as loader:
        events = loader.read_telescope_events()
    with TableLoader(ref, **opts) as loader:
        expected = loader.read_telescope_events()
    assert len(events) == len(expected) == 8
    assert set(expected.colnames) <= set(events.colnames)
    for name in ("hillas_intensity", "true_hillas_intensity", "true_energy", "tel_description", "image_mask"):
        assert (events[name] == expected[name]).all() or np.allclose(events[name], expected[name], equal_nan=True)
    assert SubarrayDescription.from_hdf(ours).tel_ids.tolist() == SubarrayDescription.from_hdf(ref).tel_ids.tolist()


# -- our own contracts -----------------------------------------------------------------------


def test_parameters_only_by_default(alpha_pair, simtel_dir, tmp_path):
    out = tmp_path / "params.h5"
    assert run_step([simtel_dir / ALPHA, "-o", out])[0] == 0
    with tables.open_file(out) as h5, tables.open_file(alpha_pair[0]) as full:
        assert IMAGES not in h5
        assert str(h5.root._v_attrs["CTA PRODUCT DATA LEVELS"]) == "DL1_PARAMETERS"
        true_images = h5.get_node("/simulation/event/telescope/images/tel_002")
        assert true_images.colnames == ["obs_id", "event_id", "tel_id", "true_image_sum"]
        for node in h5.get_node(PARAMETERS)._f_iter_nodes("Table"):
            assert_rows_equal(node.read(), full.get_node(node._v_pathname).read(), node._v_name)
    assert validate_file(out) == []


def test_chunk_size_does_not_change_results(run202_pair, simtel_dir, tmp_path):
    """Timing fits run in event order, so chunking (1 event at a time) gives identical tables."""
    out = tmp_path / "chunked.h5"
    assert run_step([simtel_dir / RUN202, "-o", out, "--write-images", "--chunk-size", "1"])[0] == 0
    for group in (PARAMETERS, IMAGES, TRUE_PARAMETERS):
        ours, ref = tel_tables(out, group), tel_tables(run202_pair[0], group)
        assert sorted(ours) == sorted(ref)
        for tel in ref:
            assert_rows_equal(ours[tel], ref[tel], f"{group} {tel}")


def test_read_ahead_does_not_change_results(run202_pair, simtel_dir, tmp_path):
    out = tmp_path / "inline.h5"
    assert run_step([simtel_dir / RUN202, "-o", out, "--write-images", "--no-read-ahead"])[0] == 0
    for group in (PARAMETERS, IMAGES, TRUE_PARAMETERS):
        ours, ref = tel_tables(out, group), tel_tables(run202_pair[0], group)
        assert sorted(ours) == sorted(ref)
        for tel in ref:
            assert_rows_equal(ours[tel], ref[tel], f"{group} {tel}")


@pytest.mark.parametrize(("setting", "cpus", "expected"),
                         [(None, {0}, False), (None, {0, 1}, True), (False, {0, 1}, False), (True, {0}, True)])
def test_read_ahead_default_follows_the_cpus_the_process_may_use(simtel_dir, monkeypatch, setting, cpus, expected):
    from iactpipe.steps.dl0_to_dl1 import open_source

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus, raising=False)
    config = resolve_config("dl0_to_dl1", overrides={"read_ahead": setting})
    with open_source(simtel_dir / RUN202, config) as source:
        assert source.read_ahead is expected
        assert (source._session.stream._ahead is not None) is expected
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS: the number of CPUs
    monkeypatch.setattr(os, "cpu_count", lambda: len(cpus))
    with open_source(simtel_dir / RUN202, config) as source:
        assert source.read_ahead is expected


def test_multiple_inputs_and_max_events(run202_pair, simtel_dir, tmp_path):
    out = tmp_path / "two.h5"
    assert run_step([simtel_dir / RUN201, simtel_dir / RUN202, "-o", out])[0] == 0
    with tables.open_file(out) as h5:
        assert h5.root.configuration.observation.observation_block.col("obs_id").tolist() == [201, 202]
        assert h5.root.simulation.service.shower_distribution.col("obs_id").tolist() == [201, 202]
        stats = h5.root.dl1.service.image_statistics.read()
    # each input starts its own timing-fit sequence: run202's rows equal a single-file run
    single = tel_tables(run202_pair[0], PARAMETERS)
    for tel, rows in tel_tables(out, PARAMETERS).items():
        mine = rows[rows["obs_id"] == 202]
        assert_rows_equal(mine, single[tel], tel)
    assert stats["counts"][0] == 2 * (2 + 36)  # images and true images of both files
    # max_events counts array events over all inputs
    out = tmp_path / "max.h5"
    assert run_step([simtel_dir / RUN201, simtel_dir / RUN202, "-o", out, "--max-events", "3"])[0] == 0
    with tables.open_file(out) as h5:
        trigger = h5.root.dl1.event.subarray.trigger.read()
    assert trigger["obs_id"].tolist() == [201, 202, 202]


def test_allowed_tels(run202_pair, simtel_dir, tmp_path):
    out = tmp_path / "sel.h5"
    assert run_step([simtel_dir / RUN202, "-o", out, "--allowed-tels", "1", "5", "6"])[0] == 0
    full = tel_tables(run202_pair[0], PARAMETERS)
    ours = tel_tables(out, PARAMETERS)
    assert sorted(ours) == ["tel_001", "tel_005", "tel_006"]
    for tel, rows in ours.items():
        for name in rows.dtype.names:
            if not name.startswith("timing_"):  # the fit sequence differs with fewer telescopes
                np.testing.assert_array_equal(rows[name], full[tel][name], err_msg=f"{tel} {name}")
    with tables.open_file(out) as h5:
        assert h5.root.dl1.event.subarray.trigger.col("tels_with_trigger").shape[1] == 3
        assert h5.root.configuration.instrument.subarray.layout.col("tel_id").tolist() == [1, 5, 6]


def test_per_type_cleaning_with_default(run202_pair, simtel_dir, tmp_path):
    """A type listed in image_cleaning gets its own thresholds, all other types the '*' entry."""
    config = tmp_path / "cleaning.yaml"
    config.write_text(
        "image_cleaning:\n"
        "  '*': {picture_threshold: 10, boundary_threshold: 5}\n"
        "  LST_LST_LSTCam: {picture_threshold: 6, boundary_threshold: 3, min_picture_neighbors: 1}\n"
        "  'SST_*': {picture_threshold: 4}\n"
    )
    out = tmp_path / "typed.h5"
    code, err = run_step([simtel_dir / RUN202, "-o", out, "--write-images", "--config", config])
    assert code == 0, err
    lst_only = tmp_path / "lst.h5"
    args = ["--picture-threshold", "6", "--boundary-threshold", "3", "--min-picture-neighbors", "1"]
    assert run_step([simtel_dir / RUN202, "-o", lst_only, "--write-images", *args])[0] == 0
    typed, default, low = (tel_tables(p, IMAGES) for p in (out, run202_pair[0], lst_only))
    subarray = SimTelReader(simtel_dir / RUN202).subarray
    n_lst = 0
    for tel, rows in typed.items():
        tel_type = subarray.tels[int(tel[4:])].type
        expected = low[tel] if tel_type == "LST_LST_LSTCam" else default[tel]
        n_lst += tel_type == "LST_LST_LSTCam"
        np.testing.assert_array_equal(rows["image_mask"], expected["image_mask"], err_msg=f"{tel} {tel_type}")
    assert n_lst > 0


def test_settings_for_type_precedence():
    table = {"*": {"a": 1, "b": 1, "c": 1}, "MST_*": {"b": 2, "c": 2}, "MST_MST_*Cam": {"c": 3},
             "MST_MST_FlashCam": {"a": 4}}
    assert settings_for_type(table, "LST_LST_LSTCam") == {"a": 1, "b": 1, "c": 1}
    assert settings_for_type(table, "MST_MST_NectarCam") == {"a": 1, "b": 2, "c": 3}
    assert settings_for_type(table, "MST_MST_FlashCam") == {"a": 4, "b": 2, "c": 3}
    config = resolve_config(Dl0ToDl1Step().config_schema(), overrides={"image_cleaning": {"SST_1M_DigiCam": {
        "method": "mars", "picture_threshold": 3}}})
    settings = image_settings(config, "SST_1M_DigiCam")
    assert (settings.cleaning.method, settings.cleaning.picture_threshold) == ("mars", 3.0)
    assert settings.cleaning.boundary_threshold == 5.0  # from '*'
    assert image_settings(config, "Unknown_Type_Cam").cleaning.picture_threshold == 10.0


def test_hv_off_pixels_are_interpolated_or_excluded(simtel_dir, tmp_path):
    """n_hv_disabled: 409 pixels with HV off get the mean of their usable neighbours (or 0 with exclude)."""
    path = simtel_dir / "n_hv_disabled.simtel.gz"
    reader = SimTelReader(path)
    tel = reader.subarray.tels[1]
    hv_off = reader.run_info.calibration[1].hv_off
    assert hv_off.sum() == 409
    out = tmp_path / "interp.h5"
    assert run_step([path, "-o", out, "--write-images"])[0] == 0
    image = tel_tables(out, IMAGES)["tel_001"]["image"][0]
    indptr, indices = tel.geometry.neighbors
    for pix in np.flatnonzero(hv_off):
        usable = [n for n in indices[indptr[pix]:indptr[pix + 1]] if not hv_off[n]]
        expected = np.float32(image[usable].sum(dtype=np.float32) / np.float64(len(usable))) if usable else 0
        assert image[pix] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    out = tmp_path / "exclude.h5"
    assert run_step([path, "-o", out, "--write-images", "--invalid-pixels", "exclude"])[0] == 0
    row = tel_tables(out, IMAGES)["tel_001"]
    assert np.all(row["image"][0][hv_off] == 0) and not row["image_mask"][0][hv_off].any()


def test_dl0_images_only_equal_ctapipe(dl0_files, workdir):
    """Simulator output (images-only DL0 HDF5): the same DL1 as ctapipe-process on that file.

    (ctapipe 0.28 cannot process our R1 files: without a monitoring source its extractor has no
    outlier mask; R1 input is checked against R0 recalibration below.)
    """
    ref = run_ctapipe(dl0_files["images"], workdir / "sim_images.ctapipe.h5")
    ours = workdir / "sim_images.dl1.h5"
    assert run_step([dl0_files["images"], "-o", ours, "--write-images"])[0] == 0
    assert validate_file(ours) == []
    assert len(tel_tables(ours, PARAMETERS)) > 2
    assert_same_dl1(ours, ref)


def test_dl0_r1_equals_r0_recalibrated(dl0_files, workdir):
    """R1 input vs. R0 recalibrated with the file's own coefficients (--calibration-file): same DL1."""
    r1_out, r0_out = workdir / "sim_r1.dl1.h5", workdir / "sim_r0.dl1.h5"
    with DL0Reader(dl0_files["r0"]) as reader:
        assert reader.kind == "r0"
        info = reader.run_info
    coefficients = workdir / "coefficients.h5"
    write_calibration_coefficients(coefficients, info.obs_id, info.calibration)
    assert run_step([dl0_files["r0"], "-o", r1_out, "--write-images"])[0] == 0
    assert run_step([dl0_files["r0"], "-o", r0_out, "--write-images", "--calibration-file", coefficients])[0] == 0
    a, b = tel_tables(r0_out, IMAGES), tel_tables(r1_out, IMAGES)
    assert sorted(a) == sorted(b) and len(a) > 2
    problems = []
    for tel in a:
        # the simulator rounds R1 to float32 from float64, we calibrate in float32: same to float32 precision
        np.testing.assert_allclose(a[tel]["image"], b[tel]["image"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a[tel]["image_mask"], b[tel]["image_mask"])
    pa, pb = tel_tables(r0_out, PARAMETERS), tel_tables(r1_out, PARAMETERS)
    for tel in pa:
        problems += [f"{tel} {p}" for p in compare_parameters(pa[tel], pb[tel], b[tel])]
    assert not problems, "\n".join(problems)
    with tables.open_file(r0_out) as h5:
        inputs = json.loads(str(h5.root._v_attrs["IACTPIPE INPUTS"]))
    assert [i["role"] for i in inputs] == ["input", "calibration coefficients"]


def test_compact_dl0_gives_the_dl1_of_its_r1(dl0_files, workdir):
    """Compact DL0 (uint16 samples of the selected gain + coefficients) gives exactly the DL1 of R1
    waveforms with the same coefficients (mode r0), in fewer bytes than R1 alone (mode r1)."""
    from iactpipe.image.calibration import calibrate_r1

    with DL0Reader(dl0_files["r0"]) as reader:
        info = reader.run_info
        batches = list(reader.iter_batches(40))
    for batch in batches:
        for tel_id, te in batch.tel.items():
            c = info.calibration[tel_id]
            te.r1, te.selected_gain_channel = calibrate_r1(te.r0, c.pedestal_per_sample, c.dc_to_pe)
            te.pixel_status = None
    paths, outs = {}, {}
    for mode in ("r1", "r0", "dl0"):
        paths[mode] = workdir / f"sim_calibrated.{mode}.dl0.h5"
        with DL0Writer(paths[mode], info, mode=mode) as writer:
            for batch in batches:
                writer.write(batch)
            writer.close(info.shower_distribution)
    assert os.path.getsize(paths["dl0"]) < os.path.getsize(paths["r1"])
    two_pass = workdir / "two_pass.yaml"  # compact samples calibrated before the extractor, event by event
    two_pass.write_text("image_extraction:\n  '*': {extractor: TwoPassWindowSum}\n")
    for extra in ([], ["--config", two_pass]):
        for mode in ("r0", "dl0"):  # both: R1 input, time shifts from the file's coefficients
            outs[mode] = workdir / f"sim_calibrated_{mode}.dl1.h5"
            assert run_step([paths[mode], "-o", outs[mode], "--write-images", "--overwrite", *extra])[0] == 0
        for group in (IMAGES, PARAMETERS):
            a, b = tel_tables(outs["dl0"], group), tel_tables(outs["r0"], group)
            assert sorted(a) == sorted(b) and len(a) > 2
            for tel in a:
                assert_rows_equal(a[tel], b[tel], f"{group} {tel} {extra}")


@pytest.mark.parametrize(("kind", "option"), [("r0", None), ("compact", None), ("images", None),
                                              ("compact", "allowed_tels"), ("r0", "calibration_file")])
def test_dl0_read_ahead_does_not_change_results(tmp_path, monkeypatch, kind, option):
    """DL0 HDF5: telescopes decoded and parametrised ahead, by either thread (--read-ahead), or in the
    processing thread (--no-read-ahead), give the DL1 of `process_batch` on each whole batch; also for
    a batch cut short by --max-events, with --allowed-tels and with a calibration file."""
    from iactpipe.image.calibration import calibrate_r1
    from iactpipe.steps import dl0_to_dl1
    from iactpipe.steps.simulate import SimulateStep

    path = tmp_path / "sim.dl0.h5"
    args = ["--n-showers", "1500", "--seed", "3", "--telescopes", "1", "2", "5", "6", "7", "8", "9", "-o", str(path)]
    assert SimulateStep().main([*args, "--images-only" if kind == "images" else "--write-r0"]) == 0
    with DL0Reader(path) as reader:
        info, batches = reader.run_info, list(reader.iter_batches(40))
    if kind == "compact":
        path = tmp_path / "compact.dl0.h5"
        with DL0Writer(path, info, mode="dl0") as writer:
            for batch in batches:
                for tel_id, te in batch.tel.items():
                    c = info.calibration[tel_id]
                    te.r1, te.selected_gain_channel = calibrate_r1(te.r0, c.pedestal_per_sample, c.dc_to_pe)
                    te.pixel_status = None
                writer.write(batch)
            writer.close(info.shower_distribution)
    extra = {None: [], "allowed_tels": ["--allowed-tels", "1", "5", "8"]}.get(option)
    if option == "calibration_file":  # the file's own coefficients, scaled: the images change
        scaled = {t: replace(c, dc_to_pe=c.dc_to_pe * np.float32(1.1)) for t, c in info.calibration.items()}
        write_calibration_coefficients(tmp_path / "coefficients.h5", info.obs_id, scaled)
        extra = ["--calibration-file", tmp_path / "coefficients.h5"]
    outs = {}
    for mode in ("--read-ahead", "--no-read-ahead", "process_batch"):
        outs[mode] = tmp_path / f"{mode.strip('-')}.dl1.h5"
        args = [path, "-o", outs[mode], "--write-images", "--chunk-size", "5", "--max-events", "17", *extra]
        with monkeypatch.context() as patch:
            if mode == "process_batch":  # batches read without anything prepared: process_batch does it all
                iter_batches = dl0_to_dl1._DL0File.iter_batches
                patch.setattr(dl0_to_dl1._DL0File, "iter_batches", lambda self, size, prepare=None, raw_samples=False: (
                    (batch, None) for batch in iter_batches(self, size, raw_samples=raw_samples)))
            assert run_step([*args, "--no-read-ahead" if mode == "process_batch" else mode])[0] == 0
    for group in (IMAGES, PARAMETERS):
        ref = tel_tables(outs["process_batch"], group)
        assert len(ref) > 2 and (option != "allowed_tels" or sorted(ref) == ["tel_001", "tel_005", "tel_008"])
        for mode in ("--read-ahead", "--no-read-ahead"):
            ours = tel_tables(outs[mode], group)
            assert sorted(ours) == sorted(ref)
            for tel in ref:
                assert_rows_equal(ours[tel], ref[tel], f"{group} {tel} {mode}")
    with tables.open_file(outs["--read-ahead"]) as h5:
        assert h5.root.dl1.event.subarray.trigger.nrows == 17


def test_calibration_coefficients_round_trip_and_validity(tmp_path):
    rng = np.random.default_rng(1)
    calib = {t: TelescopeCalibration(
        tel_id=t, pedestal_per_sample=rng.normal(400, 5, (2, 7)).astype(np.float32),
        dc_to_pe=rng.uniform(0.01, 0.02, (2, 7)).astype(np.float32),
        time_shift=rng.normal(0, 1, (2, 7)).astype(np.float32), unusable=rng.uniform(size=(2, 7)) < 0.2,
    ) for t in (1, 2)}
    path = tmp_path / "c.h5"
    write_calibration_coefficients(path, 5, calib, time_mjd=60000.0)
    later = {1: TelescopeCalibration(1, calib[1].pedestal_per_sample + 1, calib[1].dc_to_pe * 2,
                                     calib[1].time_shift, calib[1].unusable)}
    write_calibration_coefficients(path, 5, later, time_mjd=60000.5, mode="a")
    assert validate_file(path) == []
    series = read_calibration_coefficients(path)
    assert sorted(series) == [1, 2] and len(series[1].time_mjd) == 2
    np.testing.assert_array_equal(series[2].dc_to_pe[0], calib[2].dc_to_pe)
    at = coefficients_at(series[1], [59999.0, 60000.2, 60000.7])
    assert at.dc_to_pe.shape == (3, 2, 7)
    np.testing.assert_array_equal(at.dc_to_pe[:2], [calib[1].dc_to_pe] * 2)
    np.testing.assert_array_equal(at.dc_to_pe[2], later[1].dc_to_pe)
    assert coefficients_at(series[2], [60001.0, 60002.0]).dc_to_pe.shape == (2, 7)


def test_event_positions_with_repeated_ids():
    np.testing.assert_array_equal(event_positions([5, 7, 9], [7, 9]), [1, 2])
    np.testing.assert_array_equal(event_positions([5, 7, 5, 7], [5, 7, 7]), [0, 1, 3])
    with pytest.raises(ValueError):
        event_positions([5, 7], [8])


def test_timing_fits_follow_event_order(run202_pair, simtel_dir):
    """Fitting all telescopes' images event by event equals single-image fits in that order."""
    reader = SimTelReader(simtel_dir / RUN202)
    batch = next(reader.iter_batches(100))
    cameras = {t: CameraSetup.from_telescope(reader.subarray.tels[t]) for t in batch.tel}
    calibration = {**reader.run_info.calibration, **(batch.calibration or {})}
    results = {t: process_telescope_events(batch.tel[t], cameras[t], ImageSettings(), calibration[t],
                                           fit_timing=False) for t in sorted(batch.tel)}
    assert all(np.isnan(r.parameters["timing_slope"]).all() for r in results.values())
    fit_timing_in_event_order(batch, results, cameras, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    n_fitted = 0
    for position in range(len(batch)):
        for tel_id in sorted(batch.tel):
            rows = np.flatnonzero(event_positions(batch.event_id, batch.tel[tel_id].event_id) == position)
            for row in rows:
                r = results[tel_id]
                if not r.valid[row]:
                    continue
                one = timing_parameters(r.peak_time[row:row + 1], r.image_mask[row:row + 1], cameras[tel_id].geometry,
                                        {k: v[row:row + 1] for k, v in r.parameters.items()}, rng=rng)
                for name, value in one.items():
                    assert r.parameters[name][row] == value[0] or np.isnan(value[0]), (tel_id, row, name)
                n_fitted += 1
    assert n_fitted > 10


def test_image_quality_flags_follow_the_parameters(run202_pair):
    """One flags row per parameters row; each bit as documented, recomputed from the written columns."""
    from iactpipe.image.processor import QUALITY_FLAG_BITS as BITS

    ours, _ = run202_pair
    params, flags, images = (tel_tables(ours, g) for g in (PARAMETERS, "/dl1/event/telescope/image_quality", IMAGES))
    assert sorted(flags) == sorted(params)
    seen = 0
    for tel, p in params.items():
        f = flags[tel]
        assert f.dtype["image_quality_flags"] == np.uint16
        np.testing.assert_array_equal(f[["obs_id", "event_id", "tel_id"]], p[["obs_id", "event_id", "tel_id"]])
        bits = f["image_quality_flags"]
        n_pixels = images[tel]["image_mask"].sum(axis=1)
        intensity = np.where(images[tel]["image_mask"], images[tel]["image"], 0).sum(axis=1, dtype=np.float64)
        valid = (n_pixels >= 2) & (intensity > 0)
        expected = {
            "few_pixels": n_pixels < 2,
            "low_intensity": ~(intensity > 0),
            "leakage": valid & (p["leakage_intensity_width_2"] > 0.2),
            "no_width": valid & ~(p["hillas_width"] > 0),
            "no_timing_fit": valid & np.isnan(p["timing_slope"]),
            "extraction_failed": np.zeros(len(p), bool),
        }
        for name, want in expected.items():
            np.testing.assert_array_equal((bits >> BITS[name]) & 1 == 1, want, err_msg=f"{tel} {name}")
        seen |= np.bitwise_or.reduce(bits)
    # the file has images of each kind except failed extractions and timing fits
    for name in ("few_pixels", "low_intensity", "leakage", "unusable_pixels"):
        assert seen & (1 << BITS[name]), name


def toy_square_camera():
    """A 6x6 square-pixel camera (36 pixels, 20 samples, Gaussian pulse) for hand-made R1 events."""
    from iactpipe.instrument.camera import CameraGeometry, CameraReadout
    from iactpipe.instrument.subarray import OpticsDescription, TelescopeDescription

    x, y = np.meshgrid(np.arange(6) * 0.05, np.arange(6) * 0.05)
    geometry = CameraGeometry("Toy", np.arange(36), x.ravel(), y.ravel(), np.full(36, 0.0025), "square")
    pulse = np.exp(-0.5 * ((np.arange(100) * 0.1 - 3) / 0.8) ** 2)[None]
    readout = CameraReadout("Toy", 1.0, pulse, 0.1, 1, 36, 20)
    optics = OpticsDescription("Toy", "MST", "PARABOLIC", 100.0, 1, 1, 16.0, 16.0)
    return CameraSetup.from_telescope(TelescopeDescription("Toy", optics, geometry, readout))


def test_unusable_pixel_flag_needs_the_pixel_near_the_image():
    """Bit 4: an unusable pixel inside the cleaned image or next to it, not elsewhere."""
    from iactpipe.image.processor import QUALITY_FLAG_BITS, image_quality_flags

    camera = toy_square_camera()
    r1 = np.zeros((3, 36, 20), np.float32)
    r1[:, [7, 8, 13, 14], 8] = 20.0  # a 2x2 square image in the lower left
    status = np.full((3, 36), 4, np.uint8)
    status[1, 15] = 0  # next to the image (right of pixel 14)
    status[2, 35] = 0  # far away
    events = TelescopeEvents(tel_id=1, event_id=np.arange(3), r1=r1,
                             selected_gain_channel=np.zeros((3, 36), np.int8), pixel_status=status)
    settings = ImageSettings(invalid_pixels="exclude")
    result = process_telescope_events(events, camera, settings, None)
    assert result.valid.all()
    np.testing.assert_array_equal(result.quality_flags & (1 << QUALITY_FLAG_BITS["unusable_pixels"]) > 0,
                                  [False, True, False])
    np.testing.assert_array_equal(image_quality_flags(result, camera.geometry, settings), result.quality_flags)


def test_true_parameter_columns_are_ctapipes(alpha_pair):
    with tables.open_file(alpha_pair[1]) as h5:
        node = h5.get_node(TRUE_PARAMETERS + "/tel_002")
        expected = [(n, node.coldtypes[n]) for n in node.colnames[3:]]
    assert [(n, np.dtype(d)) for n, d in TRUE_PARAMETER_COLUMNS] == expected


def test_processor_handles_r1_without_calibration():
    """R1 input, no coefficients: not-read-out pixels (no gain bit in pixel_status) are interpolated."""
    camera = toy_square_camera()
    r1 = np.zeros((2, 36, 20), np.float32)
    r1[:, :, 8] = 20.0
    status = np.full((2, 36), 4, np.uint8)
    status[1, 14] = 0
    events = TelescopeEvents(tel_id=1, event_id=np.array([1, 2]), r1=r1,
                             selected_gain_channel=np.zeros((2, 36), np.int8), pixel_status=status)
    result = process_telescope_events(events, camera, ImageSettings(), None)
    assert result.unusable[1, 14] and not result.unusable[0].any()
    np.testing.assert_allclose(result.image[1, 14], result.image[0, 14], rtol=1e-6)
    assert result.valid.all() and np.isfinite(result.parameters["hillas_intensity"]).all()
    assert result.true_parameters is None


# -- user errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("args, config, code, message", [
    (["--extractor", "Magic"], None, 2,
     "key 'image_extraction.extractor': 'Magic' is not one of: NeighborPeakWindowSum"),
    (["--picture-threshold", "high"], None, 2, "argument --picture-threshold: invalid float value: 'high'"),
    ([], "image_cleaning:\n  LST_LST_LSTCam: {picture_threshold: high}\n", 2,
     "key 'image_cleaning.LST_LST_LSTCam.picture_threshold': expected a number, got 'high'"),
    ([], "image_cleaning:\n  LST_LST_LSTCam: {picture: 8}\n", 2,
     "unknown config key 'image_cleaning.LST_LST_LSTCam.picture'"),
    ([], "image_cleaning:\n  '*': {method: wavelets}\n", 2,
     "key 'image_cleaning.*.method': 'wavelets' is not one of: tailcuts, time_constrained, mars"),
    (["--allowed-tels", "99"], None, 1, "allowed_tels [99] not in the file"),
    ([], "image_extraction:\n  LST_LST_LSTCam: {extractor: Magic}\n", 2,
     "key 'image_extraction.LST_LST_LSTCam.extractor': 'Magic' is not one of: NeighborPeakWindowSum"),
    ([], "image_extraction:\n  'MST_*': {window_width: seven}\n", 2,
     "key 'image_extraction.MST_*.window_width': expected an integer, got 'seven'"),
    ([], "image_extraction:\n  '*': {core_threshold: [1, 2]}\n", 2,
     "key 'image_extraction.*.core_threshold': expected a number, got [1, 2]"),
    ([], "image_extraction:\n  '*': {windows: 3}\n", 2, "unknown config key 'image_extraction.*.windows'"),
    ([], "image_extraction: {extractor: TwoPassWindowSum, core_threshold: high}\n", 2,
     "key 'image_extraction.core_threshold': expected a number, got 'high'"),
    ([], "image_cleaning:\n  '*': {min_picture_neighbors: 1.5}\n", 2,
     "key 'image_cleaning.*.min_picture_neighbors': expected an integer, got 1.5"),
])
def test_config_errors(simtel_dir, tmp_path, capsys, args, config, code, message):
    out = tmp_path / "out.h5"
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        args = [*args, "--config", tmp_path / "c.yaml"]
    got, err = run_step([simtel_dir / RUN202, "-o", out, *args], capsys)
    assert got == code, err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.h5")) == []


def test_calibration_file_for_another_camera(simtel_dir, tmp_path, capsys):
    bad = tmp_path / "other_camera.h5"
    calib = TelescopeCalibration(1, np.zeros((2, 1764), np.float32), np.ones((2, 1764), np.float32),
                                 np.zeros((2, 1764), np.float32), np.zeros((2, 1764), bool))
    write_calibration_coefficients(bad, 1, {1: calib})
    out = tmp_path / "out.dl1.h5"
    code, err = run_step([simtel_dir / RUN202, "-o", out, "--calibration-file", bad], capsys)
    assert code == 1
    assert err.strip() == (f"iactpipe-dl0-to-dl1: error: {bad}: coefficients of tel 1 have 1764 pixels, "
                           "its camera LSTCam has 1855 (calibration file for another camera?)")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_calibration_file_with_other_gain_channels(simtel_dir, tmp_path, capsys):
    bad = tmp_path / "one_gain.h5"
    calib = TelescopeCalibration(1, np.zeros((1, 1855), np.float32), np.ones((1, 1855), np.float32),
                                 np.zeros((1, 1855), np.float32), np.zeros((1, 1855), bool))
    write_calibration_coefficients(bad, 1, {1: calib})
    out = tmp_path / "out.dl1.h5"
    code, err = run_step([simtel_dir / RUN202, "-o", out, "--calibration-file", bad], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "coefficients of tel 1 have 1 gain channels, its camera LSTCam has 2" in err
    assert not out.exists()


def test_extractor_window_outside_the_waveform(simtel_dir, tmp_path, capsys):
    """An extractor setting that the camera's waveforms cannot satisfy: one line naming the input."""
    config = tmp_path / "c.yaml"
    config.write_text("image_extraction: {extractor: BaselineSubtractedNeighborPeakWindowSum, baseline_start: 90,"
                      " baseline_end: 95}\n")
    out = tmp_path / "out.dl1.h5"
    code, err = run_step([simtel_dir / RUN202, "-o", out, "--config", config], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"{RUN202}: baseline window 90..95 holds no sample of the" in err
    assert not out.exists()


def test_truncated_file(simtel_dir, tmp_path, capsys):
    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader(open(simtel_dir / RUN202, "rb")).read()
    cut = tmp_path / "cut.simtel"
    cut.write_bytes(raw[: int(len(raw) * 0.8)])
    out = tmp_path / "cut.dl1.h5"
    code, err = run_step([cut, "-o", out], capsys)
    assert code == 1 and "file is truncated or corrupt at byte offset" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, err = run_step([cut, "-o", out, "--allow-truncated"], capsys)
    assert code == 0, err
    with tables.open_file(out) as h5:
        n = h5.root.dl1.event.subarray.trigger.nrows
    assert 0 < n < 6


@pytest.mark.parametrize("kind", ["missing", "text", "other_subarray"])
def test_input_errors(simtel_dir, alpha_simtel, tmp_path, capsys, kind):
    out = tmp_path / "out.h5"
    if kind == "missing":
        args, message = [tmp_path / "nope.simtel.zst"], "nope.simtel.zst: no such file"
    elif kind == "text":
        (tmp_path / "a.simtel").write_text("not a sim_telarray file\n" * 10)
        args, message = [tmp_path / "a.simtel"], "a.simtel: not a sim_telarray (eventio) file"
    else:
        args, message = [simtel_dir / RUN202, alpha_simtel], "telescopes differ from those of"
    code, err = run_step([*args, "-o", out], capsys)
    assert code == 1, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_dump_config_shows_per_type_default(capsys):
    assert Dl0ToDl1Step().main(["x", "-o", "y", "--dump-config", "--picture-threshold", "8"]) == 0
    out = capsys.readouterr().out
    from ruamel.yaml import YAML

    config = YAML(typ="safe").load(out)
    assert config["image_cleaning"]["*"]["picture_threshold"] == 8.0
    assert config["image_extraction"]["extractor"] == "NeighborPeakWindowSum"


def test_every_extractor_runs(simtel_dir):
    """Each extractor of the config enum runs through the processor (values: test_image_extraction.py)."""
    from iactpipe.config import load_config_schema
    from iactpipe.image.extraction import EXTRACTORS

    names = load_config_schema("dl0_to_dl1")["properties"]["image_extraction"]["properties"]["extractor"]["enum"]
    assert set(names) <= set(EXTRACTORS)
    reader = SimTelReader(simtel_dir / RUN202, allowed_tels=[1, 5])
    batch = next(reader.iter_batches(3))
    calibration = {**reader.run_info.calibration, **(batch.calibration or {})}
    schema = Dl0ToDl1Step().config_schema()
    for name in names:
        config = resolve_config(schema, overrides={"image_extraction": {"extractor": name, "window_width": 5}})
        for tel_id, te in batch.tel.items():
            tel = reader.subarray.tels[tel_id]
            settings = image_settings(config, tel.type)
            result = process_telescope_events(te, CameraSetup.from_telescope(tel), settings, calibration[tel_id])
            assert np.isfinite(result.image).all() and result.image.shape == (len(te), tel.geometry.n_pixels), name
            assert dict(settings.extractor_options).get("window_width", 5) == 5


# -- CWL -------------------------------------------------------------------------------------


def test_cwl_tool_runs(alpha_simtel, tmp_path, monkeypatch):
    from cwltool.main import main as cwltool_main

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "iactpipe-dl0-to-dl1").exists():
        pytest.skip("console script not installed")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")

    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "inputs": [{"class": "File", "path": str(alpha_simtel)}],
        "write_images": True, "picture_threshold": 8.0, "allowed_tels": [2, 3, 6, 7],
        # reuse this test session's numba cache (cwltool passes no environment to the tool)
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
    }))
    out, err = io.StringIO(), io.StringIO()
    code = cwltool_main(["--outdir", str(tmp_path / "out"), str(ROOT / "steps" / "dl0_to_dl1.cwl"), str(job)],
                        stdout=out, stderr=err)
    assert code == 0, err.getvalue()[-3000:]
    result = json.loads(out.getvalue())
    dl1 = Path(result["dl1"]["path"])
    assert dl1.name == ALPHA.removesuffix(".zst") + ".dl1.h5"
    assert validate_file(dl1) == []
    with tables.open_file(dl1) as h5:
        config = json.loads(str(h5.root._v_attrs["IACTPIPE CONFIG"]))
        assert IMAGES in h5
        assert h5.root.configuration.instrument.subarray.layout.col("tel_id").tolist() == [2, 3, 6, 7]
    assert config["image_cleaning"]["*"]["picture_threshold"] == 8.0
    record = json.loads(Path(result["provenance_log"]["path"]).read_text())
    assert record["step"] == "dl0-to-dl1"


def test_console_script_runs(alpha_simtel, tmp_path):
    exe = shutil.which("iactpipe-dl0-to-dl1", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("console script not installed")
    out = tmp_path / "x.dl1.h5"
    proc = subprocess.run([exe, str(alpha_simtel), "-o", str(out), "--max-events", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 array events" in proc.stderr and out.exists()


def test_input_without_events_gives_complete_empty_dl1(tmp_path, caplog):
    """A DL0 run in which nothing triggered: a valid, empty DL1 file (workflows go on) and a warning."""
    from ctapipe.io import TableLoader
    from iactpipe.steps.simulate import SimulateStep

    dl0, dl1 = tmp_path / "empty.dl0.h5", tmp_path / "empty.dl1.h5"
    assert SimulateStep().main(["--energy-min", "0.01", "--energy-max", "0.011", "--n-showers", "30",
                                "--output", str(dl0)]) == 0
    assert Dl0ToDl1Step().main([str(dl0), "--output", str(dl1)]) == 0
    assert "holds no array events" in caplog.text
    assert validate_file(dl1, require_schema=True) == []
    with TableLoader(dl1) as loader:
        assert len(loader.read_subarray_events()) == 0
        assert loader.read_shower_distribution()["n_entries"].sum() == 30
