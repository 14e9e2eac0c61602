"""`voxledger serve`: the HTTP server (Telegram webhook, JSON API, live voice, health, OpenAPI
schema)."""

from __future__ import annotations

import argparse
import threading
from types import FrameType

from .arguments import add_flow_options, flow_options
from .output import say


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
    """Build the services and the app, and serve until interrupted."""
    import uvicorn

    from ..adapters.bootstrap import (
        http_settings,
        open_actions,
        open_app,
        open_services,
        start_logging,
    )

    start_logging(args.log_level, default="INFO")  # a server logs its requests by default
    settings = http_settings(args.flow)
    closing = threading.Event()

    class Server(uvicorn.Server):
        """uvicorn's server, telling the console's live tails when it begins to stop."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            closing.set()  # live console tails end, so they do not hold the shutdown up
            super().handle_exit(sig, frame)

    with open_services(args.database_url, **flow_options(args)) as services:
        app = open_app(services, settings, closing=closing)
        actions = None
        if not args.no_actions and any(
            d.on_complete or d.on_cancel or d.on_expire for d in services.engine.flows.definitions()
        ):
            subscriber = open_actions(services.engine)
            # A daemon: an action that hangs must not keep the server from stopping.
            actions = threading.Thread(
                target=subscriber.run, args=(closing,), name="voxledger-actions", daemon=True
            )
            actions.start()
        say(
            f"voxledger: serving on http://{args.host}:{args.port} "
            f"(console at /console, OpenAPI at /schema"
            f"{', running actions' if actions else ''})"
        )
        # uvicorn's own logging stays unconfigured: structlog writes one line per request.
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_config=None, access_log=False
        )
        try:
            Server(config).run()
        finally:
            closing.set()
            if actions is not None:
                actions.join(timeout=10)
    return 0
