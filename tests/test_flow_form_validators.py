"""Specifications of the validators forms need: decimal numbers, e-mail, phone, time,
date-time with a time zone, several choices; and what a validator can give."""

import contextlib
import datetime as dt
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxledger.domain.errors import DefinitionError, ValidationFailed
from voxledger.domain.validators import (
    build_validator,
    choice,
    date,
    datetime,
    decimal,
    email,
    integer,
    multiple_choice,
    phone,
    regex,
    text,
    time,
    yes_no,
)


def refusal(validator, raw: str) -> str:
    with pytest.raises(ValidationFailed) as refused:
        validator(raw)
    return str(refused.value)


# --- decimal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("12.5", "12.50"),
        ("12,5", "12.50"),
        (" 7 ", "7.00"),
        ("-0.5", "-0.50"),
        (".5", "0.50"),
        ("1 250.75", "1250.75"),
        ("+3", "3.00"),
        ("0", "0.00"),
    ],
)
def test_decimal_with_places_gives_exact_text_with_that_many_decimals(raw, value):
    assert decimal(places=2)(raw) == value


def test_decimal_without_places_gives_the_number_without_trailing_zeros():
    assert decimal()("12.50") == "12.5"
    assert decimal()("100") == "100"
    assert decimal()("-0.000") == "0"
    assert decimal()("0.10") == "0.1"


def test_decimal_refuses_more_decimals_than_places_instead_of_rounding():
    assert refusal(decimal(places=2), "12.345") == (
        "Please send a number with at most 2 decimal places."
    )
    assert refusal(decimal(places=0), "1.5") == "Please send a number with no decimals."


@pytest.mark.parametrize("raw", ["abc", "1e3", "NaN", "inf", "1.2.3", "", "12 a", "0x10", "1_000"])
def test_decimal_refuses_anything_but_a_plain_number(raw):
    assert refusal(decimal(), raw) == "Please send a number."


def test_decimal_refuses_a_number_out_of_range_naming_the_range():
    between = decimal(min="0.5", max=100, places=1)
    assert between("0.5") == "0.5" and between("100") == "100.0"
    assert refusal(between, "0.4") == (
        "Please send a number between 0.5 and 100 with at most 1 decimal place."
    )
    assert refusal(decimal(min=0), "-1") == "Please send a number of at least 0."
    assert refusal(decimal(max=0.1), "0.2") == "Please send a number no greater than 0.1."


def test_a_decimal_bound_given_as_a_float_means_the_number_as_written():
    assert decimal(max=0.1)("0.1") == "0.1"  # not 0.1000000000000000055...


def test_a_decimal_validator_with_min_above_max_or_bad_places_is_a_definition_error():
    with pytest.raises(DefinitionError, match="min 2 is greater than max 1"):
        decimal(min=2, max=1)
    with pytest.raises(DefinitionError, match="places -1"):
        decimal(places=-1)
    with pytest.raises(DefinitionError, match="'lots' is not a number"):
        decimal(max="lots")


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**12), max_value=10**12
    )
)
def test_a_decimal_answer_survives_the_event_log_exactly(number):
    value = decimal(places=2)(str(number))
    assert isinstance(value, str)
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode({"value": value}))["value"]
    assert Decimal(stored) == number and stored == value


# --- e-mail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("anna@example.com", "anna@example.com"),
        (" Anna.P+tag@Example.COM ", "Anna.P+tag@example.com"),
        ("mailto:ivan@mail.ru", "ivan@mail.ru"),
        ("a@b.co.uk", "a@b.co.uk"),
        ("user@почта.рф", "user@почта.рф"),
    ],
)
def test_email_accepts_an_address_and_lower_cases_its_domain(raw, value):
    assert email()(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        "anna",
        "anna@",
        "@example.com",
        "anna@example",
        "anna@@example.com",
        "an na@example.com",
        ".anna@example.com",
        "anna.@example.com",
        "an..na@example.com",
        "anna@-example.com",
        "anna@example.123",
        "anna@exa_mple.com",
        "<anna@example.com>",
    ],
)
def test_email_refuses_what_is_not_an_address(raw):
    assert refusal(email(), raw) == "Please send an e-mail address like name@example.com."


# --- phone ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 (20) 7946-0958", "+442079460958"),
        ("+1 212.555.1234", "+12125551234"),
        ("+7 999 123-45-67", "+79991234567"),
    ],
)
def test_phone_normalises_an_international_number_to_e164(raw, value):
    assert phone()(raw) == value


def test_phone_without_a_default_prefix_refuses_a_national_number():
    assert refusal(phone(), "020 7946 0958") == (
        "Please send a phone number with its country code, like +44 20 7946 0958."
    )


@pytest.mark.parametrize(
    ("prefix", "raw", "value"),
    [
        ("+44", "07911 123456", "+447911123456"),
        ("+44", "7911 123456", "+447911123456"),
        ("+7", "8 999 123-45-67", "+79991234567"),
        ("+7", "999 123 45 67", "+79991234567"),
        ("+1", "1 (212) 555-1234", "+12125551234"),
        ("+1", "212 555 1234", "+12125551234"),
        ("+39", "06 1234 5678", "+390612345678"),
        ("+44", "+1 212 555 1234", "+12125551234"),
    ],
)
def test_phone_with_a_default_prefix_reads_a_national_number_in_that_country(prefix, raw, value):
    assert phone(default_prefix=prefix)(raw) == value


def test_phone_trunk_prefix_can_be_given():
    assert phone(default_prefix="+36", trunk_prefix="06")("06 30 123 4567") == "+36301234567"


@pytest.mark.parametrize(
    "raw",
    [
        "call me",
        "+44",
        "+0 20 7946 0958",
        "123",
        "+1234567890123456",
        "+44 20 7946 0958 ext 5",
        "44+20",
    ],
)
def test_phone_refuses_what_is_not_a_phone_number(raw):
    refusal(phone(default_prefix="+44"), raw)


def test_a_phone_validator_with_a_bad_default_prefix_is_a_definition_error():
    with pytest.raises(DefinitionError, match="default_prefix '44' is not a country code"):
        phone(default_prefix="44")


# --- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("14:30", "14:30"),
        ("9:05", "09:05"),
        ("9.05", "09:05"),
        ("14:30:00", "14:30"),
        ("9pm", "21:00"),
        ("9 PM", "21:00"),
        ("12am", "00:00"),
        ("12 p.m.", "12:00"),
        ("2:30 p.m.", "14:30"),
        ("00:00", "00:00"),
        ("23:59", "23:59"),
    ],
)
def test_time_normalises_to_hours_and_minutes(raw, value):
    assert time()(raw) == value


def test_time_with_seconds_keeps_them():
    assert time(seconds=True)("9:30") == "09:30:00"
    assert time(seconds=True)("14:30:15") == "14:30:15"


@pytest.mark.parametrize(
    "raw", ["24:00", "12:60", "13pm", "0am", "9", "noon", "14:30:15", "1430", "14:30:61", ""]
)
def test_time_refuses_what_is_not_a_time_of_day(raw):
    assert refusal(time(), raw) == "Please send a time like 14:30."


@given(st.times())
def test_time_reads_back_any_time_it_gives(moment):
    value = time(seconds=True)(moment.strftime("%H:%M:%S"))
    assert value == moment.strftime("%H:%M:%S") and time(seconds=True)(value) == value


# --- datetime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("21.11.2026 14:30 +01:00", "2026-11-21T14:30:00+01:00"),
        ("2026-11-21T14:30:00Z", "2026-11-21T14:30:00+00:00"),
        ("2026-11-21T14:30:00+05:30", "2026-11-21T14:30:00+05:30"),
        ("2026-11-21 14:30 -0300", "2026-11-21T14:30:00-03:00"),
        ("21 Nov 2026 9pm UTC", "2026-11-21T21:00:00+00:00"),
        ("Nov 21, 2026 at 2:30 pm Europe/Berlin", "2026-11-21T14:30:00+01:00"),
        ("2026-07-01 14:30 Europe/Berlin", "2026-07-01T14:30:00+02:00"),
        ("21.11.2026, 09:15 GMT+3", "2026-11-21T09:15:00+03:00"),
    ],
)
def test_datetime_normalises_to_iso_8601_with_the_offset(raw, value):
    assert datetime()(raw) == value


def test_datetime_without_a_zone_is_refused_unless_the_step_gives_one():
    assert refusal(datetime(), "21.11.2026 14:30") == (
        "Please send a date and time like 21.11.2026 14:30 +01:00, with the time zone."
    )
    assert datetime(timezone="Europe/Moscow")("21.11.2026 14:30") == "2026-11-21T14:30:00+03:00"
    assert datetime(timezone="+05:30")("21.11.2026 14:30") == "2026-11-21T14:30:00+05:30"


def test_a_zone_in_the_answer_wins_over_the_steps_zone():
    assert datetime(timezone="Europe/Moscow")("21.11.2026 14:30 Z") == "2026-11-21T14:30:00+00:00"


def test_datetime_refuses_a_local_time_the_clocks_skipped():
    assert refusal(datetime(), "2026-03-29 02:30 Europe/Berlin") == (
        "There is no such time as 2026-03-29 02:30 in Europe/Berlin: the clocks went forward."
    )


def test_datetime_refuses_an_unknown_zone_and_an_impossible_date():
    assert refusal(datetime(), "2026-11-21 14:30 Mars/Olympus").startswith(
        "There is no time zone Mars/Olympus."
    )
    assert refusal(datetime(), "31.02.2026 14:30 Z") == "There is no such date as 31.02.2026."


def test_a_datetime_validator_with_an_unknown_zone_is_a_definition_error():
    with pytest.raises(DefinitionError, match="unknown time zone 'Mars/Olympus'"):
        datetime(timezone="Mars/Olympus")


@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_datetime_reads_back_any_value_it_gives(moment, offset_minutes):
    moment = moment.replace(microsecond=0, tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
    value = datetime()(moment.isoformat())
    assert dt.datetime.fromisoformat(value) == moment and datetime()(value) == value


@given(st.text(max_size=60))
def test_datetime_refuses_arbitrary_text_only_with_validation_failed(raw):
    with contextlib.suppress(ValidationFailed):
        assert dt.datetime.fromisoformat(datetime(timezone="UTC")(raw)).tzinfo is not None


# --- multiple choice ------------------------------------------------------------------------

DISHES = {
    "soup": ["potage"],
    "fish": [],
    "steak": ["beef"],
    "cake": ["dessert"],
    "salt and pepper": ["s&p"],
    "salt": [],
}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("soup", ["soup"]),
        ("Soup, FISH and cake", ["soup", "fish", "cake"]),
        ("cake; soup & beef", ["soup", "steak", "cake"]),
        ("dessert, cake", ["cake"]),
        ("soup, fish, and cake", ["soup", "fish", "cake"]),
        ("salt and pepper", ["salt and pepper"]),
        ("salt, fish", ["fish", "salt"]),
        ("s&p and soup", ["soup", "salt and pepper"]),
    ],
)
def test_multiple_choice_gives_the_chosen_options_once_each_in_the_options_order(raw, value):
    assert multiple_choice(DISHES)(raw) == value


@pytest.mark.parametrize("raw", ["", "and", ", ,", "soup, pizza", "soupfish", "soup fish"])
def test_multiple_choice_refuses_an_unknown_option_listing_the_options(raw):
    assert refusal(multiple_choice(["soup", "fish"]), raw) == (
        "Please choose one or more of: soup, fish (separated by commas)."
    )


def test_multiple_choice_counts_between_min_and_max():
    two = multiple_choice(["a", "b", "c"], min=2, max=2)
    assert two("a and c") == ["a", "c"]
    assert refusal(two, "a") == "Please choose exactly 2 of: a, b, c (separated by commas)."
    assert refusal(two, "a, b, c") == refusal(two, "a")
    assert refusal(multiple_choice(["a", "b", "c"], max=2), "a, b, c") == (
        "Please choose up to 2 of: a, b, c (separated by commas)."
    )
    assert refusal(multiple_choice(["a", "b", "c"], min=2), "b") == (
        "Please choose at least 2 of: a, b, c (separated by commas)."
    )


@pytest.mark.parametrize(
    ("options", "params", "message"),
    [
        ([], {}, "no options"),
        (["a", "A"], {}, "'A' names two options"),
        (["and"], {}, "'and' starts or ends with a separator"),
        (["a"], {"min": 0}, "min 0 is less than 1"),
        (["a"], {"min": 2}, "min 2 is more than the 1 options"),
        (["a", "b"], {"min": 2, "max": 1}, "max 1 is less than min 2"),
    ],
)
def test_a_malformed_multiple_choice_validator_is_a_definition_error(options, params, message):
    with pytest.raises(DefinitionError, match=message):
        multiple_choice(options, **params)


@given(st.sets(st.sampled_from(list(DISHES)), min_size=1), st.sampled_from([", ", " and ", "; "]))
def test_multiple_choice_reads_back_any_set_of_options(chosen, separator):
    value = multiple_choice(DISHES)(separator.join(chosen))
    assert set(value) == chosen and multiple_choice(DISHES)(", ".join(value)) == value


# --- what a validator can give (for branches) -----------------------------------------------


@pytest.mark.parametrize(
    ("validator", "value", "gives"),
    [
        (choice(["north", "south"]), "north", True),
        (choice(["north", "south"]), "North", False),
        (choice(["north", "south"]), "east", False),
        (integer(min=1, max=5), 3, True),
        (integer(min=1, max=5), 9, False),
        (integer(), True, False),
        (integer(), "3", False),
        (yes_no(), True, True),
        (yes_no(), "yes", False),
        (yes_no(), 1, False),
        (text(max_length=3), "abc", True),
        (text(max_length=3), "abcd", False),
        (text(), " a", False),
        (date(), "2026-11-21", True),
        (date(), dt.date(2026, 11, 21), False),
        (decimal(places=2), "12.50", True),
        (decimal(places=2), "12.5", False),
        (decimal(places=2), 12.5, False),
        (time(), "14:30", True),
        (time(), "2pm", False),
        (email(), "a@b.co", True),
        (phone(), "+442079460958", True),
        (phone(), "+44 20", False),
        (multiple_choice(["a", "b"]), ["a", "b"], True),
        (multiple_choice(["a", "b"]), ["b", "a"], False),
        (regex(r"[a-z]+"), "abc", True),
        (regex(r"[a-z]+"), "ABC", False),
    ],
)
def test_a_validator_says_whether_an_answer_can_give_a_value(validator, value, gives):
    assert validator.can_give(value) is gives


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "decimal", "min": 0, "max": "9.99", "places": 2},
        {"type": "email"},
        {"type": "phone", "default_prefix": "+44"},
        {"type": "phone", "default_prefix": "+7", "trunk_prefix": "8"},
        {"type": "time"},
        {"type": "time", "seconds": True},
        {"type": "datetime"},
        {"type": "datetime", "timezone": "Europe/Berlin"},
        {"type": "multiple_choice", "options": {"a": ["x"], "b": []}, "min": 1, "max": 2},
    ],
)
def test_build_validator_rebuilds_each_new_type_from_its_spec(spec):
    built = build_validator(spec)
    assert built.spec == spec and build_validator(built.spec) == built


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "integer", "min": "1"},
            r"integer validator: min: Expected `int \| null`, got `str`",
        ),
        ({"type": "integer", "max": 1.5}, "integer validator: max: Expected"),
        ({"type": "time", "seconds": "yes"}, "time validator: seconds: Expected `bool`"),
        ({"type": "choice", "options": "ab"}, "choice validator: options: Expected"),
        ({"type": "decimal", "places": 1.0}, "decimal validator: places: Expected"),
    ],
)
def test_build_validator_refuses_an_option_of_the_wrong_type_naming_it(spec, message):
    with pytest.raises(DefinitionError, match=message):
        build_validator(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": ["text"]}, "a validator's type is a name such as 'text', not \\['text'\\]"),
        ({}, "a validator's type is a name such as 'text', not None"),
        ({"type": "custom", "name": 3}, "no custom validator named 3 is registered"),
        ({"type": "text", "max_length": 0}, "text validator: max_length 0 is less than 1"),
    ],
)
def test_a_validator_spec_that_names_no_rule_is_a_definition_error(spec, message):
    with pytest.raises(DefinitionError, match=message):
        build_validator(spec)
