"""Building a DLQ backend from its URL: `redis://`/`rediss://` (Redis Streams), `file://` (spool).

Kept apart from `dlq.queue` (the contract both backends import) so that imports point one way:
the backends depend on the contract, this factory on the backends.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from datastorage.dlq.queue import DeadLetterQueue
from datastorage.dlq.redis_streams import RedisStreamsDLQ
from datastorage.dlq.spool import SpoolDLQ


def spool_path(url: str) -> str:
    """The directory of a `file://` URL: `file:///abs/dir` or `file://relative/dir`."""
    parts = urlsplit(url)
    # `file://.datastorage/dlq` puts the first path segment in netloc; keep it relative.
    host = "" if parts.netloc in ("", "localhost") else parts.netloc
    path = unquote(host + parts.path)
    if not path:
        raise ValueError(f"file DLQ URL without a path: {url!r}")
    return path


def open_dlq(
    url: str, *, capacity: int, consumer: str, claim_idle: float, min_free_bytes: int = 0
) -> DeadLetterQueue:
    """Build (not open) the backend named by the URL scheme.

    `consumer` must be unique per process (e.g. hostname-pid): entries claimed under a name are
    treated as held by a live consumer until `claim_idle` seconds pass without it touching them.
    `min_free_bytes` is the disk room a `file://` spool keeps (see `spool`); Redis is bounded
    by its own `maxmemory` instead.
    """
    if capacity < 1:
        raise ValueError("DLQ capacity must be >= 1")
    if not consumer:
        raise ValueError("DLQ consumer name must not be empty")
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisStreamsDLQ(url, capacity=capacity, consumer=consumer, claim_idle=claim_idle)
    if scheme == "file":
        return SpoolDLQ(
            spool_path(url),
            capacity=capacity,
            consumer=consumer,
            claim_idle=claim_idle,
            min_free_bytes=min_free_bytes,
        )
    raise ValueError(f"unsupported DLQ URL scheme {scheme!r}: use redis://, rediss:// or file://")
