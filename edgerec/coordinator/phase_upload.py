"""Phase 2, upload: each device that shared sends its masked uint32 vector.

The vector is stored raw beside the message (not as JSON). Closes when every device
that shared uploaded, or at the round's deadline; the uploaders are the survivors,
the others are dropouts whose pairwise masks the next phase removes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import MaskedInput, RoundParams

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
from .round_state import phase_timeout
from .storage import Round


class UploadPhase(Phase):
    """Collect the masked updates."""

    name = "upload"

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every device that sent its shares."""
        return len(rnd.info.get("shared", ()))

    def accept(self, message: Incoming) -> Accepted:
        tx, rnd, live, device, body, now = message
        part, msg = participant_message(
            message,
            MaskedInput,
            member_of="shared",
            refusal="device did not send its shares in time; it cannot upload in this round",
        )
        with refused_as_invalid():
            live.secagg.add_masked(msg)
        blob = np.ascontiguousarray(msg.y, dtype="<u4").tobytes()
        payload = {k: v for k, v in body.items() if k != "data"}
        response = {**ack(rnd, self.name, part.client_id), "sha256": _sha256(blob)}
        return Accepted(payload, blob, response)

    def close(self, closing: Closing) -> Outcome:
        rnd, params, live, count, expired, now = closing
        server = live.get(rnd).secagg
        if count < len(server.shared) and not expired:
            return Wait()
        try:
            request = server.close_inputs()
        except SecAggError as exc:
            return Fail(str(exc))
        info = {
            **rnd.info,
            "survivors": list(request.survivors),
            "dropped": list(request.dropped),
        }
        return Advance("unmask", now + phase_timeout(rnd), info)


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
