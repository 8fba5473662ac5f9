"""Phase 1, share: each device sends one encrypted share bundle per neighbour.

The coordinator relays ciphertexts it cannot read (stored per recipient for the
next phase's download). Closes when every device of the roster shared, or at the
deadline; the devices that shared are the ones that may upload.
"""

from __future__ import annotations

import base64

from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import EncryptedShares, RoundParams

from .phase import (
    Accepted,
    Advance,
    Closing,
    Fail,
    Incoming,
    Outcome,
    Phase,
    Wait,
    ack,
    participant_message,
    refused_as_invalid,
)
from .storage import Round


class SharePhase(Phase):
    """Relay the Shamir shares of each device's secrets to its neighbours."""

    name = "share"
    writes = True

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every device of the roster."""
        return len(rnd.info.get("roster", ()))

    def accept(self, message: Incoming) -> Accepted:
        tx, rnd, live, device, body, now = message
        part, msg = participant_message(message, EncryptedShares)
        with refused_as_invalid():
            live.secagg.add_shares(msg)
        tx.insert_ciphertexts(
            rnd.round_id,
            part.client_id,
            {v: base64.b64encode(ct).decode("ascii") for v, ct in msg.ciphertexts.items()},
        )
        return Accepted(body, None, ack(rnd, self.name, part.client_id))

    def close(self, closing: Closing) -> Outcome:
        rnd, params, live, count, expired, now = closing
        server = live.get(rnd).secagg
        if count < len(server.roster) and not expired:
            return Wait()
        try:
            shared = server.close_shares()
        except SecAggError as exc:
            return Fail(str(exc))
        return Advance("upload", rnd.deadline, {**rnd.info, "shared": list(shared)})
