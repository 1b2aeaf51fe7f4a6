#!/usr/bin/env bash
# The whole stack on loopback, no cluster: PostgreSQL, Redis, the API server (Redis DLQ,
# authentication on: tokens reviewed by a Kubernetes API stand-in), the kmock Kubernetes API
# emulator and the operator.
#   hack/local-stack.sh test [pytest args]   run the black-box suite test/e2e against it
#   hack/local-stack.sh up                   keep it running until Ctrl-C (prints the URLs)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
exec "$PY" "$REPO/hack/local_stack.py" "$@"
