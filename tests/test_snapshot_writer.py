"""Snapshots are written behind the commands: bounded, flushed on close, never after an
erasure, and a failed write costs nothing but the cache."""

from __future__ import annotations

import threading
import uuid

from eventsourcing.persistence import StoredEvent

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.store.event_store import snapshot_due, snapshot_phase
from voxledger.adapters.store.snapshots import SnapshotWriter


def snapshot(stream: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(stream, version, "t", b"state")


class Gate:
    """An insert that holds the writer until released, and records what it wrote."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[tuple[uuid.UUID, int]] = []

    def __call__(self, batch: list[StoredEvent]) -> None:
        self.entered.set()
        assert self.release.wait(10)
        self.written += [(s.originator_id, s.originator_version) for s in batch]


def test_queued_snapshots_are_bounded_dropping_the_oldest() -> None:
    gate = Gate()
    writer = SnapshotWriter(gate, max_pending=3)
    a = uuid.uuid4()
    writer.put([snapshot(a, 100)])
    assert gate.entered.wait(10)  # the writer is busy with the first
    writer.put([snapshot(a, v) for v in (200, 300, 400, 500)])
    gate.release.set()
    assert writer.flush(timeout=10)
    assert gate.written == [(a, 100), (a, 300), (a, 400), (a, 500)]
    assert writer.dropped == 1 and writer.written == 4
    writer.close()


def test_discarded_streams_are_not_written_and_a_write_in_progress_is_waited_for() -> None:
    gate = Gate()
    writer = SnapshotWriter(gate)
    a, b = uuid.uuid4(), uuid.uuid4()
    writer.put([snapshot(a, 100)])
    assert gate.entered.wait(10)
    writer.put([snapshot(a, 200), snapshot(b, 100)])
    done = threading.Event()
    thread = threading.Thread(target=lambda: (writer.discard([a]), done.set()))
    thread.start()
    assert not done.wait(0.2)  # waits for the write in progress...
    gate.release.set()
    thread.join(10)
    assert done.is_set()
    writer.close()
    assert gate.written == [(a, 100), (b, 100)]  # ...and a's queued one never lands


def test_a_failed_write_is_logged_and_the_writer_goes_on() -> None:
    calls: list[int] = []

    def insert(batch: list[StoredEvent]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("disk full")

    writer = SnapshotWriter(insert)
    writer.put([snapshot(uuid.uuid4(), 100)])
    assert writer.flush(timeout=10)
    writer.put([snapshot(uuid.uuid4(), 100)])
    assert writer.flush(timeout=10)
    writer.close()
    assert calls == [1, 1] and writer.dropped == 1 and writer.written == 1


def test_closing_the_store_writes_the_snapshots_still_queued(
    database_url: str, schema: str
) -> None:
    with open_engine(database_url, schema=schema) as engine:
        cid = engine.start_conversation("chat")
        for i in range(199):  # a snapshot within the first 200 events, whatever the phase
            engine.add_message(cid, "user", f"m{i}")
    with open_engine(database_url, schema=schema) as engine:
        assert engine.store.snapshots is not None
        due = [v for v in range(1, 201) if snapshot_due(100, v, 1, snapshot_phase(cid))]
        assert due  # one, or two (at 100 and 200) for a phase under 1%
        assert [s.originator_version for s in engine.store.snapshots.get(cid)] == due
        engine.store.forget_cached()
        assert len(engine.get_conversation(cid).messages) == 199
