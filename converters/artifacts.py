"""What the passes hand to each other: exported models and their contracts.

TensorFlow-free. The input contract of an artifact is a list of input
descriptors (see :data:`edgerec.bundle.FEEDS`): the standard artifacts take the
int32 item row (``feed = "items"``); the GPU variant takes the looked-up item
embedding rows and a float key mask, because the GPU delegate computes on float
tensors only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerec.converters.config import Precision, Target


@dataclass
class SavedModelArtifact:
    """A TF SavedModel with a static ``[1, L]`` int32 ``items`` signature."""

    path: Path
    max_len: int
    num_items: int
    num_params: int


@dataclass
class ModelArtifact:
    """One exported model file plus what the bundle needs to know about it."""

    name: str  # e.g. "tflite-int8-dynamic", "onnx-fp32", "tflite-fp16-gpu"
    path: Path  # file in the work directory
    filename: str  # file name inside the bundle
    format: Target
    precision: Precision
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    roles: list[str] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)
    extra_files: dict[str, Path] = field(default_factory=dict)  # bundle name -> work path
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # conversion failure (the artifact then fails its gate)
    expected_params: int = 0  # parameters the file should hold (size plausibility)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    @property
    def label(self) -> str:
        """``format/precision`` plus ``+gpu`` for the GPU variant."""
        return f"{self.format}/{self.precision}" + ("+gpu" if "gpu" in self.roles else "")


def items_input(max_len: int, name: str = "items") -> dict[str, Any]:
    """Descriptor of the standard int32 item-row input."""
    return {"name": name, "shape": [1, max_len], "dtype": "int32", "feed": "items"}


def scores_output(num_items: int, name: str = "output_0") -> dict[str, Any]:
    """Descriptor of the ``[1, n]`` float32 score output (column j = item index j + 1)."""
    return {"name": name, "shape": [1, num_items], "dtype": "float32", "kind": "scores"}
