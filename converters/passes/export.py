"""Export pass: every targeted artifact from the student, with roles and GPU verdicts.

Runs the format passes (:mod:`~edgerec.converters.passes.tflite`,
:mod:`~edgerec.converters.passes.onnx`, :mod:`~edgerec.converters.passes.gpu`)
for each target and precision the config asks for, marks the bundle's
``default`` and ``cpu-fallback`` artifacts, and reads each TFLite file's
operators to decide whether the GPU delegate can run it. A conversion that
fails becomes an artifact with ``error`` set, which then fails its gate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgerec.converters.artifacts import ModelArtifact, SavedModelArtifact
from edgerec.converters.config import SUPPORTED, ExportConfig, Precision, Target

if TYPE_CHECKING:
    from edgerec.converters.passes.distil import StudentArtifact

log = logging.getLogger(__name__)

#: which artifact becomes the bundle's default, in order of preference
DEFAULT_PREFERENCE = (
    (Target.TFLITE, Precision.INT8_DYNAMIC),
    (Target.TFLITE, Precision.FP16),
    (Target.TFLITE, Precision.FP32),
    (Target.ONNX, Precision.INT8_DYNAMIC),
    (Target.ONNX, Precision.FP32),
)


@dataclass(frozen=True)
class ExportAllOptions:
    """Which artifacts to build and where."""

    export: ExportConfig
    work_dir: Path
    progress: bool = True


@dataclass(frozen=True)
class ExportResult:
    """The artifacts, and the names of the default and the cpu-fallback one."""

    artifacts: list[ModelArtifact]
    default_artifact: str | None
    fallback_artifact: str | None


def run(
    student: StudentArtifact,
    saved: SavedModelArtifact,
    calibration: np.ndarray,
    options: ExportAllOptions,
) -> ExportResult:
    """Convert, assign roles, and certify GPU readiness."""
    artifacts = _build_artifacts(student, saved, calibration, options)
    default_name, fallback_name = _assign_roles(artifacts)
    _gpu_verdicts(artifacts)
    return ExportResult(artifacts, default_name, fallback_name)


def _build_artifacts(
    student: StudentArtifact,
    saved: SavedModelArtifact,
    calibration: np.ndarray,
    options: ExportAllOptions,
) -> list[ModelArtifact]:
    """TFLite, ONNX and GPU artifacts; a failed conversion becomes an artifact with
    ``error`` set (it then fails its gate) instead of aborting the run."""
    from tqdm.auto import tqdm

    from edgerec.converters.passes import gpu, tflite
    from edgerec.converters.passes import onnx as onnx_pass

    cfg = options.export
    work = options.work_dir
    progress = options.progress
    jobs: list[tuple[Target, Precision]] = []
    for target in cfg.targets:
        for precision in cfg.all_precisions:
            if precision in SUPPORTED[target]:
                jobs.append((target, precision))
            else:
                log.info("%s has no %s mode; skipped", target, precision)
    if Target.TFLITE not in cfg.targets:
        log.info("tflite not targeted: the cpu-fallback is the ONNX fp32 artifact")
    total = len(jobs) + (1 if cfg.gpu else 0)
    artifacts: list[ModelArtifact] = []
    bar = tqdm(total=total, desc="export", unit="artifact", disable=not progress)
    fp32_onnx: Path | None = None
    for target, precision in jobs:
        filename = f"student.{precision}.{target}"
        path = work / filename
        bar.set_postfix_str(f"{target}/{precision}")
        try:
            if target is Target.TFLITE:
                artifact = tflite.run(
                    saved,
                    tflite.TFLiteOptions(
                        precision,
                        path,
                        calibration=calibration,
                        per_channel=cfg.int8_per_channel,
                    ),
                )
            else:
                artifact = onnx_pass.run(
                    saved,
                    onnx_pass.OnnxOptions(precision, path, cfg.onnx_opset, fp32_path=fp32_onnx),
                )
                if precision is Precision.FP32:
                    fp32_onnx = path
        except Exception as exc:  # recorded as a failed "converts" check
            log.error("%s/%s conversion failed: %s", target, precision, exc)
            artifact = ModelArtifact(
                name=f"{target}-{precision}",
                path=path,
                filename=filename,
                format=target,
                precision=precision,
                inputs=[],
                outputs=[],
                error=f"{type(exc).__name__}: {exc}",
            )
        artifacts.append(artifact)
        bar.update()
    if cfg.gpu:
        bar.set_postfix_str("gpu variant")
        path = work / "student.fp16.gpu.tflite"
        try:
            artifacts.append(gpu.run(student, gpu.GpuOptions(path, work)))
        except Exception as exc:
            log.error("GPU variant failed: %s", exc)
            artifacts.append(
                ModelArtifact(
                    name="tflite-fp16-gpu",
                    path=path,
                    filename=path.name,
                    format=Target.TFLITE,
                    precision=Precision.FP16,
                    inputs=[],
                    outputs=[],
                    roles=["gpu"],
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
        bar.update()
    bar.close()
    return artifacts


def _assign_roles(artifacts: list[ModelArtifact]) -> tuple[str | None, str | None]:
    """Mark the default and cpu-fallback artifacts; returns their names."""
    by_key = {(a.format, a.precision): a for a in artifacts if "gpu" not in a.roles}
    default = next(
        (by_key[k] for k in DEFAULT_PREFERENCE if k in by_key and not by_key[k].error), None
    )
    fallback = by_key.get((Target.TFLITE, Precision.FP32)) or by_key.get(
        (Target.ONNX, Precision.FP32)
    )
    if default is not None:
        default.roles.append("default")
    if fallback is not None:
        fallback.roles.append("cpu-fallback")
    return (default.name if default else None), (fallback.name if fallback else None)


def _gpu_verdicts(artifacts: list[ModelArtifact]) -> None:
    from edgerec.converters.passes.gpu_ops import certify
    from edgerec.runtime.tflite_schema import read_model

    for a in artifacts:
        if a.gpu or a.error:
            continue
        if a.format is Target.TFLITE:
            a.gpu = certify(read_model(a.path)).to_json()
        else:
            a.gpu = {
                "ready": False,
                "blocking_ops": [],
                "reasons": ["GPU readiness is certified for TFLite artifacts only"],
            }
