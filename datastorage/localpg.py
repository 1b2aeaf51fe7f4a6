"""A PostgreSQL cluster on this machine, run with the server's own `initdb` and `pg_ctl`.

Used by `datastorage dev` (a persistent cluster in `<dev_data_dir>/pg`) and by the test harness
(throwaway clusters in temporary directories). The cluster lives in `<root>/data`, logs to
`<root>/postgres.log`, listens on 127.0.0.1 at a free port and keeps its socket in `<root>`.
As root, every command runs as the `postgres` system user, since initdb refuses root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

OWNER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def system_bin_dir() -> Path | None:
    """The directory of the system's `pg_ctl`: on PATH, else the newest Debian-style install."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def as_owner(cmd: list[str]) -> list[str]:
    """`cmd`, run as the `postgres` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OWNER, "--", *cmd]
    return cmd


class LocalPostgres:
    """One cluster in `root/data`. `options`: extra server flags (`-c name=value`, ...);
    `stop_mode`: how `stop()` shuts it down unless told (`fast`, `immediate`); `quiet`: `stop()`
    does not show pg_ctl's complaints (a throwaway cluster may be stopped twice)."""

    def __init__(
        self,
        bin_dir: Path,
        root: Path,
        *,
        options: Sequence[str] = (),
        stop_mode: str = "fast",
        quiet: bool = False,
    ) -> None:
        self.bin = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.stop_mode = stop_mode
        self.quiet = quiet
        self.options = " ".join(
            [f"-p {self.port}", f"-k {root}", "-c listen_addresses=127.0.0.1", *options]
        )

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def prepare_root(self) -> None:
        """Create `root`; as root, make sure the `postgres` user exists, owns it and can reach
        it through every parent directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", OWNER], check=True)
        shutil.chown(self.root, OWNER, OWNER)
        for parent in [self.root.parent, *self.root.parent.parents]:
            mode = os.stat(parent).st_mode
            if not mode & 0o001:
                print(
                    f"note: adding o+x to {parent} so PostgreSQL (user {OWNER}) can reach "
                    f"{self.root}",
                    flush=True,
                )
                os.chmod(parent, mode | 0o001)

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def initdb(self, *, sync: bool = True) -> None:
        """A new cluster: superuser `postgres`, trust authentication, UTF8, no locale.
        `sync=False` skips flushing it to disk (throwaway clusters)."""
        cmd = [
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]
        if not sync:
            cmd.append("--no-sync")
        subprocess.run(as_owner(cmd), check=True, stdout=subprocess.DEVNULL)

    def pg_ctl(self, *args: str) -> list[str]:
        """The `pg_ctl` command line for this cluster (as the owner when root)."""
        return as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), *args])

    def start_command(self) -> list[str]:
        """Start and wait until the server accepts connections."""
        log = str(self.root / "postgres.log")
        return self.pg_ctl("-l", log, "-w", "-o", self.options, "start")

    def stop_command(self, mode: str | None = None) -> list[str]:
        return self.pg_ctl("-m", mode or self.stop_mode, "stop")

    def start(self) -> None:
        subprocess.run(self.start_command(), check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str | None = None) -> None:
        subprocess.run(
            self.stop_command(mode),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if self.quiet else None,
        )

    def running(self) -> bool:
        status = self.pg_ctl("status")
        done = subprocess.run(
            status, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return done.returncode == 0
