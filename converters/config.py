"""Typed configuration of ``edgerec convert``, loaded from TOML.

Defaults live in ``default.toml`` beside this module (documented there); a user
file overrides any subset of keys and CLI flags override both. Unknown keys and
unknown precision/target names are errors (:class:`~edgerec.errors.InputError`,
exit 2), never ignored; loading is :mod:`edgerec.config`'s. The student is a
:class:`~edgerec.teacher.config.ModelConfig` with :data:`STUDENT_DEFAULTS`. This
module is TensorFlow-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from edgerec.bundle import Format, Precision
from edgerec.config import Source, TomlConfig, build, parse_with, scalar, toml_key
from edgerec.errors import InputError
from edgerec.teacher.config import ModelConfig, validate_cloze

#: an artifact's file format is what the converter calls its target
Target = Format


#: precisions each target can produce (full int8 is TFLite only)
SUPPORTED = {
    Target.TFLITE: (Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8),
    Target.ONNX: (Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC),
}


def parse_precision(name: str, where: str = "precision") -> Precision:
    try:
        return Precision(str(name).strip().lower())
    except ValueError:
        known = ", ".join(p.value for p in Precision)
        raise InputError(f"{where}: unknown precision {name!r} (known: {known})") from None


def parse_target(name: str, where: str = "target") -> Target:
    try:
        return Target(str(name).strip().lower())
    except ValueError:
        known = ", ".join(t.value for t in Target)
        raise InputError(f"{where}: unknown target {name!r} (known: {known})") from None


#: the student's architecture unless the ``[student]`` table says otherwise; ``max_len``
#: None takes the teacher's length, and the finite mask value keeps full int8 working
STUDENT_DEFAULTS = ModelConfig(
    max_len=None,
    d_model=64,
    num_blocks=2,
    num_heads=2,
    ffn_dim=256,
    dropout=0.2,
    attention_dropout=0.2,
    mask_value=-16.0,
    gelu_approximate=True,
)


def student_config(**overrides: Any) -> ModelConfig:
    """:data:`STUDENT_DEFAULTS` with some fields replaced."""
    return replace(STUDENT_DEFAULTS, **overrides)


def validate_student(student: ModelConfig) -> None:
    """The model rules plus what a converter-friendly student needs."""
    student.validate("student")
    if not -1e4 <= student.mask_value < 0:
        raise InputError(
            f"student.mask_value must be a finite negative logit, about -16 "
            f"(got {student.mask_value}); -1e9 breaks full-int8 quantization"
        )
    if not student.gelu_approximate:
        raise InputError(
            "student.gelu_approximate must be true: the student uses tanh GELU, the form "
            "every target converts without rewriting"
        )


@dataclass(frozen=True)
class DistilConfig:
    """Knowledge distillation: soft teacher targets plus ground truth, Cloze inputs."""

    temperature: float = 2.0
    alpha: float = 0.5
    epochs: int = 60
    patience: int = 15
    batch_size: int = 256
    learning_rate: float = 2e-3
    mask_prob: float = 0.2
    last_item_mask_prob: float = 0.5
    windows_per_length: float = 1.0
    seed: int = 42
    # 0: KL and CE over the full catalog. K > 0 (large catalogs): both over the teacher's
    # top ``teacher_top_k`` items, the target and K shared negatives drawn from the
    # training counts ** negative_distortion, importance-weighted (log-Q corrected).
    sampled_negatives: int = 0
    teacher_top_k: int = 32
    negative_distortion: float = 0.75
    # start the student's item table from the teacher's (SVD projection to d_model) and
    # copy its output biases; the encoder starts from scratch either way
    init_from_teacher: bool = False
    # validate, keep and export an exponential moving average of the student's weights
    # (0 = off): smooths the epoch-to-epoch noise the best-epoch choice would pick up
    ema_momentum: float = 0.0

    def validate(self) -> None:
        validate_cloze(self, "distil")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise InputError(f"distil.ema_momentum must be in [0, 1) (got {self.ema_momentum})")
        if self.teacher_top_k < 1:
            raise InputError(f"distil.teacher_top_k must be >= 1 (got {self.teacher_top_k})")
        if self.temperature <= 0:
            raise InputError(f"distil.temperature must be > 0 (got {self.temperature})")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"distil.alpha must be in [0, 1] (got {self.alpha})")


def _parse_targets(value: Any, current: Any, source: Source, path: tuple[str, ...]) -> Any:
    return parse_targets(_names(value, source, path), source.where(path))


def _parse_precisions(value: Any, current: Any, source: Source, path: tuple[str, ...]) -> Any:
    return parse_precisions(_names(value, source, path), source.where(path))


def _names(value: Any, source: Source, path: tuple[str, ...]) -> str | list[str]:
    if not isinstance(value, str | list | tuple):
        raise InputError(f"{source.where(path)} must be a list (got {value!r})")
    return value if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class ExportConfig:
    """Which artifacts to build and how."""

    targets: tuple[Target, ...] = field(
        default=(Target.TFLITE, Target.ONNX), metadata=parse_with(_parse_targets)
    )
    precisions: tuple[Precision, ...] = field(
        default=(Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8),
        metadata=parse_with(_parse_precisions),
    )
    gpu: bool = True
    onnx_opset: int = 17
    calibration_samples: int = 300
    int8_per_channel: bool = False

    def validate(self) -> None:
        if not self.targets:
            raise InputError("export.targets must name at least one target (tflite, onnx)")
        if not self.precisions:
            raise InputError("export.precisions must name at least one precision")
        if self.onnx_opset < 17:
            raise InputError(f"export.onnx_opset must be >= 17 (got {self.onnx_opset})")
        if self.calibration_samples < 1:
            raise InputError("export.calibration_samples must be >= 1")

    @property
    def all_precisions(self) -> tuple[Precision, ...]:
        """The requested precisions plus fp32, which is always built (cpu-fallback)."""
        out = [Precision.FP32] + [p for p in self.precisions if p is not Precision.FP32]
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class ValidateConfig:
    """How artifacts are validated in their real interpreters."""

    num_sequences: int = 200
    latency_runs: int = 200
    reference_rows: int = 8
    max_eval_users: int = 0
    exclude_mode: str = "none"
    bootstrap_resamples: int = 2000
    threads: int = 1

    def validate(self) -> None:
        if self.num_sequences < 1 or self.latency_runs < 1 or self.reference_rows < 1:
            raise InputError("validate.num_sequences, latency_runs and reference_rows must be >= 1")
        if self.max_eval_users < 0 or self.bootstrap_resamples < 1 or self.threads < 1:
            raise InputError("validate.max_eval_users >= 0, bootstrap_resamples/threads >= 1")
        if self.exclude_mode not in ("none", "input", "history"):
            raise InputError(
                f"validate.exclude_mode must be none, input or history (got {self.exclude_mode!r})"
            )


@dataclass(frozen=True)
class Gate:
    """Parity gate of one artifact: maximum degradation against the Keras student."""

    max_abs_err: float | None = None
    min_overlap: float | None = None
    experimental: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_GATES = {
    "fp32": Gate(1e-4, 1.0),
    "fp16": Gate(1e-2, 0.995),
    "int8-dynamic": Gate(None, 0.95),
    "int8": Gate(None, 0.90, experimental=True),
}


@dataclass(frozen=True)
class GateConfig:
    """Parity gates per precision (and per ``format/precision``) plus the quality gate."""

    gates: dict[str, Gate] = field(default_factory=lambda: dict(DEFAULT_GATES))
    quality_min_ratio: float = 0.97
    min_size_ratio: float = 0.5
    max_size_ratio: float = 1.6

    def gate_for(self, fmt: str, precision: str) -> Gate:
        """The gate of an artifact: ``format/precision`` override, else the precision's."""
        key = f"{fmt}/{precision}"
        if key in self.gates:
            return self.gates[key]
        return self.gates.get(str(precision), Gate())

    def validate(self) -> None:
        for key, gate in self.gates.items():
            if gate.max_abs_err is not None and gate.max_abs_err < 0:
                raise InputError(f"gates.{key}.max_abs_err must be >= 0")
            if gate.min_overlap is not None and not 0.0 <= gate.min_overlap <= 1.0:
                raise InputError(f"gates.{key}.min_overlap must be in [0, 1]")
        if self.quality_min_ratio < 0:
            raise InputError("gates.quality_min_ratio must be >= 0")
        if not 0 <= self.min_size_ratio <= self.max_size_ratio:
            raise InputError("gates: need 0 <= min_size_ratio <= max_size_ratio")

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: g.to_json() for k, g in self.gates.items()},
            "quality_min_ratio": self.quality_min_ratio,
            "min_size_ratio": self.min_size_ratio,
            "max_size_ratio": self.max_size_ratio,
        }


def _parse_gates(
    data: Any, current: GateConfig, source: Source, path: tuple[str, ...]
) -> GateConfig:
    """The ``[gates]`` table: scalar settings plus one ``Gate`` table per (format/)precision.

    A gate named in ``data`` replaces the current one as a whole (unset keys are None).
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{source.where(path)} must be a table (got {data!r})")
    scalars = {f.name for f in fields(GateConfig) if f.name != "gates"}
    gates = dict(current.gates)
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = path + (key,)
        if key in scalars:
            values[key] = scalar(float, value, source.where(where))
            continue
        fmt, _, prec = key.rpartition("/")
        parse_precision(prec, source.where(where))
        if fmt:
            parse_target(fmt, source.where(where))
        if not isinstance(value, Mapping):
            raise InputError(f"{source.where(where)} must be a table like {{ min_overlap = 0.95 }}")
        gates[key] = build(Gate, value, source, None, where)
    return replace(current, gates=gates, **values)


@dataclass(frozen=True)
class ConvertConfig(TomlConfig):
    """Full configuration: tables ``student``, ``distil``, ``export``, ``validate``, ``gates``.

    :meth:`defaults` reads ``default.toml``, :meth:`from_toml` a user file over it.
    """

    defaults_package: ClassVar[str] = "edgerec.converters"

    student: ModelConfig = field(default_factory=lambda: STUDENT_DEFAULTS)
    distil: DistilConfig = field(default_factory=DistilConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    validation: ValidateConfig = field(
        default_factory=ValidateConfig, metadata=toml_key("validate")
    )
    gates: GateConfig = field(default_factory=GateConfig, metadata=parse_with(_parse_gates))

    def validate(self) -> ConvertConfig:
        """Validate every table; returns self."""
        validate_student(self.student)
        self.distil.validate()
        self.export.validate()
        self.validation.validate()
        self.gates.validate()
        return self

    def to_json(self) -> dict[str, Any]:
        export = asdict(self.export)
        export["targets"] = [str(t) for t in self.export.targets]
        export["precisions"] = [str(p) for p in self.export.precisions]
        return {
            "student": asdict(self.student),
            "distil": asdict(self.distil),
            "export": export,
            "validate": asdict(self.validation),
            "gates": self.gates.to_json(),
        }

    def with_overrides(
        self,
        *,
        seed: int | None = None,
        epochs: int | None = None,
        alpha: float | None = None,
        temperature: float | None = None,
        sampled_negatives: int | None = None,
        targets: str | list[str] | None = None,
        precisions: str | list[str] | None = None,
        gpu: bool | None = None,
        max_len: int | None = None,
        d_model: int | None = None,
        num_sequences: int | None = None,
        max_eval_users: int | None = None,
    ) -> ConvertConfig:
        """A copy with CLI-style overrides applied (None values are ignored)."""
        distil = _replace_some(
            self.distil,
            seed=seed,
            epochs=epochs,
            alpha=alpha,
            temperature=temperature,
            sampled_negatives=sampled_negatives,
        )
        student = _replace_some(self.student, max_len=max_len, d_model=d_model)
        export = _replace_some(self.export, gpu=gpu)
        if targets is not None:
            export = replace(export, targets=parse_targets(targets, "--targets"))
        if precisions is not None:
            export = replace(export, precisions=parse_precisions(precisions, "--precisions"))
        validation = _replace_some(
            self.validation, num_sequences=num_sequences, max_eval_users=max_eval_users
        )
        return replace(
            self, distil=distil, student=student, export=export, validation=validation
        ).validate()


def parse_targets(value: str | list[str] | tuple[str, ...], where: str) -> tuple[Target, ...]:
    names = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(parse_target(n, where) for n in names if str(n).strip()))
    if not out:
        raise InputError(f"{where}: name at least one target (tflite, onnx)")
    return out


def parse_precisions(value: str | list[str] | tuple[str, ...], where: str) -> tuple[Precision, ...]:
    names = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(parse_precision(n, where) for n in names if str(n).strip()))
    if not out:
        raise InputError(f"{where}: name at least one precision")
    return out


def _replace_some(obj: Any, **values: Any) -> Any:
    return replace(obj, **{k: v for k, v in values.items() if v is not None})
