"""Accepting device messages: validate each against its phase, store it, answer it.

**Idempotency.** One message per device, phase and round. A retry with the same
canonical body (SHA-256 of the sorted-key JSON) gets the stored answer again (200);
a different body is refused (409), also after the round closed.

Messages arrive through the :mod:`.group_commit`: a batch is checked and stored in
one write transaction, so a refused message leaves no trace while the others still
commit. What the batch reads (the round, earlier messages, participations) is fetched
once for the batch (:class:`BatchReads`); a message whose phase checks only read is
stored as soon as it passed them, one whose checks write runs in a savepoint.

A refusal raised before the in-memory SecAgg state changed
keeps that cache; any other error drops it, to be replayed from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import errors
from .group_commit import GroupCommit, PendingMessage
from .live_rounds import LiveRound, LiveRounds
from .phase import Accepted, Incoming, Phase
from .round_state import expect_phase, load_round
from .storage import Device, Message, Round, Storage, Transaction
from .storage import dumps as canonical

log = logging.getLogger(__name__)


def digest_of(body: dict[str, Any]) -> str:
    """SHA-256 of a request's canonical JSON: what makes a retry "identical"."""
    return hashlib.sha256(canonical(body).encode()).hexdigest()


class MessageIntake:
    """Validates and durably stores device messages (see the module docstring).

    Args:
        storage: the database.
        clock: wall clock in seconds.
        lock: the engine's lock over the in-memory SecAgg state.
        live: the cache of running rounds' SecAgg state.
        phases: the phase handlers by round state.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], float],
        lock: threading.RLock,
        live: LiveRounds,
        phases: Mapping[str, Phase],
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.lock = lock
        self.live = live
        self.phases = phases
        self._commit = GroupCommit(self._store_batch)
        self._rounds: dict[int, Round] = {}  # parsed rows, valid while the state matches
        self._due = False  # a phase may be complete: advance() has work

    def accept(
        self, round_id: int, device: Device, phase: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Accept ``device``'s ``phase`` message once it is durably stored; returns the
        answer (raises :class:`~edgerec.coordinator.errors.ApiError` on refusal)."""
        message = PendingMessage(round_id, device, phase, body, digest_of(body))
        self._commit.submit(message)
        if message.error is not None:
            raise message.error
        assert message.response is not None
        log.debug("round %d: accepted %s from %s", round_id, phase, device.device_id)
        return message.response

    def take_due(self) -> bool:
        """True (once) when an accepted message may have completed its phase."""
        due, self._due = self._due, False
        return due

    def _store_batch(self, batch: list[PendingMessage]) -> None:
        rounds = {m.round_id for m in batch}
        with self.lock:
            try:
                with self.storage.write() as tx:
                    reads = BatchReads(self, tx, batch)
                    for message in batch:
                        try:
                            message.response = self._accept_one(reads, message)
                        except BaseException as exc:
                            message.error = exc
                            if not _is_validation(exc):  # cached state may have diverged
                                reads.replay_later(message.round_id)
                            if not isinstance(exc, Exception):
                                raise
                    reads.finish()
            except BaseException as exc:  # the commit itself failed: nothing was stored
                for rid in rounds:
                    self.live.drop(rid)
                for message in batch:
                    message.response = None
                    message.error = message.error or exc
                if not isinstance(exc, Exception):
                    raise
            finally:
                for message in batch:
                    message.done = True
        if len(batch) > 1:
            log.debug("group commit of %d messages", len(batch))

    def _accept_one(self, reads: BatchReads, message: PendingMessage) -> dict[str, Any]:
        """Validate one message of the batch; store it now (a phase whose checks write,
        in a savepoint) or with the batch's other messages at the end."""
        tx = reads.tx
        round_id, device, phase = message.round_id, message.device, message.phase
        rnd = reads.round(round_id)
        prev = reads.message(round_id, device.device_id, phase)
        if prev is not None:
            if hmac.compare_digest(prev.digest, message.digest):
                return prev.response  # identical retry
            raise errors.conflict(
                f"this device already sent a different {phase} message in round "
                f"{round_id}; one per device and round",
            )
        expect_phase(rnd, phase)
        live = reads.live(rnd)
        handler = self.phases[phase]
        now = self.clock()
        if handler.writes:  # a refusal must leave none of the rows its checks wrote
            with tx.savepoint():
                accepted = handler.accept(Incoming(tx, rnd, live, device, message.body, now))
                stored = _stored(message, accepted, now)
                tx.insert_message(stored)
        else:  # checks only read: a refusal raises before anything is written
            accepted = handler.accept(Incoming(tx, rnd, live, device, message.body, now))
            stored = _stored(message, accepted, now)
            reads.store(stored)
        reads.accepted(stored, handler.quota(rnd, live.params))
        live.note(phase, device.device_id)
        return accepted.response

    def _cached_round(self, tx: Transaction, round_id: int, state: str | None) -> Round:
        """The parsed round row for the round's current ``state``; re-read only when the
        state changed (or unknown)."""
        if state is None:
            raise errors.not_found(f"no round {round_id}")
        cached = self._rounds.get(round_id)
        if cached is None or cached.state != state:
            cached = self._rounds[round_id] = load_round(tx, round_id)
        return cached


class BatchReads:
    """What a group commit's messages read, fetched once per batch: one query each for
    the round rows, the devices' earlier messages, their participations and the
    phases' message counts instead of one each per message, all sent at once.

    Everything is read inside the batch's write transaction (writers are serialised),
    so nothing read here can change before the commit except by this batch, whose own
    messages are remembered (and counted) as they are accepted. A message whose checks
    only read is sent with :meth:`~.storage.Transaction.send_message`: a client/server
    database stores it while the next message is checked.
    """

    def __init__(self, intake: MessageIntake, tx: Transaction, batch: list[PendingMessage]):
        self.intake = intake
        self.tx = tx
        self._rounds: dict[int, Round] = {}
        self._live: dict[int, LiveRound] = {}
        self._quotas: dict[tuple[int, str], int] = {}
        self._added: dict[tuple[int, str], int] = {}
        groups: dict[tuple[int, str], list[str]] = {}
        for m in batch:
            groups.setdefault((m.round_id, m.phase), []).append(m.device.device_id)
        self._snapshot = tx.prefetch(groups)

    def round(self, round_id: int) -> Round:
        if round_id not in self._rounds:
            state = self._snapshot.states.get(round_id)
            self._rounds[round_id] = self.intake._cached_round(self.tx, round_id, state)
        return self._rounds[round_id]

    def live(self, rnd: Round) -> LiveRound:
        """The round's SecAgg state (synced once per batch)."""
        if rnd.round_id not in self._live:
            self._live[rnd.round_id] = self.intake.live.get(rnd, self.tx)
        return self._live[rnd.round_id]

    def message(self, round_id: int, device_id: str, phase: str) -> Message | None:
        """The device's ``phase`` message stored before, or accepted earlier in this batch."""
        return self._snapshot.messages.setdefault((round_id, phase), {}).get(device_id)

    def store(self, message: Message) -> None:
        """Store a message whose checks only read (see the class docstring)."""
        self.tx.send_message(message)

    def replay_later(self, round_id: int) -> None:
        """The round's cached SecAgg state may be wrong: have the next message rebuild it
        from the database (which holds what this batch stored so far)."""
        self._live.pop(round_id, None)
        self.intake.live.drop(round_id)

    def accepted(self, message: Message, quota: int) -> None:
        key = (message.round_id, message.phase)
        self._snapshot.messages.setdefault(key, {})[message.device_id] = message
        self._added[key] = self._added.get(key, 0) + 1
        self._quotas[key] = quota

    def finish(self) -> None:
        """Note whether a phase may now be complete: its messages stored before the
        batch plus the batch's own reach the phase's quota."""
        for key, quota in self._quotas.items():
            if self._snapshot.counts[key] + self._added[key] >= quota:
                self.intake._due = True


def _stored(message: PendingMessage, accepted: Accepted, now: float) -> Message:
    return Message(
        message.round_id,
        message.device.device_id,
        message.phase,
        message.digest,
        accepted.payload,
        accepted.blob,
        accepted.response,
        now,
    )


def _is_validation(exc: BaseException) -> bool:
    """A refusal raised before the cached state was mutated (safe to keep the cache)."""
    return isinstance(exc, errors.ApiError) and exc.status in (403, 409, 410, 422)
