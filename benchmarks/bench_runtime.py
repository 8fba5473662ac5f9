"""Benchmark: the on-device runtime (``edgerec bench``) on a bundle.

A thin wrapper around ``edgerec bench`` that writes ``benchmarks/results/runtime.json``
and prints the tables. Any further arguments are passed to ``edgerec bench``
(see ``edgerec bench --help``): threads, backends, precisions, runs, the teacher
for the TensorFlow comparison, the catalog sizes of the scaling curve.

Usage::

    .venv/bin/python benchmarks/bench_runtime.py                       # bundles/ml100k
    .venv/bin/python benchmarks/bench_runtime.py bundles/ml100k --teacher runs/teacher \\
        --threads 1 2 --catalog-sizes 1000 10000 100000 1000000
    .venv/bin/python benchmarks/bench_runtime.py /tmp/tinybundle --runs 300 --no-teacher
    .venv/bin/python benchmarks/bench_runtime.py bundles/ml100k --compare-with 981af2a

``--compare-with REF`` measures ``recommend`` of the runtime at git commit ``REF``
against the working tree's, side by side in one process (interleaved rounds of
100 calls, so load changes hit both alike), checks that both return the same
recommendations, prints p50/p90/p99 (wall and CPU time of the calling thread) and
the ratio, and writes nothing else. The baseline's own modules (features, ranking,
recommender) are used; the inference backends come from the working tree.

Exit code: that of ``edgerec bench`` (0 ok, 2 bad input, 3 a target missed with
``--fail-on-targets``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "runtime.json"
DEFAULT_BUNDLE = ROOT / "bundles" / "ml100k"


def main(argv: list[str] | None = None) -> int:
    """Run ``edgerec bench BUNDLE --out benchmarks/results/runtime.json [extra args]``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="other arguments are passed to 'edgerec bench'",
    )
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default: {OUT})")
    parser.add_argument(
        "--compare-with",
        metavar="REF",
        help="only compare recommend() latency with the runtime at git commit REF",
    )
    args, rest = parser.parse_known_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        parser.error(
            f"{args.bundle}: no bundle there; make one with 'edgerec convert' "
            "(or pass a bundle directory)"
        )
    if args.compare_with:
        return compare_with(args.compare_with, args.bundle)
    from edgerec.cli import main as edgerec_main

    # the CLI's global flags (-q, -v) go before the sub-command
    flags = [a for a in rest if a in ("-q", "--quiet", "-v", "-vv", "--verbose")]
    rest = [a for a in rest if a not in flags]
    return edgerec_main([*flags, "bench", str(args.bundle), "--out", str(args.out), *rest])


def _baseline_runtime(ref: str, into: Path):
    """Import ``runtime/`` as of git commit ``ref`` as package ``_baseline_runtime``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "runtime"],
        capture_output=True,
        check=True,
    ).stdout
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, **safe)
    package = into / "runtime"
    spec = importlib.util.spec_from_file_location(
        "_baseline_runtime", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["_baseline_runtime"] = module
    spec.loader.exec_module(module)
    return module


def compare_with(ref: str, bundle: Path, rounds: int = 60, calls: int = 100) -> int:
    """Interleaved ``recommend`` latency: the runtime at ``ref`` vs the working tree."""
    import numpy as np

    import edgerec.runtime as current
    from edgerec.bench import runtime_bench as rb

    with tempfile.TemporaryDirectory(prefix="edgerec-baseline-") as tmp:
        try:
            baseline = _baseline_runtime(ref, Path(tmp))
        except subprocess.CalledProcessError as exc:
            print(f"git archive {ref} failed: {exc.stderr.decode().strip()}", file=sys.stderr)
            return 2
        recs = {
            ref: baseline.Recommender.open(bundle, accelerator="cpu"),
            "working tree": current.Recommender.open(bundle, accelerator="cpu"),
        }
        histories = rb.bundle_histories(recs["working tree"].manifest, recs["working tree"].vocab)
        n = len(histories)
        for h in histories:  # same answers, or the comparison means nothing
            a, b = ([x.item_id for x in r.recommend(h)] for r in recs.values())
            if a != b:
                print(f"{ref} and the working tree recommend differently: {a} vs {b}")
                return 3
        wall: dict[str, list[float]] = {k: [] for k in recs}
        cpu: dict[str, list[float]] = {k: [] for k in recs}
        for r in range(rounds):
            order = list(recs.items()) if r % 2 else list(reversed(recs.items()))
            for name, rec in order:
                for i in range(20):
                    rec.recommend(histories[i % n])
                for i in range(calls):
                    c, t = time.thread_time(), time.perf_counter()
                    rec.recommend(histories[i % n])
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.thread_time() - c)
        print(f"recommend on {bundle} ({rounds * calls} calls each, interleaved), ms:")
        for name in recs:
            w = np.percentile(wall[name], [50, 90, 99]) * 1e3
            c = np.percentile(cpu[name], [50, 90, 99]) * 1e3
            print(f"  {name:>14}: wall p50 {w[0]:.3f} p90 {w[1]:.3f} p99 {w[2]:.3f} | "
                  f"CPU p50 {c[0]:.3f} p90 {c[1]:.3f} p99 {c[2]:.3f}")  # fmt: skip
        ratio_w = np.median(wall["working tree"]) / np.median(wall[ref])
        ratio_c = np.median(cpu["working tree"]) / np.median(cpu[ref])
        print(f"  working tree / {ref}: p50 wall {ratio_w:.3f}, CPU {ratio_c:.3f}")
        for rec in recs.values():
            rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
