"""Benchmark: ``edgerec simulate-federated`` on MovieLens-100K and on a synthetic population.

Runs the command (a subprocess each, so the numbers are the command's own) and prints
its table; each run's ``result.json`` is copied to ``benchmarks/results/fedsim-<run>.json``
(models and work files stay under ``benchmarks/out/``, not committed).

* ``ml100k``: time split at the 0.8 quantile, the shipped model built by the command
  (teacher d=64, student d=48, see ``edgerec/simulation/shipped_bundle.py``) unless
  ``--ml-bundle`` reuses one, federated rows through the real coordinator over HTTP.
* ``synth``: ``--synth-users`` users from ``edgerec data synth``'s generator with the
  post-cut-off trend shift of ``edgerec/simulation/population.py`` (cut-off at the 0.5
  quantile: ~54k devices for 100k users), a smaller teacher/student (L=20; the TOML
  files below), federated rows aggregated in-process (same device pipeline and
  fixed-point sum; no HTTP, no SecAgg masks — 50k devices over HTTP do not fit this
  machine's budget). ``--synth-transport http`` runs the rows through the real
  coordinator instead (use a smaller population, e.g. 20k users and q = 0.1 for
  ~1,000-device cohorts).

``--eval-protocol held-out-devices`` passes the protocol on (half of the devices never
train and are judged on all their post-cut-off events); its results are kept as
``fedsim-<run>-heldout.json``.

Usage::

    .venv/bin/python benchmarks/bench_federated_sim.py --parts ml100k
    .venv/bin/python benchmarks/bench_federated_sim.py --parts synth --synth-bundle B
    .venv/bin/python benchmarks/bench_federated_sim.py --parts synth --synth-users 20000 \
        --synth-cohort-fraction 0.1 --synth-rounds 3 --epsilons 8 --synth-transport http
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"  # work folders (not committed)
RESULTS = Path(__file__).resolve().parent / "results"

SYNTH_TEACHER = """\
[model]
max_len = 20
d_model = 64
num_heads = 2
ffn_dim = 256

[train]
epochs = 10
patience = 3
batch_size = 256
eval_batch_size = 1024
"""

SYNTH_CONVERT = """\
[student]
d_model = 32
num_heads = 2
ffn_dim = 128

[distil]
epochs = 8
patience = 3
batch_size = 512

[export]
calibration_samples = 100

[validate]
max_eval_users = 2000

[gates]
quality_min_ratio = 0.8  # at 0.9 this student (d=32) was rejected: 89.0% of the teacher
"""


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def keep_result(run_name: str) -> Path:
    """Copy ``OUT/<run_name>/result.json`` into the committed results folder."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept = RESULTS / f"{run_name}.json"
    shutil.copyfile(OUT / run_name / "result.json", kept)
    print(f"wrote {kept}")
    return kept


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default="ml100k,synth", help="comma list: ml100k,synth")
    p.add_argument("--ml-bundle", type=Path, help="reuse a bundle built on the ML-100K split")
    p.add_argument("--ml-rounds", type=int, default=5)
    p.add_argument("--ml-cohort-fraction", type=float, default=0.5)
    p.add_argument("--synth-bundle", type=Path, help="reuse a bundle built on the synthetic split")
    p.add_argument("--synth-users", type=int, default=100_000)
    p.add_argument("--synth-rounds", type=int, default=100)
    p.add_argument("--synth-cohort-fraction", type=float, default=0.02)
    p.add_argument("--synth-transport", choices=("inprocess", "http"), default="inprocess")
    p.add_argument("--epsilons", default="1 2 4 8")
    p.add_argument(
        "--eval-protocol", choices=("last-event", "held-out-devices"), default="last-event"
    )
    args = p.parse_args()
    parts = set(args.parts.split(","))
    exe = [sys.executable, "-m", "edgerec", "simulate-federated", "--no-progress"]
    exe += ["--eval-protocol", args.eval_protocol]
    tag = "-heldout" if args.eval_protocol == "held-out-devices" else ""
    eps = args.epsilons.split()
    if "ml100k" in parts:
        cmd = exe + ["--data", "movielens-100k", "--out", str(OUT / f"fedsim-ml100k{tag}")]
        cmd += ["--rounds", str(args.ml_rounds), "--cohort-fraction", str(args.ml_cohort_fraction)]
        cmd += ["--epsilons", *eps]
        if args.ml_bundle:
            cmd += ["--bundle", str(args.ml_bundle)]
        print(f"ml100k: {run(cmd):.0f} s")
        keep_result(f"fedsim-ml100k{tag}")
    if "synth" in parts:
        cfg = OUT / "fedsim-synth-config"
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "teacher.toml").write_text(SYNTH_TEACHER)
        (cfg / "convert.toml").write_text(SYNTH_CONVERT)
        cmd = exe + ["--synth-users", str(args.synth_users), "--synth-items", "500"]
        name = f"fedsim-synth-{args.synth_users}-{args.synth_transport}{tag}"
        cmd += ["--cutoff-quantile", "0.5", "--out", str(OUT / name)]
        cmd += ["--teacher-config", str(cfg / "teacher.toml")]
        cmd += ["--convert-config", str(cfg / "convert.toml")]
        cmd += ["--transport", args.synth_transport]
        cmd += ["--cohort-fraction", str(args.synth_cohort_fraction)]
        cmd += ["--rounds", str(args.synth_rounds), "--max-examples", "8", "--max-eval", "10000"]
        cmd += ["--epsilons", *eps]
        if args.synth_bundle:
            cmd += ["--bundle", str(args.synth_bundle)]
        print(f"synth: {run(cmd):.0f} s")
        keep_result(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
