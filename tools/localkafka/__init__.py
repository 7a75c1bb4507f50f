"""A Kafka cluster for the demo, the tests and the benchmarks, with nothing but java.

:mod:`tools.localkafka.broker` assembles a single-node KRaft broker from Maven Central jars and
runs it (``batch-runner kafka``); :mod:`tools.localkafka.cluster` picks the cluster a run uses
(``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else a local broker); :mod:`tools.localkafka.processes`
stops child processes the way the service expects.
"""
