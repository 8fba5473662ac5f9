"""Phase 3, unmask: survivors send the shares that remove the masks.

Each survivor returns its shares of surviving neighbours' self-mask seeds and of
dropped neighbours' mask keys. Closes when every survivor answered, or at the
deadline, if every secret can be reconstructed; the unmasked sum is then published
(:mod:`.publishing`). Shares that do not verify fail the round and name their senders.
"""

from __future__ import annotations

from typing import Any

from edgerec.federated import wire
from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import RoundParams, UnmaskResponse

from . import errors
from .live_rounds import LiveRound, LiveRounds
from .phase import (
    Accepted,
    Fail,
    Outcome,
    Phase,
    Publish,
    Wait,
    ack,
    check_client_id,
    parse_message,
    refused_as_invalid,
    require_participant,
)
from .storage import Device, Round, Transaction


class UnmaskPhase(Phase):
    """Reconstruct the masks and reveal the secure sum."""

    name = "unmask"

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every survivor."""
        return len(rnd.info.get("survivors", ()))

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
        if not live.member(rnd, "survivors", part.client_id):
            raise errors.forbidden(
                f"device is not a survivor of round {rnd.round_id}", code=wire.E_NOT_PARTICIPANT
            )
        msg = parse_message(UnmaskResponse, body, live.params)
        check_client_id(msg.client_id, part.client_id)
        with refused_as_invalid():
            live.secagg.add_unmask_response(msg)
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
        if count < len(server.survivors) and not expired:
            return Wait()
        if not server.can_unmask():
            missing = server.missing_shares()
            return Fail(
                f"cannot unmask: {len(missing)} secrets lack shares "
                f"({len(server.responders)} of {len(server.survivors)} survivors answered; "
                f"threshold {server.t_eff})"
            )
        try:
            total = server.result()
        except SecAggError as exc:
            return Fail(str(exc), culprits=exc.culprits)
        return Publish(total, server)
