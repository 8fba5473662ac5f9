"""``edgerec bench BUNDLE``: the on-device runtime benchmark.

Heavy imports happen inside the handler; the runtime measurements never load
TensorFlow (the teacher timing and the synthetic bundles run in subprocesses).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  edgerec bench bundles/ml100k
  edgerec bench bundles/ml100k --threads 1 2 --out benchmarks/out/runtime.json
  edgerec bench bundles/ml100k --backends litert --precisions int8-dynamic --runs 5000
  edgerec bench bundles/ml100k --teacher runs/teacher
  edgerec bench bundles/ml100k --catalog-sizes 1000 10000 100000 1000000
  edgerec bench bundles/ml100k --json > runtime.json

what it measures, per backend x precision x threads:
  recommend p50/p95/p99 (feature extraction + inference + top-k, realistic histories
  from the bundle's reference inputs; with a stage breakdown), recommend_batch
  throughput, import edgerec.runtime + Recommender.open time and RSS (fresh
  subprocess each), artifact and bundle bytes. Once per run: the roofline (MACs
  counted from the default .tflite / this host's single-core numpy GEMM rate at the
  model's matmul shapes), the teacher through TensorFlow (subprocess) and, with
  --catalog-sizes, p50/bytes/RSS on synthetic bundles with bigger catalogs
  (untrained students built with the converter's passes, cached).

exit codes: 0 ok, 2 bad input, 3 a target of issue 4 was missed (--fail-on-targets)
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    from edgerec.cli_help import HelpFormatter

    p = sub.add_parser(
        "bench",
        help="benchmark the on-device runtime on a bundle",
        description="Benchmark edgerec.runtime on a bundle: latency, throughput, load, memory.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("bundle", type=Path, help="bundle directory (edgerec convert output)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of tables")
    p.add_argument("--out", type=Path, help="also write the JSON report to this file")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="interpreter threads")
    p.add_argument(
        "--backends", nargs="+", choices=("litert", "onnx"), help="default: all in the bundle"
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "fp16", "int8-dynamic", "int8"),
        help="default: every CPU artifact's precision",
    )
    p.add_argument("--runs", type=int, default=1000, help="timed recommend calls per config")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls first")
    p.add_argument("-k", type=int, default=10, help="recommendations per call")
    p.add_argument("--batch-size", type=int, default=64, help="histories per recommend_batch")
    p.add_argument(
        "--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="as in open()"
    )
    p.add_argument(
        "--load-repeats", type=int, default=3, help="fresh processes per config (median)"
    )
    p.add_argument(
        "--teacher",
        type=Path,
        help="teacher directory for the TF comparison (default: the bundle's, if present)",
    )
    p.add_argument("--no-teacher", action="store_true", help="skip the TensorFlow comparison")
    p.add_argument("--teacher-runs", type=int, default=300, help="timed teacher predictions")
    p.add_argument("--no-roofline", action="store_true", help="skip MAC counting / GEMM timing")
    p.add_argument(
        "--catalog-sizes",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also measure synthetic bundles with these catalog sizes (e.g. 1000 ... 1000000)",
    )
    p.add_argument(
        "--catalog-arch",
        choices=("bundle", "default"),
        default="bundle",
        help="architecture of the synthetic students: the bundle's, or the converter's "
        "default student (d=64, 2 blocks, ffn 256, L=50: the ML-100K bundle shape)",
    )
    p.add_argument(
        "--catalog-precision",
        choices=("fp32", "fp16", "int8-dynamic", "int8"),
        help="artifact precision of the synthetic bundles (default: the bundle's default)",
    )
    p.add_argument("--catalog-runs", type=int, default=300, help="timed calls per catalog size")
    p.add_argument(
        "--synthetic-dir",
        type=Path,
        help="cache of synthetic bundles (default: ~/.cache/edgerec/bench-synthetic)",
    )
    p.add_argument("--fail-on-targets", action="store_true", help="exit 3 when a target is missed")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``edgerec bench``."""
    from edgerec.bench.runner import BenchOptions, run_bench
    from edgerec.errors import InputError

    for name in ("runs", "warmup", "batch_size", "load_repeats", "teacher_runs", "catalog_runs"):
        value = getattr(args, name)
        if value < (0 if name == "warmup" else 1):
            raise InputError(f"--{name.replace('_', '-')} must be positive (got {value})")
    if args.k < 1:
        raise InputError(f"-k must be at least 1 (got {args.k})")
    if any(t < 1 for t in args.threads):
        raise InputError(f"--threads must be positive (got {args.threads})")
    if any(n < 1 for n in args.catalog_sizes):
        raise InputError(f"--catalog-sizes must be positive (got {args.catalog_sizes})")
    options = BenchOptions(
        bundle=args.bundle,
        backends=args.backends,
        precisions=args.precisions,
        threads=list(dict.fromkeys(args.threads)),
        runs=args.runs,
        warmup=args.warmup,
        k=args.k,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        load_repeats=args.load_repeats,
        teacher=args.teacher,
        no_teacher=args.no_teacher,
        teacher_runs=args.teacher_runs,
        roofline=not args.no_roofline,
        catalog_sizes=args.catalog_sizes,
        catalog_arch=args.catalog_arch,
        catalog_precision=args.catalog_precision,
        catalog_runs=args.catalog_runs,
        synthetic_dir=args.synthetic_dir,
        progress=not args.json and sys.stderr.isatty(),
    )
    report = run_bench(options)
    text = json.dumps(report, indent=2, default=_json_default)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log.info("wrote %s", args.out)
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    missed = [t for t in report["targets"] if t["ok"] is False]
    return 3 if (args.fail_on_targets and missed) else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# -- tables ----------------------------------------------------------------------------


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in
              enumerate(header)]  # fmt: skip

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                         enumerate(zip(cells, widths, strict=True)))  # fmt: skip

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_report(report: dict[str, Any]) -> str:
    """Human-readable tables of a :func:`~edgerec.bench.runner.run_bench` report."""
    b = report["bundle"]
    host = report["host"]
    out = [
        f"bundle {b['path']} ({b['model_id']}, n={b['num_items']:,}, L={b['max_len']}, "
        f"{b['bytes']['total'] / 1e6:.2f} MB)",
        f"host   {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
        f"load avg {_num(host.get('load_avg_1m'), '.2f')}",
        "",
    ]
    header = [
        "backend", "precision", "thr", "accel", "p50 ms", "p95 ms", "p99 ms", "rows/s",
        "imp+open s", "RSS MB", "KB", "x roof",
    ]  # fmt: skip
    rows = []
    for r in report["results"]:
        rec, load = r["recommend"], r.get("load", {})
        rows.append(
            [
                r["backend"], r["precision"], str(r["threads"]), r["accelerator"],
                _num(rec["p50_ms"]), _num(rec["p95_ms"]), _num(rec["p99_ms"]),
                _num(r["batch"]["rows_per_s"], ",.0f"), _num(load.get("import_open_s")),
                _num(load.get("rss_mb_after_first_call"), ".1f"),
                _num(r["artifact_bytes"] / 1024, ",.0f"), _num(r.get("roofline_ratio"), ".2f"),
            ]
        )  # fmt: skip
    out.append(_table(header, rows))
    d = report["default_config"]
    default = next(
        r
        for r in report["results"]
        if (r["backend"], r["precision"], r["threads"])
        == (d["backend"], d["precision"], d["threads"])
    )
    st = default["recommend"]["stages"]
    out += [
        "",
        f"default {d['backend']}/{d['precision']}/{d['threads']} thread(s): stages p50 "
        f"features {_num(st['features']['p50_ms'])} ms, inference "
        f"{_num(st['inference']['p50_ms'])} ms, top-k {_num(st['topk']['p50_ms'])} ms; "
        f"recommend_for (SQLite) p50 {_num(default.get('recommend_for', {}).get('p50_ms'))} ms",
        f"  CPU time of the calling thread: p50 {_num(default['recommend']['cpu_p50_ms'])} ms, "
        f"p99 {_num(default['recommend']['cpu_p99_ms'])} ms (wall p99 minus this is time "
        "spent preempted on a busy host)",
    ]
    roof = report.get("roofline")
    if roof:
        out.append(
            f"roofline ({roof['artifact']}): {roof['macs']:,} MACs in {roof['gemms']} matmuls; "
            f"1-core numpy GEMM {roof['matched_gmacs']:.2f} GMAC/s at the model's shapes "
            f"({roof['peak_gmacs']:.1f} peak) -> {roof['roofline_ms']:.4f} ms "
            f"({roof['peak_roofline_ms']:.4f} ms at peak)"
        )
    t = report.get("teacher") or {}
    if "p50_ms" in t:
        paths = ", ".join(f"{k} p50 {v['p50_ms']:.3f} ms" for k, v in t["paths"].items())
        out.append(
            f"teacher via TensorFlow ({t['num_params']:,} params; import {t['import_s']:.2f} s, "
            f"RSS {t['rss_mb']:.0f} MB): {paths} -> edgerec is {t['speedup_p50']:.1f}x faster"
            f" than the fastest TF path, {t['speedup_vs_keras_p50']:.1f}x than the Keras call"
        )
        if roof:
            out.append(
                f"  bound: fastest TF path / the student's roofline = "
                f"{t['p50_ms'] / roof['roofline_ms']:.1f}x (no implementation of this student "
                "can beat the compiled TF teacher by more on this host)"
            )
    elif t:
        out.append(f"teacher comparison skipped: {t.get('skipped')}")
    cat = report.get("catalog_scaling")
    if cat:
        arch = next((c["arch"] for c in cat if "arch" in c), {})
        shape = ", ".join(f"{k}={arch[k]}" for k in ("d_model", "num_blocks", "ffn_dim", "max_len")
                          if k in arch)  # fmt: skip
        out += [
            "",
            f"catalog scaling (synthetic bundles, untrained students {shape}; litert, "
            f"{next((c['threads'] for c in cat if 'threads' in c), 1)} thread):",
        ]
        header = ["items", "precision", "p50 ms", "p99 ms", "artifact MB", "bundle MB",
                  "RSS MB", "imp+open s", "x roof"]  # fmt: skip
        rows = []
        for c in cat:
            if "recommend" not in c:
                rows.append([f"{c['num_items']:,}", "skipped", *["-"] * 7])
                continue
            rows.append(
                [
                    f"{c['num_items']:,}", c["precision"], _num(c["recommend"]["p50_ms"]),
                    _num(c["recommend"]["p99_ms"]), _num(c["artifact_bytes"] / 1e6, ".2f"),
                    _num(c["bundle_bytes"] / 1e6, ".2f"),
                    _num(c["load"]["rss_mb_after_first_call"], ".1f"),
                    _num(c["load"]["import_open_s"]), _num(c.get("roofline_ratio"), ".2f"),
                ]
            )  # fmt: skip
        out.append(_table(header, rows))
    out += ["", "targets (issue 4; default artifact, 1 thread):"]
    for t in report["targets"]:
        mark = {True: "✓", False: "✗", None: "·"}[t["ok"]]
        value = "not measured" if t["value"] is None else f"{t['value']:.3f} {t['unit']}"
        out.append(f"  {mark} {t['target']}: {value} (target {t['op']} {t['bound']} {t['unit']})")
    for note in report.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)
