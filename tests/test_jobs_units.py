"""Pure parts of the job commands: durations (``--deadline``, ``--timeout``)."""

from __future__ import annotations

import pytest

from producer.jobs_cli import parse_duration
from schemas.errors import BadInputError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("90", 90), ("30m", 1800), ("24h", 86400), ("2d", 172800), ("0.5h", 1800)],
)
def test_durations_read_with_their_unit(text: str, seconds: float) -> None:
    """A number with s, m, h or d (seconds without one)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "0", "1w", "1h30m"])
def test_a_bad_duration_is_a_clear_input_error(text: str) -> None:
    """Anything else is refused, naming the value and the accepted form."""
    with pytest.raises(BadInputError, match="use a positive number with s, m, h or d"):
        parse_duration(text)
