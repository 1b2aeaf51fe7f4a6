"""Workflow search scoring (docs/api.md): the score table and the ranking order."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastorage.domain.scoring import (
    Score,
    combine_score,
    count_wildcards,
    is_candidate,
    rank,
    score_workflow,
)

QUERY_LABELS = {
    "signal_type": "OOMKilled",
    "severity": "critical",
    "component": "pod",
    "environment": "production",
    "priority": "P0",
}


def make_filters(detected: dict | None = None, custom: dict | None = None) -> dict[str, Any]:
    filters: dict[str, Any] = dict(QUERY_LABELS)
    if detected is not None:
        filters["detected_labels"] = detected
    if custom is not None:
        filters["custom_labels"] = custom
    return filters


def make_workflow(
    detected: dict | None = None, custom: dict | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "workflow_id": str(uuid.uuid4()),
        "labels": {**QUERY_LABELS, **labels},
        "detected_labels": detected,
        "custom_labels": custom,
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
    }


@dataclass(frozen=True)
class Case:
    name: str
    boost: str
    penalty: str
    final: float
    query_detected: dict | None = None
    workflow_detected: dict | None = None
    query_custom: dict | None = None
    workflow_custom: dict | None = None
    labels: dict[str, str] = field(default_factory=dict)
    wildcards: int = 0


CASES = [
    # -- no labels at all ----------------------------------------------------------------------
    Case("plain_match", "0", "0", 0.5),
    Case("empty_detected_and_custom", "0", "0", 0.5, {}, {}, {}, {}),
    # -- gitOpsManaged --------------------------------------------------------------------------
    Case("gitops_managed_both_true", "0.10", "0", 0.6, {"gitOpsManaged": True}, {"gitOpsManaged": True}),
    Case("gitops_managed_workflow_false_penalised", "0", "0.10", 0.4, {"gitOpsManaged": True}, {"gitOpsManaged": False}),
    Case("gitops_managed_workflow_silent_penalised", "0", "0.10", 0.4, {"gitOpsManaged": True}, {}),
    Case("gitops_managed_workflow_no_detected_labels_penalised", "0", "0.10", 0.4, {"gitOpsManaged": True}, None),
    Case("gitops_managed_query_false_ignored", "0", "0", 0.5, {"gitOpsManaged": False}, {"gitOpsManaged": True}),
    Case("gitops_managed_query_string_true_ignored", "0", "0", 0.5, {"gitOpsManaged": "true"}, {"gitOpsManaged": True}),
    Case("gitops_managed_failed_detection_no_penalty", "0", "0", 0.5, {"gitOpsManaged": True, "failed_detections": ["gitOpsManaged"]}, {"gitOpsManaged": False}),
    Case("gitops_managed_failed_detection_no_boost", "0", "0", 0.5, {"gitOpsManaged": True, "failed_detections": ["gitOpsManaged"]}, {"gitOpsManaged": True}),
    # -- gitOpsTool -----------------------------------------------------------------------------
    Case("gitops_tool_equal", "0.10", "0", 0.6, {"gitOpsTool": "argocd"}, {"gitOpsTool": "argocd"}),
    Case("gitops_tool_workflow_wildcard", "0.05", "0", 0.55, {"gitOpsTool": "flux"}, {"gitOpsTool": "*"}),
    Case("gitops_tool_different_penalised", "0", "0.10", 0.4, {"gitOpsTool": "argocd"}, {"gitOpsTool": "flux"}),
    Case("gitops_tool_workflow_none_is_neutral", "0", "0", 0.5, {"gitOpsTool": "argocd"}, {"gitOpsTool": None}),
    Case("gitops_tool_workflow_missing_is_neutral", "0", "0", 0.5, {"gitOpsTool": "argocd"}, {}),
    Case("gitops_tool_query_empty_ignored", "0", "0", 0.5, {"gitOpsTool": ""}, {"gitOpsTool": "flux"}),
    Case("gitops_tool_failed_detection_no_penalty", "0", "0", 0.5, {"gitOpsTool": "argocd", "failed_detections": ["gitOpsTool"]}, {"gitOpsTool": "flux"}),
    Case("gitops_managed_and_tool_match", "0.20", "0", 0.7, {"gitOpsManaged": True, "gitOpsTool": "argocd"}, {"gitOpsManaged": True, "gitOpsTool": "argocd"}),
    Case("gitops_both_penalties", "0", "0.20", 0.3, {"gitOpsManaged": True, "gitOpsTool": "argocd"}, {"gitOpsManaged": False, "gitOpsTool": "flux"}),
    Case("failed_detection_affects_only_its_field", "0", "0.10", 0.4, {"gitOpsManaged": True, "gitOpsTool": "argocd", "failed_detections": ["gitOpsManaged"]}, {"gitOpsTool": "flux"}),
    # -- pdbProtected ---------------------------------------------------------------------------
    Case("pdb_protected_both_true", "0.05", "0", 0.55, {"pdbProtected": True}, {"pdbProtected": True}),
    Case("pdb_protected_workflow_false", "0", "0", 0.5, {"pdbProtected": True}, {"pdbProtected": False}),
    Case("pdb_protected_query_false", "0", "0", 0.5, {"pdbProtected": False}, {"pdbProtected": True}),
    Case("pdb_protected_failed_detection", "0", "0", 0.5, {"pdbProtected": True, "failed_detections": ["pdbProtected"]}, {"pdbProtected": True}),
    # -- serviceMesh ----------------------------------------------------------------------------
    Case("service_mesh_equal", "0.05", "0", 0.55, {"serviceMesh": "istio"}, {"serviceMesh": "istio"}),
    Case("service_mesh_workflow_wildcard", "0.025", "0", 0.525, {"serviceMesh": "linkerd"}, {"serviceMesh": "*"}),
    Case("service_mesh_different_no_penalty", "0", "0", 0.5, {"serviceMesh": "istio"}, {"serviceMesh": "linkerd"}),
    Case("service_mesh_failed_detection", "0", "0", 0.5, {"serviceMesh": "istio", "failed_detections": ["serviceMesh"]}, {"serviceMesh": "istio"}),
    # -- the smaller flags ----------------------------------------------------------------------
    Case("network_isolated_both_true", "0.03", "0", 0.53, {"networkIsolated": True}, {"networkIsolated": True}),
    Case("network_isolated_workflow_missing", "0", "0", 0.5, {"networkIsolated": True}, {}),
    Case("helm_managed_both_true", "0.02", "0", 0.52, {"helmManaged": True}, {"helmManaged": True}),
    Case("stateful_both_true", "0.02", "0", 0.52, {"stateful": True}, {"stateful": True}),
    Case("stateful_query_false", "0", "0", 0.5, {"stateful": False}, {"stateful": True}),
    Case("hpa_enabled_both_true", "0.02", "0", 0.52, {"hpaEnabled": True}, {"hpaEnabled": True}),
    Case("hpa_enabled_workflow_false", "0", "0", 0.5, {"hpaEnabled": True}, {"hpaEnabled": False}),
    Case("every_detected_label_matches", "0.39", "0", 0.89,
         {"gitOpsManaged": True, "gitOpsTool": "argocd", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True},
         {"gitOpsManaged": True, "gitOpsTool": "argocd", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True}),
    Case("every_detection_failed", "0", "0", 0.5,
         {"gitOpsManaged": True, "gitOpsTool": "argocd", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True,
          "failed_detections": ["gitOpsManaged", "gitOpsTool", "pdbProtected", "serviceMesh", "networkIsolated", "helmManaged", "stateful", "hpaEnabled"]},
         {"gitOpsManaged": False, "gitOpsTool": "flux", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True}),
    # -- wildcards on the mandatory labels -------------------------------------------------------
    Case("component_wildcard", "0", "0.02", 0.48, labels={"component": "*"}, wildcards=1),
    Case("environment_wildcard", "0", "0.02", 0.48, labels={"environment": "*"}, wildcards=1),
    Case("priority_wildcard", "0", "0.02", 0.48, labels={"priority": "*"}, wildcards=1),
    Case("three_wildcards", "0", "0.06", 0.44, labels={"component": "*", "environment": "*", "priority": "*"}, wildcards=3),
    Case("wildcard_and_gitops_boost", "0.10", "0.02", 0.58, {"gitOpsManaged": True}, {"gitOpsManaged": True}, labels={"component": "*"}, wildcards=1),
    # -- custom labels --------------------------------------------------------------------------
    Case("custom_one_value_listed", "0.05", "0", 0.55, query_custom={"team": ["payments"]}, workflow_custom={"team": ["payments", "billing"]}),
    Case("custom_value_by_wildcard", "0.025", "0", 0.525, query_custom={"team": ["payments"]}, workflow_custom={"team": ["*"]}),
    Case("custom_listed_value_beats_wildcard", "0.05", "0", 0.55, query_custom={"team": ["payments"]}, workflow_custom={"team": ["*", "payments"]}),
    Case("custom_value_not_listed", "0", "0", 0.5, query_custom={"team": ["payments"]}, workflow_custom={"team": ["billing"]}),
    Case("custom_key_missing_on_workflow", "0", "0", 0.5, query_custom={"team": ["payments"]}, workflow_custom={"tier": ["payments"]}),
    Case("custom_workflow_has_none", "0", "0", 0.5, query_custom={"team": ["payments"]}, workflow_custom=None),
    Case("custom_two_keys", "0.10", "0", 0.6, query_custom={"team": ["payments"], "tier": ["gold"]}, workflow_custom={"team": ["payments"], "tier": ["gold"]}),
    Case("custom_capped_at_ten_hundredths", "0.10", "0", 0.6, query_custom={"team": ["a", "b", "c"]}, workflow_custom={"team": ["a", "b", "c"]}),
    Case("custom_wildcards_capped", "0.10", "0", 0.6, query_custom={"team": ["a", "b", "c", "d", "e"]}, workflow_custom={"team": ["*"]}),
    Case("custom_mixed_under_cap", "0.075", "0", 0.575, query_custom={"team": ["a"], "tier": ["gold"]}, workflow_custom={"team": ["a"], "tier": ["*"]}),
    Case("custom_duplicate_query_value_counts_once", "0.05", "0", 0.55, query_custom={"team": ["a", "a"]}, workflow_custom={"team": ["a"]}),
    Case("custom_cap_does_not_limit_detected", "0.20", "0", 0.7, {"gitOpsManaged": True}, {"gitOpsManaged": True}, {"team": ["a", "b", "c"]}, {"team": ["a", "b", "c"]}),
    # -- everything at once, exact arithmetic -----------------------------------------------------
    Case("float_noise_free_sum", "0.18", "0.02", 0.66, {"gitOpsManaged": True, "serviceMesh": "istio", "networkIsolated": True}, {"gitOpsManaged": True, "serviceMesh": "istio", "networkIsolated": True}, labels={"priority": "*"}, wildcards=1),
    Case("highest_reachable_score", "0.49", "0", 0.99,
         {"gitOpsManaged": True, "gitOpsTool": "argocd", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True},
         {"gitOpsManaged": True, "gitOpsTool": "argocd", "pdbProtected": True, "serviceMesh": "istio", "networkIsolated": True, "helmManaged": True, "stateful": True, "hpaEnabled": True},
         {"team": ["a", "b"]}, {"team": ["a", "b"]}),
    Case("lowest_reachable_score", "0", "0.26", 0.24, {"gitOpsManaged": True, "gitOpsTool": "argocd"}, {"gitOpsTool": "flux"},
         labels={"component": "*", "environment": "*", "priority": "*"}, wildcards=3),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_score_table(case: Case) -> None:
    filters = make_filters(case.query_detected, case.query_custom)
    workflow = make_workflow(case.workflow_detected, case.workflow_custom, **case.labels)
    assert is_candidate(filters, workflow)

    score = score_workflow(filters, workflow)

    assert score == Score(
        confidence=case.final,
        label_boost=float(Decimal(case.boost)),
        label_penalty=float(Decimal(case.penalty)),
        final_score=case.final,
        wildcards=case.wildcards,
    )


def test_plain_match_is_exactly_one_half() -> None:
    score = score_workflow(make_filters(), make_workflow())
    assert score.final_score == 0.5
    assert repr(score.final_score) == "0.5"


def test_matching_gitops_managed_is_exactly_six_tenths() -> None:
    score = score_workflow(
        make_filters({"gitOpsManaged": True}), make_workflow({"gitOpsManaged": True})
    )
    assert repr(score.final_score) == "0.6"
    assert repr(score.confidence) == "0.6"


@pytest.mark.parametrize(
    ("boost", "penalty", "expected"),
    [
        pytest.param(0.7, 0, 1.0, id="clamped_at_one"),
        pytest.param(0.5, 0, 1.0, id="exactly_one"),
        pytest.param(0, 0.9, 0.0, id="clamped_at_zero"),
        pytest.param(0, 0.5, 0.0, id="exactly_zero"),
        pytest.param(0.1, 0.2, 0.4, id="no_float_noise"),
        pytest.param(0.123456, 0, 0.6235, id="rounded_to_four_decimals"),
        pytest.param(0.00005, 0, 0.5001, id="half_rounds_up"),
        pytest.param(0.00004, 0, 0.5, id="below_half_rounds_down"),
        pytest.param(Decimal("0.025"), Decimal("0.02"), 0.505, id="decimal_inputs"),
    ],
)
def test_combine_score_clamps_and_rounds(boost, penalty, expected: float) -> None:
    assert combine_score(boost, penalty) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({}, True, id="all_equal"),
        pytest.param({"component": "*"}, True, id="component_wildcard"),
        pytest.param({"environment": "*"}, True, id="environment_wildcard"),
        pytest.param({"priority": "*"}, True, id="priority_wildcard"),
        pytest.param({"signal_type": "*"}, False, id="signal_type_never_wildcard"),
        pytest.param({"severity": "*"}, False, id="severity_never_wildcard"),
        pytest.param({"signal_type": "CrashLoop"}, False, id="signal_type_differs"),
        pytest.param({"severity": "high"}, False, id="severity_differs"),
        pytest.param({"component": "node"}, False, id="component_differs"),
        pytest.param({"environment": "staging"}, False, id="environment_differs"),
        pytest.param({"priority": "P1"}, False, id="priority_differs"),
    ],
)
def test_is_candidate(labels: dict[str, str], expected: bool) -> None:
    assert is_candidate(make_filters(), make_workflow(**labels)) is expected


def test_count_wildcards_ignores_missing_labels() -> None:
    assert count_wildcards({}) == 0
    assert count_wildcards({"labels": None}) == 0


# -- rank ---------------------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def entry(workflow_id: str, final: float, wildcards: int = 0, created_at: Any = T0):
    workflow = {"workflow_id": workflow_id, "created_at": created_at}
    return workflow, Score(final, 0.0, 0.0, final, wildcards)


def ids(ranked) -> list[str]:
    return [workflow["workflow_id"] for _, workflow, _ in ranked]


def test_rank_orders_by_score_then_wildcards_then_newest_then_id() -> None:
    items = [
        entry("e", 0.5, wildcards=1),
        entry("d", 0.5, created_at=T0 - timedelta(microseconds=1)),
        entry("c", 0.5),
        entry("b", 0.5),
        entry("a", 0.6, wildcards=3, created_at=T0 - timedelta(days=9)),
    ]
    ranked, total = rank(items, min_score=0, top_k=10)
    assert ids(ranked) == ["a", "b", "c", "d", "e"]
    assert [position for position, _, _ in ranked] == [1, 2, 3, 4, 5]
    assert total == 5


def test_rank_filters_by_min_score_inclusively_and_counts_before_top_k() -> None:
    items = [entry("a", 0.6), entry("b", 0.58), entry("c", 0.5799), entry("d", 0.7)]
    ranked, total = rank(items, min_score=0.58, top_k=1)
    assert ids(ranked) == ["d"]
    assert total == 3


def test_rank_with_no_matches() -> None:
    assert rank([entry("a", 0.4)], min_score=0.5, top_k=10) == ([], 0)
    assert rank([], min_score=0, top_k=10) == ([], 0)


def test_rank_reads_naive_and_iso_timestamps_as_utc_and_missing_as_oldest() -> None:
    items = [
        entry("missing", 0.5, created_at=None),
        entry("naive", 0.5, created_at=datetime(2025, 3, 2)),
        entry("iso", 0.5, created_at="2025-03-03T00:00:00+00:00"),
        entry("aware", 0.5, created_at=datetime(2025, 3, 1, 23, 0, tzinfo=UTC)),
    ]
    ranked, _ = rank(items, min_score=0, top_k=10)
    assert ids(ranked) == ["iso", "naive", "aware", "missing"]


_scores = st.sampled_from([0.0, 0.44, 0.48, 0.5, 0.5, 0.525, 0.6, 1.0])
_times = st.sampled_from([T0 + timedelta(microseconds=step) for step in (0, 1, 2, 10**6)])
_entries = st.lists(st.tuples(_scores, st.integers(0, 3), _times), min_size=0, max_size=25).map(
    lambda rows: [
        entry(f"wf-{index:03d}", final, wildcards, created)
        for index, (final, wildcards, created) in enumerate(rows)
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    items=_entries,
    seed=st.randoms(use_true_random=False),
    min_score=st.sampled_from([0.0, 0.5, 0.55, 1.0]),
    top_k=st.integers(1, 30),
)
def test_rank_order_is_total_and_independent_of_input_order(
    items, seed: random.Random, min_score: float, top_k: int
) -> None:
    shuffled = list(items)
    seed.shuffle(shuffled)

    ranked, total = rank(items, min_score=min_score, top_k=top_k)
    reranked, retotal = rank(shuffled, min_score=min_score, top_k=top_k)

    assert ids(reranked) == ids(ranked)
    assert retotal == total == sum(1 for _, score in items if score.final_score >= min_score)
    assert len(ranked) == min(top_k, total)
    assert [position for position, _, _ in ranked] == list(range(1, len(ranked) + 1))
    keys = [
        (
            -score.final_score,
            score.wildcards,
            -((workflow["created_at"] - T0) // timedelta(microseconds=1)),
            workflow["workflow_id"],
        )
        for _, workflow, score in ranked
    ]
    # Strictly increasing: no two items tie, so the order is total.
    assert all(earlier < later for earlier, later in zip(keys, keys[1:], strict=False))
