"""Fixtures of the teacher-contract tests: the walk data and small foreign teachers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.converters import tiny


@pytest.fixture(scope="session")
def walk_split():
    """The tiny walk log as a leave-one-out split (TF-free)."""
    return tiny.tiny_split()


@pytest.fixture(scope="session")
def keras_teacher(walk_split, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The causal SASRec-style Keras teacher, its SavedModel and its ONNX export."""
    from tests.converters.teachers.builders import keras_sasrec

    return keras_sasrec(walk_split, tmp_path_factory.mktemp("keras-teacher"))


@pytest.fixture(scope="session")
def torch_teacher(walk_split, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The PyTorch GRU teacher (RecBole's input layout) exported with torch.onnx.export."""
    pytest.importorskip("torch")
    from tests.converters.teachers.builders import torch_gru4rec

    return torch_gru4rec(walk_split, tmp_path_factory.mktemp("torch-teacher"))


def write_descriptor(folder: Path, text: str, name: str = "teacher.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def write_items(folder: Path, tokens: list[str], name: str = "items.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(tokens))
    return folder / name


KERAS_INPUT = """
[input]
name = "item_seq"
max_len = 24
dtype = "int32"
padding = "right"

[output]
position = "last_real"

[vocabulary]
path = "{vocab}"
"""

TORCH_INPUT = """
[input]
name = "item_seq"
max_len = 24
padding = "{padding}"

[output]
name = "scores"

[vocabulary]
path = "{vocab}"
format = "recbole"

[[extra_inputs]]
name = "item_seq_len"
value = "length"
"""
