"""Teacher quality and training time on MovieLens-100K over several seeds.

Runs the real CLI for each seed (``edgerec train`` then ``edgerec eval --json``),
so the numbers are exactly what a user gets. Protocol: leave-one-out by time,
full ranking over all 1682 items, no sampled negatives, model selection on
validation only, max length 50.

    .venv/bin/python benchmarks/bench_teacher.py --seeds 42 43 44

Writes ``benchmarks/results/teacher.json`` and prints mean ± sd per protocol.

``--regimes`` instead measures the teacher against the tuned baselines (most
popular, item transition, item kNN; parameters chosen on validation) on
MovieLens-100K and on synthetic logs from ``edgerec data synth`` configured to
differ (see :data:`REGIMES`), each through ``edgerec train --json`` (which reports
the teacher gate and the test table with paired-bootstrap CIs):

    .venv/bin/python benchmarks/bench_teacher.py --regimes all --seeds 42 43 44
    .venv/bin/python benchmarks/bench_teacher.py --regimes all --baselines-only
    .venv/bin/python benchmarks/bench_teacher.py --regimes all --smoke   # minutes, tiny

writing ``benchmarks/results/teacher_regimes.json`` (``--smoke`` writes under
``benchmarks/out/``: its numbers are a check that the script runs, not results).
For a synthetic regime the generator's own optimum is reported too
(:mod:`edgerec.data.synth_oracle`: the distribution each event was drawn from, knowing the
user's hidden taste clusters), so a teacher's figure reads as a fraction of the best
achievable.
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


#: synthetic regimes: ``edgerec data synth`` arguments and generator options
REGIMES: dict[str, dict] = {
    # each item has a few likely successors; short sequences (short epochs)
    "strong-transitions-short": {
        "users": 3000,
        "items": 2000,
        "mean_length": 8,
        "options": {"p_chain": 0.8, "p_stay": 0.1, "p_noise": 0.02},
    },
    # long sequences driven by per-user taste clusters, weak item transitions
    "long-range-taste": {
        "users": 2000,
        "items": 2000,
        "mean_length": 40,
        "options": {"p_chain": 0.05, "p_stay": 0.3, "p_noise": 0.05, "p_taste": 0.9},
    },
    # tiny clusters and a high stay probability: users come back to the same items
    "repeat-consumption": {
        "users": 2000,
        "items": 1000,
        "mean_length": 25,
        "options": {"clusters": 250, "p_chain": 0.1, "p_stay": 0.7, "p_noise": 0.02},
    },
    # the default generator on a larger catalog
    "large-catalog": {"users": 5000, "items": 50000, "mean_length": 20, "options": {}},
}
SMOKE_TEACHER = """[model]
max_len = 12
d_model = 16
num_blocks = 1
num_heads = 2
ffn_dim = 32
[train]
batch_size = 64
min_steps = 0
"""


def _regime_args(name: str, smoke: bool) -> tuple[int, int, float, dict]:
    """``(users, items, mean_length, options)`` of a synthetic regime."""
    spec = REGIMES[name]
    users, items = spec["users"], spec["items"]
    options = dict(spec["options"])
    if smoke:
        users, items = 300, min(items, 300)
        if "clusters" in options:
            options["clusters"] = min(options["clusters"], items // 4)
    return users, items, spec["mean_length"], options


def _regime_data(name: str, work: Path, smoke: bool) -> str:
    """The ``--data`` argument of a regime (a synthetic CSV is generated once)."""
    if name == "ml100k":
        return "movielens-100k"
    from edgerec.data.synth import generate_synthetic

    users, items, mean_length, options = _regime_args(name, smoke)
    path = work / f"{name}{'-smoke' if smoke else ''}.csv"
    if not path.exists():
        generate_synthetic(users, items, mean_length, 0, out=path, **options)
    return str(path)


def _optimum(name: str, data: str, smoke: bool) -> dict | None:
    """The generator's oracle on the regime's test and validation targets (None for
    real data): the next-item distribution the log was drawn from, knowing each user's
    hidden taste clusters, ranked under the same protocol."""
    if name == "ml100k":
        return None
    from edgerec.data import leave_one_out, load_dataset
    from edgerec.data.synth import generate_synthetic
    from edgerec.data.synth_oracle import NextItemOracle, oracle_ranks
    from edgerec.metrics import metrics_from_ranks

    users, items, mean_length, options = _regime_args(name, smoke)
    log = generate_synthetic(users, items, mean_length, 0, **options)  # same log, in memory
    split = leave_one_out(load_dataset(data))
    oracle = NextItemOracle(log.config)
    return {
        which: metrics_from_ranks(oracle_ranks(oracle, split, log.taste, which=which), (10,))
        for which in ("test", "valid")
    }


def _baselines(data: str) -> dict:
    """Tuned baselines' test metrics on ``data`` (no training)."""
    from edgerec.data import leave_one_out, load_dataset
    from edgerec.metrics import evaluate
    from edgerec.teacher.baselines import fit_baselines

    dataset = load_dataset(data)
    split = leave_one_out(dataset)
    t0 = time.perf_counter()
    suite = fit_baselines(split)
    inputs = split.test_inputs()
    test = {
        name: evaluate(fn, inputs, split.test_target).metrics
        for name, fn in suite.test_models.items()
    }
    return {
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": dataset.num_interactions,
        "test": test,
        "chosen_on_validation": suite.params(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def regimes_main(args: argparse.Namespace) -> int:
    """``--regimes``: teacher vs tuned baselines on ML-100K and synthetic regimes."""
    names = ["ml100k", *REGIMES] if args.regimes == "all" else args.regimes.split(",")
    unknown = [n for n in names if n != "ml100k" and n not in REGIMES]
    if unknown:
        raise SystemExit(f"unknown regime(s) {unknown}; choose from ml100k, {', '.join(REGIMES)}")
    work = ROOT / "benchmarks" / "out" / "teacher-regimes"
    work.mkdir(parents=True, exist_ok=True)
    config = args.config
    if args.smoke and config is None:
        config = work / "smoke-teacher.toml"
        config.write_text(SMOKE_TEACHER)
    out = args.out
    if out == DEFAULT_OUT:
        out = (
            work / "smoke.json" if args.smoke else ROOT / "benchmarks/results/teacher_regimes.json"
        )
    results: dict = {}
    for name in names:
        data = _regime_data(name, work, args.smoke)
        entry: dict = {"data": data, "generator": REGIMES.get(name)}
        entry["optimum"] = _optimum(name, data, args.smoke)
        entry["baselines"] = _baselines(data)
        runs = []
        for seed in [] if args.baselines_only else args.seeds:
            cmd = [*EDGEREC, "train", "--data", data, "--seed", str(seed), "--json"]
            cmd += ["--out", str(args.runs / name / f"seed{seed}"), "--no-progress"]
            cmd += ["--allow-weak-teacher"]  # measure the teacher whatever the gate says
            if config:
                cmd += ["--config", str(config)]
            if args.smoke:
                cmd += ["--steps", "20"]
            t0 = time.perf_counter()
            train = json.loads(run(cmd))
            mode = train["test"]["modes"]["none"]
            runs.append(
                {
                    "seed": seed,
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "best_step": train.get("best_step"),
                    "steps": train.get("steps"),
                    "teacher_gate_passed": train["teacher_gate"]["passed"],
                    "teacher": mode["teacher"],
                    "teacher_over_optimum_ndcg10": (
                        mode["teacher"]["NDCG@10"] / entry["optimum"]["test"]["NDCG@10"]
                        if entry["optimum"]
                        else None
                    ),
                    "teacher_minus_baseline_ndcg10": {
                        "most popular": mode["bootstrap_ndcg_teacher_minus_popularity"],
                        **{
                            k: v["bootstrap_ndcg_teacher_minus_baseline"]
                            for k, v in mode.get("baselines", {}).items()
                        },
                    },
                }
            )
            print(
                f"{name} seed {seed}: teacher NDCG@10 {mode['teacher']['NDCG@10']:.4f}, "
                f"gate {'passed' if runs[-1]['teacher_gate_passed'] else 'FAILED'}",
                flush=True,
            )
        entry["teacher_runs"] = runs
        results[name] = entry
        row = "  ".join(f"{k} {v['NDCG@10']:.4f}" for k, v in entry["baselines"]["test"].items())
        if entry["optimum"]:
            row += f"  optimum {entry['optimum']['test']['NDCG@10']:.4f}"
        print(f"{name}: test NDCG@10 {row}", flush=True)
    payload = {
        "benchmark": "teacher_regimes",
        "smoke": bool(args.smoke),
        "seeds": [] if args.baselines_only else args.seeds,
        "protocol": "leave-one-out by time, full ranking, ties against the target, history "
        "kept; baseline parameters chosen on the validation target only",
        "machine": f"{platform.machine()} {__import__('os').cpu_count()} cpus",
        "command": " ".join(sys.argv),
        "regimes": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return 0


DEFAULT_OUT = ROOT / "benchmarks" / "results" / "teacher.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--regimes", help="'all' or a comma list of ml100k and the synthetic regimes"
    )
    parser.add_argument(
        "--baselines-only", action="store_true", help="with --regimes: no teacher training"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="with --regimes: tiny data and model, 20 steps"
    )
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-teacher")
    parser.add_argument("--config", type=Path, help="teacher TOML (default: built-in)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.regimes:
        return regimes_main(args)

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
