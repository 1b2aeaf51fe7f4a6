"""The per-caller write budget: one token bucket per username (docs/auth.md).

A bucket holds up to `burst` units and refills at `rate` units a second; a single write costs 1,
a batch its item count. A cost larger than the whole bucket is admitted when the bucket is full
and leaves it in debt (paid back at `rate`), so an oversized batch is slowed down, never refused
forever; the long-run rate stays `rate` either way.

Refusals carry the header fields of the IETF httpapi RateLimit draft (draft-ietf-httpapi-
ratelimit-headers, the `RateLimit-Policy` / `RateLimit` pair): the policy says `q` units per
`w` seconds (the time an empty bucket takes to fill), the limit says `r` units remain and `t`
seconds until the refused cost fits, which is also the `Retry-After` value.

At most 10,000 callers are tracked (least recently seen dropped first: a bucket idle that long
has refilled, so forgetting it changes nothing). A settable clock serves the tests.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from datastorage.config import Settings

POLICY_NAME = "writes"
MAX_CALLERS = 10_000
_SLACK = 1e-6  # units: absorbs float rounding of clock differences (large clock values)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    remaining: int  # whole units left after this request (0 when in debt)
    retry_after: int  # seconds until the refused cost fits; 0 when allowed


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst > 0 else max(1, math.ceil(rate))
        self.clock = clock
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # caller -> [units, at]
        window = max(1, math.ceil(self.burst / rate))
        self.policy = f'"{POLICY_NAME}";q={self.burst};w={window}'

    def take(self, caller: str, cost: int) -> Admission:
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = [float(self.burst), now]
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        else:
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            self._buckets.move_to_end(caller)
        needed = min(cost, self.burst)
        if bucket[0] + _SLACK >= needed:
            bucket[0] -= cost
            return Admission(True, max(0, math.floor(bucket[0])), 0)
        wait = (needed - bucket[0]) / self.rate
        return Admission(False, max(0, math.floor(bucket[0])), max(1, math.ceil(wait - 1e-9)))

    def headers(self, admission: Admission) -> dict[str, str]:
        """Header fields for a response to a metered request (the 429 in particular)."""
        headers = {
            "RateLimit-Policy": self.policy,
            "RateLimit": f'"{POLICY_NAME}";r={admission.remaining};t={admission.retry_after}',
        }
        if not admission.allowed:
            headers["Retry-After"] = str(admission.retry_after)
        return headers


def limiter_from_settings(
    settings: Settings, clock: Callable[[], float] = time.monotonic
) -> RateLimiter | None:
    """The configured limiter, or None when `DATASTORAGE_RATE_LIMIT_EVENTS` is 0 (off)."""
    if settings.rate_limit_events <= 0:
        return None
    return RateLimiter(settings.rate_limit_events, settings.rate_limit_burst, clock=clock)
