"""The ``edgerec`` command line.

One command with sub-commands. Each sub-command lives in its own module that
exposes ``register(subparsers)``; handlers import heavy dependencies (TensorFlow,
ONNX, HTTP servers) lazily so ``edgerec --help`` stays fast and TF-free.

Exit codes: 0 ok, 1 unexpected error, 2 bad input or usage, 3 a quality gate
failed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgerec import __version__
from edgerec.cli_help import HelpFormatter
from edgerec.errors import EdgerecError

# Modules that contribute sub-commands, in the order --help lists them.
COMMAND_MODULES = (
    "edgerec.data.cli",
    "edgerec.teacher.cli",
    "edgerec.converters.cli",
    "edgerec.runtime.cli",
    "edgerec.bench.cli",
    "edgerec.coordinator.cli",
    "edgerec.release.cli",
    "edgerec.simulation.cli",
)

EPILOG = """\
examples:
  edgerec data fetch movielens-100k
  edgerec train --data movielens-100k --out runs/teacher
  edgerec eval runs/teacher --data movielens-100k

exit codes: 0 ok, 1 unexpected error, 2 bad input/usage, 3 quality gate failed
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="edgerec",
        description="edgerec: on-device sequential recommendation — train, convert, run.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgerec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgerec`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or 0)
    except EdgerecError as exc:
        print(f"edgerec {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
