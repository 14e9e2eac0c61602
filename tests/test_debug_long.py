"""The debugging commands on a conversation of 20,000 events: `at` rebuilds from snapshots,
`log` reads windows of it, bisect agrees with a scan, export and import carry it whole."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

import msgspec
import psycopg
import pytest
from debug_scenario import InProcess, voxledger
from psycopg import sql

from voxledger.adapters.bootstrap import open_store
from voxledger.adapters.debug.timetravel import state_document
from voxledger.adapters.store.event_store import EventStore, snapshot_due, snapshot_phase
from voxledger.domain.conversation import Conversation, ConversationSnapshot, ConversationState
from voxledger.scripts.output import to_plain

EVENTS = 20_000
START = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
KEPT = (1, 99, 100, 101, 5_555, 12_345, 15_060, 19_999, EVENTS)


class Long(NamedTuple):
    """The conversation, and its state at the versions in KEPT as it was built."""

    conversation_id: UUID
    states: dict[int, ConversationState]


def tick(version: int) -> datetime:
    return START + timedelta(milliseconds=10 * version)


def build_long(store: EventStore) -> Long:
    """A voice call: every 50 events a user message, a turn with the assistant's answer,
    and audio levels in between; saved every 100 events (each save that crosses a snapshot
    step leaves a snapshot: every 100 events at first, every 4,096 at the end)."""
    c = Conversation.start("voice", "bob", at=tick(1))
    states = {1: c.state()}
    c.connect("twilio", "call-1", at=tick(2))
    while c.version < EVENTS:
        i, at = c.version - 2, tick(c.version + 1)
        step = i % 50
        if step == 0:
            c.add_message(f"u{i}", "user", f"question {i}", at=at)
        elif step == 1:
            c.start_turn(f"t{i}", f"u{i - 1}", at=at)
        elif step == 2:
            c.start_response(at=at)
        elif step == 3:
            c.add_message(f"a{i}", "assistant", f"answer {i}", at=at)
        elif step == 4:
            c.complete_turn(at=at)
        else:
            c.record_levels(-30.0 - i % 7, -20.0, 100.0 + i % 13, at=at)
        if c.version in KEPT:
            states[c.version] = c.state()
        if c.version % 100 == 0:
            store.save(c)
    store.save(c)
    return Long(c.id, states)


@pytest.fixture(scope="module")
def long_schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def long(database_url: str, long_schema: str) -> Long:
    with open_store(database_url, schema=long_schema) as store:
        return build_long(store)


def test_at_rebuilds_any_version_of_a_long_conversation_as_it_was(
    run: InProcess, long_schema: str, long: Long
) -> None:
    for version in KEPT:
        shown = run.json(long_schema, "at", str(long.conversation_id), "--version", str(version))
        assert shown == to_plain(state_document(long.states[version])), f"version {version}"
    moment = tick(12_345) + timedelta(milliseconds=5)  # between two events
    shown = run.json(long_schema, "at", str(long.conversation_id), "--time", moment.isoformat())
    assert shown["version"] == 12_345


def test_at_starts_from_the_nearest_snapshot_which_replay_verify_then_exposes(
    database_url: str, run: InProcess, long_schema: str, long: Long
) -> None:
    # A wrong snapshot planted between two true ones is what `at` builds on: proof that it
    # reads snapshots rather than every event, and why `replay --verify` exists.
    planted = msgspec.structs.replace(long.states[15_060], context={"planted": True})
    with open_store(database_url, schema=long_schema) as store:
        assert store.snapshots is not None
        snapshot = ConversationSnapshot(
            originator_id=long.conversation_id,
            originator_version=15_060,
            timestamp=planted.updated_at,
            topic=ConversationSnapshot.TOPIC,
            state=planted,
        )
        store.snapshots.put([snapshot])
    phase = snapshot_phase(long.conversation_id)  # the steps its saves snapshotted at
    saved = [v for v in range(100, EVENTS + 1, 100) if snapshot_due(100, v, 100, phase)]
    after = min(v for v in saved if v > 15_060)  # the next true snapshot
    try:
        cid = str(long.conversation_id)
        assert run.json(long_schema, "at", cid, "--version", "15070")["context"] == {
            "planted": True
        }
        assert run.json(long_schema, "at", cid, "--version", str(after))["context"] == {}
        code, out = run(long_schema, "replay", cid, "--verify")
        assert code == 1
        assert out.splitlines() == [
            f"conversation {cid}: snapshot after v15060 LevelsRecorded: context.planted: "
            "events say nothing, snapshot says true",
            f"replayed 1 streams, {EVENTS} events; compared {len(saved) + 1} snapshots, "
            "0 projection rows (no current-state projection in this schema): 1 difference",
        ]
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {}.voxledger_snapshots WHERE originator_version = 15060"
                ).format(sql.Identifier(long_schema))
            )


def test_log_reads_a_time_window_or_one_type_of_a_long_conversation(
    run: InProcess, long_schema: str, long: Long
) -> None:
    cid = str(long.conversation_id)
    since, until = tick(10_000).isoformat(), tick(10_049).isoformat()
    window = run.json(long_schema, "log", cid, "--since", since, "--until", until)
    assert [e["version"] for e in window] == list(range(10_000, 10_050))
    turns = run.json(long_schema, "log", cid, "--type", "TurnCompleted")
    assert len(turns) == EVENTS // 50
    code, out = run(long_schema, "log", cid)
    assert code == 0 and out.count("\n") == EVENTS


def test_bisect_on_a_long_conversation_tests_a_few_versions_and_agrees_with_a_scan(
    run: InProcess, long_schema: str, long: Long
) -> None:
    cid = str(long.conversation_id)
    binary = run.json(long_schema, "bisect", cid, "--where", "usage.turns >= 150")
    linear = run.json(long_schema, "bisect", cid, "--where", "usage.turns >= 150", "--linear")
    assert binary["version"] == linear["version"] == 2 + 149 * 50 + 5
    assert binary["event_type"] == "TurnCompleted"
    assert binary["tested"] <= 16 and linear["tested"] == linear["version"]


def test_an_import_that_fails_on_its_last_line_writes_nothing_of_the_lines_before(
    cli_env: dict[str, str],
    database_url: str,
    run: InProcess,
    long_schema: str,
    long: Long,
    tmp_path: Path,
) -> None:
    source = {**cli_env, "VOXLEDGER_SCHEMA": long_schema}
    path = tmp_path / "long.jsonl"
    path.write_text(voxledger(source, "export", str(long.conversation_id)).stdout)
    target = f"t_{uuid.uuid4().hex[:12]}"
    laptop = {**cli_env, "VOXLEDGER_SCHEMA": target}
    try:
        broken = tmp_path / "broken.jsonl"
        lines = path.read_text().splitlines()
        last = json.loads(lines[-1])
        broken.write_text("\n".join([*lines[:-1], json.dumps({**last, "version": EVENTS + 5})]))
        refused = voxledger(laptop, "import", str(broken), check=False)
        assert refused.returncode == 1
        assert f"line {EVENTS + 1}: stream {long.conversation_id} has version" in refused.stderr
        count = sql.SQL("SELECT count(*) FROM {}.{}")
        with psycopg.connect(database_url, autocommit=True) as conn:
            for table in ("voxledger_events", "voxledger_snapshots"):
                found = conn.execute(count.format(sql.Identifier(target), sql.Identifier(table)))
                assert found.fetchone() == (0,), table
        imported = json.loads(voxledger(laptop, "import", str(path), "--json").stdout)
        due = [v for v in range(1, EVENTS + 1) if snapshot_due(100, v, 1)]
        assert (imported["events"], imported["snapshots"]) == (EVENTS, len(due))
        for version in (101, 15_060, EVENTS):
            args = ("at", str(long.conversation_id), "--version", str(version))
            assert run(target, *args) == run(long_schema, *args)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target)))
