"""How a failing field is reported: its path (`[3].labels.severity`) and the words people read.

jsonschema's own messages quote the offending value and speak in schema terms; the API answers
with one short message per field path instead (`{path: message}`, the first per path wins).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from datastorage.schemas.failures import count_failure


def field_path(path: Any) -> str:
    """`labels.severity`, `[3].correlation_id` — the path format of field_errors."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: jsonschema.ValidationError) -> str:
    keyword, value = error.validator, error.validator_value
    if keyword == "required":
        return "is required"
    if keyword == "maxLength":
        return f"must be at most {value} characters"
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters"
    if keyword == "enum":
        return "must be one of " + ", ".join(map(str, value))
    if keyword == "type":
        return f"must be of type {value if isinstance(value, str) else ' or '.join(value)}"
    if keyword == "format":
        return {
            "date-time": "must be an RFC 3339 timestamp with a zone",
            "uuid": "must be a UUID",
            "date": "must be a date YYYY-MM-DD",
        }.get(value, f"must be a valid {value}")
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maxItems":
        return f"must have at most {value} items"
    if keyword == "minItems":
        return f"must have at least {value} item{'s' if value != 1 else ''}"
    if keyword == "pattern":
        # `x-error` (an OpenAPI extension) words a pattern for people.
        return error.schema.get("x-error") or f"must match {value}"
    if keyword in ("maxProperties", "minProperties"):
        return error.message
    return error.message


def collect_field_errors(errors: Any, root: tuple[Any, ...] = ()) -> dict[str, str]:
    """Flatten jsonschema errors to {path: message}; the first message per path wins. `root`:
    where the validated value sits in the request (`(3,)` for item 3 of a batch)."""
    out: dict[str, str] = {}
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator)):
        path = [*root, *error.absolute_path]
        if error.validator == "required":
            missing = re.match(r"'(.+?)' is a required property", error.message)
            if missing:
                path.append(missing.group(1))
        key = field_path(path) or "body"
        if key not in out:
            out[key] = _message(error)
            count_failure(key, str(error.validator))
    return out
