"""The round engine: the one object the service, the HTTP app and the CLI drive rounds by.

A round moves ``advertise -> share -> upload -> unmask -> done`` (or ``failed``).
:class:`RoundEngine` only wires the parts together; each part is a module a reader
can take in on its own:

====================  ============================================================
``round_opening``     opening a round: privacy budget, cohort bounds, SecAgg graph
``cohort_sampling``   which devices a round selects (Poisson, by HMAC)
``phase``             what a phase is; ``phase_advertise``, ``phase_share``,
                      ``phase_upload``, ``phase_unmask``: one module per phase
``phase_transitions`` closing complete or expired phases, failing rounds
``message_intake``    validating and storing device messages (idempotent retries)
``group_commit``      many concurrent messages per write transaction and fsync
``device_reads``      what a device may read between phases
``live_rounds``       the in-memory SecAgg state, rebuilt from the database
``publishing``        the unmasked sum -> the next head version
``privacy_ledger``    (ε, δ) spent: the accountant over published rounds
====================  ============================================================

**The database is the only state.** Every accepted message is stored (fsynced)
before it is acknowledged. The :class:`~edgerec.federated.secagg.SecAggServer`
of the running round is a cache: a pure function of the stored messages, rebuilt
by replaying them in phase order after a restart (or after any failed write).
Publishing a result — the new head version, the round's ``done`` state and its
spent (ε, δ) — is one transaction guarded by a compare-and-set on the round
state, so a round is applied at most once however often the process dies.

Concurrency: within a process, writes that touch the cached SecAgg server are
serialised by one lock, as the database serialises writers anyway. By default one
process owns the database (see ``serve``). On a shared PostgreSQL database
(``serve --workers N`` / ``--shared-db``) the cache is synced from the database
before each use (``live_rounds``) and phases close under the database's writer lock
(``phase_transitions``), so every change of a round happens once whichever process
a request reaches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgerec.federated import wire

from . import errors
from .cohort_sampling import is_selected
from .config import RoundConfig, ServerConfig
from .device_reads import DeviceReads
from .live_rounds import LiveRounds
from .message_intake import MessageIntake
from .phase import Phase
from .phase_advertise import AdvertisePhase
from .phase_share import SharePhase
from .phase_transitions import PhaseTransitions
from .phase_unmask import UnmaskPhase
from .phase_upload import UploadPhase
from .privacy_ledger import privacy_spent
from .publishing import Publisher
from .round_opening import RoundOpener
from .storage import DONE, PHASES, Device, Round, Storage

log = logging.getLogger(__name__)


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
        lock = threading.RLock()
        live = LiveRounds(storage, self.config.audit_shares)
        phases: dict[str, Phase] = {
            p.name: p for p in (AdvertisePhase(), SharePhase(), UploadPhase(), UnmaskPhase())
        }
        assert tuple(phases) == PHASES
        self._transitions = PhaseTransitions(
            storage,
            clock,
            lock,
            live,
            phases,
            Publisher(storage, clock, live, evaluate=self.config.evaluation is not None),
        )
        self._opener = RoundOpener(
            storage, self.vector_length, self.config, clock, lock, self._transitions.fail
        )
        self._intake = MessageIntake(storage, clock, lock, live, phases)
        self._reads = DeviceReads(storage, lock, live)
        self._auto_stopped = False
        self._auto_last_error: str | None = None

    # ================================================================== rounds
    def open_round(self, cfg: RoundConfig) -> Round:
        """Open a round for the current head version (409 if one is running).

        Raises:
            ApiError: a round is active, too few devices are enrolled, the privacy
                budget would be exceeded, or the parameters are inconsistent.
        """
        return self._opener.open(cfg)

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
        return self._transitions.abort(round_id, reason)

    def advance(self) -> Round | None:
        """Close every phase of the active round that is complete or past its deadline.

        Safe to call any time from any thread (the background ticker, after each
        accepted message, at start-up to finish a round interrupted by a crash).
        Returns the active round afterwards (None when no round is running).
        """
        return self._transitions.advance()

    def take_due(self) -> bool:
        """True (once) when an accepted message may have completed its phase."""
        return self._intake.take_due()

    def privacy(self) -> dict[str, Any]:
        """(ε, δ) spent by the published heads, from the latest head's metadata."""
        with self.storage.read() as tx:
            head = tx.latest_head()
            released = tx.list_rounds(limit=1, state=DONE)
        meta = head.metadata if head else {}
        # an evaluation round that published nothing still spent privacy: its info says
        if released and released[0].info.get("dp_rounds", 0) > meta.get("dp_rounds", 0):
            meta = released[0].info
        return privacy_spent(meta)

    # ================================================================== devices: reads
    def is_selected(self, rnd: Round, device: Device) -> bool:
        """Poisson sampling: each device enrolled before the round opened is selected
        with probability ``q``, decided by an HMAC of its id under the round's secret."""
        return is_selected(rnd, device)

    def device_view(self, device: Device, round_id: int | None = None) -> dict[str, Any]:
        """What a device needs to know about a round (the active/latest one by default)."""
        return self._reads.view(device, round_id)

    def keys_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 1 download: the roster and the device's neighbours' public keys."""
        return self._reads.keys_for(round_id, device)

    def delivery_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 2 download: the encrypted shares addressed to the device."""
        return self._reads.delivery_for(round_id, device)

    def unmask_request(self, round_id: int, device: Device) -> dict[str, Any]:
        """Phase 3 download: survivors and dropouts (the same for every survivor)."""
        return self._reads.unmask_request(round_id, device)

    # ================================================================== devices: writes
    def advertise(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 0 upload: the device's public keys (admits it to the cohort)."""
        return self._intake.accept(round_id, device, "advertise", body)

    def share(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 1 upload: one encrypted share bundle per neighbour."""
        return self._intake.accept(round_id, device, "share", body)

    def upload(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 2 upload: the masked uint32 vector."""
        return self._intake.accept(round_id, device, "upload", body)

    def unmask(self, round_id: int, device: Device, body: dict[str, Any]) -> dict[str, Any]:
        """Phase 3 upload: shares for reconstruction."""
        return self._intake.accept(round_id, device, "unmask", body)
