"""GPU-delegate readiness of a ``.tflite`` file, decided by reading its operators.

``tf.lite.experimental.Analyzer(gpu_compatibility=True)`` flags nothing in TF 2.21
(docs/toolchain.md), so edgerec certifies GPU readiness itself: every operator of the
model must be one the LiteRT GPU delegate accepts, and the tensors it computes on
must be floats. The rules and the operator list below are transcribed from the
delegate's own compatibility check, which the delegate runs when it partitions a
graph (``IsSupported``):

* ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``,
  ``CheckGpuDelegateCompatibility(const OpSignature&)`` (TensorFlow 2.x; its
  comment: "Logics here used to be in TFLiteOperationParser:IsSupported() of
  tensorflow/lite/delegates/gpu/common/model_builder.cc but they're all migrated
  into here"), read at tensorflow/tensorflow commit 057f8c812fb0;
* ``tensorflow/lite/delegates/gpu/common/model_builder.cc``: a node is only
  delegated when all its non-constant input and output tensors are FLOAT32 or
  FLOAT16 (``IsAllFloatTensors``), and tensors are BHWC (rank <= 4);
* the documented list, https://www.tensorflow.org/lite/performance/gpu
  ("Supported ops"): ADD, AVERAGE_POOL_2D, CONCATENATION, CONV_2D,
  DEPTHWISE_CONV_2D, EXP, FULLY_CONNECTED, LOGICAL_AND, LOGISTIC, LSTM,
  MAX_POOL_2D, MAXIMUM, MINIMUM, MUL, PAD, PRELU, RELU, RELU6, RESHAPE,
  RESIZE_BILINEAR, SOFTMAX, STRIDED_SLICE, SUB, TRANSPOSE_CONV — a subset of the
  checker's list (the page is older than the checker; transformer ops such as
  BATCH_MATMUL, MEAN, RSQRT and TRANSPOSE are only in the checker).

This is a static check against the delegate's published rules, not a run on a
GPU: the verdict says "the delegate will accept every node", not how fast it is.
TensorFlow-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgerec.runtime.tflite_schema import ModelInfo, OperatorInfo

SOURCE = (
    "tensorflow/lite/tools/versioning/gpu_compatibility.cc CheckGpuDelegateCompatibility "
    "(tensorflow/tensorflow@057f8c812fb0) + model_builder.cc IsAllFloatTensors; "
    "https://www.tensorflow.org/lite/performance/gpu"
)

#: builtin operators accepted by CheckGpuDelegateCompatibility (see module docstring)
GPU_SUPPORTED_OPS = frozenset(
    {
        # elementwise, one input
        "ABS",
        "COS",
        "ELU",
        "EXP",
        "FLOOR",
        "GELU",
        "LOG",
        "LOGISTIC",
        "NEG",
        "RSQRT",
        "SIGN",
        "SIN",
        "SQRT",
        "SQUARE",
        "TANH",
        # elementwise, two inputs
        "ADD",
        "ADD_N",
        "DIV",
        "EQUAL",
        "FLOOR_DIV",
        "FLOOR_MOD",
        "GREATER",
        "GREATER_EQUAL",
        "LESS",
        "LESS_EQUAL",
        "LOGICAL_AND",
        "MAXIMUM",
        "MINIMUM",
        "MUL",
        "NOT_EQUAL",
        "POW",
        "SQUARED_DIFFERENCE",
        "SUB",
        # activations
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "LEAKY_RELU",
        "PRELU",
        "HARD_SWISH",
        # linear algebra and convolutions
        "BATCH_MATMUL",
        "FULLY_CONNECTED",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "TRANSPOSE_CONV",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "LSTM",
        # reductions
        "MEAN",
        "SUM",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "REDUCE_PROD",
        "SOFTMAX",
        "CUMSUM",
        # shape and data movement
        "CONCATENATION",
        "RESHAPE",
        "TRANSPOSE",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "SPLIT_V",
        "PACK",
        "TILE",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "DEPTH_TO_SPACE",
        "SPACE_TO_DEPTH",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "GATHER",
        "ONE_HOT",
        "SELECT",
        "SELECT_V2",
        "CAST",
        # (de)quantization of constants (fp16 weights are DEQUANTIZEd on load)
        "DEQUANTIZE",
        "QUANTIZE",
        "DENSIFY",
    }
)

#: the custom operators the checker accepts
GPU_SUPPORTED_CUSTOM = frozenset(
    {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
)

FLOAT_TYPES = ("float32", "float16")
MAX_RANK = 4


@dataclass
class GpuVerdict:
    """Whether the GPU delegate would take every node, and what blocks it."""

    ready: bool
    blocking_ops: list[str] = field(default_factory=list)  # distinct op names that block
    reasons: list[str] = field(default_factory=list)  # one line per blocking node (first 20)
    ops: list[str] = field(default_factory=list)  # every distinct op of the model
    source: str = SOURCE

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "blocking_ops": self.blocking_ops,
            "reasons": self.reasons,
            "ops": self.ops,
            "source": self.source,
            "method": "static operator check against the GPU delegate's rules (no GPU run)",
        }


def _op_problem(op: OperatorInfo) -> str | None:
    """Why the delegate would refuse this node, or None when it accepts it."""
    name = op.name
    if name.startswith("CUSTOM:"):
        return None if name[7:] in GPU_SUPPORTED_CUSTOM else "custom op not supported"
    if name not in GPU_SUPPORTED_OPS:
        return "not in the GPU delegate's supported-op list"
    runtime_in = [t for t in op.inputs if not t.is_const]
    if name not in ("DEQUANTIZE", "QUANTIZE", "CAST"):
        # Conservative reading of IsAllFloatTensors: int32 runtime indices (GATHER,
        # ONE_HOT) or bool masks (SELECT_V2) keep a node on the CPU.
        bad = [t for t in runtime_in + op.outputs if t.dtype not in FLOAT_TYPES]
        if bad:
            t = bad[0]
            return f"non-float runtime tensor {t.name!r} ({t.dtype}); the delegate computes floats"
    for t in op.inputs + op.outputs:
        if len(t.shape) > MAX_RANK:
            return f"tensor {t.name!r} has rank {len(t.shape)} > {MAX_RANK} (BHWC only)"
    opts = op.options
    if name == "STRIDED_SLICE":
        if opts.get("ShrinkAxisMask") or opts.get("EllipsisMask") or opts.get("NewAxisMask"):
            return "STRIDED_SLICE with shrink/ellipsis/new-axis mask"
        if op.inputs and len(op.inputs[0].shape) not in (3, 4):
            return "STRIDED_SLICE input must be 3-D or 4-D"
    if name == "SLICE" and op.inputs and len(op.inputs[0].shape) not in (3, 4):
        return "SLICE input must be 3-D or 4-D"
    if name == "SOFTMAX" and opts.get("Beta", 1.0) != 1.0:
        return "SOFTMAX beta != 1"
    if name == "FULLY_CONNECTED":
        if opts.get("WeightsFormat", 0) != 0:
            return "FULLY_CONNECTED with shuffled weights"
        if op.inputs and op.inputs[0].is_const:
            return "FULLY_CONNECTED with a constant input"
        if opts.get("KeepNumDims") and len(op.inputs[0].shape) != len(op.outputs[0].shape):
            return "FULLY_CONNECTED keep_num_dims with different ranks"
    reductions = ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")
    if name in reductions and (
        len(op.inputs) < 2 or not op.inputs[1].is_const or op.inputs[1].dtype != "int32"
    ):
        return f"{name} needs constant int32 axes"
    if name == "BATCH_MATMUL" and len(op.inputs) != 2:
        return "BATCH_MATMUL needs exactly 2 inputs"
    if name == "MUL" and len(op.inputs) == 2:
        a, b = op.inputs[0].shape, op.inputs[1].shape
        if len(a) == len(b):
            a_small = any(x < y for x, y in zip(a, b, strict=True))
            b_small = any(y < x for x, y in zip(a, b, strict=True))
            if a_small and b_small:
                return "MUL where neither input covers the other (outer-product broadcast)"
    return None


def certify(model: ModelInfo) -> GpuVerdict:
    """The GPU verdict of a model parsed by :func:`tflite_schema.read_model`."""
    blocking: dict[str, None] = {}
    reasons: list[str] = []
    if model.num_subgraphs != 1:
        reasons.append(f"model has {model.num_subgraphs} subgraphs (control flow)")
        blocking["SUBGRAPHS"] = None
    for t in model.inputs + model.outputs:
        if -1 in t.shape_signature:
            reasons.append(f"graph tensor {t.name!r} has a dynamic shape {t.shape_signature}")
            blocking["DYNAMIC_SHAPE"] = None
    for op in model.operators:
        problem = _op_problem(op)
        if problem:
            blocking[op.name] = None
            if len(reasons) < 20:
                reasons.append(f"#{op.index} {op.name}: {problem}")
    return GpuVerdict(
        ready=not blocking,
        blocking_ops=sorted(blocking),
        reasons=reasons,
        ops=model.op_names,
    )
