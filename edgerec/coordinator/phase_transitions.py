"""Moving a round between phases: closing complete or expired phases, failing rounds.

Each phase closes early when every expected device has sent its message, or at the
phase deadline; what closing means is the phase's own :meth:`~.phase.Phase.close`,
which returns an outcome this module carries out: wait, advance to the next phase,
fail the round (nothing released), or publish. Every change of state is a
compare-and-set on the stored round, so an operator's abort racing a transition
wins cleanly and nothing happens twice.

**Several processes on one database** (PostgreSQL, ``serve --workers``): each step —
reading the round, syncing the cached SecAgg state with the messages other processes
stored, deciding the outcome and writing it — runs inside
:meth:`Storage.exclusive <.storage.Storage.exclusive>`, which holds the database's
writer lock, so no process stores a message of the phase between the decision and
the compare-and-set, and whichever process gets there first closes the phase once;
the others then find the round moved and do nothing. With one process (SQLite) the
engine's lock already gives this, and ``exclusive`` is a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edgerec.federated import wire

from . import errors
from .live_rounds import LiveRounds
from .phase import Advance, Closing, Fail, Outcome, Phase, Publish, Wait
from .publishing import Publisher
from .round_state import load_round, round_params
from .storage import FAILED, PHASES, Round, Storage

log = logging.getLogger(__name__)


class PhaseTransitions:
    """Advances the active round and ends rounds that fail.

    Args:
        storage: the database.
        clock: wall clock in seconds.
        lock: the engine's lock over the in-memory SecAgg state.
        live: the cache of running rounds' SecAgg state.
        phases: the phase handlers by round state.
        publisher: publishes a round whose sum is known.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], float],
        lock: threading.RLock,
        live: LiveRounds,
        phases: Mapping[str, Phase],
        publisher: Publisher,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.lock = lock
        self.live = live
        self.phases = phases
        self.publisher = publisher

    def advance(self) -> Round | None:
        """Close every phase of the active round that is complete or past its deadline.

        Safe to call any time from any thread (the background ticker, after each
        accepted message, at start-up to finish a round interrupted by a crash).
        Returns the active round afterwards (None when no round is running).
        """
        with self.lock:
            for _ in range(len(PHASES) + 1):
                with self.storage.read() as tx:
                    rnd = tx.active_round()
                if rnd is None:
                    return None
                with self.storage.exclusive():  # other processes: see the module docstring
                    if self.storage.shared:  # re-read under the lock: it may have moved
                        with self.storage.read() as tx:
                            rnd = tx.active_round()
                        if rnd is None:
                            return None
                    try:
                        changed = self._step(rnd)
                    except BaseException:
                        self.live.drop(rnd.round_id)
                        raise
                if not changed:
                    return rnd
            with self.storage.read() as tx:
                return tx.active_round()

    def abort(self, round_id: int, reason: str) -> Round:
        """End a running round as ``failed`` (410 if it already ended)."""
        with self.lock:
            with self.storage.read() as tx:
                rnd = load_round(tx, round_id)
            if not rnd.active:
                raise errors.ApiError(
                    410, wire.E_ROUND_CLOSED, f"round {round_id} already ended ({rnd.state})"
                )
            self.fail(rnd, reason)
            with self.storage.read() as tx:
                return load_round(tx, round_id)

    def fail(self, rnd: Round, reason: str, culprits: dict[int, str] | None = None) -> bool:
        """End ``rnd`` as ``failed`` unless its state changed meanwhile; returns True."""
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
        self.live.drop(rnd.round_id)
        if ok:
            log.warning("round %d failed in phase %s: %s", rnd.round_id, rnd.state, reason)
        return True

    def _step(self, rnd: Round) -> bool:
        """Close the round's current phase if it is due; True if the round changed."""
        now = self.clock()
        expired = now >= rnd.phase_deadline
        params = round_params(rnd)
        with self.storage.read() as tx:
            count = tx.count_messages(rnd.round_id, rnd.state)
        phase = self.phases.get(rnd.state)
        if phase is None:
            raise RuntimeError(f"round {rnd.round_id} in unknown state {rnd.state!r}")
        outcome: Outcome = phase.close(Closing(rnd, params, self.live, count, expired, now))
        if isinstance(outcome, Wait):
            return False
        if isinstance(outcome, Fail):
            return self.fail(rnd, outcome.reason, culprits=outcome.culprits)
        if isinstance(outcome, Advance):
            return self._move(rnd, outcome.state, outcome.phase_deadline, outcome.info)
        if isinstance(outcome, Publish):
            return self.publisher.publish(rnd, params, outcome.total, outcome.server)
        raise TypeError(f"unknown phase outcome {outcome!r}")

    def _move(self, rnd: Round, state: str, deadline: float, info: dict[str, Any]) -> bool:
        with self.storage.write() as tx:
            ok = tx.update_round(
                rnd.round_id, rnd.state, state=state, phase_deadline=deadline, info=info
            )
        if not ok:  # someone else (an operator's abort) changed it: rebuild next time
            self.live.drop(rnd.round_id)
            return True
        self.live.moved(rnd.round_id, state)
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
