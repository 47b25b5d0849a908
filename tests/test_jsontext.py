"""The store's JSON text: orjson writes it where it writes what the standard library would read
back the same, the standard library writes the rest, and a number that is not finite is refused."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.store.jsontext import json_text, quick_json

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
