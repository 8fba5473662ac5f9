"""Benchmark: the on-device runtime (``edgerec bench``) on a bundle.

A thin wrapper around ``edgerec bench`` that writes ``benchmarks/out/runtime.json``
and prints the tables. Any further arguments are passed to ``edgerec bench``
(see ``edgerec bench --help``): threads, backends, precisions, runs, the teacher
for the TensorFlow comparison, the catalog sizes of the scaling curve.

Usage::

    .venv/bin/python benchmarks/bench_runtime.py                       # bundles/ml100k
    .venv/bin/python benchmarks/bench_runtime.py bundles/ml100k --teacher runs/teacher \\
        --threads 1 2 --catalog-sizes 1000 10000 100000 1000000
    .venv/bin/python benchmarks/bench_runtime.py /tmp/tinybundle --runs 300 --no-teacher

Exit code: that of ``edgerec bench`` (0 ok, 2 bad input, 3 a target missed with
``--fail-on-targets``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "runtime.json"
DEFAULT_BUNDLE = ROOT / "bundles" / "ml100k"


def main(argv: list[str] | None = None) -> int:
    """Run ``edgerec bench BUNDLE --out benchmarks/out/runtime.json [extra args]``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="other arguments are passed to 'edgerec bench'",
    )
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default: {OUT})")
    args, rest = parser.parse_known_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        parser.error(
            f"{args.bundle}: no bundle there; make one with 'edgerec convert' "
            "(or pass a bundle directory)"
        )
    from edgerec.cli import main as edgerec_main

    # the CLI's global flags (-q, -v) go before the sub-command
    flags = [a for a in rest if a in ("-q", "--quiet", "-v", "-vv", "--verbose")]
    rest = [a for a in rest if a not in flags]
    return edgerec_main([*flags, "bench", str(args.bundle), "--out", str(args.out), *rest])


if __name__ == "__main__":
    sys.exit(main())
