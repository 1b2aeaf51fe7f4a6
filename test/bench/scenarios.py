"""The benchmark scenarios (the sixth, the tamper-evident log, lives in ledger_bench.py). Each
measures the service and the raw database path for the same work in the same run, against the
same table and indexes, and returns report rows.

Every throughput measurement starts from an empty audit_events (TRUNCATE + CHECKPOINT) and,
for the service, after a short warm-up (pool filled, statements prepared). CPU of the server
tree, of PostgreSQL and of the client is recorded for every window, so each row can say where
the time went (application vs database CPU per event).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import seed  # noqa: E402
from payload import COLUMNS  # noqa: E402
from procs import CpuWindow, _descendants, run_child  # noqa: E402
from report import Row, latency_ratio, latency_summary  # noqa: E402
from stack import BENCH_TOKEN, Stack  # noqa: E402

from datastorage.store.audit_queries import GIN_FIRST_MAX_MATCHES  # noqa: E402

RAW_SCRIPT = str(Path(__file__).resolve().parent / "raw.py")
EVENTS_PATH = "/api/v1/audit/events"
BATCH_PATH = "/api/v1/audit/events/batch"
SEARCH_PATH = "/api/v1/workflows/search"


@dataclass
class Options:
    scenarios: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    duration: float = 20.0
    warmup: float = 3.0
    rows: int = 1_000_000  # the export scenario
    query_rows: int = 10_000_000  # the query scenario (bulk-loaded by COPY)
    correlations: int = 50_000
    dlq_events: int = 100_000
    dlq_backends: tuple[str, ...] = ("redis", "file")
    workers: int | None = None
    servers: tuple[str, ...] = ("hypercorn", "uvicorn")
    client: str = "auto"
    query_runs: int = 200
    query_budget: float = 30.0
    workflows: int = 10_000
    searches: int = 1_000
    raw_copy_format: str = "binary"
    single_concurrency: int = 50
    raw_connections: int = 25
    batch_concurrency: int = 2
    batch_size: int = 1000
    log_leaves: int = 1_000_000
    through_pgbouncer: bool = False


@dataclass
class Bench:
    stack: Stack
    options: Options
    log_dir: Path
    progress: Any = print
    # Raw baselines measured once per run and shared by the scenarios that compare with them.
    baselines: dict[str, Any] = field(default_factory=dict)

    def server_label(self, server: str) -> str:
        via = ", via PgBouncer" if self.options.through_pgbouncer else ""
        return f"{server}, workers={self.options.workers or default_workers()}{via}"

    def raw(self, mode: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A raw baseline in its own process, with PostgreSQL's CPU over the same window."""
        cpu = CpuWindow(None, self.stack.postgres_pid).start()
        child = run_child(
            [sys.executable, RAW_SCRIPT, mode],
            spec={"url": self.stack.database_url, **spec},
            timeout=timeout,
            log_path=self.log_dir / "raw.log",
        )
        cpu.stop()
        return {
            **child.output,
            "client_cpu_seconds": round(child.cpu_seconds, 3),
            "cpu": cpu.as_dict(child.cpu_seconds),
        }

    def count_events(self) -> int:
        with self.stack.connect() as conn:
            return conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]


def default_workers() -> str:
    """What `datastorage serve` runs without --workers (DATASTORAGE_WORKERS or its default)."""
    try:
        from datastorage.config import load_settings

        return str(load_settings().workers)
    except Exception:  # noqa: BLE001 — a label only
        return "default"


# A window where processes outside the benchmark used more than this share of the machine
# (other test runs on a shared machine) is flagged in the notes.
NOISE_THRESHOLD = 0.10


def _cpu_notes(load: dict[str, Any], cpu: CpuWindow, events: int, raw: dict[str, Any]) -> list[str]:
    notes = [
        f"{load['client']} client {load['client_cpu_fraction_of_one_core'] * 100:.0f}% of a core"
    ]
    if events:
        notes.append(
            f"CPU/event app {cpu.server_seconds / events * 1e3:.2f} ms, "
            f"pg {cpu.postgres_seconds / events * 1e3:.2f} ms"
        )
    return notes + _noise_notes(cpu.other_fraction(load["client_cpu_seconds"]), raw)


def _noise_notes(service_other: float, raw: dict[str, Any] | None) -> list[str]:
    raw_other = (raw or {}).get("cpu", {}).get("other_processes_fraction", 0.0)
    if max(service_other, raw_other) <= NOISE_THRESHOLD:
        return []
    return [f"NOISY: other processes took {service_other:.0%} / {raw_other:.0%} of CPU (svc/raw)"]


def _load_window(bench: Bench, server_pid: int, url: str, path: str, **kwargs: Any):
    cpu = CpuWindow(server_pid, bench.stack.postgres_pid).start()
    load = loadgen.run_load(
        url, path, client=bench.options.client, log_path=bench.log_dir / "client.log", **kwargs
    )
    cpu.stop()
    return load, cpu


# ---- 1. single-event POST -------------------------------------------------------------------


SINGLE_BASELINES = (("pgbench", "pgbench"), ("insert", "psycopg"))


def single_write_baseline(bench: Bench) -> tuple[dict[str, Any], list[Row]]:
    """One INSERT per commit on `raw_connections` connections, by pgbench (C, prepared) and
    by psycopg in threads, each from an empty table, stored rows counted. Returns the higher
    of the two (the baseline of single writes) and a row for each. Measured once per run."""
    if "single" in bench.baselines:
        return bench.baselines["single"], []
    opts = bench.options
    results, rows = [], []
    for mode, name in SINGLE_BASELINES:
        spec: dict[str, Any] = {
            "connections": opts.raw_connections,
            "duration": opts.duration,
            "max_rows": int(opts.duration * 50_000),
        }
        if mode == "pgbench":
            spec["pgbench"] = bench.stack.pg_tool("pgbench")
        bench.stack.reset_events()
        bench.progress(f"[1] raw: one INSERT per commit, {name}, {opts.raw_connections} conns")
        raw = bench.raw(mode, spec, timeout=opts.duration + 120)
        raw["stored"] = bench.count_events()
        results.append(raw)
        cpu = raw["cpu"]
        notes = [
            f"CPU/event client {cpu['client_cpu_seconds'] / max(raw['rows'], 1) * 1e3:.2f} ms, "
            f"pg {cpu['postgres_cpu_seconds'] / max(raw['rows'], 1) * 1e3:.2f} ms",
            "stored = committed"
            if raw["stored"] == raw["rows"]
            else f"STORED {raw['stored']:,} != {raw['rows']:,}",
        ]
        notes += _noise_notes(0.0, raw)
        rows.append(
            Row(
                f"1. raw INSERT per commit ({raw['client']})",
                "throughput",
                "events/s",
                **_rate_fields(raw),
                notes=notes,
                details={"raw": raw},
            )
        )
    best = max(results, key=lambda r: r["rate"])
    for row, raw in zip(rows, results, strict=True):
        if raw is best:
            row.notes.insert(0, "the higher: single-write ratios are against it")
    bench.baselines["single"] = best
    return best, rows


def single_event(bench: Bench) -> list[Row]:
    opts = bench.options
    raw, rows = single_write_baseline(bench)
    for server in opts.servers:
        if server == "uvicorn" and not _importable("uvicorn"):
            rows.append(
                Row(
                    f"1. single POST c={opts.single_concurrency} (uvicorn)",
                    "info",
                    notes=["skipped: uvicorn not installed (pip install -e '.[test]')"],
                )
            )
            continue
        auth_off_rate = None
        for auth in AUTH_MODES:
            bench.progress(
                f"[1] {server}{auth.label}: POST {EVENTS_PATH} at concurrency "
                f"{opts.single_concurrency}"
            )
            load, cpu, stored = _measure(
                bench, server, auth, EVENTS_PATH, opts.single_concurrency, 0, 50_000
            )
            acked = sum(n for code, n in load["codes"].items() if code in ("201", "202"))
            notes = [f"non-2xx {load['non_2xx']}"]
            if load["transport_errors"]:
                notes.append(f"transport errors {load['transport_errors']}")
            if stored < acked:
                notes.append(f"LOST: {acked} acknowledged, {stored} stored")
            notes += _auth_notes(auth, load["rate_events"], auth_off_rate)
            notes += _cpu_notes(load, cpu, load["events"], raw)
            notes.append(f"ratio vs {raw['client'].split(',')[0]}")
            auth_off_rate = auth_off_rate or load["rate_events"]
            rows.append(
                _throughput_row(
                    f"1. single POST c={opts.single_concurrency} "
                    f"({bench.server_label(server)}{auth.label})",
                    (load, cpu, stored),
                    raw,
                    notes,
                    raw_kind=raw["client"],
                    auth=auth.name,
                )
            )
    return rows


@dataclass(frozen=True)
class AuthMode:
    """How the measured server treats callers: `off` (DATASTORAGE_AUTH=none) or `on`
    (kubernetes, every request reviewed against the stack's Kubernetes API stand-in, whose
    answers the server caches: the warm-up fills the caches, so the window measures the
    steady state of a long-running caller)."""

    name: str
    label: str

    def env(self, bench: Bench) -> dict[str, str]:
        return bench.stack.auth_env() if self.name == "on" else {}

    def bearer(self) -> str:
        return BENCH_TOKEN if self.name == "on" else ""


AUTH_MODES = (AuthMode("off", ""), AuthMode("on", ", auth on"))


def _throughput_row(
    scenario: str,
    measured: tuple[dict[str, Any], CpuWindow, int],
    raw: dict[str, Any],
    notes: list[str],
    **details: Any,
) -> Row:
    """An events/s row of a `_measure` window against its raw baseline."""
    load, cpu, stored = measured
    return Row(
        scenario,
        "throughput",
        "events/s",
        rate=load["rate_events"],
        p50_ms=load["latency_ms"]["p50"],
        p99_ms=load["latency_ms"]["p99"],
        **_rate_fields(raw, "raw_"),
        notes=notes,
        details={
            "service": load,
            "cpu": cpu.as_dict(load["client_cpu_seconds"]),
            "stored": stored,
            "raw": raw,
            **details,
        },
    )


def _rate_fields(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A measurement's rate, p50 and p99 as Row fields (`prefix="raw_"`: as its baseline)."""
    return {
        f"{prefix}rate": result["rate"],
        f"{prefix}p50_ms": result["latency_ms"]["p50"],
        f"{prefix}p99_ms": result["latency_ms"]["p99"],
    }


def _auth_notes(auth: AuthMode, rate: float, auth_off_rate: float | None) -> list[str]:
    if auth.name != "on" or not auth_off_rate:
        return []
    return [f"auth on = {rate / auth_off_rate:.0%} of auth off"]


def _measure(
    bench: Bench,
    server: str,
    auth: AuthMode,
    path: str,
    concurrency: int,
    batch: int,
    max_rate: int,
) -> tuple[dict[str, Any], CpuWindow, int]:
    """Warm-up, then one measured window of POST load on a fresh server; (load, cpu, stored)."""
    opts = bench.options
    process = bench.stack.start_server(server, opts.workers, **auth.env(bench))
    try:
        common = {"client": opts.client, "concurrency": concurrency, "batch": batch}
        loadgen.run_load(process.url, path, duration=opts.warmup, bearer=auth.bearer(), **common)
        bench.stack.reset_events()
        load, cpu = _load_window(
            bench,
            process.proc.pid,
            process.url,
            path,
            duration=opts.duration,
            max_requests=int(opts.duration * max_rate),
            bearer=auth.bearer(),
            concurrency=concurrency,
            batch=batch,
        )
        stored = bench.count_events()
    finally:
        bench.stack.stop_server(process)
    return load, cpu, stored


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# ---- 2. batch POST --------------------------------------------------------------------------


def batch_baseline(bench: Bench) -> dict[str, Any]:
    """COPY of `batch_size`-row batches in `batch_concurrency` streams: the baseline of batch
    writes, measured once per run."""
    if "batch" not in bench.baselines:
        opts = bench.options
        streams = opts.batch_concurrency
        bench.stack.reset_events()
        bench.progress(
            f"[2] raw: {opts.raw_copy_format} COPY of {opts.batch_size}-row batches, "
            f"{streams} streams"
        )
        bench.baselines["batch"] = bench.raw(
            "copy",
            {
                "streams": streams,
                "batch": opts.batch_size,
                "duration": opts.duration,
                "format": opts.raw_copy_format,
            },
            timeout=opts.duration + 120,
        )
    return bench.baselines["batch"]


def batch(bench: Bench) -> list[Row]:
    opts = bench.options
    streams = opts.batch_concurrency
    raw = batch_baseline(bench)
    rows = []
    auth_off_rate = None
    for auth in AUTH_MODES:
        bench.progress(
            f"[2] hypercorn{auth.label}: POST {BATCH_PATH} of {opts.batch_size} "
            f"at concurrency {streams}"
        )
        load, cpu, stored = _measure(
            bench, "hypercorn", auth, BATCH_PATH, streams, opts.batch_size, 100
        )
        notes = [f"non-2xx {load['non_2xx']}", f"raw = {opts.raw_copy_format} COPY"]
        notes += _auth_notes(auth, load["rate_events"], auth_off_rate)
        notes += _cpu_notes(load, cpu, load["events"], raw)
        auth_off_rate = auth_off_rate or load["rate_events"]
        rows.append(
            _throughput_row(
                f"2. batch POST {opts.batch_size} c={streams} "
                f"({bench.server_label('hypercorn')}{auth.label})",
                (load, cpu, stored),
                raw,
                notes,
                auth=auth.name,
            )
        )
    return rows


# ---- 3. DLQ replay --------------------------------------------------------------------------


def dlq_replay(bench: Bench) -> list[Row]:
    opts = bench.options
    total = max(opts.batch_size, opts.dlq_events // opts.batch_size * opts.batch_size)
    bench.stack.reset_events()
    bench.progress(
        f"[3] raw: {opts.raw_copy_format} COPY of {total:,} rows in "
        f"{opts.batch_size}-row batches, 1 stream"
    )
    raw = bench.raw(
        "copy",
        {
            "streams": 1,
            "batch": opts.batch_size,
            "total_rows": total,
            "format": opts.raw_copy_format,
        },
        timeout=total / 100 + 120,
    )
    rows = []
    for backend in opts.dlq_backends:
        rows.append(_replay_one(bench, backend, total, raw))
    return rows


def _dlq_url(bench: Bench, backend: str) -> str:
    if backend == "redis":
        return bench.stack.start_redis().url
    spool = bench.log_dir / f"spool-{time.monotonic_ns()}.db"
    return f"file://{spool}"


def _replay_one(bench: Bench, backend: str, total: int, raw: dict[str, Any]) -> Row:
    opts = bench.options
    stack = bench.stack
    assert stack.pg is not None
    label = f"3. DLQ replay {total:,} ({backend}, {bench.server_label('hypercorn')})"
    stack.reset_events()
    process = stack.start_server(
        "hypercorn", opts.workers, DATASTORAGE_DLQ_URL=_dlq_url(bench, backend)
    )
    try:
        bench.progress(f"[3] {backend}: PostgreSQL stopped; queueing {total:,} events")
        stack.pg.stop()
        enqueue = loadgen.run_python_load(
            process.url,
            BATCH_PATH,
            concurrency=2,
            duration=max(600.0, total / 50),
            batch=opts.batch_size,
            max_requests=total // opts.batch_size,
            log_path=bench.log_dir / "client.log",
        )
        queued = enqueue["codes"].get("202", 0) * opts.batch_size
        depth = _dlq_depth(process.url)
        bench.progress(
            f"[3] {backend}: {queued:,} queued (202) in {enqueue['seconds']:.1f} s; "
            "starting PostgreSQL"
        )
        cpu = CpuWindow(process.proc.pid, None).start()
        stack.pg.start()
        pg_up = time.monotonic()
        pg_cpu = CpuWindow(None, stack.postgres_pid).start()  # a new postmaster
        first_row, first_count, done, count = _wait_for_rows(
            bench, queued, timeout=max(120.0, total / 500)
        )
        cpu.stop()
        cpu.postgres_seconds = pg_cpu.stop().postgres_seconds
    finally:
        stack.ensure_postgres_running()
        stack.stop_server(process)
    notes = [f"enqueue 202s {enqueue['codes'].get('202', 0)}/{total // opts.batch_size}"]
    if enqueue["non_2xx"] or enqueue["codes"].get("201"):
        notes.append(f"enqueue codes {enqueue['codes']}")
    details: dict[str, Any] = {
        "enqueue": enqueue,
        "dlq_depth_before": depth,
        "raw": raw,
        "stored": count,
        "cpu": cpu.as_dict(),
    }
    if done is None or first_row is None:
        notes.append(f"TIMEOUT: {count:,} of {queued:,} stored")
        return Row(
            label, "throughput", "events/s", raw_rate=raw["rate"], notes=notes, details=details
        )
    # From the first committed replay batch to the last: rows committed in that span.
    replay_seconds = max(done - first_row, 1e-6)
    replayed_in_span = count - first_count
    end_to_end = done - pg_up
    if replayed_in_span < count / 2:  # most of it landed between two polls: use end to end
        replay_seconds, replayed_in_span = end_to_end, count
        notes.append("replay rate = end to end (faster than the poll)")
    notes.append(f"PG up -> first row {first_row - pg_up:.1f} s (drain backoff)")
    notes.append(f"end-to-end {queued / end_to_end:,.0f} ev/s")
    notes.append("stored exactly once" if count == queued else f"STORED {count:,} != {queued:,}")
    if count:
        notes.append(
            f"CPU/event app {cpu.server_seconds / count * 1e3:.2f} ms, "
            f"pg {cpu.postgres_seconds / count * 1e3:.2f} ms"
        )
    details |= {
        "first_row_after_s": first_row - pg_up,
        "replay_seconds": replay_seconds,
        "end_to_end_seconds": end_to_end,
    }
    notes += _noise_notes(cpu.other_fraction(), raw)
    return Row(
        label,
        "throughput",
        "events/s",
        rate=replayed_in_span / replay_seconds,
        raw_rate=raw["rate"],
        notes=notes,
        details=details,
    )


def _dlq_depth(url: str) -> Any:
    try:
        return httpx.get(url + "/api/v1/admin/dlq", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def _wait_for_rows(bench: Bench, expected: int, timeout: float):
    """Poll count(*) every 0.1 s: (time rows were first seen, how many, time all were there,
    final count)."""
    deadline = time.monotonic() + timeout
    first_row = None
    first_count = 0
    count = 0
    conn = None
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = bench.stack.connect()
            count = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        except Exception:  # noqa: BLE001 — PostgreSQL is still recovering
            conn = None
        now = time.monotonic()
        if count and first_row is None:
            first_row, first_count = now, count
        if count >= expected:
            if conn is not None:
                time.sleep(1.0)  # duplicates would show up now
                count = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
                conn.close()
            return first_row, first_count, now, count
        time.sleep(0.1)
    if conn is not None:
        conn.close()
    return first_row, first_count, None, count


# ---- 4. queries -----------------------------------------------------------------------------

_SELECT_LIST = ", ".join([*COLUMNS, "created_at"])


@dataclass
class QueryCase:
    """One query shape, as HTTP requests and as the SQL the service runs for them."""

    name: str
    requests: list[dict[str, Any]]  # for loadgen.run_sequence
    raw_statements: list[tuple[str, list[str]]]  # SQL with named params, one snapshot per run
    raw_runs: list[dict[str, Any]]
    role: str = ""  # "containment" | "page1" | "deep_cursor": rows that get extra notes
    target_p99_ms: float | None = None  # the acceptance target of this shape, if it has one


def _event_query_sql(
    filters: dict[str, str],
    *,
    since: bool = False,
    until: bool = False,
    data: bool = False,
    cursor: bool = False,
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
    count_limit: int = 10_000,
    gin_first: bool = True,
) -> list[tuple[str, list[str]]]:
    """The page and the capped count, as store.audit_queries.query_events builds them."""
    clauses, names = [], []
    for name in filters:
        clauses.append(f"{name} = %s")
        names.append(name)
    if since:
        clauses.append("event_timestamp >= %s::timestamptz AND event_date >= %s::date")
        names += ["since", "since_date"]
    if until:
        clauses.append("event_timestamp <= %s::timestamptz AND event_date <= %s::date")
        names += ["until", "until_date"]
    if data:
        clauses.append("event_data @> %s::jsonb")
        names.append("event_data")
    where = " AND ".join(clauses) or "TRUE"
    page_where, page_names = where, list(names)
    if cursor:
        op = "<" if descending else ">"
        page_where += f" AND (event_timestamp, event_id) {op} (%s::timestamptz, %s::uuid)"
        page_names += ["cursor_ts", "cursor_id"]
    direction = "DESC" if descending else "ASC"
    order = f"ORDER BY event_timestamp {direction}, event_id {direction} LIMIT {limit + 1} OFFSET {offset}"
    if data and gin_first:
        # A probe matching at most audit_queries.GIN_FIRST_MAX_MATCHES rows: the service
        # pages it GIN-first (the caller says whether the seeded probes do).
        page = (
            f"WITH matches AS MATERIALIZED (SELECT {_SELECT_LIST} FROM audit_events "
            f"WHERE {page_where}) SELECT * FROM matches {order}"
        )
    else:
        page = f"SELECT {_SELECT_LIST} FROM audit_events WHERE {page_where} {order}"
    count = (
        f"SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE {where} "
        f"LIMIT {count_limit + 1}) AS capped"
    )
    return [(page, page_names), (count, names)]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


BROAD_FILTER = {"event_category": "gateway"}
# Issue 15's target for timeline, type + range, containment and the deep cursor page.
TARGET_P99_MS = 20.0


def _gin_first(total: int) -> bool:
    """Whether the service pages the seeded containment probes GIN-first: each matches about
    total / seed.ALERT_VALUES rows, against audit_queries.GIN_FIRST_MAX_MATCHES."""
    return total / seed.ALERT_VALUES <= min(GIN_FIRST_MAX_MATCHES, 10_000)


PAGE_SIZE = 100
DEEP_PAGE = 1000


def _events_url(**params: Any) -> str:
    return f"{EVENTS_PATH}?{urlencode(params)}"


def _query_cases(
    bench: Bench, data: seed.EventData, cursor_token: str, cursor_row, deep_page: int
) -> list[QueryCase]:
    """The query shapes of scenario 4, with per-run parameters drawn from a fixed seed."""
    rng = random.Random(20240601)
    runs = bench.options.query_runs
    cases = []

    sample = rng.sample(range(data.correlations), min(runs, data.correlations))
    correlations = [data.correlation_id(i) for i in sample]
    for order in ("asc", "desc"):
        cases.append(
            QueryCase(
                f"timeline {order} (1 correlation id)",
                [{"path": _events_url(correlation_id=c, order=order)} for c in correlations],
                _event_query_sql({"correlation_id": ""}, descending=order == "desc"),
                [{"correlation_id": c} for c in correlations],
                target_p99_ms=TARGET_P99_MS,
            )
        )

    types = sorted(seed.EVENT_TYPES)
    days = max((data.end.date() - data.start.date()).days, 1)
    ranged = []
    for _ in range(runs):
        day = data.start + dt.timedelta(days=rng.randrange(days))
        ranged.append((rng.choice(types), day, day + dt.timedelta(days=1)))
    cases.append(
        QueryCase(
            "type + 1-day range, page 1",
            [
                {"path": _events_url(event_type=t, since=_iso(s), until=_iso(u))}
                for t, s, u in ranged
            ],
            _event_query_sql({"event_type": ""}, since=True, until=True),
            [
                {
                    "event_type": t,
                    "since": _iso(s),
                    "since_date": s.date().isoformat(),
                    "until": _iso(u),
                    "until_date": u.date().isoformat(),
                }
                for t, s, u in ranged
            ],  # fmt: skip
            target_p99_ms=TARGET_P99_MS,
        )
    )

    alerts = [
        json.dumps({"alert": f"alert-{rng.randrange(seed.ALERT_VALUES)}"}) for _ in range(runs)
    ]
    cases.append(
        QueryCase(
            "event_data containment, page 1",
            [{"path": _events_url(event_data=a)} for a in alerts],
            _event_query_sql({}, data=True, gin_first=_gin_first(data.total)),
            [{"event_data": a} for a in alerts],
            role="containment",
            target_p99_ms=TARGET_P99_MS,
        )
    )

    broad, limit = dict(BROAD_FILTER), PAGE_SIZE
    offset = (deep_page - 1) * limit
    cursor_params = {"cursor_ts": _iso(cursor_row[0]), "cursor_id": str(cursor_row[1])}
    cases += [
        QueryCase(
            f"cursor page 1 (category, limit {limit})",
            [{"path": _events_url(**broad, limit=limit)}],
            _event_query_sql(broad, limit=limit),
            [broad] * runs,
            role="page1",
        ),
        QueryCase(
            f"cursor page {deep_page} (category, limit {limit})",
            [{"path": _events_url(**broad, limit=limit, cursor=cursor_token)}],
            _event_query_sql(broad, cursor=True, limit=limit),
            [{**broad, **cursor_params}] * runs,
            role="deep_cursor",
            target_p99_ms=TARGET_P99_MS,
        ),
        QueryCase(
            f"offset page {deep_page} (category, offset {offset:,})",
            [{"path": _events_url(**broad, limit=limit, offset=offset)}],
            _event_query_sql(broad, limit=limit, offset=offset),
            [broad] * runs,
        ),
    ]
    return cases


def _walk_cursor(url: str, path: str, pages: int) -> str | None:
    """Follow next_cursor for `pages` − 1 pages: the token that opens page `pages`."""
    token = None
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(pages - 1):
            response = client.get(path + (f"&cursor={token}" if token else ""))
            response.raise_for_status()
            token = response.json()["pagination"]["next_cursor"]
            if token is None:
                return None
    return token


def _gin_usage(bench: Bench, case: QueryCase) -> dict[str, Any]:
    """EXPLAIN the case's page and count statements: which indexes, and are any of them GIN."""
    result = {}
    with bench.stack.connect() as conn:
        gin = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'gin'"
            )
        }
        for label, (statement, names) in zip(("page", "count"), case.raw_statements, strict=True):
            params = [case.raw_runs[0][name] for name in names]
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0]
            indexes = sorted(set(_plan_values(plan, "Index Name")))
            result[label] = {
                "indexes": indexes,
                "gin": bool(gin & set(indexes)),
                "nodes": sorted(set(_plan_values(plan, "Node Type"))),
            }
    return result


def _plan_values(node: Any, key: str):
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            else:
                yield from _plan_values(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _plan_values(item, key)


def _deep_page_position(bench: Bench) -> tuple[int, tuple[dt.datetime, Any]]:
    """Page number to reach (1000, or fewer when the broad filter has fewer pages) and the
    (event_timestamp, event_id) that ends the page before it, for the raw keyset query."""
    category = BROAD_FILTER["event_category"]
    with bench.stack.connect() as conn:
        (matching,) = conn.execute(
            "SELECT count(*) FROM audit_events WHERE event_category = %s", (category,)
        ).fetchone()
        deep_page = min(DEEP_PAGE, matching // PAGE_SIZE)
        if deep_page < 2:
            raise RuntimeError(f"only {matching} {category} events: use a larger --rows")
        cursor_row = conn.execute(
            "SELECT event_timestamp, event_id FROM audit_events WHERE event_category = %s "
            "ORDER BY event_timestamp DESC, event_id DESC OFFSET %s LIMIT 1",
            (category, (deep_page - 1) * PAGE_SIZE - 1),
        ).fetchone()
    return deep_page, cursor_row


def _serve_queries(bench: Bench, data: seed.EventData):
    """Walk the cursor to the deep page, then time every case through the HTTP API."""
    opts = bench.options
    deep_page, cursor_row = _deep_page_position(bench)
    process = bench.stack.start_server("hypercorn", opts.workers)
    try:
        bench.progress(f"[4] walking {deep_page - 1} cursor pages to reach page {deep_page}")
        token = _walk_cursor(process.url, _events_url(**BROAD_FILTER, limit=PAGE_SIZE), deep_page)
        if token is None:
            raise RuntimeError(f"the cursor walk ended before page {deep_page}")
        cases = _query_cases(bench, data, token, cursor_row, deep_page)
        bench.progress(f"[4] service: {len(cases)} queries x {opts.query_runs} runs")
        specs = [
            {"name": c.name, "method": "GET", "requests": c.requests, "runs": opts.query_runs,
             "budget_s": opts.query_budget}
            for c in cases
        ]  # fmt: skip
        cpu = CpuWindow(process.proc.pid, bench.stack.postgres_pid).start()
        sequence = loadgen.run_sequence(process.url, specs, log_path=bench.log_dir / "client.log")
        cpu.stop()
    finally:
        bench.stack.stop_server(process)
    return cases, sequence, cpu


def queries(bench: Bench) -> list[Row]:
    opts = bench.options
    bench.stack.reset_events()
    total = opts.query_rows
    correlations = min(opts.correlations, max(total // 20, 1))
    bench.progress(f"[4] loading {total:,} events over 3 months, {correlations:,} correlations")
    load = seed.bulk_load_events(bench.stack.connect, total, correlations, progress=bench.progress)
    data = load.data
    bench.progress(f"[4] loaded in {data.seconds:.0f} s ({load.rate:,.0f} events/s)")
    size = f"{total / 1e6:g}M" if total >= 1e6 else f"{total // 1000}k"
    load_row = _load_row(bench, load, size)
    cases, sequence, cpu = _serve_queries(bench, data)
    bench.progress("[4] raw: the same SQL through psycopg")
    specs = [
        {"name": c.name, "statements": c.raw_statements, "runs": c.raw_runs,
         "max_runs": opts.query_runs, "budget_s": opts.query_budget}
        for c in cases
    ]  # fmt: skip
    raw_run = bench.raw(
        "query", {"cases": specs}, timeout=len(cases) * (opts.query_budget + 60) + 60
    )
    noise = _noise_notes(cpu.other_fraction(sequence["client_cpu_seconds"]), raw_run)
    containment = next(c for c in cases if c.role == "containment")
    gin = _gin_usage(bench, containment)
    rows, page1 = [load_row], None
    for case in cases:
        row = _latency_row(
            f"4. {case.name} @{size}", sequence["cases"][case.name], raw_run["cases"][case.name]
        )
        row.notes += noise
        row.details["sql"] = [statement for statement, _ in case.raw_statements]
        if case is containment:
            row.details["explain"] = gin
            row.notes.append(
                "service pages it GIN-first"
                if _gin_first(data.total)
                else f"> {GIN_FIRST_MAX_MATCHES:,} matches: the planner's plan"
            )
            row.notes.append(
                f"GIN used: page {'yes' if gin['page']['gin'] else 'NO'}, "
                f"count {'yes' if gin['count']['gin'] else 'NO'}"
            )
        if case.role == "page1":
            page1 = row
        if case.role == "deep_cursor" and page1:
            row.notes.append(f"p99 {latency_ratio(row.p99_ms, page1.p99_ms):.2f}x page 1")
        if case.target_p99_ms is not None:
            _check_target(bench, case, row)
        rows.append(row)
    return rows


def _load_row(bench: Bench, load: seed.BulkLoad, size: str) -> Row:
    """The bulk load as a row: its rate and phases, and the bytes per event it left on disk."""
    data = load.data
    sizes = _partition_sizes(bench)
    per_event = {name: value / max(data.total, 1) for name, value in sizes["bytes"].items()}
    return Row(
        f"4. bulk load {size} events (COPY FREEZE, then indexes)",
        "throughput",
        "events/s",
        rate=load.rate,
        notes=[
            f"{data.seconds:.0f} s: rows {load.rows_seconds:.0f} s, indexes "
            f"{load.index_seconds:.0f} s, attach+analyze {load.attach_seconds:.0f} s",
            f"{per_event['total']:.0f} B/event on disk (heap {per_event['table']:.0f}, "
            f"indexes {per_event['indexes']:.0f})",
            f"{sizes['bytes']['total'] / 2**30:.2f} GiB",
        ],
        details={
            "seed": {
                "rows": data.total,
                "correlations": data.correlations,
                "start": _iso(data.start),
                "end": _iso(data.end),
                "seconds": data.seconds,
                "rows_seconds": load.rows_seconds,
                "index_seconds": load.index_seconds,
                "attach_seconds": load.attach_seconds,
                "month_rows": load.month_rows,
            },
            "sizes": sizes,
            "bytes_per_event": per_event,
        },  # fmt: skip
    )


def _partition_sizes(bench: Bench) -> dict[str, Any]:
    """Bytes of audit_events' partitions: heap (with TOAST and maps), indexes, and each of
    the parent's indexes summed over the partitions."""
    with bench.stack.connect() as conn:
        total, table, indexes = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)), sum(pg_table_size(c.oid)), "
            "sum(pg_indexes_size(c.oid)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit_events'::regclass"
        ).fetchone()
        per_index = conn.execute(
            "SELECT p.relname, sum(pg_relation_size(i.inhrelid)) FROM pg_inherits i "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_index x ON x.indexrelid = p.oid "
            "WHERE x.indrelid = 'audit_events'::regclass GROUP BY p.relname ORDER BY 2 DESC"
        ).fetchall()
    return {
        "bytes": {"total": int(total), "table": int(table), "indexes": int(indexes)},
        "index_bytes": {name: int(value) for name, value in per_index},
    }


def _check_target(bench: Bench, case: QueryCase, row: Row) -> None:
    """Note whether the service's p99 meets the case's target; when it misses, keep the
    plans of its statements (EXPLAIN ANALYZE, BUFFERS) with the first run's parameters."""
    target = case.target_p99_ms
    if row.p99_ms is None or target is None:
        return
    if row.p99_ms <= target:
        row.notes.append(f"p99 target {target:g} ms: met")
        return
    row.notes.append(f"p99 target {target:g} ms: MISSED (plans in the JSON)")
    plans = []
    with bench.stack.connect() as conn:
        for statement, names in case.raw_statements:
            params = [case.raw_runs[0][name] for name in names]
            lines = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
            plans.append("\n".join(line for (line,) in lines))
    row.details["explain_analyze"] = plans


def _latency_row(scenario: str, service: dict[str, Any], raw: dict[str, Any]) -> Row:
    """A latency row from the sequential client's and the raw client's measurements."""
    served = latency_summary(service["latencies_ms"])
    direct = latency_summary(raw["latencies_ms"])
    bad = sum(n for code, n in service["codes"].items() if code != "200")
    total_seconds = sum(service["latencies_ms"]) / 1000
    return Row(
        scenario,
        "latency",
        "req/s",
        rate=served["n"] / total_seconds if total_seconds else None,
        p50_ms=served["p50"],
        p99_ms=served["p99"],
        raw_p50_ms=direct["p50"],
        raw_p99_ms=direct["p99"],
        notes=[f"n={served['n']}", f"non-200 {bad}"],
        details={"service": served, "raw": direct, "codes": service["codes"]},
    )


# ---- 5. workflow search ---------------------------------------------------------------------

_SEARCH_SQL = (
    "SELECT * FROM remediation_workflow_catalog WHERE is_latest_version AND signal_type = %s "
    "AND severity = %s AND status = ANY(%s) AND component = ANY(%s) AND environment = ANY(%s) "
    "AND priority = ANY(%s)"
)


def _concrete(value: str, choices: list[str], rng: random.Random) -> str:
    return value if value != "*" else rng.choice(choices)


def _search_bodies(bench: Bench) -> list[dict[str, Any]]:
    """Searches built from stored workflows' labels (wildcards made concrete), so every one
    has candidates; detected and custom labels vary so scoring has work to do."""
    rng = random.Random(7)
    with bench.stack.connect() as conn:
        conn.execute("SELECT setseed(0.42)")
        labels = [
            row[0]
            for row in conn.execute(
                "SELECT labels FROM remediation_workflow_catalog WHERE status = 'active' "
                "ORDER BY random() LIMIT %s",
                (bench.options.searches,),
            )
        ]
    components = [f"component-{i}" for i in range(20)]
    bodies = []
    for index, label in enumerate(labels):
        filters = {
            "signal_type": label["signal_type"],
            "severity": label["severity"],
            "component": _concrete(label["component"], components, rng),
            "environment": _concrete(label["environment"], list(seed.ENVIRONMENTS), rng),
            "priority": _concrete(label["priority"], ["P0", "P1", "P2", "P3"], rng),
            "detected_labels": {
                "gitOpsManaged": rng.random() < 0.5,
                "gitOpsTool": rng.choice(["argocd", "flux"]),
                "pdbProtected": rng.random() < 0.5,
                "serviceMesh": rng.choice(["istio", "linkerd"]),
            },
            "custom_labels": {"team": [f"team-{rng.randrange(10)}"]},
        }
        bodies.append({"filters": filters, "top_k": 10, "remediation_id": f"bench-search-{index}"})
    return bodies


def _raw_search_case(bodies: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """The candidate selection of store.workflows.search_candidates for the same filters."""
    names = ["signal_type", "severity", "statuses", "component", "environment", "priority"]
    runs = [
        {"signal_type": f["signal_type"], "severity": f["severity"], "statuses": ["active"],
         "component": [f["component"], "*"], "environment": [f["environment"], "*"],
         "priority": [f["priority"], "*"]}
        for f in (body["filters"] for body in bodies)
    ]  # fmt: skip
    return {"name": "search", "statements": [(_SEARCH_SQL, names)], "runs": runs,
            "snapshot": False, "budget_s": budget}  # fmt: skip


def workflow_search(bench: Bench) -> list[Row]:
    opts = bench.options
    label = f"5. workflow search top-10 of {opts.workflows:,} ({bench.server_label('hypercorn')})"
    with bench.stack.connect() as conn:
        if not seed.catalog_exists(conn):
            return [Row(label, "info", notes=["skipped: no remediation_workflow_catalog table"])]
        bench.progress(f"[5] seeding {opts.workflows:,} workflows")
        seed.seed_workflows(conn, opts.workflows)
    bodies = _search_bodies(bench)
    budget = max(opts.query_budget, 60)
    process = bench.stack.start_server("hypercorn", opts.workers)
    try:
        bench.progress(f"[5] service: {len(bodies)} searches")
        first = httpx.post(process.url + SEARCH_PATH, json=bodies[0], timeout=30)
        if first.status_code != 200:
            reason = f"skipped: search answered {first.status_code}: {first.text[:200]}"
            return [Row(label, "info", notes=[reason])]
        requests = [{"path": SEARCH_PATH, "body": body} for body in bodies]
        spec = {"name": "search", "method": "POST", "requests": requests, "runs": len(bodies),
                "budget_s": budget}  # fmt: skip
        cpu = CpuWindow(process.proc.pid, bench.stack.postgres_pid).start()
        sequence = loadgen.run_sequence(process.url, [spec], log_path=bench.log_dir / "client.log")
        cpu.stop()
        with httpx.Client(base_url=process.url, timeout=30) as client:
            matches = [
                client.post(SEARCH_PATH, json=b).json()["total_results"] for b in bodies[:50]
            ]
    finally:
        bench.stack.stop_server(process)
    bench.progress("[5] raw: candidate-selection SQL")
    raw_run = bench.raw("query", {"cases": [_raw_search_case(bodies, budget)]}, timeout=300)
    row = _latency_row(label, sequence["cases"]["search"], raw_run["cases"]["search"])
    row.notes += [
        f"avg matches {sum(matches) / max(len(matches), 1):.0f}",
        "raw = candidate SQL only (no scoring)",
        *_noise_notes(cpu.other_fraction(sequence["client_cpu_seconds"]), raw_run),
    ]
    row.details |= {"matches": matches, "sql": _SEARCH_SQL}
    return [row]


# ---- 7. streaming export ---------------------------------------------------------------------

EXPORT_PATH = "/api/v1/audit/export"


def export(bench: Bench) -> list[Row]:
    """Every seeded event as NDJSON through one server process, against COPY ... TO STDOUT of
    the same rows in the same order; the server's memory growth is sampled while it streams.
    Both are measured twice, raw, export, export, raw: the machine's speed drifts within a run
    (by more than a tenth), and this order cancels a steady drift. Rates are events over
    seconds of both passes."""
    opts = bench.options
    bench.stack.reset_events()
    correlations = min(opts.correlations, max(opts.rows // 20, 1))
    bench.progress(f"[7] seeding {opts.rows:,} events")
    seed.seed_events(bench.stack.connect, opts.rows, correlations, progress=bench.progress)
    raws: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []

    def raw_pass() -> None:
        bench.progress("[7] raw: COPY ... TO STDOUT of the same rows")
        raws.append(bench.raw("copy_out", {}, timeout=1200))

    raw_pass()
    process = bench.stack.start_server("hypercorn", 1)
    try:
        # The server's processes are found once: finding them scans all of /proc (tens of ms
        # on a busy machine), which per chunk read would slow the client, not the server.
        server_pids = _descendants(process.proc.pid)
        baseline = _rss_bytes(server_pids)
        for _ in range(2):
            bench.progress("[7] export through the server")
            ours.append(_export_pass(bench, process, server_pids))
    finally:
        bench.stack.stop_server(process)
    raw_pass()
    events = sum(p["events"] for p in ours)
    seconds = sum(p["seconds"] for p in ours)
    raw_rows = sum(r["rows"] for r in raws)
    raw_seconds = sum(r["seconds"] for r in raws)
    size_label = f"{opts.rows / 1e6:g}M" if opts.rows >= 1e6 else f"{opts.rows // 1000}k"
    growth = (max(p["rss_peak"] for p in ours) - baseline) / 2**20
    first = ours[0]
    mine = _cpu_per_event(first["cpu"], first["client_cpu"], first["events"])
    theirs = _cpu_per_event(raws[0]["cpu"], raws[0]["client_cpu_seconds"], raws[0]["rows"])
    return [
        Row(
            f"7. export ndjson @{size_label}",
            "throughput",
            "events/s",
            rate=events / seconds,
            raw_rate=raw_rows / raw_seconds,
            notes=[
                f"server RSS +{growth:.0f} MiB (peak)",
                f"{first['bytes'] / 2**20:.0f} MiB streamed per pass",
                "passes raw, export, export, raw: "
                + ", ".join(f"{p['rate']:,.0f}" for p in (raws[0], *ours, raws[1]))
                + " events/s",
                "CPU µs/event server {server} + PostgreSQL {postgres} + client {client}".format(
                    **mine
                ),
                "raw: PostgreSQL {postgres} + client {client}".format(**theirs),
            ],
            details={
                "events": events,
                "seconds": seconds,
                "passes": [{k: v for k, v in p.items() if k != "cpu"} for p in ours],
                "raw": raws,
                "rss_baseline": baseline,
                "cpu": first["cpu"].as_dict(first["client_cpu"]),
                "cpu_us_per_event": mine,
                "raw_cpu_us_per_event": theirs,
            },  # fmt: skip
        )
    ]


def _export_pass(bench: Bench, process: Any, server_pids: set[int]) -> dict[str, Any]:
    """One export of every event, read as fast as the client can: lines, bytes, seconds,
    the server's peak RSS and CPU."""
    lines = size = 0
    peak = _rss_bytes(server_pids)
    cpu = CpuWindow(process.proc.pid, bench.stack.postgres_pid).start()
    client_cpu = time.process_time()
    started = time.monotonic()
    for chunk, length in _read_body(process.url + EXPORT_PATH):
        size += length
        lines += chunk.count(b"\n", 0, length)
        peak = max(peak, _rss_bytes(server_pids))
    seconds = time.monotonic() - started
    client_cpu = time.process_time() - client_cpu
    cpu.stop()
    # The last line is the manifest.
    return {"events": lines - 1, "bytes": size, "seconds": seconds, "rate": (lines - 1) / seconds,
            "rss_peak": peak, "cpu": cpu, "client_cpu": client_cpu}  # fmt: skip


# ---- 8. two server instances on one database -------------------------------------------------


def two_instances(bench: Bench) -> list[Row]:
    """Two server instances on one database, as two pods: each its own process group, its
    own workers and port. The load is split across them (one load client per instance, half
    the concurrency each, run at the same time); single POST and batch rows against the
    baselines of scenarios 1 and 2. Every acknowledged event must be stored once: the stored
    count lies between the acknowledged events and those plus what was in flight when the
    clients stopped (at most one request per connection)."""
    opts = bench.options
    single_raw, rows = single_write_baseline(bench)
    batch_raw = batch_baseline(bench)
    shapes = (
        ("single POST", EVENTS_PATH, opts.single_concurrency, 0, 50_000, single_raw),
        (f"batch POST {opts.batch_size}", BATCH_PATH, opts.batch_concurrency, opts.batch_size,
         100, batch_raw),
    )  # fmt: skip
    for name, path, concurrency, size, max_rate, raw in shapes:
        per_instance = max(concurrency // 2, 1)
        servers = [
            bench.stack.start_server("hypercorn", opts.workers, own_group=True) for _ in range(2)
        ]
        try:
            bench.progress(f"[8] {name}: 2 instances, {per_instance} connections to each, at once")
            common = {"client": opts.client, "concurrency": per_instance, "batch": size}
            _load_each(servers, path, duration=opts.warmup, **common)
            _settled_count(bench)  # the warm-up's last requests land before the reset
            bench.stack.reset_events()
            windows = [CpuWindow(s.proc.pid, None) for s in servers]
            pg = CpuWindow(None, bench.stack.postgres_pid).start()
            for window in windows:
                window.start()
            loads = _load_each(
                servers,
                path,
                duration=opts.duration,
                max_requests=int(opts.duration * max_rate / 2),
                log_path=bench.log_dir / "client.log",
                **common,
            )
            for window in (*windows, pg):
                window.stop()
            stored = _settled_count(bench)
        finally:
            for server in servers:
                bench.stack.stop_server(server)
        rows.append(
            _two_instance_row(bench, name, loads, windows, pg, stored, raw, size, 2 * per_instance)
        )
    return rows


def _settled_count(bench: Bench, timeout: float = 30.0) -> int:
    """count(*) of audit_events once two readings 0.3 s apart agree (requests that were in
    flight when a load client stopped have been committed or dropped)."""
    deadline = time.monotonic() + timeout
    last = bench.count_events()
    while True:
        time.sleep(0.3)
        count = bench.count_events()
        if count == last or time.monotonic() > deadline:
            return count
        last = count


def _load_each(servers: list[Any], path: str, **load: Any) -> list[dict[str, Any]]:
    """The same load against every server at the same time, one load client each."""
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(loadgen.run_load, s.url, path, **load) for s in servers]
        return [future.result() for future in futures]


def _two_instance_row(
    bench: Bench,
    name: str,
    loads: list[dict[str, Any]],
    windows: list[CpuWindow],
    pg: CpuWindow,
    stored: int,
    raw: dict[str, Any],
    size: int,
    connections: int,
) -> Row:
    events = sum(load["events"] for load in loads)
    acked = sum(
        n * (size or 1) for load in loads for code, n in load["codes"].items() if code == "201"
    )
    in_flight = connections * (size or 1)  # at most one request per connection
    notes = [f"non-2xx {sum(load['non_2xx'] for load in loads)}"]
    if stored < acked:
        notes.append(f"LOST: {acked:,} acknowledged, {stored:,} stored")
    elif stored > acked + in_flight:
        notes.append(f"DUPLICATES? {stored:,} stored, {acked:,} acknowledged")
    else:
        notes.append(f"stored once ({acked:,} acknowledged, {stored - acked} in flight at the end)")
    server_seconds = sum(window.server_seconds for window in windows)
    notes += [
        "per instance " + " / ".join(f"{load['rate_events']:,.0f}" for load in loads) + " ev/s",
        f"CPU/event app {server_seconds / max(events, 1) * 1e3:.2f} ms, "
        f"pg {pg.postgres_seconds / max(events, 1) * 1e3:.2f} ms",
        f"ratio vs {raw.get('client', 'COPY').split(',')[0]}",
    ]
    client_seconds = sum(load["client_cpu_seconds"] for load in loads)
    other = max(pg.machine_busy_seconds - server_seconds - pg.postgres_seconds - client_seconds, 0)
    notes += _noise_notes(other / max(pg.machine_seconds, 1e-9), raw)
    return Row(
        f"8. two instances: {name} (hypercorn, 2 x workers="
        f"{bench.options.workers or default_workers()})",
        "throughput",
        "events/s",
        rate=sum(load["rate_events"] for load in loads),
        p50_ms=max(load["latency_ms"]["p50"] for load in loads),
        p99_ms=max(load["latency_ms"]["p99"] for load in loads),
        **_rate_fields(raw, "raw_"),
        notes=notes,
        details={
            "instances": loads,
            "stored": stored,
            "acknowledged": acked,
            "server_cpu_seconds": [round(w.server_seconds, 3) for w in windows],
            "postgres_cpu_seconds": round(pg.postgres_seconds, 3),
            "raw": raw,
        },
    )


def _read_body(url: str, size: int = 1 << 20) -> Iterator[tuple[bytearray, int]]:
    """A GET's body in reads of up to `size` bytes into one reused buffer: (buffer, length).
    http.client undoes the chunked framing a whole chunk at a time, so the client costs about
    as little per event as the raw baseline's COPY reader (httpx re-chunking cost several µs)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {response.read()[:500]!r}")
        buffer = bytearray(size)
        view = memoryview(buffer)
        while length := response.readinto(view):
            yield buffer, length
    finally:
        conn.close()


def _cpu_per_event(cpu: CpuWindow | dict[str, Any], client: float, events: int) -> dict:
    """Microseconds of CPU per event of the server, PostgreSQL and the client."""
    if isinstance(cpu, CpuWindow):
        cpu = cpu.as_dict(client)
    parts = {
        "server": cpu["server_cpu_seconds"],
        "postgres": cpu["postgres_cpu_seconds"],
        "client": client,
    }
    per_event = {k: round(v * 1e6 / max(events, 1), 2) for k, v in parts.items()}
    return {**per_event, "total": round(sum(per_event.values()), 2)}


def _rss_bytes(pids: set[int]) -> int:
    """Resident memory (VmRSS) of these processes."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )
    return total


SCENARIOS = {
    1: single_event,
    2: batch,
    3: dlq_replay,
    4: queries,
    5: workflow_search,
    7: export,
    8: two_instances,
}


def _tamper_evident_log(bench: Bench) -> list[Row]:
    from ledger_bench import tamper_evident_log  # imported late: it builds on this module

    return tamper_evident_log(bench)


SCENARIOS[6] = _tamper_evident_log
