"""Reading a stored round: its protocol parameters, and refusals that say where it stands.

Every part of the round engine reads rounds through these helpers, so a device that
is early, late or outside a round gets the same status code and error code
whichever phase it talks to.
"""

from __future__ import annotations

from edgerec.federated import wire
from edgerec.federated.protocol import RoundParams

from . import errors
from .storage import FINAL_STATES, PHASES, Round, Transaction

#: a phase's longest wait when the round's parameters do not say (older databases)
DEFAULT_PHASE_TIMEOUT_S = 60.0


def round_params(rnd: Round) -> RoundParams:
    """The SecAgg/DP parameters a round was opened with."""
    return RoundParams.from_wire(rnd.params["secagg"])


def load_round(tx: Transaction, round_id: int) -> Round:
    """The round ``round_id``; 404 when there is none."""
    rnd = tx.get_round(round_id)
    if rnd is None:
        raise errors.not_found(f"no round {round_id}")
    return rnd


def phase_timeout(rnd: Round) -> float:
    """Seconds one phase of ``rnd`` may wait for its devices."""
    return float(rnd.params.get("phase_timeout_s", DEFAULT_PHASE_TIMEOUT_S))


def round_ended(rnd: Round) -> errors.ApiError:
    """410: the round is ``done`` or ``failed``."""
    return errors.ApiError(
        410,
        wire.E_ROUND_CLOSED,
        f"round {rnd.round_id} has ended ({rnd.state})",
        state=rnd.state,
    )


def expect_phase(rnd: Round, phase: str) -> None:
    """Refuse a ``phase`` message unless the round is in that phase (410 ended, 409
    too early or phase closed)."""
    if rnd.state == phase:
        return
    if rnd.state in FINAL_STATES:
        raise round_ended(rnd)
    if PHASES.index(rnd.state) < PHASES.index(phase):
        raise errors.conflict(
            f"round {rnd.round_id} is in phase {rnd.state}; {phase} opens later",
            code=wire.E_TOO_EARLY,
            state=rnd.state,
        )
    raise errors.conflict(
        f"round {rnd.round_id} is past the {phase} phase (now {rnd.state})",
        code=wire.E_PHASE_CLOSED,
        state=rnd.state,
    )


def expect_past(rnd: Round, phase: str) -> None:
    """Refuse a download that exists once ``phase`` closed, while the round still runs."""
    if rnd.state in FINAL_STATES:
        raise round_ended(rnd)
    if PHASES.index(rnd.state) <= PHASES.index(phase):
        raise errors.conflict(
            f"round {rnd.round_id} is in phase {rnd.state}; not available yet",
            code=wire.E_TOO_EARLY,
            state=rnd.state,
        )
