"""Shared helpers for the edgerec.data tests."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

import edgerec.cli
from edgerec.data import movielens


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text_or_bytes) -> Path of a file in tmp_path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            path.write_bytes(content)
        return path

    return _write


@pytest.fixture
def cli_main(monkeypatch):
    """edgerec.cli.main with only the data sub-commands registered (fast, isolated)."""
    monkeypatch.setattr(edgerec.cli, "COMMAND_MODULES", ("edgerec.data.cli",))
    return edgerec.cli.main


INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t5\t100\n1\t11\t4\t90\n1\t12\t3\t95\n"
)
FILES = {
    "ml-100k.inter": INTER.encode(),
    "ml-100k.item": b"item_id:token\n10\n11\n",
    "ml-100k.user": b"user_id:token\n1\n",
    "ml-100k.kg": b"",
    "ml-100k.link": b"",
}


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch) -> Path:
    """A small wheel-shaped zip, with the pinned hashes patched to match it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        zf.writestr("recbole/dataset_example/other/x.inter", "nope")
        zf.writestr("recbole/dataset_example/ml-100k/sub/ignored.txt", "nope")
        for name, data in FILES.items():
            zf.writestr(movielens.MEMBER_PREFIX + name, data)
    path = tmp_path / movielens.WHEEL_NAME
    path.write_bytes(buf.getvalue())
    monkeypatch.setattr(movielens, "WHEEL_SHA256", hashlib.sha256(buf.getvalue()).hexdigest())
    monkeypatch.setattr(
        movielens, "FILE_SHA256", {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}
    )
    return path
