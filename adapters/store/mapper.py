"""Stores domain events as msgpack (msgspec) and restores them with their annotated types.

A plain transcoder is not enough: the library hands it a dict without types, so UUIDs,
enums and structs would come back as strings and dicts. This mapper decodes to a dict,
runs the event class's ``upcast_vN_vM`` chain, then converts the fields whose types msgpack
does not carry (UUID, Struct, Enum, tuple, ...) with ``msgspec.convert``. Events whose
fields msgpack round-trips exactly skip that step, which keeps replay fast.

Personal data is sealed: an event class names its personal fields in ``PERSONAL`` (content,
and free text and ids that may say as much), and
with a key ring (``keys``, set by the EventStore) each such value (but None and empty ones,
which hide nothing) is encoded on its own and encrypted with AES-GCM under its stream's key,
bound to the stream and the field's name, and stored as msgpack extension type 1 (nonce +
ciphertext) in the value's place.
Reading opens it into the field's type; once the stream's key is erased, it reads as a
redaction of the same shape ("[erased]", {}, []), so the history keeps its shape and
replays. An erased stream records no new personal data: an event carrying some is refused,
but for the fields its class names in ``REDACTED_IF_ERASED`` (a disconnect's reason, a turn's
message id: facts the system records whatever happened), which are stored as their
redaction instead. A mapper without a key ring writes plaintext; plaintext rows always read.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEvent, DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import TopicError, get_topic, resolve_topic

from ...domain.errors import InvalidTransition, ValidationFailed, VoxledgerError
from ...domain.randomness import random_bytes
from .keys import KeyRing

# Types msgpack gives back exactly as they went in (datetime travels as a timestamp ext).
_NATIVE: frozenset[Any] = frozenset({str, int, float, bool, type(None), bytes, datetime, Any})

SEALED = 1  # the msgpack extension code of a sealed personal value
NONCE_BYTES = 12
ERASED_TEXT = "[erased]"
Ext = msgspec.msgpack.Ext


class CorruptEvent(VoxledgerError, MapperDeserialisationError):
    """A stored event cannot be read: unknown topic or undecodable payload."""


class Erased(InvalidTransition):
    """The conversation or flow was erased: it records no new personal data."""


class ErasedState(VoxledgerError):
    """A stored whole state (a snapshot) of an erased stream: it has no redacted form, so
    the stream is rebuilt from its events instead."""


CIPHERS_KEPT = 4096


class MsgspecMapper(Mapper[UUID]):
    """Maps domain events to msgpack stored events and back, keeping their types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prepare_plans()  # before any worker thread decodes: see `_plan`
        # The cipher of each key used lately, by the key's identity (a key read anew is a
        # new object). A shared commit seals for many streams in turn: with one cipher
        # kept, it built one per event, a tenth of the commit thread's time.
        self._ciphers: dict[int, tuple[bytes, AESGCM]] = {}

    # Set by the EventStore after construction; without one, personal data is not sealed.
    keys: KeyRing | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Serialise an event's fields (less its id and version) to msgpack, its personal
        fields sealed with its stream's key."""
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        cls = type(domain_event)
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        try:
            if self.keys is not None:
                personal = getattr(cls, "PERSONAL", ())
                if personal:
                    self._seal(state, originator_id, personal, cls, originator_version == 1)
            data = msgspec.msgpack.encode(state)
        except (OverflowError, TypeError, msgspec.EncodeError) as e:
            # The domain refuses such values first; this is the last line before the log.
            raise ValidationFailed(f"{cls.__name__} cannot be stored: {e}") from None
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
        return self.decode(
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.topic,
            stored_event.state,
        )

    def decode(
        self, originator_id: UUID | str, originator_version: int, topic: str, data: bytes
    ) -> DomainEventProtocol[UUID]:
        """``to_domain_event`` for a row as it comes from the database (a replay of many
        rows need not wrap each in a StoredEvent first)."""
        try:
            cls, class_version, typed, fields, personal = _PLANS[topic]
        except KeyError:
            plan = _plan(StoredEvent(originator_id, originator_version, topic, data))
            cls, class_version, typed, fields, personal = plan
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
            if personal or class_version > 1:
                stored = StoredEvent(originator_id, originator_version, topic, data)
                self._open(state, stored, personal, every=class_version > 1)
            if class_version > 1 or "class_version" in state:
                version = state.pop("class_version", 1)
                while version < class_version:
                    getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
                    version += 1
            state["originator_id"] = (
                originator_id if type(originator_id) is UUID else UUID(str(originator_id))
            )
            state["originator_version"] = originator_version
            if not state.keys() >= fields:
                raise KeyError(f"missing {', '.join(sorted(fields - state.keys()))}")
            if typed is None and class_version > 1 and _needs_conversion(cls):
                return msgspec.convert(state, cls)  # upcast from a dict, then typed
        except (msgspec.MsgspecError, TypeError, ValueError, KeyError, AttributeError) as e:
            where = _where(StoredEvent(originator_id, originator_version, topic, data))
            raise CorruptEvent(f"cannot decode {topic} at {where}: {e}") from e
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    # -- personal data ---------------------------------------------------------------------

    def _seal(
        self,
        state: dict[str, Any],
        stream_id: UUID,
        names: tuple[str, ...],
        cls: type,
        first: bool = False,
    ) -> None:
        """Seal the personal values in place with the stream's key (``first``: the event
        begins its stream, whose key cannot be in the log yet)."""
        cipher = None
        for name in names:
            value = state[name]
            if value is None or (not value and type(value) in _EMPTY):
                continue  # hides nothing, and reads the same after an erasure
            if cipher is None:
                cipher = self._cipher(stream_id, create=True, new=first)
                stream = stream_id.bytes  # the associated data's start, made once
            if cipher is None:
                if name in getattr(cls, "REDACTED_IF_ERASED", ()):
                    state[name] = type(value)() if type(value) in (dict, list) else ERASED_TEXT
                    continue
                raise Erased(
                    f"{stream_id} was erased: it records no new personal data "
                    "(message content, context, answers)"
                )
            nonce = random_bytes(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, _encode(value), stream + name.encode())
            state[name] = Ext(SEALED, nonce + sealed)

    def _open(
        self,
        state: dict[str, Any],
        stored_event: StoredEvent,
        personal: tuple[_Personal, ...],
        *,
        every: bool,
    ) -> None:
        """Open the sealed personal values of a decoded payload in place. With ``every``
        (a class with upcasts) any sealed value is opened, under whatever name it was
        sealed, before the upcasts run; its types are restored after them."""
        stream: tuple[bytes, AESGCM | None] | None = None
        for field in personal:
            value = state.get(field.name)
            if type(value) is Ext:
                if stream is None:
                    stream = self._opening(stored_event)
                state[field.name] = _unseal(stored_event, stream, field, value)
            elif field.plain_type is not None:
                # A row written before sealing: the typed payload left this field raw.
                state[field.name] = msgspec.convert(value, field.plain_type)
        if every:
            known = {f.name for f in personal}
            for name, value in list(state.items()):
                if type(value) is Ext and name not in known:
                    if stream is None:
                        stream = self._opening(stored_event)
                    field = _Personal(name, _decode, _erased_text, None, name.encode())
                    state[name] = _unseal(stored_event, stream, field, value)

    def _opening(self, stored_event: StoredEvent) -> tuple[bytes, AESGCM | None]:
        """The event's stream id as bytes, and the stream's cipher (None once erased)."""
        if self.keys is None:
            raise TypeError("its personal data is sealed and this mapper has no key ring")
        originator_id = stored_event.originator_id
        stream_id = originator_id if type(originator_id) is UUID else UUID(str(originator_id))
        return stream_id.bytes, self._cipher(stream_id, create=False)

    def _cipher(self, stream_id: UUID, *, create: bool, new: bool = False) -> AESGCM | None:
        assert self.keys is not None
        key = self.keys.key_for(stream_id, create=create, new=new)
        if key is None:
            return None
        known = self._ciphers.get(id(key))
        if known is not None and known[0] is key:
            return known[1]
        cipher = AESGCM(key)
        if len(self._ciphers) >= CIPHERS_KEPT:
            self._ciphers.clear()  # the ones in use come back at once
        self._ciphers[id(key)] = (key, cipher)  # the key kept: its id is not reused meanwhile
        return cipher


def _unseal(
    stored_event: StoredEvent, stream: tuple[bytes, AESGCM | None], field: _Personal, sealed: Ext
) -> Any:
    """A sealed value opened into its field's type, or its redaction once erased."""
    if sealed.code != SEALED:
        raise TypeError(f"{field.name} holds unknown extension type {sealed.code}")
    stream_id, cipher = stream
    if cipher is None:  # erased (or never issued here): the shape stays, the data is gone
        if field.blank is None:
            where = _where(stored_event)
            raise ErasedState(f"{stored_event.topic} at {where} belongs to an erased stream")
        return field.blank()
    data = sealed.data
    try:
        plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], stream_id + field.aad)
    except InvalidTag:
        raise ValueError(
            f"the sealed {field.name} does not open with its stream's key "
            "(altered, or moved from another stream or field)"
        ) from None
    return field.decode(plain)


class _Personal(NamedTuple):
    """How one personal field of an event class is read back."""

    name: str
    decode: Callable[[bytes], Any]  # the opened value's bytes into the field's type
    blank: Callable[[], Any] | None  # its redaction once erased; None if it has none
    plain_type: Any  # for rows written before sealing: the type to convert to, if needed
    aad: bytes  # the field's name: with the stream id, what a sealed value is bound to


_EMPTY = (str, dict, list)  # empty values of these types are stored as they are
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
# Per topic: the event class, its class version, for a current-version class whose fields
# msgpack cannot restore alone a typed decoder of its payload, the fields it must have,
# and how to read back its personal fields.
_Plan = tuple[type, int, msgspec.msgpack.Decoder | None, frozenset[str], tuple[_Personal, ...]]
_PLANS: dict[str, _Plan] = {}
# msgspec (0.22, with the GIL) publishes a Struct type's decoding info before it has filled
# in its fields' types, and fills them in with calls back into Python, where another thread
# can run: a thread decoding that type meanwhile reads an empty field type and the process
# dies (SIGSEGV in mpack_decode). So a plan, whose decoders build that info for every type
# they reach, is built by one thread at a time, and every known event's plan is built
# up front, before threads start.
_PLANS_LOCK = threading.RLock()


def prepare_plans() -> None:
    """Build the plan of every event class that has a stable topic (ours all do)."""
    for cls in _event_classes(DomainEvent):  # events and snapshots
        topic = cls.__dict__.get("TOPIC")
        if isinstance(topic, str) and topic not in _PLANS and _names(topic, cls):
            _plan(StoredEvent(UUID(int=0), 0, topic, b""))


def _names(topic: str, cls: type) -> bool:
    """True if the topic resolves to this very class (a class may declare a topic that is
    registered for another, or for none)."""
    try:
        return resolve_topic(topic) is cls
    except TopicError:
        return False


def _event_classes(root: type) -> set[type]:
    found: set[type] = set()
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def _plan(stored_event: StoredEvent) -> _Plan:
    with _PLANS_LOCK:
        plan = _PLANS.get(stored_event.topic)
        return plan if plan is not None else _build_plan(stored_event)


def _build_plan(stored_event: StoredEvent) -> _Plan:
    try:
        cls = resolve_topic(stored_event.topic)
    except TopicError as e:
        where = _where(stored_event)
        raise CorruptEvent(f"unknown event topic {stored_event.topic!r} at {where}") from e
    class_version = getattr(cls, "class_version", 1)
    names = getattr(cls, "PERSONAL", ())
    typed = None
    if class_version == 1 and _needs_conversion(cls):
        hints = typing.get_type_hints(cls)
        payload = [
            # A personal field may hold a sealed value: its type is restored once opened.
            (f.name, Any if f.name in names else hints[f.name])
            for f in dataclasses.fields(cls)
            if f.name not in ("originator_id", "originator_version")
        ]
        typed = msgspec.msgpack.Decoder(msgspec.defstruct(f"{cls.__name__}Payload", payload))
    fields = (
        frozenset(f.name for f in dataclasses.fields(cls))
        if dataclasses.is_dataclass(cls)
        else frozenset()
    )
    personal = tuple(_personal(cls, name, typed is not None) for name in names)
    plan = (cls, class_version, typed, fields, personal)
    _PLANS[stored_event.topic] = plan
    return plan


def _personal(cls: type, name: str, typed: bool) -> _Personal:
    """How to read back one personal field: typed when the class has no upcasts (else
    the upcasts see plain values and the types are restored after them)."""
    tp = typing.get_type_hints(cls)[name]
    if getattr(cls, "class_version", 1) > 1:
        return _Personal(name, _decode, _blank(tp), None, name.encode())
    plain_type = tp if typed and not _is_native(tp) else None
    decode = msgspec.msgpack.Decoder(tp).decode
    return _Personal(name, decode, _blank(tp), plain_type, name.encode())


def _erased_text() -> str:
    return ERASED_TEXT


def _blank(tp: Any) -> Callable[[], Any] | None:
    """The redaction of an erased value of this type; None for a type that has none."""
    if tp is Any or tp is str:
        return _erased_text
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _blank(args[0])
        return _erased_text if str in args or Any in args else None
    if tp is dict or origin is dict:
        return dict
    if tp is list or origin is list:
        return list
    return None


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
