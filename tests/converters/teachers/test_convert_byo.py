"""End to end: ``edgerec convert --teacher teacher.toml`` with an ONNX teacher from outside.

The bundle is accepted, its manifest records the teacher's kind, hash and contract, and a
second run with another student reads the soft targets, and the teacher's validation and
test scores, from the cache: the teacher model is not run again.
"""

from __future__ import annotations

import json

import pytest

from edgerec.converters.pipeline import convert
from edgerec.teacher.baselines import MOST_POPULAR, TRANSITION
from tests.converters import tiny
from tests.converters.teachers.conftest import KERAS_INPUT, write_descriptor

pytestmark = pytest.mark.slow


def test_onnx_teacher_distils_into_an_accepted_bundle(keras_teacher, walk_split, tmp_path):
    from edgerec.cli import main

    folder = keras_teacher["vocab"].parent
    text = f'kind = "onnx"\npath = "{keras_teacher["onnx"].name}"\n' + KERAS_INPUT.format(
        vocab=keras_teacher["vocab"].name
    )
    descriptor = write_descriptor(folder, text, "byo.toml")
    cfg = {
        "distil": {"epochs": 60, "patience": 60, "batch_size": 64, "alpha": 0.9},
        "export": {"targets": ["onnx"], "precisions": ["fp32"], "gpu": False},
        "gates": {"quality_min_ratio": 0.5},
    }
    tables = {k: dict(v) for k, v in tiny.TINY_CONVERT.items()}
    for table, values in cfg.items():
        tables.setdefault(table, {}).update(values)
    config = tmp_path / "convert.toml"
    config.write_text(tiny.toml_text(tables))
    cache = tmp_path / "cache"
    out = tmp_path / "bundle"
    # --allow-weak-teacher: on a +1 walk the transition counts beat this teacher
    args = ["convert", "--teacher", str(descriptor), "--data", str(tiny.tiny_data()),
            "--config", str(config), "--teacher-cache", str(cache), "--no-progress",
            "--allow-weak-teacher"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    teacher = manifest["teacher"]
    assert teacher["contract"]["kind"] == "onnx"
    assert teacher["contract"]["contract"]["input"]["padding"] == "right"
    gate = teacher["contract"]["gate"]  # gated like edgerec's own teacher, and recorded
    assert gate["required"] == [MOST_POPULAR, TRANSITION] and gate["failed"] == [TRANSITION]
    assert gate["comparisons"][MOST_POPULAR]["low"] > 0
    assert manifest["teacher"]["allow_weak_teacher"] is True
    assert teacher["contract"]["vocabulary"]["data_only"] == 1
    assert len(teacher["fingerprint"]) == 64
    assert manifest["quality"]["teacher"]["NDCG@10"] > 0.5
    assert list(cache.glob("*.npz"))

    # another student, same teacher and data: the soft targets come from the cache
    small = tiny.tiny_config(**cfg, student={"d_model": 8, "ffn_dim": 16})
    result = convert(descriptor, walk_split, tmp_path / "b2", small, progress=False,
                     raise_on_gate=False, teacher_cache=cache, allow_weak_teacher=True)  # fmt: skip
    assert result.summary["teacher"]["soft_targets"]["hit"] is True
    assert result.summary["teacher"]["soft_targets"]["model_calls"] == 0  # teacher not run
    assert (
        result.summary["teacher"]["soft_targets"]["key"]
        == teacher["contract"]["soft_targets"]["key"]
    )
