"""Accelerator selection and fallback on this device.

* ``accelerator="auto"`` always works and reports what actually runs the model;
* ``accelerator="cpu"`` runs on the CPU;
* ``accelerator="gpu"`` either runs on a GPU (``rec.accelerator`` is ``gpu``,
  ``cuda`` or ``tensorrt``) or raises ``AcceleratorUnavailable`` — never a silent
  CPU run. Which outcome is required depends on the profile: ``jetson-orin`` must
  have a working GPU path, ``rpi4``/``rpi5`` may (Vulkan), ``qemu-aarch64`` and a
  ``host`` without any sign of a GPU must raise;
* a GPU delegate library that does not exist falls back to the CPU under
  ``"auto"`` and is named in the error under ``"gpu"``;
* whatever runs on a GPU reproduces the bundle's reference vectors
  (``reference/<artifact>.npy`` on ``reference/inputs.npy``) within the
  artifact's tolerance, widened to :data:`GPU_MAX_ABS_ERR` for float artifacts.

Without a GPU the GPU checks skip (or assert the ``AcceleratorUnavailable``
refusal), so the suite runs unchanged on CPU-only hosts.
"""

from __future__ import annotations

import numpy as np
import pytest
from devicekit import GPU_ACCELERATORS, compare, gpu_hints, tolerance_for

from edgerec.runtime import Recommender
from edgerec.runtime.backends.base import (
    FORMAT_FOR_BACKEND,
    AcceleratorUnavailable,
    backend_available,
)

BACKENDS = ("litert", "onnx")
BOGUS_DELEGATE = "/nonexistent/libtensorflowlite_gpu_delegate.so"
#: a GPU computes float artifacts in fp16 (activations too, and TF32 matmuls on
#: CUDA), so its scores may drift from the CPU-made reference of the same
#: artifact by more than the CPU fp16 tolerance; float artifacts are held to the
#: wider of the two. int8 artifacts are held to their top-10 overlap only.
GPU_MAX_ABS_ERR = 5e-2


@pytest.fixture(scope="module")
def gpu_expectation(profile, device_report) -> str:
    """``required``, ``optional`` or ``absent`` for this run."""
    expectation = profile.gpu
    hints = gpu_hints()
    if expectation == "detect":
        expectation = "optional" if hints else "absent"
    device_report.section("accelerator").update(
        {"gpu_expectation": expectation, "gpu_hints": hints}
    )
    return expectation


@pytest.fixture(params=BACKENDS)
def backend_name(request, manifest) -> str:
    name = request.param
    fmt = FORMAT_FOR_BACKEND[name]
    if not any(a.format == fmt for a in manifest.artifacts):
        pytest.skip(f"the bundle has no {fmt} artifact")
    if not backend_available(fmt):
        pytest.skip(f"the {name} backend is not installed on this device")
    return name


def check_reference_vectors(rec: Recommender, reference_inputs: np.ndarray) -> dict:
    """Run the loaded artifact on the bundle's reference rows and compare with its
    reference vectors; returns the comparison, raises AssertionError when off."""
    art = rec.artifact
    manifest = rec.manifest
    assert art.reference_output, f"{art.name}: the bundle has no reference vectors"
    reference = np.load(manifest.file(art.reference_output))
    out = np.stack([rec.backend.run_row(row.astype(np.int32)) for row in reference_inputs])
    assert out.shape == reference.shape, (art.name, out.shape, reference.shape)
    assert np.isfinite(out).all(), f"{art.name}: non-finite scores on {rec.accelerator}"
    result = compare(out, reference)
    tol = tolerance_for(manifest.data, art.format, art.precision)
    max_err = None if tol["max_abs_err"] is None else max(tol["max_abs_err"], GPU_MAX_ABS_ERR)
    result.update(
        artifact=art.name,
        accelerator=rec.accelerator,
        max_abs_err_allowed=max_err,
        min_overlap=tol["min_overlap"],
    )
    failures = []
    if max_err is not None and result["max_abs_err"] > max_err:
        failures.append(f"max abs err {result['max_abs_err']:.3g} > {max_err:.3g}")
    if result["top10_overlap"] < tol["min_overlap"]:
        failures.append(f"top-10 overlap {result['top10_overlap']:.3f} < {tol['min_overlap']}")
    result["passed"] = not failures
    assert not failures, f"{art.name} on {rec.accelerator} vs {art.reference_output}: " + "; ".join(
        failures
    )
    return result


def _top_ids(rec: Recommender, histories: list[list[str]]) -> list[set[str]]:
    return [{r.item_id for r in rec.recommend(h, k=10, exclude_seen=False)} for h in histories]


def test_auto_works_and_reports_accelerator(
    bundle_path, backend_name, reference_histories, reference_inputs, gpu_expectation, device_report
) -> None:
    with Recommender.open(bundle_path, backend=backend_name, accelerator="auto") as rec:
        assert rec.accelerator in ("cpu", *GPU_ACCELERATORS)
        auto_top = _top_ids(rec, reference_histories)
        used = f"{rec.accelerator} ({rec.artifact.name})"
        if rec.accelerator != "cpu":
            device_report.section("accelerator")[f"{backend_name}/auto-vs-reference"] = (
                check_reference_vectors(rec, reference_inputs)
            )
    device_report.section("accelerator")[f"{backend_name}/auto"] = used
    if gpu_expectation == "absent":
        assert used.startswith("cpu"), f"no GPU expected here, but auto picked {used}"
    if not used.startswith("cpu"):
        # a GPU run (fp16 arithmetic) must rank like the CPU run of the same bundle
        with Recommender.open(bundle_path, backend=backend_name, accelerator="cpu") as cpu:
            cpu_top = _top_ids(cpu, reference_histories)
        overlap = np.mean([len(a & b) / 10 for a, b in zip(auto_top, cpu_top, strict=True)])
        device_report.section("accelerator")[f"{backend_name}/gpu-vs-cpu-top10"] = overlap
        assert overlap >= 0.8, f"GPU and CPU top-10 differ (overlap {overlap:.2f})"


def test_cpu_is_cpu(bundle_path, backend_name, reference_histories, device_report) -> None:
    with Recommender.open(bundle_path, backend=backend_name, accelerator="cpu") as rec:
        assert rec.accelerator == "cpu"
        assert len(rec.recommend(reference_histories[0], k=5)) == 5
        device_report.section("accelerator")[f"{backend_name}/cpu"] = f"cpu ({rec.artifact.name})"


def test_gpu_request_never_silently_uses_cpu(
    bundle_path, backend_name, reference_histories, reference_inputs, gpu_expectation, device_report
) -> None:
    section = device_report.section("accelerator")
    try:
        rec = Recommender.open(bundle_path, backend=backend_name, accelerator="gpu")
    except AcceleratorUnavailable as exc:
        section[f"{backend_name}/gpu"] = f"AcceleratorUnavailable: {exc}"
        assert str(exc), "AcceleratorUnavailable needs a message saying why"
        return
    with rec:
        section[f"{backend_name}/gpu"] = f"{rec.accelerator} ({rec.artifact.name})"
        assert rec.accelerator in GPU_ACCELERATORS, (
            f"accelerator='gpu' silently ran on {rec.accelerator}"
        )
        assert len(rec.recommend(reference_histories[0], k=10)) == 10
        # not only a count: the GPU reproduces the bundle's reference vectors
        section[f"{backend_name}/gpu-vs-reference"] = check_reference_vectors(rec, reference_inputs)
    assert gpu_expectation != "absent", (
        f"{backend_name} ran on {rec.accelerator} although this profile expects no GPU"
    )


def test_profile_gpu_requirement(
    bundle_path, manifest, reference_inputs, gpu_expectation, device_report
) -> None:
    """On a profile with a GPU (jetson-orin) at least one backend must run on it."""
    if gpu_expectation != "required":
        pytest.skip(f"GPU is {gpu_expectation} for this profile")
    working, errors = [], []
    for name in BACKENDS:
        fmt = FORMAT_FOR_BACKEND[name]
        if not backend_available(fmt) or not any(a.format == fmt for a in manifest.artifacts):
            continue
        try:
            with Recommender.open(bundle_path, backend=name, accelerator="gpu") as rec:
                parity = check_reference_vectors(rec, reference_inputs)
                working.append(f"{name}: {rec.accelerator}")
                device_report.section("accelerator")[f"{name}/gpu-required-vs-reference"] = parity
        except AcceleratorUnavailable as exc:
            errors.append(f"{name}: {exc}")
    device_report.section("accelerator")["gpu_working"] = working
    assert working, (
        "no GPU path works on this device. Install onnxruntime-gpu for JetPack (see "
        "examples/jetson/README.md) and/or set EDGEREC_TFLITE_GPU_DELEGATE to a TFLite GPU "
        "delegate library. Errors:\n" + "\n".join(errors)
    )


def test_missing_delegate_falls_back_under_auto(
    bundle_path, manifest, reference_histories, gpu_expectation, device_report
) -> None:
    if not backend_available("tflite") or not any(a.format == "tflite" for a in manifest.artifacts):
        pytest.skip("LiteRT or a .tflite artifact is not available")
    with Recommender.open(
        bundle_path, backend="litert", accelerator="auto", gpu_delegate=BOGUS_DELEGATE
    ) as rec:
        assert len(rec.recommend(reference_histories[0], k=10)) == 10
        device_report.section("accelerator")["litert/auto+missing-delegate"] = (
            f"{rec.accelerator} ({rec.artifact.name})"
        )
        if gpu_expectation == "absent":
            assert rec.accelerator == "cpu"
    if gpu_expectation == "absent":
        with pytest.raises(AcceleratorUnavailable, match="nonexistent"):
            Recommender.open(
                bundle_path, backend="litert", accelerator="gpu", gpu_delegate=BOGUS_DELEGATE
            )


def test_reference_vector_check_runs_on_cpu(
    bundle_path, backend_name, reference_inputs, device_report
) -> None:
    """The comparison the GPU tests use, on the CPU (so it is exercised on every
    device, GPU or not): the loaded artifact reproduces its reference vectors."""
    with Recommender.open(bundle_path, backend=backend_name, accelerator="cpu") as rec:
        result = check_reference_vectors(rec, reference_inputs)
    device_report.section("accelerator")[f"{backend_name}/cpu-vs-reference"] = result
    assert result["rows"] == len(reference_inputs)
