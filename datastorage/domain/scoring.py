"""Workflow search scoring: the arithmetic of docs/api.md, as pure functions.

This module owns three things and nothing else (no I/O, no SQL):

- `is_candidate`: the mandatory-label match rule the store's SQL must reproduce when it selects
  candidates (`signal_type`/`severity` equal; `component`/`environment`/`priority` equal or `*`
  on the workflow side). Status and latest-version selection are the store's business.
- `score_workflow`: the score of one candidate for one search request.
- `rank`: the `min_score` filter, the fully deterministic order and the `top_k` cut.

All weights are `Decimal` constants and every sum is exact; floats appear only in the returned
`Score`, converted once from the exact 4-decimal result, so a plain match is exactly 0.5 and a
plain match with a matching gitOpsManaged is exactly 0.6 (no `0.6000000000000001`).

Decisions where the spec is silent:

- **gitOpsTool penalty and a workflow without a tool.** Only a workflow that *declares* a
  different tool (not `*`) is penalised. A workflow with no tool (missing, null, empty) makes no
  claim that could conflict, so it earns neither boost nor penalty. This also avoids charging
  twice for one mismatch: a workflow that is not gitOps-managed at all already pays the
  gitOpsManaged penalty.
- **gitOpsManaged penalty and a workflow without detected labels.** The spec says "workflow not
  gitOps-managed", so a missing/null `detected_labels` or a missing flag counts as "not managed"
  and is penalised like an explicit `false`.
- **What "true" and "non-empty" mean.** A boolean label counts only when it is exactly JSON
  `true` (so the string "false" can never boost); a string label counts only when it is a
  non-empty string. The same test applies on the workflow side.
- **Wildcards.** A workflow-side `*` on `component`, `environment` or `priority` always counts
  as a wildcard, even if the query itself said `*`; that is what the SQL can compute from the
  row alone.
- **Custom labels.** A query value repeated under one key counts once. A key whose value is a
  single string instead of a list is read as a one-element list. A query value equal to the
  workflow's listed value earns the full +0.05 even when the workflow also lists `*`.
- **failed_detections** holds the camelCase field names (`gitOpsManaged`, `serviceMesh`, ...);
  a listed field is skipped entirely, and it affects only itself (listing gitOpsManaged does not
  silence gitOpsTool).
- **Reachability of the clamps.** With these weights a score ranges from 0.24 to 0.99, so the
  clamp to [0, 1] never bites today; it is kept (and tested through `combine_score`) because the
  spec defines the score that way and weights may change.
- **Rounding** is half-up at the fourth decimal (`combine_score` with arbitrary inputs is the
  only place it can matter; the weights themselves never need more than three decimals).
- **Ordering keys.** `created_at` must be a datetime (a naive one is read as UTC; an ISO string
  is parsed); a workflow without `created_at` sorts as the oldest. `workflow_id` is compared as
  its string form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "BASE_SCORE",
    "CUSTOM_LABEL_CAP",
    "WILDCARD_LABELS",
    "Score",
    "combine_score",
    "count_wildcards",
    "is_candidate",
    "rank",
    "score_workflow",
]

BASE_SCORE = Decimal("0.50")
WILDCARD_DEDUCTION = Decimal("0.02")

GITOPS_MANAGED_BOOST = Decimal("0.10")
GITOPS_MANAGED_PENALTY = Decimal("0.10")
GITOPS_TOOL_BOOST = Decimal("0.10")
GITOPS_TOOL_WILDCARD_BOOST = Decimal("0.05")
GITOPS_TOOL_PENALTY = Decimal("0.10")
SERVICE_MESH_BOOST = Decimal("0.05")
SERVICE_MESH_WILDCARD_BOOST = Decimal("0.025")

# gitOpsManaged is not here: unlike these, it also carries a penalty.
FLAG_BOOSTS: Mapping[str, Decimal] = {
    "pdbProtected": Decimal("0.05"),
    "networkIsolated": Decimal("0.03"),
    "helmManaged": Decimal("0.02"),
    "stateful": Decimal("0.02"),
    "hpaEnabled": Decimal("0.02"),
}

CUSTOM_LABEL_BOOST = Decimal("0.05")
CUSTOM_LABEL_WILDCARD_BOOST = Decimal("0.025")
CUSTOM_LABEL_CAP = Decimal("0.10")

WILDCARD = "*"
EXACT_LABELS = ("signal_type", "severity")
WILDCARD_LABELS = ("component", "environment", "priority")

_FOUR_DECIMALS = Decimal("0.0001")
_ZERO = Decimal(0)
_ONE = Decimal(1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Score:
    """The score of one candidate, in the units and names of the search response."""

    confidence: float  # == final_score (the response carries both names)
    label_boost: float  # detected boosts + custom boosts (custom after its cap)
    label_penalty: float  # conflict penalties + the wildcard deductions
    final_score: float  # clamp(0.50 + label_boost - label_penalty, 0, 1), 4 decimals
    wildcards: int  # mandatory labels matched by a workflow-side '*'


def is_candidate(filters: Mapping[str, Any], workflow: Mapping[str, Any]) -> bool:
    """Whether the workflow's mandatory labels match the query's (labels only, not status)."""
    labels = workflow.get("labels") or {}
    if any(labels.get(name) != filters.get(name) for name in EXACT_LABELS):
        return False
    return all(labels.get(name) in (filters.get(name), WILDCARD) for name in WILDCARD_LABELS)


def count_wildcards(workflow: Mapping[str, Any]) -> int:
    """How many of component/environment/priority the workflow matches with '*'."""
    labels = workflow.get("labels") or {}
    return sum(1 for name in WILDCARD_LABELS if labels.get(name) == WILDCARD)


def score_workflow(filters: Mapping[str, Any], workflow: Mapping[str, Any]) -> Score:
    """Score a candidate already selected by the mandatory-label rule (see `is_candidate`)."""
    wildcards = count_wildcards(workflow)
    detected_boost, conflict_penalty = _detected_label_points(
        filters.get("detected_labels"), workflow.get("detected_labels")
    )
    custom_boost = _custom_label_points(filters.get("custom_labels"), workflow.get("custom_labels"))
    boost = detected_boost + custom_boost
    penalty = conflict_penalty + WILDCARD_DEDUCTION * wildcards
    final = combine_score(boost, penalty)
    return Score(
        confidence=final,
        label_boost=float(boost),
        label_penalty=float(penalty),
        final_score=final,
        wildcards=wildcards,
    )


def combine_score(label_boost: Decimal | float, label_penalty: Decimal | float) -> float:
    """clamp(0.50 + label_boost - label_penalty, 0, 1), rounded half-up to 4 decimals.

    Floats are read through their shortest repr (0.1 is one tenth, not its binary neighbour).
    """
    total = BASE_SCORE + _exact(label_boost) - _exact(label_penalty)
    clamped = min(max(total, _ZERO), _ONE)
    return float(clamped.quantize(_FOUR_DECIMALS, rounding=ROUND_HALF_UP))


def rank(
    scored: Iterable[tuple[Mapping[str, Any], Score]], *, min_score: float, top_k: int
) -> tuple[list[tuple[int, Mapping[str, Any], Score]], int]:
    """Filter by `min_score`, order deterministically, cut at `top_k`.

    Order: final_score desc, fewer wildcards, newest created_at, workflow_id asc. Returns the
    ranked items (rank starts at 1) and the number of matches before the `top_k` cut.
    """
    kept = [(workflow, score) for workflow, score in scored if score.final_score >= min_score]
    kept.sort(key=_ordering_key)
    ranked = [
        (position, workflow, score)
        for position, (workflow, score) in enumerate(kept[: max(top_k, 0)], start=1)
    ]
    return ranked, len(kept)


def _detected_label_points(
    query: Mapping[str, Any] | None, workflow: Mapping[str, Any] | None
) -> tuple[Decimal, Decimal]:
    """(boost, penalty) from the detected labels; both zero when the query has none."""
    if not query:
        return _ZERO, _ZERO
    workflow = workflow or {}
    skipped = set(query.get("failed_detections") or ())

    def asked(field: str, test: Callable[[Any], bool]) -> bool:
        return field not in skipped and test(query.get(field))

    boost = penalty = _ZERO

    if asked("gitOpsManaged", _is_true):
        if _is_true(workflow.get("gitOpsManaged")):
            boost += GITOPS_MANAGED_BOOST
        else:
            penalty += GITOPS_MANAGED_PENALTY

    if asked("gitOpsTool", _is_set):
        tool = workflow.get("gitOpsTool")
        if tool == query["gitOpsTool"]:
            boost += GITOPS_TOOL_BOOST
        elif tool == WILDCARD:
            boost += GITOPS_TOOL_WILDCARD_BOOST
        elif _is_set(tool):
            penalty += GITOPS_TOOL_PENALTY

    if asked("serviceMesh", _is_set):
        mesh = workflow.get("serviceMesh")
        if mesh == query["serviceMesh"]:
            boost += SERVICE_MESH_BOOST
        elif mesh == WILDCARD:
            boost += SERVICE_MESH_WILDCARD_BOOST

    for field, points in FLAG_BOOSTS.items():
        if asked(field, _is_true) and _is_true(workflow.get(field)):
            boost += points

    return boost, penalty


def _custom_label_points(
    query: Mapping[str, Any] | None, workflow: Mapping[str, Any] | None
) -> Decimal:
    if not query or not workflow:
        return _ZERO
    total = _ZERO
    for key, wanted in query.items():
        offered = set(_as_list(workflow.get(key)))
        if not offered:
            continue
        # dict.fromkeys de-duplicates while keeping the query's order (order does not change
        # the sum, but it keeps the loop easy to follow in a debugger).
        for value in dict.fromkeys(_as_list(wanted)):
            if value in offered:
                total += CUSTOM_LABEL_BOOST
            elif WILDCARD in offered:
                total += CUSTOM_LABEL_WILDCARD_BOOST
    return min(total, CUSTOM_LABEL_CAP)


def _ordering_key(item: tuple[Mapping[str, Any], Score]) -> tuple:
    workflow, score = item
    created = _created_microseconds(workflow.get("created_at"))
    # Negated integers sort "newest first" exactly; a float timestamp would lose microseconds.
    recency = (0, -created) if created is not None else (1, 0)
    return (-score.final_score, score.wildcards, recency, str(workflow.get("workflow_id", "")))


def _created_microseconds(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _is_true(value: Any) -> bool:
    return value is True


def _is_set(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _exact(value: Decimal | float) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(value))
