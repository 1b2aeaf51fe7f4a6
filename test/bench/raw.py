"""The raw database baselines: what PostgreSQL does for the same work without the service.

Run as a child process (`python raw.py MODE SPEC.json`, one JSON object printed on stdout)
so its client CPU is measured apart from the harness, like the HTTP load generator. Modes:
- `insert`: one INSERT per commit (autocommit, prepared), N connections, bounded by time and
  count — the baseline of the single-event POST;
- `copy`: COPY of B-row batches (one transaction each) in K concurrent streams, bounded by time
  or by a total row count — the baseline of batch POSTs and of DLQ replay. Binary COPY by
  default (the cheapest path for both sides), `text` on request;
- `query`: named SQL cases run one at a time, each run inside a REPEATABLE READ READ ONLY
  transaction like the service's reads — the baseline of the query scenarios;
- `copy_out`: `COPY (SELECT ...) TO STDOUT` of every event in export order, bytes counted and
  dropped — the baseline of the export scenario.

Rows are `payload.stored_row(...)`: the same columns and values the service stores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from payload import COLUMNS, stored_row  # noqa: E402
from procs import read_spec  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import set_json_dumps  # noqa: E402
from report import latency_summary  # noqa: E402

COLUMN_TYPES = (
    "uuid",
    "varchar",
    "timestamptz",
    "date",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "uuid",
    "date",
    "varchar",
    "varchar",
    "varchar",
    "int8",
    "varchar",
    "text",
    "varchar",
    "varchar",
    "jsonb",
    "int4",
    "bool",
    "text",
)
_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
INSERT = sql.SQL("INSERT INTO audit_events ({}) VALUES ({})").format(
    _COLS, sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))
)


def _preencoded_json(obj: Any) -> str:
    """event_data arrives already serialized (as the service has it from the request)."""
    return obj if isinstance(obj, str) else json.dumps(obj)


async def _connect(url: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, options="-c TimeZone=UTC", prepare_threshold=None
    )
    set_json_dumps(_preencoded_json, conn)
    return conn


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def insert_per_commit(spec: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + spec["duration"]
    remaining = [spec.get("max_rows") or float("inf")]
    latencies: list[float] = []
    conns = [await _connect(spec["url"]) for _ in range(spec["connections"])]

    async def worker(index: int, conn: psycopg.AsyncConnection) -> None:
        counter = 0
        while time.monotonic() < deadline and remaining[0] > 0:
            remaining[0] -= 1
            counter += 1
            row = stored_row(_now(), f"raw-{index}-{counter % 50_000}")
            started = time.perf_counter()
            await conn.execute(INSERT, row, prepare=True)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    seconds = time.monotonic() - started
    for conn in conns:
        await conn.close()
    return {
        "rows": len(latencies),
        "seconds": seconds,
        "rate": len(latencies) / seconds,
        "latency_ms": latency_summary(latencies),
    }


async def copy_batches(spec: dict[str, Any]) -> dict[str, Any]:
    """K streams of B-row COPYs until `duration` ends or `total_rows` are written."""
    binary = spec.get("format", "binary") == "binary"
    statement = sql.SQL("COPY audit_events ({}) FROM STDIN{}").format(
        _COLS, sql.SQL(" (FORMAT BINARY)") if binary else sql.SQL("")
    )
    batch = spec["batch"]
    deadline = time.monotonic() + spec.get("duration", 1e9)
    remaining = [spec.get("total_rows") or float("inf")]
    latencies: list[float] = []
    rows_written = [0]
    conns = [await _connect(spec["url"]) for _ in range(spec["streams"])]

    async def stream(index: int, conn: psycopg.AsyncConnection) -> None:
        counter = 0
        while time.monotonic() < deadline and remaining[0] > 0:
            size = int(min(batch, remaining[0]))
            remaining[0] -= size
            stamp = _now()
            started = time.perf_counter()
            async with conn.cursor().copy(statement) as copy:
                if binary:
                    copy.set_types(COLUMN_TYPES)
                for _ in range(size):
                    counter += 1
                    await copy.write_row(stored_row(stamp, f"raw-{index}-{counter % 50_000}"))
            latencies.append((time.perf_counter() - started) * 1000)
            rows_written[0] += size

    started = time.monotonic()
    await asyncio.gather(*(stream(i, c) for i, c in enumerate(conns)))
    seconds = time.monotonic() - started
    for conn in conns:
        await conn.close()
    return {
        "rows": rows_written[0],
        "seconds": seconds,
        "rate": rows_written[0] / seconds,
        "batches": len(latencies),
        "latency_ms": latency_summary(latencies),
    }


async def run_queries(spec: dict[str, Any]) -> dict[str, Any]:
    """Each case: {name, statements: [[sql, params], ...] per run, runs: [...], budget_s}.
    `runs` lists parameter sets; each run executes the case's statements in one snapshot."""
    conn = await _connect(spec["url"])
    results = {}
    for case in spec["cases"]:
        deadline = time.monotonic() + case.get("budget_s", 60)
        latencies: list[float] = []
        rows_seen = 0
        for params in case["runs"][: case.get("max_runs", len(case["runs"]))]:
            if time.monotonic() > deadline and latencies:
                break
            started = time.perf_counter()
            if case.get("snapshot", True):
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    rows_seen = await _run_statements(conn, case["statements"], params)
            else:
                rows_seen = await _run_statements(conn, case["statements"], params)
            latencies.append((time.perf_counter() - started) * 1000)
        results[case["name"]] = {
            "latencies_ms": latencies,
            "runs": len(latencies),
            "last_rows": rows_seen,
        }
    await conn.close()
    return {"cases": results}


async def _run_statements(conn, statements, params) -> int:
    rows = 0
    for statement, names in statements:
        cur = await conn.execute(statement, [params[name] for name in names])
        rows = len(await cur.fetchall())
    return rows


async def copy_out(spec: dict[str, Any]) -> dict[str, Any]:
    """Every event, in the export's order, through COPY ... TO STDOUT (text)."""
    conn = await _connect(spec["url"])
    statement = sql.SQL(
        "COPY (SELECT {} FROM audit_events ORDER BY event_timestamp, event_id) TO STDOUT"
    ).format(sql.SQL(", ").join(sql.Identifier(c) for c in [*COLUMNS, "created_at"]))
    size = rows = 0
    started = time.monotonic()
    async with conn.cursor().copy(statement) as copy:
        async for data in copy:
            size += len(data)
            rows += bytes(data).count(b"\n")
    seconds = time.monotonic() - started
    await conn.close()
    return {"rows": rows, "bytes": size, "seconds": seconds, "rate": rows / seconds}


MODES = {
    "insert": insert_per_commit,
    "copy": copy_batches,
    "query": run_queries,
    "copy_out": copy_out,
}


def main(argv: list[str]) -> int:
    mode, spec = argv[0], read_spec(argv[1])
    coroutine = MODES[mode](spec)
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
