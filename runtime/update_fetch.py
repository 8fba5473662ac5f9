"""HTTP for the TUF client: streamed, standard library only, resuming bundle downloads.

python-tuf's ``ngclient`` asks a *fetcher* for the bytes of a URL and checks them
itself (length cap while streaming, then length and hashes from signed metadata).
This fetcher keeps every target download it streams in ``<partial_dir>/<key>.part``;
when a download is cut (network, ``kill -9``, power), the next attempt replays the
bytes it already has and asks the server only for the rest with an HTTP ``Range``
request. TUF still hashes the whole file, so a replayed prefix is never trusted on
its own: a torn or foreign ``.part`` fails the hash check and the caller deletes it
(:meth:`ResumingFetcher.forget`). A server that ignores ``Range`` (answers 200) just
costs a full download.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

log = logging.getLogger(__name__)

__all__ = ["ResumingFetcher"]

CHUNK = 64 * 1024


class ResumingFetcher(FetcherInterface):
    """A :class:`FetcherInterface` on ``urllib`` that resumes downloads under ``resume_prefix``.

    Args:
        partial_dir: where partial downloads are kept between attempts.
        resume_prefix: URLs starting with this are resumable (the targets base URL);
            metadata is always fetched whole (it is small and changes).
        timeout: seconds per socket operation.
        user_agent: the ``User-Agent`` header.
    """

    def __init__(
        self,
        partial_dir: Path,
        resume_prefix: str,
        timeout: float = 30.0,
        user_agent: str = "edgerec-device",
    ) -> None:
        self.partial_dir = Path(partial_dir)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.resume_prefix = resume_prefix
        self.timeout = timeout
        self.user_agent = user_agent
        self.bytes_received = 0  # from the network, replayed bytes not counted
        self.bytes_resumed = 0  # replayed from .part files

    def part_path(self, url: str) -> Path:
        return self.partial_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")

    def forget(self, url: str) -> None:
        """Drop the partial download of ``url`` (after it failed verification or was used)."""
        self.part_path(url).unlink(missing_ok=True)

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self.resume_prefix):
            resp = self._open(url, 0)
            return self._stream(resp, None)
        part = self.part_path(url)
        have = part.stat().st_size if part.exists() else 0
        resp = self._open(url, have)
        if have and resp.status == 206 and _range_start(resp) == have:
            log.info("resuming %s at byte %d", url, have)
            return self._resume(part, resp)
        if have:
            log.info("server did not resume %s; downloading it again", url)
        return self._stream(resp, part.open("wb"))

    def _open(self, url: str, start: int) -> Any:
        headers = {"User-Agent": self.user_agent}
        if start:
            headers["Range"] = f"bytes={start}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:  # the .part is as long as the file or longer
                self.forget(url)
                return self._open(url, 0)
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise exceptions.DownloadError(f"{url}: {exc}") from exc

    def _resume(self, part: Path, resp: Any) -> Iterator[bytes]:
        with part.open("rb") as old:
            while chunk := old.read(CHUNK):
                self.bytes_resumed += len(chunk)
                yield chunk
        yield from self._stream(resp, part.open("ab"))

    def _stream(self, resp: Any, sink: IO[bytes] | None) -> Iterator[bytes]:
        expected = resp.headers.get("Content-Length")
        got = 0
        try:
            with resp:
                while chunk := resp.read(CHUNK):
                    got += len(chunk)
                    self.bytes_received += len(chunk)
                    if sink is not None:
                        sink.write(chunk)
                        sink.flush()
                    yield chunk
            if expected is not None and expected.isdigit() and got < int(expected):
                # a cut connection, not a short file: keep the .part for the next attempt
                raise exceptions.DownloadError(
                    f"{resp.url}: connection closed after {got} of {expected} bytes"
                )
        except (OSError, http.client.HTTPException) as exc:  # reset, cut (IncompleteRead)
            raise exceptions.DownloadError(f"{resp.url}: {exc!r}") from exc
        finally:
            if sink is not None:
                sink.close()


def _range_start(resp: Any) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` answer."""
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
