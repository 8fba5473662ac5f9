"""Parity of every artifact this device can run against the reference outputs the
converter stored in the bundle (``reference/<artifact>.npy`` on
``reference/inputs.npy``), plus an end-to-end check through ``Recommender``.

Each artifact runs on the CPU of this device (the GPU is covered by
``test_accelerator.py``) and is compared with

* its own reference output (made on the conversion machine): asserted with the
  per-precision tolerance of ``devicekit.tolerance_for`` (fp32 1e-4, fp16 1e-2 or
  the manifest's wider gate, int8 modes: top-10 overlap only, error recorded);
* the float student's reference output: recorded, and asserted against the
  converter's gate where the gate states a maximum error.
"""

from __future__ import annotations

import numpy as np
import pytest
from devicekit import compare, gate_for, tolerance_for, topk_sets

from edgerec.runtime.backends.base import (
    BACKEND_FOR_FORMAT,
    REQUIRED_MODULE,
    backend_available,
    create_backend,
)


def _run_artifact(manifest, art, rows: np.ndarray) -> np.ndarray:
    spec = manifest.feature_spec
    kwargs = {"num_items": spec.num_items, "max_len": spec.max_len, "threads": 1}
    if art.format == "tflite":
        kwargs["inputs"] = art.inputs
    backend = create_backend(art.format, manifest.path(art.path), accelerator="cpu", **kwargs)
    try:
        assert backend.accelerator == "cpu"
        return np.stack([backend.run_row(row.astype(np.int32)) for row in rows])
    finally:
        backend.close()


def test_artifact_parity(
    artifact_name: str, manifest, reference_inputs, device_report, pytestconfig
) -> None:
    """One artifact on this device's CPU vs its stored reference output."""
    art = manifest.artifact(artifact_name)
    section = device_report.section("parity")
    if not backend_available(art.format):
        reason = f"{REQUIRED_MODULE[art.format]} is not installed on this device"
        section[art.name] = {"skipped": reason}
        pytest.skip(reason)
    out = _run_artifact(manifest, art, reference_inputs)
    n = manifest.feature_spec.num_items
    assert out.shape == (len(reference_inputs), n) and out.dtype == np.float32
    assert np.isfinite(out).all(), f"{art.name}: non-finite scores on this device"

    reference = np.load(manifest.path(art.reference_output))
    min_overlap = pytestconfig.getoption("--min-overlap")
    tol = tolerance_for(manifest.data, art.format, art.precision, min_overlap)
    result = {
        "backend": BACKEND_FOR_FORMAT[art.format],
        "format": art.format,
        "precision": art.precision,
        "roles": art.roles,
        "experimental": art.experimental,
        **compare(out, reference),
        "tolerance": tol,
        "converter_metrics": {
            k: art.metrics.get(k) for k in ("max_abs_err", "top10_overlap", "top10_overlap_min")
        },
    }
    student_rel = (manifest.data.get("reference") or {}).get("student")
    gate = gate_for(manifest.data, art.format, art.precision)
    if student_rel and manifest.path(student_rel).is_file():
        result["vs_student"] = {**compare(out, np.load(manifest.path(student_rel))), "gate": gate}
    failures = []
    if tol["max_abs_err"] is not None and result["max_abs_err"] > tol["max_abs_err"]:
        failures.append(f"max abs err {result['max_abs_err']:.3g} > {tol['max_abs_err']:.3g}")
    if result["top10_overlap"] < tol["min_overlap"]:
        failures.append(f"top-10 overlap {result['top10_overlap']:.3f} < {tol['min_overlap']}")
    vs_student = result.get("vs_student")
    gate_err = gate.get("max_abs_err")
    if vs_student and gate_err is not None and vs_student["max_abs_err"] > float(gate_err):
        failures.append(
            f"vs the float student: max abs err {vs_student['max_abs_err']:.3g} > the "
            f"converter's gate {gate_err}"
        )
    result["passed"] = not failures
    section[art.name] = result
    assert not failures, f"{art.name} ({art.format} {art.precision}): " + "; ".join(failures)


def test_recommend_matches_reference(
    bundle_path, manifest, reference_inputs, reference_histories, device_report
) -> None:
    """End to end: ``Recommender.recommend`` on the decoded reference histories ranks
    the top-10 of the chosen artifact's reference output (same items, same scores)."""
    from edgerec.runtime import Recommender

    with Recommender.open(bundle_path, accelerator="cpu") as rec:
        art = rec.artifact
        reference = np.load(manifest.path(art.reference_output))
        tol = tolerance_for(manifest.data, art.format, art.precision)
        overlaps = []
        for hist, ref_row in zip(reference_histories, reference, strict=True):
            recs = rec.recommend(hist, k=10, exclude_seen=False)
            assert len(recs) == min(10, manifest.feature_spec.num_items)
            assert all(np.isfinite(r.score) for r in recs)
            got = {rec.vocab.index(r.item_id) - 1 for r in recs}  # output column
            (want,) = topk_sets(ref_row[None])
            overlaps.append(len(got & want) / len(want))
            if tol["max_abs_err"] is not None:
                for r in recs:
                    col = rec.vocab.index(r.item_id) - 1
                    assert abs(r.score - ref_row[col]) <= tol["max_abs_err"], (r, ref_row[col])
    device_report.section("parity")["recommend(default)"] = {
        "artifact": art.name,
        "top10_overlap": float(np.mean(overlaps)),
        "passed": float(np.mean(overlaps)) >= tol["min_overlap"],
    }
    assert np.mean(overlaps) >= tol["min_overlap"], overlaps


def test_top_k_is_sorted_and_excludes_seen(bundle_path, reference_histories) -> None:
    """Ranking invariants on the device: sorted scores, history excluded by default."""
    from edgerec.runtime import Recommender

    with Recommender.open(bundle_path) as rec:
        for hist in reference_histories:
            recs = rec.recommend(hist, k=20)
            scores = [r.score for r in recs]
            assert scores == sorted(scores, reverse=True)
            assert not {r.item_id for r in recs} & set(hist)
        empty = rec.recommend([], k=5)
        assert len(empty) == 5, "empty history must fall back to the popularity prior"
