"""The msgspec mapper and the PostgreSQL event store."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.store.event_store import snapshot_due, snapshot_phase
from voxledger.adapters.store.mapper import CorruptEvent, MsgspecMapper
from voxledger.domain.conversation import Conversation, Message, Role
from voxledger.domain.engine import Engine

T0 = datetime(2026, 11, 21, 14, 2, tzinfo=UTC)


class Point(msgspec.Struct, frozen=True):
    x: int
    tags: tuple[str, ...]


class Sample(Aggregate):
    """A throwaway aggregate whose events carry every kind of typed field."""

    TOPIC = "tests:Sample"

    class Event(Aggregate.Event):
        TOPIC = "tests:Sample.Event"

    class Created(Aggregate.Created):
        TOPIC = "tests:Sample.Created"

    class Measured(Event):
        TOPIC = "tests:Sample.Measured"
        ref: UUID
        at: datetime
        point: Point
        role: Role
        message: Message
        extra: dict[str, Any]


class Renamed(Aggregate.Event):
    """Version 2 of a stored event: v1 had `name`, v2 splits it into first and last."""

    TOPIC = "tests:Renamed"
    class_version = 2
    first: str
    last: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        first, _, last = state.pop("name").partition(" ")
        state["first"], state["last"] = first, last


def mapper() -> MsgspecMapper:
    return MsgspecMapper(transcoder=None)  # type: ignore[arg-type]  # msgpack needs none


def test_the_mapper_round_trips_uuid_datetime_struct_and_enum_fields_with_their_types() -> None:
    ref = uuid4()
    message = Message(id="m1", role=Role.USER, content="hi", at=T0, metadata={"a": [1, 2]})
    event = Sample.Measured(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=T0,
        ref=ref,
        at=T0,
        point=Point(3, ("a", "b")),
        role=Role.ASSISTANT,
        message=message,
        extra={"when": T0, "n": 1.5},
    )
    stored = mapper().to_stored_event(event)
    assert stored.topic == "tests:Sample.Measured"
    back = mapper().to_domain_event(stored)
    assert back == event
    assert isinstance(back.ref, UUID) and back.point.tags == ("a", "b")
    assert back.role is Role.ASSISTANT and isinstance(back.message, Message)
    assert back.at.tzinfo is not None


def test_an_old_event_is_upcast_from_v1_to_v2_when_read() -> None:
    stored_v1 = StoredEvent(
        originator_id=uuid4(),
        originator_version=3,
        topic=get_topic(Renamed),
        state=msgspec.msgpack.encode({"timestamp": T0, "name": "Ada Lovelace"}),
    )
    event = mapper().to_domain_event(stored_v1)
    assert (event.first, event.last) == ("Ada", "Lovelace")
    again = mapper().to_stored_event(event)
    assert msgspec.msgpack.decode(again.state)["class_version"] == 2
    assert mapper().to_domain_event(again) == event


@pytest.mark.parametrize(
    ("topic", "state", "reason"),
    [
        ("nowhere:Gone", msgspec.msgpack.encode({"timestamp": T0}), "unknown event topic"),
        ("voxledger:Conversation.MessageAdded", b"\xc1\xff garbage", "cannot decode"),
        ("voxledger:Conversation.Ended", msgspec.msgpack.encode([1, 2]), "not a map"),
    ],
)
def test_an_unreadable_event_names_its_stream_and_version(topic, state, reason) -> None:
    stream = uuid4()
    with pytest.raises(CorruptEvent, match=reason) as error:
        mapper().to_domain_event(StoredEvent(stream, 7, topic, state))
    assert f"stream {stream} version 7" in str(error.value)


def test_events_are_stored_as_msgpack_under_their_stable_topics(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid = engine.start_conversation("chat", "p", at=T0)
    engine.add_message(cid, "user", "hello", at=T0)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"SELECT topic, state FROM {schema}.voxledger_events "
            "WHERE originator_id = %s ORDER BY originator_version",
            (cid,),
        ).fetchall()
    assert [r[0] for r in rows] == [
        "voxledger:Conversation.Started",
        "voxledger:Conversation.MessageAdded",
    ]
    stored = msgspec.msgpack.decode(rows[1][1])
    assert stored["role"] == "user"
    assert stored["content"].code == 1  # personal data is sealed (tests/test_erasure.py)


def test_a_second_process_on_the_same_database_sees_and_extends_the_same_conversation(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    cid = engine.start_conversation("chat", "p")
    engine.add_message(cid, "user", "from process one")
    code = (
        "import sys, uuid\n"
        "from voxledger.adapters.bootstrap import open_engine\n"
        "with open_engine() as e:\n"
        "    cid = uuid.UUID(sys.argv[1])\n"
        "    print(len(e.get_conversation(cid).messages))\n"
        "    e.add_message(cid, 'assistant', 'from process two')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cid)],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"
    assert [m.content for m in engine.get_conversation(cid).messages] == [
        "from process one",
        "from process two",
    ]


def test_the_schema_and_tables_are_created_on_first_use(database_url: str, schema: str) -> None:
    with open_engine(database_url, schema=schema) as engine:
        engine.start_conversation("chat")
    with open_engine(database_url, schema=schema) as engine:  # opening again is harmless
        assert engine.store.count_events(Conversation.Started) == 1


def test_a_long_stream_is_snapshotted_at_steps_that_grow_with_it() -> None:
    """Every 100 events at first; then every eighth to quarter of the stream, so that the
    state sealed into snapshots per event stays bounded however long a call runs, and a
    load replays at most a quarter of the stream after its snapshot."""
    events = 100_000
    due = [v for v in range(1, events + 1) if snapshot_due(100, v, 1)]
    assert due[:6] == [100, 200, 300, 400, 500, 512]
    assert all(later - earlier <= max(100, later // 4) for earlier, later in pairwise(due))
    assert sum(due) / events < 8  # events' worth of state sealed per event (fixed 100: 500)
    # A save of several events snapshots when it crosses a step, wherever it lands.
    assert [v for v in range(7, 400, 7) if snapshot_due(100, v, 7)] == [105, 203, 301]


def test_streams_that_grow_together_take_their_snapshots_at_different_moments() -> None:
    """Each stream's steps are shifted by a fraction of a step drawn from its id: 128 chats
    that grow in step do not all seal their state on the same message, and each still
    keeps the schedule's bounds."""
    events = 20_000
    phases = [snapshot_phase(uuid4()) for _ in range(128)]
    schedules = [[v for v in range(1, events + 1) if snapshot_due(100, v, 1, p)] for p in phases]
    for due in schedules:
        assert 100 <= due[0] < 200  # none before the first hundred events
        for earlier, later in pairwise(due):  # a load replays at most about a quarter
            assert later - earlier <= 100 if later < 512 else (later - earlier) / later < 0.26
        assert sum(due) / events < 8
    at_once = Counter(v for due in schedules for v in due)
    assert max(at_once.values()) <= 16  # in step (every phase 0): all 128 at each
    assert snapshot_phase(UUID(int=0xABCD)) == 0xABCD
