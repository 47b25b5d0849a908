"""Durations as marketers write them: `30s`, `10m`, `4h`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(-?\d+)\s*([smhdw])\s*$")


def parse_duration(text: str | int | timedelta) -> timedelta:
    """Parse `7d` into a timedelta; a bare 0 is allowed, anything else must carry a unit."""
    if isinstance(text, timedelta):
        return text
    if text == 0:
        return timedelta(0)
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration: write a number and a unit, like 30s, 10m, 4h, 7d or 2w")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for suffix, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
