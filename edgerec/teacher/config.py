"""Teacher hyper-parameters: typed dataclasses loaded from TOML.

Defaults live in ``default.toml`` beside this module (documented there); a user
file overrides any subset of keys. Loading (typed keys, unknown keys as errors) is
:mod:`edgerec.config`'s. :class:`ModelConfig` also describes the converter's student,
with the student's defaults (:data:`edgerec.converters.config.STUDENT_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgerec.config import load, load_package_defaults, load_toml
from edgerec.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a BERT4Rec encoder (teacher or student).

    ``max_len`` None is only meaningful for a student: it then takes the teacher's.
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

    def validate(self, table: str = "model") -> None:
        """Raise :class:`InputError` for impossible settings (named ``table.key``)."""
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

    def validate(self) -> None:
        """Raise :class:`InputError` for impossible settings."""
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(
                f"train.precision must be 'float32' or 'bfloat16' (got {self.precision!r})"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise InputError("train.epochs, train.batch_size and eval_batch_size must be >= 1")
        if not 0.0 < self.mask_prob < 1.0:
            raise InputError(f"train.mask_prob must be in (0, 1) (got {self.mask_prob})")
        if not 0.0 <= self.last_item_mask_prob <= 1.0:
            raise InputError("train.last_item_mask_prob must be in [0, 1]")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise InputError("train.learning_rate must be > 0 and weight_decay >= 0")
        if self.windows_per_length <= 0 or self.patience < 1:
            raise InputError("train.windows_per_length must be > 0 and patience >= 1")
        if self.lr_decay_patience < 1 or not 0.0 < self.lr_decay_factor <= 1.0:
            raise InputError("train.lr_decay_patience must be >= 1, lr_decay_factor in (0, 1]")
        if not 0.0 < self.min_learning_rate <= self.learning_rate:
            raise InputError("train.min_learning_rate must be in (0, learning_rate]")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise InputError(f"train.ema_momentum must be in [0, 1) (got {self.ema_momentum})")
        if self.sampled_negatives < 0:
            raise InputError(f"train.sampled_negatives must be >= 0 (got {self.sampled_negatives})")
        if not 0.0 <= self.negative_distortion <= 1.0:
            raise InputError(
                f"train.negative_distortion must be in [0, 1] (got {self.negative_distortion})"
            )


@dataclass(frozen=True)
class TeacherConfig:
    """Full teacher configuration: ``[model]`` and ``[train]`` tables."""

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

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "config") -> TeacherConfig:
        """Build from a ``{"model": {...}, "train": {...}}`` mapping over the dataclass defaults."""
        return load(cls, data, source)

    @classmethod
    def defaults(cls) -> TeacherConfig:
        """The documented defaults of ``default.toml``."""
        return load_package_defaults(cls, "edgerec.teacher")

    @classmethod
    def from_toml(cls, path: str | Path | None) -> TeacherConfig:
        """Defaults overridden by the TOML file at ``path`` (None: defaults only)."""
        if path is None:
            return cls.defaults()
        return load_toml(cls, path, base=cls.defaults())

    def with_overrides(self, **train_overrides: Any) -> TeacherConfig:
        """A copy with some ``train`` fields replaced (None values are ignored)."""
        values = {k: v for k, v in train_overrides.items() if v is not None}
        return replace(self, train=replace(self.train, **values)).validate()
