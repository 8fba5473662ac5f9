"""ASGI middleware that refuses oversized request bodies before reading them.

A request whose ``Content-Length`` exceeds the limit is answered ``413`` without
receiving a single body byte. A body without a length (chunked) is counted while
it streams and the request is cut off with ``413`` as soon as it passes the
limit, so the server never buffers more than ``max_bytes`` (+ one chunk).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "too_large", "detail": f"request body too large: the limit is {limit} bytes"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Wrap ``app`` so that no request body larger than ``max_bytes`` gets in.

    Args:
        app: the ASGI application.
        max_bytes: the largest accepted body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > limit:
                    log.info(
                        "refused %s %s: content-length %s",
                        scope["method"],
                        scope["path"],
                        value.decode("latin-1"),
                    )
                    await _send_413(send, limit)
                    return
        seen = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal seen, responded
            if responded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    log.info(
                        "refused %s %s: streamed body over %d bytes",
                        scope["method"],
                        scope["path"],
                        limit,
                    )
                    responded = True
                    await _send_413(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not responded:  # after our 413, whatever the app says is dropped
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not responded:
                raise
