"""Packaging rules: every package folder ships in the wheel; core imports stay TF-free."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.import_check import heavy_modules_loaded

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tf2onnx")


def _package_folders() -> set[str]:
    """Import names of every folder with an __init__.py under the mapped roots."""
    mapping = {
        "edgerec": "edgerec",
        "edgerec.converters": "converters",
        "edgerec.runtime": "runtime",
    }
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    missing = _package_folders() - listed
    assert not missing, f"add these to [tool.setuptools] packages: {sorted(missing)}"


@pytest.mark.slow
def test_wheel_contains_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edgerec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in _package_folders():
        init = package.replace(".", "/") + "/__init__.py"
        assert init in names, f"{init} missing from {wheel.name}"
    assert not any(n.startswith(("runtime/", "converters/")) for n in names), (
        "top-level runtime/ or converters/ leaked into the wheel"
    )
    assert "edgerec/teacher/default.toml" in names


def test_core_runtime_and_cli_import_without_tensorflow() -> None:
    code = (
        "import edgerec, edgerec.runtime, edgerec.cli, edgerec.data, edgerec.metrics\n"
        "edgerec.cli.build_parser()"
    )
    assert heavy_modules_loaded(code, HEAVY) == []


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgerec", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for command in ("data", "train", "eval"):
        assert command in out
    assert "examples:" in out
