"""Group commit: concurrent device messages share one write transaction and one fsync.

A request thread queues its message and waits. One thread at a time becomes the
leader: it takes every queued message, hands the batch to the store function (which
writes them in one transaction and one durable commit), marks them done and wakes
the others. A message is answered only after the commit that contains it returned,
so many uploads cost one fsync instead of one each, with no weaker guarantee.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .storage import Device


@dataclass
class PendingMessage:
    """One device message waiting for the group commit, and then its outcome."""

    round_id: int
    device: Device
    phase: str
    body: dict[str, Any]
    digest: str
    response: dict[str, Any] | None = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    """The queue and the leader hand-over (see the module docstring).

    Args:
        store_batch: writes a batch in one transaction, setting each message's
            ``response`` or ``error`` and ``done``.
    """

    def __init__(self, store_batch: Callable[[list[PendingMessage]], None]) -> None:
        self._store_batch = store_batch
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[PendingMessage] = []
        self._leader = False

    def submit(self, message: PendingMessage) -> None:
        """Queue ``message`` and return once a commit processed it."""
        with self._cv:
            self._queue.append(message)
            while not message.done and self._leader:
                self._cv.wait()
            if message.done:
                return
            self._leader = True
            batch, self._queue = self._queue, []
        try:
            self._store_batch(batch)
        finally:
            with self._cv:
                for m in batch:
                    if not m.done:
                        m.error = m.error or RuntimeError("request was not processed")
                        m.done = True
                self._leader = False
                self._cv.notify_all()
