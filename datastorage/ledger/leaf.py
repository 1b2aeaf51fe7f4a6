"""The bytes of an event's leaf: RFC 8785 (JCS) canonical JSON of the event object exactly as
`GET /api/v1/audit/events/{id}` returns it, and the leaf hash over them. No I/O.

The input is the dict the store's row-to-event function builds (what GET serializes): strings,
integers, floats, booleans, null, lists and objects only; timestamps, dates and ids are already
strings there. JCS sorts object keys by their UTF-16 code units, writes strings as UTF-8 with only
the mandatory escapes, and writes numbers as ECMAScript does for IEEE 754 doubles (1.0 -> 1,
1e21 -> 1e+21).

Most events hold no floats: then orjson with sorted keys writes exactly the JCS bytes (same
escapes, same integers, and code-point order equals UTF-16 order for keys below U+E000), about
25 times faster than the pure-Python canonicalizer, which handles every other event. A test
compares both on generated JSON.

JCS knows only doubles: an integer beyond ±(2**53 - 1) has no exact form. Such an integer is
written as the double nearest to it, which is what any JCS implementation that parses the GET
body does; two such integers sharing one double therefore share a leaf. Input validation, not
this module, is the place to refuse them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

from datastorage.ledger.merkle import leaf_hash

_SAFE_INTEGER = 2**53 - 1


def _as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > _SAFE_INTEGER:
        return float(value)
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    return value


# What makes orjson's sorted output differ from JCS, looked for in that output (C-speed regular
# expressions rather than a walk over the value): a float (a digit followed by ".", "e" or "E"
# outside strings; true/false/null hold no digit) and a character in U+E000..U+FFFF (UTF-8 lead
# byte 0xEE or 0xEF; anywhere, to stay simple: keys and values alike take the reference path).
# Integers beyond ±(2**53 - 1) make orjson raise (OPT_STRICT_INTEGER), as do non-string keys.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_FLOAT = re.compile(rb"[0-9][.eE]")
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _orjson_jcs(value: Any) -> bytes | None:
    """orjson's sorted output of `value` when it is its JCS form, else None."""
    try:
        text = orjson.dumps(value, option=_FAST)
    except orjson.JSONEncodeError:
        return None
    if b"\xee" in text or b"\xef" in text or _FLOAT.search(_STRING.sub(b"", text)):
        return None
    return text


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    event = dict(event)
    fast = _orjson_jcs(event)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(event)
    except rfc8785.IntegerDomainError:
        return rfc8785.dumps(_as_doubles(event))


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    return leaf_hash(canonical_bytes(event))
