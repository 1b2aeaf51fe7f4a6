"""Workflow lifecycle (docs/api.md, "Semantic versions"): transitions, mutable
fields, SemVer 2.0.0 parsing and precedence, and which version of a name is the latest."""

from __future__ import annotations

import functools
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastorage.domain.lifecycle import (
    MUTABLE_FIELDS,
    STATUSES,
    InvalidTransition,
    SemVer,
    UnknownStatus,
    allowed_targets,
    check_transition,
    immutable_fields,
    latest_version,
    parse_semver,
    version_sort_key,
    versions_newest_first,
)

# -- transitions --------------------------------------------------------------------------------

LEGAL = {
    ("active", "disabled"),
    ("disabled", "active"),
    ("active", "deprecated"),
    ("disabled", "deprecated"),
    ("deprecated", "archived"),
}
SAME = {(status, status) for status in STATUSES}
ILLEGAL = set(itertools.product(STATUSES, STATUSES)) - LEGAL - SAME


def test_transition_table_covers_every_pair() -> None:
    assert len(LEGAL) + len(SAME) + len(ILLEGAL) == len(STATUSES) ** 2
    assert {
        ("active", "archived"),
        ("disabled", "archived"),
        ("deprecated", "active"),
        ("deprecated", "disabled"),
        ("archived", "active"),
        ("archived", "disabled"),
        ("archived", "deprecated"),
    } == ILLEGAL


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transition_is_a_change(current: str, target: str) -> None:
    assert check_transition(current, target) is True
    assert target in allowed_targets(current)


@pytest.mark.parametrize(("current", "target"), sorted(SAME))
def test_same_status_is_a_no_op(current: str, target: str) -> None:
    assert check_transition(current, target) is False


@pytest.mark.parametrize(("current", "target"), sorted(ILLEGAL))
def test_illegal_transition_is_refused(current: str, target: str) -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_transition(current, target)
    assert not isinstance(caught.value, UnknownStatus)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.current, caught.value.target) == (current, target)
    assert target not in allowed_targets(current)


def test_archived_is_final() -> None:
    assert allowed_targets("archived") == frozenset()


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("active", "enabled"),
        ("retired", "active"),
        ("Active", "disabled"),
        ("active", "ACTIVE"),
        ("bogus", "bogus"),
        ("", "active"),
    ],
)
def test_unknown_status_is_refused(current: str, target: str) -> None:
    with pytest.raises(UnknownStatus) as caught:
        check_transition(current, target)
    assert isinstance(caught.value, InvalidTransition)
    assert (caught.value.current, caught.value.target) == (current, target)


def test_allowed_targets_of_unknown_status() -> None:
    with pytest.raises(UnknownStatus):
        allowed_targets("retired")


# -- mutable fields -----------------------------------------------------------------------------


def test_mutable_fields_are_exactly_the_specified_ones() -> None:
    assert {
        "status",
        "status_reason",
        "disabled_by",
        "disabled_reason",
        "deprecation_notice",
        "updated_by",
    } == MUTABLE_FIELDS


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param({}, [], id="empty"),
        pytest.param({name: "x" for name in MUTABLE_FIELDS}, [], id="all_mutable"),
        pytest.param({"status": "disabled", "content": "x"}, ["content"], id="content"),
        pytest.param(
            {"version": "2.0.0", "status": "active", "labels": {}, "content_hash": "ab"},
            ["content_hash", "labels", "version"],
            id="several_sorted",
        ),
        pytest.param({"Status": "active"}, ["Status"], id="case_sensitive"),
    ],
)
def test_immutable_fields(patch: dict, expected: list[str]) -> None:
    assert immutable_fields(patch) == expected


# -- semantic versions: parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0", SemVer(0, 0, 0)),
        ("1.2.3", SemVer(1, 2, 3)),
        ("v1.2.3", SemVer(1, 2, 3)),
        ("10.20.30", SemVer(10, 20, 30)),
        ("1.0.0-alpha", SemVer(1, 0, 0, ("alpha",))),
        ("1.0.0-alpha.1", SemVer(1, 0, 0, ("alpha", 1))),
        ("1.0.0-0.3.7", SemVer(1, 0, 0, (0, 3, 7))),
        ("1.0.0-x.7.z.92", SemVer(1, 0, 0, ("x", 7, "z", 92))),
        ("1.0.0-x-y-z.--", SemVer(1, 0, 0, ("x-y-z", "--"))),
        ("1.0.0-0a", SemVer(1, 0, 0, ("0a",))),
        ("1.0.0--", SemVer(1, 0, 0, ("-",))),
        ("1.0.0-beta.1-", SemVer(1, 0, 0, ("beta", "1-"))),
        ("1.0.0+20130313144700", SemVer(1, 0, 0, (), ("20130313144700",))),
        ("1.0.0+001", SemVer(1, 0, 0, (), ("001",))),
        ("1.0.0-beta+exp.sha.5114f85", SemVer(1, 0, 0, ("beta",), ("exp", "sha", "5114f85"))),
        ("v1.0.0+21AF26D3----117B344092BD", SemVer(1, 0, 0, (), ("21AF26D3----117B344092BD",))),
        ("99999999999999999999.0.0", SemVer(99999999999999999999, 0, 0)),
    ],
)
def test_parse_semver_accepts(text: str, expected: SemVer) -> None:
    parsed = parse_semver(text)
    assert parsed is not None
    assert parsed == expected
    assert (parsed.prerelease, parsed.build) == (expected.prerelease, expected.build)
    assert str(parsed) == text.removeprefix("v")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "latest",
        "v",
        "1",
        "1.2",
        "v1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-01",
        "1.2.3-alpha..1",
        "1.2.3-alpha.01",
        "1.2.3+build..1",
        "1.2.3+a+b",
        "1.2.3-al_pha",
        "1.2.3-α",
        "١.٢.٣",
        "V1.2.3",
        "vv1.2.3",
        "v 1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "1.2.3\n",
        "-1.2.3",
        "1.-2.3",
        "1.2.x",
        "release-2024-01",
    ],
)
def test_parse_semver_rejects(text: str) -> None:
    assert parse_semver(text) is None


def test_parse_semver_rejects_non_strings() -> None:
    assert parse_semver(None) is None  # type: ignore[arg-type]
    assert parse_semver(123) is None  # type: ignore[arg-type]


# -- semantic versions: precedence --------------------------------------------------------------

# SemVer 2.0.0 §11 examples, ascending, plus numeric-vs-lexical cases.
ASCENDING = [
    "0.9.9",
    "1.0.0-0",
    "1.0.0-9",
    "1.0.0-10",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.9.0",
    "1.10.0",
    "2.0.0-rc.1",
    "2.0.0",
    "2.1.0",
    "2.1.1",
    "10.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(zip(ASCENDING, ASCENDING[1:], strict=False)))
def test_semver_precedence(lower: str, higher: str) -> None:
    low, high = parse_semver(lower), parse_semver(higher)
    assert low < high
    assert high > low
    assert low != high


def test_semver_sorting_a_shuffle_restores_the_ascending_list() -> None:
    shuffled = list(ASCENDING)
    random.Random(7).shuffle(shuffled)
    assert [str(v) for v in sorted(parse_semver(text) for text in shuffled)] == ASCENDING


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1.0.0+build.1", "1.0.0+build.2"),
        ("1.0.0", "1.0.0+anything"),
        ("1.0.0-rc.1+a", "1.0.0-rc.1+b"),
        ("v1.2.3", "1.2.3"),
    ],
)
def test_build_metadata_and_leading_v_do_not_change_precedence(left: str, right: str) -> None:
    a, b = parse_semver(left), parse_semver(right)
    assert a == b
    assert not a < b
    assert not b < a
    assert hash(a) == hash(b)


def test_semver_does_not_compare_with_strings() -> None:
    assert SemVer(1, 0, 0) != "1.0.0"
    with pytest.raises(TypeError):
        _ = SemVer(1, 0, 0) < "1.0.0"


_numeric = st.integers(0, 12)
_alphanumeric = st.from_regex(r"[0-9]*[A-Za-z-][0-9A-Za-z-]*", fullmatch=True).filter(
    lambda s: len(s) <= 6
)
_prerelease = st.lists(st.one_of(_numeric, _alphanumeric), max_size=4)
_versions = st.builds(
    lambda major, minor, patch, pre, build: (
        f"{major}.{minor}.{patch}"
        + ("-" + ".".join(map(str, pre)) if pre else "")
        + ("+" + build if build else "")
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    _prerelease,
    st.sampled_from(["", "b1", "001", "sha.5114f85"]),
)


def _reference_compare(left: str, right: str) -> int:
    """SemVer 2.0.0 §11 written as a plain comparator, independent of the module's key."""
    left = left.split("+", 1)[0]
    right = right.split("+", 1)[0]
    left_core, _, left_pre = left.partition("-")
    right_core, _, right_pre = right.partition("-")
    for a, b in zip(map(int, left_core.split(".")), map(int, right_core.split(".")), strict=True):
        if a != b:
            return -1 if a < b else 1
    if not left_pre or not right_pre:
        return (not left_pre) - (not right_pre) if left_pre or right_pre else 0
    left_ids, right_ids = left_pre.split("."), right_pre.split(".")
    for a, b in zip(left_ids, right_ids, strict=False):
        if a == b:
            continue
        if a.isdigit() and b.isdigit():
            return -1 if int(a) < int(b) else 1
        if a.isdigit() != b.isdigit():
            return -1 if a.isdigit() else 1
        return -1 if a < b else 1
    return (len(left_ids) > len(right_ids)) - (len(left_ids) < len(right_ids))


@settings(max_examples=300, deadline=None)
@given(st.lists(_versions, min_size=2, max_size=12))
def test_semver_order_agrees_with_the_specification(texts: list[str]) -> None:
    parsed = [parse_semver(text) for text in texts]
    assert all(version is not None for version in parsed)
    by_key = [str(v).split("+")[0] for v in sorted(parsed)]
    by_reference = [
        t.split("+")[0] for t in sorted(texts, key=functools.cmp_to_key(_reference_compare))
    ]
    assert by_key == by_reference
    for a, b in itertools.combinations(texts, 2):
        expected = _reference_compare(a, b)
        pa, pb = parse_semver(a), parse_semver(b)
        assert ((pa > pb) - (pa < pb)) == expected
        assert (pa == pb) == (expected == 0)


# -- latest version -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "latest"),
    [
        pytest.param([("1.0.0", 1)], "1.0.0", id="single"),
        pytest.param([("1.0.0", 1), ("2.0.0", 2)], "2.0.0", id="higher_created_later"),
        pytest.param([("2.0.0", 1), ("1.5.0", 2)], "2.0.0", id="higher_created_earlier"),
        pytest.param([("1.9.0", 1), ("1.10.0", 2)], "1.10.0", id="numeric_not_lexical"),
        pytest.param([("1.10.0", 1), ("1.9.0", 2)], "1.10.0", id="backport_not_latest"),
        pytest.param([("1.0.0", 1), ("1.1.0-rc.1", 2)], "1.1.0-rc.1", id="newer_prerelease"),
        pytest.param([("1.1.0", 1), ("1.1.0-rc.1", 2)], "1.1.0", id="prerelease_below_release"),
        pytest.param([("v1.2.0", 1), ("1.1.0", 2)], "v1.2.0", id="leading_v"),
        pytest.param([("1.2.0", 1), ("v1.2.0", 2)], "v1.2.0", id="equal_precedence_later_wins"),
        pytest.param([("1.0.0+b2", 2), ("1.0.0+b1", 1)], "1.0.0+b2", id="build_tie_later_wins"),
        pytest.param([("0.0.1", 1), ("latest", 2)], "0.0.1", id="semver_beats_non_semver"),
        pytest.param([("latest", 1), ("0.0.1", 2)], "0.0.1", id="semver_beats_older_text"),
        pytest.param([("beta", 1), ("alpha", 2)], "alpha", id="non_semver_by_creation"),
        pytest.param([("v2", 3), ("v10", 1), ("2024-01", 2)], "v2", id="non_semver_creation_only"),
    ],
)
def test_latest_version(versions: list[tuple[str, int]], latest: str) -> None:
    assert latest_version(versions) == latest
    assert latest_version(reversed(versions)) == latest
    assert versions_newest_first(versions)[0] == latest


def test_latest_version_of_nothing() -> None:
    with pytest.raises(ValueError):
        latest_version([])


def test_versions_newest_first() -> None:
    versions = [("1.0.0", 1), ("notes", 2), ("2.0.0-rc.1", 3), ("1.10.0", 4), ("draft", 5)]
    assert versions_newest_first(versions) == ["2.0.0-rc.1", "1.10.0", "1.0.0", "draft", "notes"]


def test_version_sort_key_puts_semver_above_non_semver() -> None:
    assert version_sort_key("0.0.0-0", 0) > version_sort_key("zzz", 10**9)
    assert version_sort_key("x", 2) > version_sort_key("x", 1)


def test_the_document_lists_exactly_the_mutable_fields() -> None:
    """The PATCH schema (openapi.yaml) and the lifecycle rule name the same fields."""
    from datastorage.schemas import openapi_document

    schema = openapi_document()["components"]["schemas"]["UpdateWorkflowRequest"]
    assert set(schema["properties"]) == MUTABLE_FIELDS
    assert schema["additionalProperties"] is False
