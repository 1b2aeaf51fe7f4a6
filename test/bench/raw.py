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
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from payload import COLUMNS, CORRELATION_MARK, EVENT_DATA, stored_row  # noqa: E402
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
    """N threads, each with its own connection: the driver's strongest path for one INSERT
    per commit (psycopg releases the GIL while it waits for the server; one asyncio loop
    reached about half this rate on 2 cores)."""
    deadline = time.monotonic() + spec["duration"]
    remaining = [spec.get("max_rows") or float("inf")]
    lock = threading.Lock()
    per_thread: list[list[float]] = [[] for _ in range(spec["connections"])]
    conns = [_connect_sync(spec["url"]) for _ in range(spec["connections"])]

    def worker(index: int) -> None:
        conn, latencies = conns[index], per_thread[index]
        counter = 0
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            counter += 1
            row = stored_row(_now(), f"raw-{index}-{counter % 50_000}")
            started = time.perf_counter()
            conn.execute(INSERT, row, prepare=True)
            latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(conns))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    for conn in conns:
        conn.close()
    latencies = [value for values in per_thread for value in values]
    return {
        "client": f"psycopg, {len(conns)} threads",
        "rows": len(latencies),
        "seconds": seconds,
        "rate": len(latencies) / seconds,
        "latency_ms": latency_summary(latencies),
    }


def _connect_sync(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC", prepare_threshold=None)
    set_json_dumps(_preencoded_json, conn)
    return conn


def pgbench_script() -> str:
    """pgbench's custom script: the INSERT of `stored_row` (same columns, same values, same
    payload), with a fresh event id, the time of the commit and a random correlation id.
    Written with CAST (pgbench reads `:name` as a variable) and JSON with `": "` separators
    (stored jsonb is the same)."""
    template = stored_row(_now(), CORRELATION_MARK)
    values = []
    for column, value in zip(COLUMNS, template, strict=True):
        if column == "event_id":
            values.append("gen_random_uuid()")
        elif column == "event_timestamp":
            values.append("now()")
        elif column == "event_date":
            values.append("CAST(timezone('UTC', now()) AS date)")
        elif value == CORRELATION_MARK:
            values.append("'pgbench-' || CAST(:client_id AS text) || '-' || CAST(:n AS text)")
        elif column == "event_data":
            values.append(f"CAST({_literal(json.dumps(EVENT_DATA))} AS jsonb)")
        else:
            values.append(_literal(value))
    return (
        "\\set n random(0, 49999)\n"
        f"INSERT INTO audit_events ({', '.join(COLUMNS)})\n"
        f"VALUES ({', '.join(values)});\n"
    )


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def pgbench_insert(spec: dict[str, Any]) -> dict[str, Any]:
    """Debian's pgbench (C, libpq) running `pgbench_script` on N clients over 2 threads,
    prepared statements, for `duration` seconds; latencies from its per-transaction log.
    Its CPU is counted with this process's (it is a reaped child)."""
    with tempfile.TemporaryDirectory(prefix="ds-pgbench-") as work:
        script = Path(work) / "insert.sql"
        script.write_text(pgbench_script())
        command = [
            spec["pgbench"], "-n", "-f", str(script), "-c", str(spec["connections"]),
            "-j", "2", "-T", str(max(1, round(spec["duration"]))), "-M", "prepared",
            "-l", "--log-prefix", str(Path(work) / "tx"), spec["url"],
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench exited {done.returncode}: {done.stderr[-2000:]}")
        latencies = [
            int(line.split()[2]) / 1000
            for log in Path(work).glob("tx*")
            for line in log.read_text().splitlines()
        ]
    report = _pgbench_numbers(done.stdout)
    return {
        "client": f"pgbench (C), {spec['connections']} clients, -j 2, prepared",
        "rows": report["processed"],
        "failed": report["failed"],
        "seconds": report["processed"] / report["tps"] if report["tps"] else 0.0,
        "rate": report["tps"],
        "latency_ms": latency_summary(latencies),
        "script": pgbench_script(),
    }


def _pgbench_numbers(output: str) -> dict[str, float]:
    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"pgbench output without {pattern!r}: {output[-2000:]}")
        return float(match.group(1))

    return {
        "processed": int(number(r"number of transactions actually processed: (\d+)")),
        "failed": int(number(r"number of failed transactions: (\d+)")),
        "tps": number(r"tps = ([\d.]+) \(without initial connection time\)"),
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
    "pgbench": pgbench_insert,
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
