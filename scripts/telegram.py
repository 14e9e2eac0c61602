"""`voxledger telegram poll|set-webhook|delete-webhook`: run the Telegram bot without a public
URL (long polling), or point Telegram's webhook at `voxledger serve`."""

from __future__ import annotations

import argparse

from .arguments import add_flow_options
from .output import say


def register(commands: argparse._SubParsersAction) -> None:
    """Add the telegram command and its actions."""
    telegram = commands.add_parser(
        "telegram",
        help="poll Telegram for updates, or set and delete the bot's webhook",
        description="The bot is $VOXLEDGER_TELEGRAM_TOKEN's (at $VOXLEDGER_TELEGRAM_API_URL, "
        "by default the public Bot API). Example: voxledger telegram poll",
    )
    actions = telegram.add_subparsers(dest="action", metavar="ACTION", required=True)

    poll = actions.add_parser(
        "poll",
        help="take updates by long polling (getUpdates) and deliver the replies",
        description="For a bot without a public URL: asks Telegram for updates, handles each "
        "as the webhook would, and keeps the offset in the database so that a restart "
        "handles each update once. Delivers the replies too (unless --no-deliver). "
        "Example: voxledger telegram poll --flow intake",
    )
    poll.add_argument("--flow", default="intake", help="the flow the chat bot runs")
    poll.add_argument(
        "--timeout", type=int, default=50, metavar="S", help="seconds a poll waits (default 50)"
    )
    poll.add_argument("--no-deliver", action="store_true", help="leave delivery to another process")
    add_flow_options(poll)
    poll.set_defaults(run=run_poll)

    set_webhook = actions.add_parser(
        "set-webhook",
        help="have Telegram POST updates to URL (with the secret token)",
        description="Sets the webhook to URL (https, port 443, 80, 88 or 8443; the path is "
        "/telegram/webhook of `voxledger serve`) with $VOXLEDGER_TELEGRAM_SECRET as its "
        "secret token and the update kinds the bot reads. "
        "Example: voxledger telegram set-webhook https://bot.example.com/telegram/webhook",
    )
    set_webhook.add_argument("url", metavar="URL")
    set_webhook.add_argument(
        "--drop-pending", action="store_true", help="drop the updates Telegram holds"
    )
    set_webhook.set_defaults(run=run_set_webhook)

    delete_webhook = actions.add_parser(
        "delete-webhook",
        help="stop webhook delivery (so that poll can be used)",
        description="Example: voxledger telegram delete-webhook",
    )
    delete_webhook.add_argument(
        "--drop-pending", action="store_true", help="drop the updates Telegram holds"
    )
    delete_webhook.set_defaults(run=run_delete_webhook)


def run_poll(args: argparse.Namespace) -> int:
    """Poll and handle updates (and deliver) until SIGTERM or Ctrl-C."""
    import anyio

    from ..adapters.bootstrap import (
        open_delivery,
        open_senders,
        open_telegram_api,
        open_update_offsets,
    )
    from ..adapters.chat.polling import poll
    from ..adapters.chat.telegram import BotIdentity
    from .arguments import flow_options
    from .deliver import run_async, services_once_reachable, stop_on_signal

    opened = services_once_reachable(args.database_url, **flow_options(args))
    if opened is None:
        return 0  # stopped before the database came
    with opened as services:
        api = open_telegram_api(services.channels)
        bot = services.bot(args.flow)
        offsets = open_update_offsets(services.store)
        senders = {} if args.no_deliver else open_senders(services.channels)
        worker = open_delivery(services, senders) if senders else None

        async def main() -> int:
            stopping = anyio.Event()
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(stop_on_signal, stopping)
                    if worker is not None:
                        tasks.start_soon(worker.run, stopping)
                    say("polling Telegram for updates; Ctrl-C to stop")
                    wake = worker.wake if worker is not None else _no_wake
                    handled = await poll(
                        api,
                        bot,
                        services.async_engine,
                        offsets,
                        BotIdentity(),
                        stopping,
                        wake=wake,
                        timeout=args.timeout,
                    )
                    stopping.set()
                    tasks.cancel_scope.cancel()
                return handled
            finally:
                await api.aclose()
                for sender in senders.values():
                    await sender.aclose()

        handled = run_async(main)
    say(f"handled {handled} updates")
    return 0


def run_set_webhook(args: argparse.Namespace) -> int:
    """Point Telegram's webhook at URL."""
    import anyio

    from ..adapters.bootstrap import channel_settings, http_settings, open_telegram_api
    from ..adapters.chat.telegram import ALLOWED_UPDATES
    from ..domain.errors import BadInput

    secret = http_settings().telegram_secret
    if secret is None:
        raise BadInput(
            "VOXLEDGER_TELEGRAM_SECRET is not set: the webhook refuses updates without it"
        )

    async def main() -> bool:
        async with open_telegram_api(channel_settings()) as api:
            return await api.set_webhook(
                args.url,
                secret_token=secret,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=args.drop_pending or None,
            )

    anyio.run(main)
    say(f"webhook set: {args.url} ({', '.join(ALLOWED_UPDATES)})")
    return 0


def run_delete_webhook(args: argparse.Namespace) -> int:
    """Stop webhook delivery."""
    import anyio

    from ..adapters.bootstrap import channel_settings, open_telegram_api

    async def main() -> bool:
        async with open_telegram_api(channel_settings()) as api:
            return await api.delete_webhook(drop_pending_updates=args.drop_pending or None)

    anyio.run(main)
    say("webhook deleted: updates can be polled")
    return 0


def _no_wake(conversation_id: object = None) -> None:
    """No delivery worker in this process."""
