"""Requests screened before anything decodes them: a JSON body nested deeper than any
request needs (a decoder recursing through 30,000 arrays fails, or takes the process with
it) and a NUL character in the path or the query string (PostgreSQL text cannot hold one:
voxledger refuses NUL at every edge) are refused with a JSON reason, and the app never sees
them. The depth is counted on the raw bytes as they arrive, outside strings."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
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

    def feed(self, chunk: bytes) -> bool:
        """Count a chunk; False once the nesting went past the limit."""
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


def screened(app: ASGIApp, *, max_body_bytes: int, max_depth: int = MAX_DEPTH) -> ASGIApp:
    """The app behind the screen: refused requests get 400 (too deep) or 422 (NUL) with
    ``{"error": ..., "detail": ...}``; the rest reach it unchanged."""

    async def screen(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        nul = _nul_in(scope)
        if nul is not None:
            await _refuse(send, 422, "invalid request", nul)
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


async def _refuse(send: Send, status: int, error: str, detail: Any) -> None:
    body = msgspec.json.encode({"error": error, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
