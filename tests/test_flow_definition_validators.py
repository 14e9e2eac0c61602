"""Specifications of the built-in answer validators."""

import contextlib
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxledger.domain.errors import DefinitionError, ValidationFailed
from voxledger.domain.validators import (
    build_validator,
    choice,
    custom,
    date,
    integer,
    regex,
    text,
    yes_no,
)


def refusal(validator, raw: str) -> str:
    with pytest.raises(ValidationFailed) as refused:
        validator(raw)
    return str(refused.value)


def test_text_strips_surrounding_spaces():
    assert text()("  Anna Petrova \n") == "Anna Petrova"


def test_text_refuses_a_blank_answer():
    assert refusal(text(), "   ") == "Please send a non-empty answer."


def test_text_refuses_an_answer_longer_than_max_length():
    assert text(max_length=5)("12345") == "12345"
    assert refusal(text(max_length=5), "123456") == "Please keep it to 5 characters or fewer."


def test_integer_accepts_surrounding_spaces_and_a_sign():
    assert integer()(" 42 ") == 42
    assert integer()("-7") == -7


@pytest.mark.parametrize("raw", ["12a", "1.5", "", " ", "1_000", "١٢", "1e3", "0x10"])
def test_integer_refuses_anything_but_a_whole_number(raw):
    assert refusal(integer(), raw) == "Please send a whole number."


def test_integer_refuses_a_number_out_of_range_naming_the_range():
    between = integer(min=1, max=9999)
    assert between("9999") == 9999
    assert refusal(between, "0") == "Please send a whole number between 1 and 9999."
    assert refusal(between, "10000") == "Please send a whole number between 1 and 9999."
    assert refusal(integer(min=1), "0") == "Please send a whole number of at least 1."
    assert refusal(integer(max=9), "10") == "Please send a whole number no greater than 9."


def test_an_integer_validator_with_min_above_max_is_a_definition_error():
    with pytest.raises(DefinitionError, match="min 5 is greater than max 1"):
        integer(min=5, max=1)


@pytest.mark.parametrize(
    "raw",
    [
        "2026-11-21",
        "21.11.2026",
        "21/11/2026",
        "21-11-2026",
        "21.11.26",
        "21 Nov 2026",
        "Nov 21 2026",
        "21 November 2026",
        "November 21, 2026",
        " 21 nov. 2026 ",
        "2026/11/21",
    ],
)
def test_date_normalises_each_common_form_to_iso(raw):
    assert date()(raw) == "2026-11-21"


def test_date_refuses_an_impossible_date_with_a_reason():
    assert refusal(date(), "31.02.2026") == "There is no such date as 31.02.2026."
    assert refusal(date(), "2026-13-01") == "There is no such date as 2026-13-01."


@pytest.mark.parametrize("raw", ["today", "tomorrow", "21 Foo 2026", "21.11", "", "2026"])
def test_date_refuses_text_that_is_not_a_date(raw):
    assert refusal(date(), raw) == "Please send a date like 21.11.2026."


def test_choice_returns_the_option_for_its_name_or_a_synonym_in_any_case_and_spacing():
    building = choice({"office": ["business centre", "bc"], "school": []})
    assert building("  Business   CENTRE ") == "office"
    assert building("BC") == "office"
    assert building("School") == "school"


def test_choice_refuses_an_unknown_option_listing_the_options():
    assert refusal(choice(["north", "south"]), "east") == "Please choose one of: north, south."


def test_a_choice_where_one_word_names_two_options_is_a_definition_error():
    with pytest.raises(DefinitionError, match="'Home' names two options"):
        choice({"residential": ["home"], "office": ["Home"]})


def test_regex_requires_a_full_match_and_refuses_with_its_message():
    inn = regex(r"\d{10}|\d{12}", "Please send a 10 or 12 digit INN.")
    assert inn(" 7707083893 ") == "7707083893"
    assert refusal(inn, "77070838931") == "Please send a 10 or 12 digit INN."


def test_a_regex_validator_with_a_bad_pattern_is_a_definition_error():
    with pytest.raises(DefinitionError, match="bad pattern"):
        regex("(unclosed")


@pytest.mark.parametrize("raw", ["yes", "Y", " да ", "OK", "true", "1"])
def test_yes_no_reads_a_yes_as_true(raw):
    assert yes_no()(raw) is True


@pytest.mark.parametrize("raw", ["no", "N", "Нет", "false", "0"])
def test_yes_no_reads_a_no_as_false(raw):
    assert yes_no()(raw) is False


def test_yes_no_refuses_anything_else():
    assert refusal(yes_no(), "maybe") == "Please answer yes or no."


@pytest.mark.parametrize(
    "validator",
    [
        text(),
        text(max_length=3),
        integer(min=1, max=9),
        date(),
        choice({"a": ["b"]}),
        regex("x+", "Only x."),
        yes_no(),
    ],
)
def test_build_validator_rebuilds_each_built_in_from_its_spec(validator):
    assert build_validator(validator.spec) == validator


def test_build_validator_uses_a_custom_function_registered_by_name():
    def upper(raw: str) -> str:
        return raw.upper()

    built = build_validator({"type": "custom", "name": "upper"}, {"upper": upper})
    assert built("abc") == "ABC"
    assert built == custom("upper", upper)


def test_build_validator_with_an_unknown_type_fails_naming_the_type():
    with pytest.raises(DefinitionError, match="unknown validator type 'colour'"):
        build_validator({"type": "colour"})


def test_build_validator_with_an_unknown_parameter_fails_naming_the_type():
    with pytest.raises(DefinitionError, match=r"integer validator: .*'minimum'"):
        build_validator({"type": "integer", "minimum": 1})


def test_build_validator_with_an_unregistered_custom_name_fails_naming_it():
    with pytest.raises(DefinitionError, match="no custom validator named 'inn'"):
        build_validator({"type": "custom", "name": "inn"}, {})


MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DATE_FORMS = [
    lambda d: f"{d.year:04}-{d.month:02}-{d.day:02}",
    lambda d: f"{d.day:02}.{d.month:02}.{d.year:04}",
    lambda d: f"{d.day}/{d.month}/{d.year:04}",
    lambda d: f"{d.day:02}-{d.month:02}-{d.year:04}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year:04}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year:04}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year:04}",
]


@given(st.dates(min_value=dt.date(1000, 1, 1)), st.sampled_from(DATE_FORMS))
def test_date_round_trips_any_valid_date_in_each_form_to_iso(day, form):
    assert date()(form(day)) == day.isoformat()


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)))
def test_date_reads_a_two_digit_year_as_this_century(day):
    assert date()(f"{day.day:02}.{day.month:02}.{day.year % 100:02}") == day.isoformat()


@given(st.text())
def test_date_refuses_arbitrary_text_only_with_validation_failed(raw):
    with contextlib.suppress(ValidationFailed):
        assert isinstance(date()(raw), str)


@given(st.text())
def test_integer_refuses_arbitrary_text_only_with_validation_failed(raw):
    with contextlib.suppress(ValidationFailed):
        assert isinstance(integer(min=1, max=9999)(raw), int)


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_integer_reads_back_any_whole_number(number):
    assert integer()(f" {number} ") == number
