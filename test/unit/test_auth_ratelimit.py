"""Per-caller token bucket and its header fields (docs/auth.md)."""

from __future__ import annotations

import pytest
from auth_support import ManualClock

from datastorage.auth.ratelimit import RateLimiter, limiter_from_settings
from datastorage.config import ConfigError, load_settings


def test_burst_then_refill_at_the_rate():
    clock = ManualClock()
    limiter = RateLimiter(10, 5, clock=clock)
    assert [limiter.take("a", 1).allowed for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.1)  # one unit back
    assert limiter.take("a", 1).allowed
    assert not limiter.take("a", 1).allowed


def test_callers_have_separate_buckets():
    limiter = RateLimiter(1, 2, clock=ManualClock())
    assert limiter.take("a", 2).allowed
    assert not limiter.take("a", 1).allowed
    assert limiter.take("b", 2).allowed


def test_a_refusal_says_when_the_cost_fits_and_spends_nothing():
    clock = ManualClock()
    limiter = RateLimiter(2, 10, clock=clock)
    assert limiter.take("a", 9).allowed
    refused = limiter.take("a", 5)  # 1 left, 4 missing at 2/s
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 1, 2)
    clock.advance(2)
    assert limiter.take("a", 5).allowed


def test_a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt():
    clock = ManualClock()
    limiter = RateLimiter(10, 5, clock=clock)
    assert limiter.take("a", 25).allowed
    refused = limiter.take("a", 1)
    assert not refused.allowed and refused.retry_after == 3  # 20 units of debt + 1 at 10/s
    clock.advance(2.1)
    assert limiter.take("a", 1).allowed


def test_headers_follow_the_ietf_ratelimit_draft_syntax():
    limiter = RateLimiter(2, 3, clock=ManualClock())
    for _ in range(3):
        limiter.take("a", 1)
    refused = limiter.take("a", 1)
    assert limiter.headers(refused) == {
        "RateLimit-Policy": '"writes";q=3;w=2',
        "RateLimit": '"writes";r=0;t=1',
        "Retry-After": "1",
    }


def test_burst_defaults_to_one_second_worth_and_zero_rate_is_off():
    assert RateLimiter(7.5).burst == 8
    assert limiter_from_settings(load_settings({})) is None
    limiter = limiter_from_settings(
        load_settings(
            {
                "DATASTORAGE_AUTH": "kubernetes",
                "DATASTORAGE_RATE_LIMIT_EVENTS": "100",
                "DATASTORAGE_RATE_LIMIT_BURST": "500",
            }
        )
    )
    assert limiter is not None and (limiter.rate, limiter.burst) == (100, 500)


def test_a_limit_without_authentication_is_a_configuration_error():
    with pytest.raises(ConfigError, match="DATASTORAGE_RATE_LIMIT_EVENTS.*DATASTORAGE_AUTH"):
        load_settings({"DATASTORAGE_RATE_LIMIT_EVENTS": "100"})


def test_tracked_callers_are_bounded():
    limiter = RateLimiter(1, 1, clock=ManualClock(), max_callers=100)
    for index in range(1000):
        limiter.take(f"user-{index}", 1)
    assert len(limiter._buckets) == 100
