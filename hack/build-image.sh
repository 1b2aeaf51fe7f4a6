#!/usr/bin/env bash
# Build the DataStorage image from Containerfile with docker or podman, whichever works.
#
#   hack/build-image.sh [extra build args...]
#   IMAGE=name:tag            image to build (default datastorage:dev)
#   CONTAINER_ENGINE=podman   force an engine (default: docker if its engine answers, else podman)
#   BASE=python:3.11-slim     base image build argument
#
# The build context is a staging copy holding only what the image needs, so a local .venv or
# .tools never gets sent to the engine.
set -euo pipefail

REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
IMAGE=${IMAGE:-datastorage:dev}

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

CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
tar -C "$REPO" --exclude='__pycache__' --exclude='*.pyc' \
  -cf - Containerfile pyproject.toml README.md datastorage | tar -C "$CONTEXT" -xf -

build_args=()
if [[ -n "${BASE:-}" ]]; then
  build_args+=(--build-arg "BASE=$BASE")
fi

echo "build-image: $ENGINE build -t $IMAGE" >&2
"$ENGINE" build -f "$CONTEXT/Containerfile" -t "$IMAGE" "${build_args[@]}" "$@" "$CONTEXT"
