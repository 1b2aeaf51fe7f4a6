"""Bulk data for the query and search scenarios, generated inside PostgreSQL.

Audit events: `total` rows spread evenly in time over the current UTC month and the two before
it (inside the partition window; the two earlier months are created with the project's
`ensure_month_partition`), `correlations` correlation ids whose events are consecutive in time
(one remediation's events lie close together), the platform's event types in rotation,
`event_data.alert` taking 1,000 values (the containment probe matches ≈ 0.1 % of rows). Rows go
in with INSERT … SELECT generate_series in chunks on two connections (the project's indexes,
GIN included, are maintained as they would be in production), then VACUUM ANALYZE.

Workflows: `count` latest versions with 25 signal types × 4 severities and a share of `*`
wildcards on component, environment and priority; 5 % disabled.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from datastorage.domain.events import EVENT_TYPES  # noqa: E402
from datastorage.store import partitions  # noqa: E402

ALERT_VALUES = 1000
SIGNAL_TYPES = 25
SEVERITIES = ("critical", "high", "medium", "low")
ENVIRONMENTS = ("production", "staging", "development", "test")

_TYPES_SQL = ", ".join(
    f"({index}, '{t.event_type}', '{t.event_category}', '{t.event_action}')"
    for index, t in enumerate(sorted(EVENT_TYPES.values(), key=lambda t: t.event_type))
)
TYPE_COUNT = len(EVENT_TYPES)

# The seeded columns (the others take their defaults: no parent, no error, 2555 days, ...).
_EVENT_COLUMNS = """event_id, event_version, event_timestamp, event_date, event_type,
    event_category, event_action, event_outcome, actor_type, actor_id, resource_type,
    resource_id, correlation_id, namespace, cluster_name, severity, duration_ms, trace_id,
    span_id, event_data"""

# Rows low ≤ i < high of the data set, of the UTC days [first_day, end_day): one definition of
# the distribution for both ways of loading it.
_EVENT_ROWS = f"""
SELECT gen_random_uuid(), '1.0', s.ts, (s.ts AT TIME ZONE 'UTC')::date, t.event_type,
       t.category, t.action, (ARRAY['success','success','success','failure','pending'])[1 + s.i % 5],
       'service', t.category || '-service', t.category, s.corr, s.corr,
       'ns-' || (s.i % 200), 'cluster-' || (s.i % 5),
       (ARRAY['info','warning','error','critical'])[1 + s.i % 4], s.i % 5000,
       md5(s.i::text), substr(md5(s.i::text), 1, 16),
       jsonb_build_object('alert', 'alert-' || (s.i % {ALERT_VALUES}), 'replicas', s.i % 10,
           'pod', 'pod-' || (s.i % 5000), 'signal', 'HighMemoryUsage', 'seq', s.i,
           'message', 'Pod memory usage above 90%% of its limit for 5 minutes')
  FROM (SELECT i,
               %(start)s::timestamptz + (i::float8 / %(total)s) * (%(end)s::timestamptz - %(start)s::timestamptz) AS ts,
               'rr-' || lpad((i::bigint * %(correlations)s / %(total)s)::text, 6, '0') AS corr
          FROM generate_series(%(low)s::bigint, %(high)s::bigint - 1) AS i) AS s
  JOIN (VALUES {_TYPES_SQL}) AS t(k, event_type, category, action) ON t.k = s.i % {TYPE_COUNT}
 WHERE (s.ts AT TIME ZONE 'UTC')::date >= %(first_day)s::date
   AND (s.ts AT TIME ZONE 'UTC')::date < %(end_day)s::date
""".replace(" % ", " %% ")  # noqa: E501 — psycopg placeholders: modulo is %%
_EVENTS_SQL = f"INSERT INTO audit_events ({_EVENT_COLUMNS}) {_EVENT_ROWS}"


@dataclass(frozen=True)
class EventData:
    total: int
    correlations: int
    start: dt.datetime
    end: dt.datetime
    seconds: float

    def correlation_id(self, index: int) -> str:
        return f"rr-{index:06d}"


def data_window(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[first day of the month two before the current one, now − 1 minute), in UTC."""
    now = now or dt.datetime.now(dt.UTC)
    first = partitions.add_months(partitions.current_month(now), -2)
    start = dt.datetime(first.year, first.month, 1, tzinfo=dt.UTC)
    return start, now - dt.timedelta(minutes=1)


def seed_events(
    connect: Callable[[], psycopg.Connection],
    total: int,
    correlations: int,
    *,
    chunk: int = 200_000,
    parallel: int = 2,
    progress: Callable[[str], None] = print,
) -> EventData:
    started = time.monotonic()
    start, end = data_window()
    with connect() as conn:
        for offset in range(-2, 1):
            month = partitions.add_months(partitions.current_month(), offset)
            partitions.ensure_month_partition(conn, month)
    chunks = [(low, min(low + chunk, total)) for low in range(0, total, chunk)]
    done = [0]

    def insert(bounds: tuple[int, int]) -> None:
        low, high = bounds
        with connect() as conn:
            conn.execute("SET synchronous_commit = off")  # bulk load only; fsync stays on
            conn.execute(
                _EVENTS_SQL,
                {
                    "start": start,
                    "end": end,
                    "total": total,
                    "correlations": correlations,
                    "low": low,
                    "high": high,
                    "first_day": dt.date.min,
                    "end_day": dt.date.max,
                },
            )
        done[0] += high - low
        progress(f"  seeded {done[0]:,} / {total:,} events ({time.monotonic() - started:.0f} s)")

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(insert, chunks))
    with connect() as conn:
        conn.execute("VACUUM (ANALYZE) audit_events")
        conn.execute("CHECKPOINT")
    return EventData(total, correlations, start, end, time.monotonic() - started)


@dataclass(frozen=True)
class BulkLoad:
    """What `bulk_load_events` loaded and how long each phase took."""

    data: EventData
    rows_seconds: float  # COPY of the rows into the month tables
    index_seconds: float  # the project's indexes built on them
    attach_seconds: float  # attach + ANALYZE + CHECKPOINT
    month_rows: dict[str, int]

    @property
    def rate(self) -> float:
        """Events per second, end to end (rows, indexes, attach)."""
        return self.data.total / max(self.data.seconds, 1e-9)


def bulk_load_events(
    connect: Callable[[], psycopg.Connection],
    total: int,
    correlations: int,
    *,
    streams: int = 2,
    progress: Callable[[str], None] = print,
) -> BulkLoad:
    """The rows of `seed_events`, loaded the way a restore loads a large table: each month's
    partition is replaced by a table created and filled in one transaction by binary
    `COPY ... FROM STDIN (FREEZE)`, whose rows PostgreSQL builds itself (`COPY (SELECT ...)
    TO STDOUT` on a second connection, relayed block by block). Then the parent's indexes are
    built on each table (`streams` at a time, sorted builds) and the tables attached as
    partitions. COPY FREEZE leaves the rows frozen and all-visible: no VACUUM is needed, and
    autovacuum has nothing to do while the queries are measured. Indexes built by sorting are
    denser than indexes grown one insert at a time, so sizes are a lower bound."""
    started = time.monotonic()
    start, end = data_window()
    months = _months_between(start.date(), end.date())
    with connect() as conn:
        for month in months:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(month)))
    month_rows: dict[str, int] = {}

    def copy_month(month: dt.date) -> None:
        first, after = month, partitions.add_months(month, 1)
        params = {
            "start": start,
            "end": end,
            "total": total,
            "correlations": correlations,
            "low": max(0, math.floor(_index_at(first, start, end, total)) - 1),
            "high": min(total, math.ceil(_index_at(after, start, end, total)) + 1),
            "first_day": first,
            "end_day": after,
        }
        copy_out = f"COPY ({_EVENT_ROWS}) TO STDOUT (FORMAT BINARY)"
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY, FREEZE)").format(
            _ident(month), sql.SQL(_EVENT_COLUMNS)
        )
        began = time.monotonic()
        with connect() as source, connect() as target, target.transaction():
            target.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                    "INCLUDING STORAGE, CONSTRAINT {} CHECK (event_date >= {} AND event_date < {}))"
                ).format(_ident(month), _bounds(month), sql.Literal(first), sql.Literal(after))
            )
            with (
                source.cursor().copy(copy_out, params) as rows_out,
                target.cursor().copy(copy_in) as rows_in,
            ):
                pending = bytearray()  # one write per MiB, not one per row
                for block in rows_out:
                    pending += block
                    if len(pending) >= 1 << 20:
                        rows_in.write(pending)
                        pending = bytearray()
                rows_in.write(pending)
            (count,) = target.execute(
                sql.SQL("SELECT count(*) FROM {}").format(_ident(month))
            ).fetchone()
        month_rows[str(month)[:7]] = count
        seconds = time.monotonic() - began
        progress(
            f"  {str(month)[:7]}: {count:,} rows by COPY in {seconds:.0f} s ({count / seconds:,.0f}/s)"
        )

    with ThreadPoolExecutor(max_workers=streams) as pool:
        # Largest months first, so the streams finish together.
        list(pool.map(copy_month, sorted(months, key=lambda m: m == months[-1])))
    rows_done = time.monotonic()
    progress(f"  rows: {total:,} in {rows_done - started:.0f} s; building indexes")

    with connect() as conn:
        parent_indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisprimary FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'audit_events'::regclass"
        ).fetchall()
    jobs = [(month, *index) for month in months for index in parent_indexes]

    def build(job: tuple[dt.date, str, str, bool]) -> None:
        month, name, definition, primary = job
        with connect() as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("SET max_parallel_maintenance_workers = 0")  # the streams use the cores
            conn.execute(_partition_index_sql(month, name, definition, primary))

    # GIN first: the longest builds start first.
    jobs.sort(key=lambda job: (" gin " not in job[2], job[0] == months[-1]))
    with ThreadPoolExecutor(max_workers=streams) as pool:
        list(pool.map(build, jobs))
    indexes_done = time.monotonic()
    progress(f"  indexes: {len(jobs)} built in {indexes_done - rows_done:.0f} s; attaching")

    with connect() as conn:
        for month in months:
            pkey = _partition_index_name(month, "audit_events_pkey")
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY USING INDEX {}").format(
                    _ident(month), sql.Identifier(pkey)
                )
            )
            partitions.ensure_month_partition(conn, month)  # attaches: the indexes match
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(_ident(month), _bounds(month))
            )
        conn.execute("ANALYZE audit_events")
        conn.execute("CHECKPOINT")
    finished = time.monotonic()
    data = EventData(total, correlations, start, end, finished - started)
    return BulkLoad(
        data, rows_done - started, indexes_done - rows_done, finished - indexes_done, month_rows
    )


def _months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    months, month = [], partitions.month_of(first)
    while month <= last:
        months.append(month)
        month = partitions.add_months(month, 1)
    return months


def _index_at(month: dt.date, start: dt.datetime, end: dt.datetime, total: int) -> float:
    """Where in 0..total the rows of UTC midnight, first day of `month`, fall."""
    moment = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    return (moment - start).total_seconds() / (end - start).total_seconds() * total


def _ident(month: dt.date) -> sql.Identifier:
    return sql.Identifier(partitions.partition_name(month))


def _bounds(month: dt.date) -> sql.Identifier:
    return sql.Identifier(f"{partitions.partition_name(month)}_bulk_bounds")


def _partition_index_name(month: dt.date, parent_index: str) -> str:
    return f"{partitions.partition_name(month)}_{parent_index.removeprefix('audit_events_')}"


_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ (USING .*)$")


def _partition_index_sql(month: dt.date, name: str, definition: str, primary: bool) -> sql.Composed:
    """The parent's index `definition` (pg_get_indexdef) on the month's table. The primary
    key's index is built as a unique index and turned into the key before attaching."""
    match = _INDEX_DEF.match(definition)
    if match is None:
        raise RuntimeError(f"unexpected index definition: {definition}")
    unique = "UNIQUE " if match.group(1) or primary else ""
    return sql.SQL("CREATE {}INDEX {} ON {} {}").format(
        sql.SQL(unique),
        sql.Identifier(_partition_index_name(month, name)),
        _ident(month),
        sql.SQL(match.group(2)),
    )


_WORKFLOWS_SQL = f"""
INSERT INTO remediation_workflow_catalog (workflow_name, version, name, description, content,
    content_hash, labels, custom_labels, detected_labels, parameters, execution_engine,
    container_image, status, is_latest_version, created_by, updated_by)
SELECT 'bench-wf-' || lpad(s.i::text, 6, '0'), '1.0.0', 'Bench workflow ' || s.i,
       'Remediates signal-' || (s.i % {SIGNAL_TYPES}) || ' by restarting or scaling',
       s.content, encode(sha256(convert_to(s.content, 'UTF8')), 'hex'),
       jsonb_build_object(
           'signal_type', 'signal-' || (s.i % {SIGNAL_TYPES}),
           'severity', (ARRAY{list(SEVERITIES)!r})[1 + (s.i / {SIGNAL_TYPES}) % 4],
           'component', CASE WHEN s.i % 5 = 0 THEN '*' ELSE 'component-' || (s.i % 20) END,
           'environment', CASE WHEN s.i % 7 = 0 THEN '*'
                               ELSE (ARRAY{list(ENVIRONMENTS)!r})[1 + s.i % 4] END,
           'priority', CASE WHEN s.i % 6 = 0 THEN '*' ELSE 'P' || (s.i % 4) END),
       jsonb_build_object('team', jsonb_build_array('team-' || (s.i % 10)),
           'region', jsonb_build_array(CASE WHEN s.i % 3 = 0 THEN '*' ELSE 'eu-' || (s.i % 3) END)),
       jsonb_build_object('gitOpsManaged', s.i % 2 = 0,
           'gitOpsTool', (ARRAY['argocd','flux','*'])[1 + s.i % 3],
           'pdbProtected', s.i % 3 = 0, 'hpaEnabled', s.i % 4 = 0, 'stateful', s.i % 5 = 0,
           'helmManaged', s.i % 2 = 1, 'networkIsolated', s.i % 7 = 0,
           'serviceMesh', (ARRAY['istio','linkerd','*'])[1 + s.i % 3]),
       '{{}}'::jsonb, 'tekton', 'quay.io/kubernaut/bench-wf-' || (s.i % 50) || ':1.0',
       CASE WHEN s.i % 20 = 0 THEN 'disabled' ELSE 'active' END, true, 'bench', 'bench'
  FROM (SELECT i, 'apiVersion: kubernaut.ai/v1alpha1' || E'\\nkind: Workflow\\nmetadata:\\n  name: '
               || 'bench-wf-' || i || E'\\nsteps:\\n  - name: restart\\n    action: restart-pod\\n'
               AS content
          FROM generate_series(1, %(count)s) AS i) AS s
""".replace(" % ", " %% ")  # noqa: E501


def catalog_exists(conn: psycopg.Connection) -> bool:
    return (
        conn.execute("SELECT to_regclass('remediation_workflow_catalog')").fetchone()[0] is not None
    )


def seed_workflows(conn: psycopg.Connection, count: int) -> float:
    started = time.monotonic()
    conn.execute("TRUNCATE remediation_workflow_catalog")
    conn.execute(_WORKFLOWS_SQL, {"count": count})
    conn.execute("VACUUM (ANALYZE) remediation_workflow_catalog")
    return time.monotonic() - started
