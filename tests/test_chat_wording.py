"""Specifications of how a chat words a flow's reply (no database): the end of a form in one
sentence, a refusal followed by the question again, and a declined confirmation."""

from __future__ import annotations

from uuid import UUID

import pytest

from voxledger.adapters.chat.wording import reply_text
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_reply import FlowReply, own_words

RUN = UUID(int=1)


def reply(status: FlowStatus = FlowStatus.ACTIVE, **facts: object) -> FlowReply:
    return FlowReply(**{"flow_id": RUN, "accepted": True, "status": status, "step": "date",
                        "prompt": None, **facts})  # fmt: skip


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (FlowStatus.COMPLETED, "Thank you, all done. Your answers are saved."),
        (FlowStatus.CANCELLED, "Cancelled. Send /start to begin again."),
        (FlowStatus.EXPIRED, "This form expired after a long pause. Send /start to begin again."),
    ],
)
def test_the_end_of_a_form_is_one_sentence(status: FlowStatus, said: str) -> None:
    assert reply_text(reply(status, prompt="ignored")) == said
    assert own_words(reply(status)) == status.value  # the flow's own words: just the fact


def test_a_refused_answer_says_why_then_asks_again() -> None:
    refused = reply(prompt="When was the visit?", reason="There is no such date as 31.02.2026.")
    assert reply_text(refused) == "There is no such date as 31.02.2026.\nWhen was the visit?"
    assert own_words(refused) == reply_text(refused)


def test_a_declined_confirmation_asks_what_to_change_naming_the_answered_fields() -> None:
    declined = reply(prompt="Please check the report.", declined=True, answered=("date", "place"))
    assert reply_text(declined) == (
        "What would you like to change? Send /edit and a field: date, place"
    )
    assert own_words(declined) == "Please check the report."
