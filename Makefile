# errorgate — every target installs what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The native fast path's sources count too: a change to them rebuilds it.
NATIVE_SRC := native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml kit/pyproject.toml $(NATIVE_SRC) | sha1sum | cut -c1-12)
APT_PKGS := prometheus prometheus-alertmanager redis-server haproxy etcd-server etcd-client chromium postgresql

.PHONY: run test lint bench demo demo-shop chaos venv system-deps clean collector

venv: $(STAMP)

# errorgate_native (native/, Rust with PyO3, built by maturin) is optional: where cargo is
# missing or the build fails, errorgate runs its pure-Python path (errorgate.intake.proof).
# Without cargo on PATH it is not attempted: maturin would download a Rust toolchain itself.
$(STAMP): pyproject.toml kit/pyproject.toml $(NATIVE_SRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e './kit[redis,test,chaos]'
	command -v cargo >/dev/null && $(BIN)/python -m pip install -q --force-reinstall --no-deps ./native \
	  || echo "errorgate_native not built (no cargo on PATH, or its build failed): the pure-Python path is used" >&2
	rm -f $(VENV)/.installed-*; touch $@

# Debian packages the tests run for real (Prometheus, Alertmanager, promtool, amtool, Redis, HAProxy, etcd, Chromium,
# PostgreSQL: its binaries are not on PATH, so they are looked for where Debian puts them;
# iproute2 + iptables for the chaos suite's network namespaces).
system-deps:
	@missing=""; for b in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager redis-server:redis-server haproxy:haproxy etcd:etcd-server etcdctl:etcd-client chromium:chromium ip:iproute2 tc:iproute2 iptables:iptables; do \
	  command -v $${b%%:*} >/dev/null || missing="$$missing $${b##*:}"; done; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  for s in prometheus prometheus-alertmanager redis-server haproxy etcd postgresql; do $$SUDO systemctl disable --now $$s >/dev/null 2>&1 || true; done; \
	fi

# errorgate's OpenTelemetry Collector distribution (tests' topologies, benchmark peer), built once
# per machine with the Collector Builder from collector-config/otelcol/builder.yaml. Everything Go
# needs lives under $(COLLECTOR_CACHE) (git-ignored): the builder, the module and build caches,
# the binary. The stamp is keyed on the manifest's hash: a binary built from this manifest is
# reused as it is; a changed manifest rebuilds (warm caches make that minutes, not the cold build).
# CI may point COLLECTOR_CACHE at a folder that outlives its fresh clone.
COLLECTOR_CACHE ?= $(CURDIR)/.cache
OCB_VERSION := v0.148.0
OTELCOL_MANIFEST := collector-config/otelcol/builder.yaml
OTELCOL_DIR := $(COLLECTOR_CACHE)/otelcol
OTELCOL_BIN := $(OTELCOL_DIR)/otelcol-errorgate
OTELCOL_STAMP := $(OTELCOL_DIR)/.built-$(shell cat $(OTELCOL_MANIFEST) | sha1sum | cut -c1-12)
export ERRORGATE_OTELCOL := $(OTELCOL_BIN)
GOENV := GOMODCACHE=$(COLLECTOR_CACHE)/go/mod GOCACHE=$(COLLECTOR_CACHE)/go/build GOPATH=$(COLLECTOR_CACHE)/go \
	GOBIN=$(COLLECTOR_CACHE)/go/bin GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

collector: $(OTELCOL_STAMP)

# No prerequisite: the stamp's name is the manifest's hash, and a fresh clone's files are newer
# than any cached stamp, so depending on the manifest's time would rebuild in every CI run.
$(OTELCOL_STAMP):
	@command -v go >/dev/null || { echo "make collector: Go is not installed (the Collector distribution needs it)" >&2; exit 1; }
	@mkdir -p $(OTELCOL_DIR)
	@test -x $(COLLECTOR_CACHE)/go/bin/builder || { echo "installing the Collector Builder $(OCB_VERSION)"; \
	  $(GOENV) nice -n 10 go install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION); }
	@echo "building $(OTELCOL_BIN) (cold: tens of minutes on 2 cores; later builds reuse the caches)"
	@rm -rf $(OTELCOL_DIR)/src && mkdir -p $(OTELCOL_DIR)/src && cp $(OTELCOL_MANIFEST) $(OTELCOL_DIR)/src/builder.yaml
	@start=$$(date +%s); \
	  cd $(OTELCOL_DIR)/src && $(GOENV) nice -n 10 $(COLLECTOR_CACHE)/go/bin/builder --config builder.yaml \
	    > $(OTELCOL_DIR)/build.log 2>&1 || { tail -40 $(OTELCOL_DIR)/build.log >&2; exit 1; }; \
	  mv $(OTELCOL_DIR)/src/build/otelcol-errorgate $(OTELCOL_BIN).new && mv $(OTELCOL_BIN).new $(OTELCOL_BIN); \
	  secs=$$(( $$(date +%s) - start )); size=$$(stat -c %s $(OTELCOL_BIN)); \
	  echo "built $(OTELCOL_BIN) in $${secs}s, $$(( size / 1048576 )) MiB" | tee $(OTELCOL_DIR)/build-summary.txt
	@rm -f $(OTELCOL_DIR)/.built-*; touch $@

run: venv
	$(BIN)/errorgate serve

demo: venv
	$(BIN)/errorgate demo

# The demo shop in one command: errorgate, two redis-servers, orders/inventory/billing; Ctrl-C stops all.
demo-shop: venv system-deps
	$(BIN)/python -m kit.demo $(SHOP_ARGS)

# The Chaos Toolkit experiments (kit/chaos/experiments) against a fresh shop; bounded at 3 minutes.
chaos: venv system-deps
	timeout 180 $(BIN)/python -m kit.chaos.run $(CHAOS_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p errorgate
	$(BIN)/mypy kit/src/errorgate_kit kit/demo
	MYPYPATH=kit/src $(BIN)/mypy -p kit.chaos

test: venv system-deps lint collector
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv collector
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) errorgate-data .pytest_cache .mypy_cache .ruff_cache
	# .cache/ (the Collector build and its Go caches) survives `make clean`: a cold build is long.
