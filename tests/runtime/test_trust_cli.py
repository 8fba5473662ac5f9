"""``edgerec keys generate`` and ``edgerec bundle sign | verify | inspect``,
run through the real command line (``edgerec.cli.main``)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.runtime import signing
from edgerec.runtime.signing import TRUST_CONFIG_ENV, TRUSTED_KEYS_ENV
from tests.runtime.trust_helpers import make_minimal_bundle, rewrite_manifest


@pytest.fixture(autouse=True)
def no_ambient_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.delenv(TRUST_CONFIG_ENV, raising=False)
    monkeypatch.setattr(signing, "DEFAULT_TRUST_CONFIG", tmp_path / "no-such-trust.toml")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_minimal_bundle(tmp_path / "bundle")


def generate(folder: Path, name: str, capsys) -> dict:
    assert main(["keys", "generate", "--out", str(folder), "--name", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_keys_generate(tmp_path: Path, capsys) -> None:
    info = generate(tmp_path / "keys", "release", capsys)
    private = Path(info["private_key"])
    assert private == tmp_path / "keys" / "release.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert Path(info["public_key"]).is_file() and len(info["keyid"]) == 64
    assert main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "release"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_sign_then_verify(bundle: Path, tmp_path: Path, capsys) -> None:
    key = generate(tmp_path / "keys", "release", capsys)
    pub = key["public_key"]
    assert main(["bundle", "verify", str(bundle), "--trusted-key", pub]) == 2
    assert "not signed" in capsys.readouterr().err
    assert main(["bundle", "sign", str(bundle), "--key", key["private_key"]]) == 0
    assert key["keyid"] in capsys.readouterr().out
    assert main(["bundle", "verify", str(bundle), "--trusted-key", pub]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and key["keyid"] in out


def test_verify_reasons(bundle: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    old = generate(tmp_path / "keys", "old", capsys)
    new = generate(tmp_path / "keys", "new", capsys)
    main(["bundle", "sign", str(bundle), "--key", old["private_key"]])
    capsys.readouterr()
    # rotation: both trusted -> ok; old key removed -> refused, naming the key
    argv = ["bundle", "verify", str(bundle), "--trusted-key", old["public_key"]]
    assert main([*argv, "--trusted-key", new["public_key"]]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle), "--trusted-key", new["public_key"]]) == 2
    assert f"untrusted key(s) {old['keyid'][:16]}" in capsys.readouterr().err
    # trust from the environment, as on a device
    monkeypatch.setenv(TRUSTED_KEYS_ENV, old["public_key"])
    assert main(["bundle", "verify", str(bundle)]) == 0
    monkeypatch.delenv(TRUSTED_KEYS_ENV)
    assert main(["bundle", "verify", str(bundle)]) == 2
    assert "no trusted key" in capsys.readouterr().err
    # a changed manifest: the signature no longer matches
    rewrite_manifest(bundle, lambda m: m["model"].update(version="2"))
    assert main(["bundle", "verify", str(bundle), "--trusted-key", old["public_key"]]) == 2
    assert "does not match the manifest" in capsys.readouterr().err


def test_verify_refuses_tampered_file_of_a_signed_bundle(bundle: Path, tmp_path: Path, capsys):
    key = generate(tmp_path / "keys", "release", capsys)
    main(["bundle", "sign", str(bundle), "--key", key["private_key"]])
    (bundle / "popularity.npy").write_bytes(b"x" * (bundle / "popularity.npy").stat().st_size)
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle), "--trusted-key", key["public_key"]]) == 2
    assert "popularity.npy: sha256 does not match" in capsys.readouterr().err


def test_inspect(bundle: Path, tmp_path: Path, capsys) -> None:
    key = generate(tmp_path / "keys", "release", capsys)
    main(["bundle", "sign", str(bundle), "--key", key["private_key"]])
    capsys.readouterr()
    assert main(["bundle", "inspect", str(bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == {"id": "mini", "version": "1"}
    assert info["status"] == "accepted" and info["files_ok"] is True
    assert {f["path"] for f in info["files"]} == {"vocab.json", "popularity.npy"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in info["files"])
    assert info["signatures"] == [{"keyid": key["keyid"], "algorithm": "ed25519"}]
    (bundle / "vocab.json").write_text("{}")
    assert main(["bundle", "inspect", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "model    mini version 1" in text
    assert "1 FAIL" in text and "vocab.json" in text
    assert key["keyid"] in text


@pytest.mark.slow
def test_inspect_converter_bundle(tiny_bundle: Path, capsys) -> None:
    assert main(["bundle", "inspect", str(tiny_bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    names = {a["name"] for a in info["artifacts"]}
    assert info["default_artifact"] in names and info["files_ok"]
    assert info["signatures"] == []
