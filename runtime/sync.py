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
   runtime's additive ``global_bias``;
3. if a round is open and this device is selected, run the SecAgg+ phases that are
   due: advertise keys, send encrypted shares, train locally on the device's history
   (:class:`~edgerec.federated.local.LocalTrainer`), clip + noise + fixed point
   (:func:`~edgerec.federated.dp.privatize`), mask and upload, answer the unmask
   request.

Before anything leaves the device the per-round secrets (:class:`SecAggClient` state)
are written to ``state_dir`` (atomically, mode 0600), so an app killed mid-round
resumes where it stopped and a retried message is byte-identical (the coordinator
answers it idempotently). **Nothing sent contains item ids or events**: only the
enrollment key, the bearer token, public keys, AES-GCM ciphertexts, the masked uint32
vector and Shamir shares.

HTTP: ``httpx`` when installed (and for in-process tests via :func:`asgi_transport`),
otherwise the standard library's ``urllib``. No TensorFlow, no FastAPI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgerec.errors import EdgerecError, InputError
from edgerec.features import FeatureSpec
from edgerec.federated import wire
from edgerec.federated.dp import privatize
from edgerec.federated.errors import FederatedError
from edgerec.federated.local import LocalTrainer
from edgerec.federated.protocol import (
    KeysBundle,
    RoundParams,
    ShareDelivery,
    UnmaskRequest,
)
from edgerec.federated.secagg import SecAggClient

log = logging.getLogger(__name__)

__all__ = ["SyncClient", "SyncError", "SyncReport"]

#: LocalTrainer options a round may set (anything else in ``training`` is ignored)
TRAINER_OPTIONS = ("lr", "epochs", "batch_size", "l2", "max_examples")
FINAL = ("done", "failed")


class SyncError(EdgerecError):
    """The sync could not proceed (no credentials, token refused, bad server answer)."""


# ============================================================================== HTTP
class _Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise SyncError(f"coordinator answered {self.status} with non-JSON") from None


class _HttpxHttp:
    """HTTP via ``httpx`` (sockets, or an in-process transport)."""

    def __init__(self, base_url: str, transport: Any, verify: Any, timeout: float):
        import httpx

        if isinstance(verify, str):  # a CA bundle path
            verify = ssl.create_default_context(cafile=verify)
        self.client = httpx.Client(
            base_url=base_url, transport=transport, verify=verify, timeout=timeout
        )
        self.errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        r = self.client.request(method, path, headers=headers, content=body)
        return _Response(r.status_code, r.headers, r.content)

    def close(self) -> None:
        self.client.close()


class _UrllibHttp:
    """HTTP via the standard library (no extra dependency on the device)."""

    def __init__(self, base_url: str, verify: bool | str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if base_url.startswith("https"):
            if verify is False:
                self.context = ssl._create_unverified_context()  # noqa: S323 - explicit opt-out
            elif isinstance(verify, str):
                self.context = ssl.create_default_context(cafile=verify)
            else:
                self.context = ssl.create_default_context()
        self.errors: tuple[type[BaseException], ...] = (urllib.error.URLError, OSError)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        req = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:
                return _Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, dict(exc.headers or {}), exc.read())

    def close(self) -> None:
        pass


# ============================================================================== model
class _Model(NamedTuple):
    spec: FeatureSpec
    encode: Callable[[list[str]], np.ndarray]  # raw item ids -> indices (unknown skipped)
    score_fn: Callable[[np.ndarray], np.ndarray]
    store: Any
    target: Any  # where the global bias is applied
    owned: Any  # something to close (a Recommender this client opened)


def _adapt(model: Any) -> _Model:
    owned = None
    if isinstance(model, str | Path):
        from .recommender import Recommender

        model = owned = Recommender.open(model)
    spec = getattr(model, "spec", None)
    vocab = getattr(model, "vocab", None)
    if not isinstance(spec, FeatureSpec) or vocab is None:
        raise InputError(
            "SyncClient needs a bundle path, a Recommender, or an object with .spec "
            "(FeatureSpec), .vocab and .score_rows(rows) / .backend.run(rows)"
        )
    score = getattr(model, "score_rows", None)
    if score is None:
        backend = getattr(model, "backend", None)
        score = getattr(backend, "run", None)
    if score is None:
        raise InputError("the model has neither .score_rows(rows) nor .backend.run(rows)")
    return _Model(spec, vocab.encode, score, getattr(model, "store", None), model, owned)


# ============================================================================== report
@dataclass
class SyncReport:
    """What one :meth:`SyncClient.sync` did (JSON-able with :meth:`to_json`).

    Attributes:
        device_id: this device's id at the coordinator.
        head_version: the head version the device has after the call.
        head_updated: a newer head was downloaded and applied.
        round: the coordinator's current (or last) round number, if any.
        round_state: its state as last seen.
        selected: this device is in the round's sample.
        sent: the phases whose message this call sent (``advertise``...``unmask``).
        finished: nothing more for this device to do in that round.
        waiting: the round needs others first; call ``sync()`` again later.
        error: what went wrong, if anything (the state is kept for the next call).
        retry_after: seconds the coordinator asked to wait (rate limit).
        bytes_sent / bytes_received: HTTP bodies and headers of this call.
    """

    device_id: str | None = None
    head_version: int | None = None
    head_updated: bool = False
    round: int | None = None
    round_state: str | None = None
    selected: bool = False
    sent: list[str] = field(default_factory=list)
    finished: bool = False
    waiting: bool = False
    error: str | None = None
    retry_after: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    """Ends the phase loop of one sync (not an error by itself)."""

    def __init__(self, reason: str, finished: bool = False, error: str | None = None):
        super().__init__(reason)
        self.finished = finished
        self.error = error


# ============================================================================== client
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
        transport: an ``httpx`` transport (e.g. :func:`asgi_transport`); implies httpx.
        verify: TLS verification: True, False, or a CA bundle path.
        timeout: seconds per HTTP request.
        rng: noise generator (default: seeded from the OS; tests pass a seeded one).
        trainer_options: LocalTrainer defaults (the round's ``training`` overrides them).
        http: ``"auto"`` (httpx if installed), ``"httpx"`` or ``"urllib"``.
        durable: fsync state files before sending (default). ``False`` keeps the
            atomic renames but skips fsync: for simulations of many devices.
        min_noise_multiplier: the device's own privacy floor: it sits out rounds
            whose noise multiplier is lower (the coordinator cannot talk it into
            sending a less noised update).
        min_cohort: sit out rounds whose minimum cohort (the fewest devices the
            coordinator may unmask together) is smaller than this.
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
        min_noise_multiplier: float = 0.0,
        min_cohort: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = _adapt(model)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "rounds").mkdir(exist_ok=True)
        self.enroll_key = enroll_key
        self.store = store if store is not None else self.model.store
        self.user = user
        self.rng = rng
        self.trainer_options = dict(trainer_options or {})
        self.durable = bool(durable)
        self.min_noise_multiplier = float(min_noise_multiplier)
        self.min_cohort = int(min_cohort)
        self._warned_hook = False
        self._http = self._make_http(http, transport, verify, timeout)
        creds = self._read_json("credentials.json") or {}
        self.device_id: str | None = creds.get("device_id")
        self.token: str | None = token or creds.get("token")
        if token is not None:
            self.device_id = wire_device_id(token)
        head = self._read_json("head.json") or {}
        self.head_version: int | None = head.get("version")
        self.global_bias = self._load_bias(head)
        if self.global_bias is not None:
            self._apply_bias()
        self._report: SyncReport | None = None
        self._trainer: tuple[str, LocalTrainer] | None = None

    # ------------------------------------------------------------------ public
    def enroll(self) -> str:
        """Exchange the enrollment key for credentials (saved in ``state_dir``)."""
        if not self.enroll_key:
            raise SyncError("no device token and no enroll_key: cannot enroll")
        r = self._call("POST", "/v1/enroll", {"enroll_key": self.enroll_key}, auth=False)
        if r.status != 201:
            raise SyncError(f"enrollment refused ({r.status}): {_detail(r)}")
        data = r.json()
        self.device_id, self.token = str(data["device_id"]), str(data["token"])
        self._write_json(
            "credentials.json",
            {"base_url": self.base_url, "device_id": self.device_id, "token": self.token},
        )
        log.info("enrolled as %s", self.device_id)
        return self.device_id

    def sync(self, wait_s: float = 0.0, poll_s: float = 1.0) -> SyncReport:
        """Do what is due now (see the module docstring); never raises for protocol
        or network trouble — that goes into :attr:`SyncReport.error`.

        Args:
            wait_s: keep polling up to this many seconds while the current round waits
                for other devices (0: return at once).
            poll_s: seconds between polls.
        """
        self._report = rep = SyncReport()
        deadline = time.monotonic() + max(0.0, wait_s)
        try:
            if not self.token:
                self.enroll()
            rep.device_id = self.device_id
            self.fetch_head()
            while True:
                self._round_step(rep)
                if not rep.waiting or time.monotonic() + poll_s > deadline:
                    break
                time.sleep(poll_s)
                rep.waiting = False
                self.fetch_head()
        except _Stop as stop:  # e.g. rate limited while fetching the head
            rep.error = stop.error or str(stop)
        except SyncError as exc:
            rep.error = str(exc)
            log.warning("sync: %s", exc)
        except self._http.errors as exc:  # network
            rep.error = f"network: {exc}"
            log.warning("sync: network error: %s", exc)
        rep.head_version = self.head_version
        self._report = None
        return rep

    def fetch_head(self) -> bool:
        """Download the head if the coordinator has a newer one; True when applied."""
        path = "/v1/head" + ("" if self.head_version is None else f"?since={self.head_version}")
        r = self._call("GET", path)
        self._raise_for(r, "fetching the head")
        data = r.json()
        if not data.get("changed"):
            return False
        raw = base64.b64decode(data["global_bias"], validate=True)
        if hashlib.sha256(raw).hexdigest() != data.get("sha256"):
            raise SyncError("head download corrupted (sha256 mismatch)")
        bias = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if bias.shape != (self.model.spec.num_items,) or not np.all(np.isfinite(bias)):
            raise SyncError(
                f"head has {bias.size} values, the bundle has {self.model.spec.num_items} items"
            )
        version = int(data["version"])
        _atomic_write(self.state_dir / "global_bias.npy", _npy_bytes(bias), durable=self.durable)
        self._write_json(
            "head.json",
            {"version": version, "sha256": data["sha256"], "metadata": data.get("metadata", {})},
        )
        self.head_version, self.global_bias = version, bias
        self._apply_bias()
        if self._report is not None:
            self._report.head_updated = True
        log.info("applied head v%d", version)
        return True

    def close(self) -> None:
        """Close the HTTP client (and a Recommender this client opened)."""
        self._http.close()
        if self.model.owned is not None:
            self.model.owned.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ rounds
    def _round_step(self, rep: SyncReport) -> None:
        r = self._call("GET", "/v1/rounds/current")
        self._raise_for(r, "reading the round")
        view = r.json()
        self._forget_other_rounds(view.get("round"))
        if view.get("round") is None:
            return
        rep.round, rep.round_state = view["round"], view["state"]
        rep.selected = bool(view.get("selected"))
        if view["state"] in FINAL:
            self._forget(view["round"])
            rep.finished = rep.selected
            return
        if not rep.selected:
            return
        try:
            for _ in range(8):
                view = self._phase(view, rep)
                rep.round_state = view["state"]
        except FederatedError as exc:  # e.g. a neighbour's share failed authentication
            rep.finished = True
            rep.error = f"round {rep.round}: {type(exc).__name__}: {exc}"
            log.warning("sync: %s; not taking part further in this round", rep.error)
        except _Stop as stop:
            rep.finished = stop.finished
            rep.waiting = not stop.finished and stop.error is None
            if stop.error:
                rep.error = stop.error
            if stop.finished:
                log.debug("round %s: %s", view["round"], stop)

    def _phase(self, view: dict[str, Any], rep: SyncReport) -> dict[str, Any]:
        """Send the next due message of this device; returns the refreshed view."""
        rnd, state, sent = int(view["round"]), view["state"], view["sent"]
        if state in FINAL:
            self._forget(rnd)
            raise _Stop(f"round {state}", finished=True)
        params = RoundParams.from_wire(view["params"])
        client = self._load_client(rnd, params)
        cid = int(view["client_id"])
        if not sent["advertise"]:
            if state != "advertise":
                raise _Stop("missed the advertise phase", finished=True)
            if params.head_version != self.head_version:
                raise _Stop("round trains another head version", finished=True)
            if (
                params.noise_multiplier < self.min_noise_multiplier
                or params.min_cohort < self.min_cohort
            ):
                raise _Stop(
                    f"round below this device's privacy floor (z={params.noise_multiplier} < "
                    f"{self.min_noise_multiplier} or min_cohort={params.min_cohort} < "
                    f"{self.min_cohort}): sitting it out",
                    finished=True,
                )
            if client is None:
                client = SecAggClient(cid, params)
            msg = client.advertise()
            self._save_client(rnd, client)
            self._post(rnd, "advertise", msg.to_wire(), rep)
        elif client is None:
            raise _Stop(
                "this device lost its round secrets",
                finished=True,
                error=f"round {rnd}: secrets missing from {self.state_dir}",
            )
        elif not sent["share"]:
            self._due(state, "share")
            bundle = KeysBundle.from_wire(self._get(rnd, "keys"), params)
            msg = client.share_keys(bundle)
            self._save_client(rnd, client)
            self._post(rnd, "shares", msg.to_wire(), rep, phase="share")
        elif not sent["upload"]:
            self._due(state, "upload")
            saved = client.export_state().get("masked")
            if saved is None:
                delivery = ShareDelivery.from_wire(self._get(rnd, "shares"), params)
                x = self._private_update(params, view.get("training") or {})
                saved = client.masked_input(x, delivery).to_wire()
                self._save_client(rnd, client)
            self._post(rnd, "masked", saved, rep, phase="upload")
        elif not sent["unmask"]:
            self._due(state, "unmask")
            if not view.get("survivor"):
                raise _Stop("not a survivor", finished=True)
            request = UnmaskRequest.from_wire(self._get(rnd, "unmask"), params)
            msg = client.unmask(request)
            self._save_client(rnd, client)
            self._post(rnd, "unmask", msg.to_wire(), rep)
        else:
            raise _Stop("all messages sent; waiting for the result")
        r = self._call("GET", f"/v1/rounds/{rnd}")
        self._raise_for(r, "reading the round")
        return r.json()

    @staticmethod
    def _due(state: str, phase: str) -> None:
        order = wire.DEVICE_PHASES
        if order.index(state) < order.index(phase):
            raise _Stop(f"waiting for the {phase} phase")
        if state != phase:
            raise _Stop(f"missed the {phase} phase (round is in {state})", finished=True)

    def _private_update(self, params: RoundParams, training: Mapping[str, Any]) -> np.ndarray:
        """Train on the local history, then clip, noise and encode (uint32)."""
        opts = {**self.trainer_options}
        opts.update({k: training[k] for k in TRAINER_OPTIONS if k in training})
        key = json.dumps(opts, sort_keys=True, default=str)
        if self._trainer is None or self._trainer[0] != key:
            # kept across rounds: it caches the model's scores of this device's examples
            # (the model does not change between rounds, only the additive head)
            self._trainer = (key, LocalTrainer(self.model.spec, self.model.score_fn, **opts))
        trainer = self._trainer[1]
        # the last max_examples positions are the examples; the history_len events
        # before them are the first example's full input window
        history = self._history(trainer.max_examples + self.model.spec.history_len)
        bias = (
            self.global_bias
            if self.global_bias is not None
            else np.zeros(self.model.spec.num_items, np.float32)
        )
        delta = trainer.train_global(history, bias)
        update = privatize(delta, params, self.rng)
        log.info(
            "round %s: trained on %d items, |delta|=%.4g%s",
            params.round_id,
            history.size,
            update.norm,
            " (clipped)" if update.clipped else "",
        )
        return update.values

    def _history(self, limit: int) -> np.ndarray:
        store = self.store
        if store is None:
            return np.zeros(0, np.int64)
        user = self.user
        if user is None:
            users = store.users()
            if len(users) > 1:
                raise SyncError(
                    f"the history store has {len(users)} users; pass SyncClient(user=...)"
                )
            if not users:
                return np.zeros(0, np.int64)
            user = users[0]
        events = store.history(user, limit=limit)
        return np.asarray(self.model.encode([e.item for e in events]), np.int64)

    # ------------------------------------------------------------------ HTTP helpers
    def _make_http(self, http: str, transport: Any, verify: bool | str, timeout: float):
        if http not in ("auto", "httpx", "urllib"):
            raise InputError(f"http must be 'auto', 'httpx' or 'urllib' (got {http!r})")
        if transport is not None or http == "httpx":
            return _HttpxHttp(self.base_url, transport, verify, timeout)
        if http == "auto":
            try:
                return _HttpxHttp(self.base_url, None, verify, timeout)
            except ImportError:
                pass
        return _UrllibHttp(self.base_url, verify, timeout)

    def _call(self, method: str, path: str, payload: Any = None, auth: bool = True) -> _Response:
        headers = {"accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
        if auth:
            if not self.token:
                raise SyncError("no device token (enroll first)")
            headers["authorization"] = f"Bearer {self.token}"
        r = self._http.request(method, path, headers, body)
        if self._report is not None:
            self._report.bytes_sent += (
                len(method)
                + len(path)
                + sum(len(k) + len(v) + 4 for k, v in headers.items())
                + len(body or b"")
            )
            self._report.bytes_received += len(r.body)
        return r

    def _get(self, rnd: int, what: str) -> Any:
        r = self._call("GET", wire.round_path(rnd, self._require_id(), what))
        self._raise_for(r, f"GET {what}")
        return r.json()

    def _post(
        self, rnd: int, what: str, payload: dict, rep: SyncReport, phase: str | None = None
    ) -> None:
        r = self._call("POST", wire.round_path(rnd, self._require_id(), what), payload)
        self._raise_for(r, f"POST {what}")
        rep.sent.append(phase or what)

    def _raise_for(self, r: _Response, what: str) -> None:
        if r.status < 300:
            return
        code = _code(r)
        if r.status == 401:
            raise SyncError(f"{what}: the coordinator refused this device's token ({_detail(r)})")
        if r.status == 429:
            if self._report is not None:
                self._report.retry_after = float(r.headers.get("retry-after", 1) or 1)
            raise _Stop(f"{what}: rate limited", error=f"{what}: rate limited")
        if r.status == 409 and code in wire.RETRY_LATER:
            raise _Stop(f"{what}: {_detail(r)}")
        if r.status == 410 or (
            r.status == 403 and code in (wire.E_NOT_SELECTED, wire.E_NOT_PARTICIPANT)
        ):
            raise _Stop(f"{what}: {_detail(r)}", finished=True)
        if r.status == 409 and code in (wire.E_ROUND_FULL, wire.E_PHASE_CLOSED):
            raise _Stop(f"{what}: {_detail(r)}", finished=True)
        raise _Stop(
            f"{what}: {r.status}",
            finished=r.status < 500,
            error=f"{what}: coordinator answered {r.status} {code}: {_detail(r)}",
        )

    def _require_id(self) -> str:
        if not self.device_id:
            raise SyncError("no device id (enroll first)")
        return self.device_id

    # ------------------------------------------------------------------ state files
    def _round_file(self, rnd: int) -> Path:
        return self.state_dir / "rounds" / f"{int(rnd)}.json"

    def _load_client(self, rnd: int, params: RoundParams) -> SecAggClient | None:
        path = self._round_file(rnd)
        data = _read_json(path)
        if data is None:
            return None
        if data.get("name") != params.round_id:  # a different coordinator database
            path.unlink(missing_ok=True)
            return None
        try:
            return SecAggClient.from_state(data["client"])
        except (FederatedError, KeyError) as exc:
            raise SyncError(f"{path}: unreadable round state ({exc})") from None

    def _save_client(self, rnd: int, client: SecAggClient) -> None:
        state = {"round": rnd, "name": client.params.round_id, "client": client.export_state()}
        _atomic_write(
            self._round_file(rnd), json.dumps(state).encode(), mode=0o600, durable=self.durable
        )

    def _forget(self, rnd: int) -> None:
        self._round_file(rnd).unlink(missing_ok=True)

    def _forget_other_rounds(self, current: int | None) -> None:
        for path in (self.state_dir / "rounds").glob("*.json"):
            if current is None or path.stem != str(current):
                path.unlink(missing_ok=True)  # that round is over: drop its secrets

    def _read_json(self, name: str) -> dict | None:
        return _read_json(self.state_dir / name)

    def _write_json(self, name: str, data: dict) -> None:
        _atomic_write(
            self.state_dir / name, json.dumps(data).encode(), mode=0o600, durable=self.durable
        )

    def _load_bias(self, head: dict) -> np.ndarray | None:
        path = self.state_dir / "global_bias.npy"
        if not head or not path.is_file():
            return None
        bias = np.load(path).astype(np.float32)
        if hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest() != head.get("sha256"):
            log.warning("%s does not match head.json; fetching the head again", path)
            self.head_version = None
            return None
        return bias

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


# ============================================================================== helpers
def wire_device_id(token: str) -> str | None:
    """The device id a token names (its prefix before the first dot)."""
    head, dot, _ = token.partition(".")
    return head if dot else None


def _code(r: _Response) -> str:
    try:
        return str(json.loads(r.body).get("error", ""))
    except (ValueError, AttributeError):
        return ""


def _detail(r: _Response) -> str:
    try:
        return str(json.loads(r.body).get("detail", ""))[:300]
    except (ValueError, AttributeError):
        return r.body[:200].decode("utf-8", "replace")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SyncError(f"{path}: unreadable ({exc}); delete it to start over") from None


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never half
    (and, when ``durable``, the new one is on disk before this returns)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
