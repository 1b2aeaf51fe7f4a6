"""The strict request-body decoder and its cheap screens.

`decode_json` rejects what PostgreSQL or the response codec could not carry; the screens that
decide whether the full walk must run (escapes, long digit runs, nesting) must never let such
a body through, and the level-by-level depth check must agree with the limit.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastorage.http import validation
from datastorage.http.problems import Problem

DEPTH = 32


def status_of(raw: bytes, depth: int = DEPTH):
    try:
        validation.decode_json(raw, depth)
    except Problem as exc:
        return exc.status, exc.field_errors
    return 200, None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"a":1,"a":2}', None),
        (b'{"a":1, "a" :2}', None),
        (b'{"a":1,"\\u0061":2}', None),
        (b'[{"a":1},{"b":2,"b":2}]', None),
        (b'{"a":NaN}', None),
        (b'{"a":1e400}', None),
        (b'{"a":"\xff"}', None),
        (b'{"a":"x\x01y"}', None),
        (b'{"a":1,}', None),
        (b"[" * 5000 + b"]" * 5000, "body"),
        (b'{"x":{"big":18446744073709551616}}', "x.big"),
        (b'{"x":[1,-9223372036854775809]}', "x[1]"),
        (b'{"x":"a\\u0000b"}', "x"),
        (b'{"x":["\\ud800"]}', "x[0]"),
    ],
)
def test_unstorable_bodies_are_400(raw, field):
    status, errors = status_of(raw)
    assert status == 400
    if field is not None:
        assert field in errors


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n":-9223372036854775808,"m":18446744073709551615,"f":1.5e300}',
        b'{"id":"1234567890123456789012345"}',
        b'{"msg":"line\\nnext \\u00e9 \\ud83d\\ude00 end"}',
    ],
)
def test_storable_bodies_pass(raw):
    assert status_of(raw) == (200, None)


def nested(levels: int):
    value: object = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@settings(max_examples=200, deadline=None, derandomize=True)
@given(levels=st.integers(0, 12), limit=st.integers(0, 12), siblings=st.integers(0, 3))
def test_depth_check_counts_levels(levels, limit, siblings):
    value = [nested(levels)] + [nested(levels // 2)] * siblings if levels else nested(0)
    depth = levels + 1 if levels else 0
    assert validation._deeper_than(value, limit) == (depth > limit)
