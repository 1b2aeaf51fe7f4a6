"""The string formats the request schemas use (`date-time`, `date`, `uuid`), checked strictly.

jsonschema's own checkers are looser (any ISO 8601 timestamp, a UUID without dashes); these
follow the API: RFC 3339 with a zone, `YYYY-MM-DD`, the 36-character UUID form.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import jsonschema

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


@FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        dt.date.fromisoformat(value)
    return True


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
        return len(value) == 36
    return True
