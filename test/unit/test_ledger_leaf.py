"""Leaf bytes: RFC 8785 canonical JSON of the event exactly as GET returns it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastorage.ledger.leaf import canonical_bytes, event_leaf_hash
from datastorage.store.audit_rows import COLUMNS, row_to_event

# RFC 8785 §3.2.2 and §3.2.3: the published input and canonical output.
RFC_INPUT = (
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
    ' "literals": [null, true, false]}'
)
RFC_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)
RFC_SORT_INPUT = (
    '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With'
    ' Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
    ' "\\u00f6": "Latin Small Letter O With Diaeresis"}'
)
RFC_SORTED_VALUES = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]


def test_rfc_8785_published_example():
    assert canonical_bytes(json.loads(RFC_INPUT)) == RFC_OUTPUT.encode()


def test_rfc_8785_sorts_keys_by_utf16_code_units():
    canonical = canonical_bytes(json.loads(RFC_SORT_INPUT)).decode()
    assert list(json.loads(canonical).values()) == RFC_SORTED_VALUES


def _stored_row(event_data) -> dict:
    row = {column: None for column, _ in COLUMNS}
    row.update(
        event_id=uuid.UUID("0b7b3a5e-3c1f-4d55-9d6c-0f6e1a2b3c4d"),
        event_version="1.0",
        event_timestamp=dt.datetime(2026, 3, 1, 10, 0, 0, 120000, tzinfo=dt.UTC),
        event_date=dt.date(2026, 3, 1),
        event_type="gateway.signal.received",
        event_category="gateway",
        event_action="received",
        event_outcome="success",
        actor_type="service",
        actor_id="gateway-service",
        resource_type="gateway",
        resource_id="r-1",
        correlation_id="c-1",
        parent_event_id=uuid.UUID("1b7b3a5e-3c1f-4d55-9d6c-0f6e1a2b3c4d"),
        parent_event_date=dt.date(2026, 2, 28),
        severity="info",
        duration_ms=12,
        event_data=event_data,
        retention_days=2555,
        is_sensitive=False,
        created_at=dt.datetime(2026, 3, 1, 11, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )
    return row


def test_leaf_is_computed_from_the_get_body_the_api_serves():
    data = {"é": "naïve ☃", "n": 1.5, "i": 10, "big": 2**60, "nested": {"b": [True, None]}}
    event = row_to_event(_stored_row(data))
    body = orjson.dumps(event)  # what the GET handler sends
    assert canonical_bytes(event) == canonical_bytes(json.loads(body))
    assert event_leaf_hash(event) == hashlib.sha256(b"\x00" + canonical_bytes(event)).digest()
    canonical = canonical_bytes(event).decode()
    assert '"event_timestamp":"2026-03-01T10:00:00.120000Z"' in canonical
    assert '"created_at":"2026-03-01T09:00:00Z"' in canonical
    assert '"event_date":"2026-03-01"' in canonical
    assert '"é":"naïve ☃"' in canonical  # UTF-8, not \\u escapes
    assert '"big":1152921504606847000' in canonical  # beyond 2**53: as ECMAScript writes it


def test_any_change_to_a_returned_field_changes_the_leaf():
    event = row_to_event(_stored_row({"a": 1}))
    original = event_leaf_hash(event)
    for name, value in event.items():
        changed = dict(event)
        changed[name] = "x" if value != "x" else "y"
        assert event_leaf_hash(changed) != original, name
    assert event_leaf_hash({**event, "event_data": {"a": 2}}) != original
    assert event_leaf_hash(dict(reversed(list(event.items())))) == original


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=6), _JSON, max_size=6))
def test_the_fast_path_writes_exactly_what_the_reference_canonicalizer_writes(value):
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_keys_ordered_differently_by_utf16_and_code_points_take_the_reference_path():
    value = {"\U0001f600": 1, "\ufb33": 2}  # UTF-16: surrogate 0xD83D sorts before 0xFB33
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).index("\U0001f600".encode()) < canonical_bytes(value).index(
        "\ufb33".encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        {"s": "1.5", "t": "2e9", "u": 'a"1.0"\\', "v": 7},  # number-like text inside strings
        {"f": 2.0, "g": [1, {"h": -0.0}], "i": 1e21},  # floats, nested and whole-valued
        {"big": 2**60, "neg": -(2**53)},  # beyond ±(2**53 - 1)
        {"k\ue000": 1, "\U0001f600": 2},  # a key in U+E000..U+FFFF beside an astral key
        {"v": "\uffff", "w": "\x00\x1f\u2028"},  # such characters in values, control escapes
    ],
)
def test_what_the_fast_path_must_not_write_as_is_matches_the_reference(value):
    expected = (
        rfc8785.dumps(value)
        if "big" not in value
        else rfc8785.dumps({key: float(item) for key, item in value.items()})
    )
    assert canonical_bytes(value) == expected
