"""What a flow says back after a command, as facts: where the run stands, what it asks now,
why an answer was refused. Turning them into a channel's sentences is the channel's job
(adapters/chat/wording.py for chats); `own_words` is the flow's own text alone."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from .flow import Flow, FlowStatus
from .flow_definition import FlowDefinition


class FlowReply(msgspec.Struct, frozen=True):
    """Where a run stands after a command: its status and step, what it asks now, why an
    answer was refused, and its data once completed."""

    flow_id: UUID
    accepted: bool
    status: FlowStatus
    step: str | None
    prompt: str | None
    reason: str | None = None
    data: dict[str, Any] | None = None
    declined: bool = False  # the user said no at the confirmation: something is to change
    answered: tuple[str, ...] = ()  # the fields answered so far, in the order they were

    @classmethod
    def of(cls, flow: Flow, definition: FlowDefinition, *, accepted: bool) -> FlowReply:
        """The reply of a run after a command (``accepted``: the command's answer was)."""
        reason = None
        if not accepted and flow.rejections:
            reason = flow.rejections[-1].reason
        prompt = None
        declined = False
        if flow.status is FlowStatus.ACTIVE and flow.step is not None:
            prompt = definition.prompt(flow.step, flow.answers, flow.mode)
            declined = (
                definition.step(flow.step).kind == "confirm"
                and bool(flow.pending_events)
                and isinstance(flow.pending_events[-1], Flow.ConfirmationDeclined)
            )
        return cls(
            flow_id=flow.id,
            accepted=accepted,
            status=flow.status,
            step=flow.step,
            prompt=prompt,
            reason=reason,
            data=dict(flow.answers) if flow.status is FlowStatus.COMPLETED else None,
            declined=declined,
            answered=tuple(flow.answers),
        )


def own_words(reply: FlowReply) -> str:
    """The reply in the flow's own words, with no channel's wording: why an answer was
    refused and what the run asks now, or else where the run ended."""
    said = "\n".join(part for part in (reply.reason, reply.prompt) if part)
    return said or str(reply.status)
