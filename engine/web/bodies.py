"""Request bodies from the outside, checked before anything reads them: JSON that parses within a
depth (json.loads recurses, so deep nesting is a RecursionError, and a deep value breaks whatever
walks it later), text that is text (a lone UTF-16 surrogate cannot be encoded to store or print),
the shape each API item must have, and dates that exist once moved to UTC. Each refusal names
what to fix; typing each value is the importer's (engine/customers/importing.py)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from engine.clock import parse_instant

MAX_DEPTH = 32  # a customer's attributes or an event's properties need a few levels, not thousands
SURROGATE = re.compile("[\ud800-\udfff]")
# fields of an item that must be a mapping, when given, by the kind of item
CONTAINERS = frozenset({dict, list})  # what json.loads makes that nests (exactly these types)
MAPPINGS = {"customers": ("topics", "attributes"), "events": ("properties",)}
# Every digit as 0, every other byte as a space: a run of 20 zeros is a run of 20 digits.
DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
LONG_NUMBER = b"0" * 20


class BadJson(ValueError):
    """A body that is not JSON the service accepts; the message says why."""


def loads(body: bytes) -> Any:
    """The body as JSON within MAX_DEPTH, with finite numbers only (NaN, Infinity and 1e400 are
    no numbers a store or a template can use), or BadJson. orjson reads it (in Rust, a batch of
    events in a quarter of the standard library's time); what orjson refuses, or might read
    otherwise, the standard library reads, so that either answer is the standard library's."""
    try:
        value = _standard_loads(body) if _long_number(body) else orjson.loads(body)
    except orjson.JSONDecodeError:  # not JSON, NaN, 1e400, a lone surrogate: read as before
        value = _standard_loads(body)
    if depth(value) > MAX_DEPTH:
        raise BadJson(f"the body is nested too deeply: at most {MAX_DEPTH} levels")
    return value


def _long_number(body: bytes) -> bool:
    """Whether the body may hold an integer beyond 64 bits, which orjson reads as a float and the
    standard library as the exact integer: 20 digits in a row, in a number or not."""
    return LONG_NUMBER in body.translate(DIGITS)


def _standard_loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadJson(f"the body is nested too deeply: at most {MAX_DEPTH} levels") from None
    except BadJson:
        raise
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise BadJson(f"the body is not valid JSON: {exc}") from None


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 saying why not."""
    try:
        return loads(body)
    except BadJson as exc:
        raise HTTPException(400, str(exc)) from None


def _no_constant(name: str) -> float:
    raise BadJson(f"the body holds {name}, which is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is too large")
    return value


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), without recursion: one level
    at a time, so that a body of thousands of calls costs a few list comprehensions, not a loop
    in Python per value."""
    level, containers = 0, [value] if type(value) in CONTAINERS else []
    while containers:
        level += 1
        containers = [
            child
            for item in containers
            for child in (item.values() if type(item) is dict else item)
            if type(child) in CONTAINERS
        ]
    return level


def item_problem(kind: str, item: Any, timezone: str) -> str | None:
    """Why one item of /api/<kind> cannot be read at all, or None: its shape, its text, its dates."""
    if not isinstance(item, dict):
        return "each item must be a JSON object"
    for name in MAPPINGS[kind]:
        if item.get(name) is not None and not isinstance(item[name], dict):
            return f"'{name}' must be an object (name: value), not {type(item[name]).__name__}"
    for path, text in strings(item):
        if SURROGATE.search(text):
            return f"{escaped(path)} holds a lone UTF-16 surrogate, which is not text"
        if out_of_range(text, timezone):
            return f"{path}: '{text}' is out of range once moved to UTC"
    return None


def escaped(text: str) -> str:
    """Text with its surrogates written as JSON escapes (\\ud800), so that a message can quote it."""
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every text in `value`, keys included, with where it is (`attributes.plan`, `tags[2]`)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key)
            yield from strings(child, where)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from strings(child, f"{path}[{index}]")


def out_of_range(text: str, timezone: str) -> bool:
    """An ISO date and time that parses but falls outside years 1-9999 in UTC (9999-12-31T23:59-05:00)."""
    if not (10 < len(text) <= 40 and text[4:5] == "-" and text[7:8] == "-"):  # a date alone moves nowhere
        return False
    try:
        parse_instant(text, timezone)
    except ValueError:
        return False  # not a date at all: the importer judges it
    except OverflowError:
        return True
    return False
