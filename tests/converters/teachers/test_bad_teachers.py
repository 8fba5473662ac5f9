"""Bad teachers get a clear error (exit 2/3), never a traceback.

The models are hand-built ONNX graphs (:mod:`.graphs`), so these tests need no training.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.converters.teachers import load_contract, open_teacher
from edgerec.converters.teachers.external import probe
from edgerec.errors import InputError
from tests.converters import tiny
from tests.converters.teachers.conftest import write_descriptor, write_items
from tests.converters.teachers.graphs import linear_teacher

pytest.importorskip("onnxruntime")

DESCRIPTOR = """kind = "onnx"
path = "m.onnx"

[input]
name = "item_seq"
max_len = 24
dtype = "{dtype}"
padding = "left"

[vocabulary]
path = "items.json"
"""


def _teacher(tmp_path, walk_split, dtype="int64", **graph):
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    graph.setdefault("width", walk_split.vocab.num_items + 1)
    linear_teacher(tmp_path / "m.onnx", dtype=graph.pop("graph_dtype", "int64"), **graph)
    return load_contract(write_descriptor(tmp_path, DESCRIPTOR.format(dtype=dtype)))


def _open_and_probe(contract, split):
    scorer = open_teacher(contract, split.vocab)
    probe(scorer, split)
    return scorer


def test_a_good_graph_scores_in_the_data_index_space(tmp_path, walk_split):
    scorer = _open_and_probe(_teacher(tmp_path, walk_split), walk_split)
    rows = np.zeros((3, 24), np.int32)
    rows[:, -2:] = [[1, 2], [3, 4], [5, 6]]
    scores = scorer.score(rows)
    assert scores.shape == (3, walk_split.vocab.num_items + 1) and scores.dtype == np.float32
    assert np.isneginf(scores[:, 0]).all() and np.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"width": 50}, r"teacher output width 50 does not match its vocabulary: 101 tokens"),
        ({"width": 1}, r"teacher output is \[B, 1\]: one number per row, not a score vector"),
        ({"max_len": 10}, r"input.max_len = 24 does not fit the teacher: .* static length of 10"),
        ({"graph_dtype": "int32"}, r"input 'item_seq' is tensor\(int32\), input.dtype says"),
    ],
)
def test_shape_and_dtype_mistakes(tmp_path, walk_split, graph, message):
    with pytest.raises(InputError, match=message):
        _open_and_probe(_teacher(tmp_path, walk_split, **graph), walk_split)


def test_nan_scores_are_refused(tmp_path, walk_split):
    weights = np.ones((24, walk_split.vocab.num_items + 1), np.float32)
    weights[:, 5] = np.nan
    contract = _teacher(tmp_path, walk_split, weights=weights)
    with pytest.raises(InputError, match=r"NaN/\+inf scores in 8 of 8 rows"):
        _open_and_probe(contract, walk_split)


def test_probabilities_outside_unit_interval_are_refused(tmp_path, walk_split):
    contract = _teacher(tmp_path, walk_split)
    text = (tmp_path / "teacher.toml").read_text() + '\n[output]\nscores = "probabilities"\n'
    contract = load_contract(write_descriptor(tmp_path, text))
    with pytest.raises(InputError, match="values outside"):
        _open_and_probe(contract, walk_split)


def test_missing_inputs_and_outputs_name_what_the_model_has(tmp_path, walk_split):
    _teacher(tmp_path, walk_split)
    text = DESCRIPTOR.format(dtype="int64").replace('name = "item_seq"', 'name = "seq"')
    with pytest.raises(InputError, match=r"no input 'seq' \(inputs: item_seq\)"):
        open_teacher(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)
    text = DESCRIPTOR.format(dtype="int64") + '\n[output]\nname = "logits"\n'
    with pytest.raises(InputError, match=r"no output 'logits' \(outputs: scores\)"):
        open_teacher(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)


def test_cli_exit_2_without_a_traceback(tmp_path, walk_split, capsys):
    from edgerec.cli import main

    _teacher(tmp_path, walk_split, width=50)
    code = main(
        [
            "convert",
            "--teacher",
            str(tmp_path / "teacher.toml"),
            "--data",
            str(tiny.tiny_data()),
            "--out",
            str(tmp_path / "out"),
            "--no-teacher-cache",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "teacher output width 50 does not match its vocabulary" in err
    assert "Traceback" not in err
