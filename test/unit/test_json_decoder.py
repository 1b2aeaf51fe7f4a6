"""The strict request-body decoder and its cheap screens.

`decode_json` rejects what PostgreSQL or the response codec could not carry; the screens that
decide whether the full walk must run (escapes, long digit runs, nesting) must never let such
a body through, and the level-by-level depth check must agree with the limit.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastorage.http import body
from datastorage.http.problems import Problem

DEPTH = 32


def status_of(raw: bytes, depth: int = DEPTH):
    try:
        body.decode_json(raw, depth)
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
    assert body._deeper_than(value, limit) == (depth > limit)


# The orjson fast path: it may only answer where the strict decoder gives the same value.


def strict_outcome(raw: bytes):
    try:
        return ("ok", body._strict_decode(raw, DEPTH))
    except Problem as exc:
        return ("error", exc.status)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',
        b'{"a":1, "a" :2}',
        b'{"a":1,"a"\n:2}',
        b'{"a":1,"\\u0061":2}',
        b'{"x":{"k":1},"y":{"k":2,"k":3}}',
        b'[{"a":1},{"b":2,"b":2}]',
        b'{"a\\"":1,"a\\"":2}',
        b'{"a\\\\":1,"a\\\\":2}',
        b'{"a":" :","a":1}',
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"a":"\xff"}',
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_fast_path_never_accepts_what_the_strict_decoder_rejects(raw):
    assert strict_outcome(raw)[0] == "error"
    assert body._fast_decode(raw) is body._UNDECIDED


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}',
        b'{"time":"2026-11-28T01:02:03Z","url":"http://x:80/a"}',
        b'{"a" : 1, "b"\n:\t2}',
        b'{"msg":"line\\nnext\\t/\\/"}',
    ],
)
def test_fast_path_answers_common_bodies_like_the_strict_decoder(raw):
    assert ("ok", body._fast_decode(raw)) == strict_outcome(raw)


key_text = st.text(alphabet=st.sampled_from('ab": \\\u00e9\u0000\n:[]{}'), max_size=3)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | key_text
)
json_trees = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.lists(st.tuples(key_text, inner), max_size=4),
    max_leaves=12,
)


def render(value, ensure_ascii: bool, colon: str) -> str:
    """JSON text of a tree; a list of (key, value) pairs is an object that may repeat keys."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        items = (
            json.dumps(k, ensure_ascii=ensure_ascii) + colon + render(v, ensure_ascii, colon)
            for k, v in value
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, ensure_ascii, colon) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(tree=json_trees, ensure_ascii=st.booleans(), colon=st.sampled_from([":", " : ", "\n:"]))
def test_fast_path_agrees_with_the_strict_decoder(tree, ensure_ascii, colon):
    raw = render(tree, ensure_ascii, colon).encode("utf-8", "surrogatepass")
    fast = body._fast_decode(raw)
    if fast is not body._UNDECIDED:
        assert ("ok", fast) == strict_outcome(raw)
