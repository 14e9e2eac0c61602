"""`voxledger serve`: the HTTP server (Telegram webhook, JSON API, live voice, health, OpenAPI
schema), from one process or, with --workers N, from N worker processes on one port."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any

from .arguments import add_flow_options, flow_options, positive_int
from .output import say

if TYPE_CHECKING:
    from litestar.types import ASGIApp

    from ..adapters.http.peers import Peers
    from ..adapters.http.serving import Listener
    from ..adapters.http.settings import Settings
    from ..adapters.services import Services
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
        help="processes serving the port, each with its own connections to the database "
        "(default 1); each chat is served by one of them, and a call's speech reaches the "
        "one that holds it",
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
    """Serve from this process, or (``--workers`` N above 1) from N worker processes."""
    workers = args.workers or 1
    if workers == 1:
        return _serve_one(args)
    return _serve_many(args, workers)


def _serve_one(args: argparse.Namespace) -> int:
    """Serve at once; build the services as soon as the database answers (until then the
    server reports not ready); on SIGTERM or SIGINT finish the requests in flight, write
    what is queued, release the database, and exit 0."""

    from ..adapters.bootstrap import (
        http_settings,
        open_app,
        open_flows,
        open_services_when_reachable,
        start_logging,
    )
    from ..adapters.http.server import Server as AcceptingServer
    from ..adapters.http.server import bound_socket, server_config

    start_logging(args.log_level, default="INFO")  # a server logs its requests by default
    settings = http_settings(args.flow)
    flows = open_flows(**flow_options(args))  # a broken flow file stops the start, here
    closing = threading.Event()
    actions = not args.no_actions and any(
        d.on_complete or d.on_cancel or d.on_expire for d in flows.definitions()
    )
    serving = _Serving(
        closing,
        lambda services: open_app(services, settings, closing=closing),
        runs_actions=lambda _: actions,
        failed=lambda: setattr(server, "should_exit", True),
    )

    class Server(AcceptingServer):
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
        serving.starting,
        host=args.host,
        port=args.port,
        read_timeout_s=settings.read_timeout_s,
        loop=args.loop,
        http=args.http,
    )
    server = Server(config)
    with bound_socket(args.host, args.port) as sock:  # a port in use: the command's error
        serving.connect(
            lambda waiting: open_services_when_reachable(
                args.database_url, stopping=closing, waiting=waiting, flows=flows
            )
        )
        try:
            say(
                f"voxledger: serving on http://{args.host}:{args.port} "
                f"(console at /console, OpenAPI at /schema"
                f"{', running actions' if actions else ''})"
            )
            if not closing.is_set():
                server.run(sockets=[sock])
        finally:
            serving.release()
    serving.raise_failure()  # the command's own error line and exit code
    return 0


def _serve_many(args: argparse.Namespace, workers: int) -> int:
    """Supervise N worker processes, each building its services and app, until interrupted."""
    from ..adapters.bootstrap import (
        http_settings,
        open_flows,
        resolve_database_url,
        serving_connections,
        start_logging,
        system_clock,
    )
    from ..adapters.http.serving import Listener, serve

    start_logging(args.log_level, default="INFO")  # a server logs its requests by default
    settings = http_settings(args.flow)
    # A flow that is not there (or a broken flow file) is reported before a worker starts.
    open_flows(**flow_options(args)).latest(args.flow)
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
        host=args.host,
        port=args.port,
        workers=workers,
        loop=args.loop,
        http=args.http,
        read_timeout_s=settings.read_timeout_s,
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
    worker: Peers | None,
) -> Iterator[ASGIApp]:
    """The app over this process's own services (one worker's). Built before the worker
    serves when the database answers (so that a worker started again takes connections only
    once it can answer them); while it does not, served at once, reporting not ready
    (`StartingApp`) as one process does, and built when it comes. The actions of ended runs
    (``actions``, when a loaded flow names any) run beside it in one worker only: the first.
    Services that cannot be built for another reason than an outage stop the worker: at
    once, or later through ``closing`` (leaving the context then raises why)."""
    import structlog

    from ..adapters.bootstrap import (
        open_app,
        open_services,
        open_services_when_reachable,
        start_logging,
    )
    from ..domain.errors import Unavailable

    if worker is not None:  # a process of its own: its logging is not set up yet
        start_logging(log_level, default="INFO", worker=worker.index)
    log = structlog.get_logger("voxledger.serve")
    # A worker of several: the others serve the same conversations.
    options = dict(clock=clock, pool=pool, shared_conversations=worker is not None, **flows)
    first = worker is None or worker.index == 0
    serving = _Serving(
        closing,
        lambda services: open_app(services, settings, closing=closing, peers=worker),
        runs_actions=lambda services: actions and first and _names_actions(services),
        ready=lambda: log.info("serve.worker_ready"),
    )
    try:
        try:
            services = open_services(database_url, **options)
        except Unavailable as unreachable:
            structlog.get_logger("voxledger").warning(
                "database.unreachable", error=str(unreachable)
            )
            serving.starting.waiting(str(unreachable))
            serving.connect(
                lambda waiting: open_services_when_reachable(
                    database_url, stopping=closing, waiting=waiting, **options
                )
            )
        else:
            serving.serve_with(services)
        yield serving.starting
    finally:
        serving.release()
    serving.raise_failure()


class _Serving:
    """What serving holds, in one process or one worker: the app that reports not ready
    until the services are built (`StartingApp`), the services built, the actions' runner
    (when ``runs_actions`` says so), and a failure to build them for another reason than an
    outage, which stops serving (``closing`` set, ``failed`` told) and is raised at the end."""

    def __init__(
        self,
        closing: threading.Event,
        app: Callable[[Services], ASGIApp],
        *,
        runs_actions: Callable[[Services], bool],
        ready: Callable[[], None] = lambda: None,
        failed: Callable[[], None] = lambda: None,
    ) -> None:
        from ..adapters.http.starting import StartingApp

        self.closing = closing
        self.starting = StartingApp()
        self._app = app
        self._runs_actions = runs_actions
        self._ready = ready
        self._failed = failed
        self._built: list[Services] = []
        self._running: list[threading.Thread] = []
        self._failures: list[BaseException] = []
        self._connecting: threading.Thread | None = None

    def serve_with(self, services: Services) -> None:
        """Serve the app over these services (they are closed by `release` in any case)."""
        from ..adapters.http.serving import collect_for_serving

        self._built.append(services)
        if self.closing.is_set():
            return
        self.starting.ready(self._app(services))
        collect_for_serving()
        self._ready()
        if not self.closing.is_set() and self._runs_actions(services):
            self._running.append(_run_actions(services, self.closing))

    def connect(self, open_services: Callable[[Callable[[str], None]], Services | None]) -> None:
        """Build the services in a thread, as soon as the database answers (``open_services``
        is told how to report the wait; None: stopped before it answered), then serve."""

        def connecting() -> None:
            try:
                services = open_services(self.starting.waiting)
                if services is not None:
                    self.serve_with(services)
            except BaseException as error:  # not an outage: what cannot serve stops
                self._failures.append(error)
                self.closing.set()
                self._failed()

        self._connecting = threading.Thread(
            target=connecting, name="voxledger-connect", daemon=True
        )
        self._connecting.start()

    def release(self) -> None:
        """Once serving has stopped: the thread still connecting and the actions' runner
        given time to end, then the services closed."""
        self.closing.set()
        if self._connecting is not None:
            self._connecting.join(timeout=60)
        for runner in self._running:
            runner.join(timeout=10)
        for services in self._built:
            services.close()  # queued snapshots written, connections released

    def raise_failure(self) -> None:
        """Raise why the services could not be built, if they could not."""
        if self._failures:
            raise self._failures[0]


def _run_actions(services: Services, closing: threading.Event) -> threading.Thread:
    """The actions of ended runs, run in a thread until ``closing`` is set."""
    from ..adapters.bootstrap import open_actions

    subscriber = open_actions(services.engine)
    # A daemon: an action that hangs must not keep the server from stopping.
    thread = threading.Thread(
        target=subscriber.run, args=(closing,), name="voxledger-actions", daemon=True
    )
    thread.start()
    return thread


def _names_actions(services: Any) -> bool:
    """Whether a loaded flow has actions to run when its runs end."""
    definitions = services.engine.flows.definitions()
    return any(d.on_complete or d.on_cancel or d.on_expire for d in definitions)
