"""Specifications of the Conversation aggregate alone: given its events, when a command, then
the events it records or the error that refuses it (no database, no Engine)."""

from __future__ import annotations

from uuid import UUID

import pytest
from spec import Fact, at, fact, given, history, refused, when

from voxledger.domain.conversation import STATUS_EVENTS, Conversation
from voxledger.domain.conversation_values import TRANSITIONS, Role, Status
from voxledger.domain.errors import InvalidTransition, NotFound, ValidationFailed

C = Conversation
STARTED = fact(C.Started, channel="voice", participant="alice", metadata={"campaign": "x"})
CONNECTED = fact(
    C.Connected, provider="webrtc", connection_id="c1", latency_ms=None, reconnect=False
)
LISTENING = fact(C.ListeningStarted)
TURN = fact(C.TurnStarted, turn_id="t1", user_message_id=None)
SAID = fact(
    C.MessageAdded,
    message_id="m1",
    role="user",
    content="hello",
    metadata={},
    audio_duration_s=None,
    complete=True,
)

# A history that leaves the conversation in each status.
IN_STATUS: dict[Status, tuple[Fact, ...]] = {
    Status.IDLE: (STARTED,),
    Status.CONNECTING: (STARTED, fact(C.ConnectionOpening, provider="sip")),
    Status.CONNECTED: (STARTED, CONNECTED),
    Status.LISTENING: (STARTED, CONNECTED, LISTENING),
    Status.PROCESSING: (STARTED, TURN),
    Status.RESPONDING: (STARTED, TURN, fact(C.ResponseStarted, turn_id="t1")),
    Status.DISCONNECTED: (STARTED, CONNECTED, fact(C.Disconnected, reason="gone")),
    Status.ERROR: (STARTED, fact(C.ErrorRecorded, error="boom", fatal=True)),
    Status.ENDED: (STARTED, fact(C.Ended, reason="bye")),
}

# Commands that take the conversation to one status, whatever it is in.
MOVES_TO = {
    Status.CONNECTING: lambda c: c.begin_connecting("sip", at=at(60)),
    Status.CONNECTED: lambda c: c.connect("sip", "c2", at=at(60)),
    Status.DISCONNECTED: lambda c: c.disconnect("line dropped", at=at(60)),
    Status.ERROR: lambda c: c.record_error("codec", fatal=True, at=at(60)),
    Status.ENDED: lambda c: c.end("done", at=at(60)),
    Status.PROCESSING: lambda c: c.start_turn("t9", at=at(60)),
    Status.RESPONDING: lambda c: c.start_response(at=at(60)),
}


# -- the lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_each_history_leaves_the_status_its_events_say(status: Status) -> None:
    assert given(C, *IN_STATUS[status]).status is status
    followed = None
    for event in history(C, *IN_STATUS[status]):  # as the read models follow the status
        followed = event.status_after(followed)
    assert followed == status


@pytest.mark.parametrize("target", list(MOVES_TO))
@pytest.mark.parametrize("status", list(Status))
def test_a_command_moves_the_status_only_as_the_lifecycle_table_allows(
    status: Status, target: Status
) -> None:
    conversation = given(C, *IN_STATUS[status])
    outcome = when(conversation, MOVES_TO[target])
    if target in TRANSITIONS[status]:
        assert not isinstance(outcome, Exception), outcome
        assert conversation.status is target
    else:
        assert refused(outcome, InvalidTransition)
        assert conversation.status is status


def test_only_events_that_say_how_they_move_the_status_are_followed_by_the_read_models() -> None:
    assert {cls.__name__ for cls in STATUS_EVENTS} == {
        "Started", "ConnectionOpening", "Connected", "Disconnected", "ErrorRecorded",
        "ListeningStarted", "ListeningStopped", "Ended", "TurnStarted", "ResponseStarted",
        "TurnCompleted", "TurnInterrupted",
    }  # fmt: skip


def test_starting_needs_a_channel() -> None:
    with pytest.raises(ValidationFailed, match="needs a channel"):
        C.start("  ", at=at(0))


def test_a_new_conversation_records_its_start_and_is_idle() -> None:
    conversation = C.start(
        "voice", "alice", {"campaign": "x"}, at=at(0), conversation_id=UUID(int=7)
    )
    assert when(conversation, lambda c: None) == [
        ("Started", {"channel": "voice", "participant": "alice", "metadata": {"campaign": "x"}}),
    ]
    assert conversation.status is Status.IDLE


def test_a_connection_after_an_earlier_one_counts_as_a_reconnect() -> None:
    conversation = given(C, *IN_STATUS[Status.DISCONNECTED])
    assert when(conversation, lambda c: c.connect("webrtc", "c2", 40.0, at=at(9))) == [
        ("Connected", {"provider": "webrtc", "connection_id": "c2", "latency_ms": 40.0,
                       "reconnect": True}),
    ]  # fmt: skip
    assert conversation.connection.reconnect_count == 1


def test_a_negative_latency_is_refused() -> None:
    outcome = when(given(C, STARTED), lambda c: c.connect("webrtc", "c1", -1.0, at=at(9)))
    assert refused(outcome, ValidationFailed, "latency_ms must not be negative")


def test_an_error_that_is_not_fatal_is_counted_and_leaves_the_status() -> None:
    conversation = given(C, STARTED, CONNECTED)
    assert when(conversation, lambda c: c.record_error("jitter", at=at(9))) == [
        ("ErrorRecorded", {"error": "jitter", "fatal": False}),
    ]
    assert conversation.status is Status.CONNECTED
    connection = conversation.connection
    assert (connection.error_count, connection.last_error) == (1, "jitter")


def test_an_ended_conversation_takes_no_more_commands() -> None:
    conversation = given(C, *IN_STATUS[Status.ENDED])
    assert refused(when(conversation, lambda c: c.record_error("x", at=at(9))), InvalidTransition)
    assert refused(
        when(conversation, lambda c: c.add_message("m2", "user", "hi", at=at(9))),
        InvalidTransition,
        "has ended",
    )


def test_a_conversation_idle_past_the_limit_ends_with_the_idle_time_as_its_reason() -> None:
    conversation = given(C, STARTED)  # its last event at 0 s
    assert refused(when(conversation, lambda c: c.end_idle(3600, at=at(3600))), InvalidTransition)
    assert when(conversation, lambda c: c.end_idle(3600, at=at(3601))) == [
        ("Ended", {"reason": "expired after 3601 s idle"}),
    ]
    assert conversation.status is Status.ENDED
    assert not conversation.is_idle_at(at(99_999), 3600)  # ended: never idle again


# -- messages and turns -----------------------------------------------------------------------


def test_a_message_is_recorded_with_its_role_and_counted() -> None:
    conversation = given(C, STARTED)
    outcome = when(conversation, lambda c: c.add_message("m1", Role.USER, "hello", at=at(5)))
    assert outcome == [
        ("MessageAdded", {"message_id": "m1", "role": "user", "content": "hello", "metadata": {},
                          "audio_duration_s": None, "complete": True}),
    ]  # fmt: skip
    assert [(m.id, m.role, m.content, m.at) for m in conversation.messages] == [
        ("m1", Role.USER, "hello", at(5))
    ]
    assert conversation.usage.messages == 1


@pytest.mark.parametrize(
    ("message_id", "role", "reason"),
    [
        ("m1", "user", "message 'm1' is already recorded"),
        ("m2", "robot", "role must be one of user, assistant, system"),
        ("", "user", "a message needs an id"),
    ],
)
def test_a_message_with_a_known_id_an_unknown_role_or_no_id_is_refused(
    message_id: str, role: str, reason: str
) -> None:
    conversation = given(C, STARTED, SAID)
    outcome = when(conversation, lambda c: c.add_message(message_id, role, "x", at=at(5)))
    assert refused(outcome, ValidationFailed, reason)


def test_a_streamed_message_completes_once_with_its_final_content() -> None:
    conversation = given(C, STARTED)
    conversation.add_message("a1", "assistant", "Hel", complete=False, at=at(5))
    conversation.collect_events()
    assert when(conversation, lambda c: c.complete_message("a1", "Hello!", at=at(6))) == [
        ("MessageCompleted", {"message_id": "a1", "content": "Hello!"}),
    ]
    assert (conversation.messages[0].content, conversation.messages[0].complete) == ("Hello!", True)
    again = when(conversation, lambda c: c.complete_message("a1", at=at(7)))
    assert refused(again, InvalidTransition, "already complete")
    assert refused(when(conversation, lambda c: c.complete_message("zz", at=at(7))), NotFound)


def test_a_turn_starts_from_the_users_message_and_completes_with_its_response_time() -> None:
    conversation = given(C, STARTED, CONNECTED, SAID)
    assert when(conversation, lambda c: c.start_turn("t1", "m1", at=at(10))) == [
        ("TurnStarted", {"turn_id": "t1", "user_message_id": "m1"}),
    ]
    conversation.add_message("a1", "assistant", "Hi!", at=at(11))
    conversation.collect_events()
    assert conversation.turns[-1].assistant_message_id == "a1"  # the first answer is the turn's
    assert when(conversation, lambda c: c.complete_turn(at=at(11.25))) == [
        ("TurnCompleted", {"turn_id": "t1", "assistant_message_id": None, "duration_ms": 1250.0,
                           "status": "connected"}),
    ]  # fmt: skip
    assert conversation.status is Status.CONNECTED  # where it rests: connected, not listening
    assert (conversation.usage.turns, conversation.usage.response_time_ms_avg) == (1, 1250.0)
    assert conversation.current_turn_id is None


def test_a_second_turn_cannot_start_while_one_is_in_progress() -> None:
    outcome = when(given(C, STARTED, TURN), lambda c: c.start_turn("t2", at=at(9)))
    assert refused(outcome, InvalidTransition, "turn 't1' is still in progress")


def test_a_turn_for_an_unknown_message_or_with_a_used_id_is_refused() -> None:
    conversation = given(C, STARTED, TURN, fact(C.TurnCompleted, turn_id="t1",
                         assistant_message_id=None, duration_ms=5.0, status="idle"))  # fmt: skip
    assert refused(when(conversation, lambda c: c.start_turn("t1", at=at(9))), ValidationFailed)
    assert refused(when(conversation, lambda c: c.start_turn("t2", "nope", at=at(9))), NotFound)


def test_a_barge_in_interrupts_the_turn_and_marks_the_assistants_message() -> None:
    conversation = given(C, STARTED, CONNECTED, LISTENING, TURN)
    conversation.start_response(at=at(5))
    conversation.add_message("a1", "assistant", "Let me tell you", complete=False, at=at(5))
    conversation.collect_events()
    assert conversation.audio.playing
    assert when(conversation, lambda c: c.interrupt_turn(at=at(6))) == [
        ("TurnInterrupted", {"turn_id": "t1", "reason": "barge-in", "status": "listening"}),
    ]
    assert conversation.status is Status.LISTENING
    assert conversation.messages[-1].interrupted and not conversation.audio.playing
    assert conversation.usage.interruptions == 1


def test_a_disconnect_closes_the_turn_in_progress_without_counting_a_barge_in() -> None:
    conversation = given(C, STARTED, CONNECTED, LISTENING, TURN)
    assert when(conversation, lambda c: c.disconnect("hung up", at=at(9))) == [
        ("Disconnected", {"reason": "hung up"}),
    ]
    assert conversation.turns[-1].interrupted_at == at(9)
    assert conversation.usage.interruptions == 0
    assert not conversation.audio.listening


def test_completing_or_responding_needs_a_turn_in_progress() -> None:
    conversation = given(C, STARTED, CONNECTED)
    assert refused(when(conversation, lambda c: c.complete_turn(at=at(9))), InvalidTransition)
    assert refused(when(conversation, lambda c: c.interrupt_turn(at=at(9))), InvalidTransition)


# -- audio -----------------------------------------------------------------------------------------


def test_listening_is_a_status_of_a_connected_conversation_and_a_flag_while_a_turn_runs() -> None:
    connected = given(C, STARTED, CONNECTED)
    assert when(connected, lambda c: c.listen(at=at(5))) == [("ListeningStarted", {})]
    assert connected.status is Status.LISTENING and connected.audio.listening
    busy = given(C, STARTED, CONNECTED, TURN)
    assert when(busy, lambda c: c.listen(at=at(5))) == [("ListeningStarted", {})]
    assert busy.status is Status.PROCESSING and busy.audio.listening
    assert refused(when(connected, lambda c: c.listen(at=at(6))), InvalidTransition, "already")


def test_speech_counts_its_seconds_and_levels_and_a_silence_is_counted() -> None:
    conversation = given(C, STARTED, CONNECTED, LISTENING)
    assert when(conversation, lambda c: c.record_speech_started(at=at(5))) == [
        ("SpeechStarted", {})
    ]
    outcome = when(conversation, lambda c: c.record_speech_ended(1.5, -3.0, -20.0, at=at(6.5)))
    assert outcome == [
        ("SpeechEnded", {"duration_s": 1.5, "peak_dbfs": -3.0, "mean_dbfs": -20.0}),
    ]
    assert when(conversation, lambda c: c.record_user_turn_ended(1, at=at(7))) == [
        ("UserTurnEnded", {"utterances": 1}),
    ]
    assert when(conversation, lambda c: c.record_silence(4.0, at=at(11))) == [
        ("SilenceDetected", {"silence_s": 4.0}),
    ]
    audio, usage = conversation.audio, conversation.usage
    assert (audio.speech_active, audio.last_speech_at) == (False, at(6.5))
    assert audio.input_level_db == -20.0
    assert (usage.audio_seconds, usage.silences, audio.silence_s) == (1.5, 1, 4.0)


def test_speech_needs_a_listening_conversation_and_ends_only_once_started() -> None:
    connected = given(C, STARTED, CONNECTED)
    assert refused(when(connected, lambda c: c.record_speech_started(at=at(5))), InvalidTransition)
    listening = given(C, STARTED, CONNECTED, LISTENING)
    ended = when(listening, lambda c: c.record_speech_ended(1.0, at=at(5)))
    assert refused(ended, InvalidTransition, "no speech is active")
    speaking = given(C, STARTED, CONNECTED, LISTENING, fact(C.SpeechStarted))
    ended = when(speaking, lambda c: c.record_user_turn_ended(1, at=at(5)))
    assert refused(ended, InvalidTransition, "still speaking")


def test_levels_keep_the_last_known_value_of_each_measure() -> None:
    conversation = given(C, STARTED, fact(C.LevelsRecorded, input_level_db=-30.0,
                         output_level_db=-12.0, latency_ms=80.0))  # fmt: skip
    assert when(conversation, lambda c: c.record_levels(None, -9.0, None, at=at(5))) == [
        ("LevelsRecorded", {"input_level_db": None, "output_level_db": -9.0, "latency_ms": None}),
    ]
    audio = conversation.audio
    assert (audio.input_level_db, audio.output_level_db, audio.latency_ms) == (-30.0, -9.0, 80.0)


# -- usage, traffic and context --------------------------------------------------------------------


def test_usage_and_traffic_add_up_and_refuse_negative_amounts() -> None:
    conversation = given(C, STARTED)
    assert when(conversation, lambda c: c.record_usage(tokens_in=10, cost=0.5, at=at(5))) == [
        ("UsageRecorded", {"tokens_in": 10, "tokens_out": 0, "cost": 0.5, "audio_seconds": 0.0}),
    ]
    sent = when(conversation, lambda c: c.record_traffic(messages_sent=2, bytes_sent=90, at=at(6)))
    assert sent == [
        ("TrafficRecorded", {"messages_sent": 2, "messages_received": 0, "bytes_sent": 90,
                             "bytes_received": 0}),
    ]  # fmt: skip
    negative = when(conversation, lambda c: c.record_usage(tokens_out=-1, at=at(7)))
    assert refused(negative, ValidationFailed, "tokens_out must not be negative")
    assert (conversation.usage.tokens_in, conversation.connection.bytes_sent) == (10, 90)


def test_context_keys_are_set_and_removed_but_not_both_at_once() -> None:
    conversation = given(C, STARTED, fact(C.ContextUpdated, values={"a": 1, "b": 2}, removed=[]))
    assert when(conversation, lambda c: c.update_context({"c": 3}, ["a"], at=at(5))) == [
        ("ContextUpdated", {"values": {"c": 3}, "removed": ["a"]}),
    ]
    assert conversation.context == {"b": 2, "c": 3}
    both = when(conversation, lambda c: c.update_context({"b": 1}, ["b"], at=at(6)))
    assert refused(both, ValidationFailed, "cannot be set and removed at once")
    assert refused(when(conversation, lambda c: c.update_context(at=at(6))), ValidationFailed)


# -- flows -----------------------------------------------------------------------------------------


def test_one_flow_runs_at_a_time_and_only_that_one_can_finish() -> None:
    flow, other = UUID(int=1), UUID(int=2)
    conversation = given(C, STARTED, fact(C.FlowBegan, flow_id=flow, definition="intake"))
    assert conversation.active_flow_id == flow
    assert refused(
        when(conversation, lambda c: c.begin_flow(other, "intake", at=at(5))),
        InvalidTransition,
        "finish or cancel it first",
    )
    assert refused(when(conversation, lambda c: c.finish_flow(other, "completed", at=at(5))),
                   InvalidTransition)  # fmt: skip
    assert when(conversation, lambda c: c.finish_flow(flow, "completed", at=at(5))) == [
        ("FlowFinished", {"flow_id": flow, "outcome": "completed"}),
    ]
    assert conversation.active_flow_id is None


def test_the_state_value_and_a_rebuild_from_it_say_the_same() -> None:
    conversation = given(C, STARTED, CONNECTED, SAID, TURN)
    assert C.from_state(conversation.state()).state() == conversation.state()
