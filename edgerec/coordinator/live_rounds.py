"""The in-memory SecAgg state of running rounds: a cache rebuilt from the database.

A :class:`LiveRound` holds what checking a device message needs beyond the stored
rows: the public keys advertised so far (no key may be reused) and, from the end of
the advertise phase on, the :class:`~edgerec.federated.secagg.SecAggServer`. It is a
pure function of the stored messages: :class:`LiveRounds` rebuilds it by replaying
them in phase order whenever it is missing — after a restart, or after it was dropped
because a write failed and the cache may have diverged from the database.
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
from .storage import Round, Storage, Transaction

log = logging.getLogger(__name__)


@dataclass
class LiveRound:
    """In-memory view of one running round."""

    params: RoundParams
    keys: set[bytes] = field(default_factory=set)  # advertised public keys (reuse check)
    server: SecAggServer | None = None  # from the end of the advertise phase on
    sets: dict[tuple[str, str], frozenset[int]] = field(default_factory=dict)

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

    def get(self, rnd: Round, tx: Transaction | None = None, state: str | None = None) -> LiveRound:
        """The cached view of ``rnd``, rebuilt by replaying its messages up to ``state``
        (default: the round's state) if missing; ``tx`` reads them inside a running
        transaction."""
        live = self._rounds.get(rnd.round_id)
        if live is not None:
            return live
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

    def _replay(self, tx: Transaction, rnd: Round, state: str) -> LiveRound:
        started = time.perf_counter()
        params = round_params(rnd)
        ads = [
            Advertisement.from_wire(m.payload, params)
            for m in tx.messages(rnd.round_id, "advertise")
        ]
        live = LiveRound(params)
        for ad in ads:
            live.keys.update((ad.c_pk, ad.s_pk))
        if state == "advertise":
            return live
        server = SecAggServer(params, ads, audit_shares=self.audit_shares)
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
