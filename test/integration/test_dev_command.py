"""`datastorage dev` (what `make run` runs): zero set-up, serves, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
from support import REPO, eventually, free_port, make_event

from datastorage.ledger.keyfile import load_signer


def test_dev_starts_its_own_database_serves_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    data_dir = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASTORAGE_")}
    env |= {"DATASTORAGE_HTTP_PORT": str(port), "DATASTORAGE_DEV_DATA_DIR": str(data_dir)}
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "datastorage", "dev"],
        env=env,
        cwd=REPO,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: httpx.get(url + "/health/ready", timeout=1).status_code == 200, timeout=60
        )
        assert httpx.get(url + "/health/ready").json()["checks"]["dlq"]["status"] == "up"
        body = make_event()
        created = httpx.post(url + "/api/v1/audit/events", json=body)
        assert created.status_code == 201
        timeline = httpx.get(
            url + "/api/v1/audit/events",
            params={"correlation_id": body["correlation_id"], "order": "asc"},
        )
        assert [e["event_id"] for e in timeline.json()["data"]] == [created.json()["event_id"]]
        banner = log.read_text()
        assert "curl" in banner and f":{port}" in banner
        assert re.search(r"^  auth: +none$", banner, re.MULTILINE)  # open: said so up front
        # The log is on with a key made in the data directory; the banner prints its verifier.
        key_file = data_dir / "log.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        verifier_key = httpx.get(url + "/api/v1/audit/log/key").text.strip()
        assert verifier_key == str(load_signer(key_file).verifier)
        assert f"log key:  {verifier_key}" in banner
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert (data_dir / "pg" / "data" / "PG_VERSION").exists()
    postmaster = data_dir / "pg" / "data" / "postmaster.pid"
    assert not postmaster.exists(), "PostgreSQL still running after Ctrl-C\n" + log.read_text()
