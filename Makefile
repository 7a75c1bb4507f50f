# The two commands of the README: `make demo` and `make test`. Each sets itself up:
# uv is installed when missing (with pip, as .ci/run does), the dependencies are synced,
# and what the local Kafka broker needs (java 17+, Maven for the first download) is
# checked, saying what is missing.
# `make unit` runs the fast tests: no Kafka broker, no model server processes, property
# tests with a tenth of their examples (BATCH_RUNNER_QUICK_TESTS=1), in two pytest-xdist
# workers (half of them wait on sockets and timers; `make test` stays one process).
#
# uv: on PATH, else where `pip install --user` puts it, else through pip's module.
UV ?= $(shell command -v uv 2>/dev/null || { test -x "$(HOME)/.local/bin/uv" && echo "$(HOME)/.local/bin/uv"; } || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: uv install java demo test unit lint format compose-check docker-check deploy-check bench chaos clean

uv:
	@$(UV) --version >/dev/null 2>&1 || { \
	  echo "uv is not installed: installing it with pip (python3 -m pip install --user uv)"; \
	  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv; \
	}
	@$(UV) --version >/dev/null 2>&1 || { \
	  echo "uv could not be installed with pip: install it as https://docs.astral.sh/uv/getting-started/installation/ says"; \
	  exit 1; \
	}

install: uv
	$(UV) sync --locked

# The local broker runs with java (17 or newer); Maven fetches its jars once (the fetch
# says so itself when mvn is missing). KAFKA_BOOTSTRAP_SERVERS skips both for the demo.
java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "java was not found: the demo and the tests run a real Kafka broker with java 17 or newer"; \
	  echo "  install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) and Maven (apt-get install maven)"; \
	  echo "  or, for the demo, set KAFKA_BOOTSTRAP_SERVERS to an existing cluster"; \
	  exit 1; \
	}
	@version=$$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'); \
	case "$$version" in 1.*|9|1[0-6]) \
	  echo "java $$version was found; Kafka 4.3 needs java 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"; \
	  exit 1;; \
	esac

demo: install
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then \
	  $(MAKE) --no-print-directory java && $(RUN) batch-runner kafka fetch >/dev/null; \
	fi
	$(RUN) batch-runner demo

# Two pytest workers, each with its own broker (the session fixture is per worker); a file's
# tests stay on one worker, so a module's real model server or broker is started once. The
# chaos scenarios (marker `serial`) run afterwards, alone: under a doubled load a broker
# outage's rejoin has outlasted the harness's 40 s patience once.
test: install java
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) pytest -n 2 --dist loadfile -m "not serial"
	$(RUN) pytest -m serial

unit: install
	BATCH_RUNNER_QUICK_TESTS=1 $(RUN) pytest -n 2 -m "not kafka and not servers"

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

# The Docker path for real (tools/ci_checks/docker/check.py): a Docker engine (started privately
# when none answers, as root), local base images, the project's image, compose with three
# replicas end to end, the tests' testcontainers path; everything torn down afterwards.
docker-check: install
	$(RUN) python -m tools.ci_checks.docker.check

bench: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) python -m bench.run --scenario all --out bench/results/report.json

chaos: install
	$(RUN) batch-runner kafka fetch >/dev/null
	$(RUN) python -m chaos.run --scenario all --out chaos/results/report.json
	# and what deploy/ runs (static membership from the pod name, a 6 s session) where it matters
	for scenario in sigkill-storm scaling broker-outage; do \
	  $(RUN) python -m chaos.run --scenario $$scenario --static-membership \
	    --set session_timeout_s=6 --label deploy --merge --out chaos/results/report.json || exit 1; \
	done

deploy-check: install
	$(RUN) python -m tools.ci_checks.validate_deploy

clean:
	-$(RUN) batch-runner kafka stop
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
