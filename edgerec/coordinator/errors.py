"""Errors of the coordinator service, each with its HTTP status and a stable code.

:class:`ApiError` is raised by the service layer (which knows nothing of HTTP
frameworks) and turned into ``{"error": code, "detail": text, ...}`` by the app.
"""

from __future__ import annotations

from typing import Any

from edgerec.errors import EdgerecError
from edgerec.federated import wire


class ApiError(EdgerecError):
    """A request the coordinator refuses.

    Args:
        status: HTTP status code.
        code: stable machine-readable code (see :mod:`edgerec.federated.wire`).
        detail: what was wrong and what to do, for humans.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
        extra: more JSON fields of the error body (e.g. the round ``state``).
    """

    exit_code = 2

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def unauthenticated(detail: str = "missing or invalid bearer token") -> ApiError:
    return ApiError(
        401, wire.E_UNAUTHENTICATED, detail, headers={"WWW-Authenticate": 'Bearer realm="edgerec"'}
    )


def unauthenticated_as(code: str, detail: str) -> ApiError:
    """A 401 with a more specific code than ``unauthenticated`` (e.g. ``token_expired``)."""
    return ApiError(401, code, detail, headers={"WWW-Authenticate": 'Bearer realm="edgerec"'})


def forbidden(detail: str, code: str = wire.E_FORBIDDEN) -> ApiError:
    return ApiError(403, code, detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, wire.E_NOT_FOUND, detail)


def conflict(detail: str, code: str = wire.E_CONFLICT, **extra: Any) -> ApiError:
    return ApiError(409, code, detail, **extra)


def invalid(detail: str, **extra: Any) -> ApiError:
    return ApiError(422, wire.E_INVALID, detail, **extra)
