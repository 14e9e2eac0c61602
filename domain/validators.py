"""Validators for flow answers: each turns a user's raw text into a normalised value or
refuses it with a short reason the bot can show the user."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import DefinitionError, ValidationFailed


class Validator:
    """A rule for one answer: `validator(raw)` returns the normalised value or raises
    ValidationFailed. `spec` is the same rule as data; validators compare by it."""

    __slots__ = ("check", "spec")

    def __init__(self, spec: Mapping[str, Any], check: Callable[[str], Any]) -> None:
        self.spec = dict(spec)
        self.check = check

    def __call__(self, raw: str) -> Any:
        return self.check(raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Validator) and self.spec == other.spec

    __hash__ = None  # type: ignore[assignment]  # the spec is a dict

    def __repr__(self) -> str:
        return f"Validator({self.spec!r})"


def _spec(type_: str, **params: Any) -> dict[str, Any]:
    """The data form of a rule, leaving out parameters that were not given."""
    return {"type": type_, **{key: value for key, value in params.items() if value is not None}}


def text(*, max_length: int | None = None) -> Validator:
    """Any non-empty text, stripped of surrounding spaces, optionally at most max_length long."""

    def check(raw: str) -> str:
        value = raw.strip()
        if not value:
            raise ValidationFailed("Please send a non-empty answer.")
        if max_length is not None and len(value) > max_length:
            raise ValidationFailed(f"Please keep it to {max_length} characters or fewer.")
        return value

    return Validator(_spec("text", max_length=max_length), check)


def integer(*, min: int | None = None, max: int | None = None) -> Validator:
    """A whole number, optionally between min and max inclusive."""
    if min is not None and max is not None and min > max:
        raise DefinitionError(f"integer validator: min {min} is greater than max {max}")
    if min is not None and max is not None:
        reason = f"Please send a whole number between {min} and {max}."
    elif min is not None:
        reason = f"Please send a whole number of at least {min}."
    elif max is not None:
        reason = f"Please send a whole number no greater than {max}."
    else:
        reason = "Please send a whole number."

    def check(raw: str) -> int:
        digits = raw.strip()
        # A bound on the length: int() refuses more than 4300 digits.
        if not re.fullmatch(r"[+-]?[0-9]{1,100}", digits):
            raise ValidationFailed(reason)
        value = int(digits)
        if (min is not None and value < min) or (max is not None and value > max):
            raise ValidationFailed(reason)
        return value

    return Validator(_spec("integer", min=min, max=max), check)


_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_MONTH_NUMBERS = {
    **{name: number for number, name in enumerate(_MONTHS, 1)},
    **{name[:3]: number for number, name in enumerate(_MONTHS, 1)},
    "sept": 9,
}
# Each pattern names its groups; a two-digit year means 20yy.
_DATE_PATTERNS = (
    re.compile(r"(?P<year>\d{4})[-./](?P<month>\d{1,2})[-./](?P<day>\d{1,2})", re.ASCII),
    re.compile(r"(?P<day>\d{1,2})[-./](?P<month>\d{1,2})[-./](?P<year>\d{4}|\d{2})", re.ASCII),
    re.compile(r"(?P<day>\d{1,2})\s+(?P<month>[a-z]+)\.?,?\s+(?P<year>\d{4})", re.ASCII),
    re.compile(r"(?P<month>[a-z]+)\.?\s+(?P<day>\d{1,2}),?\s+(?P<year>\d{4})", re.ASCII),
)


def date() -> Validator:
    """A calendar date in a common form (2026-11-21, 21.11.2026, 21/11/26, 21 Nov 2026,
    Nov 21 2026...), normalised to ISO "YYYY-MM-DD"."""
    reason = "Please send a date like 21.11.2026."

    def check(raw: str) -> str:
        value = raw.strip().lower()
        for pattern in _DATE_PATTERNS:
            match = pattern.fullmatch(value)
            if match:
                break
        else:
            raise ValidationFailed(reason)
        named = match["month"]
        month = int(named) if named.isdigit() else _MONTH_NUMBERS.get(named)
        if month is None:
            raise ValidationFailed(reason)
        year = int(match["year"]) + (2000 if len(match["year"]) == 2 else 0)
        try:
            return dt.date(year, month, int(match["day"])).isoformat()
        except ValueError:
            raise ValidationFailed(f"There is no such date as {raw.strip()}.") from None

    return Validator(_spec("date"), check)


def _words(raw: str) -> str:
    return " ".join(raw.split()).casefold()


def choice(options: Mapping[str, Sequence[str]] | Sequence[str]) -> Validator:
    """One of the options, given by its name or a synonym, in any case and spacing;
    returns the option's name. `options` maps each name to its synonyms, or lists names."""
    if not isinstance(options, Mapping):
        options = {option: [] for option in options}
    if not options:
        raise DefinitionError("choice validator: no options")
    lookup: dict[str, str] = {}
    for option, synonyms in options.items():
        for word in (option, *synonyms):
            if lookup.setdefault(_words(word), option) != option:
                raise DefinitionError(f"choice validator: {word!r} names two options")
    reason = f"Please choose one of: {', '.join(options)}."

    def check(raw: str) -> str:
        try:
            return lookup[_words(raw)]
        except KeyError:
            raise ValidationFailed(reason) from None

    return Validator(_spec("choice", options={k: list(v) for k, v in options.items()}), check)


def regex(pattern: str, message: str = "Please check the format of your answer.") -> Validator:
    """Text (stripped) that fully matches the pattern; refused with the given message."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise DefinitionError(f"regex validator: bad pattern {pattern!r}: {error}") from None

    def check(raw: str) -> str:
        value = raw.strip()
        if not compiled.fullmatch(value):
            raise ValidationFailed(message)
        return value

    return Validator(_spec("regex", pattern=pattern, message=message), check)


_YES = frozenset({"yes", "y", "да", "ok", "true", "1"})
_NO = frozenset({"no", "n", "нет", "false", "0"})


def yes_no() -> Validator:
    """A yes or a no (yes/y/да/ok/true/1, no/n/нет/false/0), as a bool."""

    def check(raw: str) -> bool:
        word = _words(raw)
        if word in _YES or word in _NO:
            return word in _YES
        raise ValidationFailed("Please answer yes or no.")

    return Validator(_spec("yes_no"), check)


def custom(name: str, check: Callable[[str], Any]) -> Validator:
    """A plain function as a validator, known in data by its registered name."""
    return Validator(_spec("custom", name=name), check)


BUILT_INS: Mapping[str, Callable[..., Validator]] = {
    "text": text,
    "integer": integer,
    "date": date,
    "choice": choice,
    "regex": regex,
    "yes_no": yes_no,
}


def build_validator(
    spec: Mapping[str, Any], custom_validators: Mapping[str, Callable[[str], Any]] | None = None
) -> Validator:
    """The validator a spec describes: `{"type": "integer", "min": 1}` or
    `{"type": "custom", "name": "inn"}` with `inn` in custom_validators."""
    params = dict(spec)
    type_ = params.pop("type", None)
    if type_ == "custom":
        name = params.get("name")
        if name not in (custom_validators or {}):
            raise DefinitionError(f"no custom validator named {name!r} is registered")
        return custom(name, custom_validators[name])
    if type_ not in BUILT_INS:
        known = ", ".join([*BUILT_INS, "custom"])
        raise DefinitionError(f"unknown validator type {type_!r} (known: {known})")
    factory = BUILT_INS[type_]
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as error:
        raise DefinitionError(f"{type_} validator: {error}") from None
    return factory(**params)
