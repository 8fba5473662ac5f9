"""Check edgerec's layer contracts with import-linter (``[tool.importlinter]`` in pyproject.toml).

Why a wrapper: edgerec is one distribution built from three source folders
(``edgerec/``, ``runtime/`` -> ``edgerec.runtime``, ``converters/`` ->
``edgerec.converters``; ``[tool.setuptools.package-dir]``). import-linter finds a package
by walking its folder, so on the source tree it would not see the two mapped
sub-packages. This script lays the folders out as the installed package has them (a copy
under ``build/layers/``) and runs ``lint-imports`` on that copy.

Usage: ``python tools/lint_layers.py [--root DIR]`` (``make lint`` runs it). Exit status
is import-linter's: 0 when every contract is kept, 1 when one is broken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stage_package(root: Path, stage: Path) -> None:
    """Copy every ``package-dir`` folder of ``root`` to where the wheel puts it."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    # parents first: "edgerec" before "edgerec.runtime"
    for name in sorted(package_dir, key=lambda n: n.count(".")):
        target = stage.joinpath(*name.split("."))
        shutil.copytree(root / package_dir[name], target, ignore=ignore, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="source tree (default: this repo)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    stage = root / "build" / "layers"
    stage_package(root, stage)
    # lint-imports puts the working directory first on sys.path: run it from the copy,
    # or the source folder edgerec/ (which lacks runtime/ and converters/) would shadow it.
    os.chdir(stage)
    sys.path.insert(0, str(stage))
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True)


if __name__ == "__main__":
    sys.exit(main())
