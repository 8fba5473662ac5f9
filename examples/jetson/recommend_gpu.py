"""edgerec on an NVIDIA Jetson: which accelerator ranks your items, and how fast.

Opens a bundle once per installed backend with ``accelerator="auto"`` (or the
one you ask for) and reports what actually runs the model:

* ONNX Runtime: providers TensorRT -> CUDA -> CPU, as offered by the installed
  build (``onnxruntime-gpu`` for JetPack lists TensorRT and CUDA; the PyPI
  ``onnxruntime`` wheel is CPU-only);
* LiteRT: a TFLite GPU delegate library named by ``--delegate`` or
  ``EDGEREC_TFLITE_GPU_DELEGATE``, else LiteRT's ``CompiledModel`` GPU accelerator
  (Vulkan), for the bundle's GPU artifact; any failure falls back to the CPU
  (XNNPACK) under ``"auto"``.

It then checks the accelerated ranking against a CPU run of the same bundle
(top-10 overlap) and times ``recommend`` (batch 1) and ``recommend_batch``.

Examples::

    python recommend_gpu.py /opt/edgerec/bundle
    python recommend_gpu.py /opt/edgerec/bundle --backend onnx --accelerator gpu
    EDGEREC_TFLITE_GPU_DELEGATE=/opt/tflite/libtensorflowlite_gpu_delegate.so \\
        python recommend_gpu.py /opt/edgerec/bundle --backend litert

Exit code 0, or 3 with ``--require-gpu`` when no backend runs on the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import importlib.util
import logging
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from edgerec.errors import EdgerecError
from edgerec.runtime import Recommender
from edgerec.runtime.backends.base import AcceleratorUnavailable

BACKEND_MODULES = {"litert": "ai_edge_litert", "onnx": "onnxruntime"}


def environment() -> list[str]:
    """What this machine offers: JetPack release, ORT build and providers, Vulkan."""
    lines = []
    try:
        lines.append("L4T: " + Path("/etc/nv_tegra_release").read_text().splitlines()[0])
    except (OSError, IndexError):
        lines.append("L4T: (not a Jetson, /etc/nv_tegra_release missing)")
    for dist in ("onnxruntime-gpu", "onnxruntime", "ai-edge-litert"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            lines.append(f"{dist} {metadata.version(dist)}")
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        lines.append("ONNX Runtime providers: " + ", ".join(ort.get_available_providers()))
    lines.append(f"Vulkan loader: {ctypes.util.find_library('vulkan') or 'not found'}")
    lines.append(
        "EDGEREC_TFLITE_GPU_DELEGATE: " + os.environ.get("EDGEREC_TFLITE_GPU_DELEGATE", "(unset)")
    )
    return lines


def histories(rec: Recommender, count: int = 64) -> list[list[str]]:
    """Realistic histories: the bundle's reference rows, repeated to ``count``."""
    ref = rec.manifest.data.get("reference") or {}
    rows = np.load(rec.manifest.path(ref.get("inputs", "reference/inputs.npy")))
    n, ids = rec.vocab.num_items, rec.vocab.item_ids
    decoded = [[ids[int(i) - 1] for i in row if 1 <= int(i) <= n] for row in rows]
    return [decoded[i % len(decoded)] for i in range(count)]


def p50_ms(fn, args: list, runs: int) -> float:
    for a in args[:3]:
        fn(a)  # warm-up (TensorRT/CUDA initialise lazily)
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(args[i % len(args)])
        samples.append(time.perf_counter() - t0)
    return float(np.percentile(samples, 50) * 1e3)


def measure(rec: Recommender, hs: list[list[str]], runs: int, batch: int) -> dict[str, float]:
    single = p50_ms(lambda h: rec.recommend(h, k=10), hs, runs)
    batched = p50_ms(lambda b: rec.recommend_batch(b, k=10), [hs[:batch]], max(3, runs // 20))
    return {"p50_ms": single, "batch_p50_ms": batched, "batch_per_s": batch / batched * 1e3}


def run_backend(args: argparse.Namespace, backend: str) -> str | None:
    """Open, compare with the CPU and time one backend; return its accelerator."""
    try:
        rec = Recommender.open(
            args.bundle,
            backend=backend,
            accelerator=args.accelerator,
            threads=args.threads,
            gpu_delegate=args.delegate,
        )
    except AcceleratorUnavailable as exc:
        print(f"[{backend}] no GPU: {exc}")
        return None
    with rec:
        acc = rec.accelerator
        extra = ""
        if backend == "onnx":
            extra = f", session providers {getattr(rec.backend, 'providers', '?')}"
        print(f"[{backend}] artifact {rec.artifact.name} ({rec.precision}) runs on: {acc}{extra}")
        hs = histories(rec, args.batch)
        result = measure(rec, hs, args.runs, args.batch)
        top = [{r.item_id for r in rec.recommend(h, k=10, exclude_seen=False)} for h in hs[:8]]
    if acc != "cpu":
        with Recommender.open(args.bundle, backend=backend, accelerator="cpu") as cpu:
            cpu_top = [
                {r.item_id for r in cpu.recommend(h, k=10, exclude_seen=False)} for h in hs[:8]
            ]
            cpu_result = measure(cpu, hs, args.runs, args.batch)
        overlap = np.mean([len(a & b) / 10 for a, b in zip(top, cpu_top, strict=True)])
        print(f"[{backend}] top-10 overlap {acc} vs cpu: {overlap:.3f}")
        print(
            f"[{backend}] cpu: p50 {cpu_result['p50_ms']:.3f} ms, batch {args.batch}: "
            f"{cpu_result['batch_per_s']:.0f} histories/s"
        )
    print(
        f"[{backend}] {acc}: p50 {result['p50_ms']:.3f} ms, batch {args.batch}: "
        f"{result['batch_per_s']:.0f} histories/s"
    )
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::")[1],
    )
    parser.add_argument("bundle", help="bundle folder from `edgerec convert`")
    parser.add_argument("--backend", default="both", choices=["both", "litert", "onnx"])
    parser.add_argument("--accelerator", default="auto", choices=["auto", "gpu", "cpu"])
    parser.add_argument("--delegate", help="TFLite GPU delegate library (LiteRT)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--require-gpu", action="store_true", help="exit 3 without a GPU")
    parser.add_argument("-v", "--verbose", action="store_true", help="log fallback reasons")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    for line in environment():
        print(line)
    print()
    backends = ["onnx", "litert"] if args.backend == "both" else [args.backend]
    used = []
    for backend in backends:
        if not importlib.util.find_spec(BACKEND_MODULES[backend]):
            print(f"[{backend}] not installed")
            continue
        try:
            acc = run_backend(args, backend)
        except EdgerecError as exc:
            print(f"[{backend}] {type(exc).__name__}: {exc}")
            continue
        if acc:
            used.append(acc)
    gpu = [a for a in used if a != "cpu"]
    print(f"\naccelerators in use: {', '.join(used) or 'none'}")
    if args.require_gpu and not gpu:
        print("no backend runs on the GPU (see examples/jetson/README.md)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
