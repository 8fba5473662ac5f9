"""Fresh-process load probe of :func:`edgerec.bench.runtime_bench.measure_load`.

Run as ``python -m edgerec.bench.load_probe '<json>'`` with the keys ``bundle``,
``backend``, ``precision``, ``accelerator``, ``threads`` and ``history``. It
imports ``edgerec.runtime``, opens the bundle, makes one ``recommend`` call and
prints one JSON line: the time and resident memory after each step. Only the
``edgerec`` top-level package (errors and version, no numpy) is loaded before
the clock starts, because ``-m`` imports the parent packages first.
"""

from __future__ import annotations

import json
import resource
import sys
import time

HEAVY_MODULES = {"tensorflow", "keras", "tf2onnx"}


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Current resident set size (``VmRSS``), or the peak where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mb()


def main(argv: list[str]) -> None:
    a = json.loads(argv[0])
    rss0 = rss_mb()
    t0 = time.perf_counter()
    from edgerec.runtime import Recommender

    t1 = time.perf_counter()
    rss1 = rss_mb()
    rec = Recommender.open(
        a["bundle"],
        backend=a["backend"],
        precision=a["precision"],
        accelerator=a["accelerator"],
        threads=a["threads"],
    )
    t2 = time.perf_counter()
    rss2 = rss_mb()
    rec.recommend(a["history"], k=10)
    t3 = time.perf_counter()
    rss3 = rss_mb()
    heavy = sorted({m.split(".")[0] for m in sys.modules} & HEAVY_MODULES)
    result = {
        "import_s": t1 - t0,
        "open_s": t2 - t1,
        "import_open_s": t2 - t0,
        "first_call_ms": (t3 - t2) * 1e3,
        "rss_mb_start": rss0,
        "rss_mb_after_import": rss1,
        "rss_mb_after_open": rss2,
        "rss_mb_after_first_call": rss3,
        "peak_rss_mb": _peak_rss_mb(),
        "accelerator": rec.accelerator,
        "artifact": rec.artifact.name,
        "heavy_modules": heavy,
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
