"""The fast writers of JCS bytes behind `leaf.exact_json` — the C extension (`ledger/_jcs.c`)
and orjson after a walk — against the reference canonicalizer (rfc8785): whenever a fast writer
writes, it writes the reference's bytes; what it cannot write exactly it leaves (None) to the
reference."""

from __future__ import annotations

import enum
import random
import shutil
import sysconfig
from collections import OrderedDict
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastorage.ledger import leaf

try:
    from datastorage.ledger import _jcs
except ImportError:  # installed without a C compiler: only the orjson writer is tested
    _jcs = None

WRITERS = [pytest.param(leaf.orjson_exact_json, id="orjson")]
if _jcs is not None:
    WRITERS.append(pytest.param(_jcs.dumps, id="c"))


def _c_writer():
    """The C writer; a skip only where no C compiler could have built it, else a failure."""
    if _jcs is not None:
        return _jcs.dumps
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the package installs without _jcs")
    pytest.fail("a C compiler is here, but pip install -e . did not build ledger/_jcs.c")


def test_the_c_extension_is_built_on_a_machine_with_a_c_compiler():
    _c_writer()
    assert leaf.NATIVE, "the extension is built, but leaf.exact_json does not use it"


_SAFE = 2**53 - 1
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=8)
    ),
    max_leaves=30,
)


def _left_to_the_reference(value: Any) -> bool:
    """What the C writer must not write: a float, an integer beyond ±(2**53 - 1), a key
    holding a character in U+E000..U+FFFF."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if isinstance(value, int):
        return abs(value) > _SAFE
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_left_to_the_reference(item) for item in value)
    return any(
        any("\ue000" <= c <= "\uffff" for c in key) or _left_to_the_reference(item)
        for key, item in value.items()
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=10), _JSON, max_size=10))
def test_generated_json_is_written_as_the_reference_writes_it(value):
    for writer in (leaf.orjson_exact_json, *([_jcs.dumps] if _jcs else [])):
        written = writer(value)
        if written is not None:
            assert written == rfc8785.dumps(value), writer
    if _jcs is not None:
        assert (_jcs.dumps(value) is None) == _left_to_the_reference(value)


class _Level(enum.IntEnum):
    HIGH = 1


class _Text(str):
    pass


_ESCAPES = '\x00\x01\x07\x08\t\n\x0b\x0c\r\x1e\x1f "\\/\x7f\u2028\u2029é€\U0001f600'


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(
    "value",
    [
        {"s": _ESCAPES},
        *({"s": "a" * i + '"' + "b" * (17 - i), "t": "x" * i + "\x01"} for i in range(18)),
        {"big": "y" * 5000 + "\n" + "z" * 3000},
        {"max": _SAFE, "min": -_SAFE, "zero": 0, "one": 1, "minus": -1},
        {"t": True, "f": False, "n": None, "one": 1, "zero": 0},
        {"a": {}, "b": [], "c": [{}, [], [[]]], "": ""},
        {f"k{random.Random(i).random()}": i for i in range(40)},  # more members than the stack
        {
            "event_data": 1,
            "event_date": 2,
            "event": 3,
            "event_": 4,
            "aaaaaaaa": 5,
            "aaaaaaaaa": 6,
            "aaaaaaab": 7,
            "aaaaaaa": 8,
        },  # fmt: skip
        {"é": 1, "z": 2, "€": 3, "\U0001f600": 4, "\x7f": 5, "\u0080": 6},
        {"v": "\ue000\uffff"},  # such characters in values do not change the order
        {"deep": [[[[[[[[[[{"x": [1]}]]]]]]]]]]},
    ],
)
def test_edge_cases_are_written_as_the_reference_writes_them(writer, value):
    written = writer(value)
    assert written == rfc8785.dumps(value) or written is None
    if writer is not leaf.orjson_exact_json:
        assert written is not None


def _nested(depth: int) -> dict:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"v": value}


@pytest.mark.parametrize(
    "value",
    [
        {"f": 1.0},
        {"f": [0, {"g": -0.5}]},
        {"i": _SAFE + 1},
        {"i": -_SAFE - 1},
        {"i": 2**70},
        {"\ue000": 1, "\U0001f600": 2},  # U+E000 sorts after U+1F600 by UTF-16 units
        {"k\uffff": 1},
        {"s": "\ud800"},  # a lone surrogate: no UTF-8 form
        {"\udfff": 1},
        {"t": (1, 2)},
        {"e": _Level.HIGH},
        {"s": _Text("x")},
        {"d": OrderedDict(a=1)},
        {"b": b"bytes"},
        {1: "not a str key"},
        _nested(200),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_the_c_writer_leaves_what_it_cannot_write_exactly_to_the_reference(value):
    assert _c_writer()(value) is None


def test_the_c_writer_writes_deep_values_up_to_its_limit():
    dumps = _c_writer()
    assert dumps(_nested(100)) == rfc8785.dumps(_nested(100))
    assert dumps("top-level str") == b'"top-level str"'
    assert dumps([True, None, -3]) == b"[true,null,-3]"
