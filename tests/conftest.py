"""Shared test fixtures: paths to the real reference data in ../shared."""

import os
import sys
from pathlib import Path

import pytest

# Each pytest-xdist worker gets its own numba cache: two processes compiling and caching the same
# function into one cache directory at the same time can crash (seen as a segfault in CI).
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and "numba" not in sys.modules:
    _base = os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).resolve().parents[1] / ".numba_cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, _worker)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IACTPIPE_SHARED", ROOT.parent / "shared")).resolve()
SIMTEL_DIR = SHARED / "data" / "simtel"
DL3_REFERENCE_DIR = SHARED / "data" / "dl3-reference"


def modules_imported_by_step(module, argv, packages):
    """Run ``iactpipe.steps.<module>``'s console entry point on ``argv`` in a fresh interpreter (must exit 0);
    the sorted names of the modules of ``packages`` it imported."""
    import ast
    import subprocess

    code = (
        "import sys\n"
        f"from iactpipe.steps.{module} import main\n"
        f"sys.argv = ['iactpipe-step', *{[str(a) for a in argv]!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {tuple(packages)!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def simtel_files():
    """All sim_telarray files of the shared reference data (sorted)."""
    return sorted(p for p in SIMTEL_DIR.glob("*.simtel*"))


@pytest.fixture(scope="session")
def simtel_dir():
    if not SIMTEL_DIR.is_dir():
        pytest.fail(f"reference data missing: {SIMTEL_DIR} (clone next to ../shared)")
    return SIMTEL_DIR


@pytest.fixture(scope="session")
def alpha_simtel(simtel_dir):
    """The CTAO-North Alpha prod6 test file (4 LST + 9 MST NectarCam, 2 gamma events)."""
    return simtel_dir / "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst"


#: the small simulated training sample: (particle, seed, extra simulate options)
SIM_SAMPLE = {
    "gamma": ("gamma", 11, ["--n-showers", "2000", "--energy-min", "0.1 TeV", "--energy-max", "50 TeV",
                            "--scatter-radius", "600 m"]),
    "proton": ("proton", 12, ["--n-showers", "6000", "--energy-min", "0.2 TeV", "--energy-max", "100 TeV",
                              "--scatter-radius", "800 m", "--viewcone", "5 deg"]),
}


@pytest.fixture(scope="session")
def sim_dl1_sample(tmp_path_factory):
    """Simulated DL1 files of the North Alpha layout: {"gamma": path, "proton": path} (~850 events each).

    Point-like gammas (0.1-50 TeV, E^-2) and diffuse protons (0.2-100 TeV, 5 deg view cone) at 20 deg
    zenith, made with iactpipe-simulate --images-only and iactpipe-dl0-to-dl1 (about 20 s per worker).
    """
    from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step
    from iactpipe.steps.simulate import SimulateStep

    out = tmp_path_factory.mktemp("sim_dl1_sample")
    paths = {}
    for name, (particle, seed, extra) in SIM_SAMPLE.items():
        dl0, dl1 = out / f"{name}.dl0.h5", out / f"{name}.dl1.h5"
        args = ["--particle", particle, "--seed", str(seed), "--images-only", *extra, "--output", str(dl0),
                "--log-level", "WARNING"]
        assert SimulateStep().main(args) == 0
        assert Dl0ToDl1Step().main([str(dl0), "--output", str(dl1), "--log-level", "WARNING"]) == 0
        paths[name] = dl1
    return paths
