"""A TUF repository of bundle releases that any static web server can serve.

Layout of ``REPO`` (serve the folder as it is, e.g. ``python -m http.server``)::

    metadata/1.root.json ...   every root version (devices walk the chain on rotation)
    metadata/root.json         the newest root (what a device is provisioned with)
    metadata/timestamp.json    the entry point, re-signed on every change
    metadata/<n>.snapshot.json, metadata/<n>.targets.json   consistent snapshots
    targets/bundles/<sha256>.<version>.tar     one archive per bundle version
    targets/channels/<sha256>.<channel>.json   the channel documents (edgerec.ota)

Keys (Ed25519, PKCS#8 PEM, mode 0600) live in a separate folder that is never
served: ``root.pem``, ``targets.pem``, ``snapshot.pem``, ``timestamp.pem``. Every
change writes new targets, then snapshot, then timestamp metadata — each a new file
under its own version, the timestamp last — so a device reading the repository mid-way
sees the previous complete state or the new one.

The model-level operations (publish, rollout share, pause, resume, rollback) all edit
the channel document and publish it as a new targets version: TUF's rollback
protection is about *metadata* versions, so rolling the *model* back is a new,
higher metadata version that names the older bundle.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edgerec.bundle import BundleError, open_bundle
from edgerec.errors import InputError
from edgerec.ota import Channel, Release, channel_target, check_name

from .archive import pack_bundle

log = logging.getLogger(__name__)

__all__ = ["EXPIRY_DAYS", "ReleaseRepository", "RepositoryError"]

ROLES = ("root", "targets", "snapshot", "timestamp")
#: default validity of each role's metadata, in days. The timestamp is short on
#: purpose: a device refuses expired metadata, which bounds how long a mirror can
#: freeze it on an old state (re-sign with ``edgerec release refresh`` from a timer).
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 30, "timestamp": 7}


class RepositoryError(InputError):
    """The release repository or its keys cannot be used; the message says which file."""


@dataclass(frozen=True)
class PublishResult:
    """What :meth:`ReleaseRepository.publish` wrote."""

    release: Release
    bytes: int
    sha256: str
    channel: Channel


class ReleaseRepository:
    """Read and change one TUF release repository.

    Args:
        root: the repository folder (``metadata/`` and ``targets/``).
        keys_dir: the folder with the four role keys (needed to change anything).
    """

    def __init__(self, root: str | os.PathLike[str], keys_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.keys_dir = Path(keys_dir)
        self.metadata_dir = self.root / "metadata"
        self.targets_dir = self.root / "targets"

    # ------------------------------------------------------------------ init
    @classmethod
    def init(
        cls,
        root: str | os.PathLike[str],
        keys_dir: str | os.PathLike[str],
        expiry_days: dict[str, int] | None = None,
    ) -> ReleaseRepository:
        """Create the keys (unless present) and version 1 of every role's metadata."""
        from securesystemslib.signer import CryptoSigner
        from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

        repo = cls(root, keys_dir)
        if (repo.metadata_dir / "timestamp.json").exists():
            raise RepositoryError(f"{repo.metadata_dir}: already a release repository")
        repo.keys_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            pem = repo.keys_dir / f"{role}.pem"
            if not pem.exists():
                signer = CryptoSigner.generate_ed25519()
                _write_atomic(pem, signer.private_bytes, mode=0o600)
        days = {**EXPIRY_DAYS, **(expiry_days or {})}
        root_md = Metadata(Root(expires=_expiry(days["root"]), consistent_snapshot=True))
        for role in ROLES:
            root_md.signed.add_key(repo.signer(role).public_key, role)
        repo.metadata_dir.mkdir(parents=True, exist_ok=True)
        (repo.targets_dir / "bundles").mkdir(parents=True, exist_ok=True)
        (repo.targets_dir / "channels").mkdir(parents=True, exist_ok=True)
        root_md.sign(repo.signer("root"))
        repo._write_metadata(root_md, "1.root.json")
        repo._write_metadata(root_md, "root.json")
        targets = Metadata(Targets(expires=_expiry(days["targets"])))
        snapshot = Metadata(Snapshot(expires=_expiry(days["snapshot"])))
        timestamp = Metadata(Timestamp(expires=_expiry(days["timestamp"])))
        repo._commit(targets, snapshot, timestamp, days, first=True)
        log.info("initialised release repository %s (keys in %s)", repo.root, repo.keys_dir)
        return repo

    # ------------------------------------------------------------------ keys
    def signer(self, role: str) -> Any:
        """The :class:`CryptoSigner` of ``role`` from ``keys_dir/<role>.pem``."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from securesystemslib.signer import CryptoSigner

        path = self.keys_dir / f"{role}.pem"
        try:
            key = load_pem_private_key(path.read_bytes(), None)
        except FileNotFoundError:
            raise RepositoryError(f"{path}: the {role} key is missing") from None
        except ValueError as exc:
            raise RepositoryError(f"{path}: not a PEM private key ({exc})") from None
        return CryptoSigner(key)

    # ------------------------------------------------------------------ reading
    def load(self) -> tuple[Any, Any, Any]:
        """The newest ``(targets, snapshot, timestamp)`` metadata."""
        from tuf.api.metadata import Metadata

        ts_path = self.metadata_dir / "timestamp.json"
        if not ts_path.is_file():
            raise RepositoryError(
                f"{self.root}: not a release repository (no metadata/timestamp.json); "
                "run `edgerec release init` first"
            )
        timestamp = Metadata.from_file(str(ts_path))
        snap_v = timestamp.signed.snapshot_meta.version
        snapshot = Metadata.from_file(str(self.metadata_dir / f"{snap_v}.snapshot.json"))
        targets_v = snapshot.signed.meta["targets.json"].version
        targets = Metadata.from_file(str(self.metadata_dir / f"{targets_v}.targets.json"))
        return targets, snapshot, timestamp

    def channel(self, name: str = "stable") -> Channel | None:
        """The channel document as published (None before the first publish to it)."""
        targets, _, _ = self.load()
        info = targets.signed.targets.get(channel_target(name))
        if info is None:
            return None
        sha = info.hashes["sha256"]
        path = self.targets_dir / "channels" / f"{sha}.{name}.json"
        return Channel.from_json(json.loads(path.read_text()), str(path))

    def releases(self) -> dict[str, dict[str, Any]]:
        """Every published bundle version: version -> target path, bytes, sha256."""
        targets, _, _ = self.load()
        out = {}
        for path, info in targets.signed.targets.items():
            if path.startswith("bundles/"):
                custom = info.unrecognized_fields.get("custom", {})
                out[custom.get("version", path)] = {
                    "target": path,
                    "bytes": info.length,
                    "sha256": info.hashes["sha256"],
                    "model_id": custom.get("model_id"),
                }
        return out

    def status(self) -> dict[str, Any]:
        """The repository at a glance (JSON-able): metadata versions, releases, channels."""
        targets, snapshot, timestamp = self.load()
        channels = {}
        for path in targets.signed.targets:
            if path.startswith("channels/"):
                name = path.removeprefix("channels/").removesuffix(".json")
                ch = self.channel(name)
                channels[name] = None if ch is None else ch.to_json()
        return {
            "repository": str(self.root),
            "versions": {
                "targets": targets.signed.version,
                "snapshot": snapshot.signed.version,
                "timestamp": timestamp.signed.version,
            },
            "expires": {
                "targets": targets.signed.expires.isoformat(),
                "timestamp": timestamp.signed.expires.isoformat(),
            },
            "releases": self.releases(),
            "channels": channels,
        }

    # ------------------------------------------------------------------ changes
    def publish(
        self,
        bundle_dir: str | os.PathLike[str],
        channel: str = "stable",
        percent: float = 100.0,
        version: str | None = None,
    ) -> PublishResult:
        """Add a bundle version and make it the channel's release at ``percent``.

        The bundle is verified first (manifest, status accepted, every file's hash).
        The version the fleet ran fully so far becomes the channel's baseline.
        """
        from tuf.api.metadata import TargetFile

        try:
            manifest = open_bundle(bundle_dir)
        except BundleError as exc:
            raise RepositoryError(f"cannot publish {bundle_dir}: {exc}") from None
        version = check_name(version or manifest.model_version, "version")
        target_path = f"bundles/{version}.tar"
        targets, snapshot, timestamp = self.load()
        bundles = self.targets_dir / "bundles"
        bundles.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".publish-", suffix=".tar", dir=bundles)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            size = pack_bundle(manifest, tmp)
            info = TargetFile.from_file(target_path, str(tmp), ["sha256"])
            old = targets.signed.targets.get(target_path)
            if old is not None and old.hashes != info.hashes:
                raise RepositoryError(
                    f"version {version!r} is already published with different contents; "
                    "publish the new bundle under a new version (--version)"
                )
            sha = info.hashes["sha256"]
            _fsync_file(tmp)
            os.replace(tmp, bundles / f"{sha}.{version}.tar")
        finally:
            tmp.unlink(missing_ok=True)
        info.unrecognized_fields["custom"] = {
            "version": version,
            "model_id": manifest.model_id,
            "published": datetime.now(UTC).replace(microsecond=0).isoformat(),
        }
        targets.signed.targets[target_path] = info
        new = Release(version, target_path)
        current = self._channel_from(targets, channel)
        baseline = None
        if current is not None:
            if current.release.version == version:
                baseline = current.baseline
            elif current.percent >= 100.0 and not current.paused:
                baseline = current.release
            else:  # a rollout was under way: the fleet is only guaranteed its baseline
                baseline = current.baseline or current.release
        ch = Channel(channel, new, baseline, percent=percent, paused=False)
        self._set_channel(targets, ch)
        self._commit(targets, snapshot, timestamp)
        log.info("published %s (%d bytes) to %s at %g%%", version, size, channel, percent)
        return PublishResult(new, size, sha, ch)

    def rollout(self, percent: float, channel: str = "stable") -> Channel:
        """Set the share of devices that take the channel's release (and resume it)."""
        return self._edit(channel, percent=percent, paused=False)

    def pause(self, channel: str = "stable") -> Channel:
        """Stop the rollout: no device changes version until :meth:`resume`."""
        return self._edit(channel, paused=True)

    def resume(self, channel: str = "stable") -> Channel:
        return self._edit(channel, paused=False)

    def rollback(self, to_version: str, channel: str = "stable") -> Channel:
        """Point every device of the channel at an already published version."""
        targets, snapshot, timestamp = self.load()
        target_path = f"bundles/{check_name(to_version, 'version')}.tar"
        if target_path not in targets.signed.targets:
            have = ", ".join(sorted(self.releases())) or "none"
            raise RepositoryError(f"version {to_version!r} was never published (have: {have})")
        if self._channel_from(targets, channel) is None:
            raise RepositoryError(f"channel {channel!r} has no release yet")
        ch = Channel(channel, Release(to_version, target_path), None, percent=100.0)
        self._set_channel(targets, ch)
        self._commit(targets, snapshot, timestamp)
        log.info("rolled %s back to %s", channel, to_version)
        return ch

    def refresh(self, days: int | None = None) -> None:
        """Re-sign snapshot and timestamp with fresh expiry dates (run from a timer)."""
        targets, snapshot, timestamp = self.load()
        expiry = dict(EXPIRY_DAYS)
        if days is not None:
            expiry["timestamp"] = days
        self._commit(targets, snapshot, timestamp, expiry, targets_changed=False)

    def rotate_key(self, role: str) -> str:
        """Replace ``role``'s key (e.g. after it leaked): a new root version revokes the
        old key and trusts a new one, then every role's metadata is re-signed.

        Devices walk the chain of root versions on their next update, so metadata
        signed with the old key is refused from then on. Rotating the root key signs
        the new root with the old and the new root key (the chain stays verifiable).
        Returns the new key id; the old private key is kept as ``<role>.pem.retired``.
        """
        from securesystemslib.signer import CryptoSigner
        from tuf.api.metadata import Metadata

        if role not in ROLES:
            raise RepositoryError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
        root = Metadata.from_file(str(self.metadata_dir / "root.json"))
        old_root_signer = self.signer("root")
        old_pem = self.keys_dir / f"{role}.pem"
        new = CryptoSigner.generate_ed25519()
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        root.signed.add_key(new.public_key, role)
        root.signed.version += 1
        root.signed.expires = _expiry(EXPIRY_DAYS["root"])
        root.signatures.clear()
        root.sign(new if role == "root" else old_root_signer)
        if role == "root":
            root.sign(old_root_signer, append=True)
        os.replace(old_pem, old_pem.with_name(f"{role}.pem.retired"))
        _write_atomic(old_pem, new.private_bytes, mode=0o600)
        self._write_metadata(root, f"{root.signed.version}.root.json")
        self._write_metadata(root, "root.json")
        targets, snapshot, timestamp = self.load()
        self._commit(targets, snapshot, timestamp)
        log.info("rotated the %s key (root v%d)", role, root.signed.version)
        return new.public_key.keyid

    def set_timestamp_expiry(self, expires: datetime) -> None:
        """Re-sign the timestamp with an explicit expiry (tests of freeze protection)."""
        _, _, timestamp = self.load()
        timestamp.signed.version += 1
        timestamp.signed.expires = expires
        self._sign_write(timestamp, "timestamp", "timestamp.json")

    # ------------------------------------------------------------------ helpers
    def _edit(self, channel: str, **changes: Any) -> Channel:
        targets, snapshot, timestamp = self.load()
        current = self._channel_from(targets, channel)
        if current is None:
            raise RepositoryError(f"channel {channel!r} has no release yet: publish one first")
        fields = {**current.__dict__, **changes}
        ch = Channel(**fields)
        self._set_channel(targets, ch)
        self._commit(targets, snapshot, timestamp)
        log.info("channel %s: %s", channel, ch.to_json())
        return ch

    def _channel_from(self, targets: Any, name: str) -> Channel | None:
        info = targets.signed.targets.get(channel_target(name))
        if info is None:
            return None
        path = self.targets_dir / "channels" / f"{info.hashes['sha256']}.{name}.json"
        try:
            return Channel.from_json(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{path}: unreadable channel document ({exc})") from None

    def _set_channel(self, targets: Any, ch: Channel) -> None:
        from tuf.api.metadata import TargetFile

        data = json.dumps(ch.to_json(), indent=1, sort_keys=True).encode()
        path = channel_target(ch.name)
        info = TargetFile.from_data(path, data, ["sha256"])
        out = self.targets_dir / "channels" / f"{info.hashes['sha256']}.{ch.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(out, data)
        targets.signed.targets[path] = info

    def _commit(
        self,
        targets: Any,
        snapshot: Any,
        timestamp: Any,
        expiry: dict[str, int] | None = None,
        *,
        targets_changed: bool = True,
        first: bool = False,
    ) -> None:
        """Sign and write targets (when changed), snapshot, then timestamp, each as a
        new version (``first``: the versions 1 of a new repository)."""
        from tuf.api.metadata import MetaFile

        days = expiry or EXPIRY_DAYS
        if targets_changed:
            targets.signed.version += 0 if first else 1
            targets.signed.expires = _expiry(days["targets"])
            self._sign_write(targets, "targets", f"{targets.signed.version}.targets.json")
        if not first:
            snapshot.signed.version += 1
            timestamp.signed.version += 1
        snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
        snapshot.signed.expires = _expiry(days["snapshot"])
        self._sign_write(snapshot, "snapshot", f"{snapshot.signed.version}.snapshot.json")
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        timestamp.signed.expires = _expiry(days["timestamp"])
        self._sign_write(timestamp, "timestamp", "timestamp.json")

    def _sign_write(self, md: Any, role: str, filename: str) -> None:
        md.signatures.clear()
        md.sign(self.signer(role))
        self._write_metadata(md, filename)

    def _write_metadata(self, md: Any, filename: str) -> None:
        from tuf.api.serialization.json import JSONSerializer

        _write_atomic(self.metadata_dir / filename, md.to_bytes(JSONSerializer(compact=False)))


def _expiry(days: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
