"""Over-the-air bundle updates on the device, through a TUF repository (python-tuf).

::

    from edgerec.runtime.update import BundleUpdater

    updater = BundleUpdater("https://models.example/edgerec", "/var/lib/edgerec",
                            trusted_root="/etc/edgerec/root.json")
    result = updater.update()          # never raises for network, TUF or bundle trouble
    rec = updater.open_recommender()   # the current bundle, with its own federated head

One :meth:`BundleUpdater.update`:

1. refreshes the TUF metadata (root rotation, timestamp, snapshot, targets — TUF
   refuses expired, rolled-back, mix-and-matched or wrongly signed metadata);
2. reads the channel document (:mod:`edgerec.ota`) and picks this device's release
   (rollout share, pause);
3. does nothing if that version is current; otherwise downloads the archive streamed,
   capped at its signed length and at ``max_bytes``, resuming a cut download
   (:mod:`.update_fetch`), and lets TUF verify length and sha256;
4. unpacks it into a fresh slot, opens it with :meth:`Recommender.open` and checks its
   reference-vector parity (:mod:`.update_check`) — a bundle that fails is recorded as
   refused and never becomes current;
5. switches ``current`` atomically and keeps the old bundle as ``previous``
   (:mod:`.slots`, which also explains why a ``kill -9`` at any point is safe).

:meth:`open_recommender` rolls back to ``previous`` automatically when the current
bundle no longer opens or passes its check. Federated heads belong to the bundle
version they were trained for: :meth:`save_head` keeps them per version and
:meth:`open_recommender` applies the head of the version it opens; :meth:`slot_of`
tells a sync client which version the bundle it runs is, so that it keeps heads there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.bundle import BundleError
from edgerec.errors import EdgerecError, InputError
from edgerec.ota import Channel, Release, channel_target

from .slots import SlotStore, atomic_file, unpack_bundle
from .update_check import ParityFailed, self_check

log = logging.getLogger(__name__)

__all__ = ["BundleUpdater", "UpdateError", "UpdateResult"]

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
TUF_DIR = "tuf"
DOWNLOADS = "downloads"
REFUSED = "refused.json"
DEVICE_ID = "device-id"


class UpdateError(EdgerecError):
    """An update could not be checked or installed (the message says why)."""


@dataclass
class UpdateResult:
    """What one :meth:`BundleUpdater.update` did (JSON-able with :meth:`to_json`).

    ``status``: ``"installed"`` (switched to ``version``), ``"current"`` (nothing to
    do), ``"refused"`` (the chosen bundle failed to open or its parity check and was
    not installed), ``"busy"`` (another update holds the lock) or ``"failed"``
    (network, TUF verification, size cap...; ``error`` says what).
    """

    status: str
    version: str | None = None
    previous: str | None = None
    wanted: str | None = None
    error: str | None = None
    bytes_downloaded: int = 0
    bytes_resumed: int = 0
    seconds: float = 0.0
    check: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BundleUpdater:
    """Keeps one device's bundle up to date from a TUF release repository.

    Args:
        repo_url: the repository's base URL (it serves ``metadata/`` and ``targets/``).
        state_dir: the device's update state (slots, pointers, TUF metadata, heads).
        device_id: this device's id for the rollout share (default: a random id kept in
            ``state_dir/device-id``).
        trusted_root: the repository's ``root.json`` provisioned with the device (a
            path or its bytes); needed on the first run only, afterwards the newest
            root TUF verified is used.
        channel: the release channel to follow.
        max_bytes: refuse bundle archives (and their unpacked contents) above this.
        open_kwargs: the :meth:`Recommender.open` options of the app (backend,
            precision...), used for the check before a switch.
        timeout: seconds per network operation.
    """

    def __init__(
        self,
        repo_url: str,
        state_dir: str | os.PathLike[str],
        device_id: str | None = None,
        trusted_root: str | os.PathLike[str] | bytes | None = None,
        *,
        channel: str = "stable",
        max_bytes: int = DEFAULT_MAX_BYTES,
        open_kwargs: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not repo_url.startswith(("http://", "https://")):
            raise InputError(f"repo_url must be an http(s) URL (got {repo_url!r})")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InputError(f"max_bytes must be a positive integer (got {max_bytes!r})")
        channel_target(channel)  # validates the name
        self.repo_url = repo_url.rstrip("/")
        self.dir = Path(state_dir)
        self.slots = SlotStore(self.dir)
        self.channel = channel
        self.max_bytes = max_bytes
        self.open_kwargs = dict(open_kwargs or {})
        self.timeout = timeout
        self.device_id = device_id or self._saved_device_id()
        self._trusted_root = trusted_root
        if trusted_root is None and not (self.dir / TUF_DIR / "root_history").is_dir():
            raise InputError(
                f"{self.dir}: no trusted TUF root yet; pass the repository's root.json "
                "(trusted_root=..., --root FILE) the first time"
            )

    # ------------------------------------------------------------------ state
    def current_version(self) -> str | None:
        return self.slots.current()

    def current_path(self) -> Path | None:
        """The folder of the current bundle (None before the first install)."""
        return self.slots.current_path()

    def refused(self) -> dict[str, str]:
        """Archives (by sha256) that failed their check here: sha256 -> reason."""
        try:
            data = json.loads((self.dir / REFUSED).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ update
    def update(self) -> UpdateResult:
        """Check for this device's release and install it (see the module docstring).

        Never raises for network, TUF, size or bundle trouble: that is the result's
        ``status``/``error``; the device stays on its current bundle.
        """
        t0 = time.perf_counter()
        result = UpdateResult("failed", previous=self.slots.previous())
        try:
            with self.slots.lock():
                self.slots.clean()
                self._update(result)
        except BlockingIOError:
            result.status, result.error = "busy", "another update is running"
        except ParityFailed as exc:
            result.status, result.error = "refused", str(exc)
        except EdgerecError as exc:
            result.error = str(exc)
        except Exception as exc:  # TUF's RepositoryError / DownloadError and the like
            result.error = f"{type(exc).__name__}: {exc}"
        result.version = self.slots.current()
        result.previous = self.slots.previous()
        result.seconds = time.perf_counter() - t0
        level = logging.WARNING if result.status in ("failed", "refused") else logging.INFO
        log.log(level, "update: %s", result.to_json())
        return result

    def _update(self, result: UpdateResult) -> None:
        from .update_fetch import ResumingFetcher

        fetcher = ResumingFetcher(
            self.dir / DOWNLOADS, f"{self.repo_url}/targets/bundles/", timeout=self.timeout
        )
        tuf = self._tuf(fetcher)
        try:
            release, info = self._choose(tuf)
            result.wanted = release.version
            if release.version == self.slots.current():
                result.status = "current"
                return
            sha = info.hashes["sha256"]
            if sha in self.refused():
                result.status = "refused"
                result.error = f"{release.version} failed here before: {self.refused()[sha]}"
                return
            if self.slots.has(release.version):  # e.g. a rollback to the previous bundle
                result.check = asdict(self._check(self.slots.path(release.version), sha))
                self.slots.switch(release.version)
            else:
                archive = self._download(tuf, fetcher, info, release)
                result.check = self._install(archive, release.version, sha)
                archive.unlink(missing_ok=True)
            result.status = "installed"
        finally:
            result.bytes_downloaded = fetcher.bytes_received
            result.bytes_resumed = fetcher.bytes_resumed
        self.slots.clean()

    def _tuf(self, fetcher: Any) -> Any:
        from tuf.ngclient import Updater

        meta_dir = self.dir / TUF_DIR
        meta_dir.mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(meta_dir),
            metadata_base_url=f"{self.repo_url}/metadata/",
            target_base_url=f"{self.repo_url}/targets/",
            fetcher=fetcher,
            bootstrap=self._root_bytes(meta_dir),
        )

    def _root_bytes(self, meta_dir: Path) -> bytes:
        """The newest root TUF verified here before, else the provisioned one."""
        history = sorted(
            (meta_dir / "root_history").glob("*.root.json"),
            key=lambda p: int(p.name.split(".")[0]) if p.name.split(".")[0].isdigit() else -1,
        )
        if history:
            return history[-1].read_bytes()
        root = self._trusted_root
        if root is None:
            raise InputError(
                f"{self.dir}: no trusted TUF root yet; pass the repository's root.json "
                "(trusted_root=..., --root FILE) the first time"
            )
        if isinstance(root, bytes):
            return root
        try:
            return Path(root).read_bytes()
        except OSError as exc:
            raise InputError(f"trusted root {root}: {exc}") from None

    def _choose(self, tuf: Any) -> tuple[Release, Any]:
        """Refresh the metadata and pick this device's release and its target info."""
        tuf.refresh()
        path = channel_target(self.channel)
        info = tuf.get_targetinfo(path)
        if info is None:
            raise UpdateError(f"the repository has no channel {self.channel!r}")
        if info.length > 1 << 20:
            raise UpdateError(f"channel document {path} is {info.length} bytes; refusing")
        doc = self.dir / DOWNLOADS / f"channel-{self.channel}.json"
        cached = tuf.find_cached_target(info, str(doc)) or tuf.download_target(info, str(doc))
        try:
            channel = Channel.from_json(json.loads(Path(cached).read_text()), path)
        except (OSError, ValueError) as exc:
            raise UpdateError(f"{path}: unreadable channel document ({exc})") from None
        release = channel.choose(self.device_id, self.slots.current())
        target = tuf.get_targetinfo(release.target)
        if target is None:
            raise UpdateError(f"channel {self.channel!r} names {release.target}, not signed")
        return release, target

    def _download(self, tuf: Any, fetcher: Any, info: Any, release: Release) -> Path:
        if info.length > self.max_bytes:
            raise UpdateError(
                f"{release.target} is {info.length} bytes, above this device's cap of "
                f"{self.max_bytes} (max_bytes / --max-bytes)"
            )
        archive = self.dir / DOWNLOADS / f"{info.hashes['sha256']}.tar"
        cached = tuf.find_cached_target(info, str(archive))
        if cached is not None:
            return Path(cached)
        from tuf.api.exceptions import DownloadLengthMismatchError, LengthOrHashMismatchError

        url = f"{self.repo_url}/targets/" + _hashed_path(info)
        try:
            tuf.download_target(info, str(archive))
        except (LengthOrHashMismatchError, DownloadLengthMismatchError):
            fetcher.forget(url)  # a torn or foreign partial download: start over next time
            archive.unlink(missing_ok=True)
            raise
        fetcher.forget(url)
        log.info("downloaded %s (%d bytes)", release.target, info.length)
        return archive

    def _install(self, archive: Path, version: str, sha: str) -> dict[str, Any]:
        incoming = self.slots.incoming()
        try:
            unpack_bundle(archive, incoming, self.max_bytes)
            check = self._check(incoming, sha)
            self.slots.commit(incoming, version)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self.slots.switch(version)
        return asdict(check)

    def _check(self, folder: Path, sha: str) -> Any:
        """Open + parity; a failure is recorded so this archive is not tried again."""
        try:
            return self_check(folder, self.open_kwargs)
        except BundleError as exc:
            self._refuse(sha, str(exc))
            raise ParityFailed(f"new bundle refused: {exc}") from None

    def _refuse(self, sha: str, reason: str) -> None:
        refused = {**self.refused(), sha: reason}
        with atomic_file(self.dir / REFUSED) as fh:
            fh.write(json.dumps(refused, indent=1).encode())

    # ------------------------------------------------------------------ rollback
    def rollback(self, reason: str = "requested") -> str | None:
        """Make the previous bundle current again; returns it (None: there is none).

        The failed slot is removed by the next update, which downloads and checks
        that version again if the channel still names it.
        """
        with self.slots.lock():
            failed = self.slots.current()
            back = self.slots.rollback()
            if back is not None:
                log.warning("rolled back from %s to %s: %s", failed, back, reason)
            return back

    def open_recommender(self, check: bool = True, **kwargs: Any) -> Any:
        """Open the current bundle (with its head); roll back to the previous one when
        it fails to open or, with ``check``, fails its reference-vector parity.

        ``kwargs`` go to :meth:`Recommender.open` (default: this updater's
        ``open_kwargs``).
        """
        from .recommender import Recommender

        opts = {**self.open_kwargs, **kwargs}
        for attempt in range(2):
            path = self.slots.current_path()
            if path is None:
                raise UpdateError(f"{self.dir}: no bundle installed yet; run an update first")
            try:
                if check:
                    self_check(path, opts)
                rec = Recommender.open(path, **opts)
            except BundleError as exc:
                if attempt or self.rollback(str(exc)) is None:
                    raise
                log.warning("current bundle %s failed (%s); rolled back", path.name, exc)
                continue
            head_version, bias = self.slots.load_head(path.name)
            if bias is not None and bias.shape == (rec.vocab.num_items,):
                rec.set_global_bias(bias, version=head_version)
            return rec
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ heads
    def save_head(
        self, head_version: int, bias: np.ndarray, bundle_version: str | None = None
    ) -> None:
        """Keep a federated head for the bundle version it was trained for (default:
        the current one)."""
        version = bundle_version or self.slots.current()
        if version is None:
            raise UpdateError("no bundle installed: a head needs the bundle it belongs to")
        self.slots.save_head(version, head_version, bias)

    def load_head(self, bundle_version: str | None = None) -> tuple[int | None, Any]:
        """The head kept for a bundle version (default: the current one)."""
        version = bundle_version or self.slots.current()
        return (None, None) if version is None else self.slots.load_head(version)

    def slot_of(self, bundle_root: str | os.PathLike[str]) -> str | None:
        """The bundle version whose slot ``bundle_root`` is (a Recommender's
        ``manifest.root``); None for a folder outside this updater's slots. Lets a
        sync client keep heads under the version of the bundle it actually runs."""
        try:
            root = Path(bundle_root).resolve()
            slots = self.slots.path(root.name).parent.resolve()
        except (OSError, InputError, ValueError):
            return None
        return root.name if root.parent == slots and root.is_dir() else None

    # ------------------------------------------------------------------ helpers
    def _saved_device_id(self) -> str:
        path = self.dir / DEVICE_ID
        with contextlib.suppress(OSError):
            saved = path.read_text().strip()
            if saved:
                return saved
        self.dir.mkdir(parents=True, exist_ok=True)
        new = uuid.uuid4().hex
        with atomic_file(path) as fh:
            fh.write(new.encode())
        return new


def _hashed_path(info: Any) -> str:
    """The consistent-snapshot file name TUF downloads a target from."""
    dirname, sep, base = info.path.rpartition("/")
    return f"{dirname}{sep}{info.hashes['sha256']}.{base}"
