"""What a group commit relies on from the storage, on both backends: the batch snapshot
of :meth:`~edgerec.coordinator.storage.Transaction.prefetch`, and messages sent without
waiting (:meth:`~edgerec.coordinator.storage.Transaction.send_message`) — stored with
their transaction, visible to its later reads, and failing it whole when one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec.coordinator.storage import Message, Storage
from tests.coordinator.conftest import open_db


def message(device_id: str, phase: str = "upload", round_id: int = 7) -> Message:
    return Message(
        round_id, device_id, phase, f"digest-{device_id}", {"n": 1}, b"\x01\x02", {"ok": 1}, 1.0
    )


@pytest.fixture
def storage(new_db, tmp_path: Path):
    store: Storage = open_db(new_db(tmp_path))
    yield store
    store.close()


def stored_ids(storage: Storage, phase: str = "upload", round_id: int = 7) -> list[str]:
    with storage.read() as tx:
        return sorted(tx.message_device_ids(round_id, phase))


def test_sent_messages_are_stored_and_seen_by_later_reads(storage: Storage):
    with storage.write() as tx:
        tx.send_message(message("a"))
        tx.send_message(message("b"))
        assert tx.count_messages(7, "upload") == 2  # read after send: sees both
        tx.send_message(message("c"))
    assert stored_ids(storage) == ["a", "b", "c"]
    with storage.read() as tx:
        assert tx.get_message(7, "c", "upload").blob == b"\x01\x02"


def test_a_refused_sent_message_fails_its_whole_transaction(storage: Storage):
    with storage.write() as tx:
        tx.send_message(message("a"))
    refused = pytest.raises(Exception, match="(?i)unique|duplicate")
    with refused, storage.write() as tx:
        tx.send_message(message("b"))
        tx.send_message(message("a"))  # same round, device and phase: refused
        tx.send_message(message("c"))
    assert stored_ids(storage) == ["a"]
    with storage.write() as tx:  # the connection is usable again
        tx.send_message(message("d"))
    assert stored_ids(storage) == ["a", "d"]


def test_prefetch_snapshot(storage: Storage):
    with storage.write() as tx:
        for device_id in ("a", "b", "c"):
            tx.send_message(message(device_id))
        tx.send_message(message("a", phase="unmask"))
    with storage.write() as tx:
        snapshot = tx.prefetch(
            {(7, "upload"): ["a", "x"], (7, "unmask"): ["b"], (8, "upload"): ["a"]}
        )
    assert snapshot.counts == {(7, "upload"): 3, (7, "unmask"): 1, (8, "upload"): 0}
    assert snapshot.states == {7: None, 8: None}  # no such rounds
    assert set(snapshot.messages[(7, "upload")]) == {"a"}  # only the devices asked for
    assert snapshot.messages[(7, "upload")]["a"].blob is None  # without blobs
    assert snapshot.messages[(7, "unmask")] == {}
    assert snapshot.messages[(8, "upload")] == {}
