"""api/passthrough.json_body reads a body exactly as `standard_body` — the standard parser plus the
storability walk, what every body took before — does (values, integer exactness, the 400 and
the field it names), whichever parser it takes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadgate.api.passthrough import json_body, standard_body
from threadgate.domain.errors import InvalidRequest


def outcome(read: Any, raw: bytes) -> str:
    try:
        return "ok " + repr(read(raw))  # repr: int vs float, -0.0, key order all count
    except InvalidRequest as exc:
        return f"400 {exc.message} param={exc.param}"


surrogate_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=6)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | surrogate_text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5) | surrogate_text, inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(values, st.booleans())
def test_any_body_reads_as_the_standard_parser_and_walk_read_it(value, ascii_only):
    raw = json.dumps({"body": value}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(json_body, raw) == outcome(standard_body, raw)


@pytest.mark.parametrize("raw", [
    b'{"max_tokens": 18446744073709551615}', b'{"max_tokens": 18446744073709551616}',
    b'{"n": -9223372036854775808}', b'{"n": -9223372036854775809}', b'{"n": -9999999999999999999}',
    b'{"n": 123456789012345678}', b'{"user": "1234567890123456789012"}', b'{"t": 1e308}', b'{"t": 2e308}',
    b'{"t": -1e400}', b'{"t": NaN}', b'{"t": Infinity}', b'{"t": 0.1000000000000000055511151231257827}',
    b'{"s": "\\ud800"}', b'{"\\udc00": 1}', b'{"s": "\xed\xa0\x80"}', b'{"s": "\\ud83d\\ude00"}',
    b'\xef\xbb\xbf{}', b'{"a": 1, "b": 2, "a": 3}', b'{"a": -0}', b'{"a": -0.0}', b'{"a": 1E2}', b"",
    b"[" * 5000, b'{"a": "\x01"}', b'"\xff"', json.dumps({"x": "é"}).encode("utf-16"),
])
def test_edge_cases_read_as_before(raw):
    assert outcome(json_body, raw) == outcome(standard_body, raw)
