"""Splitting a long reply into Telegram messages: UTF-16 measure, boundaries, emoji."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxledger.adapters.chat.telegram_text import MAX_MESSAGE_UNITS, split_text, utf16_units

ASTRAL = "😀"  # U+1F600: one character, two UTF-16 units
FAMILY = "👨\u200d👩\u200d👧"  # one emoji made of five code points, eight units
FLAGS = "🇫🇷🇩🇪🇮🇹"  # three flags, each a pair of regional indicators


def no_space(text: str) -> str:
    return re.sub(r"\s", "", text)


def test_utf16_units_count_astral_characters_twice() -> None:
    assert utf16_units("abc") == 3
    assert utf16_units(ASTRAL) == 2
    assert utf16_units(FAMILY) == 8
    assert utf16_units("é") == 1


def test_a_text_that_fits_is_one_message_trimmed_as_telegram_trims_it() -> None:
    assert split_text("  hello\n") == ["hello"]
    assert split_text("x" * MAX_MESSAGE_UNITS) == ["x" * MAX_MESSAGE_UNITS]
    assert split_text("") == split_text(" \n\t ") == []


def test_astral_characters_are_counted_as_two_units_so_2049_emoji_need_two_messages() -> None:
    assert split_text(ASTRAL * 2048) == [ASTRAL * 2048]
    parts = split_text(ASTRAL * 2049)
    assert parts == [ASTRAL * 2048, ASTRAL]


def test_a_paragraph_boundary_is_preferred_when_it_keeps_the_message_at_least_half_full() -> None:
    first = "word " * 500  # 2500 characters
    second = "more " * 500
    parts = split_text(f"{first}\n\n{second}")
    assert parts == [first.strip(), second.strip()]


def test_a_line_boundary_is_used_when_no_paragraph_break_fits() -> None:
    lines = [f"line {n:04d} " + "x" * 90 for n in range(60)]
    parts = split_text("\n".join(lines))
    assert len(parts) == 2
    assert all(utf16_units(p) <= MAX_MESSAGE_UNITS for p in parts)
    assert parts[0].split("\n")[-1] == lines[len(parts[0].split("\n")) - 1]
    assert parts[1].startswith("line ")


def test_a_word_boundary_is_used_inside_one_long_line() -> None:
    words = " ".join(f"w{n}" for n in range(3000))
    parts = split_text(words, limit=100)
    assert all(utf16_units(p) <= 100 for p in parts)
    assert " ".join(parts) == words


def test_a_text_without_boundaries_is_cut_between_characters_never_inside_a_surrogate_pair() -> (
    None
):
    # "a" and one emoji make 3 units: a second emoji would need 5, so the cut comes at 3.
    parts = split_text("a" + ASTRAL * 10, limit=4)
    assert parts == ["a" + ASTRAL, *[ASTRAL * 2] * 4, ASTRAL]
    for part in parts:
        encoded = part.encode("utf-16-le")
        assert encoded.decode("utf-16-le") == part  # no half of a surrogate pair


def test_emoji_sequences_and_flags_stay_whole() -> None:
    assert split_text(FAMILY * 3, limit=9) == [FAMILY] * 3
    assert split_text(FLAGS, limit=6) == ["🇫🇷", "🇩🇪", "🇮🇹"]
    assert split_text("e\u0301" * 4, limit=3) == ["e\u0301"] * 4


def test_a_limit_too_small_for_one_astral_character_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("abc", limit=1)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.characters(blacklist_categories=("Cs",)),
            st.sampled_from([" ", "\n", "\n\n", ASTRAL, FAMILY, "🇫🇷", "\u200d", "\u0301"]),
        ),
        max_size=300,
    ).map("".join),
    st.integers(min_value=2, max_value=60),
)
def test_every_message_fits_and_together_they_keep_every_visible_character(
    text: str, limit: int
) -> None:
    parts = split_text(text, limit=limit)
    assert all(0 < utf16_units(part) <= limit for part in parts)
    assert all(part == part.strip() for part in parts)
    assert no_space("".join(parts)) == no_space(text)
