"""A campaign's trigger, audience and steps in a few words each, as the studio shows them in
the campaign list and on the flow diagram. Written from the parsed YAML, so they say what the
engine will do, not what a comment claims."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engine.campaigns.language import Campaign, Comparison, Condition, Step, Trigger, Where
from engine.config.durations import format_duration
from engine.config.settings import TimeWindow

OPERATORS = {
    "equals": "is",
    "not_equals": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "within_last": "within the last",
    "within_next": "within the next",
}


def value(v: Any) -> str:
    if isinstance(v, timedelta):
        return format_duration(v)
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, list):
        return ", ".join(value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def comparison(name: str, c: Comparison) -> str:
    ((operator, operand),) = c.operators().items()
    if operator == "exists":
        return f"{name} is set" if operand else f"{name} is not set"
    return f"{name} {OPERATORS[operator]} {value(operand)}"


def where(w: Where | None) -> str:
    return " and ".join(comparison(name, c) for name, c in (w or {}).items())


def condition(c: Condition) -> str:
    if c.any is not None:
        return "any of: " + "; ".join(condition(x) for x in c.any)
    if c.not_ is not None:
        return f"not ({condition(c.not_)})"
    if c.stage is not None:
        return f"stage is {c.stage}"
    if c.risk is not None:
        return f"risk is {c.risk}"
    if c.subscribed is not None:
        return f"subscribed to {c.subscribed}"
    if c.event is not None:
        counted = []
        if c.at_least is not None:
            counted.append(f"at least {c.at_least} times")
        if c.at_most is not None:
            counted.append(f"at most {c.at_most} times")
        text = f"did {c.event} " + (" and ".join(counted) if counted else "at least once")
        if c.within is not None:
            text += f" in the last {format_duration(c.within)}"
        if c.where:
            text += f" where {where(c.where)}"
        return text
    assert c.attribute is not None  # a condition names exactly one kind
    return comparison(c.attribute, c.comparison())


def trigger(t: Trigger) -> str:
    if t.event is not None:
        return f"event {t.event}" + (f" where {where(t.where)}" if t.where else "")
    if t.inactivity is not None:
        return f"no {t.inactivity.event or 'event'} for {format_duration(t.inactivity.for_)}"
    if t.date is not None:
        offset = t.date.offset
        shift = "" if not offset else f" {'+' if offset > timedelta(0) else '-'}{format_duration(abs(offset))}"
        return f"date in {t.date.attribute}{shift}" + (" every year" if t.date.anniversary else "")
    if t.schedule is not None:
        return f"schedule {t.schedule}"
    assert t.at is not None  # a trigger has exactly one kind
    return f"once at {value(t.at)}"


def window(w: TimeWindow) -> str:
    return f"{w.start:%H:%M}–{w.end:%H:%M}"  # noqa: RUF001 (a range of the day)


def delay(step: Step) -> str:
    return "at once" if not step.delay else f"wait {format_duration(step.delay)}"


def subject(s: str | dict[str, str] | None, locale: str) -> str:
    if isinstance(s, dict):
        return s.get(locale) or next(iter(s.values()))
    return s or ""


def audience(campaign: Campaign) -> list[str]:
    return [condition(c) for c in campaign.audience] or ["every customer"]
