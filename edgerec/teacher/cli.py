"""``edgerec train`` and ``edgerec eval``: the cloud teacher's sub-commands."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_EPILOG = """\
examples:
  edgerec train --data movielens-100k --out runs/teacher
  edgerec train --data movielens-100k --out runs/t2 --seed 7 --config teacher.toml
  edgerec train --data events.csv --out runs/shop --strategy mirrored
  edgerec train --data log.tsv --user-col uid --item-col sku --time-col ts --out runs/t3

The teacher directory holds model.keras, saved_model/ (static [1, L] int32
signature), vocab.json, teacher.json and history.json. Hyper-parameter defaults
are documented in edgerec/teacher/default.toml; --config overrides any subset.

After training, the teacher is gated on validation: it must beat most-popular
and the item-transition baseline (tuned on validation) by a margin whose 95%
paired-bootstrap CI excludes 0. exit codes: 0 trained and gated; 2 bad input;
3 the teacher is saved but failed the gate (--allow-weak-teacher: exit 0, and
teacher.json records the override).
"""

EVAL_EPILOG = """\
examples:
  edgerec eval runs/teacher --data movielens-100k
  edgerec eval runs/teacher --data movielens-100k --json > teacher_eval.json

Protocol: leave-one-out by time (last event = test), full ranking over the whole
catalog, no sampled negatives; reported with history kept in the ranking, with
the input-window items excluded, and with all earlier history excluded. The
baselines (most popular, item transition, item kNN) have their parameters chosen
on the validation target and are refitted on everything before the test target.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to the CLI."""
    from edgerec.cli_help import HelpFormatter
    from edgerec.data.cli import add_column_options

    p = sub.add_parser(
        "train",
        help="train the teacher (BERT4Rec or SASRec)",
        description="Train a teacher — BERT4Rec with the Cloze objective (default) or SASRec, "
        "causal next-item (model.kind in --config) — early-stopped on validation NDCG@10 "
        "(full ranking), then gated against most-popular and the item-transition baseline.",
        epilog=TRAIN_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset name (movielens-100k) or a log file")
    add_column_options(p)
    p.add_argument(
        "--allow-weak-teacher",
        action="store_true",
        help="exit 0 even when the teacher does not beat the baselines (recorded)",
    )
    p.add_argument("--out", required=True, type=Path, help="teacher directory to write")
    p.add_argument("--config", type=Path, help="TOML file overriding default.toml")
    p.add_argument("--seed", type=int, help="random seed (default: config train.seed)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: config)")
    p.add_argument("--patience", type=int, help="early-stopping patience (default: config)")
    p.add_argument(
        "--steps", type=int, help="optimizer-step budget, replaces --epochs (train.max_steps)"
    )
    p.add_argument(
        "--min-steps", type=int, help="no early stop before this many steps (train.min_steps)"
    )
    p.add_argument(
        "--strategy",
        default="default",
        choices=("default", "mirrored", "one-device", "multi-worker"),
        help="tf.distribute strategy (multi-worker reads TF_CONFIG)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the training summary as JSON")
    p.set_defaults(handler=run_train)

    e = sub.add_parser(
        "eval",
        help="test metrics of a teacher vs most-popular",
        description="Evaluate a teacher on the test split, next to the most-popular baseline.",
        epilog=EVAL_EPILOG,
        formatter_class=HelpFormatter,
    )
    e.add_argument("teacher", type=Path, help="teacher directory written by 'edgerec train'")
    e.add_argument("--data", required=True, help="dataset name (movielens-100k) or a log file")
    add_column_options(e)
    e.add_argument("--bootstrap", type=int, default=2000, help="paired-bootstrap resamples")
    e.add_argument("--json", action="store_true", help="print machine-readable JSON")
    e.set_defaults(handler=run_eval)


def _load_split(args: argparse.Namespace):
    from edgerec.data import leave_one_out, load_dataset
    from edgerec.data.cli import load_options

    dataset = load_dataset(args.data, **load_options(args))
    return dataset, leave_one_out(dataset)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``edgerec train``."""
    from edgerec.teacher.config import TeacherConfig

    config = TeacherConfig.from_toml(args.config).with_overrides(
        seed=args.seed,
        epochs=args.epochs,
        patience=args.patience,
        max_steps=args.steps,
        min_steps=args.min_steps,
    )
    dataset, split = _load_split(args)
    from edgerec.features import FeatureSpec
    from edgerec.teacher.artifacts import save_teacher
    from edgerec.teacher.train import train_teacher

    log.info(
        "training on %s: %d users, %d items, %d interactions",
        dataset.name,
        dataset.num_users,
        dataset.num_items,
        dataset.num_interactions,
    )
    t0 = time.perf_counter()
    checkpoints = args.out.with_name(f".{args.out.name}.checkpoint")
    result = train_teacher(
        split,
        config,
        strategy=args.strategy,
        progress=not args.no_progress,
        checkpoint_dir=checkpoints,
    )
    meta = {
        "dataset": {
            "name": dataset.name,
            "num_users": dataset.num_users,
            "num_items": dataset.num_items,
            "num_interactions": dataset.num_interactions,
        },
        "seed": config.train.seed,
        "strategy": args.strategy,
        "best_epoch": result.best_epoch,
        "epochs_run": result.history[-1].epoch if result.history else 0,
        "best_step": result.best_step,
        "steps": result.steps,
        "best_valid": result.best_valid,
        "train_seconds": round(result.seconds, 1),
    }
    from edgerec.teacher.baselines import fit_baselines
    from edgerec.teacher.evaluate import compare_with_popularity
    from edgerec.teacher.gate import enforce, gate_scorer
    from edgerec.teacher.scoring import KerasScorer

    scorer = KerasScorer(result.model, FeatureSpec(config.model.max_len, split.vocab.num_items))
    suite = fit_baselines(split)
    gate, _ = gate_scorer(scorer, split, suite)
    meta["teacher_gate"] = {**gate.to_json(), "allow_weak_teacher": args.allow_weak_teacher}
    meta["baselines"] = suite.params()
    history = [asdict(h) for h in result.history]
    save_teacher(args.out, result.model, split.vocab, config, meta, history)
    shutil.rmtree(checkpoints, ignore_errors=True)
    test = compare_with_popularity(scorer, scorer.spec, split, modes=("none",), suite=suite)
    meta["test"] = test
    meta["total_seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        v = result.best_valid
        print(
            f"teacher saved to {args.out}: best epoch {result.best_epoch}/{meta['epochs_run']} "
            f"(step {result.best_step}/{result.steps}), "
            f"valid NDCG@10 {v['NDCG@10']:.4f} HR@10 {v['HR@10']:.4f} "
            f"({result.seconds:.0f} s)"
        )
        _print_test_table(test, "teacher")
    enforce(gate, args.allow_weak_teacher, "edgerec train")
    return 0


def _print_test_table(result: dict, label: str) -> None:
    from edgerec.metrics import format_table
    from edgerec.teacher.evaluate import baseline_lines

    for mode in result["modes"].values():
        rows = [(label, mode["teacher"]), ("most popular", mode["popularity"])]
        rows += [(name, b["metrics"]) for name, b in mode.get("baselines", {}).items()]
        print(format_table(rows, mode["protocol"]))
        b = mode["bootstrap_ndcg_teacher_minus_popularity"]
        print(
            f"{label} - popularity NDCG@10: {b['diff']:+.4f} "
            f"(95% paired bootstrap CI {b['low']:+.4f} .. {b['high']:+.4f}, "
            f"{result['num_users']} users)"
        )
        print("\n".join(baseline_lines(mode, label)) + "\n")


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``edgerec eval``."""
    from edgerec.errors import InputError
    from edgerec.teacher.artifacts import read_teacher_info

    info = read_teacher_info(args.teacher)
    _, split = _load_split(args)
    if split.vocab.sha256() != info.vocab.sha256():
        raise InputError(
            f"{args.teacher}: the teacher's vocabulary ({info.vocab.num_items} items) does not "
            f"match the data {args.data!r} ({split.vocab.num_items} items); evaluate on the "
            "dataset the teacher was trained on"
        )
    from edgerec.teacher.artifacts import load_teacher
    from edgerec.teacher.baselines import fit_baselines
    from edgerec.teacher.evaluate import compare_with_popularity
    from edgerec.teacher.scoring import KerasScorer

    info, model = load_teacher(args.teacher)
    scorer = KerasScorer(model, info.feature_spec)
    result = compare_with_popularity(
        scorer,
        info.feature_spec,
        split,
        bootstrap_resamples=args.bootstrap,
        suite=fit_baselines(split),
    )
    result["teacher"] = str(args.teacher)
    result["seed"] = info.meta.get("seed")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_test_table(result, f"{getattr(info.config.model, 'kind', 'bert4rec')} teacher")
    return 0
