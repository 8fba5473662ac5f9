"""ONNX post-passes on hand-built graphs: Erfc rewrite and the shared item table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgerec.converters.passes.onnx import rewrite_erfc, share_item_table  # noqa: E402


def _save_and_run(model, path: Path, feeds: dict) -> np.ndarray:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_erfc_becomes_one_minus_erf(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Erfc", ["x"], ["y"], domain="")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # ONNX has no Erfc operator: the checker/ORT would refuse this file
    assert rewrite_erfc(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Erf", "Sub"]
    values = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    out = _save_and_run(model, tmp_path / "m.onnx", {"x": values})
    np.testing.assert_allclose(out, [math.erfc(v) for v in values], rtol=1e-6, atol=1e-6)


def test_tied_table_is_stored_once_and_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vocab, d, length = 200, 8, 5  # tables under 1024 values are left alone
    table = rng.normal(size=(vocab, d)).astype(np.float32)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, [1, length])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, d])
    emb = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, length, d])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, vocab])
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0),
            helper.make_node("MatMul", ["h", "ET"], ["scores"]),
        ],
        "tied",
        [ids, h],
        [emb, scores],
        initializer=[
            numpy_helper.from_array(table, "E"),
            numpy_helper.from_array(np.ascontiguousarray(table.T), "ET"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {
        "ids": rng.integers(0, vocab, (1, length)).astype(np.int32),
        "h": rng.normal(size=(1, d)).astype(np.float32),
    }
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert share_item_table(model)
    assert [i.name for i in model.graph.initializer] == ["ET"]
    after = _save_and_run(model, tmp_path / "m.onnx", feeds)
    np.testing.assert_array_equal(after, before[0])
    again = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feeds)
    np.testing.assert_array_equal(again[1], before[1])


def test_tied_table_with_gemm_becomes_matmul_add(tmp_path: Path) -> None:
    """tf2onnx fuses the scoring MatMul + bias into Gemm, which ONNX Runtime's
    dynamic quantization skips; the pass turns it back into MatMul + Add."""
    rng = np.random.default_rng(1)
    vocab, d, length = 200, 8, 5
    table = rng.normal(size=(vocab, d)).astype(np.float32)
    bias = rng.normal(size=(vocab,)).astype(np.float32)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, [1, length])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, d])
    emb = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, length, d])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, vocab])
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0),
            helper.make_node("Gemm", ["h", "ET", "b"], ["scores"], transA=0, transB=0),
        ],
        "tied_gemm",
        [ids, h],
        [emb, scores],
        initializer=[
            numpy_helper.from_array(table, "E"),
            numpy_helper.from_array(np.ascontiguousarray(table.T), "ET"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {
        "ids": rng.integers(0, vocab, (1, length)).astype(np.int32),
        "h": rng.normal(size=(1, d)).astype(np.float32),
    }
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert share_item_table(model)
    assert sorted(i.name for i in model.graph.initializer) == ["ET", "b"]
    assert "Gemm" not in {n.op_type for n in model.graph.node}
    after = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    np.testing.assert_allclose(after[1], before[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(after[0], before[0])
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(model, str(tmp_path / "f.onnx"))
    quantize_dynamic(
        str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8
    )
    q = onnx.load(str(tmp_path / "q.onnx"))
    big = [i for i in q.graph.initializer if np.prod(i.dims) >= vocab * d]
    assert len(big) == 1  # one (quantized) copy of the table


def test_canonicalize_makes_equal_graphs_byte_identical() -> None:
    from edgerec.converters.passes.onnx import canonicalize

    def build(suffix: str, swap: bool):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
        one = numpy_helper.from_array(np.ones(2, np.float32), f"one__{suffix}")
        two = numpy_helper.from_array(np.full(2, 2.0, np.float32), f"two__{suffix}")
        a = helper.make_node("Add", ["x", one.name], [f"a__{suffix}"], name=f"add{suffix}")
        m = helper.make_node("Mul", ["x", two.name], [f"m__{suffix}"], name=f"mul{suffix}")
        s = helper.make_node("Sub", [f"a__{suffix}", f"m__{suffix}"], ["y"])
        nodes = [m, a, s] if swap else [a, m, s]
        inits = [two, one] if swap else [one, two]
        graph = helper.make_graph(nodes, f"g{suffix}", [x], [y], initializer=inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    first, second = build("7", False), build("125", True)
    assert first.SerializeToString() != second.SerializeToString()
    assert canonicalize(first) and canonicalize(second)
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )
    out = ort.InferenceSession(first.SerializeToString()).run(
        None, {"x": np.array([1.0, 3.0], np.float32)}
    )[0]
    np.testing.assert_allclose(out, [0.0, -2.0])
