"""``convert()``: the release pipeline, one small pass after another.

::

    prepare (checks, TF-free) -> distil -> export SavedModel -> TFLite / ONNX per
    precision -> GPU variant -> validate (real interpreters) -> gates -> embed
    manifest -> bundle (atomic) + report

Bad input raises :class:`~edgerec.errors.InputError` (exit 2) before anything is
trained. A failed gate still publishes the bundle, with ``status: rejected`` in
its manifest (``edgerec.bundle.open_bundle`` refuses it), then raises
:class:`~edgerec.converters.validate.GateFailed` (exit 3) carrying the result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerec import __version__
from edgerec.bundle import STATUS_ACCEPTED, STATUS_REJECTED, check_output_dir
from edgerec.converters.artifacts import ModelArtifact
from edgerec.converters.config import SUPPORTED, ConvertConfig, Precision, Target
from edgerec.converters.validate import ArtifactReport, Check, GateFailed, ValidationOptions
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.metrics import paired_bootstrap, protocol_line

log = logging.getLogger(__name__)

#: which artifact becomes the bundle's default, in order of preference
DEFAULT_PREFERENCE = (
    (Target.TFLITE, Precision.INT8_DYNAMIC),
    (Target.TFLITE, Precision.FP16),
    (Target.TFLITE, Precision.FP32),
    (Target.ONNX, Precision.INT8_DYNAMIC),
    (Target.ONNX, Precision.FP32),
)
LATENCY_KEYS = ("latency_ms_p50", "latency_ms_p90")


@dataclass
class Prepared:
    """Checked inputs of a conversion (everything :func:`prepare` validated)."""

    teacher_dir: Path
    teacher_info: Any  # edgerec.teacher.artifacts.TeacherInfo
    split: LeaveOneOutSplit
    data_name: str
    config: ConvertConfig
    student_cfg: Any  # edgerec.teacher.config.ModelConfig
    out_dir: Path
    force: bool


@dataclass
class ConvertResult:
    """Outcome of :func:`convert`: what was published and how it measured."""

    status: str
    out_dir: Path
    summary: dict[str, Any]
    reports: list[ArtifactReport] = field(default_factory=list)
    failures: list[Check] = field(default_factory=list)
    student: Any = None  # the distil pass's StudentArtifact (Keras model), not serialized
    split: LeaveOneOutSplit | None = None

    @property
    def accepted(self) -> bool:
        return self.status == STATUS_ACCEPTED

    @property
    def exit_code(self) -> int:
        return 0 if self.accepted else 3

    def to_json(self) -> dict[str, Any]:
        return self.summary


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    log.info("pass %s ...", name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t0, 2)
        log.info("pass %s done (%.1f s)", name, timings[name])


def _load_split(data: str | Path | LeaveOneOutSplit) -> tuple[LeaveOneOutSplit, str]:
    if isinstance(data, LeaveOneOutSplit):
        return data, data.dataset.name or "dataset"
    from edgerec.data import leave_one_out, load_dataset

    dataset = load_dataset(data)
    return leave_one_out(dataset), dataset.name or str(data)


def prepare(
    teacher: str | Path,
    data: str | Path | LeaveOneOutSplit,
    out: str | Path,
    config: ConvertConfig | None = None,
    force: bool = False,
) -> Prepared:
    """Every input check, before any training (no TensorFlow import)."""
    from edgerec.converters.distil import resolve_student
    from edgerec.teacher.artifacts import read_teacher_info

    config = (config or ConvertConfig.defaults()).validate()
    out_dir = Path(out)
    check_output_dir(out_dir, force)
    info = read_teacher_info(teacher)
    split, name = _load_split(data)
    if split.vocab.sha256() != info.vocab.sha256():
        raise InputError(
            f"{teacher}: the teacher's vocabulary ({info.vocab.num_items} items, sha256 "
            f"{info.vocab.sha256()[:12]}) does not match the data {name!r} "
            f"({split.vocab.num_items} items, sha256 {split.vocab.sha256()[:12]}); convert "
            "with the dataset the teacher was trained on"
        )
    student_cfg = resolve_student(config.student, info.config.model)
    if len(split.train) < 2:
        raise InputError(f"{name}: needs at least 2 users (got {len(split.train)})")
    return Prepared(Path(teacher), info, split, name, config, student_cfg, out_dir, force)


def _select_rows(
    split: LeaveOneOutSplit, spec: FeatureSpec, config: ConvertConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration rows, held-out parity rows and their users (disjoint users).

    Calibration: ``calibration_samples`` rows cut from *training* sequences of one
    group of users (random prefixes, ``[MASK]`` appended, as at inference).
    Parity: the test-split input rows of other users.
    """
    rng = np.random.default_rng(seed + 1)
    users = rng.permutation(len(split.train))
    want = config.validation.num_sequences
    if len(users) >= want + 10:
        parity_users = users[:want]
    else:
        parity_users = users[: max(1, (2 * len(users)) // 3)]
        log.warning(
            "only %d users: %d parity rows instead of %d", len(users), len(parity_users), want
        )
    calib_users = np.setdiff1d(users, parity_users)
    if len(calib_users) == 0:
        calib_users = users[-1:]
    histories = []
    picks = rng.choice(calib_users, size=config.export.calibration_samples, replace=True)
    for u in picks:
        seq = split.train[int(u)]
        if len(seq) == 0:
            continue
        cut = int(rng.integers(1, len(seq) + 1))
        histories.append(seq[:cut])
    calibration = spec.encode_batch(histories)
    test_inputs = split.test_inputs()
    parity = spec.encode_batch([test_inputs[int(u)] for u in parity_users])
    return calibration, parity, parity_users


def _eval_set(
    split: LeaveOneOutSplit, config: ConvertConfig
) -> tuple[list[np.ndarray], np.ndarray]:
    inputs = split.test_inputs()
    targets = np.asarray(split.test_target)
    limit = config.validation.max_eval_users
    if limit and limit < len(inputs):
        rng = np.random.default_rng(config.distil.seed + 2)
        keep = np.sort(rng.choice(len(inputs), size=limit, replace=False))
        inputs = [inputs[int(i)] for i in keep]
        targets = targets[keep]
    return inputs, targets


def _exclusions(histories: list[np.ndarray], mode: str, window: int) -> list[np.ndarray] | None:
    if mode == "none":
        return None
    if mode == "input":
        return [h[-window:] for h in histories]
    return histories


def _keras_quality(
    model: Any, spec: FeatureSpec, histories: list[np.ndarray], targets: np.ndarray, mode: str
) -> tuple[dict[str, float], np.ndarray]:
    from edgerec.metrics import evaluate
    from edgerec.teacher.scoring import KerasScorer

    scorer = KerasScorer(model, spec)
    result = evaluate(
        scorer,
        histories,
        targets,
        ks=(10,),
        exclude_mode=mode,
        window=spec.history_len if mode == "input" else None,
        num_items=spec.num_items,
    )
    return result.metrics, result.per_user(10)["NDCG@10"]


def _build_artifacts(
    prepared: Prepared,
    student: Any,
    saved: Any,
    calibration: np.ndarray,
    work: Path,
    progress: bool,
) -> list[ModelArtifact]:
    """TFLite, ONNX and GPU artifacts; a failed conversion becomes an artifact with
    ``error`` set (it then fails its gate) instead of aborting the run."""
    from tqdm.auto import tqdm

    from edgerec.converters import gpu, onnxconv, tflite

    cfg = prepared.config.export
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
                artifact = onnxconv.run(
                    saved,
                    onnxconv.OnnxOptions(precision, path, cfg.onnx_opset, fp32_path=fp32_onnx),
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
    from edgerec.converters.gpu_ops import certify
    from edgerec.converters.tflite_schema import read_model

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


def convert(
    teacher: str | Path,
    data: str | Path | LeaveOneOutSplit,
    out: str | Path,
    config: ConvertConfig | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    raise_on_gate: bool = True,
    keep_work: Path | None = None,
) -> ConvertResult:
    """Distil, export, quantize, validate, gate and bundle.

    Args:
        teacher: teacher directory written by ``edgerec train``.
        data: dataset name (``movielens-100k``), log file, or a ready
            :class:`LeaveOneOutSplit` (tests); its vocabulary must be the teacher's.
        out: bundle directory to publish (atomically).
        config: :class:`ConvertConfig` (default: ``default.toml``).
        force: replace an existing bundle / non-empty directory at ``out``.
        progress: tqdm progress bars.
        raise_on_gate: raise :class:`GateFailed` (exit 3) after publishing a
            rejected bundle; otherwise return the result with ``status = rejected``.
        keep_work: copy the work directory (SavedModels, raw artifacts) there.

    Returns:
        :class:`ConvertResult` (``summary`` is what ``--json`` prints).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed(timings, "prepare"):
        prepared = prepare(teacher, data, out, config, force)
    with tempfile.TemporaryDirectory(prefix="edgerec-convert-") as tmp:
        work = Path(tmp)
        result = _convert(prepared, work, timings, progress)
        if keep_work is not None:
            shutil.copytree(work, keep_work, dirs_exist_ok=True)
    timings["total"] = round(time.perf_counter() - started, 2)
    result.summary["timings"] = timings
    if not result.accepted and raise_on_gate:
        lines = "; ".join(c.line() for c in result.failures[:5])
        raise GateFailed(
            f"quality gate failed, bundle published as REJECTED at {result.out_dir}: {lines}",
            result.failures,
            result,
        )
    return result


def _convert(
    prepared: Prepared, work: Path, timings: dict[str, float], progress: bool
) -> ConvertResult:
    from edgerec.converters import distil, savedmodel, validate
    from edgerec.teacher.artifacts import load_teacher

    cfg = prepared.config
    split = prepared.split
    seed = cfg.distil.seed
    with _timed(timings, "load teacher"):
        info, teacher_model = load_teacher(prepared.teacher_dir)
    with _timed(timings, "distil"):
        student = distil.run(
            split,
            distil.DistilOptions(prepared.student_cfg, cfg.distil, progress=progress),
            teacher=teacher_model if cfg.distil.alpha > 0 else None,
        )
    spec = student.spec
    with _timed(timings, "export savedmodel"):
        saved = savedmodel.run(student, savedmodel.ExportOptions(work / "saved_model"))
    calibration, parity_rows, parity_users = _select_rows(split, spec, cfg, seed)
    with _timed(timings, "convert"):
        artifacts = _build_artifacts(prepared, student, saved, calibration, work, progress)
    default_name, fallback_name = _assign_roles(artifacts)
    _gpu_verdicts(artifacts)

    with _timed(timings, "validate"):
        from edgerec.teacher.scoring import KerasScorer

        expected = KerasScorer(student.model, spec).score_rows(parity_rows)
        histories, targets = _eval_set(split, cfg)
        mode = cfg.validation.exclude_mode
        options = ValidationOptions(
            parity_rows=parity_rows,
            expected=expected,
            eval_rows=spec.encode_batch(histories),
            eval_targets=targets,
            eval_exclude=_exclusions(histories, mode, spec.history_len),
            latency_runs=cfg.validation.latency_runs,
            threads=cfg.validation.threads,
            reference_rows=min(cfg.validation.reference_rows, len(parity_rows)),
        )
        reports = validate.run(artifacts, options, cfg.gates, progress=progress)
        teacher_metrics, teacher_ndcg = _keras_quality(
            teacher_model, info.feature_spec, histories, targets, mode
        )
        student_metrics, _ = _keras_quality(student.model, spec, histories, targets, mode)

    quality, quality_check = _quality_gate(
        reports, default_name, teacher_metrics, teacher_ndcg, student_metrics, cfg, mode, spec
    )
    failures: list[Check] = []
    warnings: list[Check] = []
    for r in reports:
        for c in r.failures():
            (warnings if r.experimental else failures).append(c)
    if quality_check is not None and not quality_check.passed:
        failures.append(quality_check)
    if default_name is None:
        failures.append(
            Check(
                "bundle", "default artifact", False, detail="no artifact converted; nothing to ship"
            )
        )
    status = STATUS_ACCEPTED if not failures else STATUS_REJECTED

    with _timed(timings, "bundle"):
        summary = _publish(
            prepared,
            info,
            student,
            artifacts,
            reports,
            options,
            quality,
            failures,
            warnings,
            status,
            default_name,
            fallback_name,
            timings,
            work,
        )
    status = summary["status"]
    level = logging.INFO if status == STATUS_ACCEPTED else logging.WARNING
    log.log(level, "bundle %s published to %s", status.upper(), prepared.out_dir)
    return ConvertResult(status, prepared.out_dir, summary, reports, failures, student, split)


def _quality_gate(
    reports: list[ArtifactReport],
    default_name: str | None,
    teacher_metrics: dict[str, float],
    teacher_ndcg: np.ndarray,
    student_metrics: dict[str, float],
    cfg: ConvertConfig,
    mode: str,
    spec: FeatureSpec,
) -> tuple[dict[str, Any], Check | None]:
    quality: dict[str, Any] = {
        "protocol": protocol_line(
            mode, num_items=spec.num_items, window=spec.history_len if mode == "input" else None
        ),
        "num_users": int(len(teacher_ndcg)),
        "teacher": teacher_metrics,
        "student_keras": student_metrics,
        "artifact": default_name,
        "min_ratio": cfg.gates.quality_min_ratio,
    }
    report = next((r for r in reports if r.name == default_name), None)
    if report is None or report.per_user_ndcg is None:
        quality["passed"] = False
        check = Check(
            "quality",
            "retention",
            False,
            detail="the default artifact produced no test-split metrics",
        )
        log.warning("%s", check.line())
        return quality, check
    boot = paired_bootstrap(
        report.per_user_ndcg,
        teacher_ndcg,
        n_resamples=cfg.validation.bootstrap_resamples,
        seed=cfg.distil.seed,
    )
    ratio = boot.ratio
    passed = bool(np.isfinite(ratio) and ratio >= cfg.gates.quality_min_ratio)
    quality.update(
        {
            "default": {k: report.metrics[k] for k in ("NDCG@10", "HR@10", "MRR@10")},
            "ratio": ratio,
            "bootstrap": boot.to_json(),
            "passed": passed,
        }
    )
    check = Check(
        f"quality/{default_name}",
        "NDCG@10 retention vs teacher",
        passed,
        ratio,
        f">= {cfg.gates.quality_min_ratio:g}",
        detail=f"student−teacher {boot.diff:+.4f}, 95% CI [{boot.low:+.4f}, {boot.high:+.4f}] "
        f"over {boot.n} users",
    )
    log.log(logging.INFO if passed else logging.WARNING, "%s", check.line())
    return quality, check


def _content_version(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p)
    return digest.hexdigest()[:12]


def _publish(
    prepared: Prepared,
    info: Any,
    student: Any,
    artifacts: list[ModelArtifact],
    reports: list[ArtifactReport],
    options: ValidationOptions,
    quality: dict[str, Any],
    failures: list[Check],
    warnings: list[Check],
    status: str,
    default_name: str | None,
    fallback_name: str | None,
    timings: dict[str, float],
    work: Path,
) -> dict[str, Any]:
    """Embed the manifest in each artifact, write reference data and the report,
    and publish the bundle atomically. Returns the summary (report.json)."""
    from edgerec.baselines import MostPopular
    from edgerec.converters import package, report, validate
    from edgerec.converters.distil import encoder_params

    cfg = prepared.config
    split = prepared.split
    spec = student.spec
    vocab = split.vocab
    by_name = {r.name: r for r in reports}
    recipe = {**cfg.to_json(), "seed": cfg.distil.seed}
    fp32 = next((a for a in artifacts if a.name == fallback_name and not a.error), None)
    version = _content_version(
        json.dumps(recipe, sort_keys=True).encode(),
        info.fingerprint.encode(),
        vocab.sha256().encode(),
        fp32.path.read_bytes() if fp32 else b"",
    )
    model_id = f"{prepared.data_name}-bert4rec-student"
    core = {
        "status": status,
        "edgerec_version": __version__,
        "model": {
            "id": model_id,
            "version": version,
            "architecture": "bert4rec",
            "config": {k: getattr(student.config, k) for k in student.config.__dataclass_fields__},
            "num_params": student.num_params,
            "distillation": {
                "alpha": cfg.distil.alpha,
                "temperature": cfg.distil.temperature,
                "best_epoch": student.best_epoch,
                "epochs_run": len(student.history),
                "valid": student.best_valid,
            },
        },
        "teacher": {
            "fingerprint": info.fingerprint,
            "path": str(prepared.teacher_dir),
            "config": info.config.to_json(),
            "num_params": encoder_params(info.config.model, vocab.num_items),
            "metrics": quality.get("teacher"),
        },
        "dataset": {
            "name": prepared.data_name,
            "num_users": len(split.train),
            "num_items": vocab.num_items,
            "num_interactions": int(split.dataset.num_interactions),
        },
        "vocab": {
            "path": "vocab.json",
            "sha256": vocab.sha256(),
            "num_items": vocab.num_items,
            "pad_id": 0,
            "mask_id": vocab.mask_id,
            "reserved": "0 = padding, 1..n = items in vocabulary order, n+1 = [MASK]; "
            "model output column j = item index j + 1",
        },
        "feature_spec": spec.to_json(),
        "recipe": recipe,
        "default_artifact": default_name,
        "fallback_artifact": fallback_name,
    }
    entries = []
    shipped: dict[str, int] = {}
    embed_checks: list[Check] = []
    files: dict[str, bytes | Path] = {}
    ref_rows = options.parity_rows[: options.reference_rows]
    files["reference/inputs.npy"] = package.npy_bytes(ref_rows.astype(np.int32))
    files["reference/student.keras.npy"] = package.npy_bytes(
        options.expected[: options.reference_rows].astype(np.float32)
    )
    published_dir = work / "publish"
    published_dir.mkdir()
    for a in artifacts:
        r = by_name[a.name]
        if a.error or not a.path.is_file():
            continue
        gate = cfg.gates.gate_for(str(a.format), str(a.precision))
        metrics = {k: v for k, v in r.metrics.items()}
        entry = {
            "name": a.name,
            "path": a.filename,
            "format": str(a.format),
            "precision": str(a.precision),
            "inputs": a.inputs,
            "outputs": a.outputs,
            "roles": a.roles,
            "gpu": a.gpu,
            "metrics": metrics,
            "experimental": gate.experimental,
            "gate_passed": r.passed,
            "reference_output": f"reference/{a.name}.npy"
            if r.reference_outputs is not None
            else None,
            "files": sorted(a.extra_files),
            "notes": a.notes,
        }
        # the embedded copy leaves out run-dependent numbers so that the same
        # inputs and seed can give byte-identical artifacts
        stable = {**entry, "metrics": {k: v for k, v in metrics.items() if k not in LATENCY_KEYS}}
        target = published_dir / a.filename
        package.embed_manifest(a.path, str(a.format), {**core, "artifact": stable}, target)
        if r.reference_outputs is not None:
            files[entry["reference_output"]] = package.npy_bytes(r.reference_outputs)
            check = validate.check_embedded(
                target, str(a.format), a, options, r.reference_outputs, cfg.validation.threads
            )
            log.log(logging.INFO if check.passed else logging.WARNING, "%s", check.line())
            embed_checks.append(check)
            if not check.passed:
                failures.append(check)
        entries.append((entry, target, a.extra_files))
        shipped[a.name] = target.stat().st_size
    if any(not c.passed for c in embed_checks):
        status = STATUS_REJECTED
        core["status"] = status
    popularity = MostPopular(vocab.num_items).fit(split.train).counts.astype(np.int64)
    files["vocab.json"] = json.dumps(vocab.to_json()).encode()
    files["popularity.npy"] = package.npy_bytes(popularity)
    head = package.head_arrays(student.model)
    files["head.npz"] = package.npz_bytes(head)

    rows = []
    for a in artifacts:
        r = by_name[a.name]
        rows.append(
            {
                "name": a.name,
                "format": str(a.format),
                "precision": str(a.precision),
                "roles": a.roles,
                "bytes": shipped.get(a.name),
                **{
                    k: r.metrics.get(k)
                    for k in (
                        "NDCG@10",
                        "HR@10",
                        "MRR@10",
                        "max_abs_err",
                        "top10_overlap",
                        "latency_ms_p50",
                    )
                },
                "gpu_ready": bool((a.gpu or {}).get("ready")),
                "gpu": a.gpu,
                "gate": "pass"
                if r.passed
                else ("fail (experimental)" if r.experimental else "FAIL"),
                "experimental": r.experimental,
                "seconds": round(a.seconds, 2),
                "notes": a.notes,
                "error": a.error,
            }
        )
    manifest = {
        **core,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu_artifact": next((a.name for a in artifacts if "gpu" in a.roles and not a.error), None),
        "popularity": {
            "path": "popularity.npy",
            "dtype": "int64",
            "description": "training-split interaction count per item (column j = item "
            "index j + 1): the runtime's empty-history fallback ranking",
        },
        "head": {
            "path": "head.npz",
            "version": 0,
            "base_model_version": version,
            "params": {k: list(v.shape) for k, v in head.items()},
            "description": package.HEAD_DOC,
        },
        "reference": {
            "inputs": "reference/inputs.npy",
            "student": "reference/student.keras.npy",
            "rows": int(len(ref_rows)),
            "description": "encoded rows of held-out users; each artifact's own outputs "
            "are in its reference_output (compare a device run against them)",
        },
        "quality": quality,
        "gates": {
            "passed": status == STATUS_ACCEPTED,
            "failures": [c.line() for c in failures],
            "warnings": [c.line() for c in warnings],
            "config": cfg.gates.to_json(),
        },
        "report": {"markdown": "report.md", "json": "report.json", "plot": "report.png"},
    }
    summary = {
        **manifest,
        "out_dir": str(prepared.out_dir),
        "artifacts": rows,
        "checks": {r.name: [c.to_json() for c in r.checks] for r in reports},
        "metadata_checks": [c.to_json() for c in embed_checks],
        "distillation_history": student.history,
        "timings": dict(timings),
    }
    report_dir = work / "report"
    report_dir.mkdir()
    for rel, path in report.write(summary, report_dir).items():
        files[rel] = path
    package.write_bundle(prepared.out_dir, prepared.force, manifest, entries, files)
    return summary
