# The two commands a newcomer needs:
#   make run    start Tollgate on its embedded default (in memory, no servers)
#   make test   run every test, starting PostgreSQL and Redis first if they are not up

CARGO ?= cargo
# The PostgreSQL the integration tests use (each test makes its own schema).
export TOLLGATE_TEST_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres
# The Redis they use (each test keeps its keys under a prefix of its own).
export TOLLGATE_TEST_REDIS_URL ?= redis://127.0.0.1:6379
# Schemathesis and openapi-spec-validator, for the contract tests: a
# virtualenv per version of tests/contract/requirements.txt, made by
# `make services` when absent.
export TOLLGATE_CONTRACT_VENV ?= $(HOME)/.cache/tollgate/contract-$(shell sha256sum tests/contract/requirements.txt | cut -c1-12)
export TOLLGATE_SCHEMATHESIS ?= $(TOLLGATE_CONTRACT_VENV)/bin/schemathesis

.PHONY: run test bench soak soak-production fuzz services bench-tools lint fmt deploy-check

run: ## Serve on http://127.0.0.1:8080 with users, sessions and tasks in memory.
	$(CARGO) run -- serve

test: services ## Unit and integration tests against a real PostgreSQL and Redis.
	$(CARGO) test --all-targets -- --skip ::timing::
	@# Tests that time the service run one at a time, with nothing else
	@# loading the machine.
	$(CARGO) test --test api ::timing:: -- --test-threads=1

bench: services bench-tools ## Every performance figure against a same-run baseline (BENCH_QUICK=1: a short smoke run).
	$(CARGO) bench --bench scenarios

soak: ## Mixed traffic for SOAK_SECS (300; at most 540), sampling memory; idle sessions must be swept to zero.
	$(CARGO) bench --bench scenarios -- soak

soak-production: services ## The same on two replicas over PostgreSQL and Redis, through restarts of each and a replica killed; checks what must hold.
	$(CARGO) bench --bench scenarios -- soak-production

fuzz: services ## Schemathesis against /openapi.json of the real binary on PostgreSQL and Redis: a long run, new seed.
	TOLLGATE_CONTRACT_EXAMPLES=$${FUZZ_EXAMPLES:-150} TOLLGATE_CONTRACT_SEED=random \
	  TOLLGATE_CONTRACT_MIN_CASES=$${FUZZ_MIN_CASES:-1000} \
	  $(CARGO) test --test api contract::schemathesis -- --nocapture

services: ## Make sure PostgreSQL and Redis answer; start or install them if not.
	@.ci/ensure-services

bench-tools: ## Make sure wrk, taskset and redis-cli are installed; install them if not.
	@.ci/ensure-bench-tools

deploy-check: ## Check docker/ with the tools a user would run (no Docker engine needed).
	@.ci/deploy-check

lint: ## Formatting and clippy, warnings as errors.
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt
