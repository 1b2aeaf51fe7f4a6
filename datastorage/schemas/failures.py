"""Counting validation failures by field, with a metric label that cannot grow without bound.

Every place that rejects a field (schema errors, the strict JSON decoder, handler checks) counts
it here, so `datastorage_validation_failures_total` sees them all under one labelling rule.
"""

from __future__ import annotations

import re

from datastorage.metrics import VALIDATION_FAILURES

# Objects whose keys the client chooses: a metric label stops at them (bounded cardinality).
_FREE_FORM = {"event_data", "custom_labels", "parameters", "body"}


def metric_field(path: str) -> str:
    """`[3].event_data.a.b` -> `[].event_data`: a label that cannot grow without bound."""
    kept = []
    for part in re.sub(r"\[\d+\]", "[]", path).split("."):
        kept.append(part)
        if part.removeprefix("[]") in _FREE_FORM:
            break
    return ".".join(kept)[:100]


def count_failure(field: str, reason: str) -> None:
    VALIDATION_FAILURES.labels(metric_field(field), reason).inc()
