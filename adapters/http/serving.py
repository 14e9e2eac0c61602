"""Serving an ASGI app with uvicorn: in this process, or in N worker processes on one port.

`serve` runs uvicorn (on httptools and uvloop unless told otherwise) for an app that an
`AppFactory` builds in the process that serves it. With one worker that is this process.
With N, this process supervises N workers, each started fresh (spawn: no threads, locks or
connections inherited), building its own pieces (store, pool, engine) and binding the port
with SO_REUSEPORT, so that the kernel spreads connections over the workers by their
addresses. (uvicorn's own supervisor would serve as fast, measured: README, Performance. But
its workers share one listening socket, from which asyncio accepts every waiting connection
at each wake-up, so connections spread less evenly; and each of its workers runs a plain
`uvicorn.Server`, without what this module adds to each.)

The supervisor reports when every worker serves, starts a worker again if it dies, and
passes SIGTERM and SIGINT on to every worker, which then stops gracefully: it ends the
console's live tails, finishes the requests it has and closes its pieces. Workers run in a
process group of their own, so that a Ctrl-C in a terminal reaches each of them once,
through the supervisor; a worker whose supervisor is gone (killed outright) stops by itself.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import uvicorn

from ...domain.errors import VoxledgerError
from .peers import Peers
from .server import GRACEFUL_SHUTDOWN_S, Server, bound_socket, server_config
from .settings import DEFAULT_READ_TIMEOUT

if TYPE_CHECKING:
    from litestar.types import ASGIApp

log = structlog.get_logger("voxledger.serve")

AppFactory = Callable[[threading.Event, "Peers | None"], AbstractContextManager["ASGIApp"]]
"""Builds the app (and the pieces it serves) in the process that serves it, for as long as
the context lasts. It is given the event set when the server begins to stop, and the
worker's place among the others (`Peers`: its number, 0 to N-1, their count, how to hand
them a chat's messages; None when one process serves). For N workers it must pickle: a
module-level function, or a `functools.partial` of one with picklable arguments."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A worker that dies while serving is started again after this pause, so that one that
# keeps dying (its database gone, say) does not spin.
RESTART_PAUSE_S = 1.0
# A worker that dies within STEADY_S of its start waits twice as long as the last time
# before it starts again, up to MAX_RESTART_PAUSE_S: one that crashes as it starts (a
# defect met by every request, a database that refuses it) does not restart every second
# for ever, filling the log; one that served a while starts again after RESTART_PAUSE_S.
STEADY_S = 30.0
MAX_RESTART_PAUSE_S = 30.0


# A worker's exit code when its pieces cannot be built for another reason than an outage (a
# setting, the database's permissions): starting it again would fail the same way, so the
# server stops with it.
CANNOT_SERVE = 3


class WorkerFailed(VoxledgerError):
    """A serving worker stopped before it served (its own log line says why)."""


class Listener(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to serve: the address (port 0: one the system picks), the number of
    worker processes, and uvicorn's event loop and HTTP parser ("auto": uvloop and
    httptools where installed, else asyncio's loop and h11)."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    loop: str = "auto"
    http: str = "auto"
    read_timeout_s: float = DEFAULT_READ_TIMEOUT  # a request's headers, then its body


def serve(
    app: AppFactory, listener: Listener, *, ready: Callable[[Listener], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully and return. ``ready`` hears
    once every worker serves, with the port filled in."""
    say = ready or _nobody
    if listener.workers > 1:
        _Supervisor(app, listener).run(say)
        return
    with _bound(listener, reuse_port=False) as sock:
        here = msgspec.structs.replace(listener, port=sock.getsockname()[1])
        closing = threading.Event()
        with app(closing, None) as asgi:
            collect_for_serving()
            _Server(_config(asgi, here), closing, lambda: say(here)).run(sockets=[sock])


# The cyclic garbage collector's thresholds while serving: a young collection per 10,000
# objects kept (not 700), and a full one after 10 middle-aged ones. A serving process keeps
# many long-lived objects (the aggregates in memory) and makes little cyclic garbage; with
# Python's defaults it ran a full collection every second or two under load, each stopping
# the process for up to 125 ms (the p99 of every served route) and, with the young ones, a
# fifth of its CPU (`gc.callbacks` around 12,800 served messages: 0.59 ms of CPU per message
# with the defaults, 0.43 ms with these).
SERVING_GC_THRESHOLDS = (10_000, 20, 10)


def collect_for_serving() -> None:
    """Collect once, keep everything made so far (modules, the app, its services) out of
    every later collection, and collect less often from now on (see above)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def _nobody(_: Listener) -> None:
    """Nobody listens for the news that the server serves."""


class _Server(Server):
    """uvicorn's server, which tells the console's live tails when it begins to stop, says
    when it serves, and, once stopped by a signal, returns (so that its caller closes its
    pieces) instead of raising the signal again with the default handler."""

    def __init__(
        self,
        config: uvicorn.Config,
        closing: threading.Event,
        started: Callable[[], None],
        peers: Peers | None = None,
    ) -> None:
        super().__init__(config)
        self.closing = closing
        self.on_started = started
        self.peers = peers

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.closing.set()  # live console tails end, so they do not hold the shutdown up
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # Stopping is also the app's to ask (its pieces cannot be built): it sets `closing`.
        return self.closing.is_set() or await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.peers is not None:  # the others may hand it chats once it serves
            await self.peers.start()
        await super().startup(sockets)
        if self.started:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.peers is not None:  # after its own requests, which may wait on the others
            await self.peers.close(GRACEFUL_SHUTDOWN_S)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _config(app: ASGIApp, listener: Listener) -> uvicorn.Config:
    """Each worker's uvicorn, with the read deadlines and graceful stop of a single one."""
    return server_config(
        app,
        host=listener.host,
        port=listener.port,
        read_timeout_s=listener.read_timeout_s,
        loop=listener.loop,
        http=listener.http,
    )


@contextmanager
def _bound(listener: Listener, *, reuse_port: bool) -> Iterator[socket.socket]:
    """A socket bound to the listener's address, not listening yet (uvicorn listens once
    the app is ready: until then a worker's socket gets no connections)."""
    with bound_socket(listener.host, listener.port, reuse_port=reuse_port) as sock:
        yield sock


# -- several workers -----------------------------------------------------------------------------


class _Worker:
    """One worker process, and the pipe on which it says that it serves."""

    def __init__(self, app: AppFactory, listener: Listener, index: int, peers: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.serving = False
        self.started = time.monotonic()
        self._reader: Connection | None
        self._reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_work,
            args=(app, listener, index, peers, writer),
            name=f"voxledger-worker-{index}",
        )
        self.process.start()
        writer.close()  # the worker holds the other end: EOF here once it has spoken or gone

    def waitables(self) -> list[Any]:
        """What to wait on for news of this worker: its exit, and its word that it serves."""
        return [self.process.sentinel, *([self._reader] if self._reader else [])]

    def check(self) -> bool:
        """Whether it is still running (reading its word that it serves, if that came)."""
        if self._reader is not None and self._reader.poll():
            with suppress(EOFError):
                self.serving = bool(self._reader.recv())
            self._reader.close()
            self._reader = None
        return self.process.is_alive()

    def signal(self, sig: int) -> None:
        """Pass a signal on to the worker, if it still runs."""
        if self.process.is_alive() and self.process.pid is not None:
            with suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def reap(self) -> int | None:
        """Wait for the process to end; its exit code."""
        self.process.join()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return self.process.exitcode


class _Supervisor:
    """Starts the workers, starts again one that dies, and passes stop signals on to all."""

    def __init__(self, app: AppFactory, listener: Listener) -> None:
        self.app = app
        self.listener = listener
        self.signals: list[int] = []
        self.peers = ""  # the folder of the workers' sockets, made by `run`

    def run(self, ready: Callable[[Listener], None]) -> None:
        # Bound here without SO_REUSEPORT and closed again: fails at once if another
        # server holds the address (or picks the port for all workers when asked for 0).
        with _bound(self.listener, reuse_port=False) as probe:
            listener = msgspec.structs.replace(self.listener, port=probe.getsockname()[1])
        self.peers = _peers_folder()
        previous = {sig: signal.signal(sig, self._note) for sig in STOP_SIGNALS}
        workers: list[_Worker] = []
        try:
            workers = [_Worker(self.app, listener, k, self.peers) for k in range(listener.workers)]
            self._supervise(workers, listener, ready)
        finally:
            if not self.signals:  # an error here: the workers stop with the supervisor
                self.signals.append(signal.SIGTERM)
            self._stop(workers)
            shutil.rmtree(self.peers, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _note(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)

    def _supervise(
        self, workers: list[_Worker], listener: Listener, ready: Callable[[Listener], None]
    ) -> None:
        announced = False
        restarts: dict[int, float] = {}  # a dead worker's number: when it starts again
        pauses: dict[int, float] = {}  # the pause before each worker's last start
        while not self.signals:
            waitables = [
                w for k, worker in enumerate(workers) if k not in restarts
                for w in worker.waitables()
            ]  # fmt: skip
            multiprocessing.connection.wait(waitables, timeout=0.2)
            for k, worker in enumerate(workers):
                due = restarts.get(k)
                if due is not None:
                    if time.monotonic() >= due:
                        del restarts[k]
                        workers[k] = _Worker(self.app, listener, k, self.peers)
                    continue
                if worker.check():
                    continue
                code = worker.reap()
                if code == CANNOT_SERVE:
                    raise WorkerFailed(f"serving worker {k} cannot serve (its log says why)")
                if not announced:
                    raise WorkerFailed(
                        f"serving worker {k} stopped as it started (exit code {code})"
                    )
                steady = time.monotonic() - worker.started >= STEADY_S
                last = pauses.get(k)
                pause = (
                    RESTART_PAUSE_S
                    if steady or last is None
                    else min(2 * last, MAX_RESTART_PAUSE_S)
                )
                pauses[k] = pause
                log.error("serve.worker_stopped", worker=k, exit_code=code, restart_in_s=pause)
                restarts[k] = time.monotonic() + pause
            if not announced and all(worker.serving for worker in workers):
                log.info("serve.workers_serving", pids=[w.process.pid for w in workers])
                ready(listener)
                announced = True

    def _stop(self, workers: list[_Worker]) -> None:
        """Pass every stop signal on (a second SIGINT makes the workers stop at once), and
        wait for all workers to end."""
        passed = 0
        while True:
            for sig in self.signals[passed:]:
                for worker in workers:
                    worker.signal(sig)
            passed = len(self.signals)
            alive = [w.process.sentinel for w in workers if w.process.is_alive()]
            if not alive:
                break
            multiprocessing.connection.wait(alive, timeout=0.2)
        for worker in workers:
            worker.reap()


def _peers_folder() -> str:
    """A fresh folder for the workers' sockets (`peers`), which only this user may enter
    (mode 0700); under /tmp if the usual temporary folder's path is too long for a socket's
    address (108 bytes on Linux)."""
    folder = tempfile.mkdtemp(prefix="voxledger-workers-")
    if len(folder) > 80:
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix="voxledger-workers-", dir="/tmp")
    return folder


def _work(
    app: AppFactory, listener: Listener, index: int, folder: str, serving: Connection
) -> None:
    """A worker process: build the app, bind the port beside the other workers, serve (and
    answer the chats the others hand it, on a socket in ``folder``)."""
    os.setpgid(0, 0)  # a group of its own: a terminal's Ctrl-C comes through the supervisor
    _stop_with_supervisor()
    closing = threading.Event()

    def started() -> None:
        serving.send(True)
        serving.close()

    peers = Peers(index, listener.workers, folder)
    crashed = False
    try:
        with app(closing, peers) as asgi, _bound(listener, reuse_port=True) as sock:
            collect_for_serving()
            try:
                _Server(_config(asgi, listener), closing, started, peers).run(sockets=[sock])
            except Exception:
                # A defect while serving (uvicorn's loop stopped under it, say): the
                # supervisor starts the worker again, as it does one that was killed.
                crashed = True
                log.exception("serve.worker_crashed", worker=index)
    except Exception:
        if crashed:  # and releasing what it held failed as well
            log.exception("serve.worker_release_failed", worker=index)
            sys.exit(1)
        # It could not build its pieces: one log line (the traceback inside it), and the
        # supervisor stops the server saying so.
        log.exception("serve.worker_failed", worker=index)
        sys.exit(CANNOT_SERVE)
    if crashed:
        sys.exit(1)


def _stop_with_supervisor() -> None:
    """Stop gracefully (as SIGTERM asks) when the supervisor process is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
