"""HTTP between a device and the coordinator: JSON requests with the device's token.

``httpx`` when installed (or when the caller hands in an ``httpx`` transport, e.g. one
that calls the coordinator app in-process), otherwise the standard library's
``urllib`` so that a device needs no extra dependency. ``httpx`` is imported only when
it is used.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from edgerec.errors import InputError

from .sync_outcome import SyncError

__all__ = ["CoordinatorSession", "Response", "open_http", "token_device_id"]

#: the ``http=`` choices of :func:`open_http`
HTTP_CHOICES = ("auto", "httpx", "urllib")


class Response(NamedTuple):
    """One HTTP answer: status, headers and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise SyncError(f"coordinator answered {self.status} with non-JSON") from None

    def error_code(self) -> str:
        """The ``error`` code of a JSON error body ("" when there is none)."""
        try:
            return str(json.loads(self.body).get("error", ""))
        except (ValueError, AttributeError):
            return ""

    def error_detail(self) -> str:
        """The ``detail`` of a JSON error body, else the start of the raw body."""
        try:
            return str(json.loads(self.body).get("detail", ""))[:300]
        except (ValueError, AttributeError):
            return self.body[:200].decode("utf-8", "replace")


class Http(Protocol):
    """What the session needs from an HTTP library."""

    #: the exceptions that mean "the network failed" (not an HTTP error status)
    errors: tuple[type[BaseException], ...]

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Response: ...

    def close(self) -> None: ...


class HttpxHttp:
    """HTTP via ``httpx`` (sockets, or an in-process transport)."""

    def __init__(self, base_url: str, transport: Any, verify: bool | str, timeout: float):
        import httpx

        tls: Any = verify
        if isinstance(verify, str):  # a CA bundle path
            tls = ssl.create_default_context(cafile=verify)
        self.client = httpx.Client(
            base_url=base_url, transport=transport, verify=tls, timeout=timeout
        )
        self.errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        r = self.client.request(method, path, headers=headers, content=body)
        return Response(r.status_code, r.headers, r.content)

    def close(self) -> None:
        self.client.close()


class UrllibHttp:
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
    ) -> Response:
        req = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:
                return Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers or {}), exc.read())

    def close(self) -> None:
        pass


def open_http(base_url: str, http: str, transport: Any, verify: bool | str, timeout: float) -> Http:
    """The HTTP library ``http`` names: ``"httpx"``, ``"urllib"``, or ``"auto"`` (httpx
    if installed). An ``httpx`` ``transport`` implies httpx."""
    if http not in HTTP_CHOICES:
        raise InputError(f"http must be 'auto', 'httpx' or 'urllib' (got {http!r})")
    if transport is not None or http == "httpx":
        return HttpxHttp(base_url, transport, verify, timeout)
    if http == "auto":
        try:
            return HttpxHttp(base_url, None, verify, timeout)
        except ImportError:
            pass
    return UrllibHttp(base_url, verify, timeout)


def token_device_id(token: str) -> str | None:
    """The device id a token names (its prefix before the first dot)."""
    head, dot, _ = token.partition(".")
    return head if dot else None


class CoordinatorSession:
    """JSON requests to the coordinator as one device (its id and bearer token).

    Counts the bytes of every exchange (method, path, headers and body sent; body
    received), so a caller can report what a sync cost.
    """

    def __init__(self, http: Http, device_id: str | None, token: str | None) -> None:
        self.http = http
        self.device_id = device_id
        self.token = token
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def network_errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions of a failed network exchange."""
        return self.http.errors

    def call(self, method: str, path: str, payload: Any = None, auth: bool = True) -> Response:
        """Send ``payload`` (compact JSON) and return the answer, whatever its status."""
        headers = {"accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers["content-type"] = "application/json"
        if auth:
            if not self.token:
                raise SyncError("no device token (enroll first)")
            headers["authorization"] = f"Bearer {self.token}"
        r = self.http.request(method, path, headers, body)
        self.bytes_sent += (
            len(method)
            + len(path)
            + sum(len(k) + len(v) + 4 for k, v in headers.items())
            + len(body or b"")
        )
        self.bytes_received += len(r.body)
        return r

    def require_id(self) -> str:
        """This device's id; a :class:`SyncError` before enrollment."""
        if not self.device_id:
            raise SyncError("no device id (enroll first)")
        return self.device_id

    def close(self) -> None:
        self.http.close()
