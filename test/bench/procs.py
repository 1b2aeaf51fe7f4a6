"""Process plumbing of the benchmark: children whose CPU time is measured, CPU of process trees
(the server and its workers, PostgreSQL and its backends) and of the whole machine.

CPU times come from /proc (Linux): utime + stime of each live process plus the cutime + cstime
it collected from reaped children, so a backend that exits inside a window is still counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ChildResult:
    output: dict
    wall_seconds: float
    cpu_seconds: float  # user + system of the child and everything it reaped


def run_child(
    cmd: list[str],
    *,
    timeout: float,
    log_path: Path | None = None,
    spec: dict | None = None,
) -> ChildResult:
    """Run `cmd`, return the JSON object it printed last (a line starting with `{` or with
    `BENCHJSON `) and its CPU time from wait4. A `spec` is written to a temporary file whose
    path is appended to the command (specs can exceed the argument-length limit)."""
    stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    spec_file = None
    if spec is not None:
        spec_file = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ds-bench-spec-")
        json.dump(spec, spec_file)
        spec_file.flush()
        cmd = [*cmd, spec_file.name]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr)
    try:
        out, rusage = _wait_with_rusage(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if log_path:
            stderr.close()
        if spec_file is not None:
            spec_file.close()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {out[-2000:]!r}")
    return ChildResult(_last_json(out), wall, rusage.ru_utime + rusage.ru_stime)


def _wait_with_rusage(proc: subprocess.Popen, timeout: float):
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    chunks = []
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        try:
            data = proc.stdout.read()
        except BlockingIOError:
            data = None
        if data:
            chunks.append(data)
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            os.set_blocking(proc.stdout.fileno(), True)
            chunks.append(proc.stdout.read() or b"")
            return b"".join(chunks).decode(errors="replace"), rusage
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.args[0]} did not finish within {timeout:.0f} s")
        time.sleep(0.02)


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("BENCHJSON "):
            line = line[len("BENCHJSON ") :]
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in child output: {text[-2000:]!r}")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _descendants(root_pid: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
    members = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return members


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of `root_pid` and its live descendants."""
    total = 0
    for pid in _descendants(root_pid):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _cpu_seconds(fields: list[str], *, reaped: bool) -> float:
    """A process's CPU from its stat fields: [11..14] = utime, stime, cutime, cstime (stat
    fields 14..17); `reaped`: with its waited-for children's."""
    return sum(int(v) for v in fields[11 : 15 if reaped else 13]) / TICKS


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of `root_pid` and all its live descendants (including what they reaped)."""
    total = 0.0
    for pid in _descendants(root_pid):
        fields = _stat_fields(pid)
        if fields is not None:
            total += _cpu_seconds(fields, reaped=True)
    return total


def api_worker_cpu_seconds(server_pid: int) -> dict[int, float]:
    """CPU seconds so far of each API worker of a `datastorage serve` process (its processes
    started with `--worker-process`; not the log's process)."""
    seconds = {}
    for pid in _descendants(server_pid):
        try:
            if b"--worker-process" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
        except OSError:
            continue
        if (fields := _stat_fields(pid)) is not None:
            seconds[pid] = _cpu_seconds(fields, reaped=False)
    return seconds


def machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time (already inside user)
    return (total - idle) / TICKS, total / TICKS


@dataclass
class CpuWindow:
    """CPU used by the server, PostgreSQL and the machine between start() and stop()."""

    server_pid: int | None
    postgres_pid: int | None
    server_seconds: float = 0.0
    postgres_seconds: float = 0.0
    machine_busy_fraction: float = 0.0
    machine_busy_seconds: float = 0.0
    machine_seconds: float = 0.0
    wall_seconds: float = 0.0

    def start(self) -> CpuWindow:
        self._server0 = tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self._postgres0 = tree_cpu_seconds(self.postgres_pid) if self.postgres_pid else 0.0
        self._machine0 = machine_cpu()
        self._wall0 = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        if self.server_pid:
            self.server_seconds = tree_cpu_seconds(self.server_pid) - self._server0
        if self.postgres_pid:
            self.postgres_seconds = tree_cpu_seconds(self.postgres_pid) - self._postgres0
        busy1, total1 = machine_cpu()
        busy0, total0 = self._machine0
        self.machine_busy_seconds = busy1 - busy0
        self.machine_seconds = total1 - total0
        self.machine_busy_fraction = self.machine_busy_seconds / max(self.machine_seconds, 1e-9)
        self.wall_seconds = time.monotonic() - self._wall0
        return self

    def other_fraction(self, client_seconds: float = 0.0) -> float:
        """Share of the machine used by processes outside this benchmark during the window
        (other test runs on a shared machine): the noise indicator of a row."""
        ours = self.server_seconds + self.postgres_seconds + client_seconds
        return max(self.machine_busy_seconds - ours, 0.0) / max(self.machine_seconds, 1e-9)

    def as_dict(self, client_seconds: float = 0.0) -> dict:
        return {
            "server_cpu_seconds": round(self.server_seconds, 3),
            "postgres_cpu_seconds": round(self.postgres_seconds, 3),
            "client_cpu_seconds": round(client_seconds, 3),
            "machine_busy_fraction": round(self.machine_busy_fraction, 3),
            "other_processes_fraction": round(self.other_fraction(client_seconds), 3),
            "wall_seconds": round(self.wall_seconds, 3),
        }


def read_spec(path: str) -> dict:
    """A child's side of `run_child(..., spec=...)`."""
    return json.loads(Path(path).read_text())
