"""Fixtures of the converter tests: a tiny teacher, its data, a tiny bundle.

Builders live in :mod:`tests.converters.tiny` so other test packages (the
runtime's) can make converter-made bundles too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.converters import tiny


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    """CSV log the tiny teacher was trained on (fast, no TF)."""
    return tiny.tiny_data()


@pytest.fixture(scope="session")
def tiny_teacher() -> Path:
    """A trained tiny teacher directory (d=32, 1 block, L=12; ~20 s)."""
    return tiny.build_tiny_teacher()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny bundle: every target, every precision, GPU variant."""
    return tiny.build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def fake_teacher(path: Path, vocab, max_len: int = 12, d_model: int = 32) -> Path:
    """A teacher directory that passes every TF-free check but holds no real model.

    Enough for the input checks that run before the teacher is loaded.
    """
    from edgerec.features import FeatureSpec
    from edgerec.teacher.artifacts import TEACHER_FORMAT
    from edgerec.teacher.config import TeacherConfig

    config = TeacherConfig.from_json(
        {
            "model": {
                "max_len": max_len,
                "d_model": d_model,
                "num_blocks": 1,
                "num_heads": 2,
                "ffn_dim": 64,
            }
        },
        "fake teacher",
    )
    path.mkdir(parents=True, exist_ok=True)
    vocab.save(path / "vocab.json")
    (path / "model.keras").write_bytes(b"not a keras archive")
    info = {
        "format": TEACHER_FORMAT,
        "config": config.to_json(),
        "feature_spec": FeatureSpec(max_len, vocab.num_items).to_json(),
        "vocab_sha256": vocab.sha256(),
        "fingerprint": "0" * 64,
    }
    (path / "teacher.json").write_text(json.dumps(info))
    return path


@pytest.fixture(scope="session")
def tiny_vocab():
    return tiny.tiny_split().vocab


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny converter config as a TOML file (for CLI runs)."""
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(tiny.toml_text(tiny.TINY_CONVERT))
    return path
