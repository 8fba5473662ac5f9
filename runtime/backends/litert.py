"""LiteRT backend: the ``Interpreter`` with XNNPACK on CPU, and the GPU paths.

GPU, in order, when ``accelerator`` is ``"auto"`` or ``"gpu"``:

1. a classic GPU delegate library named by ``gpu_delegate=`` or the
   ``EDGEREC_TFLITE_GPU_DELEGATE`` environment variable, loaded with
   ``load_delegate`` into the ``Interpreter`` (e.g. ``libtensorflowlite_gpu_delegate.so``
   built for a Jetson or a Pi);
2. LiteRT's ``CompiledModel`` with the GPU accelerator (the wheels ship a
   WebGPU/Vulkan accelerator), which raises instead of falling back.

With ``"auto"`` any failure falls back to the CPU interpreter and is logged once;
with ``"gpu"`` it raises :class:`AcceleratorUnavailable`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np

from edgerec.runtime.backends.base import (
    AcceleratorUnavailable,
    Backend,
    BackendError,
    IOSignature,
)

log = logging.getLogger(__name__)
GPU_DELEGATE_ENV = "EDGEREC_TFLITE_GPU_DELEGATE"
SIGNATURE = "serving_default"
_warned: set[str] = set()


def _log_once(msg: str, *args: object) -> None:
    key = msg % args
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


class LiteRTBackend(Backend):
    """A ``.tflite`` artifact run by ai-edge-litert."""

    name = "litert"

    def __init__(
        self,
        path: str | Path,
        num_items: int,
        max_len: int,
        threads: int = 1,
        accelerator: str = "auto",
        gpu_delegate: str | None = None,
        inputs: list[dict] | None = None,
        table_dir: str | Path | None = None,
    ) -> None:
        super().__init__(path, num_items, max_len)
        tables = Path(table_dir) if table_dir is not None else self.path.parent
        self._feeds = InputFeeds(inputs, tables, max_len)
        self._lock = threading.Lock()
        self._compiled = None
        self._interpreter = None
        errors: list[str] = []
        if accelerator in ("auto", "gpu"):
            delegate_path = gpu_delegate or os.environ.get(GPU_DELEGATE_ENV)
            if delegate_path:
                try:
                    self._interpreter = self._make_interpreter(threads, delegate_path)
                    self.accelerator = "gpu"
                except Exception as exc:  # noqa: BLE001 - any delegate failure falls back
                    errors.append(f"GPU delegate {delegate_path}: {exc}")
            if self._interpreter is None:
                missing = _missing_gpu_runtime()
                if missing:
                    errors.append(f"LiteRT CompiledModel GPU: {missing}")
                else:
                    try:
                        self._compiled = _CompiledGpuModel(self.path, self._feeds)
                        self.accelerator = "gpu"
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"LiteRT CompiledModel GPU: {str(exc).strip()[:200]}")
            if self.accelerator != "gpu":
                reason = "; ".join(errors)
                if accelerator == "gpu":
                    raise AcceleratorUnavailable(
                        f"{self.path}: accelerator='gpu' requested but no LiteRT GPU path "
                        f"works here ({reason}); use accelerator='auto' or 'cpu'"
                    )
                _log_once("LiteRT GPU unavailable, using CPU (XNNPACK): %s", reason)
        if self._interpreter is None and self._compiled is None:
            self._interpreter = self._make_interpreter(threads, None)
            self.accelerator = "cpu"
        if self._interpreter is not None:
            self._setup_interpreter()

    def _make_interpreter(self, threads: int, delegate_path: str | None):
        from ai_edge_litert import interpreter as litert

        delegates = [litert.load_delegate(delegate_path)] if delegate_path else None
        try:
            return litert.Interpreter(
                model_path=str(self.path),
                num_threads=threads,
                experimental_delegates=delegates,
            )
        except ValueError as exc:
            raise BackendError(f"{self.path}: LiteRT cannot load this model ({exc})") from None

    def _setup_interpreter(self) -> None:
        interp = self._interpreter
        interp.allocate_tensors()
        details = interp.get_input_details()
        outputs = interp.get_output_details()
        if len(details) != len(self._feeds.specs) or len(outputs) != 1:
            raise BackendError(
                f"{self.path}: model has {len(details)} input(s) and {len(outputs)} output(s); "
                f"the manifest describes {len(self._feeds.specs)} input(s) and 1 output"
            )
        by_tensor = {d["name"]: d for d in details}
        self._in = []
        for i, spec in enumerate(self._feeds.specs):
            d = by_tensor.get(spec.get("tensor", ""), details[i])
            shape = tuple(int(x) for x in d["shape"])
            if shape != tuple(spec["shape"]):
                raise BackendError(
                    f"{self.path}: input {spec['name']!r} has shape {shape}, "
                    f"the manifest says {tuple(spec['shape'])}"
                )
            self._in.append((d["index"], d["dtype"]))
        out_shape = tuple(int(x) for x in outputs[0]["shape"])
        if out_shape != (1, self.num_items):
            raise BackendError(
                f"{self.path}: output shape {out_shape}, expected (1, {self.num_items})"
            )
        self._out = outputs[0]["index"]

    def run_row(self, row: np.ndarray) -> np.ndarray:
        feeds = self._feeds.build(row)
        if self._compiled is not None:
            return self._compiled.run(feeds, self.num_items)
        with self._lock:
            interp = self._interpreter
            if interp is None:
                raise BackendError(f"{self.path}: the backend is closed")
            for (index, dtype), value in zip(self._in, feeds.values(), strict=True):
                interp.set_tensor(index, value.astype(dtype, copy=False))
            interp.invoke()
            # get_tensor copies: nothing here points into interpreter memory
            return interp.get_tensor(self._out)[0].astype(np.float32, copy=False)

    def io_signature(self) -> IOSignature:
        """The ``serving_default`` signature's inputs and outputs (CPU interpreter only)."""
        from edgerec.runtime.tflite_schema import read_model

        with self._lock:
            interp = self._interpreter
            if interp is None:
                raise BackendError(f"{self.path}: no interpreter to describe (GPU or closed)")
            info = read_model(self.path)
            if SIGNATURE not in info.signatures:
                raise BackendError(
                    f"{self.path}: no signature {SIGNATURE!r} (have {list(info.signatures)})"
                )
            sig = info.signatures[SIGNATURE]
            details = {d["index"]: d for d in interp.get_input_details()}
            details.update({d["index"]: d for d in interp.get_output_details()})

            def describe(index: int) -> tuple[list[int], str]:
                d = details[index]
                return [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name

            return IOSignature(
                inputs={name: describe(i) for name, i in sig["inputs"].items()},
                outputs={name: describe(i) for name, i in sig["outputs"].items()},
            )

    def close(self) -> None:
        """Drop the interpreter (or close the compiled GPU model). Idempotent."""
        with self._lock:
            self._interpreter = None
            if self._compiled is not None:
                self._compiled.close()
                self._compiled = None


#: file names of the Vulkan loader, by ``sys.platform``
_VULKAN_LOADERS = {
    "linux": ("libvulkan.so.1", "libvulkan.so"),
    "darwin": ("libvulkan.1.dylib", "libMoltenVK.dylib"),
    "win32": ("vulkan-1.dll",),
}


def _missing_gpu_runtime() -> str | None:
    """Why LiteRT's GPU accelerator cannot start here, or None if it might.

    The accelerator the wheels ship runs on WebGPU over Vulkan (Dawn): without a
    Vulkan loader it always fails, after printing a screenful of native logs.
    ``EDGEREC_FORCE_GPU_PROBE=1`` skips this check.
    """
    if os.environ.get("EDGEREC_FORCE_GPU_PROBE") == "1":
        return None
    if not _vulkan_loader_present():
        return "no Vulkan loader (libvulkan.so.1) on this system"
    return None


@functools.lru_cache(maxsize=1)
def _vulkan_loader_present() -> bool:
    """Whether the dynamic linker can load a Vulkan loader (checked once per process).

    ``dlopen`` through ctypes, not ``ctypes.util.find_library``: the latter runs
    ``ldconfig``, ``gcc`` and ``ld`` in subprocesses, whose start-up would be paid
    on every ``Recommender.open`` (and grows with the host's load). A loader that
    is present is what the GPU accelerator would load next anyway.
    """
    import ctypes

    names = _VULKAN_LOADERS.get(sys.platform, _VULKAN_LOADERS["linux"])
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


class InputFeeds:
    """Builds a model's input tensors from one int32 input row.

    Artifacts declare their inputs in the manifest; ``feed`` says how each is
    made: ``items`` (the row itself), ``embedding_rows`` (rows of an embedding
    table shipped beside the model, for GPU variants that avoid GATHER) and
    ``key_mask`` (1.0 for real tokens, 0.0 for padding).
    """

    def __init__(self, specs: list[dict] | None, root: Path, max_len: int) -> None:
        self.specs = specs or [
            {"name": "items", "shape": [1, max_len], "dtype": "int32", "feed": "items"}
        ]
        self.max_len = max_len
        self._tables: dict[str, np.ndarray] = {}
        for spec in self.specs:
            feed = spec.get("feed", "items")
            if feed not in ("items", "embedding_rows", "key_mask"):
                raise BackendError(f"input {spec.get('name')!r}: unknown feed kind {feed!r}")
            if feed == "embedding_rows":
                table_path = root / spec["table"]
                try:
                    self._tables[spec["name"]] = np.load(table_path).astype(np.float32)
                except (OSError, ValueError) as exc:
                    raise BackendError(
                        f"{table_path}: cannot read embedding table ({exc})"
                    ) from None

    def build(self, row: np.ndarray) -> dict[str, np.ndarray]:
        """Input arrays by signature input name, in manifest order."""
        x = np.asarray(row).reshape(1, self.max_len)
        out = {}
        for spec in self.specs:
            feed = spec.get("feed", "items")
            if feed == "items":
                out[spec["name"]] = x
            elif feed == "embedding_rows":
                out[spec["name"]] = self._tables[spec["name"]][x]
            else:
                out[spec["name"]] = (x != 0).astype(np.float32)
        return out


class _CompiledGpuModel:
    """LiteRT ``CompiledModel`` on the GPU accelerator (raises when unavailable)."""

    def __init__(self, path: Path, feeds: InputFeeds) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        self._model = CompiledModel.from_file(str(path), hardware_accel=HardwareAccelerator.GPU)
        if not self._model.is_fully_accelerated():
            self._model.close()
            raise BackendError("the GPU accelerator does not cover every operator")
        self._lock = threading.Lock()
        signature = self._model.get_signature_by_index(0)
        self._input_names = list(signature.get("inputs", []))
        self._inputs = self._model.create_input_buffers(0)
        self._outputs = self._model.create_output_buffers(0)
        missing = {s["name"] for s in feeds.specs} - set(self._input_names)
        if missing:
            raise BackendError(f"signature lacks input(s) {sorted(missing)}")

    def run(self, feeds: dict[str, np.ndarray], num_items: int) -> np.ndarray:
        with self._lock:
            for name, buffer in zip(self._input_names, self._inputs, strict=True):
                value = feeds[name]
                buffer.write(np.ascontiguousarray(value, value.dtype))
            self._model.run_by_index(0, self._inputs, self._outputs)
            return np.array(self._outputs[0].read(num_items, np.float32), np.float32)

    def close(self) -> None:
        self._model.close()
