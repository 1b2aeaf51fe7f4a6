"""Settings: environment first, then YAML, defaults last; one clear line per bad setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from datastorage.config import SETTINGS, ConfigError, load_settings


def test_defaults_match_the_spec():
    settings = load_settings({})
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)
    assert (settings.db_pool_min, settings.db_pool_max, settings.db_pool_timeout) == (5, 25, 5.0)
    assert (settings.shutdown_delay, settings.shutdown_timeout) == (5.0, 25.0)
    assert settings.max_body_bytes == 1 << 20 and settings.max_batch_body_bytes == 16 << 20
    assert settings.max_event_data_bytes == 64 << 10 and settings.max_json_depth == 32
    assert settings.max_batch_items == 1000 and settings.count_limit == 10_000
    assert settings.dlq_capacity == 1_000_000 and settings.partition_premake == 3
    assert settings.partition_retention_months == 84


def test_every_setting_is_read_from_its_environment_variable():
    for setting in SETTINGS:
        default = setting.default
        if setting.field in ("database_url", "database_read_url"):
            raw = "postgresql://u@h:5432/db"
        elif setting.field == "database_pooler":
            raw = "pgbouncer"
        elif setting.field == "dlq_url":
            raw = "redis://localhost:6379/2"
        elif setting.field in ("log_level",):
            raw = "DEBUG"
        elif setting.field == "log_format":
            raw = "console"
        elif setting.field == "server":
            raw = "uvicorn"
        elif setting.field in ("log_publish_url", "archive_url"):
            raw = "file:///some/dir"
        elif setting.field == "auth":
            raw = "kubernetes"
        elif isinstance(default, bool):
            raw = "false" if default else "true"
        elif isinstance(default, int):
            raw = "7"
        elif isinstance(default, float):
            raw = "7.5"
        elif isinstance(default, tuple):
            raw = "a,b"
        else:
            raw = "/some/value"
        env = {setting.env: raw}
        if setting.field == "db_pool_min":
            env["DATASTORAGE_DB_POOL_MAX"] = "30"
        if setting.field == "rate_limit_events":
            env["DATASTORAGE_AUTH"] = "kubernetes"  # the limit is per authenticated caller
        value = getattr(load_settings(env), setting.field)
        assert value != default, setting.env


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DATASTORAGE_DB_POOL_MAX": "lots"}, "DATASTORAGE_DB_POOL_MAX"),
        ({"DATASTORAGE_DB_POOL_MAX": "0"}, "DATASTORAGE_DB_POOL_MAX"),
        ({"DATASTORAGE_HTTP_PORT": "70000"}, "DATASTORAGE_HTTP_PORT"),
        ({"DATASTORAGE_LOG_FORMAT": "xml"}, "DATASTORAGE_LOG_FORMAT"),
        ({"DATASTORAGE_DLQ_URL": "ftp://x"}, "DATASTORAGE_DLQ_URL"),
        ({"DATASTORAGE_DATABASE_URL": "mysql://x"}, "DATASTORAGE_DATABASE_URL"),
        ({"DATASTORAGE_DB_POOL_MIN": "30"}, "DATASTORAGE_DB_POOL_MIN"),
        ({"DATASTORAGE_SHUTDOWN_DELAY": "-1"}, "DATASTORAGE_SHUTDOWN_DELAY"),
        ({"DATASTORAGE_ARCHIVE_URL": "ftp://x/y"}, "DATASTORAGE_ARCHIVE_URL"),
    ],
)
def test_bad_setting_names_the_variable(env, named):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(named)


def test_yaml_file_below_environment(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("db_pool_max: 40\nhttp_port: 9000\noperator_namespaces: [a, b]\n")
    settings = load_settings({"DATASTORAGE_HTTP_PORT": "9100"}, config_file=str(path))
    assert settings.db_pool_max == 40
    assert settings.http_port == 9100
    assert settings.operator_namespaces == ("a", "b")


def test_unknown_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("db_pool_maximum: 40\n")
    with pytest.raises(ConfigError, match="db_pool_maximum"):
        load_settings({}, config_file=str(path))


def test_password_file_is_applied_to_the_url(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr:t@\n")
    settings = load_settings(
        {
            "DATASTORAGE_DATABASE_URL": "postgresql://app@db.example:5433/audit?sslmode=require",
            "DATASTORAGE_DATABASE_PASSWORD_FILE": str(secret),
        }
    )
    assert settings.require_database_url() == (
        "postgresql://app:s3cr%3At%40@db.example:5433/audit?sslmode=require"
    )


def test_cli_exits_2_with_one_line_naming_the_setting():
    result = subprocess.run(
        [sys.executable, "-m", "datastorage", "migrate"],
        env={"DATASTORAGE_DB_POOL_MAX": "many", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATASTORAGE_DB_POOL_MAX" in lines[0]


def test_missing_database_url_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "datastorage", "serve"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "DATASTORAGE_DATABASE_URL" in result.stderr
