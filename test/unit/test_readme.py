"""The configuration reference names every setting the service has (docs/configuration.md is
generated from the settings table; test_generated_docs fails when it is stale)."""

from pathlib import Path

from datastorage.config import SETTINGS

REFERENCE = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented():
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in REFERENCE]
    assert missing == []
