"""How outbound messages go out on WhatsApp, through the Cloud API (whatsapp_api.py).

A reply or a notice is a text message per part of its text; its choices become reply
buttons (up to three, short titles) or a list (up to ten rows), on the last part. WhatsApp
takes free text only within 24 hours of the customer's last message: outside that window
the configured template goes instead, or, with none configured, the delivery is refused and
recorded as such. Button presses need no answer here, and sent buttons cannot be taken off:
those items have nothing to do on this channel.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ...domain.conversation import Outbound, OutboundKind
from ...domain.outbox_commands import Pending
from .channels import Template
from .delivery import Part
from .delivery_errors import OutsideServiceWindow
from .telegram_text import split_text
from .whatsapp_api import REENGAGEMENT, ListRow, ListSection, ReplyButton, WhatsAppCloudApi

SERVICE_WINDOW = timedelta(hours=24)
MAX_TEXT = 4096
MAX_BUTTONS, MAX_BUTTON_TITLE, MAX_BUTTONS_BODY = 3, 20, 1024
MAX_ROWS, MAX_ROW_TITLE = 10, 24
LIST_BUTTON = "Choose"


class WhatsAppSender:
    """Delivers outbound messages to WhatsApp customers of one business number."""

    channel = "whatsapp"

    def __init__(self, api: WhatsAppCloudApi, template: Template | None = None) -> None:
        self.api = api
        self.template = template

    def plan(self, item: Outbound, pending: Pending, now: datetime) -> list[Part]:
        """Text parts, the choices as buttons or a list on the last; the template alone
        outside the 24-hour window (OutsideServiceWindow when there is none)."""
        if item.kind in (OutboundKind.ACKNOWLEDGE, OutboundKind.CLOSE_KEYBOARD):
            return []
        last = pending.last_inbound_at
        if last is None or now - last > SERVICE_WINDOW:
            return [self._outside_window()]
        choices = item.choices
        kind, body_limit = "text", MAX_TEXT
        if choices and len(choices) <= MAX_BUTTONS and _fit(choices, MAX_BUTTON_TITLE):
            kind, body_limit = "buttons", MAX_BUTTONS_BODY
        elif choices and len(choices) <= MAX_ROWS and _fit(choices, MAX_ROW_TITLE):
            kind = "list"
        text = item.text
        if choices and kind == "text":  # too many or too long for buttons: say them
            text = "\n".join([text, *(f"- {choice}" for choice in choices)])
            choices = ()
        texts = split_text(text, MAX_TEXT) or [text]
        if kind != "text":
            texts[-1:] = split_text(texts[-1], body_limit) or [texts[-1]]
        parts = [Part("text", t) for t in texts]
        if kind != "text":
            parts[-1] = Part(kind, texts[-1], choices)
        return parts

    async def send(self, item: Outbound, part: Part, first: bool) -> str | None:
        """Send one message; its id (wamid)."""
        to = item.address.to
        try:
            if part.kind == "template":
                return await self._template(to)
            if part.kind == "buttons":
                buttons = [ReplyButton(c, c.capitalize()) for c in part.choices]
                return (await self.api.send_buttons(to, part.text, buttons)).message_id
            if part.kind == "list":
                rows = [ListRow(c, c.capitalize()) for c in part.choices]
                sections = [ListSection(rows)]
                return (await self.api.send_list(to, part.text, LIST_BUTTON, sections)).message_id
            return (await self.api.send_text(to, part.text)).message_id
        except OutsideServiceWindow:
            # The window closed since the customer's last message was recorded here.
            if self.template is None:
                raise
            return await self._template(to)

    async def _template(self, to: str) -> str:
        assert self.template is not None
        name, language = self.template.name, self.template.language
        return (await self.api.send_template(to, name, language)).message_id

    def counts(self, part: Part) -> bool:
        """Every message counts against the limits."""
        return True

    def group(self, item: Outbound) -> bool:
        """WhatsApp chats here are one customer each."""
        return False

    async def aclose(self) -> None:
        """Close the Cloud API client."""
        await self.api.aclose()

    def _outside_window(self) -> Part:
        if self.template is None:
            raise OutsideServiceWindow(
                REENGAGEMENT,
                "outside the 24-hour customer service window, and no template is configured "
                "(VOXLEDGER_WHATSAPP_TEMPLATE) to reach the customer",
            )
        return Part("template")


def _fit(choices: tuple[str, ...], limit: int) -> bool:
    return all(0 < len(choice) <= limit for choice in choices)
