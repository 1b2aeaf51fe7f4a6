# DataStorage — every target installs what it needs first (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
NPROC := $(shell nproc 2>/dev/null || echo 2)
# The image `make image` builds and `make image-test` runs (BASE=python:3.11-slim to build on
# a registry's Python image instead of the registry-free Debian one).
IMAGE ?= localhost/datastorage:dev
export IMAGE
CHECKOV := .tools/checkov/bin/checkov
# pip's output without the machine's "Location ... is ignored" noise; pip's exit code is kept.
PIP_QUIET = 2>&1 | { grep -v "is ignored" || true; }

.PHONY: run test test-unit test-integration test-contract test-operator chart-test e2e-local e2e bench lint image image-test image-deps lock deps system-deps venv tools clean

run: venv
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  $(PY) -m pip install -q -e '.[embedded]'
	$(VENV)/bin/datastorage dev

test: deps tools
	$(PYTEST) -n $(NPROC) --dist loadgroup --durations=15 test/unit test/integration test/contract test/operator test/chart
	$(MAKE) e2e-local

test-unit: venv
	$(PYTEST) test/unit

test-integration: deps
	$(PYTEST) -n $(NPROC) --dist loadgroup test/integration

test-contract: deps
	$(PYTEST) -n $(NPROC) --dist loadgroup test/contract

test-operator: deps
	$(PYTEST) test/operator

chart-test: venv tools
	$(PYTEST) test/chart

e2e-local: deps tools
	hack/local-stack.sh test

e2e: venv tools
	hack/kind-e2e.sh

bench: deps
	@command -v wrk >/dev/null 2>&1 || { sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk unavailable: the bench uses its Python load client"; }
	$(PY) test/bench/run.py $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check datastorage test
	$(VENV)/bin/ruff format --check datastorage test

# The image, built without a registry by default (see hack/build-image.sh), and its SBOM
# in dist/.
image: venv image-deps
	hack/build-image.sh

# The image run as the chart runs it (read-only, non-root, no capabilities) against loopback
# PostgreSQL, Redis and the Kubernetes API stand-in.
image-test: deps tools image
	hack/image-test.sh

# podman (with Debian's runc, see hack/containers.conf) and debootstrap for the base image.
image-deps:
	@need=""; \
	command -v podman >/dev/null 2>&1 || need="$$need podman"; \
	command -v runc >/dev/null 2>&1 || need="$$need runc"; \
	command -v debootstrap >/dev/null 2>&1 || need="$$need debootstrap"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$need >/dev/null; \
	fi

# Refresh the hashed lock files in requirements/ (UPGRADE=1: newest allowed versions).
lock:
	hack/lock.sh

deps: system-deps venv

# PostgreSQL, PgBouncer and Redis binaries for the throwaway servers the tests start themselves.
system-deps:
	@need=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need="$$need pgbouncer"; \
	command -v shellcheck >/dev/null 2>&1 || need="$$need shellcheck"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$need >/dev/null; \
	fi

venv: $(VENV)/.installed

# Every dependency from the hashed lock, then the project itself (editable, no dependencies
# of its own: `pip check` fails when pyproject.toml names one the lock lacks: run `make lock`),
# which compiles the log's C extension in place (again when its source changes).
$(VENV)/.installed: pyproject.toml requirements/dev.lock datastorage/ledger/_jcs.c
	test -x $(PY) || python3 -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install -q --require-hashes -r requirements/dev.lock $(PIP_QUIET)
	set -o pipefail; $(PY) -m pip install -q --no-deps --no-build-isolation -e . $(PIP_QUIET)
	$(PY) -m pip check
	$(PY) -c "import datastorage, starlette, psycopg, pytest, xdist"
	touch $@

tools: $(TOOLS)/helm $(CHECKOV)
	@command -v promtool >/dev/null 2>&1 || { echo "installing: prometheus (for promtool)"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

$(TOOLS)/helm:
	hack/get-helm-kubectl.sh $(TOOLS)

# checkov in a venv of its own (its many dependencies stay out of the test venv).
$(CHECKOV): requirements/checkov.lock
	test -x .tools/checkov/bin/python || python3 -m venv .tools/checkov
	set -o pipefail; .tools/checkov/bin/python -m pip install -q --require-hashes -r requirements/checkov.lock $(PIP_QUIET)
	touch $@

clean:
	rm -rf $(VENV) .tools .datastorage dist
