"""The coordinator's HTTP API (FastAPI; OpenAPI schema at ``/openapi.json``).

Order of checks on every device route: body size (middleware, before reading)
-> failed-authentication limit of the address and the claimed device id (429)
-> bearer token (401; 403 for a revoked device) -> the path's device id is the
caller's (403) -> rate limit (429) -> JSON (400) -> schema (422) -> round state
and protocol checks in the engine (403/404/409/410/422). A refused request
changes nothing in the database. Every database call and all crypto run in the
thread pool (never on the event loop, which only parses and routes); a message
that completes its phase schedules :meth:`RoundEngine.advance` as a background
task (after the answer is sent), and a ticker closes phases whose deadline
passed (and opens the next round with ``--auto-round``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import BackgroundTasks, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from edgerec import __version__
from edgerec.federated import wire

from . import schemas
from .app_fleet import TokenRefreshHeader, add_fleet_routes
from .bodies import openapi_body as _openapi_body
from .bodies import parse_body as _parse
from .config import RoundConfig
from .errors import ApiError
from .limits import BodySizeLimit
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .security import RateLimiter, parse_token
from .service import Coordinator
from .storage import Device

log = logging.getLogger(__name__)

RoundId = Annotated[int, Path(ge=1, le=2**62, description="round number")]
DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="your device id")]

DESCRIPTION = """\
Federated-learning coordinator of edgerec: devices enroll, fetch the current shared
head (`global_bias`), and take part in SecAgg+ rounds whose noised, securely
aggregated mean updates the head. Every device route needs
`Authorization: Bearer <device token>`; admin routes need the admin token.
See docs/federated-protocol.md.
"""


def create_app(coordinator: Coordinator, *, ticker: bool = True) -> FastAPI:
    """Build the ASGI app around a :class:`Coordinator`.

    Args:
        coordinator: the service.
        ticker: run the background deadline ticker (in the app's lifespan; in-process
            tests without a lifespan call ``coordinator.rounds.advance()`` themselves).
    """
    cfg = coordinator.config
    device_limiter = RateLimiter(cfg.device_rate, cfg.device_burst)
    anon_limiter = RateLimiter(cfg.anon_rate, cfg.anon_burst)
    status_limiter = RateLimiter(cfg.anon_rate * 10, cfg.anon_burst * 10)
    auth_fail_limiter = RateLimiter(cfg.auth_fail_rate, cfg.auth_fail_burst)
    engine = coordinator.rounds

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        await run_in_threadpool(coordinator.warm_up)
        if ticker:
            await run_in_threadpool(_safe_advance)  # finish what a crash interrupted
            task = asyncio.create_task(_tick_forever())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _safe_advance() -> None:
        try:
            engine.advance()
        except Exception:  # keep serving; the next tick retries
            log.exception("advancing the round failed")

    def _tick() -> None:
        _safe_advance()
        if cfg.auto_round is not None:
            try:
                engine.auto_open(cfg.auto_round, cfg.round_interval_s)
            except Exception:
                log.exception("opening the next round failed")

    async def _tick_forever() -> None:
        while True:
            await asyncio.sleep(cfg.tick_s)
            await run_in_threadpool(_tick)

    app = FastAPI(
        title="edgerec coordinator",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.coordinator = coordinator
    app.add_middleware(BodySizeLimit, max_bytes=cfg.body_limit(coordinator.vector_length))
    metrics = app.state.metrics = Metrics(coordinator)
    app.add_middleware(TokenRefreshHeader)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every answer

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.rejected(exc.code)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = jsonable_encoder(exc.errors())
        metrics.rejected(wire.E_INVALID)
        return JSONResponse(
            {"error": wire.E_INVALID, "detail": "invalid request parameters", "errors": errs},
            status_code=422,
        )

    def limit(key: str, limiter: RateLimiter) -> None:
        allowed, retry = limiter.allow(key)
        if not allowed:
            raise ApiError(
                429,
                wire.E_RATE_LIMITED,
                "too many requests; slow down",
                headers={"Retry-After": str(max(1, round(retry + 0.5)))},
            )

    def host_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def check_auth_failures(keys: list[str]) -> None:
        """429 while any of ``keys`` has used up its failed-authentication allowance."""
        retry = max(auth_fail_limiter.blocked(k) for k in keys)
        if retry > 0:
            raise ApiError(
                429,
                wire.E_RATE_LIMITED,
                "too many failed authentications; slow down",
                headers={"Retry-After": str(max(1, round(retry + 0.5)))},
            )

    def count_auth_failure(keys: list[str], exc: ApiError) -> None:
        if exc.status == 401:
            for k in keys:
                auth_fail_limiter.allow(k)

    async def device_of(request: Request, device_id: str | None = None) -> Device:
        header = request.headers.get("authorization")
        _, _, presented = (header or "").partition(" ")
        claimed = parse_token(presented.strip())
        keys = [f"addr:{host_of(request)}"] + ([f"dev:{claimed}"] if claimed else [])
        check_auth_failures(keys)
        try:
            auth = await run_in_threadpool(coordinator.devices.check, header)
        except ApiError as exc:
            count_auth_failure(keys, exc)
            raise
        if device_id is not None:
            coordinator.devices.check_owner(auth.device, device_id)
        limit(auth.device.device_id, device_limiter)
        if auth.refresh:
            request.state.token_refresh = auth.expires_at
        return auth.device

    async def admin(request: Request) -> None:
        keys = [f"admin:{host_of(request)}"]
        check_auth_failures(keys)
        try:
            coordinator.check_admin(request.headers.get("authorization"))
        except ApiError as exc:
            count_auth_failure(keys, exc)
            raise

    errs = schemas.DEVICE_ERRORS

    # ------------------------------------------------------------------ public
    @app.post(
        "/v1/enroll",
        status_code=201,
        tags=["devices"],
        responses={201: {"model": schemas.EnrollResponse}, **errs},
        openapi_extra=_openapi_body(schemas.EnrollRequest),
    )
    async def enroll(request: Request) -> JSONResponse:
        """Exchange an enrollment key for a device id and a bearer token."""
        host = host_of(request)
        limit(f"addr:{host}", anon_limiter)
        check_auth_failures([f"enroll:{host}"])
        body = await _parse(request, schemas.EnrollRequest)
        try:
            device_id, token = await run_in_threadpool(
                coordinator.devices.enroll, body["enroll_key"]
            )
        except ApiError as exc:
            count_auth_failure([f"enroll:{host}"], exc)
            raise
        return JSONResponse({"device_id": device_id, "token": token}, status_code=201)

    @app.post("/v1/token", tags=["devices"], responses=errs)
    async def rotate_token(request: Request) -> dict[str, Any]:
        """Issue a successor of this device's token. Both work until the device's first
        request with the new one; from then on only the new one does."""
        device = await device_of(request)
        request.state.token_refresh = None
        return await run_in_threadpool(coordinator.devices.rotate, device)

    @app.get("/v1/status", tags=["public"], responses={429: errs[429]})
    async def status(request: Request) -> dict[str, Any]:
        """Head version, round state, (ε, δ) spent and rounds done."""
        host = request.client.host if request.client else "unknown"
        limit(f"status:{host}", status_limiter)
        return await run_in_threadpool(coordinator.status)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (see :mod:`.metrics`): the same facts as /v1/status, counted."""
        return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ device
    @app.get("/v1/head", tags=["devices"], responses=errs)
    async def head(
        request: Request,
        since: int | None = Query(None, ge=0, le=2**62, description="head version I have"),
    ) -> dict[str, Any]:
        """The current ``global_bias`` (base64 float32) unless ``since`` is current."""
        await device_of(request)
        return await run_in_threadpool(coordinator.head, since)

    @app.get("/v1/candidates/{round_id}", tags=["devices"], responses=errs)
    async def candidate(request: Request, round_id: RoundId) -> dict[str, Any]:
        """The candidate head trained by round ``round_id`` (base64 float32): what an
        evaluation round's devices score against the current head."""
        await device_of(request)
        return await run_in_threadpool(coordinator.candidate, round_id)

    @app.get("/v1/rounds/current", tags=["devices"], responses=errs)
    async def current_round(request: Request) -> dict[str, Any]:
        """The running (or last) round: its parameters, my selection and my progress."""
        device = await device_of(request)
        return await run_in_threadpool(view_with_privacy, device, None)

    @app.get("/v1/rounds/{round_id}", tags=["devices"], responses=errs)
    async def get_round(request: Request, round_id: RoundId) -> dict[str, Any]:
        """One round as :func:`current_round` shows it."""
        device = await device_of(request)
        return await run_in_threadpool(view_with_privacy, device, round_id)

    def view_with_privacy(device: Device, round_id: int | None) -> dict[str, Any]:
        """The device's view of a round; once a round it took part in is published, with
        its own privacy ledger (``my_privacy``)."""
        view = engine.device_view(device, round_id)
        if view.get("state") == "done" and view.get("sent", {}).get("upload"):
            view["my_privacy"] = coordinator.device_privacy(device.device_id)
        return view

    def post_phase(path: str, phase: str, model: type[BaseModel], fn: Callable[..., Any]):
        @app.post(
            f"/v1/rounds/{{round_id}}/devices/{{device_id}}/{path}",
            tags=["rounds"],
            name=f"post_{path}",
            responses={200: {"model": schemas.Ack}, **errs},
            openapi_extra=_openapi_body(model),
            summary=f"{phase}: {model.__doc__.splitlines()[0] if model.__doc__ else ''}",
        )
        async def handler(
            request: Request, round_id: RoundId, device_id: DeviceId, background: BackgroundTasks
        ) -> dict[str, Any]:
            device = await device_of(request, device_id)
            body = await _parse(request, model)
            out = await run_in_threadpool(fn, round_id, device, body)
            if engine.take_due():  # this message may have completed its phase
                background.add_task(_safe_advance)
            return out

        return handler

    def get_phase(path: str, summary: str, fn: Callable[..., Any]):
        @app.get(
            f"/v1/rounds/{{round_id}}/devices/{{device_id}}/{path}",
            tags=["rounds"],
            name=f"get_{path}",
            responses=errs,
            summary=summary,
        )
        async def handler(
            request: Request, round_id: RoundId, device_id: DeviceId
        ) -> dict[str, Any]:
            device = await device_of(request, device_id)
            return await run_in_threadpool(fn, round_id, device)

        return handler

    post_phase("advertise", "phase 0", schemas.AdvertiseBody, engine.advertise)
    get_phase("keys", "phase 1: roster and my neighbours' public keys", engine.keys_for)
    post_phase("shares", "phase 1", schemas.SharesBody, engine.share)
    get_phase("shares", "phase 2: encrypted shares addressed to me", engine.delivery_for)
    post_phase("masked", "phase 2", schemas.MaskedBody, engine.upload)
    get_phase("unmask", "phase 3: survivors and dropouts", engine.unmask_request)
    post_phase("unmask", "phase 3", schemas.UnmaskBody, engine.unmask)

    # ------------------------------------------------------------------ admin
    @app.post(
        "/v1/admin/rounds",
        status_code=201,
        tags=["admin"],
        responses=errs,
        openapi_extra=_openapi_body(schemas.OpenRoundRequest),
    )
    async def open_round(request: Request) -> JSONResponse:
        """Open a round for the current head version (admin token)."""
        await admin(request)
        body = await _parse(request, schemas.OpenRoundRequest)
        try:
            cfg = RoundConfig.from_json(body)
        except ValueError as exc:
            raise ApiError(422, wire.E_INVALID, str(exc)) from None
        rnd = await run_in_threadpool(engine.open_round, cfg)
        summary = await run_in_threadpool(coordinator.round_summary, rnd)
        return JSONResponse(summary, status_code=201)

    @app.get("/v1/admin/rounds", tags=["admin"], responses=errs)
    async def list_rounds(
        request: Request, limit_: int = Query(50, alias="limit", ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        """Recent rounds, newest first (admin token)."""
        await admin(request)
        return await run_in_threadpool(coordinator.list_rounds, limit_)

    @app.post("/v1/admin/rounds/{round_id}/abort", tags=["admin"], responses=errs)
    async def abort_round(request: Request, round_id: RoundId) -> dict[str, Any]:
        """End a running round as failed; nothing is released (admin token)."""
        await admin(request)
        rnd = await run_in_threadpool(engine.abort_round, round_id)
        return await run_in_threadpool(coordinator.round_summary, rnd)

    @app.post("/v1/admin/tick", tags=["admin"], responses=errs)
    async def tick(request: Request) -> dict[str, Any]:
        """Close phases that are complete or past their deadline now (admin token)."""
        await admin(request)
        rnd = await run_in_threadpool(engine.advance)
        if rnd is None:
            return {"round": None}
        return await run_in_threadpool(coordinator.round_summary, rnd)

    add_fleet_routes(app, coordinator, admin)

    return app
