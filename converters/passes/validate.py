"""Validate pass: every artifact in its real interpreter, against the Keras student.

For each artifact (batch 1, as on a device):

* **loads** in the runtime's LiteRT / ONNX Runtime backend (plus ``onnx.checker``
  for ONNX);
* **io**: inputs and the ``[1, n]`` float32 score output are what the bundle
  contract says;
* **finite**: no NaN/Inf on the held-out parity rows;
* **size**: the file holds about ``parameters x bytes per weight`` — far less
  means a weightless model (the ``from_concrete_functions`` trap), far more a
  duplicated item table;
* **parity**: max abs error and mean top-10 set overlap against the Keras
  student on >= 200 held-out rows (users disjoint from the calibration rows);
* quality (NDCG/HR/MRR@10 on the test split, full ranking) and p50 latency are
  measured for the report; the quality gate itself is applied by the pipeline.

Artifacts run through the runtime's own backends (:mod:`edgerec.runtime.backends`,
on the CPU), so what is gated is exactly what a device runs. A failed check is
recorded, not raised: the pipeline publishes a rejected bundle and then raises
:class:`GateFailed` (exit code 3) when any gate of a non-experimental artifact or
the quality gate fails. Every check logs one ✓/✗ line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.converters.artifacts import ModelArtifact
from edgerec.converters.config import Gate, GateConfig
from edgerec.errors import EdgerecError
from edgerec.metrics import metrics_from_ranks, per_user_metrics, target_ranks
from edgerec.runtime.backends.base import Backend, create_backend

log = logging.getLogger(__name__)

SIZE_SLACK_BYTES = 64 * 1024  # flatbuffer / protobuf overhead allowed above the band
TOP_K = 10


class ValidationError(EdgerecError):
    """Base of the validation failures; they end the run with exit code 3."""

    exit_code = 3


class GateFailed(ValidationError):
    """A quality gate failed; the bundle is published with status ``rejected``.

    ``failures`` holds the failing :class:`Check` objects; ``result`` the
    pipeline's :class:`~edgerec.converters.pipeline.ConvertResult` when available.
    """

    def __init__(self, message: str, failures: Sequence[Check] = (), result: Any = None) -> None:
        super().__init__(message)
        self.failures = list(failures)
        self.result = result


@dataclass
class Check:
    """One validation check of one artifact (or of the whole bundle)."""

    artifact: str
    name: str
    passed: bool
    value: Any = None
    limit: str = ""
    detail: str = ""
    gating: bool = True  # False: informational, never fails the run

    @property
    def mark(self) -> str:
        return "✓" if self.passed else "✗"

    def line(self) -> str:
        value = _fmt(self.value)
        parts = [f"{self.mark} {self.artifact}: {self.name}"]
        if value:
            parts.append(value)
        if self.limit:
            parts.append(f"(limit {self.limit})")
        if self.detail:
            parts.append(f"— {self.detail}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        return {
            "artifact": self.artifact,
            "name": self.name,
            "passed": self.passed,
            "value": value,
            "limit": self.limit,
            "detail": self.detail,
            "gating": self.gating,
        }


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class ValidationOptions:
    """Inputs of the validate pass.

    Attributes:
        parity_rows: ``[R, L]`` int32 held-out rows (users disjoint from calibration).
        expected: ``[R, n]`` Keras-student scores of ``parity_rows``.
        eval_rows: ``[U, L]`` int32 test-split rows.
        eval_targets: ``[U]`` test targets (item indices ``1..n``).
        eval_exclude: per-user items removed from the ranking (None: keep history).
        latency_runs: timed batch-1 invocations.
        threads: interpreter threads.
        reference_rows: how many parity rows' outputs to keep for the bundle.
    """

    parity_rows: np.ndarray
    expected: np.ndarray
    eval_rows: np.ndarray
    eval_targets: np.ndarray
    eval_exclude: list[np.ndarray] | None = None
    latency_runs: int = 200
    threads: int = 1
    reference_rows: int = 8


@dataclass
class ArtifactReport:
    """Everything measured for one artifact."""

    name: str
    label: str
    format: str
    precision: str
    bytes: int
    experimental: bool
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reference_outputs: np.ndarray | None = None
    per_user_ndcg: np.ndarray | None = None

    @property
    def passed(self) -> bool:
        """All gating checks passed."""
        return all(c.passed for c in self.checks if c.gating)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.gating and not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "format": self.format,
            "precision": self.precision,
            "bytes": self.bytes,
            "experimental": self.experimental,
            "passed": self.passed,
            "metrics": self.metrics,
            "checks": [c.to_json() for c in self.checks],
        }


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per-row ``|top_k(a) ∩ top_k(b)| / k`` (set overlap; order ignored)."""
    k = min(k, a.shape[1])
    ta = np.argpartition(-a, k - 1, axis=1)[:, :k]
    tb = np.argpartition(-b, k - 1, axis=1)[:, :k]
    return np.array([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)])


def open_backend(
    path: Path, artifact: ModelArtifact, num_items: int, max_len: int, threads: int = 1
) -> Backend:
    """The runtime's backend for an artifact file, on the CPU as a device's fallback.

    Validation runs artifacts through exactly the code a device runs
    (:mod:`edgerec.runtime.backends`); the GPU variant's embedding table is read
    from the work directory the artifact was converted into.
    """
    fmt = str(artifact.format)
    kwargs: dict[str, Any] = {
        "num_items": num_items,
        "max_len": max_len,
        "threads": threads,
        "accelerator": "cpu",
    }
    if fmt == "tflite":
        kwargs.update(inputs=artifact.inputs, table_dir=artifact.path.parent)
    return create_backend(fmt, path, **kwargs)


def _expected_io(artifact: ModelArtifact, backend: Backend, num_items: int) -> tuple[bool, str]:
    problems = []
    signature = backend.io_signature()
    for spec in artifact.inputs:
        got = signature.inputs.get(spec["name"])
        if got is None:
            problems.append(f"input {spec['name']!r} missing (has {sorted(signature.inputs)})")
            continue
        shape, dtype = got
        if list(shape) != list(spec["shape"]) or dtype != spec["dtype"]:
            problems.append(
                f"input {spec['name']}: {shape} {dtype}, expected {spec['shape']} {spec['dtype']}"
            )
    if len(signature.inputs) != len(artifact.inputs):
        problems.append(f"{len(signature.inputs)} inputs, expected {len(artifact.inputs)}")
    outputs = list(signature.outputs.values())
    if len(outputs) != 1:
        problems.append(f"{len(outputs)} outputs, expected 1 (scores)")
    else:
        shape, dtype = outputs[0]
        if list(shape) != [1, num_items] or dtype != "float32":
            problems.append(f"output {shape} {dtype}, expected [1, {num_items}] float32")
    return not problems, "; ".join(problems)


def validate_artifact(
    artifact: ModelArtifact,
    options: ValidationOptions,
    gate: Gate,
    gates: GateConfig,
) -> ArtifactReport:
    """Run every check on one artifact; failures are recorded, not raised."""
    report = ArtifactReport(
        name=artifact.name,
        label=artifact.label,
        format=str(artifact.format),
        precision=str(artifact.precision),
        bytes=artifact.bytes,
        experimental=gate.experimental,
    )
    name = artifact.label
    checks = report.checks
    if artifact.error:
        checks.append(Check(name, "converts", False, detail=artifact.error))
        return _log(report)
    checks.append(Check(name, "converts", True, f"{artifact.seconds:.1f} s", gating=False))
    num_items = options.expected.shape[1]
    try:
        if str(artifact.format) == "onnx":
            import onnx

            onnx.checker.check_model(str(artifact.path))
        backend = open_backend(
            artifact.path, artifact, num_items, options.parity_rows.shape[1], options.threads
        )
    except Exception as exc:  # any loader failure is a failed check, with its message
        checks.append(Check(name, "loads", False, detail=f"{type(exc).__name__}: {exc}"))
        return _log(report)
    checks.append(
        Check(
            name,
            "loads",
            True,
            "ai-edge-litert" if str(artifact.format) == "tflite" else "onnxruntime",
        )
    )
    ok, detail = _expected_io(artifact, backend, num_items)
    checks.append(Check(name, "io", ok, detail=detail or "inputs/outputs match the contract"))
    if not ok:
        return _log(report)

    outputs = backend.run(options.parity_rows)
    finite = bool(np.isfinite(outputs).all())
    checks.append(
        Check(
            name,
            "finite",
            finite,
            f"{len(outputs)} rows",
            detail="" if finite else "NaN or Inf in the outputs",
        )
    )
    if not finite:
        return _log(report)

    expected_bytes = artifact.expected_params * artifact.precision.bytes_per_weight
    lo = gates.min_size_ratio * expected_bytes
    hi = gates.max_size_ratio * expected_bytes + SIZE_SLACK_BYTES
    size_ok = lo <= artifact.bytes <= hi
    checks.append(
        Check(
            name,
            "size",
            size_ok,
            f"{artifact.bytes:,} B",
            f"{lo:,.0f}..{hi:,.0f} B",
            detail=f"{artifact.expected_params:,} params x "
            f"{artifact.precision.bytes_per_weight} B"
            + (
                ""
                if size_ok
                else (
                    " — too small: weights missing?"
                    if artifact.bytes < lo
                    else " — too large: a weight stored twice?"
                )
            ),
        )
    )

    err = float(np.abs(outputs - options.expected).max())
    overlap = top_k_overlap(outputs, options.expected)
    report.metrics.update(
        {
            "max_abs_err": err,
            "top10_overlap": float(overlap.mean()),
            "top10_overlap_min": float(overlap.min()),
            "parity_rows": len(outputs),
        }
    )
    if gate.max_abs_err is not None:
        checks.append(
            Check(name, "max_abs_err", err <= gate.max_abs_err, err, f"<= {gate.max_abs_err:g}")
        )
    else:
        checks.append(Check(name, "max_abs_err", True, err, gating=False))
    if gate.min_overlap is not None:
        checks.append(
            Check(
                name,
                "top10_overlap",
                float(overlap.mean()) >= gate.min_overlap,
                float(overlap.mean()),
                f">= {gate.min_overlap:g}",
            )
        )
    report.reference_outputs = outputs[: options.reference_rows].astype(np.float32)

    # latency: one batch-1 call as a device makes it, p50 over latency_runs calls
    rows = options.parity_rows
    times = []
    for i in range(options.latency_runs):
        row = rows[i % len(rows)]
        t0 = time.perf_counter()
        backend.run_row(row)
        times.append(time.perf_counter() - t0)
    report.metrics["latency_ms_p50"] = float(np.median(times) * 1e3)
    report.metrics["latency_ms_p90"] = float(np.quantile(times, 0.9) * 1e3)

    ranks = _eval_ranks(backend, options)
    backend.close()
    metrics = metrics_from_ranks(ranks, ks=(TOP_K,))
    report.metrics.update(metrics)
    report.per_user_ndcg = per_user_metrics(ranks, TOP_K)[f"NDCG@{TOP_K}"]
    checks.append(
        Check(
            name,
            "quality",
            True,
            f"NDCG@10 {metrics['NDCG@10']:.4f} HR@10 {metrics['HR@10']:.4f}",
            gating=False,
            detail=f"p50 {report.metrics['latency_ms_p50']:.3f} ms",
        )
    )
    return _log(report)


def _eval_ranks(backend: Backend, options: ValidationOptions, chunk: int = 256) -> np.ndarray:
    """Test-split ranks through the artifact, scored in chunks to bound memory."""
    rows, targets = options.eval_rows, options.eval_targets
    ranks = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        scores = backend.run(block)
        exclude = None
        if options.eval_exclude is not None:
            exclude = options.eval_exclude[start : start + chunk]
        ranks[start : start + len(block)] = target_ranks(
            scores, targets[start : start + len(block)], exclude
        )
    return ranks


def _log(report: ArtifactReport) -> ArtifactReport:
    for c in report.checks:
        level = logging.INFO if c.passed or not c.gating else logging.WARNING
        log.log(level, "%s", c.line())
    return report


def run(
    artifacts: Sequence[ModelArtifact],
    options: ValidationOptions,
    gates: GateConfig,
    progress: bool = True,
) -> list[ArtifactReport]:
    """Validate every artifact; returns one :class:`ArtifactReport` each."""
    from tqdm.auto import tqdm

    reports = []
    for artifact in tqdm(artifacts, desc="validate", unit="artifact", disable=not progress):
        gate = gates.gate_for(str(artifact.format), str(artifact.precision))
        reports.append(validate_artifact(artifact, options, gate, gates))
    return reports


def check_embedded(
    path: Path,
    artifact: ModelArtifact,
    options: ValidationOptions,
    reference: np.ndarray,
    threads: int = 1,
) -> Check:
    """After metadata embedding, the artifact must reproduce its reference outputs exactly."""
    rows = options.parity_rows[: len(reference)]
    backend = open_backend(path, artifact, reference.shape[1], rows.shape[1], threads)
    out = backend.run(rows)
    backend.close()
    same = bool(np.array_equal(out, reference))
    return Check(
        artifact.label,
        "metadata_roundtrip",
        same,
        f"{len(rows)} rows",
        detail="bit-identical outputs after embedding the manifest"
        if same
        else "outputs changed after embedding the manifest",
    )
