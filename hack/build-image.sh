#!/usr/bin/env bash
# Build the DataStorage image from Containerfile with docker or podman, whichever works.
#
#   hack/build-image.sh [extra build args...]        (what `make image` runs)
#   IMAGE=name:tag            image to build (default datastorage:dev)
#   CONTAINER_ENGINE=podman   force an engine (default: docker if its engine answers, else podman)
#   BASE=python:3.11-slim     base image from a registry; unset: the registry-free Debian base of
#                             hack/build-base-image.sh (debootstrap, cached until its recipe changes)
#   PYTHON=...                interpreter that downloads the wheels (default: the repo's .venv)
#   SBOM_FILE=...             where the image's SBOM is copied (default dist/<image>.cdx.json)
#
# The build never reaches a package index: the host downloads every wheel named by
# requirements/runtime.lock (and requirements/sbom.lock, for the SBOM step) with the lock's
# hashes checked, builds the application's wheel, and puts them in a staging build context
# with only what the image needs (never a local .venv or .tools). The build installs them with
# --no-index --require-hashes and runs with --network=none.
set -euo pipefail

REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
IMAGE=${IMAGE:-datastorage:dev}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SBOM_FILE=${SBOM_FILE:-$REPO/dist/${IMAGE//[\/:]/_}.cdx.json}
# The Python of the image: both bases are Debian with CPython 3.11 and glibc 2.36 or later,
# so any manylinux wheel up to glibc 2.36 fits (pip does not widen an explicit --platform).
ARCH=$(uname -m)
WHEEL_TARGET=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311)
for legacy in manylinux1 manylinux2010 manylinux2014; do
  WHEEL_TARGET+=(--platform "${legacy}_$ARCH")
done
for glibc in $(seq 5 36); do
  WHEEL_TARGET+=(--platform "manylinux_2_${glibc}_$ARCH")
done

log() { printf 'build-image: %s\n' "$*" >&2; }

pick_engine() {
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    if ! command -v "$CONTAINER_ENGINE" >/dev/null 2>&1; then
      echo "build-image: CONTAINER_ENGINE=$CONTAINER_ENGINE is not on PATH" >&2
      return 1
    fi
    echo "$CONTAINER_ENGINE"
    return 0
  fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  elif command -v docker >/dev/null 2>&1; then
    echo "build-image: the docker CLI is installed but no Docker engine answers (docker info failed)," \
      "and podman is not installed; start Docker or install podman" >&2
    return 1
  else
    echo "build-image: neither docker nor podman is installed; install one of them" >&2
    return 1
  fi
}

ENGINE=$(pick_engine)
# shellcheck source=hack/podman-env.sh
source "$REPO/hack/podman-env.sh"

if [[ -z "${BASE:-}" ]]; then
  BASE=$(CONTAINER_ENGINE=$ENGINE "$REPO/hack/build-base-image.sh")
fi

CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
tar -C "$REPO" --exclude='__pycache__' --exclude='*.pyc' \
  -cf - Containerfile pyproject.toml requirements/runtime.lock requirements/sbom.lock |
  tar -C "$CONTEXT" -xf -

[[ -x "$PYTHON" ]] || PYTHON=python3
start=$SECONDS
for lock in runtime sbom; do
  "$PYTHON" -m pip download --quiet --no-deps --require-hashes "${WHEEL_TARGET[@]}" \
    --dest "$CONTEXT/wheels/$lock" -r "$REPO/requirements/$lock.lock" 2> >(grep -v "is ignored" >&2)
done
# The application's wheel, built from a clean copy of the sources with the build backend the
# lock pins (requirements/dev.lock installs it in the venv); fixed timestamps keep it
# byte-identical for unchanged sources, so the engine's layer cache holds.
SRC="$CONTEXT/.src"
mkdir -p "$SRC"
tar -C "$REPO" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.so' \
  -cf - pyproject.toml README.md datastorage |
  tar -C "$SRC" -xf -
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800} "$PYTHON" -m pip wheel --quiet --no-deps \
  --no-build-isolation --wheel-dir "$CONTEXT/wheels/app" "$SRC" 2> >(grep -v "is ignored" >&2)
rm -rf "$SRC"
log "wheelhouse ready in $((SECONDS - start)) s"

start=$SECONDS
log "$ENGINE build -t $IMAGE (BASE=$BASE)"
"$ENGINE" build --network=none -f "$CONTEXT/Containerfile" -t "$IMAGE" \
  --build-arg "BASE=$BASE" "$@" "$CONTEXT"
log "build took $((SECONDS - start)) s"

# The SBOM made by the build, copied out beside the image.
mkdir -p "$(dirname "$SBOM_FILE")"
container=$("$ENGINE" create "$IMAGE")
"$ENGINE" cp "$container:/opt/datastorage/sbom.cdx.json" "$SBOM_FILE"
"$ENGINE" rm "$container" >/dev/null
log "SBOM: $SBOM_FILE"
