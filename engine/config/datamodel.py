"""The declared data model (`attributes:` and `events:` in config.yaml): what customer attributes
and event properties exist and of which type, so that import refuses a bad value at the door,
conditions compare like with like, and `validate` renders templates with typed samples and knows
which names exist.

    attributes: {points: integer, points_expire_at: date, plan: {type: string, values: [free, pro]}}
    events: {purchase: {total: number, currency: string}, feedback_submitted: {score: integer}}

Both are optional. Without them nothing is declared, and the names found in the store are the
known ones."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, model_validator


class FieldType(StrEnum):
    STRING = "string"
    NUMBER = "number"  # any finite number
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATE = "date"  # YYYY-MM-DD
    DATETIME = "datetime"  # ISO-8601 with a time; without an offset it is UTC
    LIST = "list"  # a list of strings


class Declared(BaseModel):
    """One declared attribute or property: its type and, optionally, the only values it may take."""

    model_config = ConfigDict(extra="forbid")

    type: FieldType
    values: list[str | int | float | bool] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`points: integer` is short for `points: {type: integer}`."""
        return {"type": value} if isinstance(value, str) else value


class DataModel(BaseModel):
    """What config declares; `declared` is False when it declares nothing at all."""

    attributes: dict[str, Declared] = {}
    events: dict[str, dict[str, Declared]] = {}

    @property
    def declared(self) -> bool:
        return bool(self.attributes or self.events)

    def attribute(self, name: str) -> Declared | None:
        return self.attributes.get(name)

    def event_property(self, event: str, name: str) -> Declared | None:
        return self.events.get(event, {}).get(name)


# The core customer fields, typed like declared attributes (conditions may test them).
CORE_TYPES = {
    "email": Declared(type=FieldType.STRING),
    "first_name": Declared(type=FieldType.STRING),
    "last_name": Declared(type=FieldType.STRING),
    "locale": Declared(type=FieldType.STRING),
    "timezone": Declared(type=FieldType.STRING),
    "created_at": Declared(type=FieldType.DATETIME),
    "confirmed_at": Declared(type=FieldType.DATETIME),
}


NAMES = {
    FieldType.STRING: "a string",
    FieldType.NUMBER: "a number",
    FieldType.INTEGER: "an integer",
    FieldType.BOOLEAN: "true or false",
    FieldType.DATE: "a date (YYYY-MM-DD)",
    FieldType.DATETIME: "a date and time (ISO-8601, like 2026-11-23T09:00:00Z)",
    FieldType.LIST: "a list of strings",
}


def iso(value: datetime | date) -> str:
    """The one text form of dates kept in JSON attributes, so that text order is time order."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


def convert(declared: Declared, value: Any, timezone: str = "UTC") -> Any:
    """`value` as its declared type, in the form the store keeps (dates as ISO text); a value that
    does not fit raises ValueError saying what was expected. CSV cells arrive as text, JSON as
    JSON: both are accepted when they mean a value of the type."""
    try:
        converted = _CONVERTERS[declared.type](value, timezone)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"expected {NAMES[declared.type]}, not {_shown(value)}") from None
    if declared.values is not None:
        outside = [v for v in (converted if isinstance(converted, list) else [converted]) if v not in declared.values]
        if outside:
            allowed = ", ".join(str(v) for v in declared.values)
            raise ValueError(f"{_shown(outside[0])} is not one of the allowed values ({allowed})")
    return converted


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _string(value: Any, _tz: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise TypeError


def _number(value: Any, _tz: str) -> int | float:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            value = float(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError
    return value


def _integer(value: Any, _tz: str) -> int:
    number = _number(value, _tz)
    if isinstance(number, float):
        if not number.is_integer():
            raise TypeError
        return int(number)
    return number


def _boolean(value: Any, _tz: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeError


def _date(value: Any, _tz: str) -> str:
    if isinstance(value, datetime):
        raise TypeError
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise TypeError
    return date.fromisoformat(value.strip()).isoformat()


def _datetime(value: Any, timezone: str) -> str:
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=ZoneInfo(timezone)))
    if not isinstance(value, str) or len(value.strip()) < 10:
        raise TypeError
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(timezone)))


def _list(value: Any, _tz: str) -> list[str]:
    """A JSON list of strings, or text with the items separated by commas (a CSV cell)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise TypeError


_CONVERTERS: dict[FieldType, Callable[[Any, str], Any]] = {
    FieldType.STRING: _string,
    FieldType.NUMBER: _number,
    FieldType.INTEGER: _integer,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.LIST: _list,
}
