"""The user's side of kafka-batch-runner: submit batches, tail and collect results.

From Python::

    from producer import read_items, submit

    report = submit(read_items("examples/iris.json"), bootstrap_servers="localhost:9092")
    print(report.batch_id)
"""

from producer.inputs import InputError, read_items
from producer.results import BatchState, read_batch
from producer.submit import SubmitError, SubmitReport, submit

__all__ = [
    "BatchState",
    "InputError",
    "SubmitError",
    "SubmitReport",
    "read_batch",
    "read_items",
    "submit",
]
