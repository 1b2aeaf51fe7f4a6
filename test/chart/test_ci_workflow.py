"""The GitHub Actions workflow runs `make test` and, on a runner with Docker, `make e2e`."""

from __future__ import annotations

import yaml
from chart_helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def load():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean true.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def run_commands(job):
    return [step["run"] for step in job["steps"] if "run" in step]


def test_workflow_triggers_on_push_and_pull_request():
    triggers = load()["on"]
    assert "push" in triggers and "pull_request" in triggers


def test_a_job_runs_make_test():
    jobs = load()["jobs"]
    assert any(cmd.strip() == "make test" for job in jobs.values() for cmd in run_commands(job))


def test_a_job_runs_make_e2e_on_a_docker_runner_with_kind():
    jobs = load()["jobs"]
    [e2e] = [
        job for job in jobs.values() if any(cmd.strip() == "make e2e" for cmd in run_commands(job))
    ]
    assert e2e["runs-on"].startswith("ubuntu")  # GitHub's Ubuntu runners ship a Docker engine
    assert any("kind" in cmd and "install" in cmd for cmd in run_commands(e2e))
    steps = [s.get("uses", "") for s in e2e["steps"]]
    assert any(s.startswith("actions/checkout@") for s in steps)


def test_every_job_checks_out_and_sets_up_python_3_11():
    for name, job in load()["jobs"].items():
        steps = job["steps"]
        assert steps[0]["uses"].startswith("actions/checkout@"), name
        setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
        assert setup["with"]["python-version"] == "3.11", name
