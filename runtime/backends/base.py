"""The small interface every inference backend implements, and the registry
that picks one by artifact format."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.errors import EdgerecError

log = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "gpu")

#: tensor name -> (shape, numpy dtype name)
TensorSignature = dict[str, tuple[list[int], str]]


@dataclass(frozen=True)
class IOSignature:
    """Named inputs and outputs of a loaded model."""

    inputs: TensorSignature
    outputs: TensorSignature


class BackendError(EdgerecError):
    """A backend could not load or run a model."""

    exit_code = 2


class AcceleratorUnavailable(BackendError):
    """``accelerator="gpu"`` was requested but no GPU path works here."""


class Backend(abc.ABC):
    """One loaded model artifact, ready to score input rows.

    Subclasses set :attr:`name` and :attr:`accelerator` (what actually runs the
    model: ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"tensorrt"``...) and implement
    :meth:`run_row`. Implementations must be safe to call from several threads
    and must return arrays they own (never views into interpreter memory).
    """

    name: str = "base"
    accelerator: str = "cpu"

    def __init__(self, path: str | Path, num_items: int, max_len: int) -> None:
        self.path = Path(path)
        self.num_items = num_items
        self.max_len = max_len

    @abc.abstractmethod
    def run_row(self, row: np.ndarray) -> np.ndarray:
        """Scores ``[n]`` float32 for one input row ``[max_len]`` int32."""

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Scores ``[B, n]`` for input rows ``[B, max_len]`` (row by row)."""
        out = np.empty((len(rows), self.num_items), np.float32)
        for i, row in enumerate(rows):
            out[i] = self.run_row(row)
        return out

    def io_signature(self) -> IOSignature:
        """Inputs and outputs of the loaded model as its interpreter sees them.

        The converter's validation compares them with the bundle contract; the
        runtime never needs them (it checks shapes when it loads a model).
        """
        raise NotImplementedError(f"{type(self).__name__} does not report its signature")

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release native resources (optional)."""

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "accelerator": self.accelerator, "path": str(self.path)}


_REGISTRY: dict[str, tuple[str, str, str]] = {
    # artifact format -> (module, class, extra that installs it)
    "tflite": ("edgerec.runtime.backends.litert", "LiteRTBackend", "runtime"),
    "onnx": ("edgerec.runtime.backends.onnx", "OnnxRuntimeBackend", "runtime"),
}
BACKEND_FOR_FORMAT = {"tflite": "litert", "onnx": "onnx"}
FORMAT_FOR_BACKEND = {v: k for k, v in BACKEND_FOR_FORMAT.items()}
REQUIRED_MODULE = {"tflite": "ai_edge_litert", "onnx": "onnxruntime"}


def backend_available(fmt: str) -> bool:
    """Whether the interpreter for artifact format ``fmt`` is installed."""
    from edgerec._deps import has_module

    return fmt in REQUIRED_MODULE and has_module(REQUIRED_MODULE[fmt])


def create_backend(fmt: str, path: str | Path, **kwargs: object) -> Backend:
    """Instantiate the backend registered for artifact format ``fmt``."""
    import importlib

    from edgerec._deps import require

    if fmt not in _REGISTRY:
        raise BackendError(f"no backend for artifact format {fmt!r} (known: {sorted(_REGISTRY)})")
    module, cls, extra = _REGISTRY[fmt]
    require(REQUIRED_MODULE[fmt], extra)
    return getattr(importlib.import_module(module), cls)(path, **kwargs)
