"""The coordinator service: one object behind every HTTP route and CLI command.

``Coordinator`` ties together the storage, the device registry and the round
engine, binds the database to one model (the bundle it was created for) and
serves the head and the status. It knows nothing about HTTP.

Every head belongs to that bundle: its metadata, the head answer and the round view
name it (``model_id``, ``model_version``), so that a device running another bundle
(e.g. a newer version after an over-the-air update) neither applies the head nor
trains on it. Heads written before heads named their bundle belong to the bundle
the database is bound to (:func:`head_bundle`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgerec import __version__
from edgerec.federated import wire

from . import errors
from .config import ServerConfig
from .devices import DeviceRegistry
from .privacy_ledger import DeviceLedger, ledger_summary
from .round_state import round_params
from .rounds import RoundEngine
from .security import EnrollKeys
from .storage import DONE, FAILED, PHASES, Head, Round, Storage, StorageError

log = logging.getLogger(__name__)


def model_from_bundle(bundle: str | Path) -> dict[str, Any]:
    """Model id, version and ``vector_length`` (catalog size) of a verified bundle."""
    from edgerec.bundle import open_bundle

    manifest = open_bundle(bundle)
    return {
        "id": manifest.model_id,
        "version": manifest.model_version,
        "vector_length": manifest.feature_spec.num_items,
    }


def initialise(storage: Storage, model: dict[str, Any], clock: Callable[[], float]) -> None:
    """Bind a new database to ``model`` (head v0 = zeros) or check an existing one."""
    with storage.write() as tx:
        have = tx.get_meta("model_id")
        if have is None:
            tx.set_meta("model_id", str(model["id"]))
            tx.set_meta("model_version", str(model["version"]))
            tx.set_meta("vector_length", str(int(model["vector_length"])))
            tx.set_meta("instance", secrets.token_hex(4))
            bias = np.zeros(int(model["vector_length"]), np.float32)
            tx.insert_head(
                Head(
                    0,
                    None,
                    clock(),
                    bias,
                    {
                        "version": 0,
                        "epsilon": 0.0,
                        "delta": None,
                        "dp_rounds": 0,
                        "dp": True,
                        "model_id": str(model["id"]),
                        "model_version": str(model["version"]),
                        "sha256": hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest(),
                    },
                )
            )
            log.info("initialised %s for model %s", storage.url, model["id"])
            return
        n = int(tx.get_meta("vector_length") or -1)
        if have != str(model["id"]) or n != int(model["vector_length"]):
            raise StorageError(
                f"{storage.url} serves model {have!r} with {n} items, not {model['id']!r} with "
                f"{model['vector_length']}; use a new --db for a new model"
            )
        version = tx.get_meta("model_version")
        if version != str(model["version"]):
            raise StorageError(
                f"{storage.url} serves version {version!r} of model {have!r}, not "
                f"{model['version']!r}: its heads were trained for that bundle version; "
                "use a new --db for a new bundle version"
            )


def head_bundle(metadata: dict[str, Any], model: dict[str, Any]) -> dict[str, str]:
    """The bundle a head belongs to: what its metadata says, else (a head written
    before heads named their bundle) the bundle the database is bound to."""
    return {
        "model_id": str(metadata.get("model_id") or model["id"]),
        "model_version": str(metadata.get("model_version") or model["version"]),
    }


def stored_model(storage: Storage) -> dict[str, Any]:
    """The model an initialised database serves (no bundle needed)."""
    with storage.read() as tx:
        model_id = tx.get_meta("model_id")
        if model_id is None:
            raise StorageError(
                f"{storage.url} is not initialised; start 'edgerec coordinator serve "
                "--bundle ...' on it once"
            )
        return {
            "id": model_id,
            "version": tx.get_meta("model_version"),
            "vector_length": int(tx.get_meta("vector_length") or 0),
        }


class Coordinator:
    """Everything the HTTP app and the CLI call.

    Args:
        storage: an opened storage.
        model: the bundle's model info (checked against the database); None to use
            what the database was initialised with.
        enroll_keys: accepted enrollment keys.
        admin_token: the operator's bearer token for ``/v1/admin`` (None: disabled).
        config: server settings.
        clock: wall clock (tests inject a fake one).
    """

    def __init__(
        self,
        storage: Storage,
        model: dict[str, Any] | None = None,
        enroll_keys: EnrollKeys | None = None,
        admin_token: str | None = None,
        config: ServerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.config = config or ServerConfig()
        if model is not None:
            initialise(storage, model, clock)
        self.model = stored_model(storage)
        self.vector_length = int(self.model["vector_length"])
        self.devices = DeviceRegistry(
            storage,
            enroll_keys,
            clock,
            token_ttl_s=self.config.token_ttl_s,
            token_refresh_s=self.config.token_refresh_s,
        )
        self.ledger = DeviceLedger()
        self.rounds = RoundEngine(storage, self.vector_length, self.config, clock)
        self.admin_digest = hashlib.sha256(admin_token.encode()).digest() if admin_token else None
        self.started_at = clock()

    # ------------------------------------------------------------------ head
    def head(self, since: int | None = None) -> dict[str, Any]:
        """The current ``global_bias`` unless the device already has this version,
        with the bundle it belongs to (``model_id``, ``model_version``).

        The whole vector (float32 little-endian, base64) is sent when it changed: it
        is ``4 * n`` bytes — small next to the bundle — and exact, where a float delta
        would accumulate rounding on the device.
        """
        with self.storage.read() as tx:
            head = tx.latest_head()
        if head is None:
            raise errors.not_found("no head published yet")
        bundle = head_bundle(head.metadata, self.model)
        out: dict[str, Any] = {
            "version": head.version,
            "changed": since is None or since != head.version,
            **bundle,  # model_id, model_version: the bundle the head belongs to
            "length": int(head.global_bias.size),
            "metadata": {**head.metadata, **bundle},
        }
        if out["changed"]:
            raw = np.ascontiguousarray(head.global_bias, dtype="<f4").tobytes()
            out["dtype"] = "float32-le"
            out["global_bias"] = base64.b64encode(raw).decode("ascii")
            out["sha256"] = hashlib.sha256(raw).hexdigest()
        return out

    def candidate(self, round_id: int) -> dict[str, Any]:
        """The candidate head of training round ``round_id`` (what an evaluation round's
        devices score against the current head), encoded like :meth:`head`."""
        with self.storage.read() as tx:
            cand = tx.get_candidate(round_id)
        if cand is None:
            raise errors.not_found(f"round {round_id} has no candidate head")
        raw = np.ascontiguousarray(cand.global_bias, dtype="<f4").tobytes()
        return {
            "round": cand.round_id,
            "base_version": cand.base_version,
            "state": cand.state,
            "length": int(cand.global_bias.size),
            "dtype": "float32-le",
            "global_bias": base64.b64encode(raw).decode("ascii"),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }

    # ------------------------------------------------------------------ status
    def round_summary(self, rnd: Round) -> dict[str, Any]:
        """Public facts about a round (no secrets, no per-device data)."""
        params = round_params(rnd)
        with self.storage.read() as tx:
            counts = {p: tx.count_messages(rnd.round_id, p) for p in PHASES}
        return {
            "round": rnd.round_id,
            "name": params.round_id,
            "state": rnd.state,
            "base_version": rnd.base_version,
            "opened_at": rnd.opened_at,
            "deadline": rnd.deadline,
            "phase_deadline": rnd.phase_deadline,
            "closed_at": rnd.closed_at,
            "result_version": rnd.result_version,
            "failure": rnd.failure,
            "culprits": rnd.info.get("culprits", {}),
            "misbehaving": rnd.info.get("misbehaving", {}),
            "cohort_target": int(rnd.params.get("expected_cohort", params.cohort_target)),
            "min_cohort": params.min_cohort,
            "max_cohort": params.cohort_target,
            "selected": rnd.params.get("selected"),
            "cap_tail": rnd.params.get("cap_tail", 0.0),
            "neighbour_degree": params.neighbour_degree,
            "threshold": params.threshold,
            "clip": params.clip,
            "noise_multiplier": params.noise_multiplier,
            "sampling_rate": rnd.params.get("sampling_rate"),
            "delta": rnd.params.get("delta"),
            "target_epsilon": rnd.params.get("target_epsilon"),
            "messages": counts,
        }

    def status(self, ledger: bool = False) -> dict[str, Any]:
        """Head version, the current (or last) round, (ε, δ) spent, rounds done; with
        ``ledger`` also the per-device privacy ledger's summary (``device_privacy``:
        one accountant run per distinct round history, so not on the public route)."""
        with self.storage.read() as tx:
            head = tx.latest_head()
            rnd = tx.active_round() or tx.latest_round()
            done = tx.count_rounds(DONE)
            failed = tx.count_rounds(FAILED)
            devices = tx.count_devices()
            pending = tx.pending_candidate()
            decided = tx.latest_decided_candidate()
            report = self.ledger.report(tx) if ledger else None
        out = {
            "service": "edgerec-coordinator",
            "edgerec": __version__,
            "wire_version": wire.WIRE,
            "model": self.model,
            "head_version": head.version if head else None,
            "head_created_at": head.created_at if head else None,
            "round": self.round_summary(rnd) if rnd else None,
            "rounds_done": done,
            "rounds_failed": failed,
            "privacy": self.rounds.privacy(),
            "federated_evaluation": self.config.evaluation is not None,
            "candidate": None
            if pending is None
            else {
                "round": pending.round_id,
                "base_version": pending.base_version,
                "created_at": pending.created_at,
            },
            "last_evaluation": None
            if decided is None
            else {
                "candidate_round": decided.round_id,
                "state": decided.state,
                **(decided.evaluation or {}),
            },
            "epsilon_ceiling": self.config.epsilon_ceiling,
            "devices": devices,
            "time": self.clock(),
        }
        if report is not None:
            out["device_privacy"] = ledger_summary(report)
        return out

    # ------------------------------------------------------------------ fleet
    def device_privacy(self, device_id: str) -> dict[str, Any]:
        """ε spent by one device across the published rounds it took part in."""
        with self.storage.read() as tx:
            report = self.ledger.report(tx, device_id)
        return report.get(device_id, {"epsilon": 0.0, "delta": None, "rounds": 0, "round_ids": []})

    def device_info(self, device_id: str) -> dict[str, Any]:
        """A device's lifecycle facts and its privacy ledger (admin)."""
        with self.storage.read() as tx:
            device = tx.get_device(device_id)
            report = self.ledger.report(tx, device_id) if device else {}
        if device is None:
            raise errors.not_found(f"no device {device_id}")
        empty = {"epsilon": 0.0, "delta": None, "rounds": 0, "round_ids": []}
        return {**self.devices.device_summary(device), "privacy": report.get(device_id, empty)}

    def list_devices(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Every device (oldest first) with its lifecycle facts and privacy ledger."""
        with self.storage.read() as tx:
            devices = tx.list_devices(limit)
            report = self.ledger.report(tx)
        empty = {"epsilon": 0.0, "delta": None, "rounds": 0, "round_ids": []}
        return [
            {**self.devices.device_summary(d), "privacy": report.get(d.device_id, empty)}
            for d in devices
        ]

    def list_rounds(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.storage.read() as tx:
            rounds = tx.list_rounds(limit)
        return [self.round_summary(r) for r in rounds]

    def check_admin(self, authorization: str | None) -> None:
        """401/403 unless the header carries the admin token."""
        from .security import check_admin

        if self.admin_digest is None:
            raise errors.forbidden(
                "the admin API is disabled (start the server with --admin-token-file)"
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not check_admin(token.strip(), self.admin_digest):
            raise errors.unauthenticated("admin token required")

    def warm_up(self) -> None:
        """Import the privacy accountant (scipy: seconds) before the first round needs it,
        so no request waits for it while holding the round lock."""
        from edgerec.federated.accountant import compute_epsilon

        compute_epsilon(1.0, 0.01, 1, 1e-5)

    def close(self) -> None:
        self.storage.close()
