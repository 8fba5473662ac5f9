"""MovieLens-100K fetch: pinned hashes, atomic cache, offline failure paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgerec.data import movielens
from edgerec.data.movielens import FetchError, cache_root, fetch_movielens_100k
from edgerec.data.sources import load_dataset

from .conftest import FILES


def no_pip(*args, **kwargs):
    raise AssertionError("pip must not be called")


def test_cache_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EDGEREC_CACHE")
    assert cache_root() == Path.home() / ".cache" / "edgerec"


def test_fetch_from_wheel_extracts_only_ml100k_and_reuses_cache(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(movielens, "_pip_download", no_pip)
    cache = tmp_path / "cache"
    path = fetch_movielens_100k(cache, wheel=fake_wheel)
    assert path == cache / "movielens-100k" / "ml-100k.inter"
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == sorted([*FILES, "SOURCE.json"])
    assert [p.name for p in cache.iterdir()] == ["movielens-100k"]  # no temp dirs left
    # Second call: valid cache, nothing downloaded, no wheel needed.
    assert fetch_movielens_100k(cache, download=False) == path
    monkeypatch.setenv("EDGEREC_CACHE", str(cache))
    ds = load_dataset("ml-100k")
    assert ds.name == "movielens-100k" and ds.num_interactions == 3


def test_corrupt_cache_without_download_fails_naming_file(tmp_path):
    target = tmp_path / "movielens-100k"
    target.mkdir()
    fake = target / "ml-100k.inter"
    fake.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    for name in movielens.FILE_SHA256:
        if name != "ml-100k.inter":
            (target / name).write_text("")
    with pytest.raises(FetchError) as info:
        fetch_movielens_100k(tmp_path, download=False)
    assert str(fake) in str(info.value) and "sha256" in str(info.value)


def test_corrupt_cache_is_replaced_atomically(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(movielens, "_pip_download", no_pip)
    path = fetch_movielens_100k(tmp_path, wheel=fake_wheel)
    path.write_text("tampered")
    assert fetch_movielens_100k(tmp_path, wheel=fake_wheel) == path
    assert path.read_bytes() == FILES["ml-100k.inter"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movielens-100k", fake_wheel.name]


def test_wheel_hash_mismatch_leaves_no_cache(tmp_path, fake_wheel):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(fake_wheel.read_bytes() + b"x")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch_movielens_100k(cache, wheel=bad)
    assert list(cache.iterdir()) == []


def test_extracted_file_hash_mismatch(tmp_path, fake_wheel, monkeypatch):
    pins = dict(movielens.FILE_SHA256, **{"ml-100k.user": "0" * 64})
    monkeypatch.setattr(movielens, "FILE_SHA256", pins)
    with pytest.raises(FetchError, match="ml-100k.user"):
        fetch_movielens_100k(tmp_path / "c", wheel=fake_wheel)
    assert list((tmp_path / "c").iterdir()) == []


def test_pip_failure_explains_offline_route(tmp_path, monkeypatch):
    def fail(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "recbole==1.2.1" in cmd
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(movielens.subprocess, "run", fail)
    with pytest.raises(FetchError) as info:
        fetch_movielens_100k(tmp_path)
    message = str(info.value)
    assert "No matching distribution" in message and "--wheel" in message
    assert list(tmp_path.iterdir()) == []


def test_pinned_hashes_look_right():
    assert len(movielens.WHEEL_SHA256) == 64
    assert set(movielens.FILE_SHA256) == set(FILES)


@pytest.mark.slow
def test_real_fetch_movielens_100k(tmp_path, monkeypatch):
    path = fetch_movielens_100k(tmp_path)
    assert path.name == "ml-100k.inter"
    ds = load_dataset("movielens-100k", cache_dir=tmp_path)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100000)
    assert ds.vocab.item_ids[:3] == ("1", "2", "3")  # index i is raw item i
    monkeypatch.setattr(movielens, "_pip_download", no_pip)
    assert fetch_movielens_100k(tmp_path) == path  # cached
