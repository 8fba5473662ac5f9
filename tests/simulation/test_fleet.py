"""The simulation's device fleet against the real coordinator on a loopback socket."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edgerec.simulation.fleet import CoordinatorThread, Fleet, FleetDevice, SimClock
from tests.coordinator.harness import TinyModel, make_bundle, make_store


def _open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            count += os.readlink(fds / fd).startswith("socket:")
    return count


def test_fleet_devices_share_connections(tmp_path: Path) -> None:
    """Thousands of simulated devices must not hold one keep-alive socket each.

    A 10,815-device run died with "Too many open files" when every client kept its own
    connection (and the server its end of it) after fetching the last head.
    """
    store = make_store(tmp_path / "history.db", device=0)
    devices = [FleetDevice("user-owner", 8) for _ in range(60)]
    fleet = Fleet(TinyModel(store), store, devices, tmp_path / "devices", {"lr": 0.1})
    before = _open_sockets()
    with CoordinatorThread(make_bundle(tmp_path / "bundle"), tmp_path / "c.db", SimClock()) as c:
        fleet.connect(c.url)  # 60 enrollments over HTTP
        for client in fleet.clients:
            client.fetch_head()
        assert len({client.device_id for client in fleet.clients}) == 60
        assert _open_sockets() - before <= 12
        fleet.close()
    store.close()
