"""Device credentials, enrollment keys and per-client rate limits.

**Tokens.** Enrollment gives a device ``device_id`` and a bearer token
``<device_id>.<43 base64url chars>`` (32 random bytes). The server stores only
``SHA-256(token)``: the secret has 256 bits of entropy, so a fast hash is enough
(no password stretching needed) and a stolen database yields no usable token.
Verification looks the device up by the id prefix and compares the hashes with
:func:`hmac.compare_digest` (constant time). The id inside the token is what
identifies the caller: another device's token authenticates *that* device, and
every per-device route checks that the path's device id is the caller's (403).

**Enrollment keys** are shared secrets configured on the server (one per line
in ``--enroll-key-file``); they are kept as SHA-256 digests and compared in
constant time against every configured key.

**Rate limits** are token buckets kept in memory, one per device (and one per
client address for unauthenticated routes such as enrollment). Failed
authentication (a wrong device token, enrollment key or admin token) draws from a
second, much smaller bucket per client address and per claimed device id; while
either is empty the request is refused with 429 and ``Retry-After`` before any
database work. A flood of bad tokens naming a real device id can hold that device
off only until its bucket refills (the device honours ``Retry-After``). They reset when
the process restarts and are per process: the coordinator runs as one process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from edgerec.errors import InputError

TOKEN_BYTES = 32
TOKEN_RE = re.compile(r"^(d-[0-9a-f]{24})\.([A-Za-z0-9_-]{43})$")


def new_device_id() -> str:
    """A random device id, ``d-`` + 24 hex digits."""
    return "d-" + secrets.token_hex(12)


def new_token(device_id: str) -> str:
    """A fresh bearer token for ``device_id``."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    return f"{device_id}.{secret}"


def hash_token(token: str) -> bytes:
    """What the database keeps of a token: its SHA-256 digest."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_token(token: str) -> str | None:
    """The device id a well-formed token claims, or None for a malformed one."""
    match = TOKEN_RE.match(token)
    return match.group(1) if match else None


def token_matches(token: str, stored_hash: bytes) -> bool:
    """Constant-time check of ``token`` against its stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


class EnrollKeys:
    """The enrollment keys the server accepts, held as SHA-256 digests."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    @classmethod
    def from_file(cls, path: str | Path) -> EnrollKeys:
        """One key per line; blank lines and ``#`` comments are ignored."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot read the enrollment key file ({exc})") from None
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        short = [i + 1 for i, k in enumerate(keys) if len(k) < 16]
        if not keys:
            raise InputError(f"{path}: no enrollment key in the file (one key per line)")
        if short:
            raise InputError(f"{path}: enrollment keys must be >= 16 characters (lines {short})")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, key: str) -> bool:
        """True when ``key`` is one of the configured keys (constant time per key)."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        ok = False
        for d in self._digests:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(digest, d)
        return ok


def check_admin(token: str | None, admin_digest: bytes | None) -> bool:
    """Constant-time check of a presented admin token."""
    if admin_digest is None or not token:
        return False
    return hmac.compare_digest(hashlib.sha256(token.encode()).digest(), admin_digest)


class RateLimiter:
    """Token buckets keyed by client (device id or address), kept in memory.

    Each key gets ``burst`` requests at once and ``rate`` more per second. At
    most ``max_keys`` buckets are kept (least recently used are dropped, which
    only ever gives a client a fresh, full bucket).

    Args:
        rate: sustained requests per second per key (0 disables the limiter).
        burst: bucket size.
        clock: monotonic clock (tests inject one).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0: it has one now); takes nothing."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token for ``key``: ``(allowed, seconds until the next token)``."""
        if self.rate <= 0:
            return True, 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        retry = 0.0 if allowed else (1.0 - tokens) / self.rate
        return allowed, retry
