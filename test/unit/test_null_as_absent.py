"""Fields marked `x-null-means-absent`: found in a schema, their nulls dropped, nothing else."""

from __future__ import annotations

from datastorage.schemas.coercion import EACH, drop_nulls, null_as_absent_fields

MARK = {"x-null-means-absent": True}

SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": ["string", "null"], **MARK},
        "b": {"type": ["string", "null"]},
        "inner": {
            "type": "object",
            "properties": {"c": {"type": ["integer", "null"], **MARK}},
        },
        "items": {
            "type": "array",
            "items": {"allOf": [{"properties": {"d": {"type": ["string", "null"], **MARK}}}]},
        },
    },
}


def normalized(body):
    for parent, names in null_as_absent_fields(SCHEMA):
        drop_nulls(body, parent, names)
    return body


def test_marked_fields_are_found_grouped_by_object():
    assert null_as_absent_fields(SCHEMA) == [
        ((), ("a",)),
        (("inner",), ("c",)),
        (("items", EACH), ("d",)),
    ]


def test_only_nulls_of_marked_fields_are_dropped_at_every_depth():
    body = {
        "a": None,
        "b": None,
        "inner": {"c": None, "x": None},
        "items": [{"d": None, "e": None}, {"d": "kept"}, "not an object"],
        "data": {"a": None},
    }
    assert normalized(body) == {
        "b": None,
        "inner": {"x": None},
        "items": [{"e": None}, {"d": "kept"}, "not an object"],
        "data": {"a": None},
    }


def test_a_batch_of_items_is_normalized_item_by_item():
    names = ("a", "b")
    batch = [{"a": None, "b": 0}, {"a": "", "b": None}, None]
    drop_nulls(batch, (EACH,), names)
    assert batch == [{"b": 0}, {"a": ""}, None]
