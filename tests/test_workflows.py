"""CWL workflows (workflows/*.cwl): validation, portability to dirac-cwl, and runs with cwltool and toil.

The runs use tiny simulations; the full chain on its small job file is marked slow.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.cwl"))
TOOLS = sorted((ROOT / "steps").glob("*.cwl"))
BIN = Path(sys.executable).parent
TOP_LEVEL = ["process_simulations", "train_models", "irf_generation", "observation_processing", "benchmarking",
             "full_chain"]
#: a CWL parameter reference (no JavaScript): $(inputs.x.basename), $(self[0]), $(runtime.outdir) ...
PARAMETER_REFERENCE = re.compile(r"^(inputs|self|runtime)(\.\w+|\[\d+\]|\['[^']*'\])*$")


def load(path):
    return YAML(typ="safe").load(Path(path).read_text())


def env_with_venv():
    """Environment for engines: this interpreter's scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def cwltool(*args, cwd, timeout=900):
    return subprocess.run([str(BIN / "cwltool"), *map(str, args)], cwd=cwd, env=env_with_venv(),
                          capture_output=True, text=True, timeout=timeout)


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_top_level_workflows_exist():
    names = {p.stem for p in WORKFLOWS}
    missing = [name for name in TOP_LEVEL if name not in names]
    assert not missing, f"missing workflows: {missing}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates(path):
    from cwltool.main import main as cwltool_main

    stderr = __import__("io").StringIO()
    rc = cwltool_main(["--validate", str(path)], stderr=stderr)
    assert rc == 0, stderr.getvalue()
    assert "previously defined" not in stderr.getvalue(), stderr.getvalue()


@pytest.mark.parametrize("path", WORKFLOWS + TOOLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_portable_to_dirac_cwl(path):
    """No JavaScript, ResourceRequirement first, and cwl_utils loads it as dirac-cwl does (v1.2 classes)."""
    from cwl_utils.pack import pack
    from cwl_utils.parser import cwl_v1_2, load_document, load_document_by_uri

    doc = load(path)
    assert doc["cwlVersion"] == "v1.2"
    requirements = doc.get("requirements")
    assert isinstance(requirements, list) and requirements, f"{path.name}: requirements must be a list"
    assert requirements[0]["class"] == "ResourceRequirement", "dirac-cwl reads only the first requirement"
    assert requirements[0].get("coresMin", 1) <= requirements[0].get("coresMax", 10**6)
    classes = {r["class"] for r in requirements} | {h["class"] for h in doc.get("hints", [])}
    assert "InlineJavascriptRequirement" not in classes
    assert "DockerRequirement" not in classes, "containers only through the engine's options (docs/workflows.md)"
    for text in strings(doc):
        assert "${" not in text, f"{path.name}: JavaScript block in {text!r}"
        for ref in re.findall(r"\$\(([^)]*)\)", text):
            assert PARAMETER_REFERENCE.match(ref), f"{path.name}: $({ref}) is an expression, not a reference"

    process = load_document_by_uri(str(path))
    kinds = (cwl_v1_2.Workflow, cwl_v1_2.CommandLineTool, cwl_v1_2.ExpressionTool)
    assert isinstance(process, kinds)
    assert isinstance(process.requirements[0], cwl_v1_2.ResourceRequirement)

    packed = pack(str(path))
    assert "${" not in json.dumps(packed)
    # dirac-cwl's submission loads the packed document (tools inlined): no $namespaces inside a tool
    loaded = load_document(packed, baseuri=".")
    assert isinstance(loaded, kinds)
    # ... and writes it back with relative ids for the job wrapper's cwltool
    assert not _sources_changed_by_save(loaded), "a step input named <step>_<x> loses its step prefix"
    if doc["class"] == "Workflow":
        # every tool a workflow runs, once inlined, keeps ResourceRequirement first
        for node in _processes(packed):
            if node.get("class") == "CommandLineTool":
                assert node["requirements"][0]["class"] == "ResourceRequirement", node.get("id")


def _sources_changed_by_save(process):
    """(step, input, source, saved) where cwl_utils' save(relative_uris=True), as dirac-cwl writes a job's task,
    shortens a step input's source wrongly: it strips the step's own id as a string prefix, so a workflow input
    `merge_config` feeding step `merge` becomes `_config`."""
    from cwl_utils.parser import save

    changed = []

    def walk(absolute, relative):
        if isinstance(absolute, dict):
            if absolute.get("class") == "Workflow":
                for step_a, step_r in zip(absolute.get("steps", []), relative.get("steps", []), strict=True):
                    for in_a, in_r in zip(step_a.get("in", []), step_r.get("in", []), strict=True):
                        sources = zip(_as_list(in_a.get("source")), _as_list(in_r.get("source")), strict=True)
                        for src_a, src_r in sources:
                            src_a = src_a.split("#")[-1]
                            if not (src_a == src_r or src_a.endswith("/" + src_r)):
                                changed.append((step_r["id"], in_r["id"], src_a, src_r))
            for key in absolute:
                walk(absolute[key], relative[key])
        elif isinstance(absolute, list):
            for a, r in zip(absolute, relative, strict=True):
                walk(a, r)

    walk(save(process, relative_uris=False), save(process, relative_uris=True))
    return changed


def _as_list(value):
    return [value] if isinstance(value, str) else list(value or [])


def _processes(node):
    if isinstance(node, dict):
        if node.get("class") in ("CommandLineTool", "Workflow", "ExpressionTool"):
            yield node
        for value in node.values():
            yield from _processes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _processes(value)


@pytest.mark.parametrize("name", ["full_chain.demo.yaml", "full_chain.small.yaml"])
def test_job_files_match_the_workflow(name):
    inputs = load(ROOT / "workflows" / "full_chain.cwl")["inputs"]
    job = load(ROOT / "workflows" / name)
    unknown = sorted(set(job) - set(inputs))
    assert not unknown, f"{name}: not inputs of full_chain.cwl: {unknown}"
    assert len(job["irf_grid_zeniths"]) == len(job["irf_grid_seeds"]) >= 2  # >= 3 IRFs with the reference
    assert len(job["observation_seeds"]) == len(job["observation_obs_ids"])


def test_demo_job_has_the_demo_sizes():
    """full_chain.demo.yaml throws the showers of the demo's simulations (iactpipe.demo.chain())."""
    from iactpipe import demo

    job = load(ROOT / "workflows" / "full_chain.demo.yaml")
    sims = {}
    for _label, step, args, outputs in demo.chain():
        if step == "simulate" and "--observation" not in args:
            name = outputs[0].removesuffix(".dl0.h5")
            sims[name] = (int(args[args.index("--n-showers") + 1]), int(args[args.index("--seed") + 1]))
        elif step == "simulate":
            duration = float(args[args.index("--duration") + 1])
            obs_id = int(args[args.index("--obs-id") + 1])
            seed = int(args[args.index("--seed") + 1])
    assert set(sims) == {"gamma_diffuse", "gamma_point", "proton", "electron"}
    for name, (n_showers, seed_) in sims.items():
        assert job[f"{name}_n_showers"] * len(job[f"{name}_seeds"]) == n_showers, name
        assert job[f"{name}_seeds"] == [seed_], name
    assert float(job["observation_duration"]) == duration
    assert job["observation_obs_ids"] == [obs_id] and job["observation_seeds"] == [seed]
    # the IRF grid's other zeniths get the demo's IRF samples: point-like gammas, test half of the protons, electrons
    assert job["irf_grid_gamma_n_showers"] == sims["gamma_point"][0]
    assert job["irf_grid_proton_n_showers"] == sims["proton"][0] // 2
    assert job["irf_grid_electron_n_showers"] == sims["electron"][0]


# -- command lines the engines build from the step tools ----------------------------------------------------------

def _array_item(cwl_type):
    """Item type of an (optional) array type, else None."""
    if isinstance(cwl_type, str) and cwl_type.rstrip("?").endswith("[]"):
        return cwl_type.rstrip("?")[:-2]
    if isinstance(cwl_type, list):
        return next((item for t in cwl_type if (item := _array_item(t))), None)
    if isinstance(cwl_type, dict) and cwl_type.get("type") == "array":
        return cwl_type["items"]
    return None


def _optional(cwl_type):
    return (isinstance(cwl_type, str) and cwl_type.endswith("?")) or (isinstance(cwl_type, list) and "null" in cwl_type)


def _value(cwl_type, tmp_path, choices=None):
    kind = cwl_type.rstrip("?") if isinstance(cwl_type, str) else next(t for t in cwl_type if t != "null")
    if choices:
        return choices[0]
    if kind == "File":
        path = tmp_path / f"f{len(list(tmp_path.iterdir()))}.h5"
        path.write_bytes(b"")
        return {"class": "File", "location": path.as_uri()}
    if kind == "Directory":
        path = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        path.mkdir()
        return {"class": "Directory", "location": path.as_uri()}
    return {"int": 1, "long": 1, "float": 0.5, "double": 0.5, "string": "x", "boolean": True}[kind]


def _command_line(path, job, tmp_path):
    from cwltool.context import LoadingContext, RuntimeContext
    from cwltool.load_tool import load_tool
    from cwltool.workflow import default_make_tool

    tool = load_tool(str(path), LoadingContext({"construct_tool_object": default_make_tool}))
    runtime = RuntimeContext({"outdir": str(tmp_path / "out"), "tmpdir_prefix": str(tmp_path / "tmp"),
                              "stagedir": str(tmp_path / "stage")})
    job_object = next(tool.job(job, lambda *args: None, runtime))
    return job_object.command_line


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: p.name)
def test_tool_array_inputs_reach_the_cli(path, tmp_path):
    """cwltool's command line for every array input (two items each, with the required inputs) parses with the
    step's own argparse parser into the same number of values: repeatable options (--config) need a prefix per
    item, nargs='+' options a prefix once, and positional files must not follow a nargs='+' option."""
    import tomllib

    from iactpipe.errors import UsageError

    sys.path.insert(0, str(ROOT / "tests"))
    from test_cwl_tools import step_of

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    tool = load(path)
    if tool["baseCommand"] not in scripts:
        pytest.skip(f"{tool['baseCommand']} is not a console script yet")
    parser = step_of(scripts[tool["baseCommand"]]).build_parser()
    actions = {option: action for action in parser._actions for option in action.option_strings}
    data = tmp_path / "data"
    data.mkdir()
    job, expected = {}, {}
    for name, spec in tool["inputs"].items():
        binding = spec.get("inputBinding") or {}
        item_binding = spec["type"].get("inputBinding", {}) if isinstance(spec["type"], dict) else {}
        if isinstance(spec["type"], list):
            item_binding = next((t.get("inputBinding", {}) for t in spec["type"] if isinstance(t, dict)), {})
        prefix = binding.get("prefix") or item_binding.get("prefix")
        action = actions.get(prefix)
        item = _array_item(spec["type"])
        if item is not None and (prefix or not binding.get("valueFrom")):
            job[name] = [_value(item, data, action.choices if action else None) for _ in range(2)]
            if action is not None:
                expected[action.dest] = 2
        elif not _optional(spec["type"]) and "default" not in spec:
            job[name] = _value(spec["type"], data, action.choices if action else None)
    if not expected:
        pytest.skip("no array options")
    argv = [str(a) for a in _command_line(path, job, tmp_path)[1:]]
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        pytest.fail(f"{path.name}: command line {argv} rejected: {err}")
    for dest, n in expected.items():
        assert len(getattr(args, dest) or []) == n, f"{path.name}: {dest} = {getattr(args, dest)!r} from {argv}"


# -- runs ------------------------------------------------------------------------------------------------------

def _simulate(path, seed, n_showers=250):
    args = [str(BIN / "iactpipe-simulate"), "--particle", "gamma", "--n-showers", str(n_showers),
            "--seed", str(seed), "--obs-id", str(seed), "--images-only", "--energy-min", "0.3 TeV",
            "--energy-max", "100 TeV", "--spectral-index", "-2", "--scatter-radius", "500 m", "--output", str(path)]
    subprocess.run(args, check=True, capture_output=True, env=env_with_venv())
    return path


@pytest.fixture(scope="module")
def numba_cache():
    """numba cache directory given to the workflows as their numba_cache_dir input, kept between test runs."""
    path = ROOT / ".numba_cache" / "workflows"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dl0_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("wf_dl0")
    return [_simulate(base / f"gamma_{seed}.dl0.h5", seed) for seed in (31, 32)]


def _product_uuid(path):
    out = subprocess.run([str(BIN / "iactpipe-provenance"), "--json", str(path)], check=True,
                         capture_output=True, text=True, env=env_with_venv()).stdout
    return json.loads(out)


def _lineage_uuids(tree):
    uuids = set()
    for record in tree.get("activity", {}).get("inputs", []):
        if record.get("product_uuid"):
            uuids.add(record["product_uuid"])
        uuids |= _lineage_uuids(record)
    return uuids


def _n_events(path):
    import tables

    with tables.open_file(path) as h5:
        return h5.get_node("/dl1/event/subarray/trigger").nrows


def _check_process_simulations(out, result, dl0_files, output_name):
    from iactpipe.io.tables import validate_file

    merged = Path(result["dl2"]["path"])
    assert merged.name == output_name and merged.parent == out
    assert [Path(f["path"]).name for f in result["dl1"]] == [p.name.replace(".dl0.h5", ".dl0.dl1.h5")
                                                             for p in dl0_files]
    for path in [merged, *(Path(f["path"]) for f in result["dl1"])]:
        assert validate_file(path) == [], path
    # every DL1 event is in the merged DL2 file, once
    assert _n_events(merged) == sum(_n_events(f["path"]) for f in result["dl1"]) > 0
    assert len(result["provenance_logs"]) == 2 * len(dl0_files) + 1
    # the merged file's lineage reaches every DL0 input through its product UUID
    lineage = _lineage_uuids(_product_uuid(merged))
    for dl0 in dl0_files:
        assert _product_uuid(dl0)["product_uuid"] in lineage, dl0.name


def test_cwltool_process_simulations_parallel(tmp_path, dl0_files, numba_cache):
    """Scatter over two DL0 files with --parallel, a shared numba cache, then merge; outputs validate."""
    job = {"dl0_files": [{"class": "File", "path": str(p)} for p in dl0_files], "output_name": "gamma.dl2.h5",
           "numba_cache_dir": str(numba_cache)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = tmp_path / "out"
    proc = cwltool("--parallel", "--outdir", out, ROOT / "workflows" / "process_simulations.cwl", "job.json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_process_simulations(out, json.loads(proc.stdout), dl0_files, "gamma.dl2.h5")
    # the steps keep their compiled kernels in the shared cache given as a workflow input
    assert any(numba_cache.rglob("*.nbi"))


def test_cwltool_quality_metrics(tmp_path, dl0_files, numba_cache):
    """quality_metrics.cwl on a DL0 file and its DL1: a report whose metrics are those iactpipe-quality computes."""
    dl1 = tmp_path / "gamma.dl1.h5"
    subprocess.run([str(BIN / "iactpipe-dl0-to-dl1"), str(dl0_files[0]), "--output", str(dl1)], check=True,
                   capture_output=True, env={**env_with_venv(), "NUMBA_CACHE_DIR": str(numba_cache)})
    job = {"dl0": {"class": "File", "path": str(dl0_files[0])}, "dl1": {"class": "File", "path": str(dl1)},
           "output_dir": "quality_31", "numba_cache_dir": str(numba_cache)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = cwltool("--outdir", tmp_path / "out", ROOT / "workflows" / "quality_metrics.cwl", "job.json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    report = Path(result["report_dir"]["path"])
    assert report.name == "quality_31" and (report / "report.html").stat().st_size > 1000
    metrics = json.loads(Path(result["metrics"]["path"]).read_text())
    direct = tmp_path / "direct"
    subprocess.run([str(BIN / "iactpipe-quality"), "--dl0", str(dl0_files[0]), "--dl1", str(dl1),
                    "--output-dir", str(direct)], check=True, capture_output=True,
                   env={**env_with_venv(), "NUMBA_CACHE_DIR": str(numba_cache)})
    expected = json.loads((direct / "metrics.json").read_text())
    for key in ("created", "inputs"):  # when and where from (cwltool stages the inputs) differ
        metrics.pop(key), expected.pop(key)
    assert metrics == expected and metrics["metrics"]


def test_cwltool_provenance_research_object(tmp_path, dl0_files, numba_cache):
    """cwltool --provenance (without --parallel: cwltool then records every tool run, see docs/workflows.md)
    writes a research object with a run of every step and the products themselves, by checksum."""
    job = {"dl0_files": [{"class": "File", "path": str(p)} for p in dl0_files], "numba_cache_dir": str(numba_cache)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    ro = tmp_path / "ro"
    proc = cwltool("--provenance", ro, "--outdir", tmp_path / "out", ROOT / "workflows" / "process_simulations.cwl",
                   "job.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    text = "\n".join(p.read_text() for p in (ro / "metadata" / "provenance").glob("*.cwlprov.provn"))
    runs = dict(re.findall(r'activity\(id:([0-9a-f-]+),[^\n]*prov:label="Run of workflow/packed.cwl#main/'
                           r'([a-z_0-9]+?)(?:_\d+)?"', text))  # run id -> step (a run may appear in two files)
    steps = list(runs.values())
    assert steps.count("make_dl1") == steps.count("make_dl2") == len(dl0_files) and steps.count("merge_dl2") == 1
    for product in [result["dl2"], *result["dl1"]]:
        sha1 = product["checksum"].split("$")[1]
        assert (ro / "data" / sha1[:2] / sha1).is_file(), product["basename"]


def test_cwltool_reports_a_failing_step(tmp_path):
    """A broken input fails the workflow (non-zero exit) and leaves no output file."""
    bad = tmp_path / "broken.dl0.h5"
    bad.write_bytes(b"not an HDF5 file")
    job = {"dl0_files": [{"class": "File", "path": str(bad)}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = cwltool("--outdir", tmp_path / "out", ROOT / "workflows" / "process_simulations.cwl", "job.json",
                   cwd=tmp_path)
    assert proc.returncode != 0
    assert "broken.dl0.h5" in proc.stderr
    assert not list((tmp_path / "out").glob("*.h5"))


def test_toil_single_machine(tmp_path, dl0_files, numba_cache):
    """toil-cwl-runner --batchSystem single_machine runs process_simulations.cwl to the same outputs."""
    toil = BIN / "toil-cwl-runner"
    if not toil.exists():
        pytest.skip("toil is not installed (pip install 'toil[cwl]==9.6.0', see docs/workflows.md)")
    job = {"dl0_files": [{"class": "File", "path": str(p)} for p in dl0_files], "output_name": "toil.dl2.h5",
           "numba_cache_dir": str(numba_cache)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = tmp_path / "out"
    env = env_with_venv()
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [str(toil), "--batchSystem", "single_machine", "--jobStore", f"file:{tmp_path / 'jobstore'}",
         "--workDir", str(tmp_path), "--clean", "always", "--logLevel", "WARNING", "--outdir", str(out),
         str(ROOT / "workflows" / "process_simulations.cwl"), "job.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_process_simulations(out, json.loads(proc.stdout), dl0_files, "toil.dl2.h5")


@pytest.mark.slow
def test_cwltool_full_chain_small(tmp_path, numba_cache):
    """full_chain.cwl on full_chain.small.yaml: DL3 index, IRF grid, models, report; lineage to the DL0."""
    from astropy.io import fits

    job = load(ROOT / "workflows" / "full_chain.small.yaml")
    job["numba_cache_dir"] = str(numba_cache)
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = tmp_path / "out"
    proc = cwltool("--parallel", "--outdir", out, ROOT / "workflows" / "full_chain.cwl", "job.json", cwd=tmp_path,
                   timeout=1800)
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads(proc.stdout)
    dl3_dir = Path(result["dl3_directory"]["path"])
    assert (dl3_dir / "hdu-index.fits.gz").is_file() and (dl3_dir / "obs-index.fits.gz").is_file()
    runs = sorted(dl3_dir.glob("run*.fits"))
    assert len(runs) == len(job["observation_obs_ids"])
    zeniths = sorted(fits.getheader(f["path"], 1).get("ZEN_PNT", fits.getheader(f["path"]).get("ZEN_PNT"))
                     for f in result["irfs"])
    assert len(zeniths) == 1 + len(job["irf_grid_zeniths"]) and len(set(zeniths)) == len(zeniths)
    with fits.open(runs[0]) as hdul:
        assert "EVENTS" in hdul and "GTI" in hdul
    assert result["benchmark_report"] and (Path(result["benchmark_report"]["path"]) / "report.html").is_file()
    # the DL3 run's lineage goes back to the simulated observation's DL0 file
    tree = _product_uuid(runs[0])
    assert any(step["path"].endswith("run1001.dl0.h5") for step in _walk(tree))


def _walk(tree):
    for record in tree.get("activity", {}).get("inputs", []):
        yield record
        yield from _walk(record)


def test_engines_makefile_fragment_names_its_targets():
    text = (ROOT / "mk" / "engines.mk").read_text()
    for target in ("test-slurm:", "test-containers:", "image:", "test-dirac:"):
        assert target in text
    for script in re.findall(r"scripts/[\w/.-]+\.sh", text):
        assert (ROOT / script).is_file() and os.access(ROOT / script, os.X_OK), script
    assert shutil.which("sh")
