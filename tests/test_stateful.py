"""Random command sequences against real PostgreSQL: the state rebuilt from stored events
equals the state built live, and a refused command stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from builtin_flows import INTAKE_V1
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.conversation import Conversation
from voxledger.domain.engine import Engine
from voxledger.domain.errors import VoxledgerError
from voxledger.domain.flow import Flow

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
SETTINGS = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Text a command takes: no NUL (refused at every edge; PostgreSQL text cannot hold one) and
# no lone surrogate (not Unicode text: refused too).
words = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=0, max_size=30
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)  # finite: what an event may hold
    | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)
amounts = st.floats(min_value=-1, max_value=1e4, allow_nan=False)


def same_outcome(live_command, engine_command, stored_version) -> None:
    """Run one command live and through the engine: both accept it or both refuse it with
    the same error, and a refused command leaves the stored stream as it was."""
    live_error = engine_error = None
    try:
        live_command()
    except VoxledgerError as e:
        live_error = type(e)
    before = stored_version()
    try:
        engine_command()
    except VoxledgerError as e:
        engine_error = type(e)
    assert engine_error == live_error
    if engine_error is not None:
        assert stored_version() == before, "a refused command stored an event"


def rebuilt(engine: Engine, aggregate_id):
    """The aggregate folded from every stored event, ignoring snapshots."""
    aggregate = None
    for event in engine.store.stream(aggregate_id):
        aggregate = event.mutate(aggregate)
    return aggregate


class ConversationMachine(RuleBasedStateMachine):
    engine: Engine

    def __init__(self) -> None:
        super().__init__()
        self.tick = 0
        self.live = Conversation.start("voice", "p", {"k": 1}, at=T0, conversation_id=uuid4())
        self.cid = self.engine.start_conversation(
            "voice", "p", {"k": 1}, conversation_id=self.live.id, at=T0
        )
        self.messages: list[str] = []

    def at(self) -> datetime:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick)

    def both(self, method: str, *args, **kwargs) -> None:
        at = self.at()
        same_outcome(
            lambda: getattr(self.live, method)(*args, at=at, **kwargs),
            lambda: getattr(self.engine, method)(self.cid, *args, at=at, **kwargs),
            lambda: self.engine.get_conversation(self.cid).version,
        )

    @rule(provider=st.sampled_from(["webrtc", "sip"]))
    def begin_connecting(self, provider: str) -> None:
        self.both("begin_connecting", provider)

    @rule(latency=st.none() | amounts)
    def connect(self, latency: float | None) -> None:
        self.both("connect", "webrtc", f"c{self.tick}", latency)

    @rule(reason=words)
    def disconnect(self, reason: str) -> None:
        self.both("disconnect", reason)

    @rule(error=words, fatal=st.booleans())
    def record_error(self, error: str, fatal: bool) -> None:
        self.both("record_error", error, fatal=fatal)

    @rule()
    def listen(self) -> None:
        self.both("listen")

    @rule()
    def stop_listening(self) -> None:
        self.both("stop_listening")

    @rule(
        role=st.sampled_from(["user", "assistant", "system", "robot"]),
        content=words,
        metadata=st.dictionaries(words, json_values, max_size=2),
        complete=st.booleans(),
        reuse=st.booleans(),
    )
    def add_message(self, role, content, metadata, complete, reuse) -> None:
        message_id = self.messages[-1] if reuse and self.messages else uuid4().hex
        at = self.at()
        same_outcome(
            lambda: self.live.add_message(
                message_id, role, content, metadata, complete=complete, at=at
            ),
            lambda: self.engine.add_message(
                self.cid,
                role,
                content,
                message_id=message_id,
                metadata=metadata,
                complete=complete,
                at=at,
            ),
            lambda: self.engine.get_conversation(self.cid).version,
        )
        if message_id not in self.messages:
            self.messages.append(message_id)

    @rule(data=st.data())
    def complete_message(self, data) -> None:
        message_id = data.draw(st.sampled_from([*self.messages, "missing"]))
        self.both("complete_message", message_id, data.draw(st.none() | words))

    @rule(data=st.data())
    def start_turn(self, data) -> None:
        user_message = data.draw(st.none() | st.sampled_from([*self.messages, "missing"]))
        at = self.at()
        turn_id = uuid4().hex
        same_outcome(
            lambda: self.live.start_turn(turn_id, user_message, at=at),
            lambda: self.engine.start_turn(self.cid, user_message, turn_id=turn_id, at=at),
            lambda: self.engine.get_conversation(self.cid).version,
        )

    @rule()
    def start_response(self) -> None:
        self.both("start_response")

    @rule()
    def complete_turn(self) -> None:
        self.both("complete_turn")

    @rule(reason=words)
    def interrupt_turn(self, reason: str) -> None:
        self.both("interrupt_turn", reason)

    @rule()
    def speech_started(self) -> None:
        self.both("record_speech_started")

    @rule(duration=amounts, peak=st.none() | amounts)
    def speech_ended(self, duration: float, peak: float | None) -> None:
        self.both("record_speech_ended", duration, peak, None)

    @rule(silence=amounts)
    def silence(self, silence: float) -> None:
        self.both("record_silence", silence)

    @rule(level=st.none() | amounts, latency=st.none() | amounts)
    def levels(self, level, latency) -> None:
        self.both("record_levels", level, None, latency)

    @rule(tokens=st.integers(-1, 10_000), cost=amounts)
    def usage(self, tokens: int, cost: float) -> None:
        self.both("record_usage", tokens_in=tokens, cost=cost)

    @rule(
        values=st.dictionaries(st.sampled_from("abcd"), json_values, max_size=3),
        removed=st.lists(st.sampled_from("abcd"), max_size=2),
    )
    def update_context(self, values, removed) -> None:
        self.both("update_context", values, removed)

    @precondition(lambda self: self.tick > 30)  # ending early would make the rest refusals
    @rule(reason=words)
    def end(self, reason: str) -> None:
        self.both("end", reason)

    @invariant()
    def stored_state_equals_live_state(self) -> None:
        stored = self.engine.get_conversation(self.cid)  # snapshots + newer events
        assert stored == self.live.state()
        assert rebuilt(self.engine, self.cid).state() == stored


class FlowMachine(RuleBasedStateMachine):
    engine: Engine

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        cid = self.engine.start_conversation("telegram", at=T0)
        mode = "design"
        reply = self.engine.start_flow(cid, "intake", mode, at=T0)
        self.flow_id = reply.flow_id
        self.live = Flow.begin(cid, INTAKE_V1, mode, at=T0, flow_id=self.flow_id)

    def at(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def both(self, live_command, engine_command) -> None:
        same_outcome(
            live_command, engine_command, lambda: self.engine.get_flow(self.flow_id).version
        )

    @rule(data=st.data(), valid=st.booleans())
    def answer(self, data, valid: bool) -> None:
        good = {
            "audio_number": "17",
            "date": "01/02/2026",
            "employee": "Ann",
            "place": "Depot",
            "building_type": "warehouse",
            "zone": "B",
            "city": "Kazan",
            "confirm": "yes",
        }
        text = good.get(self.live.step or "", "x") if valid else data.draw(words)
        at = self.at()
        self.both(
            lambda: self.live.answer(INTAKE_V1, text, at=at),
            lambda: self.engine.answer(self.flow_id, text, at=at),
        )

    @rule(field=st.sampled_from((*INTAKE_V1.fields, "nonsense")))
    def edit(self, field: str) -> None:
        at = self.at()
        self.both(
            lambda: self.live.edit(INTAKE_V1, field, at=at),
            lambda: self.engine.edit(self.flow_id, field, at=at),
        )

    @rule()
    def undo(self) -> None:
        at = self.at()
        self.both(
            lambda: self.live.undo(INTAKE_V1, at=at),
            lambda: self.engine.undo(self.flow_id, at=at),
        )

    @rule()
    def confirm(self) -> None:
        at = self.at()
        self.both(
            lambda: self.live.confirm(INTAKE_V1, at=at),
            lambda: self.engine.confirm(self.flow_id, at=at),
        )

    @precondition(lambda self: self.now > T0 + timedelta(seconds=12))
    @rule(reason=words)
    def cancel(self, reason: str) -> None:
        at = self.at()
        self.both(
            lambda: self.live.cancel(reason, at=at),
            lambda: self.engine.cancel(self.flow_id, reason, at=at),
        )

    @precondition(lambda self: self.now > T0 + timedelta(seconds=12))
    @rule()
    def go_idle_and_sweep(self) -> None:
        self.now += timedelta(seconds=INTAKE_V1.idle_timeout_s + 1)
        if self.live.is_idle_at(self.now):
            self.live.expire(at=self.now)
        self.engine.expire_idle(self.now)

    @invariant()
    def stored_state_equals_live_state(self) -> None:
        stored = self.engine.get_flow(self.flow_id)
        assert stored == self.live.state()
        assert rebuilt(self.engine, self.flow_id).state() == stored


def test_random_conversation_commands_replay_to_the_live_state(database_url, schema) -> None:
    with open_engine(database_url, schema=schema) as engine:
        engine.store.snapshot_every = {Conversation: 7}  # snapshots inside short sequences
        ConversationMachine.engine = engine
        run_state_machine_as_test(ConversationMachine, settings=SETTINGS)


def test_random_flow_commands_replay_to_the_live_state(database_url, schema) -> None:
    with open_engine(database_url, schema=schema) as engine:
        FlowMachine.engine = engine
        run_state_machine_as_test(FlowMachine, settings=SETTINGS)
