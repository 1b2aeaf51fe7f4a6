"""The Redis Streams DLQ backend (`redis://host:port/N`, `rediss://…`), on redis-py asyncio.

Layout, per record kind:
- `datastorage:dlq:<kind>` — the stream; one entry per record (field `r`, the JSON bytes). Acked
  entries are XDEL'ed, so XLEN is the depth. Nothing is ever trimmed.
- consumer group `datastorage` on it; each process claims under its own consumer name.
- `datastorage:dlq:<kind>:attempts` — hash entry id → failed replay attempts.
- `datastorage:dlq:<kind>:dead` — dead letters: record, error, attempts, timestamps.

Released entries are handed to a parking consumer with a chosen idle time, so that every
consumer's XAUTOCLAIM picks them up once the retry delay has passed; entries of a dead consumer
are picked up the same way after `claim_idle`. Append, ack, release and dead-letter are Lua
scripts so that each is atomic (capacity check + XADD in particular). Durability is what Redis is
configured for: the chart runs it with AOF `appendfsync always`.

Memory is bounded by Redis itself: run it with `maxmemory` and `maxmemory-policy noeviction`
(an evicting policy would drop queued entries). At the limit Redis refuses commands that grow
memory (XADD, HINCRBY) with an OOM error, which an append reports as `DLQFull`; a script that
has not yet written is refused whole, so an append stores all its records or none. The drain
keeps working: XREADGROUP, XAUTOCLAIM, XCLAIM, XACK, XDEL and HDEL are not refused under OOM
(but any command queued in a MULTI is, hence no MULTI/EXEC here), and a script that has
written once (release, dead-letter) is allowed to finish.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from datastorage.dlq.queue import (
    KINDS,
    DLQFull,
    DLQUnavailable,
    Entry,
    StreamStats,
    check_kind,
    decode_record,
    encode_record,
)
from datastorage.metrics import DLQ_ENQUEUED

GROUP = "datastorage"
KEY_PREFIX = "datastorage:dlq:"
# Owner of released entries: it never claims, so they wait only for their retry delay.
PARKING_CONSUMER = "datastorage:released"
# Consumers with nothing pending that were idle this long are dropped from the group at close.
FORGET_IDLE_CONSUMERS_MS = 3_600_000

# KEYS: target stream, then every other stream (all count against capacity).
# ARGV: capacity, then the encoded records. Returns {1, id...} or {0, depth} when full.
_APPEND = """
local depth = 0
for i = 1, #KEYS do depth = depth + redis.call('XLEN', KEYS[i]) end
if depth + #ARGV - 1 > tonumber(ARGV[1]) then return {0, depth} end
local reply = {1}
for i = 2, #ARGV do reply[#reply + 1] = redis.call('XADD', KEYS[1], '*', 'r', ARGV[i]) end
return reply
"""

# KEYS: stream, attempts hash. ARGV: group, this consumer, parking consumer, idle ms,
# count an attempt (0|1), then entry ids. Only entries this consumer still holds move: one that
# was reclaimed by another consumer meanwhile belongs to that consumer now.
_RELEASE = """
local released = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, id, 'IDLE', ARGV[4], 'JUSTID')
    if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[2], id, 1) end
    released = released + 1
  end
end
return released
"""

# KEYS: stream, attempts hash. ARGV: group, then entry ids. A script rather than MULTI/EXEC:
# at maxmemory Redis refuses to queue any command in a MULTI, but lets a script XACK/XDEL/HDEL,
# and the drain is what frees the memory. Ids go in chunks (Lua's unpack has a stack limit).
_ACK = """
local failed_before = redis.call('HLEN', KEYS[2]) > 0
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = ARGV[i]
  if #ids == 1000 or i == #ARGV then
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
    redis.call('XDEL', KEYS[1], unpack(ids))
    if failed_before then redis.call('HDEL', KEYS[2], unpack(ids)) end
    ids = {}
  end
end
return #ARGV - 1
"""

# KEYS: stream, attempts hash, dead stream. ARGV: group, entry id, then dead-letter fields.
# An entry that is no longer pending was acked elsewhere: nothing to move.
_DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""

# KEYS: stream. ARGV: group, this consumer, idle ms. Drops consumers that hold nothing (this one,
# and long-idle ones of exited processes) so the group does not grow with every restart.
# Atomic, so no entry can be assigned to a consumer between the check and the delete.
_FORGET_CONSUMERS = """
local removed = 0
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #info, 2 do c[info[i]] = info[i + 1] end
  if c['pending'] == 0 and (c['name'] == ARGV[2] or c['idle'] >= tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    removed = removed + 1
  end
end
return removed
"""


def stream_key(kind: str) -> str:
    return KEY_PREFIX + kind


def _attempts_key(kind: str) -> str:
    return stream_key(kind) + ":attempts"


def _dead_key(kind: str) -> str:
    return stream_key(kind) + ":dead"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _id_seconds(entry_id: str) -> float:
    return _id_order(entry_id)[0] / 1000.0


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except OutOfMemoryError as exc:
        raise DLQFull(f"redis DLQ is at its maxmemory: {exc}") from exc
    except (RedisError, OSError) as exc:
        raise DLQUnavailable(f"redis DLQ: {exc}") from exc


class RedisStreamsDLQ:
    """`DeadLetterQueue` on Redis Streams; one instance per process."""

    name = "redis"

    def __init__(self, url: str, *, capacity: int, consumer: str, claim_idle: float) -> None:
        self.url = url
        self.capacity = capacity
        self.consumer = consumer
        self.claim_idle = claim_idle
        self._client: redis.Redis | None = None
        self._groups_ready = False

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the client; never fails because Redis is down (groups are made lazily)."""
        self._client = redis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            # Fail fast: the write path must answer 503 quickly when Redis is gone, rather
            # than redis-py's default of ten retries.
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            health_check_interval=30,
        )
        self._append = self._client.register_script(_APPEND)
        self._ack = self._client.register_script(_ACK)
        self._release = self._client.register_script(_RELEASE)
        self._dead_letter = self._client.register_script(_DEAD_LETTER)
        self._forget_consumers = self._client.register_script(_FORGET_CONSUMERS)
        try:
            with _unavailable_on_error():
                await self._ensure_groups()
        except DLQUnavailable:
            pass  # reported by ping(); retried by the next operation

    async def close(self) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            for kind in KINDS:
                await self._forget_consumers(
                    keys=[stream_key(kind)],
                    args=[GROUP, self.consumer, FORGET_IDLE_CONSUMERS_MS],
                    client=client,
                )
        except (RedisError, OSError):
            pass  # housekeeping only
        finally:
            await client.aclose()

    async def ping(self) -> None:
        with _unavailable_on_error():
            await self._redis().ping()

    # -- writing --------------------------------------------------------------------------

    async def append(self, kind: str, records: list[dict]) -> list[str]:
        check_kind(kind)
        if not records:
            return []
        encoded = [encode_record(record) for record in records]
        others = [stream_key(k) for k in KINDS if k != kind]
        client = self._redis()
        with _unavailable_on_error():
            reply = await self._append(
                keys=[stream_key(kind), *others],
                args=[self.capacity, *encoded],
                client=client,
            )
        if reply[0] == 0:
            raise DLQFull(f"DLQ holds {reply[1]} of {self.capacity} records")
        DLQ_ENQUEUED.labels(stream=kind).inc(len(records))
        return [_text(entry_id) for entry_id in reply[1:]]

    # -- draining -------------------------------------------------------------------------

    async def claim(self, kind: str, count: int) -> list[Entry]:
        check_kind(kind)
        if count <= 0:
            return []
        with _unavailable_on_error():
            await self._ensure_groups()
            try:
                found = await self._claim_fields(stream_key(kind), count)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost its data (restart without persistence): recreate and go on.
                self._groups_ready = False
                await self._ensure_groups()
                found = await self._claim_fields(stream_key(kind), count)
            ids = sorted(found, key=_id_order)
            attempts = await self._attempts(kind, ids)
        return [
            Entry(
                id=entry_id,
                kind=kind,
                record=decode_record(found[entry_id]),
                attempts=int(tries or 0),
                enqueued_at=_id_seconds(entry_id),
            )
            for entry_id, tries in zip(ids, attempts, strict=True)
        ]

    async def _attempts(self, kind: str, ids: list[str]) -> list:
        """Failed attempts per id. The hash only holds records that failed before, usually
        none: asking its size first avoids sending thousands of ids for nothing."""
        client = self._redis()
        if not ids or not await client.hlen(_attempts_key(kind)):
            return [0] * len(ids)
        return await client.hmget(_attempts_key(kind), ids)

    async def _claim_fields(self, key: str, count: int) -> dict[str, bytes]:
        """Entry id → record bytes: own pending first, then idle/released ones, then new."""
        client = self._redis()
        found: dict[str, bytes] = {}
        own = await client.xreadgroup(GROUP, self.consumer, {key: "0"}, count=count)
        await self._collect(key, own[0][1] if own else [], found)
        cursor = "0-0"
        while len(found) < count:
            cursor, stale, *_ = await client.xautoclaim(
                key,
                GROUP,
                self.consumer,
                int(self.claim_idle * 1000),
                cursor,
                count=count - len(found),
            )
            await self._collect(key, stale, found)
            if _text(cursor) == "0-0":
                break
        if len(found) < count:
            new = await client.xreadgroup(
                GROUP, self.consumer, {key: ">"}, count=count - len(found)
            )
            await self._collect(key, new[0][1] if new else [], found)
        return found

    async def _collect(self, key: str, entries: list, found: dict[str, bytes]) -> None:
        gone = []
        for raw_id, fields in entries:
            if fields:
                found[_text(raw_id)] = fields[b"r"]
            else:
                gone.append(raw_id)  # deleted from the stream but still pending: forget it
        if gone:
            await self._redis().xack(key, GROUP, *gone)

    async def ack(self, kind: str, entry_ids: list[str]) -> None:
        check_kind(kind)
        if not entry_ids:
            return
        client = self._redis()
        with _unavailable_on_error():
            await self._ack(
                keys=[stream_key(kind), _attempts_key(kind)],
                args=[GROUP, *entry_ids],
                client=client,
            )

    async def release(
        self, kind: str, entries: list[Entry], error: str | None, *, retry_after: float = 0.0
    ) -> None:
        check_kind(kind)
        if not entries:
            return
        # Idle time claim_idle - delay makes the entry claimable once the delay has passed.
        idle_ms = max(0, int((self.claim_idle - max(0.0, retry_after)) * 1000))
        client = self._redis()
        with _unavailable_on_error():
            await self._release(
                keys=[stream_key(kind), _attempts_key(kind)],
                args=[
                    GROUP,
                    self.consumer,
                    PARKING_CONSUMER,
                    idle_ms,
                    0 if error is None else 1,
                    *[entry.id for entry in entries],
                ],
                client=client,
            )

    async def dead_letter(self, kind: str, entry: Entry, error: str) -> None:
        check_kind(kind)
        fields = {
            "id": entry.id,
            "record": encode_record(entry.record),
            "error": error,
            "attempts": entry.attempts,
            "enqueued_at": repr(entry.enqueued_at),
            "dead_lettered_at": repr(time.time()),
        }
        flat = [part for pair in fields.items() for part in pair]
        client = self._redis()
        with _unavailable_on_error():
            await self._dead_letter(
                keys=[stream_key(kind), _attempts_key(kind), _dead_key(kind)],
                args=[GROUP, entry.id, *flat],
                client=client,
            )

    # -- inspection -----------------------------------------------------------------------

    async def stats(self) -> list[StreamStats]:
        with _unavailable_on_error():
            async with self._redis().pipeline(transaction=False) as pipe:
                for kind in KINDS:
                    pipe.xlen(stream_key(kind))
                    pipe.xrange(stream_key(kind), count=1)
                    pipe.xlen(_dead_key(kind))
                    pipe.memory_usage(stream_key(kind))  # sampled: cheap on a long stream
                pipe.info("memory")
                pipe.time()
                replies = await pipe.execute()
        seconds, micros = replies[-1]
        now = seconds + micros / 1e6  # the server's clock, which stamped the entry ids
        memory = replies[-2]
        limit = int(memory.get("maxmemory", 0))
        free = max(0, limit - int(memory["used_memory"])) if limit else None
        stats = []
        for index, kind in enumerate(KINDS):
            depth, oldest, dead, used = replies[4 * index : 4 * index + 4]
            age = max(0.0, now - _id_seconds(_text(oldest[0][0]))) if oldest else None
            # An empty stream still takes a few hundred bytes: count records only.
            stats.append(StreamStats(kind, depth, age, dead, int(used or 0) if depth else 0, free))
        return stats

    async def dead_letters(self, kind: str, limit: int = 100) -> list[dict]:
        check_kind(kind)
        with _unavailable_on_error():
            rows = await self._redis().xrange(_dead_key(kind), count=limit)
        return [_dead_letter_view(fields) for _, fields in rows]

    # -- helpers --------------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self._client is None:
            raise DLQUnavailable("redis DLQ is not open")
        return self._client

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for kind in KINDS:
            try:
                # From id 0: entries appended before the group existed are delivered too.
                await self._redis().xgroup_create(stream_key(kind), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True


def _dead_letter_view(fields: dict[bytes, bytes]) -> dict:
    return {
        "id": _text(fields[b"id"]),
        "record": decode_record(fields[b"record"]),
        "error": _text(fields[b"error"]),
        "attempts": int(fields[b"attempts"]),
        "enqueued_at": float(fields[b"enqueued_at"]),
        "dead_lettered_at": float(fields[b"dead_lettered_at"]),
    }
