"""`voxledger deliver`: the delivery worker as a process of its own (like `project run`)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .output import say

if TYPE_CHECKING:
    import anyio

    from ..adapters.services import Services

T = TypeVar("T")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the deliver command."""
    deliver = commands.add_parser(
        "deliver",
        help="send what the outbox holds: replies, button answers, notices",
        description="The delivery worker: sends every outbound message the bot recorded and "
        "has not delivered yet (Telegram with $VOXLEDGER_TELEGRAM_TOKEN, WhatsApp with the "
        "$VOXLEDGER_WHATSAPP_* variables), in order per chat, within the platforms' limits, "
        "and records each outcome. `voxledger serve` runs one too when a channel delivers; "
        "one worker delivers per schema at a time, the others wait their turn. "
        "Example: voxledger deliver --concurrency 8",
    )
    deliver.add_argument(
        "--once", action="store_true", help="deliver what is pending now, then exit"
    )
    deliver.add_argument(
        "--concurrency",
        type=int,
        default=16,
        metavar="N",
        help="conversations served at once (default 16)",
    )
    deliver.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Deliver until SIGTERM or Ctrl-C (or, with --once, until nothing is pending)."""
    import anyio

    from ..adapters.bootstrap import channel_settings, open_delivery, open_senders, open_services
    from ..domain.errors import BadInput

    if args.concurrency < 1:
        raise BadInput("--concurrency must be 1 or more")
    channels = channel_settings()  # nothing to deliver with is said before any wait
    if not (channels.telegram_delivers or channels.whatsapp_delivers):
        raise BadInput(
            "no channel delivers: set VOXLEDGER_TELEGRAM_TOKEN, or VOXLEDGER_WHATSAPP_TOKEN "
            "and VOXLEDGER_WHATSAPP_PHONE_NUMBER_ID"
        )
    opened = (
        open_services(args.database_url)
        if args.once
        else services_once_reachable(args.database_url)
    )
    if opened is None:
        return 0  # stopped before the database came
    with opened as services:
        senders = open_senders(services.channels)
        worker = open_delivery(services, senders, concurrency=args.concurrency)

        async def main() -> None:
            try:
                if args.once:
                    if await worker.lead():
                        await worker.drain()
                    else:
                        say("another worker is delivering in this schema")
                    return
                stopping = anyio.Event()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(stop_on_signal, stopping)
                    say(f"delivering on {', '.join(sorted(senders))}; Ctrl-C to stop")
                    await worker.run(stopping)
                    tasks.cancel_scope.cancel()
            finally:
                for sender in senders.values():
                    await sender.aclose()

        run_async(main)
        say(f"delivered {worker.delivered}, failed {worker.failed}")
    return 0


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run a command's async part; an error in one of its tasks comes out as itself (so the
    command line words it as any other), not wrapped in a group."""
    import anyio

    try:
        return anyio.run(main)
    except BaseExceptionGroup as group:
        errors = group.exceptions
        while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
            errors = errors[0].exceptions
        if len(errors) == 1:
            raise errors[0] from None
        raise


async def stop_on_signal(stopping: anyio.Event) -> None:
    """Set ``stopping`` at the first SIGTERM or SIGINT (Ctrl-C)."""
    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stopping.set()
            return


def services_once_reachable(database_url: str | None, **options: Any) -> Services | None:
    """The services, once the database answers: a long-running worker started while it is
    away waits for it (saying so) instead of exiting, which a supervisor would answer by
    restarting it in a loop; None if SIGTERM or Ctrl-C comes first."""
    from ..adapters.bootstrap import open_services_when_reachable

    stop = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stop.set())
    try:
        return open_services_when_reachable(
            database_url,
            stopping=stop,
            waiting=lambda why: say(f"voxledger: {why}; trying again"),
            **options,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
