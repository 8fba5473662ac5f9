"""Experiment of issue 11: a teacher that fuses a trained model with the item-kNN baseline.

On MovieLens-100K the tuned item-kNN baseline is above every teacher trained so far.
This benchmark asks two questions with one edgerec teacher directory (``edgerec train``):

1. Does a score fusion of the teacher and item kNN beat the best baseline on test with a
   CI above 0? Fused score = ``(1 - a) * log_softmax(teacher) + a * b * knn / max(knn)``
   with the kNN parameters tuned on validation (as the teacher gate does), the kNN fitted
   on the training sequences only, and ``a``, ``b`` chosen on the validation target.
2. Can the default student keep it? The fusion is exported as a SavedModel (the teacher
   network plus the kNN neighbour matrix, all TensorFlow ops), described by a
   ``teacher.toml`` and distilled by ``edgerec convert`` like any outside teacher, so the
   student, the teacher gate and the retention gate are the product's own.

    .venv/bin/python benchmarks/bench_teacher_fusion.py --teacher runs/teacher --seed 42
    .venv/bin/python benchmarks/bench_teacher_fusion.py --teacher T --config ema.toml

Results: ``benchmarks/results/teacher_fusion_ml100k.json`` (one entry per run, keyed by
teacher and converter settings); the fused teacher and bundles under ``--out``
(``benchmarks/out/fusion``, not committed). The fusion is an experiment, not a product
teacher kind: its neighbour matrix is dense (``n x n``), fine for ML-100K only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SCALES = (3.0, 10.0, 30.0)

TEACHER_TOML = """kind = "savedmodel"
path = "saved_model"

[input]
name = "item_seq"
max_len = {max_len}
dtype = "int32"
padding = "left"

[output]
name = "scores"

[vocabulary]
path = "items.json"
"""


def _log_softmax(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


class KnnPart:
    """The tuned item kNN as a dense neighbour matrix, scored as the fusion uses it."""

    def __init__(self, split: Any, params: dict[str, Any], model: Any) -> None:
        n = split.vocab.num_items
        self.params = params
        self.model = model
        self.backoff = np.asarray(model.scores([np.zeros(0, np.int64)])[0], np.float64)
        one_item = [np.array([i]) for i in range(1, n + 1)]
        self.matrix = (np.asarray(model.scores(one_item)) - self.backoff).astype(np.float32)

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        """kNN scores without the popularity back-off, divided by the row's maximum."""
        k = np.asarray(self.model.scores(histories)) - self.backoff
        top = k.max(axis=1, keepdims=True)
        return k / np.where(top > 0, top, 1.0)


def choose_weights(t_valid: np.ndarray, k_valid: np.ndarray, targets: np.ndarray) -> dict:
    """``a`` and ``b`` with the best validation NDCG@10."""
    from edgerec.metrics import metrics_from_ranks, target_ranks

    best: dict | None = None
    for a in ALPHAS:
        for b in SCALES:
            ranks = target_ranks((1 - a) * t_valid + a * b * k_valid, targets, None)
            ndcg = metrics_from_ranks(ranks, (10,))["NDCG@10"]
            if best is None or ndcg > best["valid_ndcg10"]:
                best = {"alpha": a, "scale": b, "valid_ndcg10": ndcg}
    assert best is not None
    return best


def export_fusion(model: Any, spec: Any, knn: KnnPart, weights: dict, folder: Path) -> Any:
    """The fused teacher as a SavedModel; returns the module (its ``serve`` scores rows)."""
    import tensorflow as tf

    history = spec.max_len - 1  # the teacher's row is the history plus its [MASK]
    last_k, decay = int(knn.params["last_k"]), float(knn.params["decay"])
    n = spec.num_items
    a, b = float(weights["alpha"]), float(weights["scale"])

    class Fusion(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.matrix = tf.constant(knn.matrix)
            self.decay = tf.constant([decay**j for j in range(last_k)], tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, history], tf.int32, name="item_seq")])
        def serve(self, item_seq: Any) -> dict[str, Any]:
            rows = tf.shape(item_seq)[0]
            with_mask = tf.concat([item_seq, tf.fill([rows, 1], spec.mask_id)], axis=1)
            logits = tf.cast(self.model(with_mask, training=False), tf.float32)
            recent = tf.reverse(item_seq[:, history - last_k :], axis=[1])  # newest first
            weighted = tf.one_hot(recent, n + 1)[:, :, 1:] * self.decay[None, :, None]
            k = tf.matmul(tf.reduce_sum(weighted, axis=1), self.matrix)
            top = tf.reduce_max(k, axis=1, keepdims=True)
            k = k / tf.where(top > 0, top, tf.ones_like(top))
            fused = (1 - a) * tf.nn.log_softmax(logits, axis=-1) + a * b * k
            return {"scores": tf.concat([tf.fill([rows, 1], -1e9), fused], axis=1)}

    fusion = Fusion()
    folder.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(
        fusion, str(folder / "saved_model"), signatures={"serving_default": fusion.serve}
    )
    (folder / "teacher.toml").write_text(TEACHER_TOML.format(max_len=history))
    return fusion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="edgerec teacher directory")
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--config", type=Path, help="converter TOML over default.toml")
    parser.add_argument("--epochs", type=int, help="maximum distillation epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/fusion")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks/results/teacher_fusion_ml100k.json"
    )
    args = parser.parse_args()

    from edgerec.converters.config import ConvertConfig
    from edgerec.converters.pipeline import convert
    from edgerec.data import leave_one_out, load_dataset
    from edgerec.metrics import metrics_from_ranks, target_ranks
    from edgerec.teacher.artifacts import load_teacher
    from edgerec.teacher.baselines import KNN, fit_baselines
    from edgerec.teacher.scoring import KerasScorer

    t0 = time.perf_counter()
    split = leave_one_out(load_dataset(args.data))
    suite = fit_baselines(split)
    tuned = suite.tuned[KNN]
    knn = KnnPart(split, tuned.params, tuned.build(split.vocab.num_items).fit(split.train))
    info, model = load_teacher(args.teacher)
    scorer = KerasScorer(model, info.feature_spec)
    valid_in, valid_t = split.valid_inputs(), np.asarray(split.valid_target)
    test_in, test_t = split.test_inputs(), np.asarray(split.test_target)
    t_valid, t_test = _log_softmax(scorer(valid_in)), _log_softmax(scorer(test_in))
    k_valid, k_test = knn.scores(valid_in), knn.scores(test_in)
    weights = choose_weights(t_valid, k_valid, valid_t)
    a, b = weights["alpha"], weights["scale"]
    fused_test = (1 - a) * t_test + a * b * k_test

    def ndcg(scores: np.ndarray, targets: np.ndarray) -> float:
        return metrics_from_ranks(target_ranks(scores, targets, None), (10,))["NDCG@10"]

    name = f"{args.teacher.name}-{args.config.stem if args.config else 'default'}"
    name += f"-e{args.epochs}" if args.epochs else ""
    folder = args.out / name
    fusion = export_fusion(model, info.feature_spec, knn, weights, folder / "teacher")
    (folder / "teacher" / "items.json").write_text(json.dumps(["[PAD]", *split.vocab.item_ids]))
    # the exported graph must score exactly what was measured in numpy
    rows = info.feature_spec.encode_batch(test_in)[:, :-1]
    exported = np.concatenate(
        [fusion.serve(rows[i : i + 256])["scores"].numpy()[:, 1:] for i in range(0, len(rows), 256)]
    )
    max_err = float(np.abs(exported - fused_test).max())
    if max_err > 1e-3:
        raise SystemExit(f"the exported fusion differs from the numpy one by {max_err}")
    build_s = time.perf_counter() - t0

    config = ConvertConfig.from_toml(args.config) if args.config else ConvertConfig.defaults()
    if args.epochs:
        config = config.with_overrides(epochs=args.epochs)
    t1 = time.perf_counter()
    result = convert(folder / "teacher" / "teacher.toml", split, folder / "bundle", config,
                     force=True, raise_on_gate=False, teacher_cache=args.out / "soft-targets",
                     progress=False, allow_weak_teacher=True)  # fmt: skip
    q = result.summary["quality"]
    history = result.summary.get("distillation_history", [])
    entry = {
        "name": name,
        "teacher": str(args.teacher),
        "teacher_seed": info.meta.get("seed"),
        "config": str(args.config) if args.config else None,
        "epochs": args.epochs,
        "knn": tuned.params,
        "fusion": weights,
        "valid_ndcg10": {"teacher": ndcg(t_valid, valid_t), "item kNN": ndcg(k_valid, valid_t)},
        "test_ndcg10": {
            "teacher": ndcg(t_test, test_t),
            "item kNN (train only)": ndcg(k_test, test_t),
            "fusion": ndcg(fused_test, test_t),
        },
        "exported_max_abs_err": max_err,
        "convert": {
            "status": result.status,
            "teacher_gate": result.summary["teacher"]["gate"],
            "teacher": q["teacher"],
            "baselines_test": q.get("baselines"),
            "default_artifact": q.get("artifact"),
            "default": q.get("default"),
            "ratio": q.get("ratio"),
            "bootstrap": q.get("bootstrap"),
            "distil_epochs": len(history),
            "best_valid": max((h["valid"]["NDCG@10"] for h in history), default=None),
            "seconds": round(time.perf_counter() - t1, 1),
        },
        "build_seconds": round(build_s, 1),
    }
    results = json.loads(args.results.read_text()) if args.results.exists() else {"runs": []}
    results.update(
        benchmark="teacher_fusion",
        data=args.data,
        machine=f"{platform.machine()} {__import__('os').cpu_count()} cpus",
        protocol="leave-one-out by time, full ranking, history kept, ties against the target",
    )
    results["runs"] = [r for r in results["runs"] if r["name"] != name] + [entry]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1))
    print(
        f"{name}: fusion test NDCG@10 {entry['test_ndcg10']['fusion']:.4f} (teacher "
        f"{entry['test_ndcg10']['teacher']:.4f}); student {q['default']['NDCG@10']:.4f}, "
        f"retention {q['ratio']:.3f}, {result.status}; wrote {args.results}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
