# Order execution engine: `make run` starts the mesh, `make test` runs the tests.
# Both set up what they need on a fresh clone (virtualenv, pinned
# dependencies, generated gRPC stubs).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(wildcard protos/dexengine/v1/*.proto)
STUBS  := dexengine/v1/.stamp
CLI    := $(VENV)/bin/dexctl

.PHONY: venv proto cli browser run test test-chaos lint fmt bench bench-order-types check-infra clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements.lock
	@# tests/deploy drives promtool (Debian package prometheus) and pgbouncer; installed when missing and root.
	@command -v promtool >/dev/null && command -v pgbouncer >/dev/null || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus pgbouncer >/dev/null; } || echo "install promtool and pgbouncer: apt-get install prometheus pgbouncer"
	touch $(STAMP)

proto: $(STUBS)

# The Python client and `dexctl`, installed into the virtualenv (editable: the repository's code).
cli: $(CLI)

$(CLI): pyproject.toml $(STUBS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(CLI)

# Debian's Chromium and its driver for the browser test (tests/e2e/test_browser.py); never a downloaded browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

$(STUBS): $(PROTOS) $(STAMP)
	mkdir -p dexengine/v1
	@# Typed stubs (mypy-protobuf): *_pb2.pyi and *_pb2_grpc.pyi, so mypy sees every message and servicer.
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	  --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch dexengine/__init__.py dexengine/v1/__init__.py $(STUBS)

check-infra: proto
	$(PY) -m services.launcher --check

run: proto cli
	$(PY) -m services.launcher

test: proto cli browser
	$(PY) -m pytest

test-chaos: proto
	$(PY) -m pytest tests/chaos

lint: proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: proto
	$(VENV)/bin/ruff format .

bench: proto
	$(PY) -m bench.run $(ARGS)

# The limit trigger with 100,000 armed limit orders: latency, CPU per pool update, RSS per 10,000 armed.
bench-order-types: proto
	$(PY) -m bench.order_types

clean:
	rm -rf dexengine .pytest_cache
