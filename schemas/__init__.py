"""The message contract of kafka-batch-runner (version 1).

JSON Schema files for clients in any language sit beside this package's modules
(``batch-request.v1.json``, ``result.v1.json``, ``chunk-summary.v1.json``,
``dead-letter-headers.v1.json``; and ``openai-batch-output.v1.json``, the OpenAI Batch
output file ``collect --format openai-batch`` writes); :mod:`schemas.messages` gathers the
Python types and the codec from the modules that hold them (:mod:`schemas.requests`,
:mod:`schemas.results`, :mod:`schemas.dead_letters`, :mod:`schemas.decoding`,
:mod:`schemas.fields`).
docs/contract.md describes every field.
"""

from schemas import messages
from schemas.error_kinds import ALWAYS_RETRIED, NEVER_RETRIED, ResultErrorKind
from schemas.messages import *  # noqa: F403 - the contract's names, listed once in messages

__all__ = ["ALWAYS_RETRIED", "NEVER_RETRIED", "ResultErrorKind"]
__all__ += messages.__all__
