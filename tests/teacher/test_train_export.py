"""Tiny end-to-end teacher runs: training beats popularity, export round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.teacher.config import ModelConfig, TeacherConfig, TrainConfig

pytestmark = pytest.mark.slow

TINY = TeacherConfig(
    model=ModelConfig(
        max_len=12,
        d_model=32,
        num_blocks=1,
        num_heads=2,
        ffn_dim=64,
        dropout=0.1,
        attention_dropout=0.1,
    ),
    train=TrainConfig(epochs=25, batch_size=64, patience=25, seed=3, mask_prob=0.3),
)


@pytest.fixture(scope="module")
def trained(walk_split):
    from edgerec.teacher.train import train_teacher

    return train_teacher(walk_split, TINY, progress=False)


def test_tiny_teacher_beats_popularity(trained, walk_split) -> None:
    from edgerec.features import FeatureSpec
    from edgerec.teacher.evaluate import compare_with_popularity
    from edgerec.teacher.scoring import KerasScorer

    spec = FeatureSpec(TINY.model.max_len, walk_split.vocab.num_items)
    result = compare_with_popularity(
        KerasScorer(trained.model, spec), spec, walk_split, bootstrap_resamples=200
    )
    mode = result["modes"]["none"]
    assert mode["teacher"]["NDCG@10"] > mode["popularity"]["NDCG@10"] + 0.2
    assert mode["bootstrap_ndcg_teacher_minus_popularity"]["low"] > 0
    assert trained.best_epoch >= 1
    assert len(trained.history) == TINY.train.epochs


def test_same_seed_same_metrics(trained, walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    again = train_teacher(walk_split, TINY.with_overrides(epochs=3), progress=False)
    first3 = [h.valid for h in trained.history[:3]]
    assert [h.valid for h in again.history] == first3


def test_save_load_and_saved_model_round_trip(trained, walk_split, tmp_path: Path) -> None:
    import tensorflow as tf

    from edgerec.teacher.artifacts import load_teacher, save_teacher

    out = save_teacher(tmp_path / "teacher", trained.model, walk_split.vocab, TINY, {"seed": 3}, [])
    info, model = load_teacher(out)
    assert info.vocab == walk_split.vocab
    rows = info.feature_spec.encode_batch(walk_split.test_inputs()[:4])
    ref = trained.model(rows, training=False).numpy()
    np.testing.assert_allclose(model(rows, training=False).numpy(), ref, atol=1e-5)

    loaded = tf.saved_model.load(str(out / "saved_model"))
    fn = loaded.signatures["serving_default"]
    (spec,) = fn.structured_input_signature[1].values()
    assert spec.shape.as_list() == [1, TINY.model.max_len] and spec.dtype == tf.int32
    for i in range(4):
        (got,) = fn(items=tf.constant(rows[i : i + 1])).values()
        np.testing.assert_allclose(got.numpy(), ref[i : i + 1], atol=1e-5)

    # tampering with the model file is caught before loading
    meta = json.loads((out / "teacher.json").read_text())
    meta["fingerprint"] = "0" * 64
    (out / "teacher.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="sha256"):
        load_teacher(out)


def test_mirrored_strategy_runs_and_checkpoints(walk_split, tmp_path: Path) -> None:
    from edgerec.teacher.train import train_teacher

    result = train_teacher(
        walk_split,
        TINY.with_overrides(epochs=2),
        strategy="mirrored",
        progress=False,
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert len(result.history) == 2 and np.isfinite(result.history[-1].loss)
    assert (tmp_path / "ckpt" / "best.weights.h5").stat().st_size > 0


def test_bfloat16_training_exports_float32(walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    cfg = TINY.with_overrides(epochs=2, precision="bfloat16")
    result = train_teacher(walk_split, cfg, progress=False)
    rows = np.zeros((2, TINY.model.max_len), np.int32)
    rows[:, -1] = walk_split.vocab.mask_id
    out = result.model(rows, training=False)
    assert out.dtype == "float32" and np.isfinite(np.asarray(out)).all()
    assert all(w.dtype == "float32" for w in result.model.weights)


def test_missing_teacher_dir(tmp_path: Path) -> None:
    from edgerec.teacher.artifacts import read_teacher_info

    with pytest.raises(InputError, match="not found"):
        read_teacher_info(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "teacher.json").write_text("{}")
    with pytest.raises(InputError, match="missing"):
        read_teacher_info(tmp_path / "half")


def test_learning_rate_decays_on_plateau(walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    # a learning rate too small to move validation NDCG: every epoch after the first is stale
    cfg = TINY.with_overrides(
        epochs=4,
        learning_rate=1e-12,
        min_learning_rate=1e-14,
        lr_decay_patience=1,
        lr_decay_factor=0.5,
        patience=10,
    )
    result = train_teacher(walk_split, cfg, strategy="mirrored", progress=False)
    rates = [h.learning_rate for h in result.history]
    assert rates[0] == pytest.approx(1e-12)
    assert rates[-1] < rates[0]


def test_weight_averaging_validates_average_and_trains_raw(walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    # an average that barely moves from the first step's weights: validation sees an
    # almost untrained model while the raw weights (restored after each validation) learn
    frozen = TINY.with_overrides(epochs=4, ema_momentum=0.999999, learning_rate=3e-3)
    result = train_teacher(walk_split, frozen, strategy="mirrored", progress=False)
    plain = train_teacher(
        walk_split, frozen.with_overrides(ema_momentum=0.0), strategy="mirrored", progress=False
    )
    losses = [h.loss for h in result.history]
    assert losses[-1] < losses[0] - 0.1
    assert losses == pytest.approx([h.loss for h in plain.history], rel=1e-4)
    averaged = [h.valid["NDCG@10"] for h in result.history]
    trained = [h.valid["NDCG@10"] for h in plain.history]
    assert max(averaged) < trained[-1] - 0.1


def test_ema_momentum_must_be_below_one() -> None:
    with pytest.raises(InputError, match="ema_momentum"):
        TINY.with_overrides(ema_momentum=1.0).validate()


def test_sampled_softmax_teacher_learns_the_walk(walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    # 60 items, 30 negatives per step: the sampled loss must still train the full-catalog
    # scores that validation ranks (the full softmax reaches 0.41 in 12 epochs, an
    # untrained model ~0.07), and be reproducible with the same seed
    cfg = TINY.with_overrides(epochs=12, sampled_negatives=30)
    result = train_teacher(walk_split, cfg, progress=False)
    again = train_teacher(walk_split, cfg.with_overrides(epochs=2), progress=False)
    assert result.best_valid["NDCG@10"] > 0.25
    assert [h.loss for h in again.history] == [h.loss for h in result.history[:2]]


def test_sampled_negatives_must_be_smaller_than_the_catalog(walk_split) -> None:
    from edgerec.teacher.train import train_teacher

    with pytest.raises(InputError, match="sampled_negatives"):
        train_teacher(walk_split, TINY.with_overrides(epochs=1, sampled_negatives=60))
    with pytest.raises(InputError, match="sampled_negatives"):
        TINY.with_overrides(sampled_negatives=-1).validate()
