"""``edgerec keys`` and ``edgerec bundle``: signing keys and signed bundles.

``keys generate`` makes an Ed25519 key pair; ``bundle sign`` adds a signature
to a bundle, ``bundle verify`` checks one the way a device does (exit 0, or 2
with the reason), ``bundle inspect`` shows what a bundle holds. The
``cryptography`` import happens inside the handlers (``edgerec --help`` stays
fast); everything here is TensorFlow-free and runs on a device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgerec.errors import InputError

KEYS_EPILOG = """\
examples:
  edgerec keys generate --out keys/                 # keys/edgerec-bundle.key + .pub
  edgerec keys generate --out keys/ --name release-2026

The private key (.key, mode 0600) signs bundles; keep it off devices. The public key
(.pub) goes to devices as a trusted key. The printed key id is the sha256 of the
public key: it is what signatures and error messages name.
"""

BUNDLE_EPILOG = """\
examples:
  edgerec bundle sign bundles/ml100k --key keys/edgerec-bundle.key
  edgerec bundle verify bundles/ml100k --trusted-key keys/edgerec-bundle.pub
  edgerec bundle verify bundles/ml100k --trusted-key keys/old.pub --trusted-key keys/new.pub
  edgerec bundle inspect bundles/ml100k --json

verify exit codes: 0 the bundle is intact, accepted and signed by a trusted key;
2 it is not (the reason is printed). Without --trusted-key the keys come from
$EDGEREC_TRUSTED_KEYS or the trust config file, as on a device.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``keys`` and ``bundle`` to the CLI."""
    from edgerec.cli_help import HelpFormatter

    keys = sub.add_parser(
        "keys",
        help="generate Ed25519 bundle-signing keys",
        description="Bundle-signing keys (Ed25519).",
        epilog=KEYS_EPILOG,
        formatter_class=HelpFormatter,
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser(
        "generate", help="write a new key pair", epilog=KEYS_EPILOG, formatter_class=HelpFormatter
    )
    gen.add_argument("--out", required=True, type=Path, help="folder for the key files")
    gen.add_argument("--name", default="edgerec-bundle", help="file name stem of the keys")
    gen.add_argument("--force", action="store_true", help="replace an existing key pair")
    gen.add_argument("--json", action="store_true", help="print paths and key id as JSON")
    gen.set_defaults(handler=run_keys_generate)

    bundle = sub.add_parser(
        "bundle",
        help="sign, verify and inspect bundles",
        description="Sign, verify and inspect edgerec bundles.",
        epilog=BUNDLE_EPILOG,
        formatter_class=HelpFormatter,
    )
    bundle_sub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    sign = bundle_sub.add_parser(
        "sign", help="add a signature to a bundle", formatter_class=HelpFormatter
    )
    sign.add_argument("bundle", type=Path, help="bundle directory")
    sign.add_argument("--key", required=True, type=Path, help="private key file (.key)")
    sign.set_defaults(handler=run_bundle_sign)

    verify = bundle_sub.add_parser(
        "verify",
        help="check a bundle as a device would (exit 0 ok, 2 refused)",
        epilog=BUNDLE_EPILOG,
        formatter_class=HelpFormatter,
    )
    verify.add_argument("bundle", type=Path, help="bundle directory")
    verify.add_argument(
        "--trusted-key",
        action="append",
        type=Path,
        default=[],
        metavar="PUB",
        help="trusted public key file or folder of .pub files (repeatable)",
    )
    verify.set_defaults(handler=run_bundle_verify)

    inspect = bundle_sub.add_parser(
        "inspect", help="show a bundle's model, artifacts, files and signatures"
    )
    inspect.add_argument("bundle", type=Path, help="bundle directory")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=run_bundle_inspect)


def run_keys_generate(args: argparse.Namespace) -> int:
    """Handler of ``edgerec keys generate``."""
    from .signing import generate_keys

    pair = generate_keys(args.out, args.name, force=args.force)
    info = {
        "private_key": str(pair.private_path),
        "public_key": str(pair.public_path),
        "keyid": pair.keyid,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"private key {pair.private_path} (mode 0600: keep it secret, off devices)")
        print(f"public key  {pair.public_path} (give it to devices as a trusted key)")
        print(f"key id      {pair.keyid}")
    return 0


def run_bundle_sign(args: argparse.Namespace) -> int:
    """Handler of ``edgerec bundle sign``."""
    from .signing import load_private_key, sign_bundle

    key = load_private_key(args.key)
    sig = sign_bundle(args.bundle, key)
    print(f"{args.bundle}: signed by key {sig.keyid}")
    return 0


def run_bundle_verify(args: argparse.Namespace) -> int:
    """Handler of ``edgerec bundle verify``: signature, manifest, status, every file."""
    from edgerec.bundle import open_bundle, read_manifest_bytes

    from .signing import TRUSTED_KEYS_ENV, TrustedKeys

    trust = TrustedKeys.configured(args.trusted_key or None)
    if trust is None:
        raise InputError(
            f"no trusted key: pass --trusted-key PUB (or set ${TRUSTED_KEYS_ENV} or a trust "
            "config file)"
        )
    raw = read_manifest_bytes(args.bundle)
    keyid = trust.verify(args.bundle, raw)
    manifest = open_bundle(args.bundle, raw=raw)
    print(
        f"{args.bundle}: OK — {manifest.model_id}@{manifest.model_version}, status "
        f"{manifest.status}, {len(manifest.files)} files verified, signed by trusted key {keyid}"
    )
    return 0


def inspect_bundle(root: Path) -> dict[str, Any]:
    """What ``bundle inspect`` shows: identity, artifacts, files (with an integrity
    check of each) and signatures (key ids; not checked against any key here)."""
    from edgerec.bundle import BundleError, read_manifest, verify_files

    from .signing import read_signatures

    manifest = read_manifest(root)
    files = []
    for rel, entry in manifest.files.items():
        try:
            verify_files(manifest, [rel])
            state = "ok"
        except BundleError as exc:
            state = str(exc)
        files.append(
            {"path": rel, "bytes": entry["bytes"], "sha256": entry["sha256"], "check": state}
        )
    try:
        signatures = [{"keyid": s.keyid, "algorithm": s.algorithm} for s in read_signatures(root)]
        signature_error = None
    except BundleError as exc:
        signatures, signature_error = [], str(exc)
    return {
        "bundle": str(root),
        "model": {"id": manifest.model_id, "version": manifest.model_version},
        "schema_version": manifest.schema_version,
        "status": manifest.status,
        "edgerec_version": manifest.data.get("edgerec_version"),
        "created": manifest.data.get("created"),
        "default_artifact": manifest.data.get("default_artifact"),
        "artifacts": [
            {
                "name": a.name,
                "path": a.path,
                "format": a.format,
                "precision": a.precision,
                "bytes": a.bytes,
                "sha256": a.sha256,
                "roles": a.roles,
                "gate_passed": a.gate_passed,
            }
            for a in manifest.artifacts
        ],
        "files": files,
        "files_ok": all(f["check"] == "ok" for f in files),
        "signatures": signatures,
        "signature_error": signature_error,
    }


def run_bundle_inspect(args: argparse.Namespace) -> int:
    """Handler of ``edgerec bundle inspect``."""
    info = inspect_bundle(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    out = sys.stdout
    model = info["model"]
    out.write(f"bundle   {info['bundle']}\n")
    out.write(f"model    {model['id']} version {model['version']}\n")
    out.write(f"status   {info['status'] or 'MISSING (not accepted)'}\n")
    out.write(f"schema   {info['schema_version']}, edgerec {info['edgerec_version']}\n")
    out.write("artifacts:\n")
    for a in info["artifacts"]:
        default = " (default)" if a["name"] == info["default_artifact"] else ""
        gate = "" if a["gate_passed"] else " [gate not passed]"
        out.write(
            f"  {a['name']:<22} {a['format']:<6} {a['precision']:<13} {a['bytes']:>10} B  "
            f"sha256 {a['sha256'][:16]}{default}{gate}\n"
        )
    bad = [f for f in info["files"] if f["check"] != "ok"]
    total = sum(f["bytes"] for f in info["files"])
    out.write(f"files    {len(info['files'])} listed, {total} bytes, ")
    out.write("all match their sha256\n" if not bad else f"{len(bad)} FAIL:\n")
    for f in bad:
        out.write(f"  {f['check']}\n")
    if info["signature_error"]:
        out.write(f"signatures: unreadable: {info['signature_error']}\n")
    elif not info["signatures"]:
        out.write("signatures: none (unsigned)\n")
    else:
        out.write("signatures (key ids; `bundle verify` checks them against trusted keys):\n")
        for s in info["signatures"]:
            out.write(f"  {s['algorithm']} {s['keyid']}\n")
    return 0
