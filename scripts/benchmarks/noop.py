"""The reference of the HTTP benchmark: the no-op webhook, served as `voxledger serve` serves.

A Litestar app with the two routes the benchmark drives, behind the same guards, body limit
and error handlers: the webhook decodes the Update into the same msgspec Structs and answers
a `sendMessage`; the message route decodes the message and answers a reply. Nothing is
stored, nothing is logged: what is left is the HTTP stack and the decoding.

Run as ``python -m voxledger.scripts.benchmarks.noop --port P --workers N [--loop L]
[--http H]`` with $VOXLEDGER_TELEGRAM_SECRET and $VOXLEDGER_API_TOKEN set, as for serve.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from uuid import UUID

from litestar import Litestar, Router, post
from litestar.params import FromPath, JSONBody
from litestar.types import ASGIApp

from ...adapters.bootstrap import http_settings
from ...adapters.chat import telegram
from ...adapters.chat.bot import Reply
from ...adapters.http.app import EXCEPTION_HANDLERS
from ...adapters.http.bodies import NewMessage
from ...adapters.http.guards import bearer_token, telegram_secret
from ...adapters.http.peers import Peers
from ...adapters.http.serving import Listener, serve
from ...adapters.http.settings import Settings
from ..output import say

MENU = "Audio visit report: choose interview or design."


@post("/telegram/webhook", status_code=200)
async def noop_webhook(data: JSONBody[telegram.Update]) -> telegram.SendMessage | telegram.NoReply:
    """Decode the update and answer with a sendMessage; store nothing."""
    message = telegram.incoming(data)
    if message is None:
        return telegram.NoReply()
    reply = Reply(conversation_id=UUID(int=0), message_id=message.message_id, text=MENU)
    return telegram.send_message(message.chat_id, reply)


@post("/v1/conversations/{conversation_id:uuid}/messages", status_code=200)
async def noop_message(conversation_id: FromPath[UUID], data: JSONBody[NewMessage]) -> Reply:
    """Decode the message and answer with a reply; store nothing."""
    return Reply(conversation_id=conversation_id, message_id=data.message_id or "", text=MENU)


def noop_litestar(settings: Settings) -> Litestar:
    """The no-op app behind the same guards, body limit and error handlers as ours."""
    return Litestar(
        route_handlers=[
            Router(
                "/",
                route_handlers=[noop_webhook],
                guards=[telegram_secret(settings.telegram_secret)],
            ),
            Router("/", route_handlers=[noop_message], guards=[bearer_token(settings.api_token)]),
        ],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )


def from_environment() -> Litestar:
    """The no-op app with the secret and token in the environment (a factory for
    ``uvicorn --factory``: how `supervisors.py` serves it under uvicorn's supervisor)."""
    return noop_litestar(http_settings())


@contextmanager
def noop_app(
    settings: Settings, closing: threading.Event, worker: Peers | None
) -> Iterator[ASGIApp]:
    """The app for one worker (an `AppFactory` once given the settings)."""
    yield noop_litestar(settings)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the no-op app until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="noop", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    args = parser.parse_args(argv)
    listener = Listener(
        host=args.host, port=args.port, workers=args.workers, loop=args.loop, http=args.http
    )
    app = partial(noop_app, http_settings())
    serve(app, listener, ready=lambda at: say(f"noop: serving on http://{at.host}:{at.port}"))


if __name__ == "__main__":
    main()
