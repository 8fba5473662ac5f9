"""``edgerec release``: publish bundle versions to devices through a TUF repository.

python-tuf (the ``coordinator`` extra) is imported inside the handlers only, so
``edgerec --help`` works without it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgerec.errors import MissingExtraError

EPILOG = """\
examples:
  edgerec release init repo/ --keys secrets/release-keys
  edgerec release publish repo/ bundles/ml100k --keys secrets/release-keys
  edgerec release publish repo/ bundles/ml100k-v2 --keys secrets/release-keys --percent 0
  edgerec release rollout repo/ --keys secrets/release-keys --percent 10
  edgerec release pause repo/ --keys secrets/release-keys
  edgerec release resume repo/ --keys secrets/release-keys
  edgerec release rollback repo/ --keys secrets/release-keys --to 1ca97186964c
  edgerec release refresh repo/ --keys secrets/release-keys    # from a daily timer
  edgerec release rotate-key repo/ --keys secrets/release-keys --role targets
  edgerec release status repo/ --json

Serve repo/ with any static web server; devices run `edgerec-device update`.
Provision each device with repo/metadata/root.json. Keep --keys off the server.

exit codes: 0 ok; 1 unexpected error; 2 bad input (the message says what)
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``release`` and its actions to the top-level sub-parsers."""
    from edgerec.cli_help import HelpFormatter

    p = sub.add_parser(
        "release",
        help="publish bundles to devices (TUF repository, staged rollout, rollback)",
        description="Publish bundle versions into a TUF repository that any static web "
        "server can serve; stage, pause, resume and roll back their rollout.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="release_command", metavar="ACTION")

    def action(name: str, help: str, keys: bool = True) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, epilog=EPILOG, formatter_class=HelpFormatter)
        a.add_argument("repo", type=Path, help="the repository folder")
        if keys:
            a.add_argument("--keys", type=Path, required=True, help="folder of the role keys")
        a.add_argument("--json", action="store_true", help="print the result as JSON")
        return a

    a = action("init", "create the keys (Ed25519) and an empty repository")
    a.set_defaults(handler=run_init)
    a = action("publish", "add a bundle version and release it on a channel")
    a.add_argument("bundle", type=Path, help="bundle directory (written by edgerec convert)")
    a.add_argument("--channel", default="stable")
    a.add_argument("--percent", type=float, default=100.0, help="share of devices (0-100)")
    a.add_argument("--version", help="release version (default: the manifest's model version)")
    a.set_defaults(handler=run_publish)
    a = action("rollout", "set the share of devices that take the channel's release")
    a.add_argument("--percent", type=float, required=True)
    a.add_argument("--channel", default="stable")
    a.set_defaults(handler=lambda args: _channel_op(args, "rollout", args.percent))
    for name, text in (("pause", "stop the rollout where it is"), ("resume", "continue it")):
        a = action(name, text)
        a.add_argument("--channel", default="stable")
        a.set_defaults(handler=lambda args, op=name: _channel_op(args, op))
    a = action("rollback", "point every device of a channel at a published version")
    a.add_argument("--to", required=True, dest="to_version", help="the version to go back to")
    a.add_argument("--channel", default="stable")
    a.set_defaults(handler=lambda args: _channel_op(args, "rollback", args.to_version))
    a = action("rotate-key", "replace a role's key (new root version; devices follow)")
    a.add_argument("--role", required=True, choices=("root", "targets", "snapshot", "timestamp"))
    a.set_defaults(handler=run_rotate)
    a = action("refresh", "re-sign snapshot and timestamp with fresh expiry dates")
    a.add_argument("--days", type=int, help="timestamp validity in days (default 7)")
    a.set_defaults(handler=run_refresh)
    a = action("status", "metadata versions, releases and channels", keys=False)
    a.set_defaults(handler=run_status)


def _repo(args: argparse.Namespace) -> Any:
    from importlib.util import find_spec

    if find_spec("tuf") is None:
        raise MissingExtraError("coordinator", "tuf")
    from .repository import ReleaseRepository

    return ReleaseRepository(args.repo, getattr(args, "keys", None) or args.repo / "no-keys")


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, indent=1) if args.json else text)
    return 0


def run_init(args: argparse.Namespace) -> int:
    _repo(args)  # checks the extra
    from .repository import ReleaseRepository

    repo = ReleaseRepository.init(args.repo, args.keys)
    root = repo.metadata_dir / "root.json"
    return _print(
        args,
        {"repository": str(repo.root), "root": str(root), "keys": str(repo.keys_dir)},
        f"initialised {repo.root}; provision devices with {root}; keep {repo.keys_dir} secret",
    )


def run_publish(args: argparse.Namespace) -> int:
    res = _repo(args).publish(args.bundle, args.channel, args.percent, args.version)
    data = {
        "version": res.release.version,
        "target": res.release.target,
        "bytes": res.bytes,
        "sha256": res.sha256,
        "channel": res.channel.to_json(),
    }
    return _print(
        args,
        data,
        f"published {res.release.version} ({res.bytes} bytes) to {args.channel} at "
        f"{res.channel.percent:g}%",
    )


def _channel_op(args: argparse.Namespace, op: str, *value: Any) -> int:
    ch = getattr(_repo(args), op)(*value, channel=args.channel)
    text = (
        f"{ch.name}: release {ch.release.version} at {ch.percent:g}%"
        f"{' (paused)' if ch.paused else ''}, baseline "
        f"{ch.baseline.version if ch.baseline else '-'}"
    )
    return _print(args, ch.to_json(), text)


def run_rotate(args: argparse.Namespace) -> int:
    keyid = _repo(args).rotate_key(args.role)
    return _print(args, {"role": args.role, "keyid": keyid}, f"new {args.role} key {keyid}")


def run_refresh(args: argparse.Namespace) -> int:
    repo = _repo(args)
    repo.refresh(args.days)
    return _print(args, repo.status(), f"re-signed snapshot and timestamp of {repo.root}")


def run_status(args: argparse.Namespace) -> int:
    status = _repo(args).status()
    lines = [
        f"{status['repository']}: targets v{status['versions']['targets']}, "
        f"timestamp expires {status['expires']['timestamp']}"
    ]
    for version, info in status["releases"].items():
        lines.append(f"  {version}: {info['bytes']} bytes")
    for name, ch in status["channels"].items():
        base = ch["baseline"]["version"] if ch["baseline"] else "-"
        lines.append(
            f"  channel {name}: {ch['release']['version']} at {ch['percent']:g}%"
            f"{' (paused)' if ch['paused'] else ''}, baseline {base}"
        )
    return _print(args, status, "\n".join(lines))
