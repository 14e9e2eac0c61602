"""WhatsApp's webhook format: the subset of the Cloud API's notifications the bot reads.

A notification (``{"object": "whatsapp_business_account", "entry": [{"changes": [{"value":
...}]}]}``) carries customers' messages and the statuses of messages the business sent. A
text, a reply button's or a list row's id (a menu choice), or a photo's caption is a message
to the bot; other media is a message of its kind with no text (the bot says it wants text
where it does); reactions and the like are nothing for the bot. Validated once, here: msgspec
decodes the body, ignoring what the bot does not use.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ...domain.conversation import DeliveryStatus
from .bot import Incoming

CHANNEL = "whatsapp"
# PostgreSQL text cannot hold NUL: one in an event would stall every projection that reads it.
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=r"^[^\x00]*$")]
# Messages whose content is not for the bot at all.
IGNORED = frozenset({"reaction", "unsupported", "system", "request_welcome", "order", "ephemeral"})


class Body(msgspec.Struct, frozen=True):
    """A text message's body."""

    body: Text


class Choice(msgspec.Struct, frozen=True):
    """A reply button or list row the customer chose: its id is what the bot offered."""

    id: Id
    title: Text = ""


class Interactive(msgspec.Struct, frozen=True):
    """A reply to an interactive message: a button's or a list row's."""

    type: str
    button_reply: Choice | None = None
    list_reply: Choice | None = None


class Media(msgspec.Struct, frozen=True):
    """A photo, video or document: only its caption is read."""

    caption: Text | None = None


class Profile(msgspec.Struct, frozen=True):
    """The customer's profile name."""

    name: Text = ""


class Contact(msgspec.Struct, frozen=True):
    """The customer who wrote."""

    wa_id: Id
    profile: Profile = Profile()


class Message(msgspec.Struct, frozen=True):
    """A customer's message."""

    sender: Id = msgspec.field(name="from")
    id: Id
    type: str
    text: Body | None = None
    interactive: Interactive | None = None
    image: Media | None = None
    video: Media | None = None
    document: Media | None = None


class Error(msgspec.Struct, frozen=True):
    """Why a message failed, as the status reports it."""

    code: int = 0
    title: Text = ""
    message: Text = ""


class Status(msgspec.Struct, frozen=True):
    """What became of a message the business sent."""

    id: Id
    status: str
    recipient_id: Id
    errors: list[Error] = []


class Value(msgspec.Struct, frozen=True):
    """One change: messages in, statuses of messages out."""

    contacts: list[Contact] = []
    messages: list[Message] = []
    statuses: list[Status] = []


class Change(msgspec.Struct, frozen=True):
    """A change to the business account (``field`` "messages" for these)."""

    value: Value | None = None
    field: str = ""


class Entry(msgspec.Struct, frozen=True):
    """The changes of one business account."""

    changes: list[Change] = []


class Notification(msgspec.Struct, frozen=True):
    """One webhook POST."""

    object: str = ""
    entry: list[Entry] = []


class StatusReport(msgspec.Struct, frozen=True):
    """A status of a sent message, as the outbox records it."""

    customer: str
    message_id: str
    status: DeliveryStatus
    code: int | None = None
    reason: str = ""


def decode(raw: bytes) -> Notification:
    """The notification in a webhook body (msgspec.DecodeError or ValidationError if not)."""
    return msgspec.json.decode(raw, type=Notification)


def incoming(notification: Notification) -> list[Incoming]:
    """The customers' messages the bot reads, in the order they came."""
    found = []
    for value in _values(notification):
        names = {c.wa_id: c.profile.name for c in value.contacts}
        for message in value.messages:
            said = _message(message, names.get(message.sender) or None)
            if said is not None:
                found.append(said)
    return found


def statuses(notification: Notification) -> list[StatusReport]:
    """The statuses of sent messages, in order; unknown statuses left out."""
    reports = []
    for value in _values(notification):
        for status in value.statuses:
            try:
                kind = DeliveryStatus(status.status)
            except ValueError:
                continue  # "deleted", "warning" and whatever comes next
            error = status.errors[0] if status.errors else None
            reports.append(
                StatusReport(
                    customer=status.recipient_id,
                    message_id=status.id,
                    status=kind,
                    code=error.code if error else None,
                    reason=(error.title or error.message) if error else "",
                )
            )
    return reports


def _values(notification: Notification) -> list[Value]:
    return [
        change.value
        for entry in notification.entry
        for change in entry.changes
        if change.value is not None
    ]


def _message(message: Message, name: str | None) -> Incoming | None:
    if message.type in IGNORED:
        return None
    text, choice, media = "", False, None
    if message.type == "text" and message.text is not None:
        text = message.text.body
    elif message.type == "interactive" and message.interactive is not None:
        chosen = message.interactive.button_reply or message.interactive.list_reply
        if chosen is None:
            return None
        text, choice = chosen.id, True
    else:
        attached = getattr(message, message.type, None) if message.type in _CAPTIONED else None
        text = (attached.caption or "") if isinstance(attached, Media) else ""
        media = None if text else message.type
    if not text and media is None:
        return None
    return Incoming(
        channel=CHANNEL,
        chat_id=message.sender,
        message_id=message.id,
        text=text,
        user_id=message.sender,
        participant=name or message.sender,
        choice=choice,
        platform_message_id=message.id,
        media=media,
    )


_CAPTIONED = ("image", "video", "document")
