# ckanext-harvest: development, test and demo entry points.
#
#   make test    set everything up (services, virtualenv, database) and run the suite
#   make demo    set everything up and serve CKAN with a harvested catalogue
#
# Both work from a clean clone on a fresh Debian 12 machine and are idempotent.
# CKAN_VERSION=2.11.x make test   runs the suite against the newest CKAN 2.11.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CKAN_VERSION ?= 2.12.0
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_INI := test-core.ini
PYTEST_ARGS ?=

# "2.11.x" means the newest 2.11 release on PyPI.
CKAN_PIN := $(if $(filter %.x,$(CKAN_VERSION)),$(patsubst %.x,%.*,$(CKAN_VERSION)),$(CKAN_VERSION))
CKAN_SPEC := ckan[requirements,dev]==$(CKAN_PIN)
STAMP := $(VENV)/.installed-ckan-$(CKAN_VERSION)

# Each CKAN minor version gets its own test database: a database migrated by
# CKAN 2.12 cannot be opened by 2.11. 2.12 keeps test-core.ini's ckan_test.
CKAN_MINOR := $(word 1,$(subst ., ,$(CKAN_VERSION)))_$(word 2,$(subst ., ,$(CKAN_VERSION)))
ifneq ($(CKAN_MINOR),2_12)
TEST_DB := ckan_test_$(CKAN_MINOR)
export CKAN_SQLALCHEMY_URL ?= postgresql://ckan_default:pass@127.0.0.1/$(TEST_DB)
endif

.PHONY: help services solr solr-stop venv db test test-faults lint i18n demo demo-stop bench clean

help:
	@echo "make test    - install services + virtualenv, run the whole test suite"
	@echo "make demo    - install, run a real harvest, serve CKAN on http://127.0.0.1:5000"
	@echo "make test-faults - the fault-injection suite (tests/faults, ~15 min)"
	@echo "make lint    - ruff, mypy and lint-imports (the layer contracts of pyproject.toml)"
	@echo "make i18n    - extract messages, update and compile the catalogues"
	@echo "make bench   - harvest benchmark (bench/README.rst)"
	@echo "CKAN_VERSION=2.11.x make test  - run the suite on the newest CKAN 2.11"

services:
	@bash dev/services.sh

solr: venv
	@bash dev/solr.sh start

solr-stop:
	@bash dev/solr.sh stop

venv: $(STAMP)

$(STAMP): pyproject.toml pip-requirements.txt dev-requirements.txt
	@bash dev/services.sh >/dev/null   # build deps (libpq-dev, build-essential)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q '$(CKAN_SPEC)'
	$(BIN)/pip install -q -r pip-requirements.txt -r dev-requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-ckan-*
	@touch $@
	@$(BIN)/python -c "import ckan; print('CKAN', ckan.__version__, 'installed in $(VENV)')"

db: services solr venv
	@if [ -n "$(TEST_DB)" ]; then bash dev/services.sh --database $(TEST_DB); fi
	$(BIN)/ckan -c $(TEST_INI) db init
	$(BIN)/ckan -c $(TEST_INI) db upgrade -p harvest

test: db
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest --ckan-ini=$(TEST_INI) tests $(PYTEST_ARGS)

# The fault-injection suite (tests/faults, docs/testing.rst): a real harvest of 1,000+
# datasets from a second CKAN per scenario, on private Redis and RabbitMQ instances.
# Deselected by `make test`; selected by HARVEST_FAULTS=1. The remote CKAN's database
# is kept between runs (seeding it takes minutes).
FAULTS_REMOTE_DB := ckan_test_faults_remote$(if $(TEST_DB),_$(CKAN_MINOR))
test-faults: db
	@bash dev/services.sh --database $(FAULTS_REMOTE_DB) >/dev/null
	HARVEST_FAULTS=1 $(BIN)/python -m pytest --ckan-ini=$(TEST_INI) tests/faults $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check ckanext tests dev
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Message catalogues (docs/web-interface.rst, Translations)
I18N := ckanext/harvest/i18n
i18n: venv
	$(BIN)/pybabel -q extract -F babel.cfg --project ckanext-harvest \
		--copyright-holder "ckanext-harvest contributors" -o $(I18N)/ckanext-harvest.pot .
	$(BIN)/pybabel -q update --ignore-obsolete -D ckanext-harvest -d $(I18N) -i $(I18N)/ckanext-harvest.pot
	$(BIN)/pybabel compile -D ckanext-harvest -d $(I18N)

demo: services solr venv
	@bash dev/demo.sh

demo-stop:
	@bash dev/demo.sh stop

# The benchmark of bench/README.rst (not part of make test): make bench BENCH_ARGS="--n 500"
bench: services solr venv
	@bash bench/bench.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .dev build *.egg-info
