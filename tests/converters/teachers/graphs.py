"""Hand-built ONNX graphs (``onnx.helper``) for the bad-teacher tests: no training, no TF.

``linear_teacher``: ``scores = float(item_seq) @ W`` — a model of any output width and
any values (NaN included), with the input shape and dtype the test asks for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def linear_teacher(
    path: Path,
    width: int,
    max_len: int | str = "L",
    dtype: str = "int64",
    weights: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    length = max_len if isinstance(max_len, int) else None
    if weights is None:
        weights = np.random.default_rng(seed).normal(size=(length or 24, width))
    weights = np.asarray(weights, np.float32)
    elem = TensorProto.INT64 if dtype == "int64" else TensorProto.INT32
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["item_seq"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "W"], ["scores"]),
        ],
        "linear_teacher",
        [helper.make_tensor_value_info("item_seq", elem, ["B", max_len])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", width])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
