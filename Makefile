# The two commands of the README: `make demo` and `make test`. Each sets itself up.
# `make unit` runs the fast tests: no Kafka broker, no model server processes, and
# property tests with a tenth of their examples (BATCH_RUNNER_QUICK_TESTS=1).
UV ?= uv
RUN := $(UV) run --locked

.PHONY: install demo test unit lint format compose-check deploy-check bench chaos clean

install:
	$(UV) sync --locked

demo: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) batch-runner demo

test: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) pytest

unit: install
	BATCH_RUNNER_QUICK_TESTS=1 $(RUN) pytest -m "not kafka and not servers"

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy --strict consumer producer schemas tools tests bench chaos

format: install
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

compose-check:
	@command -v docker-compose >/dev/null || { echo "docker-compose is needed (Debian: apt-get install docker-compose)"; exit 1; }
	docker-compose -f docker-compose.yml config --quiet
	@echo "docker-compose.yml: valid"

bench: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) python -m bench.run --scenario all --out bench/results/report.json

chaos: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) python -m chaos.run --scenario all --out chaos/results/report.json

deploy-check: install
	$(RUN) python -m tools.validate_deploy

clean:
	-$(RUN) batch-runner kafka stop
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
