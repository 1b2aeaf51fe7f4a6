"""Review caches: TTL, LRU bound, single-flight, errors never cached (docs/auth.md)."""

from __future__ import annotations

import asyncio

import pytest
from auth_support import ManualClock, jwt_with_exp

from datastorage.auth.authenticator import jwt_expiry
from datastorage.auth.cache import ReviewCache


def loader(calls: list[str], value: str, ttl: float, delay: float = 0.0):
    async def load():
        calls.append(value)
        if delay:
            await asyncio.sleep(delay)
        return value, ttl

    return load


def test_an_entry_lives_exactly_its_ttl():
    clock = ManualClock()
    cache: ReviewCache[str] = ReviewCache("token", clock=clock)
    calls: list[str] = []

    async def main():
        assert await cache.get("k", loader(calls, "a", 30)) == "a"
        clock.advance(29.9)
        assert await cache.get("k", loader(calls, "b", 30)) == "a"
        clock.advance(0.1)
        assert await cache.get("k", loader(calls, "c", 30)) == "c"

    asyncio.run(main())
    assert calls == ["a", "c"]


def test_a_zero_ttl_result_is_returned_but_not_kept():
    cache: ReviewCache[str] = ReviewCache("token", clock=ManualClock())
    calls: list[str] = []

    async def main():
        await cache.get("k", loader(calls, "a", 0))
        await cache.get("k", loader(calls, "b", -5))

    asyncio.run(main())
    assert calls == ["a", "b"] and len(cache) == 0


def test_the_least_recently_used_entry_goes_first_beyond_the_bound():
    cache: ReviewCache[str] = ReviewCache("access", max_entries=3, clock=ManualClock())
    calls: list[str] = []

    async def main():
        for key in "abc":
            await cache.get(key, loader(calls, key, 60))
        await cache.get("a", loader(calls, "a2", 60))  # a is now the most recent
        await cache.get("d", loader(calls, "d", 60))  # evicts b
        assert len(cache) == 3
        await cache.get("b", loader(calls, "b2", 60))
        await cache.get("a", loader(calls, "a3", 60))

    asyncio.run(main())
    assert calls == ["a", "b", "c", "d", "b2"]


def test_the_default_bound_is_ten_thousand():
    assert ReviewCache("token").max_entries == 10_000


def test_concurrent_identical_lookups_share_one_call():
    cache: ReviewCache[str] = ReviewCache("token", clock=ManualClock())
    calls: list[str] = []

    async def main():
        return await asyncio.gather(
            *(cache.get("k", loader(calls, "a", 60, delay=0.05)) for _ in range(50))
        )

    assert asyncio.run(main()) == ["a"] * 50
    assert calls == ["a"]


def test_an_error_reaches_every_waiter_and_is_not_cached():
    cache: ReviewCache[str] = ReviewCache("token", clock=ManualClock())
    attempts = 0

    async def failing():
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.02)
        raise ConnectionError("API server down")

    async def main():
        results = await asyncio.gather(
            *(cache.get("k", failing) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        assert await cache.get("k", loader([], "ok", 60)) == "ok"

    asyncio.run(main())
    assert attempts == 1


def test_a_caller_giving_up_does_not_cancel_the_shared_call():
    cache: ReviewCache[str] = ReviewCache("token", clock=ManualClock())
    calls: list[str] = []

    async def main():
        first = asyncio.ensure_future(cache.get("k", loader(calls, "a", 60, delay=0.05)))
        second = asyncio.ensure_future(cache.get("k", loader(calls, "x", 60)))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == "a"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())
    assert calls == ["a"]


def test_jwt_expiry_is_read_from_the_payload_and_other_tokens_have_none():
    assert jwt_expiry(jwt_with_exp(1_900_000_123, "x")) == 1_900_000_123
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.!!!.c") is None
    assert jwt_expiry("a.e30.c") is None  # {} : no exp
