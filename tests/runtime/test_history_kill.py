"""An acknowledged event survives ``kill -9`` of the writing process (real SIGKILL)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgerec.runtime.history import HistoryStore

# The writer prints "user item" for every event only after record()/record_many()
# returned, i.e. after it was acknowledged. Two threads exercise the group commit.
WRITER = r"""
import os, sys, threading
from edgerec.runtime.history import HistoryStore

store = HistoryStore(sys.argv[1], max_events_per_user=10**9, synchronous=sys.argv[2])

def ack(lines):
    os.write(1, "".join(f"{u} {i}\n" for u, i in lines).encode())

def single(user):
    k = 0
    while True:
        store.record(user, f"i{k}", float(k))
        ack([(user, f"i{k}")])
        k += 1

def batched(user):
    k = 0
    while True:
        batch = [(user, f"b{k}-{j}", float(k)) for j in range(5)]
        store.record_many(batch)
        ack([(u, i) for u, i, _ in batch])
        k += 1

threading.Thread(target=batched, args=("batch",), daemon=True).start()
single("single")
"""


@pytest.mark.slow
@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_acknowledged_events_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "h.db"
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), synchronous],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    acked: list[bytes] = []
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 3000:  # kill mid-stream, well after the writer got going
            line = proc.stdout.readline()
            if not line:
                stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
                pytest.fail(f"writer exited early: {stderr[-2000:]}")
            acked.append(line)
            assert time.monotonic() < deadline, "writer too slow"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # what is still buffered or in the pipe, up to EOF
        proc.stdout.close()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Every complete line the writer printed before dying was acknowledged.
    acked += [line + b"\n" for line in rest.split(b"\n")[:-1]]
    expected: dict[str, set[str]] = {}
    for line in acked:
        user, item = line.decode().split()
        expected.setdefault(user, set()).add(item)
    assert set(expected) == {"single", "batch"}

    conn = sqlite3.connect(path)  # recovers the WAL like any reader would
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with HistoryStore(path, max_events_per_user=10**9) as store:
        for user, items in expected.items():
            stored = [e.item for e in store.history(user)]
            missing = items - set(stored)
            assert not missing, f"{len(missing)} acknowledged events of {user} lost"
            assert len(stored) == len(set(stored))
        batch_items = [e.item for e in store.history("batch")]
        assert len(batch_items) % 5 == 0  # record_many is atomic: whole batches only
