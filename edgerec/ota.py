"""The over-the-air channel document: what the release side publishes and a device reads.

A channel (``stable``, ``beta``...) is one small JSON target of the TUF repository,
``channels/<name>.json``, so TUF signs and versions it like any bundle::

    {"schema": 1, "channel": "stable",
     "release":  {"version": "2f3a...", "target": "bundles/2f3a....tar"},
     "baseline": {"version": "1ca9...", "target": "bundles/1ca9....tar"},
     "percent": 10.0, "paused": false}

``release`` is the version being rolled out, ``baseline`` the version the whole fleet
may fall back to (None for a first release). Which of the two a device installs is
:meth:`Channel.choose`: a device takes ``release`` when :func:`rollout_position` of
``(device_id, release version)`` falls below ``percent`` — stable per device, so raising
the share only adds devices — and keeps what it has while the channel is paused.

Both the release tooling (cloud) and the device updater import this module, so the two
sides agree on the schema and the share by construction (stdlib only).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from edgerec.errors import InputError

__all__ = ["CHANNEL_SCHEMA", "Channel", "Release", "channel_target", "rollout_position"]

CHANNEL_SCHEMA = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe path component (letters, digits, ``._-``), else InputError."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InputError(
            f"{what} {value!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return value


def channel_target(channel: str) -> str:
    """The TUF target path of a channel document."""
    return f"channels/{check_name(channel, 'channel')}.json"


def rollout_position(device_id: str, version: str) -> float:
    """Where a device stands in the rollout of ``version``: a number in ``[0, 100)``.

    The device takes the version when this is below the channel's ``percent``. It
    depends on the version too, so the first 10% of one release are not always the
    same devices.
    """
    digest = hashlib.sha256(f"{device_id}\x00{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


@dataclass(frozen=True)
class Release:
    """One bundle version and the TUF target (a tar archive) that holds it."""

    version: str
    target: str

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "target": self.target}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Release:
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object with version and target")
        version, target = data.get("version"), data.get("target")
        if not isinstance(version, str) or not isinstance(target, str):
            raise InputError(f"{where}: version and target must be strings")
        check_name(version, f"{where}.version")
        if not target.startswith("bundles/") or ".." in target:
            raise InputError(f"{where}.target {target!r} is not a bundles/ target")
        return cls(version, target)


@dataclass(frozen=True)
class Channel:
    """The state of one release channel (see the module docstring)."""

    name: str
    release: Release
    baseline: Release | None = None
    percent: float = 100.0
    paused: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "channel")
        p = self.percent
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 100.0:
            raise InputError(f"rollout percent must be a number in [0, 100] (got {p!r})")

    def choose(self, device_id: str, installed: str | None) -> Release:
        """The release this device should run, given the version it has installed.

        * not paused: ``release`` for devices inside the share, ``baseline`` for the
          others (``release`` when there is no baseline: nothing else to run);
        * paused: nobody moves — a device on ``release`` or ``baseline`` stays there,
          any other device (a fresh one included) gets ``baseline``.
        """
        fallback = self.baseline or self.release
        if self.paused:
            for rel in (self.release, self.baseline):
                if rel is not None and rel.version == installed:
                    return rel
            return fallback
        if rollout_position(device_id, self.release.version) < self.percent:
            return self.release
        return fallback

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CHANNEL_SCHEMA,
            "channel": self.name,
            "release": self.release.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
            "percent": float(self.percent),
            "paused": bool(self.paused),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "channel") -> Channel:
        """Parse a channel document; InputError naming the field when it is malformed."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object")
        if data.get("schema") != CHANNEL_SCHEMA:
            raise InputError(f"{where}: unknown schema {data.get('schema')!r}")
        name = data.get("channel")
        if not isinstance(name, str):
            raise InputError(f"{where}.channel must be a string")
        baseline = data.get("baseline")
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            raise InputError(f"{where}.paused must be true or false")
        return cls(
            name=name,
            release=Release.from_json(data.get("release"), f"{where}.release"),
            baseline=None if baseline is None else Release.from_json(baseline, f"{where}.baseline"),
            percent=data.get("percent", 100.0),
            paused=paused,
        )
