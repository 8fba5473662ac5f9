"""Phase 2, upload: each device that shared sends its masked uint32 vector.

The vector is stored raw beside the message (not as JSON). Closes when every device
that shared uploaded, or at the round's deadline; the uploaders are the survivors,
the others are dropouts whose pairwise masks the next phase removes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from edgerec.federated import wire
from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import MaskedInput, RoundParams

from . import errors
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
from .round_state import phase_timeout
from .storage import Device, Round, Transaction


class UploadPhase(Phase):
    """Collect the masked updates."""

    name = "upload"

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every device that sent its shares."""
        return len(rnd.info.get("shared", ()))

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
        if not live.member(rnd, "shared", part.client_id):
            raise errors.forbidden(
                "device did not send its shares in time; it cannot upload in this round",
                code=wire.E_NOT_PARTICIPANT,
            )
        msg = parse_message(MaskedInput, body, live.params)
        check_client_id(msg.client_id, part.client_id)
        with refused_as_invalid():
            live.secagg.add_masked(msg)
        blob = np.ascontiguousarray(msg.y, dtype="<u4").tobytes()
        payload = {k: v for k, v in body.items() if k != "data"}
        response = {**ack(rnd, self.name, part.client_id), "sha256": _sha256(blob)}
        return Accepted(payload, blob, response)

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
