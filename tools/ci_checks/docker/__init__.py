"""The Docker path, built and run in CI without Docker Hub (``make docker-check``).

- :mod:`tools.ci_checks.docker.engine` finds a Docker engine, or starts a private ``dockerd``;
- :mod:`tools.ci_checks.docker.images` builds the local base images CI uses instead of
  ``python:3.11-slim`` and ``apache/kafka``: a Debian bookworm Python made with
  ``debootstrap``, and a Kafka image from the local broker's Maven jars on a Debian JRE
  (``kafka.Dockerfile``, entry point :mod:`tools.ci_checks.docker.kafka_entrypoint`, which reads
  the environment the way ``apache/kafka`` does);
- :mod:`tools.ci_checks.docker.check` builds the project's image, runs ``docker-compose.yml``
  with three consumer replicas end to end, then the tests' testcontainers path.
"""
