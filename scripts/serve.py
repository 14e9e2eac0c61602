"""`voxledger serve`: the HTTP server (Telegram webhook, JSON API, live voice, health, OpenAPI
schema)."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from .arguments import add_flow_options, flow_options, positive_int
from .output import say

if TYPE_CHECKING:
    from litestar.types import ASGIApp

    from ..adapters.http.serving import Listener
    from ..adapters.http.settings import Settings
    from ..adapters.store.database import Connections


def register(commands: argparse._SubParsersAction) -> None:
    """Add the serve command."""
    serve = commands.add_parser(
        "serve",
        help="Telegram webhook, JSON API and live voice over HTTP",
        description="Serve the chat bot over HTTP. POST /telegram/webhook takes Telegram "
        "updates (secret: $VOXLEDGER_TELEGRAM_SECRET); /v1 is the JSON API (bearer token: "
        "$VOXLEDGER_API_TOKEN); /v1/media-stream takes Twilio Media Streams (signed with "
        "$VOXLEDGER_TWILIO_AUTH_TOKEN, for the URL under $VOXLEDGER_PUBLIC_URL) and "
        "/v1/audio-stream a PCM stream (bearer token), both WebSockets; "
        "/schema is its OpenAPI document; request bodies are limited "
        "to $VOXLEDGER_MAX_BODY_BYTES (default 65536); /console is the operator console "
        "(sign in with the API token). "
        "Example: voxledger serve --host 127.0.0.1 --port 8080 --workers 4",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument(
        "--flow", default="intake", help="the flow the chat bot runs: built-in or loaded (--flows)"
    )
    serve.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="processes serving the port, each with its own connections (default: one per core)",
    )
    serve.add_argument(
        "--loop", choices=["auto", "uvloop", "asyncio"], default="auto", help="event loop"
    )
    serve.add_argument(
        "--http", choices=["auto", "httptools", "h11"], default="auto", help="HTTP parser"
    )
    serve.add_argument(
        "--no-actions",
        action="store_true",
        help="do not run the actions of ended runs here (by default they run, in one worker, "
        "when a loaded flow names any; `voxledger actions run` runs them elsewhere)",
    )
    add_flow_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the services and the app (in each worker), and serve until interrupted."""
    from ..adapters.bootstrap import (
        http_settings,
        open_flows,
        resolve_database_url,
        serving_connections,
        start_logging,
        system_clock,
    )
    from ..adapters.http.serving import Listener, default_workers, serve

    start_logging(args.log_level, default="INFO")  # a server logs its requests by default
    settings = http_settings(args.flow)
    # A flow that is not there (or a broken flow file) is reported before a worker starts.
    open_flows(**flow_options(args)).latest(args.flow)
    workers = args.workers or default_workers()
    # Resolved here, once: the embedded server (if it is the one) lives as long as this
    # process, and the workers share one clock.
    url = resolve_database_url(args.database_url)
    app = partial(
        served_app,
        url,
        settings,
        flow_options(args),
        system_clock(),
        serving_connections(url, workers),
        args.log_level,
        not args.no_actions,
    )
    listener = Listener(
        host=args.host, port=args.port, workers=workers, loop=args.loop, http=args.http
    )
    serve(app, listener, ready=_say_ready)
    return 0


def _say_ready(listener: Listener) -> None:
    processes = f", {listener.workers} workers" if listener.workers > 1 else ""
    say(
        f"voxledger: serving on http://{listener.host}:{listener.port}{processes} "
        f"(console at /console, OpenAPI at /schema)"
    )


@contextmanager
def served_app(
    database_url: str,
    settings: Settings,
    flows: dict[str, Any],
    clock: Callable[[], datetime],
    pool: Connections,
    log_level: str | None,
    actions: bool,
    closing: threading.Event,
    worker: int | None,
) -> Iterator[ASGIApp]:
    """The app over this process's own services (one worker's). The actions of ended runs
    (``actions``, when a loaded flow names any) run beside it in one worker only: the first."""
    from ..adapters.bootstrap import open_actions, open_app, open_services, start_logging

    if worker is not None:  # a process of its own: its logging is not set up yet
        start_logging(log_level, default="INFO", worker=worker)
    with open_services(database_url, clock=clock, pool=pool, **flows) as services:
        runner = None
        if actions and not worker and _names_actions(services):
            subscriber = open_actions(services.engine)
            # A daemon: an action that hangs must not keep the server from stopping.
            runner = threading.Thread(
                target=subscriber.run, args=(closing,), name="voxledger-actions", daemon=True
            )
            runner.start()
        try:
            yield open_app(services, settings, closing=closing)
        finally:
            closing.set()
            if runner is not None:
                runner.join(timeout=10)


def _names_actions(services: Any) -> bool:
    """Whether a loaded flow has actions to run when its runs end."""
    definitions = services.engine.flows.definitions()
    return any(d.on_complete or d.on_cancel or d.on_expire for d in definitions)
