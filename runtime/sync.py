"""Device-side federated sync: ``SyncClient.sync()`` — safe to call at any time.

::

    from edgerec.runtime import Recommender
    from edgerec.runtime.sync import SyncClient

    rec = Recommender.open("bundles/ml100k", store="history.db")
    client = SyncClient("https://coord.example:8443", rec, "state/", enroll_key=KEY)
    report = client.sync()        # when idle / charging / on Wi-Fi: the app decides

One call does whatever is due, and returns quickly when nothing is:

1. enroll once (enrollment key -> device id + bearer token, kept in ``state_dir``);
2. fetch the shared head if the coordinator has a newer version and apply it to the
   runtime's additive ``global_bias`` — only when the head belongs to the bundle the
   device runs (:mod:`~edgerec.runtime.sync_bundle`); a device whose bundle the
   coordinator does not serve ignores its head and sits out its rounds (status
   ``bundle_mismatch``);
3. if a round is open and this device is selected, run the SecAgg+ phases that are
   due: advertise keys, send encrypted shares, train locally on the device's history
   (:class:`~edgerec.federated.local.LocalTrainer`), clip + noise + fixed point
   (:func:`~edgerec.federated.dp.privatize`), mask and upload, answer the unmask
   request.

**Safe by default.** The device refuses rounds below its privacy floors
(``min_noise_multiplier``, ``min_cohort``; defaults :data:`DEFAULT_MIN_NOISE_MULTIPLIER`
and :data:`DEFAULT_MIN_COHORT`) and says so in :attr:`SyncReport.declined`; it keeps a
privacy ledger (:mod:`~edgerec.runtime.sync_privacy`); it rotates its token when the
coordinator asks (the new token is saved atomically before it is first used, and the
old one keeps working until then, so a crash at any point leaves a working token);
and ``sync()`` never raises on anything the coordinator sends: every outcome is a
:class:`SyncReport` whose ``status`` is one word of :data:`STATUSES`.

Before anything leaves the device the per-round secrets (:class:`SecAggClient` state)
are written to ``state_dir`` (atomically, mode 0600), so an app killed mid-round
resumes where it stopped and a retried message is byte-identical (the coordinator
answers it idempotently). **Nothing sent contains item ids or events**: only the
enrollment key, the bearer token, public keys, AES-GCM ciphertexts, the masked uint32
vector and Shamir shares.

HTTP: ``httpx`` when installed (in-process tests and the simulation pass an in-process
transport such as ``edgerec.simulation.asgi.asgi_transport``), otherwise the standard
library's ``urllib``. No TensorFlow, no FastAPI.

:class:`SyncClient` wires together the parts, one module each:

* :mod:`~edgerec.runtime.sync_transport` — HTTP and the device's token;
* :mod:`~edgerec.runtime.sync_state` — the files in ``state_dir``;
* :mod:`~edgerec.runtime.sync_bundle` — which bundle a head belongs to;
* :mod:`~edgerec.runtime.sync_phases` — the round's phases;
* :mod:`~edgerec.runtime.sync_training` — local training and the private update;
* :mod:`~edgerec.runtime.sync_outcome` — :class:`SyncReport` and :class:`SyncError`.
"""

from __future__ import annotations

import binascii
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerec.errors import InputError
from edgerec.federated.errors import FederatedError

from .sync_bundle import bundle_of_answer, mismatch
from .sync_outcome import STATUSES, RoundStop, SyncError, SyncReport
from .sync_phases import RoundPhases, check_response
from .sync_privacy import PrivacyLedger
from .sync_state import DeviceState
from .sync_training import LocalUpdate, adapt_model, decode_bias
from .sync_transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CoordinatorSession,
    Response,
    open_http,
    token_device_id,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MIN_COHORT",
    "DEFAULT_MIN_NOISE_MULTIPLIER",
    "STATUSES",
    "SyncClient",
    "SyncError",
    "SyncReport",
]

#: the device's default privacy floors: it sits out rounds with less noise or a smaller
#: minimum cohort than these (the coordinator's default round has z = 1.0)
DEFAULT_MIN_NOISE_MULTIPLIER = 0.5
DEFAULT_MIN_COHORT = 5
#: what a malformed answer can raise while it is being read (turned into "bad_response")
_BAD_ANSWER = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
    binascii.Error,
    FederatedError,
)


class SyncClient:
    """One device's connection to a coordinator (see the module docstring).

    Args:
        base_url: the coordinator, e.g. ``https://coord:8443`` (``http://test`` in-process).
        model: a bundle path, a :class:`~edgerec.runtime.Recommender`, or an object with
            ``.spec``, ``.vocab`` and ``.score_rows(rows)`` (tests, simulations).
        state_dir: where credentials, the head and per-round secrets live.
        token: a device token issued earlier (else the one saved in ``state_dir``).
        enroll_key: enrollment key, used once when there are no credentials yet.
        store: a :class:`~edgerec.runtime.HistoryStore` (default: the model's store).
        user: whose history trains (default: the store's only user).
        transport: an ``httpx`` transport (e.g. ``edgerec.simulation.asgi.asgi_transport``);
                implies httpx.
        verify: TLS verification: True, False, or a CA bundle path.
        timeout: seconds per HTTP request.
        rng: noise generator (default: seeded from the OS; tests pass a seeded one).
        trainer_options: LocalTrainer defaults (the round's ``training`` overrides them).
        http: ``"auto"`` (httpx if installed), ``"httpx"`` or ``"urllib"``.
        durable: fsync state files before sending (default). ``False`` keeps the
            atomic renames but skips fsync: for simulations of many devices.
        min_noise_multiplier: the device's own privacy floor: it sits out rounds
            whose noise multiplier is lower (the coordinator cannot talk it into
            sending a less noised update). Default :data:`DEFAULT_MIN_NOISE_MULTIPLIER`.
        min_cohort: sit out rounds whose minimum cohort (the fewest devices the
            coordinator may unmask together) is smaller than this. Default
            :data:`DEFAULT_MIN_COHORT`.
        max_response_bytes: answers larger than this are not read (``bad_response``).
        updater: a :class:`~edgerec.runtime.update.BundleUpdater`: each ``sync()``
            first checks for a new bundle (the result is :attr:`last_update`; the app
            reopens ``updater.open_recommender()`` and builds a new client on it when
            it says ``installed``) and keeps every head it applies under the bundle
            version of the model it runs; a client built on a bundle whose head is not
            in ``state_dir`` starts from the head the updater kept for that version
            (zeros when there is none).

    Attributes:
        device_id, token: this device's credentials (None before enrollment).
        head_version, global_bias: the head the device holds (None before the first).
            It always belongs to ``bundle``: the head saved in ``state_dir`` for
            another bundle (the one run before an update) is not used.
        bundle: the identity (model id + version) of the bundle the model is.
        bundle_mismatch: why the coordinator's head was not used at the last check
            (it belongs to another bundle), or None.
        model: the adapted model (``.target`` is what the head is applied to).
        state_dir: the state folder.
    """

    def __init__(
        self,
        base_url: str,
        model: Any,
        state_dir: str | os.PathLike[str],
        token: str | None = None,
        enroll_key: str | None = None,
        *,
        store: Any = None,
        user: str | None = None,
        transport: Any = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        rng: np.random.Generator | None = None,
        trainer_options: Mapping[str, Any] | None = None,
        http: str = "auto",
        durable: bool = True,
        min_noise_multiplier: float = DEFAULT_MIN_NOISE_MULTIPLIER,
        min_cohort: int = DEFAULT_MIN_COHORT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        updater: Any = None,
    ) -> None:
        if not (
            isinstance(min_noise_multiplier, int | float)
            and math.isfinite(min_noise_multiplier)
            and min_noise_multiplier >= 0
        ):
            raise InputError(f"min_noise_multiplier must be >= 0 (got {min_noise_multiplier!r})")
        if isinstance(min_cohort, bool) or not isinstance(min_cohort, int) or min_cohort < 2:
            raise InputError(f"min_cohort must be an integer >= 2 (got {min_cohort!r})")
        self.updater = updater
        self.last_update: Any = None  # the updater's UpdateResult of the last sync()
        self.base_url = base_url.rstrip("/")
        self.model = adapt_model(model)
        self._state = DeviceState(state_dir, durable)
        self.state_dir = self._state.dir
        self.enroll_key = enroll_key
        self._update = LocalUpdate(
            self.model,
            store if store is not None else self.model.store,
            user,
            rng,
            trainer_options or {},
        )
        self._warned_hook = False
        http_client = open_http(self.base_url, http, transport, verify, timeout, max_response_bytes)
        device_id, saved_token = self._state.load_credentials()
        if token is not None:
            device_id = token_device_id(token)
        self._session = CoordinatorSession(http_client, device_id, token or saved_token)
        self.ledger = PrivacyLedger(self._state)
        self._rounds = RoundPhases(
            self._session,
            self._state,
            self._update,
            min_noise_multiplier,
            min_cohort,
            self.ledger,
        )
        self.bundle = self.model.bundle
        self.bundle_mismatch: str | None = None
        self.head_version, self.global_bias = self._state.load_head(self.bundle)
        if self.global_bias is None and updater is not None:
            self.head_version, self.global_bias = self._updater_head()
        if self.global_bias is not None:
            self._apply_bias()

    @property
    def device_id(self) -> str | None:
        return self._session.device_id

    @property
    def token(self) -> str | None:
        return self._session.token

    @property
    def store(self) -> Any:
        """The history store whose events train."""
        return self._update.store

    @property
    def user(self) -> str | None:
        """Whose history trains (None: the store's only user)."""
        return self._update.user

    # ------------------------------------------------------------------ public
    def enroll(self) -> str:
        """Exchange the enrollment key for credentials (saved in ``state_dir``)."""
        if not self.enroll_key:
            raise SyncError("no device token and no enroll_key: cannot enroll")
        r = self._call("POST", "/v1/enroll", {"enroll_key": self.enroll_key}, auth=False)
        if r.status == 429:
            check_response(r, "enrolling")
        if r.status != 201:
            raise SyncError(
                f"enrollment refused ({r.status} {r.error_code()}): {r.error_detail()}",
                status="enrollment_refused" if r.status in (401, 403) else "bad_response",
            )
        data = r.json_object()
        device_id, token = data.get("device_id"), data.get("token")
        if not isinstance(token, str) or token_device_id(token) != device_id:
            raise SyncError(
                "enrollment answer lacks a device id and a matching token", "bad_response"
            )
        self._session.device_id, self._session.token = device_id, token
        self._state.save_credentials(self.base_url, device_id, token)
        log.info("enrolled as %s", device_id)
        return device_id

    def sync(self, wait_s: float = 0.0, poll_s: float = 1.0) -> SyncReport:
        """Do what is due now (see the module docstring); never raises for protocol
        or network trouble — that goes into :attr:`SyncReport.error`.

        Args:
            wait_s: keep polling up to this many seconds while the current round waits
                for other devices (0: return at once).
            poll_s: seconds between polls.
        """
        rep = SyncReport()
        sent_before = self._session.bytes_sent
        received_before = self._session.bytes_received
        deadline = time.monotonic() + max(0.0, wait_s)
        if self.updater is not None:
            try:  # the updater reports trouble in its result; guard sync()'s promise anyway
                self.last_update = self.updater.update()
            except Exception as exc:  # noqa: BLE001 - sync() never raises
                log.warning("bundle update check failed: %s", exc)
                self.last_update = None
        try:
            if not self.token:
                if not self.enroll_key:
                    raise SyncError(
                        "no device token and no enroll_key: cannot enroll", "unauthenticated"
                    )
                self.enroll()
            rep.device_id = self.device_id
            if self.fetch_head():
                rep.head_updated = True
            if self._session.refresh_requested:
                rep.token_rotated = self.rotate_token()
            while self.bundle_mismatch is None:  # a head of another bundle: sit out
                self._rounds.step(rep, self.head_version, self.global_bias)
                if not rep.waiting or time.monotonic() + poll_s > deadline:
                    break
                time.sleep(poll_s)
                rep.waiting = False
                if self.fetch_head():
                    rep.head_updated = True
            if self.bundle_mismatch is not None:
                rep.bundle_mismatch = self.bundle_mismatch
                rep.waiting = False
                self._rounds.settle_ledger(None)  # rounds it uploaded to before an update
        except RoundStop as stop:  # e.g. rate limited while fetching the head
            if stop.retry_after is not None:
                rep.retry_after = stop.retry_after
            rep.error = stop.error or str(stop)
            rep.status = stop.status or ("rate_limited" if stop.retry_after else "refused")
        except SyncError as exc:
            rep.error = str(exc)
            rep.status = exc.status
            log.warning("sync: %s", exc)
        except self._session.network_errors as exc:  # network
            rep.error = f"network: {exc}"
            rep.status = "network"
            log.warning("sync: network error: %s", exc)
        except _BAD_ANSWER as exc:  # a malformed answer the checks above did not name
            rep.error = f"unusable answer from the coordinator ({type(exc).__name__}: {exc})"
            rep.status = "bad_response"
            log.warning("sync: %s", rep.error)
        except Exception as exc:  # never raise into the app; keep the traceback in the log
            rep.error = f"unexpected {type(exc).__name__}: {exc}"
            rep.status = "error"
            log.exception("sync failed unexpectedly")
        rep.head_version = self.head_version
        rep.bytes_sent = self._session.bytes_sent - sent_before
        rep.bytes_received = self._session.bytes_received - received_before
        try:
            rep.privacy_epsilon, rep.privacy_rounds = self.ledger.summary()
        except SyncError as exc:  # an unreadable ledger file
            log.warning("sync: %s", exc)
        if rep.status == "ok":
            rep.status = _status_of(rep)
        return rep

    def rotate_token(self) -> bool:
        """Ask for a successor token, save it, then use it (see the module docstring).

        The coordinator keeps accepting the old token until the new one is first used,
        so a lost answer or a crash before the save costs nothing: the next sync asks
        again. Returns True when the device switched; a failure is logged, not raised
        (the old token still works).
        """
        device_id = self._session.require_id()
        try:
            r = self._call("POST", "/v1/token")
            check_response(r, "rotating the token")
            data = r.json_object()
        except (RoundStop, SyncError) as exc:
            log.warning("token rotation postponed: %s", exc)
            return False
        token = data.get("token")
        if not isinstance(token, str) or token_device_id(token) != device_id:
            log.warning("token rotation postponed: the answer holds no token for %s", device_id)
            return False
        self._state.save_credentials(self.base_url, device_id, token)  # atomic, before use
        self._session.token = token
        self._session.refresh_requested = False
        log.info("rotated the device token (expires at %s)", data.get("expires_at"))
        return True

    def fetch_head(self) -> bool:
        """Download the head if the coordinator has a newer one; True when applied.

        A head of another bundle than the model's (:mod:`~edgerec.runtime.sync_bundle`)
        is neither applied nor saved: :attr:`bundle_mismatch` says why.
        """
        path = "/v1/head" + ("" if self.head_version is None else f"?since={self.head_version}")
        r = self._call("GET", path)
        check_response(r, "fetching the head")
        data = r.json_object()
        reason = mismatch(
            self.bundle, bundle_of_answer(data, "head answer"), "the coordinator's head"
        )
        if reason is not None and reason != self.bundle_mismatch:
            log.warning("sync: %s", reason)
        self.bundle_mismatch = reason
        if reason is not None:
            return False
        if not data.get("changed"):
            return False
        version = data.get("version")
        if type(version) is not int:
            raise SyncError("head answer lacks an integer version", "bad_response")
        bias = decode_bias(data, self.model.spec.num_items, "head answer")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            metadata = {}
        self._state.save_head(version, data["sha256"], metadata, bias, self.bundle)
        self.head_version, self.global_bias = version, bias
        self._apply_bias()
        slot = self._model_slot()
        if slot is not None:  # heads belong to their bundle version
            self.updater.save_head(version, bias, slot)
        log.info("applied head v%d of bundle %s", version, self.bundle)
        return True

    def close(self) -> None:
        """Close the HTTP client (and a Recommender this client opened)."""
        self._session.close()
        if self.model.owned is not None:
            self.model.owned.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _call(self, method: str, path: str, payload: Any = None, auth: bool = True) -> Response:
        """One JSON request as this device (the answer, whatever its status)."""
        return self._session.call(method, path, payload, auth)

    def _read_json(self, name: str) -> dict | None:
        """A JSON file of ``state_dir`` (None when absent)."""
        return self._state.read_json(name)

    def _model_slot(self) -> str | None:
        """The updater's bundle version (slot) the model was opened from; None without
        an updater or for a model that is not one of its slots."""
        root = getattr(getattr(self.model.target, "manifest", None), "root", None)
        slot_of = getattr(self.updater, "slot_of", None)
        if root is None or not callable(slot_of):
            return None
        return slot_of(root)

    def _updater_head(self) -> tuple[int | None, np.ndarray | None]:
        """The head the updater kept for the model's bundle version (None, None when
        there is none): where a client built after an update starts."""
        slot = self._model_slot()
        if slot is None:
            return None, None
        try:
            version, bias = self.updater.load_head(slot)
        except Exception as exc:  # noqa: BLE001 - an unreadable head: start from zeros
            log.warning("the head kept for bundle version %s is unreadable: %s", slot, exc)
            return None, None
        if bias is None or bias.shape != (self.model.spec.num_items,):
            return None, None
        log.info("starting from head v%s kept for bundle version %s", version, slot)
        return version, bias

    def _apply_bias(self) -> None:
        """Hand the head to the runtime: ``set_global_bias(bias, version=...)`` when the
        model has it, else its ``global_bias`` attribute if it declares one."""
        target = self.model.target
        setter = getattr(target, "set_global_bias", None)
        if callable(setter):
            setter(self.global_bias, version=self.head_version)
        elif hasattr(target, "global_bias"):
            target.global_bias = self.global_bias
        elif not self._warned_hook:
            self._warned_hook = True
            log.warning(
                "%s has no set_global_bias(); head v%s is kept in %s but not applied to its scores",
                type(target).__name__,
                self.head_version,
                self.state_dir,
            )


def _status_of(rep: SyncReport) -> str:
    """The status word of a sync that raised nothing."""
    if rep.retry_after is not None and rep.error:
        return "rate_limited"
    if rep.error:
        return "error"
    if rep.bundle_mismatch:
        return "bundle_mismatch"
    if rep.declined:
        return "declined"
    if rep.waiting:
        return "waiting"
    return "ok"
