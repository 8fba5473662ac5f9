"""Runtime measurements behind ``edgerec bench`` (TensorFlow-free).

Everything here measures what a device sees, with the device's dependencies only
(numpy, LiteRT / ONNX Runtime, the standard library):

* :func:`bench_recommend` — p50/p95/p99 latency of one :meth:`Recommender.recommend`
  call (feature extraction + inference + top-k) on realistic histories, plus the
  time of each stage;
* :func:`bench_batch` — throughput of :meth:`Recommender.recommend_batch`;
* :func:`bench_recommend_for` — the same through a :class:`HistoryStore` (SQLite read);
* :func:`measure_load` — ``import edgerec.runtime`` + :meth:`Recommender.open` time
  and resident memory, each in a **fresh subprocess**;
* :func:`count_macs` — multiply-accumulates of a ``.tflite`` model, read from its
  operators and tensor shapes (flatbuffer schema shipped in ``ai-edge-litert``);
* :func:`gemm_rates` / :func:`roofline` — this host's single-core numpy GEMM rate at
  the model's own matmul shapes (and at a large square shape), in a subprocess with
  one BLAS thread, and the resulting lower bound on the model's latency (numpy's
  fixed per-call cost is measured and left out: it is not arithmetic).

The orchestration, the teacher comparison and the synthetic catalogs live in
:mod:`edgerec.bench` (the CLI side).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.bundle import Manifest
from edgerec.errors import EdgerecError
from edgerec.runtime.history import Event, HistoryStore
from edgerec.runtime.recommender import Recommender
from edgerec.runtime.tflite_schema import schema
from edgerec.vocab import Vocab

__all__ = [
    "MacCount",
    "bench_batch",
    "bench_recommend",
    "bench_recommend_for",
    "bundle_bytes",
    "bundle_histories",
    "count_macs",
    "gemm_rates",
    "host_info",
    "latency_stats",
    "measure_load",
    "roofline",
]

log = logging.getLogger(__name__)

#: environment that pins every BLAS/OpenMP pool of a subprocess to one thread
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
#: operators whose multiply-accumulates are counted
MATMUL_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")


class BenchError(EdgerecError):
    """A measurement could not be taken (a subprocess failed, a model is unreadable)."""


# -- statistics ------------------------------------------------------------------------


def latency_stats(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean/min/max in milliseconds of per-call durations in seconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        return {"p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan, "runs": 0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "runs": int(ms.size),
    }


def _time_calls(
    fn: Callable[[int], object], runs: int, warmup: int, cpu: list[np.ndarray] | None = None
) -> np.ndarray:
    """Wall durations (s) of ``fn(i)`` for ``i`` in ``range(runs)`` after ``warmup`` calls.

    When ``cpu`` is a list, the calling thread's CPU time of each call is appended
    to it as an array as well: on a busy host the wall-clock tail is mostly time
    spent preempted, which CPU time leaves out (exact for 1 interpreter thread,
    which runs in the calling thread; other pool threads are not counted).
    """
    for i in range(warmup):
        fn(i)
    gc.collect()
    out = np.empty(runs, np.float64)
    cpu_out = np.empty(runs, np.float64)
    clock = time.perf_counter
    cpu_clock = time.thread_time
    for i in range(runs):
        c = cpu_clock()
        t = clock()
        fn(i)
        out[i] = clock() - t
        cpu_out[i] = cpu_clock() - c
    if cpu is not None:
        cpu.append(cpu_out)
    return out


# -- histories -------------------------------------------------------------------------


def bundle_histories(manifest: Manifest, vocab: Vocab, start: float = 1.7e9) -> list[list[Event]]:
    """Realistic histories: the bundle's reference input rows as timestamped events.

    Each reference row (held-out users' encoded windows) becomes the events of one
    user, oldest first, one minute apart — what :meth:`HistoryStore.history` returns.
    Falls back to popularity-sampled histories when the bundle has no reference rows.
    """
    ref = manifest.data.get("reference", {}).get("inputs")
    rows: np.ndarray | None = None
    if ref and manifest.path(ref).is_file():
        rows = np.load(manifest.path(ref), allow_pickle=False)
    if rows is None or rows.size == 0:
        rng = np.random.default_rng(0)
        length = manifest.feature_spec.history_len
        rows = rng.integers(1, vocab.num_items + 1, size=(8, length))
    out = []
    for r, row in enumerate(rows):
        idx = [int(i) for i in row if 0 < i <= vocab.num_items]
        ids = vocab.decode(idx)
        out.append([Event(f"u{r}", item, start + 60.0 * t) for t, item in enumerate(ids)])
    return [h for h in out if h] or [[Event("u0", vocab.item_ids[0], start)]]


# -- in-process latency and throughput -------------------------------------------------


def bench_recommend(
    rec: Recommender,
    histories: Sequence[Sequence[Event]],
    runs: int = 1000,
    warmup: int = 50,
    k: int = 10,
    breakdown: bool = True,
) -> dict[str, Any]:
    """Latency of one ``recommend(history, k)`` call, cycling through ``histories``.

    Wall-clock percentiles (``p50_ms``...) plus the calling thread's CPU time
    (``cpu_p50_ms``, ``cpu_p99_ms``; see :func:`_time_calls`). With ``breakdown``
    also times the three stages separately (features, backend inference, top-k
    with exclude-seen), ``runs`` calls each.
    """
    n = len(histories)
    cpu: list[np.ndarray] = []
    total = _time_calls(lambda i: rec.recommend(histories[i % n], k=k), runs, warmup, cpu)
    result: dict[str, Any] = {"k": k, "histories": n, **latency_stats(total)}
    cpu_stats = latency_stats(cpu[0])
    result["cpu_p50_ms"] = cpu_stats["p50_ms"]
    result["cpu_p99_ms"] = cpu_stats["p99_ms"]
    result["mean_history_len"] = float(np.mean([len(h) for h in histories]))
    if breakdown:
        extracted = [rec.features.extract(h) for h in histories]
        scores = [rec.backend.run_row(row) for row, _ in extracted]
        seen = [s.known for _, s in extracted]  # what recommend() excludes
        stages = {
            "features": lambda i: rec.features.extract(histories[i % n]),
            "inference": lambda i: rec.backend.run_row(extracted[i % n][0]),
            "topk": lambda i: rec.topk.query(scores[i % n], k, exclude=seen[i % n]),
        }
        result["stages"] = {
            name: latency_stats(_time_calls(fn, runs, min(warmup, 20)))
            for name, fn in stages.items()
        }
    return result


def bench_batch(
    rec: Recommender,
    histories: Sequence[Sequence[Event]],
    batch_size: int = 64,
    repeats: int = 10,
    k: int = 10,
) -> dict[str, Any]:
    """Throughput of ``recommend_batch`` on batches of ``batch_size`` histories."""
    batch = [histories[i % len(histories)] for i in range(batch_size)]
    durations = _time_calls(lambda _: rec.recommend_batch(batch, k=k), repeats, 2)
    best = float(np.median(durations))
    return {
        "batch_size": batch_size,
        "repeats": repeats,
        "batch_p50_ms": best * 1e3,
        "rows_per_s": batch_size / best if best > 0 else math.inf,
        "ms_per_row": best * 1e3 / batch_size,
    }


def bench_recommend_for(
    rec: Recommender,
    histories: Sequence[Sequence[Event]],
    runs: int = 500,
    warmup: int = 20,
    k: int = 10,
) -> dict[str, Any]:
    """Latency of ``recommend_for(user)``: SQLite read + :func:`bench_recommend`'s path.

    The histories are recorded into a temporary store attached to ``rec`` for the
    measurement (the store is closed and deleted afterwards).
    """
    previous = rec.store
    with tempfile.TemporaryDirectory(prefix="edgerec-bench-") as tmp:
        store = HistoryStore(Path(tmp) / "history.db")
        try:
            users = []
            for h in histories:
                store.record_many(h)
                users.append(h[0].user)
            rec.store = store
            n = len(users)
            durations = _time_calls(lambda i: rec.recommend_for(users[i % n], k=k), runs, warmup)
        finally:
            rec.store = previous
            store.close()
    return {"k": k, "users": len(users), **latency_stats(durations)}


# -- fresh-process load time and memory ------------------------------------------------


def measure_load(
    bundle: str | Path,
    backend: str,
    precision: str,
    threads: int = 1,
    accelerator: str = "auto",
    history: Sequence[str] = (),
    repeats: int = 3,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Import + open time and RSS of a fresh Python process (median of ``repeats``).

    Each repeat starts a new interpreter that imports ``edgerec.runtime``, opens
    the bundle (hash verification included), makes one ``recommend`` call and
    reports timings and ``VmRSS`` after each step. Interpreter start-up itself is
    not counted; its RSS is reported as ``rss_mb_start``.
    """
    args = json.dumps(
        {
            "bundle": str(bundle),
            "backend": backend,
            "precision": precision,
            "threads": threads,
            "accelerator": accelerator,
            "history": list(history),
        }
    )
    runs = []
    for _ in range(max(1, repeats)):
        proc = subprocess.run(
            [sys.executable, "-m", "edgerec.bench.load_probe", args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if proc.returncode != 0:
            raise BenchError(
                f"load measurement of {bundle} ({backend}/{precision}) failed: "
                f"{proc.stderr.strip()[-800:]}"
            )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {"repeats": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(np.median([r[key] for r in runs]))
        else:
            out[key] = value
    out["import_open_s_first"] = runs[0]["import_open_s"]
    return out


# -- model size ------------------------------------------------------------------------


def bundle_bytes(manifest: Manifest) -> dict[str, Any]:
    """Bytes of the whole bundle and of each artifact (with the files it needs)."""
    files = manifest.files
    total = sum(int(f["bytes"]) for f in files.values())
    total += manifest.path("manifest.json").stat().st_size
    artifacts = {}
    for a in manifest.artifacts:
        extra = sum(int(files[f]["bytes"]) for f in a.files if f in files)
        artifacts[a.name] = int(a.bytes) + extra
    runtime_files = ("vocab.json", "popularity.npy")
    needed = sum(int(files[f]["bytes"]) for f in runtime_files if f in files)
    return {"total": total, "artifacts": artifacts, "runtime_files": needed}


# -- multiply-accumulates from a .tflite -----------------------------------------------


@dataclass
class MacCount:
    """Multiply-accumulates of one model, by operator, with the matmul shapes.

    ``gemms`` lists one ``[batch, M, K, N]`` per matmul-like operator (a conv is
    its im2col GEMM), in graph order.
    """

    total: int
    by_op: dict[str, int]
    gemms: list[list[int]] = field(default_factory=list)
    other_ops: dict[str, int] = field(default_factory=dict)  # op name -> count
    elementwise_outputs: int = 0  # output elements of every non-matmul op

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def count_macs(path: str | Path) -> MacCount:
    """Count the multiply-accumulates of a ``.tflite`` model from its operators.

    FULLY_CONNECTED: ``rows x N x K`` with the weights ``[N, K]``; BATCH_MATMUL:
    ``batch x M x N x K`` honouring ``adj_x``; CONV_2D / DEPTHWISE_CONV_2D /
    TRANSPOSE_CONV: output (resp. input) elements times the kernel window. Other
    operators are counted by output elements only (not part of the roofline).
    """
    S = schema()
    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise BenchError(f"{path}: not a TFLite flatbuffer")
    model = S.Model.GetRootAs(buf, 0)
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.Subgraphs(0)

    def shape(i: int) -> list[int]:
        t = sg.Tensors(i)
        return [int(x) for x in t.ShapeAsNumpy().tolist()] if t.ShapeLength() else []

    by_op: dict[str, int] = {}
    other: dict[str, int] = {}
    gemms: list[list[int]] = []
    elementwise = 0
    for j in range(sg.OperatorsLength()):
        op = sg.Operators(j)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = [int(i) for i in op.InputsAsNumpy().tolist()] if op.InputsLength() else []
        outs = [int(i) for i in op.OutputsAsNumpy().tolist()] if op.OutputsLength() else []
        out_shape = shape(outs[0]) if outs else []
        gemm: list[int] | None = None
        if name == "FULLY_CONNECTED":
            n, k = shape(ins[1])[-2:]
            gemm = [1, _prod(out_shape) // max(n, 1), k, n]
        elif name == "BATCH_MATMUL":
            x = shape(ins[0])
            adj_x = False
            table = op.BuiltinOptions()
            if table is not None:
                opts = S.BatchMatMulOptions()
                opts.Init(table.Bytes, table.Pos)
                adj_x = bool(opts.AdjX())
            k = x[-2] if adj_x else x[-1]
            gemm = [_prod(out_shape[:-2]), out_shape[-2], k, out_shape[-1]]
        elif name == "CONV_2D":
            cout, kh, kw, cin = shape(ins[1])
            gemm = [1, _prod(out_shape) // max(cout, 1), kh * kw * cin, cout]
        elif name == "DEPTHWISE_CONV_2D":
            _, kh, kw, c = shape(ins[1])
            gemm = [_prod(out_shape) // max(c, 1), 1, kh * kw, c]  # per-channel dot products
        elif name == "TRANSPOSE_CONV":
            cout, kh, kw, cin = shape(ins[1])
            x = shape(ins[2])
            gemm = [1, _prod(x) // max(cin, 1), cin, kh * kw * cout]
        if gemm is None:
            other[name] = other.get(name, 0) + 1
            elementwise += _prod(out_shape)
            continue
        macs = gemm[0] * gemm[1] * gemm[2] * gemm[3]
        by_op[name] = by_op.get(name, 0) + macs
        gemms.append(gemm)
    return MacCount(
        total=sum(by_op.values()),
        by_op=dict(sorted(by_op.items())),
        gemms=gemms,
        other_ops=dict(sorted(other.items())),
        elementwise_outputs=elementwise,
    )


# -- single-core GEMM rate and the roofline --------------------------------------------


def gemm_rates(
    gemms: Sequence[Sequence[int]],
    budget_s: float = 0.05,
    peak_size: int = 512,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Single-thread float32 numpy matmul times at the given ``[batch, M, K, N]`` shapes.

    Runs in a subprocess whose BLAS is pinned to one thread (``OPENBLAS_NUM_THREADS=1``
    and friends, set before numpy loads). Each shape is timed as the best of six
    rounds of about ``budget_s / 6`` seconds. Also times a ``peak_size``-cubed GEMM,
    the host's large-matrix single-core rate (best of three such measurements),
    and a 1x1x1 matmul: numpy's fixed per-call cost, which is not arithmetic.
    """
    unique = sorted({tuple(int(x) for x in g) for g in gemms})
    payload = json.dumps([[list(s) for s in unique], budget_s, peak_size])
    proc = subprocess.run(
        [sys.executable, "-m", "edgerec.bench.gemm_probe", payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **SINGLE_THREAD_ENV},
    )
    if proc.returncode != 0:
        raise BenchError(f"GEMM rate measurement failed: {proc.stderr.strip()[-800:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    per_shape = {tuple(int(x) for x in s[:4]): float(s[4]) for s in data["shapes"]}
    peak_n, peak_s = data["peak"]
    return {
        "per_shape_s": {"x".join(map(str, s)): t for s, t in per_shape.items()},
        "peak_shape": [1, peak_n, peak_n, peak_n],
        "peak_gmacs": peak_n**3 / peak_s / 1e9,
        "call_overhead_s": float(data["call_s"]),
        "threads": 1,
        "numpy": data["numpy"],
        "blas": data["blas"],
        "_lookup": per_shape,
    }


def roofline(
    path: str | Path, macs: MacCount | None = None, rates: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Lower bound on one inference of a ``.tflite`` model on one core of this host.

    ``roofline_ms`` = the time of the model's matmuls at this host's single-core
    numpy GEMM speed for the model's own shapes: per matmul, its measured time
    minus numpy's fixed per-call cost (a 1x1x1 matmul: Python dispatch, not
    arithmetic), and never less than its MACs at the peak rate. Small matrices
    cannot reach the large-GEMM rate, so this is the honest limit for this model.
    ``peak_roofline_ms`` = MACs / the large-GEMM peak rate (a stricter bound that
    small matrices cannot reach). Only matmul-like operators are counted; the
    rate is float32 (dynamic-range int8 kernels may beat it).
    """
    macs = macs or count_macs(path)
    rates = rates or gemm_rates(macs.gemms)
    lookup = rates["_lookup"]
    peak = rates["peak_gmacs"] * 1e9
    call = rates.get("call_overhead_s", 0.0)

    def arithmetic_s(g: Sequence[int]) -> float:
        return max(lookup[tuple(g)] - call, g[0] * g[1] * g[2] * g[3] / peak)

    matched_s = sum(arithmetic_s(g) for g in macs.gemms)
    matched_rate = macs.total / matched_s if matched_s > 0 else math.nan
    return {
        "model": str(path),
        "macs": macs.total,
        "macs_by_op": macs.by_op,
        "gemms": len(macs.gemms),
        "other_ops": macs.other_ops,
        "elementwise_outputs": macs.elementwise_outputs,
        "matched_gmacs": matched_rate / 1e9,
        "peak_gmacs": rates["peak_gmacs"],
        "roofline_ms": matched_s * 1e3,
        "roofline_with_numpy_calls_ms": sum(lookup[tuple(g)] for g in macs.gemms) * 1e3,
        "peak_roofline_ms": macs.total / peak * 1e3,
        "gemm": {k: v for k, v in rates.items() if not k.startswith("_")},
    }


# -- host ------------------------------------------------------------------------------


def host_info() -> dict[str, Any]:
    """CPU model, core count, platform and runtime package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for module in ("numpy", "ai_edge_litert", "onnxruntime"):
        try:
            from importlib.metadata import version

            dist = {"ai_edge_litert": "ai-edge-litert"}.get(module, module)
            versions[module] = version(dist)
        except Exception:  # noqa: BLE001 - not installed
            versions[module] = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "load_avg_1m": load,
    }
