"""Bundle pass: write the artifacts, contracts and report into an edgerec bundle.

Layout (see :mod:`edgerec.bundle`)::

    manifest.json                    schema 1: recipe, teacher, feature spec, artifacts...
    vocab.json                       item id <-> index, reserved ids 0 (pad), n+1 ([MASK])
    popularity.npy                   int64 [n] training counts (column j = item j + 1)
    head.npz                         trainable head parameters (see HEAD_DOC)
    reference/inputs.npy             int32 [R, L] encoded rows (held-out users)
    reference/student.keras.npy      float32 [R, n] Keras student outputs
    reference/<artifact>.npy         float32 [R, n] each artifact's own outputs
    student.<precision>.tflite|onnx  the artifacts (TFLite ones embed the manifest)
    student.fp16.gpu.tflite          GPU variant + student.fp16.gpu.embeddings.npy
    report.md / report.json / report.png

Written into a temporary directory next to the output and renamed into place
atomically by :class:`edgerec.bundle.BundleWriter`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerec import __version__
from edgerec.bundle import (
    STATUS_ACCEPTED,
    STATUS_REJECTED,
    BundleIdentity,
    BundleManifest,
    BundleWriter,
    DatasetInfo,
    DistillationInfo,
    GatesInfo,
    HeadInfo,
    ModelInfo,
    PopularityInfo,
    Recipe,
    ReferenceInfo,
    TeacherInfo,
    VocabInfo,
)
from edgerec.converters.artifacts import ModelArtifact
from edgerec.converters.config import ConvertConfig
from edgerec.converters.passes.validate import ArtifactReport, Check, ValidationOptions
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.runtime.tflite_schema import MANIFEST_METADATA, embed_metadata

if TYPE_CHECKING:
    from edgerec.converters.passes.distil import StudentArtifact
    from edgerec.teacher.artifacts import TeacherInfo as TeacherDirInfo

log = logging.getLogger(__name__)

#: run-dependent metrics left out of the manifest copy embedded in each artifact
LATENCY_KEYS = ("latency_ms_p50", "latency_ms_p90")
#: metrics of each artifact's row in the report
REPORT_METRICS = ("NDCG@10", "HR@10", "MRR@10", "max_abs_err", "top10_overlap", "latency_ms_p50")

HEAD_DOC = (
    "Trainable head for federated updates: scores = LN(gelu(h @ head_dense_kernel + "
    "head_dense_bias); head_norm_gamma, head_norm_beta, eps 1e-6) @ E^T + output_bias, "
    "column j = item index j (0 = pad, n+1 = [MASK]; artifacts output columns 1..n). "
    "h is the encoder's hidden state of the last ([MASK]) position, E the item table "
    "inside the artifacts. output_bias enters the scores additively, so a device can "
    "apply an updated bias as scores + (new_bias - output_bias)[1:n+1] without touching "
    "the model; the dense/LN parameters need h, which schema-1 artifacts do not output."
)


def head_arrays(model: Any) -> dict[str, np.ndarray]:
    """The student's trainable head parameters (float32)."""
    return {
        "head_dense_kernel": model.head_dense.kernel.numpy().astype(np.float32),
        "head_dense_bias": model.head_dense.bias.numpy().astype(np.float32),
        "head_norm_gamma": model.head_norm.gamma.numpy().astype(np.float32),
        "head_norm_beta": model.head_norm.beta.numpy().astype(np.float32),
        "output_bias": model.output_bias.numpy().astype(np.float32),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def embed_manifest(path: Path, fmt: str, payload: dict[str, Any], out_path: Path) -> Path:
    """Copy an artifact to ``out_path`` with ``payload`` (JSON) embedded as metadata.

    TFLite: a ``edgerec_manifest`` metadata entry; ONNX: a ``metadata_props`` entry.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    if fmt == "tflite":
        out_path.write_bytes(embed_metadata(path, MANIFEST_METADATA, text.encode()))
    else:
        import onnx

        model = onnx.load(str(path))
        props = [p for p in model.metadata_props if p.key != MANIFEST_METADATA]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST_METADATA, text
        onnx.save(model, str(out_path))
    return out_path


def write_bundle(
    out_dir: Path,
    force: bool,
    manifest: BundleManifest,
    artifacts: list[tuple[dict[str, Any], Path, dict[str, Path]]],
    files: dict[str, bytes | Path],
    sign_key: Any = None,
) -> Path:
    """Publish a bundle atomically (signed first when ``sign_key`` is given).

    Args:
        manifest: the manifest (the writer adds ``schema_version``, ``artifacts``
            and ``files``).
        artifacts: ``(entry, file, extra files)`` per artifact; ``entry`` is an
            :class:`~edgerec.bundle.ArtifactEntry` dict without sha256/bytes.
        files: other bundle files, relative path -> bytes or a source path.
        sign_key: Ed25519 private key; its signature of the finished manifest is
            written into the bundle before the rename, so the bundle appears
            complete and signed at once.
    """
    with BundleWriter(out_dir, force=force) as writer:
        for rel, src in files.items():
            if isinstance(src, bytes):
                writer.add_bytes(rel, src)
            else:
                writer.add_file(rel, src)
        for entry, path, extra in artifacts:
            for rel, src in extra.items():
                if rel not in writer.files:
                    writer.add_file(rel, src)
            writer.add_artifact(entry, path)
        return writer.finish(manifest, before_publish=_signer(sign_key))


def _signer(sign_key: Any) -> Callable[[Path], None] | None:
    """The pre-publish hook that signs the finished bundle, or None."""
    if sign_key is None:
        return None

    def sign(tmp_dir: Path) -> None:
        from edgerec.runtime.signing import sign_bundle

        sig = sign_bundle(tmp_dir, sign_key)
        log.info("bundle manifest signed by key %s", sig.keyid)

    return sign


@dataclass(frozen=True)
class PackageOptions:
    """Where and how the bundle is published."""

    out_dir: Path
    force: bool
    work_dir: Path  # scratch space for the embedded artifacts and the report
    threads: int = 1  # interpreter threads of the metadata round-trip check
    sign_key: Any = None  # Ed25519 private key: sign an accepted bundle before publishing


@dataclass(frozen=True)
class PackageInput:
    """Everything the earlier passes produced that the bundle records."""

    config: ConvertConfig
    split: LeaveOneOutSplit
    data_name: str
    teacher_dir: Path
    teacher: TeacherDirInfo
    student: StudentArtifact
    artifacts: list[ModelArtifact]
    reports: list[ArtifactReport]
    validation: ValidationOptions
    quality: dict[str, Any]
    failures: list[Check]
    warnings: list[Check]
    status: str
    default_artifact: str | None
    fallback_artifact: str | None
    timings: dict[str, float]


def content_version(*parts: bytes) -> str:
    """Short sha256 over the parts: the model version of a bundle."""
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p)
    return digest.hexdigest()[:12]


def identity(data: PackageInput, status: str) -> BundleIdentity:
    """What the bundle is: model, teacher, data, vocabulary, recipe."""
    from edgerec.converters.passes.distil import encoder_params

    cfg, student, info = data.config, data.student, data.teacher
    vocab = data.split.vocab
    recipe = Recipe(cfg.to_json(), cfg.distil.seed)
    fp32 = next(
        (a for a in data.artifacts if a.name == data.fallback_artifact and not a.error), None
    )
    version = content_version(
        json.dumps(recipe.to_json(), sort_keys=True).encode(),
        info.fingerprint.encode(),
        vocab.sha256().encode(),
        fp32.path.read_bytes() if fp32 else b"",
    )
    return BundleIdentity(
        status=status,
        edgerec_version=__version__,
        model=ModelInfo(
            id=f"{data.data_name}-bert4rec-student",
            version=version,
            architecture="bert4rec",
            config={k: getattr(student.config, k) for k in student.config.__dataclass_fields__},
            num_params=student.num_params,
            distillation=DistillationInfo(
                alpha=cfg.distil.alpha,
                temperature=cfg.distil.temperature,
                best_epoch=student.best_epoch,
                epochs_run=len(student.history),
                valid=student.best_valid,
            ),
        ),
        teacher=TeacherInfo(
            fingerprint=info.fingerprint,
            path=str(data.teacher_dir),
            config=info.config.to_json(),
            num_params=info.num_params  # a teacher.toml teacher states its own
            if hasattr(info, "num_params")
            else encoder_params(info.config.model, vocab.num_items),
            metrics=data.quality.get("teacher"),
            allow_weak_teacher=bool(data.quality.get("allow_weak_teacher", False)),
            contract=getattr(info, "contract", None),
        ),
        dataset=DatasetInfo(
            name=data.data_name,
            num_users=len(data.split.train),
            num_items=vocab.num_items,
            num_interactions=int(data.split.dataset.num_interactions),
        ),
        vocab=VocabInfo(
            path="vocab.json",
            sha256=vocab.sha256(),
            num_items=vocab.num_items,
            pad_id=0,
            mask_id=vocab.mask_id,
            reserved="0 = padding, 1..n = items in vocabulary order, n+1 = [MASK]; "
            "model output column j = item index j + 1",
        ),
        feature_spec=student.spec.to_json(),
        recipe=recipe,
        default_artifact=data.default_artifact,
        fallback_artifact=data.fallback_artifact,
    )


def _artifact_entry(a: ModelArtifact, r: ArtifactReport, experimental: bool) -> dict[str, Any]:
    """The manifest entry of an artifact, without its sha256/bytes (the writer adds them)."""
    return {
        "name": a.name,
        "path": a.filename,
        "format": str(a.format),
        "precision": str(a.precision),
        "inputs": a.inputs,
        "outputs": a.outputs,
        "roles": a.roles,
        "gpu": a.gpu,
        "metrics": dict(r.metrics),
        "experimental": experimental,
        "gate_passed": r.passed,
        "reference_output": f"reference/{a.name}.npy" if r.reference_outputs is not None else None,
        "files": sorted(a.extra_files),
        "notes": a.notes,
    }


def _report_row(a: ModelArtifact, r: ArtifactReport, shipped: int | None) -> dict[str, Any]:
    return {
        "name": a.name,
        "format": str(a.format),
        "precision": str(a.precision),
        "roles": a.roles,
        "bytes": shipped,
        **{k: r.metrics.get(k) for k in REPORT_METRICS},
        "gpu_ready": bool((a.gpu or {}).get("ready")),
        "gpu": a.gpu,
        "gate": "pass" if r.passed else ("fail (experimental)" if r.experimental else "FAIL"),
        "experimental": r.experimental,
        "seconds": round(a.seconds, 2),
        "notes": a.notes,
        "error": a.error,
    }


def run(data: PackageInput, options: PackageOptions) -> dict[str, Any]:
    """Embed the manifest in each artifact, write reference data and the report,
    and publish the bundle atomically. Returns the summary (``report.json``).

    A failed metadata round-trip (an artifact whose outputs change once the
    manifest is embedded) is added to ``data.failures`` and rejects the bundle.
    """
    from edgerec.baselines import MostPopular
    from edgerec.converters import report
    from edgerec.converters.passes import validate

    cfg, split, student = data.config, data.split, data.student
    vocab = split.vocab
    by_name = {r.name: r for r in data.reports}
    status = data.status
    ident = identity(data, status)
    embedded = ident.to_json()
    failures = data.failures
    opts = data.validation
    entries = []
    shipped: dict[str, int] = {}
    embed_checks: list[Check] = []
    files: dict[str, bytes | Path] = {}
    ref_rows = opts.parity_rows[: opts.reference_rows]
    files["reference/inputs.npy"] = npy_bytes(ref_rows.astype(np.int32))
    files["reference/student.keras.npy"] = npy_bytes(
        opts.expected[: opts.reference_rows].astype(np.float32)
    )
    published_dir = options.work_dir / "publish"
    published_dir.mkdir()
    for a in data.artifacts:
        r = by_name[a.name]
        if a.error or not a.path.is_file():
            continue
        gate = cfg.gates.gate_for(str(a.format), str(a.precision))
        entry = _artifact_entry(a, r, gate.experimental)
        # the embedded copy leaves out run-dependent numbers so that the same
        # inputs and seed can give byte-identical artifacts
        stable = {
            **entry,
            "metrics": {k: v for k, v in entry["metrics"].items() if k not in LATENCY_KEYS},
        }
        target = published_dir / a.filename
        embed_manifest(a.path, str(a.format), {**embedded, "artifact": stable}, target)
        if r.reference_outputs is not None:
            files[entry["reference_output"]] = npy_bytes(r.reference_outputs)
            check = validate.check_embedded(target, a, opts, r.reference_outputs, options.threads)
            log.log(logging.INFO if check.passed else logging.WARNING, "%s", check.line())
            embed_checks.append(check)
            if not check.passed:
                failures.append(check)
        entries.append((entry, target, a.extra_files))
        shipped[a.name] = target.stat().st_size
    if any(not c.passed for c in embed_checks):
        status = STATUS_REJECTED
        ident = replace(ident, status=status)
    popularity = MostPopular(vocab.num_items).fit(split.train).counts.astype(np.int64)
    files["vocab.json"] = json.dumps(vocab.to_json()).encode()
    files["popularity.npy"] = npy_bytes(popularity)
    head = head_arrays(student.model)
    files["head.npz"] = npz_bytes(head)

    manifest = BundleManifest(
        identity=ident,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        gpu_artifact=next(
            (a.name for a in data.artifacts if "gpu" in a.roles and not a.error), None
        ),
        popularity=PopularityInfo(
            path="popularity.npy",
            dtype="int64",
            description="training-split interaction count per item (column j = item "
            "index j + 1): the runtime's empty-history fallback ranking",
        ),
        head=HeadInfo(
            path="head.npz",
            version=0,
            base_model_version=ident.model.version,
            params={k: list(v.shape) for k, v in head.items()},
            description=HEAD_DOC,
        ),
        reference=ReferenceInfo(
            inputs="reference/inputs.npy",
            student="reference/student.keras.npy",
            rows=int(len(ref_rows)),
            description="encoded rows of held-out users; each artifact's own outputs "
            "are in its reference_output (compare a device run against them)",
        ),
        quality=data.quality,
        gates=GatesInfo(
            passed=status == STATUS_ACCEPTED,
            failures=[c.line() for c in failures],
            warnings=[c.line() for c in data.warnings],
            config=cfg.gates.to_json(),
        ),
    )
    summary = {
        **manifest.to_json(),
        "out_dir": str(options.out_dir),
        "artifacts": [_report_row(a, by_name[a.name], shipped.get(a.name)) for a in data.artifacts],
        "checks": {r.name: [c.to_json() for c in r.checks] for r in data.reports},
        "metadata_checks": [c.to_json() for c in embed_checks],
        "distillation_history": student.history,
        "timings": dict(data.timings),
    }
    report_dir = options.work_dir / "report"
    report_dir.mkdir()
    for rel, path in report.write(summary, report_dir).items():
        files[rel] = path
    sign_key = options.sign_key if status == STATUS_ACCEPTED else None
    if options.sign_key is not None and sign_key is None:
        log.warning("bundle %s is rejected: published unsigned", options.out_dir)
    write_bundle(options.out_dir, options.force, manifest, entries, files, sign_key)
    summary["signed_by"] = _key_id(sign_key)
    return summary


def _key_id(sign_key: Any) -> str | None:
    if sign_key is None:
        return None
    from edgerec.runtime.signing import key_id

    return key_id(sign_key.public_key())
