"""Running the app under an ASGI server with the graceful shutdown of docs/operations.md.

SIGTERM/SIGINT: readiness turns 503 at once; after `shutdown_delay` the listener closes and
in-flight requests get `shutdown_timeout` to finish; the lifespan then always stops the drain
worker and closes the DLQ and the pool. With `workers > 1` the parent starts that many worker
processes that bind the same port with SO_REUSEPORT, forwards signals to them, respawns a
worker that dies, and gives them one prometheus_client multiprocess directory so `/metrics`
reports the whole server whichever worker answers (see `datastorage.metrics`). With the
tamper-evident log on, it also starts one process for the log's work (sequencer, signer,
publisher: `Settings.log_in_own_process`), respawned like a worker: on a thread of an API worker
that work held the interpreter lock for milliseconds at a time and slowed that worker's requests.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from datastorage.app import create_app
from datastorage.config import Settings
from datastorage.metrics import MULTIPROCESS_ENV, wipe_directory, worker_died

try:
    import uvloop  # optional (comes with uvicorn[standard]): a faster event loop
except ImportError:
    uvloop = None

log = logging.getLogger(__name__)


def serve(settings: Settings, *, worker_process: bool = False, log_process: bool = False) -> int:
    """Serve until SIGTERM/SIGINT. `worker_process`: this is one of several processes started
    by `_supervise`; it binds with SO_REUSEPORT. `log_process`: this is the process `_supervise`
    starts for the tamper-evident log's work (`Settings.log_in_own_process`); it serves no
    requests."""
    if log_process:
        return _run_log_process(settings)
    if settings.workers > 1 and not worker_process:
        return _supervise(settings)
    runner = _run_uvicorn if settings.server == "uvicorn" else _run_hypercorn
    _tune_gc()
    loop_factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=loop_factory) as runner_loop:
        runner_loop.run(runner(settings))
    return 0


# A 1000-event batch allocates tens of thousands of dicts and strings; with the default
# threshold (700) the cycle collector runs dozens of times per request and rescans everything
# the process holds. Objects loaded at start-up are frozen out of its scans, and young
# collections run every GC_YOUNG_THRESHOLD allocations: measured on a batch, decoding is
# about 25 % cheaper. Cycles are still collected; memory bound: a few MB of young objects.
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def _shutdown_trigger(app, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    app.state.ctx.begin_shutdown()
    log.info(
        "shutdown requested: readiness is 503; closing the listener in %.1f s",
        settings.shutdown_delay,
    )
    await asyncio.sleep(settings.shutdown_delay)


async def _run_hypercorn(settings: Settings) -> None:
    app = create_app(settings)
    config = Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.graceful_timeout = settings.shutdown_timeout
    config.workers = max(settings.workers, 1)  # >1 makes hypercorn set SO_REUSEPORT
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.backlog = 2048
    await hypercorn_serve(app, config, shutdown_trigger=lambda: _shutdown_trigger(app, settings))
    log.info("server stopped")


async def _run_uvicorn(settings: Settings) -> None:
    import uvicorn  # deliberately lazy: an optional extra, needed only with server=uvicorn

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
        http="httptools",
        backlog=2048,
    )

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # our trigger owns the signals
            pass

    server = Server(config)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.http_host, settings.http_port))

    async def stop_when_asked() -> None:
        await _shutdown_trigger(app, settings)
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
    log.info("server stopped")


def _run_log_process(settings: Settings) -> int:
    from datastorage.runtime import run_log_process

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_log_process(settings, stop)

    loop_factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=loop_factory) as runner_loop:
        runner_loop.run(main())
    log.info("log process stopped")
    return 0


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the supervisor dies (even by SIGKILL), so no
    orphaned worker keeps serving the port."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# A worker that dies sooner than this after its start counts as a start-up failure; after
# MAX_QUICK_DEATHS of those in a row the supervisor gives up instead of respawning forever.
QUICK_DEATH_SECONDS = 5.0
MAX_QUICK_DEATHS = 5
POLL_INTERVAL = 0.2


def _metrics_directory(settings: Settings) -> tuple[str, bool]:
    """The shared metrics directory (wiped) and whether this run created it (and removes it)."""
    if settings.metrics_dir:
        wipe_directory(settings.metrics_dir)
        return settings.metrics_dir, False
    return tempfile.mkdtemp(prefix="datastorage-metrics-"), True


def _supervise(settings: Settings) -> int:
    """Start `workers` processes sharing the port and a metrics directory; respawn a worker
    that dies; forward SIGTERM/SIGINT; exit when all have stopped."""
    directory, created = _metrics_directory(settings)
    # Written before any worker starts: prometheus_client reads it when a worker imports it.
    os.environ[MULTIPROCESS_ENV] = directory
    os.environ["DATASTORAGE_METRICS_DIR"] = directory

    def spawn(role: str) -> tuple[subprocess.Popen[bytes], float, str]:
        child = subprocess.Popen(
            [sys.executable, "-m", "datastorage", *sys.argv[1:], role],
            preexec_fn=_die_with_parent,
        )
        return child, time.monotonic(), role

    # The API workers, and with the log on the log's own process (respawned alike).
    roles = ["--worker-process"] * settings.workers
    if settings.log_in_own_process:
        roles.append("--log-process")
    children = [spawn(role) for role in roles]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child, _, _ in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    quick_deaths = 0
    code = 0
    try:
        while True:
            for index, (child, started, role) in enumerate(children):
                if stopping or child.poll() is None:
                    continue
                worker_died(child.pid, directory)
                quick = time.monotonic() - started < QUICK_DEATH_SECONDS
                quick_deaths = quick_deaths + 1 if quick else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    log.error(
                        "workers keep dying at start-up (last exit %s): stopping", child.returncode
                    )
                    code = child.returncode or 1
                    forward(signal.SIGTERM, None)
                    break
                log.warning(
                    "%s %d exited (%s): starting another",
                    "log process" if role == "--log-process" else "worker",
                    child.pid,
                    child.returncode,
                )
                children[index] = spawn(role)
            if stopping and all(child.poll() is not None for child, _, _ in children):
                break
            time.sleep(POLL_INTERVAL)
    finally:
        for child, _, _ in children:
            child.wait()
        if created:
            shutil.rmtree(directory, ignore_errors=True)
    return code or max(child.returncode or 0 for child, _, _ in children)
