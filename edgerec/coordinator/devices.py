"""Device enrollment and authentication (see :mod:`.security` for the scheme)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgerec.federated import wire

from . import errors
from .security import EnrollKeys, hash_token, new_device_id, new_token, parse_token, token_matches
from .storage import Device, Storage

log = logging.getLogger(__name__)


class DeviceRegistry:
    """Issues device credentials and checks bearer tokens.

    Args:
        storage: the coordinator database.
        enroll_keys: the accepted enrollment keys (none: enrollment is closed).
        clock: wall clock (tests inject one).
    """

    def __init__(
        self,
        storage: Storage,
        enroll_keys: EnrollKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.enroll_keys = enroll_keys or EnrollKeys()
        self.clock = clock

    def enroll(self, enroll_key: str) -> tuple[str, str]:
        """Check ``enroll_key``, create a device and return ``(device_id, token)``.

        The token is returned once and only its SHA-256 is stored.
        """
        if not self.enroll_keys.enabled:
            raise errors.forbidden(
                "enrollment is closed on this coordinator (start it with --enroll-key-file)"
            )
        if not self.enroll_keys.check(enroll_key):
            raise errors.unauthenticated("enrollment key not accepted")
        device_id = new_device_id()
        token = new_token(device_id)
        with self.storage.write() as tx:
            tx.insert_device(Device(device_id, hash_token(token), self.clock()))
        log.info("enrolled device %s", device_id)
        return device_id, token

    def authenticate(self, authorization: str | None) -> Device:
        """The device an ``Authorization: Bearer <token>`` header belongs to (or 401)."""
        if not authorization:
            raise errors.unauthenticated("missing Authorization: Bearer <device token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.unauthenticated("expected Authorization: Bearer <device token>")
        device_id = parse_token(token)
        if device_id is None:
            raise errors.unauthenticated("malformed device token")
        with self.storage.read() as tx:
            device = tx.get_device(device_id)
        # hash the presented token even for an unknown device: same work either way
        stored = device.token_hash if device is not None else b"\x00" * 32
        if not token_matches(token, stored) or device is None:
            raise errors.unauthenticated("device token not recognised")
        if device.revoked:
            raise errors.forbidden(f"device {device_id} has been revoked")
        return device

    @staticmethod
    def check_owner(device: Device, path_device_id: str) -> None:
        """403 unless the path's device id is the authenticated device's."""
        if device.device_id != path_device_id:
            raise errors.forbidden(
                f"this token belongs to another device; it cannot act as {path_device_id}",
                code=wire.E_FORBIDDEN,
            )
