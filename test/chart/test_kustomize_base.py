"""manifests/base (plain kustomize) against the chart's default render.

The base is the chart with default values for release "datastorage", with these deliberate
differences (the same list is in manifests/base/kustomization.yaml):
  - no Helm bookkeeping: no helm.sh/chart or managed-by labels, no checksum annotations, no hooks;
    the migration Job is a plain Job with ttlSecondsAfterFinished;
  - no namespace anywhere; the operator's namespace comes from the downward API instead of the
    ConfigMap, and the ServiceAccount subjects of the bindings take the overlay's namespace;
  - the bundled databases' passwords are placeholder literals from a secretGenerator.
Everything else must be equal object by object, so a chart change that is not mirrored in the
base fails here.
"""

from __future__ import annotations

import copy
import os

import kubernetes_validate
import pytest
import yaml
from chart_helpers import KUBERNETES_VERSIONS, REPO, render, run, tool

BASE = REPO / "manifests" / "base"
RELEASE = "datastorage"


def kustomize_build():
    out = run([tool("kubectl"), "kustomize", str(BASE)]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def key(doc):
    return doc["kind"], doc["metadata"]["name"]


def _drop_helm_labels(labels):
    for name in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
        (labels or {}).pop(name, None)


def chart_as_base(doc):
    """The chart's object with the documented differences applied."""
    doc = copy.deepcopy(doc)
    meta = doc["metadata"]
    meta.pop("namespace", None)
    _drop_helm_labels(meta.get("labels"))
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("helm.sh/")
    }
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    template = doc.get("spec", {}).get("template")
    if template:
        _drop_helm_labels(template["metadata"].get("labels"))
        kept = {
            k: v
            for k, v in (template["metadata"].get("annotations") or {}).items()
            if not k.startswith("checksum/")
        }
        template["metadata"].pop("annotations", None)
        if kept:
            template["metadata"]["annotations"] = kept
    kind = doc["kind"]
    if kind == "ConfigMap":
        doc["data"].pop("DATASTORAGE_OPERATOR_NAMESPACES")
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        for subject in doc["subjects"]:
            subject.pop("namespace")
    if kind == "Deployment":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "operator":
                c["env"].insert(
                    0,
                    {
                        "name": "DATASTORAGE_OPERATOR_NAMESPACES",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                )
    if kind == "Job":
        doc["spec"]["ttlSecondsAfterFinished"] = 600
    return doc


@pytest.fixture(scope="module")
def base_objects():
    return kustomize_build()


@pytest.fixture(scope="module")
def chart_objects():
    # `helm test` Pods have no place in a plain base.
    return [
        d
        for d in render(release=RELEASE, include_crds=True)
        if d["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"
    ]


def test_kustomize_base_builds_and_has_the_same_objects_as_the_chart(base_objects, chart_objects):
    assert sorted(map(key, base_objects)) == sorted(map(key, chart_objects))
    assert {d["kind"] for d in base_objects} == {d["kind"] for d in chart_objects}


def test_base_objects_equal_the_chart_defaults_apart_from_the_documented_differences(
    base_objects, chart_objects
):
    chart = {key(d): chart_as_base(d) for d in chart_objects}
    for doc in base_objects:
        if doc["kind"] == "Secret":
            expected = chart[key(doc)]
            assert set(doc["data"]) == set(expected["data"]), key(doc)
            assert doc["metadata"]["labels"].items() <= expected["metadata"]["labels"].items()
            continue
        assert doc == chart[key(doc)], f"{key(doc)} differs from the chart's default render"


def test_base_has_no_namespace_and_no_helm_leftovers(base_objects):
    text = yaml.safe_dump_all(base_objects)
    assert "helm.sh" not in text and "{{" not in text
    assert all("namespace" not in d["metadata"] for d in base_objects)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_base_passes_strict_kubernetes_validation(base_objects, version):
    for doc in base_objects:
        if doc["apiVersion"] != "kopf.dev/v1":  # a custom resource: its CRD is in the base
            kubernetes_validate.validate(doc, version, strict=True)


def test_base_works_under_a_namespace_overlay(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"namespace: kubernaut-system\nresources:\n  - {os.path.relpath(BASE, overlay)}\n"
    )
    out = run([tool("kubectl"), "kustomize", str(overlay)]).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    cluster_wide = ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")
    namespaced = [d for d in docs if d["kind"] not in cluster_wide]
    assert all(d["metadata"]["namespace"] == "kubernaut-system" for d in namespaced)
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0].get("namespace", "kubernaut-system") == "kubernaut-system"
    delegator = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    assert delegator["subjects"][0]["namespace"] == "kubernaut-system"
