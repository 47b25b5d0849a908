"""Durations as marketers write them: `30s`, `10m`, `4h`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(-?\d+)\s*([smhdw])\s*$")
_WORDS = re.compile(r"^\s*(-?\d+)\s*(sec|second|min|minute|hour|hr|day|week|wk)s?\s*$", re.IGNORECASE)


def parse_duration(text: str | int | timedelta) -> timedelta:
    """Parse `7d` into a timedelta; a bare 0 is allowed, anything else must carry a unit."""
    if isinstance(text, timedelta):
        return text
    if text == 0:
        return timedelta(0)
    match = _PATTERN.match(str(text))
    if not match:
        words = _WORDS.match(str(text))
        hint = f": write {words[1]}{words[2][0].lower()}" if words else ""
        raise ValueError(
            f"'{text}' is not a duration{hint}"
            if hint
            else f"'{text}' is not a duration: write a number and a unit, like 30s, 10m, 4h, 7d or 2w"
        )
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for suffix, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def _not_negative(delta: timedelta) -> timedelta:
    if delta < timedelta(0):
        raise ValueError(f"'{format_duration(delta)}' is negative: a wait can only go forward")
    return delta


def _positive(delta: timedelta) -> timedelta:
    if delta <= timedelta(0):
        raise ValueError(f"'{format_duration(delta)}' must be longer than 0, like 7d")
    return delta


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
# A wait from now on (a step's delay): 0 is "at once", negative has no meaning.
Wait = Annotated[Duration, AfterValidator(_not_negative)]
# A span of time that must have a length (a window, a timeout, an interval).
Span = Annotated[Duration, AfterValidator(_positive)]
