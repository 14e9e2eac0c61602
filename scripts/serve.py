"""`voxledger serve`: the HTTP server (Telegram webhook, JSON API, live voice, health, OpenAPI
schema)."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from .arguments import add_flow_options, flow_options
from .output import say

if TYPE_CHECKING:
    from ..adapters.services import Services


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
        "Example: voxledger serve --host 127.0.0.1 --port 8080",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument(
        "--flow", default="intake", help="the flow the chat bot runs: built-in or loaded (--flows)"
    )
    serve.add_argument(
        "--no-actions",
        action="store_true",
        help="do not run the actions of ended runs here (by default they run when a loaded "
        "flow names any; `voxledger actions run` runs them elsewhere)",
    )
    add_flow_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve at once; build the services as soon as the database answers (until then the
    server reports not ready); on SIGTERM or SIGINT finish the requests in flight, write
    what is queued, release the database, and exit 0."""
    import uvicorn

    from ..adapters.bootstrap import (
        http_settings,
        open_actions,
        open_app,
        open_flows,
        open_services_when_reachable,
        start_logging,
    )
    from ..adapters.http.server import server_config
    from ..adapters.http.starting import StartingApp

    start_logging(args.log_level, default="INFO")  # a server logs its requests by default
    settings = http_settings(args.flow)
    flows = open_flows(**flow_options(args))  # a broken flow file stops the start, here
    closing = threading.Event()
    starting = StartingApp()
    built: list[Services] = []
    failed: list[BaseException] = []
    running: list[threading.Thread] = []  # the actions' subscriber, once the services exist
    actions = not args.no_actions and any(
        d.on_complete or d.on_cancel or d.on_expire for d in flows.definitions()
    )

    def connect() -> None:
        try:
            services = open_services_when_reachable(
                args.database_url, stopping=closing, waiting=starting.waiting, flows=flows
            )
            if services is None:
                return
            built.append(services)
            if not closing.is_set():
                starting.ready(open_app(services, settings, closing=closing))
            if actions and not closing.is_set():
                subscriber = open_actions(services.engine)
                # A daemon: an action that hangs must not keep the server from stopping.
                thread = threading.Thread(
                    target=subscriber.run, args=(closing,), name="voxledger-actions", daemon=True
                )
                thread.start()
                running.append(thread)
        except BaseException as error:  # not an outage: a server that cannot start stops
            failed.append(error)
            closing.set()
            server.should_exit = True

    class Server(uvicorn.Server):
        """uvicorn's server, telling the console's live tails and the connecting thread
        when it begins to stop."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            closing.set()  # live console tails end, so they do not hold the shutdown up
            super().handle_exit(sig, frame)

    # uvicorn handles these signals while it serves, then raises them again; without a
    # handler of ours, that second SIGTERM would end the process before its exit handlers
    # (the embedded PostgreSQL's release among them) could run.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: closing.set())
    config = server_config(
        starting, host=args.host, port=args.port, read_timeout_s=settings.read_timeout_s
    )
    server = Server(config)
    connecting = threading.Thread(target=connect, name="voxledger-connect", daemon=True)
    connecting.start()
    try:
        say(
            f"voxledger: serving on http://{args.host}:{args.port} "
            f"(console at /console, OpenAPI at /schema"
            f"{', running actions' if actions else ''})"
        )
        if not closing.is_set():
            server.run()
    finally:
        closing.set()
        connecting.join(timeout=60)
        for thread in running:
            thread.join(timeout=10)
        for services in built:
            services.close()  # queued snapshots written, connections released
    if failed:
        raise failed[0]  # the command's own error line and exit code
    return 0
