#!/usr/bin/env bash
# The container smoke test (what `make image-test` runs after `make image`): test/image runs
# the image with podman the way the chart runs it, against loopback PostgreSQL, Redis and the
# Kubernetes API stand-in that the test starts itself.
#   IMAGE=localhost/datastorage:dev   the image to test;  extra arguments go to pytest
set -euo pipefail
REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
ENGINE=podman
# shellcheck source=hack/podman-env.sh
source "$REPO/hack/podman-env.sh"
export DATASTORAGE_IMAGE=${IMAGE:-localhost/datastorage:dev}
cd "$REPO"
exec "${PYTHON:-$REPO/.venv/bin/python}" -m pytest test/image "$@"
