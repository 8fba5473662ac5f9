"""Accepting device messages: validate each against its phase, store it, answer it.

**Idempotency.** One message per device, phase and round. A retry with the same
canonical body (SHA-256 of the sorted-key JSON) gets the stored answer again (200);
a different body is refused (409), also after the round closed.

Messages arrive through the :mod:`.group_commit`: a batch is checked and stored in
one write transaction, a savepoint each, so a refused message leaves no trace while
the others still commit. A refusal raised before the in-memory SecAgg state changed
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
from .live_rounds import LiveRounds
from .phase import Incoming, Phase
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
                    for message in batch:
                        try:
                            with tx.savepoint():
                                message.response = self._accept_one(tx, message)
                        except BaseException as exc:
                            message.error = exc
                            if not _is_validation(exc):  # cached state may have diverged
                                self.live.drop(message.round_id)
                            if not isinstance(exc, Exception):
                                raise
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

    def _accept_one(self, tx: Transaction, message: PendingMessage) -> dict[str, Any]:
        """Validate and store one message inside the batch's transaction."""
        round_id, device, phase = message.round_id, message.device, message.phase
        rnd = self._cached_round(tx, round_id)
        prev = tx.get_message(round_id, device.device_id, phase)
        if prev is not None:
            if hmac.compare_digest(prev.digest, message.digest):
                return prev.response  # identical retry
            raise errors.conflict(
                f"this device already sent a different {phase} message in round "
                f"{round_id}; one per device and round",
            )
        expect_phase(rnd, phase)
        live = self.live.get(rnd, tx)
        handler = self.phases[phase]
        now = self.clock()
        accepted = handler.accept(Incoming(tx, rnd, live, device, message.body, now))
        tx.insert_message(
            Message(
                round_id,
                device.device_id,
                phase,
                message.digest,
                accepted.payload,
                accepted.blob,
                accepted.response,
                now,
            )
        )
        live.note(phase, device.device_id)
        if tx.count_messages(round_id, phase) >= handler.quota(rnd, live.params):
            self._due = True
        return accepted.response

    def _cached_round(self, tx: Transaction, round_id: int) -> Round:
        """The parsed round row; re-read only when its state changed (or unknown)."""
        state = tx.round_state(round_id)
        if state is None:
            raise errors.not_found(f"no round {round_id}")
        cached = self._rounds.get(round_id)
        if cached is None or cached.state != state:
            cached = self._rounds[round_id] = load_round(tx, round_id)
        return cached


def _is_validation(exc: BaseException) -> bool:
    """A refusal raised before the cached state was mutated (safe to keep the cache)."""
    return isinstance(exc, errors.ApiError) and exc.status in (403, 409, 410, 422)
