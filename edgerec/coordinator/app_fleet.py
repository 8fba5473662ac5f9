"""The admin routes of the fleet lifecycle and the token-refresh header (see
:mod:`.devices`): list, inspect and revoke devices; create, list and revoke
enrollment keys. Every database call runs in the thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from edgerec.federated import wire

from . import schemas
from .bodies import openapi_body, parse_body
from .devices import key_summary
from .service import Coordinator

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="a device id")]
KeyId = Annotated[str, Path(min_length=1, max_length=64, description="an enrollment key id")]


def add_fleet_routes(
    app: FastAPI, coordinator: Coordinator, admin: Callable[[Request], Awaitable[None]]
) -> None:
    """Register the ``/v1/admin/devices`` and ``/v1/admin/enroll-keys`` routes;
    ``admin(request)`` checks the admin token (and its failure limit)."""
    errs = schemas.DEVICE_ERRORS

    @app.get("/v1/admin/devices", tags=["admin"], responses=errs)
    async def list_devices(
        request: Request, limit_: int = Query(1000, alias="limit", ge=1, le=100_000)
    ) -> list[dict[str, Any]]:
        """Enrolled devices with their token expiry, revocation and privacy ledger."""
        await admin(request)
        return await run_in_threadpool(coordinator.list_devices, limit_)

    @app.get("/v1/admin/devices/{device_id}", tags=["admin"], responses=errs)
    async def device_info(request: Request, device_id: DeviceId) -> dict[str, Any]:
        """One device: lifecycle facts and ε spent across the rounds it took part in."""
        await admin(request)
        return await run_in_threadpool(coordinator.device_info, device_id)

    @app.post("/v1/admin/devices/{device_id}/revoke", tags=["admin"], responses=errs)
    async def revoke_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
        """Revoke a device: its next request is refused (403 ``device_revoked``)."""
        await admin(request)
        return await run_in_threadpool(coordinator.devices.revoke_device, device_id)

    @app.post(
        "/v1/admin/enroll-keys",
        status_code=201,
        tags=["admin"],
        responses=errs,
        openapi_extra=openapi_body(schemas.NewEnrollKeyRequest),
    )
    async def create_enroll_key(request: Request) -> JSONResponse:
        """A new enrollment key with an optional quota; the key is shown only here."""
        await admin(request)
        body = await parse_body(request, schemas.NewEnrollKeyRequest)
        key, secret = await run_in_threadpool(
            coordinator.devices.create_enroll_key, body["label"], body["quota"]
        )
        return JSONResponse({**key_summary(key), "key": secret}, status_code=201)

    @app.get("/v1/admin/enroll-keys", tags=["admin"], responses=errs)
    async def list_enroll_keys(request: Request) -> list[dict[str, Any]]:
        """The database's enrollment keys (ids, quotas, use; never the keys)."""
        await admin(request)
        return await run_in_threadpool(coordinator.devices.list_enroll_keys)

    @app.post("/v1/admin/enroll-keys/{key_id}/revoke", tags=["admin"], responses=errs)
    async def revoke_enroll_key(
        request: Request,
        key_id: KeyId,
        revoke_devices: bool = Query(False, description="also revoke the devices it enrolled"),
    ) -> dict[str, Any]:
        """Revoke an enrollment key (and, optionally, every device enrolled with it)."""
        await admin(request)
        return await run_in_threadpool(
            coordinator.devices.revoke_enroll_key, key_id, revoke_devices
        )


class TokenRefreshHeader:
    """Adds ``X-Edgerec-Token-Refresh: <expiry>`` to an answer whose request carried a
    token in its refresh window (set by the route as ``request.state.token_refresh``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                expires = scope.get("state", {}).get("token_refresh")
                if expires is not None:
                    headers = list(message.get("headers", []))
                    value = f"{float(expires):.0f}".encode()
                    headers.append((wire.TOKEN_REFRESH_HEADER.encode(), value))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)
