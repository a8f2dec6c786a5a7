"""End to end, as `make demo` runs it (at a quarter of its size): workflows/full_chain.cwl with cwltool --parallel
(simulations -> DL1 -> DL2 -> models -> cuts + IRFs over a zenith grid -> a simulated Crab observation -> DL3 with
the marginalized IRF -> quality and benchmark reports), then a gammapy fit of the DL3 run.

The gammapy 1D analysis of our DL3 must recover the spectrum injected into the simulated observation
(Crab HEGRA) within its statistical errors, and the source must be detected.
"""

import json

import pytest
from iactpipe import demo
from iactpipe.provenance import read_lineage


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return demo.main(["--output-dir", str(out), "--scale", "0.25"])


def test_gammapy_recovers_the_injected_crab(demo_run):
    fit = demo_run["fit"]
    assert fit == json.loads((demo_run["dl3"].parent / "spectrum_fit.json").read_text())
    assert fit["success"] and fit["n_obs"] == 1
    assert fit["significance"] > 5
    for name in ("index", "amplitude"):
        pull = (fit[name] - demo.CRAB[name]) / fit[f"{name}_err"]
        assert abs(pull) < 3, f"{name}: fit {fit[name]:.3g} +- {fit[f'{name}_err']:.2g}, injected {demo.CRAB[name]}"


def test_reports_and_lineage(demo_run):
    (quality,) = demo_run["quality"]
    assert json.loads((quality / "metrics.json").read_text())["metrics"]
    assert (quality / "report.html").read_text().count("<img") > 0
    assert (demo_run["benchmark"] / "report.html").stat().st_size > 10_000
    assert len(demo_run["irfs"]) == 3  # the zenith grid: 20 deg (reference), 10 and 30 deg
    # the DL3 run's lineage reaches the simulated DL0 run, the models and the interpolated IRF it was made with
    (dl3,) = [p for p in demo_run["dl3"].iterdir() if ".dl3." in p.name]
    steps = [rec["step"] for rec in read_lineage(dl3)]
    assert steps[0] == "dl2-to-dl3"
    assert {"apply-models", "dl1-to-dl2", "dl0-to-dl1", "simulate", "train-energy", "compute-irf",
            "marginalize-irf"} <= set(steps)


@pytest.mark.slow
def test_python_engine_runs_the_same_steps(tmp_path):
    """`--engine python` (no CWL, no zenith grid) on a tenth of the sizes: the same products."""
    products = demo.main(["--engine", "python", "--output-dir", str(tmp_path), "--scale", "0.1"])
    assert (products["dl3"] / "hdu-index.fits.gz").is_file() and products["fit"]["n_obs"] == 1
    assert (products["benchmark"] / "report.html").is_file()
