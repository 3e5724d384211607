# Two commands on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
# Each sets itself up: a virtualenv in .venv with this package installed editable, and the
# distribution's prometheus/promtool (plus fio and iostat) when they are missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# What each target uses, as command:Debian package. `make up`/`demo` need only the first list; docker-compose
# (the compose file's validation), nats-server (the real Dynamo) and victoria-metrics (the long-term store)
# come with the targets that use them, never unasked on a DGX host.
RIG_TOOLS := prometheus:prometheus promtool:prometheus fio:fio iostat:sysstat smartctl:smartmontools
DYNAMO_TOOLS := nats-server:nats-server
TEST_TOOLS := $(RIG_TOOLS) $(DYNAMO_TOOLS) docker-compose:docker-compose victoria-metrics:victoria-metrics
# Two pytest-xdist workers, a test file each at a time (their module fixtures are one rig): 12.5 minutes on 2
# cores instead of 22 serially. The suite mostly waits on real processes (about 0.6 cores busy on average),
# and its timing-measuring tests compare with margins that CPU contention cannot close.
# PYTEST_ARGS= (empty) runs it serially.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: help setup tools tools-test tools-dynamo test demo sweep bench up down dynamo-up dynamo-down clean

help:
	@echo "make demo   - simulated Stack A/B + exporters + Prometheus + Locust sweep + report"
	@echo "make test   - install what is needed and run the test suite"
	@echo "make bench  - run the benchmarks under bench/ and print their tables"
	@echo "make sweep  - the v3.3 sweep playbook (phases A, B, C, H9) with post-run checks"
	@echo "make up     - start Prometheus and the exporters as local processes (no Docker)"
	@echo "make down   - stop what make up / make demo started"
	@echo "make dynamo-up   - the real NVIDIA Dynamo (frontend + mocker engine) on loopback as Stack B"
	@echo "make dynamo-down - stop it"
	@echo "make setup  - only create $(VENV) and install the tools a run uses"
	@echo "make tools  - only those tools: prometheus, promtool, fio, iostat, smartctl (apt-get, as root)"
	@echo "make tools-test   - the tests' too: nats-server, docker-compose, victoria-metrics"
	@echo "make tools-dynamo - the real Dynamo's: nats-server"
	@echo "make clean  - remove $(VENV), var/ and caches (results/ is kept)"

# Byte-compiled by compileall on every core, not by pip one file at a time (45 of the install's 75 s here).
# Compiled at install, not on import: with PYTHONDONTWRITEBYTECODE set, nothing imported is ever cached.
# A module that does not compile (a template, a Python 2 file shipped by a package) is pip's case too: skipped.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install it with: sudo apt-get install -y python3-venv"; exit 1; fi; }
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -e '.[test]'
	@$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	@touch $@

# $(call install_tools,<command:package ...>): the packages of the missing commands, with apt-get as root
define install_tools
	@missing=""; for pair in $(1); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// }" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing distribution packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "error: missing tools; install them with: sudo apt-get install -y $$missing"; exit 1; fi; fi
endef

tools:
	$(call install_tools,$(RIG_TOOLS))

tools-test:
	$(call install_tools,$(TEST_TOOLS))

tools-dynamo:
	$(call install_tools,$(DYNAMO_TOOLS))

setup: $(STAMP) tools

test: setup tools-test
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

demo: setup
	$(PY) -m rig demo

bench: setup
	@command -v prometheus-node-exporter >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null; } || \
	  echo "note: prometheus-node-exporter missing; exporter_cost.py prints ours only"
	$(PY) bench/stacksim_bench.py
	$(PY) bench/exporter_cost.py
	$(PY) bench/fio_vs_iostat.py
	$(PY) bench/client_bench.py
	$(PY) bench/aiperf_vs_rig.py
	$(PY) bench/report_bench.py
	$(PY) bench/soak_bench.py
	$(PY) bench/fleet_sizing.py

sweep: setup
	$(PY) -m rig sweep

up: setup
	$(PY) -m rig up

down:
	@if [ -x $(PY) ]; then $(PY) -m rig down; else echo "nothing was running"; fi

dynamo-up: setup tools-dynamo
	$(PY) -m rig dynamo up

dynamo-down:
	@if [ -x $(PY) ]; then $(PY) -m rig dynamo down; else echo "nothing was running"; fi

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
