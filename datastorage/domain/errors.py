"""Errors of the domain that every caller answers the same way."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input breaks a rule; `field_errors` maps each failing field path to its message.

    `detail` overrides the summary sentence (the HTTP layer says "N fields failed
    validation" when it is None)."""

    def __init__(self, field_errors: dict[str, str], detail: str | None = None) -> None:
        super().__init__(detail or "; ".join(f"{k}: {v}" for k, v in field_errors.items()))
        self.field_errors = field_errors
        self.detail = detail


class NotFound(LookupError):
    """The named resource does not exist; the message says which."""


class NotYetSequenced(LookupError):
    """The event is stored but not yet a leaf of a signed checkpoint of the asked size; asking
    again after `retry_after` seconds may succeed (the tamper-evident log,
    docs/tamper-evident-log.md)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
