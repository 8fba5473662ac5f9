"""Benchmark: one whole federated round of thousands of devices over HTTP + SecAgg+.

Issue 17's round target: a round of ``--devices`` devices served by ``edgerec
coordinator serve --workers 2`` on PostgreSQL completes, and every acknowledged upload
is counted.

Setup (not timed): a throw-away PostgreSQL cluster with the server's durable defaults
(fsync on), a coordinator database for a ``--params``-value head, and ``--devices``
devices enrolled in-process (enrollment is not part of a round).

Timed, everything over HTTP/1.1 keep-alive to the served processes:

1. the operator opens the round with the admin API (cohort = every device, DP on:
   ``--target-epsilon``);
2. every device runs the protocol with the SDK's own device-side pieces
   (:class:`~edgerec.federated.secagg.SecAggClient`,
   :func:`~edgerec.federated.dp.privatize` for clipping, distributed noise and the fixed
   point): ``GET /v1/rounds/current`` and ``POST advertise``; ``GET keys`` and ``POST
   shares``; ``GET shares`` and ``POST masked``; ``GET unmask`` and ``POST unmask``.
   Between phases the driver waits until the coordinator moved the round on (as a
   fleet's devices come back on their own schedule); ``--concurrency`` keep-alive
   connections carry the devices' requests, one device at a time each.

Checked afterwards: the number of acknowledged uploads equals the uploads stored in the
database and the round's survivors, and the published head equals the exact sum of the
devices' fixed-point updates over the cohort (SecAgg+ unmasked them correctly).

Recorded: time per phase (device work plus the server's phase change), the whole round,
per device, and the CPU seconds of the server processes, the database and the device
clients (all on this one machine: the devices' CPU would be spread over a fleet).

    .venv/bin/python benchmarks/bench_coordinator_round.py --devices 5000 --workers 2

Writes ``benchmarks/results/coordinator_round.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_coordinator import (  # noqa: E402  (benchmarks/ is not a package)
    ADMIN_TOKEN,
    ENROLL_KEY,
    cpu_seconds,
    database_cpu_seconds,
    free_port,
    http_request,
    machine,
    make_bundle,
    read_response,
    start_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
OUT = Path(__file__).resolve().parent / "out"


def enroll(db_url: str, bundle: Path, n: int) -> list[tuple[str, str]]:
    """Create the database (bound to ``bundle``) and enroll ``n`` devices; their tokens."""
    from edgerec.coordinator.security import EnrollKeys
    from edgerec.coordinator.service import Coordinator, model_from_bundle
    from edgerec.coordinator.storage import open_storage

    co = Coordinator(open_storage(db_url), model_from_bundle(bundle), EnrollKeys([ENROLL_KEY]))
    try:
        return [co.devices.enroll(ENROLL_KEY) for _ in range(n)]
    finally:
        co.close()


class Device:
    """One device's side of the round: its credentials, SecAgg client and update."""

    def __init__(self, device_id: str, token: str, seed: int) -> None:
        self.device_id = device_id
        self.token = token
        self.rng = np.random.default_rng(seed)
        self.client: Any = None
        self.update: np.ndarray | None = None
        self.acks: dict[str, bool] = {}

    def path(self, round_id: int, what: str) -> str:
        return f"/v1/rounds/{round_id}/devices/{self.device_id}/{what}"


class Connection:
    """One keep-alive HTTP/1.1 connection of the load generator (raw asyncio streams, as
    in ``bench_coordinator.py``: the devices' HTTP costs this shared host little CPU)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: Any = None
        self.writer: Any = None

    async def request(self, method: str, path: str, token: str, body: Any = None) -> Any:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.writer.write(http_request(method, path, token, data))
        await self.writer.drain()
        status, raw = await read_response(self.reader)
        return status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _post(conn: Connection, dev: Device, path: str, body: dict, phase: str) -> None:
    status, answer = await conn.request("POST", path, dev.token, body)
    dev.acks[phase] = status == 200
    if status != 200:
        print(f"  {dev.device_id} {phase}: {status} {str(answer)[:200]}", file=sys.stderr)


async def advertise(conn: Connection, dev: Device, round_id: int) -> None:
    from edgerec.federated.protocol import RoundParams
    from edgerec.federated.secagg import SecAggClient

    _, view = await conn.request("GET", "/v1/rounds/current", dev.token)
    if view.get("round") != round_id or not view.get("selected"):
        return
    dev.client = SecAggClient(view["client_id"], RoundParams.from_wire(view["params"]))
    await _post(conn, dev, dev.path(round_id, "advertise"), dev.client.advertise().to_wire(), "ad")


async def share(conn: Connection, dev: Device, round_id: int) -> None:
    from edgerec.federated.protocol import KeysBundle

    if not dev.acks.get("ad"):
        return
    _, keys = await conn.request("GET", dev.path(round_id, "keys"), dev.token)
    body = dev.client.share_keys(KeysBundle.from_wire(keys, dev.client.params)).to_wire()
    await _post(conn, dev, dev.path(round_id, "shares"), body, "share")


async def upload(conn: Connection, dev: Device, round_id: int) -> None:
    from edgerec.federated.dp import privatize
    from edgerec.federated.protocol import ShareDelivery

    if not dev.acks.get("share"):
        return
    params = dev.client.params
    _, shares = await conn.request("GET", dev.path(round_id, "shares"), dev.token)
    delivery = ShareDelivery.from_wire(shares, params)
    update = privatize(dev.rng.normal(0, 0.01, params.vector_length), params, dev.rng)
    body = dev.client.masked_input(update.values, delivery).to_wire()
    await _post(conn, dev, dev.path(round_id, "masked"), body, "upload")
    if dev.acks["upload"]:
        dev.update = update.values


async def unmask(conn: Connection, dev: Device, round_id: int) -> None:
    from edgerec.federated.protocol import UnmaskRequest

    if not dev.acks.get("upload"):
        return
    _, req = await conn.request("GET", dev.path(round_id, "unmask"), dev.token)
    body = dev.client.unmask(UnmaskRequest.from_wire(req, dev.client.params)).to_wire()
    await _post(conn, dev, dev.path(round_id, "unmask"), body, "unm")


async def wait_state(
    conn: Connection, dev: Device, round_id: int, states: set[str], limit: float
) -> str:
    deadline = time.monotonic() + limit
    while True:
        _, view = await conn.request("GET", f"/v1/rounds/{round_id}", dev.token)
        if view["state"] in states or time.monotonic() > deadline:
            return str(view["state"])
        await asyncio.sleep(0.2)


async def run_round(port: int, devices: list[Device], args: argparse.Namespace) -> dict:
    phases: dict[str, float] = {}
    conns = [Connection(port) for _ in range(args.concurrency)]
    try:
        t0 = time.perf_counter()
        status, opened = await conns[0].request(
            "POST",
            "/v1/admin/rounds",
            ADMIN_TOKEN,
            {
                "cohort_target": len(devices),
                "min_cohort": max(2, int(0.8 * len(devices))),
                "deadline_s": 3600,
                "clip": 1.0,
                "target_epsilon": args.target_epsilon,
                "dropout": args.dropout,
            },
        )
        if status != 201:
            raise RuntimeError(f"open round: {status} {opened}")
        round_id = int(opened["round"])
        phases["open"] = time.perf_counter() - t0

        async def each(fn: Any) -> None:
            queue: asyncio.Queue[Device] = asyncio.Queue()
            for d in devices:
                queue.put_nowait(d)

            async def worker(conn: Connection) -> None:
                while not queue.empty():
                    await fn(conn, queue.get_nowait(), round_id)

            await asyncio.gather(*(worker(c) for c in conns))

        steps = (
            ("advertise", advertise, {"share", "failed", "aborted"}),
            ("share", share, {"upload", "failed", "aborted"}),
            ("upload", upload, {"unmask", "failed", "aborted"}),
            ("unmask", unmask, {"done", "failed", "aborted"}),
        )
        state = "advertise"
        for name, fn, after in steps:
            t = time.perf_counter()
            await each(fn)
            state = await wait_state(conns[0], devices[0], round_id, after, args.phase_wait)
            phases[name] = time.perf_counter() - t
            print(f"  {name}: {phases[name]:.1f} s -> {state}")
            if state not in {"share", "upload", "unmask", "done"}:
                break
        total = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    return {
        "round_id": round_id,
        "round": {
            k: opened.get(k)
            for k in (
                "cohort_target",
                "selected",
                "neighbour_degree",
                "threshold",
                "noise_multiplier",
                "sampling_rate",
                "target_epsilon",
            )
        },  # fmt: skip
        "state": state,
        "phases_s": phases,
        "round_s": total,
    }


def stored_uploads(db_url: str, round_id: int) -> tuple[int, list[int], Any]:
    from edgerec.coordinator.storage import open_storage

    with open_storage(db_url) as storage, storage.read() as tx:
        count = tx.count_messages(round_id, "upload")
        rnd = tx.get_round(round_id)
        head = tx.get_head(rnd.result_version) if rnd and rnd.result_version else None
    survivors = list(rnd.info.get("survivors", ())) if rnd else []
    return count, survivors, None if head is None else head.global_bias


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2, help="serve --workers")
    ap.add_argument("--params", type=int, default=1682, help="values per update (head size)")
    ap.add_argument("--concurrency", type=int, default=64, help="devices in flight at once")
    ap.add_argument("--target-epsilon", type=float, default=8.0)
    ap.add_argument(
        "--dropout",
        type=float,
        default=0.1,
        help="dropout the SecAgg+ graph is sized for (0.1: degree 40 at 5,000 devices)",
    )
    ap.add_argument("--phase-wait", type=float, default=600.0, help="max s to wait per phase")
    ap.add_argument("--db", help="PostgreSQL URL of an empty database (default: a throw-away "
                    "durable cluster)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS / "coordinator_round.json")
    args = ap.parse_args()

    from tests.coordinator.pgcluster import PgCluster

    OUT.mkdir(parents=True, exist_ok=True)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="round-", dir=OUT))
    cluster = None
    if args.db is None:
        cluster = PgCluster(durable=True).start()
        db_url = cluster.new_schema()
    else:
        db_url = args.db
    try:
        t = time.perf_counter()
        creds = enroll(db_url, make_bundle(tmp / "bundle", args.params), args.devices)
        print(f"setup: {args.devices} devices enrolled in {time.perf_counter() - t:.0f} s")
        devices = [Device(d, tok, i) for i, (d, tok) in enumerate(creds)]
        port = free_port()
        proc = start_server(db_url, port, tmp, args.workers)
        try:
            cpu0, db0, own0 = cpu_seconds(proc.pid), database_cpu_seconds(), time.process_time()
            timing = asyncio.run(run_round(port, devices, args))
            server_cpu = cpu_seconds(proc.pid) - cpu0
            db_cpu = database_cpu_seconds() - db0
            client_cpu = time.process_time() - own0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        count, survivors, bias = stored_uploads(db_url, timing["round_id"])
    finally:
        if cluster is not None:
            cluster.stop()
    acked = [d for d in devices if d.acks.get("upload")]
    frac_bits = acked[0].client.params.frac_bits if acked else 0
    expected = np.sum([d.update.view(np.int32).astype(np.int64) for d in acked], axis=0)
    expected = expected / 2.0**frac_bits / max(1, len(acked))
    exact = bias is not None and bool(np.allclose(bias, expected, atol=1e-6))
    acks = {p: sum(1 for d in devices if d.acks.get(p)) for p in ("ad", "share", "upload", "unm")}
    result = {
        "benchmark": "coordinator_round",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server": f"edgerec coordinator serve --workers {args.workers} (uvicorn), PostgreSQL",
        "database": "PostgreSQL 15 throw-away cluster on the same host, fsync on"
        if cluster
        else "given --db",
        "clients": "asyncio raw HTTP/1.1 keep-alive connections, SecAggClient + privatize "
        "per device, in one process",
        **timing,
        "per_device_ms": 1000 * timing["round_s"] / args.devices,
        "acknowledged": {
            "advertise": acks["ad"],
            "share": acks["share"],
            "upload": acks["upload"],
            "unmask": acks["unm"],
        },  # fmt: skip
        "uploads_stored": count,
        "survivors": len(survivors),
        "every_ack_counted": count == acks["upload"] == len(survivors),
        "aggregate_exact": exact,
        "cpu_s": {
            "server_processes": server_cpu,
            "database": db_cpu,
            "device_clients": client_cpu,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("state", "round_s", "per_device_ms", "acknowledged",
                                             "every_ack_counted", "aggregate_exact", "cpu_s")},
                     indent=1))  # fmt: skip
    print(f"wrote {args.out}")
    ok = timing["state"] == "done" and result["every_ack_counted"] and exact
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
