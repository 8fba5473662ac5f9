"""Teacher quality and training time on MovieLens-100K over several seeds.

Runs the real CLI for each seed (``edgerec train`` then ``edgerec eval --json``),
so the numbers are exactly what a user gets. Protocol: leave-one-out by time,
full ranking over all 1682 items, no sampled negatives, model selection on
validation only, max length 50.

    .venv/bin/python benchmarks/bench_teacher.py --seeds 42 43 44

Writes ``benchmarks/results/teacher.json`` and prints mean ± sd per protocol.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEREC = [sys.executable, "-m", "edgerec", "-q"]


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-teacher")
    parser.add_argument("--config", type=Path, help="teacher TOML (default: built-in)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "teacher.json"
    )
    args = parser.parse_args()

    per_seed = []
    for seed in args.seeds:
        out_dir = args.runs / f"seed{seed}"
        cmd = [
            *EDGEREC,
            "train",
            "--data",
            args.data,
            "--out",
            str(out_dir),
            "--seed",
            str(seed),
            "--no-progress",
            "--json",
        ]
        if args.config:
            cmd += ["--config", str(args.config)]
        t0 = time.perf_counter()
        train = json.loads(run(cmd))
        wall = time.perf_counter() - t0
        evaluation = json.loads(
            run([*EDGEREC, "eval", str(out_dir), "--data", args.data, "--json"])
        )
        per_seed.append(
            {"seed": seed, "train_wall_seconds": round(wall, 1), "train": train, "eval": evaluation}
        )
        m = evaluation["modes"]["none"]["teacher"]
        print(
            f"seed {seed}: NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} "
            f"best epoch {train['best_epoch']} train {wall:.0f} s",
            flush=True,
        )

    summary: dict = {}
    for mode in per_seed[0]["eval"]["modes"]:
        summary[mode] = {"protocol": per_seed[0]["eval"]["modes"][mode]["protocol"]}
        for model in ("teacher", "popularity"):
            for metric in ("NDCG@10", "HR@10", "MRR@10"):
                values = [s["eval"]["modes"][mode][model][metric] for s in per_seed]
                summary[mode][f"{model} {metric}"] = {
                    "mean": statistics.mean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values,
                }
    walls = [s["train_wall_seconds"] for s in per_seed]
    result = {
        "benchmark": "teacher",
        "data": args.data,
        "seeds": args.seeds,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"{__import__('os').cpu_count()} cpus".strip(),
        "train_wall_seconds": walls,
        "summary": summary,
        "per_seed": per_seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"\nteacher on {args.data}, seeds {args.seeds} (mean ± sd)")
    print(f"{'protocol':<32} {'model':<11} {'NDCG@10':>17} {'HR@10':>17}")
    for mode, rows in summary.items():
        for model in ("teacher", "popularity"):
            n, h = rows[f"{model} NDCG@10"], rows[f"{model} HR@10"]
            label = per_seed[0]["eval"]["modes"][mode]["label"]
            print(
                f"{label:<32} {model:<11} {n['mean']:.4f} ± {n['sd']:.4f}   "
                f"{h['mean']:.4f} ± {h['sd']:.4f}"
            )
    print(f"training wall time per seed: {', '.join(f'{w:.0f} s' for w in walls)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
