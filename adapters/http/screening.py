"""Requests screened before anything decodes them: a JSON body nested deeper than any
request needs (a decoder recursing through 30,000 arrays fails, or takes the process with
it) and a NUL character in the path or the query string (PostgreSQL text cannot hold one:
voxledger refuses NUL at every edge) are refused with a JSON reason, and the app never sees
them. The depth is counted on the raw bytes as they arrive, outside strings.

An OPTIONS request is answered with every method its path has (Litestar's own answer can
miss one). Once a request is let in (its guards passed), `strict_body` decodes a JSON body
strictly into the handler's body type, as its schema says it: Litestar converts bodies
leniently (0 would pass as false, "1" as 1)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
from litestar import Litestar, Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64  # arrays and objects inside each other; a Telegram update needs about 8


class _Depth:
    """A running count of open brackets outside JSON strings, across body chunks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self.deepest = 0
        self.in_string = False
        self.escaped = False
        self.brackets = 0  # opening brackets seen, in strings or not
        self.waiting: list[bytes] = []  # chunks not walked yet

    def feed(self, chunk: bytes) -> bool:
        """Count a chunk; False once the nesting went past the limit. While the body holds
        no more brackets than the limit allows it cannot nest too deep, and the bytes wait
        uncounted (a count of two bytes runs in C; the walk below, in Python, took a tenth
        of the screen's time on every request)."""
        self.brackets += chunk.count(b"[") + chunk.count(b"{")
        if self.brackets <= self.limit:
            self.waiting.append(chunk)
            return True
        waiting, self.waiting = self.waiting, []
        return all(self._walk(part) for part in (*waiting, chunk))

    def _walk(self, chunk: bytes) -> bool:
        depth, in_string, escaped = self.depth, self.in_string, self.escaped
        for byte in chunk:
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:  # backslash
                    escaped = True
                elif byte == 0x22:  # quote
                    in_string = False
            elif byte == 0x22:
                in_string = True
            elif byte in (0x5B, 0x7B):  # [ {
                depth += 1
                if depth > self.limit:
                    self.depth = depth
                    return False
            elif byte in (0x5D, 0x7D):  # ] }
                depth -= 1
        self.depth, self.in_string, self.escaped = depth, in_string, escaped
        return True


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    methods: frozenset[str]


class Routes:
    """The app's paths and their methods."""

    def __init__(self, routes: list[_Route]) -> None:
        self._routes = routes

    @classmethod
    def of(cls, app: Litestar) -> Routes:
        """Read them from the app's own route handlers."""
        found = []
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            literal = re.split(r"\{[^}]*\}", route.path)  # around each path parameter
            pattern = "[^/]+".join(re.escape(part) for part in literal)
            methods = {m for handler in route.route_handlers for m in handler.http_methods}
            found.append(_Route(re.compile(f"^{pattern}$"), frozenset(methods)))
        return cls(found)

    def matching(self, path: str) -> Iterator[_Route]:
        """The routes whose path this is."""
        return (route for route in self._routes if route.pattern.match(path))


def screened(
    app: ASGIApp, *, max_body_bytes: int, routes: Routes | None = None, max_depth: int = MAX_DEPTH
) -> ASGIApp:
    """The app behind the screen: refused requests get 400 (too deep) or 422 (NUL) with
    ``{"error": ..., "detail": ...}``; OPTIONS is answered here; the rest reach the app
    unchanged."""
    table = routes or Routes([])

    async def screen(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        nul = _nul_in(scope)
        if nul is not None:
            await _refuse(send, 422, "invalid request", nul)
            return
        if scope["method"] == "OPTIONS":
            matched = list(table.matching(scope["path"]))
            if matched:
                allowed = sorted({m for route in matched for m in route.methods} | {"OPTIONS"})
                await _answer(send, 204, [(b"allow", ", ".join(allowed).encode())], b"")
                return
        depth = _Depth(max_depth)
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break  # the client left: the app hears it as it would have
            body = message.get("body", b"")
            size += len(body)
            if size > max_body_bytes:
                break  # the app refuses it (413) as it reads on
            if not depth.feed(body):
                detail = f"JSON is nested deeper than {max_depth} levels"
                await _refuse(send, 400, "bad request", detail)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await app(scope, replay, send)

    return screen


def _nul_in(scope: Scope) -> str | None:
    """Where a NUL character is in the path or the query string, if anywhere."""
    if "\x00" in scope["path"]:
        return "path: the NUL character is not allowed"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in unquote_to_bytes(query):
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\0")
                return f"query.{shown}: the NUL character is not allowed"
        return "query: the NUL character is not allowed"
    return None


async def strict_body(request: Request[Any, Any, Any]) -> None:
    """Refuse (400, naming the field) a JSON body that its handler's body type takes only
    when read leniently. Runs before the handler, after its guards."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    body_type = getattr(data, "annotation", None)
    encoding = getattr(getattr(data, "kwarg_definition", None), "media_type", None)
    if encoding not in (None, RequestEncodingType.JSON):
        return
    if not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)):
        return
    try:
        decoded = msgspec.json.decode(await request.body())
    except (msgspec.DecodeError, UnicodeDecodeError):
        return  # not JSON, or not UTF-8: the handler's own decoding names what is wrong
    fault = strict_fault(decoded, body_type)
    if fault is not None:
        raise fault


def strict_fault(decoded: Any, body_type: type) -> ValidationException | None:
    """The refusal (naming the field) a decoded JSON body gets when read strictly into its
    body type, or None. JSON's own reading of numbers: 3.0 is the integer 3 (JSON Schema
    says so too)."""
    try:
        msgspec.convert(_integral(decoded), body_type, strict=True)
    except msgspec.ValidationError as e:
        message, _, where = str(e).partition(" - at `$")
        key = where.rstrip("`").lstrip(".")
        problem = {"key": key, "message": message, "source": "body"}
        return ValidationException(detail=message, extra=[problem])
    return None


def _integral(value: Any) -> Any:
    """A decoded JSON value with its whole-number floats as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


async def _refuse(send: Send, status: int, error: str, detail: Any) -> None:
    body = msgspec.json.encode({"error": error, "detail": detail})
    await _answer(send, status, [(b"content-type", b"application/json")], body)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
