"""Benchmark: durable HistoryStore writes (and reads) on this machine's disk.

Measures acknowledged ``record()`` calls per second — each call returns only
after its transaction committed — for both durability modes:

* ``seq``: one thread, sequential ``record()`` (one transaction per event);
* ``seq@cap``: the same with every user already at the cap (each write also
  trims the oldest event: the steady state on a device);
* ``batch100``: ``record_many()`` with 100 events per transaction;
* ``threads4``: 4 threads calling ``record()`` concurrently (group commit);

plus ``history(user, limit=50)`` read latency. Writes
``benchmarks/results/history_store.json`` and prints a table.

Usage::

    .venv/bin/python benchmarks/bench_history_store.py            # ~20 s
    .venv/bin/python benchmarks/bench_history_store.py --events 5000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgerec.runtime.history import HistoryStore

OUT = Path(__file__).resolve().parent / "out"  # scratch databases (not committed)
RESULTS = Path(__file__).resolve().parent / "results"


def _fresh(folder: Path, name: str, **kwargs) -> HistoryStore:
    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return HistoryStore(path, **kwargs)


def bench_seq(folder: Path, sync: str, n: int, users: int, at_cap: bool) -> dict:
    cap = 200
    with _fresh(folder, f"seq-{sync}", max_events_per_user=cap, synchronous=sync) as store:
        if at_cap:
            store.record_many(
                [(f"u{u}", f"warm{k}", float(k)) for u in range(users) for k in range(cap)]
            )
        lat = []
        t0 = time.perf_counter()
        for k in range(n):
            s = time.perf_counter()
            store.record(f"u{k % users}", f"i{k}", 1e6 + k)
            lat.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        if at_cap:
            assert all(store.count(f"u{u}") == cap for u in range(users))
    lat.sort()
    return {
        "calls": n,
        "seconds": elapsed,
        "calls_per_s": n / elapsed,
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
    }


def bench_batch(folder: Path, sync: str, n: int, users: int, batch: int = 100) -> dict:
    with _fresh(folder, f"batch-{sync}", max_events_per_user=1000, synchronous=sync) as store:
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            store.record_many(
                [(f"u{k % users}", f"i{k}", float(k)) for k in range(start, min(n, start + batch))]
            )
        elapsed = time.perf_counter() - t0
    return {"calls": n, "seconds": elapsed, "calls_per_s": n / elapsed, "batch": batch}


def bench_threads(folder: Path, sync: str, n: int, threads: int = 4) -> dict:
    per = n // threads
    with _fresh(folder, f"thr-{sync}", max_events_per_user=n, synchronous=sync) as store:
        calls: list[int] = []
        real_write = store._write

        def counting_write(rows):
            calls.append(len(rows))
            real_write(rows)

        store._write = counting_write  # type: ignore[method-assign]

        def work(t: int) -> None:
            for k in range(per):
                store.record(f"t{t}", f"i{k}", float(k))

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        elapsed = time.perf_counter() - t0
    total = per * threads
    return {
        "calls": total,
        "seconds": elapsed,
        "calls_per_s": total / elapsed,
        "threads": threads,
        "events_per_transaction": total / len(calls),
    }


def bench_read(folder: Path, users: int = 20, reads: int = 2000) -> dict:
    with _fresh(folder, "read", max_events_per_user=1000) as store:
        store.record_many([(f"u{u}", f"i{k}", float(k)) for u in range(users) for k in range(1000)])
        t0 = time.perf_counter()
        for k in range(reads):
            store.history(f"u{k % users}", limit=50)
        elapsed = time.perf_counter() - t0
    return {"reads": reads, "us_per_read": elapsed / reads * 1e6, "history_len": 1000, "limit": 50}


def _best(runs: list[dict]) -> dict:
    best = max(runs, key=lambda r: r["calls_per_s"])
    return {
        **best,
        "median_calls_per_s": statistics.median(r["calls_per_s"] for r in runs),
        "runs_calls_per_s": [round(r["calls_per_s"]) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="record() calls per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder for the databases (default: under out/)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "history_store.json")
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    (args.dir or OUT).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-history-", dir=args.dir or OUT))
    results: dict = {}
    try:
        for sync in ("normal", "full"):
            # fsync per commit is ~10-50x slower: fewer calls keep the run short.
            n = args.events if sync == "normal" else max(500, args.events // 5)
            rows = {
                "seq": _best(
                    [bench_seq(folder, sync, n, args.users, False) for _ in range(args.repeats)]
                ),
                "seq@cap": _best(
                    [bench_seq(folder, sync, n, args.users, True) for _ in range(args.repeats)]
                ),
                "batch100": _best(
                    [bench_batch(folder, sync, n * 5, args.users) for _ in range(args.repeats)]
                ),
                "threads4": _best([bench_threads(folder, sync, n) for _ in range(args.repeats)]),
            }
            results[sync] = rows
        results["read"] = bench_read(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    report = {
        "benchmark": "history_store",
        "unit": "acknowledged record() calls per second (event committed before return)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "disk_folder": str(args.dir or OUT),
        },
        "args": {"events": args.events, "repeats": args.repeats, "users": args.users},
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))

    print(
        f"{'synchronous':<12}{'scenario':<11}{'best/s':>10}{'median/s':>10}{'p50 us':>9}"
        f"{'p99 us':>9}  notes"
    )
    for sync in ("normal", "full"):
        for name, r in results[sync].items():
            notes = ""
            if "events_per_transaction" in r:
                notes = f"{r['events_per_transaction']:.1f} events/txn"
            elif "batch" in r:
                notes = f"{r['batch']} events/txn"
            p50 = f"{r['p50_us']:.0f}" if "p50_us" in r else "-"
            p99 = f"{r['p99_us']:.0f}" if "p99_us" in r else "-"
            print(
                f"{sync:<12}{name:<11}{r['calls_per_s']:>10.0f}{r['median_calls_per_s']:>10.0f}"
                f"{p50:>9}{p99:>9}  {notes}"
            )
    print(f"history(limit=50) of a 1000-event user: {results['read']['us_per_read']:.1f} us/read")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
