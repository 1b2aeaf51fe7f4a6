#!/usr/bin/env bash
# End-to-end run on a throwaway kind cluster (what `make e2e` calls):
#
#   1. pick the container engine: Docker when its engine answers, else Podman
#      (KIND_EXPERIMENTAL_PROVIDER=podman); fail with a clear message when neither works;
#   2. create a 2-node kind cluster; build the image and load it into the nodes;
#   3. `helm install --wait` the chart with NodePort Services (API 30090, PostgreSQL 30433);
#   4. reach them from the host: with Docker through kind's extraPortMappings on host ports
#      28090 (API) and 25433 (PostgreSQL); with Podman, whose provider ignores port mappings,
#      through `kubectl port-forward`. Either way the first free pair 28090+100*n / 25433+100*n;
#   5. run the black-box suite (test/e2e) with DATASTORAGE_URL, DATABASE_URL, KUBECONFIG and
#      E2E_DB_STOP / E2E_DB_START (scripts that scale the bundled PostgreSQL to 0 and back);
#   6. delete the cluster on success; keep it (and say how to reach it) when anything failed or
#      KEEP_CLUSTER=1.
#
# Every tool (kind, kubectl, helm, docker, podman) is looked up on PATH. Knobs:
#   KIND_CLUSTER_NAME (datastorage-e2e)  E2E_NAMESPACE (datastorage-e2e)  KEEP_CLUSTER (0)
#   KIND_NODE_IMAGE (kind's default)     E2E_HELM_TIMEOUT (10m)   E2E_READY_TIMEOUT (60 s)
#   E2E_HELM_ARGS (extra helm flags)     E2E_PYTEST (the test command; default: the repo venv's
#   python -m pytest test/e2e). Arguments to this script are passed on to the test command.
set -euo pipefail

REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-datastorage-e2e}
NAMESPACE=${E2E_NAMESPACE:-datastorage-e2e}
RELEASE=datastorage
IMAGE_REPOSITORY=localhost/datastorage
IMAGE_TAG=e2e
IMAGE="$IMAGE_REPOSITORY:$IMAGE_TAG"
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
HELM_TIMEOUT=${E2E_HELM_TIMEOUT:-10m}
READY_TIMEOUT=${E2E_READY_TIMEOUT:-60}
# A throwaway cluster's database: a fixed password keeps DATABASE_URL predictable.
PG_PASSWORD=datastorage-e2e

API_HOST_PORT_BASE=28090
PG_HOST_PORT_BASE=25433
API_NODE_PORT=30090
PG_NODE_PORT=30433

ENGINE=""
E2E_DB_STOP=""
E2E_DB_START=""
API_PORT=""
PG_PORT=""
CLUSTER_CREATED=0
PORT_FORWARD_PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/datastorage-e2e.XXXXXX")
KUBECONFIG_FILE="$WORK/kubeconfig"

log() { printf 'kind-e2e: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

detect_engine() {
  if [[ "${KIND_EXPERIMENTAL_PROVIDER:-}" == podman ]]; then
    have podman || die "KIND_EXPERIMENTAL_PROVIDER=podman but podman is not on PATH"
    ENGINE=podman
    return
  fi
  local docker_state="is not installed" podman_state="is not installed"
  if have docker; then
    if docker info >/dev/null 2>&1; then
      ENGINE=docker
      return
    fi
    docker_state="is installed but no Docker engine answers ('docker info' failed)"
  fi
  if have podman; then
    if podman info >/dev/null 2>&1; then
      ENGINE=podman
      export KIND_EXPERIMENTAL_PROVIDER=podman
      return
    fi
    podman_state="is installed but 'podman info' failed"
  fi
  die "no working container engine for kind: docker $docker_state; podman $podman_state." \
    "Start Docker, or install Podman (kind then runs with KIND_EXPERIMENTAL_PROVIDER=podman)." \
    "Without a container engine, 'make e2e-local' runs the same suite against a local stack."
}

require_tools() {
  have kind || die "kind is not on PATH: install it from https://kind.sigs.k8s.io/docs/user/quick-start/"
  have kubectl || die "kubectl is not on PATH: run 'make tools' (or hack/get-helm-kubectl.sh .tools/bin)"
  have helm || die "helm is not on PATH: run 'make tools' (or hack/get-helm-kubectl.sh .tools/bin)"
}

# True when something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_host_ports() {
  local n api pg
  for ((n = 0; n < 20; n++)); do
    api=$((API_HOST_PORT_BASE + 100 * n))
    pg=$((PG_HOST_PORT_BASE + 100 * n))
    if ! port_in_use "$api" && ! port_in_use "$pg"; then
      API_PORT=$api
      PG_PORT=$pg
      return
    fi
  done
  die "no free host port pair among ${API_HOST_PORT_BASE}+100*n / ${PG_HOST_PORT_BASE}+100*n (n < 20)"
}

write_kind_config() {
  {
    printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n'
    printf '  - role: control-plane\n'
    if [[ "$ENGINE" == docker ]]; then
      printf '    extraPortMappings:\n'
      printf '      - {containerPort: %d, hostPort: %d, listenAddress: "127.0.0.1", protocol: TCP}\n' \
        "$API_NODE_PORT" "$API_PORT"
      printf '      - {containerPort: %d, hostPort: %d, listenAddress: "127.0.0.1", protocol: TCP}\n' \
        "$PG_NODE_PORT" "$PG_PORT"
    fi
    printf '  - role: worker\n'
  } >"$WORK/kind-config.yaml"
}

cluster_exists() {
  local name
  while IFS= read -r name; do
    [[ "$name" == "$CLUSTER" ]] && return 0
  done < <(kind get clusters 2>/dev/null || true)
  return 1
}

create_cluster() {
  if cluster_exists; then
    log "deleting the existing cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
  fi
  local args=(create cluster --name "$CLUSTER" --config "$WORK/kind-config.yaml"
    --kubeconfig "$KUBECONFIG_FILE" --wait 180s)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    args+=(--image "$KIND_NODE_IMAGE")
  fi
  log "creating cluster $CLUSTER with $ENGINE"
  CLUSTER_CREATED=1
  kind "${args[@]}"
}

build_and_load_image() {
  log "building $IMAGE"
  # The engine that runs kind can pull from a registry: build on python:3.11-slim.
  BASE=${BASE:-python:3.11-slim} CONTAINER_ENGINE=$ENGINE IMAGE=$IMAGE "$REPO/hack/build-image.sh"
  "$ENGINE" save -o "$WORK/image.tar" "$IMAGE"
  kind load image-archive "$WORK/image.tar" --name "$CLUSTER"
}

install_chart() {
  local extra=()
  if [[ -n "${E2E_HELM_ARGS:-}" ]]; then
    read -r -a extra <<<"$E2E_HELM_ARGS"
  fi
  log "installing the chart into namespace $NAMESPACE"
  helm upgrade --install "$RELEASE" "$REPO/chart" \
    --namespace "$NAMESPACE" --create-namespace \
    --wait --timeout "$HELM_TIMEOUT" \
    --set image.repository="$IMAGE_REPOSITORY" \
    --set-string image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=Never \
    --set service.type=NodePort \
    --set service.nodePort="$API_NODE_PORT" \
    --set postgresql.service.type=NodePort \
    --set postgresql.service.nodePort="$PG_NODE_PORT" \
    --set-string postgresql.auth.password="$PG_PASSWORD" \
    --set-json "auth.admins=[$(e2e_subject e2e-admin)]" \
    --set-json "auth.readers=[$(e2e_subject e2e-reader)]" \
    --set-json "auth.metricsReaders=[$(e2e_subject e2e-admin)]" \
    "${extra[@]}"
}

# The suite's callers (authentication is on in the chart): ServiceAccounts bound through the
# chart's values to its admin and reader ClusterRoles, with short-lived tokens.
e2e_subject() {
  printf '{"kind":"ServiceAccount","name":"%s","namespace":"%s"}' "$1" "$NAMESPACE"
}

create_tokens() {
  local account
  for account in e2e-admin e2e-reader; do
    kubectl -n "$NAMESPACE" create serviceaccount "$account" --dry-run=client -o yaml |
      kubectl apply -f - >/dev/null
  done
  DATASTORAGE_TOKEN=$(kubectl -n "$NAMESPACE" create token e2e-admin --duration 2h)
  E2E_READER_TOKEN=$(kubectl -n "$NAMESPACE" create token e2e-reader --duration 2h)
  E2E_TOKEN_USER="system:serviceaccount:$NAMESPACE:e2e-admin"
  export DATASTORAGE_TOKEN E2E_READER_TOKEN E2E_TOKEN_USER
}

start_port_forwards() {
  log "podman provider: port-forwarding 127.0.0.1:$API_PORT (API) and 127.0.0.1:$PG_PORT (PostgreSQL)"
  forward_forever api "$RELEASE" "$API_PORT:8080" &
  PORT_FORWARD_PIDS+=($!)
  forward_forever postgresql "$RELEASE-postgresql" "$PG_PORT:5432" &
  PORT_FORWARD_PIDS+=($!)
  wait_for_port_forward "$API_PORT" api
  wait_for_port_forward "$PG_PORT" postgresql
}

# kubectl port-forward ends when its pod goes away (the outage test stops PostgreSQL), so it is
# restarted in a loop; the current kubectl's pid is kept in $WORK/port-forward-NAME.pid.
forward_forever() {
  local what=$1 service=$2 ports=$3 child=""
  trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
  while :; do
    kubectl -n "$NAMESPACE" port-forward --address 127.0.0.1 "service/$service" "$ports" \
      >>"$WORK/port-forward-$what.log" 2>&1 &
    child=$!
    printf '%s\n' "$child" >"$WORK/port-forward-$what.pid"
    wait "$child" || true
    sleep 1
  done
}

# Until 127.0.0.1:PORT accepts connections; fails after 30 s.
wait_for_port_forward() {
  local port=$1 what=$2 tries=0
  until port_in_use "$port"; do
    ((tries++ < 300)) ||
      die "kubectl port-forward for $what did not listen on 127.0.0.1:$port within 30 s:" \
        "$(cat "$WORK/port-forward-$what.log" 2>/dev/null)"
    sleep 0.1
  done
}

# E2E_DB_STOP / E2E_DB_START for the outage test: scale the bundled PostgreSQL to 0 and back.
write_outage_scripts() {
  local statefulset="statefulset/$RELEASE-postgresql"
  {
    printf '#!/usr/bin/env bash\nset -euo pipefail\n'
    printf 'kubectl -n %q scale %q --replicas=0\n' "$NAMESPACE" "$statefulset"
    printf 'kubectl -n %q wait --for=delete %q --timeout=180s\n' "$NAMESPACE" "pod/$RELEASE-postgresql-0"
  } >"$WORK/db-stop.sh"
  {
    printf '#!/usr/bin/env bash\nset -euo pipefail\n'
    printf 'kubectl -n %q scale %q --replicas=1\n' "$NAMESPACE" "$statefulset"
    printf 'kubectl -n %q rollout status %q --timeout=180s\n' "$NAMESPACE" "$statefulset"
    if [[ "$ENGINE" == podman ]]; then
      # Replace the forward bound to the old pod, then wait until the new one listens.
      # shellcheck disable=SC2016 # $(cat ...) is for the generated script, not for now
      printf 'kill "$(cat %q)" 2>/dev/null || true\nsleep 0.5\n' "$WORK/port-forward-postgresql.pid"
      printf 'for _ in {1..300}; do (exec 3<>/dev/tcp/127.0.0.1/%d) 2>/dev/null && exit 0; sleep 0.1; done\n' "$PG_PORT"
      printf 'echo "PostgreSQL port-forward did not come back on 127.0.0.1:%d" >&2\nexit 1\n' "$PG_PORT"
    fi
  } >"$WORK/db-start.sh"
  E2E_DB_STOP="bash $(printf %q "$WORK/db-stop.sh")"
  E2E_DB_START="bash $(printf %q "$WORK/db-start.sh")"
}

wait_for_api() {
  local waited=0
  while ((waited < READY_TIMEOUT)); do
    port_in_use "$API_PORT" && return 0
    sleep 1
    waited=$((waited + 1))
  done
  ((READY_TIMEOUT == 0)) || log "WARNING: nothing answers on 127.0.0.1:$API_PORT after ${READY_TIMEOUT}s; running the tests anyway"
}

run_tests() {
  local cmd=()
  if [[ -n "${E2E_PYTEST:-}" ]]; then
    read -r -a cmd <<<"$E2E_PYTEST"
  elif [[ -x "$REPO/.venv/bin/python" ]]; then
    cmd=("$REPO/.venv/bin/python" -m pytest test/e2e)
  else
    cmd=(python3 -m pytest test/e2e)
  fi
  export DATASTORAGE_URL="http://127.0.0.1:$API_PORT"
  export DATABASE_URL="postgresql://datastorage:$PG_PASSWORD@127.0.0.1:$PG_PORT/datastorage"
  export KUBECONFIG="$KUBECONFIG_FILE"
  export E2E_NAMESPACE="$NAMESPACE" E2E_RELEASE="$RELEASE"
  export E2E_DB_STOP E2E_DB_START
  create_tokens
  log "running ${cmd[*]} against $DATASTORAGE_URL"
  (cd "$REPO" && "${cmd[@]}" "$@")
}

show_diagnostics() {
  [[ -s "$KUBECONFIG_FILE" ]] || return 0
  log "pods and recent events in $NAMESPACE:"
  kubectl --kubeconfig "$KUBECONFIG_FILE" -n "$NAMESPACE" get pods -o wide >&2 || true
  kubectl --kubeconfig "$KUBECONFIG_FILE" -n "$NAMESPACE" get events --sort-by=.lastTimestamp >&2 || true
}

cleanup() {
  local rc=$?
  local pid
  for pid in "${PORT_FORWARD_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if ((CLUSTER_CREATED)); then
    if ((rc == 0)) && [[ "$KEEP_CLUSTER" != 1 ]]; then
      log "tests passed: deleting cluster $CLUSTER"
      kind delete cluster --name "$CLUSTER" || log "WARNING: could not delete cluster $CLUSTER"
      rm -rf "$WORK"
    else
      ((rc == 0)) || show_diagnostics
      log "cluster $CLUSTER kept for debugging ($([[ $rc == 0 ]] && echo KEEP_CLUSTER=1 || echo "exit code $rc")):"
      log "  export KUBECONFIG=$KUBECONFIG_FILE${KIND_EXPERIMENTAL_PROVIDER:+ KIND_EXPERIMENTAL_PROVIDER=$KIND_EXPERIMENTAL_PROVIDER}"
      log "  kubectl -n $NAMESPACE get pods"
      log "  delete it with: kind delete cluster --name $CLUSTER"
    fi
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  detect_engine
  require_tools
  pick_host_ports
  log "engine: $ENGINE; API on 127.0.0.1:$API_PORT, PostgreSQL on 127.0.0.1:$PG_PORT"
  write_kind_config
  create_cluster
  export KUBECONFIG="$KUBECONFIG_FILE"
  build_and_load_image
  install_chart
  if [[ "$ENGINE" == podman ]]; then
    start_port_forwards
  fi
  wait_for_api
  write_outage_scripts
  run_tests "$@"
}

main "$@"
