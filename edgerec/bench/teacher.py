"""The teacher through TensorFlow: what a user without edgerec would run (imports TF).

``edgerec bench`` runs this module in a subprocess, so TensorFlow never enters the
benchmark (runtime) process::

    echo '{"teacher": "runs/teacher", "histories": [["50", "181"]], "runs": 200}' \\
        | python -m edgerec.bench.teacher

One next-item prediction is: raw ids -> indices with the teacher's vocabulary ->
input row -> the model -> numpy top-k with the history excluded -> raw ids. Two
TF paths are timed:

* ``saved_model``: ``tf.saved_model.load(teacher/saved_model)`` and its
  ``serving_default`` signature (the usual TF serving path; a compiled graph);
* ``keras``: ``model(x, training=False)`` on the loaded ``model.keras`` (eager).

It prints one JSON line with import/load times, RSS and latency per path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def _rows(histories: list[list[str]], info: Any, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """Index histories for the teacher; sampled ones when the catalogs do not overlap."""
    vocab = info.vocab
    mapped = [
        np.array([j for j in map(vocab.get, h) if j is not None], np.int64) for h in histories
    ]
    given = sum(len(h) for h in histories)
    if given and sum(len(m) for m in mapped) >= given / 2:
        return mapped, "bundle histories mapped through the teacher's vocabulary"
    rng = np.random.default_rng(seed)
    lengths = [max(1, len(h)) for h in histories] or [info.feature_spec.history_len]
    sampled = [rng.integers(1, vocab.num_items + 1, size=n) for n in lengths]
    return sampled, "sampled from the teacher's catalog (the bundle's ids are not in it)"


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "runs": int(ms.size),
    }


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Load the teacher with TensorFlow and time next-item predictions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = int(args.get("threads", 1))
    runs = int(args.get("runs", 200))
    warmup = int(args.get("warmup", 20))
    k = int(args.get("k", 10))
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras  # noqa: F401

    t1 = time.perf_counter()
    from edgerec.teacher.artifacts import load_teacher

    info, model = load_teacher(args["teacher"])
    t2 = time.perf_counter()
    spec = info.feature_spec
    vocab = info.vocab
    histories, source = _rows(args.get("histories", []), info)
    raw_histories = [vocab.decode(h.tolist()) for h in histories]
    index = vocab.get

    def predict(history: list[str], run: Any) -> list[str]:
        idx = np.array([j for j in map(index, history) if j is not None], np.int64)
        row = spec.encode(idx)[None, :]
        scores = np.asarray(run(row))[0].astype(np.float32, copy=True)
        scores[idx - 1] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return vocab.decode((top + 1).tolist())

    paths: dict[str, Any] = {}

    def keras_run(row: np.ndarray) -> np.ndarray:
        return model(row, training=False).numpy()

    runners = {"keras": keras_run}
    saved_dir = info.path / "saved_model"
    load_saved_s = None
    if saved_dir.is_dir():
        t = time.perf_counter()
        loaded = tf.saved_model.load(str(saved_dir))
        fn = loaded.signatures["serving_default"]
        load_saved_s = time.perf_counter() - t
        (name,) = fn.structured_input_signature[1].keys()

        def saved_run(row: np.ndarray) -> np.ndarray:
            out = fn(**{name: tf.constant(row, tf.int32)})
            return next(iter(out.values())).numpy()

        runners = {"saved_model": saved_run, **runners}
    n = len(raw_histories)
    for label, run in runners.items():
        for i in range(warmup):
            predict(raw_histories[i % n], run)
        durations = []
        for i in range(runs):
            t = time.perf_counter()
            predict(raw_histories[i % n], run)
            durations.append(time.perf_counter() - t)
        paths[label] = _stats(durations)
    fastest = min(paths, key=lambda p: paths[p]["p50_ms"])
    return {
        "teacher": str(info.path),
        "fingerprint": info.fingerprint,
        "config": asdict(info.config.model),
        "num_items": vocab.num_items,
        "max_len": spec.max_len,
        "num_params": int(sum(int(np.prod(w.shape)) for w in model.weights)),
        "threads": threads,
        "histories": source,
        "tensorflow": tf.__version__,
        "import_s": t1 - t0,
        "load_keras_s": t2 - t1,
        "load_saved_model_s": load_saved_s,
        "rss_mb_start": rss0,
        "rss_mb": _rss_mb(),
        "paths": paths,
        "fastest": fastest,
        "p50_ms": paths[fastest]["p50_ms"],
        "p99_ms": paths[fastest]["p99_ms"],
    }


def main() -> int:
    """Read the JSON arguments from stdin, print the JSON result on stdout."""
    args = json.loads(sys.stdin.read())
    result = measure(args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
