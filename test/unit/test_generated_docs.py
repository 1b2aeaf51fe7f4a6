"""docs/api.md and docs/configuration.md are generated (hack/gen_docs.py): fail when either is
stale, and check the hand-written operations guide against the alerts and settings it names."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from support import REPO

from datastorage.config import SETTINGS


def test_generated_reference_docs_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_operations_guide_links_every_runbook_and_names_real_settings() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    rules = yaml.safe_load((REPO / "chart" / "files" / "prometheus-rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"(runbooks/{rule['alert']}.md)" in guide, rule["alert"]
    known = {s.env for s in SETTINGS} | {"DATASTORAGE_CONFIG"}
    named = set(re.findall(r"\bDATASTORAGE_[A-Z_]+[A-Z]\b", guide))
    assert named <= known, named - known


def test_docs_link_only_inside_the_repository() -> None:
    for page in (REPO / "docs").rglob("*.md"):
        for target in re.findall(r"\]\(([\w./-]+\.md)\b", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).resolve().exists(), f"{page.name} -> {target}"
            assert REPO in (page.parent / target).resolve().parents, f"{page.name} -> {target}"
