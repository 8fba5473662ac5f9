"""Benchmark: streaming load + build_sequences of a large synthetic CSV log.

Generates a synthetic log (default ~5M rows) with ``edgerec.data.generate_synthetic``,
then, in a fresh subprocess per measurement, loads it with ``load_interactions``,
builds sequences and the leave-one-out split, and records wall time and peak
memory (``ru_maxrss`` of that subprocess, and its baseline after imports). With
``--tracemalloc`` a second subprocess measures the peak of traced allocations
(numpy arrays included), which is slower but independent of the allocator.

    python benchmarks/bench_data_load.py                 # ~5M rows
    python benchmarks/bench_data_load.py --rows 1000000  # quicker

Writes ``benchmarks/results/data_load.json`` and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(path: str, use_tracemalloc: bool) -> dict:
    """Runs in a fresh interpreter: load, build sequences, split; report time and memory."""
    import tracemalloc

    import numpy as np  # noqa: F401  (imported before the baseline is taken)

    from edgerec.data import build_sequences, leave_one_out, load_interactions

    result: dict = {"baseline_rss_mb": _rss_mb(), "baseline_maxrss_mb": _maxrss_mb()}
    if use_tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    inter = load_interactions(path)
    t1 = time.perf_counter()
    result["after_load_maxrss_mb"] = _maxrss_mb()
    if use_tracemalloc:
        result["load_traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    dataset = build_sequences(inter, min_user_interactions=3)
    t2 = time.perf_counter()
    split = leave_one_out(dataset)
    t3 = time.perf_counter()
    if use_tracemalloc:
        result["total_traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    result.update(
        rows=len(inter),
        users=dataset.num_users,
        items=dataset.num_items,
        split_users=len(split.train),
        load_s=t1 - t0,
        build_s=t2 - t1,
        split_s=t3 - t2,
        peak_maxrss_mb=_maxrss_mb(),
        output_array_mb=(inter.users.nbytes + inter.items.nbytes + inter.timestamps.nbytes) / 2**20
        + (inter.events.nbytes / 2**20 if inter.events is not None else 0.0),
    )
    return result


def run_child(path: Path, use_tracemalloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path)]
    if use_tracemalloc:
        cmd.append("--tracemalloc")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="approximate row count")
    parser.add_argument("--mean-length", type=float, default=50.0)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="reuse/keep the CSV at this path")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure traced peak")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "data_load.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.tracemalloc)))
        return 0

    sys.path.insert(0, str(ROOT))
    import numpy as np

    from edgerec.data import generate_synthetic

    users = max(1, round(args.rows / args.mean_length))
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgerec-bench-")
        path = Path(tmp.name) / "synthetic.csv"
    else:
        path = args.data
    try:
        gen_s = None
        if not path.exists():
            t0 = time.perf_counter()
            generate_synthetic(users, args.items, args.mean_length, args.seed, out=path)
            gen_s = time.perf_counter() - t0
        file_mb = path.stat().st_size / 2**20
        runs = {"rss": run_child(path, False)}
        if args.tracemalloc:
            runs["tracemalloc"] = run_child(path, True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    r = runs["rss"]
    rows = r["rows"]
    result = {
        "benchmark": "data_load",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "data": {
            "rows": rows,
            "users": users,
            "items": args.items,
            "mean_length": args.mean_length,
            "file_mb": round(file_mb, 1),
            "generate_s": round(gen_s, 2) if gen_s is not None else None,
        },
        "load_s": round(r["load_s"], 3),
        "load_rows_per_s": round(rows / r["load_s"]),
        "load_mb_per_s": round(file_mb / r["load_s"], 1),
        "build_sequences_s": round(r["build_s"], 3),
        "leave_one_out_s": round(r["split_s"], 3),
        "baseline_rss_mb": round(r["baseline_rss_mb"], 1),
        "load_peak_rss_mb": round(r["after_load_maxrss_mb"], 1),
        "peak_rss_mb": round(r["peak_maxrss_mb"], 1),
        "peak_over_baseline_mb": round(r["peak_maxrss_mb"] - r["baseline_rss_mb"], 1),
        "peak_over_baseline_per_file_mb": round(
            (r["peak_maxrss_mb"] - r["baseline_rss_mb"]) / file_mb, 2
        ),
        "load_peak_over_baseline_per_file_mb": round(
            (r["after_load_maxrss_mb"] - r["baseline_rss_mb"]) / file_mb, 2
        ),
        "interactions_arrays_mb": round(r["output_array_mb"], 1),
        "sequences": {"users": r["users"], "items": r["items"]},
    }
    if "tracemalloc" in runs:
        t = runs["tracemalloc"]
        result["tracemalloc"] = {
            "load_peak_mb": round(t["load_traced_peak_mb"], 1),
            "total_peak_mb": round(t["total_traced_peak_mb"], 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    table = [
        ("rows", f"{rows:,}"),
        ("file size", f"{file_mb:.1f} MB"),
        ("load", f"{r['load_s']:.2f} s  ({rows / r['load_s'] / 1e6:.2f} M rows/s)"),
        ("build_sequences", f"{r['build_s']:.2f} s"),
        ("leave_one_out", f"{r['split_s']:.2f} s"),
        ("RSS baseline", f"{r['baseline_rss_mb']:.0f} MB"),
        (
            "peak RSS after load",
            f"{r['after_load_maxrss_mb']:.0f} MB "
            f"(+{result['load_peak_over_baseline_per_file_mb']:.2f}x file)",
        ),
        (
            "peak RSS total",
            f"{r['peak_maxrss_mb']:.0f} MB (+{result['peak_over_baseline_per_file_mb']:.2f}x file)",
        ),
    ]
    if "tracemalloc" in result:
        tm = result["tracemalloc"]
        table.append(
            ("traced peak", f"load {tm['load_peak_mb']} MB, total {tm['total_peak_mb']} MB")
        )
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
