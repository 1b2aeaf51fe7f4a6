"""The hashed lock files in requirements/ against pyproject.toml.

requirements/runtime.lock is what the image installs (--require-hashes); requirements/dev.lock
is what `make venv` and CI install. Every runtime requirement of pyproject.toml (with the
uvicorn extra the image ships), and everything those need in turn, must be pinned in the
runtime lock with hashes, at the same version as in the dev lock. A dependency added to
pyproject.toml without `make lock` fails here.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from chart_helpers import REPO
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = REPO / "requirements"
IMAGE_EXTRAS = ("uvicorn",)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return pins


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def runtime_requirements(proj: dict) -> list[Requirement]:
    names = list(proj["dependencies"])
    for extra in IMAGE_EXTRAS:
        names += proj["optional-dependencies"][extra]
    return [Requirement(r) for r in names]


def missing_from_lock(requirements: list[Requirement], pins: dict) -> list[str]:
    """Problems with `requirements` and everything they need (read from the installed
    distributions' metadata, the venv being installed from the dev lock): not pinned, pinned
    at a version the requirement excludes, or pinned without hashes."""
    problems: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(r, frozenset()) for r in requirements]
    while queue:
        req, parent_extras = queue.pop()
        environments = [{**default_environment(), "extra": e} for e in parent_extras or {""}]
        if req.marker and not any(req.marker.evaluate(env) for env in environments):
            continue
        name = canonicalize_name(req.name)
        key = (str(req), parent_extras)
        if key in seen:
            continue
        seen.add(key)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
            continue
        version, hashes = pins[name]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} excludes the locked {name}=={version}")
        if not hashes:
            problems.append(f"{name}=={version} has no hashes")
        try:
            needs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed: run `make venv`")
            continue
        queue += [(Requirement(r), frozenset(req.extras)) for r in needs]
    return problems


@pytest.fixture(scope="module")
def runtime_pins():
    return read_lock(LOCKS / "runtime.lock")


@pytest.fixture(scope="module")
def dev_pins():
    return read_lock(LOCKS / "dev.lock")


def test_every_runtime_dependency_is_pinned_with_hashes(runtime_pins):
    assert missing_from_lock(runtime_requirements(project()), runtime_pins) == []


def test_every_test_dependency_is_pinned_with_hashes_in_the_dev_lock(dev_pins):
    proj = project()
    requirements = runtime_requirements(proj) + [
        Requirement(r) for r in proj["optional-dependencies"]["test"]
    ]
    assert missing_from_lock(requirements, dev_pins) == []


def test_the_image_and_the_venv_get_the_same_versions(runtime_pins, dev_pins):
    assert {n: v for n, (v, _) in runtime_pins.items()} == {
        n: dev_pins[n][0] for n in runtime_pins if n in dev_pins
    }
    assert set(runtime_pins) <= set(dev_pins)


def test_the_venv_runs_what_the_dev_lock_pins(dev_pins):
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    drift = {n: (v, installed.get(n)) for n, (v, _) in dev_pins.items() if installed.get(n) != v}
    assert drift == {}, "the venv differs from requirements/dev.lock: run `make venv`"


def test_a_dependency_missing_from_the_lock_is_reported(runtime_pins):
    proj = project()
    proj["dependencies"] = [*proj["dependencies"], "pyfiglet>=1.0"]
    assert missing_from_lock(runtime_requirements(proj), runtime_pins) == [
        "pyfiglet>=1.0 is not in the lock"
    ]
    proj = project()
    proj["dependencies"] = [*proj["dependencies"], "starlette<0.1"]
    [problem] = missing_from_lock(runtime_requirements(proj), runtime_pins)
    assert problem.startswith("starlette<0.1 excludes the locked starlette==")


def test_the_build_backend_is_pinned_for_the_editable_and_wheel_builds(dev_pins):
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert missing_from_lock([Requirement(r) for r in build], dev_pins) == []
