"""iactpipe-provenance: the lineage of a product back to its raw inputs, from our own metadata."""

import json
import shutil

import pytest
from iactpipe.provenance import file_checksum, read_lineage
from iactpipe.steps.dl0_to_dl1 import Dl0ToDl1Step
from iactpipe.steps.provenance import ProvenanceStep
from iactpipe.steps.simulate import SimulateStep


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """simulate -> dl0-to-dl1, the DL0 input kept at its recorded path."""
    out = tmp_path_factory.mktemp("provenance")
    dl0, dl1 = out / "g.dl0.h5", out / "g.dl1.h5"
    assert SimulateStep().main(["--n-showers", "300", "--energy-min", "0.5", "--images-only", "--seed", "4",
                                "--telescopes", "1", "2", "3", "4", "--output", str(dl0)]) == 0
    assert Dl0ToDl1Step().main([str(dl0), "--output", str(dl1), "--picture-threshold", "9"]) == 0
    return dl0, dl1


def test_text_lineage_reaches_the_simulation(chain, capsys):
    dl0, dl1 = chain
    assert ProvenanceStep().main([str(dl1), "--show-config"]) == 0
    out = capsys.readouterr().out
    own, parent = read_lineage(dl1)[:2]
    assert out.splitlines()[0] == f"{dl1}  product {own['product_uuid']}"
    assert f"made by iactpipe-dl0-to-dl1 {own['version']} (activity {own['activity_uuid']})" in out
    assert f"made by iactpipe-simulate {parent['version']} (activity {parent['activity_uuid']})" in out
    assert out.index("iactpipe-dl0-to-dl1") < out.index(f"<- input: {dl0.resolve()}") < out.index("iactpipe-simulate")
    assert f"product {parent['product_uuid']}  {file_checksum(dl0)}" in out
    assert "picture_threshold: 9.0" in out  # --show-config prints the resolved configuration


def test_json_tree_and_verify(chain, capsys):
    dl0, dl1 = chain
    assert ProvenanceStep().main([str(dl1), "--json", "--verify"]) == 0
    doc = json.loads(capsys.readouterr().out)
    act = doc["activity"]
    assert act["step"] == "dl0-to-dl1" and len(act["inputs"]) == 1
    inp = act["inputs"][0]
    assert inp["checksum"] == file_checksum(dl0)
    assert inp["activity"]["step"] == "simulate" and inp["activity"]["inputs"] == []
    assert doc["verify"] == [{"path": str(dl0.resolve()), "checksum": inp["checksum"], "status": "ok"}]


def test_verify_fails_on_a_changed_input(chain, tmp_path, capsys):
    dl0, dl1 = chain
    moved_dl1 = tmp_path / "copy.dl1.h5"
    shutil.copy(dl1, moved_dl1)
    original = dl0.read_bytes()
    try:
        dl0.write_bytes(original + b"\0")
        assert ProvenanceStep().main([str(moved_dl1), "--verify"]) == 1
        captured = capsys.readouterr()
        assert "[changed]" in captured.out
        assert captured.err.strip().endswith(f"input changed since it was used: {dl0.resolve()}")
    finally:
        dl0.write_bytes(original)


def test_files_without_our_provenance(alpha_simtel, tmp_path, capsys):
    assert ProvenanceStep().main([str(alpha_simtel)]) == 0
    assert "(no iactpipe provenance recorded in this file)" in capsys.readouterr().out
    assert ProvenanceStep().main([str(tmp_path / "missing.h5")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("missing.h5: no such file")


def test_input_checksums_are_computed_beside_the_work(alpha_simtel, tmp_path, monkeypatch):
    """One background thread hashes the inputs in order; ``record`` waits for it and fills them in."""
    import hashlib
    import threading
    import uuid

    from iactpipe import provenance

    small = []
    for i in range(12):
        small.append(tmp_path / f"in{i}.bin")
        small[-1].write_bytes(bytes([i]) * (1000 + i))
    activity = provenance.Activity("test", {}, argv=[])
    for path in [alpha_simtel, *small]:
        activity.add_input(path)
    assert len([t for t in threading.enumerate() if t.name == "checksums"]) == 1
    inputs = activity.record["inputs"]
    for path, entry in zip([alpha_simtel, *small], inputs, strict=True):
        assert entry["checksum"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["product_uuid"] == str(uuid.uuid5(provenance._SIMTEL_NAMESPACE, entry["checksum"]))
    assert activity.lineage("p")[0]["inputs"] == inputs

    def fails(path):
        raise PermissionError(f"{path}: permission denied")

    monkeypatch.setattr(provenance, "file_checksum", fails)
    broken = provenance.Activity("test", {}, argv=[])
    broken.add_input(small[0])
    assert broken.uuid  # needs no checksum
    with pytest.raises(PermissionError, match="in0.bin: permission denied"):
        assert broken.record["inputs"]
