"""Signed bundles: keys, signatures, trust configuration and the attacks they stop.

The fast tests use a small artifact-free bundle (``open_bundle`` and the trust
check); the ``slow`` ones open the converter-made tiny bundle with
``Recommender.open(trusted_keys=...)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgerec.bundle import SIGNATURE_FILE, BundleError, open_bundle, read_manifest_bytes
from edgerec.errors import InputError
from edgerec.runtime import signing
from edgerec.runtime.signing import (
    TRUST_CONFIG_ENV,
    TRUSTED_KEYS_ENV,
    TrustedKeys,
    key_id,
    load_private_key,
    load_public_key,
    read_signatures,
    sign_bundle,
)
from tests.runtime.trust_helpers import keypair, make_minimal_bundle, rewrite_manifest

slow = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_ambient_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests start without trust from the environment or a system config file."""
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.delenv(TRUST_CONFIG_ENV, raising=False)
    monkeypatch.setattr(signing, "DEFAULT_TRUST_CONFIG", tmp_path / "no-such-trust.toml")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_minimal_bundle(tmp_path / "bundle")


def verify(bundle: Path, keys) -> str:
    """The device-side check: signature over the manifest bytes, then every file."""
    raw = read_manifest_bytes(bundle)
    keyid = TrustedKeys.load(keys).verify(bundle, raw)
    open_bundle(bundle, raw=raw)
    return keyid


# ----------------------------------------------------------------------- keys
def test_generated_keys_modes_and_id(tmp_path: Path) -> None:
    pair = keypair(tmp_path / "keys")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    public = load_public_key(pair.public_path)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pair.keyid == hashlib.sha256(raw).hexdigest() == key_id(public)
    assert key_id(load_private_key(pair.private_path).public_key()) == pair.keyid
    with pytest.raises(InputError, match="exists; pass --force"):
        keypair(tmp_path / "keys")


def test_bad_key_files_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(InputError, match="junk.pub: not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(InputError, match="missing.key: private key file not found"):
        load_private_key(tmp_path / "missing.key")
    pair = keypair(tmp_path)
    with pytest.raises(InputError, match="not an unencrypted PEM private key"):
        load_private_key(pair.public_path)
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(InputError, match=r"holds no \*\.pub"):
        TrustedKeys.load(empty)


# ------------------------------------------------------------------ signatures
def test_signed_bundle_verifies(bundle: Path, tmp_path: Path) -> None:
    pair = keypair(tmp_path / "k")
    sig = sign_bundle(bundle, load_private_key(pair.private_path))
    assert sig.keyid == pair.keyid
    data = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert data["signatures"][0]["keyid"] == pair.keyid
    assert verify(bundle, pair.public_path) == pair.keyid
    assert verify(bundle, pair.public_path.read_bytes()) == pair.keyid  # PEM bytes
    assert verify(bundle, tmp_path / "k") == pair.keyid  # a folder of .pub files


def test_unsigned_bundle_is_refused_when_trust_is_configured(bundle: Path, tmp_path: Path) -> None:
    pair = keypair(tmp_path)
    with pytest.raises(BundleError, match=r"not signed \(no manifest\.sig\.json\)"):
        verify(bundle, pair.public_path)


def test_tampered_manifest_with_recomputed_hashes_is_refused(bundle: Path, tmp_path: Path) -> None:
    """The attacker swaps a file and rewrites its hash in the manifest: every hash
    matches, but the signature over the manifest no longer does."""
    pair = keypair(tmp_path)
    sign_bundle(bundle, load_private_key(pair.private_path))
    vocab = bundle / "vocab.json"
    data = json.loads(vocab.read_text())
    data["item_ids"][0] = "evil"
    vocab.write_text(json.dumps(data))

    def rehash(m: dict) -> None:
        m["files"]["vocab.json"] = {
            "sha256": hashlib.sha256(vocab.read_bytes()).hexdigest(),
            "bytes": vocab.stat().st_size,
        }

    rewrite_manifest(bundle, rehash)
    open_bundle(bundle)  # the hashes alone are satisfied...
    with pytest.raises(BundleError, match="signature by trusted key .* does not match"):
        verify(bundle, pair.public_path)  # ...the signature is not


def test_forged_signature_by_attacker_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    trusted = keypair(tmp_path / "trusted")
    attacker = Ed25519PrivateKey.generate()
    sign_bundle(bundle, attacker)
    with pytest.raises(BundleError, match="signed only by untrusted key"):
        verify(bundle, trusted.public_path)


def test_signature_claiming_a_trusted_key_id_is_refused(bundle: Path, tmp_path: Path) -> None:
    """A signature made with another key but labelled with the trusted key's id."""
    trusted = keypair(tmp_path / "trusted")
    forged = signing.sign_manifest_bytes(Ed25519PrivateKey.generate(), read_manifest_bytes(bundle))
    signing.write_signatures(bundle, [signing.Signature(trusted.keyid, forged.signature)])
    with pytest.raises(BundleError, match="does not match the manifest"):
        verify(bundle, trusted.public_path)


def test_key_rotation(bundle: Path, tmp_path: Path) -> None:
    """Old and new keys trusted together; then the old key is removed from the
    trust list, and a bundle signed only by it is refused."""
    old, new = keypair(tmp_path / "old"), keypair(tmp_path / "new")
    sign_bundle(bundle, load_private_key(old.private_path))
    both = [old.public_path, new.public_path]
    assert verify(bundle, both) == old.keyid
    with pytest.raises(BundleError, match="untrusted key"):
        verify(bundle, [new.public_path])  # old key removed: refused
    sign_bundle(bundle, load_private_key(new.private_path))  # re-signed by the new key
    assert [s.keyid for s in read_signatures(bundle)] == [old.keyid, new.keyid]
    assert verify(bundle, [new.public_path]) == new.keyid
    sign_bundle(bundle, load_private_key(new.private_path))  # idempotent per key
    assert len(read_signatures(bundle)) == 2


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("not json", "corrupt JSON"),
        ('{"format": "other", "signatures": []}', "field format"),
        ('{"format": "edgerec-bundle-signatures/1", "signatures": {}}', "field signatures"),
        ('{"format": "edgerec-bundle-signatures/1", "signatures": [1]}', r"signatures\[0\]"),
        (
            '{"format": "edgerec-bundle-signatures/1", "signatures": '
            '[{"keyid": "zz", "algorithm": "ed25519", "signature": ""}]}',
            r"signatures\[0\]\.keyid",
        ),
        (
            '{"format": "edgerec-bundle-signatures/1", "signatures": '
            '[{"keyid": "' + "a" * 64 + '", "algorithm": "rsa", "signature": ""}]}',
            r"signatures\[0\]\.algorithm",
        ),
        (
            '{"format": "edgerec-bundle-signatures/1", "signatures": '
            '[{"keyid": "' + "a" * 64 + '", "algorithm": "ed25519", "signature": "%%%"}]}',
            "not valid base64",
        ),
        (
            '{"format": "edgerec-bundle-signatures/1", "signatures": '
            '[{"keyid": "'
            + "a" * 64
            + '", "algorithm": "ed25519", "signature": "'
            + base64.b64encode(b"short").decode()
            + '"}]}',
            "an Ed25519 signature has 64",
        ),
    ],
)
def test_malformed_signature_file(bundle: Path, tmp_path: Path, payload: str, match: str) -> None:
    (bundle / SIGNATURE_FILE).write_text(payload)
    pair = keypair(tmp_path)
    with pytest.raises(BundleError, match=match) as info:
        verify(bundle, pair.public_path)
    assert SIGNATURE_FILE in str(info.value)


def test_signature_file_symlink_leaving_the_bundle(bundle: Path, tmp_path: Path) -> None:
    pair = keypair(tmp_path / "k")
    sign_bundle(bundle, load_private_key(pair.private_path))
    outside = tmp_path / "outside.sig.json"
    shutil.move(bundle / SIGNATURE_FILE, outside)
    (bundle / SIGNATURE_FILE).symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        verify(bundle, pair.public_path)


def test_sign_refuses_a_damaged_bundle(bundle: Path, tmp_path: Path) -> None:
    (bundle / "vocab.json").write_text("{}")
    pair = keypair(tmp_path)
    with pytest.raises(BundleError, match="vocab.json"):
        sign_bundle(bundle, load_private_key(pair.private_path))
    assert not (bundle / SIGNATURE_FILE).exists()


# --------------------------------------------------------------- trust config
def test_trust_from_environment(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TrustedKeys.configured() is None
    a, b = keypair(tmp_path / "a"), keypair(tmp_path / "b")
    monkeypatch.setenv(TRUSTED_KEYS_ENV, os.pathsep.join([str(a.public_path), str(tmp_path / "b")]))
    trust = TrustedKeys.configured()
    assert trust is not None and trust.key_ids == sorted([a.keyid, b.keyid])
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "missing.pub"))
    with pytest.raises(InputError, match="missing.pub: public key file not found"):
        TrustedKeys.configured()


def test_trust_from_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = keypair(tmp_path / "keys")
    config = tmp_path / "trust.toml"
    config.write_text('[trust]\nkeys = ["keys/release.pub"]\n')
    monkeypatch.setenv(TRUST_CONFIG_ENV, str(config))
    assert TrustedKeys.configured().key_ids == [pair.keyid]
    config.write_text("[trust]\nkeys = []\n")
    with pytest.raises(InputError, match="trust.keys must be a non-empty list"):
        TrustedKeys.configured()
    monkeypatch.delenv(TRUST_CONFIG_ENV)
    system = tmp_path / "etc-trust.toml"
    system.write_text(f'[trust]\nkeys = ["{pair.public_path}"]\n')
    monkeypatch.setattr(signing, "DEFAULT_TRUST_CONFIG", system)
    assert TrustedKeys.configured().key_ids == [pair.keyid]


# ------------------------------------------------------- Recommender.open (slow)
@pytest.fixture
def signed_copy(bundle_copy: Path, tmp_path: Path):
    pair = keypair(tmp_path / "keys")
    sign_bundle(bundle_copy, load_private_key(pair.private_path))
    return bundle_copy, pair


@slow
def test_open_with_trusted_keys(signed_copy, tmp_path: Path) -> None:
    from edgerec.runtime import Recommender

    bundle, pair = signed_copy
    other = keypair(tmp_path / "other")
    with Recommender.open(bundle, trusted_keys=[other.public_path, pair.public_path]) as rec:
        assert rec.signed_by == pair.keyid
        assert len(rec.recommend([], k=3)) == 3
    with pytest.raises(BundleError, match="untrusted key"):
        Recommender.open(bundle, trusted_keys=other.public_path)


@slow
def test_open_refuses_unsigned_bundle_with_env_trust(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgerec.runtime import Recommender

    pair = keypair(tmp_path / "keys")
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(pair.public_path))
    with pytest.raises(BundleError, match="not signed"):
        Recommender.open(bundle_copy)
    sign_bundle(bundle_copy, load_private_key(pair.private_path))
    with Recommender.open(bundle_copy) as rec:
        assert rec.signed_by == pair.keyid


@slow
def test_open_refuses_tampered_artifact_in_signed_bundle(signed_copy) -> None:
    from edgerec.runtime import Recommender

    bundle, pair = signed_copy
    path = bundle / "student.int8-dynamic.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"student\.int8-dynamic\.tflite: sha256 does not match"):
        Recommender.open(bundle, trusted_keys=pair.public_path)


@slow
def test_unverified_open_logs_once(
    tiny_bundle: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgerec.runtime import Recommender, recommender

    monkeypatch.setattr(recommender, "_warned_unverified", False)
    with caplog.at_level(logging.WARNING, logger="edgerec.runtime.recommender"):
        for _ in range(2):
            Recommender.open(tiny_bundle).close()
    notes = [r for r in caplog.records if "not verified against a signing key" in r.message]
    assert len(notes) == 1
