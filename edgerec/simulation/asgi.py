"""An in-process HTTP transport for driving the coordinator app without a socket.

Tests and simulations run :class:`~edgerec.runtime.sync.SyncClient` against
``edgerec.coordinator.app.create_app(...)`` in the same process; devices talk to a
real coordinator over the network and never need this, so it lives in the harness
rather than in the device package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["asgi_transport"]


def asgi_transport(app: Any) -> Any:
    """A synchronous ``httpx`` transport that calls an ASGI app in-process (no socket).

    Wraps ``httpx.ASGITransport`` (async-only): each request runs to completion on a
    private event loop driven by the calling thread (one request at a time; a lock
    serialises callers from several threads), so the synchronous
    :class:`~edgerec.runtime.sync.SyncClient` can talk to
    ``edgerec.coordinator.app.create_app(...)`` directly in tests and simulations. Call
    ``close()`` when done.
    """
    import asyncio
    import threading

    import httpx

    class _Bridge(httpx.BaseTransport):
        def __init__(self) -> None:
            self._inner = httpx.ASGITransport(app=app)
            self._loop = asyncio.new_event_loop()
            self._lock = threading.Lock()

        async def _send(self, request: httpx.Request) -> tuple[int, list, bytes]:
            response = await self._inner.handle_async_request(request)
            body = await response.aread()
            return response.status_code, list(response.headers.multi_items()), body

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            with self._lock:
                status, headers, body = self._loop.run_until_complete(self._send(inner))
            return httpx.Response(status, headers=headers, content=body, request=request)

        def close(self) -> None:
            with self._lock:
                if not self._loop.is_closed():
                    self._loop.run_until_complete(self._loop.shutdown_default_executor())
                    self._loop.close()

    return _Bridge()
