"""Stores domain events as msgpack (msgspec) and restores them with their annotated types.

A plain transcoder is not enough: the library hands it a dict without types, so UUIDs,
enums and structs would come back as strings and dicts. This mapper decodes to a dict,
runs the event class's ``upcast_vN_vM`` chain, then converts the fields whose types msgpack
does not carry (UUID, Struct, Enum, tuple, ...) with ``msgspec.convert``. Events whose
fields msgpack round-trips exactly skip that step, which keeps replay fast.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import TopicError, get_topic, resolve_topic

from ...domain.errors import VoxledgerError

# Types msgpack gives back exactly as they went in (datetime travels as a timestamp ext).
_NATIVE: frozenset[Any] = frozenset({str, int, float, bool, type(None), bytes, datetime, Any})


class CorruptEvent(VoxledgerError, MapperDeserialisationError):
    """A stored event cannot be read: unknown topic or undecodable payload."""


class MsgspecMapper(Mapper[UUID]):
    """Maps domain events to msgpack stored events and back, keeping their types."""

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Serialise an event's fields (less its id and version) to msgpack."""
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        data = msgspec.msgpack.encode(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """Decode, upcast to the current class version, and restore field types."""
        try:
            cls, class_version, typed, fields = _PLANS[stored_event.topic]
        except KeyError:
            cls, class_version, typed, fields = _plan(stored_event)
        data = stored_event.state
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            if typed is not None:
                # Fields msgpack cannot restore alone: decode straight into their types.
                state = msgspec.structs.asdict(typed.decode(data))
            else:
                state = _decode(data)
            if type(state) is not dict:
                raise TypeError(f"payload is a {type(state).__name__}, not a map")
            if class_version > 1 or "class_version" in state:
                version = state.pop("class_version", 1)
                while version < class_version:
                    getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
                    version += 1
            originator_id = stored_event.originator_id
            state["originator_id"] = (
                originator_id if type(originator_id) is UUID else UUID(str(originator_id))
            )
            state["originator_version"] = stored_event.originator_version
            if not state.keys() >= fields:
                raise KeyError(f"missing {', '.join(sorted(fields - state.keys()))}")
            if typed is None and class_version > 1 and _needs_conversion(cls):
                return msgspec.convert(state, cls)  # upcast from a dict, then typed
        except (msgspec.MsgspecError, TypeError, ValueError, KeyError, AttributeError) as e:
            where = _where(stored_event)
            raise CorruptEvent(f"cannot decode {stored_event.topic} at {where}: {e}") from e
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event


_decode = msgspec.msgpack.Decoder().decode
# Per topic: the event class, its class version, for a current-version class whose fields
# msgpack cannot restore alone a typed decoder of its payload, and the fields it must have.
_Plan = tuple[type, int, msgspec.msgpack.Decoder | None, frozenset[str]]
_PLANS: dict[str, _Plan] = {}


def _plan(stored_event: StoredEvent) -> _Plan:
    try:
        cls = resolve_topic(stored_event.topic)
    except TopicError as e:
        where = _where(stored_event)
        raise CorruptEvent(f"unknown event topic {stored_event.topic!r} at {where}") from e
    class_version = getattr(cls, "class_version", 1)
    typed = None
    if class_version == 1 and _needs_conversion(cls):
        hints = typing.get_type_hints(cls)
        payload = [
            (f.name, hints[f.name])
            for f in dataclasses.fields(cls)
            if f.name not in ("originator_id", "originator_version")
        ]
        typed = msgspec.msgpack.Decoder(msgspec.defstruct(f"{cls.__name__}Payload", payload))
    fields = (
        frozenset(f.name for f in dataclasses.fields(cls))
        if dataclasses.is_dataclass(cls)
        else frozenset()
    )
    plan = (cls, class_version, typed, fields)
    _PLANS[stored_event.topic] = plan
    return plan


def _where(stored_event: StoredEvent) -> str:
    return f"stream {stored_event.originator_id} version {stored_event.originator_version}"


@cache
def _needs_conversion(cls: type) -> bool:
    """True if some field of the event class has a type msgpack does not restore by itself."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else hints
    return any(not _is_native(hints[name]) for name in names if name != "originator_id")


def _is_native(tp: Any) -> bool:
    if tp in _NATIVE:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return all(_is_native(a) for a in args)
    if origin is list:
        return all(_is_native(a) for a in args)
    if origin is dict:
        return args[0] is str and _is_native(args[1])
    return False
