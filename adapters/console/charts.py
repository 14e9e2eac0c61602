"""Hourly charts drawn on the server as SVG: bars for counts, lines for percentiles, one
slot per hour of the range (hours without activity show as empty slots or gaps)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo

import msgspec

from .rendering import format_time

WIDTH, HEIGHT = 1200.0, 200.0
LEFT, RIGHT, TOP, BOTTOM = 56.0, 12.0, 12.0, 28.0
# Hours between two labels of the time axis: the first that leaves room for each label.
LABEL_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 168)
MAX_LABELS = 12


class Tick(msgspec.Struct, frozen=True):
    """A mark on an axis: where, and what it says."""

    at: float
    text: str
    time: str | None = None  # the moment, for the script to write in the browser's zone
    fmt: str = ""


class Bar(msgspec.Struct, frozen=True):
    """One hour's bar and what it says on hover."""

    x: float
    y: float
    w: float
    h: float
    title: str


class Line(msgspec.Struct, frozen=True):
    """One series as a path (broken where an hour has no value) and its points."""

    name: str
    css: str
    d: str
    points: list[tuple[float, float, str]]


class Chart(msgspec.Struct, frozen=True):
    """A chart ready to be written as SVG."""

    title: str
    unit: str
    width: float
    height: float
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    bars: list[Bar]
    lines: list[Line]
    empty: bool


def hours_between(since: datetime, until: datetime) -> list[datetime]:
    """Every whole UTC hour from the one holding ``since`` to the last one before ``until``."""
    hour = since.replace(minute=0, second=0, microsecond=0)
    found = []
    while hour < until:
        found.append(hour)
        hour += timedelta(hours=1)
    return found


def bars(
    title: str,
    unit: str,
    hours: Sequence[datetime],
    values: Sequence[float],
    zone: tzinfo | None,
) -> Chart:
    """A bar per hour."""
    top, step = _scale(max(values, default=0), whole=True)
    left, upper, right, lower = _plot()
    slot = (right - left) / max(1, len(hours))
    drawn = []
    for i, (hour, value) in enumerate(zip(hours, values, strict=True)):
        if value:
            h = (lower - upper) * value / top
            label = f"{format_time(hour, zone, 'hour')}: {_amount(value)} {unit}"
            drawn.append(Bar(left + i * slot + slot * 0.12, lower - h, slot * 0.76, h, label))
    return Chart(
        title=title,
        unit=unit,
        width=WIDTH,
        height=HEIGHT,
        plot=(left, upper, right, lower),
        y_ticks=_y_ticks(top, step),
        x_ticks=_x_ticks(hours, zone, slot),
        bars=drawn,
        lines=[],
        empty=not any(values),
    )


def lines(
    title: str,
    unit: str,
    hours: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    zone: tzinfo | None,
) -> Chart:
    """A line per series, a point per hour that has a value."""
    values = [v for s in series.values() for v in s if v is not None]
    top, step = _scale(max(values, default=0), whole=False)
    left, upper, right, lower = _plot()
    slot = (right - left) / max(1, len(hours))
    drawn = []
    for name, points in series.items():
        path: list[str] = []
        dots = []
        pen_up = True
        for i, value in enumerate(points):
            if value is None:
                pen_up = True
                continue
            x = left + (i + 0.5) * slot
            y = lower - (lower - upper) * value / top
            path.append(f"{'M' if pen_up else 'L'}{x:.1f},{y:.1f}")
            pen_up = False
            label = f"{format_time(hours[i], zone, 'hour')}: {name} {_amount(value)} {unit}"
            dots.append((round(x, 1), round(y, 1), label))
        drawn.append(Line(name, name.lower(), " ".join(path), dots))
    return Chart(
        title=title,
        unit=unit,
        width=WIDTH,
        height=HEIGHT,
        plot=(left, upper, right, lower),
        y_ticks=_y_ticks(top, step),
        x_ticks=_x_ticks(hours, zone, slot),
        bars=[],
        lines=drawn,
        empty=not values,
    )


def _plot() -> tuple[float, float, float, float]:
    return LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM


def _scale(value: float, whole: bool) -> tuple[float, float]:
    """The top of the axis and the step between its ticks (about five): 1, 2, 2.5 or 5
    times a power of ten, whole numbers for counts (``whole``)."""
    if value <= 0:
        return (1.0, 1.0) if whole else (1.0, 0.25)
    rough = value / 5
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough)
    if whole:
        step = max(1.0, math.ceil(step))
    return round(step * math.ceil(value / step), 9), step


def _y_ticks(top: float, step: float) -> list[Tick]:
    _, upper, _, lower = _plot()
    count = round(top / step)
    return [Tick(lower - (lower - upper) * i / count, _amount(step * i)) for i in range(count + 1)]


def _x_ticks(hours: Sequence[datetime], zone: tzinfo | None, slot: float) -> list[Tick]:
    step = next((s for s in LABEL_STEPS if len(hours) / s <= MAX_LABELS), LABEL_STEPS[-1])
    fmt = "clock" if step < 24 and len(hours) <= 24 else "hour"
    ticks = []
    for i, hour in enumerate(hours):
        if i % step == 0:
            iso = hour.isoformat().replace("+00:00", "Z")
            ticks.append(Tick(LEFT + i * slot, format_time(hour, zone, fmt), iso, fmt))
    return ticks


def _amount(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
