"""How a chat words what a flow says back: the sentences at the end of a form, and a flow's
reply as the one message the user reads. The chat bot says these, and the composition root
gives `reply_text` to the Engine to word the replies it records with an answer, and
`notice_text` to word the notices it sends on its own (a form expired, or soon will)."""

from __future__ import annotations

from ...domain.flow import FlowStatus
from ...domain.flow_reply import FlowReply
from ...domain.outbox_commands import Notice

COMPLETED = "Thank you, all done. Your answers are saved."
CANCELLED = "Cancelled. Send /start to begin again."
EXPIRED = "This form expired after a long pause. Send /start to begin again."
WHAT_TO_CHANGE = "What would you like to change? Send /edit and a field: {fields}"
REMINDER = "Still there? This form expires in {minutes} unless you answer.\n{prompt}"
NOT_TEXT = "I can only read text here, not a {media}."
CHANGED = "Changed {field} to {value}."
NOT_CHANGED = "{field} stays {value}: {reason}"
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


def notice_text(notice: Notice) -> str:
    """A notice the bot sends on its own: that the form expired, or a reminder of what it
    asks before it does, with how long is left."""
    if notice.kind != "reminder":
        return EXPIRED
    left_s = 0.0
    if notice.expires_at is not None:
        left_s = max(0.0, (notice.expires_at - notice.at).total_seconds())
    minutes = max(1, round(left_s / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return REMINDER.format(minutes=f"{minutes} {unit}", prompt=notice.reply.prompt or "").strip()
