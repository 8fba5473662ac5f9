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
#: default cap on one answer's body: far above the largest legitimate answer (a head of
#: a million items is about 5.3 MB of base64) and far below what would hurt a device
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: the token-refresh header (kept equal to ``edgerec.federated.wire.TOKEN_REFRESH_HEADER``)
TOKEN_REFRESH_HEADER = "x-edgerec-token-refresh"


def too_large(limit: int) -> SyncError:
    return SyncError(
        f"the coordinator's answer is larger than {limit} bytes; not reading it",
        status="bad_response",
    )


class Response(NamedTuple):
    """One HTTP answer: status, headers and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise SyncError(
                f"coordinator answered {self.status} with non-JSON", status="bad_response"
            ) from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (a :class:`SyncError` for anything else)."""
        data = self.json()
        if not isinstance(data, dict):
            raise SyncError(
                f"coordinator answered {self.status} with JSON that is not an object",
                status="bad_response",
            )
        return data

    def error_code(self) -> str:
        """The ``error`` code of a JSON error body ("" when there is none)."""
        try:
            return str(json.loads(self.body).get("error", ""))[:100]
        except (ValueError, AttributeError, RecursionError):
            return ""

    def error_detail(self) -> str:
        """The ``detail`` of a JSON error body, else the start of the raw body."""
        try:
            return str(json.loads(self.body).get("detail", ""))[:300]
        except (ValueError, AttributeError, RecursionError):
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

    def __init__(
        self,
        base_url: str,
        transport: Any,
        verify: bool | str,
        timeout: float,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        import httpx

        self.max_bytes = int(max_bytes)

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
        with self.client.stream(method, path, headers=headers, content=body) as r:
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise too_large(self.max_bytes)
                chunks.append(chunk)
            return Response(r.status_code, r.headers, b"".join(chunks))

    def close(self) -> None:
        self.client.close()


class UrllibHttp:
    """HTTP via the standard library (no extra dependency on the device)."""

    def __init__(
        self,
        base_url: str,
        verify: bool | str,
        timeout: float,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        self.max_bytes = int(max_bytes)
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
                return Response(r.status, _lower(r.headers), self._read(r))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, _lower(exc.headers or {}), self._read(exc))

    def _read(self, stream: Any) -> bytes:
        data = stream.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes)
        return data

    def close(self) -> None:
        pass


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case (as httpx's headers are looked up)."""
    return {str(k).lower(): str(v) for k, v in dict(headers).items()}


def open_http(
    base_url: str,
    http: str,
    transport: Any,
    verify: bool | str,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Http:
    """The HTTP library ``http`` names: ``"httpx"``, ``"urllib"``, or ``"auto"`` (httpx
    if installed). An ``httpx`` ``transport`` implies httpx. Answers larger than
    ``max_bytes`` are not read (a :class:`SyncError`)."""
    if http not in HTTP_CHOICES:
        raise InputError(f"http must be 'auto', 'httpx' or 'urllib' (got {http!r})")
    if transport is not None or http == "httpx":
        return HttpxHttp(base_url, transport, verify, timeout, max_bytes)
    if http == "auto":
        try:
            return HttpxHttp(base_url, None, verify, timeout, max_bytes)
        except ImportError:
            pass
    return UrllibHttp(base_url, verify, timeout, max_bytes)


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
        #: the coordinator asked this device to rotate its token (see ``SyncClient``)
        self.refresh_requested = False

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
        if auth and r.status < 300 and r.headers.get(TOKEN_REFRESH_HEADER):
            self.refresh_requested = True
        return r

    def require_id(self) -> str:
        """This device's id; a :class:`SyncError` before enrollment."""
        if not self.device_id:
            raise SyncError("no device id (enroll first)")
        return self.device_id

    def close(self) -> None:
        self.http.close()
