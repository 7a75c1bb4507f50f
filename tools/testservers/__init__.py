"""Inference servers for tests, benchmarks and the chaos suite (not part of the wheel).

:mod:`tools.testservers.inference` is the scripted identity server (latency, failures, counts);
:mod:`tools.testservers.real_servers` installs and runs a real MLServer or KServe serving the
iris model (``batch-runner real-server``, ``batch-runner demo --model-server``), with the
scripts in :mod:`tools.testservers.real_server_scripts`.
"""
