"""Every Prometheus metric of the service, in one place (SPEC §8).

The API server exposes the audit, HTTP, pool and DLQ families; the operator exposes partition
maintenance and reconcile metrics on its own port. With several server processes sharing a port
each process reports its own values (Prometheus scrapes one pod's process at a time).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Audit write path.
AUDIT_TRACES = Counter(
    "datastorage_audit_traces_total",
    "Audit records received, by emitting service and outcome (success|dlq_fallback|rejected).",
    ["service", "status"],
)
AUDIT_LAG = Histogram(
    "datastorage_audit_lag_seconds",
    "Seconds between an event's timestamp and its arrival, by emitting service.",
    ["service"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400),
)
WRITE_DURATION = Histogram(
    "datastorage_write_duration_seconds",
    "Seconds a database write took, by table.",
    ["table"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
VALIDATION_FAILURES = Counter(
    "datastorage_validation_failures_total",
    "Request fields rejected by validation, by field and reason.",
    ["field", "reason"],
)
UNKNOWN_EVENT_TYPES = Counter(
    "datastorage_unknown_event_types_total",
    "Events accepted with an event_type outside the shipped catalog.",
    ["event_category"],
)

# HTTP.
HTTP_REQUESTS = Counter(
    "datastorage_http_requests_total",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "datastorage_http_request_duration_seconds",
    "Seconds to serve an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Connection pool.
POOL_CONNECTIONS = Gauge(
    "datastorage_db_pool_connections",
    "Connections of the pool, by state (idle|in_use).",
    ["state"],
)
POOL_WAITING = Gauge(
    "datastorage_db_pool_waiting", "Requests waiting for a pool connection right now."
)
POOL_WAIT = Histogram(
    "datastorage_db_pool_wait_seconds",
    "Seconds a request waited for a pool connection.",
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10),
)
POOL_TIMEOUTS = Counter(
    "datastorage_db_pool_timeouts_total", "Requests that gave up waiting for a pool connection."
)

# Dead-letter queue.
DLQ_DEPTH = Gauge("datastorage_dlq_depth", "Records queued and not yet replayed.", ["stream"])
DLQ_OLDEST_AGE = Gauge(
    "datastorage_dlq_oldest_age_seconds", "Age of the oldest queued record.", ["stream"]
)
DLQ_ENQUEUED = Counter("datastorage_dlq_enqueued_total", "Records written to the DLQ.", ["stream"])
DLQ_REPLAYED = Counter(
    "datastorage_dlq_replayed_total", "Records replayed from the DLQ into PostgreSQL.", ["stream"]
)
DLQ_DEAD_LETTERED = Counter(
    "datastorage_dlq_dead_lettered_total",
    "Records moved to the dead-letter stream after repeated permanent failures.",
    ["stream"],
)

# Partitions.
PARTITIONS = Gauge(
    "datastorage_partitions", "Monthly partitions of audit_events, by state.", ["state"]
)
PARTITION_MONTHS_AHEAD = Gauge(
    "datastorage_partition_months_ahead", "Months after the current one that have a partition."
)
PARTITION_CREATED = Counter(
    "datastorage_partition_created_total",
    "Partitions created, by trigger (maintenance|write_path).",
    ["trigger"],
)
PARTITION_MAINTENANCE_LAST_SUCCESS = Gauge(
    "datastorage_partition_maintenance_last_success_timestamp_seconds",
    "Unix time of the last successful maintenance pass.",
)
PARTITION_MAINTENANCE_FAILURES = Counter(
    "datastorage_partition_maintenance_failures_total", "Maintenance passes that failed."
)

# Operator.
WORKFLOW_RECONCILE = Counter(
    "datastorage_workflow_reconcile_total",
    "RemediationWorkflow reconciliations, by result.",
    ["result"],
)

# Authentication, authorization, per-caller limits (SPEC §11). No label ever carries a token
# or a username: label values are fixed words.
AUTH_REQUESTS = Counter(
    "datastorage_auth_requests_total",
    "Requests checked by authentication/authorization, by result "
    "(allowed|denied|unauthenticated|error).",
    ["result"],
)
AUTH_CACHE = Counter(
    "datastorage_auth_cache_total",
    "Review cache lookups, by kind (token|access) and result (hit|miss; a miss called the API).",
    ["kind", "result"],
)
AUTH_REVIEW_DURATION = Histogram(
    "datastorage_auth_review_duration_seconds",
    "Seconds a TokenReview (token) or SubjectAccessReview (access) call took, errors included.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "datastorage_rate_limited_total", "Write requests refused with 429 by the per-caller limit."
)
