"""structlog set-up: console lines in a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

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
    structlog.configure(
        processors=[
            *([_add(dict(fields))] if fields else []),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.WARNING)
        ),
        # One write per line: the lines of several processes sharing stderr (a server's
        # workers) never run into each other.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    global _generation
    _generation += 1


# Values JSON has no type for, as structlog writes them (an object's repr), but encoded by
# msgspec: the standard library's encoder took as long as the rest of a served request's log.
_ENCODER = msgspec.json.Encoder(
    enc_hook=lambda value: value.__structlog__() if hasattr(value, "__structlog__") else repr(value)
)


def _json_line(event: Any, **_: Any) -> str:
    return _ENCODER.encode(event).decode()


_generation = 0  # configurations so far
_BOUND: dict[str, tuple[int, Any]] = {}


def bound_logger(name: str) -> Any:
    """A logger bound once per configuration, for a line written on every request: a
    module's lazy logger binds itself anew on each call (a tenth of a served request's log)."""
    known = _BOUND.get(name)
    if known is None or known[0] != _generation:
        known = _BOUND[name] = (_generation, structlog.get_logger(name).bind())
    return known[1]


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
