"""Phase 0, advertise: sampled devices send their public keys and so join the cohort.

Closes early once every sampled device advertised (at most the cohort bound);
at its deadline it needs ``min_cohort`` devices, otherwise the round fails. Closing
builds the SecAgg server from the advertisements: its roster is the cohort.
"""

from __future__ import annotations

from edgerec.federated import wire
from edgerec.federated.errors import ProtocolError, SecAggError
from edgerec.federated.protocol import Advertisement, RoundParams

from . import errors
from .cohort_sampling import is_selected
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
    parse_message,
)
from .round_state import phase_timeout
from .storage import Round


class AdvertisePhase(Phase):
    """Admit sampled devices to the round by their fresh key pairs."""

    name = "advertise"
    writes = True

    def quota(self, rnd: Round, params: RoundParams) -> int:
        """Every sampled device (never more than the cohort bound)."""
        return min(int(rnd.params.get("selected", params.cohort_target)), params.cohort_target)

    def accept(self, message: Incoming) -> Accepted:
        tx, rnd, live, device, body, now = message
        params = live.params
        if not is_selected(rnd, device):
            raise errors.forbidden(
                f"device is not selected for round {rnd.round_id}", code=wire.E_NOT_SELECTED
            )
        msg = parse_message(Advertisement, body, params)
        expect = wire.client_id_for(params.round_id, device.device_id)
        if msg.client_id != expect:
            raise errors.invalid(
                f"client_id must be {expect} for this device in this round", field="client_id"
            )
        if tx.count_messages(rnd.round_id, self.name) >= params.cohort_target:
            raise errors.conflict(
                f"round {rnd.round_id} is full ({params.cohort_target} devices)",
                code=wire.E_ROUND_FULL,
            )
        if tx.participant_by_client(rnd.round_id, msg.client_id) is not None:
            raise errors.conflict("client id collision; this device sits this round out")
        if msg.c_pk == msg.s_pk or msg.c_pk in live.keys or msg.s_pk in live.keys:
            raise errors.invalid("public keys must be fresh and distinct", field="c_pk")
        tx.add_participant(rnd.round_id, device.device_id, msg.client_id, now)
        live.keys.update((msg.c_pk, msg.s_pk))
        return Accepted(body, None, ack(rnd, self.name, msg.client_id))

    def close(self, closing: Closing) -> Outcome:
        rnd, params, live, count, expired, now = closing
        if count < self.quota(rnd, params) and not expired:
            return Wait()
        if count < params.min_cohort:
            return Fail(
                f"only {count} devices advertised keys by the deadline; "
                f"min cohort is {params.min_cohort}"
            )
        try:
            server = live.rebuild(rnd, state="share").secagg
        except (SecAggError, ProtocolError) as exc:
            return Fail(f"cannot start secure aggregation: {exc}")
        info = {**rnd.info, "roster": list(server.roster)}
        return Advance("share", min(now + phase_timeout(rnd), rnd.deadline), info)
