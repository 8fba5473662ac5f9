"""The device's federated state on disk: credentials, the shared head, round secrets.

Layout of ``state_dir`` (every file replaced atomically; secrets with mode 0600)::

    credentials.json      base URL, device id and bearer token (from enrollment)
    head.json             version, sha256, metadata and bundle (model id + version) of
                          the head the device holds
    global_bias.npy       that head's additive bias, float32, one value per item

The head is used only by a client whose model is the bundle ``head.json`` names (a
file written before heads named their bundle counts as "bundle unknown"), so a client
built on a new bundle after an update never starts from the old bundle's head.
    rounds/<round>.json   the SecAgg+ client state of an unfinished round

Round secrets are written before the message that depends on them leaves the device,
so an app killed mid-round resumes where it stopped and a retried message is
byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.federated.errors import FederatedError
from edgerec.federated.protocol import RoundParams
from edgerec.federated.secagg import SecAggClient

from .sync_bundle import UNKNOWN_BUNDLE, BundleId
from .sync_outcome import SyncError

log = logging.getLogger(__name__)

__all__ = ["DeviceState", "atomic_write", "read_json"]

CREDENTIALS = "credentials.json"
HEAD = "head.json"
HEAD_BIAS = "global_bias.npy"
ROUNDS = "rounds"


class DeviceState:
    """Reads and writes the files of one device's ``state_dir`` (created if missing).

    Args:
        state_dir: the folder.
        durable: fsync each file (and its folder) before a write returns. ``False``
            keeps the atomic renames but skips fsync: for simulations of many devices.
    """

    def __init__(self, state_dir: str | os.PathLike[str], durable: bool = True) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / ROUNDS).mkdir(exist_ok=True)
        self.durable = bool(durable)

    def read_json(self, name: str) -> dict | None:
        """The JSON object in ``state_dir/name``; None when the file is absent."""
        return read_json(self.dir / name)

    def write_json(self, name: str, data: dict) -> None:
        """Replace ``state_dir/name`` with ``data`` (mode 0600)."""
        atomic_write(self.dir / name, json.dumps(data).encode(), mode=0o600, durable=self.durable)

    # ------------------------------------------------------------------ credentials
    def load_credentials(self) -> tuple[str | None, str | None]:
        """The saved ``(device_id, token)`` (None for what was never saved)."""
        creds = self.read_json(CREDENTIALS) or {}
        return creds.get("device_id"), creds.get("token")

    def save_credentials(self, base_url: str, device_id: str, token: str) -> None:
        self.write_json(CREDENTIALS, {"base_url": base_url, "device_id": device_id, "token": token})

    # ------------------------------------------------------------------ head
    def load_head(self, bundle: BundleId = UNKNOWN_BUNDLE) -> tuple[int | None, np.ndarray | None]:
        """The saved head as ``(version, bias)`` when it belongs to ``bundle``.

        ``(None, None)`` when none was saved, when it belongs to another bundle (a head
        of the bundle the device ran before an update), or when the bias file does not
        match ``head.json``: the next sync fetches the head again.
        """
        head = self.read_json(HEAD) or {}
        path = self.dir / HEAD_BIAS
        if not head or not path.is_file():
            return None, None
        saved = BundleId.from_json(head.get("bundle"))
        if saved != bundle:
            log.info("%s belongs to bundle %s, not %s; not using it", HEAD, saved, bundle)
            return None, None
        version = head.get("version")
        try:
            bias = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); fetching the head again", path, exc)
            return None, None
        if hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest() != head.get("sha256"):
            log.warning("%s does not match %s; fetching the head again", path, HEAD)
            return None, None
        return version if type(version) is int else None, bias

    def save_head(
        self,
        version: int,
        sha256: str,
        metadata: Any,
        bias: np.ndarray,
        bundle: BundleId = UNKNOWN_BUNDLE,
    ) -> None:
        """Save a downloaded head of ``bundle``: the bias first, then ``head.json`` that
        vouches for it."""
        atomic_write(self.dir / HEAD_BIAS, npy_bytes(bias), durable=self.durable)
        head = {"version": version, "sha256": sha256, "metadata": metadata}
        self.write_json(HEAD, {**head, "bundle": bundle.to_json()})

    # ------------------------------------------------------------------ round secrets
    def _round_file(self, rnd: int) -> Path:
        return self.dir / ROUNDS / f"{int(rnd)}.json"

    def load_round(self, rnd: int, params: RoundParams) -> SecAggClient | None:
        """The SecAgg+ client saved for round ``rnd``; None when there is none, or when
        it belongs to another round of that number (a different coordinator database)."""
        path = self._round_file(rnd)
        data = read_json(path)
        if data is None:
            return None
        if data.get("name") != params.round_id:  # a different coordinator database
            path.unlink(missing_ok=True)
            return None
        try:
            return SecAggClient.from_state(data["client"])
        except (FederatedError, KeyError) as exc:
            raise SyncError(f"{path}: unreadable round state ({exc})") from None

    def save_round(self, rnd: int, client: SecAggClient) -> None:
        state = {"round": rnd, "name": client.params.round_id, "client": client.export_state()}
        atomic_write(
            self._round_file(rnd), json.dumps(state).encode(), mode=0o600, durable=self.durable
        )

    def forget_round(self, rnd: int) -> None:
        self._round_file(rnd).unlink(missing_ok=True)

    def forget_other_rounds(self, current: int | None) -> None:
        """Drop the secrets of every round but ``current`` (those rounds are over)."""
        for path in (self.dir / ROUNDS).glob("*.json"):
            if current is None or path.stem != str(current):
                path.unlink(missing_ok=True)


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``; None when it is absent, a :class:`SyncError` naming the file
    when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SyncError(f"{path}: unreadable ({exc}); delete it to start over") from None


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in the ``.npy`` format (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never half
    (and, when ``durable``, the new one is on disk before this returns)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
