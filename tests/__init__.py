"""Tests of kafka-batch-runner, against a real broker and real HTTP servers."""
