# Everything the project needs installs from here: `make run`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# ddapm-test-agent pins opentelemetry-proto<1.37, older than the relay's: it gets a venv of its own
# and runs as a separate process in the tests.
AGENT_VENV := .venv-testagent
# Arize Phoenix, a real OTLP trace store for the end-to-end OTLP tests: a large venv of its own
# (its dependencies would clash with the relay's), pinned to one major version.
PHOENIX_VENV := .venv-phoenix
# Test tools that are not Python packages (promtool).
TOOLS := .tools

.PHONY: run test lint typecheck unit oracle fuzz bench clean

# What running needs, and nothing else: `make run` on a fresh machine installs only this.
# No bytecode compiled at install: the relay imports a fraction of what it installs
# (datadog-api-client alone is 48 MB of modules), and Python compiles what it imports, once.
$(BIN)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e .
	touch $@

# The tests, the benchmark and the real senders the conformance suite drives.
$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,conformance]'
	touch $@

$(AGENT_VENV)/.installed:
	$(PYTHON) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/pip install --quiet 'ddapm-test-agent>=1.20'
	touch $@

$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet --upgrade pip
	$(PHOENIX_VENV)/bin/pip install --quiet 'arize-phoenix>=20,<21'
	touch $@

# Settings from .env when there is one (copy .env.example); they override the environment.
ENV_FILE ?= .env

run: $(BIN)/.runtime
	set -a; if [ -f "$(ENV_FILE)" ]; then . "$(abspath $(ENV_FILE))"; fi; set +a; \
	exec $(BIN)/llm-broadcast-relay serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# promtool, for `promtool test rules` on deploy/prometheus/alerts.yml: the binary alone, unpacked
# from Debian's package (installing the package would register a Prometheus service). Elsewhere,
# put a promtool on PATH; without one the alert-rule tests are skipped, and say so.
$(TOOLS)/.promtool:
	mkdir -p $(TOOLS)
	if command -v promtool >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		cd $(TOOLS) && rm -f prometheus_*.deb \
		&& { apt-get download -qq prometheus 2>/dev/null \
			|| { apt-get update -qq && apt-get download -qq prometheus; }; } \
		&& dpkg-deb -x prometheus_*.deb root && rm prometheus_*.deb; \
	fi
	touch $@

unit: $(BIN)/.installed $(AGENT_VENV)/.installed $(PHOENIX_VENV)/.installed $(TOOLS)/.promtool
	DDAPM_TEST_AGENT=$(CURDIR)/$(AGENT_VENV)/bin/ddapm-test-agent \
	PHOENIX_TEST_SERVER=$(CURDIR)/$(PHOENIX_VENV)/bin/phoenix \
	PATH="$(CURDIR)/$(TOOLS)/root/usr/bin:$$PATH" \
	$(BIN)/pytest

test: lint typecheck unit

# The restart/kill oracle, ten times longer than in `make test` (about ten minutes);
# ORACLE_SEED=<n> replays a run, ORACLE_SCALE sets the length.
oracle: $(BIN)/.installed
	ORACLE_SCALE=$${ORACLE_SCALE:-10} $(BIN)/pytest tests/test_oracle.py -p no:cacheprovider --timeout 3600

# Hostile bodies with planted secrets against a running relay, far longer than in `make test`
# (5,000 bodies, about five minutes); FUZZ_EXAMPLES=<n> sets the count.
fuzz: $(BIN)/.installed
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(BIN)/pytest tests/receiver/test_fuzz.py -p no:cacheprovider --timeout 3600

bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(AGENT_VENV) $(PHOENIX_VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache data
