"""Runs of user flows on real PostgreSQL: optional steps (skip, edit, undo, the confirm
summary), hooks that compute a prompt or the next step, and answers of every new type
surviving the event log exactly."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.engine import Engine
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_definition import FlowDefinition

ORDER = {
    "name": "order",
    "version": 1,
    "modes": ["pickup", "delivery"],
    "steps": [
        {"name": "dishes", "prompt": "Which dishes?",
         "validator": {"type": "multiple_choice", "options": {"soup": [], "cake": ["dessert"]}},
         "next": {"when": [{"field": "dishes", "contains": "cake", "goto": "candles"}],
                  "else": "nickname"}},
        {"name": "candles", "prompt": "How many candles?", "validator": "integer",
         "next": "nickname"},
        {"name": "nickname", "prompt": "A nickname for the order?", "optional": True,
         "validator": {"type": "text", "max_length": 10}, "next": "price"},
        {"name": "price", "prompt_hook": "price_prompt",
         "validator": {"type": "decimal", "places": 2},
         "next": {"hook": "route", "targets": ["address", "slot"], "else": "confirm"}},
        {"name": "address", "prompt": "Where to, {nickname}?", "next": "slot"},
        {"name": "slot", "prompt": "When?", "validator": {"type": "datetime", "timezone": "UTC"},
         "next": "confirm"},
        {"name": "confirm", "kind": "confirm", "prompt": "Order {dishes}?"},
    ],
}  # fmt: skip


def price_prompt(mode: str | None, answers: Mapping[str, Any]) -> str:
    """A prompt that depends on the mode and on the answers so far."""
    fee = " plus 5.00 delivery" if mode == "delivery" else ""
    return f"Your price for {len(answers['dishes'])} dish(es){fee}?"


def route(mode: str | None, answers: Mapping[str, Any]) -> str | None:
    """Deliveries need an address; a pickup needs a slot unless it is cheap."""
    if mode == "delivery":
        return "address"
    return None if answers["price"] == "0.00" else "slot"


HOOKS = {"price_prompt": price_prompt, "route": route}


@pytest.fixture
def shop(database_url: str, schema: str, clock) -> Iterator[Engine]:
    with open_engine(
        database_url,
        schema=schema,
        clock=clock,
        flows=[FlowDefinition.from_mapping(ORDER, hooks=HOOKS)],
    ) as engine:
        yield engine


def begin(engine: Engine, mode: str):
    cid = engine.start_conversation("test", "chat-1")
    return engine.start_flow(cid, "order", mode)


def test_a_user_flow_runs_beside_the_built_in_one(shop: Engine) -> None:
    assert [name for name, _ in shop.flows.all()] == ["intake", "order"]
    assert begin(shop, "pickup").prompt == "Which dishes?"


def test_skipping_an_optional_step_records_no_answer_and_moves_on(shop: Engine) -> None:
    reply = begin(shop, "pickup")
    reply = shop.answer(reply.flow_id, "soup")
    assert reply.step == "nickname"
    reply = shop.answer(reply.flow_id, " SKIP ")
    assert reply.accepted and reply.step == "price"
    assert shop.get_flow(reply.flow_id).answers == {"dishes": ["soup"], "nickname": None}
    skipped = shop.history(reply.flow_id)[-1]
    assert skipped.type == "AnswerAccepted" and skipped.data["value"] is None


def test_a_refused_answer_to_an_optional_step_says_how_to_skip_it(shop: Engine) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "soup")
    refused = shop.answer(reply.flow_id, "far too long a nickname")
    assert not refused.accepted
    assert refused.reason == "Please keep it to 10 characters or fewer. To leave it out, send skip."


def test_a_skipped_step_shows_in_the_summary_and_fills_a_template_with_nothing(
    shop: Engine,
) -> None:
    reply = shop.answer(begin(shop, "delivery").flow_id, "soup")
    reply = shop.answer(reply.flow_id, "-")
    reply = shop.answer(reply.flow_id, "12,5")
    assert reply.step == "address" and reply.prompt == "Where to, ?"
    reply = shop.answer(reply.flow_id, "1 Main St")
    reply = shop.answer(reply.flow_id, "21.11.2026 18:00")
    assert reply.step == "confirm"
    assert reply.prompt.splitlines() == [
        "Order soup?", "", "Dishes: soup", "Nickname: (skipped)", "Price: 12.50",
        "Address: 1 Main St", "Slot: 2026-11-21T18:00:00+00:00",
    ]  # fmt: skip


def test_editing_a_skipped_field_asks_it_again_and_returns_to_confirm(shop: Engine) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "soup")
    for answer in ("skip", "0"):
        reply = shop.answer(reply.flow_id, answer)
    assert reply.step == "confirm"
    reply = shop.edit(reply.flow_id, "nickname")
    assert reply.step == "nickname"
    reply = shop.answer(reply.flow_id, "Bo")
    assert reply.step == "confirm" and "Nickname: Bo" in reply.prompt
    edited = shop.history(reply.flow_id)[-1]
    assert edited.type == "FieldEdited"
    assert edited.data["previous"] is None and edited.data["value"] == "Bo"


def test_undoing_a_skip_asks_the_optional_step_again(shop: Engine) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "soup")
    reply = shop.answer(reply.flow_id, "skip")
    reply = shop.undo(reply.flow_id)
    assert reply.step == "nickname"
    assert shop.get_flow(reply.flow_id).answers == {"dishes": ["soup"]}


def test_a_prompt_hook_computes_the_prompt_from_the_mode_and_the_answers(shop: Engine) -> None:
    reply = shop.answer(begin(shop, "delivery").flow_id, "soup and dessert")
    reply = shop.answer(reply.flow_id, "3")
    reply = shop.answer(reply.flow_id, "skip")
    assert reply.prompt == "Your price for 2 dish(es) plus 5.00 delivery?"
    assert shop.flow_prompt(reply.flow_id).prompt == reply.prompt


def test_a_next_step_hook_chooses_the_step_and_the_choice_is_recorded(
    shop: Engine, database_url: str, schema: str, clock
) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "soup")
    reply = shop.answer(reply.flow_id, "skip")
    reply = shop.answer(reply.flow_id, "9.99")
    assert reply.step == "slot"
    assert shop.history(reply.flow_id)[-1].data["next_step"] == "slot"
    # A process whose hook now decides otherwise still finds the run where it was: the
    # step chosen is a recorded fact, not recomputed on replay.
    always_confirm = {**HOOKS, "route": lambda mode, answers: None}
    other = FlowDefinition.from_mapping(ORDER, hooks=always_confirm)
    with open_engine(database_url, schema=schema, clock=clock, flows=[other]) as later:
        assert later.get_flow(reply.flow_id).step == "slot"


def test_a_cheap_pickup_goes_straight_to_confirm_through_the_hooks_else(shop: Engine) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "soup")
    reply = shop.answer(reply.flow_id, "skip")
    assert shop.answer(reply.flow_id, "0").step == "confirm"


def test_answers_of_every_new_type_survive_the_event_log_exactly(
    shop: Engine, database_url: str, schema: str, clock
) -> None:
    reply = shop.answer(begin(shop, "pickup").flow_id, "dessert, soup")
    for answer in ("2", "skip", "1 234,5", "21 Nov 2026 9:15 pm"):
        reply = shop.answer(reply.flow_id, answer)
    done = shop.answer(reply.flow_id, "yes")
    expected = {
        "dishes": ["soup", "cake"], "candles": 2, "nickname": None, "price": "1234.50",
        "slot": "2026-11-21T21:15:00+00:00",
    }  # fmt: skip
    assert done.status is FlowStatus.COMPLETED and done.data == expected
    with open_engine(database_url, schema=schema, clock=clock, flows=[]) as fresh:
        stored = fresh.get_flow(reply.flow_id)
        completed = fresh.history(reply.flow_id)[-1]
    assert stored.answers == expected and completed.data["data"] == expected
    assert [type(v) for v in stored.answers.values()] == [list, int, type(None), str, str]
