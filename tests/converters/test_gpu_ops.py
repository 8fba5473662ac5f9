"""GPU-delegate certification rules, on hand-built operator lists (no TF, no files)."""

from __future__ import annotations

from edgerec.converters.passes.gpu_ops import GPU_SUPPORTED_OPS, certify
from edgerec.runtime.tflite_schema import ModelInfo, OperatorInfo, TensorInfo


def t(name: str, shape: list[int], dtype: str = "float32", const: bool = False) -> TensorInfo:
    return TensorInfo(0, name, dtype, shape, list(shape), const)


def model(*ops: OperatorInfo, inputs: list[TensorInfo] | None = None) -> ModelInfo:
    x = t("x", [1, 8, 4])
    return ModelInfo(list(ops), inputs or [x], [t("y", [1, 8])], {}, [], 1)


def op(name: str, ins: list[TensorInfo], outs: list[TensorInfo], **options) -> OperatorInfo:
    return OperatorInfo(0, name, 1, ins, outs, options)


def test_float_transformer_ops_are_ready() -> None:
    x, w = t("x", [8, 4]), t("w", [4, 4], const=True)
    m = model(
        op("FULLY_CONNECTED", [x, w], [t("h", [8, 4])], KeepNumDims=False, WeightsFormat=0),
        op("MEAN", [x, t("axes", [1], "int32", const=True)], [t("m", [8, 1])]),
        op("BATCH_MATMUL", [t("q", [1, 2, 8, 2]), t("k", [1, 2, 2, 8])], [t("l", [1, 2, 8, 8])]),
        op("SOFTMAX", [t("l", [1, 2, 8, 8])], [t("p", [1, 2, 8, 8])], Beta=1.0),
        op("DEQUANTIZE", [t("w16", [4, 4], "float16", const=True)], [t("w32", [4, 4])]),
        op(
            "STRIDED_SLICE",
            [t("x3", [1, 8, 4])] + [t("b", [3], "int32", const=True)] * 3,
            [t("s", [1, 1, 4])],
            ShrinkAxisMask=0,
            EllipsisMask=0,
            NewAxisMask=0,
        ),
    )
    verdict = certify(m)
    assert verdict.ready, verdict.reasons
    assert verdict.blocking_ops == []


def test_blockers_are_named() -> None:
    ids = t("items", [1, 8], "int32")
    table = t("table", [10, 4], const=True)
    m = model(
        op("GATHER", [table, ids], [t("e", [1, 8, 4])]),  # int32 runtime indices
        op(
            "TOPK_V2",
            [t("s", [1, 10]), t("k", [], "int32", const=True)],
            [t("v", [1, 3]), t("i", [1, 3], "int32")],
        ),  # not in the list
        op("RESHAPE", [t("a", [1, 8, 3, 2, 2])], [t("b", [8, 12])]),  # rank 5
        op("STRIDED_SLICE", [t("x3", [1, 8, 4])], [t("s", [1, 4])], ShrinkAxisMask=2),
        op("MUL", [t("a", [1, 8, 1]), t("b", [1, 1, 8])], [t("c", [1, 8, 8])]),
        inputs=[ids],
    )
    verdict = certify(m)
    assert not verdict.ready
    assert verdict.blocking_ops == ["GATHER", "MUL", "RESHAPE", "STRIDED_SLICE", "TOPK_V2"]
    text = "\n".join(verdict.reasons)
    assert "int32" in text and "rank 5" in text and "shrink" in text
    assert "supported-op list" in text
    assert "gpu_compatibility.cc" in verdict.to_json()["source"]


def test_dynamic_shapes_block() -> None:
    x = TensorInfo(0, "x", "float32", [1, 8], [-1, 8], False)
    verdict = certify(model(inputs=[x]))
    assert not verdict.ready and "DYNAMIC_SHAPE" in verdict.blocking_ops


def test_list_has_no_obvious_cpu_only_ops() -> None:
    for name in ("TOPK_V2", "WHERE", "UNIQUE", "NON_MAX_SUPPRESSION_V5", "ARG_MIN"):
        assert name not in GPU_SUPPORTED_OPS
