# errorgate — every target installs what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml kit/pyproject.toml | sha1sum | cut -c1-12)
APT_PKGS := prometheus prometheus-alertmanager redis-server haproxy etcd-server etcd-client chromium

.PHONY: run test lint bench demo demo-shop chaos venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml kit/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e './kit[redis,test,chaos]'
	rm -f $(VENV)/.installed-*; touch $@

# Debian packages the tests run for real (Prometheus, Alertmanager, promtool, amtool, Redis, HAProxy, etcd, Chromium).
system-deps:
	@missing=""; for b in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager redis-server:redis-server haproxy:haproxy etcd:etcd-server etcdctl:etcd-client chromium:chromium; do \
	  command -v $${b%%:*} >/dev/null || missing="$$missing $${b##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  for s in prometheus prometheus-alertmanager redis-server haproxy etcd; do $$SUDO systemctl disable --now $$s >/dev/null 2>&1 || true; done; \
	fi

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

test: venv system-deps lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) errorgate-data .pytest_cache .mypy_cache .ruff_cache
