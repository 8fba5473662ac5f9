"""Run exported artifacts in their real interpreters (no TensorFlow).

* ``.tflite`` — ``ai_edge_litert.interpreter.Interpreter`` (XNNPACK on by
  default), inputs set by signature name (tensor indices read from the
  flatbuffer), outputs copied before the next ``invoke()`` (they point into
  interpreter memory, docs/toolchain.md).
* ``.onnx`` — an ``onnxruntime.InferenceSession`` on the CPU provider.

Both are batch 1, as on a device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgerec.converters.tflite_schema import read_model


class Runner(Protocol):
    """A loaded artifact: named inputs/outputs and one call per input row."""

    inputs: dict[str, tuple[list[int], str]]  # name -> (shape, dtype)
    outputs: dict[str, tuple[list[int], str]]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The score output (a copy) for one set of feeds."""
        ...


class LiteRTRunner:
    """A ``.tflite`` file in the LiteRT interpreter, driven by its signature."""

    def __init__(self, path: str | Path, threads: int = 1, signature: str = "serving_default"):
        from ai_edge_litert.interpreter import Interpreter

        info = read_model(path)
        if signature not in info.signatures:
            raise ValueError(f"{path}: no signature {signature!r} (have {list(info.signatures)})")
        sig = info.signatures[signature]
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        details = {d["index"]: d for d in self.interpreter.get_input_details()}
        details.update({d["index"]: d for d in self.interpreter.get_output_details()})
        self._in = dict(sig["inputs"])
        self._out = dict(sig["outputs"])
        self.inputs = {
            name: ([int(x) for x in details[i]["shape"]], np.dtype(details[i]["dtype"]).name)
            for name, i in self._in.items()
        }
        self.outputs = {
            name: ([int(x) for x in details[i]["shape"]], np.dtype(details[i]["dtype"]).name)
            for name, i in self._out.items()
        }
        self._score_index = next(iter(self._out.values()))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for name, index in self._in.items():
            self.interpreter.set_tensor(index, feeds[name])
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._score_index), copy=True)


class OnnxRunner:
    """An ``.onnx`` file in ONNX Runtime (CPU execution provider)."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {
            i.name: (list(i.shape), _ort_dtype(i.type)) for i in self.session.get_inputs()
        }
        self.outputs = {
            o.name: (list(o.shape), _ort_dtype(o.type)) for o in self.session.get_outputs()
        }
        self._first_output = self.session.get_outputs()[0].name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self._first_output], feeds)[0]


def _ort_dtype(type_name: str) -> str:
    return {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(int32)": "int32",
        "tensor(int64)": "int64",
    }.get(type_name, type_name)


def open_runner(path: str | Path, fmt: str, threads: int = 1) -> Any:
    """A runner for an artifact file of format ``tflite`` or ``onnx``."""
    if str(fmt) == "tflite":
        return LiteRTRunner(path, threads)
    if str(fmt) == "onnx":
        return OnnxRunner(path, threads)
    raise ValueError(f"unknown artifact format {fmt!r}")
