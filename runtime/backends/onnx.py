"""ONNX Runtime backend with execution providers TensorRT -> CUDA -> CPU.

Providers are filtered by what this ONNX Runtime build offers. ONNX Runtime
quietly drops a GPU provider whose libraries fail to load, so the providers the
session *actually* uses decide :attr:`accelerator`. ``accelerator="gpu"`` with no
working GPU provider raises :class:`AcceleratorUnavailable`; ``"auto"`` logs the
reason once and runs on the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgerec.runtime.backends.base import (
    AcceleratorUnavailable,
    Backend,
    BackendError,
    IOSignature,
)

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PROVIDER_ACCELERATOR = {
    "TensorrtExecutionProvider": "tensorrt",
    "CUDAExecutionProvider": "cuda",
    "CPUExecutionProvider": "cpu",
}
_warned: set[str] = set()


def provider_order(accelerator: str, available: list[str]) -> list[str]:
    """Providers to request, best first, restricted to ``available``."""
    wanted = [*GPU_PROVIDERS, "CPUExecutionProvider"] if accelerator != "cpu" else []
    wanted = [p for p in wanted if p in available]
    if accelerator == "cpu" or "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` artifact run by ONNX Runtime."""

    name = "onnx"

    def __init__(
        self,
        path: str | Path,
        num_items: int,
        max_len: int,
        threads: int = 1,
        accelerator: str = "auto",
    ) -> None:
        super().__init__(path, num_items, max_len)
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = provider_order(accelerator, available)
        if accelerator == "gpu" and not any(p in GPU_PROVIDERS for p in providers):
            raise AcceleratorUnavailable(
                f"{self.path}: accelerator='gpu' requested but this ONNX Runtime build has no "
                f"GPU provider (available: {', '.join(available)}); install onnxruntime-gpu "
                "or use accelerator='auto'"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(
                f"{self.path}: ONNX Runtime cannot load this model ({exc})"
            ) from None
        used = self._session.get_providers()
        self.accelerator = PROVIDER_ACCELERATOR.get(used[0], used[0])
        if accelerator != "cpu" and self.accelerator == "cpu":
            reason = f"available providers {available}, session uses {used}"
            if accelerator == "gpu":
                raise AcceleratorUnavailable(
                    f"{self.path}: accelerator='gpu' requested but ONNX Runtime fell back to "
                    f"the CPU ({reason})"
                )
            if reason not in _warned:
                _warned.add(reason)
                log.info("ONNX Runtime GPU unavailable, using CPU: %s", reason)
        (inp,) = self._session.get_inputs()
        (out,) = self._session.get_outputs()
        self._input_name = inp.name
        self._output_name = out.name
        self._input_dtype = np.int64 if inp.type == "tensor(int64)" else np.int32
        self.providers = used

    def run_row(self, row: np.ndarray) -> np.ndarray:
        session = self._require_session()  # InferenceSession.run is thread-safe
        x = row.reshape(1, self.max_len).astype(self._input_dtype, copy=False)
        (scores,) = session.run([self._output_name], {self._input_name: x})
        return scores[0].astype(np.float32, copy=False)

    def io_signature(self) -> IOSignature:
        session = self._require_session()
        return IOSignature(
            inputs={i.name: (list(i.shape), _ort_dtype(i.type)) for i in session.get_inputs()},
            outputs={o.name: (list(o.shape), _ort_dtype(o.type)) for o in session.get_outputs()},
        )

    def _require_session(self):  # noqa: ANN202 - onnxruntime.InferenceSession
        if self._session is None:
            raise BackendError(f"{self.path}: the backend is closed")
        return self._session

    def close(self) -> None:
        """Drop the inference session. Idempotent."""
        self._session = None


def _ort_dtype(type_name: str) -> str:
    """numpy dtype name of an ONNX Runtime tensor type (``tensor(float)`` -> ``float32``)."""
    return {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(int32)": "int32",
        "tensor(int64)": "int64",
    }.get(type_name, type_name)
