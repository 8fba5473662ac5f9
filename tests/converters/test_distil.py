"""The distil pass: determinism, shorter students, the ground-truth-only ablation."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.converters.config import DistilConfig, StudentConfig
from edgerec.errors import InputError
from edgerec.teacher.config import ModelConfig

pytestmark = pytest.mark.slow

TEACHER = ModelConfig(max_len=12, d_model=32, num_blocks=1, num_heads=2, ffn_dim=64)


def test_resolve_student_rules() -> None:
    from edgerec.converters.distil import resolve_student

    small = StudentConfig(d_model=16, num_blocks=1, ffn_dim=32)
    assert resolve_student(small, TEACHER).max_len == 12
    assert (
        resolve_student(
            StudentConfig(d_model=16, num_blocks=1, ffn_dim=32, max_len=8), TEACHER
        ).max_len
        == 8
    )
    with pytest.raises(InputError, match="exceeds"):
        resolve_student(StudentConfig(d_model=16, num_blocks=1, ffn_dim=32, max_len=13), TEACHER)
    with pytest.raises(InputError, match="not smaller"):
        resolve_student(StudentConfig(d_model=32, num_blocks=1, ffn_dim=64), TEACHER)


def _run(teacher_dir, alpha: float, max_len: int | None = None, seed: int = 1):
    from edgerec.converters import distil
    from edgerec.teacher.artifacts import load_teacher
    from tests.converters.tiny import tiny_split

    info, teacher = load_teacher(teacher_dir)
    cfg = distil.resolve_student(
        StudentConfig(d_model=16, num_blocks=1, ffn_dim=32, max_len=max_len), info.config.model
    )
    options = distil.DistilOptions(
        cfg,
        DistilConfig(epochs=2, patience=2, batch_size=64, alpha=alpha, seed=seed),
        progress=False,
    )
    return distil.run(tiny_split(), options, teacher=teacher)


def test_same_seed_same_student(tiny_teacher) -> None:
    a = _run(tiny_teacher, alpha=0.7)
    b = _run(tiny_teacher, alpha=0.7)
    assert a.history[-1]["valid"] == b.history[-1]["valid"]
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_shorter_student_and_ablation(tiny_teacher) -> None:
    short = _run(tiny_teacher, alpha=0.7, max_len=8)  # teacher sees left-padded windows
    assert short.spec.max_len == 8 and short.config.mask_value == -16.0
    assert np.isfinite(short.history[-1]["loss"])
    ablation = _run(tiny_teacher, alpha=0.0)  # ground truth only, no teacher forward
    assert ablation.alpha == 0.0 and len(ablation.history) == 2
