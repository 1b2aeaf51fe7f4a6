"""Profiling aid: the application's CPU per event, in process, without the HTTP server.

Starts a throwaway durable PostgreSQL (test/support.py), builds the app with `create_app`
(the same runtime as `datastorage serve`), and calls it as an ASGI application from
`--concurrency` tasks in a closed loop for `--seconds`, with the bench's request body. It
prints the process CPU per event (everything but the HTTP server: middleware, parsing,
validation, services, psycopg) and the rate; `--cprofile FILE` writes a profile of the
measured window, `--sort` prints its top functions.

    .venv/bin/python test/bench/profile_app.py --mode single --seconds 5
    .venv/bin/python test/bench/profile_app.py --mode batch --concurrency 2 --cprofile /tmp/b.prof
    .venv/bin/python test/bench/profile_app.py --auth --env DATASTORAGE_LOG_LEVEL=DEBUG

Numbers are CPU seconds of this process, so they are less sensitive to other load on the
machine than a rate; still compare A/B only within one run (`--repeat`).

`--server hypercorn|uvicorn` measures the whole server instead: `datastorage serve` with
`--workers` processes under wrk (as `make bench` runs it), the CPU of the server's process
tree per event, and with `--py-spy FILE` a sampled profile of one worker over the window
(py-spy's `raw` format: collapsed stacks, one line per stack with its sample count).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Metrics as a `serve` worker keeps them (multiprocess files), set before anything imports them.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ds-profile-metrics-"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402
import support  # noqa: E402
from payload import api_event, now_rfc3339  # noqa: E402
from procs import CpuWindow  # noqa: E402
from stack import BENCH_TOKEN, Stack  # noqa: E402


def _body(mode: str, batch: int, counter: list[int]) -> bytes:
    counter[0] += 1
    if mode == "single":
        return orjson.dumps(api_event(now_rfc3339(), f"corr-{counter[0] % 5000}"))
    stamp = now_rfc3339()
    return orjson.dumps([api_event(stamp, f"corr-{(counter[0] + i) % 5000}") for i in range(batch)])


async def _request(app: Any, path: str, body: bytes, bearer: str) -> int:
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if bearer:
        headers.append((b"authorization", f"Bearer {bearer}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _window(app: Any, args: argparse.Namespace, bearer: str, seconds: float) -> dict:
    path = "/api/v1/audit/events" if args.mode == "single" else "/api/v1/audit/events/batch"
    per_request = 1 if args.mode == "single" else args.batch
    counter = [0]
    done = [0]
    bad: dict[int, int] = {}
    stop = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop:
            status = await _request(app, path, _body(args.mode, args.batch, counter), bearer)
            if status in (200, 201):
                done[0] += per_request
            else:
                bad[status] = bad.get(status, 0) + 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    # Body generation is the load client's work, not the app's: measured apart and removed.
    gen0 = time.process_time()
    for _ in range(max(1, done[0] // per_request)):
        _body(args.mode, args.batch, counter)
    gen = time.process_time() - gen0
    events = max(done[0], 1)
    return {
        "events": done[0],
        "rate": done[0] / wall,
        "app_us_per_event": (cpu - gen) / events * 1e6,
        "errors": bad,
    }


async def _main(args: argparse.Namespace, database_url: str, stack: Stack) -> None:
    from datastorage.app import create_app
    from datastorage.config import load_settings

    env = {"DATASTORAGE_DATABASE_URL": database_url, **dict(e.split("=", 1) for e in args.env)}
    if args.auth:
        env.update(stack.auth_env())
    os.environ.update(env)
    settings = load_settings()
    app = create_app(settings)
    bearer = BENCH_TOKEN if args.auth else ""
    async with app.router.lifespan_context(app):
        await _window(app, args, bearer, min(args.seconds, 2.0))  # warm-up
        profile = cProfile.Profile() if args.cprofile else None
        for run in range(args.repeat):
            if profile is not None:
                profile.enable()
            result = await _window(app, args, bearer, args.seconds)
            if profile is not None:
                profile.disable()
            print(
                f"{args.mode} run {run + 1}: {result['events']} events, "
                f"{result['rate']:.0f} ev/s, app CPU {result['app_us_per_event']:.0f} µs/event"
                + (f", errors {result['errors']}" if result["errors"] else ""),
                flush=True,
            )
        if profile is not None:
            profile.dump_stats(args.cprofile)
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def _serve(args: argparse.Namespace, stack: Stack) -> None:
    """The whole server under wrk: CPU of its process tree per event, optionally py-spy."""
    import subprocess

    import loadgen

    env = dict(e.split("=", 1) for e in args.env)
    if args.auth:
        env.update(stack.auth_env())
    server = stack.start_server(args.server, args.workers, **env)
    path = "/api/v1/audit/events" if args.mode == "single" else "/api/v1/audit/events/batch"
    batch = 0 if args.mode == "single" else args.batch
    load = {"concurrency": args.concurrency, "batch": batch, "bearer": BENCH_TOKEN * args.auth}
    loadgen.run_wrk(server.url, path, duration=min(args.seconds, 2.0), **load)  # warm-up
    workers = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    for run in range(args.repeat):
        spy = None
        if args.py_spy and workers:
            spy = subprocess.Popen(
                ["py-spy", "record", "--format", "raw", "--rate", "200", "--nonblocking",
                 "--duration", str(int(args.seconds)), "--pid", workers[0],
                 "--output", f"{args.py_spy}.{run + 1}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        commits = _commits(stack)
        cpu = CpuWindow(server.proc.pid, stack.postgres_pid).start()
        result = loadgen.run_wrk(server.url, path, duration=args.seconds, **load)
        cpu.stop()
        commits = _commits(stack) - commits
        if spy is not None:
            spy.wait()
        events = max(result["events"], 1)
        print(
            f"{args.server} {args.mode} run {run + 1}: {result['rate_events']:.0f} ev/s, "
            f"server CPU {cpu.server_seconds / events * 1e6:.0f} µs/event, "
            f"postgres {cpu.postgres_seconds / events * 1e6:.0f} µs/event, "
            f"{events / max(commits, 1):.1f} events/commit, "
            f"others {cpu.other_fraction(result['client_cpu_seconds']) * 100:.0f}% of the "
            f"machine, codes {result['codes']}",
            flush=True,
        )


def _commits(stack: Stack) -> int:
    """Transactions committed in the bench database so far (the group size, per event)."""
    with stack.connect() as conn:
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return conn.execute(query).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--auth", action="store_true", help="review requests (kube stand-in)")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--cprofile", default="")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE setting")
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--py-spy", default="", help="with --server: raw profile file prefix")
    args = parser.parse_args()
    stack = Stack(Path(tempfile.mkdtemp(prefix="ds-profile-")))
    try:
        stack.pg = support.PostgresServer(durable=True)
        stack.database_url = stack.pg.create_database("profile")
        support.run_migrations(stack.database_url)
        if args.server:
            _serve(args, stack)
            return
        loop_factory = None
        if args.uvloop:  # what `datastorage serve` runs on when uvloop is installed
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_main(args, stack.database_url, stack))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
