"""The one place configuration is read: environment variables first, then an optional YAML file.

Every setting is declared once, as a field of the frozen `Settings` dataclass:

    http_port: int = setting(8080, _port, "port the API binds")

that is its name and type (what `settings.http_port` is), its default, the parser of its raw
text (raises ValueError, ideally "must ...") and one line of help. Its environment variable is
`DATASTORAGE_` + the field name in capitals (`DATASTORAGE_HTTP_PORT`), its YAML key the field
name. `SETTINGS` is derived from the fields for the loader and the tests. Adding a setting is
that one line, then `python hack/gen_docs.py` to regenerate docs/configuration.md (a test
fails while it is stale).

`load_settings()` builds and validates the object; a bad value raises `ConfigError` with one
line naming the setting, which the CLI turns into exit code 2. No other module reads
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


def _object_store_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme == "file" and parts.path.startswith("/") and not parts.netloc:
        return raw
    if parts.scheme == "s3" and parts.netloc:
        return raw
    raise ValueError("must be file:///absolute/dir or s3://bucket/prefix")


def _text(raw: str) -> str:
    return raw


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


@dataclass(frozen=True)
class Setting:
    """One setting as the loader and the docs see it, derived from its `Settings` field."""

    field: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str


ENV_PREFIX = "DATASTORAGE_"


def setting(default: Any, parse: Callable[[str], Any], help: str, *, env: str | None = None) -> Any:
    """Declare a `Settings` field: its default, the parser of its raw text, one line of help.
    Its environment variable is `DATASTORAGE_<FIELD NAME IN CAPITALS>` unless `env` names a
    standard one (`KUBECONFIG`)."""
    metadata = {"parse": parse, "help": help, "env": env}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, each declared once, here (see the module docstring)."""

    database_url: str | None = setting(
        None, _database_url, "libpq URL of PostgreSQL (unset: `dev` starts its own)"
    )
    database_password_file: str | None = setting(
        None, _text, "file whose content is the database password (overrides the URL's)"
    )
    dlq_url: str | None = setting(
        None, _dlq_url, "DLQ backend: redis://host:port/N or file:///path (unset: no DLQ)"
    )
    http_host: str = setting("0.0.0.0", _text, "address the API binds")
    http_port: int = setting(8080, _port, "port the API binds")
    server: str = setting("hypercorn", _choice("hypercorn", "uvicorn"), "ASGI server for `serve`")
    workers: int = setting(
        os.cpu_count() or 1,
        _positive_int,
        "server processes sharing the port (SO_REUSEPORT); default: one per CPU",
    )
    metrics_dir: str | None = setting(
        None,
        _text,
        "directory where worker processes share metric files (its *.db files are wiped at "
        "start; unset: a temporary directory)",
    )
    db_pool_min: int = setting(5, _non_negative_int, "connections kept open")
    db_pool_max: int = setting(25, _positive_int, "connections at most")
    db_pool_timeout: float = setting(
        5.0, _non_negative_float, "seconds a request waits for a connection"
    )
    db_statement_timeout: float = setting(
        30.0, _non_negative_float, "seconds a statement may run (0: no limit)"
    )
    db_tcp_timeout: float = setting(
        20.0,
        _non_negative_float,
        "seconds without an answer from a silent database host (network cut, host gone) after"
        " which a connection counts as lost, on both ends: TCP keepalive probes and a limit on"
        " unacknowledged data (0: the OS defaults, about 15 minutes)",
    )
    database_pooler: str = setting(
        "none",
        _choice("none", "pgbouncer"),
        "none|pgbouncer: the URL names PgBouncer in transaction mode (no session state)",
    )
    database_read_url: str | None = setting(
        None,
        _database_url,
        "libpq URL of a streaming read replica for queries and lists (unset: the primary)",
    )
    read_max_lag: float = setting(
        5.0, _non_negative_float, "seconds of replay lag up to which reads use the replica"
    )
    shutdown_delay: float = setting(
        5.0, _non_negative_float, "seconds between readiness 503 and closing the listener"
    )
    shutdown_timeout: float = setting(
        25.0, _non_negative_float, "seconds in-flight requests get to finish"
    )
    log_level: str = setting("INFO", _log_level, "DEBUG|INFO|WARNING|ERROR")
    log_format: str = setting("json", _choice("json", "console"), "json|console")
    max_body_bytes: int = setting(1 << 20, _positive_int, "request body limit")
    max_batch_body_bytes: int = setting(16 << 20, _positive_int, "batch request body limit")
    max_event_data_bytes: int = setting(64 << 10, _positive_int, "serialized event_data limit")
    max_json_depth: int = setting(32, _positive_int, "JSON nesting limit")
    max_batch_items: int = setting(1000, _positive_int, "events per batch at most")
    timestamp_max_age: float = setting(
        7 * 86400.0, _non_negative_float, "seconds an event_timestamp may lie in the past"
    )
    timestamp_max_skew: float = setting(
        300.0, _non_negative_float, "seconds an event_timestamp may lie in the future"
    )
    count_limit: int = setting(10_000, _positive_int, "`total` of a query stops counting here")
    partition_premake: int = setting(
        3, _non_negative_int, "months created ahead of the current one"
    )
    partition_retention_months: int = setting(
        84, _positive_int, "months kept before a partition is retired"
    )
    partition_lock_timeout: float = setting(
        2.0, _non_negative_float, "seconds on-demand partition creation waits for locks"
    )
    partition_dry_run: bool = setting(
        False, _bool, "maintenance prints what it would retire instead of retiring"
    )
    partition_maintenance_interval: float = setting(
        3600.0, _non_negative_float, "seconds between partition maintenance passes"
    )
    dlq_capacity: int = setting(
        1_000_000, _positive_int, "queued records at most; beyond it writes get 503"
    )
    dlq_max_attempts: int = setting(
        5, _positive_int, "replay attempts before a record is dead-lettered"
    )
    dlq_batch_size: int = setting(5000, _positive_int, "records replayed per transaction")
    dlq_claim_idle: float = setting(
        60.0, _non_negative_float, "seconds before another replica reclaims a pending Redis entry"
    )
    dlq_min_free_bytes: int = setting(
        64 * 1024 * 1024,
        _non_negative_int,
        "disk room a file:// DLQ keeps (half as a reserve for the drain); appends that would "
        "leave less get 503 (0: no floor)",
    )
    retry_after: int = setting(5, _positive_int, "Retry-After seconds on 503")
    operator_namespaces: tuple[str, ...] = setting(
        (), _comma_list, "comma-separated namespaces the operator watches (empty: the pod's own)"
    )
    operator_resync_interval: float = setting(
        600.0, _non_negative_float, "seconds between workflow resyncs"
    )
    operator_peering: str | None = setting(
        None,
        _text,
        "name of the KopfPeering object the operator replicas share: one is active, the "
        "others stand by (unset: every replica works on its own)",
    )
    operator_priority: int = setting(
        0,
        _non_negative_int,
        "peering priority, the highest live one is active (0: a random one per process)",
    )
    operator_peering_lifetime: int = setting(
        60,
        _positive_int,
        "seconds a replica's peering record stays valid: a dead active operator is replaced "
        "after at most this",
    )
    operator_metrics_port: int = setting(8081, _port, "operator metrics port")
    operator_health_port: int = setting(8082, _port, "operator liveness port (/healthz)")
    cors_allow_origins: tuple[str, ...] = setting(
        (), _comma_list, "comma-separated origins allowed cross-origin requests (empty: CORS off)"
    )
    dev_data_dir: str = setting(".datastorage", _text, "where `dev` keeps its database and spool")
    auth: str = setting(
        "none",
        _choice("none", "kubernetes"),
        "none|kubernetes: TokenReview + SubjectAccessReview on every request but probes",
    )
    kubeconfig: str | None = setting(
        None,
        _text,
        "kubeconfig for the Kubernetes API (unset: the in-cluster service account)",
        env="KUBECONFIG",
    )
    auth_audiences: tuple[str, ...] = setting(
        (), _comma_list, "comma-separated audiences a token must carry one of (empty: none asked)"
    )
    auth_namespace: str | None = setting(
        None, _text, "namespace of the access reviews (unset: the pod's own)"
    )
    auth_token_ttl: float = setting(
        120.0,
        _non_negative_float,
        "seconds a token review is cached (never beyond the token's exp)",
    )
    auth_allowed_ttl: float = setting(
        300.0, _non_negative_float, "seconds an allowed access review is cached"
    )
    auth_denied_ttl: float = setting(
        30.0, _non_negative_float, "seconds a denied access review (or a rejected token) is cached"
    )
    auth_review_timeout: float = setting(
        5.0, _non_negative_float, "seconds a review call to the Kubernetes API may take"
    )
    rate_limit_events: float = setting(
        0.0, _non_negative_float, "events per second each caller may write (0: no limit)"
    )
    rate_limit_burst: int = setting(
        0, _non_negative_int, "events a caller may write at once (0: one second's worth)"
    )
    log_signing_key_file: str | None = setting(
        None, _text, "signed-note private key of the tamper-evident log (unset: the log is off)"
    )
    log_origin: str | None = setting(
        None, _text, "origin line of the log's checkpoints (unset: the signing key's name)"
    )
    log_checkpoint_interval: float = setting(
        10.0, _non_negative_float, "seconds between signed checkpoints while the log grows"
    )
    log_publish_url: str | None = setting(
        None,
        _object_store_url,
        "where checkpoints are published: file:///DIR or s3://BUCKET/PREFIX (unset: nowhere)",
    )
    log_process: bool = setting(
        True,
        _bool,
        "with more than one server worker, run the log's sequencer, signer and publisher in a"
        " process of their own next to the workers (false: on a thread of one worker, where"
        " they compete with its requests for the interpreter lock)",
    )
    s3_endpoint_url: str | None = setting(
        None, _text, "endpoint of an S3-compatible store (unset: AWS)"
    )
    log_sequence_batch: int = setting(
        5000,
        _positive_int,
        "events the sequencer takes per transaction (whole queued statements, at least one)",
    )
    log_sequence_interval: float = setting(
        0.5, _non_negative_float, "seconds the sequencer waits when nothing is pending"
    )
    log_unsequenced_grace: float = setting(
        300.0,
        _non_negative_float,
        "seconds after its commit before verify reports an event that is no leaf",
    )
    archive_url: str | None = setting(
        None,
        _object_store_url,
        "where months are archived before retirement: file:///DIR or s3://BUCKET/PREFIX "
        "(unset: retired months are dropped without an archive)",
    )
    export_batch_size: int = setting(
        2000, _positive_int, "rows an export reads from its server-side cursor at a time"
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def log_on(self) -> bool:
        """Whether the tamper-evident log runs (a signing key is configured)."""
        return bool(self.log_signing_key_file)

    @property
    def log_in_own_process(self) -> bool:
        """Whether `serve` runs the log's workers in a process of their own (`log_process`,
        several workers) rather than on a thread of an API process."""
        return self.log_on and self.log_process and self.workers > 1

    def require_database_url(self) -> str:
        """The libpq URL with the password from the password file applied, if one is set."""
        if not self.database_url:
            raise ConfigError("DATASTORAGE_DATABASE_URL: required (a libpq URL)")
        return self._with_password(self.database_url)

    def read_database_url(self) -> str | None:
        """The replica's libpq URL (the password file applies to it too), or None."""
        return self._with_password(self.database_read_url) if self.database_read_url else None

    def _with_password(self, url: str) -> str:
        if not self.database_password_file:
            return url
        try:
            password = Path(self.database_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"DATASTORAGE_DATABASE_PASSWORD_FILE: cannot read ({exc})") from exc
        parts = urlsplit(url)
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(
        f.name,
        f.metadata["env"] or ENV_PREFIX + f.name.upper(),
        f.default,
        f.metadata["parse"],
        f.metadata["help"],
    )
    for f in dataclasses.fields(Settings)
)


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
    if settings.rate_limit_events > 0 and settings.auth != "kubernetes":
        # The buckets are keyed by the reviewed username: without auth there is no caller.
        raise ConfigError(
            "DATASTORAGE_RATE_LIMIT_EVENTS: needs DATASTORAGE_AUTH=kubernetes "
            f"(the limit is per authenticated caller), got auth={settings.auth!r}"
        )
    return settings
