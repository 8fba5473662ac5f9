"""Signed bundles: Ed25519 signatures over ``manifest.json`` and the keys a device trusts.

The manifest lists every other bundle file with its size and sha256, so one
signature over the manifest's exact bytes covers the whole bundle. Signatures
are detached, in ``manifest.sig.json`` beside the manifest (several keys may
sign one bundle, which is how a key rotation overlaps)::

    {"format": "edgerec-bundle-signatures/1",
     "signatures": [{"keyid": "<64 hex>", "algorithm": "ed25519",
                     "signature": "<base64, 64 bytes>"}]}

The signed message is :data:`SIGNING_CONTEXT` followed by the manifest bytes
(domain separation: a signature made for a bundle cannot be replayed as a
signature of anything else). A key id is the sha256 of the raw 32-byte public
key, so it names the key itself, not a label someone chose.

Keys are PEM files: the private key as unencrypted PKCS#8 (mode 0600), the
public key as SubjectPublicKeyInfo. What a device trusts comes from, in order:
the ``trusted_keys`` argument, the ``EDGEREC_TRUSTED_KEYS`` environment variable
(key files or folders of ``*.pub`` files, separated by ``os.pathsep``), or a
TOML config file (``EDGEREC_TRUST_CONFIG``, else ``/etc/edgerec/trust.toml``)
with ``[trust] keys = [...]`` (relative paths are relative to the file). See
``docs/security.md`` for what this defends against and what it does not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgerec.bundle import (
    MANIFEST,
    SIGNATURE_FILE,
    BundleError,
    open_bundle,
    read_manifest_bytes,
    resolve_in_bundle,
)
from edgerec.errors import InputError

log = logging.getLogger(__name__)

SIGNATURE_FORMAT = "edgerec-bundle-signatures/1"
SIGNING_CONTEXT = b"edgerec bundle manifest v1\n"
ALGORITHM = "ed25519"
TRUSTED_KEYS_ENV = "EDGEREC_TRUSTED_KEYS"
TRUST_CONFIG_ENV = "EDGEREC_TRUST_CONFIG"
DEFAULT_TRUST_CONFIG = Path("/etc/edgerec/trust.toml")
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
MAX_SIGNATURE_FILE_BYTES = 1 << 20
MAX_SIGNATURES = 64
MAX_KEY_FILE_BYTES = 1 << 16

#: what ``trusted_keys`` may be: a key file or folder, PEM or raw 32-byte key
#: bytes, a loaded public key, a :class:`TrustedKeys`, or a list of those
KeySource = str | os.PathLike[str] | bytes | Ed25519PublicKey


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key: the key's name in signatures."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def short_id(keyid: str) -> str:
    """The first 16 hex digits of a key id, for messages."""
    return keyid[:16]


# ----------------------------------------------------------------------- keys
@dataclass(frozen=True)
class KeyPair:
    """Where :func:`generate_keys` wrote a new key pair."""

    private_path: Path
    public_path: Path
    keyid: str


def generate_keys(
    out_dir: str | Path, name: str = "edgerec-bundle", force: bool = False
) -> KeyPair:
    """Create ``out_dir/<name>.key`` (mode 0600) and ``out_dir/<name>.pub``.

    Refuses to overwrite existing key files unless ``force``.
    """
    out = Path(out_dir)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"key name {name!r}: use a plain file name without '/'")
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}{PRIVATE_SUFFIX}", out / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise InputError(f"{path}: exists; pass --force to replace the key pair")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(private_path, pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private_path, public_path, key_id(public))


def _write_private(path: Path, pem: bytes) -> None:
    """Write a private key readable by its owner only (created 0600, never widened)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise InputError(f"{path}: too large for a {what} key file")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} key file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a {what} key file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} key ({exc})") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (unencrypted PKCS#8 PEM, as ``edgerec keys generate`` writes)."""
    path = Path(path)
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: a {type(key).__name__}, expected an Ed25519 private key")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: private key is readable by other users (chmod 600 it)", path)
    return key


def load_public_key(source: KeySource, where: str | None = None) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, PEM bytes or the raw 32 bytes."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, bytes):
        data, where = source, where or "public key bytes"
    else:
        path = Path(source)
        data, where = _read_key_file(path, "public"), str(path)
    if len(data) == 32 and not data.startswith(b"-----"):
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{where}: a {type(key).__name__}, expected an Ed25519 public key")
    return key


class TrustedKeys:
    """The public keys a device accepts bundle signatures from, by key id.

    Several keys may be trusted at once (a rotation: the new key is added, the
    bundles are re-signed, the old key is removed).
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey], origin: str = "") -> None:
        self.keys = {key_id(k): k for k in keys}
        self.origin = origin
        if not self.keys:
            raise InputError(f"no trusted public key found{f' in {origin}' if origin else ''}")

    @property
    def key_ids(self) -> list[str]:
        return sorted(self.keys)

    @classmethod
    def load(cls, sources: TrustedKeys | KeySource | Iterable[KeySource]) -> TrustedKeys:
        """Keys from files, folders (every ``*.pub`` in it), bytes or key objects."""
        if isinstance(sources, TrustedKeys):
            return sources
        if isinstance(sources, str | os.PathLike | bytes | Ed25519PublicKey):
            sources = [sources]
        items = list(sources)
        return cls(_expand(items), origin=", ".join(_name(s) for s in items))

    @classmethod
    def configured(
        cls, explicit: TrustedKeys | KeySource | Iterable[KeySource] | None = None
    ) -> TrustedKeys | None:
        """The trust in force: ``explicit``, else the environment, else the config
        file; None when nothing is configured (bundles are then not checked
        against a key)."""
        if explicit is not None:
            return cls.load(explicit)
        env = os.environ.get(TRUSTED_KEYS_ENV, "").strip()
        if env:
            paths = [p for p in env.split(os.pathsep) if p.strip()]
            trust = cls.load([Path(p) for p in paths])
            trust.origin = f"${TRUSTED_KEYS_ENV}"
            return trust
        config = os.environ.get(TRUST_CONFIG_ENV, "").strip()
        if config:
            return cls.from_config(Path(config))
        if DEFAULT_TRUST_CONFIG.is_file():
            return cls.from_config(DEFAULT_TRUST_CONFIG)
        return None

    @classmethod
    def from_config(cls, path: Path) -> TrustedKeys:
        """Keys named by ``[trust] keys = [...]`` in a TOML file."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: trust config file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"{path}: cannot read trust config ({exc})") from None
        keys = data.get("trust", {}).get("keys") if isinstance(data.get("trust"), dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise InputError(f"{path}: field trust.keys must be a non-empty list of key paths")
        trust = cls.load([path.parent / k for k in keys])
        trust.origin = str(path)
        return trust

    def verify(self, root: str | Path, manifest_bytes: bytes) -> str:
        """The id of a trusted key whose signature matches ``manifest_bytes``.

        Raises:
            BundleError: unsigned, signed only by untrusted keys, or a trusted
                key's signature does not match (the manifest was changed).
        """
        root = Path(root)
        signatures = read_signatures(root)
        trusted = ", ".join(short_id(k) for k in self.key_ids)
        if not signatures:
            raise BundleError(
                f"{root}: bundle is not signed (no {SIGNATURE_FILE}) but trusted keys are "
                f"configured ({trusted}); sign it with `edgerec bundle sign`"
            )
        message = SIGNING_CONTEXT + manifest_bytes
        unknown, bad = [], []
        for sig in signatures:
            key = self.keys.get(sig.keyid)
            if key is None:
                unknown.append(short_id(sig.keyid))
                continue
            try:
                key.verify(sig.signature, message)
            except InvalidSignature:
                bad.append(short_id(sig.keyid))
                continue
            return sig.keyid
        if bad:
            raise BundleError(
                f"{root / MANIFEST}: the signature by trusted key {', '.join(bad)} does not "
                "match the manifest (changed after signing, or a forged signature)"
            )
        raise BundleError(
            f"{root}: signed only by untrusted key(s) {', '.join(unknown)}; trusted: {trusted}"
        )

    def __repr__(self) -> str:
        return f"TrustedKeys({[short_id(k) for k in self.key_ids]})"


def _name(source: object) -> str:
    return "<key bytes>" if isinstance(source, bytes | Ed25519PublicKey) else str(source)


def _expand(sources: list[Any]) -> Iterator[Ed25519PublicKey]:
    for source in sources:
        if isinstance(source, str | os.PathLike) and Path(source).is_dir():
            found = sorted(Path(source).glob(f"*{PUBLIC_SUFFIX}"))
            if not found:
                raise InputError(f"{source}: folder holds no *{PUBLIC_SUFFIX} public key file")
            for path in found:
                yield load_public_key(path)
        elif isinstance(source, str | os.PathLike | bytes | Ed25519PublicKey):
            yield load_public_key(source)
        else:
            raise InputError(
                f"trusted key {source!r}: expected a key file or folder path, key bytes "
                "or an Ed25519PublicKey"
            )


# ----------------------------------------------------------------- signatures
@dataclass(frozen=True)
class Signature:
    """One signature of ``manifest.json``."""

    keyid: str
    signature: bytes
    algorithm: str = ALGORITHM

    def to_json(self) -> dict[str, str]:
        return {
            "keyid": self.keyid,
            "algorithm": self.algorithm,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


def read_signatures(root: str | Path) -> list[Signature]:
    """The signatures in ``manifest.sig.json`` ([] when the bundle is unsigned).

    Raises:
        BundleError: the file is malformed (naming the field), oversize, or a
            symlink leaving the bundle.
    """
    root = Path(root)
    path = root / SIGNATURE_FILE
    if not path.exists() and not path.is_symlink():
        return []
    resolve_in_bundle(root, SIGNATURE_FILE, SIGNATURE_FILE)
    if not path.is_file():
        raise BundleError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_SIGNATURE_FILE_BYTES:
        raise BundleError(f"{path}: larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIGNATURE_FORMAT:
        raise BundleError(f"{path}: field format must be {SIGNATURE_FORMAT!r}")
    entries = data.get("signatures")
    if not isinstance(entries, list) or len(entries) > MAX_SIGNATURES:
        raise BundleError(f"{path}: field signatures must be a list of at most {MAX_SIGNATURES}")
    return [_parse_signature(e, f"{path}: field signatures[{i}]") for i, e in enumerate(entries)]


def _parse_signature(entry: object, where: str) -> Signature:
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: must be an object")
    keyid, algorithm, encoded = entry.get("keyid"), entry.get("algorithm"), entry.get("signature")
    if not isinstance(keyid, str) or len(keyid) != 64 or not set(keyid) <= set("0123456789abcdef"):
        raise BundleError(f"{where}.keyid: must be 64 lowercase hex digits")
    if algorithm != ALGORITHM:
        raise BundleError(f"{where}.algorithm: must be {ALGORITHM!r} (got {algorithm!r})")
    if not isinstance(encoded, str):
        raise BundleError(f"{where}.signature: must be a base64 string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{where}.signature: not valid base64") from None
    if len(raw) != 64:
        raise BundleError(f"{where}.signature: {len(raw)} bytes, an Ed25519 signature has 64")
    return Signature(keyid, raw, algorithm)


def sign_manifest_bytes(key: Ed25519PrivateKey, manifest_bytes: bytes) -> Signature:
    """The signature of one manifest's bytes."""
    return Signature(key_id(key.public_key()), key.sign(SIGNING_CONTEXT + manifest_bytes))


def sign_bundle(root: str | Path, key: Ed25519PrivateKey, check: bool = True) -> Signature:
    """Add ``key``'s signature to the bundle at ``root``, replacing an earlier
    signature by the same key and keeping the other keys' signatures (a bundle
    signed by the old and the new key during a rotation).

    Args:
        check: first verify the bundle (manifest fields, every file's size and
            sha256), so that only an intact bundle gets signed.
    """
    root = Path(root)
    raw = read_manifest_bytes(root)
    if check:
        open_bundle(root, allow_rejected=True, raw=raw)
    new = sign_manifest_bytes(key, raw)
    kept = [sig for sig in read_signatures(root) if sig.keyid != new.keyid]
    write_signatures(root, [*kept, new])
    return new


def write_signatures(root: Path, signatures: list[Signature]) -> Path:
    """Write ``manifest.sig.json`` atomically (temp file + rename)."""
    path = root / SIGNATURE_FILE
    payload = {"format": SIGNATURE_FORMAT, "signatures": [s.to_json() for s in signatures]}
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE_FILE}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "KeyPair",
    "Signature",
    "TrustedKeys",
    "generate_keys",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_signatures",
    "sign_bundle",
    "sign_manifest_bytes",
]
