"""TFLite pass: SavedModel -> ``.tflite`` at one precision.

* ``fp32``: plain conversion (the cpu-fallback artifact).
* ``fp16``: float16 weights, float32 compute (weights are DEQUANTIZEd on load).
* ``int8-dynamic``: dynamic-range quantization, int8 weights, float activations.
* ``int8``: full integer quantization calibrated on a representative dataset of
  real training windows; ops without an int8 kernel keep float (the model input
  stays int32 item ids, the output float32 scores). Experimental by default.

Per-channel quantization is off unless asked for: with per-tensor int8 weights the
converter sees that the item-embedding GATHER and the scoring FULLY_CONNECTED read
identical int8 bytes and stores the item table once (per-channel keeps two int8
copies, docs/toolchain.md) — which is what keeps a large-catalog int8 model near the size
of one int8 item table.
One converter object per conversion (they are not reusable).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.converters.artifacts import ModelArtifact, SavedModelArtifact, items_input
from edgerec.converters.config import Precision, Target
from edgerec.runtime.tflite_schema import read_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TFLiteOptions:
    """Options of one TFLite conversion."""

    precision: Precision
    out_path: Path
    calibration: np.ndarray | None = None  # [N, L] int32 rows, required for int8
    per_channel: bool = False


def convert_saved_model(saved: SavedModelArtifact | Path, options: TFLiteOptions) -> bytes:
    """Run the TFLite converter on a SavedModel directory; returns the flatbuffer."""
    import tensorflow as tf

    path = saved.path if isinstance(saved, SavedModelArtifact) else Path(saved)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    precision = options.precision
    if precision is not Precision.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if precision in (Precision.INT8_DYNAMIC, Precision.INT8) and not options.per_channel:
        # private switch of TFLiteConverterV2 (TF 2.x); per-tensor int8 weights
        converter._experimental_disable_per_channel = True
    if precision is Precision.INT8:
        rows = options.calibration
        if rows is None or len(rows) == 0:
            raise ValueError("full int8 needs representative rows (calibration)")

        def representative():
            for row in rows:
                yield [np.asarray(row, np.int32)[None, :]]

        converter.representative_dataset = representative
    return converter.convert()


def run(saved: SavedModelArtifact, options: TFLiteOptions) -> ModelArtifact:
    """Convert ``saved`` at ``options.precision`` into ``options.out_path``."""
    t0 = time.perf_counter()
    flatbuffer = convert_saved_model(saved, options)
    out = Path(options.out_path)
    out.write_bytes(flatbuffer)
    info = read_model(flatbuffer)
    sig = info.signatures.get("serving_default", {})
    in_name = next(iter(sig.get("inputs", {"items": 0})))
    out_name = next(iter(sig.get("outputs", {"output_0": 0})))
    notes = []
    if options.precision is Precision.INT8:
        float_ops = sorted(
            {
                op.name
                for op in info.operators
                if any(t.dtype == "float32" for t in op.outputs) and op.name != "DEQUANTIZE"
            }
        )
        if float_ops:
            notes.append("float fallback ops: " + ", ".join(float_ops))
    seconds = time.perf_counter() - t0
    log.info("tflite %s: %d bytes (%.1f s)", options.precision, len(flatbuffer), seconds)
    return ModelArtifact(
        name=f"tflite-{options.precision}",
        path=out,
        filename=out.name,
        format=Target.TFLITE,
        precision=options.precision,
        inputs=[{**items_input(saved.max_len, in_name), "tensor": info.inputs[0].name}],
        outputs=[
            {
                "name": out_name,
                "tensor": info.outputs[0].name,
                "shape": info.outputs[0].shape,
                "dtype": info.outputs[0].dtype,
                "kind": "scores",
            }
        ],
        notes=notes,
        seconds=seconds,
        expected_params=saved.num_params,
    )
