"""A minimal round-robin load balancer for tests: an httpx transport over several ports.

Each request goes to the next coordinator process in turn; a process that refuses the
connection (it was killed) is skipped, as a load balancer's health check would. A
request that reached a process which then died fails like any network error.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import httpx


class RoundRobin(httpx.BaseTransport):
    """Spread requests for ``http://lb`` over ``http://127.0.0.1:<port>`` backends.

    Args:
        ports: the coordinator processes' ports.
        inner: the transport that does the real HTTP (default: a pooled one).
    """

    def __init__(self, ports: list[int], inner: Any = None) -> None:
        self.ports = list(ports)
        self.inner = inner or httpx.HTTPTransport(limits=httpx.Limits(max_connections=64))
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.sent: dict[int, int] = {p: 0 for p in self.ports}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        last: Exception | None = None
        for _ in range(len(self.ports)):
            with self._lock:
                port = self.ports[next(self._next) % len(self.ports)]
            request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
            try:
                response = self.inner.handle_request(request)
            except httpx.ConnectError as exc:  # that process is down: try the next
                last = exc
                continue
            with self._lock:
                self.sent[port] += 1
            return response
        assert last is not None
        raise last

    def close(self) -> None:
        self.inner.close()
