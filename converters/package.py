"""Bundle pass: write the artifacts, contracts and report into an edgerec bundle.

Layout (see :mod:`edgerec.bundle`)::

    manifest.json                    schema 1: recipe, teacher, feature spec, artifacts...
    vocab.json                       item id <-> index, reserved ids 0 (pad), n+1 ([MASK])
    popularity.npy                   int64 [n] training counts (column j = item j + 1)
    head.npz                         trainable head parameters (see HEAD_DOC)
    reference/inputs.npy             int32 [R, L] encoded rows (held-out users)
    reference/student.keras.npy      float32 [R, n] Keras student outputs
    reference/<artifact>.npy         float32 [R, n] each artifact's own outputs
    student.<precision>.tflite|onnx  the artifacts (TFLite ones embed the manifest)
    student.fp16.gpu.tflite          GPU variant + student.fp16.gpu.embeddings.npy
    report.md / report.json / report.png

Written into a temporary directory next to the output and renamed into place
atomically by :class:`edgerec.bundle.BundleWriter`.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.bundle import BundleWriter
from edgerec.runtime.tflite_schema import MANIFEST_METADATA, embed_metadata

log = logging.getLogger(__name__)

HEAD_DOC = (
    "Trainable head for federated updates: scores = LN(gelu(h @ head_dense_kernel + "
    "head_dense_bias); head_norm_gamma, head_norm_beta, eps 1e-6) @ E^T + output_bias, "
    "column j = item index j (0 = pad, n+1 = [MASK]; artifacts output columns 1..n). "
    "h is the encoder's hidden state of the last ([MASK]) position, E the item table "
    "inside the artifacts. output_bias enters the scores additively, so a device can "
    "apply an updated bias as scores + (new_bias - output_bias)[1:n+1] without touching "
    "the model; the dense/LN parameters need h, which schema-1 artifacts do not output."
)


def head_arrays(model: Any) -> dict[str, np.ndarray]:
    """The student's trainable head parameters (float32)."""
    return {
        "head_dense_kernel": model.head_dense.kernel.numpy().astype(np.float32),
        "head_dense_bias": model.head_dense.bias.numpy().astype(np.float32),
        "head_norm_gamma": model.head_norm.gamma.numpy().astype(np.float32),
        "head_norm_beta": model.head_norm.beta.numpy().astype(np.float32),
        "output_bias": model.output_bias.numpy().astype(np.float32),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def embed_manifest(path: Path, fmt: str, payload: dict[str, Any], out_path: Path) -> Path:
    """Copy an artifact to ``out_path`` with ``payload`` (JSON) embedded as metadata.

    TFLite: a ``edgerec_manifest`` metadata entry; ONNX: a ``metadata_props`` entry.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    if fmt == "tflite":
        out_path.write_bytes(embed_metadata(path, MANIFEST_METADATA, text.encode()))
    else:
        import onnx

        model = onnx.load(str(path))
        props = [p for p in model.metadata_props if p.key != MANIFEST_METADATA]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST_METADATA, text
        onnx.save(model, str(out_path))
    return out_path


def write_bundle(
    out_dir: Path,
    force: bool,
    manifest: dict[str, Any],
    artifacts: list[tuple[dict[str, Any], Path, dict[str, Path]]],
    files: dict[str, bytes | Path],
) -> Path:
    """Publish a bundle atomically.

    Args:
        manifest: manifest fields (the writer adds ``schema_version``,
            ``artifacts`` and ``files``).
        artifacts: ``(entry, file, extra files)`` per artifact; ``entry`` is an
            :class:`~edgerec.bundle.ArtifactEntry` dict without sha256/bytes.
        files: other bundle files, relative path -> bytes or a source path.
    """
    with BundleWriter(out_dir, force=force) as writer:
        for rel, src in files.items():
            if isinstance(src, bytes):
                writer.add_bytes(rel, src)
            else:
                writer.add_file(rel, src)
        for entry, path, extra in artifacts:
            for rel, src in extra.items():
                if rel not in writer.files:
                    writer.add_file(rel, src)
            writer.add_artifact(entry, path)
        return writer.finish(manifest)
