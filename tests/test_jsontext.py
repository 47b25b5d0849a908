"""The store's JSON text: orjson writes it where it writes what the standard library would read
back the same, the standard library writes the rest, and a number that is not finite is refused."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.store.jsontext import json_text, json_value, quick_json

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=6)  # lone surrogates too
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=10,
)


@given(VALUES)
def test_the_text_reads_back_as_the_value(value):
    assert json.loads(json_text(value)) == value


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_that_is_not_finite_is_refused_anywhere(number):
    with pytest.raises(ValueError):
        json_text({"a": [1, {"b": number}]})


@pytest.mark.parametrize("value", [{"n": None}, {"n": math.nan}, "\ud800", 2**64, {1: "a"}])
def test_orjson_leaves_what_it_might_write_otherwise_to_the_standard_library(value):
    assert quick_json(value) is None


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (1.0 == 1, but a float is not an int)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


@given(VALUES | st.floats())
def test_a_stored_text_reads_as_the_standard_library_reads_it(value):
    text = json.dumps(value)  # NaN and Infinity too: a row stored before the store refused them
    assert same(json_value(text), json.loads(text))
    assert same(json_value(text.encode()), json.loads(text))


@pytest.mark.parametrize("text", ["12345678901234567890123", "[-9223372036854775809]", "1e400", "[NaN]", '"\\ud800"'])
def test_what_orjson_reads_otherwise_is_read_by_the_standard_library(text):
    assert same(json_value(text), json.loads(text))
