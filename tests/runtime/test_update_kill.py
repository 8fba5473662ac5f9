"""``kill -9`` at random moments of real update processes never leaves the device
without a complete, verified bundle (see :mod:`edgerec.runtime.slots` for why).

The quick test kills 20 updates; the ``slow`` one 250 (300 more are counted by
``benchmarks/bench_ota.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec.release import ReleaseRepository

from .ota_server import bundle_variant, kill_loop, serve

pytest.importorskip("tuf")


def _kill_test(tiny_bundle: Path, tmp_path: Path, rounds: int, seed: int) -> None:
    repo = ReleaseRepository.init(tmp_path / "repo", tmp_path / "keys")
    for version in ("v1", "v2", "v3"):
        repo.publish(bundle_variant(tiny_bundle, tmp_path / version, version))
    with serve(repo.root) as server:
        stats = kill_loop(repo, server.url, tmp_path / "state", rounds, seed)
    assert stats.checks == rounds + 2
    assert stats.kills >= rounds // 4, stats  # most processes really died mid-way
    assert stats.switches > 0, stats
    assert stats.leftovers == [], "the final update cleans unfinished unpacks"


def test_kill_9_during_updates_quick(tiny_bundle: Path, tmp_path: Path) -> None:
    _kill_test(tiny_bundle, tmp_path, rounds=20, seed=1)


@pytest.mark.slow
def test_kill_9_during_updates_250(tiny_bundle: Path, tmp_path: Path) -> None:
    _kill_test(tiny_bundle, tmp_path, rounds=250, seed=2)
