"""The chart's containers of the DataStorage image, as the container smoke test runs them.

`make image-test` starts the image with the flags `pod_runtime` derives from `helm template`
(one derivation, no second copy). These tests pin that derivation: every such container of every
value set translates (a new securityContext field or volume type fails here until the smoke
test can reproduce it), and the default render gives exactly the confinement and mounts the
smoke test ran with.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from chart_helpers import VALUE_SETS, container, pod_templates, render
from pod_runtime import SERVICE_ACCOUNT_DIR, Untranslatable, container_runtime

IMAGE_REPOSITORY = "ghcr.io/kubernaut/datastorage"

CONFINEMENT = [
    "--user=10001:10001",
    "--group-add=10001",
    "--security-opt=no-new-privileges",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
]


def image_containers(values_file):
    for kind_name, pod in pod_templates(render(values_file)):
        for spec in pod["containers"]:
            if spec["image"].startswith(IMAGE_REPOSITORY + ":"):
                yield kind_name, pod, spec["name"]


def flags(pod, name):
    runtime = container_runtime(pod, name)
    return runtime.flags({m.volume: Path("/src", m.volume) for m in runtime.mounts})


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_image_container_of_every_value_set_translates(value_set):
    found = list(image_containers(VALUE_SETS[value_set]))
    assert {name for _, _, name in found} >= {"datastorage", "operator", "migrate"}
    for _, pod, name in found:
        assert flags(pod, name)[: len(CONFINEMENT)] == CONFINEMENT


def default_pod(kind):
    [pod] = [pod for key, pod in pod_templates(render()) if key.startswith(kind + "/")]
    return pod


def test_the_default_server_and_operator_run_confined_with_the_chart_volumes():
    pod = default_pod("Deployment")
    for name in ("datastorage", "operator"):
        assert flags(pod, name) == [
            *CONFINEMENT,
            f"--volume=/src/serviceaccount:{SERVICE_ACCOUNT_DIR}:ro",
            "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777,size=256m",
            "--volume=/src/postgresql-password:/etc/datastorage/postgresql:ro",
        ], name


def test_the_default_migration_job_has_no_service_account_token():
    assert flags(default_pod("Job"), "migrate") == [
        *CONFINEMENT,
        "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777,size=64m",
        "--volume=/src/postgresql-password:/etc/datastorage/postgresql:ro",
    ]


def test_the_file_dlq_is_a_writable_volume():
    [pod] = [pod for key, pod in pod_templates(render("file-dlq.yaml")) if "Deployment" in key]
    assert "--volume=/src/dlq:/var/lib/datastorage/dlq:rw" in flags(pod, "datastorage")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, p: c["securityContext"].update(privileged=True), "privileged"),
        (lambda c, p: c["securityContext"].update(seccompProfile={"type": "Unconfined"}), "secc"),
        (lambda c, p: c["volumeMounts"][0].update(subPath="x"), "subPath"),
        (lambda c, p: p["volumes"].append({"name": "tmp", "hostPath": {"path": "/"}}), "host"),
        (lambda c, p: p["securityContext"].update(runAsUser=0), "runAsUser 0"),
    ],
)
def test_a_setting_podman_cannot_reproduce_is_refused(change, message):
    pod = copy.deepcopy(default_pod("Deployment"))
    if message == "host":
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tmp"]
    change(container(pod, "datastorage"), pod)
    with pytest.raises(Untranslatable):
        container_runtime(pod, "datastorage")
