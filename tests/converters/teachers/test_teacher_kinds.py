"""Every kind of teacher, built outside edgerec's teacher code, scores the same and is gated.

The Keras teacher is a causal SASRec-style model trained here with right padding and no
``[MASK]``; its SavedModel and its tf2onnx export must give the same scores through
their own runtimes. The PyTorch GRU (RecBole's ``item_seq`` + ``item_seq_len`` layout)
goes through ``torch.onnx.export``. A wrong padding side is caught by the teacher gate.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.converters.teachers import load_contract, open_teacher
from edgerec.converters.teachers.base import UNKNOWN_SCORE
from edgerec.converters.teachers.gate import check_teacher
from edgerec.teacher.baselines import MOST_POPULAR, TRANSITION
from edgerec.teacher.gate import WeakTeacherError
from tests.converters import tiny
from tests.converters.teachers.builders import DROPPED
from tests.converters.teachers.conftest import KERAS_INPUT, TORCH_INPUT, write_descriptor

pytestmark = pytest.mark.slow

KINDS = {"keras": "keras", "savedmodel": "savedmodel", "onnx": "onnx"}


def _keras_kind(keras_teacher, kind):
    folder = keras_teacher["vocab"].parent
    text = f'kind = "{kind}"\npath = "{keras_teacher[kind].name}"\n' + KERAS_INPUT.format(
        vocab=keras_teacher["vocab"].name
    )
    return load_contract(write_descriptor(folder, text, f"{kind}.toml"))


def _torch(torch_teacher, padding):
    folder = torch_teacher["vocab"].parent
    text = f'kind = "onnx"\npath = "{torch_teacher["onnx"].name}"\n' + TORCH_INPUT.format(
        padding=padding, vocab=torch_teacher["vocab"].name
    )
    return write_descriptor(folder, text, f"teacher-{padding}.toml")


def test_keras_savedmodel_and_onnx_score_the_same(keras_teacher, walk_split):
    histories = [h for h in walk_split.valid_inputs()[:32]]
    scores = {
        kind: open_teacher(_keras_kind(keras_teacher, kind), walk_split.vocab)(histories)
        for kind in KINDS
    }
    dropped = walk_split.vocab.item_ids.index(DROPPED)  # column of the item the teacher lacks
    for kind, s in scores.items():
        assert s.shape == (32, walk_split.vocab.num_items), kind
        assert (s[:, dropped] == UNKNOWN_SCORE).all(), kind
        np.testing.assert_allclose(s, scores["keras"], atol=2e-4, err_msg=kind)


def test_keras_teacher_is_gated_like_edgerecs_own(keras_teacher, walk_split):
    scorer = open_teacher(_keras_kind(keras_teacher, "onnx"), walk_split.vocab)
    result, suite = check_teacher(scorer, walk_split, allow_weak_teacher=True)
    assert set(result.comparisons) == set(suite.valid_ranks) >= {MOST_POPULAR, TRANSITION}
    assert result.required == (MOST_POPULAR, TRANSITION)
    pop = result.comparisons[MOST_POPULAR]
    assert pop.low > 0 and pop.mean_a > 2 * pop.mean_b  # far above most-popular
    assert result.notes["num_users"] == len(walk_split.train)


def test_torch_onnx_teacher_with_a_lengths_input(torch_teacher, walk_split):
    contract = load_contract(_torch(torch_teacher, "right"))
    scorer = open_teacher(contract, walk_split.vocab)
    result, _ = check_teacher(scorer, walk_split, allow_weak_teacher=True)
    assert result.comparisons[MOST_POPULAR].low > 0


def test_wrong_padding_side_exits_3_with_the_numbers(torch_teacher, walk_split, tmp_path, capsys):
    from edgerec.cli import main

    descriptor = _torch(torch_teacher, "left")  # the model was trained right-padded
    with pytest.raises(WeakTeacherError, match="padding side") as raised:
        check_teacher(open_teacher(load_contract(descriptor), walk_split.vocab), walk_split)
    assert MOST_POPULAR in raised.value.result.failed  # below even most-popular
    code = main(
        [
            "convert", "--teacher", str(descriptor), "--data", str(tiny.tiny_data()),
            "--out", str(tmp_path / "out"), "--no-teacher-cache", "--no-progress",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "teacher gate failed" in err and MOST_POPULAR in err and "padding side" in err
