"""The round engine: phases, validation of every device message, aggregation.

A round moves ``advertise -> share -> upload -> unmask -> done`` (or ``failed``).
Each phase closes early when every expected device has sent its message, or at
the phase deadline; closing checks the minimum cohort and fails the round
cleanly (nothing released) when it is not met.

**The database is the only state.** Every accepted message is stored (fsynced)
before it is acknowledged. The :class:`~edgerec.federated.secagg.SecAggServer`
of the running round is a cache: a pure function of the stored messages, rebuilt
by replaying them in phase order after a restart (or after any failed write).
Publishing a result — the new head version, the round's ``done`` state and its
spent (ε, δ) — is one transaction guarded by a compare-and-set on the round
state, so a round is applied at most once however often the process dies.

**Group commit.** Concurrent device messages are validated and stored one after
the other in a single write transaction (a savepoint each, so a refused one leaves
no trace) and acknowledged after its one durable commit: many uploads per fsync.

**Idempotency.** One message per device, phase and round. A retry with the same
canonical body (SHA-256 of the sorted-key JSON) gets the stored answer again
(200); a different body is refused (409), also after the round closed.

Concurrency: one process owns the database (see ``serve``); writes that touch
the cached SecAgg server are serialised by one lock, as SQLite serialises
writers anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.federated import wire
from edgerec.federated.accountant import DpAccountant
from edgerec.federated.dp import device_noise_std
from edgerec.federated.errors import ProtocolError, SecAggError
from edgerec.federated.fixedpoint import decode_sum, max_frac_bits
from edgerec.federated.protocol import (
    Advertisement,
    EncryptedShares,
    MaskedInput,
    RoundParams,
    UnmaskResponse,
)
from edgerec.federated.sampling import cap_delta, max_cohort, min_cohort_for, round_tail
from edgerec.federated.secagg import SecAggServer, suggest_graph

from . import errors
from .config import MAX_DEGREE, RoundConfig, ServerConfig
from .storage import DONE, FAILED, FINAL_STATES, PHASES, Device, Head, Message, Round, Storage
from .storage import dumps as canonical

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One device message waiting for the group commit."""

    round_id: int
    device: Device
    phase: str
    body: dict[str, Any]
    digest: str
    response: dict[str, Any] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Live:
    """In-memory view of one running round, rebuilt from the database on demand."""

    params: RoundParams
    keys: set[bytes] = field(default_factory=set)  # advertised public keys (reuse check)
    server: SecAggServer | None = None  # from the end of the advertise phase on
    sets: dict[tuple[str, str], frozenset[int]] = field(default_factory=dict)

    def member(self, rnd: Round, name: str, client_id: int) -> bool:
        """Whether ``client_id`` is in the round's ``info[name]`` list (cached as a set)."""
        key = (rnd.state, name)
        group = self.sets.get(key)
        if group is None:
            group = self.sets[key] = frozenset(rnd.info.get(name, ()))
        return client_id in group


def digest_of(body: dict[str, Any]) -> str:
    """SHA-256 of a request's canonical JSON: what makes a retry "identical"."""
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def round_params(rnd: Round) -> RoundParams:
    """The SecAgg/DP parameters a round was opened with."""
    return RoundParams.from_wire(rnd.params["secagg"])


class RoundEngine:
    """Runs rounds on top of a :class:`Storage`.

    Args:
        storage: the database.
        vector_length: values per update (the bundle's catalog size).
        server_config: defaults for privacy parameters.
        clock: wall clock in seconds (tests inject a fake one).
    """

    def __init__(
        self,
        storage: Storage,
        vector_length: int,
        server_config: ServerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.vector_length = int(vector_length)
        self.config = server_config or ServerConfig()
        self.clock = clock
        self._mutex = threading.RLock()
        self._live: dict[int, _Live] = {}
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._leader = False
        self._rounds: dict[int, Round] = {}  # parsed rows, valid while the state matches
        self._due = False  # a phase may be complete: advance() has work
        self._auto_stopped = False
        self._auto_last_error: str | None = None

    # ================================================================== opening
    def open_round(self, cfg: RoundConfig) -> Round:
        """Open a round for the current head version (409 if one is running).

        Raises:
            ApiError: a round is active, too few devices are enrolled, the privacy
                budget would be exceeded, or the parameters are inconsistent.
        """
        now = self.clock()
        with self._mutex, self.storage.write() as tx:
            active = tx.active_round()
            if active is not None:
                raise errors.conflict(
                    f"round {active.round_id} is still {active.state}; abort it or wait",
                    code=wire.E_ROUND_ACTIVE,
                )
            head = tx.latest_head()
            if head is None:
                raise errors.conflict("the coordinator has no head version (not initialised)")
            population = tx.count_devices()
            if population < cfg.min_cohort:
                raise errors.conflict(
                    f"only {population} devices are enrolled; min_cohort is {cfg.min_cohort}"
                )
            q = min(1.0, cfg.cohort_target / population)
            delta = cfg.delta or self.config.default_delta or min(1e-5, 1.0 / population)
            target = cfg.target_epsilon or self.config.default_target_epsilon
            acc = self._accountant(tx, cfg.noise_multiplier, q, delta)
            eps_after = acc.epsilon_after(1)
            if target is not None and not eps_after <= target:
                spent = acc.epsilon
                raise errors.conflict(
                    f"privacy budget exhausted: one more round (z={cfg.noise_multiplier}, "
                    f"q={q:.4g}) would spend epsilon={_fmt(eps_after)} > target {target} at "
                    f"delta={delta:g} (spent so far: {_fmt(spent)} over {acc.rounds} rounds)",
                    code=wire.E_BUDGET,
                    epsilon=_finite_or_none(spent),
                    epsilon_after=_finite_or_none(eps_after),
                    target_epsilon=target,
                )
            # Poisson sampling is never truncated: a sample outside [min_cohort, bound]
            # fails the round; its probability is added to delta (federated.sampling)
            bound = min(max_cohort(population, q, cfg.cohort_tail), population)
            bound = max(cfg.cohort_target, bound)
            tail = round_tail(population, q, cfg.min_cohort, bound)
            cost = cap_delta([tail], target if target is not None else 0.0)
            if cfg.noise_multiplier > 0 and cost > delta / 100:
                raise errors.invalid(
                    f"min_cohort {cfg.min_cohort} is too close to the expected cohort "
                    f"{cfg.cohort_target}: a Poisson sample falls outside [{cfg.min_cohort}, "
                    f"{bound}] with probability {tail:.2g}, which would add {cost:.2g} to "
                    f"delta={delta:g} per round; use min_cohort <= "
                    f"{min_cohort_for(population, q, cfg.cohort_tail)}",
                    field="min_cohort",
                )
            noise_std = device_noise_std(cfg.clip, cfg.noise_multiplier, cfg.min_cohort)
            frac_bits = cfg.frac_bits
            if frac_bits is None:
                frac_bits = min(24, max_frac_bits(bound, cfg.clip, noise_std))
                if frac_bits < 0:
                    raise errors.invalid(
                        "no fixed-point precision fits this cohort, clip and noise: lower "
                        "the clip, the noise multiplier or the cohort target"
                    )
            k, t = _graph(cfg, bound)
            latest = tx.latest_round()
            number = (latest.round_id + 1) if latest else 1
            instance = tx.get_meta("instance") or "edgerec"
            deadline = now + cfg.deadline_s
            try:
                params = RoundParams.new(
                    f"{instance}-{number}",
                    head_version=head.version,
                    cohort_target=bound,
                    min_cohort=cfg.min_cohort,
                    deadline=deadline,
                    clip=float(cfg.clip),
                    noise_multiplier=float(cfg.noise_multiplier),
                    frac_bits=int(frac_bits),
                    vector_length=self.vector_length,
                    neighbour_degree=k,
                    threshold=t,
                )
            except ProtocolError as exc:
                raise errors.invalid(f"round parameters: {exc}", field=exc.field) from None
            seed = os.urandom(32)
            selected = sum(
                _selected(seed, device_id, q) for device_id in tx.device_ids_enrolled_by(now)
            )
            stored = {
                "secagg": params.to_wire(),
                "config": cfg.to_json(),
                "population": population,
                "sampling_rate": q,
                "expected_cohort": cfg.cohort_target,
                "max_cohort": bound,
                "cap_tail": tail,
                "selected": selected,
                "delta": delta,
                "target_epsilon": target,
                "epsilon_after": _finite_or_none(eps_after),
                "phase_timeout_s": cfg.phase_timeout,
                "server_lr": cfg.server_lr,
                "training": cfg.training,
            }
            rnd = Round(
                round_id=0,
                base_version=head.version,
                state=PHASES[0],
                params=stored,
                seed=seed,
                opened_at=now,
                deadline=deadline,
                phase_deadline=min(now + cfg.phase_timeout, deadline),
            )
            round_id = tx.insert_round(rnd)
            if round_id != number:
                raise RuntimeError(f"round id {round_id} != expected {number}")
            created = tx.get_round(round_id)
        assert created is not None
        if selected > bound or selected < cfg.min_cohort:
            # decided before any device is told it was selected; nothing is released
            why = "more" if selected > bound else "fewer"
            limit = bound if selected > bound else cfg.min_cohort
            self._fail(
                created,
                f"{selected} devices were sampled, {why} than "
                f"{'the cohort bound' if selected > bound else 'min_cohort'} {limit}",
            )
            with self.storage.read() as tx:
                return self._get(tx, round_id)
        log.info(
            "opened round %d (%s) on head v%d: %d sampled (expected %d, min %d, bound %d), "
            "k=%d t=%d f=%d, z=%g C=%g, q=%.4g",
            round_id,
            params.round_id,
            head.version,
            selected,
            cfg.cohort_target,
            cfg.min_cohort,
            bound,
            k,
            t,
            frac_bits,
            cfg.noise_multiplier,
            cfg.clip,
            q,
        )
        return created

    def auto_open(self, cfg: RoundConfig, interval_s: float = 0.0) -> Round | None:
        """Open the next round when none runs and ``interval_s`` passed since the last
        one ended; stops for good once the privacy budget would be exceeded.

        Called by the server's ticker with ``serve --auto-round``; returns the round it
        opened, if any.
        """
        if self._auto_stopped:
            return None
        with self.storage.read() as tx:
            if tx.active_round() is not None:
                return None
            latest = tx.latest_round()
        now = self.clock()
        if latest is not None and (latest.closed_at or now) + interval_s > now:
            return None
        try:
            rnd = self.open_round(cfg)
        except errors.ApiError as exc:
            if exc.code == wire.E_BUDGET:
                self._auto_stopped = True
                log.warning("no more rounds: %s", exc.detail)
            elif exc.detail != self._auto_last_error:
                log.warning("could not open the next round: %s", exc.detail)
            self._auto_last_error = exc.detail
            return None
        self._auto_last_error = None
        return rnd

    def abort_round(self, round_id: int, reason: str = "aborted by the operator") -> Round:
        """End a running round as ``failed`` (nothing is released)."""
        with self._mutex:
            with self.storage.read() as tx:
                rnd = self._get(tx, round_id)
            if not rnd.active:
                raise errors.ApiError(
                    410, wire.E_ROUND_CLOSED, f"round {round_id} already ended ({rnd.state})"
                )
            self._fail(rnd, reason)
            with self.storage.read() as tx:
                return self._get(tx, round_id)

    # ================================================================== devices: reads
    def is_selected(self, rnd: Round, device: Device) -> bool:
        """Poisson sampling: each device enrolled before the round opened is selected
        with probability ``q``, decided by an HMAC of its id under the round's secret."""
        if device.enrolled_at > rnd.opened_at:
            return False
        return _selected(rnd.seed, device.device_id, float(rnd.params["sampling_rate"]))

    def device_view(self, device: Device, round_id: int | None = None) -> dict[str, Any]:
        """What a device needs to know about a round (the active/latest one by default)."""
        with self.storage.read() as tx:
            if round_id is None:
                rnd = tx.active_round() or tx.latest_round()
                if rnd is None:
                    return {"round": None}
            else:
                rnd = self._get(tx, round_id)
            params = round_params(rnd)
            part = tx.get_participant(rnd.round_id, device.device_id)
            sent = {
                p: tx.get_message(rnd.round_id, device.device_id, p) is not None for p in PHASES
            }
        selected = self.is_selected(rnd, device)
        return {
            "round": rnd.round_id,
            "name": params.round_id,
            "state": rnd.state,
            "base_version": rnd.base_version,
            "deadline": rnd.deadline,
            "phase_deadline": rnd.phase_deadline,
            "selected": selected,
            "client_id": (
                part.client_id
                if part
                else (wire.client_id_for(params.round_id, device.device_id) if selected else None)
            ),
            "sent": sent,
            "survivor": (part is not None and part.client_id in rnd.info.get("survivors", ())),
            "params": rnd.params["secagg"],
            "training": rnd.params.get("training", {}),
            "result_version": rnd.result_version,
            "failure": rnd.failure,
        }

    def keys_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 1 download: the roster and the device's neighbours' public keys."""
        rnd, part = self._participant_read(round_id, device, after="advertise")
        with self._mutex:
            live = self._live_for(rnd)
            assert live.server is not None
            return live.server.keys_for(part.client_id).to_wire()

    def delivery_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 2 download: the encrypted shares addressed to the device."""
        rnd, part = self._participant_read(round_id, device, after="share")
        with self._mutex:
            live = self._live_for(rnd)
            assert live.server is not None
            try:
                return live.server.delivery_for(part.client_id).to_wire()
            except ProtocolError as exc:
                raise errors.forbidden(
                    f"device did not send its shares in round {round_id}: {exc}",
                    code=wire.E_NOT_PARTICIPANT,
                ) from None

    def unmask_request(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 3 download: survivors and dropouts (the same for every survivor)."""
        rnd, part = self._participant_read(round_id, device, after="upload")
        if part.client_id not in rnd.info.get("survivors", ()):
            raise errors.forbidden(
                f"device is not a survivor of round {round_id} (no accepted upload)",
                code=wire.E_NOT_PARTICIPANT,
            )
        with self._mutex:
            live = self._live_for(rnd)
            assert live.server is not None
            return live.server.unmask_request().to_wire()

    # ================================================================== devices: writes
    def advertise(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 0 upload: the device's public keys (admits it to the cohort)."""
        return self._accept(round_id, device, "advertise", body)

    def share(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 1 upload: one encrypted share bundle per neighbour."""
        return self._accept(round_id, device, "share", body)

    def upload(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 2 upload: the masked uint32 vector."""
        return self._accept(round_id, device, "upload", body)

    def unmask(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 3 upload: shares for reconstruction."""
        return self._accept(round_id, device, "unmask", body)

    def _accept(
        self, round_id: int, device: Device, phase: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        job = _Job(round_id, device, phase, body, digest_of(body))
        self._group_commit(job)
        if job.error is not None:
            raise job.error
        assert job.response is not None
        log.debug("round %d: accepted %s from %s", round_id, phase, device.device_id)
        return job.response

    def _group_commit(self, job: _Job) -> None:
        """Queue ``job``; one thread at a time (the leader) runs every queued job in one
        write transaction and one durable commit, then wakes the others.

        Concurrent uploads thus share an fsync instead of waiting for one each; a job
        is answered only after the commit that contains it returned.
        """
        with self._cv:
            self._queue.append(job)
            while not job.done and self._leader:
                self._cv.wait()
            if job.done:
                return
            self._leader = True
            batch, self._queue = self._queue, []
        try:
            self._run_batch(batch)
        finally:
            with self._cv:
                for j in batch:
                    if not j.done:
                        j.error = j.error or RuntimeError("request was not processed")
                        j.done = True
                self._leader = False
                self._cv.notify_all()

    def _run_batch(self, batch: list[_Job]) -> None:
        rounds = {j.round_id for j in batch}
        with self._mutex:
            try:
                with self.storage.write() as tx:
                    for job in batch:
                        try:
                            with tx.savepoint():
                                job.response = self._accept_one(tx, job)
                        except BaseException as exc:
                            job.error = exc
                            if not _is_validation(exc):  # cached state may have diverged
                                self._live.pop(job.round_id, None)
                            if not isinstance(exc, Exception):
                                raise
            except BaseException as exc:  # the commit itself failed: nothing was stored
                for rid in rounds:
                    self._live.pop(rid, None)
                for job in batch:
                    job.response = None
                    job.error = job.error or exc
                if not isinstance(exc, Exception):
                    raise
            finally:
                for job in batch:
                    job.done = True
        if len(batch) > 1:
            log.debug("group commit of %d messages", len(batch))

    def _accept_one(self, tx, job: _Job) -> dict[str, Any]:
        """Validate and store one message inside the batch's transaction."""
        round_id, device, phase = job.round_id, job.device, job.phase
        rnd = self._cached_round(tx, round_id)
        prev = tx.get_message(round_id, device.device_id, phase)
        if prev is not None:
            if hmac.compare_digest(prev.digest, job.digest):
                return prev.response  # identical retry
            raise errors.conflict(
                f"this device already sent a different {phase} message in round "
                f"{round_id}; one per device and round",
            )
        self._expect_state(rnd, phase)
        live = self._live_for(rnd, tx)
        handler = getattr(self, f"_on_{phase}")
        now = self.clock()
        payload, blob, response = handler(tx, rnd, live, device, job.body, now)
        tx.insert_message(
            Message(round_id, device.device_id, phase, job.digest, payload, blob, response, now)
        )
        if tx.count_messages(round_id, phase) >= self._expected(rnd, live):
            self._due = True
        return response

    def take_due(self) -> bool:
        """True (once) when an accepted message may have completed its phase."""
        due, self._due = self._due, False
        return due

    @staticmethod
    def _expected(rnd: Round, live: _Live) -> int:
        """How many messages complete the round's current phase."""
        if rnd.state == "advertise":
            return _advertise_quota(rnd, live.params)
        key = {"share": "roster", "upload": "shared", "unmask": "survivors"}[rnd.state]
        return len(rnd.info.get(key, ()))

    def _cached_round(self, tx, round_id: int) -> Round:
        """The parsed round row; re-read only when its state changed (or unknown)."""
        state = tx.round_state(round_id)
        if state is None:
            raise errors.not_found(f"no round {round_id}")
        cached = self._rounds.get(round_id)
        if cached is None or cached.state != state:
            cached = self._rounds[round_id] = self._get(tx, round_id)
        return cached

    def _on_advertise(self, tx, rnd: Round, live: _Live, device: Device, body, now):
        params = live.params
        if not self.is_selected(rnd, device):
            raise errors.forbidden(
                f"device is not selected for round {rnd.round_id}", code=wire.E_NOT_SELECTED
            )
        msg = _parse(Advertisement, body, params)
        expect = wire.client_id_for(params.round_id, device.device_id)
        if msg.client_id != expect:
            raise errors.invalid(
                f"client_id must be {expect} for this device in this round", field="client_id"
            )
        if tx.count_messages(rnd.round_id, "advertise") >= params.cohort_target:
            raise errors.conflict(
                f"round {rnd.round_id} is full ({params.cohort_target} devices)",
                code=wire.E_ROUND_FULL,
            )
        if tx.participant_by_client(rnd.round_id, msg.client_id) is not None:
            raise errors.conflict("client id collision; this device sits this round out")
        if msg.c_pk == msg.s_pk or msg.c_pk in live.keys or msg.s_pk in live.keys:
            raise errors.invalid("public keys must be fresh and distinct", field="c_pk")
        tx.add_participant(rnd.round_id, device.device_id, msg.client_id, now)
        live.keys.update((msg.c_pk, msg.s_pk))
        return body, None, _ack(rnd, "advertise", msg.client_id)

    def _on_share(self, tx, rnd: Round, live: _Live, device: Device, body, now):
        part = self._participant(tx, rnd, device)
        msg = _parse(EncryptedShares, body, live.params)
        _check_client(msg.client_id, part.client_id)
        assert live.server is not None
        try:
            live.server.add_shares(msg)
        except ProtocolError as exc:
            raise errors.invalid(str(exc), field=exc.field) from None
        tx.insert_ciphertexts(
            rnd.round_id, part.client_id, {v: _b64(ct) for v, ct in msg.ciphertexts.items()}
        )
        return body, None, _ack(rnd, "share", part.client_id)

    def _on_upload(self, tx, rnd: Round, live: _Live, device: Device, body, now):
        part = self._participant(tx, rnd, device)
        if not live.member(rnd, "shared", part.client_id):
            raise errors.forbidden(
                "device did not send its shares in time; it cannot upload in this round",
                code=wire.E_NOT_PARTICIPANT,
            )
        msg = _parse(MaskedInput, body, live.params)
        _check_client(msg.client_id, part.client_id)
        assert live.server is not None
        try:
            live.server.add_masked(msg)
        except ProtocolError as exc:
            raise errors.invalid(str(exc), field=exc.field) from None
        blob = np.ascontiguousarray(msg.y, dtype="<u4").tobytes()
        payload = {k: v for k, v in body.items() if k != "data"}
        ack = _ack(rnd, "upload", part.client_id)
        ack["sha256"] = hashlib.sha256(blob).hexdigest()
        return payload, blob, ack

    def _on_unmask(self, tx, rnd: Round, live: _Live, device: Device, body, now):
        part = self._participant(tx, rnd, device)
        if not live.member(rnd, "survivors", part.client_id):
            raise errors.forbidden(
                f"device is not a survivor of round {rnd.round_id}", code=wire.E_NOT_PARTICIPANT
            )
        msg = _parse(UnmaskResponse, body, live.params)
        _check_client(msg.client_id, part.client_id)
        assert live.server is not None
        try:
            live.server.add_unmask_response(msg)
        except ProtocolError as exc:
            raise errors.invalid(str(exc), field=exc.field) from None
        return body, None, _ack(rnd, "unmask", part.client_id)

    # ================================================================== phases
    def advance(self) -> Round | None:
        """Close every phase of the active round that is complete or past its deadline.

        Safe to call any time from any thread (the background ticker, after each
        accepted message, at start-up to finish a round interrupted by a crash).
        Returns the active round afterwards (None when no round is running).
        """
        with self._mutex:
            for _ in range(len(PHASES) + 1):
                with self.storage.read() as tx:
                    rnd = tx.active_round()
                if rnd is None:
                    return None
                try:
                    changed = self._step(rnd)
                except BaseException:
                    self._live.pop(rnd.round_id, None)
                    raise
                if not changed:
                    return rnd
            with self.storage.read() as tx:
                return tx.active_round()

    def _step(self, rnd: Round) -> bool:
        now = self.clock()
        expired = now >= rnd.phase_deadline
        rid = rnd.round_id
        params = round_params(rnd)
        with self.storage.read() as tx:
            count = tx.count_messages(rid, rnd.state)
        if rnd.state == "advertise":
            if count < _advertise_quota(rnd, params) and not expired:
                return False
            if count < params.min_cohort:
                return self._fail(
                    rnd,
                    f"only {count} devices advertised keys by the deadline; "
                    f"min cohort is {params.min_cohort}",
                )
            self._live.pop(rid, None)
            try:
                live = self._live_for(rnd, state="share")
            except (SecAggError, ProtocolError) as exc:
                return self._fail(rnd, f"cannot start secure aggregation: {exc}")
            assert live.server is not None
            info = {**rnd.info, "roster": list(live.server.roster)}
            return self._move(rnd, "share", now, min(now + self._timeout(rnd), rnd.deadline), info)
        live = self._live_for(rnd)
        server = live.server
        assert server is not None
        if rnd.state == "share":
            if count < len(server.roster) and not expired:
                return False
            try:
                shared = server.close_shares()
            except SecAggError as exc:
                return self._fail(rnd, str(exc))
            info = {**rnd.info, "shared": list(shared)}
            return self._move(rnd, "upload", now, rnd.deadline, info)
        if rnd.state == "upload":
            if count < len(server.shared) and not expired:
                return False
            try:
                request = server.close_inputs()
            except SecAggError as exc:
                return self._fail(rnd, str(exc))
            info = {
                **rnd.info,
                "survivors": list(request.survivors),
                "dropped": list(request.dropped),
            }
            return self._move(rnd, "unmask", now, now + self._timeout(rnd), info)
        if rnd.state == "unmask":
            if count < len(server.survivors) and not expired:
                return False
            if not server.can_unmask():
                missing = server.missing_shares()
                return self._fail(
                    rnd,
                    f"cannot unmask: {len(missing)} secrets lack shares "
                    f"({len(server.responders)} of {len(server.survivors)} survivors answered; "
                    f"threshold {server.t_eff})",
                )
            try:
                total = server.result()
            except SecAggError as exc:
                return self._fail(rnd, str(exc), culprits=exc.culprits)
            return self._publish(rnd, params, total, server)
        raise RuntimeError(f"round {rid} in unknown state {rnd.state!r}")

    def _timeout(self, rnd: Round) -> float:
        return float(rnd.params.get("phase_timeout_s", 60.0))

    def _move(self, rnd: Round, state: str, now: float, deadline: float, info: dict) -> bool:
        with self.storage.write() as tx:
            ok = tx.update_round(
                rnd.round_id, rnd.state, state=state, phase_deadline=deadline, info=info
            )
        if not ok:  # someone else (an operator's abort) changed it: rebuild next time
            self._live.pop(rnd.round_id, None)
            return True
        log.info(
            "round %d: %s -> %s (%d in roster, %d shared, %d survivors)",
            rnd.round_id,
            rnd.state,
            state,
            len(info.get("roster", ())),
            len(info.get("shared", ())),
            len(info.get("survivors", ())),
        )
        return True

    def _fail(self, rnd: Round, reason: str, culprits: dict[int, str] | None = None) -> bool:
        info = dict(rnd.info)
        if culprits:
            info["culprits"] = {str(k): v for k, v in culprits.items()}
        with self.storage.write() as tx:
            ok = tx.update_round(
                rnd.round_id,
                rnd.state,
                state=FAILED,
                closed_at=self.clock(),
                failure=reason,
                info=info,
            )
        self._live.pop(rnd.round_id, None)
        if ok:
            log.warning("round %d failed in phase %s: %s", rnd.round_id, rnd.state, reason)
        return True

    def _publish(
        self, rnd: Round, params: RoundParams, total: np.ndarray, server: SecAggServer
    ) -> bool:
        """Decode the sum, apply ``server_lr * sum / expected cohort`` to ``global_bias``
        and publish the new head, the round's end and its (ε, δ) in one transaction."""
        survivors = len(server.survivors)
        # fixed denominator (DP-FedAvg): the release does not depend on who took part
        denominator = int(rnd.params.get("expected_cohort", params.cohort_target))
        mean = decode_sum(total, params.frac_bits) / denominator
        lr = float(rnd.params.get("server_lr", 1.0))
        now = self.clock()
        z, q = params.noise_multiplier, float(rnd.params["sampling_rate"])
        delta = float(rnd.params["delta"])
        with self.storage.write() as tx:
            head = tx.latest_head()
            assert head is not None
            if head.version != rnd.base_version:
                reason = f"head moved from v{rnd.base_version} to v{head.version} during the round"
                tx.update_round(
                    rnd.round_id, rnd.state, state=FAILED, closed_at=now, failure=reason
                )
                self._live.pop(rnd.round_id, None)
                log.error("round %d failed: %s", rnd.round_id, reason)
                return True
            acc = self._accountant(tx, z, q, delta)
            epsilon = acc.step()
            tails = self._cap_tails(tx) + [float(rnd.params.get("cap_tail", 0.0))]
            extra = cap_delta(tails, epsilon)
            bias = (head.global_bias.astype(np.float64) + lr * mean).astype(np.float32)
            version = head.version + 1
            metadata = {
                "version": version,
                "base_version": head.version,
                "round_id": rnd.round_id,
                "round_name": params.round_id,
                "created_at": now,
                "cohort": len(server.roster),
                "survivors": survivors,
                "dropped": len(server.dropped),
                "clip": params.clip,
                "noise_multiplier": z,
                "sampling_rate": q,
                "frac_bits": params.frac_bits,
                "server_lr": lr,
                "denominator": denominator,
                "max_cohort": params.cohort_target,
                "dp": bool(math.isfinite(epsilon)),
                "epsilon": _finite_or_none(epsilon),
                "delta": delta,
                "delta_sampling_cap": _finite_or_none(extra),
                "delta_total": _finite_or_none(delta + extra),
                "dp_rounds": acc.rounds,
                "accountant": "rdp/poisson-sampled-gaussian (dp-accounting)",
                "sha256": hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest(),
            }
            ok = tx.update_round(
                rnd.round_id,
                rnd.state,
                state=DONE,
                closed_at=now,
                result_version=version,
                info={
                    **rnd.info,
                    "epsilon": metadata["epsilon"],
                    "misbehaving": {str(k): v for k, v in server.misbehaving.items()},
                },
            )
            if ok:
                tx.insert_head(Head(version, rnd.round_id, now, bias, metadata))
        self._live.pop(rnd.round_id, None)
        if ok:
            log.info(
                "round %d done: head v%d from %d survivors (%d dropped), epsilon=%s delta=%g",
                rnd.round_id,
                version,
                survivors,
                len(server.dropped),
                _fmt(epsilon),
                delta,
            )
        return True

    # ================================================================== helpers
    def _accountant(self, tx, z: float, q: float, delta: float) -> DpAccountant:
        history = []
        for done in reversed(tx.list_rounds(limit=1 << 30, state=DONE)):
            p = done.params
            history.append((float(p["secagg"]["noise_multiplier"]), float(p["sampling_rate"]), 1))
        return DpAccountant(z, q, delta, history)

    @staticmethod
    def _cap_tails(tx) -> list[float]:
        """Each published round's probability of a cohort over its bound."""
        return [float(r.params.get("cap_tail", 0.0)) for r in tx.list_rounds(1 << 30, DONE)]

    def privacy(self) -> dict[str, Any]:
        """(ε, δ) spent by the published heads, from the latest head's metadata."""
        with self.storage.read() as tx:
            head = tx.latest_head()
        meta = head.metadata if head else {}
        rounds = int(meta.get("dp_rounds", 0))
        return {
            "epsilon": meta.get("epsilon", 0.0) if rounds else 0.0,
            "delta": meta.get("delta"),
            "delta_sampling_cap": meta.get("delta_sampling_cap", 0.0) if rounds else 0.0,
            "delta_total": meta.get("delta_total", meta.get("delta")),
            "rounds": rounds,
            "dp": bool(meta.get("dp", True)),
            "accountant": "rdp/poisson-sampled-gaussian (dp-accounting)",
        }

    @staticmethod
    def _get(tx, round_id: int) -> Round:
        rnd = tx.get_round(round_id)
        if rnd is None:
            raise errors.not_found(f"no round {round_id}")
        return rnd

    @staticmethod
    def _expect_state(rnd: Round, phase: str) -> None:
        if rnd.state == phase:
            return
        if rnd.state in FINAL_STATES:
            raise errors.ApiError(
                410,
                wire.E_ROUND_CLOSED,
                f"round {rnd.round_id} has ended ({rnd.state})",
                state=rnd.state,
            )
        if PHASES.index(rnd.state) < PHASES.index(phase):
            raise errors.conflict(
                f"round {rnd.round_id} is in phase {rnd.state}; {phase} opens later",
                code=wire.E_TOO_EARLY,
                state=rnd.state,
            )
        raise errors.conflict(
            f"round {rnd.round_id} is past the {phase} phase (now {rnd.state})",
            code=wire.E_PHASE_CLOSED,
            state=rnd.state,
        )

    def _participant_read(self, round_id: int, device: Device, after: str):
        with self.storage.read() as tx:
            rnd = self._get(tx, round_id)
            part = tx.get_participant(round_id, device.device_id)
        if rnd.state in FINAL_STATES:
            raise errors.ApiError(
                410,
                wire.E_ROUND_CLOSED,
                f"round {round_id} has ended ({rnd.state})",
                state=rnd.state,
            )
        if PHASES.index(rnd.state) <= PHASES.index(after):
            raise errors.conflict(
                f"round {round_id} is in phase {rnd.state}; not available yet",
                code=wire.E_TOO_EARLY,
                state=rnd.state,
            )
        if part is None:
            raise errors.forbidden(
                f"device is not in round {round_id}", code=wire.E_NOT_PARTICIPANT
            )
        return rnd, part

    def _participant(self, tx, rnd: Round, device: Device):
        part = tx.get_participant(rnd.round_id, device.device_id)
        if part is None:
            raise errors.forbidden(
                f"device did not advertise keys in round {rnd.round_id}",
                code=wire.E_NOT_PARTICIPANT,
            )
        return part

    def _live_for(self, rnd: Round, tx=None, state: str | None = None) -> _Live:
        """The cached round view, rebuilt by replaying the stored messages if missing."""
        live = self._live.get(rnd.round_id)
        if live is not None:
            return live
        if tx is None:
            with self.storage.read() as rtx:
                live = self._replay(rtx, rnd, state or rnd.state)
        else:
            live = self._replay(tx, rnd, state or rnd.state)
        self._live[rnd.round_id] = live
        return live

    def _replay(self, tx, rnd: Round, state: str) -> _Live:
        started = time.perf_counter()
        params = round_params(rnd)
        ads = [
            Advertisement.from_wire(m.payload, params)
            for m in tx.messages(rnd.round_id, "advertise")
        ]
        live = _Live(params)
        for ad in ads:
            live.keys.update((ad.c_pk, ad.s_pk))
        if state == "advertise":
            return live
        server = SecAggServer(params, ads, audit_shares=self.config.audit_shares)
        for m in tx.messages(rnd.round_id, "share"):
            server.add_shares(EncryptedShares.from_wire(m.payload, params))
        if state in ("upload", "unmask"):
            server.close_shares()
            for m in tx.messages(rnd.round_id, "upload"):
                y = np.frombuffer(m.blob or b"", dtype="<u4").astype(np.uint32)
                server.add_masked(MaskedInput(params.round_id, int(m.payload["client_id"]), y))
        if state == "unmask":
            server.close_inputs()
            for m in tx.messages(rnd.round_id, "unmask"):
                server.add_unmask_response(UnmaskResponse.from_wire(m.payload, params))
        live.server = server
        log.debug(
            "round %d: rebuilt SecAgg state (%s) in %.3fs",
            rnd.round_id,
            state,
            time.perf_counter() - started,
        )
        return live


def _selected(seed: bytes, device_id: str, q: float) -> bool:
    """Poisson sampling decided by an HMAC of the device id under the round's secret."""
    if q >= 1.0:
        return True
    mac = hmac.new(seed, device_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") / 2.0**64 < q


def _advertise_quota(rnd: Round, params: RoundParams) -> int:
    """Advertisements that end the advertise phase early: every sampled device."""
    return min(int(rnd.params.get("selected", params.cohort_target)), params.cohort_target)


def _graph(cfg: RoundConfig, cohort: int) -> tuple[int, int]:
    """SecAgg+ degree and threshold for a cohort of up to ``cohort`` devices: given, or
    suggested for the expected dropout."""
    if cfg.neighbour_degree is not None:
        k = cfg.neighbour_degree
        return k, cfg.threshold or k // 2 + 1
    try:
        k, t = suggest_graph(cohort, cfg.dropout)
    except ValueError:  # small cohort: the complete graph
        k = cohort - 1 + (cohort - 1) % 2
        t = k // 2 + 1
    if k > MAX_DEGREE:
        raise errors.invalid(f"suggested neighbour degree {k} > {MAX_DEGREE}; set it explicitly")
    return k, cfg.threshold or t


def _parse(cls, body: dict[str, Any], params: RoundParams):
    try:
        return cls.from_wire(body, params)
    except ProtocolError as exc:
        raise errors.invalid(str(exc), field=exc.field) from None


def _check_client(got: int, want: int) -> None:
    if got != want:
        raise errors.invalid(f"client_id must be {want} (this device's id)", field="client_id")


def _ack(rnd: Round, phase: str, client_id: int) -> dict[str, Any]:
    return {"accepted": phase, "round": rnd.round_id, "client_id": client_id}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _is_validation(exc: BaseException) -> bool:
    """A refusal raised before the cached state was mutated (safe to keep the cache)."""
    return isinstance(exc, errors.ApiError) and exc.status in (403, 409, 410, 422)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "inf"
