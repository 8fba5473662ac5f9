"""Teacher hyper-parameters: typed dataclasses loaded from TOML.

Defaults live in ``default.toml`` beside this module (documented there); a user
file overrides any subset of keys. Loading (typed keys, unknown keys as errors) is
:mod:`edgerec.config`'s. :class:`ModelConfig` also describes the converter's student,
with the student's defaults (:data:`edgerec.converters.config.STUDENT_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from edgerec.config import TomlConfig
from edgerec.errors import InputError

#: teacher architectures: bidirectional Cloze (BERT4Rec) or causal next-item (SASRec)
MODEL_KINDS = ("bert4rec", "sasrec")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a BERT4Rec encoder (teacher or student).

    ``max_len`` None is only meaningful for a student: it then takes the teacher's.
    ``kind`` picks the teacher's architecture (see :mod:`edgerec.teacher.model`); the
    converter's student is always BERT4Rec-form.
    """

    max_len: int | None = 50
    d_model: int = 192
    num_blocks: int = 2
    num_heads: int = 4
    ffn_dim: int = 768
    dropout: float = 0.2
    attention_dropout: float = 0.2
    mask_value: float = -1e9
    gelu_approximate: bool = True
    kind: str = "bert4rec"

    def validate(self, table: str = "model") -> None:
        """Raise :class:`InputError` for impossible settings (named ``table.key``)."""
        if self.kind not in MODEL_KINDS:
            raise InputError(
                f"{table}.kind must be one of {', '.join(MODEL_KINDS)} (got {self.kind!r})"
            )
        if self.max_len is not None and self.max_len < 2:
            raise InputError(f"{table}.max_len must be at least 2 (got {self.max_len})")
        for name in ("d_model", "num_blocks", "num_heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"{table}.{name} must be positive (got {getattr(self, name)})")
        if self.d_model % self.num_heads:
            raise InputError(
                f"{table}.d_model ({self.d_model}) must be divisible by "
                f"{table}.num_heads ({self.num_heads})"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"{table}.{name} must be in [0, 1)")
        if self.mask_value >= 0:
            raise InputError(f"{table}.mask_value must be negative")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of the Cloze training loop."""

    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    mask_prob: float = 0.2
    last_item_mask_prob: float = 0.1
    windows_per_length: float = 1.0
    patience: int = 16
    lr_decay_patience: int = 4
    lr_decay_factor: float = 1.0
    min_learning_rate: float = 1e-5
    # 0.0 here (default.toml turns it on): a recorded teacher.json from before weight
    # averaging existed then still reads back as what it was trained with.
    ema_momentum: float = 0.0
    # 0: full softmax over the catalog. K > 0: sampled softmax with K shared negatives
    # per step, drawn from the training item counts ** negative_distortion, log-Q corrected.
    sampled_negatives: int = 0
    negative_distortion: float = 0.75
    eval_batch_size: int = 256
    seed: int = 42
    precision: str = "float32"
    # The schedule in optimizer steps (0 = off: epochs / patience in epochs); see
    # edgerec.teacher.loop. 0 here so a teacher.json from before reads back unchanged.
    max_steps: int = 0
    warmup_steps: int = 0
    eval_every_steps: int = 0
    patience_steps: int = 0
    min_steps: int = 0
    min_masked: int = 1

    def validate(self) -> None:
        """Raise :class:`InputError` for impossible settings."""
        validate_cloze(self, "train")
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(
                f"train.precision must be 'float32' or 'bfloat16' (got {self.precision!r})"
            )
        if self.eval_batch_size < 1:
            raise InputError(f"train.eval_batch_size must be >= 1 (got {self.eval_batch_size})")
        if self.weight_decay < 0:
            raise InputError(f"train.weight_decay must be >= 0 (got {self.weight_decay})")
        if self.lr_decay_patience < 1 or not 0.0 < self.lr_decay_factor <= 1.0:
            raise InputError("train.lr_decay_patience must be >= 1, lr_decay_factor in (0, 1]")
        if not 0.0 < self.min_learning_rate <= self.learning_rate:
            raise InputError("train.min_learning_rate must be in (0, learning_rate]")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise InputError(f"train.ema_momentum must be in [0, 1) (got {self.ema_momentum})")


def validate_cloze(config: Any, table: str) -> None:
    """The rules of the Cloze-loop keys that ``[train]`` and ``[distil]`` share.

    ``config`` has the fields ``epochs``, ``batch_size``, ``patience``,
    ``learning_rate``, ``mask_prob``, ``last_item_mask_prob``, ``windows_per_length``,
    ``sampled_negatives`` and ``negative_distortion``; errors name them ``table.key``.
    """
    for name in ("epochs", "batch_size", "patience"):
        if getattr(config, name) < 1:
            raise InputError(f"{table}.{name} must be >= 1 (got {getattr(config, name)})")
    if config.learning_rate <= 0:
        raise InputError(f"{table}.learning_rate must be > 0 (got {config.learning_rate})")
    if not 0.0 < config.mask_prob < 1.0:
        raise InputError(f"{table}.mask_prob must be in (0, 1) (got {config.mask_prob})")
    if not 0.0 <= config.last_item_mask_prob <= 1.0:
        raise InputError(
            f"{table}.last_item_mask_prob must be in [0, 1] (got {config.last_item_mask_prob})"
        )
    if config.windows_per_length <= 0:
        raise InputError(
            f"{table}.windows_per_length must be > 0 (got {config.windows_per_length})"
        )
    if config.sampled_negatives < 0:
        raise InputError(f"{table}.sampled_negatives must be >= 0 (got {config.sampled_negatives})")
    if not 0.0 <= config.negative_distortion <= 1.0:
        raise InputError(
            f"{table}.negative_distortion must be in [0, 1] (got {config.negative_distortion})"
        )
    for name in ("max_steps", "warmup_steps", "eval_every_steps", "patience_steps", "min_steps"):
        if getattr(config, name, 0) < 0:
            raise InputError(f"{table}.{name} must be >= 0 (got {getattr(config, name)})")
    if getattr(config, "min_masked", 1) < 1:
        raise InputError(f"{table}.min_masked must be >= 1 (got {config.min_masked})")


@dataclass(frozen=True)
class TeacherConfig(TomlConfig):
    """Full teacher configuration: ``[model]`` and ``[train]`` tables.

    :meth:`defaults` reads ``default.toml``, :meth:`from_toml` a user file over it.
    """

    defaults_package: ClassVar[str] = "edgerec.teacher"

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> TeacherConfig:
        if self.model.max_len is None:
            raise InputError("model.max_len must be set (a teacher has its own length)")
        self.model.validate()
        self.train.validate()
        return self

    def to_json(self) -> dict[str, Any]:
        return {"model": asdict(self.model), "train": asdict(self.train)}

    def with_overrides(self, **train_overrides: Any) -> TeacherConfig:
        """A copy with some ``train`` fields replaced (None values are ignored)."""
        values = {k: v for k, v in train_overrides.items() if v is not None}
        return replace(self, train=replace(self.train, **values)).validate()
