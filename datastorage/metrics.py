"""Every Prometheus metric of the service, in one place (docs/operations.md).

The API server exposes the audit, HTTP, pool and DLQ families; the operator exposes partition
maintenance and reconcile metrics on its own port.

Whole-server values (docs/operations.md): when `serve` runs several worker processes, the supervisor
(`datastorage.server`) points prometheus_client's multiprocess mode at a shared directory
before the workers start, so every metric below is backed by a per-process file there and
`exposition()` merges the files of all workers, live and dead: counters and histograms are
summed, a dead worker's counts stay in the sum, its live gauges are dropped. Each gauge says
how its workers' values combine (`multiprocess_mode`); the mode is ignored in a single process.
"""

from __future__ import annotations

import functools
import glob
import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# The variable prometheus_client reads at import time to switch to multiprocess mode.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _ProcessId:
    """This process's id, read once and again after a fork. prometheus_client's multiprocess
    values call `os.getpid()` on every update to notice a fork; in the VMs this runs on that
    system call made each counter increment cost several microseconds (a request updates
    about ten values)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self.refresh)

    def refresh(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


if values.ValueClass is not values.MutexValue:
    # Before any metric exists (they are all below): every value then shares this class.
    values.ValueClass = values.MultiProcessValue(process_identifier=_ProcessId())

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
    multiprocess_mode="livesum",  # every worker has its own pool
)
POOL_WAITING = Gauge(
    "datastorage_db_pool_waiting",
    "Requests waiting for a pool connection right now.",
    multiprocess_mode="livesum",
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
# Every worker's drain observes the same queue: the latest observation is the current one.
DLQ_DEPTH = Gauge(
    "datastorage_dlq_depth",
    "Records queued and not yet replayed.",
    ["stream"],
    multiprocess_mode="livemostrecent",
)
DLQ_OLDEST_AGE = Gauge(
    "datastorage_dlq_oldest_age_seconds",
    "Age of the oldest queued record.",
    ["stream"],
    multiprocess_mode="livemostrecent",
)
DLQ_BYTES = Gauge(
    "datastorage_dlq_bytes",
    "Bytes the queued records take (file: record bytes; redis: the stream's memory).",
    ["stream"],
)
DLQ_FREE_BYTES = Gauge(
    "datastorage_dlq_free_bytes",
    "Bytes the DLQ can still take before appends get 503 (file: disk above the floor; redis:"
    " maxmemory - used_memory; NaN without a limit).",
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
# Set by the maintenance pass (the operator, or `dev`): one process, the latest pass wins.
PARTITIONS = Gauge(
    "datastorage_partitions",
    "Monthly partitions of audit_events, by state.",
    ["state"],
    multiprocess_mode="livemostrecent",
)
PARTITION_MONTHS_AHEAD = Gauge(
    "datastorage_partition_months_ahead",
    "Months after the current one that have a partition.",
    multiprocess_mode="livemostrecent",
)
PARTITION_CREATED = Counter(
    "datastorage_partition_created_total",
    "Partitions created, by trigger (maintenance|write_path).",
    ["trigger"],
)
PARTITION_MAINTENANCE_LAST_SUCCESS = Gauge(
    "datastorage_partition_maintenance_last_success_timestamp_seconds",
    "Unix time of the last successful maintenance pass.",
    multiprocess_mode="max",  # a timestamp: the latest success anywhere, even of a dead process
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


@functools.cache
def labelled(metric: Any, *label_values: str) -> Any:
    """`metric.labels(*label_values)`, looked up once: labels() validates and joins the
    values at every call, which cost as much as the update itself on the write path. The
    cache holds what the metric holds already (a child per label set)."""
    return metric.labels(*label_values)


def observe_many(histogram: Any, amounts: Iterable[float]) -> None:
    """`histogram.observe(a)` for each amount (a histogram child: no labels left), with one
    update of the sum and one per bucket touched instead of two updates an amount: a batch's
    thousand observations cost a few updates. Reads the child's bucket list and sum, which
    prometheus_client does not document (pinned in the locks; test_metric_values compares the
    outcome with one observe() per amount)."""
    bounds = histogram._upper_bounds
    counts: dict[int, int] = {}
    total = 0.0
    for amount in amounts:
        index = bisect_left(bounds, amount)  # the first bound >= amount, as observe() picks
        counts[index] = counts.get(index, 0) + 1
        total += amount
    if counts:
        histogram._sum.inc(total)
        for index, count in counts.items():
            histogram._buckets[index].inc(count)


def multiprocess() -> bool:
    """True when this process's metrics live in the shared directory (it is a worker)."""
    return values.ValueClass is not values.MutexValue


def exposition() -> bytes:
    """The Prometheus text of `/metrics`: in multiprocess mode merged over the files of every
    worker (the directory is the one that switched the mode on), else this process's registry."""
    if not multiprocess():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_WorkerFiles(os.environ[MULTIPROCESS_ENV]))
    for _ in range(3):
        try:
            return generate_latest(registry)
        except FileNotFoundError:  # a dead worker's gauge file removed while it was listed
            continue
    return generate_latest(registry)


class _WorkerFiles:
    """prometheus_client's multiprocess merge over the workers' files, minus the files a worker
    that is just starting has created but not sized yet (0 bytes: reading one fails)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = [
            path
            for path in glob.glob(os.path.join(self.directory, "*.db"))
            if os.path.exists(path) and os.path.getsize(path) >= 8
        ]
        return MultiProcessCollector.merge(files, accumulate=True)


def wipe_directory(directory: str) -> None:
    """Create `directory` and remove the metric files a previous run left there (an emptyDir
    survives container restarts). Only prometheus_client's `*.db` files are removed."""
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def worker_died(pid: int, directory: str) -> None:
    """Drop a dead worker's live gauges; its counters and histograms stay in the sums."""
    mark_process_dead(pid, directory)


# Authentication, authorization, per-caller limits (docs/auth.md). No label ever carries a token
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

# Read routing (docs/scaling.md): where queries and lists ran.
DB_READS = Counter(
    "datastorage_db_reads_total",
    "Queries and lists by the server that answered them (replica|primary).",
    ["target"],
)
REPLICA_LAG = Gauge(
    "datastorage_db_replica_lag_seconds",
    "Replay lag of the read replica as last measured (+Inf while it cannot be measured).",
    multiprocess_mode="max",
)

# The tamper-evident log (docs/tamper-evident-log.md). Every process that has the log configured
# samples the same database state every few seconds: the latest sample of a living process is the
# value.
LOG_TREE_SIZE = Gauge(
    "datastorage_log_tree_size",
    "Leaves in the Merkle tree.",
    multiprocess_mode="livemostrecent",
)
LOG_SEQUENCING_LAG = Gauge(
    "datastorage_log_sequencing_lag_seconds",
    "Age of the oldest committed event that is not a leaf yet (0: none).",
    multiprocess_mode="livemostrecent",
)
LOG_CHECKPOINT_AGE = Gauge(
    "datastorage_log_checkpoint_age_seconds",
    "Seconds since the latest checkpoint was signed (NaN before the first one).",
    multiprocess_mode="livemostrecent",
)
LOG_CONSISTENCY_FAILURES = Counter(
    "datastorage_log_consistency_failures_total",
    "Checkpoints the signer refused because the tree does not extend the last signed one.",
)
LOG_PUBLISH_FAILURES = Counter(
    "datastorage_log_publish_failures_total",
    "Rounds in which publishing checkpoints to the publish target failed (retried).",
)

# Archive before retirement (docs/compliance.md).
ARCHIVE_FAILURES = Counter(
    "datastorage_archive_failures_total",
    "Months whose archive could not be written or verified; the month was kept.",
)
