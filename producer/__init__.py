"""The user's side of kafka-batch-runner: submit batches, tail and collect results.

From Python::

    from producer import read_items, submit

    report = submit(read_items("examples/iris.json"), bootstrap_servers="localhost:9092")
    print(report.batch_id)

Every error it raises on purpose is a :class:`~schemas.errors.BatchRunnerError`
(:class:`BadInputError`, :class:`KafkaUnavailableError`, :class:`SubmitError` for chunks that were
not delivered); see :mod:`schemas.errors`.
"""

from producer.inputs import InputError, read_items
from producer.results import BatchState, read_batch
from producer.submit import SubmitError, SubmitReport, submit
from schemas.errors import BadInputError, BatchRunnerError, IncompleteError, KafkaUnavailableError

__all__ = [
    "BadInputError",
    "BatchRunnerError",
    "BatchState",
    "IncompleteError",
    "InputError",
    "KafkaUnavailableError",
    "SubmitError",
    "SubmitReport",
    "read_batch",
    "read_items",
    "submit",
]
