"""Build the tiny converter-made bundle the device suite runs against in CI.

Usage (from the repository root, in the dev venv — this needs TensorFlow, the
device suite itself does not)::

    python -m device_tests.make_bundle build/device-bundle [--force]

Does nothing when the folder already holds a bundle (unless ``--force``). The
bundle comes from ``tests.converters.tiny.build_tiny_bundle``: a synthetic
100-item catalog, a tiny teacher and a student converted to every target and
precision (~1-2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_tests.make_bundle", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="bundle folder to create")
    parser.add_argument("--force", action="store_true", help="rebuild an existing bundle")
    args = parser.parse_args(argv)
    if (args.out / "manifest.json").is_file() and not args.force:
        print(f"{args.out}: bundle exists (pass --force to rebuild)")
        return 0
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tests.converters.tiny import build_tiny_bundle

    t0 = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build_tiny_bundle(args.out)
    print(f"{args.out}: tiny bundle built in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
