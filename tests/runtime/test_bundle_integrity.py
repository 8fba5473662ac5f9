"""Bundle integrity, fail-closed: path confinement, only listed files, status,
and a ``BundleError`` naming file and field for every malformed manifest.

Fast tests use a small artifact-free bundle; the ``slow`` ones attack the
converter-made tiny bundle through ``Recommender.open``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edgerec.bundle import (
    MAX_MANIFEST_BYTES,
    BundleError,
    check_manifest,
    open_bundle,
    read_manifest,
)
from tests.runtime.trust_helpers import make_minimal_bundle, rewrite_manifest

slow = pytest.mark.slow


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_minimal_bundle(tmp_path / "bundle")


def _file_entry(path: Path) -> dict:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


# ------------------------------------------------------------ path confinement
@pytest.mark.parametrize("bad", ["../outside.json", "a/../../outside.json", "/etc/passwd", "C:x"])
def test_listed_path_outside_the_bundle_is_refused(bundle: Path, bad: str) -> None:
    rewrite_manifest(bundle, lambda m: m["files"].update({bad: _file_entry(bundle / "vocab.json")}))
    with pytest.raises(BundleError, match="manifest.json: field files") as info:
        open_bundle(bundle)
    assert bad in str(info.value)


def test_section_path_climbing_out_is_refused(bundle: Path, tmp_path: Path) -> None:
    """The vocabulary moved next to the bundle, with its true hash: still refused."""
    shutil.copy(bundle / "vocab.json", tmp_path / "vocab.json")

    def point_outside(m: dict) -> None:
        m["files"]["../vocab.json"] = _file_entry(tmp_path / "vocab.json")
        m["vocab"]["path"] = "../vocab.json"

    rewrite_manifest(bundle, point_outside)
    with pytest.raises(BundleError, match=r"climbs out with '\.\.'"):
        open_bundle(bundle)


def test_symlink_leaving_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    """Same bytes, same hash, but the file lives outside the bundle directory."""
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle / "vocab.json", outside)
    (bundle / "vocab.json").symlink_to(outside)
    with pytest.raises(BundleError, match="vocab.json: resolves to .*outside the bundle"):
        open_bundle(bundle)


def test_symlinked_manifest_leaving_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "manifest-elsewhere.json"
    shutil.move(bundle / "manifest.json", outside)
    (bundle / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        open_bundle(bundle)


def test_symlink_inside_the_bundle_is_allowed(bundle: Path) -> None:
    (bundle / "data").mkdir()
    shutil.move(bundle / "vocab.json", bundle / "data" / "vocab.json")
    (bundle / "vocab.json").symlink_to(Path("data") / "vocab.json")
    assert open_bundle(bundle).file("vocab.json").is_file()


# ------------------------------------------------------- listed files, status
def test_unlisted_file_is_not_served(bundle: Path) -> None:
    """vocab.json is present on disk but no longer listed: the runtime must not read it."""

    def unlist(m: dict) -> None:
        del m["files"]["vocab.json"]
        del m["vocab"]

    rewrite_manifest(bundle, unlist)
    manifest = open_bundle(bundle)  # every *listed* file is fine
    with pytest.raises(BundleError, match=r"vocab\.json: not listed in manifest\.json"):
        manifest.file("vocab.json")


def test_section_naming_an_unlisted_file_is_refused(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m["popularity"].update(path="other.npy"))
    with pytest.raises(BundleError, match=r"field popularity\.path: 'other\.npy' is not listed"):
        open_bundle(bundle)


def test_missing_status_is_not_accepted(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m.pop("status"))
    with pytest.raises(BundleError, match="field 'status' is missing"):
        open_bundle(bundle)
    assert open_bundle(bundle, allow_rejected=True).status is None


def test_unknown_status_is_not_accepted(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m.update(status="ACCEPTED"))
    with pytest.raises(BundleError, match="status is 'ACCEPTED'"):
        open_bundle(bundle)


def test_file_is_verified_before_use(bundle: Path) -> None:
    """A file changed after open_bundle verified it: ``file()`` of a not yet
    verified manifest hashes it and refuses."""
    manifest = read_manifest(bundle)  # parsed, nothing hashed yet
    (bundle / "popularity.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(BundleError, match="popularity.npy: size"):
        manifest.file("popularity.npy")


def test_oversize_manifest_is_refused_before_parsing(bundle: Path) -> None:
    path = bundle / "manifest.json"
    path.write_bytes(path.read_bytes() + b" " * MAX_MANIFEST_BYTES)
    with pytest.raises(BundleError, match=r"manifest\.json: \d+ bytes, larger than"):
        open_bundle(bundle)


# ------------------------------------------------------------- malformed fields
BAD_FIELDS = [
    (lambda m: m.update(schema_version=True), "schema_version True"),
    (lambda m: m.update(status=1), "field status: must be a non-empty string"),
    (lambda m: m.update(model=[]), "field model: must be an object"),
    (lambda m: m["model"].pop("id"), r"field model\.id is missing"),
    (lambda m: m["model"].update(version=3), r"field model\.version: must be"),
    (lambda m: m["feature_spec"].update(max_len="12"), r"feature_spec\.max_len: must be an int"),
    (lambda m: m["feature_spec"].update(max_len=1), r"feature_spec\.max_len: must be in"),
    (lambda m: m["feature_spec"].update(num_items=-5), r"feature_spec\.num_items: must be in"),
    (lambda m: m["feature_spec"].update(mask_id=3), r"feature_spec\.mask_id: must be in"),
    (lambda m: m["feature_spec"].pop("num_items"), r"feature_spec\.num_items is missing"),
    (lambda m: m.update(files=[]), "field files: must be an object"),
    (lambda m: m["files"]["vocab.json"].update(bytes=-1), r"files\['vocab.json'\]\.bytes"),
    (lambda m: m["files"]["vocab.json"].update(bytes=2.5), r"files\['vocab.json'\]\.bytes"),
    (lambda m: m["files"]["vocab.json"].update(sha256="XYZ"), r"files\['vocab.json'\]\.sha256"),
    (lambda m: m["files"]["vocab.json"].pop("sha256"), r"files\['vocab.json'\]\.sha256 is miss"),
    (lambda m: m["files"].update({"manifest.json": m["files"]["vocab.json"]}), "its own manifest"),
    (lambda m: m.update(artifacts={}), "field artifacts: must be a list"),
    (lambda m: m.update(artifacts=[3]), r"field artifacts\[0\]: must be an object"),
    (lambda m: m.update(artifacts=[{"name": "a"}]), r"artifacts\[0\]\.path is missing"),
    (lambda m: m.update(default_artifact="nope"), "default_artifact: names no artifact"),
    (lambda m: m.update(vocab="vocab.json"), "field vocab: must be an object"),
    (lambda m: m.update(head={"version": -1}), r"field head\.version: must be in"),
    (lambda m: m.update(gates={"passed": "yes"}), r"field gates\.passed: must be true or false"),
    (lambda m: m.pop("feature_spec"), "missing field 'feature_spec'"),
]


@pytest.mark.parametrize(("change", "match"), BAD_FIELDS)
def test_malformed_field_names_file_and_field(bundle: Path, change, match: str) -> None:
    rewrite_manifest(bundle, change)
    with pytest.raises(BundleError, match=match) as info:
        open_bundle(bundle)
    assert "manifest.json" in str(info.value)


def _artifact(**overrides) -> dict:
    entry = {
        "name": "a",
        "path": "a.tflite",
        "format": "tflite",
        "precision": "fp32",
        "sha256": "0" * 64,
        "bytes": 1,
        "inputs": [{"name": "items", "shape": [1, 4], "feed": "items"}],
    }
    return {**entry, **overrides}


BAD_ARTIFACTS = [
    (_artifact(format="pt"), r"artifacts\[0\]\.format: must be one of"),
    (_artifact(precision="int4"), r"artifacts\[0\]\.precision: must be one of"),
    (_artifact(sha256="1" * 64), r"artifacts\[0\]\.sha256: differs from files"),
    (_artifact(bytes=2), r"artifacts\[0\]\.bytes: differs from files"),
    (_artifact(gate_passed="true"), r"artifacts\[0\]\.gate_passed: must be true or false"),
    (_artifact(roles="default"), r"artifacts\[0\]\.roles: must be a list"),
    (_artifact(files=["b.npy"]), r"artifacts\[0\]\.files\[0\]: 'b.npy' is not listed"),
    (_artifact(reference_output="../r.npy"), r"reference_output: path '../r.npy' climbs out"),
    (_artifact(inputs=[{"name": "x", "shape": [1], "feed": "magic"}]), r"inputs\[0\]\.feed"),
    (_artifact(inputs=[{"name": "x", "feed": "items"}]), r"inputs\[0\]\.shape is missing"),
    (
        _artifact(inputs=[{"name": "x", "shape": [1, 4], "feed": "embedding_rows"}]),
        r"inputs\[0\]\.table is missing",
    ),
    (
        _artifact(inputs=[{"name": "x", "shape": [1], "feed": "embedding_rows", "table": "/t"}]),
        r"inputs\[0\]\.table: absolute path",
    ),
    (
        _artifact(inputs=[{"name": "x", "shape": [1, 4], "tensor": ["t"]}]),
        r"inputs\[0\]\.tensor: must be a string",
    ),
    (_artifact(gpu={"ready": 1}), r"artifacts\[0\]\.gpu\.ready: must be true or false"),
]


@pytest.mark.parametrize(("entry", "match"), BAD_ARTIFACTS)
def test_malformed_artifact_entry(tmp_path: Path, entry: dict, match: str) -> None:
    data = {
        "schema_version": 1,
        "model": {"id": "m", "version": "1"},
        "feature_spec": {"max_len": 4, "num_items": 3},
        "files": {"a.tflite": {"sha256": "0" * 64, "bytes": 1}},
        "artifacts": [entry],
    }
    with pytest.raises(BundleError, match=match):
        check_manifest(data, tmp_path / "manifest.json")


def test_artifact_without_gate_passed_is_not_usable(tmp_path: Path) -> None:
    from edgerec.bundle import Manifest

    entry = _artifact()
    manifest = Manifest({"artifacts": [entry]}, tmp_path)
    assert manifest.artifacts[0].gate_passed is False
    manifest = Manifest({"artifacts": [{**entry, "gate_passed": True}]}, tmp_path)
    assert manifest.artifacts[0].gate_passed is True


# ------------------------------------------------- Recommender.open (slow)
@slow
def test_open_refuses_unlisted_vocabulary(edit_manifest) -> None:
    from edgerec.runtime import Recommender

    def unlist(m: dict) -> None:
        del m["files"]["vocab.json"]
        del m["vocab"]

    with pytest.raises(BundleError, match=r"vocab\.json: not listed in manifest\.json"):
        Recommender.open(edit_manifest(unlist))


@slow
def test_open_refuses_missing_status(edit_manifest) -> None:
    from edgerec.runtime import Recommender

    with pytest.raises(BundleError, match="field 'status' is missing"):
        Recommender.open(edit_manifest(lambda m: m.pop("status")))


@slow
def test_open_ignores_artifacts_without_gate_passed(edit_manifest) -> None:
    from edgerec.runtime import Recommender

    def drop_gate(m: dict) -> None:
        for a in m["artifacts"]:
            if a["format"] == "tflite":
                a.pop("gate_passed")

    bundle = edit_manifest(drop_gate)
    with pytest.raises(BundleError, match="no usable tflite artifact"):
        Recommender.open(bundle, backend="litert")
    with Recommender.open(bundle, backend="onnx") as rec:  # onnx entries still say passed
        assert rec.artifact.format == "onnx"


@slow
def test_open_refuses_artifact_outside_the_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    """The default artifact moved out of the bundle (hash unchanged) and the
    manifest pointing at it with ``..``."""
    from edgerec.runtime import Recommender

    outside = tmp_path / "student.int8-dynamic.tflite"
    shutil.copy(bundle_copy / "student.int8-dynamic.tflite", outside)

    def point_out(m: dict) -> None:
        entry = m["files"].pop("student.int8-dynamic.tflite")
        m["files"]["../student.int8-dynamic.tflite"] = entry
        for a in m["artifacts"]:
            if a["path"] == "student.int8-dynamic.tflite":
                a["path"] = "../student.int8-dynamic.tflite"

    rewrite_manifest(bundle_copy, point_out)
    with pytest.raises(BundleError, match=r"climbs out with '\.\.'"):
        Recommender.open(bundle_copy)


@slow
def test_open_refuses_symlinked_table_leaving_the_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    from edgerec.runtime import Recommender

    table = "student.fp16.gpu.embeddings.npy"
    shutil.move(bundle_copy / table, tmp_path / table)
    (bundle_copy / table).symlink_to(tmp_path / table)
    with pytest.raises(BundleError, match="outside the bundle"):
        Recommender.open(bundle_copy)


@slow
def test_loader_failure_on_a_verified_file_is_a_bundle_error(edit_manifest) -> None:
    """The manifest names the vocabulary as the popularity prior: the file is
    listed and intact, but not what the manifest says it is."""
    from edgerec.runtime import Recommender
    from edgerec.runtime.backends.base import BackendError

    bundle = edit_manifest(lambda m: m["popularity"].update(path="vocab.json"))
    with pytest.raises(BundleError, match="vocab.json: cannot be loaded"):
        Recommender.open(bundle)

    def wrong_shape(m: dict) -> None:
        for a in m["artifacts"]:
            a["inputs"][0]["shape"] = [1, 3]

    with pytest.raises(BackendError, match="cannot be loaded") as info:
        Recommender.open(edit_manifest(wrong_shape), backend="litert", accelerator="cpu")
    assert isinstance(info.value, BundleError)


def test_manifest_file_json_named_in_refusal(bundle: Path) -> None:
    (bundle / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(BundleError, match=r"manifest\.json: missing field 'model'"):
        open_bundle(bundle)
