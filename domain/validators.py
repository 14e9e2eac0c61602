"""Validators for flow answers: each turns a user's raw text into a normalised value or
refuses it with a short reason the bot can show the user."""

from __future__ import annotations

import builtins
import datetime as dt
import inspect
import re
import typing
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import msgspec

from .errors import CodeFailed, DefinitionError, ValidationFailed, failure_text


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

    def can_give(self, value: Any) -> bool:
        """Whether some answer validates to exactly this value (a branch's `equals`). A
        custom validator is code that cannot be asked, so anything may come from it."""
        if self.spec.get("type") == "custom":
            return True
        try:
            given = self.check(answer_text(value))
        except ValidationFailed:
            return False
        return type(given) is type(value) and given == value


class Unbuildable(Validator):
    """A validator spec that names no usable rule (an unknown type, a bad parameter): kept
    in its step while a definition is read, so that the problem is reported with the step."""

    __slots__ = ("problem",)

    def __init__(self, spec: Mapping[str, Any], problem: str) -> None:
        super().__init__(spec, _unusable)
        self.problem = problem

    def can_give(self, value: Any) -> bool:
        return True  # unknown: the problem is reported once, as itself


def _unusable(raw: str) -> Any:
    raise ValidationFailed("This question cannot be answered: its definition is broken.")


def answer_text(value: Any) -> str:
    """A value written as an answer: yes or no for a boolean, several choices joined with
    commas, anything else as text. A validator reads each of its own values back."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _spec(type_: str, **params: Any) -> dict[str, Any]:
    """The data form of a rule, leaving out parameters that were not given."""
    return {"type": type_, **{key: value for key, value in params.items() if value is not None}}


def text(*, max_length: int | None = None) -> Validator:
    """Any non-empty text, stripped of surrounding spaces, optionally at most max_length long."""
    if max_length is not None and max_length < 1:
        raise DefinitionError(f"text validator: max_length {max_length} is less than 1")

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
        return _read_date(raw.strip(), reason).isoformat()

    return Validator(_spec("date"), check)


def _read_date(text: str, reason: str) -> dt.date:
    """A calendar date in one of the common forms; refused with `reason` if it is none."""
    for pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(text.lower())
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
        return dt.date(year, month, int(match["day"]))
    except ValueError:
        raise ValidationFailed(f"There is no such date as {text}.") from None


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


def _number(value: int | float | str, what: str) -> Decimal:
    """A bound of a decimal validator as an exact number (a float by its shortest text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DefinitionError(f"decimal validator: {what} {value!r} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise DefinitionError(f"decimal validator: {what} {value!r} is not a number") from None
    if not number.is_finite():
        raise DefinitionError(f"decimal validator: {what} {value!r} is not a finite number")
    return number


def _plain(number: Decimal) -> str:
    """A decimal as people write it: no exponent, no negative zero."""
    text = format(number, "f")
    return text[1:] if text.startswith("-") and not number else text


def decimal(
    *,
    min: int | float | str | None = None,
    max: int | float | str | None = None,
    places: int | None = None,
) -> Validator:
    """A decimal number ("12.5", "-0,75", "1 250.00"), optionally between min and max
    inclusive and with at most `places` decimal places. The value is the number as exact
    text: with `places`, exactly that many decimals ("12.50"); else no trailing zeros."""
    low = None if min is None else _number(min, "min")
    high = None if max is None else _number(max, "max")
    if low is not None and high is not None and low > high:
        raise DefinitionError(f"decimal validator: min {min} is greater than max {max}")
    if places is not None and (isinstance(places, bool) or not isinstance(places, int)):
        raise DefinitionError(f"decimal validator: places {places!r} is not a whole number")
    if places is not None and not 0 <= places <= 30:
        raise DefinitionError(f"decimal validator: places {places} is not between 0 and 30")
    if low is not None and high is not None:
        reason = f"Please send a number between {_plain(low)} and {_plain(high)}"
    elif low is not None:
        reason = f"Please send a number of at least {_plain(low)}"
    elif high is not None:
        reason = f"Please send a number no greater than {_plain(high)}"
    else:
        reason = "Please send a number"
    if places == 0:
        reason += " with no decimals"
    elif places is not None:
        reason += f" with at most {places} decimal place{'s' * (places > 1)}"
    reason += "."

    def check(raw: str) -> str:
        # Spaces may group the thousands; a comma may be the decimal mark.
        text = re.sub(r"(?<=\d)[ \u00a0\u202f](?=\d)", "", raw.strip())
        # A bound on the length, as for integers.
        if not re.fullmatch(r"[+-]?(?:[0-9]{1,100}(?:[.,][0-9]{0,100})?|[.,][0-9]{1,100})", text):
            raise ValidationFailed(reason)
        number = Decimal(text.replace(",", "."))
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValidationFailed(reason)
        if places is None:
            return _plain(number.normalize() if number else Decimal(0))
        exact = number.quantize(Decimal(1).scaleb(-places), context=Context(prec=250))
        if exact != number:
            raise ValidationFailed(reason)
        return _plain(exact)

    return Validator(_spec("decimal", min=min, max=max, places=places), check)


_ADDRESS_PART = r"[^\s@<>()\[\]\\,;:\"]"
_EMAIL = re.compile(rf"(?P<local>{_ADDRESS_PART}{{1,64}})@(?P<domain>{_ADDRESS_PART}{{1,253}})")
_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)")


def email() -> Validator:
    """An e-mail address (name@example.com); the domain is lower-cased, the name before
    the @ kept as written (only the receiving server may read its case)."""
    reason = "Please send an e-mail address like name@example.com."

    def check(raw: str) -> str:
        text = raw.strip()
        if text[:7].casefold() == "mailto:":
            text = text[7:]
        match = _EMAIL.fullmatch(text)
        if not match:
            raise ValidationFailed(reason)
        local, domain = match["local"], match["domain"].lower()
        labels = domain.split(".")
        if (
            local.startswith(".")
            or local.endswith(".")
            or ".." in local
            or len(labels) < 2
            or not all(_LABEL.fullmatch(label) and "_" not in label for label in labels)
            or labels[-1].isdigit()
        ):
            raise ValidationFailed(reason)
        return f"{local}@{domain}"

    return Validator(_spec("email"), check)


# The national (trunk) prefix people dial before a number at home, where it is not "0".
_TRUNK_PREFIXES = {"1": "1", "7": "8", "39": "", "378": "", "379": ""}


def phone(*, default_prefix: str | None = None, trunk_prefix: str | None = None) -> Validator:
    """A phone number, normalised to E.164 ("+447911123456"). International numbers start
    with + or 00; with a `default_prefix` ("+44") a national number is in that country
    once its `trunk_prefix` (default "0"; "1" for +1, "8" for +7, none for +39) is dropped."""
    if default_prefix is not None and not re.fullmatch(r"\+[1-9][0-9]{0,2}", default_prefix):
        raise DefinitionError(
            f"phone validator: default_prefix {default_prefix!r} is not a country code like +44"
        )
    if trunk_prefix is not None and not re.fullmatch(r"[0-9]{0,3}", trunk_prefix):
        raise DefinitionError(f"phone validator: trunk_prefix {trunk_prefix!r} is not digits")
    if default_prefix is None:
        trunk = ""
        reason = "Please send a phone number with its country code, like +44 20 7946 0958."
    else:
        trunk = trunk_prefix
        if trunk is None:
            trunk = _TRUNK_PREFIXES.get(default_prefix[1:], "0")
        reason = "Please send a phone number, like +44 20 7946 0958."

    def check(raw: str) -> str:
        text = raw.strip()
        if not re.fullmatch(r"\+?[0-9][0-9 \u00a0().\-/]{0,40}", text):
            raise ValidationFailed(reason)
        digits = re.sub(r"[^0-9]", "", text)
        if text.startswith("+"):
            number = digits
        elif digits.startswith("00"):
            number = digits[2:]
        elif default_prefix is not None:
            national = digits[len(trunk) :] if trunk and digits.startswith(trunk) else digits
            number = default_prefix[1:] + national
        else:
            raise ValidationFailed(reason)
        if not 7 <= len(number) <= 15 or number.startswith("0"):
            raise ValidationFailed(reason)
        return f"+{number}"

    spec = _spec("phone", default_prefix=default_prefix, trunk_prefix=trunk_prefix)
    return Validator(spec, check)


_CLOCK = (
    r"(?P<hour>[0-9]{1,2})(?:(?P<sep>[:.])(?P<minute>[0-9]{2})(?:(?P=sep)(?P<second>[0-9]{2}))?)?"
    r"\s*(?P<half>[ap])?(?(half)\.?\s?m\.?)"
)
_TIME = re.compile(_CLOCK, re.ASCII)


def _read_time(text: str, reason: str) -> dt.time:
    """A time of day: 14:30, 9.05, 14:30:15, 9pm, 9:30 a.m.; refused with `reason`."""
    match = _TIME.fullmatch(text.strip().lower())
    if not match or (match["minute"] is None and match["half"] is None):
        raise ValidationFailed(reason)
    hour = int(match["hour"])
    if match["half"]:
        if not 1 <= hour <= 12:
            raise ValidationFailed(reason)
        hour = hour % 12 + (12 if match["half"] == "p" else 0)
    try:
        return dt.time(hour, int(match["minute"] or 0), int(match["second"] or 0))
    except ValueError:
        raise ValidationFailed(reason) from None


def time(*, seconds: bool = False) -> Validator:
    """A time of day (14:30, 9.05, 9pm, 2:30 p.m.), normalised to "HH:MM", or "HH:MM:SS"
    with `seconds`; without it an answer with seconds other than :00 is refused."""
    example = "14:30:15" if seconds else "14:30"
    reason = f"Please send a time like {example}."

    def check(raw: str) -> str:
        value = _read_time(raw, reason)
        if not seconds and value.second:
            raise ValidationFailed(reason)
        return value.isoformat(timespec="seconds" if seconds else "minutes")

    return Validator(_spec("time", seconds=seconds or None), check)


_ZONE_AT_END = re.compile(
    r"\s*(?P<zone>(?:utc|gmt)?\s*[+-][0-9]{1,2}(?::?[0-9]{2})?|z|utc|gmt"
    r"|[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+)$",
    re.IGNORECASE,
)
_DATE_AND_TIME = re.compile(
    r"(?P<date>.+?)(?:\s*t\s*|\s*,\s*|\s+at\s+|\s+)(?P<time>[0-9]{1,2}(?:[:.][0-9]{2}){0,2}"
    r"\s*(?:[ap]\.?\s?m\.?)?)"
)


def _zone(name: str) -> dt.tzinfo | None:
    """The time zone a name or an offset means: UTC, Z, +03:00, -0530, UTC+3, GMT-02:30,
    or an IANA name such as Europe/Berlin; None if it means none."""
    text = name.strip()
    if text.lower() in ("z", "utc", "gmt"):
        return dt.UTC
    offset = re.fullmatch(
        r"(?:utc|gmt)?\s*(?P<sign>[+-])(?P<h>[0-9]{1,2})(?::?(?P<m>[0-9]{2}))?", text, re.I
    )
    if offset:
        hours, minutes = int(offset["h"]), int(offset["m"] or 0)
        if hours > 18 or minutes > 59:
            return None
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-delta if offset["sign"] == "-" else delta)
    if not re.fullmatch(r"[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*", text):
        return None
    try:
        # The time-zone database is reference data, read like a module, not state.
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def datetime(*, timezone: str | None = None) -> Validator:
    """A date and a time with a time zone ("21.11.2026 14:30 +01:00", "2026-11-21T14:30Z",
    "Nov 21 2026 2:30 pm Europe/Berlin"), normalised to ISO 8601 with its offset
    ("2026-11-21T14:30:00+01:00"). `timezone` is the zone of an answer that names none."""
    default = None
    if timezone is not None:
        default = _zone(timezone)
        if default is None:
            raise DefinitionError(f"datetime validator: unknown time zone {timezone!r}")
    reason = "Please send a date and time like 21.11.2026 14:30" + (
        "." if default else " +01:00, with the time zone."
    )

    def check(raw: str) -> str:
        text = raw.strip()
        zone, named = default, None
        found = _ZONE_AT_END.search(text)
        if found and _DATE_AND_TIME.fullmatch(text[: found.start()].lower()):
            named = found["zone"]
            zone = _zone(named)
            if zone is None:
                raise ValidationFailed(f"There is no time zone {named}. {reason}")
            text = text[: found.start()]
        parts = _DATE_AND_TIME.fullmatch(text.lower())
        if not parts:
            raise ValidationFailed(reason)
        if zone is None:
            raise ValidationFailed(reason)
        day = _read_date(text[: parts.end("date")].strip(), reason)
        local = dt.datetime.combine(day, _read_time(parts["time"], reason))
        moment = local.replace(tzinfo=zone)
        try:
            there = moment.astimezone(dt.UTC).astimezone(zone)
        except OverflowError:
            raise ValidationFailed(reason) from None
        if there.replace(tzinfo=None) != local:
            raise ValidationFailed(
                f"There is no such time as {local:%Y-%m-%d %H:%M} in {named or timezone}: "
                "the clocks went forward."
            )
        return moment.isoformat()

    return Validator(_spec("datetime", timezone=timezone), check)


_SEPARATORS = frozenset({",", ";", "&", "and", "и"})


def _tokens(text: str) -> tuple[str, ...]:
    """Words and separators, case-folded: "Tea, coffee&milk" -> tea , coffee & milk."""
    return tuple(re.findall(r"[,;&]|[^\s,;&]+", text.casefold()))


def multiple_choice(
    options: Mapping[str, Sequence[str]] | Sequence[str],
    *,
    min: int | None = None,
    max: int | None = None,
) -> Validator:
    """Several of the options in one answer, by name or synonym, separated by commas,
    semicolons, & or "and" ("tea, coffee and juice"); between min (default 1) and max of
    them. The value is the list of chosen option names, each once, in the options' order."""
    if not isinstance(options, Mapping):
        options = {option: [] for option in options}
    if not options:
        raise DefinitionError("multiple_choice validator: no options")
    lookup: dict[tuple[str, ...], str] = {}
    for option, synonyms in options.items():
        for word in (option, *synonyms):
            phrase = _tokens(word)
            if not phrase or phrase[0] in _SEPARATORS or phrase[-1] in _SEPARATORS:
                raise DefinitionError(
                    f"multiple_choice validator: {word!r} starts or ends with a separator"
                    " (, ; & and)"
                )
            if lookup.setdefault(phrase, option) != option:
                raise DefinitionError(f"multiple_choice validator: {word!r} names two options")
    fewest = 1 if min is None else min
    if fewest < 1:
        raise DefinitionError(f"multiple_choice validator: min {min} is less than 1")
    if fewest > len(options):
        raise DefinitionError(
            f"multiple_choice validator: min {min} is more than the {len(options)} options"
        )
    if max is not None and max < fewest:
        raise DefinitionError(f"multiple_choice validator: max {max} is less than min {fewest}")
    names = ", ".join(options)
    if max is not None and max == fewest:
        count = f"exactly {max} of"
    elif max is not None:
        count = f"between {fewest} and {max} of" if fewest > 1 else f"up to {max} of"
    else:
        count = f"at least {fewest} of" if fewest > 1 else "one or more of"
    reason = f"Please choose {count}: {names} (separated by commas)."
    longest = builtins.max(len(phrase) for phrase in lookup)
    order = {option: index for index, option in enumerate(options)}

    def check(raw: str) -> list[str]:
        tokens = _tokens(raw[:2000])
        # best[i]: the fewest options that spell tokens[i:], or None if they cannot.
        best: list[tuple[str, ...] | None] = [None] * len(tokens) + [()]
        for i in range(len(tokens) - 1, -1, -1):
            if tokens[i] in _SEPARATORS:
                best[i] = best[i + 1]
                continue
            for j in range(i + 1, builtins.min(len(tokens), i + longest) + 1):
                option = lookup.get(tokens[i:j])
                rest = best[j]
                if option is None or rest is None:
                    continue
                if j < len(tokens) and tokens[j] not in _SEPARATORS:
                    continue
                current = best[i]
                if current is None or len(rest) + 1 < len(current):
                    best[i] = (option, *rest)
        chosen = sorted(set(best[0] or ()), key=order.__getitem__)
        if not chosen or len(chosen) < fewest or (max is not None and len(chosen) > max):
            raise ValidationFailed(reason)
        return chosen

    spec = _spec(
        "multiple_choice", options={k: list(v) for k, v in options.items()}, min=min, max=max
    )
    return Validator(spec, check)


def custom(name: str, check: Callable[[str], Any]) -> Validator:
    """A plain function as a validator, known in data by its registered name. Anything it
    raises but ValidationFailed, or a value the log cannot hold, is CodeFailed."""

    def run(raw: str) -> Any:
        try:
            value = check(raw)
        except ValidationFailed:
            raise
        except Exception as error:  # user code: reported in one line, never a traceback
            raise CodeFailed(f"custom validator {name!r} failed: {failure_text(error)}") from error
        try:
            return storable(value)
        except TypeError as unfit:
            raise CodeFailed(f"custom validator {name!r} gave {unfit}") from None

    return Validator(_spec("custom", name=name), run)


# The integers msgpack, the log's encoding, holds.
_INT_RANGE = range(-(2**63), 2**64)


def storable(value: Any) -> Any:
    """The value as the log holds it (a tuple as a list), or TypeError naming what in it
    the log cannot hold: only text, numbers, booleans, None, lists and text-keyed dicts."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise TypeError(f"the number {value}, too large for the log")
        return value
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a dict with keys that are not text, which the log cannot hold")
        return {key: storable(item) for key, item in value.items()}
    raise TypeError(
        f"a {type(value).__name__}, which the log cannot hold (text, numbers, booleans,"
        " None, lists and dicts only)"
    )


BUILT_INS: Mapping[str, Callable[..., Validator]] = {
    "text": text,
    "integer": integer,
    "date": date,
    "choice": choice,
    "regex": regex,
    "yes_no": yes_no,
    "decimal": decimal,
    "email": email,
    "phone": phone,
    "time": time,
    "datetime": datetime,
    "multiple_choice": multiple_choice,
}


def build_validator(
    spec: Mapping[str, Any], custom_validators: Mapping[str, Callable[[str], Any]] | None = None
) -> Validator:
    """The validator a spec describes: `{"type": "integer", "min": 1}` or
    `{"type": "custom", "name": "inn"}` with `inn` in custom_validators."""
    params = dict(spec)
    type_ = params.pop("type", None)
    if not isinstance(type_, str):
        raise DefinitionError(f"a validator's type is a name such as 'text', not {type_!r}")
    if type_ == "custom":
        name = params.get("name")
        if not isinstance(name, str) or name not in (custom_validators or {}):
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
    hints = typing.get_type_hints(factory)
    for name, value in params.items():
        try:
            msgspec.convert(value, hints[name])
        except msgspec.ValidationError as error:
            raise DefinitionError(f"{type_} validator: {name}: {error}") from None
    return factory(**params)
