"""Federated rounds through the real coordinator over HTTP, with simulated devices.

* :class:`CoordinatorThread` runs the coordinator app (``edgerec.coordinator``: FastAPI,
  SQLite storage, SecAgg+ server, DP accountant) under **uvicorn on a loopback socket**
  in a background thread of this process.
* :class:`Fleet` holds one :class:`~edgerec.runtime.sync.SyncClient` per device. All
  devices share one opened :class:`~edgerec.runtime.Recommender` (scoring through the
  bundle's TFLite/ONNX artifact) and one :class:`~edgerec.runtime.HistoryStore` file, but
  each client reads only its own user's history and keeps its own credentials, head
  and per-round secrets in its own state folder. Every byte a device sends or receives
  goes over HTTP.
* :func:`run_rounds` plays the operator (opens rounds like ``edgerec coordinator
  open-round --db``) and the devices' schedulers (calls ``sync()``), round after round.
  To save time it wakes only the devices the round samples (it asks the coordinator's
  ``is_selected``, the same HMAC draw the device would learn from ``GET
  /v1/rounds/current``); the others fetch the newest head on their next sync.

**Simulated time.** The coordinator's clock is :class:`SimClock`, the wall clock plus an
offset. When every selected device has done what it can in a phase and the phase is
still open (e.g. a device dropped out), the driver moves the clock to the phase deadline
instead of sleeping. (The advertise phase closes as soon as every sampled device has
advertised.) Nothing else is simulated.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.errors import EdgerecError

log = logging.getLogger(__name__)

__all__ = ["CoordinatorThread", "Fleet", "FleetRun", "SimClock", "run_rounds"]

ENROLL_KEY = "edgerec-simulation-enroll-key"


class SimClock:
    """Wall-clock seconds plus an offset that :meth:`jump_to` moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump_to(self, when: float) -> None:
        """Make ``now >= when`` (never moves backwards)."""
        with self._lock:
            gap = when - (time.time() + self.offset)
            if gap > 0:
                self.offset += gap + 1e-3


class CoordinatorThread:
    """The coordinator app under uvicorn on ``127.0.0.1:<free port>`` in a thread.

    Args:
        bundle: bundle directory (binds the new database to its model).
        db_path: SQLite file (created; WAL). ``synchronous=normal``: durability against
            power loss is not what a simulation measures.
        clock: the coordinator's clock.
        tick_s: seconds between deadline checks of the app's ticker.
        evaluation: run the coordinator with federated evaluation (every trained head
            is a candidate until an evaluation round decides it).
    """

    def __init__(
        self,
        bundle: str | Path,
        db_path: str | Path,
        clock: SimClock,
        tick_s: float = 0.2,
        evaluation: Any = None,
    ) -> None:
        self.bundle = Path(bundle)
        self.db_path = Path(db_path)
        self.clock = clock
        self.tick_s = tick_s
        self.evaluation = evaluation
        self.coordinator: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> CoordinatorThread:
        import uvicorn

        from edgerec.coordinator.app import create_app
        from edgerec.coordinator.config import ServerConfig
        from edgerec.coordinator.security import EnrollKeys
        from edgerec.coordinator.service import Coordinator, model_from_bundle
        from edgerec.coordinator.sqlite import SqliteStorage

        config = ServerConfig(
            device_rate=1e6,
            device_burst=10**6,
            anon_rate=1e6,
            anon_burst=10**6,
            tick_s=self.tick_s,
            epsilon_ceiling=None,  # experiments compare arms without DP and large budgets
            evaluation=self.evaluation,
        )
        self.coordinator = Coordinator(
            SqliteStorage(self.db_path, synchronous="normal"),
            model_from_bundle(self.bundle),
            EnrollKeys([ENROLL_KEY]),
            config=config,
            clock=self.clock,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(self.coordinator)
        # log_config=None: an in-process server must not reconfigure (and close) the host
        # program's logging handlers, which uvicorn's default dictConfig would do
        cfg = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            lifespan="on",
        )
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="coordinator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EdgerecError("the in-process coordinator did not start")
            time.sleep(0.02)
        log.info("coordinator serving %s (db %s)", self.url, self.db_path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.coordinator is not None:
            self.coordinator.close()


@dataclass
class FleetDevice:
    """One simulated device: its user id and how many recent positions it trains on."""

    user: str
    max_examples: int


class Fleet:
    """The devices' sync clients (see the module docstring).

    Args:
        recommender: the opened bundle, shared by every device (runtime scoring).
        store: the history store holding every device's user.
        devices: the devices that take part in federated rounds.
        state_root: one state folder per device is created below it.
        trainer: LocalTrainer options of every device (``max_examples`` is per device).
        seed: seeds each device's noise generator (reproducible runs).
    """

    def __init__(
        self,
        recommender: Any,
        store: Any,
        devices: list[FleetDevice],
        state_root: str | Path,
        trainer: dict[str, Any],
        seed: int = 0,
    ) -> None:
        self.recommender = recommender
        self.store = store
        self.devices = devices
        self.state_root = Path(state_root)
        self.trainer = dict(trainer)
        self.seed = seed
        self.clients: list[Any] = []
        self._transport: Any = None

    def connect(self, url: str) -> None:
        """Fresh state folders, one client per device, enrolled over HTTP.

        The clients share one connection pool: they run one at a time, and a
        keep-alive socket per device (client and server end) would exhaust the
        process's file descriptors with ~10k devices.
        """
        import httpx

        from edgerec.runtime.sync import SyncClient

        self.close()
        shutil.rmtree(self.state_root, ignore_errors=True)
        self._transport = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)
        )
        for i, dev in enumerate(self.devices):
            client = SyncClient(
                url,
                self.recommender,
                self.state_root / f"device-{i:06d}",
                enroll_key=ENROLL_KEY,
                store=self.store,
                transport=self._transport,
                user=dev.user,
                rng=np.random.default_rng([self.seed, i]),
                trainer_options={**self.trainer, "max_examples": dev.max_examples},
                durable=False,
                min_cohort=2,
                min_noise_multiplier=0.0,  # the experiment's no-DP arm
            )
            client.enroll()
            self.clients.append(client)

    def close(self) -> None:
        """Close the shared connection pool (the shared Recommender stays open)."""
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self.clients = []


@dataclass
class FleetRun:
    """What :func:`run_rounds` measured.

    Attributes:
        global_bias: the head the devices hold after the last round.
        rounds: training rounds that completed (published a head, or with federated
            evaluation, a candidate).
        failed: rounds that ended ``failed`` (nothing released).
        epsilon, delta: privacy spent (``None`` epsilon: no DP).
        delta_total: δ plus what the cohort bounds add (``delta_sampling_cap``).
        bytes_up, bytes_down: per participating device and training round (HTTP bodies
            and request headers; means over the participants of all training rounds).
        seconds: wall time of the rounds (excluding enrollment).
        participants: mean devices per round that uploaded.
        head_version: the last head version.
        history: per-round summaries.
        evaluations: the verdicts of the evaluation rounds (federated evaluation on).
        eval_bytes_up, eval_bytes_down: per participating device and evaluation round.
    """

    global_bias: np.ndarray
    rounds: int = 0
    failed: int = 0
    epsilon: float | None = None
    delta: float | None = None
    delta_total: float | None = None
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    seconds: float = 0.0
    participants: float = 0.0
    head_version: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    eval_bytes_up: float = 0.0
    eval_bytes_down: float = 0.0


def run_rounds(
    coord: CoordinatorThread,
    fleet: Fleet,
    round_config: Any,
    rounds: int,
    on_round: Callable[[int, np.ndarray], None] | None = None,
) -> FleetRun:
    """Open and run up to ``rounds`` training rounds (with federated evaluation, each
    followed by the evaluation round the coordinator opens for its candidate); stops
    early when the privacy budget is spent.

    Args:
        coord: the running coordinator.
        fleet: connected devices.
        round_config: :class:`edgerec.coordinator.config.RoundConfig` of every round.
        rounds: how many training rounds.
        on_round: called with ``(round number, head)`` after each completed round.
    """
    from edgerec.coordinator.errors import ApiError

    engine = coord.coordinator.rounds
    clock = coord.clock
    started = time.perf_counter()
    up: list[int] = []
    down: list[int] = []
    eval_up: list[int] = []
    eval_down: list[int] = []
    history: list[dict[str, Any]] = []
    done = failed = trained = 0
    evaluations: list[dict[str, Any]] = []
    number = 0
    # also the last head's evaluation; failed rounds are retried, within a bound
    while (trained < rounds or _candidate_pending(coord)) and number < 3 * rounds + 2:
        number += 1
        try:
            rnd = engine.open_round(round_config)
        except ApiError as exc:
            if exc.code == "privacy_budget_exhausted":
                log.info("stopping after %d rounds: %s", done, exc.detail)
                break
            raise
        evaluating = rnd.params.get("task") == "evaluate"
        trained += not evaluating
        t0 = time.perf_counter()
        sent_up: dict[int, int] = {}
        sent_down: dict[int, int] = {}
        active: list[int] = []
        # wake the devices the coordinator's sampling selected (a device that is not
        # selected would only learn that from its sync() and fetch the head)
        selected = _selected(coord, rnd, fleet)
        for i in selected:
            client = fleet.clients[i]
            rep = client.sync()
            _raise_on_error(rep)
            if rep.selected and not rep.finished:
                active.append(i)
                sent_up[i], sent_down[i] = rep.bytes_sent, rep.bytes_received
        stalls = 0
        while True:
            state = _round_state(coord, rnd.round_id)
            if state["state"] in ("done", "failed"):
                break
            progressed = False
            for i in list(active):
                rep = fleet.clients[i].sync()
                _raise_on_error(rep)
                sent_up[i] += rep.bytes_sent
                sent_down[i] += rep.bytes_received
                progressed |= bool(rep.sent)
                if rep.finished:
                    active.remove(i)
            engine.advance()
            after = _round_state(coord, rnd.round_id)
            if not progressed and after["state"] == state["state"]:
                stalls += 1
                if stalls > 20:
                    raise EdgerecError(
                        f"round {rnd.round_id} is stuck in {after['state']} (no device progress)"
                    )
                clock.jump_to(after["phase_deadline"])
                engine.advance()
            else:
                stalls = 0
        final = _round_state(coord, rnd.round_id)
        uploaded = [i for i in sent_up if i in _uploaders(coord, rnd.round_id, fleet, sent_up)]
        if final["state"] == "done":
            done += not evaluating
        else:
            failed += 1
            log.warning("round %d failed: %s", rnd.round_id, final.get("failure"))
        for i in uploaded:  # bytes per training round; evaluation rounds apart
            (eval_up if evaluating else up).append(sent_up[i])
            (eval_down if evaluating else down).append(sent_down[i])
        status = coord.coordinator.status()
        entry = {
            "round": rnd.round_id,
            "task": "evaluate" if evaluating else "train",
            "state": final["state"],
            "selected": len(selected),  # outside [min_cohort, max_cohort]: the round failed
            "participants": len(uploaded),
            "seconds": round(time.perf_counter() - t0, 2),
            "epsilon": status["privacy"]["epsilon"],
        }
        if evaluating and final["state"] == "done":
            verdict = _verdict(coord, rnd.round_id)
            entry["decision"] = verdict["decision"]
            evaluations.append(verdict)
        history.append(entry)
        log.info("round %d: %s", number, entry)
        if on_round is not None and final["state"] == "done":
            on_round(number, _head(coord))
    # every device picks the last head up on its next sync
    for client in fleet.clients:
        client.fetch_head()
    heads = {c.head_version for c in fleet.clients}
    if len(heads) != 1:
        raise EdgerecError(f"devices disagree on the head version: {sorted(heads)}")
    bias = fleet.clients[0].global_bias
    if bias is None:
        bias = np.zeros(coord.coordinator.vector_length, np.float32)
    status = coord.coordinator.status()
    priv = status["privacy"]
    return FleetRun(
        global_bias=np.asarray(bias, np.float32),
        rounds=done,
        failed=failed,
        epsilon=priv["epsilon"] if priv.get("dp") and priv["rounds"] else None,
        delta=priv.get("delta"),
        delta_total=priv.get("delta_total"),
        bytes_up=float(np.mean(up)) if up else 0.0,
        bytes_down=float(np.mean(down)) if down else 0.0,
        seconds=time.perf_counter() - started,
        participants=float(np.mean([h["participants"] for h in history])) if history else 0.0,
        head_version=int(status["head_version"] or 0),
        history=history,
        evaluations=evaluations,
        eval_bytes_up=float(np.mean(eval_up)) if eval_up else 0.0,
        eval_bytes_down=float(np.mean(eval_down)) if eval_down else 0.0,
    )


def _candidate_pending(coord: CoordinatorThread) -> bool:
    with coord.coordinator.storage.read() as tx:
        return tx.pending_candidate() is not None


def _verdict(coord: CoordinatorThread, round_id: int) -> dict[str, Any]:
    """An evaluation round's verdict as the coordinator recorded it."""
    with coord.coordinator.storage.read() as tx:
        rnd = tx.get_round(round_id)
    return dict(rnd.info["evaluation"])


def _selected(coord: CoordinatorThread, rnd: Any, fleet: Fleet) -> list[int]:
    """Indices of the fleet's devices that ``rnd`` samples (the coordinator's HMAC draw)."""
    engine = coord.coordinator.rounds
    out = []
    with coord.coordinator.storage.read() as tx:
        for i, client in enumerate(fleet.clients):
            device = tx.get_device(client.device_id)
            if device is not None and engine.is_selected(rnd, device):
                out.append(i)
    return out


def _raise_on_error(rep: Any) -> None:
    if rep.error and "rate limited" not in rep.error:
        raise EdgerecError(f"device {rep.device_id}: {rep.error}")


def _round_state(coord: CoordinatorThread, round_id: int) -> dict[str, Any]:
    storage = coord.coordinator.storage
    with storage.read() as tx:
        rnd = tx.get_round(round_id)
    return {
        "state": rnd.state,
        "phase_deadline": rnd.phase_deadline,
        "failure": rnd.failure,
        "survivors": rnd.info.get("survivors", []),
    }


def _uploaders(coord: CoordinatorThread, round_id: int, fleet: Fleet, ids: dict) -> set[int]:
    """Indices of the fleet's devices whose masked upload the round accepted."""
    storage = coord.coordinator.storage
    with storage.read() as tx:
        accepted = {m.device_id for m in tx.messages(round_id, "upload", with_blob=False)}
    return {i for i in ids if fleet.clients[i].device_id in accepted}


def _head(coord: CoordinatorThread) -> np.ndarray:
    with coord.coordinator.storage.read() as tx:
        return np.asarray(tx.latest_head().global_bias, np.float32)
