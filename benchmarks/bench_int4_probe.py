"""Probe for issue 15: what int4 weights from the AI Edge Quantizer give edgerec's student.

Takes a bundle's fp32 TFLite student, quantizes it with the quantizer's own recipes
(int8 and int4 weights, dynamic and weight-only) and with per-op configurations that try
to keep the item table in one piece, then runs every model in LiteRT on the bundle's
data: size, NDCG@10 on the test users (the project's protocol), top-10 overlap and the
largest score difference against the fp32 student, p50 latency of one row on one thread,
and the ops that hold each large weight. The bundle's own int8-dynamic artifact is
measured alongside. A configuration the quantizer refuses is recorded with its error.

    pip install ai-edge-quantizer==0.10.0     # not an edgerec dependency (yet)
    .venv/bin/python benchmarks/bench_int4_probe.py --bundle bundles/ml100k

Results: ``benchmarks/results/int4_litert_probe.json``; quantized models under ``--out``.
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


def recipes() -> dict[str, Any]:
    """name -> the quantizer's recipe (a list), or a tuple of per-op ``(kind, op, bits,
    granularity)`` configurations."""
    from ai_edge_quantizer import recipe
    from ai_edge_quantizer.qtyping import QuantGranularity as G
    from ai_edge_quantizer.qtyping import TFLOperationName as Op

    return {
        "aeq dynamic_wi8_afp32": recipe.dynamic_wi8_afp32(),
        "aeq dynamic_wi4_afp32": recipe.dynamic_wi4_afp32(),
        "aeq weight_only_wi4_afp32": recipe.weight_only_wi4_afp32(),
        "aeq dynamic_wi4b32_afp32": recipe.dynamic_wi4b32_afp32(),
        "per-op: FC int4, GATHER + BATCH_MATMUL int8": (
            ("dynamic", Op.FULLY_CONNECTED, 4, G.CHANNELWISE),
            ("weight_only", Op.GATHER, 8, G.TENSORWISE),
            ("dynamic", Op.BATCH_MATMUL, 8, G.TENSORWISE),
        ),
    }


def quantize(src: Path, how: Any, dst: Path) -> str | None:
    """Write the quantized model to ``dst``; the quantizer's error when it refuses."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(str(src))
    try:
        if isinstance(how, tuple):
            for kind, op, bits, granularity in how:
                add = q.add_dynamic_config if kind == "dynamic" else q.add_weight_only_config
                add(".*", op, bits, granularity)
        else:
            q.load_quantization_recipe(how)
        q.quantize().export_model(str(dst), overwrite=True)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def large_weights(path: Path) -> list[dict[str, Any]]:
    """The model's tensors of 4,096 values or more, with their type and consuming ops."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    ops = it._get_ops_details()
    out = []
    for d in it.get_tensor_details():
        size = int(np.prod(d["shape"])) if len(d["shape"]) else 1
        if size >= 4096:
            users = sorted({o["op_name"] for o in ops if d["index"] in list(o["inputs"])})
            out.append({"values": size, "dtype": d["dtype"].__name__, "used_by": users})
    return sorted(out, key=lambda t: -t["values"])


def measure(
    path: Path, rows: np.ndarray, targets: np.ndarray, ref: np.ndarray | None
) -> tuple[dict[str, Any], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    from edgerec.converters.passes.validate import top_k_overlap
    from edgerec.metrics import metrics_from_ranks, target_ranks

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    scores = np.zeros((len(rows), int(outp["shape"][-1])), np.float32)
    latency = []
    for k, row in enumerate(rows):
        it.set_tensor(inp["index"], row[None].astype(inp["dtype"]))
        t = time.perf_counter()
        it.invoke()
        latency.append(time.perf_counter() - t)
        scores[k] = it.get_tensor(outp["index"])[0]
    metrics = metrics_from_ranks(target_ranks(scores, targets, None), (10,))
    result = {
        "bytes": path.stat().st_size,
        "NDCG@10": metrics["NDCG@10"],
        "HR@10": metrics["HR@10"],
        "p50_ms": 1000 * float(np.median(latency)),
        "large_weights": large_weights(path),
    }
    if ref is not None:
        result["top10_overlap_vs_fp32"] = float(np.mean(top_k_overlap(scores, ref, 10)))
        result["max_abs_err_vs_fp32"] = float(np.abs(scores - ref).max())
    return result, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/int4")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks/results/int4_litert_probe.json"
    )
    args = parser.parse_args()
    try:
        import ai_edge_quantizer  # noqa: F401
    except ImportError:
        raise SystemExit(
            "needs the AI Edge Quantizer: pip install ai-edge-quantizer==0.10.0"
        ) from None
    from edgerec.data import leave_one_out, load_dataset
    from edgerec.features import FeatureSpec

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    spec = FeatureSpec.from_json(manifest["feature_spec"])
    split = leave_one_out(load_dataset(args.data))
    rows = spec.encode_batch(split.test_inputs())
    targets = np.asarray(split.test_target)
    fp32 = args.bundle / "student.fp32.tflite"
    runs: dict[str, Any] = {}
    runs["fp32 (bundle)"], ref = measure(fp32, rows, targets, None)
    runs["int8-dynamic (bundle)"], _ = measure(
        args.bundle / "student.int8-dynamic.tflite", rows, targets, ref
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, how) in enumerate(recipes().items()):
        dst = args.out / f"student.q{i}.tflite"
        error = quantize(fp32, how, dst)
        runs[name] = {"refused": error} if error else measure(dst, rows, targets, ref)[0]
        print(name, {k: v for k, v in runs[name].items() if k != "large_weights"}, flush=True)
    import ai_edge_litert
    import ai_edge_quantizer

    payload = {
        "benchmark": "int4_litert_probe",
        "bundle": str(args.bundle),
        "data": args.data,
        "versions": {
            "ai-edge-quantizer": getattr(ai_edge_quantizer, "__version__", "0.10.0"),
            "ai-edge-litert": getattr(ai_edge_litert, "__version__", None),
        },
        "machine": f"{platform.machine()} {__import__('os').cpu_count()} cpus",
        "command": " ".join(sys.argv),
        "protocol": "test users, full ranking, history kept; p50 of one row, LiteRT, 1 thread",
        "runs": runs,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
