"""Benchmark: a full over-the-air update of a real bundle over loopback, and kill -9 counts.

Publishes two versions of a bundle (by default the ML-100K bundle, copied) into a fresh
TUF repository (``edgerec.release``), serves it with a real HTTP server on 127.0.0.1
(byte ranges supported, as any static server), and measures on the device side
(:class:`edgerec.runtime.update.BundleUpdater`):

* ``install``: a fresh device installs v1 (TUF bootstrap + refresh, download, verify,
  unpack, open + parity check, switch);
* ``update``: v1 -> v2, the same steps on a device that has TUF metadata already;
* ``noop``: the check when nothing changed (metadata refresh only);
* ``rollback``: the release rolls back to v1, which the device still has as its
  previous slot (no download: check + switch);
* ``self_check``: the open + reference-parity check alone, on the unpacked bundle;
* ``publish``: the release side packing, hashing and signing one version.

Then ``--kills`` update processes are killed with SIGKILL at random moments (the loop
of ``tests/runtime/test_update_kill.py``), each followed by a check that the current
slot opens and verifies. Writes ``benchmarks/results/ota.json`` and prints a table.

Usage::

    .venv/bin/python benchmarks/bench_ota.py                        # ML-100K, 300 kills
    .venv/bin/python benchmarks/bench_ota.py --bundle build/device-bundle --kills 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_BUNDLE = Path("/work/wt/baseline/bundles/ml100k")

if str(ROOT) not in sys.path:  # the test helpers: real HTTP server, bundle variants, kill loop
    sys.path.insert(0, str(ROOT))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _device_run(url: str, work: Path, root: Path, repo, server, i: int) -> dict:
    from edgerec.runtime.update import BundleUpdater

    state = work / f"state-{i}"
    up = BundleUpdater(url, state, f"bench-{i}", trusted_root=root)
    repo.rollback("v1")
    install = up.update()
    repo.rollback("v2")
    update = up.update()
    noop = up.update()
    repo.rollback("v1")
    back = up.update()
    for name, res in (("install", install), ("update", update), ("noop", noop)):
        assert res.status in ("installed", "current"), (name, res)
    assert (install.version, update.version, noop.status, back.version) == (
        "v1",
        "v2",
        "current",
        "v1",
    ), (install, update, noop, back)
    shutil.rmtree(state)
    return {
        name: {"seconds": r.seconds, "bytes": r.bytes_downloaded, "status": r.status}
        for name, r in (
            ("install", install),
            ("update", update),
            ("noop", noop),
            ("rollback", back),
        )
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle to ship")
    parser.add_argument("--repeats", type=int, default=5, help="device runs (median)")
    parser.add_argument("--kills", type=int, default=300, help="update processes to kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ota.json")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from edgerec.bundle import open_bundle
    from edgerec.release import ReleaseRepository
    from edgerec.runtime.update_check import self_check
    from tests.runtime.ota_server import bundle_variant, kill_loop, serve

    work = Path(tempfile.mkdtemp(prefix="bench-ota-"))
    try:
        for v in ("v1", "v2", "v3"):
            bundle_variant(args.bundle, work / v, v)
        bundle_bytes = sum(p.stat().st_size for p in (work / "v1").rglob("*") if p.is_file())
        repo = ReleaseRepository.init(work / "repo", work / "keys")
        publish_s = []
        for v in ("v1", "v2", "v3"):
            seconds, res = _timed(lambda v=v: repo.publish(work / v, version=v))
            publish_s.append(seconds)
        archive_bytes = res.bytes
        check_s = [_timed(lambda: self_check(work / "v1"))[0] for _ in range(args.repeats)]
        root = repo.metadata_dir / "root.json"
        with serve(repo.root) as server:
            runs = [
                _device_run(server.url, work, root, repo, server, i) for i in range(args.repeats)
            ]
            kills = None
            if args.kills:
                stats = kill_loop(repo, server.url, work / "kill-state", args.kills, args.seed)
                kills = {
                    "rounds": args.kills,
                    "killed_mid_update": stats.kills,
                    "finished_before_kill": stats.finished,
                    "checks_passed": stats.checks,
                    "version_switches": stats.switches,
                    "update_seconds_window": stats.update_seconds,
                    "leftover_incoming_after_final_update": len(stats.leftovers),
                }
        phases = {}
        for name in ("install", "update", "noop", "rollback"):
            secs = [r[name]["seconds"] for r in runs]
            phases[name] = {
                "median_s": statistics.median(secs),
                "min_s": min(secs),
                "max_s": max(secs),
                "bytes": statistics.median(r[name]["bytes"] for r in runs),
            }
        manifest = open_bundle(work / "v1")
        result = {
            "benchmark": "bench_ota",
            "command": "benchmarks/bench_ota.py " + " ".join(argv or sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "bundle": {
                "source": str(args.bundle),
                "model_id": manifest.model_id,
                "files_bytes": bundle_bytes,
                "archive_bytes": archive_bytes,
            },
            "transport": "HTTP/1.1 on 127.0.0.1 (http.server in a thread, byte ranges)",
            "repeats": args.repeats,
            "phases": phases,
            "self_check_median_s": statistics.median(check_s),
            "publish_median_s": statistics.median(publish_s),
            "kill_test": kills,
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"bundle {manifest.model_id}: {bundle_bytes} bytes, archive {archive_bytes} bytes")
    print(f"{'phase':10} {'median s':>9} {'bytes':>10}")
    for name, p in phases.items():
        print(f"{name:10} {p['median_s']:9.3f} {p['bytes']:10.0f}")
    print(
        f"self-check {result['self_check_median_s']:.3f} s, "
        f"publish {result['publish_median_s']:.3f} s"
    )
    if kills:
        print(f"kill -9: {kills}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
