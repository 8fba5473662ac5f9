"""Benchmark: SecAgg+ client cost, bytes on the wire and server unmask time.

Runs complete in-process rounds (``edgerec.simulation.secagg_round.run_secagg_round``, every
message through its JSON wire form) with a 10,000-value update per client, for cohorts
of 100 and 1,000, with no dropout and with 30% of the cohort dropping out after upload
(and after the share phase), and checks every time that the unmasked sum equals the
plain mod-2**32 sum of the survivors' fixed-point updates.

Graph: ``k, t = suggest_graph(n, dropout=0.3, failure_probability=1e-6, majority=False)``
(smallest even degree such that, with 30% independent dropout, P(some client keeps
fewer than t live neighbours) <= 1e-6): n=100 -> k=56, t=19; n=1000 -> k=62, t=21.
``--majority`` uses t = k/2 + 1 instead (safe against a server lying about dropouts);
by default one extra run shows that cost for the largest cohort (n=1000: k=212, t=107).
Times are CPU time of the thread (``time.thread_time``): robust to other load on the
machine; wall times are in the JSON too.

Client compute = key generation + every phase method + serialising what the client sends
+ parsing what it receives, as CPU time of the thread (``time.thread_time``, robust to
other load on the machine; wall time is in the JSON too). Bytes = UTF-8 JSON bodies.
A small warm-up round runs first.
Writes ``benchmarks/results/secagg.json`` and prints a table.

Usage::

    .venv/bin/python benchmarks/bench_secagg.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_secagg.py --cohorts 100 --length 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgerec.federated.dp import privatize
from edgerec.federated.protocol import RoundParams
from edgerec.federated.secagg import suggest_graph
from edgerec.simulation.secagg_round import run_secagg_round

RESULTS = Path(__file__).resolve().parent / "results"


def _params(n: int, length: int, k: int, t: int) -> RoundParams:
    return RoundParams.new(
        f"bench-{n}",
        head_version=0,
        cohort_target=n,
        min_cohort=max(2, n // 2),
        deadline=0.0,
        clip=1.0,
        noise_multiplier=1.0,
        frac_bits=20 if n <= 1000 else 16,
        vector_length=length,
        neighbour_degree=k,
        threshold=t,
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(n: int, length: int, k: int, t: int, dropout: float, when: str, seed: int) -> dict:
    p = _params(n, length, k, t)
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    t0 = time.perf_counter()
    inputs = {c: privatize(rng.normal(0, 0.01, length), p, rng).values for c in ids}
    privatize_s = (time.perf_counter() - t0) / n
    dropped = set(rng.choice(ids, size=round(dropout * n), replace=False).tolist())
    kwargs = {f"drop_{when}": dropped} if dropped else {}
    t0 = time.perf_counter()
    rep = run_secagg_round(p, inputs, **kwargs)
    wall = time.perf_counter() - t0
    expected = np.zeros(length, np.uint32)
    for c in rep.survivors:
        expected += inputs[c]
    exact = bool(np.array_equal(rep.total, expected))
    if not exact:
        raise SystemExit(f"NOT EXACT: n={n} dropout={dropout} {when}")
    secs = list(rep.client_seconds.values())
    cpu = list(rep.client_cpu_seconds.values())
    up = list(rep.bytes_up.values())
    down = list(rep.bytes_down.values())
    server_total = sum(rep.server_seconds.values())
    server_cpu_total = sum(rep.server_cpu_seconds.values())
    return {
        "cohort": n,
        "vector_length": length,
        "k": min(k, n - 1),
        "t": p.effective_graph(n)[1],
        "dropout": dropout,
        "threshold_rule": "majority" if t > k // 2 else "suggest_graph(majority=False)",
        "dropout_when": when if dropped else "none",
        "survivors": len(rep.survivors),
        "exact": exact,
        "client_cpu_s": {
            "mean": statistics.fmean(cpu),
            "p50": _pct(cpu, 50),
            "p95": _pct(cpu, 95),
            "max": max(cpu),
        },
        "client_wall_s": {
            "mean": statistics.fmean(secs),
            "p50": _pct(secs, 50),
            "p95": _pct(secs, 95),
            "max": max(secs),
        },
        "privatize_s_per_client": privatize_s,
        "bytes_up_per_client": {"mean": statistics.fmean(up), "max": max(up)},
        "bytes_down_per_client": {"mean": statistics.fmean(down), "max": max(down)},
        "server_wall_s": {**rep.server_seconds, "total": server_total},
        "server_cpu_s": {**rep.server_cpu_seconds, "total": server_cpu_total},
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohorts", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--length", type=int, default=10_000)
    ap.add_argument("--degree", type=int, default=0, help="fixed k (default: suggest_graph)")
    ap.add_argument("--threshold", type=int, default=0, help="fixed t (with --degree)")
    ap.add_argument("--majority", action="store_true", help="t = k/2 + 1 (suggest_graph)")
    ap.add_argument(
        "--no-majority-row",
        dest="majority_row",
        action="store_false",
        help="skip the extra t = k/2 + 1 run for the largest cohort",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "secagg.json")
    args = ap.parse_args(argv)

    run(20, args.length, 8, 4, 0.0, "after_upload", args.seed)  # warm-up
    runs = []
    for n in args.cohorts:
        if args.degree:
            k, t = args.degree, args.threshold or args.degree // 2 + 1
        else:
            try:
                k, t = suggest_graph(n, 0.3, 1e-6, majority=args.majority)
            except ValueError:  # small cohort: complete graph
                k = n + n % 2
                t = k // 2 + 1 if args.majority else k // 3 + 1
        plan = [
            (k, t, 0.0, "after_upload"),
            (k, t, 0.3, "after_upload"),
            (k, t, 0.3, "after_share"),
        ]
        if n == max(args.cohorts) and not args.degree and not args.majority and args.majority_row:
            try:
                km, tm = suggest_graph(n, 0.3, 1e-6, majority=True)
                plan.append((km, tm, 0.3, "after_upload"))
            except ValueError:
                pass
        for k_, t_, dropout, when in plan:
            r = run(n, args.length, k_, t_, dropout, when, args.seed)
            runs.append(r)
            print(
                f"n={n:5d} k={r['k']:3d} t={r['t']:3d} drop={dropout:.0%} {r['dropout_when']:12s}"
                f" client {r['client_cpu_s']['mean'] * 1e3:6.1f} ms"
                f"  up {r['bytes_up_per_client']['mean'] / 1024:6.1f} KiB"
                f"  server unmask {r['server_cpu_s']['result']:6.2f} s  exact={r['exact']}",
                flush=True,
            )
    result = {
        "benchmark": "secagg",
        "graph_rule": "fixed"
        if args.degree
        else f"suggest_graph(n, dropout=0.3, failure_probability=1e-6, majority={args.majority})",
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    hdr = (
        f"{'cohort':>6} {'k':>4} {'t':>4} {'dropout':>15} {'client CPU ms mean/p95':>22} "
        f"{'up KiB':>7} {'down KiB':>8} {'srv unmask s':>12} {'srv total s':>11} exact"
    )
    print("\n" + hdr)
    print("-" * len(hdr))
    for r in runs:
        c = r["client_cpu_s"]
        drop = f"{r['dropout']:.0%} {r['dropout_when'].replace('after_', '')}"
        print(
            f"{r['cohort']:>6} {r['k']:>4} {r['t']:>4} {drop:>15} "
            f"{c['mean'] * 1e3:>10.1f} / {c['p95'] * 1e3:>7.1f} "
            f"{r['bytes_up_per_client']['mean'] / 1024:>7.1f} "
            f"{r['bytes_down_per_client']['mean'] / 1024:>8.1f} "
            f"{r['server_cpu_s']['result']:>12.2f} {r['server_cpu_s']['total']:>11.2f} "
            f"{r['exact']}"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
