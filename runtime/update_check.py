"""The check a new bundle passes on the device before it becomes current.

The bundle is opened exactly as the app will open it (:meth:`Recommender.open`, which
verifies every file's hash), then the artifact it picked runs the reference rows the
converter stored in the bundle (``reference/inputs.npy``) and its outputs are compared
with that artifact's own reference outputs (``reference_output``): finite scores, the
same shape, a maximum absolute error within the precision's tolerance (fp32 1e-4,
fp16 1e-2, widened to the converter's gate when that is wider; int8 modes: not
checked) and a mean top-10 overlap of at least 0.9. These are the tolerances of the
device suite's parity test (``device_tests/test_parity.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.bundle import BundleError

log = logging.getLogger(__name__)

__all__ = ["ParityFailed", "SelfCheck", "self_check"]

MAX_ABS_ERR = {"fp32": 1e-4, "fp16": 1e-2}
MIN_OVERLAP = 0.9
TOP_K = 10


class ParityFailed(BundleError):
    """The bundle's artifact does not reproduce its reference outputs on this device."""


@dataclass(frozen=True)
class SelfCheck:
    """What :func:`self_check` measured (JSON-able through ``__dict__``)."""

    artifact: str
    rows: int
    max_abs_err: float
    top10_overlap: float
    tolerance: float | None


def self_check(bundle_dir: Path, open_kwargs: dict[str, Any] | None = None) -> SelfCheck:
    """Open ``bundle_dir`` and check its reference-vector parity.

    Raises:
        BundleError: the bundle does not open (missing, tampered, incompatible files).
        ParityFailed: it opens but its artifact misses its reference outputs.
        EdgerecError: any other refusal of :meth:`Recommender.open` (e.g. no backend).
    """
    from .recommender import Recommender

    with Recommender.open(bundle_dir, **(open_kwargs or {})) as rec:
        art = rec.artifact
        ref = rec.manifest.data.get("reference") or {}
        if not isinstance(ref, dict) or not ref.get("inputs") or not art.reference_output:
            raise ParityFailed(f"{bundle_dir}: no reference vectors for artifact {art.name}")
        try:
            rows = np.load(rec.manifest.path(ref["inputs"]), allow_pickle=False)
            want = np.load(rec.manifest.path(art.reference_output), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParityFailed(f"{bundle_dir}: unreadable reference vectors ({exc})") from None
        got = np.stack([rec.backend.run_row(np.asarray(r, np.int32)) for r in rows])
    if got.shape != want.shape:
        raise ParityFailed(
            f"{bundle_dir}: {art.name} gives outputs of shape {got.shape}, "
            f"the reference has {want.shape}"
        )
    if not np.isfinite(got).all():
        raise ParityFailed(f"{bundle_dir}: {art.name} gives non-finite scores on this device")
    err = float(np.abs(got.astype(np.float64) - want).max())
    overlap = _topk_overlap(got, want)
    tol = _tolerance(rec.manifest.data, art.format, art.precision)
    result = SelfCheck(art.name, int(len(rows)), err, overlap, tol)
    if tol is not None and err > tol:
        raise ParityFailed(f"{bundle_dir}: {art.name} max abs err {err:.3g} > {tol:.3g}")
    if overlap < MIN_OVERLAP:
        raise ParityFailed(f"{bundle_dir}: {art.name} top-10 overlap {overlap:.2f} < 0.9")
    log.info("self-check of %s passed: %s", bundle_dir, result)
    return result


def _topk_overlap(got: np.ndarray, want: np.ndarray) -> float:
    k = min(TOP_K, got.shape[-1])
    a = np.argpartition(-got, k - 1, axis=-1)[:, :k]
    b = np.argpartition(-want, k - 1, axis=-1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


def _tolerance(data: dict[str, Any], fmt: str, precision: str) -> float | None:
    """The precision's default maximum error, widened to the converter's gate."""
    tol = MAX_ABS_ERR.get(precision)
    if tol is None:
        return None
    gates = data.get("gates") if isinstance(data.get("gates"), dict) else {}
    recipe = data.get("recipe") if isinstance(data.get("recipe"), dict) else {}
    for table in (gates.get("config"), recipe.get("gates"), gates):
        if isinstance(table, dict):
            for key in (f"{fmt}/{precision}", precision):
                gate = table.get(key)
                if isinstance(gate, dict) and isinstance(gate.get("max_abs_err"), int | float):
                    return max(tol, float(gate["max_abs_err"]))
    return tol
