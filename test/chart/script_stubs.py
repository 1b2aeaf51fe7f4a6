"""Fake kind/kubectl/helm/docker/podman/pytest executables for testing the hack/ scripts.

Each stub appends "<name> <args>" to $STUB_DIR/calls.log and behaves just enough for the scripts
to go on (exit codes are steered by STUB_* environment variables). PATH is set to the stub
directory plus a directory of links to the few real utilities the scripts use, so a docker or
podman installed on the machine never leaks into a test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from chart_helpers import REPO

REAL_UTILITIES = (
    "bash",
    "env",
    "mktemp",
    "rm",
    "tar",
    "sleep",
    "cat",
    "python3",
    "uname",
    "seq",
    "dirname",
    "mkdir",
    "sha256sum",
    "cut",
)

_PRELUDE = """#!{bash}
printf '%s\\n' "${{0##*/}} $*" >>"$STUB_DIR/calls.log"
"""

STUBS = {
    # docker and podman: `info` tells whether the engine works; `save -o FILE` writes FILE.
    "engine": """
name=${{0##*/}}
rc_var="STUB_${{name^^}}_INFO_RC"
case "$1" in
  info) exit "${{!rc_var:-0}}" ;;
  build)
    context="${{!#}}"
    for entry in "$context"/*; do printf '%s\\n' "${{entry##*/}}"; done >"$STUB_DIR/$name-build-context.txt"
    ;;
  save)
    while (($#)); do
      if [[ "$1" == -o ]]; then : >"$2"; fi
      shift
    done
    ;;
  create) echo stub-container ;;
  cp) : >"${{!#}}" ;;
esac
exit 0
""",
    # The interpreter build-image.sh downloads wheels with: `-m pip download ... --dest DIR`
    # and `-m pip wheel ... --wheel-dir DIR` leave one file in DIR.
    "fake-python": """
while (($#)); do
  case "$1" in
    --dest | --wheel-dir) mkdir -p "$2" && : >"$2/stub-0-py3-none-any.whl" ;;
  esac
  shift
done
exit 0
""",
    "kind": """
printf '%s\\n' "${{KIND_EXPERIMENTAL_PROVIDER:-}}" >>"$STUB_DIR/kind-provider.log"
if [[ "$1 $2" == "get clusters" ]]; then
  printf '%s\\n' ${{STUB_KIND_CLUSTERS:-}}
  exit 0
fi
if [[ "$1 $2" == "create cluster" ]]; then
  while (($#)); do
    case "$1" in
      --config) printf '%s\\n' "$(<"$2")" >"$STUB_DIR/kind-config.yaml" ;;
      --kubeconfig) printf 'apiVersion: v1\\nkind: Config\\n' >"$2" ;;
    esac
    shift
  done
  exit "${{STUB_KIND_CREATE_RC:-0}}"
fi
exit 0
""",
    # `port-forward ... LOCAL:REMOTE` listens on LOCAL until killed, like the real one.
    "kubectl": """
if [[ " $* " == *" port-forward "* ]]; then
  ports="${{!#}}"
  exec python3 -c '
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(8)
time.sleep(60)
' "${{ports%%:*}}"
fi
exit 0
""",
    "helm": 'exit "${{STUB_HELM_RC:-0}}"\n',
    "fake-pytest": """
{{
  printf 'DATASTORAGE_URL=%s\\n' "$DATASTORAGE_URL"
  printf 'DATABASE_URL=%s\\n' "$DATABASE_URL"
  printf 'KUBECONFIG=%s\\n' "$KUBECONFIG"
  printf 'E2E_NAMESPACE=%s\\n' "$E2E_NAMESPACE"
  printf 'PWD=%s\\n' "$PWD"
  printf 'ARGS=%s\\n' "$*"
  printf 'E2E_DB_STOP=%s\\n' "$E2E_DB_STOP"
  printf 'E2E_DB_START=%s\\n' "$E2E_DB_START"
}} >"$STUB_DIR/pytest-env.txt"
if [[ -n "${{STUB_RUN_OUTAGE:-}}" ]]; then
  eval "$E2E_DB_STOP" && eval "$E2E_DB_START" || exit 9
fi
exit "${{STUB_PYTEST_RC:-0}}"
""",
}


class StubBin:
    def __init__(self, root: Path, tools: tuple[str, ...]):
        self.dir = root / "stubs"
        self.real = root / "real"
        self.dir.mkdir()
        self.real.mkdir()
        bash = shutil.which("bash")
        assert bash
        for utility in REAL_UTILITIES:
            # The interpreter running the tests (a `python3` on PATH may be a pyenv shim).
            found = (
                os.path.realpath(sys.executable) if utility == "python3" else shutil.which(utility)
            )
            assert found, utility
            (self.real / utility).symlink_to(found)
        for name in (*tools, "fake-pytest", "fake-python"):
            body = STUBS["engine"] if name in ("docker", "podman") else STUBS[name]
            path = self.dir / name
            path.write_text(_PRELUDE.format(bash=bash) + body.format())
            path.chmod(0o755)
        (self.dir / "calls.log").touch()

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.dir}:{self.real}",
            "HOME": str(self.dir.parent),
            "TMPDIR": str(self.dir.parent),
            "STUB_DIR": str(self.dir),
            "E2E_PYTEST": str(self.dir / "fake-pytest"),
            "PYTHON": str(self.dir / "fake-python"),
            "SBOM_FILE": str(self.dir.parent / "sbom.cdx.json"),
            "E2E_READY_TIMEOUT": "0",
        }
        env.update(extra)
        return env

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shutil.which("bash") or "bash", str(REPO / "hack" / script), *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.dir.parent,
        )

    @property
    def calls(self) -> list[str]:
        return (self.dir / "calls.log").read_text().splitlines()

    def calls_of(self, tool: str) -> list[str]:
        return [c for c in self.calls if c.split(" ", 1)[0] == tool]

    def read(self, name: str) -> str:
        return (self.dir / name).read_text()

    def pytest_env(self) -> dict[str, str]:
        lines = self.read("pytest-env.txt").splitlines()
        return dict(line.split("=", 1) for line in lines)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def host_port_lock() -> Iterator[None]:
    """Serialise the tests that depend on which of the e2e host ports are free (xdist workers)."""
    path = Path(tempfile.gettempdir()) / "datastorage-kind-e2e-port-tests.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def listening_on(port: int) -> Iterator[None]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    try:
        yield
    finally:
        sock.close()


def environ_without(*prefixes: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
