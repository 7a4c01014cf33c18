# The two commands a newcomer needs:
#   make run    start Tollgate on its embedded default (in memory, no servers)
#   make test   run every test, starting PostgreSQL first if it is not up

CARGO ?= cargo
# The PostgreSQL the integration tests use (each test makes its own schema).
export TOLLGATE_TEST_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres

.PHONY: run test services lint fmt

run: ## Serve on http://127.0.0.1:8080 with users and sessions in memory.
	$(CARGO) run -- serve

test: services ## Unit and integration tests against a real PostgreSQL.
	$(CARGO) test --all-targets

services: ## Make sure PostgreSQL answers; start or install it if not.
	@.ci/ensure-services

lint: ## Formatting and clippy, warnings as errors.
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt
