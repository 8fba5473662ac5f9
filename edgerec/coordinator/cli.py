"""``edgerec coordinator``: serve the federated coordinator and operate its rounds.

FastAPI/uvicorn are imported inside the handlers only, so ``edgerec --help`` stays
fast and works without the ``coordinator`` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edgerec.errors import EdgerecError, InputError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  edgerec coordinator keygen --out secrets/enroll.key
  edgerec coordinator keygen --out secrets/admin.token
  edgerec coordinator serve --bundle bundles/ml100k --db sqlite:///coordinator.db \\
      --enroll-key-file secrets/enroll.key --admin-token-file secrets/admin.token
  edgerec coordinator open-round --db sqlite:///coordinator.db --cohort-target 100 \\
      --min-cohort 50 --deadline-s 600 --clip 1.0 --noise-multiplier 1.1 \\
      --target-epsilon 8 --delta 1e-5
  edgerec coordinator status --url http://127.0.0.1:8080 --json
  edgerec coordinator revoke-device --db sqlite:///coordinator.db d-0123456789abcdef01234567
  edgerec coordinator enroll-key add --db sqlite:///coordinator.db --quota 100 --label lab

exit codes: 0 ok; 1 unexpected error; 2 bad input, or the coordinator refused
(the message says why); 3 the privacy budget is exhausted (no round opened).
"""

SERVE_EPILOG = """\
examples:
  edgerec coordinator serve --bundle bundles/ml100k --db sqlite:///coordinator.db
  edgerec coordinator serve --bundle bundles/ml100k --db sqlite:///coordinator.db \\
      --host 0.0.0.0 --port 8443 --certfile tls/cert.pem --keyfile tls/key.pem \\
      --enroll-key-file secrets/enroll.key --admin-token-file secrets/admin.token

A non-loopback --host needs TLS (--certfile/--keyfile) or an explicit
--insecure-http (e.g. behind a TLS-terminating proxy): device tokens and
enrollment keys must not cross a network in clear text.

The OpenAPI schema is served at /openapi.json (docs at /docs). State lives in the
database only: a killed server restarts from it and finishes the running round.
Enrollment keys: one per line in --enroll-key-file (or $EDGEREC_ENROLL_KEY); the
admin token: --admin-token-file (or $EDGEREC_ADMIN_TOKEN).
"""

OPEN_EPILOG = """\
examples:
  edgerec coordinator open-round --db sqlite:///coordinator.db --cohort-target 10 \\
      --min-cohort 8
  edgerec coordinator open-round --url https://coord:8443 --admin-token-file admin.token \\
      --cohort-target 1000 --min-cohort 500 --noise-multiplier 1.1 --target-epsilon 8

With --db the round is written to the database directly (a running server picks it
up within a tick); with --url it goes through the admin API. Exit code 3 when the
privacy budget would be exceeded.
"""

MIGRATE_EPILOG = """\
examples:
  edgerec coordinator migrate --db sqlite:///coordinator.db
  edgerec coordinator migrate --db postgresql://edgerec@db.internal/edgerec --json

Applies the schema steps a database lacks, in one transaction per database (back
it up first). A new database is created at the newest version; a database at a
newer version than this edgerec knows is refused (exit 2) and left untouched.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``coordinator`` and its actions to the top-level sub-parsers."""
    from edgerec.cli_help import HelpFormatter

    p = sub.add_parser(
        "coordinator",
        help="federated coordinator: serve, open rounds, status",
        description="The federated-learning coordinator: secure aggregation of device "
        "updates with differential privacy, published as new head versions.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="coordinator_command", metavar="ACTION")

    s = actions.add_parser(
        "serve",
        help="run the HTTP service",
        epilog=SERVE_EPILOG,
        formatter_class=HelpFormatter,
    )
    s.add_argument("--bundle", help="bundle directory (binds a new database to its model)")
    s.add_argument("--db", default="sqlite:///coordinator.db", help="database URL")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--certfile", help="TLS certificate (PEM); enables HTTPS")
    s.add_argument("--keyfile", help="TLS private key (PEM)")
    s.add_argument("--enroll-key-file", help="enrollment keys, one per line")
    s.add_argument("--admin-token-file", help="admin bearer token for /v1/admin")
    s.add_argument("--max-body-bytes", type=int, help="request body limit (default: derived)")
    s.add_argument("--device-rate", type=float, default=5.0, help="requests/s per device")
    s.add_argument("--device-burst", type=int, default=60, help="burst per device")
    s.add_argument("--anon-rate", type=float, default=2.0, help="enrollment requests/s per address")
    s.add_argument("--anon-burst", type=int, default=20, help="enrollment burst per address")
    s.add_argument("--tick", type=float, default=0.5, help="seconds between deadline checks")
    s.add_argument("--target-epsilon", type=float, help="default privacy budget of rounds")
    s.add_argument(
        "--epsilon-ceiling",
        type=float,
        default=8.0,
        help="most epsilon any round's budget may reach; admin requests cannot raise it",
    )
    s.add_argument("--token-ttl-days", type=float, default=30.0, help="lifetime of a device token")
    s.add_argument(
        "--token-refresh-days",
        type=float,
        default=7.0,
        help="devices rotate their token in this window before it expires",
    )
    s.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (e.g. behind a TLS proxy)",
    )
    s.add_argument(
        "--auto-round",
        type=Path,
        help="JSON round settings (as for /v1/admin/rounds): open rounds one after the "
        "other until the privacy budget is spent",
    )
    s.add_argument("--round-interval", type=float, default=0.0, help="seconds between auto rounds")
    s.add_argument(
        "--federated-eval",
        action="store_true",
        help="publish a trained head only after an evaluation round on the devices finds it "
        "not worse than the current one (a one-sided test on their held-out events)",
    )
    s.add_argument("--eval-events", type=int, default=5, help="held-out events per device")
    s.add_argument("--eval-alpha", type=float, default=0.05, help="level of the evaluation's test")
    s.add_argument("--eval-min-events", type=int, default=100, help="fewest events for a decision")
    s.add_argument(
        "--eval-max-se",
        type=float,
        help="largest standard error of the NDCG@10 difference a decision may rest on "
        "(larger: inconclusive, not published)",
    )
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per log line (for log collectors)",
    )
    s.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="HTTP parser (auto: httptools when installed, else h11)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes on this port (PostgreSQL only; they share the database)",
    )
    s.add_argument(
        "--shared-db",
        action="store_true",
        help="other hosts serve the same PostgreSQL database too (implied by --workers > 1)",
    )
    s.set_defaults(handler=run_serve)

    o = actions.add_parser(
        "open-round",
        help="open a round for the current head",
        epilog=OPEN_EPILOG,
        formatter_class=HelpFormatter,
    )
    _target(o)
    o.add_argument("--cohort-target", type=int, required=True)
    o.add_argument("--min-cohort", type=int, required=True)
    o.add_argument("--deadline-s", type=float, default=600.0)
    o.add_argument("--phase-timeout-s", type=float)
    o.add_argument("--clip", type=float, default=1.0)
    o.add_argument(
        "--noise-multiplier",
        type=float,
        help="z (default 1.0: differential privacy is on unless you choose otherwise)",
    )
    o.add_argument("--target-epsilon", type=float)
    o.add_argument("--delta", type=float)
    o.add_argument("--frac-bits", type=int)
    o.add_argument("--neighbour-degree", type=int)
    o.add_argument("--threshold", type=int)
    o.add_argument("--dropout", type=float, default=0.3)
    o.add_argument("--server-lr", type=float, default=1.0)
    o.add_argument(
        "--cohort-tail",
        type=float,
        default=1e-12,
        help="probability that the sample exceeds the round's cohort bound (added to delta)",
    )
    o.add_argument("--epochs", type=int, help="local epochs on the devices")
    o.add_argument("--lr", type=float, help="local learning rate on the devices")
    o.add_argument("--json", action="store_true", help="print the round as JSON")
    o.set_defaults(handler=run_open_round)

    st = actions.add_parser("status", help="head version, round, (ε, δ) spent")
    _target(st)
    st.add_argument("--json", action="store_true")
    st.add_argument(
        "--devices",
        action="store_true",
        help="list every device with its privacy ledger (with --url: needs the admin token)",
    )
    st.set_defaults(handler=run_status)

    from .cli_fleet import register_fleet

    register_fleet(actions)

    a = actions.add_parser("abort-round", help="end a running round as failed")
    _target(a)
    a.add_argument("round", type=int)
    a.set_defaults(handler=run_abort)

    m = actions.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        epilog=MIGRATE_EPILOG,
        formatter_class=HelpFormatter,
    )
    m.add_argument("--db", required=True, help="database URL")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(handler=run_migrate)

    k = actions.add_parser("keygen", help="write a random secret (enrollment key / admin token)")
    k.add_argument("--out", required=True, type=Path, help="file to write (mode 0600)")
    k.add_argument("--force", action="store_true", help="overwrite an existing file")
    k.set_defaults(handler=run_keygen)


def _target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--db", help="database URL (work on the database directly)")
    g.add_argument("--url", help="coordinator base URL (go through the HTTP API)")
    p.add_argument("--admin-token-file", help="admin token (with --url)")
    p.add_argument("--cafile", help="CA bundle to verify the coordinator's TLS certificate")


def _require_extra() -> None:
    from edgerec._deps import require

    for module in ("fastapi", "uvicorn", "cryptography", "dp_accounting", "prometheus_client"):
        require(module, "coordinator")


# ---------------------------------------------------------------------- handlers
def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator serve``."""
    _require_extra()
    from .config import EvaluationConfig, RoundConfig, ServerConfig
    from .server import ServeOptions, serve

    auto = None
    if args.auto_round is not None:
        try:
            auto = RoundConfig.from_json(json.loads(args.auto_round.read_text()))
        except (OSError, ValueError) as exc:
            raise InputError(f"{args.auto_round}: {exc}") from None
    config = ServerConfig(
        auto_round=auto,
        round_interval_s=args.round_interval,
        max_body_bytes=args.max_body_bytes,
        device_rate=args.device_rate,
        device_burst=args.device_burst,
        anon_rate=args.anon_rate,
        anon_burst=args.anon_burst,
        tick_s=args.tick,
        default_target_epsilon=args.target_epsilon,
        epsilon_ceiling=args.epsilon_ceiling,
        token_ttl_s=args.token_ttl_days * 86400.0,
        token_refresh_s=args.token_refresh_days * 86400.0,
        evaluation=(
            EvaluationConfig(
                args.eval_events, args.eval_alpha, args.eval_min_events, args.eval_max_se
            )
            if args.federated_eval
            else None
        ),
    )
    if args.log_format == "json":
        from .logformat import use_json_logs

        use_json_logs()
    level = logging.getLogger().getEffectiveLevel()
    serve(
        ServeOptions(
            db=args.db,
            bundle=args.bundle,
            host=args.host,
            port=args.port,
            certfile=args.certfile,
            keyfile=args.keyfile,
            enroll_key_file=args.enroll_key_file,
            admin_token_file=args.admin_token_file,
            config=config,
            log_level=logging.getLevelName(level).lower(),
            access_log=args.access_log,
            http=args.http,
            log_format=args.log_format,
            insecure_http=args.insecure_http,
            workers=args.workers,
            shared_db=args.shared_db,
        )
    )
    return 0


def run_open_round(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator open-round``."""
    training = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    body = {
        "cohort_target": args.cohort_target,
        "min_cohort": args.min_cohort,
        "deadline_s": args.deadline_s,
        "phase_timeout_s": args.phase_timeout_s,
        "clip": args.clip,
        "noise_multiplier": args.noise_multiplier,
        "target_epsilon": args.target_epsilon,
        "delta": args.delta,
        "frac_bits": args.frac_bits,
        "neighbour_degree": args.neighbour_degree,
        "threshold": args.threshold,
        "dropout": args.dropout,
        "server_lr": args.server_lr,
        "training": training,
        "cohort_tail": args.cohort_tail,
    }
    if args.url:
        out = _http(
            args, "POST", "/v1/admin/rounds", {k: v for k, v in body.items() if v is not None}
        )
    else:
        from .config import RoundConfig

        with _local(args) as coordinator:
            rnd = coordinator.rounds.open_round(RoundConfig.from_json(body))
            out = coordinator.round_summary(rnd)
    if out["state"] == "failed":
        _print(out, args.json, f"round {out['round']} ({out['name']}) failed: {out['failure']}")
        return 1
    _print(
        out,
        args.json,
        f"opened round {out['round']} ({out['name']}) on head "
        f"v{out['base_version']}: {out['selected']} devices sampled (expected "
        f"{out['cohort_target']}, allowed {out['min_cohort']}..{out['max_cohort']}), "
        f"deadline in {args.deadline_s:g}s",
    )
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator status``."""
    devices = None
    if args.url:
        out = _http(args, "GET", "/v1/status")
        if args.devices:
            devices = _http(args, "GET", "/v1/admin/devices")
    else:
        with _local(args) as coordinator:
            out = coordinator.status(ledger=True)
            if args.devices:
                devices = coordinator.list_devices()
    if devices is not None:
        out["device_ledger"] = devices
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    priv = out["privacy"]
    rnd = out.get("round")
    eps = priv.get("epsilon")
    lines = [
        f"model      {out['model']['id']} ({out['model']['vector_length']} items)",
        f"head       v{out['head_version']}",
        f"devices    {out['devices']} enrolled",
        f"rounds     {out['rounds_done']} done, {out['rounds_failed']} failed",
        f"privacy    epsilon={'inf (no DP)' if eps is None else f'{eps:.4g}'} "
        f"delta={priv.get('delta')} over {priv['rounds']} rounds",
    ]
    if "device_privacy" in out:
        most = out["device_privacy"]["max_device_epsilon"]
        lines.append(
            f"per device {out['device_privacy']['devices_with_spend']} devices spent epsilon, "
            f"at most {'inf (no DP)' if most is None else f'{most:.4g}'} each "
            f"(ceiling {out.get('epsilon_ceiling')})"
        )
    for d in devices or []:
        p = d["privacy"]
        e = "inf" if p["epsilon"] is None else f"{p['epsilon']:.4g}"
        state = "revoked" if d["revoked"] else "active"
        lines.append(f"  {d['device_id']}  {state:7s}  epsilon={e} over {p['rounds']} rounds")
    if rnd:
        msgs = " ".join(f"{k}={v}" for k, v in rnd["messages"].items())
        lines.append(
            f"round      {rnd['round']} {rnd['state']} ({msgs})"
            + (f" failure: {rnd['failure']}" if rnd.get("failure") else "")
        )
    print("\n".join(lines))
    return 0


def run_abort(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator abort-round``."""
    if args.url:
        out = _http(args, "POST", f"/v1/admin/rounds/{args.round}/abort")
    else:
        with _local(args) as coordinator:
            out = coordinator.round_summary(coordinator.rounds.abort_round(args.round))
    print(f"round {out['round']}: {out['state']} ({out.get('failure')})")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator migrate``."""
    from .migrations import LATEST
    from .storage import open_storage

    with open_storage(args.db, migrate=True) as storage:
        out = {
            "db": storage.url,
            "found": storage.schema_found,
            "version": storage.schema_version,
            "latest": LATEST,
        }
    if out["found"] is None:
        text = f"{out['db']}: created at schema version {out['version']}"
    elif out["found"] == out["version"]:
        text = f"{out['db']}: schema version {out['version']} is current"
    else:
        text = f"{out['db']}: schema version {out['found']} -> {out['version']}"
    _print(out, args.json, text)
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator keygen``."""
    import os

    if args.out.exists() and not args.force:
        raise InputError(f"{args.out}: exists; pass --force to overwrite")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    print(f"wrote a new secret to {args.out} (mode 0600)")
    return 0


# ---------------------------------------------------------------------- helpers
class _local:  # noqa: N801 - used as a context manager
    """A Coordinator on ``--db`` (no bundle needed: the database knows its model)."""

    def __init__(self, args: argparse.Namespace) -> None:
        _require_extra()
        from .service import Coordinator
        from .storage import open_storage

        self.coordinator = Coordinator(open_storage(args.db))

    def __enter__(self):
        return self.coordinator

    def __exit__(self, exc_type, exc, tb) -> None:
        self.coordinator.close()
        if exc is not None:
            _map_api_error(exc)


def _map_api_error(exc: Any) -> None:
    from .errors import ApiError

    if isinstance(exc, ApiError):
        if exc.code == "privacy_budget_exhausted":
            exc.exit_code = 3
        else:
            exc.exit_code = 2


def _http(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import ssl

    from .server import read_secret

    headers = {"accept": "application/json"}
    token = read_secret(args.admin_token_file, "EDGEREC_ADMIN_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(args.url.rstrip("/") + path, data, headers, method=method)
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
        except ValueError:
            err = {"error": "http", "detail": str(exc)}
        error = EdgerecError(f"{exc.code} {err.get('error')}: {err.get('detail')}")
        error.exit_code = 3 if err.get("error") == "privacy_budget_exhausted" else 2
        raise error from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot reach {args.url}: {exc.reason}") from None


def _print(out: Any, as_json: bool, text: str) -> None:
    print(json.dumps(out, indent=2) if as_json else text, file=sys.stdout)
