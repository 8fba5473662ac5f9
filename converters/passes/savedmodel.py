"""Export pass: Keras student -> SavedModel with a static ``[1, L]`` int32 signature.

``model.export(dir, "tf_saved_model", input_signature=[TensorSpec([1, L], int32)])``
gives a fully static graph (docs/toolchain.md: a dynamic batch adds SHAPE/PACK/GATHER
shape-math ops). Never ``from_concrete_functions`` on a Keras 3 model: it drops
the weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgerec.converters.artifacts import SavedModelArtifact
from edgerec.converters.passes.distil import StudentArtifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """Options of the SavedModel export pass."""

    out_dir: Path


def run(student: StudentArtifact, options: ExportOptions) -> SavedModelArtifact:
    """Write the student's SavedModel into ``options.out_dir``."""
    from edgerec.teacher.model import serving_signature

    t0 = time.perf_counter()
    path = Path(options.out_dir)
    student.model.export(
        str(path),
        format="tf_saved_model",
        input_signature=serving_signature(student.spec.max_len),
        verbose=False,
    )
    log.info("SavedModel exported to %s (%.1f s)", path, time.perf_counter() - t0)
    return SavedModelArtifact(
        path=path,
        max_len=student.spec.max_len,
        num_items=student.spec.num_items,
        num_params=student.num_params,
    )
