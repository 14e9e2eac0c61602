"""`voxledger chat`: talk to a flow in the terminal, through the same bot as the webhook."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING
from uuid import uuid4

from .arguments import add_flow_options, flow_options
from .output import say

if TYPE_CHECKING:
    from ..adapters.chat.bot import Reply

CHANNEL = "terminal"


def register(commands: argparse._SubParsersAction) -> None:
    """Add the chat command."""
    chat = commands.add_parser(
        "chat",
        help="try a flow by hand in the terminal",
        description="A terminal conversation with the chat bot. Lines from stdin are "
        "messages; /start, /cancel, /back, /edit FIELD and /status work as in Telegram. "
        "Stop with Ctrl-C and run it again: the conversation continues where it was. "
        "Example: voxledger chat --chat-id alice",
    )
    chat.add_argument(
        "--flow", default="intake", help="the flow to run: a built-in or loaded one (--flows)"
    )
    chat.add_argument(
        "--chat-id", default=None, help="which conversation to continue (default: your user name)"
    )
    add_flow_options(chat)
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read lines until end of input, answering each."""
    from rich.markup import escape

    from ..adapters.bootstrap import open_services
    from ..adapters.chat.bot import Incoming

    chat_id = args.chat_id or getpass.getuser()

    def message(text: str) -> Incoming:
        return Incoming(
            channel=CHANNEL,
            chat_id=chat_id,
            message_id=uuid4().hex,
            text=text,
            user_id=chat_id,
            participant=chat_id,
        )

    with open_services(args.database_url, **flow_options(args)) as services:
        bot = services.bot(args.flow)
        here = bot.where(message(""), reserve=True)
        say(f"conversation {here.conversation_id} (chat {escape(chat_id)}); Ctrl-C to stop")
        show(here)
        while line := sys.stdin.readline():
            # PostgreSQL text cannot hold NUL, and a terminal never means one.
            text = line.rstrip("\r\n").replace("\x00", "")
            if not text.strip():
                continue
            show(bot.handle_chat(message(text)))
    return 0


def show(reply: Reply) -> None:
    """The bot's reply, and the menu's choices if it offers any."""
    from rich.markup import escape

    say(escape(f"bot: {reply.text}"))
    if reply.choices:
        say(escape(f"     choices: {' | '.join(reply.choices)}"))
