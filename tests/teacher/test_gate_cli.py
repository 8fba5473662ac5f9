"""End to end: a weak teacher gets exit 3 from train and convert; the override is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEACHER_TOML = """
[model]
max_len = 8
d_model = 16
num_blocks = 1
num_heads = 2
ffn_dim = 32
[train]
batch_size = 64
min_steps = 0
"""

CONVERT_TOML = """
[student]
d_model = 8
num_blocks = 1
num_heads = 2
ffn_dim = 16
[gates]
quality_min_ratio = 0.01
"""


def _walk_log(path: Path) -> Path:
    """A +1 walk over 40 items with a user_id,item_id,timestamp header (no options needed)."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(300):
        pos = int(rng.integers(40))
        for t in range(15):
            lines.append(f"u{u},i{pos},{t}")
            pos = int(rng.integers(40)) if rng.random() < 0.1 else (pos + 1) % 40
    path.write_text("\n".join(lines) + "\n")
    return path


def test_weak_teacher_exit_3_and_allow_weak_teacher(tmp_path: Path, capsys) -> None:
    from edgerec.cli import main

    log = _walk_log(tmp_path / "walk.csv")
    (tmp_path / "t.toml").write_text(TEACHER_TOML)
    (tmp_path / "c.toml").write_text(CONVERT_TOML)
    # Two optimizer steps: far below the transition baseline on a first-order walk.
    train = ["-q", "train", "--data", str(log), "--config", str(tmp_path / "t.toml")]
    train += ["--steps", "2", "--no-progress", "--out", str(tmp_path / "weak")]
    assert main(train) == 3
    err = capsys.readouterr().err
    assert "teacher gate failed" in err and "item transition" in err and "what to try" in err
    assert (tmp_path / "weak" / "teacher.json").is_file()  # kept for inspection

    assert main([*train, "--allow-weak-teacher"]) == 0
    meta = json.loads((tmp_path / "weak" / "teacher.json").read_text())
    assert meta["teacher_gate"]["passed"] is False
    assert meta["teacher_gate"]["allow_weak_teacher"] is True

    convert = ["-q", "convert", "--teacher", str(tmp_path / "weak"), "--data", str(log)]
    convert += ["--config", str(tmp_path / "c.toml"), "--targets", "tflite"]
    convert += ["--precisions", "fp32", "--epochs", "1", "--no-gpu", "--no-progress"]
    assert main([*convert, "--out", str(tmp_path / "refused")]) == 3
    assert "teacher gate failed" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "manifest.json").exists()

    assert main([*convert, "--out", str(tmp_path / "b"), "--allow-weak-teacher"]) == 0
    out = capsys.readouterr().out
    assert "item transition: NDCG@10" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["teacher"]["allow_weak_teacher"] is True
    assert "Teacher vs baselines" in (tmp_path / "b" / "report.md").read_text()
