"""A small, safe condition language over a conversation's or flow's state, for `bisect`.

Nothing is evaluated as Python: a tokenizer and a recursive-descent parser build a tree of
the few node types below, and evaluating it only reads fields. The grammar::

    condition  := conjunct ("or" conjunct)*
    conjunct   := negation ("and" negation)*
    negation   := "not" negation | comparison
    comparison := operand [(== | != | < | <= | > | >=) operand | ["not"] "in" operand]
    operand    := literal | path | "[" [operand ("," operand)*] "]" | "(" condition ")"
    literal    := "text" | 'text' | number | true | false | null
    path       := name ("." (name | integer))*

A path reads into the state: ``status``, ``usage.turns``, ``answers.city``,
``messages.0.content``, ``messages.-1.role``; ``.length`` counts a list, a map or a text.
Paths are checked against the state's types before anything runs, so a misspelt field is
an error, not a silent null. Related roots (``flow`` for a conversation's current flow)
are passed in by the caller. A path through a missing value (no flow yet, an answer not
given) is null. Ordering (< <= > >=) compares two numbers or two texts and is false for
anything else; times compare as ISO 8601 text. ``x in [..]`` is membership, ``"k" in map``
asks for a key, ``"t" in text`` for a substring.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any
from uuid import UUID

import msgspec

from ...domain.errors import BadInput

_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<path>[A-Za-z]\w*(?:\.(?:[A-Za-z]\w*|-?\d+))*)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[()\[\],])
    )""",
    re.VERBOSE,
)
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

Roots = Mapping[str, Callable[[], Any]]


# -- the tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A constant: text, number, true, false or null."""

    value: Any

    def evaluate(self, env: _Env) -> Any:
        return self.value


@dataclass(frozen=True)
class Path:
    """A dotted path into the state (or into a related root such as ``flow``)."""

    parts: tuple[str, ...]

    def evaluate(self, env: _Env) -> Any:
        return env.resolve(self.parts)

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListOf:
    """A literal list, for ``in``."""

    items: tuple[Node, ...]

    def evaluate(self, env: _Env) -> Any:
        return [item.evaluate(env) for item in self.items]


@dataclass(frozen=True)
class Compare:
    """``left op right`` with one of == != < <= > >= in, or "not in"."""

    op: str
    left: Node
    right: Node

    def evaluate(self, env: _Env) -> bool:
        a, b = self.left.evaluate(env), self.right.evaluate(env)
        if self.op == "==":
            return _equal(a, b)
        if self.op == "!=":
            return not _equal(a, b)
        if self.op in ("in", "not in"):
            return _contains(b, a) == (self.op == "in")
        if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return _ORDERING[self.op](a, b)
        return False


@dataclass(frozen=True)
class Not:
    """Negation."""

    operand: Node

    def evaluate(self, env: _Env) -> bool:
        return not _truthy(self.operand.evaluate(env))


@dataclass(frozen=True)
class Logic:
    """``and`` / ``or`` over two or more operands, short-circuiting."""

    op: str
    operands: tuple[Node, ...]

    def evaluate(self, env: _Env) -> bool:
        test = all if self.op == "and" else any
        return test(_truthy(o.evaluate(env)) for o in self.operands)


Node = Literal | Path | ListOf | Compare | Not | Logic


class Condition:
    """A parsed condition: check it against the state's types once, then test states."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tree = _Parser(text).parse()

    @property
    def paths(self) -> list[Path]:
        """Every path the condition reads."""
        found: list[Path] = []
        _collect_paths(self.tree, found)
        return found

    def uses(self, root: str) -> bool:
        """True if some path starts at the related root ``root`` (for example ``flow``)."""
        return any(p.parts[0] == root for p in self.paths)

    def check(self, subject: type, related: Mapping[str, type] | None = None) -> None:
        """Refuse paths that the subject's type (or a related root's type) does not have."""
        related = related or {}
        for path in self.paths:
            head = path.parts[0]
            if head in related:
                _check_path(related[head], path.parts[1:], path.text, ())
            else:
                _check_path(subject, path.parts, path.text, tuple(related))

    def holds(self, subject: Any, related: Roots | None = None) -> bool:
        """True if the condition holds for this state. ``related`` maps root names to
        functions giving their value, called at most once and only if a path needs it."""
        return _truthy(self.tree.evaluate(_Env(subject, related or {})))

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def first_version(low: int, high: int, holds: Callable[[int], bool]) -> int | None:
    """The first version in ``low..high`` at which ``holds`` is true, by binary search.

    Binary search is only right for a monotone condition: false up to some version, true
    from then on. It tests ``high`` first, so a condition that no longer holds at the end
    gives None (scan linearly to find where it held for a while)."""
    if low > high or not holds(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


# -- evaluation --------------------------------------------------------------------------


class _Env:
    """Resolves paths against one state and its lazily computed related roots."""

    def __init__(self, subject: Any, related: Roots) -> None:
        self.subject = subject
        self.related = related
        self.cache: dict[str, Any] = {}

    def resolve(self, parts: tuple[str, ...]) -> Any:
        head = parts[0]
        if head in self.related:
            if head not in self.cache:
                self.cache[head] = self.related[head]()
            value, rest = self.cache[head], parts[1:]
        else:
            value, rest = self.subject, parts
        for part in rest:
            value = _step(value, part)
        return _plain(value)


def _step(value: Any, part: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        if part in value or part != "length":
            return value.get(part)
        return len(value)
    if isinstance(value, (list, tuple, str)):
        if part == "length":
            return len(value)
        try:
            return value[int(part)]
        except (ValueError, IndexError):
            return None
    # A struct or an object with the same fields (paths were checked against the type,
    # and the tokenizer admits no underscore names, so no dunder attribute is reachable).
    return getattr(value, part, None)


def _plain(value: Any) -> Any:
    """The value as the language sees it: ids, enums and times become text."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    # true is not 1 here, unlike in Python.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, (list, tuple)):
        return any(_equal(_plain(x), item) for x in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    return False


def _truthy(value: Any) -> bool:
    return bool(value)


def _collect_paths(node: Node, found: list[Path]) -> None:
    if isinstance(node, Path):
        found.append(node)
    elif isinstance(node, ListOf):
        for item in node.items:
            _collect_paths(item, found)
    elif isinstance(node, Compare):
        _collect_paths(node.left, found)
        _collect_paths(node.right, found)
    elif isinstance(node, Not):
        _collect_paths(node.operand, found)
    elif isinstance(node, Logic):
        for operand in node.operands:
            _collect_paths(operand, found)


# -- checking paths against types ---------------------------------------------------------


def _check_path(tp: Any, parts: Sequence[str], text: str, roots: Sequence[str]) -> None:
    where: list[str] = []
    for part in parts:
        tp = _unwrap_optional(tp)
        if tp is Any:
            return
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            members = _members(tp)
            if part not in members:
                known = ", ".join(sorted(members) + ([] if where else list(roots)))
                raise BadInput(f"unknown field {text!r}: {_name(where)} has {known}")
            tp = members[part]
        elif origin in (list, tuple) or tp in (list, tuple):
            if part != "length" and not re.fullmatch(r"-?\d+", part):
                raise BadInput(f"{text!r}: {_name(where)} is a list; use a number or length")
            tp = int if part == "length" else (args[0] if args else Any)
        elif origin is dict or tp is dict:
            tp = args[1] if len(args) == 2 else Any
        elif isinstance(tp, type) and issubclass(tp, str) and part == "length":
            tp = int
        else:
            raise BadInput(f"{text!r}: {_name(where)} is a single value, it has no {part!r}")
        where.append(part)


def _name(where: list[str]) -> str:
    return ".".join(where) if where else "the state"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


@cache
def _members(cls: type) -> dict[str, Any]:
    """A struct's fields and derived properties, with their types."""
    hints = typing.get_type_hints(cls)
    members = {f.name: hints.get(f.name, Any) for f in msgspec.structs.fields(cls)}
    for name in dir(cls):
        attribute = getattr(cls, name, None)
        if isinstance(attribute, property) and not name.startswith("_"):
            members[name] = typing.get_type_hints(attribute.fget).get("return", Any)
    return members


# -- parsing -------------------------------------------------------------------------------


# Parentheses, lists and `not`s inside each other, and digits in a number: more than any
# condition a person writes, far less than what would exhaust the parser's recursion.
MAX_NESTING = 64
MAX_DIGITS = 64


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize(text)
        self.at = 0
        self.depth = 0

    def _deeper(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self._fail(f"nested more than {MAX_NESTING} levels deep", position)

    def _tokenize(self, text: str) -> list[tuple[str, str, int]]:
        tokens, position = [], 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if not match:
                start = len(text) - len(text[position:].lstrip())
                if text[start] in "\"'":
                    self._fail("text without its closing quote", start)
                self._fail(f"unexpected {text[start]!r}", start)
            assert match.lastgroup is not None
            kind, value = match.lastgroup, match.group(match.lastgroup)
            if kind == "path" and value in _KEYWORDS:
                kind = value
            tokens.append((kind, value, match.start(match.lastgroup)))
            position = match.end()
        tokens.append(("end", "", len(text)))
        return tokens

    def _fail(self, message: str, position: int) -> typing.NoReturn:
        raise BadInput(f"bad condition at column {position + 1}: {message} in {self.text!r}")

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.at]

    def _take(self, kind: str) -> tuple[str, str, int] | None:
        """Consume the next token if it is of this kind (or is this punctuation)."""
        token = self.tokens[self.at]
        if token[0] == kind or (token[0] == "punct" and token[1] == kind):
            self.at += 1
            return token
        return None

    def _expect(self, what: str) -> None:
        if not self._take(what):
            _, value, position = self._peek()
            self._fail(f"expected {what!r}, found {value or 'the end'!r}", position)

    def parse(self) -> Node:
        if self._peek()[0] == "end":
            self._fail("empty condition", 0)
        node = self._condition()
        kind, value, position = self._peek()
        if kind != "end":
            self._fail(f"unexpected {value!r}", position)
        return node

    def _condition(self) -> Node:
        operands = [self._conjunct()]
        while self._take("or"):
            operands.append(self._conjunct())
        return operands[0] if len(operands) == 1 else Logic("or", tuple(operands))

    def _conjunct(self) -> Node:
        operands = [self._negation()]
        while self._take("and"):
            operands.append(self._negation())
        return operands[0] if len(operands) == 1 else Logic("and", tuple(operands))

    def _negation(self) -> Node:
        if self._peek()[0] == "not" and self.tokens[self.at + 1][0] != "in":
            self._deeper(self._peek()[2])
            self.at += 1
            node = Not(self._negation())
            self.depth -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._operand()
        if op := self._take("op"):
            return Compare(op[1], left, self._operand())
        if self._take("in"):
            return Compare("in", left, self._operand())
        if self._peek()[0] == "not" and self.tokens[self.at + 1][0] == "in":
            self.at += 2
            return Compare("not in", left, self._operand())
        return left

    def _operand(self) -> Node:
        kind, value, position = self._peek()
        self.at += 1
        if kind == "string":
            return Literal(re.sub(r"\\(.)", r"\1", value[1:-1]))
        if kind == "number":
            if len(value) > MAX_DIGITS:
                self._fail(f"a number longer than {MAX_DIGITS} characters", position)
            return Literal(float(value) if re.search(r"[.eE]", value) else int(value))
        if kind in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[kind])
        if kind == "path":
            return Path(tuple(value.split(".")))
        if value == "(":
            self._deeper(position)
            node = self._condition()
            self._expect(")")
            self.depth -= 1
            return node
        if value == "[":
            self._deeper(position)
            items: list[Node] = []
            if not self._take("]"):
                items.append(self._operand())
                while self._take(","):
                    items.append(self._operand())
                self._expect("]")
            self.depth -= 1
            return ListOf(tuple(items))
        self._fail(f"expected a value or a path, found {value or 'the end'!r}", position)
