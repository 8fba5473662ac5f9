"""The release repository (``edgerec release``): real TUF metadata, verified with
python-tuf's own API, and the CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.release import ReleaseRepository, RepositoryError

pytest.importorskip("tuf")


@pytest.fixture
def repo(tmp_path: Path) -> ReleaseRepository:
    return ReleaseRepository.init(tmp_path / "repo", tmp_path / "keys")


def _verify_chain(repo: ReleaseRepository) -> None:
    """Every role's newest metadata is signed by the keys root delegates to."""
    from tuf.api.metadata import Metadata

    root = Metadata.from_file(str(repo.metadata_dir / "root.json"))
    targets, snapshot, timestamp = repo.load()
    for role, md in (("targets", targets), ("snapshot", snapshot), ("timestamp", timestamp)):
        root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
    assert snapshot.signed.meta["targets.json"].version == targets.signed.version
    assert timestamp.signed.snapshot_meta.version == snapshot.signed.version


def test_init_creates_keys_and_signed_metadata(repo: ReleaseRepository) -> None:
    for role in ("root", "targets", "snapshot", "timestamp"):
        key = repo.keys_dir / f"{role}.pem"
        assert key.stat().st_mode & 0o077 == 0, f"{key} must be private"
    assert (repo.metadata_dir / "1.root.json").is_file()
    _verify_chain(repo)
    with pytest.raises(RepositoryError, match="already"):
        ReleaseRepository.init(repo.root, repo.keys_dir)


def test_publish_packs_the_bundle_as_one_target(
    repo: ReleaseRepository, release_bundle: Path, tmp_path: Path
) -> None:
    res = repo.publish(release_bundle, version="v1")
    archive = repo.targets_dir / "bundles" / f"{res.sha256}.v1.tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert all(m.isfile() and m.mtime == 0 for m in tar)
    manifest = json.loads((release_bundle / "manifest.json").read_text())
    assert names == {"manifest.json", *manifest["files"]}
    again = repo.publish(release_bundle, version="v1")  # same bytes: same target
    assert again.sha256 == res.sha256
    _verify_chain(repo)
    assert repo.status()["releases"]["v1"]["bytes"] == res.bytes


def test_publish_refuses_a_tampered_bundle_and_a_reused_version(
    repo: ReleaseRepository, release_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(release_bundle, tmp_path / "copy"))
    repo.publish(copy, version="v1")
    with (copy / "vocab.json").open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(RepositoryError, match="vocab.json"):
        repo.publish(copy, version="v2")
    (copy / "vocab.json").write_bytes((release_bundle / "vocab.json").read_bytes())
    data = json.loads((copy / "manifest.json").read_text())
    data["created"] = "another build"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(RepositoryError, match="already published with different contents"):
        repo.publish(copy, version="v1")


def test_channel_operations_bump_the_metadata(repo: ReleaseRepository, release_bundle) -> None:
    repo.publish(release_bundle, version="v1")
    repo.publish(release_bundle, version="v2", percent=0)
    versions = [repo.status()["versions"]["targets"]]
    ch = repo.rollout(25)
    assert (ch.release.version, ch.baseline.version, ch.percent) == ("v2", "v1", 25)
    assert repo.pause().paused and not repo.resume().paused
    ch = repo.rollback("v1")
    assert (ch.release.version, ch.baseline, ch.percent) == ("v1", None, 100)
    versions.append(repo.status()["versions"]["targets"])
    assert versions[1] == versions[0] + 4
    with pytest.raises(RepositoryError, match="never published"):
        repo.rollback("v9")
    with pytest.raises(RepositoryError, match="no release yet"):
        repo.rollout(10, channel="beta")
    _verify_chain(repo)


def test_publish_during_a_rollout_keeps_the_fleet_baseline(
    repo: ReleaseRepository, release_bundle: Path
) -> None:
    repo.publish(release_bundle, version="v1")
    repo.publish(release_bundle, version="v2", percent=10)
    ch = repo.publish(release_bundle, version="v3", percent=10).channel
    assert ch.baseline.version == "v1", "v2 never reached everyone"


def test_refresh_re_signs_snapshot_and_timestamp(repo: ReleaseRepository) -> None:
    before = repo.status()
    repo.refresh(days=1)
    after = repo.status()
    assert after["versions"]["targets"] == before["versions"]["targets"]
    assert after["versions"]["timestamp"] == before["versions"]["timestamp"] + 1
    _verify_chain(repo)


def test_cli(tmp_path: Path, release_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    repo, keys = str(tmp_path / "r"), str(tmp_path / "k")
    assert main(["release", "init", repo, "--keys", keys]) == 0
    assert main(["release", "publish", repo, str(release_bundle), "--keys", keys]) == 0
    assert main(["release", "rollout", repo, "--keys", keys, "--percent", "30"]) == 0
    assert main(["release", "rollback", repo, "--keys", keys, "--to", "nope"]) == 2
    assert "never published" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["release", "status", repo, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["channels"]["stable"]["percent"] == 30.0
    assert main(["release", "status", str(tmp_path / "none")]) == 2
    assert main(["release", "publish", repo, str(tmp_path), "--keys", str(tmp_path)]) == 2
