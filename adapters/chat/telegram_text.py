"""Telegram's text measure and the split of a long reply into messages that fit.

Telegram counts a message's length in UTF-16 code units (an emoji outside the Basic
Multilingual Plane counts two) and refuses more than 4096 of them; it also trims each
message's leading and trailing whitespace.
"""

from __future__ import annotations

import re
import unicodedata

MAX_MESSAGE_UNITS = 4096

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_LINE = re.compile(r"\n")
_WORD = re.compile(r"\s")
_ZWJ = "\u200d"
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_TAGS = range(0xE0020, 0xE0080)


def utf16_units(text: str) -> int:
    """The length Telegram measures: UTF-16 code units, two for every astral character."""
    if text.isascii():  # most replies: no character to look at one by one
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE_UNITS) -> list[str]:
    """The text as messages of at most ``limit`` UTF-16 units each, cut at the last paragraph,
    line or word boundary that keeps a message at least half full, else at the last boundary
    at all, else between characters (never inside a surrogate pair or an emoji sequence).

    Whitespace at the cuts and at both ends is dropped, as Telegram drops it; an empty or
    blank text gives no message."""
    if limit < 2:
        raise ValueError("limit must leave room for one astral character (2 units)")
    messages: list[str] = []
    rest = text.strip()
    while rest:
        if utf16_units(rest) <= limit:
            messages.append(rest)
            break
        fits = _prefix_fitting(rest, limit)
        head_end, tail_start = _boundary(rest, fits)
        head = rest[:head_end].rstrip()
        rest = rest[tail_start:].lstrip()
        if head:
            messages.append(head)
    return messages


def _prefix_fitting(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 units."""
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _boundary(text: str, fits: int) -> tuple[int, int]:
    """Where the head ends and the rest starts, for a head of at most ``fits`` characters.

    The boundary may sit right after the window: a separator starting at ``fits`` still
    ends a head that fits."""
    end = min(len(text), fits + 16)
    latest = None
    for pattern in (_PARAGRAPH, _LINE, _WORD):
        found = None
        for match in pattern.finditer(text, 0, end):
            if match.start() > fits:
                break
            found = match
        if found is None or found.start() == 0:
            continue
        if found.start() * 2 >= fits:
            return found.start(), found.end()
        if latest is None or found.start() > latest.start():
            latest = found
    if latest is not None:
        return latest.start(), latest.end()
    cut = _between_graphemes(text, fits)
    return cut, cut


def _between_graphemes(text: str, cut: int) -> int:
    """``cut`` moved back so that it does not split a combining sequence, an emoji joined
    by ZWJ, a modifier or a flag; the original cut when one sequence fills the whole limit."""
    index = cut
    while 0 < index < len(text) and _continues(text, index):
        index -= 1
    return index if index > 0 else cut


def _continues(text: str, index: int) -> bool:
    """Whether the character at ``index`` belongs to the same user-visible character as the
    one before it."""
    ch, before = text[index], text[index - 1]
    code = ord(ch)
    if before == _ZWJ or ch == _ZWJ:
        return True
    if unicodedata.category(ch) in ("Mn", "Me", "Mc") or 0xFE00 <= code <= 0xFE0F:
        return True
    if code in _SKIN_TONES or code in _TAGS:
        return True
    if code in _REGIONAL_INDICATORS:
        run = 0
        while index - run - 1 >= 0 and ord(text[index - run - 1]) in _REGIONAL_INDICATORS:
            run += 1
        return run % 2 == 1
    return False
