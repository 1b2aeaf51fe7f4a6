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

.PHONY: run test test-unit test-integration test-contract test-operator chart-test e2e-local e2e bench lint image deps system-deps venv tools clean

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

image:
	hack/build-image.sh

deps: system-deps venv

# PostgreSQL and Redis binaries for the throwaway servers the tests start themselves.
system-deps:
	@need=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	command -v shellcheck >/dev/null 2>&1 || need="$$need shellcheck"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$need >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import datastorage, starlette, psycopg, pytest, xdist"
	touch $@

tools: $(TOOLS)/helm
	@command -v promtool >/dev/null 2>&1 || { echo "installing: prometheus (for promtool)"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

$(TOOLS)/helm:
	hack/get-helm-kubectl.sh $(TOOLS)

clean:
	rm -rf $(VENV) .tools .datastorage
