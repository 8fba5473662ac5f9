"""Small pieces of the validate pass that need no model."""

from __future__ import annotations

import numpy as np

from edgerec.converters.passes.validate import Check, GateFailed, top_k_overlap


def test_top_k_overlap_is_a_set_measure() -> None:
    a = np.arange(20, dtype=np.float32)[None].repeat(2, axis=0)
    b = a.copy()
    b[1] = a[1][::-1]  # reversed scores on row 1: its top-10 is disjoint
    assert top_k_overlap(a, a).tolist() == [1.0, 1.0]
    assert top_k_overlap(a, b).tolist() == [1.0, 0.0]
    c = a.copy()
    c[0, 19], c[0, 18] = c[0, 18], c[0, 19]  # order swap inside the top-10: still 1
    assert top_k_overlap(a, c)[0] == 1.0


def test_check_lines_and_error_types() -> None:
    ok = Check("tflite/fp32", "max_abs_err", True, 1e-6, "<= 0.0001")
    bad = Check("tflite/int8", "top10_overlap", False, 0.5, ">= 0.9")
    assert ok.line().startswith("✓ tflite/fp32: max_abs_err 1e-06 (limit <= 0.0001)")
    assert bad.line().startswith("✗ tflite/int8: top10_overlap 0.5")
    assert GateFailed("x").exit_code == 3
