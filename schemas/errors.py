"""Every error the project raises on purpose, under one root, with its exit code.

::

    BatchRunnerError              the root; catch it to catch them all (exit 1)
    ├── ConfigError               unusable configuration: a setting, a flag, a file (exit 2)
    ├── BadInputError                  a command's input cannot be used: file, line, option (exit 2)
    │   └── InvalidMessage        a message that breaks the contract (schemas.decoding)
    ├── KafkaUnavailableError          the cluster cannot be reached, or a topic is missing (exit 4)
    ├── IncompleteError                the work is not (all) done: chunks undelivered, items
    │                             missing from a batch (exit 1)
    ├── DeliveryError            a record could not be delivered: the replica stops without
    │                             committing past it (exit 1)
    └── ToolError                 a development tool failed: the local broker, a model server,
                                  the demo (exit 1)

``exit_code`` is what a command returns when the error ends it; the command-line entry
points map errors to exit codes with :func:`exit_code_for` and nothing else. Errors of
Python itself or of a library that reach a command are bugs, and end it with a traceback.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_KAFKA = 4
EXIT_INTERRUPTED = 130


class BatchRunnerError(Exception):
    """The root of the project's errors; ``exit_code`` is what a command then returns."""

    exit_code: ClassVar[int] = EXIT_FAILED


class ConfigError(BatchRunnerError, ValueError):
    """The configuration is unusable; raised at start-up, before any work starts."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class BadInputError(BatchRunnerError, ValueError):
    """A command's input cannot be used; the message says where and why."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class KafkaUnavailableError(BatchRunnerError):
    """The Kafka cluster cannot be reached in time, or a topic it needs does not exist."""

    exit_code: ClassVar[int] = EXIT_KAFKA


class IncompleteError(BatchRunnerError):
    """The work is not (all) done: some chunks undelivered, some items without a result."""

    exit_code: ClassVar[int] = EXIT_FAILED


class DeliveryError(BatchRunnerError):
    """A record could not be delivered; nothing after it was committed."""

    exit_code: ClassVar[int] = EXIT_FAILED


class ToolError(BatchRunnerError):
    """A development tool (the local broker, a model server, the demo) failed."""

    exit_code: ClassVar[int] = EXIT_FAILED


def exit_code_for(error: BaseException) -> int:
    """Return the exit code a command ends with when ``error`` ends it."""
    if isinstance(error, BatchRunnerError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED
