"""The README's configuration table names every setting the service has."""

from pathlib import Path

from datastorage.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in README]
    assert missing == []
