"""Benchmark: validated masked uploads per second against a real coordinator process.

Setup (not timed): a coordinator database for a 10,000-item model, ``--devices``
enrolled devices, one round with all of them, and every device's SecAgg+ phases up
to the upload (advertise, shares, share delivery, masking) run in-process through
the real round engine. The masked vectors are pre-computed.

Timed: ``edgerec coordinator serve`` runs as a separate uvicorn process on
loopback, warmed up first by one untimed read per device of the first few over as many
connections as the timed part (its database connections open, its SecAgg state loaded);
then ``--concurrency`` keep-alive connections POST the pre-computed masked
vectors (one per device, ~53 KB of JSON each). Every upload is fully validated
and acknowledged only after its durable commit: bearer token (hash + constant-time
compare), device/path match, rate limit, JSON schema, base64 and length, round
phase, SecAgg membership, one-per-device, SQLite WAL commit with synchronous=FULL.

Afterwards (not timed) the devices answer the unmask request over HTTP and the
benchmark checks that the published head equals the sum of the fixed-point
updates divided by the cohort: the uploads were not just stored, they aggregate.

The load generator speaks HTTP/1.1 over raw asyncio streams (pre-serialised
requests) so that on this 2-core machine the client takes as little CPU from the
server as possible. Writes ``benchmarks/results/coordinator.json``, prints a table.

Usage::

    .venv/bin/python benchmarks/bench_coordinator.py                 # ~1-2 min
    .venv/bin/python benchmarks/bench_coordinator.py --devices 400 --concurrency 8
    .venv/bin/python benchmarks/bench_coordinator.py --db postgresql://edgerec@/bench?host=/tmp

``--db`` names the database (default: a fresh SQLite file in the work directory);
a PostgreSQL database must be empty (the benchmark creates its tables).
``--workers N`` serves it with ``serve --workers N`` (PostgreSQL only).

``--compare`` measures, in one run and on the same host, SQLite with one process,
PostgreSQL with one process and PostgreSQL with ``--workers 2``, each on a fresh
database (a throw-away PostgreSQL cluster started for the run, as the tests do;
needs the PostgreSQL binaries), and writes ``results/coordinator_scaling.json``::

    .venv/bin/python benchmarks/bench_coordinator.py --compare --devices 400 --repeat 3

``--repeat N`` runs the three configurations N times, interleaved, and reports each
configuration's median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"  # scratch work folders (not committed)
RESULTS = Path(__file__).resolve().parent / "results"
ENROLL_KEY = "bench-enroll-key-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"


def make_bundle(path: Path, num_items: int) -> Path:
    """A minimal bundle (manifest + vocab): all ``serve --bundle`` needs."""
    from edgerec.bundle import BundleWriter
    from edgerec.features import FeatureSpec
    from edgerec.vocab import Vocab

    vocab = Vocab([f"item{i}" for i in range(num_items)])
    with BundleWriter(path) as w:
        w.add_bytes("vocab.json", json.dumps(vocab.to_json()).encode())
        w.finish(
            {
                "model": {"id": "bench", "version": "1"},
                "feature_spec": FeatureSpec(max_len=8, num_items=num_items).to_json(),
                "status": "accepted",
            }
        )
    return path


def prepare(db_url: str, bundle: Path, n: int, degree: int, seed: int) -> dict:
    """Run enrollment and phases 0-1 in-process; return tokens and masked messages."""
    from edgerec.coordinator.config import RoundConfig, ServerConfig
    from edgerec.coordinator.security import EnrollKeys
    from edgerec.coordinator.service import Coordinator, model_from_bundle
    from edgerec.coordinator.storage import open_storage
    from edgerec.federated.dp import privatize
    from edgerec.federated.protocol import KeysBundle, RoundParams, ShareDelivery
    from edgerec.federated.secagg import SecAggClient

    # a z=0 round measures the protocol alone; the default epsilon ceiling would refuse it
    no_ceiling = ServerConfig(epsilon_ceiling=None)
    co = Coordinator(
        open_storage(db_url), model_from_bundle(bundle), EnrollKeys([ENROLL_KEY]), config=no_ceiling
    )
    engine = co.rounds
    creds = [co.devices.enroll(ENROLL_KEY) for _ in range(n)]
    devices = [co.devices.authenticate(f"Bearer {tok}") for _, tok in creds]
    rnd = engine.open_round(
        RoundConfig(
            cohort_target=n, min_cohort=max(2, n // 2), clip=1.0, noise_multiplier=0.0,
            neighbour_degree=degree, deadline_s=3600,
        )
    )  # fmt: skip
    clients = []
    for dev in devices:
        view = engine.device_view(dev)
        c = SecAggClient(view["client_id"], RoundParams.from_wire(view["params"]))
        engine.advertise(rnd.round_id, dev, c.advertise().to_wire())
        clients.append(c)
    engine.advance()
    for dev, c in zip(devices, clients, strict=True):
        bundle_msg = KeysBundle.from_wire(engine.keys_for(rnd.round_id, dev), c.params)
        engine.share(rnd.round_id, dev, c.share_keys(bundle_msg).to_wire())
    engine.advance()
    rng = np.random.default_rng(seed)
    masked, xs = [], []
    for dev, c in zip(devices, clients, strict=True):
        delivery = ShareDelivery.from_wire(engine.delivery_for(rnd.round_id, dev), c.params)
        update = privatize(rng.normal(0, 0.01, c.params.vector_length), c.params)
        xs.append(update.values)
        masked.append(c.masked_input(update.values, delivery).to_wire())
    params = clients[0].params
    co.close()
    return {
        "round": rnd.round_id,
        "creds": creds,
        "clients": clients,
        "masked": masked,
        "xs": xs,
        "frac_bits": params.frac_bits,
        "cohort": params.cohort_target,
    }


def settle(db_url: str) -> None:
    """After the (untimed) setup, bring the database to a steady state so that the timed
    uploads do not pay for the setup's writes: checkpoint the WAL (both backends) and,
    on PostgreSQL, analyse the tables the setup filled (what autovacuum would otherwise
    start doing in the middle of the timed phase)."""
    if db_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    import psycopg

    from edgerec.coordinator.postgres import split_url

    conninfo, _ = split_url(db_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error as exc:  # needs superuser / pg_checkpoint on a given --db
            print(f"settle: no CHECKPOINT ({exc})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The server's environment: this checkout first, then $BENCH_EXTRA_PATH (e.g. a
    folder with httptools, to compare HTTP parsers without installing it)."""
    paths = [str(ROOT), os.environ.get("BENCH_EXTRA_PATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def http_parser() -> str:
    """What ``--http auto`` picks in the server's environment."""
    code = "import importlib.util as u; print('httptools' if u.find_spec('httptools') else 'h11')"
    out = subprocess.run(
        [sys.executable, "-c", code], env=server_env(), capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def start_server(db_url: str, port: int, tmp: Path, workers: int = 1) -> subprocess.Popen:
    (tmp / "enroll.key").write_text(ENROLL_KEY + "\n")
    (tmp / "admin.token").write_text(ADMIN_TOKEN + "\n")
    cmd = [
        sys.executable, "-m", "edgerec", "-q", "coordinator", "serve", "--db", db_url,
        "--port", str(port), "--enroll-key-file", str(tmp / "enroll.key"),
        "--admin-token-file", str(tmp / "admin.token"), "--tick", "1",
    ]  # fmt: skip
    if workers > 1:
        cmd += ["--workers", str(workers)]
    env = server_env()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "server.log").read_text()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its running children so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return float("nan")
    return own + sum(cpu_seconds(int(c)) for c in children)


def database_cpu_seconds() -> float:
    """CPU time of every ``postgres`` process on the host so far (nan if none)."""
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        if name.startswith("postgres"):
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else float("nan")


def http_request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def fire(port: int, requests: list[bytes], concurrency: int) -> tuple[list, list, float]:
    """Send ``requests`` over ``concurrency`` keep-alive connections; latencies in s."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    latencies: list[float] = [0.0] * len(requests)
    statuses: list[int] = [0] * len(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                writer.write(requests[i])
                await writer.drain()
                statuses[i], _ = await read_response(reader)
                latencies[i] = time.perf_counter() - t
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, latencies, time.perf_counter() - t0


def finish_round(port: int, prep: dict) -> None:
    """Unmask over HTTP (not timed)."""
    import httpx

    from edgerec.federated.protocol import UnmaskRequest

    rnd = prep["round"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for _ in range(100):
            view = http.get(
                "/v1/rounds/current", headers={"authorization": f"Bearer {prep['creds'][0][1]}"}
            ).json()
            if view["state"] == "unmask":
                break
            time.sleep(0.2)
        for (device_id, token), c in zip(prep["creds"], prep["clients"], strict=True):
            auth = {"authorization": f"Bearer {token}"}
            path = f"/v1/rounds/{rnd}/devices/{device_id}/unmask"
            req = UnmaskRequest.from_wire(http.get(path, headers=auth).json(), c.params)
            r = http.post(path, json=c.unmask(req).to_wire(), headers=auth)
            r.raise_for_status()


def wait_head(db_url: str, timeout: float = 120) -> np.ndarray | None:
    from edgerec.coordinator.storage import open_storage

    deadline = time.monotonic() + timeout
    with open_storage(db_url) as storage:
        while time.monotonic() < deadline:
            with storage.read() as tx:
                head = tx.get_head(1)
            if head is not None:
                return head.global_bias
            time.sleep(0.3)
    return None


def measure(db_url: str, args: argparse.Namespace, tmp: Path, workers: int) -> dict:
    """Prepare a round on ``db_url``, time the uploads against ``serve``, finish it."""
    bundle = make_bundle(tmp / "bundle", args.params)
    t = time.perf_counter()
    print(f"setup: {args.devices} devices, {args.params}-value updates, k={args.degree} ...")
    prep = prepare(db_url, bundle, args.devices, args.degree, args.seed)
    setup_s = time.perf_counter() - t
    settle(db_url)
    requests = [
        http_request(
            "POST",
            f"/v1/rounds/{prep['round']}/devices/{device_id}/masked",
            token,
            json.dumps(msg, separators=(",", ":")).encode(),
        )
        for (device_id, token), msg in zip(prep["creds"], prep["masked"], strict=True)
    ]
    body_bytes = statistics.mean(len(r) for r in requests)
    port = free_port()
    proc = start_server(db_url, port, tmp, workers)
    try:
        # warm up, over as many connections as the timed part: each process rebuilds the
        # round's SecAgg state from the database, and opens the database connections its
        # request threads will hold (a PostgreSQL pool grows on demand)
        conns = max(args.concurrency, 2 * workers)
        warm = [
            http_request("GET", f"/v1/rounds/{prep['round']}/devices/{device}/shares", token)
            for device, token in prep["creds"][: 4 * conns]  # one each: no rate limit hit
        ]
        asyncio.run(fire(port, warm, conns))
        print(f"timed: {len(requests)} uploads over {args.concurrency} connections ...")
        cpu0, own0, db0 = cpu_seconds(proc.pid), time.process_time(), database_cpu_seconds()
        statuses, lat, elapsed = asyncio.run(fire(port, requests, args.concurrency))
        server_cpu = cpu_seconds(proc.pid) - cpu0
        db_cpu = database_cpu_seconds() - db0
        client_cpu = time.process_time() - own0
        ok = sum(1 for s in statuses if s == 200)
        finish_round(port, prep)
        bias = wait_head(db_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    expected = np.sum([x.view(np.int32).astype(np.int64) for x in prep["xs"]], axis=0)
    expected = expected / 2.0 ** prep["frac_bits"] / prep["cohort"]
    correct = bias is not None and bool(np.allclose(bias, expected, atol=1e-6))
    lat_ms = sorted(x * 1000 for x in lat)
    postgres = db_url.startswith("postgres")
    backend = "PostgreSQL" if postgres else "SQLite WAL synchronous=FULL"
    return {
        "server": f"edgerec coordinator serve (uvicorn, {workers} process"
        f"{'es' if workers > 1 else ''}), {backend}",
        "backend": "postgresql" if postgres else "sqlite",
        "processes": workers,
        "results": {
            "uploads": len(requests),
            "accepted": ok,
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "seconds": elapsed,
            "uploads_per_s": ok / elapsed,
            "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99)),
            "mean_ms": float(np.mean(lat_ms)),
            "max_ms": float(lat_ms[-1]),
            "request_bytes": round(body_bytes),
            "server_cpu_ms_per_upload": 1000 * server_cpu / len(requests),
            "database_cpu_ms_per_upload": 1000 * db_cpu / len(requests) if postgres else None,
            "client_cpu_ms_per_upload": 1000 * client_cpu / len(requests),
            "aggregate_correct": correct,
            "setup_seconds": setup_s,
        },
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg_1m_at_end": os.getloadavg()[0],
    }


def print_row(run: dict, concurrency: int, params: int) -> None:
    r = run["results"]
    print(
        f"| {run['backend']} x{run['processes']} | {r['accepted']}/{r['uploads']} | "
        f"{concurrency} | {params} | {r['request_bytes']} | {r['uploads_per_s']:.0f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{'exact' if r['aggregate_correct'] else 'WRONG'} |"
    )


HEADER = (
    "| server | uploads | conc. | params | req. bytes | uploads/s | p50 ms | p99 ms | aggregate |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


CONFIGS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def compare(args: argparse.Namespace, tmp: Path) -> int:
    """SQLite x1, PostgreSQL x1, PostgreSQL x2 in one run, ``--repeat`` times interleaved
    (so that a load change on the shared host hits every configuration alike); each
    configuration is summarised by the median of its runs (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    from tests.coordinator.pgcluster import PgCluster

    cluster = PgCluster(durable=True).start()  # fsync on: as durable as SQLite FULL
    runs: list[dict] = []
    try:
        for rep in range(args.repeat):
            for name, workers in CONFIGS:
                work = tmp / f"{name}-{workers}-{rep}"
                work.mkdir()
                url = f"sqlite:///{work / 'coordinator.db'}" if name == "sqlite" else None
                print(f"== {name}, {workers} process(es), run {rep + 1}/{args.repeat}")
                run = measure(url or cluster.new_schema(), args, work, workers)
                run["repetition"] = rep
                runs.append(run)
    finally:
        cluster.stop()
    medians = {}
    for name, workers in CONFIGS:
        mine = [r for r in runs if r["backend"] == name and r["processes"] == workers]
        medians[f"{name}_x{workers}"] = {
            key: statistics.median(r["results"][key] for r in mine)
            for key in ("uploads_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_upload")
        }
        if name == "postgresql":
            medians[f"{name}_x{workers}"]["database_cpu_ms_per_upload"] = statistics.median(
                r["results"]["database_cpu_ms_per_upload"] for r in mine
            )
    base = medians["postgresql_x1"]["uploads_per_s"]
    result = {
        "benchmark": "coordinator_scaling",
        "unit": "validated, durably committed masked uploads per second",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "http_parser": http_parser(),
        "client": "asyncio raw HTTP/1.1 keep-alive, pre-serialised requests",
        "database": "PostgreSQL 15 throw-away cluster on the same host and disk, fsync on, "
        "synchronous_commit on (the server defaults), shared_buffers 128MB",
        "runs": runs,
        "medians": medians,
        "postgresql_2_vs_1_processes": medians["postgresql_x2"]["uploads_per_s"] / base,
        "postgresql_vs_sqlite_1_process": base / medians["sqlite_x1"]["uploads_per_s"],
    }
    out = (
        args.out
        if args.out != RESULTS / "coordinator.json"
        else RESULTS / "coordinator_scaling.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(HEADER)
    for run in runs:
        print_row(run, args.concurrency, args.params)
    print("\nmedians:", json.dumps(medians, indent=1))
    print(
        f"PostgreSQL x1 / SQLite x1 = {result['postgresql_vs_sqlite_1_process']:.2f}; "
        f"PostgreSQL x2 / x1 = {result['postgresql_2_vs_1_processes']:.2f}; wrote {out}"
    )
    ok = all(r["results"]["aggregate_correct"] for r in runs)
    return 0 if ok and all(r["results"]["accepted"] == args.devices for r in runs) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000, help="uploads (one per device)")
    ap.add_argument("--params", type=int, default=10_000, help="values per update")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent connections")
    ap.add_argument("--degree", type=int, default=16, help="SecAgg+ neighbour degree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--db", help="database URL (default: a new SQLite file in the work dir)")
    ap.add_argument("--workers", type=int, default=1, help="serve --workers (PostgreSQL)")
    ap.add_argument(
        "--compare", action="store_true", help="SQLite x1, PostgreSQL x1 and x2 in one run"
    )
    ap.add_argument("--repeat", type=int, default=1, help="--compare: interleaved repetitions")
    ap.add_argument("--out", type=Path, default=RESULTS / "coordinator.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-coord-", dir=OUT if OUT.is_dir() else None))
    try:
        if args.compare:
            return compare(args, tmp)
        db_url = args.db or f"sqlite:///{tmp / 'coordinator.db'}"
        run = measure(db_url, args, tmp, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    r = run["results"]
    met = r["uploads_per_s"] >= 200 and r["accepted"] == r["uploads"]
    result = {
        "benchmark": "coordinator",
        "unit": "validated, durably committed masked uploads per second",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server": run["server"],
        "http_parser": http_parser(),
        "client": "asyncio raw HTTP/1.1 keep-alive, pre-serialised requests",
        "results": r,
        "target": {"uploads_per_s": 200, "met": met},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(HEADER)
    print_row(run, args.concurrency, args.params)
    print(
        f"\nHTTP parser {result['http_parser']}; server CPU "
        f"{r['server_cpu_ms_per_upload']:.2f} ms/upload, load generator "
        f"{r['client_cpu_ms_per_upload']:.2f} ms/upload; wrote {args.out}"
    )
    return 0 if met and r["aggregate_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
