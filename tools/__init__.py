"""What the service needs around it, one package per audience.

- :mod:`tools.cli`: the ``batch-runner`` command (entry point, ``kafka``, ``demo``);
- :mod:`tools.modelserver`: the reference iris model server (``batch-runner serve-model``);
- :mod:`tools.localkafka`: the local Kafka broker from Maven jars, and the choice of cluster;
- :mod:`tools.testservers`: inference servers for tests, benchmarks and chaos (not in the wheel);
- :mod:`tools.ci_checks`: what CI checks beside the tests (not in the wheel).
"""
