"""`voxledger serve`: the HTTP server (Telegram webhook, JSON API, health, OpenAPI schema)."""

from __future__ import annotations

import argparse
import os
import threading
from types import FrameType

from ..adapters.bootstrap import open_engine
from ..adapters.logs import configure_logging
from .arguments import add_flow_options, flow_options
from .output import say


def register(commands: argparse._SubParsersAction) -> None:
    """Add the serve command."""
    serve = commands.add_parser(
        "serve",
        help="Telegram webhook and JSON API over HTTP",
        description="Serve the chat bot over HTTP. POST /telegram/webhook takes Telegram "
        "updates (secret: $VOXLEDGER_TELEGRAM_SECRET); /v1 is the JSON API (bearer token: "
        "$VOXLEDGER_API_TOKEN); /schema is its OpenAPI document; request bodies are limited "
        "to $VOXLEDGER_MAX_BODY_BYTES (default 65536); /console is the operator console "
        "(sign in with the API token). "
        "Example: voxledger serve --host 127.0.0.1 --port 8080",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument(
        "--flow", default="intake", help="the flow the chat bot runs: built-in or loaded (--flows)"
    )
    add_flow_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Open the engine and serve until interrupted."""
    # Imported here: the web stack costs every other command a noticeable start-up delay.
    import uvicorn

    from ..adapters.chat.http import Settings, create_app

    if args.log_level is None and not os.environ.get("VOXLEDGER_LOG_LEVEL"):
        configure_logging("INFO")  # a server logs its requests unless told otherwise
    settings = Settings.from_env(args.flow)
    closing = threading.Event()

    class Server(uvicorn.Server):
        """uvicorn's server, telling the console's live tails when it begins to stop."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            closing.set()  # live console tails end, so they do not hold the shutdown up
            super().handle_exit(sig, frame)

    with open_engine(args.database_url, **flow_options(args)) as engine:
        app = create_app(engine, settings, closing=closing)
        say(
            f"voxledger: serving on http://{args.host}:{args.port} "
            f"(console at /console, OpenAPI at /schema)"
        )
        # uvicorn's own logging stays unconfigured: structlog writes one line per request.
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_config=None, access_log=False
        )
        Server(config).run()
    return 0
