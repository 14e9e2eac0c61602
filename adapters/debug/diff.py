"""What changed between two states of a conversation or flow, field by field.

Paths use the same dotted form as the condition language (``usage.turns``,
``messages.3.complete``, ``answers.city``), so any path a diff prints can be given to
``bisect --where``. Lists are compared by position, which suits the append-only lists of
the domain (messages, turns, rejections): items past the shorter list are added or removed.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Kind = Literal["changed", "added", "removed"]


class Change(msgspec.Struct, frozen=True):
    """One difference: a field whose value changed, or an item or key added or removed."""

    path: str
    kind: Kind
    old: Any = None
    new: Any = None


def diff(old: Any, new: Any, path: str = "") -> list[Change]:
    """Every difference from ``old`` to ``new`` (structs, maps, lists and plain values)."""
    changes: list[Change] = []
    _diff(old, new, path, changes)
    return changes


def _diff(old: Any, new: Any, path: str, out: list[Change]) -> None:
    if old is new or _identical(old, new):
        return
    if isinstance(old, msgspec.Struct) and type(old) is type(new):
        for field in old.__struct_fields__:
            _diff(getattr(old, field), getattr(new, field), _join(path, field), out)
    elif isinstance(old, dict) and isinstance(new, dict):
        out.extend(Change(_join(path, k), "removed", old=v) for k, v in old.items() if k not in new)
        for key in new:
            if key not in old:
                out.append(Change(_join(path, key), "added", new=new[key]))
            else:
                _diff(old[key], new[key], _join(path, key), out)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            _diff(a, b, _join(path, i), out)
        out.extend(Change(_join(path, i), "added", new=new[i]) for i in range(len(old), len(new)))
        out.extend(Change(_join(path, i), "removed", old=old[i]) for i in range(len(new), len(old)))
    elif type(old) is not type(new) or old != new:
        # A type check too: 1 and True, or 1 and 1.0, are different stored values.
        out.append(Change(path, "changed", old=old, new=new))


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _identical(old: Any, new: Any) -> bool:
    """Equal down to the types of every value: a walk in C instead of in Python, which
    keeps comparing two states of thousands of messages fast. Python's == alone would
    call 1 and True, or 1 and 1.0, the same; their encodings differ."""
    if not isinstance(old, (msgspec.Struct, dict, list, tuple)) or type(old) is not type(new):
        return False
    return bool(old == new) and msgspec.msgpack.encode(old) == msgspec.msgpack.encode(new)
