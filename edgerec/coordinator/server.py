"""Run the coordinator app under uvicorn (``edgerec coordinator serve``).

By default one process owns a database: an exclusive lock on ``<db>.lock`` (SQLite)
or an exclusive advisory lock (PostgreSQL) refuses a second server. On PostgreSQL,
``--workers N`` runs N processes on one listening socket and ``--shared-db`` lets
independent hosts serve one database; both share the database
(:meth:`~edgerec.coordinator.storage.Storage.share`), so rounds move exactly once
whichever process a request reaches. Rate limits stay per process. The CLI's
``open-round --db`` / ``status --db`` may still use the database while the server
runs (SQLite WAL, short transactions).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerec.errors import InputError

from .config import ServerConfig
from .security import EnrollKeys
from .storage import open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``serve`` needs (the CLI flags)."""

    db: str
    bundle: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    certfile: str | None = None
    keyfile: str | None = None
    enroll_key_file: str | None = None
    admin_token_file: str | None = None
    config: ServerConfig = ServerConfig()
    log_level: str = "info"
    access_log: bool = False
    http: str = "auto"
    log_format: str = "text"
    insecure_http: bool = False
    workers: int = 1
    shared_db: bool = False

    @property
    def multi_process(self) -> bool:
        """Whether other processes may serve the same database."""
        return self.workers > 1 or self.shared_db


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``localhost``, 127/8, ::1)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(opts: ServeOptions) -> None:
    """Refuse plain HTTP on a non-loopback address unless ``--insecure-http`` says so:
    device tokens and enrollment keys would cross the network in clear text."""
    if opts.certfile or opts.insecure_http or is_loopback(opts.host):
        return
    raise InputError(
        f"refusing to serve plain HTTP on {opts.host}: device tokens and enrollment keys "
        "would travel in clear text. Give --certfile and --keyfile, bind a loopback "
        "address (127.0.0.1), or pass --insecure-http if a TLS proxy terminates in front"
    )


def read_secret(path: str | None, env: str) -> str | None:
    """First non-empty line of ``path``, else the environment variable ``env``."""
    if path:
        try:
            lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None
        if not lines:
            raise InputError(f"{path}: empty")
        return lines[0]
    return os.environ.get(env) or None


@contextlib.contextmanager
def db_lock(storage_path: Path | None) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively for the life of the server."""
    if storage_path is None:
        yield
        return
    lock_path = storage_path.with_name(storage_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{storage_path}: another coordinator is serving this database "
                f"({lock_path} is locked); one process per database"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def serve(opts: ServeOptions) -> None:
    """Run the coordinator until interrupted: one process, or ``opts.workers``
    processes sharing one listening socket and one PostgreSQL database."""
    if opts.workers < 1:
        raise InputError(f"--workers must be at least 1, not {opts.workers}")
    if opts.multi_process and not opts.db.startswith(("postgresql://", "postgres://")):
        raise InputError(
            f"--workers {opts.workers}{' --shared-db' if opts.shared_db else ''}: several "
            "coordinator processes need a PostgreSQL database (--db postgresql://...); "
            "SQLite is served by one process"
        )
    if opts.workers == 1:
        serve_process(opts)
        return
    supervise_workers(opts)


def supervise_workers(opts: ServeOptions) -> None:
    """Bind the port once, start ``opts.workers`` serving processes on it and wait;
    SIGINT/SIGTERM stop them all. A worker that dies is not replaced: the others
    carry its rounds on (the database holds everything it acknowledged)."""
    import multiprocessing
    import shutil
    import signal
    import socket
    import tempfile

    from .metrics import MULTIPROC_ENV

    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((opts.host, opts.port))
    except OSError as exc:
        raise InputError(f"cannot listen on {opts.host}:{opts.port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    # one Prometheus multiprocess folder: /metrics sums every worker's counters
    metrics_dir = tempfile.mkdtemp(prefix="edgerec-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # the spawned workers inherit it
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_worker_main, args=(opts, sock), name=f"coordinator-{i}")
        for i in range(opts.workers)
    ]
    for w in workers:
        w.start()
    log.info("supervising %d coordinator processes on port %d", len(workers), opts.port)

    def stop(signum: int, frame: object) -> None:
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in workers:
            w.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [w.name for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        log.warning("coordinator processes that ended abnormally: %s", ", ".join(failed))


def _worker_main(opts: ServeOptions, sock: Any) -> None:
    """One worker of :func:`supervise_workers` (a spawned process)."""
    if opts.log_format == "json":
        from .logformat import use_json_logs

        use_json_logs()
    else:
        logging.basicConfig(
            level=opts.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
        )
    serve_process(opts, sockets=[sock])


def serve_process(opts: ServeOptions, sockets: list[Any] | None = None) -> None:
    """Open the database, build the app and run uvicorn in this process until
    interrupted (on ``sockets`` when given, else on ``opts.host:opts.port``)."""
    import uvicorn

    from .app import create_app
    from .service import Coordinator, model_from_bundle

    if bool(opts.certfile) != bool(opts.keyfile):
        raise InputError("TLS needs both --certfile and --keyfile")
    check_transport(opts)
    for path in (opts.certfile, opts.keyfile):
        if path and not Path(path).is_file():
            raise InputError(f"{path}: not found")
    enroll_keys = EnrollKeys.from_file(opts.enroll_key_file) if opts.enroll_key_file else None
    env_key = os.environ.get("EDGEREC_ENROLL_KEY")
    if enroll_keys is None and env_key:
        enroll_keys = EnrollKeys([env_key])
    if enroll_keys is None:
        log.warning("no --enroll-key-file: enrollment is closed")
    admin_token = read_secret(opts.admin_token_file, "EDGEREC_ADMIN_TOKEN")
    if admin_token is None:
        log.warning("no --admin-token-file: the admin API is disabled (use the CLI with --db)")
    storage = open_storage(opts.db)
    if opts.multi_process:
        storage.share()
    path = None if getattr(storage, "memory", True) else Path(storage.path).resolve()
    with db_lock(path), storage.serve_lock():
        model = model_from_bundle(opts.bundle) if opts.bundle else None
        coordinator = Coordinator(
            storage, model, enroll_keys, admin_token=admin_token, config=opts.config
        )
        app = create_app(coordinator)
        scheme = "https" if opts.certfile else "http"
        log.info(
            "serving model %s on %s://%s:%d (db %s)",
            coordinator.model["id"],
            scheme,
            opts.host,
            opts.port,
            storage.url,
        )
        config = uvicorn.Config(
            app,
            host=opts.host,
            port=opts.port,
            ssl_certfile=opts.certfile,
            ssl_keyfile=opts.keyfile,
            log_level=opts.log_level,
            access_log=opts.access_log,
            timeout_keep_alive=30,
            http=opts.http,
            server_header=False,
            # JSON logs: uvicorn's own loggers propagate to the root's JSON handler
            **({"log_config": None} if opts.log_format == "json" else {}),
        )
        try:
            uvicorn.Server(config).run(sockets=sockets)
        finally:
            coordinator.close()
