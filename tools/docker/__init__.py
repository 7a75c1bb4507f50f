"""The Docker path, built and run in CI without Docker Hub.

CI cannot pull ``python:3.11-slim`` or ``apache/kafka``, so it builds local stand-ins:
:mod:`tools.docker.kafka_entrypoint` is the entry point of its Kafka image
(``kafka.Dockerfile``), which reads the environment the way ``apache/kafka`` does.
"""
