"""Durations as marketers write them: `30s`, `10m`, `4h`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(-?\d+)\s*([smhdw])\s*$")
_NUMBER = re.compile(r"^\s*-?\d+\s*$")
_WORDS = re.compile(r"^\s*(-?\d*)\s*(sec|second|min|minute|hour|hr|day|week|wk)s?\s*$", re.IGNORECASE)


def parse_duration(text: str | int | timedelta) -> timedelta:
    """Parse `7d` into a timedelta; a bare 0 is allowed, anything else must carry a unit."""
    if isinstance(text, timedelta):
        return text
    if text == 0:
        return timedelta(0)
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(_not_a_duration(str(text)))
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def _not_a_duration(text: str) -> str:
    """What to write instead of `3 days`, `week` or `30`."""
    words = _WORDS.match(text)
    if words:
        return f"'{text}' is not a duration: write {words[1] or 1}{words[2][0].lower()}"
    if _NUMBER.match(text):
        return f"'{text}' has no unit: write it like {text}d (days), {text}h (hours) or {text}m (minutes)"
    return f"'{text}' is not a duration: write a number and a unit, like 30s, 10m, 4h, 7d or 2w"


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
        raise ValueError("must be longer than 0: write one like 7d")
    return delta


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
# A wait from now on (a step's delay): 0 is "at once", negative has no meaning.
Wait = Annotated[Duration, AfterValidator(_not_negative)]
# A span of time that must have a length (a window, a timeout, an interval).
Span = Annotated[Duration, AfterValidator(_positive)]
