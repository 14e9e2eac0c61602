"""Multi-step flows on real PostgreSQL: walking, editing, undoing, cancelling, expiring."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from builtin_flows import INTAKE_V1

from voxledger.domain.engine import Engine, FlowReply
from voxledger.domain.errors import Conflict, FlowExpired, InvalidTransition, ValidationFailed
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_steps import Step
from voxledger.domain.validators import integer, text

ANSWERS = {
    "audio_number": "1042",
    "date": "21.11.2026",
    "employee": "Ivan Petrov",
    "place": "Kazan Arena",
    "building_type": "Business Centre",
    "zone": "north wing",
    "city": "Kazan",
    "client_name": "OOO Romashka",
}


def start(engine: Engine, mode: str = "interview") -> FlowReply:
    cid = engine.start_conversation("telegram", "chat-1")
    return engine.start_flow(cid, "intake", mode)


def walk_to_confirm(engine: Engine, reply: FlowReply) -> FlowReply:
    while reply.step != "confirm":
        reply = engine.answer(reply.flow_id, ANSWERS[reply.step])
        assert reply.accepted
    return reply


@pytest.mark.parametrize(("mode", "last_field"), [("interview", "client_name"), ("design", "city")])
def test_both_modes_of_the_intake_flow_walk_to_completion(
    engine: Engine, mode: str, last_field: str
) -> None:
    reply = start(engine, mode)
    asked = [reply.step]
    while reply.step != "confirm":
        reply = engine.answer(reply.flow_id, ANSWERS[reply.step])
        asked.append(reply.step)
    assert asked == INTAKE_V1.path(mode)
    assert "Building type: office" in reply.prompt and "Date: 2026-11-21" in reply.prompt
    done = engine.answer(reply.flow_id, "yes")
    assert done.status is FlowStatus.COMPLETED
    assert done.data[last_field] == ANSWERS[last_field]
    assert done.data["audio_number"] == 1042 and done.data["building_type"] == "office"
    flow = engine.get_flow(reply.flow_id)
    assert flow.status is FlowStatus.COMPLETED and flow.step is None
    conversation = engine.get_conversation(flow.conversation_id)
    assert conversation.active_flow_id is None
    types = [h.type for h in engine.history(reply.flow_id)]
    assert types[-2:] == ["Confirmed", "Completed"]


def test_editing_a_field_from_confirm_returns_to_confirm(engine: Engine) -> None:
    reply = walk_to_confirm(engine, start(engine))
    reply = engine.edit(reply.flow_id, "employee")
    assert reply.step == "employee" and engine.get_flow(reply.flow_id).editing == "confirm"
    reply = engine.answer(reply.flow_id, "Anna Sidorova")
    assert reply.step == "confirm"
    assert "Employee: Anna Sidorova" in reply.prompt
    edited = engine.history(reply.flow_id)[-1]
    assert edited.type == "FieldEdited"
    assert edited.data["previous"] == "Ivan Petrov" and edited.data["value"] == "Anna Sidorova"


def test_undo_twice_re_asks_the_two_previous_steps(engine: Engine) -> None:
    reply = start(engine)
    for _ in range(4):
        reply = engine.answer(reply.flow_id, ANSWERS[reply.step])
    assert reply.step == "building_type"
    reply = engine.undo(reply.flow_id)
    assert reply.step == "place"
    reply = engine.undo(reply.flow_id)
    assert reply.step == "employee"
    state = engine.get_flow(reply.flow_id)
    assert set(state.answers) == {"audio_number", "date"}
    reply = engine.answer(reply.flow_id, "Oleg")
    assert reply.step == "place"


def test_undo_at_the_first_step_is_refused_and_records_nothing(engine: Engine) -> None:
    reply = start(engine)
    with pytest.raises(InvalidTransition, match="nothing to undo"):
        engine.undo(reply.flow_id)
    assert engine.get_flow(reply.flow_id).version == 1


@pytest.mark.parametrize("steps_answered", range(len(INTAKE_V1.path("interview"))))
def test_cancel_works_at_every_step(engine: Engine, steps_answered: int) -> None:
    reply = start(engine)
    for _ in range(steps_answered):
        reply = engine.answer(reply.flow_id, ANSWERS[reply.step])
    step = reply.step
    cancelled = engine.cancel(reply.flow_id, "user asked")
    assert cancelled.status is FlowStatus.CANCELLED
    last = engine.history(reply.flow_id)[-1]
    assert last.type == "Cancelled" and last.data["step"] == step
    flow = engine.get_flow(reply.flow_id)
    assert engine.get_conversation(flow.conversation_id).active_flow_id is None


def test_an_invalid_date_is_rejected_with_a_reason_and_the_rejection_is_in_the_history(
    engine: Engine,
) -> None:
    reply = engine.answer(start(engine).flow_id, "1042")
    assert reply.step == "date"
    rejected = engine.answer(reply.flow_id, "31.02.2026")
    assert not rejected.accepted and rejected.step == "date"
    assert "31.02.2026" in rejected.reason
    assert rejected.prompt == reply.prompt  # the same question again
    last = engine.history(reply.flow_id)[-1]
    assert last.type == "AnswerRejected"
    assert last.data == {"step": "date", "raw": "31.02.2026", "reason": rejected.reason}
    state = engine.get_flow(reply.flow_id)
    assert state.rejections[-1].raw == "31.02.2026" and "date" not in state.answers


def test_every_command_on_a_finished_flow_is_refused_and_records_nothing(engine: Engine) -> None:
    reply = walk_to_confirm(engine, start(engine))
    engine.confirm(reply.flow_id)
    version = engine.get_flow(reply.flow_id).version
    for command in (
        lambda: engine.answer(reply.flow_id, "x"),
        lambda: engine.edit(reply.flow_id, "city"),
        lambda: engine.undo(reply.flow_id),
        lambda: engine.confirm(reply.flow_id),
        lambda: engine.cancel(reply.flow_id),
    ):
        with pytest.raises(InvalidTransition, match="completed"):
            command()
    assert engine.get_flow(reply.flow_id).version == version


def test_a_conversation_runs_one_flow_at_a_time(engine: Engine) -> None:
    reply = start(engine)
    conversation_id = engine.get_flow(reply.flow_id).conversation_id
    with pytest.raises(InvalidTransition, match="still running"):
        engine.start_flow(conversation_id, "intake", "design")
    engine.cancel(reply.flow_id)
    assert engine.start_flow(conversation_id, "intake", "design").step == "audio_number"


def test_a_mode_the_definition_does_not_have_is_refused(engine: Engine) -> None:
    cid = engine.start_conversation("telegram")
    with pytest.raises(ValidationFailed, match="no mode 'survey'"):
        engine.start_flow(cid, "intake", "survey")
    with pytest.raises(ValidationFailed, match="needs a mode"):
        engine.start_flow(cid, "intake")
    assert engine.get_conversation(cid).version == 1


def test_a_run_keeps_the_definition_version_it_started_with(engine: Engine) -> None:
    v1 = FlowDefinition(
        name="feedback",
        version=1,
        steps=(
            Step.ask("score", "Score 1-5?", integer(min=1, max=5), "comment"),
            Step.ask("comment", "Any comment?", text()),
        ),
    )
    v2 = FlowDefinition(
        name="feedback",
        version=2,
        steps=(Step.ask("score", "Score 1-10?", integer(min=1, max=10)),),
    )
    engine.flows.register(v1)
    cid = engine.start_conversation("chat")
    old = engine.start_flow(cid, "feedback")
    engine.flows.register(v2)
    assert old.prompt == "Score 1-5?"
    with pytest.raises(ValidationFailed):
        v1.validate("score", "9")
    assert not engine.answer(old.flow_id, "9").accepted  # still judged by v1's bounds
    done = engine.answer(engine.answer(old.flow_id, "4").flow_id, "great")
    assert done.status is FlowStatus.COMPLETED and done.data == {"score": 4, "comment": "great"}
    assert engine.get_flow(old.flow_id).definition_version == 1
    new = engine.start_flow(engine.start_conversation("chat"), "feedback")
    assert new.prompt == "Score 1-10?"


def test_a_flow_idle_past_its_timeout_expires_and_refuses_answers(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    cid = engine.start_conversation("telegram", at=t0)
    idle = engine.start_flow(cid, "intake", "design", at=t0)
    busy = engine.start_flow(
        engine.start_conversation("telegram", at=t0), "intake", "design", at=t0
    )
    engine.answer(busy.flow_id, "7", at=t0 + timedelta(minutes=4))
    expired = engine.expire_idle(t0 + timedelta(minutes=6))
    assert expired == [idle.flow_id]
    assert engine.get_flow(idle.flow_id).status is FlowStatus.EXPIRED
    assert engine.get_flow(busy.flow_id).status is FlowStatus.ACTIVE
    assert engine.get_conversation(cid).active_flow_id is None
    version = engine.get_flow(idle.flow_id).version
    with pytest.raises(FlowExpired):
        engine.answer(idle.flow_id, "1042", at=t0 + timedelta(minutes=7))
    assert engine.get_flow(idle.flow_id).version == version


def test_answering_a_flow_that_went_idle_expires_it_instead(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    reply = engine.start_flow(engine.start_conversation("chat", at=t0), "intake", "design", at=t0)
    with pytest.raises(FlowExpired):
        engine.answer(reply.flow_id, "1042", at=t0 + timedelta(minutes=10))
    state = engine.get_flow(reply.flow_id)
    assert state.status is FlowStatus.EXPIRED and "audio_number" not in state.answers


def test_idle_conversations_are_ended_by_the_sweep(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    old = engine.start_conversation("chat", at=t0)
    fresh = engine.start_conversation("chat", at=t0 + timedelta(hours=23))
    expired = engine.expire_idle(t0 + timedelta(hours=25), conversation_idle_s=86_400)
    assert expired == [old]
    assert engine.get_conversation(old).status == "ended"
    assert engine.get_conversation(fresh).status == "idle"


def test_expiring_one_run_expires_it_once_and_only_when_it_is_idle(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    cid = engine.start_conversation("chat", at=t0)
    reply = engine.start_flow(cid, "intake", "design", at=t0)
    assert engine.expire_flow(reply.flow_id, at=t0 + timedelta(minutes=5)) is False  # 300 s
    assert engine.get_flow(reply.flow_id).status is FlowStatus.ACTIVE
    assert engine.expire_flow(reply.flow_id, at=t0 + timedelta(minutes=6)) is True
    assert engine.get_conversation(cid).active_flow_id is None
    version = engine.get_flow(reply.flow_id).version
    assert engine.expire_flow(reply.flow_id, at=t0 + timedelta(minutes=7)) is False
    assert engine.get_flow(reply.flow_id).version == version  # nothing more recorded


def test_the_sweep_looks_only_at_the_candidates_it_is_given(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    idle = engine.start_flow(engine.start_conversation("chat", at=t0), "intake", "design", at=t0)
    old = engine.start_conversation("chat", at=t0)
    later = t0 + timedelta(days=2)
    assert engine.expire_idle(later, conversation_idle_s=86_400, flows=[], conversations=[]) == []
    assert engine.get_flow(idle.flow_id).status is FlowStatus.ACTIVE
    swept = engine.expire_idle(
        later, conversation_idle_s=86_400, flows=[idle.flow_id], conversations=[old]
    )
    assert swept == [idle.flow_id, old]
    assert engine.get_conversation(old).end_reason == "expired after 172800 s idle"


def test_a_conversation_ends_for_idleness_only_past_the_limit(engine: Engine) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    cid = engine.start_conversation("chat", at=t0)
    assert not engine.end_idle_conversation(cid, 3600, at=t0 + timedelta(seconds=3600))
    assert engine.end_idle_conversation(cid, 3600, at=t0 + timedelta(seconds=3601))
    assert not engine.end_idle_conversation(cid, 3600, at=t0 + timedelta(days=9))  # ended


def test_an_engine_without_a_wording_records_the_flows_own_words(engine: Engine) -> None:
    plain = Engine(engine.store, engine.clock, flows=engine.flows)
    cid = plain.start_conversation("api")
    reply = plain.start_flow(cid, "intake", "interview")
    plain.answer(reply.flow_id, "seven", message_id="m1", record_messages=True)
    plain.cancel(reply.flow_id)
    said = {m.id: m.content for m in plain.get_conversation(cid).messages}
    assert said["m1:reply"] == (
        "Please send a whole number between 1 and 99999.\n"
        "What is the number of the audio recording?"
    )


def test_an_answer_with_its_messages_is_one_atomic_save(engine: Engine) -> None:
    reply = start(engine)
    cid = engine.get_flow(reply.flow_id).conversation_id
    before = engine.store.head()
    engine.answer(reply.flow_id, "1042", message_id="tg-77", record_messages=True)
    conversation = engine.get_conversation(cid)
    assert [m.content for m in conversation.messages[-2:]] == ["1042", reply_to_date()]
    assert conversation.messages[-2].id == "tg-77"
    # the user message, the answer and the reply took consecutive positions in one commit
    assert engine.store.head() == before + 3


def reply_to_date() -> str:
    return INTAKE_V1.prompt("date", {})


def test_fifty_threads_answering_one_flow_record_one_answer_per_step(engine: Engine) -> None:
    reply = start(engine)
    flow_id = reply.flow_id
    barrier = threading.Barrier(50)
    outcomes: list[object] = []

    def answer_current_step() -> None:
        barrier.wait()
        try:
            step = engine.get_flow(flow_id).step
            outcomes.append(engine.answer(flow_id, ANSWERS.get(step, "yes")))
        except Exception as error:  # refused cleanly: a domain error, never a lost answer
            outcomes.append(error)

    threads = [threading.Thread(target=answer_current_step) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = engine.history(flow_id)
    assert [h.version for h in history] == list(range(1, len(history) + 1))
    accepted = [h.data["step"] for h in history if h.type == "AnswerAccepted"]
    assert len(accepted) == len(set(accepted)), "a step was answered twice"
    state = engine.get_flow(flow_id)
    assert len(state.answers) == len(accepted)
    for outcome in outcomes:
        assert isinstance(outcome, (FlowReply, InvalidTransition, Conflict)), outcome


def test_an_answer_meant_for_a_step_the_run_has_left_is_refused(engine: Engine) -> None:
    reply = start(engine)
    engine.answer(reply.flow_id, "1042", expected_step="audio_number")
    with pytest.raises(InvalidTransition, match="moved on from 'audio_number' to 'date'"):
        engine.answer(reply.flow_id, "1043", expected_step="audio_number")
    assert engine.get_flow(reply.flow_id).answers == {"audio_number": 1042}
