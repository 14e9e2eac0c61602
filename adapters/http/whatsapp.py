"""WhatsApp's webhook: the subscription handshake (GET) and the notifications (POST).

A POST is checked before anything else: its X-Hub-Signature-256 must be the HMAC-SHA256 of
the raw body under the app's secret (compared in constant time); without it 401, wrong 403,
and nothing is read or recorded. A signed notification is answered 200 whatever it holds
(Meta retries anything else for days, and a retry would not change what it holds): each
customer's message is one exchange, its reply queued for the delivery worker, and each
status of a sent message is recorded on its conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio.to_thread
import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from ...domain.errors import Conflict, Unavailable, VoxledgerError
from ..async_engine import AsyncEngine
from ..chat import whatsapp
from ..chat.bot import ChatBot
from ..chat.channels import ENV_WHATSAPP_APP_SECRET, ENV_WHATSAPP_VERIFY_TOKEN, ChannelSettings
from ..chat.directory import ChatDirectory, ChatKey
from ..chat.whatsapp_api import verify_signature, verify_subscription

log = structlog.get_logger("voxledger.whatsapp")

Wake = Callable[[UUID], None]


@get("/whatsapp/webhook", tags=["whatsapp"], summary="WhatsApp webhook verification")
async def whatsapp_verify(
    request: Request[Any, Any, Any], channels: NamedDependency[ChannelSettings]
) -> Response[str]:
    """Meta's subscription handshake: echo ``hub.challenge`` when ``hub.mode`` is subscribe
    and ``hub.verify_token`` is ours ($VOXLEDGER_WHATSAPP_VERIFY_TOKEN); else 403."""
    if channels.whatsapp_verify_token is None:
        raise PermissionDeniedException(
            f"the webhook is off: {ENV_WHATSAPP_VERIFY_TOKEN} is not set"
        )
    query = {key: request.query_params.get(key, "") for key in request.query_params}
    challenge = verify_subscription(query, channels.whatsapp_verify_token)
    if challenge is None:
        raise PermissionDeniedException("wrong hub.mode or hub.verify_token")
    return Response(challenge, media_type="text/plain")


@post("/whatsapp/webhook", status_code=200, tags=["whatsapp"], summary="WhatsApp webhook")
async def whatsapp_webhook(
    request: Request[Any, Any, Any],
    async_engine: NamedDependency[AsyncEngine],
    bot: NamedDependency[ChatBot],
    directory: NamedDependency[ChatDirectory],
    channels: NamedDependency[ChannelSettings],
    outbox_wake: NamedDependency[Wake],
) -> dict[str, Any]:
    """Take a signed notification: messages become exchanges, statuses delivery events."""
    secret = channels.whatsapp_app_secret
    if secret is None:
        raise PermissionDeniedException(f"the webhook is off: {ENV_WHATSAPP_APP_SECRET} is not set")
    raw = await request.body()
    header = request.headers.get("x-hub-signature-256")
    if not header:
        raise NotAuthorizedException("missing X-Hub-Signature-256")
    if not verify_signature(raw, header, secret):
        raise PermissionDeniedException("X-Hub-Signature-256 does not match the body")
    try:
        notification = whatsapp.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        log.warning("whatsapp.unreadable", error=str(e))
        return {}
    for message in whatsapp.incoming(notification):
        try:
            reply = await bot.handle_chat_async(message, async_engine)
        except (Unavailable, Conflict):
            raise  # may pass: Meta's retry can help
        except VoxledgerError as refused:
            log.warning(
                "whatsapp.message_refused", message_id=message.message_id, error=str(refused)
            )
            continue
        if reply.outbound and reply.conversation_id is not None:
            outbox_wake(reply.conversation_id)
    for report in whatsapp.statuses(notification):
        await _record(async_engine, directory, report)
    return {}


async def _record(
    engine: AsyncEngine, directory: ChatDirectory, report: whatsapp.StatusReport
) -> None:
    """A status, on the conversation of the customer it was sent to (if it still has one)."""
    chat = ChatKey(whatsapp.CHANNEL, report.customer)
    conversation_id = await anyio.to_thread.run_sync(directory.find, chat)
    if conversation_id is None:
        return
    recorded = await engine.record_delivery_status(
        conversation_id,
        report.message_id,
        report.status,
        code=report.code,
        reason=report.reason,
    )
    if not recorded:
        log.info("whatsapp.status_not_news", message_id=report.message_id, status=report.status)


ROUTES = [whatsapp_verify, whatsapp_webhook]
