"""ONNX pass: SavedModel -> ``.onnx`` (tf2onnx) and its fp16 / int8-dynamic variants.

Traps handled (docs/toolchain.md):

* tf2onnx logs "Unsupported ops" and still returns 0 and writes a file ONNX
  Runtime refuses: its log is captured and any unsupported op is a failure.
* Keras' exact GELU becomes ``Erfc``, which ONNX Runtime has no kernel for: every
  ``Erfc(x)`` is rewritten as ``1 - Erf(x)`` (the student uses tanh GELU, so
  this is a safety net).
* Tied table: tf2onnx folds ``transpose(E)`` into a second copy of the item
  table for the scoring MatMul. :func:`share_item_table` makes the embedding
  Gather read that transposed copy instead (``Gather(E^T, ids, axis=1)`` plus a
  Transpose), so the table is stored once in every precision.
* fp16 uses ``onnxruntime.transformers.float16`` (``onnxconverter_common``
  produced invalid models); inputs/outputs stay int32/float32.
* int8-dynamic uses ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights).

Every output is checked with ``onnx.checker`` and loaded in a real ONNX Runtime
session before it is handed on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.converters.artifacts import ModelArtifact, SavedModelArtifact, items_input
from edgerec.converters.config import Precision, Target
from edgerec.errors import EdgerecError

log = logging.getLogger(__name__)


class OnnxConversionError(EdgerecError):
    """tf2onnx or an ONNX post-pass produced no usable model."""


@dataclass(frozen=True)
class OnnxOptions:
    """Options of one ONNX conversion."""

    precision: Precision
    out_path: Path
    opset: int = 17
    fp32_path: Path | None = None  # the fp32 model the fp16/int8 variants derive from


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def export_fp32(saved_model: Path, out_path: Path, opset: int) -> list[str]:
    """tf2onnx on a SavedModel; returns the notes of the post-passes applied."""
    import onnx
    import tf2onnx.convert as tfconvert
    import tf2onnx.utils
    from tf2onnx import tf_loader

    # tf2onnx names inserted nodes from a process-wide counter; restart it so the
    # same SavedModel always gives the same bytes (reproducible artifacts)
    tf2onnx.utils.INTERNAL_NAME = 1
    capture = _Capture()
    tf2onnx_log = logging.getLogger("tf2onnx")
    tf2onnx_log.addHandler(capture)
    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(saved_model), None, None, return_tensors_to_rename=True
        )
        # the same path `python -m tf2onnx.convert --saved-model` takes
        model, _ = tfconvert._convert_common(
            graph_def,
            name="edgerec-student",
            opset=opset,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
        )
    except Exception as exc:
        raise OnnxConversionError(f"tf2onnx failed: {exc}") from exc
    finally:
        tf2onnx_log.removeHandler(capture)
    unsupported = [m for m in capture.messages if "Unsupported ops" in m]
    if unsupported:
        raise OnnxConversionError("tf2onnx: " + "; ".join(unsupported))
    notes = []
    if rewrite_erfc(model):
        notes.append("Erfc rewritten as 1 - Erf")
    if share_item_table(model):
        notes.append("item table shared by Gather and scoring MatMul (stored once)")
    if canonicalize(model):
        notes.append("names and node order canonicalized (reproducible bytes)")
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return notes


def rewrite_erfc(model: Any) -> int:
    """Replace every ``Erfc(x)`` node by ``Sub(1, Erf(x))``; returns the count."""
    from onnx import helper, numpy_helper

    graph = model.graph
    count = 0
    nodes = []
    for node in graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        count += 1
        one = f"{node.name or node.output[0]}/one"
        erf_out = f"{node.output[0]}/erf"
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
        nodes.append(helper.make_node("Erf", [node.input[0]], [erf_out]))
        nodes.append(helper.make_node("Sub", [one, erf_out], list(node.output)))
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def share_item_table(model: Any) -> bool:
    """Store the tied item table once: point the embedding Gather at the
    transposed copy that the scoring MatMul (or Gemm) reads.

    Looks for ``Gather(E, ids, axis=0)`` and a scoring ``MatMul(h, W)`` or
    ``Gemm(h, W, b)`` where the initializer ``W`` equals ``E`` transposed;
    rewrites the Gather as ``Transpose(Gather(W, ids, axis=1), perm=[1..r, 0])``
    and drops ``E``. A matching Gemm becomes ``MatMul`` + ``Add`` so that ONNX
    Runtime's dynamic quantization (which quantizes MatMul, not Gemm) stores the
    shared table once in int8 too. Returns whether a rewrite happened; the
    result is numerically the same model.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    def attr(node: Any, name: str, default: Any) -> Any:
        return next(
            (helper.get_attribute_value(a) for a in node.attribute if a.name == name), default
        )

    scoring = []  # (node, weight name)
    for n in graph.node:
        if len(n.input) < 2 or n.input[1] not in inits or len(inits[n.input[1]].dims) != 2:
            continue
        if n.op_type == "MatMul" or (
            n.op_type == "Gemm"
            and attr(n, "transA", 0) == 0
            and attr(n, "transB", 0) == 0
            and attr(n, "alpha", 1.0) == 1.0
            and attr(n, "beta", 1.0) == 1.0
        ):
            scoring.append((n, n.input[1]))
    for node in list(graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table_name = node.input[0]
        table = array(table_name)
        if attr(node, "axis", 0) != 0 or table.ndim != 2 or table.size < 1024:
            continue
        for score_node, w_name in scoring:
            w = array(w_name)
            if w.shape != table.shape[::-1] or not np.array_equal(w, table.T):
                continue
            rank = _rank_of(model, node.input[1])
            if rank is None:
                return False
            gathered = f"{node.output[0]}/gather_t"
            gi = list(graph.node).index(node)
            graph.node.remove(node)
            # Gather(W [d, V], ids [..r dims], axis=1) -> [d, ..r]; move d last
            graph.node.insert(
                gi,
                helper.make_node(
                    "Transpose",
                    [gathered],
                    list(node.output),
                    perm=[*range(1, rank + 1), 0],
                    name=f"{node.name}/shared_t",
                ),
            )
            graph.node.insert(
                gi,
                helper.make_node(
                    "Gather",
                    [w_name, node.input[1]],
                    [gathered],
                    axis=1,
                    name=f"{node.name}/shared",
                ),
            )
            if score_node.op_type == "Gemm":
                si = list(graph.node).index(score_node)
                graph.node.remove(score_node)
                outputs = list(score_node.output)
                if len(score_node.input) > 2 and score_node.input[2]:
                    product = f"{outputs[0]}/matmul"
                    graph.node.insert(
                        si,
                        helper.make_node(
                            "Add",
                            [product, score_node.input[2]],
                            outputs,
                            name=f"{score_node.name}/add",
                        ),
                    )
                    outputs = [product]
                graph.node.insert(
                    si,
                    helper.make_node(
                        "MatMul",
                        list(score_node.input[:2]),
                        outputs,
                        name=f"{score_node.name}/matmul",
                    ),
                )
            if not any(table_name in n.input for n in graph.node):
                graph.initializer.remove(inits[table_name])
            return True
    return False


def canonicalize(model: Any) -> bool:
    """Rename and reorder a graph canonically so equal graphs give equal bytes.

    tf2onnx names inserted nodes from a counter and its optimizers iterate
    unordered sets, so two conversions of the same SavedModel differ in names,
    node order and which of several identical constants survives. Here every
    initializer is named by its content hash (identical ones merged), nodes are
    ordered topologically with ties broken by (op type, inputs, attributes), and
    intermediate tensors / nodes get sequential names. Graph inputs and outputs
    keep their names. Graphs with subgraphs (control flow) are left as they are.
    Returns whether the pass ran.
    """
    import hashlib

    from onnx import numpy_helper

    graph = model.graph
    if any(
        a.type in (onnx_attr_graph(), onnx_attr_graphs()) for n in graph.node for a in n.attribute
    ):
        return False
    rename: dict[str, str] = {"": ""}
    for name in [i.name for i in graph.input] + [o.name for o in graph.output]:
        rename[name] = name
    kept = {}
    for init in graph.initializer:
        content = np.ascontiguousarray(numpy_helper.to_array(init)).tobytes()
        digest = hashlib.sha256(
            f"{init.data_type}:{list(init.dims)}:".encode() + content
        ).hexdigest()[:16]
        new = rename.get(init.name) or f"w_{digest}"
        rename[init.name] = new
        if new not in kept:
            init.name = new
            kept[new] = init
    produced = {o for n in graph.node for o in n.output}
    remaining = list(graph.node)
    ordered = []
    available = set(rename)  # graph inputs and initializers
    counter = 0
    while remaining:
        ready = [n for n in remaining if all(i in available or i not in produced for i in n.input)]
        if not ready:
            return False  # not a DAG we understand; leave untouched

        def key(n: Any) -> tuple[str, str, str]:
            attrs = ";".join(
                f"{a.name}={a.SerializeToString(deterministic=True).hex()}"
                for a in sorted(n.attribute, key=lambda a: a.name)
            )
            return (n.op_type, ",".join(rename.get(i, i) for i in n.input), attrs)

        node = min(ready, key=key)
        remaining.remove(node)
        for out in node.output:
            if out not in rename:
                rename[out] = f"t{counter}"
                counter += 1
            available.add(out)
        ordered.append(node)
    for idx, node in enumerate(ordered):
        node.name = f"n{idx}"
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    del graph.node[:]
    graph.node.extend(ordered)
    inits = sorted(kept.values(), key=lambda i: i.name)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    del model.metadata_props[:]
    model.graph.name = "edgerec-student"
    return True


def onnx_attr_graph() -> int:
    from onnx import AttributeProto

    return AttributeProto.GRAPH


def onnx_attr_graphs() -> int:
    from onnx import AttributeProto

    return AttributeProto.GRAPHS


def _rank_of(model: Any, name: str) -> int | None:
    """Rank of a graph tensor from ONNX shape inference (None when unknown)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def check_loads(path: Path) -> Any:
    """``onnx.checker`` plus a real ONNX Runtime session; returns the session."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(saved: SavedModelArtifact, options: OnnxOptions) -> ModelArtifact:
    """Produce the ONNX artifact at ``options.precision``."""
    t0 = time.perf_counter()
    out = Path(options.out_path)
    notes: list[str] = []
    if options.precision is Precision.FP32:
        notes = export_fp32(saved.path, out, options.opset)
    else:
        src = options.fp32_path
        if src is None or not Path(src).is_file():
            raise OnnxConversionError("the fp32 ONNX model must be built first")
        if options.precision is Precision.INT8_DYNAMIC:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
            notes.append("onnxruntime quantize_dynamic, QInt8 weights")
        elif options.precision is Precision.FP16:
            import onnx
            from onnxruntime.transformers import float16

            model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
            onnx.save(model, str(out))
            notes.append("onnxruntime.transformers.float16, float32 inputs/outputs kept")
        else:
            raise OnnxConversionError(f"ONNX has no {options.precision} mode in edgerec")
    session = check_loads(out)
    (inp,) = session.get_inputs()
    (outp,) = session.get_outputs()
    seconds = time.perf_counter() - t0
    log.info("onnx %s: %d bytes (%.1f s)", options.precision, out.stat().st_size, seconds)
    return ModelArtifact(
        name=f"onnx-{options.precision}",
        path=out,
        filename=out.name,
        format=Target.ONNX,
        precision=options.precision,
        inputs=[items_input(saved.max_len, inp.name)],
        outputs=[
            {
                "name": outp.name,
                "shape": [int(d) if isinstance(d, int) else d for d in outp.shape],
                "dtype": "float32" if outp.type == "tensor(float)" else outp.type,
                "kind": "scores",
            }
        ],
        notes=notes,
        seconds=seconds,
        expected_params=saved.num_params,
    )
