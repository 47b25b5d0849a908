"""JSON text for the store, written and read by orjson (in Rust: an event's properties in a tenth
of the standard library's time), and by the standard library wherever the two would differ.
orjson refuses a lone surrogate, an integer beyond 64 bits and a key that is not text, which the
standard library writes, and writes NaN and Infinity as `null`, which the standard library
refuses (as the store must: `allow_nan=False`); so a text holding `null` is written again by the
standard library. Both write JSON that both databases read the same.

Reading, orjson refuses NaN, Infinity and a lone surrogate, which the standard library reads, and
reads an integer of more than 64 bits as a float: a text it refuses, or with a run of 19 digits or
more, is read by the standard library."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Dates and dataclasses are no JSON: orjson would write them, the standard library refuses them.
QUICK = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
STANDARD = json.JSONEncoder(allow_nan=False).encode  # one encoder for all: json.dumps builds one a call
LONG_NUMBER = re.compile(r"\d{19}")


def quick_json(value: Any) -> bytes | None:
    """`value` as orjson writes it, or None where the standard library's answer may differ."""
    try:
        text = orjson.dumps(value, option=QUICK)
    except TypeError:  # orjson.JSONEncodeError
        return None
    return None if b"null" in text else text


def json_text(value: Any) -> str:
    """`value` as JSON text for a JSON column; ValueError for a number that is not finite."""
    quick = quick_json(value)
    return STANDARD(value) if quick is None else quick.decode()


def json_value(text: str | bytes) -> Any:
    """A JSON column's text as the standard library reads it (orjson where the two agree)."""
    if LONG_NUMBER.search(text if isinstance(text, str) else text.decode()) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
