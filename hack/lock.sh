#!/usr/bin/env bash
# Refresh the hashed lock files (what `make lock` runs):
#   requirements/dev.lock      runtime + test dependencies and the build backend (build.in), resolved
#                              together: `make venv` and CI install it with --require-hashes
#   requirements/runtime.lock  the runtime dependencies (with the uvicorn extra) at the same
#                              versions: the image installs exactly these
#   (both also take requirements/python-3.11.2.in: what the image's older Python needs)
#   requirements/sbom.lock     the image build's SBOM generator (requirements/sbom.in)
#   requirements/checkov.lock  the chart scanner of `make chart-test` (requirements/checkov.in)
#
# Existing pins are kept unless a requirement changed; UPGRADE=1 moves everything to the
# newest versions allowed. Resolution uses the package index alone (PIP_CONFIG_FILE=/dev/null
# and no PIP_FIND_LINKS: no local wheel directories), so the hashes are those of the files the
# index publishes.
set -euo pipefail
REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
TOOL=$REPO/.tools/pip-tools
PIP_TOOLS_VERSION=7.6.2

if [[ ! -x "$TOOL/bin/pip-compile" ]]; then
  python3 -m venv "$TOOL"
  "$TOOL/bin/python" -m pip install --quiet "pip-tools==$PIP_TOOLS_VERSION"
fi

compile() {
  local args=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url)
  if [[ "${UPGRADE:-0}" == 1 ]]; then
    args+=(--upgrade)
  fi
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" \
    "$TOOL/bin/pip-compile" "${args[@]}" "$@"
}

cd "$REPO"
compile --extra test --extra uvicorn --output-file requirements/dev.lock \
  pyproject.toml requirements/python-3.11.2.in requirements/build.in
compile --extra uvicorn --constraint requirements/dev.lock --output-file requirements/runtime.lock \
  pyproject.toml requirements/python-3.11.2.in
compile --output-file requirements/sbom.lock requirements/sbom.in
compile --output-file requirements/checkov.lock requirements/checkov.in
