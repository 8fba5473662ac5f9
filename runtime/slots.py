"""Bundle slots on the device: install into a fresh folder, switch atomically, keep one back.

Layout of the updater's ``state_dir``::

    slots/<version>/          complete, verified bundles (a name appears only once the
                              folder is complete and fsync'd)
    slots/.incoming-<random>/ an unpack in progress (removed by the next run)
    current -> slots/<v>      symlink: the bundle the app opens
    previous -> slots/<v>     symlink: the bundle before it (automatic rollback target)
    heads/<version>/          the federated head trained for that bundle version

Crash safety rests on three facts: a slot gets its final name by one ``rename`` after
every file and folder in it is fsync'd; ``current`` and ``previous`` are only ever
pointed at named slots, by creating a new symlink and ``os.replace``-ing it over the
old one (atomic on POSIX), followed by an fsync of ``state_dir``; and nothing a
pointer names is deleted (garbage collection spares both pointers' targets). A
``kill -9`` or power cut at any instant therefore leaves ``current`` on the old
complete bundle or on the new complete bundle, never on a partial one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from edgerec.bundle import BundleError
from edgerec.ota import check_name

log = logging.getLogger(__name__)

__all__ = ["SlotStore", "atomic_file", "fsync_dir", "unpack_bundle"]

SLOTS = "slots"
CURRENT = "current"
PREVIOUS = "previous"
HEADS = "heads"
INCOMING = ".incoming-"
LOCK = "update.lock"


class SlotStore:
    """The slot folders and the two pointers of one device (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.slots = self.dir / SLOTS
        self.slots.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive, non-blocking lock on the state folder (``BlockingIOError`` when
        another process holds it; the kernel releases it when a process dies, so a
        killed update never blocks the next one)."""
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ pointers
    def current(self) -> str | None:
        """The version ``current`` points at (None on a fresh device)."""
        return self._read(CURRENT)

    def previous(self) -> str | None:
        return self._read(PREVIOUS)

    def path(self, version: str) -> Path:
        return self.slots / check_name(version, "version")

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.path(version)

    def has(self, version: str) -> bool:
        return self.path(version).is_dir()

    def _read(self, name: str) -> str | None:
        try:
            target = os.readlink(self.dir / name)
        except FileNotFoundError:
            return None
        version = Path(target).name
        if Path(target).parent.name != SLOTS or not (self.slots / version).is_dir():
            log.warning("%s points at %s, which is not a slot; ignoring it", name, target)
            return None
        return version

    def _point(self, name: str, version: str | None) -> None:
        link = self.dir / name
        if version is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.dir / f".{name}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(f"{SLOTS}/{check_name(version, 'version')}", tmp)
            os.replace(tmp, link)
        fsync_dir(self.dir)

    # ------------------------------------------------------------------ install
    def incoming(self) -> Path:
        """A fresh folder to unpack a bundle into (not a slot until :meth:`commit`)."""
        return Path(tempfile.mkdtemp(prefix=INCOMING, dir=self.slots))

    def commit(self, incoming: Path, version: str) -> Path:
        """Give a complete, verified unpacked bundle its slot name (one rename)."""
        fsync_tree(incoming)
        final = self.path(version)
        if final.exists():  # left by a run that crashed before switching: not pointed at
            if version in (self.current(), self.previous()):
                raise BundleError(f"{final}: slot in use, refusing to replace it")
            shutil.rmtree(final)
        os.rename(incoming, final)
        fsync_dir(self.slots)
        return final

    def switch(self, version: str) -> None:
        """Make ``version`` current and keep the old current as previous."""
        old = self.current()
        if old == version:
            return
        if old is not None:
            self._point(PREVIOUS, old)
        self._point(CURRENT, version)
        log.info("switched current bundle %s -> %s", old, version)

    def rollback(self) -> str | None:
        """Point ``current`` back at ``previous`` (returns it; None when there is none)."""
        prev = self.previous()
        if prev is None:
            return None
        failed = self.current()
        self._point(CURRENT, prev)
        self._point(PREVIOUS, None)
        log.warning("rolled back from bundle %s to %s", failed, prev)
        return prev

    # ------------------------------------------------------------------ cleanup
    def clean(self) -> None:
        """Remove unfinished unpacks, stray pointer temp files and unreferenced slots."""
        keep = {v for v in (self.current(), self.previous()) if v is not None}
        for entry in self.slots.iterdir():
            if entry.name.startswith(INCOMING) or (entry.is_dir() and entry.name not in keep):
                shutil.rmtree(entry, ignore_errors=True)
        for stray in self.dir.glob(".*.tmp"):
            stray.unlink(missing_ok=True)

    # ------------------------------------------------------------------ heads
    def save_head(self, bundle_version: str, head_version: int, bias: np.ndarray) -> None:
        """Keep the federated head trained for ``bundle_version`` (bias first, then the
        ``head.json`` that vouches for it, each replaced atomically)."""
        folder = self.dir / HEADS / check_name(bundle_version, "bundle version")
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(bias, dtype="<f4")
        buf = folder / "global_bias.npy"
        with atomic_file(buf) as fh:
            np.save(fh, arr, allow_pickle=False)
        sha = hashlib.sha256(arr.tobytes()).hexdigest()
        with atomic_file(folder / "head.json") as fh:
            fh.write(json.dumps({"version": int(head_version), "sha256": sha}).encode())

    def load_head(self, bundle_version: str) -> tuple[int | None, np.ndarray | None]:
        """The head kept for ``bundle_version`` as ``(version, bias)``; ``(None, None)``
        when there is none or its files do not match."""
        folder = self.dir / HEADS / check_name(bundle_version, "bundle version")
        try:
            meta = json.loads((folder / "head.json").read_text())
            bias = np.load(folder / "global_bias.npy", allow_pickle=False).astype("<f4")
        except (OSError, ValueError):
            return None, None
        if hashlib.sha256(bias.tobytes()).hexdigest() != meta.get("sha256"):
            log.warning("%s: head files do not match; ignoring them", folder)
            return None, None
        return int(meta["version"]), bias.astype(np.float32)


class atomic_file:
    """``with atomic_file(path) as fh``: write a temp file, fsync, rename over ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> IO[bytes]:
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self.fh = os.fdopen(fd, "wb")
        return self.fh

    def __exit__(self, exc_type: type | None, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
        finally:
            self.fh.close()
        if exc_type is not None:
            Path(self.tmp).unlink(missing_ok=True)
            return
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)


def unpack_bundle(archive: Path, dest: Path, max_bytes: int) -> int:
    """Extract a bundle archive into ``dest``; returns the bytes written.

    Only regular files (and the folders that hold them) are accepted, every name must
    stay inside ``dest``, and the total size is capped: anything else raises
    :class:`BundleError` naming the member.
    """
    total = 0
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                name = member.name
                target = (dest / name).resolve()
                if name.startswith("/") or not target.is_relative_to(root) or target == root:
                    raise BundleError(f"{archive}: member {name!r} leaves the bundle folder")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise BundleError(f"{archive}: member {name!r} is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise BundleError(f"{archive}: unpacks to more than {max_bytes} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # a regular file always has contents
                with src, target.open("xb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, FileExistsError) as exc:
        raise BundleError(f"{archive}: not a valid bundle archive ({exc})") from None
    return total


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every folder (deepest first), of ``root``."""
    dirs = []
    for folder, _, files in os.walk(root):
        dirs.append(Path(folder))
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in reversed(dirs):
        fsync_dir(folder)
