"""The distil pass: determinism, shorter students, the ground-truth-only ablation."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.converters.config import DistilConfig, student_config
from edgerec.errors import InputError
from edgerec.teacher.config import ModelConfig

pytestmark = pytest.mark.slow

TEACHER = ModelConfig(max_len=12, d_model=32, num_blocks=1, num_heads=2, ffn_dim=64)


def test_resolve_student_rules() -> None:
    from edgerec.converters.passes.distil import resolve_student

    small = student_config(d_model=16, num_blocks=1, ffn_dim=32)
    assert resolve_student(small, TEACHER).max_len == 12
    assert (
        resolve_student(
            student_config(d_model=16, num_blocks=1, ffn_dim=32, max_len=8), TEACHER
        ).max_len
        == 8
    )
    with pytest.raises(InputError, match="exceeds"):
        resolve_student(student_config(d_model=16, num_blocks=1, ffn_dim=32, max_len=13), TEACHER)
    with pytest.raises(InputError, match="not smaller"):
        resolve_student(student_config(d_model=32, num_blocks=1, ffn_dim=64), TEACHER)


def _run(teacher_dir, alpha: float, max_len: int | None = None, seed: int = 1, **distil_options):
    from edgerec.converters.passes import distil
    from edgerec.teacher.artifacts import load_teacher
    from tests.converters.tiny import tiny_split

    info, teacher = load_teacher(teacher_dir)
    cfg = distil.resolve_student(
        student_config(d_model=16, num_blocks=1, ffn_dim=32, max_len=max_len), info.config.model
    )
    options = distil.DistilOptions(
        cfg,
        DistilConfig(epochs=2, patience=2, batch_size=64, alpha=alpha, seed=seed, **distil_options),
        progress=False,
    )
    return distil.run(tiny_split(), options, teacher=teacher)


def test_same_seed_same_student(tiny_teacher) -> None:
    a = _run(tiny_teacher, alpha=0.7)
    b = _run(tiny_teacher, alpha=0.7)
    assert a.history[-1]["valid"] == b.history[-1]["valid"]
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_weight_averaging_keeps_the_averaged_student(tiny_teacher) -> None:
    plain = _run(tiny_teacher, alpha=0.7)
    averaged = _run(tiny_teacher, alpha=0.7, ema_momentum=0.9)
    again = _run(tiny_teacher, alpha=0.7, ema_momentum=0.9)
    # same training steps; what is validated and kept is the average, not the last step
    assert averaged.history[0]["loss"] == plain.history[0]["loss"]
    assert averaged.history[-1]["valid"] != plain.history[-1]["valid"]
    for x, y in zip(averaged.model.weights, again.model.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_shorter_student_and_ablation(tiny_teacher) -> None:
    short = _run(tiny_teacher, alpha=0.7, max_len=8)  # teacher sees left-padded windows
    assert short.spec.max_len == 8 and short.config.mask_value == -16.0
    assert np.isfinite(short.history[-1]["loss"])
    ablation = _run(tiny_teacher, alpha=0.0)  # ground truth only, no teacher forward
    assert ablation.alpha == 0.0 and len(ablation.history) == 2


def test_sampled_kd_loss_approaches_the_full_loss() -> None:
    """The sampled estimate tends to the full-catalog loss as the sample grows."""
    import tensorflow as tf

    from edgerec.converters.passes.kd_loss import full_kd_loss, sampled_kd_loss
    from edgerec.teacher.model import BERT4Rec
    from edgerec.teacher.train import negative_sampler

    n, rng = 200, np.random.default_rng(0)
    model = BERT4Rec(n, ModelConfig(max_len=8, d_model=16, num_blocks=1, num_heads=2, ffn_dim=32))
    model(np.zeros((1, 8), np.int32))
    model.item_embedding.embeddings.assign(rng.normal(size=(n + 2, 16)).astype("float32"))
    hidden = tf.constant(rng.normal(size=(64, 16)).astype("float32"))
    items = tf.constant(rng.integers(1, n + 1, 64))
    teacher = tf.constant(rng.normal(0, 2, (64, n)).astype("float32"))
    unigrams = [0.0, *(rng.pareto(1.5, n) + 0.5).tolist(), 0.0]
    for alpha, t_logits in ((0.5, teacher), (0.0, None)):
        full = float(np.mean(full_kd_loss(model, alpha, 2.0)(hidden, t_logits, items)))
        errors = []
        for k in (20, 180):
            loss = sampled_kd_loss(
                model,
                alpha,
                2.0,
                draw_negatives=negative_sampler(unigrams, k, 0.75, "k"),
                num_sampled=k,
                teacher_top_k=10,
            )
            draws = [float(np.mean(loss(hidden, t_logits, items))) for _ in range(20)]
            assert all(np.isfinite(draws))
            errors.append(abs(np.mean(draws) - full) / full)
        assert errors[1] < 0.02 and errors[1] < errors[0], (alpha, full, errors)


def test_sampled_distillation_learns_the_walk(tiny_teacher) -> None:
    from edgerec.converters.passes import distil
    from edgerec.teacher.artifacts import load_teacher
    from tests.converters.tiny import tiny_split

    info, teacher = load_teacher(tiny_teacher)
    cfg = distil.resolve_student(
        student_config(d_model=16, num_blocks=1, ffn_dim=32), info.config.model
    )
    dc = DistilConfig(
        epochs=10,
        patience=10,
        batch_size=64,
        learning_rate=0.005,
        mask_prob=0.3,
        seed=7,
        sampled_negatives=30,
        teacher_top_k=8,
        init_from_teacher=True,
    )
    student = distil.run(tiny_split(), distil.DistilOptions(cfg, dc, progress=False), teacher)
    assert student.best_valid["NDCG@10"] > 0.3, student.history
    with pytest.raises(InputError, match="smaller than the catalog"):
        distil.run(
            tiny_split(),
            distil.DistilOptions(cfg, DistilConfig(epochs=1, sampled_negatives=100)),
            teacher,
        )


def test_init_from_teacher_keeps_the_item_geometry(tiny_teacher) -> None:
    """The student's table is the best rank-d fit of the teacher's item dot products."""
    from edgerec.converters.passes import distil
    from edgerec.teacher.artifacts import load_teacher
    from edgerec.teacher.model import BERT4Rec
    from tests.converters.tiny import tiny_split

    info, teacher = load_teacher(tiny_teacher)
    cfg = distil.resolve_student(
        student_config(d_model=16, num_blocks=1, ffn_dim=32), info.config.model
    )
    student = BERT4Rec(teacher.num_items, cfg)
    distil.init_item_table_from_teacher(student, teacher)
    t = teacher.item_embedding.embeddings.numpy().astype(np.float64)
    s = student.item_embedding.embeddings.numpy().astype(np.float64)
    u, sv, _ = np.linalg.svd(t, full_matrices=False)
    best = (u[:, :16] * sv[:16] ** 2) @ u[:, :16].T
    np.testing.assert_allclose(s @ s.T, best, atol=1e-4)
    np.testing.assert_array_equal(student.output_bias.numpy(), teacher.output_bias.numpy())
    with pytest.raises(InputError, match="different vocabularies"):
        distil.init_item_table_from_teacher(BERT4Rec(teacher.num_items + 1, cfg), teacher)
    no_teacher = DistilConfig(epochs=1, alpha=0.0, init_from_teacher=True)
    with pytest.raises(InputError, match="init_from_teacher needs a teacher"):
        distil.run(tiny_split(), distil.DistilOptions(cfg, no_teacher, progress=False))
