"""The Conversation aggregate through the Engine, on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from voxledger.adapters.store.event_store import snapshot_due, snapshot_phase
from voxledger.domain.conversation import TRANSITIONS, Conversation, Role, Status
from voxledger.domain.engine import Engine
from voxledger.domain.errors import Conflict, InvalidTransition, NotFound, ValidationFailed

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)


def voice_call(engine: Engine) -> UUID:
    cid = engine.start_conversation("voice", "alice", {"campaign": "intake"})
    engine.begin_connecting(cid, "webrtc")
    engine.connect(cid, "webrtc", "rtc-1", latency_ms=40.0)
    engine.listen(cid)
    return cid


def test_a_new_conversation_is_idle_active_and_has_one_event(engine: Engine) -> None:
    cid = engine.start_conversation("telegram", "chat-42")
    state = engine.get_conversation(cid)
    assert state.status is Status.IDLE
    assert state.is_active and not state.current_turn_active
    assert state.version == 1
    assert [h.type for h in engine.history(cid)] == ["Started"]


def test_connecting_then_connected_records_the_connection_facts(engine: Engine) -> None:
    cid = voice_call(engine)
    state = engine.get_conversation(cid)
    assert state.status is Status.LISTENING
    assert state.connection.provider == "webrtc"
    assert state.connection.connection_id == "rtc-1"
    assert state.connection.latency_ms == 40.0
    assert state.connection.connected_at is not None
    assert state.audio.listening


def test_connecting_again_after_a_disconnect_counts_a_reconnect(engine: Engine) -> None:
    cid = voice_call(engine)
    engine.disconnect(cid, "network lost")
    assert not engine.get_conversation(cid).is_active
    engine.begin_connecting(cid, "webrtc")
    engine.connect(cid, "webrtc", "rtc-2")
    state = engine.get_conversation(cid)
    assert state.connection.reconnect_count == 1
    assert state.status is Status.CONNECTED and not state.audio.listening


def test_an_illegal_transition_is_refused_and_records_nothing(engine: Engine) -> None:
    cid = engine.start_conversation("voice")
    with pytest.raises(InvalidTransition, match="cannot go from idle to responding"):
        engine.start_response(cid)  # no turn, and idle cannot respond
    with pytest.raises(InvalidTransition):
        engine.disconnect(cid)
    assert engine.get_conversation(cid).version == 1


def test_an_ended_conversation_refuses_every_command_and_records_nothing(engine: Engine) -> None:
    cid = voice_call(engine)
    engine.end(cid, "bye")
    version = engine.get_conversation(cid).version
    commands = [
        lambda: engine.add_message(cid, "user", "hello?"),
        lambda: engine.start_turn(cid),
        lambda: engine.listen(cid),
        lambda: engine.record_usage(cid, tokens_in=1),
        lambda: engine.update_context(cid, {"a": 1}),
        lambda: engine.connect(cid, "webrtc", "rtc-9"),
        lambda: engine.end(cid),
        lambda: engine.record_error(cid, "late error"),
    ]
    for command in commands:
        with pytest.raises(InvalidTransition):
            command()
    state = engine.get_conversation(cid)
    assert state.version == version
    assert state.status is Status.ENDED and state.end_reason == "bye"


def test_a_turn_counts_its_response_time_from_start_to_completion(engine: Engine) -> None:
    cid = voice_call(engine)
    for seconds in (0.5, 1.5):
        start = engine.get_conversation(cid).updated_at + timedelta(seconds=1)
        user = engine.add_message(cid, "user", "question", at=start)
        engine.start_turn(cid, user, at=start)
        engine.start_response(cid, at=start + timedelta(seconds=seconds / 2))
        answer = engine.add_message(
            cid, Role.ASSISTANT, "answer", at=start + timedelta(seconds=seconds)
        )
        engine.complete_turn(cid, answer, at=start + timedelta(seconds=seconds))
    state = engine.get_conversation(cid)
    assert state.usage.turns == 2
    assert state.usage.response_time_ms_min == 500
    assert state.usage.response_time_ms_max == 1500
    assert state.usage.response_time_ms_avg == 1000
    assert state.status is Status.LISTENING and not state.audio.playing
    assert [t.assistant_message_id is not None for t in state.turns] == [True, True]


def test_a_barge_in_interrupts_the_turn_and_marks_the_assistant_message(engine: Engine) -> None:
    cid = voice_call(engine)
    user = engine.add_message(cid, "user", "tell me a story")
    engine.start_turn(cid, user)
    engine.start_response(cid)
    assert engine.get_conversation(cid).audio.playing
    engine.add_message(cid, "assistant", "Once upon a", complete=False)
    engine.record_speech_started(cid)
    engine.interrupt_turn(cid)
    state = engine.get_conversation(cid)
    assert state.usage.interruptions == 1 and state.usage.turns == 0
    assert state.messages[-1].interrupted and not state.messages[-1].complete
    assert state.turns[-1].interrupted_at is not None
    assert not state.current_turn_active and not state.audio.playing
    assert state.status is Status.LISTENING and state.audio.speech_active


def test_speech_and_silence_need_a_listening_conversation(engine: Engine) -> None:
    cid = engine.start_conversation("voice")
    with pytest.raises(InvalidTransition, match="not listening"):
        engine.record_speech_started(cid)
    cid = voice_call(engine)
    engine.record_speech_started(cid)
    engine.record_speech_ended(cid, 1.25, peak_dbfs=-6.0, mean_dbfs=-20.0)
    engine.record_silence(cid, 3.0)
    state = engine.get_conversation(cid)
    assert state.usage.audio_seconds == 1.25 and state.usage.silences == 1
    assert state.audio.last_speech_at is not None and state.audio.input_level_db == -20.0
    with pytest.raises(InvalidTransition, match="no speech is active"):
        engine.record_speech_ended(cid, 1.0)


def test_usage_levels_traffic_and_context_accumulate(engine: Engine) -> None:
    cid = voice_call(engine)
    engine.record_usage(cid, tokens_in=100, tokens_out=20, cost=0.25, audio_seconds=2.0)
    engine.record_usage(cid, tokens_in=50, cost=0.5)
    engine.record_levels(cid, input_level_db=-30.0, output_level_db=-12.0, latency_ms=120.0)
    engine.record_traffic(cid, messages_sent=2, bytes_received=1000)
    engine.update_context(cid, {"city": "Kazan", "step": 2})
    engine.update_context(cid, {"step": 3}, removed=["city"])
    engine.record_error(cid, "tts timeout")
    state = engine.get_conversation(cid)
    assert (state.usage.tokens_in, state.usage.tokens_out, state.usage.cost) == (150, 20, 0.75)
    assert state.audio.output_level_db == -12.0 and state.audio.latency_ms == 120.0
    assert state.connection.messages_sent == 2 and state.connection.bytes_received == 1000
    assert state.context == {"step": 3}
    assert state.connection.error_count == 1 and state.status is Status.LISTENING


def test_a_fatal_error_moves_to_error_and_closes_the_turn(engine: Engine) -> None:
    cid = voice_call(engine)
    engine.start_turn(cid)
    engine.record_error(cid, "llm unavailable", fatal=True)
    state = engine.get_conversation(cid)
    assert state.status is Status.ERROR and not state.is_active
    assert not state.current_turn_active and state.connection.last_error == "llm unavailable"


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (lambda e, c: e.add_message(c, "robot", "hi"), ValidationFailed),
        (lambda e, c: e.record_usage(c, tokens_in=-1), ValidationFailed),
        (lambda e, c: e.update_context(c, {}), ValidationFailed),
        (lambda e, c: e.complete_message(c, "nope"), NotFound),
        (lambda e, c: e.start_turn(c, "no-such-message"), NotFound),
        (lambda e, c: e.add_message(c, "user", "x" * 70_000), ValidationFailed),
        (lambda e, c: e.add_message(c, "user", "x", at=datetime(2026, 1, 1)), ValidationFailed),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error_and_record_nothing(
    engine: Engine, command, error
) -> None:
    cid = engine.start_conversation("chat")
    with pytest.raises(error):
        command(engine, cid)
    assert engine.get_conversation(cid).version == 1


def test_a_message_id_is_recorded_once(engine: Engine) -> None:
    cid = engine.start_conversation("telegram")
    engine.add_message(cid, "user", "hello", message_id="tg-1")
    with pytest.raises(ValidationFailed, match="already recorded"):
        engine.add_message(cid, "user", "hello", message_id="tg-1")


def test_starting_a_conversation_with_an_existing_id_is_a_conflict(engine: Engine) -> None:
    cid = uuid4()
    engine.start_conversation("chat", conversation_id=cid)
    with pytest.raises(Conflict, match="already exists"):
        engine.start_conversation("chat", conversation_id=cid)


def test_an_unknown_conversation_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.get_conversation(uuid4())
    with pytest.raises(NotFound):
        engine.add_message(uuid4(), "user", "hi")
    with pytest.raises(NotFound):
        engine.history(uuid4())


def test_time_travel_by_version_and_by_time_rebuilds_past_states(engine: Engine) -> None:
    cid = engine.start_conversation("chat", at=T0)
    for i in range(1, 6):
        engine.add_message(cid, "user", f"m{i}", at=T0 + timedelta(minutes=i))
    assert [m.content for m in engine.get_conversation(cid, version=3).messages] == ["m1", "m2"]
    at_1402 = engine.get_conversation(cid, at=T0 + timedelta(minutes=2, seconds=30))
    assert at_1402.version == 3 and at_1402.messages[-1].content == "m2"
    with pytest.raises(NotFound, match="did not exist yet"):
        engine.get_conversation(cid, at=T0 - timedelta(seconds=1))


def test_history_lists_every_event_with_version_time_and_data(engine: Engine) -> None:
    cid = engine.start_conversation("chat", at=T0)
    engine.add_message(cid, "user", "hello", message_id="m1", at=T0 + timedelta(seconds=5))
    history = engine.history(cid)
    assert [(h.version, h.type) for h in history] == [(1, "Started"), (2, "MessageAdded")]
    assert history[1].timestamp == T0 + timedelta(seconds=5)
    assert history[1].data["content"] == "hello" and history[1].data["message_id"] == "m1"


def test_long_conversations_are_snapshotted_and_load_the_same_as_a_full_replay(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("chat")
    for i in range(250):
        engine.add_message(cid, "user", f"m{i}")
    assert engine.store.flush_snapshots(timeout=30)  # written behind the commands
    snapshots = list(engine.store.snapshots.get(cid))
    # Every 100 events, shifted by the stream's phase: one or two in its 251 events.
    due = [v for v in range(1, 252) if snapshot_due(100, v, 1, snapshot_phase(cid))]
    assert [s.originator_version for s in snapshots] == due and due
    loaded = engine.get_conversation(cid)
    replayed = None
    for event in engine.store.stream(cid):
        replayed = event.mutate(replayed)
    assert loaded == replayed.state()
    assert engine.get_conversation(cid, version=150).messages[-1].content == "m148"


# -- the lifecycle table, tested in memory (no store involved) -------------------------------

NOW = T0


def conversation_in(status: Status) -> Conversation:
    """A conversation brought to the given status by legal commands."""
    c = Conversation.start("voice", at=NOW)
    paths = {
        Status.IDLE: [],
        Status.CONNECTING: [lambda: c.begin_connecting("x", at=NOW)],
        Status.CONNECTED: [lambda: c.connect("x", "1", at=NOW)],
        Status.LISTENING: [lambda: c.connect("x", "1", at=NOW), lambda: c.listen(at=NOW)],
        Status.PROCESSING: [lambda: c.start_turn("t", at=NOW)],
        Status.RESPONDING: [lambda: c.start_turn("t", at=NOW), lambda: c.start_response(at=NOW)],
        Status.DISCONNECTED: [lambda: c.connect("x", "1", at=NOW), lambda: c.disconnect(at=NOW)],
        Status.ENDED: [lambda: c.end(at=NOW)],
        Status.ERROR: [lambda: c.record_error("boom", fatal=True, at=NOW)],
    }
    for step in paths[status]:
        step()
    assert c.status is status
    return c


MOVES = {
    Status.CONNECTING: lambda c: c.begin_connecting("x", at=NOW),
    Status.CONNECTED: lambda c: c.connect("x", "2", at=NOW),
    Status.DISCONNECTED: lambda c: c.disconnect(at=NOW),
    Status.ENDED: lambda c: c.end(at=NOW),
    Status.ERROR: lambda c: c.record_error("boom", fatal=True, at=NOW),
}


@pytest.mark.parametrize("source", list(Status))
@pytest.mark.parametrize("target", list(MOVES))
def test_the_transition_table_decides_every_direct_move(source: Status, target: Status) -> None:
    c = conversation_in(source)
    version = c.version
    if target in TRANSITIONS[source]:
        MOVES[target](c)
        assert c.status is target and c.version == version + 1
    else:
        with pytest.raises(InvalidTransition):
            MOVES[target](c)
        assert (
            c.status is source
            and c.version == version
            and c.pending_events[-1].originator_version == version
        )
