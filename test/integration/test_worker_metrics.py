"""Whole-server `/metrics` with several worker processes (docs/operations.md): whichever worker
answers the scrape, counters and histograms are the sums over all workers; a worker killed with
SIGKILL is respawned and no counter goes backwards or counts twice.

Real servers (Hypercorn and Uvicorn, 2 and 4 workers) against a real PostgreSQL; every request
and scrape opens its own connection so SO_REUSEPORT spreads them over the workers. Which
worker served what is read from the per-process files of the shared metrics directory.
"""

from __future__ import annotations

import glob
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support import ServerProcess, eventually, make_event

EVENTS = "/api/v1/audit/events"
REQUESTS = 40
SCRAPES = 12


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url + "/metrics", headers={"Connection": "close"}, timeout=10)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _posts(samples: dict, name: str = "datastorage_http_requests_total") -> float:
    """Sum of `name` over the POST /api/v1/audit/events samples answered 201."""
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name
        and dict(labels).get("route") == EVENTS
        and dict(labels).get("method") == "POST"
        and dict(labels).get("status", "201") == "201"
    )


def _write(url: str, count: int) -> None:
    for _ in range(count):
        response = httpx.post(
            url + EVENTS, json=make_event(), headers={"Connection": "close"}, timeout=10
        )
        assert response.status_code == 201, response.text


def _worker_pids(directory: Path) -> set[int]:
    return {
        int(m.group(1))
        for path in glob.glob(str(directory / "counter_*.db"))
        if (m := re.search(r"counter_(\d+)\.db$", path))
    }


def _posts_by_worker(directory: Path) -> dict[int, float]:
    """POSTs counted in each worker's own counter file."""
    counts = {}
    for pid in _worker_pids(directory):
        families = MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")])
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families
            for s in family.samples
        }
        counts[pid] = _posts(samples)
    return counts


def _children(parent: int) -> set[int]:
    found = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(Path(stat).parent.name))
    return found


def _assert_every_scrape(url: str, expected: int) -> None:
    # Counted once the last response is sent (the client may read it first); from then on,
    # every scrape, whichever worker answers it, must show the whole server.
    eventually(lambda: _posts(_scrape(url)) == expected)
    for _ in range(SCRAPES):
        samples = _scrape(url)
        assert _posts(samples) == expected
        assert _posts(samples, "datastorage_http_request_duration_seconds_count") == expected


def _all_counted(metrics_dir: Path, expected: int) -> dict[int, float]:
    by_worker = _posts_by_worker(metrics_dir)
    assert sum(by_worker.values()) == expected
    return by_worker


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("server_name", ["hypercorn", "uvicorn"])
def test_counters_are_whole_server_and_survive_a_killed_worker(
    database_url, tmp_path, server_name, workers
):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over by a previous run")
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": database_url,
            "DATASTORAGE_SERVER": server_name,
            "DATASTORAGE_WORKERS": str(workers),
            "DATASTORAGE_METRICS_DIR": str(metrics_dir),
            "DATASTORAGE_DB_POOL_MIN": "1",
        },
        tmp_path,
    )
    try:
        supervisor = server.proc.pid
        eventually(lambda: _assert_len(_children(supervisor), workers), timeout=30)
        eventually(lambda: _assert_len(_worker_pids(metrics_dir), workers), timeout=30)
        assert 1 not in _worker_pids(metrics_dir), "the stale file was not wiped"

        _write(server.url, REQUESTS)
        # A worker counts a request after its response is sent: the client can be faster.
        by_worker = eventually(lambda: _all_counted(metrics_dir, REQUESTS))
        assert sum(1 for count in by_worker.values() if count) >= 2, by_worker
        _assert_every_scrape(server.url, REQUESTS)

        victim = max(by_worker, key=by_worker.get)
        before = _children(supervisor)
        os.kill(victim, signal.SIGKILL)

        def respawned() -> None:
            now = _children(supervisor)
            assert victim not in now and len(now) == workers and now - before

        eventually(respawned, timeout=30)
        server.wait_live()
        _assert_every_scrape(server.url, REQUESTS)  # the dead worker's counts stay, once

        _write(server.url, REQUESTS)
        _assert_every_scrape(server.url, 2 * REQUESTS)
        assert f"gauge_livesum_{victim}.db" not in os.listdir(metrics_dir)
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log()


def _assert_len(items: set, expected: int) -> None:
    assert len(items) == expected, items
