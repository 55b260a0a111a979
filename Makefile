# One entry point. `make run` and `make test` work on a fresh clone (Python >= 3.11 on PATH).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIGS ?= config
RUN ?= default
PYTEST_ARGS ?=

NPM_DIR := build/npm
KINESIS_MOCK := $(NPM_DIR)/node_modules/kinesis-local/main.js
ASL_VALIDATOR := $(NPM_DIR)/node_modules/.bin/asl-validator
AWS_SCHEMA := $(NPM_DIR)/provider-aws.jsii
CHECKOV := build/deploy-tools/bin/checkov
DEPLOY_CHECKS := $(ASL_VALIDATOR) $(AWS_SCHEMA) $(CHECKOV)
# the data tools a platform runs, each in a venv of its own (their pins are not the daemon's):
# the expected-answers tests build a dbt project on DuckDB and scan it with Soda Core
DBT := build/dbt/bin/dbt
SODA := build/soda/bin/soda
PLATFORM_TOOLS := $(DBT) $(SODA)
# Debian packages the tests drive: chromium (the console test, through Playwright; Playwright's
# own browser download does not work here) and systemd (systemd-analyze verify of the unit)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends

.PHONY: install run test test-unit test-integration soak lint bench clean system-deps

$(BIN)/datafactory: pyproject.toml $(wildcard daemon/datafactory/encoders/_fastrender*.[ch]) packs/datafactory_retail/_kernels.c  # the compiled renderer is built at install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/datafactory

# kinesis-mock (npm kinesis-local): the higher-fidelity Kinesis the integration tests also use
$(KINESIS_MOCK):
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) kinesis-local@0.6.2

# the Step Functions definition's validator (deploy/stepfunctions)
$(ASL_VALIDATOR):
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) asl-validator@4.0.0

# the AWS provider's schema, from its prebuilt CDK-for-Terraform bindings (jsii assembly)
$(AWS_SCHEMA):
	mkdir -p $(NPM_DIR)/pack
	cd $(NPM_DIR)/pack && npm pack --silent @cdktf/provider-aws@21.22.1 >/dev/null \
	  && tar xzf cdktf-provider-aws-21.22.1.tgz package/.jsii && mv package/.jsii ../provider-aws.jsii
	rm -rf $(NPM_DIR)/pack

# checkov in a venv of its own (its pins are not the daemon's)
$(CHECKOV):
	$(PYTHON) -m venv build/deploy-tools
	build/deploy-tools/bin/pip install --quiet 'checkov==3.3.30'

# dbt-core 1.10 (1.11+ fetches a parser binary from GitHub at install, not from PyPI); DuckDB
# 1.4 (LTS) writes files that Soda Core's DuckDB 1.0 and the daemon's 2.x both read
$(DBT):
	$(PYTHON) -m venv build/dbt
	build/dbt/bin/pip install --quiet 'dbt-core==1.10.23' 'dbt-duckdb==1.11.1' 'duckdb==1.4.4'

# Soda Core 3 reads SodaCL (its DuckDB package pins duckdb < 1.1)
$(SODA):
	$(PYTHON) -m venv build/soda
	build/soda/bin/pip install --quiet 'soda-core-duckdb==3.5.6' pytz

run: install          ## the daemon: runs config/default.yaml; API + console on http://127.0.0.1:9400
	DATAFACTORY_TOKEN=$${DATAFACTORY_TOKEN:-dev} $(BIN)/datafactory serve --configs $(CONFIGS) \
	  --run $(RUN) --ledger sqlite:///./.datafactory/ledger.db

/usr/bin/chromium:
	$(APT_INSTALL) chromium || ($(SUDO) apt-get update && $(APT_INSTALL) chromium)

/usr/bin/kcat:           # the bench's Kafka anchor (Debian's; run against the wheel's newer librdkafka)
	$(APT_INSTALL) kcat || ($(SUDO) apt-get update && $(APT_INSTALL) kcat)

/usr/bin/systemd-analyze:
	$(APT_INSTALL) systemd || ($(SUDO) apt-get update && $(APT_INSTALL) systemd)

system-deps: /usr/bin/chromium /usr/bin/systemd-analyze

# every test that asserts no rate or wall-clock time on both cores (each xdist worker starts its
# own brokers on free ports; PostgreSQL tests use run ids or databases of their own); then the
# `timed` ones one at a time with the machine to themselves; both run, either failing fails
test: install $(KINESIS_MOCK) $(DEPLOY_CHECKS) $(PLATFORM_TOOLS) system-deps  ## the whole default suite (unit + integration), as CI runs it
	$(BIN)/pytest -m "not soak and not timed" -n 2 $(PYTEST_ARGS); untimed=$$?; \
	$(BIN)/pytest -m "timed and not soak" $(PYTEST_ARGS); timed=$$?; \
	exit $$(( untimed || timed ))

test-unit: install
	$(BIN)/pytest -m "not soak" -n 2 tests/unit $(PYTEST_ARGS)

test-integration: install $(KINESIS_MOCK) $(DEPLOY_CHECKS) $(PLATFORM_TOOLS) system-deps
	$(BIN)/pytest -m "not soak" tests/integration $(PYTEST_ARGS)

soak: install         ## an hour of kill -9s, reloads and broker restarts (DATAFACTORY_SOAK_SECONDS)
	$(BIN)/pytest -m soak -s $(PYTEST_ARGS)

# import path = file path (daemon/datafactory, packs/datafactory_*): mypy checks the checkout
lint: install         ## ruff + mypy --strict
	$(BIN)/ruff check daemon packs tests bench
	$(BIN)/ruff format --check daemon packs tests bench
	$(BIN)/mypy -p datafactory -p datafactory_retail -p datafactory_iot -p datafactory_healthcare -p datafactory_template

# the Kafka anchor is Debian's kcat (apt-get install kcat) run against the librdkafka that the
# confluent-kafka wheel bundles; without kcat the Kafka ratio is left out and said so
# batch memory: one day of POS at 2,000/s (172.8 M rows, ~20 min); fewer hours to shorten
BENCH_BATCH_HOURS ?= 24
bench: install /usr/bin/kcat  ## throughput figures as ratios to baselines measured in the same run
	$(BIN)/pip install --quiet 'confluent-kafka>=2.3'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/healthcare.py
	$(BIN)/python bench/template.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/expect.py
	$(BIN)/python bench/batch_memory.py --hours $(BENCH_BATCH_HOURS)
	$(BIN)/python bench/shards.py

clean:
	rm -rf $(VENV) build data artifacts *.egg-info .pytest_cache .mypy_cache .ruff_cache
