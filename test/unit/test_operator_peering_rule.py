"""kopf's peering rule as the maintenance loop applies it: active when this replica's record is
live and no other live record has a priority at least as high."""

from __future__ import annotations

import datetime as dt

from datastorage.operator.peering import is_active

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def record(priority: int, seconds_ago: float, lifetime: int = 10) -> dict:
    seen = (NOW - dt.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_the_highest_live_priority_is_active() -> None:
    status = {"a": record(200, 1), "b": record(100, 1)}
    assert is_active(status, "a", 200, NOW)
    assert not is_active(status, "b", 100, NOW)


def test_a_dead_higher_peer_no_longer_blocks() -> None:
    status = {"a": record(200, 30), "b": record(100, 1)}
    assert is_active(status, "b", 100, NOW)


def test_equal_priorities_pause_both_as_kopf_does() -> None:
    status = {"a": record(100, 1), "b": record(100, 1)}
    assert not is_active(status, "a", 100, NOW)
    assert not is_active(status, "b", 100, NOW)


def test_not_registered_or_expired_self_is_not_active() -> None:
    assert not is_active({}, "a", 100, NOW)
    assert not is_active({"a": record(100, 30)}, "a", 100, NOW)
    assert not is_active({"a": {"priority": 100}}, "a", 100, NOW)


def test_naive_timestamps_are_utc_and_missing_lifetime_is_60_seconds() -> None:
    naive = (NOW - dt.timedelta(seconds=50)).replace(tzinfo=None).isoformat()
    assert is_active({"a": {"priority": 1, "lastseen": naive}}, "a", 1, NOW)
