"""Orchestration of ``edgerec bench``: which configurations, in which process, and the targets.

:func:`run_bench` measures every backend x precision x threads configuration of a
bundle in this (TensorFlow-free) process with :mod:`edgerec.bench.runtime_bench`, the
import/open time and RSS in fresh subprocesses, the roofline from the default
TFLite artifact, the teacher through TensorFlow in a subprocess
(:mod:`edgerec.bench.teacher`), and the catalog-scaling curve on synthetic bundles
built in a subprocess (:mod:`edgerec.bench.synthetic`). It returns one JSON-able
report; :func:`check_targets` compares it with the numbers issue 4 asks for.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerec import __version__
from edgerec.errors import EdgerecError, InputError

log = logging.getLogger(__name__)

#: Targets of issue 4 (default artifact, 1 thread): name -> (metric key, op, bound, unit)
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "recommend p50": ("recommend_p50_ms", "<=", 0.5, "ms"),
    "recommend p99": ("recommend_p99_ms", "<=", 2.0, "ms"),
    "speed-up over the TF teacher, Keras call": ("teacher_speedup_keras", ">=", 20.0, "x"),
    "speed-up over the TF teacher, fastest TF path": ("teacher_speedup", ">=", 20.0, "x"),
    "recommend vs roofline": ("roofline_ratio", "<=", 3.0, "x"),
    "import + open": ("import_open_s", "<=", 0.5, "s"),
    "RSS after load": ("rss_mb", "<=", 100.0, "MB"),
    "100k items p50": ("catalog_100000_p50_ms", "<=", 5.0, "ms"),
    "1M items p50": ("catalog_1000000_p50_ms", "<=", 50.0, "ms"),
}
BACKEND_OF_FORMAT = {"tflite": "litert", "onnx": "onnx"}
#: the converter's default student (ML-100K bundle shape) for ``catalog_arch="default"``
DEFAULT_ARCH = {
    "max_len": 50,
    "d_model": 64,
    "num_blocks": 2,
    "num_heads": 2,
    "ffn_dim": 256,
    "mask_value": -16.0,
}


class BenchFailed(EdgerecError):
    """A benchmark step failed in a way that leaves no usable result."""


@dataclass
class BenchOptions:
    """What ``edgerec bench`` measures (see ``edgerec bench --help``)."""

    bundle: Path
    backends: Sequence[str] | None = None  # None: every backend the bundle has artifacts for
    precisions: Sequence[str] | None = None  # None: every CPU artifact precision
    threads: Sequence[int] = (1,)
    runs: int = 1000
    warmup: int = 50
    k: int = 10
    batch_size: int = 64
    accelerator: str = "auto"
    load_repeats: int = 3
    teacher: Path | None = None  # None: the bundle's teacher when it is on this machine
    no_teacher: bool = False
    teacher_runs: int = 300
    roofline: bool = True
    catalog_sizes: Sequence[int] = ()
    catalog_arch: str = "bundle"  # "bundle" | "default"
    catalog_precision: str | None = None  # None: the bundle's default precision
    catalog_runs: int = 300
    synthetic_dir: Path | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


# -- configurations --------------------------------------------------------------------


def _configs(manifest: Any, options: BenchOptions) -> list[tuple[str, str, int]]:
    """(backend, precision, threads) of every usable CPU artifact, filtered by options."""
    from edgerec.runtime.backends.base import backend_available

    pairs = []
    for a in manifest.artifacts:
        if not a.gate_passed or (a.roles == ["gpu"]):
            continue
        backend = BACKEND_OF_FORMAT.get(a.format)
        if backend is None or not backend_available(a.format):
            continue
        if options.backends and backend not in options.backends:
            continue
        if options.precisions and a.precision not in options.precisions:
            continue
        if (backend, a.precision) not in pairs:
            pairs.append((backend, a.precision))
    if not pairs:
        raise InputError(
            f"{options.bundle}: no artifact matches backends={list(options.backends or [])} "
            f"precisions={list(options.precisions or [])} (or its backend is not installed)"
        )
    order = {"litert": 0, "onnx": 1}
    prec = {"fp32": 0, "fp16": 1, "int8-dynamic": 2, "int8": 3}
    pairs.sort(key=lambda p: (order.get(p[0], 9), prec.get(p[1], 9)))
    return [(b, p, t) for b, p in pairs for t in options.threads]


def _default_config(manifest: Any, configs: list[tuple[str, str, int]]) -> tuple[str, str, int]:
    """The configuration the targets are stated for: default artifact, 1 thread."""
    name = manifest.data.get("default_artifact")
    default = next((a for a in manifest.artifacts if a.name == name), None)
    want = (BACKEND_OF_FORMAT.get(default.format), default.precision) if default else (None, None)
    # the default artifact itself, else its precision in another format; 1 thread first
    ranked = sorted(configs, key=lambda c: ((c[0], c[1]) != want, c[1] != want[1], c[2] != 1))
    return ranked[0]


# -- subprocess helpers ----------------------------------------------------------------


def _python_module(module: str, args: list[str], stdin: str | None, timeout: float) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise BenchFailed(
            f"{module} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"
        )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchFailed(f"{module} printed no result: {proc.stdout[-500:]}")
    return json.loads(lines[-1])


def resolve_teacher(manifest: Any, teacher: Path | None) -> tuple[Path | None, str]:
    """The teacher directory to time and why (or ``None`` and why not)."""
    if teacher is not None:
        if not (Path(teacher) / "teacher.json").is_file():
            raise InputError(f"{teacher}: not a teacher directory (no teacher.json)")
        return Path(teacher), "--teacher"
    recorded = manifest.data.get("teacher", {})
    path = recorded.get("path")
    if not path or not (Path(path) / "teacher.json").is_file():
        return None, "the bundle's teacher is not on this machine; pass --teacher DIR"
    try:
        info = json.loads((Path(path) / "teacher.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, f"{path}/teacher.json is unreadable"
    if info.get("fingerprint") != recorded.get("fingerprint"):
        return None, f"{path} holds a different teacher than the bundle was distilled from"
    return Path(path), "the bundle's own teacher (manifest teacher.path)"


def measure_teacher(
    teacher: Path, histories: list[list[str]], runs: int, threads: int, k: int
) -> dict[str, Any]:
    """Time the teacher through TensorFlow in a subprocess (:mod:`edgerec.bench.teacher`)."""
    payload = json.dumps(
        {"teacher": str(teacher), "histories": histories, "runs": runs, "threads": threads, "k": k}
    )
    return _python_module("edgerec.bench.teacher", [], payload, timeout=900)


def synthetic_bundle(spec: Any, cache: Path) -> tuple[Path, bool]:
    """A synthetic bundle for ``spec`` from ``cache`` or built in a subprocess."""
    from edgerec.bundle import BundleError, open_bundle

    path = cache / spec.key()
    if (path / "manifest.json").is_file():
        try:
            open_bundle(path)
            return path, True
        except BundleError as exc:
            log.warning("rebuilding damaged synthetic bundle %s: %s", path, exc)
    args = ["--num-items", str(spec.num_items), "--out", str(path), "--precision", spec.precision]
    for key in ("max_len", "d_model", "num_blocks", "num_heads", "ffn_dim", "seed"):
        args += [f"--{key.replace('_', '-')}", str(getattr(spec, key))]
    args += ["--mask-value", str(spec.mask_value)]
    cache.mkdir(parents=True, exist_ok=True)
    _python_module("edgerec.bench.synthetic", args, None, timeout=1800)
    return path, False


def default_synthetic_dir() -> Path:
    """``$XDG_CACHE_HOME/edgerec/bench-synthetic`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgerec" / "bench-synthetic"


# -- the run ---------------------------------------------------------------------------


def _measure_config(
    bundle: Path,
    backend: str,
    precision: str,
    threads: int,
    histories: list,
    options: BenchOptions,
    with_load: bool = True,
) -> dict[str, Any]:
    from edgerec.bench import runtime_bench as rb
    from edgerec.runtime import Recommender

    rec = Recommender.open(
        bundle,
        backend=backend,
        precision=precision,
        accelerator=options.accelerator,
        threads=threads,
    )
    try:
        row: dict[str, Any] = {
            "backend": backend,
            "precision": precision,
            "threads": threads,
            "artifact": rec.artifact.name,
            "accelerator": rec.accelerator,
            "artifact_bytes": int(rec.artifact.bytes),
        }
        row["recommend"] = rb.bench_recommend(
            rec, histories, runs=options.runs, warmup=options.warmup, k=options.k
        )
        repeats = max(5, options.runs // max(options.batch_size, 1))
        row["batch"] = rb.bench_batch(
            rec, histories, batch_size=options.batch_size, repeats=repeats, k=options.k
        )
    finally:
        rec.close()
    if with_load:
        history = [e.item for e in histories[0]]
        row["load"] = rb.measure_load(
            bundle,
            backend,
            precision,
            threads=threads,
            accelerator=options.accelerator,
            history=history,
            repeats=options.load_repeats,
        )
    return row


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Measure a bundle; returns the report (see ``edgerec bench --help`` for its keys)."""
    from tqdm.auto import tqdm

    from edgerec.bench import runtime_bench as rb
    from edgerec.bundle import open_bundle
    from edgerec.vocab import Vocab

    bundle = Path(options.bundle)
    manifest = open_bundle(bundle)
    vocab = Vocab.load(manifest.path("vocab.json"))
    histories = rb.bundle_histories(manifest, vocab)
    configs = _configs(manifest, options)
    default = _default_config(manifest, configs)
    report: dict[str, Any] = {
        "edgerec_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": rb.host_info(),
        "bundle": {
            "path": str(bundle.resolve()),
            "model_id": manifest.model_id,
            "model_version": manifest.model_version,
            "dataset": manifest.data.get("dataset", {}).get("name"),
            "num_items": manifest.feature_spec.num_items,
            "max_len": manifest.feature_spec.max_len,
            "model_config": manifest.data.get("model", {}).get("config"),
            "default_artifact": manifest.data.get("default_artifact"),
            "bytes": rb.bundle_bytes(manifest),
            "synthetic": bool(manifest.data.get("synthetic")),
        },
        "settings": {
            **{k: v for k, v in asdict(options).items() if k not in ("extra",)},
            "bundle": str(bundle),
            "teacher": str(options.teacher) if options.teacher else None,
            "synthetic_dir": str(options.synthetic_dir) if options.synthetic_dir else None,
            "histories": len(histories),
            "mean_history_len": sum(len(h) for h in histories) / len(histories),
        },
        "default_config": {"backend": default[0], "precision": default[1], "threads": default[2]},
        "results": [],
        "notes": [],
    }
    bar = tqdm(configs, desc="bench", unit="config", disable=not options.progress)
    for backend, precision, threads in bar:
        bar.set_postfix_str(f"{backend}/{precision}/t{threads}")
        report["results"].append(
            _measure_config(bundle, backend, precision, threads, histories, options)
        )
    bar.close()
    default_row = next(
        r for r in report["results"] if (r["backend"], r["precision"], r["threads"]) == default
    )
    # recommend_for: the same path through the SQLite history store (default config only)
    from edgerec.runtime import Recommender

    with Recommender.open(
        bundle,
        backend=default[0],
        precision=default[1],
        accelerator=options.accelerator,
        threads=default[2],
    ) as rec:
        default_row["recommend_for"] = rb.bench_recommend_for(
            rec, histories, runs=max(100, options.runs // 2), k=options.k
        )

    if options.roofline:
        report["roofline"] = _roofline(manifest, report)
    report["teacher"] = _teacher(manifest, options, histories, default_row)
    if options.catalog_sizes:
        report["catalog_scaling"] = _catalog(manifest, options)
    report["targets"] = check_targets(report)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "tf2onnx"})
    report["tensorflow_free"] = not heavy
    return report


def _roofline(manifest: Any, report: dict[str, Any]) -> dict[str, Any] | None:
    from edgerec.bench import runtime_bench as rb

    default = manifest.data.get("default_artifact")
    tfl = [a for a in manifest.artifacts if a.format == "tflite" and a.roles != ["gpu"]]
    art = next((a for a in tfl if a.name == default), None) or next(
        (a for a in tfl if a.precision == "fp32"), tfl[0] if tfl else None
    )
    if art is None:
        report["notes"].append("roofline skipped: the bundle has no TFLite artifact to count")
        return None
    roof = rb.roofline(manifest.path(art.path))
    roof["artifact"] = art.name
    for row in report["results"]:
        p50 = row["recommend"]["p50_ms"]
        inference = row["recommend"]["stages"]["inference"]["p50_ms"]
        row["roofline_ratio"] = p50 / roof["roofline_ms"]
        row["inference_roofline_ratio"] = inference / roof["roofline_ms"]
        row["peak_roofline_ratio"] = p50 / roof["peak_roofline_ms"]
    return roof


def _teacher(
    manifest: Any, options: BenchOptions, histories: list, default_row: dict[str, Any]
) -> dict[str, Any]:
    if options.no_teacher:
        return {"skipped": "--no-teacher"}
    teacher, why = resolve_teacher(manifest, options.teacher)
    if teacher is None:
        log.warning("teacher comparison skipped: %s", why)
        return {"skipped": why}
    log.info("timing the teacher through TensorFlow (%s)", teacher)
    raw = [[e.item for e in h] for h in histories]
    try:
        result = measure_teacher(
            teacher, raw, options.teacher_runs, default_row["threads"], options.k
        )
    except (BenchFailed, subprocess.TimeoutExpired) as exc:
        log.warning("teacher comparison failed: %s", exc)
        return {"skipped": f"failed: {exc}", "teacher": str(teacher)}
    result["source"] = why
    p50 = default_row["recommend"]["p50_ms"]
    result["speedup_p50"] = result["p50_ms"] / p50
    result["speedup_p99"] = result["p99_ms"] / default_row["recommend"]["p99_ms"]
    result["speedup_vs_keras_p50"] = result["paths"]["keras"]["p50_ms"] / p50
    return result


def _catalog(manifest: Any, options: BenchOptions) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from edgerec.bench import runtime_bench as rb
    from edgerec.bench.synthetic import SyntheticSpec
    from edgerec.bundle import open_bundle
    from edgerec.vocab import Vocab

    if options.catalog_arch == "default":
        arch = DEFAULT_ARCH
    elif options.catalog_arch == "bundle":
        arch = manifest.data.get("model", {}).get("config") or DEFAULT_ARCH
    else:
        raise InputError(f"catalog_arch must be 'bundle' or 'default' (got {options.catalog_arch})")
    default = manifest.data.get("default_artifact")
    precision = options.catalog_precision or next(
        (a.precision for a in manifest.artifacts if a.name == default), "int8-dynamic"
    )
    if precision == "int8" and options.catalog_precision is None:
        precision = "int8-dynamic"
    cache = Path(options.synthetic_dir or default_synthetic_dir())
    rows = []
    threads = 1 if 1 in options.threads else options.threads[0]
    sub = BenchOptions(
        bundle=options.bundle,
        runs=options.catalog_runs,
        warmup=min(options.warmup, 20),
        k=options.k,
        batch_size=min(options.batch_size, 16),
        accelerator=options.accelerator,
        load_repeats=max(1, min(options.load_repeats, 2)),
    )
    bar = tqdm(options.catalog_sizes, desc="catalog", unit="size", disable=not options.progress)
    for n in bar:
        spec = SyntheticSpec.like(arch, int(n), precision)
        bar.set_postfix_str(f"n={n:,} (building)")
        try:
            path, cached = synthetic_bundle(spec, cache)
        except (BenchFailed, subprocess.TimeoutExpired) as exc:
            log.warning("catalog size %s skipped: %s", n, exc)
            rows.append({"num_items": int(n), "skipped": str(exc)[-500:]})
            continue
        bar.set_postfix_str(f"n={n:,}")
        man = open_bundle(path)
        vocab = Vocab.load(man.path("vocab.json"))
        histories = rb.bundle_histories(man, vocab)
        measured = _measure_config(path, "litert", precision, threads, histories, sub)
        row = {
            "num_items": int(n),
            "synthetic_bundle": str(path),
            "cached": cached,
            "arch": {k: v for k, v in asdict(spec).items() if k not in ("num_items",)},
            "bundle_bytes": rb.bundle_bytes(man)["total"],
            **measured,
        }
        if options.roofline:
            roof = rb.roofline(man.path(man.artifacts[0].path))
            row["roofline_ms"] = roof["roofline_ms"]
            row["peak_roofline_ms"] = roof["peak_roofline_ms"]
            row["macs"] = roof["macs"]
            row["roofline_ratio"] = row["recommend"]["p50_ms"] / roof["roofline_ms"]
        rows.append(row)
    bar.close()
    return rows


# -- targets ---------------------------------------------------------------------------


def summary_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The numbers the targets are stated for, from a :func:`run_bench` report."""
    d = report["default_config"]
    row = next(
        r
        for r in report["results"]
        if (r["backend"], r["precision"], r["threads"])
        == (d["backend"], d["precision"], d["threads"])
    )
    teacher = report.get("teacher") or {}
    metrics: dict[str, float | None] = {
        "recommend_p50_ms": row["recommend"]["p50_ms"],
        "recommend_p99_ms": row["recommend"]["p99_ms"],
        "teacher_speedup": teacher.get("speedup_p50"),
        "teacher_speedup_keras": teacher.get("speedup_vs_keras_p50"),
        "roofline_ratio": row.get("roofline_ratio"),
        "import_open_s": row.get("load", {}).get("import_open_s"),
        "rss_mb": row.get("load", {}).get("rss_mb_after_first_call"),
    }
    for c in report.get("catalog_scaling") or []:
        if "recommend" in c:
            metrics[f"catalog_{c['num_items']}_p50_ms"] = c["recommend"]["p50_ms"]
    return metrics


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 4 with the measured value and whether it is met (None: not run)."""
    metrics = summary_metrics(report)
    out = []
    for name, (key, op, bound, unit) in TARGETS.items():
        value = metrics.get(key)
        ok = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append(
            {"target": name, "metric": key, "value": value, "op": op, "bound": bound,
             "unit": unit, "ok": ok}
        )  # fmt: skip
    return out
