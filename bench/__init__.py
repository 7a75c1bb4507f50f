"""Benchmarks of kafka-batch-runner (run with python -m bench.run)."""
