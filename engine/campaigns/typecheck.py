"""Conditions checked against the declared data model (config.yaml's `attributes:` and `events:`):
`gte: 3` on an attribute declared `string`, `within_last` on a number, an `in:` value outside the
declared `values`. Each is a problem on the line of the operator, before a campaign ever selects
an audience with a comparison that cannot mean anything. Undeclared names are not checked.

It reads the campaign file as written (after the campaign model accepted it), so that every
problem keeps its line; it imports nothing of the campaign language, which calls it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.config.datamodel import CORE_TYPES, DataModel, Declared, FieldType, convert
from engine.config.source import KeyPath, Located
from engine.errors import Problem

ORDERED = {FieldType.NUMBER, FieldType.INTEGER, FieldType.DATE, FieldType.DATETIME}
DATES = {FieldType.DATE, FieldType.DATETIME}
COMPARED = ("gt", "gte", "lt", "lte")
MATCHED = ("equals", "not_equals", "in", "not_in")


def condition_type_problems(located: Located, model: DataModel) -> list[Problem]:
    """Every type problem of one campaign file's conditions, each located at its operator."""
    return [
        located.problem(path, f"{name} is declared {declared.type.value} in config.yaml: {message}")
        for path, name, declared, message in _checks(located.data, model)
    ]


Check = tuple[KeyPath, str, Declared, str]


def _checks(campaign: dict[str, Any], model: DataModel) -> Iterator[Check]:
    for index, condition in enumerate(campaign.get("audience") or []):
        yield from _condition(condition, ("audience", index), model)
    for number, step in enumerate(campaign.get("steps") or []):
        for index, condition in enumerate(step.get("audience") or []):
            yield from _condition(condition, ("steps", number, "audience", index), model)
    trigger = campaign.get("trigger") or {}
    if isinstance(trigger.get("event"), str):
        yield from _where(trigger["event"], trigger.get("where"), ("trigger", "where"), model)
    date_trigger = trigger.get("date")
    if isinstance(date_trigger, dict) and isinstance(date_trigger.get("attribute"), str):
        name = date_trigger["attribute"]
        declared = model.attribute(name) or CORE_TYPES.get(name)
        if declared is not None and declared.type not in DATES:
            yield ("trigger", "date", "attribute"), name, declared, "a date trigger needs a date or datetime"
    for index, rule in enumerate(campaign.get("exit") or []):
        if isinstance(rule, dict) and isinstance(rule.get("event"), str):
            yield from _where(rule["event"], rule.get("where"), ("exit", index, "where"), model)


def _condition(condition: Any, path: KeyPath, model: DataModel) -> Iterator[Check]:
    if not isinstance(condition, dict):
        return
    for index, inner in enumerate(condition.get("any") or []):
        yield from _condition(inner, (*path, "any", index), model)
    if condition.get("not") is not None:
        yield from _condition(condition["not"], (*path, "not"), model)
    if isinstance(condition.get("event"), str):
        yield from _where(condition["event"], condition.get("where"), (*path, "where"), model)
    name = condition.get("attribute")
    if isinstance(name, str):
        declared = model.attribute(name) or CORE_TYPES.get(name)
        if declared is not None:
            yield from _comparison(condition, path, name, declared)


def _where(event: str, where: Any, path: KeyPath, model: DataModel) -> Iterator[Check]:
    for name, comparison in (where or {}).items() if isinstance(where, dict) else ():
        declared = model.event_property(event, str(name))
        if declared is None:
            continue
        if isinstance(comparison, dict):
            yield from _comparison(comparison, (*path, name), str(name), declared)
        else:  # `where: {plan: pro}` is short for `equals: pro`
            yield from _comparison({"equals": comparison}, (*path, name), str(name), declared)


def _comparison(operators: dict[str, Any], path: KeyPath, name: str, declared: Declared) -> Iterator[Check]:
    for operator, operand in operators.items():
        message = _mismatch(declared, operator, operand)
        if message is not None:
            yield (*path, operator), name, declared, message


def _mismatch(declared: Declared, operator: str, operand: Any) -> str | None:
    """Why `operator: operand` cannot apply to a value of the declared type, or None."""
    kind = declared.type
    if operator in ("within_last", "within_next"):
        return None if kind in DATES else f"{operator} needs a date or datetime"
    if operator in COMPARED:
        if kind not in ORDERED:
            return f"{operator} compares numbers or dates, not {_plural(kind)}"
        ordered = Declared(type=FieldType.NUMBER if kind == FieldType.INTEGER else kind)
        return _converts(ordered, operand)
    if operator in MATCHED:
        if kind == FieldType.LIST:
            return f"{operator} cannot test a list: test it with exists"
        for item in operand if isinstance(operand, list) else [operand]:
            message = _converts(declared, item)
            if message is not None:
                return message
    return None


def _converts(declared: Declared, operand: Any) -> str | None:
    try:
        convert(declared, operand)
    except ValueError as exc:
        return str(exc)
    return None


def _plural(kind: FieldType) -> str:
    return {FieldType.STRING: "text", FieldType.BOOLEAN: "true or false", FieldType.LIST: "a list"}[kind]
