"""The error tree: one root, an exit code per branch, and the classes that hang from it."""

from __future__ import annotations

import pytest

from consumer.settings import Settings
from producer.inputs import InputError
from producer.results import ReaderError, parse_start
from producer.submit import SubmitError, check_batch_id
from schemas import InvalidMessage, decode_batch_request
from schemas.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    BadInputError,
    BatchRunnerError,
    ConfigError,
    IncompleteError,
    KafkaUnavailableError,
    exit_code_for,
)
from tools.localkafka.broker import LocalKafkaError


def test_every_deliberate_error_is_a_batch_runner_error_with_its_exit_code() -> None:
    """Errors raised by the project's own code carry the exit code of their branch."""
    with pytest.raises(ConfigError) as config:
        Settings.from_env({})
    with pytest.raises(InvalidMessage) as invalid:
        decode_batch_request(b"{not json")
    with pytest.raises(BadInputError) as batch_id:
        check_batch_id("spaces are not allowed")
    with pytest.raises(BadInputError) as start:
        parse_start("yesterday-ish")
    cases: list[tuple[BaseException, int]] = [
        (config.value, EXIT_BAD_INPUT),
        (invalid.value, EXIT_BAD_INPUT),
        (batch_id.value, EXIT_BAD_INPUT),
        (start.value, EXIT_BAD_INPUT),
        (InputError("examples/x.json: no such file"), EXIT_BAD_INPUT),
        (ReaderError("topic 'x' does not exist"), EXIT_KAFKA),
        (SubmitError("2 of 5 chunks were not delivered"), EXIT_FAILED),
        (LocalKafkaError("java was not found"), EXIT_FAILED),
    ]
    for error, code in cases:
        assert isinstance(error, BatchRunnerError), type(error)
        assert exit_code_for(error) == code, type(error)
    assert isinstance(SubmitError("x"), IncompleteError)
    assert isinstance(ReaderError("x"), KafkaUnavailableError)


def test_errors_outside_the_tree_are_failures_and_an_interrupt_is_130() -> None:
    """A bug (any other exception) exits 1; Ctrl-C exits 130."""
    assert exit_code_for(RuntimeError("a bug")) == EXIT_FAILED
    assert exit_code_for(ValueError("a bug, not bad input")) == EXIT_FAILED
    assert exit_code_for(KeyboardInterrupt()) == EXIT_INTERRUPTED
