"""The declared data model (`attributes:` and `events:` in config.yaml): what customer attributes
and event properties exist and of which type, so that import refuses a bad value at the door,
conditions compare like with like, and `validate` renders templates with typed samples and knows
which names exist.

    attributes: {points: integer, points_expire_at: date, plan: {type: string, values: [free, pro]}}
    events: {purchase: {total: number, currency: string}, feedback_submitted: {score: integer}}

Both are optional. Without them nothing is declared, and the names found in the store are the
known ones."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

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
