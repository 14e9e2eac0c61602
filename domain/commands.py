"""What every Engine command shares: one way to run (load fresh copies, act, save what
changed in one transaction, run again on the newer state when a concurrent writer won),
the clock that times it, and the limits on what it takes in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from .conversation import Conversation
from .errors import Conflict, NotFound, ValidationFailed
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

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            command(conversation, *args, at=at, **kwargs)
            return [conversation]

        self._transact(work)

    def _transact(self, work: Callable[[], list[Aggregate]]) -> None:
        """Run ``work`` on fresh copies and save what it changed in one transaction; when a
        concurrent writer got there first, run it again on the newer state."""
        for attempt in range(self.max_retries + 1):
            aggregates = work()
            try:
                self.store.save(*aggregates)
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
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed("message content is not valid UTF-8 text") from None
        if len(content) > self.max_content_chars:
            raise ValidationFailed(
                f"message content is {len(content)} characters, "
                f"over the limit of {self.max_content_chars}"
            )
