"""Keyset-pagination cursors for audit event queries: opaque tokens naming the last row shown
(its timestamp and event_id) and the order of the query that issued them.

A token is base64url of a small JSON object; decoding rejects anything this service did not
issue, and a token used with the other sort order.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import orjson


class BadCursor(ValueError):
    pass


def _direction(descending: bool) -> str:
    return "desc" if descending else "asc"


def encode_cursor(timestamp: dt.datetime, event_id: str, descending: bool) -> str:
    payload = orjson.dumps({"t": timestamp.isoformat(), "i": event_id, "d": _direction(descending)})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(token: str, descending: bool) -> tuple[dt.datetime, uuid.UUID]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        timestamp = dt.datetime.fromisoformat(payload["t"])
        event_id = uuid.UUID(payload["i"])
        direction = payload["d"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadCursor("cursor is not a token this service issued") from exc
    if timestamp.tzinfo is None or direction != _direction(descending):
        raise BadCursor("cursor belongs to a query with a different order")
    return timestamp, event_id
