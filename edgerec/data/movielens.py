"""MovieLens-100K, taken from the copy bundled in the ``recbole==1.2.1`` wheel.

The wheel is fetched with ``pip download`` (never installed), its sha256 is checked
against a pinned value, and only ``recbole/dataset_example/ml-100k/*`` is
extracted — into ``$EDGEREC_CACHE/movielens-100k/`` (default
``~/.cache/edgerec/movielens-100k/``). Every extracted file has a pinned sha256
too; a cache whose files match is reused without any network access.

Files: ``ml-100k.inter`` (user_id, item_id, rating, timestamp — 100,000 ratings of
943 users on 1,682 movies), ``ml-100k.item``, ``ml-100k.user``, ``ml-100k.kg``
and ``ml-100k.link``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgerec._hashing import sha256_file
from edgerec.errors import EdgerecError

log = logging.getLogger(__name__)

ENV_CACHE = "EDGEREC_CACHE"
DATASET_DIR = "movielens-100k"
INTER_FILE = "ml-100k.inter"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
FILE_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}
PIP_TIMEOUT_S = 600


class FetchError(EdgerecError):
    """A dataset could not be downloaded or failed its integrity check."""

    exit_code = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The edgerec cache directory: ``cache_dir``, else ``$EDGEREC_CACHE``, else
    ``~/.cache/edgerec``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "edgerec"


def verify_dataset_dir(directory: Path) -> str | None:
    """None when ``directory`` holds every file with its pinned hash, else the problem."""
    for name, expected in FILE_SHA256.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        actual = sha256_file(path)
        if actual != expected:
            return f"{path} has sha256 {actual}, expected {expected}"
    return None


def fetch_movielens_100k(
    cache_dir: str | Path | None = None,
    *,
    wheel: str | Path | None = None,
    download: bool = True,
) -> Path:
    """Make sure MovieLens-100K is in the cache and return the path of ``ml-100k.inter``.

    Args:
        cache_dir: cache root (default ``$EDGEREC_CACHE`` or ``~/.cache/edgerec``);
            the data goes to ``<cache_dir>/movielens-100k/``.
        wheel: a ``recbole-1.2.1-py3-none-any.whl`` already on disk (offline use);
            otherwise it is fetched with ``python -m pip download``.
        download: when False, only a valid cache (or ``wheel``) is used.

    Raises:
        FetchError: pip download failed (e.g. no network), a hash does not match,
            or the cache is invalid and ``download`` is False.
    """
    root = cache_root(cache_dir)
    target = root / DATASET_DIR
    problem = verify_dataset_dir(target) if target.exists() else f"{target} does not exist"
    if problem is None:
        log.debug("MovieLens-100K cache hit: %s", target)
        return target / INTER_FILE
    if target.exists():
        log.warning("MovieLens-100K cache is not valid (%s); fetching it again", problem)
    if wheel is None and not download:
        raise FetchError(
            f"MovieLens-100K is not in the cache: {problem}. Run `edgerec data fetch "
            f"movielens-100k` (needs network) or remove {target} and fetch again"
        )
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DATASET_DIR}.", dir=root))
    try:
        wheel_path = Path(wheel) if wheel is not None else _pip_download(work / "wheel")
        _verify_wheel(wheel_path)
        staged = work / DATASET_DIR
        _extract(wheel_path, staged)
        problem = verify_dataset_dir(staged)
        if problem is not None:
            raise FetchError(f"extracted MovieLens-100K failed its integrity check: {problem}")
        (staged / "SOURCE.json").write_text(
            json.dumps(
                {"wheel": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256, "files": FILE_SHA256},
                indent=2,
            ),
            encoding="utf-8",
        )
        _install(staged, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("MovieLens-100K ready in %s", target)
    return target / INTER_FILE


def _pip_download(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        RECBOLE_REQUIREMENT,
    ]
    log.info("downloading %s (MovieLens-100K is bundled in it): %s", WHEEL_NAME, " ".join(cmd))
    offline_hint = (
        "Check the network or proxy settings (pip honours PIP_INDEX_URL and HTTPS_PROXY), or "
        f"on a machine with network run `pip download --no-deps --only-binary=:all: "
        f"{RECBOLE_REQUIREMENT}`, copy {WHEEL_NAME} here and pass it with "
        f"`edgerec data fetch movielens-100k --wheel {WHEEL_NAME}`"
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FetchError(
            f"pip download of {RECBOLE_REQUIREMENT} timed out. {offline_hint}"
        ) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(
            f"could not download {RECBOLE_REQUIREMENT} with pip (exit {proc.returncode}):\n"
            f"{tail}\n{offline_hint}"
        )
    found = sorted(dest.glob("recbole-1.2.1-*.whl"))
    if not found:
        raise FetchError(f"pip download succeeded but no {WHEEL_NAME} in {dest}. {offline_hint}")
    return found[0]


def _verify_wheel(path: Path) -> None:
    if not path.is_file():
        raise FetchError(f"{path}: wheel file not found")
    actual = sha256_file(path)
    if actual != WHEEL_SHA256:
        raise FetchError(
            f"{path}: sha256 {actual} does not match the pinned {WHEEL_SHA256} of {WHEEL_NAME}; "
            "the file is corrupt or not the official wheel — delete it and download again"
        )


def _extract(wheel_path: Path, staged: Path) -> None:
    staged.mkdir(parents=True)
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(MEMBER_PREFIX) or info.is_dir():
                    continue
                name = info.filename[len(MEMBER_PREFIX) :]
                if "/" in name or name in ("", ".", ".."):
                    continue  # only the files directly in ml-100k/
                with zf.open(info) as src, open(staged / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel_path}: not a valid wheel ({exc})") from None


def _install(staged: Path, target: Path, work: Path) -> None:
    """Move ``staged`` to ``target`` with renames (same filesystem), replacing a bad copy."""
    if target.exists():
        target.rename(work / "previous")
    try:
        staged.rename(target)
    except OSError:
        # Another process installed it between our check and the rename.
        if verify_dataset_dir(target) is not None:
            raise
