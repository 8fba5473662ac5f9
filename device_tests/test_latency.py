"""Latency of ``Recommender.recommend`` on this device, written to the JSON report.

One call = feature extraction + inference + top-k (k=10, exclude seen), batch 1,
cycling through the bundle's reference histories, after a few warm-up calls.
Series: the default artifact with ``accelerator="auto"``, then every CPU
artifact of each installed backend (``litert/fp32``, ``onnx/int8-dynamic``...),
and the batch API. Numbers are **recorded, never asserted** (`--latency-runs`
sets the number of calls); benchmarks/ holds the asserted targets.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from devicekit import latency_stats, time_calls

from edgerec.runtime import Recommender
from edgerec.runtime.backends.base import FORMAT_FOR_BACKEND, backend_available

BATCH = 32


def _series(rec: Recommender, histories, runs: int, open_s: float) -> dict:
    stats = latency_stats(time_calls(lambda h: rec.recommend(h, k=10), histories, runs))
    return {
        "artifact": rec.artifact.name,
        "backend": rec.backend_name,
        "precision": rec.precision,
        "accelerator": rec.accelerator,
        "open_s": round(open_s, 4),
        **stats,
    }


def _open(bundle_path, **kwargs) -> tuple[Recommender, float]:
    t0 = time.perf_counter()
    rec = Recommender.open(bundle_path, **kwargs)
    return rec, time.perf_counter() - t0


def test_latency_default(bundle_path, reference_histories, pytestconfig, device_report):
    runs = pytestconfig.getoption("--latency-runs")
    threads = pytestconfig.getoption("--threads")
    rec, open_s = _open(bundle_path, threads=threads)
    with rec:
        series = _series(rec, reference_histories, runs, open_s)
        batch = [reference_histories[i % len(reference_histories)] for i in range(BATCH)]
        b_runs = max(1, runs // 10)
        b_stats = latency_stats(
            time_calls(lambda hs: rec.recommend_batch(hs, k=10), [batch], b_runs, warmup=1)
        )
    latency = device_report.section("latency")
    latency.update({"threads": threads, "runs": runs, "k": 10})
    latency["series"]["default"] = series
    latency["series"][f"default batch{BATCH}"] = {
        "artifact": series["artifact"],
        "accelerator": series["accelerator"],
        "histories_per_s": round(BATCH / (b_stats["p50_ms"] / 1e3), 1),
        **b_stats,
    }
    assert np.isfinite(series["p50_ms"])


@pytest.mark.parametrize("backend", ["litert", "onnx"])
def test_latency_per_backend(
    backend, bundle_path, manifest, reference_histories, pytestconfig, device_report
):
    fmt = FORMAT_FOR_BACKEND[backend]
    if not backend_available(fmt):
        pytest.skip(f"{backend} is not installed on this device")
    precisions = sorted(
        {a.precision for a in manifest.artifacts if a.format == fmt and a.roles != ["gpu"]}
    )
    if not precisions:
        pytest.skip(f"the bundle has no CPU {fmt} artifact")
    runs = pytestconfig.getoption("--latency-runs")
    threads = pytestconfig.getoption("--threads")
    series = device_report.section("latency")["series"]
    for precision in precisions:
        rec, open_s = _open(
            bundle_path, backend=backend, precision=precision, accelerator="cpu", threads=threads
        )
        with rec:
            series[f"{backend}/{precision}"] = _series(rec, reference_histories, runs, open_s)
