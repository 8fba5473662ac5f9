"""Phase 3, unmask: survivors send the shares that remove the masks.

Each survivor returns its shares of surviving neighbours' self-mask seeds and of
dropped neighbours' mask keys. Closes when every survivor answered, or at the
deadline, if every secret can be reconstructed; the unmasked sum is then published
(:mod:`.publishing`). Shares that do not verify fail the round and name their senders.
"""

from __future__ import annotations

from edgerec.federated.errors import SecAggError
from edgerec.federated.protocol import RoundParams, UnmaskResponse

from .phase import (
    Accepted,
    Closing,
    Fail,
    Incoming,
    Outcome,
    Phase,
    Publish,
    Wait,
    ack,
    participant_message,
    refused_as_invalid,
)
from .storage import Round


class UnmaskPhase(Phase):
    """Reconstruct the masks and reveal the secure sum."""

    name = "unmask"

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every survivor."""
        return len(rnd.info.get("survivors", ()))

    def accept(self, message: Incoming) -> Accepted:
        tx, rnd, live, device, body, now = message
        part, msg = participant_message(
            message,
            UnmaskResponse,
            member_of="survivors",
            refusal=f"device is not a survivor of round {message.rnd.round_id}",
        )
        with refused_as_invalid():
            live.secagg.add_unmask_response(msg)
        return Accepted(body, None, ack(rnd, self.name, part.client_id))

    def close(self, closing: Closing) -> Outcome:
        rnd, params, live, count, expired, now = closing
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
