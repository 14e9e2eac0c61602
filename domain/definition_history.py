"""The versions of one flow definition, as facts in the log: a stream per definition name,
one event per version registered, holding the version's content (so any process can
rebuild it) and its hash (so a changed definition that kept its version is refused)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate

from .errors import DefinitionError, Problem
from .events import trigger
from .flow_definition import FlowDefinition

# Fixed for good: a definition's history is found again by its name alone.
HISTORY_NAMESPACE = UUID("0d7f3c52-5a0e-4b8e-9b1c-4f6f0e3a9a41")


def history_id(name: str) -> UUID:
    """The id of the stream that records the versions of the definition with this name."""
    return uuid5(HISTORY_NAMESPACE, name)


def content_of(definition: FlowDefinition) -> str:
    """The definition as canonical JSON: its data (`to_mapping`) with keys sorted, the same
    whichever file format it was written in."""
    return msgspec.json.encode(definition.to_mapping(), order="sorted").decode()


def content_hash(content: str) -> str:
    """The SHA-256 of a definition's canonical JSON, in hex."""
    return hashlib.sha256(content.encode()).hexdigest()


class RegisteredVersion(msgspec.Struct, frozen=True):
    """One version of a definition as the log holds it."""

    version: int
    content_hash: str
    content: str
    source: str  # the file it was first registered from ("Python": given in code)
    registered_at: datetime

    def data(self) -> dict[str, Any]:
        """The definition's data, as `FlowDefinition.to_mapping` gave it."""
        return msgspec.json.decode(self.content)


class FlowDefinitionHistory(Aggregate):
    """Every version of one flow definition ever registered, with its content."""

    TOPIC = "voxledger:FlowDefinitionHistory"

    class Event(Aggregate.Event):
        TOPIC = "voxledger:FlowDefinitionHistory.Event"

    class Started(Aggregate.Created):
        TOPIC = "voxledger:FlowDefinitionHistory.Started"
        name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[int, RegisteredVersion] = {}

    @classmethod
    def open(cls, name: str, *, at: datetime) -> FlowDefinitionHistory:
        """The history of a definition not registered before."""
        return cls._create(cls.Started, id=history_id(name), timestamp=at, name=name)

    class VersionRegistered(Event):
        TOPIC = "voxledger:FlowDefinitionHistory.VersionRegistered"
        version: int
        content_hash: str
        content: str
        source: str

        def apply(self, h: FlowDefinitionHistory) -> None:
            h.versions[self.version] = RegisteredVersion(
                self.version, self.content_hash, self.content, self.source, self.timestamp
            )

    def register(self, definition: FlowDefinition, source: str, *, at: datetime) -> bool:
        """Record a version; False if this very content is recorded already. A version
        recorded with other content is refused: a changed definition needs a new version."""
        content = content_of(definition)
        if self.check(definition, source, content):
            return False
        digest = content_hash(content)
        trigger(self, self.VersionRegistered, definition.version, digest, content, source, at=at)
        return True

    def check(self, definition: FlowDefinition, source: str, content: str | None = None) -> bool:
        """True if the log holds this very version; False if it holds no version of this
        number; DefinitionError (naming ``source``) if it holds another content under it."""
        known = self.versions.get(definition.version)
        if known is None:
            return False
        digest = content_hash(content if content is not None else content_of(definition))
        if known.content_hash != digest:
            raise DefinitionError(
                Problem(
                    reason=f"differs from the v{definition.version} recorded in the log on"
                    f" {known.registered_at.isoformat(timespec='seconds')} (from"
                    f" {known.source}, hash {known.content_hash[:12]}); a changed definition"
                    " needs a new version",
                    flow=definition.name,
                    version=definition.version,
                    file=source,
                )
            )
        return True
