"""The retry policy: what retries, full-jitter backoff, Retry-After, attempt and time caps."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.retry import (
    DEFAULT_RETRY_STATUSES,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    should_retry,
)
from schemas.error_kinds import ALWAYS_RETRIED, NEVER_RETRIED, ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

RETRYABLE = [408, 425, 429, 500, 502, 503, 504]
PERMANENT = [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 501, 505, 507, 511]
SUCCESS = [200, 201, 202, 204, 206]
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def _fixed(value: float) -> Callable[[], float]:
    """Return a rand() stand-in that always returns ``value``."""
    return lambda: value


# --- policy values and validation ------------------------------------------------------------


def test_defaults_follow_the_original_example() -> None:
    """Defaults: 60 attempts in about 10 minutes, 0.5 s base, 30 s cap, 120 s Retry-After."""
    policy = RetryPolicy()
    assert policy.max_attempts == 60
    assert policy.max_elapsed_s == 600.0
    assert policy.base_delay_s == 0.5
    assert policy.max_delay_s == 30.0
    assert policy.retry_statuses == frozenset({408, 425, 429, 500, 502, 503, 504})
    assert policy.retry_statuses == DEFAULT_RETRY_STATUSES
    assert policy.max_retry_after_s == 120.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_attempts": -3}, "max_attempts must be >= 1"),
        ({"max_elapsed_s": 0.0}, "max_elapsed_s must be a finite number > 0"),
        ({"max_elapsed_s": -1.0}, "max_elapsed_s must be a finite number > 0"),
        ({"max_elapsed_s": math.inf}, "max_elapsed_s must be a finite number > 0"),
        ({"max_elapsed_s": math.nan}, "max_elapsed_s must be a finite number > 0"),
        ({"base_delay_s": -0.1}, "base_delay_s must be a finite number >= 0"),
        ({"base_delay_s": math.nan}, "base_delay_s must be a finite number >= 0"),
        ({"base_delay_s": math.inf}, "base_delay_s must be a finite number >= 0"),
        ({"max_delay_s": -1.0}, "max_delay_s must be a finite number >= 0"),
        ({"max_delay_s": math.inf}, "max_delay_s must be a finite number >= 0"),
        ({"max_delay_s": 0.4}, "max_delay_s must be >= base_delay_s"),
        ({"max_retry_after_s": -1.0}, "max_retry_after_s must be a finite number >= 0"),
        ({"max_retry_after_s": math.nan}, "max_retry_after_s must be a finite number >= 0"),
        ({"retry_statuses": frozenset({200})}, r"retry_statuses must be HTTP error statuses"),
        ({"retry_statuses": frozenset({399, 500})}, r"retry_statuses must be HTTP error"),
        ({"retry_statuses": frozenset({600})}, r"retry_statuses must be HTTP error statuses"),
    ],
)
def test_invalid_values_are_rejected_with_a_clear_message(
    changes: dict[str, Any], message: str
) -> None:
    """Each invalid field raises ValueError naming the field and the rule it breaks."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**changes)


def test_edge_values_are_accepted() -> None:
    """One attempt, zero delays and a zero Retry-After cap are valid (tests use them)."""
    policy = RetryPolicy(
        max_attempts=1,
        base_delay_s=0.0,
        max_delay_s=0.0,
        max_retry_after_s=0.0,
        retry_statuses=frozenset(),
    )
    assert policy.max_attempts == 1
    assert policy.retry_statuses == frozenset()


def test_retry_statuses_from_any_collection_become_a_frozenset() -> None:
    """A set or list of statuses (as settings may build it) is stored as a frozenset."""
    policy = RetryPolicy(retry_statuses=[503, 503, 429])  # type: ignore[arg-type]
    assert policy.retry_statuses == frozenset({429, 503})
    assert isinstance(policy.retry_statuses, frozenset)


def test_policy_is_frozen() -> None:
    """A policy cannot change after construction (replicas share it safely)."""
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


def test_replace_revalidates() -> None:
    """dataclasses.replace builds a new policy through the same validation."""
    policy = dataclasses.replace(RetryPolicy(), max_attempts=5)
    assert policy.max_attempts == 5
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        dataclasses.replace(policy, max_attempts=0)


# --- which failures retry -------------------------------------------------------------------


@pytest.mark.parametrize("status", RETRYABLE)
def test_transient_statuses_are_retryable(status: int) -> None:
    """408, 425, 429, 500, 502, 503 and 504 are retried."""
    assert is_retryable_status(status)
    assert RetryPolicy().is_retryable_status(status)
    assert should_retry(ResultErrorKind.HTTP_STATUS, status)
    assert RetryPolicy().should_retry(ResultErrorKind.HTTP_STATUS, status)


@pytest.mark.parametrize("status", PERMANENT)
def test_other_error_statuses_fail_at_once(status: int) -> None:
    """Other 4xx (400, 401, 404, 422, ...) and 5xx (501, 505, ...) are not retried."""
    assert not is_retryable_status(status)
    assert not RetryPolicy().is_retryable_status(status)
    assert not should_retry(ResultErrorKind.HTTP_STATUS, status)


@pytest.mark.parametrize("status", SUCCESS)
def test_success_statuses_are_never_retryable(status: int) -> None:
    """A 2xx is success, not a failure: never retryable."""
    assert not is_retryable_status(status)
    assert not RetryPolicy().is_retryable_status(status)


def test_policy_statuses_are_configurable() -> None:
    """A policy's own retry_statuses decide, not the defaults."""
    policy = RetryPolicy(retry_statuses=frozenset({404}))
    assert policy.should_retry(ResultErrorKind.HTTP_STATUS, 404)
    assert not policy.should_retry(ResultErrorKind.HTTP_STATUS, 503)
    assert should_retry(ResultErrorKind.HTTP_STATUS, 404, frozenset({404}))


@pytest.mark.parametrize("kind", [ResultErrorKind.TIMEOUT, ResultErrorKind.CONNECTION])
@pytest.mark.parametrize("status", [None, 400, 503])
def test_timeouts_and_connection_errors_retry(kind: ResultErrorKind, status: int | None) -> None:
    """Timeouts and connection errors are transient: retried, whatever the status."""
    assert should_retry(kind, status)
    assert RetryPolicy().should_retry(kind, status)


def test_bad_response_retries() -> None:
    """A garbled or truncated 2xx body is treated as transient (proxy, restart): retried."""
    assert should_retry(ResultErrorKind.BAD_RESPONSE, None)
    assert should_retry(ResultErrorKind.BAD_RESPONSE, 200)


def test_wrong_prediction_count_is_permanent() -> None:
    """A well-formed answer with the wrong number of predictions is not retried."""
    assert not should_retry(ResultErrorKind.WRONG_COUNT, None)
    assert not should_retry(ResultErrorKind.WRONG_COUNT, 200)
    assert not RetryPolicy().should_retry(ResultErrorKind.WRONG_COUNT, 200)


def test_http_status_failure_needs_its_status() -> None:
    """An http_status failure without a status is a caller bug: ValueError."""
    with pytest.raises(ValueError, match="needs its HTTP status"):
        should_retry(ResultErrorKind.HTTP_STATUS, None)


def test_error_kinds_are_the_contracts_and_each_has_one_retry_rule() -> None:
    """The kinds are exactly those result.v1.json lists; each has one retry rule.

    Always retried, never retried, or (``http_status`` alone) decided by the status; the
    policy answers accordingly for every kind.
    """
    schema = json.loads(Path("schemas/result.v1.json").read_text())
    listed = schema["properties"]["error"]["properties"]["kind"]["enum"]
    assert sorted(listed) == sorted(kind.value for kind in ResultErrorKind)
    assert ResultErrorKind("timeout") is ResultErrorKind.TIMEOUT
    assert not ALWAYS_RETRIED & NEVER_RETRIED
    by_status = set(ResultErrorKind) - ALWAYS_RETRIED - NEVER_RETRIED
    assert by_status == {ResultErrorKind.HTTP_STATUS}
    for kind in ALWAYS_RETRIED:
        assert should_retry(kind, None)
    for kind in NEVER_RETRIED:
        assert not should_retry(kind, 200)
    assert str(ResultErrorKind.WRONG_COUNT) == "wrong_count"


# --- backoff with full jitter ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "cap"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0), (59, 30.0)],
)
def test_backoff_cap_doubles_up_to_max_delay(attempt: int, cap: float) -> None:
    """The jitter range after attempt n is min(max_delay, base * 2**(n-1))."""
    policy = RetryPolicy()
    assert policy.backoff_cap(attempt) == cap
    assert policy.next_delay(attempt, 0.0, None, rand=_fixed(1.0)) == cap


def test_backoff_cap_does_not_overflow_for_huge_attempts() -> None:
    """Attempt numbers far past float range still give max_delay, not OverflowError."""
    policy = RetryPolicy(max_attempts=10**9, max_elapsed_s=1e12)
    assert policy.backoff_cap(10**8) == 30.0
    assert policy.next_delay(10**8, 0.0, None, rand=_fixed(1.0)) == 30.0


def test_backoff_cap_rejects_attempt_zero() -> None:
    """backoff_cap counts attempts already made, so it starts at 1."""
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        RetryPolicy().backoff_cap(0)


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0.0), (0.25, 1.0), (0.5, 2.0)])
def test_full_jitter_scales_the_whole_range(fraction: float, expected: float) -> None:
    """Full jitter: the delay is rand() times the cap, anywhere from 0 up to the cap."""
    assert RetryPolicy().next_delay(4, 0.0, None, rand=_fixed(fraction)) == expected


@given(
    attempt=st.integers(min_value=1, max_value=59),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_jittered_delay_stays_within_bounds(attempt: int, fraction: float) -> None:
    """For any attempt and rand() in [0, 1], 0 <= delay <= the attempt's cap."""
    policy = RetryPolicy()
    delay = policy.next_delay(attempt, 0.0, None, rand=_fixed(fraction))
    assert delay is not None
    assert 0.0 <= delay <= policy.backoff_cap(attempt)


def test_default_rand_gives_delays_in_range() -> None:
    """Without an injected rand, delays come from random.random and stay in range."""
    policy = RetryPolicy()
    for _ in range(200):
        delay = policy.next_delay(3, 0.0, None)
        assert delay is not None
        assert 0.0 <= delay <= 2.0


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan])
def test_rand_outside_unit_interval_is_rejected(fraction: float) -> None:
    """An injected rand() returning outside [0, 1] is a bug: ValueError."""
    with pytest.raises(ValueError, match=r"rand\(\) must return"):
        RetryPolicy().next_delay(1, 0.0, None, rand=_fixed(fraction))


def test_zero_base_delay_retries_immediately() -> None:
    """With base_delay_s=0 every wait is 0 (useful in tests), still capped by attempts."""
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    assert policy.next_delay(1, 0.0, None, rand=_fixed(1.0)) == 0.0
    assert policy.next_delay(2, 0.0, None, rand=_fixed(1.0)) == 0.0
    assert policy.next_delay(3, 0.0, None, rand=_fixed(1.0)) is None


# --- attempt and time caps ------------------------------------------------------------------


def test_attempts_exhausted_gives_up() -> None:
    """After max_attempts attempts, next_delay is None; one fewer still retries."""
    policy = RetryPolicy(max_attempts=5)
    assert policy.next_delay(4, 0.0, None, rand=_fixed(0.5)) is not None
    assert policy.next_delay(5, 0.0, None, rand=_fixed(0.5)) is None
    assert policy.next_delay(6, 0.0, None, rand=_fixed(0.5)) is None


def test_single_attempt_policy_never_retries() -> None:
    """max_attempts=1 means the first failure is final."""
    assert RetryPolicy(max_attempts=1).next_delay(1, 0.0, None, rand=_fixed(0.0)) is None


def test_exhausted_attempts_win_over_retry_after() -> None:
    """A Retry-After does not buy an attempt beyond max_attempts."""
    assert RetryPolicy(max_attempts=2).next_delay(2, 0.0, 1.0, rand=_fixed(0.0)) is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_counts_from_one(attempt: int) -> None:
    """The attempt argument counts attempts already made, so it is at least 1."""
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        RetryPolicy().next_delay(attempt, 0.0, None, rand=_fixed(0.5))


def test_wait_ending_past_budget_gives_up() -> None:
    """A wait that would end past max_elapsed_s is not started: None at once."""
    policy = RetryPolicy(max_elapsed_s=10.0)
    assert policy.next_delay(4, 6.0, None, rand=_fixed(1.0)) == 4.0  # ends exactly at 10
    assert policy.next_delay(4, 6.5, None, rand=_fixed(1.0)) is None  # would end at 10.5
    assert policy.next_delay(4, 6.5, None, rand=_fixed(0.5)) == 2.0  # a shorter draw fits


def test_budget_already_spent_gives_up() -> None:
    """Past the time budget nothing more is tried, whatever the attempt count."""
    policy = RetryPolicy()
    assert policy.next_delay(1, 600.5, None, rand=_fixed(0.0)) is None


@pytest.mark.parametrize("elapsed", [-1.0, math.nan, math.inf])
def test_elapsed_must_be_a_finite_non_negative_duration(elapsed: float) -> None:
    """A negative or non-finite elapsed time is a clock bug: ValueError."""
    with pytest.raises(ValueError, match="elapsed_s must be"):
        RetryPolicy().next_delay(1, elapsed, None, rand=_fixed(0.5))


@given(
    fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=60, max_size=60),
    durations=st.lists(st.floats(min_value=0.0, max_value=40.0), min_size=60, max_size=60),
    retry_afters=st.lists(
        st.none() | st.floats(min_value=0.0, max_value=1e6), min_size=60, max_size=60
    ),
)
def test_retry_loop_always_ends_within_both_caps(
    fractions: list[float], durations: list[float], retry_afters: list[float | None]
) -> None:
    """Driving the policy as the dispatcher will, the loop ends within both caps.

    For any jitter draws, request durations and Retry-After hints: at most max_attempts
    attempts, and no wait ever ends past max_elapsed_s. Never an infinite loop.
    """
    policy = RetryPolicy()
    elapsed = 0.0
    attempt = 0
    while True:
        elapsed += durations[attempt]
        attempt += 1
        delay = policy.next_delay(
            attempt, elapsed, retry_afters[attempt - 1], rand=_fixed(fractions[attempt - 1])
        )
        if delay is None:
            break
        assert delay >= 0.0
        assert elapsed + delay <= policy.max_elapsed_s
        elapsed += delay
    assert attempt <= policy.max_attempts


def test_patient_defaults_fill_about_ten_minutes() -> None:
    """With maximal jitter and instant failures, retries stop near the 600 s budget."""
    policy = RetryPolicy()
    elapsed = 0.0
    attempt = 1
    while (delay := policy.next_delay(attempt, elapsed, None, rand=_fixed(1.0))) is not None:
        elapsed += delay
        attempt += 1
    assert 570.0 < elapsed <= 600.0
    assert attempt < policy.max_attempts


def test_zero_jitter_is_stopped_by_attempt_cap() -> None:
    """With zero waits the time cap never binds; max_attempts ends the loop."""
    policy = RetryPolicy()
    attempt = 1
    while policy.next_delay(attempt, 0.0, None, rand=_fixed(0.0)) is not None:
        attempt += 1
    assert attempt == policy.max_attempts


# --- Retry-After in next_delay --------------------------------------------------------------


def test_retry_after_longer_than_backoff_wins() -> None:
    """A server asking for a longer wait than the backoff is obeyed."""
    assert RetryPolicy().next_delay(1, 0.0, 7.0, rand=_fixed(1.0)) == 7.0


def test_backoff_longer_than_retry_after_wins() -> None:
    """A short Retry-After is a floor, not a replacement: jittered backoff still applies."""
    assert RetryPolicy().next_delay(7, 0.0, 1.0, rand=_fixed(0.5)) == 15.0


def test_retry_after_zero_leaves_the_backoff() -> None:
    """Retry-After: 0 (or a past date) means the backoff alone decides."""
    assert RetryPolicy().next_delay(3, 0.0, 0.0, rand=_fixed(0.5)) == 1.0


def test_retry_after_is_capped() -> None:
    """A Retry-After above max_retry_after_s waits only the cap."""
    policy = RetryPolicy()
    assert policy.next_delay(1, 0.0, 3600.0, rand=_fixed(0.0)) == 120.0
    assert policy.next_delay(1, 0.0, math.inf, rand=_fixed(0.0)) == 120.0
    capped = RetryPolicy(max_retry_after_s=5.0)
    assert capped.next_delay(1, 0.0, 60.0, rand=_fixed(0.0)) == 5.0


def test_retry_after_past_budget_gives_up_now() -> None:
    """When the server's wait would end past the budget, give up instead of sleeping."""
    policy = RetryPolicy()
    assert policy.next_delay(2, 500.0, 120.0, rand=_fixed(0.0)) is None
    assert policy.next_delay(2, 480.0, 120.0, rand=_fixed(0.0)) == 120.0


@pytest.mark.parametrize("retry_after", [-1.0, math.nan])
def test_invalid_retry_after_seconds_are_rejected(retry_after: float) -> None:
    """next_delay takes parse_retry_after's output: never negative or NaN."""
    with pytest.raises(ValueError, match="retry_after_s must be"):
        RetryPolicy().next_delay(1, 0.0, retry_after, rand=_fixed(0.5))


@given(
    attempt=st.integers(min_value=1, max_value=59),
    fraction=st.floats(min_value=0.0, max_value=1.0),
    retry_after=st.floats(min_value=0.0, max_value=1e9),
)
def test_delay_with_retry_after_is_the_max_of_both(
    attempt: int, fraction: float, retry_after: float
) -> None:
    """With a hint, delay = max(min(hint, cap), jittered backoff), when it fits the budget."""
    policy = RetryPolicy()
    delay = policy.next_delay(attempt, 0.0, retry_after, rand=_fixed(fraction))
    expected = max(min(retry_after, 120.0), fraction * policy.backoff_cap(attempt))
    assert delay == expected


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), (" 30 ", 30.0), ("007", 7.0), ("1.5", 1.5)],
)
def test_delta_seconds(value: str, seconds: float) -> None:
    """Delay-seconds (and, leniently, a decimal) parse to that many seconds."""
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-5",
        "+5",
        "abc",
        "12abc",
        "1e3",
        "inf",
        "nan",
        "1_000",
        ".5",
        "5.",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: not an ASCII digit
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 99999 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +2400",
    ],
)
def test_missing_negative_or_garbage_is_none(value: str | None) -> None:
    """Absent, negative, non-ASCII or unparseable values give None, never an exception."""
    assert parse_retry_after(value, NOW) is None


def test_imf_fixdate_in_the_future() -> None:
    """An IMF-fixdate parses to the seconds between now and that date."""
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", NOW) == 30.0


def test_http_date_in_the_past_is_zero() -> None:
    """A date already past means retry now: 0, not a negative wait."""
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 01 Jan 2025 12:01:00 GMT",  # IMF-fixdate
        "Wednesday, 01-Jan-25 12:01:00 GMT",  # obsolete RFC 850
        "Wed Jan  1 12:01:00 2025",  # obsolete asctime (no zone: UTC)
        "Wed, 01 Jan 2025 12:01:00 -0000",  # RFC 5322 "unknown zone": taken as UTC
        "Wed, 01 Jan 2025 13:01:00 +0100",  # explicit offset
    ],
)
def test_all_http_date_forms_are_understood(value: str) -> None:
    """RFC 9110 recipients accept all three date forms; all mean UTC."""
    assert parse_retry_after(value, NOW) == 60.0


@pytest.mark.parametrize("value", ["Wed Jan  1 12:01:00 2025", "Wed, 01 Jan 2025 12:01:00 -0000"])
def test_zoneless_dates_are_utc_whatever_the_local_zone(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dates without a zone are UTC, not the machine's local time."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after(value, NOW) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()


@given(st.text())
def test_parse_never_raises(value: str) -> None:
    """Any header text gives None or a finite number of seconds >= 0."""
    result = parse_retry_after(value, NOW)
    assert result is None or (math.isfinite(result) and result >= 0.0)


@given(st.integers(min_value=0, max_value=10**12))
def test_delta_seconds_round_trip(seconds: int) -> None:
    """Every non-negative integer of seconds parses back to itself."""
    assert parse_retry_after(str(seconds), NOW) == float(seconds)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_formatted_http_dates_round_trip(when: datetime) -> None:
    """Any date formatted as an HTTP-date parses to its distance from now (floored at 0)."""
    header = format_datetime(when, usegmt=True)
    expected = max(when.replace(microsecond=0).timestamp() - NOW, 0.0)
    assert parse_retry_after(header, NOW) == expected


def test_parsed_header_feeds_next_delay() -> None:
    """The parsed header is what next_delay takes: 429 with Retry-After: 10 waits 10 s."""
    hint = parse_retry_after("10", NOW)
    assert RetryPolicy().next_delay(1, 0.0, hint, rand=_fixed(1.0)) == 10.0
    later = (datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=45)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    assert RetryPolicy().next_delay(1, 0.0, parse_retry_after(later, NOW), _fixed(0.0)) == 45.0


# --- the same 500 answer, repeated --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "times", "final"),
    [
        (500, "ValueError: X has 3 features", 3, True),
        (500, "ValueError: X has 3 features", 4, True),
        (500, "ValueError: X has 3 features", 2, False),
        (500, "   ", 3, False),
        (502, "Bad Gateway", 3, False),
        (503, "model is loading", 10, False),
        (504, "upstream timed out", 10, False),
        (429, "slow down", 10, False),
    ],
)
def test_only_a_repeated_non_empty_500_answer_is_final(
    status: int, body: str, times: int, *, final: bool
) -> None:
    """A model's same 500 message three times is its answer; gateways' 502-504 never are."""
    assert RetryPolicy().answer_is_final(status, body, times) is final


def test_max_same_error_sets_the_count_and_zero_turns_it_off() -> None:
    """``max_same_error`` is the number of equal answers that is final; 0 never judges so."""
    assert RetryPolicy(max_same_error=1).answer_is_final(500, "boom", 1)
    assert not RetryPolicy(max_same_error=5).answer_is_final(500, "boom", 4)
    assert not RetryPolicy(max_same_error=0).answer_is_final(500, "boom", 100)
    with pytest.raises(ValueError, match="max_same_error must be >= 0"):
        RetryPolicy(max_same_error=-1)
