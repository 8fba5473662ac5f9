"""Benchmark of ``edgerec convert`` (issue 3): the numbers the issue asks for.

Parts (``--parts``, default all):

* ``ml100k``     — ``convert()`` on MovieLens-100K with the real teacher and the
  default config: wall time (target <= 10 min), every artifact's size, parity,
  NDCG@10/HR@10 and p50 latency, the default int8-dynamic TFLite's NDCG@10 vs the
  teacher's (target >= 97%) with the paired-bootstrap CI of student − teacher.
* ``teacher``    — the teacher exported to fp32 TFLite: the default artifact must
  be <= 500 KB and >= 10x smaller than it.
* ``ablation``   — the same student trained on ground truth only (alpha = 0, same
  seed and epochs) vs the distilled one, test NDCG@10 with a paired bootstrap.
* ``determinism``— two conversions with the same inputs and seed (fewer epochs):
  are the metrics identical, and are the artifact bytes identical?
* ``scale``      — a synthetic catalog of ~100k items (``edgerec.data.synth``,
  heavy-tailed: 150k generated, ~100k interacted with): a smaller teacher
  (d=96, sampled softmax with 2,048 negatives) is trained, checked to beat
  most-popular, then converted with sampled distillation (2,048 negatives plus
  the teacher's top 32, item table started from the teacher's); int8-dynamic must
  be <= 10 MB (item table stored once), with time per pass and quality retention
  recorded. ``--scale-distil-negatives 0 --no-scale-init-from-teacher`` gives the
  full-catalog distillation (minutes per epoch on 2 cores). ``--allow-weak-teacher``
  converts a teacher that does not beat most-popular (size and time only).
* ``synth``      — retention on a larger synthetic dataset (20k users, all test
  users evaluated, 3k items) where the bootstrap CI is small: int8-dynamic
  student NDCG@10 >= 97% of the teacher's.

The synthetic parts cache data and teacher under ``out/synth/<name>-<recipe hash>/``
(delete it to retrain); a teacher that does not beat most-popular (paired-bootstrap
CI above 0) is not converted.

Results go to ``benchmarks/results/convert_<part>.json`` (``--results``) and a short table is
printed; bundles and caches stay under ``--out`` (``benchmarks/out/``, not committed).

    .venv/bin/python benchmarks/bench_convert.py --teacher runs/teacher
    nice -n 5 .venv/bin/python benchmarks/bench_convert.py --parts scale
    nice -n 5 .venv/bin/python benchmarks/bench_convert.py --parts synth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_convert")
PARTS = ("ml100k", "teacher", "ablation", "determinism", "scale", "synth")


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "note": "shared 2-core x86 (AVX512/VNNI/AMX) dev machine, no GPU",
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(out: Path, part: str, result: dict[str, Any]) -> Path:
    from edgerec.converters.report import _json_default

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"convert_{part}.json"
    path.write_text(json.dumps(result, indent=2, default=_json_default))
    log.info("wrote %s", path)
    return path


def run_convert(teacher: Path, data: Any, out: Path, config: Any) -> Any:
    from edgerec.converters.pipeline import convert

    # allow_weak_teacher: measure conversion whatever the teacher gate says (recorded)
    return convert(
        teacher,
        data,
        out,
        config,
        force=True,
        raise_on_gate=False,
        progress=True,
        allow_weak_teacher=True,
    )


def artifact_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    keys = (
        "name",
        "bytes",
        "NDCG@10",
        "HR@10",
        "max_abs_err",
        "top10_overlap",
        "latency_ms_p50",
        "gpu_ready",
        "gate",
    )
    return [{k: a.get(k) for k in keys} for a in summary["artifacts"]]


def part_ml100k(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from edgerec.converters.config import ConvertConfig

    config = ConvertConfig.from_toml(args.config).with_overrides(seed=args.seed)
    t0 = time.perf_counter()
    result = run_convert(args.teacher, args.data, args.out / "bundles" / "ml100k", config)
    wall = time.perf_counter() - t0
    state["ml100k"] = result
    s = result.summary
    q = s["quality"]
    default = next(a for a in s["artifacts"] if a["name"] == q["artifact"])
    return {
        "status": s["status"],
        "wall_seconds": round(wall, 1),
        "target_wall_seconds": 600,
        "timings": s["timings"],
        "default_artifact": q["artifact"],
        "default_bytes": default["bytes"],
        "teacher": q["teacher"],
        "student_keras": q["student_keras"],
        "default_metrics": q.get("default"),
        "retention_ratio": q.get("ratio"),
        "retention_target": 0.97,
        "bootstrap_student_minus_teacher": q.get("bootstrap"),
        "protocol": q["protocol"],
        "distillation": s["model"]["distillation"],
        "artifacts": artifact_rows(s),
        "gates": s["gates"]["failures"],
        "warnings": s["gates"]["warnings"],
    }


def part_teacher(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from edgerec.converters.config import Precision
    from edgerec.converters.passes.tflite import TFLiteOptions, convert_saved_model

    path = args.out / "teacher.fp32.tflite"
    t0 = time.perf_counter()
    flat = convert_saved_model(args.teacher / "saved_model", TFLiteOptions(Precision.FP32, path))
    path.write_bytes(flat)
    out = {"teacher_fp32_tflite_bytes": len(flat), "seconds": round(time.perf_counter() - t0, 1)}
    bundle = args.out / "bundles" / "ml100k"
    manifest = json.loads((bundle / "manifest.json").read_text()) if bundle.is_dir() else None
    if manifest:
        default = next(
            a for a in manifest["artifacts"] if a["name"] == manifest["default_artifact"]
        )
        out.update(
            {
                "default_artifact": default["name"],
                "default_bytes": default["bytes"],
                "ratio_teacher_over_default": round(len(flat) / default["bytes"], 2),
                "target_ratio": 10,
                "target_max_bytes": 500 * 1024,
                "meets_500kb": default["bytes"] <= 500 * 1024,
            }
        )
    return out


def part_ablation(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from edgerec.converters.config import ConvertConfig
    from edgerec.converters.passes import distil
    from edgerec.converters.pipeline import _eval_set, _keras_quality, prepare
    from edgerec.metrics import paired_bootstrap

    config = ConvertConfig.from_toml(args.config).with_overrides(seed=args.seed)
    result = state.get("ml100k")
    if result is None:  # distil here when the ml100k part was skipped
        prepared = prepare(args.teacher, args.data, args.out / "unused", config, force=True)
        from edgerec.teacher.artifacts import load_teacher

        _, teacher = load_teacher(args.teacher)
        distilled = distil.run(
            prepared.split,
            distil.DistilOptions(prepared.student_cfg, config.distil),
            teacher=teacher,
        )
        split, student_cfg = prepared.split, prepared.student_cfg
    else:
        distilled, split = result.student, result.split
        student_cfg = distilled.config
    t0 = time.perf_counter()
    ablation = distil.run(
        split,
        distil.DistilOptions(student_cfg, replace(config.distil, alpha=0.0), name="ablation"),
    )
    seconds = time.perf_counter() - t0
    histories, targets = _eval_set(split, config)
    mode = config.validation.exclude_mode
    m_d, ndcg_d = _keras_quality(distilled.model, distilled.spec, histories, targets, mode)
    m_a, ndcg_a = _keras_quality(ablation.model, ablation.spec, histories, targets, mode)
    boot = paired_bootstrap(ndcg_d, ndcg_a, seed=args.seed)
    return {
        "distilled": {
            "test": m_d,
            "best_epoch": distilled.best_epoch,
            "epochs_run": len(distilled.history),
            "alpha": distilled.alpha,
        },
        "ground_truth_only": {
            "test": m_a,
            "best_epoch": ablation.best_epoch,
            "epochs_run": len(ablation.history),
            "seconds": round(seconds, 1),
        },
        "bootstrap_distilled_minus_ablation": boot.to_json(),
        "distillation_wins": boot.diff > 0,
    }


def part_determinism(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from edgerec.converters.config import ConvertConfig

    config = ConvertConfig.from_toml(args.config).with_overrides(
        seed=args.seed, epochs=args.determinism_epochs
    )
    runs = []
    for i in range(2):
        out = args.out / "bundles" / f"determinism{i}"
        result = run_convert(args.teacher, args.data, out, config)
        manifest = json.loads((out / "manifest.json").read_text())
        runs.append(
            {
                "metrics": {
                    a["name"]: {
                        k: v for k, v in a["metrics"].items() if not k.startswith("latency")
                    }
                    for a in manifest["artifacts"]
                },
                "sha256": {a["name"]: a["sha256"] for a in manifest["artifacts"]},
                "version": manifest["model"]["version"],
                "quality": result.summary["quality"].get("default"),
            }
        )
    a, b = runs
    same_bytes = {k: a["sha256"][k] == b["sha256"].get(k) for k in a["sha256"]}
    return {
        "epochs": args.determinism_epochs,
        "metrics_identical": a["metrics"] == b["metrics"] and a["quality"] == b["quality"],
        "model_version_identical": a["version"] == b["version"],
        "artifact_bytes_identical": same_bytes,
        "all_bytes_identical": all(same_bytes.values()),
        "quality": a["quality"],
    }


SCALE_SYNTH = {"item_skew": 2.5, "zipf": 0.8}  # heavy-tailed: ~60% of events on 10% of items


def _teacher_config(args: argparse.Namespace, prefix: str) -> Any:
    from edgerec.teacher.config import TeacherConfig

    d = getattr(args, f"{prefix}_teacher_d")
    return TeacherConfig.from_json(
        {
            "model": {
                "d_model": d,
                "num_blocks": 2,
                "num_heads": getattr(args, f"{prefix}_teacher_heads"),
                "ffn_dim": 4 * d,
                "max_len": getattr(args, f"{prefix}_max_len"),
            },
            "train": {
                "epochs": getattr(args, f"{prefix}_teacher_epochs"),
                "patience": getattr(args, f"{prefix}_teacher_patience"),
                "seed": args.seed,
                "batch_size": 256,
                "learning_rate": getattr(args, f"{prefix}_teacher_lr"),
                "eval_batch_size": 256,
                "sampled_negatives": getattr(args, f"{prefix}_teacher_negatives"),
            },
        }
    )


def _subsample(split: Any, limit: int, seed: int) -> Any:
    """The same split restricted to ``limit`` users drawn at random (all when 0)."""
    from edgerec.data.dataset import LeaveOneOutSplit

    if not limit or limit >= len(split.train):
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split.train), limit, replace=False))
    return LeaveOneOutSplit(
        split.dataset,
        [split.train[int(i)] for i in keep],
        np.asarray(split.valid_target)[keep],
        np.asarray(split.test_target)[keep],
    )


def _train_synth_teacher(
    split: Any, tcfg: Any, teacher_dir: Path, valid_users: int, seed: int, name: str
) -> list[dict[str, Any]]:
    """Train (or reuse) the teacher; returns its per-epoch history."""
    if (teacher_dir / "teacher.json").is_file():
        log.info("reusing the teacher in %s", teacher_dir)
        return json.loads((teacher_dir / "history.json").read_text())
    from edgerec.teacher.artifacts import save_teacher
    from edgerec.teacher.train import train_teacher

    # Model selection uses `valid_users` random users' validation targets (never the
    # test targets), scored in chunks.
    valid = _subsample(split, valid_users, seed + 1)
    trained = train_teacher(split, tcfg, progress=True, valid_split=valid)
    history = [asdict(e) for e in trained.history]
    save_teacher(
        teacher_dir,
        trained.model,
        split.vocab,
        tcfg,
        {"dataset": {"name": name}, "seed": seed, "best_epoch": trained.best_epoch},
        history,
    )
    return history


def _teacher_vs_popularity(teacher_dir: Path, split: Any, config: Any) -> dict[str, Any]:
    """Teacher and most-popular NDCG@10 on the converter's evaluation users (test split)."""
    from edgerec.baselines import MostPopular
    from edgerec.converters.pipeline import _eval_set, _keras_quality
    from edgerec.metrics import evaluate, paired_bootstrap
    from edgerec.teacher.artifacts import load_teacher

    info, model = load_teacher(teacher_dir)
    histories, targets = _eval_set(split, config)
    mode = config.validation.exclude_mode
    m_t, ndcg_t = _keras_quality(model, info.feature_spec, histories, targets, mode)
    pop = MostPopular(split.vocab.num_items).fit(split.train)
    res = evaluate(
        pop.scores, histories, targets, ks=(10,), exclude_mode=mode, num_items=pop.num_items
    )
    boot = paired_bootstrap(ndcg_t, res.per_user(10)["NDCG@10"], seed=config.distil.seed)
    return {
        "teacher": m_t,
        "most_popular": res.metrics,
        "bootstrap_teacher_minus_popular": boot.to_json(),
        "teacher_beats_popular": bool(boot.low > 0),
    }


def _synthetic_convert(args: argparse.Namespace, prefix: str, name: str) -> dict[str, Any]:
    """Generate a synthetic log, train a teacher, check it beats popularity, convert."""
    from edgerec.converters.config import ConvertConfig
    from edgerec.data import generate_synthetic, leave_one_out, load_dataset

    def arg(key: str) -> Any:
        return getattr(args, f"{prefix}_{key}")

    synth = {
        "users": arg("users"),
        "items": arg("items"),
        "mean_length": arg("length"),
        "seed": args.seed,
        "item_skew": arg("item_skew"),
        "zipf": arg("zipf"),
    }
    tcfg = _teacher_config(args, prefix)
    recipe = json.dumps({"synth": synth, "teacher": tcfg.to_json(), "v": arg("valid_users")})
    work = args.out / "synth" / f"{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    csv = work / "synth.csv"
    if not csv.is_file():
        generate_synthetic(out=csv, **synth)
    dataset = load_dataset(csv)
    split = leave_one_out(dataset)
    t_data = time.perf_counter() - t0
    log.info(
        "%s data: %d users, %d items, %d interactions",
        name,
        dataset.num_users,
        dataset.num_items,
        dataset.num_interactions,
    )
    t0 = time.perf_counter()
    history = _train_synth_teacher(
        split, tcfg, work / "teacher", arg("valid_users"), args.seed, name
    )
    t_teacher = time.perf_counter() - t0
    config = ConvertConfig.from_toml(args.config).with_overrides(
        seed=args.seed, epochs=arg("epochs"), max_eval_users=arg("eval_users")
    )
    distil_over: dict[str, Any] = {
        "patience": arg("patience"),
        "sampled_negatives": arg("distil_negatives"),
        "init_from_teacher": arg("init_from_teacher"),
    }
    if arg("distil_lr"):
        distil_over["learning_rate"] = arg("distil_lr")
    config = replace(config, distil=replace(config.distil, **distil_over))
    t0 = time.perf_counter()
    check = _teacher_vs_popularity(work / "teacher", split, config)
    t_check = time.perf_counter() - t0
    log.info(
        "%s: teacher NDCG@10 %.4f vs most-popular %.4f (CI of diff [%+.4f, %+.4f])",
        name,
        check["teacher"]["NDCG@10"],
        check["most_popular"]["NDCG@10"],
        check["bootstrap_teacher_minus_popular"]["low"],
        check["bootstrap_teacher_minus_popular"]["high"],
    )
    out: dict[str, Any] = {
        "dataset": {
            "users": dataset.num_users,
            "items": dataset.num_items,
            "interactions": dataset.num_interactions,
            "generator": synth,
        },
        "teacher_config": tcfg.to_json(),
        "teacher_valid_users": arg("valid_users") or dataset.num_users,
        "teacher_history": [
            {k: e[k] for k in ("epoch", "loss", "valid", "seconds")} for e in history
        ],
        "teacher_check": check,
        "convert_config": {
            "distil": asdict(config.distil),
            "student": asdict(config.student),
            "max_eval_users": config.validation.max_eval_users,
        },
        "work_dir": str(work),
    }
    if not check["teacher_beats_popular"] and not args.allow_weak_teacher:
        log.error("%s: the teacher does not beat most-popular; not converting", name)
        out.update(status="teacher-not-better-than-popularity")
        out["seconds"] = {"data": round(t_data, 1), "teacher_train": round(t_teacher, 1)}
        return out
    t0 = time.perf_counter()
    result = run_convert(work / "teacher", split, args.out / "bundles" / name, config)
    t_convert = time.perf_counter() - t0
    s = result.summary
    q = s["quality"]
    rows = artifact_rows(s)
    dyn = next((r for r in rows if r["name"] == "tflite-int8-dynamic"), None)
    out.update(
        {
            "status": s["status"],
            "seconds": {
                "data": round(t_data, 1),
                "teacher_train": round(t_teacher, 1),
                "teacher_check": round(t_check, 1),
                "convert": round(t_convert, 1),
            },
            "timings": s["timings"],
            "distil_history": [
                {k: e[k] for k in ("epoch", "loss", "valid", "seconds")}
                for e in result.student.history
            ],
            "distil_best_epoch": result.student.best_epoch,
            "int8_dynamic_bytes": dyn["bytes"] if dyn else None,
            "target_max_bytes": 10 * 1024 * 1024,
            "table_bytes_int8_once": (dataset.num_items + 2) * s["model"]["config"]["d_model"],
            "teacher": q["teacher"],
            "student_keras": q["student_keras"],
            "default_artifact": q["artifact"],
            "default_metrics": q.get("default"),
            "retention_ratio": q.get("ratio"),
            "retention_target": 0.97,
            "bootstrap_student_minus_teacher": q.get("bootstrap"),
            "eval_users": q["num_users"],
            "protocol": q["protocol"],
            "artifacts": rows,
            "gates": s["gates"]["failures"],
            "warnings": s["gates"]["warnings"],
        }
    )
    return out


def part_scale(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    return _synthetic_convert(args, "scale", "synth100k")


def part_synth(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    return _synthetic_convert(args, "synth", "synth-quality")


def print_table(results: dict[str, dict[str, Any]]) -> None:
    lines = []
    if "ml100k" in results:
        r = results["ml100k"]
        b = r.get("bootstrap_student_minus_teacher") or {}
        lines.append(
            f"ml100k: {r['status']} in {r['wall_seconds']:.0f} s (target 600); default "
            f"{r['default_artifact']} {r['default_bytes']:,} B, NDCG@10 "
            f"{(r['default_metrics'] or {}).get('NDCG@10', float('nan')):.4f} vs teacher "
            f"{r['teacher']['NDCG@10']:.4f} = {r['retention_ratio']:.1%} (target 97%), "
            f"diff CI [{b.get('low', float('nan')):+.4f}, {b.get('high', float('nan')):+.4f}]"
        )
    if "teacher" in results and "ratio_teacher_over_default" in results["teacher"]:
        r = results["teacher"]
        lines.append(
            f"teacher fp32 TFLite {r['teacher_fp32_tflite_bytes']:,} B = "
            f"{r['ratio_teacher_over_default']}x the default artifact (target >= 10x)"
        )
    if "ablation" in results:
        r = results["ablation"]
        b = r["bootstrap_distilled_minus_ablation"]
        lines.append(
            f"ablation: distilled NDCG@10 {r['distilled']['test']['NDCG@10']:.4f} vs ground-truth"
            f"-only {r['ground_truth_only']['test']['NDCG@10']:.4f}, diff {b['diff']:+.4f} "
            f"CI [{b['low']:+.4f}, {b['high']:+.4f}]"
        )
    if "determinism" in results:
        r = results["determinism"]
        lines.append(
            f"determinism: metrics identical {r['metrics_identical']}, artifact bytes "
            f"identical {r['all_bytes_identical']}"
        )
    for part in ("scale", "synth"):
        if part not in results:
            continue
        r = results[part]
        c = r["teacher_check"]
        line = (
            f"{part}: {r['dataset']['users']:,} users, {r['dataset']['items']:,} items, "
            f"{r['status']}; teacher NDCG@10 {c['teacher']['NDCG@10']:.4f} vs most-popular "
            f"{c['most_popular']['NDCG@10']:.4f}"
        )
        if "retention_ratio" in r:
            b = r.get("bootstrap_student_minus_teacher") or {}
            line += (
                f"; int8-dynamic {(r['int8_dynamic_bytes'] or 0) / 2**20:.2f} MiB (target 10 MB),"
                f" convert {r['seconds']['convert']:.0f} s, retention "
                f"{r['retention_ratio'] or float('nan'):.1%} (target 97%) over "
                f"{r['eval_users']:,} users, diff CI [{b.get('low', float('nan')):+.4f}, "
                f"{b.get('high', float('nan')):+.4f}]"
            )
        lines.append(line)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "teacher")
    p.add_argument("--data", default="movielens-100k")
    p.add_argument("--config", type=Path, help="converter TOML (default: default.toml)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="work folder")
    p.add_argument(
        "--results",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="folder for convert_<part>.json",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument(
        "--allow-weak-teacher",
        action="store_true",
        help="convert even when the synthetic teacher does not beat most-popular (smoke tests)",
    )
    p.add_argument("--determinism-epochs", type=int, default=8)
    # scale: a 100k-item heavy-tailed catalog (150k generated, ~100k ever interacted with)
    p.add_argument("--scale-users", type=int, default=20000)
    p.add_argument("--scale-items", type=int, default=150000)
    p.add_argument("--scale-length", type=float, default=30.0)
    p.add_argument("--scale-item-skew", type=float, default=SCALE_SYNTH["item_skew"])
    p.add_argument("--scale-zipf", type=float, default=SCALE_SYNTH["zipf"])
    p.add_argument("--scale-max-len", type=int, default=50)
    p.add_argument("--scale-teacher-d", type=int, default=96)
    p.add_argument("--scale-teacher-heads", type=int, default=2)
    p.add_argument("--scale-teacher-epochs", type=int, default=3)
    p.add_argument("--scale-teacher-patience", type=int, default=3)
    p.add_argument("--scale-teacher-lr", type=float, default=2e-3)
    p.add_argument(
        "--scale-teacher-negatives",
        type=int,
        default=2048,
        help="sampled-softmax negatives per teacher step (0: full 100k-way softmax)",
    )
    p.add_argument("--scale-valid-users", type=int, default=2000)
    p.add_argument("--scale-epochs", type=int, default=3)
    p.add_argument("--scale-patience", type=int, default=3)
    p.add_argument("--scale-distil-lr", type=float, default=0.0, help="0: default.toml")
    p.add_argument("--scale-eval-users", type=int, default=2000)
    p.add_argument(
        "--scale-distil-negatives",
        type=int,
        default=2048,
        help="sampled negatives per distillation step (0: full-catalog KL and CE)",
    )
    p.add_argument(
        "--scale-init-from-teacher",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the student's item table from the teacher's (SVD projection)",
    )
    # synth: retention on many test users with a few thousand items (small CI)
    p.add_argument("--synth-users", type=int, default=20000)
    p.add_argument("--synth-items", type=int, default=3000)
    p.add_argument("--synth-length", type=float, default=25.0)
    p.add_argument("--synth-item-skew", type=float, default=2.5)
    p.add_argument("--synth-zipf", type=float, default=1.0)
    p.add_argument("--synth-max-len", type=int, default=30)
    p.add_argument("--synth-teacher-d", type=int, default=96)
    p.add_argument("--synth-teacher-heads", type=int, default=2)
    p.add_argument("--synth-teacher-epochs", type=int, default=10)
    p.add_argument("--synth-teacher-patience", type=int, default=3)
    p.add_argument("--synth-teacher-lr", type=float, default=2e-3)
    p.add_argument("--synth-teacher-negatives", type=int, default=0, help="0: full softmax")
    p.add_argument("--synth-valid-users", type=int, default=0)
    p.add_argument("--synth-epochs", type=int, default=10)
    p.add_argument("--synth-patience", type=int, default=3)
    p.add_argument("--synth-distil-lr", type=float, default=0.0, help="0: default.toml")
    p.add_argument("--synth-eval-users", type=int, default=0)
    p.add_argument("--synth-distil-negatives", type=int, default=0, help="0: full catalog")
    p.add_argument(
        "--synth-init-from-teacher", action=argparse.BooleanOptionalAction, default=False
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    needs_teacher = {"ml100k", "teacher", "ablation", "determinism"} & set(parts)
    if needs_teacher and not (args.teacher / "teacher.json").is_file():
        p.error(f"{args.teacher}: no teacher (train one with 'edgerec train' first)")
    state: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    funcs = {
        "ml100k": part_ml100k,
        "teacher": part_teacher,
        "ablation": part_ablation,
        "determinism": part_determinism,
        "scale": part_scale,
        "synth": part_synth,
    }
    for part in PARTS:
        if part not in parts:
            continue
        log.info("=== %s ===", part)
        t0 = time.perf_counter()
        result = funcs[part](args, state)
        result["part_seconds"] = round(time.perf_counter() - t0, 1)
        result["machine"] = machine()
        result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        result["teacher_dir"] = str(args.teacher)
        save(args.results, part, result)
        results[part] = result
    print_table(results)
    np.set_printoptions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
