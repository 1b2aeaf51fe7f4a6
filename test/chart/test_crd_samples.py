"""The RemediationWorkflow CRD and the sample custom resources.

No API server is available here, so the samples are validated with jsonschema against the CRD's
openAPIV3Schema (which is what the API server enforces, minus defaulting), and the schema itself
is checked for the "structural schema" rules the API server would reject it for.
"""

from __future__ import annotations

import copy
import hashlib

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_helpers import CRD_FILE, KUBERNETES_VERSIONS, SAMPLES, crd_schema, load_yaml_documents

VALID_SAMPLES = sorted(SAMPLES.glob("*.yaml"))
INVALID_SAMPLES = sorted((SAMPLES / "invalid").glob("*.yaml"))


def validator():
    return jsonschema.Draft7Validator(crd_schema())


def errors_of(obj):
    return {
        "/".join(map(str, e.absolute_path)) or "<root>": e.message
        for e in validator().iter_errors(obj)
    }


@pytest.fixture()
def minimal():
    return copy.deepcopy(load_yaml_documents(SAMPLES / "restart-pod.yaml")[0])


# --- the CRD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_crd_passes_strict_kubernetes_validation(version):
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), version, strict=True)


def test_crd_names_scope_version_and_columns():
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "remediationworkflows.kubernaut.ai"
    assert spec["group"] == "kubernaut.ai" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "RemediationWorkflow"
    assert spec["names"]["plural"] == "remediationworkflows"
    assert spec["names"]["shortNames"] == ["rwf"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Workflow", ".spec.workflowName"),
        ("Version", ".spec.version"),
        ("Status", ".status.catalogStatus"),
        ("Workflow-ID", ".status.workflowId"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def _walk(node, path="$"):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural():
    # Rules from the apiextensions "structural schema" definition that the API server enforces.
    for path, node in _walk(crd_schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), (
            f"{path} has no type"
        )
        assert not ("properties" in node and isinstance(node.get("additionalProperties"), dict)), (
            path
        )
        for forbidden in (
            "$ref",
            "definitions",
            "dependencies",
            "patternProperties",
            "uniqueItems",
        ):
            assert forbidden not in node, f"{path} uses {forbidden}"
        if node.get("type") == "array":
            assert "items" in node, f"{path}: arrays need items"


def test_spec_requires_the_catalog_fields_and_every_mandatory_label():
    spec = crd_schema()["properties"]["spec"]
    assert set(spec["required"]) == {"workflowName", "version", "name", "content", "labels"}
    labels = spec["properties"]["labels"]
    assert set(labels["required"]) == {
        "signalType",
        "severity",
        "component",
        "environment",
        "priority",
    }
    props = spec["properties"]
    assert props["workflowName"]["maxLength"] == 255 and props["version"]["maxLength"] == 50
    assert props["lifecycle"]["enum"] == ["active", "disabled", "deprecated", "archived"]
    assert props["lifecycle"]["default"] == "active"
    assert props["parameters"]["x-kubernetes-preserve-unknown-fields"] is True


def test_status_allows_kopf_bookkeeping_and_the_operator_fields():
    status = crd_schema()["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    sample = load_yaml_documents(SAMPLES / "restart-pod.yaml")[0]
    sample["status"] = {
        "workflowId": "0b6c7f0e-2a47-4e4f-9d0e-6f1f2f3a4b5c",
        "catalogStatus": "active",
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Synced",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            },
            {
                "type": "Synced",
                "status": "False",
                "reason": "ImmutableFieldChanged",
                "message": "spec.content changed under version 1.0.0",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            },
        ],
        "kopf": {"progress": {"create_workflow": {"retries": 1, "success": False}}},
    }
    assert errors_of(sample) == {}
    sample["status"]["conditions"][0]["status"] = "Maybe"
    assert "status/conditions/0/status" in errors_of(sample)


# --- samples ---------------------------------------------------------------------------------------


def test_there_are_valid_and_invalid_samples():
    assert len(VALID_SAMPLES) >= 2
    assert len(INVALID_SAMPLES) >= 1


@pytest.mark.parametrize("path", VALID_SAMPLES, ids=lambda p: p.name)
def test_valid_sample_matches_the_crd_schema(path):
    for doc in load_yaml_documents(path):
        assert (doc["apiVersion"], doc["kind"]) == ("kubernaut.ai/v1alpha1", "RemediationWorkflow")
        assert errors_of(doc) == {}
        content_hash = doc["spec"].get("contentHash")
        if content_hash:  # the operator rejects a hash that does not match the content
            assert content_hash == hashlib.sha256(doc["spec"]["content"].encode()).hexdigest()


@pytest.mark.parametrize("path", INVALID_SAMPLES, ids=lambda p: p.name)
def test_invalid_sample_is_rejected(path):
    for doc in load_yaml_documents(path):
        assert errors_of(doc), f"{path.name} should be rejected by the CRD schema"


def test_invalid_samples_fail_for_the_documented_reasons():
    bad_severity = errors_of(load_yaml_documents(SAMPLES / "invalid" / "bad-severity.yaml")[0])
    assert set(bad_severity) == {"spec/labels/severity", "spec/labels/priority"}
    missing = errors_of(load_yaml_documents(SAMPLES / "invalid" / "missing-labels.yaml")[0])
    assert set(missing) == {"spec/labels", "spec/contentHash"}
    assert "component" in missing["spec/labels"] or "environment" in missing["spec/labels"]


@pytest.mark.parametrize(
    ("mutate", "failing_path"),
    [
        (lambda s: s["spec"]["labels"].pop("signalType"), "spec/labels"),
        (lambda s: s["spec"].pop("content"), "spec"),
        (lambda s: s["spec"].__setitem__("workflowName", "w" * 256), "spec/workflowName"),
        (lambda s: s["spec"].__setitem__("version", "1" * 51), "spec/version"),
        (lambda s: s["spec"]["labels"].__setitem__("severity", "Critical"), "spec/labels/severity"),
        (lambda s: s["spec"]["labels"].__setitem__("priority", "P4"), "spec/labels/priority"),
        (
            lambda s: s["spec"].__setitem__("customLabels", {"team": "payments"}),
            "spec/customLabels/team",
        ),
        (
            lambda s: s["spec"].__setitem__("customLabels", {"team": [1]}),
            "spec/customLabels/team/0",
        ),
        (
            lambda s: s["spec"].__setitem__("detectedLabels", {"gitOpsTool": "jenkins"}),
            "spec/detectedLabels/gitOpsTool",
        ),
        (
            lambda s: s["spec"].__setitem__("detectedLabels", {"serviceMesh": "consul"}),
            "spec/detectedLabels/serviceMesh",
        ),
        (
            lambda s: s["spec"].__setitem__("detectedLabels", {"hpaEnabled": "yes"}),
            "spec/detectedLabels/hpaEnabled",
        ),
        (lambda s: s["spec"].__setitem__("contentHash", "ab" * 31), "spec/contentHash"),
        (lambda s: s["spec"].__setitem__("lifecycle", "retired"), "spec/lifecycle"),
        (lambda s: s["spec"].__setitem__("parameters", ["not", "an", "object"]), "spec/parameters"),
    ],
)
def test_schema_rejects(minimal, mutate, failing_path):
    mutate(minimal)
    assert failing_path in errors_of(minimal)


def test_schema_accepts_wildcards_and_free_form_parameters(minimal):
    minimal["spec"]["labels"].update(component="*", environment="*", priority="*")
    minimal["spec"]["detectedLabels"] = {"gitOpsTool": "*", "serviceMesh": "*", "stateful": True}
    minimal["spec"]["customLabels"] = {"tier": ["*"], "team": []}
    minimal["spec"]["parameters"] = {"anything": {"nested": [1, "two", {"three": None}]}}
    minimal["spec"]["lifecycle"] = "deprecated"
    assert errors_of(minimal) == {}
