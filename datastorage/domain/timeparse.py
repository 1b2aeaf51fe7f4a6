"""Parse the `since`/`until` query values: RFC 3339, YYYY-MM-DD (UTC midnight) or a duration."""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time_bound(value: str, now: dt.datetime) -> dt.datetime:
    """Raise ValueError with a message fit for a field error."""
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        try:
            return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError as exc:
            raise ValueError("the duration reaches before year 1") from exc
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.date.fromisoformat(text)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in text.upper():
        raise ValueError(
            "must be RFC 3339 with a zone, YYYY-MM-DD, or a duration like 90s, 15m, 24h, 7d"
        )
    return parsed.astimezone(dt.UTC)
