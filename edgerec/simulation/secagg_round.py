"""In-memory SecAgg+ round driver: every client and the server in one process.

Used by the tests and ``benchmarks/bench_secagg.py``, and handy as the reference of how
a coordinator and a device sequence the phases. With ``wire=True`` every message goes
through its JSON text form (``protocol.dumps`` / ``protocol.loads``), so byte counts are
the real upload and download sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.federated import protocol
from edgerec.federated.protocol import RoundParams
from edgerec.federated.secagg import SecAggClient, SecAggServer

__all__ = ["RoundReport", "run_secagg_round"]


@dataclass
class RoundReport:
    """What :func:`run_secagg_round` measured.

    Attributes:
        total: the unmasked uint32 sum returned by the server.
        survivors: ids whose inputs are in ``total``.
        client_seconds: per client, wall time of its own work: key generation, the phase
            methods, serialising what it sends and parsing what it receives.
        client_cpu_seconds: the same as CPU time of the running thread (insensitive to
            other processes competing for the cores).
        bytes_up: per client, bytes of JSON it sent.
        bytes_down: per client, bytes of JSON it received.
        server_seconds: wall time per server step (``advertise``, ``shares``, ``inputs``,
            ``unmask``, ``result``); ``server_cpu_seconds`` the same as thread CPU time.
    """

    total: np.ndarray
    survivors: tuple[int, ...]
    client_seconds: dict[int, float] = field(default_factory=dict)
    client_cpu_seconds: dict[int, float] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    server_cpu_seconds: dict[str, float] = field(default_factory=dict)


def run_secagg_round(
    params: RoundParams,
    inputs: Mapping[int, np.ndarray],
    *,
    drop_before_share: Collection[int] = (),
    drop_after_share: Collection[int] = (),
    drop_after_upload: Collection[int] = (),
    wire: bool = True,
    randbytes: Callable[[int], bytes] | None = None,
    tamper: Callable[[str, Any], Any] | None = None,
) -> RoundReport:
    """Run one full round; raises whatever the protocol raises.

    Args:
        params: round parameters.
        inputs: client id -> uint32 vector (every client advertises).
        drop_before_share: clients that vanish after advertising.
        drop_after_share: clients that vanish after sending shares (their pairwise masks
            are removed via their reconstructed masking keys).
        drop_after_upload: clients that upload but never answer the unmask request.
        wire: route every message through its JSON form.
        randbytes: randomness for the clients (tests).
        tamper: hook ``(phase, message) -> message`` applied to every client upload
            (``"advertise"``, ``"shares"``, ``"masked"``, ``"unmask"``) — for attack tests.
    """
    rep = RoundReport(total=np.zeros(0, np.uint32), survivors=())
    hook = tamper or (lambda _phase, msg: msg)
    clients: dict[int, SecAggClient] = {}
    for c in sorted(inputs):
        rep.bytes_up[c] = 0
        rep.bytes_down[c] = 0
        t0, c0 = time.perf_counter(), time.thread_time()
        clients[c] = SecAggClient(c, params, randbytes=randbytes)
        rep.client_seconds[c] = time.perf_counter() - t0
        rep.client_cpu_seconds[c] = time.thread_time() - c0

    def timed(cid: int, fn: Callable[[], Any]) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn()
        rep.client_seconds[cid] += time.perf_counter() - t0
        rep.client_cpu_seconds[cid] += time.thread_time() - c0
        return out

    def up(cid: int, phase: str, make: Callable[[], Any]) -> Any:
        """Client builds (and serialises) a message; the server parses it."""
        msg = timed(cid, make)
        msg = hook(phase, msg)
        if not wire:
            return msg
        text = timed(cid, lambda: protocol.dumps(msg))
        rep.bytes_up[cid] += len(text.encode())
        return protocol.loads(text, params)

    def down(cid: int, msg: Any) -> Any:
        """The server serialises a message; the client parses it."""
        if not wire:
            return msg
        text = protocol.dumps(msg)
        rep.bytes_down[cid] += len(text.encode())
        return timed(cid, lambda: protocol.loads(text, params))

    def srv(step: str, fn: Callable[[], Any]) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn()
        rep.server_seconds[step] = rep.server_seconds.get(step, 0.0) + time.perf_counter() - t0
        rep.server_cpu_seconds[step] = (
            rep.server_cpu_seconds.get(step, 0.0) + time.thread_time() - c0
        )
        return out

    ads = [up(c, "advertise", cl.advertise) for c, cl in clients.items()]
    server = srv("advertise", lambda: SecAggServer(params, ads))

    for c, cl in clients.items():
        if c in drop_before_share:
            continue
        bundle = down(c, srv("shares", lambda c=c: server.keys_for(c)))
        msg = up(c, "shares", lambda cl=cl, b=bundle: cl.share_keys(b))
        srv("shares", lambda m=msg: server.add_shares(m))
    shared = srv("shares", server.close_shares)

    for c in shared:
        if c in drop_after_share:
            continue
        delivery = down(c, srv("inputs", lambda c=c: server.delivery_for(c)))
        cl = clients[c]
        masked = up(c, "masked", lambda cl=cl, d=delivery, c=c: cl.masked_input(inputs[c], d))
        srv("inputs", lambda m=masked: server.add_masked(m))
    request = srv("inputs", server.close_inputs)

    for c in request.survivors:
        if c in drop_after_upload:
            continue
        req = down(c, request)
        resp = up(c, "unmask", lambda c=c, r=req: clients[c].unmask(r))
        srv("unmask", lambda m=resp: server.add_unmask_response(m))
    rep.total = srv("result", server.result)
    rep.survivors = server.survivors
    return rep
