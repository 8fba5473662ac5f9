"""The device's side of one SecAgg+ round: advertise keys, send encrypted shares,
upload the masked update, answer the unmask request.

Each :meth:`RoundPhases.step` sends whatever messages of this device are due and stops
(:class:`~edgerec.runtime.sync_outcome.RoundStop`) when the round needs other devices
first, is over for this device, or the coordinator says no. Round secrets are saved
before the message that depends on them is sent, so a retried message is identical.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgerec.federated import wire
from edgerec.federated.errors import FederatedError
from edgerec.federated.evaluation import FIELDS
from edgerec.federated.protocol import (
    KeysBundle,
    RoundParams,
    ShareDelivery,
    UnmaskRequest,
)
from edgerec.federated.secagg import SecAggClient

from .sync_bundle import bundle_of_answer, mismatch
from .sync_outcome import RoundStop, SyncError, SyncReport
from .sync_state import DeviceState
from .sync_training import LocalUpdate, decode_bias
from .sync_transport import CoordinatorSession, Response

log = logging.getLogger(__name__)

__all__ = ["FINAL", "RoundPhases", "check_response"]

#: round states after which nothing more happens
FINAL = ("done", "failed")
#: most messages one step sends (a round has four per device; the rest is slack)
MAX_PHASES_PER_STEP = 8


def check_response(r: Response, what: str) -> None:
    """Return when ``r`` succeeded; otherwise raise what its status means for the device.

    A refused token is a :class:`SyncError`; everything else is a :class:`RoundStop`:
    waiting (rate limited, or the round is not there yet), finished (not selected, the
    phase or round closed), or an error the next sync may get past.
    """
    if r.status < 300:
        return
    code = r.error_code()
    if r.status == 401:
        status = "token_expired" if code == wire.E_TOKEN_EXPIRED else "unauthenticated"
        raise SyncError(
            f"{what}: the coordinator refused this device's token ({r.error_detail()})",
            status=status,
        )
    if r.status == 403 and code == wire.E_DEVICE_REVOKED:
        raise SyncError(f"{what}: this device has been revoked ({r.error_detail()})", "revoked")
    if r.status == 429:
        raise RoundStop(
            f"{what}: rate limited",
            error=f"{what}: rate limited",
            retry_after=retry_after(r),
            status="rate_limited",
        )
    if r.status == 409 and code in wire.RETRY_LATER:
        raise RoundStop(f"{what}: {r.error_detail()}")
    if r.status == 410 or (
        r.status == 403 and code in (wire.E_NOT_SELECTED, wire.E_NOT_PARTICIPANT)
    ):
        raise RoundStop(f"{what}: {r.error_detail()}", finished=True)
    if r.status == 409 and code in (wire.E_ROUND_FULL, wire.E_PHASE_CLOSED):
        raise RoundStop(f"{what}: {r.error_detail()}", finished=True)
    raise RoundStop(
        f"{what}: {r.status}",
        finished=r.status < 500,
        error=f"{what}: coordinator answered {r.status} {code}: {r.error_detail()}",
        status="server_error" if r.status >= 500 else "refused",
    )


def retry_after(r: Response) -> float:
    """The answer's ``Retry-After`` in seconds (1 when missing or unreadable; at most a day)."""
    try:
        value = float(r.headers.get("retry-after", 1) or 1)
    except (TypeError, ValueError):
        return 1.0
    return min(max(value, 0.0), 86400.0) if value == value else 1.0


def _due(state: str, phase: str) -> None:
    """Stop unless the round is in ``phase``: wait before it, give up after it."""
    order = wire.DEVICE_PHASES
    if order.index(state) < order.index(phase):
        raise RoundStop(f"waiting for the {phase} phase")
    if state != phase:
        raise RoundStop(f"missed the {phase} phase (round is in {state})", finished=True)


class RoundPhases:
    """Runs this device's part of the coordinator's current round.

    Args:
        session: the device's connection to the coordinator.
        state: where round secrets are kept between calls.
        update: computes the device's private update for the upload phase.
        min_noise_multiplier: sit out rounds whose noise multiplier is lower.
        min_cohort: sit out rounds whose minimum cohort is smaller.
        ledger: the device's privacy ledger (rounds its update went into).
    """

    def __init__(
        self,
        session: CoordinatorSession,
        state: DeviceState,
        update: LocalUpdate,
        min_noise_multiplier: float,
        min_cohort: int,
        ledger: Any = None,
    ) -> None:
        self.ledger = ledger
        self.session = session
        self.state = state
        self.update = update
        self.min_noise_multiplier = float(min_noise_multiplier)
        self.min_cohort = int(min_cohort)

    def step(
        self, rep: SyncReport, head_version: int | None, global_bias: np.ndarray | None
    ) -> None:
        """Send the messages that are due in the current round and record what happened
        in ``rep``; the device holds head ``head_version`` (``global_bias``)."""
        r = self.session.call("GET", "/v1/rounds/current")
        check_response(r, "reading the round")
        view = r.json_object()
        current = view.get("round")
        if current is not None and (isinstance(current, bool) or not isinstance(current, int)):
            raise SyncError(f"round number {current!r} is not an integer", "bad_response")
        self.state.forget_other_rounds(current)
        self.settle_ledger(current)
        if current is None:
            return
        rep.round, rep.round_state = current, str(view.get("state"))
        rep.selected = bool(view.get("selected"))
        if view.get("state") in FINAL:
            self.state.forget_round(current)
            if self.ledger is not None:
                self.ledger.round_ended(view)
            rep.finished = rep.selected
            return
        if not rep.selected:
            return
        reason = mismatch(
            self.update.model.bundle, bundle_of_answer(view, f"round {current}"), f"round {current}"
        )
        if reason is not None:  # it trains a head of another bundle: sit it out
            rep.bundle_mismatch, rep.finished = reason, True
            log.info("sitting out: %s", reason)
            return
        try:
            for _ in range(MAX_PHASES_PER_STEP):
                view = self._phase(view, rep, head_version, global_bias)
                rep.round_state = view["state"]
        except FederatedError as exc:  # e.g. a neighbour's share failed authentication
            rep.finished = True
            rep.status = "bad_response"  # what the coordinator sent or relayed is unusable
            rep.error = f"round {rep.round}: {type(exc).__name__}: {exc}"
            log.warning("sync: %s; not taking part further in this round", rep.error)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise SyncError(
                f"round {rep.round}: unusable answer from the coordinator "
                f"({type(exc).__name__}: {exc})",
                status="bad_response",
            ) from None
        except RoundStop as stop:
            if stop.retry_after is not None:
                rep.retry_after = stop.retry_after
            rep.finished = stop.finished
            rep.waiting = not stop.finished and stop.error is None
            if stop.error:
                rep.error = stop.error
            if stop.status:
                rep.status = stop.status
            if stop.finished:
                log.debug("round %s: %s", view["round"], stop)

    def _phase(
        self,
        view: dict[str, Any],
        rep: SyncReport,
        head_version: int | None,
        global_bias: np.ndarray | None,
    ) -> dict[str, Any]:
        """Send the next due message of this device; returns the refreshed view."""
        rnd, state, sent = int(view["round"]), view["state"], view["sent"]
        if state in FINAL:
            self.state.forget_round(rnd)
            raise RoundStop(f"round {state}", finished=True)
        params = RoundParams.from_wire(view["params"])
        client = self.state.load_round(rnd, params)
        cid = int(view["client_id"])
        if not sent["advertise"]:
            if state != "advertise":
                raise RoundStop("missed the advertise phase", finished=True)
            if params.head_version != head_version:
                raise RoundStop("round trains another head version", finished=True)
            below = self.below_floors(params)
            if below:
                rep.declined = f"round {rnd}: {below}"
                log.info("sitting out round %s: %s", rnd, below)
                raise RoundStop(f"sitting out: {below}", finished=True)
            if client is None:
                client = SecAggClient(cid, params)
            msg = client.advertise()
            self.state.save_round(rnd, client)
            self._post(rnd, "advertise", msg.to_wire(), rep)
        elif client is None:
            raise RoundStop(
                "this device lost its round secrets",
                finished=True,
                error=f"round {rnd}: secrets missing from {self.state.dir}",
            )
        elif not sent["share"]:
            _due(state, "share")
            bundle = KeysBundle.from_wire(self._get(rnd, "keys"), params)
            msg = client.share_keys(bundle)
            self.state.save_round(rnd, client)
            self._post(rnd, "shares", msg.to_wire(), rep, phase="share")
        elif not sent["upload"]:
            _due(state, "upload")
            saved = client.export_state().get("masked")
            if saved is None:
                delivery = ShareDelivery.from_wire(self._get(rnd, "shares"), params)
                x = self._contribution(view, params, global_bias)
                saved = client.masked_input(x, delivery).to_wire()
                self.state.save_round(rnd, client)
            self._post(rnd, "masked", saved, rep, phase="upload")
            if self.ledger is not None:
                self.ledger.uploaded(rnd, params, view)
        elif not sent["unmask"]:
            _due(state, "unmask")
            if not view.get("survivor"):
                raise RoundStop("not a survivor", finished=True)
            request = UnmaskRequest.from_wire(self._get(rnd, "unmask"), params)
            msg = client.unmask(request)
            self.state.save_round(rnd, client)
            self._post(rnd, "unmask", msg.to_wire(), rep)
        else:
            raise RoundStop("all messages sent; waiting for the result")
        r = self.session.call("GET", f"/v1/rounds/{rnd}")
        check_response(r, "reading the round")
        return r.json_object()

    def _contribution(
        self, view: dict[str, Any], params: RoundParams, global_bias: np.ndarray | None
    ) -> np.ndarray:
        """What this device uploads: its trained update, or in an evaluation round its
        report on the candidate head (downloaded and checked here)."""
        evaluation = view.get("evaluation")
        if evaluation is None:
            return self.update.compute(params, view.get("training") or {}, global_bias)
        cand, max_events = evaluation.get("candidate"), evaluation.get("max_events")
        if not (_count(cand, 1, 2**62) and _count(max_events, 1, 1000)):
            raise SyncError(f"unusable evaluation settings {evaluation!r}", "bad_response")
        if params.vector_length != len(FIELDS):
            raise SyncError(
                f"evaluation round of {params.vector_length} values; reports have {len(FIELDS)}",
                "bad_response",
            )
        r = self.session.call("GET", f"/v1/candidates/{cand}")
        check_response(r, "fetching the candidate head")
        data = r.json_object()
        expected = evaluation.get("candidate_sha256")
        if expected is not None and data.get("sha256") != expected:
            raise SyncError("the candidate is not the one the round evaluates", "bad_response")
        candidate = decode_bias(data, self.update.model.spec.num_items, "candidate answer")
        return self.update.evaluate(params, max_events, global_bias, candidate)

    def settle_ledger(self, current: int | None) -> None:
        """Ask how the earlier rounds holding this device's update ended (a device that
        missed the end of a round still learns whether it was published)."""
        if self.ledger is None:
            return
        for rnd in self.ledger.pending_rounds():
            if rnd == current:
                continue
            r = self.session.call("GET", f"/v1/rounds/{rnd}")
            if r.status == 404:
                self.ledger.forget(rnd)
            elif r.status == 200:
                view = r.json_object()
                if view.get("state") in FINAL:
                    self.ledger.round_ended(view)

    def below_floors(self, params: RoundParams) -> str | None:
        """Why a round is below this device's privacy floors (None when it is not)."""
        if params.noise_multiplier < self.min_noise_multiplier:
            return (
                f"noise multiplier {params.noise_multiplier:g} is below this device's "
                f"floor {self.min_noise_multiplier:g}"
            )
        if params.min_cohort < self.min_cohort:
            return (
                f"minimum cohort {params.min_cohort} is below this device's floor {self.min_cohort}"
            )
        return None

    def _get(self, rnd: int, what: str) -> Any:
        r = self.session.call("GET", wire.round_path(rnd, self.session.require_id(), what))
        check_response(r, f"GET {what}")
        return r.json()

    def _post(
        self, rnd: int, what: str, payload: dict, rep: SyncReport, phase: str | None = None
    ) -> None:
        r = self.session.call(
            "POST", wire.round_path(rnd, self.session.require_id(), what), payload
        )
        check_response(r, f"POST {what}")
        rep.sent.append(phase or what)


def _count(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
