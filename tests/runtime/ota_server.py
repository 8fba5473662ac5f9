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
