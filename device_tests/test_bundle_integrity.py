"""The bundle as it arrived on the device: manifest schema, every sha256, and
refusal of tampered, truncated, missing and unknown-schema copies, of paths and
symlinks leaving the bundle, of unlisted files and of a missing status; and
Ed25519 signing and verification with this device's ``cryptography``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from devicekit import materialize, sha256_file

from edgerec.bundle import SUPPORTED_SCHEMA_VERSIONS, BundleError, open_bundle, read_manifest


def shadow_copy(src: Path, dst: Path) -> Path:
    """A cheap copy of a bundle: hard links where the file system allows (a copy
    otherwise), ``manifest.json`` a real copy. Not symlinks: the runtime refuses
    symlinks that leave the bundle directory. Replace a link with a real file
    (``materialize``) to tamper with it."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "manifest.json" and path.parent == src:
            target.write_bytes(path.read_bytes())
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return dst


FORMATS = {"tflite", "onnx"}
PRECISIONS = {"fp32", "fp16", "int8-dynamic", "int8"}


def test_manifest_schema(bundle_path: Path, device_report) -> None:
    """Structure of manifest.json: the fields the runtime relies on, consistently."""
    m = read_manifest(bundle_path)
    data = m.data
    assert m.schema_version in SUPPORTED_SCHEMA_VERSIONS
    assert m.status == "accepted", f"bundle status {m.status!r}"
    assert m.model_id and m.model_version
    files = m.files
    for rel, entry in files.items():
        assert set(entry) >= {"sha256", "bytes"}, f"files[{rel!r}] lacks sha256/bytes"
        assert len(entry["sha256"]) == 64 and int(entry["bytes"]) >= 0
    for required in ("vocab.json", "popularity.npy"):
        assert required in files, f"{required} not listed in manifest files"
    artifacts = m.artifacts
    assert artifacts, "the bundle lists no artifact"
    names = [a.name for a in artifacts]
    assert len(names) == len(set(names)), f"duplicate artifact names {names}"
    for a in artifacts:
        assert a.format in FORMATS, f"{a.name}: unknown format {a.format!r}"
        assert a.precision in PRECISIONS, f"{a.name}: unknown precision {a.precision!r}"
        assert a.path in files, f"{a.name}: {a.path} not in manifest files"
        assert files[a.path]["sha256"] == a.sha256, f"{a.name}: artifact and files sha256 differ"
        assert a.reference_output, f"{a.name}: no reference_output (device parity impossible)"
        assert a.reference_output in files, f"{a.name}: {a.reference_output} not in files"
        for extra in a.files:
            assert extra in files, f"{a.name}: needs {extra}, not in files"
        assert a.inputs and a.outputs, f"{a.name}: no input/output signature"
    defaults = [a.name for a in artifacts if a.is_default]
    assert len(defaults) == 1, f"expected exactly one default artifact, got {defaults}"
    cpu = [a for a in artifacts if a.gate_passed and (set(a.roles) - {"gpu"} or not a.roles)]
    assert any(a.format == "tflite" and "gpu" not in a.roles for a in cpu), (
        "no plain CPU .tflite artifact (every bundle carries one as the fallback)"
    )
    if "default_artifact" in data:
        assert data["default_artifact"] in names + [None]
    device_report.section("integrity").update(
        {"schema_version": m.schema_version, "files": len(files), "artifacts": len(artifacts)}
    )


def test_feature_spec_vocab_and_references(manifest, reference_inputs) -> None:
    """Vocab, feature spec, reference inputs and every reference output agree in shape."""
    from edgerec.vocab import Vocab

    spec = manifest.feature_spec
    vocab = Vocab.load(manifest.path("vocab.json"))
    assert vocab.num_items == spec.num_items
    assert reference_inputs.ndim == 2 and reference_inputs.shape[1] == spec.max_len
    assert np.issubdtype(reference_inputs.dtype, np.integer)
    assert reference_inputs.min() >= 0 and reference_inputs.max() <= spec.mask_id
    assert (reference_inputs[:, -1] == spec.mask_id).all(), "last position must be [MASK]"
    prior = np.load(manifest.path("popularity.npy"))
    assert prior.shape[-1] in (spec.num_items, spec.num_items + 1, spec.num_items + 2)
    for a in manifest.artifacts:
        ref = np.load(manifest.path(a.reference_output))
        assert ref.shape == (len(reference_inputs), spec.num_items), (a.name, ref.shape)
        assert np.isfinite(ref).all(), f"{a.reference_output}: non-finite reference scores"


def test_every_sha256(bundle_path: Path, manifest, device_report) -> None:
    """Every listed file exists with the recorded size and sha256 (hashed here,
    independently of edgerec's own check, which ``open_bundle`` already passed)."""
    bad = []
    total = 0
    for rel, entry in manifest.files.items():
        path = bundle_path / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
            continue
        total += path.stat().st_size
        if path.stat().st_size != int(entry["bytes"]):
            bad.append(f"{rel}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            bad.append(f"{rel}: sha256 mismatch")
    assert not bad, "\n".join(bad)
    listed = set(manifest.files) | {"manifest.json"}
    unlisted = sorted(
        p.relative_to(bundle_path).as_posix()
        for p in bundle_path.rglob("*")
        if p.is_file() and p.relative_to(bundle_path).as_posix() not in listed
    )
    device_report.section("integrity").update(
        {"sha256_verified": len(manifest.files), "bytes_verified": total, "unlisted": unlisted}
    )


def _default_artifact_path(manifest) -> str:
    return next(a.path for a in manifest.artifacts if a.is_default)


def test_tampered_artifact_is_refused(bundle_path: Path, manifest, tmp_path: Path) -> None:
    """One flipped byte in the default artifact: refused, and the error names the file."""
    from edgerec.runtime import Recommender

    copy = shadow_copy(bundle_path, tmp_path / "tampered")
    rel = _default_artifact_path(manifest)
    data = bytearray(materialize(copy / rel))
    data[len(data) // 2] ^= 0xFF
    (copy / rel).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256") as info:
        open_bundle(copy)
    assert Path(rel).name in str(info.value)
    with pytest.raises(BundleError, match=Path(rel).name):
        Recommender.open(copy)


def test_truncated_file_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    """A truncated vocabulary (half a download) fails on its size, naming the file."""
    copy = shadow_copy(bundle_path, tmp_path / "truncated")
    data = materialize(copy / "vocab.json")
    (copy / "vocab.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"vocab\.json.*(size|truncated)"):
        open_bundle(copy)


def test_missing_file_is_refused(bundle_path: Path, manifest, tmp_path: Path) -> None:
    copy = shadow_copy(bundle_path, tmp_path / "missing")
    rel = _default_artifact_path(manifest)
    (copy / rel).unlink()
    with pytest.raises(BundleError, match="missing"):
        open_bundle(copy)


def test_unknown_schema_version_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    copy = shadow_copy(bundle_path, tmp_path / "schema")
    data = json.loads((copy / "manifest.json").read_text())
    data["schema_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="schema_version"):
        open_bundle(copy)


def _edit_manifest(copy: Path, change) -> None:
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))


def test_symlink_leaving_the_bundle_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    """vocab.json replaced by a symlink to an identical file outside the bundle:
    the hash matches, the location does not."""
    from edgerec.runtime import Recommender

    copy = shadow_copy(bundle_path, tmp_path / "symlink")
    outside = tmp_path / "vocab-elsewhere.json"
    outside.write_bytes((copy / "vocab.json").read_bytes())
    (copy / "vocab.json").unlink()
    (copy / "vocab.json").symlink_to(outside)
    with pytest.raises(BundleError, match="vocab.json: resolves to .*outside the bundle"):
        Recommender.open(copy)


def test_path_traversal_is_refused(bundle_path: Path, manifest, tmp_path: Path) -> None:
    """The default artifact listed as ``../<file>`` (a real copy there, true hash)."""
    from edgerec.runtime import Recommender

    copy = shadow_copy(bundle_path, tmp_path / "traversal" / "bundle")
    rel = _default_artifact_path(manifest)
    shutil.copyfile(bundle_path / rel, copy.parent / Path(rel).name)

    def climb(m: dict) -> None:
        m["files"]["../" + Path(rel).name] = m["files"].pop(rel)
        for a in m["artifacts"]:
            if a["path"] == rel:
                a["path"] = "../" + Path(rel).name

    _edit_manifest(copy, climb)
    with pytest.raises(BundleError, match=r"climbs out with '\.\.'"):
        Recommender.open(copy)


def test_unlisted_file_is_not_read(bundle_path: Path, tmp_path: Path) -> None:
    from edgerec.runtime import Recommender

    copy = shadow_copy(bundle_path, tmp_path / "unlisted")

    def unlist(m: dict) -> None:
        m["files"].pop("popularity.npy")
        m.pop("popularity", None)

    _edit_manifest(copy, unlist)
    with pytest.raises(BundleError, match=r"popularity\.npy: not listed"):
        Recommender.open(copy)


def test_missing_status_is_not_accepted(bundle_path: Path, tmp_path: Path) -> None:
    copy = shadow_copy(bundle_path, tmp_path / "status")
    _edit_manifest(copy, lambda m: m.pop("status"))
    with pytest.raises(BundleError, match="'status' is missing"):
        open_bundle(copy)


def test_signature_on_this_device(bundle_path: Path, tmp_path: Path, device_report) -> None:
    """Sign a copy with a fresh key, open it with that key trusted (and the
    signature check timed), refuse it under another key and after tampering."""
    import time

    from edgerec.bundle import read_manifest_bytes
    from edgerec.runtime import Recommender
    from edgerec.runtime.signing import (
        TrustedKeys,
        generate_keys,
        load_private_key,
        sign_bundle,
    )

    copy = shadow_copy(bundle_path, tmp_path / "signed")
    pair = generate_keys(tmp_path / "keys")
    other = generate_keys(tmp_path / "other")
    sign_bundle(copy, load_private_key(pair.private_path))
    trust = TrustedKeys.load(pair.public_path)
    raw = read_manifest_bytes(copy)
    t0 = time.perf_counter()
    for _ in range(20):
        trust.verify(copy, raw)
    verify_ms = (time.perf_counter() - t0) / 20 * 1e3
    with Recommender.open(copy, trusted_keys=pair.public_path) as rec:
        assert rec.signed_by == pair.keyid
    with pytest.raises(BundleError, match="untrusted key"):
        Recommender.open(copy, trusted_keys=other.public_path)
    _edit_manifest(copy, lambda m: m["model"].update(version="forged"))
    with pytest.raises(BundleError, match="does not match the manifest"):
        Recommender.open(copy, trusted_keys=pair.public_path)
    device_report.section("integrity")["signature_verify_ms"] = round(verify_ms, 3)
