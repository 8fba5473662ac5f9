"""The backend layer: registry, availability checks, input feeds, LiteRT and ONNX Runtime.

Unit tests need no bundle; the ``slow`` ones load the real artifacts of the
session's converter-made bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgerec._deps
from edgerec.bundle import open_bundle
from edgerec.errors import MissingExtraError
from edgerec.runtime.backends import base
from edgerec.runtime.backends.base import (
    AcceleratorUnavailable,
    Backend,
    BackendError,
    backend_available,
    create_backend,
)
from edgerec.runtime.backends.litert import GPU_DELEGATE_ENV, InputFeeds, LiteRTBackend
from edgerec.runtime.backends.onnx import OnnxRuntimeBackend, provider_order

slow = pytest.mark.slow
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


# -- registry and availability (no bundle) ---------------------------------------------


def test_provider_order_prefers_gpu_and_keeps_cpu_last() -> None:
    assert provider_order("auto", [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]
    assert provider_order("gpu", [CUDA, CPU]) == [CUDA, CPU]
    assert provider_order("auto", ["AzureExecutionProvider", CPU]) == [CPU]
    assert provider_order("cpu", [TRT, CUDA, CPU]) == [CPU]
    assert provider_order("auto", [CUDA]) == [CUDA, CPU]  # CPU is always the last resort


def test_backend_available_follows_installed_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend_available("tflite") and backend_available("onnx")
    assert not backend_available("savedmodel")
    monkeypatch.setattr(edgerec._deps, "has_module", lambda name: name != "onnxruntime")
    assert backend_available("tflite")
    assert not backend_available("onnx")


def test_create_backend_for_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgerec._deps, "has_module", lambda name: False)
    with pytest.raises(
        MissingExtraError, match=r"'ai_edge_litert'.*pip install 'edgerec\[runtime\]'"
    ):
        create_backend("tflite", "model.tflite", num_items=3, max_len=4)
    with pytest.raises(MissingExtraError, match=r"'onnxruntime'.*pip install 'edgerec\[runtime\]'"):
        create_backend("onnx", "model.onnx", num_items=3, max_len=4)


def test_create_backend_for_unknown_format() -> None:
    with pytest.raises(BackendError, match="no backend for artifact format 'pt'"):
        create_backend("pt", "model.pt", num_items=3, max_len=4)


def test_registry_is_consistent() -> None:
    assert set(base.BACKEND_FOR_FORMAT) == set(base.REQUIRED_MODULE) == set(base._REGISTRY)
    for fmt, name in base.BACKEND_FOR_FORMAT.items():
        assert base.FORMAT_FOR_BACKEND[name] == fmt


class _Doubler(Backend):
    name = "doubler"

    def run_row(self, row: np.ndarray) -> np.ndarray:
        return np.repeat(row.astype(np.float32).sum(), self.num_items) * 2


def test_base_run_stacks_run_row() -> None:
    be = _Doubler("x", num_items=3, max_len=2)
    out = be.run(np.array([[1, 2], [3, 4]], np.int32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[6, 6, 6], [14, 14, 14]])
    assert be.describe() == {"backend": "doubler", "accelerator": "cpu", "path": "x"}


# -- InputFeeds (no bundle) ------------------------------------------------------------


def test_input_feeds_default_is_the_item_row(tmp_path: Path) -> None:
    feeds = InputFeeds(None, tmp_path, max_len=4)
    out = feeds.build(np.array([0, 3, 1, 9], np.int32))
    assert list(out) == ["items"]
    np.testing.assert_array_equal(out["items"], [[0, 3, 1, 9]])


def test_input_feeds_gpu_variant_matches_bundle_contract(tmp_path: Path) -> None:
    table = np.arange(6 * 2, dtype=np.float16).reshape(6, 2)
    np.save(tmp_path / "emb.npy", table)
    specs = [
        {"name": "item_embeddings", "shape": [1, 4, 2], "dtype": "float32",
         "feed": "embedding_rows", "table": "emb.npy"},
        {"name": "key_mask", "shape": [1, 4], "dtype": "float32", "feed": "key_mask"},
    ]  # fmt: skip
    row = np.array([0, 0, 2, 5], np.int32)
    out = InputFeeds(specs, tmp_path, max_len=4).build(row)
    assert out["item_embeddings"].shape == (1, 4, 2)
    assert out["item_embeddings"].dtype == np.float32
    np.testing.assert_array_equal(out["item_embeddings"][0], table[row].astype(np.float32))
    np.testing.assert_array_equal(out["key_mask"], [[0, 0, 1, 1]])
    assert out["key_mask"].dtype == np.float32
    plain = InputFeeds(None, tmp_path, max_len=4).build(row)
    assert list(plain) == ["items"] and plain["items"].shape == (1, 4)


def test_input_feeds_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown feed kind 'audio'"):
        InputFeeds([{"name": "x", "feed": "audio"}], tmp_path, max_len=4)
    missing = [{"name": "e", "feed": "embedding_rows", "table": "nope.npy"}]
    with pytest.raises(BackendError, match=r"nope\.npy: cannot read embedding table"):
        InputFeeds(missing, tmp_path, max_len=4)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    bad = [{"name": "e", "feed": "embedding_rows", "table": "bad.npy"}]
    with pytest.raises(BackendError, match=r"bad\.npy: cannot read embedding table"):
        InputFeeds(bad, tmp_path, max_len=4)


# -- real artifacts --------------------------------------------------------------------


def _artifacts(bundle: Path):
    manifest = open_bundle(bundle)
    return manifest, manifest.artifacts


def _kwargs(manifest, art) -> dict:
    spec = manifest.feature_spec
    kw = {"num_items": spec.num_items, "max_len": spec.max_len, "threads": 1}
    if art.format == "tflite":
        kw["inputs"] = art.inputs
    return kw


@slow
def test_outputs_are_owned_copies(tiny_bundle: Path) -> None:
    """docs/toolchain.md pitfall: interpreter outputs must be copied before the next invoke."""
    manifest, arts = _artifacts(tiny_bundle)
    rows = np.load(tiny_bundle / "reference" / "inputs.npy")
    for art in arts:
        be = create_backend(
            art.format, manifest.path(art.path), accelerator="cpu", **_kwargs(manifest, art)
        )
        first = be.run_row(rows[0])
        kept = first.copy()
        second = be.run_row(rows[1])
        assert not np.shares_memory(first, second), art.name
        np.testing.assert_array_equal(first, kept, err_msg=art.name)
        assert first.dtype == np.float32 and first.shape == (manifest.feature_spec.num_items,)
        first[:] = 0  # writable and ours: the next call is unaffected
        np.testing.assert_array_equal(be.run_row(rows[1]), second, err_msg=art.name)
        np.testing.assert_array_equal(be.run(rows[:2])[1], second, err_msg=art.name)
        be.close()


@slow
def test_io_signature_matches_the_manifest(tiny_bundle: Path) -> None:
    """What converter validation checks: the loaded model's inputs and outputs."""
    manifest, arts = _artifacts(tiny_bundle)
    n = manifest.feature_spec.num_items
    for art in arts:
        be = create_backend(
            art.format, manifest.path(art.path), accelerator="cpu", **_kwargs(manifest, art)
        )
        sig = be.io_signature()
        assert {i["name"]: (i["shape"], i["dtype"]) for i in art.inputs} == sig.inputs, art.name
        assert list(sig.outputs.values()) == [([1, n], "float32")], art.name
        be.close()
        with pytest.raises(BackendError, match="closed|no interpreter"):
            be.io_signature()


@slow
def test_litert_threads_do_not_change_results(tiny_bundle: Path) -> None:
    manifest = open_bundle(tiny_bundle)
    art = manifest.artifact("tflite-fp32")
    rows = np.load(tiny_bundle / "reference" / "inputs.npy")
    outs = []
    for threads in (1, 2):
        kw = {**_kwargs(manifest, art), "threads": threads}
        be = LiteRTBackend(manifest.path(art.path), accelerator="cpu", **kw)
        outs.append(be.run(rows))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


@slow
def test_litert_rejects_inputs_that_do_not_match_the_model(tiny_bundle: Path) -> None:
    manifest = open_bundle(tiny_bundle)
    art = manifest.artifact("tflite-fp32")
    kw = _kwargs(manifest, art)
    wrong_shape = [{**art.inputs[0], "shape": [1, 99]}]
    with pytest.raises(BackendError, match=r"has shape \(1, 12\), the manifest says \(1, 99\)"):
        LiteRTBackend(manifest.path(art.path), accelerator="cpu", **{**kw, "inputs": wrong_shape})
    with pytest.raises(BackendError, match="model has 1 input"):
        LiteRTBackend(
            manifest.path(art.path), accelerator="cpu", **{**kw, "inputs": art.inputs * 2}
        )
    with pytest.raises(BackendError, match=r"output shape \(1, 100\), expected \(1, 7\)"):
        LiteRTBackend(manifest.path(art.path), accelerator="cpu", **{**kw, "num_items": 7})


@slow
@pytest.mark.parametrize(("fmt", "suffix"), [("tflite", ".tflite"), ("onnx", ".onnx")])
def test_file_that_is_not_a_model(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00\x01 definitely not a model " * 50)
    with pytest.raises(BackendError, match="cannot load this model"):
        create_backend(fmt, path, num_items=100, max_len=12, accelerator="cpu")


@slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # litert's __del__
def test_litert_gpu_delegate_env_var_falls_back(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.runtime.conftest import gpu_here

    if gpu_here():
        pytest.skip(gpu_here())
    manifest = open_bundle(tiny_bundle)
    art = manifest.artifact("tflite-fp16-gpu")
    monkeypatch.setenv(GPU_DELEGATE_ENV, str(tmp_path / "libmissing_gpu_delegate.so"))
    be = LiteRTBackend(manifest.path(art.path), accelerator="auto", **_kwargs(manifest, art))
    assert be.accelerator == "cpu"
    expected = np.load(tiny_bundle / art.reference_output)
    rows = np.load(tiny_bundle / "reference" / "inputs.npy")
    np.testing.assert_allclose(be.run(rows), expected, atol=1e-4)
    with pytest.raises(AcceleratorUnavailable, match="libmissing_gpu_delegate"):
        LiteRTBackend(manifest.path(art.path), accelerator="gpu", **_kwargs(manifest, art))


def test_gpu_probe_runs_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Vulkan check is a dlopen, not ctypes.util.find_library (ldconfig, gcc, ld)."""
    import ctypes.util
    import subprocess

    from edgerec.runtime.backends import litert

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GPU probe must not spawn processes")

    monkeypatch.delenv("EDGEREC_FORCE_GPU_PROBE", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    litert._vulkan_loader_present.cache_clear()
    try:
        missing = litert._missing_gpu_runtime()
        assert litert._missing_gpu_runtime() == missing  # cached: the same answer
    finally:
        litert._vulkan_loader_present.cache_clear()
    monkeypatch.setenv("EDGEREC_FORCE_GPU_PROBE", "1")
    assert litert._missing_gpu_runtime() is None


@slow
def test_onnx_gpu_provider_that_does_not_start(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, no_gpu: None
) -> None:
    """A build that lists CUDA but cannot start it: the session quietly uses the CPU."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    manifest = open_bundle(tiny_bundle)
    art = manifest.artifact("onnx-fp32")
    kw = _kwargs(manifest, art)
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        be = OnnxRuntimeBackend(manifest.path(art.path), accelerator="auto", **kw)
    assert be.accelerator == "cpu" and be.providers == [CPU]
    with (
        pytest.warns(UserWarning, match="CUDAExecutionProvider"),
        pytest.raises(AcceleratorUnavailable, match="fell back to the CPU"),
    ):
        OnnxRuntimeBackend(manifest.path(art.path), accelerator="gpu", **kw)


@slow
def test_onnx_int64_or_int32_inputs(tiny_bundle: Path) -> None:
    manifest = open_bundle(tiny_bundle)
    for art in manifest.artifacts:
        if art.format != "onnx":
            continue
        be = OnnxRuntimeBackend(
            manifest.path(art.path), accelerator="cpu", **_kwargs(manifest, art)
        )
        row = np.load(tiny_bundle / "reference" / "inputs.npy")[0]
        for dtype in (np.int32, np.int64):
            np.testing.assert_array_equal(be.run_row(row.astype(dtype)), be.run_row(row))


@slow
def test_manifest_signatures_match_the_models(tiny_bundle: Path) -> None:
    """What the manifest promises about inputs/outputs is what the files hold."""
    manifest = open_bundle(tiny_bundle)
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    assert len(raw["artifacts"]) == len(manifest.artifacts)
    for art in manifest.artifacts:
        be = create_backend(
            art.format, manifest.path(art.path), accelerator="cpu", **_kwargs(manifest, art)
        )
        assert art.outputs[0]["shape"] == [1, manifest.feature_spec.num_items]
        assert be.accelerator == "cpu"
        be.close()


# -- edgerec bench: runtime measurements of the backends -------------------------------
# (here because this task owns this file; they would sit well in tests/runtime/test_bench.py)


def test_latency_stats() -> None:
    from edgerec.bench.runtime_bench import latency_stats

    stats = latency_stats(np.arange(1, 101) / 1000)  # 1..100 ms
    assert stats["runs"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(100.0)
    assert latency_stats([])["runs"] == 0


def test_bench_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from edgerec.cli import main

    assert main(["-q", "bench", str(tmp_path / "nope"), "--no-teacher"]) == 2
    assert "bundle directory not found" in capsys.readouterr().err
    assert main(["-q", "bench", str(tmp_path), "--runs", "0"]) == 2
    assert "--runs must be positive" in capsys.readouterr().err


@slow
def test_count_macs_matches_the_architecture(tiny_bundle: Path) -> None:
    from edgerec.bench.runtime_bench import count_macs

    manifest = open_bundle(tiny_bundle)
    cfg = manifest.data["model"]["config"]
    n, L, d = manifest.feature_spec.num_items, cfg["max_len"], cfg["d_model"]
    h, f = cfg["num_heads"], cfg["ffn_dim"]
    block = L * d * 3 * d + 2 * h * L * L * (d // h) + L * d * d + 2 * L * d * f
    encoder = cfg["num_blocks"] * block + d * d  # + the head's dense on the [MASK] position
    for name in ("tflite-fp32", "tflite-fp16", "tflite-int8-dynamic", "tflite-int8"):
        macs = count_macs(manifest.path(manifest.artifact(name).path))
        assert encoder + d * n <= macs.total <= encoder + d * (n + 2), name
        assert set(macs.by_op) <= {"FULLY_CONNECTED", "BATCH_MATMUL"}
        assert macs.total == sum(b * m * k * nn for b, m, k, nn in macs.gemms)
    with pytest.raises(Exception, match="not a TFLite flatbuffer"):
        count_macs(manifest.path("vocab.json"))


@slow
def test_bench_compare_with_a_git_commit(tiny_bundle: Path) -> None:
    """`benchmarks/bench_runtime.py --compare-with REF`: the runtime at REF vs the tree."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    cmd = [sys.executable, str(root / "benchmarks" / "bench_runtime.py"), str(tiny_bundle),
           "--compare-with", "HEAD"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "working tree / HEAD: p50 wall" in proc.stdout
    assert "HEAD: wall p50" in proc.stdout


@slow
def test_bench_cli_on_a_real_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    """`edgerec bench` end to end in a fresh process: the report and its TF-freedom."""
    import subprocess
    import sys

    out = tmp_path / "runtime.json"
    cmd = [
        sys.executable, "-m", "edgerec", "-q", "bench", str(tiny_bundle),
        "--backends", "litert", "onnx", "--precisions", "fp32", "int8-dynamic",
        "--threads", "1", "2", "--runs", "30", "--warmup", "3", "--load-repeats", "1",
        "--batch-size", "8", "--no-teacher", "--out", str(out), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert report["tensorflow_free"] is True
    configs = {(r["backend"], r["precision"], r["threads"]) for r in report["results"]}
    assert len(configs) == 8
    assert report["default_config"] == {
        "backend": "litert",
        "precision": "int8-dynamic",
        "threads": 1,
    }
    for r in report["results"]:
        rec = r["recommend"]
        assert 0 < rec["p50_ms"] <= rec["p95_ms"] <= rec["p99_ms"]
        assert set(rec["stages"]) == {"features", "inference", "topk"}
        assert r["batch"]["rows_per_s"] > 0
        load = r["load"]
        assert load["heavy_modules"] == []
        assert 0 < load["import_s"] < load["import_open_s"]
        assert load["rss_mb_after_first_call"] >= load["rss_mb_after_import"] > 0
        assert r["accelerator"] == "cpu"
        assert r["roofline_ratio"] > 0
    roof = report["roofline"]
    assert roof["macs"] > 0 and roof["roofline_ms"] > 0 and roof["peak_gmacs"] > 0
    assert roof["peak_roofline_ms"] <= roof["roofline_ms"]
    assert report["teacher"] == {"skipped": "--no-teacher"}
    names = [t["target"] for t in report["targets"]]
    assert "recommend p50" in names and "1M items p50" in names
    assert (
        report["bundle"]["bytes"]["total"] > report["bundle"]["bytes"]["artifacts"]["tflite-fp32"]
    )


@slow
def test_bench_teacher_and_catalog_subprocesses(tiny_bundle: Path, tmp_path: Path) -> None:
    """The two TF subprocesses: the teacher comparison and a synthetic catalog size."""
    from edgerec.bench.cli import format_report
    from edgerec.bench.runner import BenchOptions, resolve_teacher, run_bench

    manifest = open_bundle(tiny_bundle)
    teacher, why = resolve_teacher(manifest, None)
    if teacher is None:
        pytest.skip(why)
    options = BenchOptions(
        bundle=tiny_bundle,
        backends=["litert"],
        precisions=["int8-dynamic"],
        runs=20,
        warmup=2,
        batch_size=4,
        load_repeats=1,
        teacher_runs=5,
        catalog_sizes=[257],
        catalog_runs=10,
        synthetic_dir=tmp_path / "synthetic",
        progress=False,
    )
    report = run_bench(options)
    t = report["teacher"]
    assert t["p50_ms"] > 0 and t["speedup_p50"] > 0, t
    assert set(t["paths"]) == {"saved_model", "keras"}
    assert t["histories"].startswith("bundle histories")  # same catalog as the bundle
    (row,) = report["catalog_scaling"]
    assert row["num_items"] == 257 and row["recommend"]["p50_ms"] > 0
    assert row["arch"]["d_model"] == manifest.data["model"]["config"]["d_model"]
    synthetic = open_bundle(row["synthetic_bundle"])
    assert synthetic.feature_spec.num_items == 257
    text = format_report(report)
    assert "catalog scaling" in text and "teacher via TensorFlow" in text
    # a second run reuses the cached synthetic bundle
    again = run_bench(BenchOptions(**{**options.__dict__, "no_teacher": True}))
    assert again["catalog_scaling"][0]["cached"] is True
