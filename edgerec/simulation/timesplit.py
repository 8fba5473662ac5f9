"""Time-based split for the federated simulation (``edgerec simulate-federated``).

One global cut-off time ``T`` splits an interaction log in two::

    events with t <  T  -> the cloud: teacher + student are trained on them (the shipped model)
    events with t >= T  -> only on the devices (never centralised in the federated rows)

A **device** is a user with at least ``min_post`` events at or after ``T``. Its on-device
history is everything it did, oldest first (ties keep file order), *except* its last
event, which is the held-out **test** interaction (evaluation: full ranking of that
item). The device's **training examples** are the next-item positions of its history
whose target happened after ``T`` (the pre-cut-off part only serves as context), so
the shipped model never saw any of them, and the held-out test event is never one.

:func:`encode_devices` maps raw ids to the bundle's vocabulary (items first seen after
``T`` are unknown to the shipped model: skipped in histories, and a device whose test
item is unknown is not evaluated — it cannot be ranked by any row).

Pure numpy; no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError
from edgerec.vocab import Vocab

__all__ = ["Device", "DeviceArrays", "TimeSplit", "encode_devices", "time_split"]


@dataclass(frozen=True)
class Device:
    """One simulated device: a user's raw, time-ordered events.

    Attributes:
        user_id: the raw user id.
        items: raw item ids, oldest first (the last one is the test interaction).
        timestamps: matching event times.
        n_pre: how many of the first events happened before the cut-off.
    """

    user_id: str
    items: tuple[str, ...]
    timestamps: tuple[int, ...]
    n_pre: int

    @property
    def history(self) -> tuple[str, ...]:
        """What the device stores and trains on: every event but the test one."""
        return self.items[:-1]

    @property
    def test_item(self) -> str:
        """The held-out last interaction."""
        return self.items[-1]

    @property
    def n_post_train(self) -> int:
        """Post-cut-off events in :attr:`history` (the device's new training targets)."""
        return len(self.items) - 1 - self.n_pre


@dataclass
class TimeSplit:
    """What :func:`time_split` returns.

    Attributes:
        cutoff: the cut-off time ``T`` (events with ``t >= T`` are post-cut-off).
        pre: the pre-cut-off log (what the teacher and the student are trained on).
        devices: the simulated devices, ordered like the log's users.
        stats: counts, JSON-able.
    """

    cutoff: int
    pre: Interactions
    devices: list[Device]
    stats: dict[str, Any] = field(default_factory=dict)


def time_split(
    log: Interactions,
    cutoff_quantile: float = 0.8,
    *,
    cutoff: int | None = None,
    min_post: int = 2,
) -> TimeSplit:
    """Split ``log`` at a global cut-off time (see the module docstring).

    Args:
        log: the raw interaction log.
        cutoff_quantile: ``T`` is this quantile of all timestamps (ignored with ``cutoff``).
        cutoff: an explicit cut-off time.
        min_post: a user becomes a device with at least this many post-cut-off events
            (2 = at least one to train on and the test interaction).

    Raises:
        InputError: bad arguments, or no user qualifies as a device.
    """
    n = len(log)
    if n == 0:
        raise InputError("time_split: the log is empty")
    if cutoff is None and not 0.0 < cutoff_quantile < 1.0:
        raise InputError(f"cutoff_quantile must be in (0, 1) (got {cutoff_quantile})")
    if min_post < 1:
        raise InputError(f"min_post must be >= 1 (got {min_post})")
    users = np.asarray(log.users, dtype=np.int64)
    items = np.asarray(log.items, dtype=np.int64)
    times = np.asarray(log.timestamps, dtype=np.int64)
    explicit = cutoff is not None
    if cutoff is None:
        cutoff = int(np.quantile(times, cutoff_quantile, method="higher"))
    post = times >= cutoff

    keep = ~post
    pre = Interactions(
        users=np.asarray(log.users)[keep],
        items=np.asarray(log.items)[keep],
        timestamps=times[keep],
        user_ids=log.user_ids,
        item_ids=log.item_ids,
        events=None if log.events is None else np.asarray(log.events)[keep],
        event_types=list(log.event_types),
        source=f"{log.source or 'log'} (t < {cutoff})",
    )

    order = np.lexsort((np.arange(n), times, users))  # per user, by time, ties: file order
    su, si, st, sp = users[order], items[order], times[order], post[order]
    bounds = np.flatnonzero(np.diff(su)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    devices: list[Device] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        n_post = int(sp[a:b].sum())
        if n_post < min_post:
            continue
        devices.append(
            Device(
                user_id=log.user_ids[int(su[a])],
                items=tuple(log.item_ids[i] for i in si[a:b].tolist()),
                timestamps=tuple(st[a:b].tolist()),
                n_pre=(b - a) - n_post,
            )
        )
    if not devices:
        raise InputError(
            f"time_split: no user has {min_post}+ events at or after the cut-off {cutoff}; "
            "lower cutoff_quantile or min_post"
        )
    stats = {
        "cutoff": int(cutoff),
        "cutoff_quantile": None if explicit else cutoff_quantile,
        "interactions": n,
        "pre_interactions": int(keep.sum()),
        "post_interactions": int(post.sum()),
        "users": int(np.unique(users).size),
        "devices": len(devices),
        "devices_new_users": sum(d.n_pre == 0 for d in devices),
        "device_post_train_events": sum(d.n_post_train for d in devices),
        "min_post": min_post,
    }
    return TimeSplit(int(cutoff), pre, devices, stats)


@dataclass(frozen=True)
class DeviceArrays:
    """A device's data in the bundle's item indices.

    Attributes:
        history: known items of :attr:`Device.history` (indices ``1..n``), oldest first.
        n_train: how many of the last positions of ``history`` are training examples
            (post-cut-off targets; ``0``: nothing new to learn from).
        target: index of the test item, ``0`` when the shipped model does not know it.
    """

    history: np.ndarray
    n_train: int
    target: int

    @property
    def trainable(self) -> bool:
        return self.n_train >= 1

    @property
    def evaluable(self) -> bool:
        return self.target >= 1 and self.history.size >= 1


def encode_devices(devices: list[Device], vocab: Vocab) -> list[DeviceArrays]:
    """Map each device to item indices of ``vocab`` (see :class:`DeviceArrays`)."""
    out = []
    for d in devices:
        pre = vocab.encode(d.history[: d.n_pre]).astype(np.int64)
        post = vocab.encode(d.history[d.n_pre :]).astype(np.int64)
        history = np.concatenate([pre, post])
        # a target needs a non-empty prefix: the first known event can never be one
        n_train = int(min(post.size, max(history.size - 1, 0)))
        out.append(DeviceArrays(history, n_train, int(vocab.get(d.test_item, 0) or 0)))
    return out
