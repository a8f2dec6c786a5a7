"""DL0 -> DL1: iactpipe-dl0-to-dl1 against ctapipe-process 0.28, side by side on the same inputs.

Inputs are real sim_telarray files replayed N times (``../shared/bench/make_replay.py``, event ids
repeat) into a temporary directory, plus the same events as iactpipe DL0 HDF5 files (R1
float32 waveforms, the compact DL0: uint16 samples of the selected gain + coefficients, and the
reduced DL0 of ``--reduced-dl0``: samples of the kept pixels only, charges of the others).  Both
tools run as separate processes, each run the best of 3 (of 2 for the large replay); ctapipe-process
uses one thread, ours a second one where it may (decompression of the sim_telarray input,
``--read-ahead``, and the input checksum), so the marginal rates are also given per CPU second.  Throughput is telescope events per second of wall time including start-up (import,
numba cache load, instrument), in steady state (minus the wall time of a one-event run), and
marginal (between the ×50 and ×200 replays of run202, ×300 and ×1200 of prod6: start-up and
per-file work cancel; also for the DL0 HDF5 copies of the two run202 replays, with the peak RSS of both).
Images -> parameters: both tools re-clean and re-parametrise the images of the same ctapipe-written
DL1 files (``ctapipe-process --write-images --no-write-parameters`` of the run202 replays).
ctapipe cannot read our DL0 HDF5 files, so the DL0-HDF5 ratio is against ctapipe-process on the
equivalent sim_telarray file.  Kernels alone: calibrate + extract + clean + all parameters of
LSTCam images in one process on one core, against
ctapipe's CameraCalibrator + ImageProcessor on the same events.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import BIN, ENV, measure, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IACTPIPE_SHARED", ROOT.parent / "shared")).resolve()
SIMTEL = SHARED / "data" / "simtel"
REPLAY = SHARED / "bench" / "make_replay.py"

RUN202 = "run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst"
PROD6 = "gamma_prod6_tel_event_header_v4.simtel.zst"


def replay(name, n, folder):
    out = Path(folder) / f"{name.split('.')[0][:24]}_x{n}.simtel.zst"
    if not out.exists():
        subprocess.run([sys.executable, str(REPLAY), str(SIMTEL / name), str(out), str(n)], check=True,
                       capture_output=True, env=ENV)
    return out


def ours(inputs, output, extra=()):
    return [BIN / "iactpipe-dl0-to-dl1", *inputs, "-o", output, "--overwrite", *extra]


def ctapipe(inputs, output, extra=()):
    return [BIN / "ctapipe-process", f"--input={inputs[0]}", f"--output={output}", "--overwrite", *extra]


def n_telescope_events(dl1):
    import tables

    with tables.open_file(dl1) as h5:
        return sum(n.nrows for n in h5.get_node("/dl1/event/telescope/parameters")._f_iter_nodes("Table"))


def to_dl0_hdf5(simtel, output, mode="r1"):
    """The events of a sim_telarray file as an iactpipe DL0 file (our calibration and gain selection).

    ``mode`` ``r1``: R1 waveforms (float32); ``dl0``: the compact DL0 (raw samples of the
    selected gain, uint16, plus the coefficients).  Replayed files repeat event ids; they
    are renumbered 1, 2, ... here.
    """
    from iactpipe.image.calibration import calibrate_r1
    from iactpipe.image.processor import event_positions
    from iactpipe.io.dl0 import DL0Writer
    from iactpipe.io.simtel import SimTelReader

    reader = SimTelReader(simtel)
    next_id = 1
    with DL0Writer(output, reader.run_info, mode=mode) as writer:
        for batch in reader.iter_batches(100):
            calibration = {**reader.run_info.calibration, **(batch.calibration or {})}
            new_ids = np.arange(next_id, next_id + len(batch), dtype=np.int64)
            next_id += len(batch)
            for te in batch.tel.values():
                te.event_id = new_ids[event_positions(batch.event_id, te.event_id)]
            batch.event_id = new_ids
            for tel_id, te in batch.tel.items():
                c = calibration[tel_id]
                te.r1, te.selected_gain_channel = calibrate_r1(te.r0, c.pedestal_per_sample, c.dc_to_pe)
                if mode == "r1":
                    te.r0 = None
            writer.write(batch)
        writer.close(reader.run_info.shower_distribution)
    return output


def reduced_dl0(simtel, output, folder):
    """The reduced DL0 of a sim_telarray file (``iactpipe-dl0-to-dl1 --reduced-dl0``) and its kept-pixel fraction."""
    from iactpipe.provenance import read_lineage

    subprocess.run([str(a) for a in ours([simtel], Path(folder) / "reduce.dl1.h5", ["--reduced-dl0", output])],
                   check=True, capture_output=True, env=ENV)
    return output, read_lineage(output)[0]["reduced_dl0"]["kept_pixel_fraction"]


def dl0_copies(simtel, folder):
    """(kind, path, kept-pixel fraction or None) of the DL0 HDF5 copies of a sim_telarray file."""
    stem = Path(simtel).name.split(".")[0]
    reduced, kept = reduced_dl0(simtel, Path(folder) / f"{stem}.reduced.dl0.h5", folder)
    return [("R1 float32", to_dl0_hdf5(simtel, Path(folder) / f"{stem}.r1.dl0.h5"), None),
            ("compact DL0: uint16 samples of the selected gain",
             to_dl0_hdf5(simtel, Path(folder) / f"{stem}.dl0.h5", mode="dl0"), None),
            (f"reduced DL0: samples of the {100 * kept:.0f} % kept pixels", reduced, kept)]


def best_of(cmd, repeat):
    """(shortest wall s, largest peak RSS MB, smallest CPU s) of ``repeat`` runs of a command (the machine
    may be shared: the shortest run is the one least disturbed)."""
    runs = [measure(cmd) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs), min(r[2] for r in runs)


def whole_step_rows(label, simtel, folder, dl0_files=(), repeat=1):
    """Throughput of both tools on one sim_telarray file (and ours on its DL0 HDF5 copies).

    ``dl0_files``: (kind, path) of DL0 HDF5 files with the same events (kind: how they store them).
    Each run is the best of ``repeat``; the steady state subtracts the best 1-event run from the
    best whole run, each measured ``repeat`` times (single runs vary by ±20 % here).
    """
    rows = []
    out_ours, out_ct = Path(folder) / "ours.dl1.h5", Path(folder) / "ctapipe.dl1.h5"
    wall_ours, rss_ours, _ = best_of(ours([simtel], out_ours), repeat)
    n_tel = n_telescope_events(out_ours)
    start_ours, _, _ = best_of(ours([simtel], out_ours, ["--max-events", "1"]), repeat)
    wall_ct, rss_ct, _ = best_of(ctapipe([simtel], out_ct), repeat)
    start_ct, _, _ = best_of(ctapipe([simtel], out_ct, ["--max-events=1"]), repeat)
    rows.append(dict(benchmark=f"DL0→DL1 sim_telarray, {label}, incl. start-up", ours=n_tel / wall_ours,
                     reference=n_tel / wall_ct, unit="tel-events/s",
                     notes=f"{n_tel} tel-events; wall {wall_ours:.1f} s vs {wall_ct:.1f} s"))
    rows.append(dict(benchmark=f"DL0→DL1 sim_telarray, {label}, steady state", ours=n_tel / max(wall_ours - start_ours,
                                                                                                  1e-3),
                     reference=n_tel / max(wall_ct - start_ct, 1e-3), unit="tel-events/s",
                     notes=f"start-up (1-event run) {start_ours:.1f} s vs {start_ct:.1f} s"))
    rows.append(dict(benchmark=f"DL0→DL1 peak RSS, {label}", ours=rss_ours, reference=rss_ct, unit="MB",
                     notes="lower is better"))
    for kind, dl0 in dl0_files:
        wall_dl0, _, _ = best_of(ours([dl0], out_ours), repeat)
        n_dl0 = n_telescope_events(out_ours)
        start_dl0, _, _ = best_of(ours([dl0], out_ours, ["--max-events", "1"]), repeat)
        size = Path(dl0).stat().st_size / 1e6
        rows.append(dict(benchmark=f"DL0→DL1 iactpipe DL0 HDF5 ({kind}), {label}, incl. start-up",
                         ours=n_dl0 / wall_dl0, reference=n_tel / wall_ct, unit="tel-events/s",
                         notes=f"reference: ctapipe-process on the sim_telarray file; wall {wall_dl0:.1f} s; "
                               f"file {size:.0f} MB"))
        rows.append(dict(benchmark=f"DL0→DL1 iactpipe DL0 HDF5 ({kind}), {label}, steady state",
                         ours=n_dl0 / max(wall_dl0 - start_dl0, 1e-3),
                         reference=n_tel / max(wall_ct - start_ct, 1e-3), unit="tel-events/s",
                         notes=f"start-up (1-event run) {start_dl0:.1f} s"))
    return rows


def paired_walls(small, large, folder, repeat):
    """Best wall times of both tools on two inputs, our telescope-event counts, both marginal rates per
    second of wall time and per second of CPU time (all threads)."""
    out_ours, out_ct = Path(folder) / "ours.dl1.h5", Path(folder) / "ctapipe.dl1.h5"
    walls, cpus, counts = {}, {}, {}
    for name, path in (("small", small), ("large", large)):
        walls["ours", name], _, cpus["ours", name] = best_of(ours([path], out_ours), repeat)
        counts[name] = n_telescope_events(out_ours)
        walls["ctapipe", name], _, cpus["ctapipe", name] = best_of(ctapipe([path], out_ct), repeat)
    n = counts["large"] - counts["small"]
    rate = {tool: n / max(walls[tool, "large"] - walls[tool, "small"], 1e-3) for tool in ("ours", "ctapipe")}
    cpu_rate = {tool: n / max(cpus[tool, "large"] - cpus[tool, "small"], 1e-3) for tool in ("ours", "ctapipe")}
    return walls, counts, rate, cpu_rate


def marginal_rows(label, small, large, folder, repeat=1):
    """Throughput of both tools between two replays of one file (e.g. ×50 and ×200): (N_large - N_small)
    telescope events over the difference of their best wall times, so start-up and all per-file work
    (tables per telescope, run headers) cancel: the rate a production-size file approaches.  Also per
    second of CPU time: ours decompresses in a second thread (``--read-ahead``) and hashes the input
    beside the work, so its wall-time rate uses up to two cores, ctapipe-process's one."""
    walls, counts, rate, cpu_rate = paired_walls(small, large, folder, repeat)
    return [dict(benchmark=f"DL0→DL1 sim_telarray, {label}, marginal throughput", ours=rate["ours"],
                 reference=rate["ctapipe"], unit="tel-events/s",
                 notes=f"{counts['small']} -> {counts['large']} tel-events; wall {walls['ours', 'small']:.1f} -> "
                       f"{walls['ours', 'large']:.1f} s vs {walls['ctapipe', 'small']:.1f} -> "
                       f"{walls['ctapipe', 'large']:.1f} s"),
            dict(benchmark=f"DL0→DL1 sim_telarray, {label}, marginal throughput per CPU second",
                 ours=cpu_rate["ours"], reference=cpu_rate["ctapipe"], unit="tel-events/CPU-s",
                 notes="user + system time of all threads: the rate on one core")]


def dl0_marginal_rows(label, small_files, large_files, reference_rate, folder, repeat=2):
    """Our throughput between the DL0 HDF5 copies of two replays (e.g. run202 ×50 and ×200), kind by kind.

    The reference is ctapipe-process's marginal rate on the sim_telarray replays (it cannot read
    our DL0 files).  The notes give our peak RSS for both sizes (memory must not grow with the input).
    """
    rows = []
    out = Path(folder) / "ours.dl1.h5"
    for (kind, small), (_, large) in zip(small_files, large_files, strict=True):
        wall_small, rss_small, _ = best_of(ours([small], out), repeat)
        n_small = n_telescope_events(out)
        wall_large, rss_large, _ = best_of(ours([large], out), repeat)
        n_large = n_telescope_events(out)
        rows.append(dict(benchmark=f"DL0→DL1 iactpipe DL0 HDF5 ({kind}), {label}, marginal throughput",
                         ours=(n_large - n_small) / max(wall_large - wall_small, 1e-3), reference=reference_rate,
                         unit="tel-events/s",
                         notes=f"reference: ctapipe-process's marginal rate on the sim_telarray replays; "
                               f"{n_small} -> {n_large} tel-events; wall {wall_small:.1f} -> {wall_large:.1f} s; "
                               f"peak RSS {rss_small:.0f} -> {rss_large:.0f} MB ({rss_large / rss_small:.3f}x)"))
    return rows


def images_file(simtel, output):
    """A ctapipe DL1 file with the images (no parameters) of a sim_telarray file, written by ctapipe-process."""
    subprocess.run([str(a) for a in ctapipe([simtel], output, ["--write-images", "--no-write-parameters"])],
                   check=True, capture_output=True, env=ENV)
    return output


def reprocessing_rows(label, small_simtel, large_simtel, folder, repeat=2):
    """Images -> parameters (re-cleaning and re-parametrising DL1 images), ours and ctapipe-process's on
    the same ctapipe-written DL1 files with images (of two replays: the marginal rate, and the smaller
    one including start-up)."""
    small = images_file(small_simtel, Path(folder) / "small.images.h5")
    large = images_file(large_simtel, Path(folder) / "large.images.h5")
    walls, counts, rate, _ = paired_walls(small, large, folder, repeat)
    for path in (small, large):
        path.unlink()
    return [
        dict(benchmark=f"DL1 images → parameters (ctapipe DL1 file with images), {label}, incl. start-up",
             ours=counts["small"] / walls["ours", "small"], reference=counts["small"] / walls["ctapipe", "small"],
             unit="tel-events/s", notes=f"{counts['small']} tel-events; wall {walls['ours', 'small']:.1f} s vs "
                                        f"{walls['ctapipe', 'small']:.1f} s"),
        dict(benchmark=f"DL1 images → parameters (ctapipe DL1 file with images), {label}, marginal throughput",
             ours=rate["ours"], reference=rate["ctapipe"], unit="tel-events/s",
             notes=f"{counts['small']} -> {counts['large']} tel-events; wall {walls['ours', 'small']:.1f} -> "
                   f"{walls['ours', 'large']:.1f} s vs {walls['ctapipe', 'small']:.1f} -> "
                   f"{walls['ctapipe', 'large']:.1f} s"),
    ]


def lst_images(simtel, n_events):
    """R0 waveforms, calibration and true images of the LSTCam events of a file, repeated to ``n_events``."""
    from iactpipe.io.simtel import SimTelReader

    reader = SimTelReader(simtel)
    lst = [t for t in reader.subarray.tel_ids if "LSTCam" in reader.subarray.tels[t].camera_name]
    chunks, calib, tel = [], None, None
    for batch in reader.iter_batches(100):
        for tel_id in lst:
            if tel_id in batch.tel:
                chunks.append(batch.tel[tel_id].r0)
                calib = calib or {**reader.run_info.calibration, **(batch.calibration or {})}[tel_id]
                tel = tel or reader.subarray.tels[tel_id]
    r0 = np.concatenate(chunks)
    repeat = -(-n_events // len(r0))
    return np.concatenate([r0] * repeat)[:n_events], calib, tel


def kernel_rows(quick):
    """LSTCam images/s of calibrate + extract + clean + parameters on one core, ours vs. ctapipe."""
    from iactpipe.image.processor import CameraSetup, ImageSettings, process_telescope_events
    from iactpipe.io.events import TelescopeEvents

    n = 500 if quick else 4000
    r0, calib, tel = lst_images(SIMTEL / RUN202, n)
    camera = CameraSetup.from_telescope(tel)
    events = TelescopeEvents(tel_id=1, event_id=np.arange(n), r0=r0)
    settings = ImageSettings()
    rng = np.random.default_rng(0)
    process_telescope_events(events, camera, settings, calib, rng)  # numba cache load / compile
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for start in range(0, n, 100):  # chunks of 100 images, as the step does
            chunk = TelescopeEvents(tel_id=1, event_id=events.event_id[start:start + 100], r0=r0[start:start + 100])
            process_telescope_events(chunk, camera, settings, calib, rng)
        best = min(best, time.perf_counter() - t0)
    ours_rate = n / best
    reference = ctapipe_kernel_rate(SIMTEL / RUN202, 100 if quick else 400)
    return [dict(benchmark="kernels alone: LSTCam calibrate+extract+clean+parameters, 1 core", ours=ours_rate,
                 reference=reference, unit="images/s",
                 notes=f"{n} real run202 LSTCam images (repeated) from R0, chunks of 100; ctapipe: "
                       "CameraCalibrator + ImageProcessor per event from R1")]


def ctapipe_kernel_rate(simtel, n_images):
    """ctapipe's CameraCalibrator + ImageProcessor per event on the LSTCam events of a file (R1 given).

    The R0 -> R1 calibration, done by ctapipe's SimTelEventSource while reading, is not timed:
    this favours ctapipe slightly.
    """
    from ctapipe.calib import CameraCalibrator
    from ctapipe.image import ImageProcessor
    from ctapipe.io import EventSource

    with EventSource(simtel, allowed_tels=[1, 2, 3, 4]) as source:
        subarray = source.subarray
        events = [e for e in source if e.r1.tel]
    calibrator = CameraCalibrator(subarray)
    processor = ImageProcessor(subarray)
    for event in events:  # compile all numba functions first
        calibrator(event)
        processor(event)
    done = 0
    t0 = time.perf_counter()
    while done < n_images:
        for event in events:
            calibrator(event)
            processor(event)
            done += len(event.r1.tel)
    return done / (time.perf_counter() - t0)


def run(quick=False):
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dl0_dl1_") as folder:
        n202, n6 = (5, 30) if quick else (50, 300)
        run202 = replay(RUN202, n202, folder)
        dl0_files = dl0_copies(run202, folder)
        kept = dl0_files[-1][2]
        dl0_files = [(kind, path) for kind, path, _ in dl0_files]
        label = f"prod5 proton LST+FlashCam (run202 ×{n202})"
        rows += whole_step_rows(label, run202, folder, dl0_files, repeat=1 if quick else 3)
        sizes = {kind: Path(path).stat().st_size / 1e6 for kind, path in dl0_files}
        rows.append(dict(benchmark=f"reduced DL0 file size, {label}", ours=sizes[dl0_files[-1][0]],
                         reference=sizes["R1 float32"], unit="MB",
                         notes=f"reference: R1 float32 DL0; lower is better; {100 * kept:.1f} % of the pixels keep "
                               f"their samples; compact DL0 {sizes[dl0_files[1][0]]:.0f} MB, "
                               f"sim_telarray {run202.stat().st_size / 1e6:.0f} MB"))
        if not quick:  # production-size throughput: run202 x50 -> x200
            run202_large = replay(RUN202, 4 * n202, folder)
            label_large = f"prod5 proton LST+FlashCam (run202 ×{n202} → ×{4 * n202})"
            rows += marginal_rows(label_large, run202, run202_large, folder, repeat=2)
            large_files = [(kind, path) for kind, path, _ in dl0_copies(run202_large, folder)]
            rows += dl0_marginal_rows(label_large, dl0_files, large_files, rows[-1]["reference"], folder)
            rows += reprocessing_rows(label_large, run202, run202_large, folder)
            for path in [run202_large] + [path for _, path in large_files]:
                path.unlink()
        prod6 = replay(PROD6, n6, folder)
        rows += whole_step_rows(f"prod6 gamma LST+NectarCam (×{n6})", prod6, folder, repeat=1 if quick else 3)
        if not quick:  # production-size throughput: prod6 x300 -> x1200
            prod6_large = replay(PROD6, 4 * n6, folder)
            rows += marginal_rows(f"prod6 gamma LST+NectarCam (×{n6} → ×{4 * n6})", prod6, prod6_large, folder,
                                  repeat=2)
            prod6_large.unlink()
        # peak memory with a 10x larger input (ours only; both inputs span several chunks of 50 events)
        n_small = 20 if quick else 100
        small, large = replay(PROD6, n_small, folder), replay(PROD6, 10 * n_small, folder)
        _, rss_small = run_measured(ours([small], Path(folder) / "small.h5"))
        _, rss_large = run_measured(ours([large], Path(folder) / "large.h5"))
        rows.append(dict(benchmark=f"peak RSS growth, prod6 ×{10 * n_small} vs ×{n_small} (ours)",
                         ours=rss_large / rss_small, reference=None, unit="ratio",
                         notes=f"{rss_small:.0f} MB -> {rss_large:.0f} MB; target < 1.2"))
        for path in (small, large):
            path.unlink()
        start, _ = run_measured(ours([SIMTEL / PROD6], Path(folder) / "one.h5", ["--max-events", "1"]))
        start_ct, _ = run_measured(ctapipe([SIMTEL / PROD6], Path(folder) / "one_ct.h5", ["--max-events=1"]))
        rows.append(dict(benchmark="start-up: 1-event run (import, numba cache, instrument, output)", ours=start,
                         reference=start_ct, unit="s", notes="lower is better; target < 2 s"))
    rows += kernel_rows(quick)
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
