"""``convert()``: the release pipeline, one small pass after another.

::

    prepare (checks, TF-free) -> teacher gate -> distil -> savedmodel -> export (TFLite / ONNX per
    precision, GPU variant, roles) -> validate (the runtime's backends) ->
    quality -> gates -> package (embedded manifest, atomic bundle, report)

The passes live in :mod:`edgerec.converters.passes`; this module only checks the
inputs, wires the passes together and decides the bundle's status.

The teacher is a directory written by ``edgerec train`` or a ``teacher.toml``
descriptor (:mod:`edgerec.converters.teachers`, ``docs/teacher-contract.md``): a Keras
file, a SavedModel, an ONNX file or a model server. Such a teacher is checked, gated
against most-popular and asked once for its soft targets (cached per teacher + data)
in the load-teacher step; distillation then reads the cache.

Bad input raises :class:`~edgerec.errors.InputError` (exit 2) before anything is
trained. A failed gate still publishes the bundle, with ``status: rejected`` in
its manifest (``edgerec.bundle.open_bundle`` refuses it), then raises
:class:`~edgerec.converters.passes.validate.GateFailed` (exit 3) carrying the result.
A teacher that does not beat most-popular and the item-transition baseline on
validation (:mod:`edgerec.teacher.gate`) is refused before anything is distilled
(:class:`~edgerec.teacher.gate.WeakTeacherError`, exit 3, no bundle) unless
``allow_weak_teacher``, which the manifest's ``teacher`` section records.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgerec.bundle import STATUS_ACCEPTED, STATUS_REJECTED, check_output_dir
from edgerec.converters.config import ConvertConfig
from edgerec.converters.passes.validate import ArtifactReport, Check, GateFailed, ValidationOptions
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError

if TYPE_CHECKING:
    from edgerec.converters.passes.distil import StudentArtifact
    from edgerec.converters.teachers.contract import TeacherContract
    from edgerec.teacher.artifacts import TeacherInfo
    from edgerec.teacher.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Checked inputs of a conversion (everything :func:`prepare` validated)."""

    teacher_dir: Path  # the teacher directory, or the teacher.toml of any other kind
    teacher_info: TeacherInfo | None  # None for a teacher edgerec did not train
    split: LeaveOneOutSplit
    data_name: str
    config: ConvertConfig
    student_cfg: ModelConfig
    out_dir: Path
    force: bool
    allow_weak_teacher: bool = False
    contract: TeacherContract | None = None  # from --teacher teacher.toml
    teacher_cache: Path | None = None  # soft-target cache directory (None: no cache)

    @property
    def external(self) -> bool:
        """True for a teacher.toml of kind keras / savedmodel / onnx / remote."""
        return self.contract is not None and self.contract.kind != "edgerec"


@dataclass
class ConvertResult:
    """Outcome of :func:`convert`: what was published and how it measured."""

    status: str
    out_dir: Path
    summary: dict[str, Any]
    reports: list[ArtifactReport] = field(default_factory=list)
    failures: list[Check] = field(default_factory=list)
    student: StudentArtifact | None = None  # the Keras student, not serialized
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


def _load_split(
    data: str | Path | LeaveOneOutSplit, load_options: dict[str, Any] | None = None
) -> tuple[LeaveOneOutSplit, str]:
    if isinstance(data, LeaveOneOutSplit):
        return data, data.dataset.name or "dataset"
    from edgerec.data import leave_one_out, load_dataset

    dataset = load_dataset(data, **(load_options or {}))
    return leave_one_out(dataset), dataset.name or str(data)


def teacher_descriptor(teacher: str | Path) -> Path | None:
    """The ``teacher.toml`` that ``--teacher`` names (a file, or a folder holding one
    and no ``teacher.json``), or None for a teacher directory."""
    path = Path(teacher)
    if path.suffix == ".toml":
        if not path.is_file():
            raise InputError(f"{path}: teacher descriptor not found")
        return path
    if path.is_dir() and (path / "teacher.toml").is_file() and not (path / "teacher.json").exists():
        return path / "teacher.toml"
    return None


def _prepare_external(
    contract: TeacherContract,
    descriptor: Path,
    data: str | Path | LeaveOneOutSplit,
    config: ConvertConfig,
    out_dir: Path,
    force: bool,
    teacher_cache: Path | None,
    load_options: dict[str, Any] | None = None,
    allow_weak_teacher: bool = False,
) -> Prepared:
    """:func:`prepare` for a teacher edgerec did not train (its model loads later)."""
    from edgerec.converters.config import validate_student

    if config.distil.init_from_teacher:
        raise InputError(
            f"{descriptor}: distil.init_from_teacher needs edgerec's own teacher (it copies "
            "the item table); set it to false for a teacher of kind " + repr(contract.kind)
        )
    validate_student(config.student)
    max_len = config.student.max_len or contract.input.history_len + 1
    student_cfg = replace(config.student, max_len=max_len)
    split, name = _load_split(data, load_options)
    if len(split.train) < 2:
        raise InputError(f"{name}: needs at least 2 users (got {len(split.train)})")
    return Prepared(
        descriptor,
        None,
        split,
        name,
        config,
        student_cfg,
        out_dir,
        force,
        allow_weak_teacher=allow_weak_teacher,
        contract=contract,
        teacher_cache=teacher_cache,
    )


def prepare(
    teacher: str | Path,
    data: str | Path | LeaveOneOutSplit,
    out: str | Path,
    config: ConvertConfig | None = None,
    force: bool = False,
    load_options: dict[str, Any] | None = None,
    allow_weak_teacher: bool = False,
    teacher_cache: Path | None = None,
) -> Prepared:
    """Every input check, before any training (no TensorFlow import).

    ``load_options`` are :func:`edgerec.data.load_dataset`'s keyword arguments
    (format, column names, filters) for a log file.
    """
    from edgerec.converters.passes.distil import resolve_student
    from edgerec.converters.teachers.contract import load_contract
    from edgerec.teacher.artifacts import read_teacher_info

    config = (config or ConvertConfig.defaults()).validate()
    out_dir = Path(out)
    check_output_dir(out_dir, force)
    contract = None
    descriptor = teacher_descriptor(teacher)
    if descriptor is not None:
        contract = load_contract(descriptor)
        if contract.kind != "edgerec":
            return _prepare_external(
                contract,
                descriptor,
                data,
                config,
                out_dir,
                force,
                teacher_cache,
                load_options=load_options,
                allow_weak_teacher=allow_weak_teacher,
            )
        teacher = contract.model_path
    info = read_teacher_info(teacher)
    split, name = _load_split(data, load_options)
    if split.vocab.sha256() != info.vocab.sha256():
        raise InputError(
            f"{teacher}: the teacher's vocabulary ({info.vocab.num_items} items, sha256 "
            f"{info.vocab.sha256()[:12]}) does not match the data {name!r} "
            f"({split.vocab.num_items} items, sha256 {split.vocab.sha256()[:12]}); convert "
            "with the dataset the teacher was trained on"
        )
    student_cfg = resolve_student(config.student, info.config.model)
    negatives = config.distil.sampled_negatives
    if negatives and negatives >= split.vocab.num_items:
        # checked here too so that it is an input error before the teacher gate runs
        raise InputError(
            f"distil.sampled_negatives ({negatives}) must be smaller than the catalog "
            f"({split.vocab.num_items} items); use 0 for the full softmax"
        )
    if len(split.train) < 2:
        raise InputError(f"{name}: needs at least 2 users (got {len(split.train)})")
    return Prepared(
        Path(teacher),
        info,
        split,
        name,
        config,
        student_cfg,
        out_dir,
        force,
        allow_weak_teacher=allow_weak_teacher,
        contract=contract,
    )


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
    sign_key: Any = None,
    load_options: dict[str, Any] | None = None,
    allow_weak_teacher: bool = False,
    teacher_cache: Path | None | bool = True,
) -> ConvertResult:
    """Distil, export, quantize, validate, gate and bundle.

    Args:
        teacher: teacher directory written by ``edgerec train``, or a ``teacher.toml``
            (``docs/teacher-contract.md``).
        data: dataset name (``movielens-100k``), log file, or a ready
            :class:`LeaveOneOutSplit` (tests); its vocabulary must be the teacher's.
        out: bundle directory to publish (atomically).
        config: :class:`ConvertConfig` (default: ``default.toml``).
        force: replace an existing bundle / non-empty directory at ``out``.
        progress: tqdm progress bars.
        raise_on_gate: raise :class:`GateFailed` (exit 3) after publishing a
            rejected bundle; otherwise return the result with ``status = rejected``.
        keep_work: copy the work directory (SavedModels, raw artifacts) there.
        sign_key: an Ed25519 private key (``edgerec.runtime.signing.load_private_key``)
            that signs the manifest of an accepted bundle before it is published.
        load_options: format / column options for a log file (see :func:`prepare`).
        allow_weak_teacher: distil a teacher that fails the teacher gate anyway
            (recorded in the manifest); otherwise it raises
            :class:`~edgerec.teacher.gate.WeakTeacherError` (exit 3).
        teacher_cache: soft-target cache directory of a ``teacher.toml`` teacher
            (True: the default under ``~/.cache/edgerec``; False/None: no cache).

    Returns:
        :class:`ConvertResult` (``summary`` is what ``--json`` prints).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed(timings, "prepare"):
        prepared = prepare(
            teacher,
            data,
            out,
            config,
            force,
            load_options=load_options,
            allow_weak_teacher=allow_weak_teacher,
            teacher_cache=_cache_dir(teacher_cache),
        )
    with tempfile.TemporaryDirectory(prefix="edgerec-convert-") as tmp:
        work = Path(tmp)
        result = _convert(prepared, work, timings, progress, sign_key)
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


def _cache_dir(teacher_cache: Path | None | bool) -> Path | None:
    if teacher_cache is True:
        from edgerec.converters.teachers.soft_targets import default_cache_dir

        return default_cache_dir()
    return Path(teacher_cache) if teacher_cache else None


def _load_external(prepared: Prepared, progress: bool) -> Any:
    """The load-teacher step of a teacher.toml: checks, gate, cached soft targets."""
    from edgerec.converters.teachers.external import prepare_external

    assert prepared.contract is not None
    cfg = prepared.config
    return prepare_external(
        prepared.contract,
        prepared.teacher_dir,
        prepared.split,
        cache_dir=prepared.teacher_cache,
        top_k=max(128, cfg.distil.teacher_top_k),
        seed=cfg.distil.seed,
        progress=progress,
        allow_weak_teacher=prepared.allow_weak_teacher,
    )


def _convert(
    prepared: Prepared,
    work: Path,
    timings: dict[str, float],
    progress: bool,
    sign_key: Any = None,
) -> ConvertResult:
    from edgerec.converters import rows
    from edgerec.converters.passes import distil, export, package, quality, savedmodel, validate
    from edgerec.teacher.artifacts import load_teacher

    cfg = prepared.config
    split = prepared.split
    seed = cfg.distil.seed
    external = None
    gate: Any = None  # edgerec's own teacher: the baseline gate; a teacher.toml: its own
    suite: Any = None
    with _timed(timings, "load teacher"):
        if prepared.external:
            external = _load_external(prepared, progress)
            info: Any = external.info
            suite = external.baselines
            teacher_model = external.distil_teacher(split, prepared.student_cfg.max_len)
        else:
            info, teacher_model = load_teacher(prepared.teacher_dir)
            if prepared.contract is not None:
                info.contract = {"kind": "edgerec", "contract": prepared.contract.to_json()}
    if not prepared.external:  # a teacher.toml teacher is gated in its own load step
        with _timed(timings, "teacher gate"):
            from edgerec.teacher.baselines import fit_baselines
            from edgerec.teacher.gate import enforce, gate_scorer
            from edgerec.teacher.scoring import KerasScorer

            suite = fit_baselines(split)
            gate, _ = gate_scorer(KerasScorer(teacher_model, info.feature_spec), split, suite)
            enforce(gate, prepared.allow_weak_teacher, "edgerec convert")
    with _timed(timings, "distil"):
        student = distil.run(
            split,
            distil.DistilOptions(prepared.student_cfg, cfg.distil, progress=progress),
            teacher=teacher_model if cfg.distil.alpha > 0 else None,
        )
    spec = student.spec
    with _timed(timings, "export savedmodel"):
        saved = savedmodel.run(student, savedmodel.ExportOptions(work / "saved_model"))
    calibration, parity_rows, parity_users = rows.select_rows(split, spec, cfg, seed)
    with _timed(timings, "convert"):
        exported = export.run(
            student, saved, calibration, export.ExportAllOptions(cfg.export, work, progress)
        )
    artifacts = exported.artifacts
    default_name, fallback_name = exported.default_artifact, exported.fallback_artifact

    with _timed(timings, "validate"):
        from edgerec.teacher.scoring import KerasScorer

        expected = KerasScorer(student.model, spec).score_rows(parity_rows)
        histories, targets = rows.eval_set(split, cfg)
        mode = cfg.validation.exclude_mode
        options = ValidationOptions(
            parity_rows=parity_rows,
            expected=expected,
            eval_rows=spec.encode_batch(histories),
            eval_targets=targets,
            eval_exclude=rows.exclusions(histories, mode, spec.history_len),
            latency_runs=cfg.validation.latency_runs,
            threads=cfg.validation.threads,
            reference_rows=min(cfg.validation.reference_rows, len(parity_rows)),
        )
        reports = validate.run(artifacts, options, cfg.gates, progress=progress)
        if external is not None:
            from edgerec.converters.teachers.external import teacher_quality

            teacher_metrics, teacher_ndcg = teacher_quality(
                external.scorer, histories, targets, mode, spec.history_len, spec.num_items
            )
        else:
            teacher_metrics, teacher_ndcg = quality.keras_quality(
                teacher_model, info.feature_spec, histories, targets, mode
            )
        student_metrics, _ = quality.keras_quality(student.model, spec, histories, targets, mode)

    quality_report, quality_check = quality.run(
        quality.QualityInput(reports, default_name, teacher_metrics, teacher_ndcg, student_metrics),
        quality.QualityOptions(
            min_ratio=cfg.gates.quality_min_ratio,
            bootstrap_resamples=cfg.validation.bootstrap_resamples,
            seed=cfg.distil.seed,
            exclude_mode=mode,
            num_items=spec.num_items,
            window=spec.history_len,
        ),
    )
    teacher_gate = gate if gate is not None else getattr(external, "gate", None)
    if teacher_gate is not None:
        quality_report["teacher_gate"] = {
            **teacher_gate.to_json(),
            "allow_weak_teacher": prepared.allow_weak_teacher,
        }
    quality_report["allow_weak_teacher"] = prepared.allow_weak_teacher
    if suite is not None:
        quality_report["baselines"] = _baseline_rows(
            suite,
            histories,
            targets,
            mode,
            (spec if external is not None else info.feature_spec).history_len,
            spec.num_items,
            teacher_ndcg,
            cfg,
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
        summary = package.run(
            package.PackageInput(
                config=cfg,
                split=split,
                data_name=prepared.data_name,
                teacher_dir=prepared.teacher_dir,
                teacher=info,
                student=student,
                artifacts=artifacts,
                reports=reports,
                validation=options,
                quality=quality_report,
                failures=failures,
                warnings=warnings,
                status=status,
                default_artifact=default_name,
                fallback_artifact=fallback_name,
                timings=timings,
            ),
            package.PackageOptions(
                prepared.out_dir, prepared.force, work, cfg.validation.threads, sign_key
            ),
        )
    if external is not None:
        cache = {**external.cache, "model_calls": external.scorer.model_calls}
        summary["teacher"] = {**external.info.contract, "soft_targets": cache}
    status = summary["status"]
    level = logging.INFO if status == STATUS_ACCEPTED else logging.WARNING
    log.log(level, "bundle %s published to %s", status.upper(), prepared.out_dir)
    return ConvertResult(status, prepared.out_dir, summary, reports, failures, student, split)


def _baseline_rows(
    suite: Any,
    histories: list,
    targets: Any,
    mode: str,
    window: int,
    num_items: int,
    teacher_ndcg: Any,
    cfg: ConvertConfig,
) -> dict[str, Any]:
    """Test metrics of the tuned baselines on the quality users, with teacher − baseline CIs.

    ``window`` is the teacher's input window (``"input"`` exclusion removes the same
    items for the baselines as for the teacher).
    """
    from edgerec.baselines import rows_per_batch
    from edgerec.metrics import evaluate, paired_bootstrap

    out: dict[str, Any] = {"params": suite.params(), "models": {}}
    for name, score_fn in suite.test_models.items():
        result = evaluate(
            score_fn,
            histories,
            targets,
            ks=(10,),
            exclude_mode=mode,
            window=window if mode == "input" else None,
            batch_size=rows_per_batch(num_items),
        )
        boot = paired_bootstrap(
            teacher_ndcg,
            result.per_user(10)["NDCG@10"],
            n_resamples=cfg.validation.bootstrap_resamples,
            seed=cfg.distil.seed,
        )
        out["models"][name] = {
            "metrics": result.metrics,
            "bootstrap_ndcg_teacher_minus_baseline": boot.to_json(),
        }
    return out
