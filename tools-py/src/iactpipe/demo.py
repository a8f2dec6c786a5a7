"""``python -m iactpipe.demo``: the main job on the embedded default configuration.

By default runs ``workflows/full_chain.cwl`` with ``cwltool --parallel`` on the job file
``workflows/full_chain.demo.yaml``: simulations -> DL1 -> DL2 -> model training (with
cross-validation metrics) -> cuts and IRFs over a zenith grid -> a simulated Crab observation ->
DL1 -> DL2 -> DL3 (marginalized IRF) + index -> quality and benchmark reports; then a gammapy
spectral fit of the DL3 run compared with the injected spectrum. ``--engine python`` runs the
same steps (without the zenith grid) one after the other from the command line.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tables

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"  # in a source checkout
STEP_DONE = re.compile(r"\[step ([^\]]+)\] completed (\w+)")
#: Crab HEGRA (pyirf.spectral.CRAB_HEGRA), the observation simulator's default source spectrum
CRAB = {"ra": 83.63308, "dec": 22.0145, "index": 2.62, "amplitude": 2.83e-11}
COMMON_SIM = ["--images-only", "--energy-max", "100 TeV", "--spectral-index", "-2"]
ALGOS = ["--energy-reconstructor", "ExtraTreesRegressor", "--gh-classifier", "ExtraTreesClassifier"]


def chain(scale=1.0):
    """(label, step, arguments, outputs) of the demo chain, relative to the output directory.

    ``scale`` multiplies the numbers of simulated showers and the observation time (tests use a
    fraction of the demo's sizes).
    """

    def n(count):
        return str(max(1, round(count * scale)))

    return [
        # -- simulations at 20 deg zenith (Reconstruction Model Training + IRF Generation inputs)
        ("gamma diffuse (training)", "simulate",
         ["--particle", "gamma", "--diffuse", "--viewcone", "2.5 deg", "--n-showers", n(30000), "--seed", "1",
          "--energy-min", "0.05 TeV", "--scatter-radius", "800 m", *COMMON_SIM, "--output", "gamma_diffuse.dl0.h5"],
         ["gamma_diffuse.dl0.h5"]),
        ("gamma point-like at 0.7 deg (IRF)", "simulate",
         ["--particle", "gamma", "--source-offset", "0.7 deg", "--n-showers", n(30000), "--seed", "2",
          "--energy-min", "0.05 TeV", "--scatter-radius", "800 m", *COMMON_SIM, "--output", "gamma_point.dl0.h5"],
         ["gamma_point.dl0.h5"]),
        ("protons", "simulate",
         ["--particle", "proton", "--viewcone", "6 deg", "--n-showers", n(60000), "--seed", "3",
          "--energy-min", "0.1 TeV", "--scatter-radius", "1000 m", *COMMON_SIM, "--output", "proton.dl0.h5"],
         ["proton.dl0.h5"]),
        ("electrons", "simulate",
         ["--particle", "electron", "--viewcone", "6 deg", "--n-showers", n(10000), "--seed", "4",
          "--energy-min", "0.05 TeV", "--scatter-radius", "800 m", *COMMON_SIM, "--output", "electron.dl0.h5"],
         ["electron.dl0.h5"]),
        ("DL1 gamma_point (with images, for the DL1 benchmark)", "dl0-to-dl1",
         ["gamma_point.dl0.h5", "--write-images", "--output", "gamma_point.dl1.h5"], ["gamma_point.dl1.h5"]),
        *[(f"DL1 {p}", "dl0-to-dl1", [f"{p}.dl0.h5", "--output", f"{p}.dl1.h5"], [f"{p}.dl1.h5"])
          for p in ("gamma_diffuse", "proton", "electron")],
        *[(f"DL2 geometry {p}", "dl1-to-dl2", [f"{p}.dl1.h5", "--output", f"{p}.dl2.h5"], [f"{p}.dl2.h5"])
          for p in ("gamma_diffuse", "gamma_point", "proton", "electron")],
        ("split protons into train/test", "split",
         ["proton.dl2.h5", "--fraction", "0.5", "--seed", "7", "-o", "proton_train.dl2.h5", "-o", "proton_test.dl2.h5"],
         ["proton_train.dl2.h5", "proton_test.dl2.h5"]),
        # -- Reconstruction Model Training
        ("train energy", "train-energy",
         ["gamma_diffuse.dl2.h5", "--output", "energy.model.h5", "--cv-output", "energy.cv.h5"],
         ["energy.model.h5", "energy.cv.h5"]),
        ("train gammaness", "train-gammaness",
         ["--signal", "gamma_diffuse.dl2.h5", "--background", "proton_train.dl2.h5", "--output", "gammaness.model.h5",
          "--cv-output", "gammaness.cv.h5"],
         ["gammaness.model.h5", "gammaness.cv.h5"]),
        ("train disp", "train-disp",
         ["gamma_diffuse.dl2.h5", "--output", "disp.model.h5", "--cv-output", "disp.cv.h5"],
         ["disp.model.h5", "disp.cv.h5"]),
        *[(f"apply models {p}", "apply-models",
           [f"{p}.dl2.h5", "--energy-model", "energy.model.h5", "--gammaness-model", "gammaness.model.h5",
            "--disp-model", "disp.model.h5", "--output", f"{p}.reco.h5"], [f"{p}.reco.h5"])
          for p in ("gamma_point", "proton_test", "electron")],
        ("train event types (angular-resolution quartiles)", "train-event-types",
         ["gamma_point.reco.h5", "--output", "event_types.h5"], ["event_types.h5"]),
        # -- IRF Generation
        ("optimize cuts", "optimize-cuts",
         ["-g", "gamma_point.reco.h5", "-p", "proton_test.reco.h5", "-e", "electron.reco.h5", *ALGOS,
          "--output", "cuts.fits"], ["cuts.fits"]),
        ("compute IRF", "compute-irf",
         ["--cuts", "cuts.fits", "-g", "gamma_point.reco.h5", "-p", "proton_test.reco.h5", "-e", "electron.reco.h5",
          "--point-like", "--output", "irf.fits", "--performance-output", "performance.fits"],
         ["irf.fits", "performance.fits"]),
        # -- Observation Data Processing: a simulated Crab run
        ("observe the Crab (simulated run)", "simulate",
         ["--observation", "--duration", n(400), "--seed", "10", "--obs-id", "1001", "--images-only",
          "--output", "run1001.dl0.h5", "--truth-output", "run1001.truth.h5"], ["run1001.dl0.h5"]),
        ("run DL1", "dl0-to-dl1", ["run1001.dl0.h5", "--output", "run1001.dl1.h5"], ["run1001.dl1.h5"]),
        ("run DL2 geometry", "dl1-to-dl2", ["run1001.dl1.h5", "--output", "run1001.dl2.h5"], ["run1001.dl2.h5"]),
        ("run apply models", "apply-models",
         ["run1001.dl2.h5", "--energy-model", "energy.model.h5", "--gammaness-model", "gammaness.model.h5",
          "--disp-model", "disp.model.h5", "--event-type-model", "event_types.h5", "--output", "run1001.reco.h5"],
         ["run1001.reco.h5"]),
        ("run DL3", "dl2-to-dl3",
         ["run1001.reco.h5", "--cuts", "cuts.fits", "--irf", "irf.fits", "--object-name", "Crab Nebula",
          "--object-ra", str(CRAB["ra"]), "--object-dec", str(CRAB["dec"]), "--output", "dl3/run_001001.fits.gz"],
         ["dl3/run_001001.fits.gz"]),
        ("DL3 index", "dl3-index", ["dl3"], ["dl3/hdu-index.fits.gz", "dl3/obs-index.fits.gz"]),
        # -- Quality Metrics and Benchmarking
        ("quality metrics of the run", "quality",
         ["--dl0", "run1001.dl0.h5", "--dl1", "run1001.dl1.h5", "--dl2", "run1001.reco.h5",
          "--dl3", "dl3/run_001001.fits.gz", "--output-dir", "quality"], ["quality/report.html"]),
        ("benchmark report", "benchmark",
         ["--dl1", "gamma_point.dl1.h5", "--dl2", "gamma_point.reco.h5", "proton_test.reco.h5",
          "--models", "energy.model.h5", "gammaness.model.h5", "disp.model.h5",
          "--cv", "energy.cv.h5", "gammaness.cv.h5", "disp.cv.h5", "--irf", "irf.fits", "--performance",
          "performance.fits", "--dl3", "dl3", "--output-dir", "benchmark"], ["benchmark/report.html"]),
    ]


def _executable(step):
    """``iactpipe-<step>`` of this Python's installation, else the first on PATH."""
    name = f"iactpipe-{step}"
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def _run(step, args, cwd):
    t0 = time.perf_counter()
    result = subprocess.run([_executable(step), *args, "--overwrite"], cwd=cwd)
    if result.returncode != 0:
        sys.exit(f"demo: iactpipe-{step} failed (exit {result.returncode})")
    return time.perf_counter() - t0


def run_python_chain(out, scale):
    """Run :func:`chain` step by step in ``out``; return where its products are."""
    (out / "dl3").mkdir(parents=True, exist_ok=True)
    for label, step, step_args, outputs in chain(scale):
        seconds = _run(step, step_args, out)
        print(f"demo: {label}: iactpipe-{step} wrote {', '.join(outputs)} in {seconds:.1f} s", flush=True)
    return {"dl3": out / "dl3", "irfs": [out / "irf.fits"], "cuts": out / "cuts.fits",
            "performance": [out / "performance.fits"],
            "models": {name: out / f"{name}.model.h5" for name in ("energy", "gammaness", "disp")},
            "quality": [out / "quality"], "benchmark": out / "benchmark"}


def scaled_job(job, scale):
    """The full_chain.cwl job ``job`` with its shower counts and observation time multiplied by ``scale``."""
    job = dict(job)
    for key, value in job.items():
        if key.endswith("_n_showers") or key == "observation_duration":
            job[key] = max(1, round(float(value) * scale)) if value is not None else None
    return job


def _cwl_path(obj):
    return Path(obj["path"]) if obj else None


def warm_numba_cache(work, env):
    """Compile the simulation and DL0 -> DL2 kernels once, on a few showers, before cwltool starts many steps
    at a time: with a cold cache each of them would compile the same kernels (20-30 s of CPU each)."""
    work.mkdir(parents=True, exist_ok=True)
    steps = [["simulate", "--n-showers", "100", "--images-only", "--seed", "1", "--energy-min", "1 TeV",
              "--scatter-radius", "300 m", "--output", "warm.dl0.h5"],
             ["dl0-to-dl1", "warm.dl0.h5", "--output", "warm.dl1.h5"],
             ["dl1-to-dl2", "warm.dl1.h5", "--output", "warm.dl2.h5"]]
    for step, *args in steps:  # best effort: a failure here only costs the parallel compilations
        result = subprocess.run([_executable(step), *args, "--overwrite", "--log-level", "ERROR"],
                                cwd=work, env=env, capture_output=True)
        if result.returncode != 0:
            break


def run_cwl_chain(out, scale, job_file=None, parallel=True):
    """Run ``workflows/full_chain.cwl`` with cwltool on the demo job file, outputs in ``out``;
    return where its products are (from cwltool's output object)."""
    from ruamel.yaml import YAML

    workflow = WORKFLOWS / "full_chain.cwl"
    job_file = Path(job_file) if job_file else WORKFLOWS / "full_chain.demo.yaml"
    for path in (workflow, job_file):
        if not path.is_file():
            sys.exit(f"demo: {path} not found (the CWL engine needs a source checkout; or use --engine python)")
    job = scaled_job(YAML(typ="safe").load(job_file.read_text()), scale)
    out.mkdir(parents=True, exist_ok=True)
    job_path = out / "full_chain.job.json"
    job_path.write_text(json.dumps(job, indent=1))
    bin_dir = Path(sys.executable).parent
    cwltool = shutil.which("cwltool", path=str(bin_dir)) or shutil.which("cwltool")
    if cwltool is None:
        sys.exit("demo: cwltool not found (pip install cwltool, or use --engine python)")
    work = out / ".cwltool"
    cmd = [cwltool, *(["--parallel"] if parallel else []), "--outdir", str(out),
           "--tmpdir-prefix", f"{work}/tmp/", "--tmp-outdir-prefix", f"{work}/out/", str(workflow), str(job_path)]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()  # the steps use job["numba_cache_dir"], or numba's default location when empty
    cache = job.get("numba_cache_dir")
    warm_env = {key: value for key, value in env.items() if key != "NUMBA_CACHE_DIR"}
    warm_numba_cache(work / "warm", {**warm_env, "NUMBA_CACHE_DIR": cache} if cache else warm_env)
    print(f"demo: numba kernels compiled and cached for all steps in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"demo: {' '.join(cmd)}", flush=True)
    log_path, outputs_path = out / "cwltool.log", out / "full_chain.outputs.json"
    t0 = time.perf_counter()
    with log_path.open("w") as log, outputs_path.open("w") as outputs:  # cwltool prints its output object
        proc = subprocess.Popen(cmd, env=env, stdout=outputs, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            log.write(line)
            match = STEP_DONE.search(line)
            if match:
                print(f"demo: [{time.perf_counter() - t0:6.0f} s] {match.group(1)} {match.group(2)}", flush=True)
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"demo: cwltool failed (exit {proc.returncode}); see {log_path}")
    shutil.rmtree(work, ignore_errors=True)
    result = json.loads(outputs_path.read_text())
    # cwltool puts every output in one directory: keep the steps' provenance records apart
    (out / "provenance").mkdir(exist_ok=True)
    for record in result.get("provenance_logs") or []:
        if record and Path(record["path"]).is_file():
            moved = out / "provenance" / record["basename"]
            shutil.move(record["path"], moved)
            record.update(path=str(moved), location=moved.as_uri())
    outputs_path.write_text(json.dumps(result, indent=1))
    return {"dl3": _cwl_path(result["dl3_directory"]), "irfs": [_cwl_path(f) for f in result["irfs"]],
            "cuts": _cwl_path(result["cuts"]), "performance": [_cwl_path(f) for f in result["performance"] if f],
            "models": {name: _cwl_path(result[f"{name}_model"]) for name in ("energy", "gammaness", "disp")},
            "quality": [_cwl_path(d) for d in result["quality_reports"]],
            "benchmark": _cwl_path(result.get("benchmark_report"))}


def cv_metrics(path):
    """The cross-validation metrics a training step stored in its model file (JSON attributes)."""
    with tables.open_file(path) as h5:
        attrs = h5.root._v_attrs
        for key in ("cv_metrics", "IACTPIPE_CV_METRICS"):
            if key in attrs._v_attrnames:
                value = attrs[key]
                return json.loads(value) if isinstance(value, str | bytes) else value
    return None


def report(out, products, seconds):
    """Print the models' CV metrics, a gammapy fit of the DL3 run(s) and where the products are."""
    print("\n=== cross-validation metrics of the trained models (mean +- std over the folds)")
    for name, path in products["models"].items():
        for tel_type, metrics in (cv_metrics(path) or {}).items():
            text = ", ".join(f"{key} {np.mean(v):.3f} +- {np.std(v):.3f}" for key, v in metrics.items())
            print(f"  {name:9s} {tel_type}: {text}")

    print("\n=== gammapy 1D spectral fit of the simulated Crab run (reflected regions, power law)")
    from .spectrum_check import fit_power_law

    fit = fit_power_law(products["dl3"], CRAB["ra"], CRAB["dec"])
    (out / "spectrum_fit.json").write_text(json.dumps(fit, indent=2))
    print(f"  ON {fit['n_on']:.0f}, OFF {fit['n_off']:.0f} (alpha {fit['alpha']:.3f}), excess {fit['excess']:.1f}, "
          f"significance {fit['significance']:.1f} sigma")
    print(f"  index     {fit['index']:.2f} +- {fit['index_err']:.2f}   (injected {CRAB['index']})")
    print(f"  amplitude {fit['amplitude']:.3g} +- {fit['amplitude_err']:.2g} cm-2 s-1 TeV-1 at 1 TeV   "
          f"(injected {CRAB['amplitude']:.3g})")

    print(f"\ndemo finished in {seconds:.0f} s; outputs in {out}:")
    print(f"  DL3 directory: {products['dl3']} (hdu-index.fits.gz, obs-index.fits.gz)")
    print(f"  IRFs: {', '.join(map(str, products['irfs']))}")
    print(f"  cuts: {products['cuts']}   performance: {', '.join(map(str, products['performance']))}")
    print(f"  models: {', '.join(map(str, products['models'].values()))}")
    for path in products["quality"]:
        print(f"  quality report: {path / 'report.html'}")
    if products["benchmark"]:
        print(f"  benchmark report: {products['benchmark'] / 'report.html'}")
    return fit


def main(argv=None):
    parser = argparse.ArgumentParser(prog="iactpipe demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="demo-output", type=Path)
    parser.add_argument("--engine", choices=("cwltool", "python"), default="cwltool",
                        help="cwltool: workflows/full_chain.cwl on workflows/full_chain.demo.yaml (default); "
                             "python: the same steps one after the other from the command line (no IRF zenith grid)")
    parser.add_argument("--job", type=Path, default=None,
                        help="full_chain.cwl job file (cwltool engine; default workflows/full_chain.demo.yaml)")
    parser.add_argument("--sequential", action="store_true", help="run cwltool without --parallel")
    parser.add_argument("--scale", default=1.0, type=float,
                        help="multiply the simulated showers and observation time (default 1)")
    args = parser.parse_args(argv)
    out = args.output_dir.resolve()
    t_start = time.perf_counter()
    if args.engine == "cwltool":
        products = run_cwl_chain(out, args.scale, args.job, parallel=not args.sequential)
    else:
        products = run_python_chain(out, args.scale)
    products["fit"] = report(out, products, time.perf_counter() - t_start)
    return products


if __name__ == "__main__":
    main()
