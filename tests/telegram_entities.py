"""Telegram's text formatting (parse_mode HTML, MarkdownV2, Markdown) for the local Bot API
server: the plain text Telegram keeps, its entities (offsets in UTF-16 units), and the
"can't parse entities" errors it gives, worded as the Bot API words them.
"""

from __future__ import annotations

import re
from typing import Any

HTML_KINDS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")


class EntityError(ValueError):
    """The text's markup does not parse; the message is Telegram's, after "can't parse
    entities: "."""


def units(text: str) -> int:
    """UTF-16 code units, Telegram's measure of offsets and lengths."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def parse(text: str, parse_mode: str) -> tuple[str, list[dict[str, Any]]]:
    """The plain text and its entities for ``parse_mode`` (case-insensitive)."""
    mode = parse_mode.lower()
    if mode == "html":
        return _Html(text).parse()
    if mode == "markdownv2":
        return _Markdown(text, version=2).parse()
    if mode == "markdown":
        return _Markdown(text, version=1).parse()
    raise LookupError(parse_mode)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.length = 0
        self.entities: list[dict[str, Any]] = []

    def emit(self, chunk: str) -> None:
        self.out.append(chunk)
        self.length += units(chunk)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.length > start:
            self.entities.append(
                {"type": kind, "offset": start, "length": self.length - start, **extra}
            )

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode("utf-8"))

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.out), self.entities


class _Html(_Builder):
    _TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^<>]*)>")
    _ATTR = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        text, index = self.source, 0
        open_tags: list[tuple[str, int, dict[str, str]]] = []
        while index < len(text):
            ch = text[index]
            if ch == "<":
                match = self._TAG.match(text, index)
                if match is None:
                    raise EntityError(
                        f"Unexpected end of name token at byte offset {self.byte_offset(index)}"
                    )
                closing, name, rest = match.group(1), match.group(2).lower(), match.group(3)
                if closing:
                    self._close(open_tags, name, index)
                else:
                    if name not in HTML_KINDS:
                        raise EntityError(
                            f'Unsupported start tag "{name}" at byte offset '
                            f"{self.byte_offset(index)}"
                        )
                    attrs = {
                        m.group(1).lower(): next(g for g in m.groups()[1:] if g is not None)
                        for m in self._ATTR.finditer(rest)
                    }
                    if name == "span" and attrs.get("class") != "tg-spoiler":
                        raise EntityError(
                            'Tag "span" must have class "tg-spoiler" at byte offset '
                            f"{self.byte_offset(index)}"
                        )
                    open_tags.append((name, self.length, attrs))
                index = match.end()
            elif ch == "&":
                index = self._entity(index)
            else:
                self.emit(ch)
                index += 1
        if open_tags:
            raise EntityError(
                f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"'
            )
        return self.result()

    def _close(
        self, open_tags: list[tuple[str, int, dict[str, str]]], name: str, index: int
    ) -> None:
        if not open_tags:
            raise EntityError(f"Unexpected end tag at byte offset {self.byte_offset(index)}")
        tag, start, attrs = open_tags.pop()
        if tag != name:
            raise EntityError(
                f'Unmatched end tag at byte offset {self.byte_offset(index)}, expected "</{tag}>", '
                f'found "</{name}>"'
            )
        kind = HTML_KINDS[tag]
        extra: dict[str, Any] = {}
        if kind == "text_link":
            extra["url"] = attrs.get("href", "")
            if not extra["url"]:
                return  # Telegram keeps the text and drops a link without an address.
        if kind == "blockquote" and "expandable" in attrs:
            kind = "expandable_blockquote"
        self.entity(kind, start, **extra)

    def _entity(self, index: int) -> int:
        match = re.match(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);", self.source[index:])
        if match is None:
            self.emit("&")
            return index + 1
        name = match.group(1)
        if name.startswith("#x"):
            self.emit(chr(int(name[2:], 16)))
        elif name.startswith("#"):
            self.emit(chr(int(name[1:])))
        elif name in NAMED_ENTITIES:
            self.emit(NAMED_ENTITIES[name])
        else:
            self.emit(match.group(0))
        return index + match.end()


class _Markdown(_Builder):
    _NAMES = {
        "*": "Bold",
        "_": "Italic",
        "__": "Underline",
        "~": "Strikethrough",
        "||": "Spoiler",
        "[": "TextUrl",
    }
    _KINDS = {
        "*": "bold",
        "_": "italic",
        "__": "underline",
        "~": "strikethrough",
        "||": "spoiler",
    }

    def __init__(self, source: str, version: int) -> None:
        super().__init__(source)
        self.version = version

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        text, index = self.source, 0
        open_marks: list[tuple[str, int, int]] = []  # mark, output start, source index
        while index < len(text):
            ch = text[index]
            if ch == "\\" and index + 1 < len(text) and self._escapable(text[index + 1]):
                self.emit(text[index + 1])
                index += 2
            elif ch == "`":
                index = self._code(index)
            elif ch == "[":
                open_marks.append(("[", self.length, index))
                index += 1
            elif ch == "]" and open_marks and open_marks[-1][0] == "[":
                index = self._link(open_marks.pop(), index)
            elif self.version == 2 and ch == ">" and (index == 0 or text[index - 1] == "\n"):
                index = self._quote(index)
            elif mark := self._mark_at(index):
                if open_marks and open_marks[-1][0] == mark:
                    _, start, _ = open_marks.pop()
                    self.entity(self._KINDS[mark], start)
                else:
                    open_marks.append((mark, self.length, index))
                index += len(mark)
            elif self.version == 2 and ch in MARKDOWN_V2_RESERVED:
                raise EntityError(
                    f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
                )
            else:
                self.emit(ch)
                index += 1
        if open_marks:
            mark, _, at = open_marks[-1]
            if self.version == 1:
                raise EntityError(
                    f"Can't find end of the entity starting at byte offset {self.byte_offset(at)}"
                )
            raise EntityError(
                f"Can't find end of {self._NAMES[mark]} entity at byte offset "
                f"{self.byte_offset(at)}"
            )
        return self.result()

    def _escapable(self, ch: str) -> bool:
        if self.version == 2:
            return 0 < ord(ch) < 127
        return ch in "_*`["

    def _mark_at(self, index: int) -> str | None:
        text = self.source
        if self.version == 1:
            return text[index] if text[index] in "*_" else None
        for mark in ("__", "||", "*", "_", "~"):
            if text.startswith(mark, index):
                return mark
        return None

    def _code(self, index: int) -> int:
        text = self.source
        fence = "```" if text.startswith("```", index) else "`"
        end = index + len(fence)
        while True:
            end = text.find(fence, end)
            if end == -1:
                kind = "Pre" if fence == "```" else "Code"
                where = self.byte_offset(index)
                if self.version == 1:
                    raise EntityError(
                        f"Can't find end of the entity starting at byte offset {where}"
                    )
                raise EntityError(f"Can't find end of {kind} entity at byte offset {where}")
            if self.version == 2 and text[end - 1] == "\\" and not text.endswith("\\\\", 0, end):
                end += 1
                continue
            break
        body = text[index + len(fence) : end]
        if self.version == 2:
            body = re.sub(r"\\([`\\])", r"\1", body)
        start = self.length
        if fence == "```":
            language, newline, rest = body.partition("\n")
            if newline and language and not any(c.isspace() for c in language):
                body = rest
                self.emit(body)
                self.entity("pre", start, language=language)
                return end + len(fence)
            self.emit(body)
            self.entity("pre", start)
        else:
            self.emit(body)
            self.entity("code", start)
        return end + len(fence)

    def _link(self, opened: tuple[str, int, int], index: int) -> int:
        text = self.source
        _, start, _ = opened
        if not text.startswith("(", index + 1):
            if self.version == 2:
                raise EntityError(
                    "Character ']' is reserved and must be escaped with the preceding '\\'"
                )
            self.emit("]")
            return index + 1
        close = text.find(")", index + 2)
        while close != -1 and self.version == 2 and text[close - 1] == "\\":
            close = text.find(")", close + 1)
        if close == -1:
            raise EntityError(
                f"Can't find end of a URL at byte offset {self.byte_offset(index + 1)}"
            )
        url = text[index + 2 : close].replace("\\)", ")").replace("\\\\", "\\")
        self.entity("text_link", start, url=url)
        return close + 1

    def _quote(self, index: int) -> int:
        text = self.source
        end = text.find("\n", index)
        end = len(text) if end == -1 else end
        start = self.length
        inner = _Markdown(text[index + 1 : end], version=2).parse()
        for entity in inner[1]:
            self.entities.append({**entity, "offset": entity["offset"] + start})
        self.emit(inner[0])
        self.entity("blockquote", start)
        return end
