"""``edgerec convert --sign-key``: the bundle is signed before its atomic publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec.bundle import SIGNATURE_FILE, BundleWriter, open_bundle, read_manifest_bytes
from edgerec.runtime.signing import TrustedKeys, generate_keys, load_private_key


def test_writer_runs_the_hook_before_publishing(tmp_path: Path) -> None:
    seen = []

    def hook(tmp_dir: Path) -> None:
        assert (tmp_dir / "manifest.json").is_file()
        assert not (tmp_path / "out").exists()  # not yet published
        seen.append(tmp_dir)

    with BundleWriter(tmp_path / "out") as w:
        w.add_bytes("a.txt", b"a")
        w.finish({"status": "accepted", "model": {"id": "m", "version": "1"}}, before_publish=hook)
    assert len(seen) == 1 and (tmp_path / "out" / "manifest.json").is_file()


def test_failing_hook_publishes_nothing(tmp_path: Path) -> None:
    def hook(tmp_dir: Path) -> None:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError), BundleWriter(tmp_path / "out") as w:
        w.finish({"status": "accepted"}, before_publish=hook)
    assert not (tmp_path / "out").exists()


def test_write_bundle_signs(tmp_path: Path) -> None:
    from edgerec.converters.passes.package import write_bundle

    pair = generate_keys(tmp_path / "keys")
    key = load_private_key(pair.private_path)
    fields = {
        "status": "accepted",
        "model": {"id": "m", "version": "1"},
        "feature_spec": {"max_len": 4, "num_items": 3},
    }
    out = write_bundle(tmp_path / "out", False, fields, [], {"vocab.json": b"{}"}, sign_key=key)
    assert (out / SIGNATURE_FILE).is_file()
    raw = read_manifest_bytes(out)
    assert TrustedKeys.load(pair.public_path).verify(out, raw) == pair.keyid
    open_bundle(out)


def test_convert_refuses_a_bad_key_before_converting(tmp_path: Path, capsys) -> None:
    from edgerec.cli import main

    pytest.importorskip("tensorflow")
    rc = main(
        [
            "convert",
            "--teacher",
            str(tmp_path / "no-teacher"),
            "--data",
            "movielens-100k",
            "--out",
            str(tmp_path / "out"),
            "--sign-key",
            str(tmp_path / "missing.key"),
        ]
    )
    assert rc == 2
    assert "missing.key: private key file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_convert_with_sign_key(tmp_path: Path) -> None:
    from edgerec.converters.pipeline import convert
    from edgerec.runtime import Recommender
    from tests.converters.tiny import build_tiny_teacher, tiny_config, tiny_split

    pair = generate_keys(tmp_path / "keys")
    tables = {
        "export": {"targets": ["tflite"], "precisions": ["fp32"], "gpu": False},
        "distil": {"epochs": 2, "patience": 2},
        "gates": {"quality_min_ratio": 0.0},
    }
    result = convert(
        build_tiny_teacher(),
        tiny_split(),
        tmp_path / "bundle",
        tiny_config(**tables),
        progress=False,
        sign_key=load_private_key(pair.private_path),
        allow_weak_teacher=True,  # the two-epoch tiny teacher is not the subject here
    )
    assert result.accepted and result.summary["signed_by"] == pair.keyid
    with Recommender.open(tmp_path / "bundle", trusted_keys=pair.public_path) as rec:
        assert rec.signed_by == pair.keyid
