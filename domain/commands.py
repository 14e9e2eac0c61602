"""What every Engine command shares: one way to run (load fresh copies, act, save what
changed in one transaction, run again on the newer state when a concurrent writer won),
the clock that times it, and the limits on what it takes in."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, SafeUUID

import msgspec
from eventsourcing.domain import Aggregate

from .conversation import Conversation
from .errors import Conflict, NotFound, ValidationFailed
from .events import fields_of
from .randomness import random_bytes
from .store import Store

A = TypeVar("A", bound=Aggregate)


class Commands:
    """The base of the Engine's commands: its store, clock, retries and input limits."""

    store: Store
    clock: Callable[[], datetime]
    max_retries: int
    backoff: Callable[[int], None] | None
    max_content_chars: int
    max_context_bytes: int

    def _update(
        self,
        conversation_id: UUID,
        command: Callable[..., None],
        *args: Any,
        at: datetime | None,
        **kwargs: Any,
    ) -> None:
        """Run one command method of a conversation and save it."""
        at = self._now(at)
        check_values(*args, *kwargs.values())

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            command(conversation, *args, at=at, **kwargs)
            return [conversation]

        self._transact(work)

    def _transact(
        self, work: Callable[[], list[Aggregate]], command_id: UUID | None = None
    ) -> None:
        """Run ``work`` on fresh copies and save what it changed in one transaction; when a
        concurrent writer got there first, run it again on the newer state. Every attempt
        carries the command's one identity (``command_id``, else a new one): a save whose
        outcome was lost is found by it in the log rather than applied twice."""
        command_id = command_id or random_id()
        for attempt in range(self.max_retries + 1):
            aggregates = work()
            _check_pending(aggregates)
            try:
                self.store.save(*aggregates, command_id=command_id)
                return
            except Conflict:
                if attempt == self.max_retries:
                    ids = ", ".join(str(a.id) for a in aggregates)
                    raise Conflict(f"{ids}: concurrent writers won {attempt + 1} times") from None
                if self.backoff is not None:
                    self.backoff(attempt)

    def _load(
        self, aggregate_id: UUID, kind: type[A], version: int | None = None, *, cached: bool = False
    ) -> A:
        aggregate = self.store.load(aggregate_id, version, cached=cached)
        if not isinstance(aggregate, kind):
            raise NotFound(f"{aggregate_id} is not a {kind.__name__.lower()}")
        return aggregate

    def _now(self, at: datetime | None) -> datetime:
        if at is None:
            return self.clock()
        if at.tzinfo is None:
            raise ValidationFailed("times must carry a time zone (use UTC)")
        return at

    def _check_context(self, values: dict[str, Any]) -> None:
        check_values(values)
        try:
            size = len(msgspec.json.encode(values))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValidationFailed(f"context values must be JSON-like: {e}") from None
        if size > self.max_context_bytes:
            raise ValidationFailed(
                f"context update is {size} bytes, over the limit of {self.max_context_bytes}"
            )

    def _check_content(self, content: str) -> None:
        if not isinstance(content, str):
            raise ValidationFailed("message content must be text")
        check_values(content)
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed("message content is not valid UTF-8 text") from None
        if len(content) > self.max_content_chars:
            raise ValidationFailed(
                f"message content is {len(content)} characters, "
                f"over the limit of {self.max_content_chars}"
            )


# What an event can hold: PostgreSQL's 64-bit integers, and text the projections' text
# columns can store (PostgreSQL text has no NUL character). One rule for every way in.
INT64 = range(-(2**63), 2**63)
INT64_MIN, INT64_MAX = INT64[0], INT64[-1]
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_values(*values: Any) -> None:
    """Refuse values no event may hold: text with a NUL character or a lone surrogate, an
    integer outside 64 bits, a number that is not finite (NaN, infinity), a map whose keys
    are not text."""
    todo = list(values)
    while todo:
        value = todo.pop()
        kind = type(value)
        # The common kinds by identity first: this runs on every value of every event saved.
        if kind is str:
            _check_text(value)
        elif value is None or kind is bool:
            continue
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise ValidationFailed(f"integer {_shown(value)} is outside 64 bits")
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if value not in INT64:
                raise ValidationFailed(f"integer {_shown(value)} is outside 64 bits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationFailed(f"number {value} is not finite")
        elif isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise ValidationFailed(f"keys must be text, not {type(key).__name__}")
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, list | tuple):
            todo.extend(value)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise ValidationFailed(f"text may not contain the NUL character: {_shown(value)}")
    if not value.isascii() and _SURROGATE.search(value):
        # a lone UTF-16 half (JSON's "\ud800"): no UTF-8 text, so no event can hold it
        raise ValidationFailed(f"text is not valid Unicode (UTF-8): {_shown(value)}")


_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # the version and the RFC 4122 variant bits
_RANDOM_BITS = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)


def random_id() -> UUID:
    """What `uuid.uuid4` returns, made without the checks of UUID's constructor (half of
    its time; one per command)."""
    uid = object.__new__(UUID)
    object.__setattr__(uid, "int", int.from_bytes(random_bytes(16)) & _RANDOM_BITS | _VERSION_4)
    object.__setattr__(uid, "is_safe", SafeUUID.unknown)
    return uid


def _check_pending(aggregates: list[Aggregate]) -> None:
    """Every value of every event about to be saved obeys `check_values`, whichever command
    (or chat channel's field: a name, a caption) it came from. The aggregates are the
    command's own copies (the cache handed them out), so refusing here leaves no trace."""
    values: list[Any] = []
    for aggregate in aggregates:
        for event in aggregate.pending_events:
            values.extend(map(event.__getattribute__, fields_of(type(event))))
    # Most values are text: all of it checked at once, in C (a value holds a NUL or a lone
    # surrogate if and only if their concatenation does); the value at fault is found by
    # `check_values` then. The rest one by one (value by value, the checks were 2.8% of a
    # served message's CPU).
    text = "".join([value for value in values if type(value) is str])
    if "\x00" in text or (not text.isascii() and _SURROGATE.search(text)):
        check_values(*values)
    else:
        check_values(*[value for value in values if type(value) is not str])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
