"""A throw-away PostgreSQL server for the tests: ``initdb`` in a temp dir, a unix socket.

The server is real (the binaries of the machine's PostgreSQL); nothing is mocked.
It listens only on a unix socket inside its own temp dir, so it can clash with no
other server. As root, ``initdb`` and ``postgres`` refuse to run, so they run as
the ``postgres`` user (``runuser``). ``fsync`` is off: the tests check logic, as
the SQLite tests do with ``synchronous=normal``; a killed coordinator process
still loses nothing because the server holds every committed row. The benchmarks
start it with ``durable=True`` (the server's defaults: ``fsync``, full-page writes),
so that a commit is as durable as SQLite's ``synchronous=FULL`` they compare it with.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with "
    "'.ci/ensure-postgres.sh' (runs: apt-get install -y postgresql; 'make test' calls it) or set "
    "EDGEREC_PG_BIN to their folder"
)
PORT = 5432  # only names the socket file inside our own directory


def find_bin_dir() -> Path | None:
    """Folder of ``initdb``/``pg_ctl``: $EDGEREC_PG_BIN, Debian's layout, else PATH."""
    candidates = []
    if os.environ.get("EDGEREC_PG_BIN"):
        candidates.append(os.environ["EDGEREC_PG_BIN"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).parent))
    for folder in candidates:
        if all((Path(folder) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


class PgCluster:
    """``start()`` a fresh cluster, hand out one empty schema per test, ``stop()``."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="edgerec-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.user = None if os.geteuid() != 0 else "postgres"
        self._count = 0
        self._admin = None

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> PgCluster:
        if self.user:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise RuntimeError(
                    f"no {self.user!r} user to run PostgreSQL as; {INSTALL_HINT}"
                ) from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "--locale=C", "--encoding=UTF8",
        )  # fmt: skip
        opts = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' -p {PORT} "
            "-c max_connections=200 "
        )
        if self.durable:
            opts += "-c shared_buffers=128MB"
        else:
            opts += "-c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts,
            "start",
        )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                self._admin = psycopg.connect(self.base_url, autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={PORT}"

    def new_schema(self) -> str:
        """A URL whose tables live in a fresh, empty schema (one per test)."""
        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        self._admin.execute(f"CREATE SCHEMA {name}")
        return f"{self.base_url}&options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        try:
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
