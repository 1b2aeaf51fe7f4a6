"""The bytes of an event's leaf: RFC 8785 (JCS) canonical JSON of the event object exactly as
`GET /api/v1/audit/events/{id}` returns it, and the leaf hash over them. No I/O.

The input is the dict the store's row-to-event function builds (what GET serializes): strings,
integers, floats, booleans, null, lists and objects only; timestamps, dates and ids are already
strings there. JCS sorts object keys by their UTF-16 code units, writes strings as UTF-8 with only
the mandatory escapes, and writes numbers as ECMAScript does for IEEE 754 doubles (1.0 -> 1,
1e21 -> 1e+21).

Most events hold no floats. Their JCS bytes are written by a small C extension (`_jcs.c`,
built when the package is installed with a C compiler) or, without it, by orjson with sorted
keys (same escapes, same integers, and code-point order equals UTF-16 order for keys below
U+E000) after a walk that looks for floats; the pure-Python canonicalizer (rfc8785) handles
every other event. The writer computes a leaf for every event it stores, so this is on the
ingest path: for an event of the benchmark's kind (about 1.3 KB of JCS) the C form takes about
1.9 µs, the orjson form with its walk about 5.5 µs, and rfc8785 about 25 times as long as
the orjson form. Tests compare all three on generated JSON.

JCS knows only doubles: an integer beyond ±(2**53 - 1) has no exact form. Such an integer is
written as the double nearest to it, which is what any JCS implementation that parses the GET
body does; two such integers sharing one double therefore share a leaf. Input validation, not
this module, is the place to refuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

from datastorage.ledger.merkle import leaf_hash

try:  # the C form of `exact_json` (_jcs.c), built when the package was installed with a compiler
    from datastorage.ledger._jcs import dumps as _native_exact_json
except ImportError:  # pragma: no cover — installed without a C compiler
    _native_exact_json = None

NATIVE = _native_exact_json is not None  # whether the C extension writes `exact_json`

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


# What makes orjson's sorted output differ from JCS: a float anywhere in the value, found by a
# walk over the containers that also sends any type but the JSON ones to the reference path (a
# regular expression that strips strings from the output to look for numbers costs ten times
# more); and a character in U+E000..U+FFFF, whose order among keys differs between code points
# and UTF-16 units (looked for in the output as UTF-8 lead byte 0xEE or 0xEF, anywhere, to stay
# simple). Integers beyond ±(2**53 - 1) make orjson raise (OPT_STRICT_INTEGER), as do non-string
# keys.
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _only_exact_types(value: dict[str, Any]) -> bool:
    """Whether `value` holds only strings, integers, booleans, null, dicts and lists (no float,
    and nothing else orjson might write differently from JCS)."""
    stack: list[Any] = [value]
    while stack:
        container = stack.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is str or kind is int or kind is bool or item is None:
                continue
            if kind is dict or kind is list:
                stack.append(item)
                continue
            return False
    return True


def exact_json(value: dict[str, Any]) -> bytes | None:
    """The JCS bytes of a JSON object when every value in it is a string, an integer within
    ±(2**53 - 1), a boolean or null and no key sorts differently by UTF-16 units (else None).
    Those values also come back from PostgreSQL exactly as they went in (text, integer and
    jsonb columns alike), so a leaf built from an event's `exact_json` equals the one computed
    later from the stored row; a float comes back as PostgreSQL's numeric writes it, so such an
    event is hashed from its row. Written by the C extension when it is built, else by orjson
    with sorted keys after a walk that looks for floats (`orjson_exact_json`)."""
    if _native_exact_json is not None:
        return _native_exact_json(value)
    return orjson_exact_json(value)


def orjson_exact_json(value: dict[str, Any]) -> bytes | None:
    """`exact_json` without the C extension (which writes the same bytes, without the walk)."""
    if not _only_exact_types(value):
        return None
    try:
        text = orjson.dumps(value, option=_FAST)
    except orjson.JSONEncodeError:
        return None
    if b"\xee" in text or b"\xef" in text:
        return None
    return text


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    event = dict(event)
    fast = exact_json(event)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(event)
    except rfc8785.IntegerDomainError:
        return rfc8785.dumps(_as_doubles(event))


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    return leaf_hash(canonical_bytes(event))


def event_leaf_hash_if_exact(event: dict[str, Any]) -> bytes | None:
    """The leaf hash of an event about to be stored, from the dict its writer stores (holding
    exactly the fields GET returns, with the values GET returns: the caller checks the names),
    when `exact_json` writes it; None otherwise (a float, an integer beyond ±(2**53 - 1)): the
    event is then hashed from its stored row, as GET returns it."""
    text = exact_json(event)
    return None if text is None else leaf_hash(text)
