"""The causal (SASRec) teacher: next-item windows, causality, shared export contract."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.teacher.cloze import causal_epoch
from edgerec.teacher.config import ModelConfig, TeacherConfig, TrainConfig

SMALL = ModelConfig(
    max_len=6,
    d_model=16,
    num_blocks=1,
    num_heads=2,
    ffn_dim=32,
    dropout=0.0,
    attention_dropout=0.0,
    kind="sasrec",
)


def test_causal_windows_label_the_next_item_in_the_inference_row_form() -> None:
    rng = np.random.default_rng(0)
    x, y = causal_epoch([np.array([3, 4, 5], np.int32)], 6, 99, 1.0, rng)
    assert x.tolist() == [[0, 0, 0, 3, 4, 99]]
    assert y.tolist() == [[0, 0, 0, 4, 5, 0]]
    long = np.arange(1, 15, dtype=np.int32)
    x, y = causal_epoch([long, np.array([7], np.int32)], 6, 99, 1.0, rng)
    assert len(x) == 3  # ceil(14 / 6) windows; the 1-item user has no target
    latest = x[(y[:, -2] == 14)][0]
    assert latest.tolist() == [9, 10, 11, 12, 13, 99]
    assert ((y > 0) == ((x > 0) & (x != 99))).all()  # every real position has a target


def test_kind_is_validated() -> None:
    with pytest.raises(InputError, match="model.kind"):
        ModelConfig(kind="gru4rec").validate()
    assert TeacherConfig.defaults().model.kind == "bert4rec"


def test_sasrec_is_causal_and_scores_from_the_last_history_position() -> None:
    from edgerec.teacher.model import SASRec, build_model

    model = build_model(20, SMALL)
    assert isinstance(model, SASRec)
    rows = np.array([[0, 0, 3, 4, 5, 21], [0, 0, 3, 4, 9, 21]], np.int32)
    hidden = model.encode(rows).numpy()
    # real positions before the changed one see the same inputs (padded positions attend
    # to nothing real and are never read)
    np.testing.assert_allclose(hidden[0, 2:4], hidden[1, 2:4], atol=1e-6)
    assert not np.allclose(hidden[0, 4], hidden[1, 4])
    scores = model(rows).numpy()
    np.testing.assert_allclose(scores, model.score_hidden(hidden[:, -2]).numpy(), atol=1e-5)
    # the trailing [MASK] (or whatever is last) does not change the scores
    other = rows.copy()
    other[:, -1] = 7
    np.testing.assert_allclose(model(other).numpy(), scores, atol=1e-6)


def test_cloze_hidden_reads_the_state_before_each_masked_position() -> None:
    from edgerec.teacher.model import build_model

    model = build_model(20, SMALL)
    cloze = np.array([[0, 3, 21, 5, 6, 21]], np.int32)
    visible = np.array([[0, 3, 0, 5, 6, 0]], np.int32)
    got = model.cloze_hidden(cloze).numpy()
    h = model.encode(visible).numpy()
    np.testing.assert_allclose(got[0, 1:], h[0, :-1], atol=1e-6)
    assert (got[0, 0] == 0).all()


@pytest.mark.slow
def test_tiny_sasrec_teacher_learns_the_walk_and_round_trips(walk_split, tmp_path) -> None:
    from edgerec.features import FeatureSpec
    from edgerec.teacher.artifacts import load_teacher, save_teacher
    from edgerec.teacher.scoring import KerasScorer
    from edgerec.teacher.train import train_teacher

    config = TeacherConfig(
        model=ModelConfig(
            max_len=12, d_model=32, num_blocks=1, num_heads=2, ffn_dim=64, kind="sasrec"
        ),
        train=TrainConfig(epochs=15, batch_size=64, patience=15, seed=3),
    ).validate()
    result = train_teacher(walk_split, config, progress=False)
    assert result.best_valid["NDCG@10"] > 0.5  # a +1 walk: popularity is ~0.1
    save_teacher(tmp_path / "t", result.model, walk_split.vocab, config, {}, [])
    info, model = load_teacher(tmp_path / "t")
    assert type(model).__name__ == "SASRec" and info.config.model.kind == "sasrec"
    spec = FeatureSpec(12, walk_split.vocab.num_items)
    histories = walk_split.test_inputs()[:20]
    np.testing.assert_allclose(
        KerasScorer(model, spec)(histories), KerasScorer(result.model, spec)(histories), atol=1e-5
    )
