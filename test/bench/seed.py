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
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

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

_EVENTS_SQL = f"""
INSERT INTO audit_events (event_id, event_version, event_timestamp, event_date, event_type,
    event_category, event_action, event_outcome, actor_type, actor_id, resource_type,
    resource_id, correlation_id, namespace, cluster_name, severity, duration_ms, trace_id,
    span_id, event_data)
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
""".replace(" % ", " %% ")  # noqa: E501 — psycopg placeholders: modulo is %%


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
