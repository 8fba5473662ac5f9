"""End to end: a tiny conversion exercising every pass, target and precision.

The session's tiny bundle (tests/converters/tiny.py) is built once and checked
from every side: manifest, artifacts in their real interpreters (in a process
without TensorFlow), embedded metadata, reference data, head, popularity, report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgerec.bundle import BundleError, open_bundle, read_manifest
from edgerec.vocab import Vocab

pytestmark = pytest.mark.slow

ALL = {
    ("tflite", "fp32"),
    ("tflite", "fp16"),
    ("tflite", "int8-dynamic"),
    ("tflite", "int8"),
    ("onnx", "fp32"),
    ("onnx", "fp16"),
    ("onnx", "int8-dynamic"),
}


def test_bundle_is_accepted_and_complete(tiny_bundle: Path) -> None:
    m = open_bundle(tiny_bundle)  # verifies every file's size and sha256
    data = m.data
    assert m.status == "accepted" and data["gates"]["passed"]
    arts = {a.name: a for a in m.artifacts}
    plain = {(a.format, a.precision) for a in m.artifacts if "gpu" not in a.roles}
    assert plain == ALL
    assert data["default_artifact"] == "tflite-int8-dynamic"
    assert arts["tflite-int8-dynamic"].is_default
    assert "cpu-fallback" in arts["tflite-fp32"].roles
    assert data["fallback_artifact"] == "tflite-fp32"
    assert arts["tflite-int8"].experimental
    for a in m.artifacts:
        assert a.gate_passed or a.experimental
        for key in ("NDCG@10", "HR@10", "max_abs_err", "top10_overlap", "latency_ms_p50"):
            assert key in a.metrics, (a.name, key)
        assert a.metrics["parity_rows"] >= 200
        assert a.outputs[0]["shape"] == [1, m.feature_spec.num_items]
    assert arts["tflite-int8-dynamic"].bytes < arts["tflite-fp32"].bytes
    # manifest contents the issue lists
    assert data["teacher"]["fingerprint"] and len(data["teacher"]["fingerprint"]) == 64
    assert data["vocab"]["sha256"] == Vocab.load(tiny_bundle / "vocab.json").sha256()
    assert data["feature_spec"]["mask_id"] == m.feature_spec.num_items + 1
    assert data["recipe"]["distil"]["alpha"] > 0 and "seed" in data["recipe"]
    q = data["quality"]
    assert q["artifact"] == "tflite-int8-dynamic" and q["passed"]
    boot = q["bootstrap"]
    assert boot["low"] <= boot["diff"] <= boot["high"] and boot["n"] == q["num_users"]
    assert "full ranking" in q["protocol"]


def test_gpu_variant_is_certified(tiny_bundle: Path) -> None:
    m = read_manifest(tiny_bundle)
    gpu = m.artifact(m.data["gpu_artifact"])
    assert "gpu" in gpu.roles and gpu.precision == "fp16" and gpu.format == "tflite"
    assert gpu.gpu["ready"] is True and gpu.gpu["blocking_ops"] == []
    assert "gpu_compatibility.cc" in gpu.gpu["source"]
    assert {i["feed"] for i in gpu.inputs} == {"embedding_rows", "key_mask"}
    assert gpu.files and (tiny_bundle / gpu.files[0]).is_file()
    ops = set(gpu.gpu["ops"])
    assert not ops & {"GATHER", "SELECT_V2", "NOT_EQUAL", "TOPK_V2"}
    # the standard student is not GPU-ready, and says why
    std = m.artifact("tflite-fp32")
    assert std.gpu["ready"] is False and "GATHER" in std.gpu["blocking_ops"]


def test_artifacts_reproduce_their_reference_without_tensorflow(tiny_bundle: Path) -> None:
    code = f"""
import sys, json, numpy as np
from edgerec.bundle import open_bundle
from edgerec.runtime.backends.base import create_backend
m = open_bundle({str(tiny_bundle)!r})
rows = np.load(m.path(m.data["reference"]["inputs"]))
student = np.load(m.path(m.data["reference"]["student"]))
out = {{}}
for a in m.artifacts:
    extra = {{"inputs": a.inputs}} if a.format == "tflite" else {{}}
    backend = create_backend(a.format, m.path(a.path), num_items=student.shape[1],
                             max_len=rows.shape[1], accelerator="cpu", **extra)
    got = backend.run(rows)
    ref = np.load(m.path(a.reference_output))
    out[a.name] = [float(np.abs(got - ref).max()), float(np.abs(got - student).max())]
heavy = [k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf2onnx")]
print(json.dumps({{"diffs": out, "heavy": heavy}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    for name, (vs_ref, vs_student) in result["diffs"].items():
        assert vs_ref <= 1e-6, name  # same interpreter, same bytes: same outputs
        assert vs_student < 1.0, name


def test_embedded_manifest_makes_a_lone_file_self_describing(tiny_bundle: Path) -> None:
    import onnx

    from edgerec.runtime.tflite_schema import MANIFEST_METADATA, read_metadata

    m = read_manifest(tiny_bundle)
    for a in m.artifacts:
        path = m.path(a.path)
        if a.format == "tflite":
            payload = read_metadata(path)[MANIFEST_METADATA]
        else:
            props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
            payload = props[MANIFEST_METADATA]
        meta = json.loads(payload)
        assert meta["model"]["version"] == m.model_version
        assert meta["artifact"]["name"] == a.name
        assert meta["feature_spec"] == m.data["feature_spec"]
        assert meta["vocab"]["sha256"] == m.data["vocab"]["sha256"]
        assert meta["status"] == "accepted"
        assert "latency_ms_p50" not in meta["artifact"]["metrics"]  # run-dependent


def test_head_popularity_vocab_and_report(tiny_bundle: Path) -> None:
    from tests.converters.tiny import tiny_split

    m = read_manifest(tiny_bundle)
    n = m.feature_spec.num_items
    split = tiny_split()
    pop = np.load(m.path("popularity.npy"))
    assert pop.dtype == np.int64 and pop.shape == (n,)
    assert int(pop.sum()) == sum(len(s) for s in split.train)
    head = np.load(m.path("head.npz"))
    d = m.data["model"]["config"]["d_model"]
    assert head["output_bias"].shape == (n + 2,)
    assert head["head_dense_kernel"].shape == (d, d)
    assert set(head.files) == set(m.data["head"]["params"])
    assert Vocab.load(m.path("vocab.json")) == split.vocab
    report = json.loads((tiny_bundle / "report.json").read_text())
    assert report["status"] == "accepted" and len(report["artifacts"]) == 8
    md = (tiny_bundle / "report.md").read_text()
    assert "Status: ACCEPTED" in md and "paired bootstrap" in md
    assert (tiny_bundle / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_gate_failure_exits_3_and_publishes_rejected(
    capsys, tmp_path: Path, tiny_teacher: Path, tiny_data: Path
) -> None:
    from edgerec.cli import main
    from tests.converters.tiny import TINY_CONVERT, toml_text

    tables = {k: dict(v) for k, v in TINY_CONVERT.items()}
    tables["distil"]["epochs"] = 2
    # an impossible quality gate, and a failing gate on the experimental int8 artifact
    tables["gates"] = {"quality_min_ratio": 5.0, "int8": {"max_abs_err": 0.0, "experimental": True}}
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml_text(tables))
    out = tmp_path / "bundle"
    code = main(
        [
            "convert",
            "--allow-weak-teacher",  # the tiny teacher loses to transition counts
            "--teacher",
            str(tiny_teacher),
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--targets",
            "tflite",
            "--precisions",
            "int8-dynamic,int8",
            "--no-gpu",
            "--json",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 3, captured.err[-2000:]
    summary = json.loads(captured.out)
    assert summary["status"] == "rejected"
    assert any("retention" in f for f in summary["gates"]["failures"])
    assert any("tflite/int8" in w for w in summary["gates"]["warnings"])
    assert "REJECTED" in captured.err
    assert {a["name"] for a in summary["artifacts"]} == {
        "tflite-fp32",
        "tflite-int8-dynamic",
        "tflite-int8",
    }
    with pytest.raises(BundleError, match="rejected"):
        open_bundle(out)
    m = open_bundle(out, allow_rejected=True)
    assert m.status == "rejected"
    assert "Status: REJECTED" in (out / "report.md").read_text()


def test_unloadable_teacher_model(
    capsys, tmp_path: Path, tiny_vocab, tiny_data: Path, tiny_config_file: Path
) -> None:
    from edgerec.cli import main
    from edgerec.teacher.artifacts import file_sha256
    from tests.converters.conftest import fake_teacher

    teacher = fake_teacher(tmp_path / "t", tiny_vocab)
    info = json.loads((teacher / "teacher.json").read_text())
    info["fingerprint"] = file_sha256(teacher / "model.keras")  # hash fine, content garbage
    (teacher / "teacher.json").write_text(json.dumps(info))
    code = main(
        [
            "convert",
            "--teacher",
            str(teacher),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "b"),
            "--config",
            str(tiny_config_file),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "cannot load Keras model" in capsys.readouterr().err


def test_same_seed_gives_same_metrics_and_bytes(tmp_path: Path) -> None:
    """Two conversions in one process (after others): identical metrics and files."""
    from edgerec.bundle import read_manifest
    from tests.converters.tiny import build_tiny_bundle

    tables = {
        "export": {
            "targets": ["tflite", "onnx"],
            "precisions": ["fp32", "int8-dynamic"],
            "gpu": True,
        },
        "distil": {"epochs": 3, "patience": 3},
        "gates": {"quality_min_ratio": 0.0},  # 3 epochs: only determinism matters here
    }
    first = build_tiny_bundle(tmp_path / "a", **tables)
    from edgerec.converters.pipeline import convert
    from tests.converters.tiny import build_tiny_teacher, tiny_config, tiny_split

    convert(
        build_tiny_teacher(),
        tiny_split(),
        tmp_path / "b",
        tiny_config(**tables),
        progress=False,
        allow_weak_teacher=True,  # as build_tiny_bundle
    )
    a, b = read_manifest(first), read_manifest(tmp_path / "b")
    assert a.model_version == b.model_version
    for x in a.artifacts:
        y = b.artifact(x.name)
        strip = {k: v for k, v in x.metrics.items() if not k.startswith("latency")}
        assert strip == {k: v for k, v in y.metrics.items() if not k.startswith("latency")}
        assert x.sha256 == y.sha256, x.name
