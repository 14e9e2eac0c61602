"""What the chat channels need to reach their platforms: Telegram's bot token and Bot API URL,
WhatsApp's access token, number, app secret, verify token, Graph API URL and template, and
how group chats keep their forms. The composition root reads them from the environment
(`bootstrap.channel_settings`); nothing else does."""

from __future__ import annotations

import msgspec

# The platforms' public addresses (tests point the channels at local servers instead).
TELEGRAM_API_URL = "https://api.telegram.org"
WHATSAPP_API_URL = "https://graph.facebook.com"

ENV_TELEGRAM_TOKEN = "VOXLEDGER_TELEGRAM_TOKEN"
ENV_TELEGRAM_API_URL = "VOXLEDGER_TELEGRAM_API_URL"
ENV_TELEGRAM_SHARED_CHATS = "VOXLEDGER_TELEGRAM_SHARED_CHATS"
ENV_WHATSAPP_TOKEN = "VOXLEDGER_WHATSAPP_TOKEN"
ENV_WHATSAPP_PHONE_NUMBER_ID = "VOXLEDGER_WHATSAPP_PHONE_NUMBER_ID"
ENV_WHATSAPP_APP_SECRET = "VOXLEDGER_WHATSAPP_APP_SECRET"
ENV_WHATSAPP_VERIFY_TOKEN = "VOXLEDGER_WHATSAPP_VERIFY_TOKEN"
ENV_WHATSAPP_API_URL = "VOXLEDGER_WHATSAPP_API_URL"
ENV_WHATSAPP_TEMPLATE = "VOXLEDGER_WHATSAPP_TEMPLATE"


class Template(msgspec.Struct, frozen=True):
    """An approved WhatsApp template: the one message that reaches a customer outside the
    24-hour customer service window."""

    name: str
    language: str


class ChannelSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The channels' secrets and addresses (None: that channel does not deliver)."""

    telegram_token: str | None = None
    telegram_api_url: str = TELEGRAM_API_URL
    # Group chats whose members share one form ("*": all of them); the others keep one
    # form per member.
    shared_chats: frozenset[str] = frozenset()
    whatsapp_token: str | None = None
    whatsapp_phone_number_id: str | None = None
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    whatsapp_api_url: str = WHATSAPP_API_URL
    whatsapp_template: Template | None = None

    @property
    def telegram_delivers(self) -> bool:
        """Telegram replies go out through the Bot API (else in the webhook's response)."""
        return self.telegram_token is not None

    @property
    def whatsapp_delivers(self) -> bool:
        """WhatsApp replies go out through the Cloud API."""
        return self.whatsapp_token is not None and self.whatsapp_phone_number_id is not None

    @property
    def delivering(self) -> frozenset[str]:
        """The channels whose replies the delivery worker sends."""
        on = {"telegram": self.telegram_delivers, "whatsapp": self.whatsapp_delivers}
        return frozenset(channel for channel, delivers in on.items() if delivers)
