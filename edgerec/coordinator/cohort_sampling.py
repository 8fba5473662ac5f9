"""Which enrolled devices a round selects: Poisson sampling by an HMAC of the device id.

Each device enrolled before the round opened is selected independently with
probability ``q`` (the sampling rate the accountant assumes), decided by
``HMAC-SHA256(round secret, device id) / 2**64 < q``. The 32-byte secret is drawn
when the round opens and never leaves the coordinator, so neither devices nor
anyone else can predict or steer the draw, and the coordinator can recompute it for
any device at any time without storing the cohort.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from .storage import Device, Round


def is_sampled(seed: bytes, device_id: str, q: float) -> bool:
    """Whether the round with secret ``seed`` and sampling rate ``q`` selects ``device_id``."""
    if q >= 1.0:
        return True
    mac = hmac.new(seed, device_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") / 2.0**64 < q


def count_sampled(seed: bytes, device_ids: Iterable[str], q: float) -> int:
    """How many of ``device_ids`` the round selects."""
    return sum(is_sampled(seed, device_id, q) for device_id in device_ids)


def is_selected(rnd: Round, device: Device) -> bool:
    """Whether ``rnd`` selected ``device`` (never a device enrolled after it opened)."""
    if device.enrolled_at > rnd.opened_at:
        return False
    return is_sampled(rnd.seed, device.device_id, float(rnd.params["sampling_rate"]))
