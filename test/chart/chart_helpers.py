"""Helpers for the Kubernetes delivery tests: find helm/kubectl, render the chart, walk objects.

The real helm and kubectl binaries come from `make tools` (hack/get-helm-kubectl.sh puts them in
.tools/bin); PATH is searched first, then the repository's .tools/bin.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
VALUES_DIR = Path(__file__).resolve().parent / "values"
CRD_FILE = REPO / "manifests" / "crds" / "remediationworkflows.kubernaut.ai.yaml"
CHART_CRD_FILE = CHART / "crds" / "remediationworkflows.kubernaut.ai.yaml"
SAMPLES = REPO / "manifests" / "samples"

# Value sets rendered by the tests: name -> values file (None: chart defaults).
VALUE_SETS: dict[str, str | None] = {
    "default": None,
    "external": "external.yaml",
    "external-existing-secrets": "external-existing-secrets.yaml",
    "file-dlq": "file-dlq.yaml",
    "everything": "everything.yaml",
    "observability": "observability.yaml",
}
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
RELEASE = "ds"
NAMESPACE = "kubernaut-system"

POD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


class ToolMissing(RuntimeError):
    pass


@functools.cache
def tool(name: str) -> str:
    """Absolute path of helm/kubectl: PATH first, then the repository's .tools/bin."""
    found = shutil.which(name) or shutil.which(name, path=str(REPO / ".tools" / "bin"))
    if not found:
        raise ToolMissing(f"{name} not found on PATH or in .tools/bin: run `make tools`")
    return found


def run(
    args: list[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def helm_args(values_file: str | None, sets: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    if values_file:
        args += ["-f", str(VALUES_DIR / values_file)]
    for item in sets:  # "json:a.b=1.5" -> --set-json (plain --set turns 1.5 into a string)
        args += ["--set-json", item[5:]] if item.startswith("json:") else ["--set", item]
    return args


def helm_template(
    values_file: str | None = None,
    sets: tuple[str, ...] = (),
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    include_crds: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    return run(args + helm_args(values_file, sets), check=check)


@functools.cache
def render(
    values_file: str | None = None,
    sets: tuple[str, ...] = (),
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    include_crds: bool = False,
) -> tuple[dict[str, Any], ...]:
    """Rendered objects (cached: rendering is deterministic apart from generated passwords)."""
    out = helm_template(
        values_file, sets, release=release, namespace=namespace, include_crds=include_crds
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def pod_templates(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(\"Kind/name\", pod spec) of every workload."""
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("initContainers", [])) + list(pod_spec["containers"])


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def env_map(container_spec: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIND_", "E2E_", "KEEP_"))}
    env.update(overrides)
    return env
