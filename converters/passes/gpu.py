"""GPU-variant pass: a TFLite student made only of GPU-delegate operators.

The standard student graph is not GPU-ready (see :mod:`edgerec.converters.passes.gpu_ops`):
it looks items up with GATHER on int32 ids, builds the padding mask with
NOT_EQUAL/SELECT_V2 on int32/bool tensors, takes the last position with a
shrinking STRIDED_SLICE and slices the scores in 2-D — the delegate refuses all
of these. The GPU variant is the *same* student (same weights, same math),
re-expressed with delegate-friendly operators:

* **inputs are floats**: ``item_embeddings [1, L, d]`` (rows of the item table
  for the input row, looked up by the runtime from
  ``student.fp16.gpu.embeddings.npy``, float16 ``[n + 2, d]``) and
  ``key_mask [1, L]`` (1.0 for real items and [MASK], 0.0 for padding);
* **masking by arithmetic**: ``logits * mask + (1 - mask) * mask_value`` equals
  the student's ``where(mask, logits, mask_value)`` for a 0/1 mask (MUL, SUB, ADD);
* attention with separate Q/K/V FULLY_CONNECTED layers, rank-4 TRANSPOSE and
  BATCH_MATMUL (no rank-5 tensors); LayerNorm as MEAN/SQUARED_DIFFERENCE/RSQRT;
* the last position is a non-shrinking 3-D STRIDED_SLICE plus RESHAPE;
* scores are one FULLY_CONNECTED against the item rows ``E[1:n+1]`` (the table
  is stored once in the model, as fp16 weights);
* fp16 weights, static shapes, no top-k (left to the runtime).

The result is certified by reading its operators (:func:`gpu_ops.certify`) and
validated for parity against the Keras student like every other artifact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.converters.artifacts import ModelArtifact, scores_output
from edgerec.converters.config import Precision, Target
from edgerec.converters.passes.distil import StudentArtifact
from edgerec.converters.passes.gpu_ops import certify
from edgerec.runtime.tflite_schema import read_model

log = logging.getLogger(__name__)

EMBEDDINGS_INPUT = "item_embeddings"
MASK_INPUT = "key_mask"
LN_EPS = 1e-6


@dataclass(frozen=True)
class GpuOptions:
    """Options of the GPU-variant pass."""

    out_path: Path
    work_dir: Path


def student_weights(student: StudentArtifact) -> dict[str, np.ndarray]:
    """The student's weights by role, as float32 numpy arrays."""
    m = student.model
    w: dict[str, np.ndarray] = {
        "table": m.item_embedding.embeddings.numpy(),
        "pos": m.position_embedding.numpy(),
        "embed_ln": (m.embed_norm.gamma.numpy(), m.embed_norm.beta.numpy()),
        "head_dense": (m.head_dense.kernel.numpy(), m.head_dense.bias.numpy()),
        "head_ln": (m.head_norm.gamma.numpy(), m.head_norm.beta.numpy()),
        "bias": m.output_bias.numpy(),
    }
    blocks = []
    for b in m.blocks:
        att = b.attention
        blocks.append(
            {
                "qkv": (att.qkv.kernel.numpy(), att.qkv.bias.numpy()),
                "out": (att.out.kernel.numpy(), att.out.bias.numpy()),
                "ffn_in": (b.ffn_in.kernel.numpy(), b.ffn_in.bias.numpy()),
                "ffn_out": (b.ffn_out.kernel.numpy(), b.ffn_out.bias.numpy()),
                "ln1": (b.norm1.gamma.numpy(), b.norm1.beta.numpy()),
                "ln2": (b.norm2.gamma.numpy(), b.norm2.beta.numpy()),
            }
        )
    w["blocks"] = blocks  # type: ignore[assignment]
    return w


def build_module(student: StudentArtifact):  # -> tf.Module
    """A ``tf.Module`` whose ``serve(item_embeddings, key_mask)`` mirrors the student."""
    import tensorflow as tf

    cfg = student.config
    length, d, heads = cfg.max_len, cfg.d_model, cfg.num_heads
    dh = d // heads
    n = student.spec.num_items
    w = student_weights(student)
    c = tf.constant

    def layer_norm(x, params):
        gamma, beta = params
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + LN_EPS) * c(gamma) + c(beta)

    def dense(x, params):
        kernel, bias = params
        return tf.matmul(x, c(kernel)) + c(bias)

    def gelu(x):
        return tf.nn.gelu(x, approximate=True)

    table_items = w["table"][1 : n + 1]  # [n, d]: only the scored rows
    bias_items = w["bias"][1 : n + 1]

    class GpuStudent(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, length, d], tf.float32, name=EMBEDDINGS_INPUT),
                tf.TensorSpec([1, length], tf.float32, name=MASK_INPUT),
            ]
        )
        def serve(self, item_embeddings, key_mask):
            x = tf.reshape(item_embeddings, [length, d]) + c(w["pos"])
            x = layer_norm(x, w["embed_ln"])
            mask = tf.reshape(key_mask, [1, 1, 1, length])
            fill = (1.0 - mask) * cfg.mask_value
            for blk in w["blocks"]:
                kernel, bias = blk["qkv"]
                q = dense(x, (kernel[:, :d], bias[:d]))
                k = dense(x, (kernel[:, d : 2 * d], bias[d : 2 * d]))
                v = dense(x, (kernel[:, 2 * d :], bias[2 * d :]))
                q = tf.transpose(tf.reshape(q, [1, length, heads, dh]), [0, 2, 1, 3])
                k = tf.transpose(tf.reshape(k, [1, length, heads, dh]), [0, 2, 3, 1])
                v = tf.transpose(tf.reshape(v, [1, length, heads, dh]), [0, 2, 1, 3])
                logits = tf.matmul(q, k) * (dh**-0.5)
                logits = logits * mask + fill
                probs = tf.nn.softmax(logits, axis=-1)
                ctx = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [length, d])
                x = layer_norm(x + dense(ctx, blk["out"]), blk["ln1"])
                f = dense(gelu(dense(x, blk["ffn_in"])), blk["ffn_out"])
                x = layer_norm(x + f, blk["ln2"])
            last = tf.reshape(tf.reshape(x, [1, length, d])[:, length - 1 :, :], [1, d])
            h = layer_norm(gelu(dense(last, w["head_dense"])), w["head_ln"])
            scores = tf.matmul(h, c(table_items), transpose_b=True) + c(bias_items)
            return {"output_0": scores}

    return GpuStudent()


def run(student: StudentArtifact, options: GpuOptions) -> ModelArtifact:
    """Build, convert (fp16 weights) and certify the GPU variant."""
    import tensorflow as tf

    from edgerec.converters.passes.tflite import TFLiteOptions, convert_saved_model

    t0 = time.perf_counter()
    module = build_module(student)
    saved = Path(options.work_dir) / "gpu_saved_model"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    flatbuffer = convert_saved_model(saved, TFLiteOptions(Precision.FP16, options.out_path))
    out = Path(options.out_path)
    out.write_bytes(flatbuffer)
    table16 = student.model.item_embedding.embeddings.numpy().astype(np.float16)
    emb_name = out.name.removesuffix(".tflite") + ".embeddings.npy"
    emb_path = out.with_name(emb_name)
    np.save(emb_path, table16)
    info = read_model(flatbuffer)
    verdict = certify(info)
    sig = info.signatures.get("serving_default", {"inputs": {}, "outputs": {}})
    cfg = student.config
    inputs = [
        {
            "name": EMBEDDINGS_INPUT,
            "shape": [1, cfg.max_len, cfg.d_model],
            "dtype": "float32",
            "feed": "embedding_rows",
            "table": emb_name,
        },
        {"name": MASK_INPUT, "shape": [1, cfg.max_len], "dtype": "float32", "feed": "key_mask"},
    ]
    for entry in inputs:
        idx = sig["inputs"].get(entry["name"])
        if idx is not None:
            entry["tensor"] = next((t.name for t in info.inputs if t.index == idx), "")
    seconds = time.perf_counter() - t0
    log.info(
        "gpu variant: %d bytes, GPU-ready %s%s (%.1f s)",
        len(flatbuffer),
        verdict.ready,
        f" (blocked by {', '.join(verdict.blocking_ops)})" if verdict.blocking_ops else "",
        seconds,
    )
    return ModelArtifact(
        name="tflite-fp16-gpu",
        path=out,
        filename=out.name,
        format=Target.TFLITE,
        precision=Precision.FP16,
        inputs=inputs,
        outputs=[{**scores_output(student.spec.num_items), "tensor": info.outputs[0].name}],
        roles=["gpu"],
        gpu=verdict.to_json(),
        extra_files={emb_name: emb_path},
        notes=[
            "inputs are float item-embedding rows + key mask (runtime looks rows up in "
            f"{emb_name}); masking by arithmetic; all ops from the GPU delegate's list"
        ],
        seconds=seconds,
        # the model holds the encoder plus rows 1..n of the table (pad/mask rows and
        # the position table are outside or folded), i.e. about the student's size
        expected_params=student.num_params,
    )
