# One image for both roles: `consume` (the default) and `serve-model` (the iris example).
# Dependencies are pinned by uv.lock; the runtime stage has no build tools and runs as a
# non-root user. PYTHON_IMAGE is the base of both stages: the official image for users;
# CI builds with a Debian bookworm base of its own (tools/ci_checks/docker/images.py), as Docker Hub
# is out of its reach.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# The dependencies first, from the lock file alone: their layer stays cached until
# pyproject.toml or uv.lock change (README.md, needed to build the project, comes later).
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --extra model --no-install-project
COPY README.md ./
COPY consumer ./consumer
COPY producer ./producer
COPY schemas ./schemas
COPY tools ./tools
COPY examples ./examples
RUN uv sync --locked --no-dev --extra model --no-editable

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin runner
COPY --from=build --chown=root:root /app/.venv /app/.venv
COPY --from=build --chown=root:root /app/examples /app/examples
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001
# 9100: /metrics, /healthz, /readyz of a consumer; 8080: the model server.
EXPOSE 9100 8080
ENTRYPOINT ["batch-runner"]
CMD ["consume"]
