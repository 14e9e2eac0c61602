"""Projections on real PostgreSQL: current state, metrics and audit trail, applied exactly
once whatever the page boundaries, crashes, concurrent runners or rebuilds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from builtin_flows import INTAKE_V1
from conftest import Spawn
from psycopg import sql
from psycopg_pool import ConnectionPool

from voxledger.adapters.bootstrap import catch_up, open_projections, open_runner
from voxledger.domain.conversation import Conversation
from voxledger.domain.engine import Engine
from voxledger.domain.errors import VoxledgerError
from voxledger.domain.flow import Flow, FlowStatus
from voxledger.projections.audit import Audit
from voxledger.projections.metrics import BOUNDS_MS, percentile
from voxledger.projections.queries import Projections
from voxledger.projections.registry import default_projections
from voxledger.projections.runner import ProjectionRunner

ANSWERS = {
    "audio_number": ["1042", "many", "77"],
    "date": ["21.11.2026", "31.02.2026", "01.12.2026"],
    "employee": ["Ivan Petrov", "Anna Sidorova"],
    "place": ["Kazan Arena", "Luzhniki"],
    "building_type": ["office", "castle", "school"],
    "zone": ["north wing", "roof"],
    "city": ["Kazan", "Moscow"],
    "client_name": ["OOO Romashka"],
    "confirm": ["yes", "no", "maybe"],
}
TABLES = [t for p in default_projections() for t in p.tables]


# -- helpers ----------------------------------------------------------------------------------


def dump(
    engine: Engine, tables: Sequence[str] = TABLES, *, rebuild: bool = False
) -> dict[str, list[tuple[Any, ...]]]:
    """Projection tables' rows in one order (every column's, whatever the key); with
    ``rebuild``, as every projection rebuilt from zero makes them."""
    if rebuild:
        with open_runner(engine.store) as runner:
            for name in runner.projections:
                runner.rebuild(name)
    schema = engine.store.recorder.datastore.schema
    with engine.store.recorder.datastore.pool.connection() as conn:
        cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
        return {
            table: sorted(
                cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))),
                key=repr,
            )
            for table in tables
        }


@contextmanager
def running(engine: Engine, page_size: int = 1000) -> Iterator[ProjectionRunner]:
    """A runner tailing the log in a thread for the duration of the block."""
    stop = threading.Event()
    with open_runner(engine.store, page_size) as runner:
        runner.setup()
        worker = threading.Thread(target=runner.run, args=(stop, 0.05))
        worker.start()
        try:
            yield runner
        finally:
            stop.set()
            worker.join()


def random_workload(engine: Engine, clock: Any, seed: int, commands: int = 300) -> list[UUID]:
    """Several conversations driven by random commands (messages, turns, barge-ins, audio,
    usage, flows with bad answers, edits, undo, cancel, expiry), with time jumping ahead
    now and then. A command illegal in the current state is refused and records nothing."""
    rng = random.Random(seed)
    ids = [engine.start_conversation(rng.choice(["voice", "telegram"]), f"u{i}") for i in range(6)]
    flows: dict[UUID, Any] = {}

    def turn(cid: UUID) -> None:
        said = engine.add_message(cid, "user", rng.choice(["hi", "book a visit", "stop"]))
        engine.start_turn(cid, said)
        if rng.random() < 0.7:
            engine.start_response(cid)
            engine.add_message(cid, "assistant", "sure", complete=rng.random() < 0.8)
        clock.now += timedelta(milliseconds=rng.choice([80, 400, 1500, 9000]))
        if rng.random() < 0.25:
            engine.interrupt_turn(cid)
        else:
            engine.complete_turn(cid)

    def speak(cid: UUID) -> None:
        engine.record_speech_started(cid)
        engine.record_speech_ended(cid, rng.uniform(0.2, 4.0), -9.5, -24.0)

    def flow(cid: UUID) -> None:
        reply = flows.get(cid)
        if reply is None or reply.status is not FlowStatus.ACTIVE:
            flows[cid] = engine.start_flow(cid, "intake", rng.choice(["interview", "design"]))
            return
        r = rng.random()
        if r < 0.06:
            flows[cid] = engine.cancel(reply.flow_id, "changed my mind")
        elif r < 0.12:
            flows[cid] = engine.undo(reply.flow_id)
        elif r < 0.2:
            answered = engine.get_flow(reply.flow_id).answers
            flows[cid] = engine.edit(reply.flow_id, rng.choice(sorted(answered) or ["date"]))
        else:
            flows[cid] = engine.answer(reply.flow_id, rng.choice(ANSWERS[reply.step]))

    actions: list[Callable[[UUID], Any]] = [
        lambda cid: engine.begin_connecting(cid, "webrtc"),
        lambda cid: engine.connect(cid, "webrtc", f"c{rng.randint(1, 9)}", rng.uniform(5, 90)),
        lambda cid: engine.listen(cid),
        lambda cid: engine.stop_listening(cid),
        turn,
        turn,
        speak,
        lambda cid: engine.record_silence(cid, rng.uniform(1, 6)),
        lambda cid: engine.record_usage(
            cid,
            tokens_in=rng.randint(0, 900),
            tokens_out=rng.randint(0, 300),
            cost=rng.uniform(0, 0.02),
            audio_seconds=rng.uniform(0, 3),
        ),
        lambda cid: engine.record_levels(cid, -20.5, None, rng.uniform(10, 60)),
        lambda cid: engine.update_context(cid, {"topic": rng.choice(["visit", "bill"])}),
        lambda cid: engine.record_traffic(cid, messages_sent=1, bytes_sent=rng.randint(1, 999)),
        lambda cid: engine.record_error(cid, "jitter", fatal=rng.random() < 0.1),
        lambda cid: engine.disconnect(cid, "network"),
        flow,
        flow,
        flow,
    ]
    for _ in range(commands):
        if rng.random() < 0.05:
            clock.now += timedelta(minutes=rng.choice([7, 40, 90]))  # flows may expire
        cid = rng.choice(ids)
        with suppress(VoxledgerError):  # an illegal move for the state it is in
            rng.choice(actions)(cid)
    engine.end(ids[0], "bye")
    return ids


def bulk_log(engine: Engine, conversations: int = 30, rounds: int = 24) -> int:
    """A few thousand events written fast and interleaved: every round each conversation
    takes a turn, records usage and answers its intake form, all saved in one transaction."""
    rng = random.Random(3)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    streams = [Conversation.start("voice", f"p{i}", at=t0) for i in range(conversations)]
    forms: list[Flow | None] = [None] * conversations
    for r in range(rounds):
        changed: list[Any] = []
        for i, c in enumerate(streams):
            at = t0 + timedelta(minutes=13 * r, seconds=i)
            c.add_message(f"m{r}", "user", "hello", at=at)
            c.start_turn(f"t{r}", f"m{r}", at=at)
            c.add_message(f"a{r}", "assistant", "hi there", at=at)
            end = at + timedelta(milliseconds=rng.randint(50, 5000))
            if rng.random() < 0.2:
                c.interrupt_turn(at=end)
            else:
                c.complete_turn(f"a{r}", at=end)
            c.record_usage(tokens_in=rng.randint(1, 500), cost=rng.uniform(0, 0.01), at=end)
            form = forms[i]
            if form is None:
                form = forms[i] = Flow.begin(c.id, INTAKE_V1, "design", at=end)
                c.begin_flow(form.id, "intake", at=end)
            elif rng.random() < 0.05:
                form.cancel("bored", at=end)
            else:
                form.answer(INTAKE_V1, rng.choice(ANSWERS[form.step or "confirm"]), at=end)
            if form.status is not FlowStatus.ACTIVE:
                c.finish_flow(form.id, form.status, at=end)
                forms[i] = None
            changed += [c, form]
        engine.store.save(*changed)
    return engine.store.head()


# -- the current projection -------------------------------------------------------------------


def test_current_state_matches_every_aggregate_after_a_random_workload(
    engine: Engine, clock: Any
) -> None:
    ids = random_workload(engine, clock, seed=11)
    with open_runner(engine.store) as runner:
        runner.catch_up()
    projections = open_projections(engine.store)
    rows = {r.conversation_id: r for r in projections.conversations(limit=1000)}
    assert set(rows) == set(ids)
    for cid in ids:
        state, row = engine.get_conversation(cid), rows[cid]
        assert (row.status, row.version, row.active_flow_id) == (
            state.status,
            state.version,
            state.active_flow_id,
        )
        assert (row.message_count, row.turn_count) == (state.usage.messages, state.usage.turns)
        assert (row.started_at, row.last_activity) == (state.started_at, state.updated_at)
    flows = projections.flows(limit=1000)
    assert flows, "the workload started flows"
    for f in flows:
        state = engine.get_flow(f.flow_id)
        assert (f.status, f.current_step, f.fields, f.version) == (
            state.status,
            state.step,
            state.answers,
            state.version,
        )
        assert (f.updated_at, f.expires_at) == (state.updated_at, state.expires_at)


def test_conversations_filter_by_status_most_recent_first(engine: Engine) -> None:
    quiet, ended = engine.start_conversation("telegram"), engine.start_conversation("voice")
    engine.end(ended, "done")
    with open_runner(engine.store) as runner:
        runner.catch_up()
    projections = open_projections(engine.store)
    assert [r.conversation_id for r in projections.conversations()] == [ended, quiet]
    assert [r.conversation_id for r in projections.conversations("idle")] == [quiet]
    assert projections.conversations("listening") == []


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_totals_equal_the_sum_of_every_conversations_usage(
    engine: Engine, clock: Any
) -> None:
    ids = random_workload(engine, clock, seed=5)
    with open_runner(engine.store) as runner:
        runner.catch_up()
    m = open_projections(engine.store).metrics()
    usages = [engine.get_conversation(cid).usage for cid in ids]
    assert m.turns == sum(u.turns for u in usages) == m.response.count
    assert m.messages == sum(u.messages for u in usages)
    assert m.interruptions == sum(u.interruptions for u in usages)
    assert m.silences == sum(u.silences for u in usages)
    assert (m.tokens_in, m.tokens_out) == (
        sum(u.tokens_in for u in usages),
        sum(u.tokens_out for u in usages),
    )
    assert m.cost == pytest.approx(sum(u.cost for u in usages), abs=1e-5)
    assert m.audio_seconds == pytest.approx(sum(u.audio_seconds for u in usages), abs=1e-4)
    timed = [u for u in usages if u.turns]
    assert m.response.min_ms == pytest.approx(min(u.response_time_ms_min for u in timed))
    assert m.response.max_ms == pytest.approx(max(u.response_time_ms_max for u in timed))
    assert m.response.min_ms <= m.response.p50_ms <= m.response.p95_ms <= m.response.p99_ms
    assert m.response.p99_ms <= m.response.max_ms


def test_metrics_since_counts_only_the_hours_from_then_on(engine: Engine) -> None:
    cid = engine.start_conversation("voice")
    early, late = datetime(2026, 5, 1, 9, 10, tzinfo=UTC), datetime(2026, 5, 1, 12, 5, tzinfo=UTC)
    engine.add_message(cid, "user", "morning", at=early)
    engine.record_usage(cid, tokens_in=10, cost=0.5, at=early)
    engine.add_message(cid, "user", "noon", at=late)
    engine.record_usage(cid, tokens_in=3, cost=0.25, at=late)
    with open_runner(engine.store) as runner:
        runner.catch_up()
    projections = open_projections(engine.store)
    everything, noon = projections.metrics(), projections.metrics(since=late)
    assert (everything.messages, everything.tokens_in, everything.cost) == (2, 13, 0.75)
    assert (noon.messages, noon.tokens_in, noon.cost) == (1, 3, 0.25)
    after = projections.metrics(since=late + timedelta(hours=1))
    assert (after.messages, after.conversations, after.response.p50_ms) == (0, 0, None)


def test_response_time_percentiles_interpolate_inside_the_log_spaced_buckets() -> None:
    times = [100.0] * 50 + [1000.0] * 45 + [5000.0] * 5
    histogram = [0] * (len(BOUNDS_MS) + 1)
    for ms in times:
        histogram[sum(b <= ms for b in BOUNDS_MS)] += 1
    p50, p95, p99 = (percentile(histogram, q, 100.0, 5000.0) for q in (0.5, 0.95, 0.99))
    assert 100 <= p50 <= 126 and 1000 <= p95 <= 1259 and 5000 * 0.79 <= p99 <= 5000
    assert percentile([0] * len(histogram), 0.5, 0, 0) is None


# -- audit --------------------------------------------------------------------------------------


def test_the_audit_trail_of_a_flow_lists_every_answer_and_edit_with_old_and_new_values(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("telegram", "chat-7")
    fid = engine.start_flow(cid, "intake", "design").flow_id
    for text in ["1042", "31.02.2026", "21.11.2026", "Ivan", "Kazan Arena", "castle", "office"]:
        engine.answer(fid, text)
    engine.answer(fid, "north wing")
    engine.answer(fid, "Kazan")
    engine.edit(fid, "city")
    engine.answer(fid, "Moscow")
    engine.undo(fid)
    engine.answer(fid, "Moscow")  # back at the city after the undo: answer it again
    engine.confirm(fid)
    with open_runner(engine.store) as runner:
        runner.catch_up()
    trail = open_projections(engine.store).audit(fid)
    assert [e.version for e in trail] == list(range(1, engine.get_flow(fid).version + 1))
    assert {e.stream_type for e in trail} == {"flow"}
    rejected = [e for e in trail if e.event_type == "AnswerRejected"]
    assert [e.summary.split(":")[0] for e in rejected] == ["date", "building_type"]
    assert ["31.02.2026" in e.summary for e in rejected] == [True, False]
    assert all(e.changes == {} for e in rejected)
    accepted = [e for e in trail if e.event_type == "AnswerAccepted"]
    assert [next(iter(set(e.changes) - {"step"})) for e in accepted] == [
        "audio_number",
        "date",
        "employee",
        "place",
        "building_type",
        "zone",
        "city",
        "city",
    ]
    assert accepted[0].changes["audio_number"] == {"old": None, "new": 1042}
    (edited,) = [e for e in trail if e.event_type == "FieldEdited"]
    assert edited.changes["city"] == {"old": "Kazan", "new": "Moscow"}
    assert edited.summary == "city edited: Kazan -> Moscow"
    (withdrawn,) = [e for e in trail if e.event_type == "AnswerWithdrawn"]
    assert withdrawn.changes["city"] == {"old": "Moscow", "new": None}
    assert withdrawn.changes["step"] == {"old": "confirm", "new": "city"}
    assert trail[-1].event_type == "Completed"
    assert trail[-1].changes["status"] == {"old": "active", "new": "completed"}


def test_the_audit_trail_of_a_conversation_shows_status_and_connection_changes(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("voice", "caller")
    engine.begin_connecting(cid, "webrtc")
    engine.connect(cid, "webrtc", "rtc-1", latency_ms=38.5)
    engine.disconnect(cid, "network")
    engine.connect(cid, "webrtc", "rtc-2")
    with open_runner(engine.store) as runner:
        runner.catch_up()
    trail = open_projections(engine.store).audit(cid)
    assert [e.event_type for e in trail] == [
        "Started",
        "ConnectionOpening",
        "Connected",
        "Disconnected",
        "Connected",
    ]
    assert trail[1].changes["status"] == {"old": "idle", "new": "connecting"}
    assert trail[2].changes == {
        "status": {"old": "connecting", "new": "connected"},
        "connection_id": {"old": None, "new": "rtc-1"},
        "latency_ms": {"old": None, "new": 38.5},
    }
    assert trail[4].changes == {
        "status": {"old": "disconnected", "new": "connected"},
        "connection_id": {"old": "rtc-1", "new": "rtc-2"},
        "latency_ms": {"old": 38.5, "new": None},
        "reconnects": {"old": 0, "new": 1},
    }
    assert trail[4].summary == "reconnected via webrtc (rtc-2)"
    assert [e.position for e in trail] == sorted(e.position for e in trail)
    assert all(e.correlation_id is None and e.causation_id is None for e in trail)


# -- funnel -------------------------------------------------------------------------------------


def test_the_funnel_counts_runs_reaching_each_step_rejections_and_where_runs_were_abandoned(
    engine: Engine, clock: Any
) -> None:
    def begin() -> UUID:
        return engine.start_flow(engine.start_conversation("telegram"), "intake", "design").flow_id

    done = begin()
    for text in ["1042", "no date", "21.11.2026", "Ivan", "Arena", "office", "north", "Kazan"]:
        engine.answer(done, text)
    engine.edit(done, "employee")  # asks the employee again: not a second arrival there
    engine.answer(done, "Anna")
    engine.confirm(done)
    cancelled = begin()
    engine.answer(cancelled, "7")
    engine.cancel(cancelled, "wrong form")
    expired = begin()
    clock.now += timedelta(hours=1)
    assert engine.expire_idle() == [expired]
    with open_runner(engine.store) as runner:
        runner.catch_up()
    funnel = open_projections(engine.store).funnel("intake")
    o = funnel.outcomes
    assert (o.started, o.completed, o.cancelled, o.expired) == (3, 1, 1, 1)
    steps = {s.step: (s.reached, s.rejected, s.abandoned) for s in funnel.steps}
    assert steps["audio_number"] == (3, 0, 1)  # the expired run never got past it
    assert steps["date"] == (2, 1, 1)  # the cancelled run stopped there; one bad date
    assert steps["employee"] == (1, 0, 0) and steps["confirm"] == (1, 0, 0)
    assert "client_name" not in steps  # design mode asks for the city instead
    assert [s.step for s in funnel.steps][:3] == ["audio_number", "date", "employee"]


def test_the_sweep_reads_what_is_due_from_the_current_state(engine: Engine, clock: Any) -> None:
    start = clock.now
    idle = engine.start_flow(engine.start_conversation("chat"), "intake", "design")
    busy = engine.start_flow(engine.start_conversation("chat"), "intake", "design")
    done = engine.start_flow(engine.start_conversation("chat"), "intake", "design")
    engine.cancel(done.flow_id, at=start + timedelta(minutes=1))
    engine.answer(busy.flow_id, "7", at=start + timedelta(minutes=4))
    ended = engine.start_conversation("chat", at=start + timedelta(minutes=4))
    engine.end(ended, at=start + timedelta(minutes=4))
    catch_up(engine.store)
    projections = open_projections(engine.store)
    at = start + timedelta(minutes=6)
    assert [row.flow_id for row in projections.due_flows(at)] == [idle.flow_id]
    assert projections.due_flows(start + timedelta(minutes=5)) == []
    quiet = {row.conversation_id for row in projections.idle_conversations(at)}
    assert ended not in quiet  # ended: nothing left to end
    assert engine.get_flow(done.flow_id).conversation_id in quiet
    assert len(projections.idle_conversations(at, limit=1)) == 1


def test_the_funnel_of_a_flow_never_run_is_not_found(engine: Engine) -> None:
    with open_runner(engine.store) as runner:
        runner.catch_up()
    with pytest.raises(VoxledgerError, match="no runs of flow 'nope'"):
        open_projections(engine.store).funnel("nope")


# -- exactly once -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_tables_kept_current_while_events_arrive_equal_the_same_projections_rebuilt_from_zero(
    engine: Engine, clock: Any, seed: int
) -> None:
    with running(engine, page_size=7):
        random_workload(engine, clock, seed)
        open_projections(engine.store).wait_for(engine.store.head(), timeout=30)
    live = dump(engine)
    assert len(live["audit_trail"]) == engine.store.head()
    assert live == dump(engine, rebuild=True)


def test_two_runners_at_once_apply_every_event_exactly_once(engine: Engine) -> None:
    bulk_log(engine, conversations=12, rounds=10)
    runners = [open_runner(engine.store, size) for size in (25, 40, 7)]
    runners[0].setup()
    racers = [threading.Thread(target=r.catch_up) for r in runners]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert {s.lag for s in runners[0].status()} == {0}
    for runner in runners:
        runner.close()
    assert dump(engine) == dump(engine, rebuild=True)


class FailsOnce(Audit):
    """The audit projection, failing after writing the page that holds position 40."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def apply(self, cur: psycopg.Cursor[Any], t: Any, page: Any) -> None:
        super().apply(cur, t, page)
        if not self.failed and any(e.position == 40 for e in page):
            self.failed = True
            raise RuntimeError("disk full")


def test_a_page_that_fails_leaves_no_rows_and_the_next_attempt_applies_it_once(
    engine: Engine, clock: Any
) -> None:
    bulk_log(engine, conversations=10, rounds=6)
    store, ds = engine.store, engine.store.recorder.datastore
    failing = ProjectionRunner(
        ds.pool, ds.schema, store.mapper.to_domain_event, [FailsOnce()], page_size=30, clock=clock
    )
    with failing, pytest.raises(RuntimeError, match="disk full"):
        failing.catch_up()
    assert [s.position for s in failing.status()] == [30]
    failing.catch_up()
    audit = {t: rows for t, rows in dump(engine, Audit.tables).items()}
    assert len(audit["audit_trail"]) == store.head()
    assert audit == dump(engine, Audit.tables, rebuild=True)


KILLS = 4 * int(os.environ.get("VOXLEDGER_TORTURE_SCALE", "1"))  # 13 for a 52-kill run


@pytest.mark.concurrency
def test_a_runner_killed_at_random_moments_and_restarted_ends_as_an_uninterrupted_run(
    engine: Engine, database_url: str, schema: str, cli_env: dict[str, str], spawn: Spawn
) -> None:
    head = bulk_log(engine)
    assert head > 3000
    rng = random.Random(42)
    command = [sys.executable, "-m", "voxledger.scripts.main", "project", "run", "--once"]
    kills = 0
    with psycopg.connect(database_url, autocommit=True) as watch:
        tracking = sql.SQL("SELECT min(position), max(position) FROM {}").format(
            sql.Identifier(schema, "voxledger_tracking")
        )

        def positions() -> tuple[int, int]:
            try:
                low, high = watch.execute(tracking).fetchone() or (0, 0)
            except psycopg.errors.UndefinedTable:
                return 0, 0
            return low or 0, high or 0

        for _ in range(3 * KILLS):
            low = positions()[0]
            if kills == KILLS or low >= head:
                break
            target = low + rng.randint(1, max(1, (head - low) // (KILLS - kills + 2)))
            process = spawn(
                [*command, "--page-size", str(rng.choice([20, 50, 130]))],
                env=cli_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while process.poll() is None and positions()[1] < target:
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += positions()[0] < head  # killed while catching up, not after it
    assert kills == KILLS
    finished = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    after_kills = dump(engine)
    assert len(after_kills["audit_trail"]) == head
    assert after_kills == dump(engine, rebuild=True)


def test_rebuilding_while_a_runner_tails_new_events_loses_nothing_and_doubles_nothing(
    engine: Engine, clock: Any
) -> None:
    bulk_log(engine, conversations=10, rounds=6)
    with running(engine, page_size=5):
        writer = threading.Thread(target=random_workload, args=(engine, clock, 3, 150))
        writer.start()
        with open_runner(engine.store, page_size=20) as rebuilder:
            for name in rebuilder.projections:
                rebuilder.rebuild(name)
        writer.join()
        open_projections(engine.store).wait_for(engine.store.head(), timeout=30)
    assert dump(engine) == dump(engine, rebuild=True)


# -- rebuild, status, wait_for ------------------------------------------------------------------


def test_a_rebuild_keeps_the_old_tables_readable_until_it_swaps_in_the_new_ones(
    engine: Engine, database_url: str, schema: str
) -> None:
    bulk_log(engine, conversations=20, rounds=5)
    with open_runner(engine.store) as runner:
        runner.catch_up()
    before = dump(engine)
    readers = Projections(ConnectionPool(database_url, min_size=1, max_size=2, open=True), schema)
    shadow = sql.Identifier(schema, "current_conversations__rebuild")
    seen: list[tuple[int, int | None]] = []

    def during(position: int, head: int) -> None:
        # From other connections, mid-rebuild: the old tables are whole, the new partial.
        with psycopg.connect(database_url) as other:
            exists = other.execute("SELECT to_regclass(%s)", (shadow.as_string(other),))
            partial = None
            if exists.fetchone()[0]:
                count = other.execute(sql.SQL("SELECT count(*) FROM {}").format(shadow))
                partial = count.fetchone()[0]
        seen.append((len(readers.conversations(limit=1000)), partial))

    with open_runner(engine.store, page_size=9) as runner:
        runner.rebuild("current", during)
    assert seen[0][1] is not None and seen[0][1] < 20, seen[0]
    assert seen[-1] == (20, None)  # the last call comes after the swap
    assert all(whole == 20 for whole, _ in seen)
    assert dump(engine) == before
    readers.pool.close()


def test_status_reports_each_position_the_head_and_how_far_behind_it_is(
    engine: Engine, clock: Any
) -> None:
    hour_ago = clock.now - timedelta(hours=1)
    cid = engine.start_conversation("voice", at=hour_ago)
    engine.add_message(cid, "user", "hello", at=hour_ago)
    with open_runner(engine.store, clock=clock) as runner:
        behind = runner.status()
        assert [(s.name, s.position, s.head, s.lag) for s in behind] == [
            ("audit", 0, 2, 2),
            ("current", 0, 2, 2),
            ("delivery", 0, 2, 2),
            ("metrics", 0, 2, 2),
            ("outbox", 0, 2, 2),
        ]
        assert all(3500 < s.seconds_behind < 3700 for s in behind)
        runner.catch_up()
        assert [(s.position, s.lag, s.seconds_behind) for s in runner.status()] == [(2, 0, 0.0)] * 5
    assert open_projections(engine.store).positions() == dict.fromkeys(
        ("audit", "current", "delivery", "metrics", "outbox"), 2
    )


def test_wait_for_returns_once_a_write_is_projected_and_times_out_without_a_runner(
    engine: Engine,
) -> None:
    projections = open_projections(engine.store)
    cid = engine.start_conversation("telegram")
    with pytest.raises(TimeoutError, match="did not reach position 1"):
        projections.wait_for(engine.store.head(), timeout=0.2)
    with running(engine):
        engine.add_message(cid, "user", "read your own writes")
        projections.wait_for(engine.store.head(), timeout=10)
        assert projections.conversations()[0].message_count == 1
        engine.end(cid)
        projections.wait_for(engine.store.head(), timeout=10, projection="current")
        assert projections.conversations()[0].status == "ended"


def test_catch_up_for_the_demo_brings_every_projection_to_the_head(engine: Engine) -> None:
    engine.start_conversation("voice", "demo-caller")
    catch_up(engine.store)
    catch_up(engine.store)  # current already: reads nothing, writes nothing
    assert open_projections(engine.store).positions() == dict.fromkeys(
        ("audit", "current", "delivery", "metrics", "outbox"), engine.store.head()
    )


def test_an_unknown_projection_cannot_be_rebuilt(engine: Engine) -> None:
    with open_runner(engine.store) as runner, pytest.raises(VoxledgerError, match="known: "):
        runner.rebuild("nope")
