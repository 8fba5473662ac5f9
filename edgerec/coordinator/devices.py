"""Device enrollment, authentication and lifecycle (see :mod:`.security` for the scheme).

**Expiry and rotation.** A token is valid for ``token_ttl_s`` from its issue. In the
last ``token_refresh_s`` of that time every authenticated answer carries
``X-Edgerec-Token-Refresh: <expiry>``; the device then asks ``POST /v1/token`` for a
successor. The server stores the successor's hash *next to* the current one, and both
work until the device's first request with the successor, which promotes it (the old
token stops working then). A crash at any step leaves the device with a working token:

* before the answer reaches the device: it still has the old token, which still
  works; its next rotation replaces the unused successor;
* after the device saved the successor (atomically, :mod:`edgerec.runtime.sync_state`)
  but before it used it: the successor works, and its first use promotes it.

The grace period of the old token is therefore "until the successor is used, at most
until the old token's own expiry", which is ``token_refresh_s`` after the first
refresh signal: a device that syncs at least once in that window is never locked out.

**Revocation** (``edgerec coordinator revoke-device`` / admin API) takes effect on
the device's next request: 403 ``device_revoked``. **Enrollment keys** are kept in
the database as SHA-256 digests with a quota and can be revoked (``enroll-key``
commands / admin API); the keys of ``--enroll-key-file`` keep working without a quota.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

from edgerec.federated import wire

from . import errors
from .security import EnrollKeys, hash_token, new_device_id, new_token, parse_token, token_matches
from .storage import Device, EnrollKey, Storage

log = logging.getLogger(__name__)

#: default lifetime of a device token (30 days) and the refresh window before expiry
DEFAULT_TOKEN_TTL_S = 30 * 86400.0
DEFAULT_TOKEN_REFRESH_S = 7 * 86400.0


class Authenticated(NamedTuple):
    """A device that presented a valid token.

    Attributes:
        device: the device.
        expires_at: when the presented token expires.
        refresh: True when the token is in its refresh window (the device should
            rotate it with ``POST /v1/token``).
    """

    device: Device
    expires_at: float
    refresh: bool


class DeviceRegistry:
    """Issues device credentials, checks bearer tokens, revokes devices and keys.

    Args:
        storage: the coordinator database.
        enroll_keys: the enrollment keys of ``--enroll-key-file`` (none: only the
            database's keys are accepted).
        clock: wall clock (tests inject one).
        token_ttl_s: lifetime of a device token.
        token_refresh_s: the window before expiry in which devices rotate their token.
    """

    def __init__(
        self,
        storage: Storage,
        enroll_keys: EnrollKeys | None = None,
        clock: Callable[[], float] = time.time,
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
        token_refresh_s: float = DEFAULT_TOKEN_REFRESH_S,
    ) -> None:
        self.storage = storage
        self.enroll_keys = enroll_keys or EnrollKeys()
        self.clock = clock
        self.token_ttl_s = float(token_ttl_s)
        self.token_refresh_s = min(float(token_refresh_s), self.token_ttl_s)

    # ------------------------------------------------------------------ enrollment
    def enroll(self, enroll_key: str) -> tuple[str, str]:
        """Check ``enroll_key``, create a device and return ``(device_id, token)``.

        The token is returned once and only its SHA-256 is stored. A database key is
        refused when revoked (403 ``enroll_key_revoked``) or when its quota is used up
        (403 ``enroll_key_exhausted``).
        """
        digest = hashlib.sha256(enroll_key.encode("utf-8", "surrogatepass")).digest()
        device_id = new_device_id()
        token = new_token(device_id)
        now = self.clock()
        with self.storage.write() as tx:
            key = tx.enroll_key_by_hash(digest)
            if key is not None:
                if key.revoked:
                    raise errors.forbidden(
                        f"enrollment key {key.key_id} has been revoked", code=wire.E_KEY_REVOKED
                    )
                if not tx.use_enroll_key(key.key_id):
                    raise errors.forbidden(
                        f"enrollment key {key.key_id} has enrolled its quota of {key.quota} "
                        "devices",
                        code=wire.E_KEY_EXHAUSTED,
                    )
            elif not self.enroll_keys.check(enroll_key):
                if not self.enroll_keys.enabled and tx.count_usable_enroll_keys() == 0:
                    raise errors.forbidden(
                        "enrollment is closed on this coordinator (start it with "
                        "--enroll-key-file, or add a key with 'edgerec coordinator "
                        "enroll-key add')"
                    )
                raise errors.unauthenticated("enrollment key not accepted")
            tx.insert_device(
                Device(
                    device_id,
                    hash_token(token),
                    now,
                    token_issued_at=now,
                    enroll_key_id=key.key_id if key is not None else None,
                )
            )
        log.info("enrolled device %s", device_id)
        return device_id, token

    def create_enroll_key(self, label: str = "", quota: int | None = None) -> tuple[EnrollKey, str]:
        """A new database enrollment key: ``(its record, the secret)`` (shown once)."""
        if quota is not None and (not isinstance(quota, int) or quota < 1):
            raise errors.invalid(f"quota must be a positive integer (got {quota!r})")
        secret = secrets.token_urlsafe(32)
        key = EnrollKey(
            key_id="k-" + secrets.token_hex(6),
            key_hash=hashlib.sha256(secret.encode()).digest(),
            label=str(label)[:200],
            created_at=self.clock(),
            quota=quota,
        )
        with self.storage.write() as tx:
            tx.insert_enroll_key(key)
        log.info("created enrollment key %s (quota %s)", key.key_id, quota)
        return key, secret

    def revoke_enroll_key(self, key_id: str, revoke_devices: bool = False) -> dict:
        """Revoke a database enrollment key (idempotent); with ``revoke_devices`` also
        every device that enrolled with it."""
        now = self.clock()
        revoked_devices = []
        with self.storage.write() as tx:
            key = tx.get_enroll_key(key_id)
            if key is None:
                raise errors.not_found(f"no enrollment key {key_id}")
            tx.revoke_enroll_key(key_id, now)
            if revoke_devices:
                for device in tx.list_devices(limit=1 << 30):
                    if device.enroll_key_id == key_id and tx.revoke_device(device.device_id, now):
                        revoked_devices.append(device.device_id)
            key = tx.get_enroll_key(key_id)
        assert key is not None
        log.info("revoked enrollment key %s (%d devices)", key_id, len(revoked_devices))
        return {**key_summary(key), "revoked_devices": revoked_devices}

    def list_enroll_keys(self) -> list[dict]:
        with self.storage.read() as tx:
            return [key_summary(k) for k in tx.list_enroll_keys()]

    # ------------------------------------------------------------------ devices
    def revoke_device(self, device_id: str) -> dict:
        """Revoke a device (idempotent): its next request is refused with 403."""
        with self.storage.write() as tx:
            if tx.get_device(device_id) is None:
                raise errors.not_found(f"no device {device_id}")
            tx.revoke_device(device_id, self.clock())
            device = tx.get_device(device_id)
        assert device is not None
        log.info("revoked device %s", device_id)
        return self.device_summary(device)

    def device_summary(self, device: Device) -> dict:
        """Public facts about a device (no token material)."""
        issued = device.token_issued_at or device.enrolled_at
        return {
            "device_id": device.device_id,
            "enrolled_at": device.enrolled_at,
            "revoked": device.revoked,
            "revoked_at": device.revoked_at,
            "token_expires_at": issued + self.token_ttl_s,
            "rotation_pending": device.next_token_hash is not None,
            "enroll_key_id": device.enroll_key_id,
        }

    # ------------------------------------------------------------------ tokens
    def check(self, authorization: str | None) -> Authenticated:
        """The device an ``Authorization: Bearer <token>`` header belongs to.

        401 ``unauthenticated`` for a missing, malformed or unknown token, 401
        ``token_expired`` for an expired one, 403 ``device_revoked`` for a revoked
        device. A device's first request with its rotated token promotes that token.
        """
        if not authorization:
            raise errors.unauthenticated("missing Authorization: Bearer <device token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.unauthenticated("expected Authorization: Bearer <device token>")
        device_id = parse_token(token)
        if device_id is None:
            raise errors.unauthenticated("malformed device token")
        with self.storage.read_single() as tx:  # on every request: one statement
            device = tx.get_device(device_id)
        # hash the presented token even for an unknown device: same work either way
        current = device.token_hash if device is not None else b"\x00" * 32
        pending = device.next_token_hash if device is not None else None
        is_current = token_matches(token, current)
        is_next = pending is not None and token_matches(token, pending)
        if device is None or not (is_current or is_next):
            raise errors.unauthenticated("device token not recognised")
        if device.revoked:
            raise errors.forbidden(
                f"device {device_id} has been revoked", code=wire.E_DEVICE_REVOKED
            )
        now = self.clock()
        if is_next:
            issued = float(device.next_token_issued_at or now)
            with self.storage.write() as tx:
                tx.promote_next_token(device_id, hash_token(token))
                promoted = tx.get_device(device_id)
            if promoted is not None:
                device = promoted
            log.info("device %s now uses its rotated token", device_id)
        else:
            issued = float(device.token_issued_at or device.enrolled_at)
        expires = issued + self.token_ttl_s
        if now >= expires:
            raise errors.unauthenticated_as(
                wire.E_TOKEN_EXPIRED,
                f"the token of device {device_id} expired; enroll the device again",
            )
        return Authenticated(device, expires, now >= expires - self.token_refresh_s)

    def authenticate(self, authorization: str | None) -> Device:
        """The device an ``Authorization: Bearer <token>`` header belongs to (see :meth:`check`)."""
        return self.check(authorization).device

    def rotate(self, device: Device) -> dict:
        """Issue a successor token for ``device`` (see the module docstring)."""
        device_id = device.device_id
        token = new_token(device_id)
        now = self.clock()
        with self.storage.write() as tx:
            current = tx.get_device(device_id)
            if current is None or current.revoked:
                raise errors.forbidden(
                    f"device {device_id} has been revoked", code=wire.E_DEVICE_REVOKED
                )
            tx.set_next_token(device_id, hash_token(token), now)
        log.info("issued a rotated token to device %s", device_id)
        return {"device_id": device_id, "token": token, "expires_at": now + self.token_ttl_s}

    @staticmethod
    def check_owner(device: Device, path_device_id: str) -> None:
        """403 unless the path's device id is the authenticated device's."""
        if device.device_id != path_device_id:
            raise errors.forbidden(
                f"this token belongs to another device; it cannot act as {path_device_id}",
                code=wire.E_FORBIDDEN,
            )


def key_summary(key: EnrollKey) -> dict:
    """Public facts about an enrollment key (never the key or its hash)."""
    return {
        "key_id": key.key_id,
        "label": key.label,
        "created_at": key.created_at,
        "quota": key.quota,
        "used": key.used,
        "revoked": key.revoked,
        "revoked_at": key.revoked_at,
        "usable": key.usable,
    }
