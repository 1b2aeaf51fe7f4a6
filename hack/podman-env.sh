# Sourced by the hack/ scripts that run podman (ENGINE must be set): on machines with runc
# installed, use hack/containers.conf (runc and explicit ulimits, see that file) unless the
# caller chose a CONTAINERS_CONF of its own.
# shellcheck shell=bash
if [[ "${ENGINE:-}" == podman && -z "${CONTAINERS_CONF:-}" ]] && command -v runc >/dev/null 2>&1; then
  CONTAINERS_CONF="$(cd "${BASH_SOURCE[0]%/*}" && pwd)/containers.conf"
  export CONTAINERS_CONF
fi
