from pathlib import Path

import pytest

from edgerec.errors import InputError
from edgerec.teacher.config import TeacherConfig


def test_defaults_match_documented_file() -> None:
    cfg = TeacherConfig.defaults()
    assert cfg.model.max_len == 50
    assert cfg.model.d_model == 192
    assert cfg.train.mask_prob == pytest.approx(0.2)


def test_file_overrides_subset(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text("[model]\nd_model = 32\n[train]\nseed = 7\n")
    cfg = TeacherConfig.from_toml(p)
    assert cfg.model.d_model == 32 and cfg.train.seed == 7
    assert cfg.model.num_blocks == TeacherConfig.defaults().model.num_blocks


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[model]\nd_modle = 32\n", "unknown key 'd_modle'"),
        ("[modl]\n", "unknown table"),
        ("[model]\nd_model = 30\nnum_heads = 4\n", "divisible"),
        ("[model]\nmax_len = 0\n", "max_len"),
        ("[train]\nmask_prob = 1.5\n", "mask_prob"),
        ("[model]\nd_model = 'big'\n", "must be int"),
        ("[model\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(InputError, match=needle):
        TeacherConfig.from_toml(p)


def test_missing_file() -> None:
    with pytest.raises(InputError, match="not found"):
        TeacherConfig.from_toml("/nonexistent/teacher.toml")
