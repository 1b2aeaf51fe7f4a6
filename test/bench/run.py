"""`make bench`: DataStorage against the raw PostgreSQL path, measured in the same run.

Starts its own PostgreSQL (fsync and synchronous_commit on) with the project's migrations,
runs the selected scenarios (see scenarios.py) with the server as a subprocess and the load
generator in another process on loopback, prints one table and writes the same data as JSON to
test/bench/results/bench-<UTC timestamp>.json, with machine and server settings.

    make bench                                  # all scenarios, default sizes (≈ 20 min)
    make bench BENCH_ARGS="--quick"             # smoke run (< 2 min)
    make bench BENCH_ARGS="--scenarios 1,2 --duration 30 --workers 2"
    make bench BENCH_ARGS="--scenarios 4 --query-rows 1000000"   # queries at 1M rows

Scenario 4 bulk-loads 10 million events by COPY before it queries them: 5–9 minutes of the
full run on 2 cores (`--query-rows` for another size). Everything started is stopped on exit, on Ctrl-C and on SIGTERM. Logs of the servers and
clients stay in the printed log directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from report import Row, format_table, report_document, write_json  # noqa: E402
from scenarios import SCENARIOS, Bench, Options, default_workers  # noqa: E402
from stack import Stack  # noqa: E402

RESULTS = HERE / "results"
QUICK = {
    "duration": 5.0,
    "warmup": 1.0,
    "rows": 100_000,
    "query_rows": 100_000,
    "dlq_events": 10_000,
    "query_runs": 50,
    "query_budget": 10.0,
    "workflows": 2_000,
    "searches": 200,
    "log_leaves": 100_000,
}


def _int_list(raw: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in raw.split(",") if v.strip())
    unknown = set(values) - set(SCENARIOS)
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"scenarios are numbers among {sorted(SCENARIOS)}")
    return values


def _names(allowed: tuple[str, ...]):
    def parse(raw: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in raw.split(",") if v.strip())
        if not values or set(values) - set(allowed):
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="test/bench/run.py",
        description="Benchmark DataStorage against raw PostgreSQL in the same run.",
    )
    add = parser.add_argument
    add("--scenarios", type=_int_list, help="e.g. 1,2,4 (default all: 1,2,3,4,5,6,7,8)")
    add("--quick", action="store_true", help="small sizes: a smoke run in under 2 minutes")
    add("--duration", type=float, help="seconds per throughput measurement (20; quick 5)")
    add("--warmup", type=float, help="seconds of load before each measured window (3; quick 1)")
    add("--rows", type=int, help="events for the export scenario (1,000,000; quick 100,000)")
    add(
        "--query-rows",
        type=int,
        help="events bulk-loaded for the query scenario (10,000,000; quick 100,000)",
    )
    add("--dlq-events", type=int, help="events queued for the replay scenario (100,000)")
    add("--dlq-backends", type=_names(("redis", "file")), help="redis,file (default both)")
    add("--workers", type=int, help="server workers (default: the server's own setting)")
    add(
        "--servers",
        type=_names(("hypercorn", "uvicorn")),
        help="servers of the single-event scenario (hypercorn,uvicorn)",
    )
    add(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk when installed (auto), or the asyncio client",
    )
    add("--query-runs", type=int, help="runs per query (200; quick 50)")
    add("--query-budget", type=float, help="seconds at most per query case and side (30)")
    add("--workflows", type=int, help="catalogued workflows for the search scenario (10,000)")
    add("--searches", type=int, help="searches timed (1,000)")
    add("--raw-copy-format", choices=("binary", "text"), help="raw COPY format (binary)")
    add(
        "--through-pgbouncer",
        action="store_true",
        help="servers reach PostgreSQL through PgBouncer in transaction mode (baselines stay direct)",
    )
    add("--output", type=Path, help="JSON file (default test/bench/results/bench-<ts>.json)")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in (
        "scenarios",
        "duration",
        "warmup",
        "rows",
        "query_rows",
        "dlq_events",
        "dlq_backends",
        "workers",
        "servers",
        "query_runs",
        "query_budget",
        "workflows",
        "searches",
        "raw_copy_format",
    ):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    values["client"] = args.client
    values["through_pgbouncer"] = args.through_pgbouncer
    return Options(**values)


def machine_info(stack: Stack, options: Options) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": _versions(
            "hypercorn",
            "uvicorn",
            "uvloop",
            "httptools",
            "starlette",
            "psycopg",
            "psycopg_pool",
            "orjson",
            "jsonschema",
        ),
        "load_client": "wrk" if options.client != "python" and loadgen.wrk_path() else "python",
        "wrk": _command_output(["wrk", "--version"]) if loadgen.wrk_path() else None,
        "postgres": stack.settings(),
        "server_settings": {
            "workers": options.workers or f"{default_workers()} (server default)",
            "db_pool": "min 5 / max 25 (defaults)",
            "log_level": "INFO (default)",
        },
        "git": {
            "commit": _command_output(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
            "dirty_files": len(
                (
                    _command_output(["git", "-C", str(REPO), "status", "--porcelain"]) or ""
                ).splitlines()
            ),
        },
    }
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _versions(*names: str) -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _command_output(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    started_at = dt.datetime.now(dt.UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"bench-{stamp}.json"
    log_dir = Path(tempfile.mkdtemp(prefix=f"ds-bench-{stamp}-"))
    signal.signal(signal.SIGTERM, _on_sigterm)

    def progress(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    stack = Stack(log_dir)
    rows: list[Row] = []
    failures: list[str] = []
    machine: dict[str, Any] = {}
    try:
        progress(
            f"logs in {log_dir}; load client: "
            f"{'wrk' if options.client != 'python' and loadgen.wrk_path() else 'python'}"
        )
        if options.client == "wrk" and not loadgen.wrk_path():
            raise SystemExit("--client wrk: wrk is not installed (apt-get install wrk)")
        progress("starting PostgreSQL (fsync on, synchronous_commit on) and migrating")
        stack.start_postgres()
        if options.through_pgbouncer:
            progress("starting PgBouncer (transaction mode) in front of it")
            stack.route_through_pgbouncer()
        machine = machine_info(stack, options)
        baselines: dict[str, Any] = {}  # raw baselines, measured once and shared
        for number in options.scenarios:
            bench = Bench(stack, options, log_dir, progress, baselines)
            try:
                rows += SCENARIOS[number](bench)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 — report it and go on with the next one
                failures.append(f"scenario {number}: {exc}")
                progress(f"scenario {number} FAILED: {exc}\n{traceback.format_exc()}")
                rows.append(Row(f"{number}. (failed)", "info", notes=[str(exc)[:200]]))
                stack.ensure_postgres_running()
    except KeyboardInterrupt:
        progress("interrupted: stopping servers, Redis and PostgreSQL")
        failures.append("interrupted")
    finally:
        stack.close()
    if not rows:
        return 130 if "interrupted" in failures else 1
    document = report_document(
        rows,
        machine,
        {
            **asdict(options),
            "started_at": started_at.isoformat(),
            "failures": failures,
            "log_dir": str(log_dir) if failures else "(removed after a clean run)",
        },
    )
    write_json(output, document)
    print(format_table(rows))
    print(f"\nJSON: {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
    if failures:
        print("failures: " + "; ".join(failures))
        print(f"logs kept in {log_dir}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
