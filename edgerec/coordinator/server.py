"""Run the coordinator app under uvicorn (``edgerec coordinator serve``).

One process owns a database: an exclusive lock on ``<db>.lock`` refuses a second
server on the same file (the in-memory rate limits and the cached SecAgg state
assume it). The CLI's ``open-round --db`` / ``status --db`` may still use the
database while the server runs (SQLite WAL, short transactions).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    """Open the database, build the app and run uvicorn until interrupted."""
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
            uvicorn.Server(config).run()
        finally:
            coordinator.close()
