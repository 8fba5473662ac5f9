"""The in-memory SecAgg state of running rounds: a cache rebuilt from the database.

A :class:`LiveRound` holds what checking a device message needs beyond the stored
rows: the public keys advertised so far (no key may be reused) and, from the end of
the advertise phase on, the :class:`~edgerec.federated.secagg.SecAggServer`. It is a
pure function of the stored messages: :class:`LiveRounds` rebuilds it by replaying
them in phase order whenever it is missing — after a restart, or after it was dropped
because a write failed and the cache may have diverged from the database.

**Several processes on one database** (:attr:`Storage.shared <.storage.Storage.shared>`):
another process may have stored messages or moved the round since this view was
built. Each view records the round state it reflects and which devices' messages of
each phase it holds; :meth:`LiveRounds.get` then checks both against the database
before the view is used: a changed state replays the round afresh, new messages of
the current phase are applied one by one (catch-up). Writers are serialised by the
database, so a view synced inside a write transaction is exact for that transaction.
A single process (SQLite, or PostgreSQL without sharing) skips the check: it saw
every message itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edgerec.federated.protocol import (
    Advertisement,
    EncryptedShares,
    MaskedInput,
    RoundParams,
    UnmaskResponse,
)
from edgerec.federated.secagg import SecAggServer

from .round_state import round_params
from .storage import PHASES, Message, Round, Storage, Transaction

log = logging.getLogger(__name__)


@dataclass
class LiveRound:
    """In-memory view of one running round."""

    params: RoundParams
    keys: set[bytes] = field(default_factory=set)  # advertised public keys (reuse check)
    server: SecAggServer | None = None  # from the end of the advertise phase on
    sets: dict[tuple[str, str], frozenset[int]] = field(default_factory=dict)
    state: str = "advertise"  # the round state this view reflects
    seen: dict[str, set[str]] = field(default_factory=dict)  # phase -> device ids applied

    def note(self, phase: str, device_id: str) -> None:
        """Record that ``device_id``'s ``phase`` message is in this view."""
        self.seen.setdefault(phase, set()).add(device_id)

    @property
    def secagg(self) -> SecAggServer:
        """The SecAgg server (exists once the advertise phase closed)."""
        assert self.server is not None, "the advertise phase has not closed"
        return self.server

    def member(self, rnd: Round, name: str, client_id: int) -> bool:
        """Whether ``client_id`` is in the round's ``info[name]`` list (cached as a set)."""
        key = (rnd.state, name)
        group = self.sets.get(key)
        if group is None:
            group = self.sets[key] = frozenset(rnd.info.get(name, ()))
        return client_id in group


class LiveRounds:
    """The cache of :class:`LiveRound` views, keyed by round id.

    Args:
        storage: the database the views are replayed from.
        audit_shares: passed to :class:`SecAggServer` (check every share, not just
            the ones reconstruction needs).
    """

    def __init__(self, storage: Storage, audit_shares: bool) -> None:
        self.storage = storage
        self.audit_shares = audit_shares
        self._rounds: dict[int, LiveRound] = {}
        self.catch_ups = 0  # messages applied from other processes (observability, tests)

    @property
    def shared(self) -> bool:
        """Whether other processes write to the database (views must be synced)."""
        return bool(getattr(self.storage, "shared", False))

    def get(self, rnd: Round, tx: Transaction | None = None, state: str | None = None) -> LiveRound:
        """The cached view of ``rnd``, rebuilt by replaying its messages up to ``state``
        (default: the round's state) if missing; ``tx`` reads them inside a running
        transaction."""
        live = self._rounds.get(rnd.round_id)
        if live is not None:
            if not self.shared or state is not None or rnd.state not in PHASES:
                return live
            if tx is None:
                with self.storage.read() as rtx:
                    return self._sync(rtx, rnd, live)
            return self._sync(tx, rnd, live)
        if tx is None:
            with self.storage.read() as rtx:
                live = self._replay(rtx, rnd, state or rnd.state)
        else:
            live = self._replay(tx, rnd, state or rnd.state)
        self._rounds[rnd.round_id] = live
        return live

    def rebuild(self, rnd: Round, state: str) -> LiveRound:
        """Replay ``rnd`` afresh as of ``state``."""
        self.drop(rnd.round_id)
        return self.get(rnd, state=state)

    def drop(self, round_id: int) -> None:
        """Forget a round's view (it ended, or may no longer match the database)."""
        self._rounds.pop(round_id, None)

    def moved(self, round_id: int, state: str) -> None:
        """The round moved to ``state`` and its cached view followed (the closing phase
        updated it in place)."""
        live = self._rounds.get(round_id)
        if live is not None:
            live.state = state

    def _sync(self, tx: Transaction, rnd: Round, live: LiveRound) -> LiveRound:
        """Bring ``live`` up to the database: replay on a changed state, else apply the
        current phase's messages stored by other processes."""
        if live.state != rnd.state:
            live = self._replay(tx, rnd, rnd.state)
            self._rounds[rnd.round_id] = live
            return live
        phase = rnd.state
        seen = live.seen.setdefault(phase, set())
        if tx.count_messages(rnd.round_id, phase) == len(seen):
            return live
        missing = [d for d in tx.message_device_ids(rnd.round_id, phase) if d not in seen]
        stored = tx.messages_of(rnd.round_id, phase, missing, with_blob=True)  # one query
        for device_id in missing:
            m = stored.get(device_id)
            assert m is not None, "a stored message vanished inside a transaction"
            _apply(live, phase, m)
            self.catch_ups += 1
        return live

    def _replay(self, tx: Transaction, rnd: Round, state: str) -> LiveRound:
        started = time.perf_counter()
        params = round_params(rnd)
        live = LiveRound(params, state=state)
        ad_messages = tx.messages(rnd.round_id, "advertise")
        ads = [Advertisement.from_wire(m.payload, params) for m in ad_messages]
        for m, ad in zip(ad_messages, ads, strict=True):
            live.keys.update((ad.c_pk, ad.s_pk))
            live.note("advertise", m.device_id)
        if state == "advertise":
            return live
        live.server = SecAggServer(params, ads, audit_shares=self.audit_shares)
        for m in tx.messages(rnd.round_id, "share"):
            _apply(live, "share", m)
        if state in ("upload", "unmask"):
            live.server.close_shares()
            for m in tx.messages(rnd.round_id, "upload"):
                _apply(live, "upload", m)
        if state == "unmask":
            live.server.close_inputs()
            for m in tx.messages(rnd.round_id, "unmask"):
                _apply(live, "unmask", m)
        log.debug(
            "round %d: rebuilt SecAgg state (%s) in %.3fs",
            rnd.round_id,
            state,
            time.perf_counter() - started,
        )
        return live


def _apply(live: LiveRound, phase: str, m: Message) -> None:
    """Add one stored message to the view (what accepting it did in its process)."""
    params = live.params
    if phase == "advertise":
        ad = Advertisement.from_wire(m.payload, params)
        live.keys.update((ad.c_pk, ad.s_pk))
    elif phase == "share":
        live.secagg.add_shares(EncryptedShares.from_wire(m.payload, params))
    elif phase == "upload":
        y = np.frombuffer(m.blob or b"", dtype="<u4").astype(np.uint32)
        live.secagg.add_masked(MaskedInput(params.round_id, int(m.payload["client_id"]), y))
    elif phase == "unmask":
        live.secagg.add_unmask_response(UnmaskResponse.from_wire(m.payload, params))
    else:
        raise ValueError(f"no messages in round state {phase!r}")
    live.note(phase, m.device_id)
