"""Phase 1, share: each device sends one encrypted share bundle per neighbour.

The coordinator relays ciphertexts it cannot read (stored per recipient for the
next phase's download). Closes when every device of the roster shared, or at the
deadline; the devices that shared are the ones that may upload.
"""

from __future__ import annotations

import base64
from typing import Any

from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import EncryptedShares, RoundParams

from .live_rounds import LiveRound, LiveRounds
from .phase import (
    Accepted,
    Advance,
    Fail,
    Outcome,
    Phase,
    Wait,
    ack,
    check_client_id,
    parse_message,
    refused_as_invalid,
    require_participant,
)
from .storage import Device, Round, Transaction


class SharePhase(Phase):
    """Relay the Shamir shares of each device's secrets to its neighbours."""

    name = "share"

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every device of the roster."""
        return len(rnd.info.get("roster", ()))

    def accept(
        self,
        tx: Transaction,
        rnd: Round,
        live: LiveRound,
        device: Device,
        body: dict[str, Any],
        now: float,
    ) -> Accepted:
        part = require_participant(tx, rnd, device)
        msg = parse_message(EncryptedShares, body, live.params)
        check_client_id(msg.client_id, part.client_id)
        with refused_as_invalid():
            live.secagg.add_shares(msg)
        tx.insert_ciphertexts(
            rnd.round_id,
            part.client_id,
            {v: base64.b64encode(ct).decode("ascii") for v, ct in msg.ciphertexts.items()},
        )
        return Accepted(body, None, ack(rnd, self.name, part.client_id))

    def close(
        self,
        rnd: Round,
        params: RoundParams,
        live: LiveRounds,
        count: int,
        expired: bool,
        now: float,
    ) -> Outcome:
        server = live.get(rnd).secagg
        if count < len(server.roster) and not expired:
            return Wait()
        try:
            shared = server.close_shares()
        except SecAggError as exc:
            return Fail(str(exc))
        return Advance("upload", rnd.deadline, {**rnd.info, "shared": list(shared)})
