"""The one place configuration is read: environment variables first, then an optional YAML file.

Every setting is a field of `Settings`, described once in `SETTINGS` (env name, default, parser,
help). `load_settings()` builds and validates the frozen object; a bad value raises `ConfigError`
with one line naming the setting, which the CLI turns into exit code 2. No other module reads
`os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw

    return parse


def _log_level(raw: str) -> str:
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(raw.upper())


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _database_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.path or parts.query):
        raise ValueError("must be a libpq URL postgresql://user@host:port/dbname")
    return raw


def _dlq_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return raw
    if parts.scheme == "file" and parts.path:
        return raw
    raise ValueError("must be redis://host:port/N or file:///path/to/spool")


def _text(raw: str) -> str:
    return raw


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        "DATASTORAGE_DATABASE_URL",
        None,
        _database_url,
        "libpq URL of PostgreSQL (unset: `dev` starts its own)",
    ),
    Setting(
        "database_password_file",
        "DATASTORAGE_DATABASE_PASSWORD_FILE",
        None,
        _text,
        "file whose content is the database password (overrides the URL's)",
    ),
    Setting(
        "dlq_url",
        "DATASTORAGE_DLQ_URL",
        None,
        _dlq_url,
        "DLQ backend: redis://host:port/N or file:///path (unset: no DLQ)",
    ),
    Setting("http_host", "DATASTORAGE_HTTP_HOST", "0.0.0.0", _text, "address the API binds"),
    Setting("http_port", "DATASTORAGE_HTTP_PORT", 8080, _port, "port the API binds"),
    Setting(
        "server",
        "DATASTORAGE_SERVER",
        "hypercorn",
        _choice("hypercorn", "uvicorn"),
        "ASGI server for `serve`",
    ),
    Setting(
        "workers",
        "DATASTORAGE_WORKERS",
        os.cpu_count() or 1,
        _positive_int,
        "server processes sharing the port (SO_REUSEPORT); default: one per CPU",
    ),
    Setting(
        "db_pool_min", "DATASTORAGE_DB_POOL_MIN", 5, _non_negative_int, "connections kept open"
    ),
    Setting("db_pool_max", "DATASTORAGE_DB_POOL_MAX", 25, _positive_int, "connections at most"),
    Setting(
        "db_pool_timeout",
        "DATASTORAGE_DB_POOL_TIMEOUT",
        5.0,
        _non_negative_float,
        "seconds a request waits for a connection",
    ),
    Setting(
        "db_statement_timeout",
        "DATASTORAGE_DB_STATEMENT_TIMEOUT",
        30.0,
        _non_negative_float,
        "seconds a statement may run (0: no limit)",
    ),
    Setting(
        "shutdown_delay",
        "DATASTORAGE_SHUTDOWN_DELAY",
        5.0,
        _non_negative_float,
        "seconds between readiness 503 and closing the listener",
    ),
    Setting(
        "shutdown_timeout",
        "DATASTORAGE_SHUTDOWN_TIMEOUT",
        25.0,
        _non_negative_float,
        "seconds in-flight requests get to finish",
    ),
    Setting("log_level", "DATASTORAGE_LOG_LEVEL", "INFO", _log_level, "DEBUG|INFO|WARNING|ERROR"),
    Setting(
        "log_format", "DATASTORAGE_LOG_FORMAT", "json", _choice("json", "console"), "json|console"
    ),
    Setting(
        "max_body_bytes", "DATASTORAGE_MAX_BODY_BYTES", 1 << 20, _positive_int, "request body limit"
    ),
    Setting(
        "max_batch_body_bytes",
        "DATASTORAGE_MAX_BATCH_BODY_BYTES",
        16 << 20,
        _positive_int,
        "batch request body limit",
    ),
    Setting(
        "max_event_data_bytes",
        "DATASTORAGE_MAX_EVENT_DATA_BYTES",
        64 << 10,
        _positive_int,
        "serialized event_data limit",
    ),
    Setting(
        "max_json_depth", "DATASTORAGE_MAX_JSON_DEPTH", 32, _positive_int, "JSON nesting limit"
    ),
    Setting(
        "max_batch_items",
        "DATASTORAGE_MAX_BATCH_ITEMS",
        1000,
        _positive_int,
        "events per batch at most",
    ),
    Setting(
        "timestamp_max_age",
        "DATASTORAGE_TIMESTAMP_MAX_AGE",
        7 * 86400.0,
        _non_negative_float,
        "seconds an event_timestamp may lie in the past",
    ),
    Setting(
        "timestamp_max_skew",
        "DATASTORAGE_TIMESTAMP_MAX_SKEW",
        300.0,
        _non_negative_float,
        "seconds an event_timestamp may lie in the future",
    ),
    Setting(
        "count_limit",
        "DATASTORAGE_COUNT_LIMIT",
        10_000,
        _positive_int,
        "`total` of a query stops counting here",
    ),
    Setting(
        "partition_premake",
        "DATASTORAGE_PARTITION_PREMAKE",
        3,
        _non_negative_int,
        "months created ahead of the current one",
    ),
    Setting(
        "partition_retention_months",
        "DATASTORAGE_PARTITION_RETENTION_MONTHS",
        84,
        _positive_int,
        "months kept before a partition is retired",
    ),
    Setting(
        "partition_lock_timeout",
        "DATASTORAGE_PARTITION_LOCK_TIMEOUT",
        2.0,
        _non_negative_float,
        "seconds on-demand partition creation waits for locks",
    ),
    Setting(
        "partition_dry_run",
        "DATASTORAGE_PARTITION_DRY_RUN",
        False,
        _bool,
        "maintenance prints what it would retire instead of retiring",
    ),
    Setting(
        "partition_maintenance_interval",
        "DATASTORAGE_PARTITION_MAINTENANCE_INTERVAL",
        3600.0,
        _non_negative_float,
        "seconds between partition maintenance passes",
    ),
    Setting(
        "dlq_capacity",
        "DATASTORAGE_DLQ_CAPACITY",
        1_000_000,
        _positive_int,
        "queued records at most; beyond it writes get 503",
    ),
    Setting(
        "dlq_max_attempts",
        "DATASTORAGE_DLQ_MAX_ATTEMPTS",
        5,
        _positive_int,
        "replay attempts before a record is dead-lettered",
    ),
    Setting(
        "dlq_batch_size",
        "DATASTORAGE_DLQ_BATCH_SIZE",
        5000,
        _positive_int,
        "records replayed per transaction",
    ),
    Setting(
        "dlq_claim_idle",
        "DATASTORAGE_DLQ_CLAIM_IDLE",
        60.0,
        _non_negative_float,
        "seconds before another replica reclaims a pending Redis entry",
    ),
    Setting(
        "retry_after", "DATASTORAGE_RETRY_AFTER", 5, _positive_int, "Retry-After seconds on 503"
    ),
    Setting(
        "operator_namespaces",
        "DATASTORAGE_OPERATOR_NAMESPACES",
        (),
        _comma_list,
        "comma-separated namespaces the operator watches (empty: the pod's own)",
    ),
    Setting(
        "operator_resync_interval",
        "DATASTORAGE_OPERATOR_RESYNC_INTERVAL",
        600.0,
        _non_negative_float,
        "seconds between workflow resyncs",
    ),
    Setting(
        "operator_metrics_port",
        "DATASTORAGE_OPERATOR_METRICS_PORT",
        8081,
        _port,
        "operator metrics port",
    ),
    Setting(
        "operator_health_port",
        "DATASTORAGE_OPERATOR_HEALTH_PORT",
        8082,
        _port,
        "operator liveness port (/healthz)",
    ),
    Setting(
        "cors_allow_origins",
        "DATASTORAGE_CORS_ALLOW_ORIGINS",
        (),
        _comma_list,
        "comma-separated origins allowed cross-origin requests (empty: CORS off)",
    ),
    Setting(
        "dev_data_dir",
        "DATASTORAGE_DEV_DATA_DIR",
        ".datastorage",
        _text,
        "where `dev` keeps its database and spool",
    ),
    # Authentication, authorization, per-caller limits (SPEC §11).
    Setting(
        "auth",
        "DATASTORAGE_AUTH",
        "none",
        _choice("none", "kubernetes"),
        "none|kubernetes: TokenReview + SubjectAccessReview on every request but probes",
    ),
    Setting(
        "kubeconfig",
        "KUBECONFIG",
        None,
        _text,
        "kubeconfig for the Kubernetes API (unset: the in-cluster service account)",
    ),
    Setting(
        "auth_audiences",
        "DATASTORAGE_AUTH_AUDIENCES",
        (),
        _comma_list,
        "comma-separated audiences a token must carry one of (empty: none asked)",
    ),
    Setting(
        "auth_namespace",
        "DATASTORAGE_AUTH_NAMESPACE",
        None,
        _text,
        "namespace of the access reviews (unset: the pod's own)",
    ),
    Setting(
        "auth_token_ttl",
        "DATASTORAGE_AUTH_TOKEN_TTL",
        120.0,
        _non_negative_float,
        "seconds a token review is cached (never beyond the token's exp)",
    ),
    Setting(
        "auth_allowed_ttl",
        "DATASTORAGE_AUTH_ALLOWED_TTL",
        300.0,
        _non_negative_float,
        "seconds an allowed access review is cached",
    ),
    Setting(
        "auth_denied_ttl",
        "DATASTORAGE_AUTH_DENIED_TTL",
        30.0,
        _non_negative_float,
        "seconds a denied access review (or a rejected token) is cached",
    ),
    Setting(
        "auth_review_timeout",
        "DATASTORAGE_AUTH_REVIEW_TIMEOUT",
        5.0,
        _non_negative_float,
        "seconds a review call to the Kubernetes API may take",
    ),
    Setting(
        "rate_limit_events",
        "DATASTORAGE_RATE_LIMIT_EVENTS",
        0.0,
        _non_negative_float,
        "events per second each caller may write (0: no limit)",
    ),
    Setting(
        "rate_limit_burst",
        "DATASTORAGE_RATE_LIMIT_BURST",
        0,
        _non_negative_int,
        "events a caller may write at once (0: one second's worth)",
    ),
)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    database_password_file: str | None
    dlq_url: str | None
    http_host: str
    http_port: int
    server: str
    workers: int
    db_pool_min: int
    db_pool_max: int
    db_pool_timeout: float
    db_statement_timeout: float
    shutdown_delay: float
    shutdown_timeout: float
    log_level: str
    log_format: str
    max_body_bytes: int
    max_batch_body_bytes: int
    max_event_data_bytes: int
    max_json_depth: int
    max_batch_items: int
    timestamp_max_age: float
    timestamp_max_skew: float
    count_limit: int
    partition_premake: int
    partition_retention_months: int
    partition_lock_timeout: float
    partition_dry_run: bool
    partition_maintenance_interval: float
    dlq_capacity: int
    dlq_max_attempts: int
    dlq_batch_size: int
    dlq_claim_idle: float
    retry_after: int
    operator_namespaces: tuple[str, ...]
    operator_resync_interval: float
    operator_metrics_port: int
    operator_health_port: int
    cors_allow_origins: tuple[str, ...]
    dev_data_dir: str
    auth: str
    kubeconfig: str | None
    auth_audiences: tuple[str, ...]
    auth_namespace: str | None
    auth_token_ttl: float
    auth_allowed_ttl: float
    auth_denied_ttl: float
    auth_review_timeout: float
    rate_limit_events: float
    rate_limit_burst: int

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def require_database_url(self) -> str:
        """The libpq URL with the password from the password file applied, if one is set."""
        if not self.database_url:
            raise ConfigError("DATASTORAGE_DATABASE_URL: required (a libpq URL)")
        if not self.database_password_file:
            return self.database_url
        try:
            password = Path(self.database_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"DATASTORAGE_DATABASE_PASSWORD_FILE: cannot read ({exc})") from exc
        parts = urlsplit(self.database_url)
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _from_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"DATASTORAGE_CONFIG: cannot read {path} ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"DATASTORAGE_CONFIG: {path} must hold a mapping of settings")
    known = {s.field for s in SETTINGS}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise ConfigError(f"DATASTORAGE_CONFIG: unknown setting {unknown[0]!r} in {path}")
    return loaded


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings: overrides > environment > YAML file > defaults."""
    env = os.environ if environ is None else environ
    config_file = config_file or env.get("DATASTORAGE_CONFIG")
    from_file = _from_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field in overrides:
            values[setting.field] = overrides[setting.field]
            continue
        raw = env.get(setting.env)
        source = setting.env
        if raw is None and setting.field in from_file:
            raw = from_file[setting.field]
            source = f"{setting.field} (in {config_file})"
            if isinstance(raw, list):
                raw = ",".join(map(str, raw))
            elif isinstance(raw, bool):
                raw = str(raw).lower()
            raw = None if raw is None else str(raw)
        if raw is None or raw == "":
            values[setting.field] = setting.default
            continue
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else f"not a valid value ({exc})"
            raise ConfigError(f"{source}: {reason}, got {raw!r}") from exc
    settings = Settings(**values)
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError(
            "DATASTORAGE_DB_POOL_MIN: must not exceed DATASTORAGE_DB_POOL_MAX "
            f"({settings.db_pool_min} > {settings.db_pool_max})"
        )
    return settings
