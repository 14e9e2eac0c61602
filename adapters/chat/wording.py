"""How a chat words what a flow says back: the sentences at the end of a form, and a flow's
reply as the one message the user reads. The chat bot says these, and the composition root
gives `reply_text` to the Engine to word the replies it records with an answer."""

from __future__ import annotations

from ...domain.flow import FlowStatus
from ...domain.flow_reply import FlowReply

COMPLETED = "Thank you, all done. Your answers are saved."
CANCELLED = "Cancelled. Send /start to begin again."
EXPIRED = "This form expired after a long pause. Send /start to begin again."
WHAT_TO_CHANGE = "What would you like to change? Send /edit and a field: {fields}"
# The flow's own code failed (a custom validator or a hook): nothing was recorded.
CODE_FAILED = (
    "Sorry, something went wrong on our side. Please try again in a moment, or send /cancel."
)

_ENDINGS = {
    FlowStatus.COMPLETED: COMPLETED,
    FlowStatus.CANCELLED: CANCELLED,
    FlowStatus.EXPIRED: EXPIRED,
}


def reply_text(reply: FlowReply) -> str:
    """A flow's reply as one chat message: how the form ended, or why an answer was
    refused and what to answer now."""
    ending = _ENDINGS.get(reply.status)
    if ending is not None:
        return ending
    asked = WHAT_TO_CHANGE.format(fields=", ".join(reply.answered)) if reply.declined else None
    return "\n".join(part for part in (reply.reason, asked or reply.prompt) if part)
