"""``edgerec-device``: the update command of devices (TF-free, no coordinator needed).

For devices that do not join federated rounds (and for a systemd timer on those that
do): check the release repository and install this device's bundle version.

Exit codes: 0 installed or already current; 1 the update failed (network, TUF
verification, size cap — the device stays on its bundle); 2 bad usage; 3 the new
bundle was refused (it failed to open or its parity check on this device).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from edgerec.errors import EdgerecError

EPILOG = """\
examples:
  edgerec-device update --repo https://models.example/edgerec --state /var/lib/edgerec \\
      --root /etc/edgerec/root.json
  edgerec-device update --repo http://127.0.0.1:8000 --state state/ --json
  edgerec-device status --state /var/lib/edgerec
  edgerec-device rollback --state /var/lib/edgerec

exit codes: 0 installed or current; 1 update failed (device unchanged); 2 bad usage;
3 the new bundle was refused on this device (device unchanged)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgerec-device",
        description="Over-the-air bundle updates from an edgerec release repository (TUF).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("update", help="install this device's release if it changed")
    up.add_argument("--repo", required=True, help="base URL of the release repository")
    up.add_argument("--state", required=True, help="the device's update state folder")
    up.add_argument("--root", help="the repository's root.json (needed on the first run)")
    up.add_argument("--channel", default="stable", help="release channel (default: stable)")
    up.add_argument("--device-id", help="id for the rollout share (default: kept in --state)")
    up.add_argument(
        "--max-bytes", type=int, default=None, help="refuse larger bundles (default 512 MiB)"
    )
    up.add_argument("--backend", default="auto", help="Recommender backend for the check")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation")
    up.add_argument("--json", action="store_true", help="print the result as JSON")
    st = sub.add_parser("status", help="the installed bundle versions")
    st.add_argument("--state", required=True)
    st.add_argument("--json", action="store_true")
    rb = sub.add_parser("rollback", help="make the previous bundle current again")
    rb.add_argument("--state", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgerec-device`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from .slots import SlotStore

    try:
        if args.command == "status":
            slots = SlotStore(args.state)
            state = {"current": slots.current(), "previous": slots.previous()}
            print(
                json.dumps(state)
                if args.json
                else f"current {state['current']}, previous {state['previous']}"
            )
            return 0
        if args.command == "rollback":
            slots = SlotStore(args.state)
            try:
                with slots.lock():
                    back = slots.rollback()
            except BlockingIOError:
                print("an update is running; try again later", file=sys.stderr)
                return 1
            print(f"current: {back}" if back else "no previous bundle to roll back to")
            return 0 if back else 1
        return _update(args)
    except EdgerecError as exc:
        print(f"edgerec-device {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _update(args: argparse.Namespace) -> int:
    from .update import DEFAULT_MAX_BYTES, BundleUpdater

    updater = BundleUpdater(
        args.repo,
        args.state,
        args.device_id,
        trusted_root=args.root,
        channel=args.channel,
        max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
        open_kwargs={"backend": args.backend},
        timeout=args.timeout,
    )
    result = updater.update()
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        line = f"{result.status}: current {result.version}"
        print(line + (f" ({result.error})" if result.error else ""))
    return {"installed": 0, "current": 0, "refused": 3}.get(result.status, 1)


if __name__ == "__main__":
    sys.exit(main())
