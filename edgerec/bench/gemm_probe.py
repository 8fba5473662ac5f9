"""Single-thread GEMM timing probe of :func:`edgerec.bench.runtime_bench.gemm_rates`.

Run as ``python -m edgerec.bench.gemm_probe '[shapes, budget_s, peak_n]'`` in a
process whose BLAS is pinned to one thread (the caller sets the environment
before numpy loads). Prints one JSON line: the best time of each
``[batch, M, K, N]`` shape, of a ``peak_n``-cubed GEMM, of a 1x1x1 matmul
(numpy's fixed per-call cost) and the numpy/BLAS build.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def best_time(rng: np.random.Generator, budget: float, b: int, m: int, k: int, n: int) -> float:
    """Best per-call time of a float32 ``[b, m, k] @ [b, k, n]`` matmul."""
    lhs = rng.standard_normal((b, m, k) if b > 1 else (m, k), dtype=np.float32)
    rhs = rng.standard_normal((b, k, n) if b > 1 else (k, n), dtype=np.float32)
    out = np.matmul(lhs, rhs)
    reps = 1
    while True:
        t = time.perf_counter()
        for _ in range(reps):
            np.matmul(lhs, rhs, out=out)
        dt = time.perf_counter() - t
        if dt >= budget / 6 or reps >= 1 << 20:
            break
        reps *= 2
    best = dt / reps
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            np.matmul(lhs, rhs, out=out)
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def main(argv: list[str]) -> None:
    shapes, budget, peak_n = json.loads(argv[0])
    rng = np.random.default_rng(0)
    res: dict[str, object] = {"shapes": [[*s, best_time(rng, budget, *s)] for s in shapes]}
    res["peak"] = [
        peak_n,
        min(best_time(rng, budget, 1, peak_n, peak_n, peak_n) for _ in range(3)),
    ]
    res["call_s"] = best_time(rng, budget, 1, 1, 1, 1)
    res["numpy"] = np.__version__
    try:
        cfg = np.show_config(mode="dicts")
        res["blas"] = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001 - older numpy: no dict mode
        res["blas"] = "unknown"
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
