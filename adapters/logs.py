"""structlog set-up: console lines in a terminal, JSON lines otherwise."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import select
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

import msgspec
import structlog


def configure_logging(
    level: str = "WARNING", *, json: bool | None = None, fields: Mapping[str, Any] | None = None
) -> None:
    """Send structured logs at ``level`` and above to stderr; JSON unless stderr is a
    terminal. ``fields`` go on every line (a serving worker's number, for instance)."""
    level_name = level.upper()
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors = [
        *([_add(dict(fields))] if fields else []),
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    level_number = logging.getLevelNamesMapping().get(level_name, logging.WARNING)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # One write per line: the lines of several processes sharing stderr (a server's
        # workers) never run into each other.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    global _generation, _direct
    _generation += 1
    _direct = (
        _Direct(processors, tuple(processors), dict(fields or {}), sys.stderr)
        if json and level_number <= logging.INFO
        else None
    )


# Values JSON has no type for, as structlog writes them (an object's repr), but encoded by
# msgspec: the standard library's encoder took as long as the rest of a served request's log.
_ENCODER = msgspec.json.Encoder(
    enc_hook=lambda value: value.__structlog__() if hasattr(value, "__structlog__") else repr(value)
)


def _json_line(event: Any, **_: Any) -> str:
    return _ENCODER.encode(event).decode()


_generation = 0  # configurations so far
_BOUND: dict[str, tuple[int, Any, Any]] = {}


def bound_logger(name: str) -> Any:
    """A logger bound once per configuration, for a line written on every request: a
    module's lazy logger binds itself anew on each call (a tenth of a served request's log).
    A logger binds the processors configured then: one configured elsewhere since (a test's)
    binds anew."""
    known = _BOUND.get(name)
    processors = structlog.get_config()["processors"]
    if known is None or known[0] != _generation or known[2] is not processors:
        known = _BOUND[name] = (_generation, structlog.get_logger(name).bind(), processors)
    return known[1]


class _Direct(NamedTuple):
    """What `info_line` needs to write a line as `configure_logging`'s JSON chain does."""

    processors: list[Any]  # the list structlog was given (a test's capture changes it in place)
    configured: tuple[Any, ...]  # what it held
    fields: dict[str, Any]
    file: TextIO


_direct: _Direct | None = None
_WRITING = threading.Lock()
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # POSIX promises at least 512
_PREFIX = "structlog_"  # structlog's context variables' names begin so


def info_line(name: str, event: str, **values: Any) -> None:
    """``bound_logger(name).info(event, **values)``, written straight as `configure_logging`'s
    JSON chain writes it (the same keys in the same order) while that configuration holds,
    else through structlog (as is a line with an exception to render). It is the request
    log's line, one per request: structlog was 6.4% of the served webhook's CPU (`voxledger
    bench --http --profile`); a line took 13.4 µs through the chain and 7.6 µs here
    (`timeit`, stderr to a file; `tests/test_logs.py` checks that the two lines agree). In
    an event loop, the lines of one turn of the loop are written together as it ends (the
    write of each line was a further 1.8% of the served webhook's CPU)."""
    direct = _direct
    if (
        direct is None
        or "exc_info" in values
        or structlog.get_config()["processors"] is not direct.processors
        or tuple(direct.processors) != direct.configured
    ):
        bound_logger(name).info(event, **values)
        return
    line = values
    line["event"] = event
    line.update(direct.fields)
    context = contextvars.copy_context()
    for var in context:
        if var.name.startswith(_PREFIX):
            value = context[var]
            if value is not Ellipsis:
                line.setdefault(var.name[len(_PREFIX) :], value)
    line["level"] = "info"
    line["timestamp"] = _iso_now()
    text = _json_line(line) + "\n"
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _write(direct.file, [text])
        return
    held = _held()
    if held.file is not direct.file:
        held.flush()
        held.file = direct.file
    if not held.lines or held.loop is not loop:  # (a loop that stopped may never flush)
        loop.call_soon(held.flush)
        held.loop = loop
    held.lines.append(text)


class _Held:
    """The lines written in one thread's event loop during its current turn: they go out
    together at the turn's end (a write per line was a fifth of the log's cost)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.file: TextIO | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the one a flush is due in

    def flush(self) -> None:
        if self.lines and self.file is not None:
            lines, self.lines = self.lines, []
            _write(self.file, lines)


_local = threading.local()
_ALL_HELD: list[_Held] = []  # every thread's, for the lines held when the process exits


def _held() -> _Held:
    held: _Held | None = getattr(_local, "held", None)
    if held is None:
        held = _local.held = _Held()
        with _WRITING:
            _ALL_HELD.append(held)
    return held


@atexit.register
def _flush_all() -> None:
    for held in list(_ALL_HELD):
        with contextlib.suppress(OSError, ValueError):  # its stream closed: nowhere to say it
            held.flush()


def _write(file: TextIO, lines: list[str]) -> None:
    """Write whole lines, as few writes as can be atomic: the lines of several processes
    sharing a pipe (a server's workers) do not run into each other up to PIPE_BUF bytes."""
    with _WRITING:
        chunk: list[str] = []
        size = 0
        for text in lines:
            n = len(text) if text.isascii() else len(text.encode())
            if chunk and size + n > _PIPE_BUF:
                file.write("".join(chunk))
                file.flush()
                chunk, size = [], 0
            chunk.append(text)
            size += n
        if chunk:
            file.write("".join(chunk))
            file.flush()


_second: tuple[int, str] = (-1, "")


def _iso_now() -> str:
    """The time now as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it, with the
    date and time to the second made once a second (datetime's isoformat took a quarter of
    the line's time)."""
    global _second
    second, ns = divmod(time.time_ns(), 1_000_000_000)
    if second != _second[0]:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    micros = ns // 1000
    return f"{_second[1]}.{micros:06d}Z" if micros else f"{_second[1]}Z"


def _add(fields: dict[str, Any]) -> structlog.types.Processor:
    def add(_: Any, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        event.update(fields)
        return event

    return add


_ENABLED: dict[tuple[type, int], bool] = {}


def enabled_for(level: int) -> bool:
    """Whether structlog's configured loggers pass this level, without binding a logger
    (which costs microseconds: too much for a check on every append)."""
    wrapper = structlog.get_config()["wrapper_class"]
    known = _ENABLED.get((wrapper, level))
    if known is None:
        check = getattr(wrapper, "is_enabled_for", None)
        known = bool(check(wrapper(None, [], {}), level)) if check is not None else True
        _ENABLED[(wrapper, level)] = known
    return known
