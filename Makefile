# The user's verbs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
include versions.env

OPTASIA_HOME ?= /opt/optasia
OPTASIA_CACHE ?= $(OPTASIA_HOME)/cache
export OPTASIA_HOME OPTASIA_CACHE
export PIP_CACHE_DIR ?= $(OPTASIA_CACHE)/pip
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
RESULTS ?= results

# make data
BATCH ?= $(shell date -u +%Y-%m-%d)_$(shell [ $$(date -u +%H) -lt 12 ] && echo a || echo b)
LANDING ?= $(OPTASIA_HOME)/landing
SUBSCRIBERS ?= 20000
TRANSACTIONS ?= 100000
DIRTY ?= 0.05
SEED ?= 1

.PHONY: help
help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.PHONY: deps
deps: $(VENV)/.deps-stamp ## install the pinned Python packages into .venv
$(VENV)/.deps-stamp: pyproject.toml | $(PY)
	@echo "installing pinned Python packages (cache: $(PIP_CACHE_DIR)) ..."
	$(PY) -m pip install --quiet -e '.[spark,test,ops]'
	@touch $@

.PHONY: jars
jars: ## fetch the Hadoop jars and the PostgreSQL JDBC driver into the cache (Maven)
	bash scripts/fetch-jars.sh

.PHONY: up
up: deps ## provision this host: Docker, images, both stacks (= ansible-playbook site.yml); TAGS=dag (or airflow, settings, ...) for one concern
	$(VENV)/bin/ansible-playbook site.yml $(if $(TAGS),--tags $(TAGS)) $(ANSIBLE_ARGS)

.PHONY: demo
demo: deps ## the main job: provision if needed, land a sample batch (~100k transactions), run the DAG, show the result
	@$(PY) scripts/health.py >/dev/null 2>&1 || { echo "the stack is not up and healthy: provisioning (make up) ..."; \
	  $(MAKE) --no-print-directory up; }
	$(PY) scripts/pipeline.py demo --transactions $(TRANSACTIONS)

.PHONY: run
run: deps ## run the DAG for a batch already landed: make run BATCH=2024-03-01_a (default: the current half-day)
	$(PY) scripts/pipeline.py run --batch $(BATCH)

.PHONY: abandon
abandon: deps ## undo a failed batch's store changes so later batches can run (keeps its files): make abandon BATCH=...
	$(PY) scripts/pipeline.py abandon --batch $(BATCH)

.PHONY: health
health: deps ## NameNode, PostgreSQL (and Airflow) health in one table; non-zero exit when unhealthy
	@$(PY) scripts/health.py

.PHONY: admin-password
admin-password: ## print the Airflow UI password of user admin
	@cat $(OPTASIA_HOME)/secrets/airflow_admin_password 2>/dev/null && echo || \
	  { echo "no password yet: run make up" >&2; exit 1; }

.PHONY: viewer-password
viewer-password: ## print the Airflow UI password of user viewer (sees runs and logs, changes nothing)
	@cat $(OPTASIA_HOME)/secrets/airflow_viewer_password 2>/dev/null && echo || \
	  { echo "no password yet: run make up" >&2; exit 1; }

.PHONY: down
down: deps ## stop both stacks, keep data
	$(VENV)/bin/ansible-playbook ansible/teardown.yml $(ANSIBLE_ARGS)

.PHONY: destroy
destroy: deps ## stop both stacks and drop volumes, network, secrets (asks unless FORCE=1)
	@if [ "$(FORCE)" != 1 ]; then \
	  read -r -p "Remove all data of the bundle (volumes, secrets) in $(OPTASIA_HOME)? [y/N] " a; \
	  [ "$$a" = y ] || [ "$$a" = Y ] || { echo "nothing removed"; exit 1; }; fi
	$(VENV)/bin/ansible-playbook ansible/teardown.yml -e teardown_destroy=true $(ANSIBLE_ARGS)

SERVICE ?=
.PHONY: logs
logs: deps ## a service's logs, then follow: make logs SERVICE=namenode (SINCE=10m: newer only; FOLLOW=0: print and exit)
	@test -n "$(SERVICE)" || { echo "which service? e.g. make logs SERVICE=namenode; make services lists them" >&2; exit 2; }
	@$(PY) scripts/stack.py logs $(SERVICE) $(if $(SINCE),--since $(SINCE),) $(if $(filter 0,$(FOLLOW)),--no-follow,)

.PHONY: restart
restart: deps ## restart a service and wait until healthy: make restart SERVICE=airflow-scheduler (default: every service)
	@$(PY) scripts/stack.py restart $(SERVICE)

.PHONY: shell
shell: deps ## a shell in a running service: make shell SERVICE=namenode (CMD="hdfs dfs -ls /" runs one command)
	@test -n "$(SERVICE)" || { echo "which service? e.g. make shell SERVICE=namenode; make services lists them" >&2; exit 2; }
	@$(PY) scripts/stack.py shell $(SERVICE) $(CMD)

.PHONY: services
services: deps ## the services of both compose projects
	@$(PY) scripts/stack.py services

.PHONY: airflow
airflow: deps ## the Airflow CLI inside the stack: make airflow ARGS="dags list"
	@$(PY) scripts/stack.py airflow $(ARGS)

.PHONY: parse
parse: deps ## import the deployed DAGs as the DAG processor does; non-zero exit on any import error
	@$(PY) scripts/stack.py parse

LIMIT ?= 10
.PHONY: status
status: deps ## the last batches from the store: state, counts, duration (LIMIT=10)
	@$(PY) scripts/stack.py status --limit $(LIMIT)

.PHONY: flower
flower: deps ## Celery's Flower UI on 127.0.0.1:5555 (opt-in service; STOP=1 removes it)
	@$(PY) scripts/stack.py flower $(if $(STOP),--stop,)

.PHONY: lint
lint: deps ## ansible-lint (production profile), yamllint, ruff (Python) and shellcheck (every shell script)
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/ansible-lint --profile production site.yml ansible/teardown.yml $(wildcard $(foreach p,prepare converge verify,roles/*/molecule/*/$(p).yml))
	$(VENV)/bin/ruff check .
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck -x -P SCRIPTDIR $$(git ls-files | while read -r f; do head -n1 "$$f" 2>/dev/null | grep -qE '^#!.*\b(ba)?sh\b' && echo "$$f"; done)

.PHONY: data
data: deps ## generate one batch: make data BATCH=2024-03-01_a LANDING=/tmp/landing TRANSACTIONS=100000 (HOSTILE=all: add the hostile lines)
	$(PY) -m optasia_datagen --landing $(LANDING) --batch-id $(BATCH) \
	  --subscribers $(SUBSCRIBERS) --transactions $(TRANSACTIONS) --dirty-share $(DIRTY) --seed $(SEED) \
	  $(if $(HOSTILE),--hostile $(HOSTILE))

.PHONY: test
test: deps jars ## the whole test suite, as CI runs it
	$(PYTEST) -q -p no:cacheprovider --durations=30 tests

# Every role's molecule scenario, in dependency order: each finds what the
# earlier ones converged (the images, the infrastructure stack Airflow needs).
MOLECULE_ROLES := docker_engine optasia base_image postgres hadoop infrastructure airflow

.PHONY: molecule
molecule: deps ## each role alone with molecule (converge, idempotence, verify) on THIS host, in dependency order; ROLE=hadoop for one
	@for r in $(or $(ROLE),$(MOLECULE_ROLES)); do \
	  [ -d "roles/$$r/molecule/default" ] || { echo "no molecule scenario for role '$$r' (roles: $(MOLECULE_ROLES))" >&2; exit 2; }; \
	  echo "=== molecule test: role $$r ($$(date -u +%H:%M:%S))"; \
	  ( cd "roles/$$r" && PATH="$(abspath $(VENV))/bin:$$PATH" molecule test ) || { echo "molecule: role $$r failed (its log is above)" >&2; exit 1; }; \
	done

.PHONY: test-fast
test-fast: deps ## unit tests only (no PostgreSQL/HDFS/Docker) for the inner loop
	$(PYTEST) -q -m "not integration and not e2e" tests/unit

.PHONY: test-integration
test-integration: deps jars ## Spark job against a real PostgreSQL and HDFS started by the tests
	$(PYTEST) -q -m integration tests/integration

SIZES ?= 1000000,5000000
.PHONY: bench-etl
bench-etl: deps jars ## Spark job vs a naive Spark job and DuckDB, same files (SIZES=1000000,5000000), a 2k batch, the step split; table in results/
	$(PY) benchmarks/bench_etl.py --sizes $(SIZES) --small --results $(RESULTS)/bench-etl.md

RUNS ?= 2
.PHONY: bench-demo
bench-demo: deps ## on the provisioned stack: `make demo` timed from trigger to published, per stage and job step (RUNS=2); table in results/
	$(PY) benchmarks/bench_demo.py --transactions $(TRANSACTIONS) --runs $(RUNS) --results $(RESULTS)/bench-demo.md

.PHONY: bench-up
bench-up: deps ## DESTRUCTIVE: cold/warm/no-change `make up` times and idle memory; table in results/
	$(PY) benchmarks/bench_up.py --results $(RESULTS)/bench-up.md
