"""A real HTTP server for the OTA tests: a folder served on 127.0.0.1 in a thread.

``http.server`` with byte-range support added (``Range: bytes=N-``), as nginx,
Apache or any CDN offers, so resumed downloads are tested against real partial
responses. ``fail_after`` cuts target downloads after that many bytes (a dropped
connection) to exercise the resume path.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=START-`` answered by 206 Partial Content."""

    fail_after: int | None = None  # set on a subclass per server
    requests: list[tuple[str, str | None]]

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start = int(match.group(1)) if match else 0
        if start >= size and match:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        limit = self.fail_after if "/targets/bundles/" in self.path else None
        with path.open("rb") as fh:
            fh.seek(start)
            sent = 0
            while chunk := fh.read(16384):
                if limit is not None and sent + len(chunk) > limit:
                    self.wfile.write(chunk[: max(0, limit - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                sent += len(chunk)


class Server:
    """A running server: ``url``, ``requests`` seen, ``fail_after`` adjustable."""

    def __init__(self, root: Path) -> None:
        handler = type("Handler", (RangeHandler,), {"requests": []})
        self.handler = handler
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=os.fspath(root))
        )
        # clients killed mid-response (the kill test) reset connections: not an error here
        self.httpd.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.handler.requests

    def set_fail_after(self, n: int | None) -> None:
        self.handler.fail_after = n


@contextmanager
def serve(root: Path) -> Iterator[Server]:
    """Serve ``root`` on 127.0.0.1 (a free port) for the duration of the block."""
    server = Server(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# --------------------------------------------------------------------------- bundles
def bundle_variant(
    src: Path, out: Path, version: str, change: Callable[[Path, dict], None] | None = None
) -> Path:
    """A copy of the bundle ``src`` at ``out`` whose model version is ``version``.

    ``change(root, manifest)`` may edit files and the manifest dict; the manifest's
    sha256 and size of every listed file are recomputed afterwards, so the copy is a
    consistent bundle (hashes match) — what a broken build, not an attacker, produces.
    """
    import hashlib
    import json
    import shutil

    shutil.copytree(src, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["model"]["version"] = version
    if change is not None:
        change(out, manifest)
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["bytes"] = len(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def run_update(repo_url: str, state: str, device_id: str, root: str) -> None:
    """One update in a child process (the kill test's victim)."""
    from edgerec.runtime.update import BundleUpdater

    BundleUpdater(repo_url, state, device_id, trusted_root=root).update()


# --------------------------------------------------------------------------- kill -9
@dataclass
class KillStats:
    """What :func:`kill_loop` did: every kill was followed by a successful check."""

    kills: int = 0  # processes killed while still running
    finished: int = 0  # processes that ended before their kill time
    checks: int = 0  # current slot opened and verified after a process ended
    switches: int = 0  # times the current version changed
    update_seconds: float = 0.0  # one full uninterrupted update (the kill window)
    leftovers: list[str] = field(default_factory=list)


def kill_loop(repo, url: str, state: Path, rounds: int, seed: int = 0) -> KillStats:
    """Start real update processes and ``kill -9`` each at a random moment.

    The channel flips between versions v1, v2 and v3 (every second round, so a cut
    download of one target is also resumed), each process is a fresh fork from a
    preloaded server (``multiprocessing`` forkserver: a real process that dies with
    SIGKILL mid-write), and after each one the current slot must open with
    ``Recommender.open`` (every file's sha256) and rank items. A final uninterrupted
    update must clean up and succeed.
    """
    import multiprocessing
    import os
    import random
    import signal
    import time

    from edgerec.bundle import open_bundle
    from edgerec.runtime import Recommender
    from edgerec.runtime.slots import SlotStore

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [__name__, "edgerec.runtime.update", "edgerec.runtime.update_fetch", "tuf.ngclient"]
    )
    root = str(repo.metadata_dir / "root.json")
    rng = random.Random(seed)
    stats = KillStats()
    versions = ("v1", "v2", "v3")

    def run(kill_after: float | None) -> bool:
        proc = ctx.Process(target=run_update, args=(url, str(state), "device-0", root))
        proc.start()
        proc.join(120 if kill_after is None else kill_after)
        alive = proc.is_alive()
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
        return alive

    def check() -> str:
        slots = SlotStore(state)
        current = slots.current()
        assert current is not None, "the device lost its current bundle"
        path = slots.path(current)
        assert open_bundle(path).model_version == current
        with Recommender.open(path, accelerator="cpu") as rec:
            assert len(rec.recommend(["i1", "i2", "i3"], k=5)) == 5
        stats.checks += 1
        return current

    repo.rollback("v1")
    run(None)
    last = check()
    repo.rollback("v2")
    t0 = time.perf_counter()
    run(None)
    stats.update_seconds = time.perf_counter() - t0
    for i in range(rounds):
        if i % 2 == 0:
            repo.rollback(versions[(i // 2) % 3])
        if run(rng.uniform(0.0, stats.update_seconds * 1.2)):
            stats.kills += 1
        else:
            stats.finished += 1
        now = check()
        stats.switches += now != last
        last = now
    assert not run(None), "an uninterrupted update must finish"
    final = check()
    stats.leftovers = sorted(
        p.name for p in (state / "slots").iterdir() if p.name.startswith(".incoming")
    )
    channel = repo.channel()
    assert final == channel.release.version, (final, channel)
    return stats
