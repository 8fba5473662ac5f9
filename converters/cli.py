"""``edgerec convert``: the release pipeline on the command line.

TensorFlow, tf2onnx and ONNX are imported inside the handler only, so
``edgerec --help`` stays fast and TF-free.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  edgerec convert --teacher runs/teacher --data movielens-100k --out bundles/ml100k
  edgerec convert --teacher runs/teacher --data movielens-100k --out bundles/ml100k \\
      --config convert.toml --force --json > convert.json
  edgerec convert --teacher runs/teacher --data movielens-100k --out bundles/small \\
      --targets tflite --precisions fp32,int8-dynamic --epochs 20 --no-gpu
  edgerec convert --teacher runs/teacher --data movielens-100k --out bundles/ml100k \\
      --sign-key keys/edgerec-bundle.key       # signed before the atomic publish
  edgerec convert --teacher my-sasrec/teacher.toml --data movielens-100k --out bundles/byo

A teacher edgerec did not train (Keras, SavedModel, ONNX, a model server) is described
by a teacher.toml (docs/teacher-contract.md). It is checked, must beat most-popular on
the validation split (else exit 3), and is asked once for its soft targets, cached in
~/.cache/edgerec/soft-targets per teacher + data: a re-run with other student
settings does not query the teacher again.

Passes: distil (student on the teacher's soft targets) -> SavedModel [1, L] ->
TFLite fp32/fp16/int8-dynamic/int8 and ONNX fp32/fp16/int8-dynamic -> GPU variant
-> validate every artifact in ai-edge-litert / onnxruntime -> gates -> bundle
(manifest.json, vocab, popularity, head, reference data, report.md/.json/.png).
Defaults and gates are documented in edgerec/converters/default.toml.

exit codes: 0 bundle accepted; 2 bad input (teacher, data, config, output dir);
3 a quality gate failed (the bundle is written with status "rejected", which the
runtime refuses), or the teacher does not beat most-popular and the item-transition
baseline on validation (nothing is written; --allow-weak-teacher overrides).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert`` to the CLI."""
    from edgerec.cli_help import HelpFormatter
    from edgerec.data.cli import add_column_options

    p = sub.add_parser(
        "convert",
        help="distil, quantize, export TFLite + ONNX, validate, gate and bundle",
        description="Build an on-device bundle from a teacher: a distilled student exported "
        "to TFLite and ONNX at several precisions, each validated in its real interpreter "
        "and gated on parity and quality.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--teacher",
        required=True,
        type=Path,
        help="teacher dir ('edgerec train') or a teacher.toml (docs/teacher-contract.md)",
    )
    p.add_argument(
        "--teacher-cache",
        type=Path,
        help="soft-target cache dir of a teacher.toml teacher (default ~/.cache/edgerec)",
    )
    p.add_argument(
        "--no-teacher-cache", action="store_true", help="do not read or write the soft-target cache"
    )
    p.add_argument("--data", required=True, help="dataset name (movielens-100k) or a log file")
    add_column_options(p)
    p.add_argument(
        "--allow-weak-teacher",
        action="store_true",
        help="distil a teacher that does not beat the baselines (the manifest records it)",
    )
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument("--config", type=Path, help="TOML file overriding default.toml")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--seed", type=int, help="random seed (default: config distil.seed)")
    p.add_argument("--targets", help="comma list of targets: tflite,onnx")
    p.add_argument("--precisions", help="comma list: fp32,fp16,int8-dynamic,int8")
    p.add_argument("--epochs", type=int, help="maximum distillation epochs")
    p.add_argument("--alpha", type=float, help="weight of the teacher's soft targets (0..1)")
    p.add_argument("--temperature", type=float, help="distillation temperature")
    p.add_argument(
        "--sampled-negatives",
        type=int,
        help="distil over the teacher's top-k + N sampled negatives (0: full catalog)",
    )
    p.add_argument("--max-len", type=int, help="student input length L (<= the teacher's)")
    p.add_argument("--d-model", type=int, help="student hidden size")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU-delegate variant")
    p.add_argument("--max-eval-users", type=int, help="test users per artifact (0 = all)")
    p.add_argument("--keep-work", type=Path, help="copy the work dir (SavedModels) here")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--sign-key",
        type=Path,
        help="Ed25519 private key ('edgerec keys generate'): sign an accepted bundle "
        "before it is published",
    )
    p.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Handler of ``edgerec convert``."""
    from edgerec._deps import require

    for module in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert"):
        require(module, "convert")
    sign_key = None
    if args.sign_key is not None:  # a bad key fails now, not after the conversion
        from edgerec.runtime.signing import load_private_key

        sign_key = load_private_key(args.sign_key)
    from edgerec.converters.config import ConvertConfig

    config = ConvertConfig.from_toml(args.config).with_overrides(
        seed=args.seed,
        epochs=args.epochs,
        alpha=args.alpha,
        temperature=args.temperature,
        sampled_negatives=args.sampled_negatives,
        targets=args.targets,
        precisions=args.precisions,
        gpu=False if args.no_gpu else None,
        max_len=args.max_len,
        d_model=args.d_model,
        max_eval_users=args.max_eval_users,
    )
    from edgerec.converters.passes.validate import GateFailed
    from edgerec.converters.pipeline import convert
    from edgerec.data.cli import load_options

    try:
        result = convert(
            args.teacher,
            args.data,
            args.out,
            config,
            force=args.force,
            progress=not args.no_progress,
            keep_work=args.keep_work,
            sign_key=sign_key,
            load_options=load_options(args),
            allow_weak_teacher=args.allow_weak_teacher,
            teacher_cache=False if args.no_teacher_cache else (args.teacher_cache or True),
        )
    except GateFailed as exc:
        if exc.result is None:
            raise
        result = exc.result
    if args.json:
        from edgerec.converters.report import _json_default

        print(json.dumps(result.summary, indent=2, default=_json_default))
    else:
        print(summary_text(result.summary))
    if not result.accepted:
        print(
            f"edgerec convert: quality gate failed; bundle written as REJECTED to "
            f"{result.out_dir} (see its report.md)",
            file=sys.stderr,
        )
    return result.exit_code


def summary_text(summary: dict) -> str:
    """The human-readable result: artifact table, quality line, status."""
    from edgerec.converters.report import format_table

    lines = [format_table(summary.get("artifacts", []))]
    q = summary.get("quality", {})
    if q.get("bootstrap"):
        b = q["bootstrap"]
        lines.append(
            f"quality: {q['artifact']} NDCG@10 {q['default']['NDCG@10']:.4f} vs teacher "
            f"{q['teacher']['NDCG@10']:.4f} = {q['ratio']:.1%} (gate >= {q['min_ratio']:.0%}); "
            f"student−teacher {b['diff']:+.4f}, 95% paired-bootstrap CI "
            f"[{b['low']:+.4f}, {b['high']:+.4f}], {b['n']} users"
        )
    from edgerec.converters.report import baseline_lines

    lines += baseline_lines(q)
    lines.append(f"protocol: {q.get('protocol', '')}")
    teacher = summary.get("teacher")
    if teacher:  # a teacher.toml teacher
        cache = teacher.get("soft_targets", {})
        source = "from the cache" if cache.get("hit") else "computed and cached"
        lines.append(
            f"teacher: {teacher.get('kind')} ({teacher.get('descriptor')}); soft targets "
            f"{source} (key {str(cache.get('key', ''))[:12]}), {cache.get('model_calls', '?')} "
            "teacher model call(s)"
        )
    for failure in summary.get("gates", {}).get("failures", []):
        lines.append(f"gate failed: {failure}")
    total = summary.get("timings", {}).get("total")
    took = f" in {total:.0f} s" if total is not None else ""
    lines.append(f"bundle {summary.get('status', '?').upper()} at {summary.get('out_dir')}{took}")
    if summary.get("signed_by"):
        lines.append(f"signed by key {summary['signed_by']}")
    return "\n".join(lines)
