# Everything a newcomer needs: `make run` serves the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test lint format ckan ckan-down migrate bench drill clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt client/pyproject.toml
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput

# The local profile: debug on (and with it the development secret key and open /metrics).
# Production leaves DJANGO_DEBUG unset and runs the Procfile; see SECURITY.md.
run: export DJANGO_DEBUG ?= 1
run: migrate
	@echo "make run: the local profile, DJANGO_DEBUG=$$DJANGO_DEBUG (1: debug on, development secret key allowed; never expose it to a network)"
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py setup_roles
	$(PY) manage.py serve

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# A real local CKAN (PostgreSQL needed), its URL and a sysadmin token written into .env.
ckan:
	$(PYTHON) scripts/local_ckan.py up --write-env .env

ckan-down:
	$(PYTHON) scripts/local_ckan.py down
	$(PYTHON) scripts/local_ckan.py down --s3filestore

# Every benchmark at its full size (18 min on 2 cores: 1,000,000 admin rows and reconcile keys,
# 200 uploads per broker); BENCH_ARGS=--quick for small sizes, --only NAME for some.
BENCH_ARGS ?= --full
bench: $(VENV)/.dev
	$(PY) bench/run_all.py $(BENCH_ARGS)

# The fault drill (docs/drill.md): 1,000 uploads through the real service while its parts fail, on
# PostgreSQL (database ckanrec_drill) with Redis (DB 5) and the local CKAN (make ckan first).
# DRILL_ARGS="--quick" for a small run.
drill: $(VENV)/.dev
	$(PY) scripts/drill.py $(DRILL_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
