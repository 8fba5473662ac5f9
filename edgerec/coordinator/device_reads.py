"""What a device may read about a round: its view of the round and the downloads
between phases (neighbours' keys, shares addressed to it, the unmask request).

Each download exists once the phase that produces it closed, and only for the
devices that took part in it; everything else is refused with the round's state.
The round view names the bundle whose head the round trains (``model_id``,
``model_version``), so a device running another bundle sits the round out.
"""

from __future__ import annotations

import threading
from typing import Any

from edgerec.federated import wire
from edgerec.federated.errors import ProtocolError

from . import errors
from .cohort_sampling import is_selected
from .live_rounds import LiveRounds
from .round_state import expect_past, load_round, round_params
from .storage import PHASES, Device, Participant, Round, Storage


class DeviceReads:
    """Answers a device's GET requests about rounds.

    Args:
        storage: the database.
        lock: the engine's lock over the in-memory SecAgg state.
        live: the cache of running rounds' SecAgg state.
    """

    def __init__(self, storage: Storage, lock: threading.RLock, live: LiveRounds) -> None:
        self.storage = storage
        self.lock = lock
        self.live = live
        self._bundle: dict[str, Any] | None = None  # the database's bundle, read once

    def view(self, device: Device, round_id: int | None = None) -> dict[str, Any]:
        """What a device needs to know about a round (the active/latest one by default)."""
        with self.storage.read() as tx:
            if round_id is None:
                rnd = tx.active_round() or tx.latest_round()
                if rnd is None:
                    return {"round": None}
            else:
                rnd = load_round(tx, round_id)
            params = round_params(rnd)
            part = tx.get_participant(rnd.round_id, device.device_id)
            sent = {
                p: tx.get_message(rnd.round_id, device.device_id, p) is not None for p in PHASES
            }
            if self._bundle is None:  # fixed when the database was initialised
                self._bundle = {k: tx.get_meta(k) for k in ("model_id", "model_version")}
            bundle = self._bundle
        selected = is_selected(rnd, device)
        return {
            "round": rnd.round_id,
            "name": params.round_id,
            "state": rnd.state,
            "base_version": rnd.base_version,
            "deadline": rnd.deadline,
            "phase_deadline": rnd.phase_deadline,
            "selected": selected,
            "client_id": (
                part.client_id
                if part
                else (wire.client_id_for(params.round_id, device.device_id) if selected else None)
            ),
            "sent": sent,
            "survivor": (part is not None and part.client_id in rnd.info.get("survivors", ())),
            "params": rnd.params["secagg"],
            "training": rnd.params.get("training", {}),
            **({"evaluation": rnd.params["evaluation"]} if "evaluation" in rnd.params else {}),
            "sampling_rate": rnd.params.get("sampling_rate"),
            "delta": rnd.params.get("delta"),
            "result_version": rnd.result_version,
            "failure": rnd.failure,
            **bundle,  # model_id, model_version: the bundle whose head it trains
        }

    def keys_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """After advertise: the roster and the device's neighbours' public keys."""
        rnd, part = self._participant_read(round_id, device, after="advertise")
        with self.lock:
            return self.live.get(rnd).secagg.keys_for(part.client_id).to_wire()

    def delivery_for(self, round_id: int, device: Device) -> dict[str, Any]:
        """After share: the encrypted shares addressed to the device."""
        rnd, part = self._participant_read(round_id, device, after="share")
        with self.lock:
            server = self.live.get(rnd).secagg
            try:
                return server.delivery_for(part.client_id).to_wire()
            except ProtocolError as exc:
                raise errors.forbidden(
                    f"device did not send its shares in round {round_id}: {exc}",
                    code=wire.E_NOT_PARTICIPANT,
                ) from None

    def unmask_request(self, round_id: int, device: Device) -> dict[str, Any]:
        """After upload: survivors and dropouts (the same for every survivor)."""
        rnd, part = self._participant_read(round_id, device, after="upload")
        if part.client_id not in rnd.info.get("survivors", ()):
            raise errors.forbidden(
                f"device is not a survivor of round {round_id} (no accepted upload)",
                code=wire.E_NOT_PARTICIPANT,
            )
        with self.lock:
            return self.live.get(rnd).secagg.unmask_request().to_wire()

    def _participant_read(
        self, round_id: int, device: Device, after: str
    ) -> tuple[Round, Participant]:
        """The running round past phase ``after`` and the device's part in it."""
        with self.storage.read() as tx:
            rnd = load_round(tx, round_id)
            part = tx.get_participant(round_id, device.device_id)
        expect_past(rnd, after)
        if part is None:
            raise errors.forbidden(
                f"device is not in round {round_id}", code=wire.E_NOT_PARTICIPANT
            )
        return rnd, part
