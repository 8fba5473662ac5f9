"""``edgerec convert`` refuses bad input with exit code 2 and a clear message.

Most checks run before anything is trained or TensorFlow is imported, so these
tests use a fake teacher directory (valid metadata, no real model).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.vocab import Vocab
from tests.converters.conftest import fake_teacher


def convert(capsys, *args: str) -> tuple[int, str]:
    code = main(["convert", "--no-progress", *args])
    return code, capsys.readouterr().err


@pytest.fixture()
def teacher(tmp_path: Path, tiny_vocab) -> Path:
    return fake_teacher(tmp_path / "teacher", tiny_vocab)


def test_missing_teacher_dir(capsys, tmp_path: Path, tiny_data: Path) -> None:
    code, err = convert(
        capsys,
        "--teacher",
        str(tmp_path / "nope"),
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "teacher directory not found" in err
    assert not (tmp_path / "b").exists()


def test_corrupt_teacher_json(capsys, tmp_path: Path, teacher: Path, tiny_data: Path) -> None:
    (teacher / "teacher.json").write_text("{not json")
    code, err = convert(
        capsys, "--teacher", str(teacher), "--data", str(tiny_data), "--out", str(tmp_path / "b")
    )
    assert code == 2 and "corrupt JSON" in err


def test_teacher_missing_files(capsys, tmp_path: Path, teacher: Path, tiny_data: Path) -> None:
    (teacher / "model.keras").unlink()
    code, err = convert(
        capsys, "--teacher", str(teacher), "--data", str(tiny_data), "--out", str(tmp_path / "b")
    )
    assert code == 2 and "missing model.keras" in err


def test_tampered_teacher_model(
    capsys, tmp_path: Path, teacher: Path, tiny_data: Path, tiny_config_file: Path
) -> None:
    # metadata is fine, but model.keras does not match its recorded sha256
    code, err = convert(
        capsys,
        "--teacher",
        str(teacher),
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "b"),
        "--config",
        str(tiny_config_file),
    )
    assert code == 2 and "sha256 does not match" in err
    assert not (tmp_path / "b").exists()


def test_teacher_vocab_differs_from_data(capsys, tmp_path: Path, tiny_data: Path) -> None:
    other = fake_teacher(tmp_path / "t2", Vocab([f"x{i}" for i in range(100)]))
    code, err = convert(
        capsys, "--teacher", str(other), "--data", str(tiny_data), "--out", str(tmp_path / "b")
    )
    assert code == 2 and "does not match the data" in err


def test_missing_data(capsys, tmp_path: Path, teacher: Path) -> None:
    code, err = convert(
        capsys,
        "--teacher",
        str(teacher),
        "--data",
        str(tmp_path / "x.csv"),
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "neither a known dataset" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precisions", "fp32,int3"], "unknown precision 'int3'"),
        (["--targets", "tflite,coreml"], "unknown target 'coreml'"),
        (["--d-model", "64"], "not smaller than the teacher"),
        (["--max-len", "0"], "max_len must be at least 2"),
        (["--max-len", "50"], "exceeds the teacher's max_len (12)"),
        (["--alpha", "2"], "alpha"),
        (["--sampled-negatives", "-1"], "sampled_negatives must be >= 0"),
    ],
)
def test_impossible_or_unknown_settings(
    capsys, tmp_path: Path, teacher: Path, tiny_data: Path, flags: list[str], message: str
) -> None:
    code, err = convert(
        capsys,
        "--teacher",
        str(teacher),
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "b"),
        *flags,
    )
    assert code == 2, err
    assert message in err


@pytest.mark.slow
def test_more_sampled_negatives_than_items(
    capsys, tmp_path: Path, tiny_teacher: Path, tiny_data: Path, tiny_config_file: Path
) -> None:
    code, err = convert(
        capsys,
        "--teacher",
        str(tiny_teacher),
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "b"),
        "--config",
        str(tiny_config_file),
        "--sampled-negatives",
        "500",
    )
    assert code == 2, err
    assert "must be smaller than the catalog (100 items)" in err
    assert not (tmp_path / "b").exists()


def test_bad_config_file(capsys, tmp_path: Path, teacher: Path, tiny_data: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[export]\nprecisions = ['fp64']\n")
    code, err = convert(
        capsys,
        "--teacher",
        str(teacher),
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "b"),
        "--config",
        str(cfg),
    )
    assert code == 2 and "unknown precision 'fp64'" in err


def test_out_dir_holds_another_bundle(
    capsys, tmp_path: Path, teacher: Path, tiny_data: Path
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    code, err = convert(
        capsys, "--teacher", str(teacher), "--data", str(tiny_data), "--out", str(out)
    )
    assert code == 2 and "already holds a different bundle" in err and "--force" in err


def test_failed_run_never_half_overwrites(
    capsys, tmp_path: Path, teacher: Path, tiny_data: Path, tiny_config_file: Path
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    old = {"schema_version": 1, "marker": "old bundle"}
    (out / "manifest.json").write_text(json.dumps(old))
    # --force passes the output check; the run then fails (tampered teacher model)
    code, err = convert(
        capsys,
        "--teacher",
        str(teacher),
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--force",
        "--config",
        str(tiny_config_file),
    )
    assert code == 2 and "sha256 does not match" in err
    assert json.loads((out / "manifest.json").read_text()) == old
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b")) == []
