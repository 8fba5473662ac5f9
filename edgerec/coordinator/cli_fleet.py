"""``edgerec coordinator revoke-device`` and ``enroll-key add | revoke | list``: the
fleet lifecycle from the command line, on the database (``--db``) or through the
admin API (``--url``). See :mod:`.devices`."""

from __future__ import annotations

import argparse

from edgerec.errors import InputError

from .cli import _http, _local, _print, _target


def register_fleet(actions: argparse._SubParsersAction) -> None:
    """Add the fleet commands to ``edgerec coordinator``'s actions."""
    rv = actions.add_parser("revoke-device", help="revoke a device (effective on its next request)")
    _target(rv)
    rv.add_argument("device_id")
    rv.set_defaults(handler=run_revoke_device)

    ek = actions.add_parser("enroll-key", help="enrollment keys kept in the database")
    ek_actions = ek.add_subparsers(dest="enroll_key_command", metavar="ACTION", required=True)
    ek_add = ek_actions.add_parser("add", help="create a key (printed once)")
    _target(ek_add)
    ek_add.add_argument("--quota", type=int, help="how many devices may enroll with it")
    ek_add.add_argument("--label", default="", help="a note for operators")
    ek_add.add_argument("--json", action="store_true")
    ek_add.set_defaults(handler=run_enroll_key_add)
    ek_rev = ek_actions.add_parser("revoke", help="revoke a key")
    _target(ek_rev)
    ek_rev.add_argument("key_id")
    ek_rev.add_argument(
        "--revoke-devices", action="store_true", help="also revoke the devices it enrolled"
    )
    ek_rev.set_defaults(handler=run_enroll_key_revoke)
    ek_list = ek_actions.add_parser("list", help="list keys (ids, quotas, use)")
    _target(ek_list)
    ek_list.add_argument("--json", action="store_true")
    ek_list.set_defaults(handler=run_enroll_key_list)


def run_revoke_device(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator revoke-device``."""
    if args.url:
        out = _http(args, "POST", f"/v1/admin/devices/{args.device_id}/revoke")
    else:
        with _local(args) as coordinator:
            out = coordinator.devices.revoke_device(args.device_id)
    print(f"device {out['device_id']}: revoked (its next request is refused)")
    return 0


def run_enroll_key_add(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator enroll-key add``."""
    if args.quota is not None and args.quota < 1:
        raise InputError(f"--quota must be a positive integer (got {args.quota})")
    if args.url:
        body = {"label": args.label, "quota": args.quota}
        out = _http(args, "POST", "/v1/admin/enroll-keys", body)
    else:
        from .devices import key_summary

        with _local(args) as coordinator:
            key, secret = coordinator.devices.create_enroll_key(args.label, args.quota)
        out = {**key_summary(key), "key": secret}
    quota = "no quota" if out["quota"] is None else f"quota {out['quota']} devices"
    _print(out, args.json, f"enrollment key {out['key_id']} ({quota}):\n{out['key']}")
    return 0


def run_enroll_key_revoke(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator enroll-key revoke``."""
    if args.url:
        query = "?revoke_devices=true" if args.revoke_devices else ""
        out = _http(args, "POST", f"/v1/admin/enroll-keys/{args.key_id}/revoke{query}")
    else:
        with _local(args) as coordinator:
            out = coordinator.devices.revoke_enroll_key(args.key_id, args.revoke_devices)
    print(
        f"enrollment key {out['key_id']}: revoked"
        + (f"; {len(out['revoked_devices'])} devices revoked" if args.revoke_devices else "")
    )
    return 0


def run_enroll_key_list(args: argparse.Namespace) -> int:
    """Handler of ``edgerec coordinator enroll-key list``."""
    if args.url:
        out = _http(args, "GET", "/v1/admin/enroll-keys")
    else:
        with _local(args) as coordinator:
            out = coordinator.devices.list_enroll_keys()
    lines = [
        f"{k['key_id']}  used {k['used']}/{'-' if k['quota'] is None else k['quota']}  "
        f"{'revoked' if k['revoked'] else 'active'}  {k['label']}"
        for k in out
    ]
    _print(out, args.json, "\n".join(lines) or "no enrollment keys in the database")
    return 0
