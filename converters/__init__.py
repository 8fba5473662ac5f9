"""edgerec.converters: the release-pipeline converter (``edgerec convert``).

Distils the teacher into a student, exports TFLite and ONNX artifacts, quantizes,
validates them in their real interpreters and writes a bundle. Imports
TensorFlow, tf2onnx and onnx lazily inside its passes; importing this package
(or its config) loads none of them.

Entry point::

    from edgerec.converters import ConvertConfig, convert

    result = convert("runs/teacher", "movielens-100k", "bundles/ml100k")
    print(result.status, result.summary["quality"])

Passes (one module each in :mod:`edgerec.converters.passes`, a frozen options
dataclass and a ``run()``): ``distil`` -> ``savedmodel`` -> ``tflite`` / ``onnx``
-> ``gpu`` -> ``validate`` (the runtime's own backends) -> ``quality`` ->
``package`` (+ ``report``); ``pipeline.convert`` wires them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgerec._lazy import lazy_exports

if TYPE_CHECKING:
    from edgerec.converters.config import ConvertConfig, Precision, Target
    from edgerec.converters.passes.validate import GateFailed
    from edgerec.converters.pipeline import ConvertResult, convert

_EXPORTS = {
    "ConvertConfig": "edgerec.converters.config",
    "Precision": "edgerec.converters.config",
    "Target": "edgerec.converters.config",
    "ConvertResult": "edgerec.converters.pipeline",
    "convert": "edgerec.converters.pipeline",
    "GateFailed": "edgerec.converters.passes.validate",
}

__all__ = [
    "ConvertConfig",
    "ConvertResult",
    "GateFailed",
    "Precision",
    "Target",
    "convert",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
