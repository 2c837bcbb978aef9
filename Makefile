# The README's commands. Everything runs from the project's own virtualenv in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install run test bench lint format lock

install: $(STAMP)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,embedded]'
	@touch $(STAMP)

run: install
	$(BIN)/python -m saas_platform.run

# Browser tests drive Debian's Chromium, installed here when missing and possible (root, apt-get).
test: install
	@sh tests/install_chromium.sh
	$(BIN)/python -m pytest

# The benchmarks also need the `bench` extra (tenant-schemas-celery, a baseline they measure).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,embedded,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

# mypy's Django plugin imports the settings, which need these set (nothing connects to them).
LINT_ENV := DEBUG=true DATABASE_URL=postgres://lint/lint REDIS_URL=redis://lint:6379/0

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(LINT_ENV) $(BIN)/mypy -p saas_platform -p portal -p tenants -p jobs -p billing

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Refresh requirements.lock from what is installed (after changing pyproject.toml). Install the
# bench extra first (make bench does), or its packages drop out of the lock.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
