"""Unit tests for ``hookline.retry``: schedules, Retry-After, classification and decisions."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.errors import ValidationFailed
from hookline.retry import (
    DEFAULT_SCHEDULE,
    MAX_DELAY,
    MAX_SCHEDULE_LENGTH,
    AttemptOutcome,
    RetryDecision,
    RetryPolicy,
    apply_jitter,
    classify,
    decide,
    first_attempt_at,
    format_schedule,
    parse_retry_after,
    parse_schedule,
    should_disable_endpoint,
)

NOW = datetime(2025, 3, 14, 12, 0, 0)  # naive UTC, as hookline stores it
MICRO = 1e-6  # timedelta rounds to microseconds
STRICT = RetryPolicy(jitter=0)  # no jitter: exact delays
PLUS_ONE = timezone(timedelta(hours=1))


def seconds_after(when: datetime | None, start: datetime = NOW) -> float:
    assert when is not None
    return (when - start).total_seconds()


def errors_of(call: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        call(*args, **kwargs)
    assert info.value.status == 422
    return info.value.errors


# --- RetryPolicy ---------------------------------------------------------------------------


def test_default_policy() -> None:
    policy = RetryPolicy()
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.schedule == DEFAULT_SCHEDULE
    assert policy.jitter == 0.2
    assert policy.max_retry_after == 6 * 3600
    assert policy.min_retry_after == 0
    assert policy.max_attempts == 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schedule": ()}, "retry_schedule"),
        ({"schedule": (0,) * (MAX_SCHEDULE_LENGTH + 1)}, "retry_schedule"),
        ({"schedule": (0, -1)}, "retry_schedule"),
        ({"schedule": (0, math.nan)}, "retry_schedule"),
        ({"schedule": (0, math.inf)}, "retry_schedule"),
        ({"schedule": (0, MAX_DELAY + 1)}, "retry_schedule"),
        ({"schedule": (0, "5")}, "retry_schedule"),
        ({"schedule": (0, True)}, "retry_schedule"),
        ({"schedule": (0, None)}, "retry_schedule"),
        ({"schedule": "0,5"}, "retry_schedule"),
        ({"schedule": 5}, "retry_schedule"),
        ({"jitter": -0.1}, "retry_jitter"),
        ({"jitter": 1.5}, "retry_jitter"),
        ({"jitter": math.nan}, "retry_jitter"),
        ({"jitter": "0.2"}, "retry_jitter"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"max_retry_after": math.inf}, "max_retry_after"),
        ({"max_retry_after": MAX_DELAY * 2}, "max_retry_after"),
        ({"min_retry_after": -1}, "min_retry_after"),
        ({"min_retry_after": math.nan}, "min_retry_after"),
        ({"min_retry_after": 100, "max_retry_after": 10}, "min_retry_after"),
    ],
)
def test_policy_rejects_invalid_values(kwargs: dict[str, Any], field: str) -> None:
    assert field in errors_of(RetryPolicy, **kwargs)


def test_policy_reports_every_invalid_field_at_once() -> None:
    errors = errors_of(RetryPolicy, schedule=(), jitter=2, max_retry_after=-1)
    assert set(errors) == {"retry_schedule", "retry_jitter", "max_retry_after"}


@pytest.mark.parametrize(
    ("kwargs", "schedule"),
    [
        ({"schedule": [0, 5, 10]}, (0, 5, 10)),  # a list becomes a tuple
        ({"schedule": (7,)}, (7,)),
        ({"schedule": (0,) * MAX_SCHEDULE_LENGTH}, (0,) * MAX_SCHEDULE_LENGTH),
        ({"schedule": (0, MAX_DELAY)}, (0, MAX_DELAY)),
        ({"jitter": 0}, DEFAULT_SCHEDULE),
        ({"jitter": 1}, DEFAULT_SCHEDULE),
        ({"min_retry_after": 10, "max_retry_after": 10}, DEFAULT_SCHEDULE),
    ],
)
def test_policy_accepts_valid_values(kwargs: dict[str, Any], schedule: tuple[float, ...]) -> None:
    policy = RetryPolicy(**kwargs)
    assert policy.schedule == schedule
    assert isinstance(policy.schedule, tuple)
    assert policy.max_attempts == len(schedule)


def test_policy_is_a_frozen_value() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.jitter = 0.5  # type: ignore[misc]
    assert policy == RetryPolicy()


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        (None, {}, RetryPolicy()),
        ("0,1m,1h", {}, RetryPolicy(schedule=(0, 60, 3600))),
        ("5s", {"jitter": 0.1, "max_retry_after": 60}, RetryPolicy((5,), 0.1, 60)),
    ],
)
def test_from_config(text: str | None, kwargs: dict[str, Any], expected: RetryPolicy) -> None:
    assert RetryPolicy.from_config(text, **kwargs) == expected


@pytest.mark.parametrize(
    ("text", "kwargs", "field"),
    [
        ("0,5x", {}, "retry_schedule"),
        ("", {}, "retry_schedule"),
        ("0,5s", {"jitter": 3}, "retry_jitter"),
    ],
)
def test_from_config_rejects(text: str, kwargs: dict[str, Any], field: str) -> None:
    assert field in errors_of(RetryPolicy.from_config, text, **kwargs)


@pytest.mark.parametrize(
    ("seconds", "clamped"),
    [(-5, 10), (0, 10), (10, 10), (30, 30), (100, 100), (101, 100), (math.inf, 100)],
)
def test_clamp_retry_after(seconds: float, clamped: float) -> None:
    policy = RetryPolicy(min_retry_after=10, max_retry_after=100)
    assert policy.clamp_retry_after(seconds) == clamped


# --- parse_schedule / format_schedule ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,5s,5m,30m,2h,5h,10h,10h", DEFAULT_SCHEDULE),
        (" 0 , 5s ,5m,  30m,2h,5h,10h,10h ", DEFAULT_SCHEDULE),
        ("0,5,300,1800,7200,18000,36000,36000", DEFAULT_SCHEDULE),
        ("5 m", (300,)),
        ("1d", (86400,)),
        ("2D,1H,3M,4S", (172800, 3600, 180, 4)),
        ("1.5s", (1.5,)),
        ("0.5m", (30,)),
        ("1.5h", (5400,)),
        ("0", (0,)),
        ("0s,0m", (0, 0)),
        ("\t10\n", (10,)),
        ("30d", (MAX_DELAY,)),
        (",".join(["1s"] * MAX_SCHEDULE_LENGTH), (1,) * MAX_SCHEDULE_LENGTH),
    ],
)
def test_parse_schedule(text: str, expected: tuple[float, ...]) -> None:
    assert parse_schedule(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ",",
        "0,,5s",
        "0,5s,",
        "5x",
        "5 s s",
        "s",
        "-5s",
        "+5s",
        "1e3",
        "nan",
        "inf",
        "5min",
        "1w",
        ".5s",
        "5.s",
        "0;5s",
        "0 5s",
        "\u0665s",  # an Arabic-Indic digit five: ASCII digits only
        "31d",
        ",".join(["1s"] * (MAX_SCHEDULE_LENGTH + 1)),
    ],
)
def test_parse_schedule_rejects_junk(text: str) -> None:
    errors = errors_of(parse_schedule, text)
    assert list(errors) == ["retry_schedule"]


@pytest.mark.parametrize("value", [None, 5, b"0,5s", ["0", "5s"]])
def test_parse_schedule_rejects_non_text(value: Any) -> None:
    assert list(errors_of(parse_schedule, value)) == ["retry_schedule"]


def test_parse_schedule_error_names_the_bad_entry() -> None:
    assert "'5x'" in errors_of(parse_schedule, "0, 5x ,1m")["retry_schedule"]


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (DEFAULT_SCHEDULE, "0,5s,5m,30m,2h,5h,10h,10h"),
        ((0.0, 5.0, 300.0), "0,5s,5m"),
        ((90,), "90s"),
        ((1.5,), "1.5s"),
        ((5400,), "90m"),
        ((86400, 172800, 90000), "1d,2d,25h"),
        ((1e-7,), "0.0000001s"),
        ([60, 0], "1m,0"),
    ],
)
def test_format_schedule(schedule: tuple[float, ...], text: str) -> None:
    assert format_schedule(schedule) == text
    assert parse_schedule(text) == tuple(schedule)


@pytest.mark.parametrize("schedule", [(), (-1,), (math.nan,), (0,) * 51, "0,5s"])
def test_format_schedule_rejects_invalid(schedule: Any) -> None:
    assert list(errors_of(format_schedule, schedule)) == ["retry_schedule"]


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=int(MAX_DELAY)),
            st.floats(min_value=0, max_value=MAX_DELAY, allow_nan=False),
        ),
        min_size=1,
        max_size=MAX_SCHEDULE_LENGTH,
    )
)
def test_format_then_parse_round_trips(schedule: list[float]) -> None:
    assert parse_schedule(format_schedule(schedule)) == tuple(schedule)


# --- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "now", "seconds"),
    [
        ("120", NOW, 120),
        ("  120 ", NOW, 120),
        ("0", NOW, 0),
        ("1.5", NOW, 1.5),
        ("-5", NOW, 0),
        ("+7", NOW, 7),
        ("99999999999", NOW, 99999999999),  # huge: not clamped here, the policy clamps it
        ("Fri, 14 Mar 2025 12:02:00 GMT", NOW, 120),
        ("Fri, 14 Mar 2025 13:00:00 GMT", NOW, 3600),
        ("Fri, 14 Mar 2025 12:00:00 GMT", NOW, 0),
        ("Fri, 14 Mar 2025 11:00:00 GMT", NOW, 0),  # in the past
        ("Thu, 01 Jan 1970 00:00:00 GMT", NOW, 0),
        ("Fri, 14 Mar 2025 14:02:00 +0200", NOW, 120),  # another zone
        ("Fri, 14 Mar 2025 12:00:30 -0000", NOW, 30),  # naive result: read as UTC
        ("Fri, 14 Mar 2025 12:02:00 GMT", NOW.replace(tzinfo=UTC), 120),  # aware now
        ("Fri, 14 Mar 2025 12:02:00 GMT", NOW.replace(hour=13, tzinfo=PLUS_ONE), 120),
    ],
)
def test_parse_retry_after(value: str, now: datetime, seconds: float) -> None:
    assert parse_retry_after(value, now) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "1e3",
        "nan",
        "inf",
        "12 seconds",
        "5s",
        "0x10",
        "1,5",
        "Fri, 99 Foo 2025 12:00:00 GMT",
        "Fri, 14 Mar 2025",
        "\u0665",  # an Arabic-Indic digit five
        12,  # not text
    ],
)
def test_parse_retry_after_junk_is_none(value: Any) -> None:
    assert parse_retry_after(value, NOW) is None


# --- AttemptOutcome and classify -----------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (AttemptOutcome(200), "success"),
        (AttemptOutcome(201), "success"),
        (AttemptOutcome(204), "success"),
        (AttemptOutcome(299), "success"),
        (AttemptOutcome(100), "failure"),
        (AttemptOutcome(199), "failure"),
        (AttemptOutcome(300), "failure"),
        (AttemptOutcome(301), "failure"),
        (AttemptOutcome(302), "failure"),
        (AttemptOutcome(307), "failure"),
        (AttemptOutcome(400), "failure"),
        (AttemptOutcome(401), "failure"),
        (AttemptOutcome(404), "failure"),
        (AttemptOutcome(409), "failure"),
        (AttemptOutcome(410), "gone"),
        (AttemptOutcome(429, retry_after="10"), "failure"),
        (AttemptOutcome(500), "failure"),
        (AttemptOutcome(502), "failure"),
        (AttemptOutcome(503), "failure"),
        (AttemptOutcome(599), "failure"),
        (AttemptOutcome(None, error="timeout"), "failure"),
        (AttemptOutcome(None, error="connection refused"), "failure"),
        (AttemptOutcome(None), "failure"),
    ],
)
def test_classify(outcome: AttemptOutcome, kind: str) -> None:
    assert classify(outcome) == kind


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status_code": 99}, "status_code"),
        ({"status_code": 600}, "status_code"),
        ({"status_code": -1}, "status_code"),
        ({"status_code": True}, "status_code"),
        ({"status_code": "200"}, "status_code"),
        ({"status_code": 200.0}, "status_code"),
        ({"status_code": None, "error": 5}, "error"),
        ({"status_code": 429, "retry_after": 10}, "retry_after"),
    ],
)
def test_attempt_outcome_rejects_invalid(kwargs: dict[str, Any], field: str) -> None:
    assert list(errors_of(AttemptOutcome, **kwargs)) == [field]


# --- apply_jitter --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "jitter", "fraction", "expected"),
    [
        (100, 0.2, -1, 80),
        (100, 0.2, 0, 100),
        (100, 0.2, 1, 120),
        (100, 0.2, 0.5, 110),
        (100, 0, 1, 100),
        (100, 1, -1, 0),
        (100, 1, 1, 200),
        (0, 0.2, 1, 0),
        (0, 1, -1, 0),
    ],
)
def test_apply_jitter(delay: float, jitter: float, fraction: float, expected: float) -> None:
    assert apply_jitter(delay, jitter, fraction) == pytest.approx(expected)
    assert apply_jitter(delay, jitter, fraction) >= 0


@pytest.mark.parametrize("fraction", [-1.01, 1.01, math.nan, math.inf])
def test_apply_jitter_rejects_fraction_out_of_range(fraction: float) -> None:
    assert list(errors_of(apply_jitter, 100, 0.2, fraction)) == ["fraction"]


# --- decide: one attempt -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "action", "disable", "delay"),
    [
        (AttemptOutcome(200), "succeeded", False, None),
        (AttemptOutcome(204), "succeeded", False, None),
        (AttemptOutcome(299), "succeeded", False, None),
        (AttemptOutcome(301), "retry", False, 5),
        (AttemptOutcome(302), "retry", False, 5),
        (AttemptOutcome(400), "retry", False, 5),
        (AttemptOutcome(404), "retry", False, 5),
        (AttemptOutcome(410), "failed", True, None),
        (AttemptOutcome(429), "retry", False, 5),
        (AttemptOutcome(500), "retry", False, 5),
        (AttemptOutcome(503), "retry", False, 5),
        (AttemptOutcome(None, error="timeout"), "retry", False, 5),
        (AttemptOutcome(None, error="connection refused"), "retry", False, 5),
    ],
)
def test_decide_after_first_attempt(
    outcome: AttemptOutcome, action: str, disable: bool, delay: float | None
) -> None:
    decision = decide(STRICT, 1, outcome, NOW, random.Random(0))
    assert decision.action == action
    assert decision.disable_endpoint is disable
    if delay is None:
        assert decision.next_attempt_at is None
    else:
        assert seconds_after(decision.next_attempt_at) == pytest.approx(delay)
    assert decision.reason


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        (AttemptOutcome(200), ["200"]),
        (AttemptOutcome(410), ["410 Gone"]),
        (AttemptOutcome(500), ["HTTP 500", "attempt 2 of 8"]),
        (AttemptOutcome(302), ["HTTP 302", "redirects are not followed"]),
        (AttemptOutcome(None, error="read timeout"), ["no response", "read timeout"]),
        (AttemptOutcome(429, retry_after="60"), ["HTTP 429", "Retry-After 60s"]),
        (AttemptOutcome(503, retry_after="999999"), ["Retry-After 21600s (clamped)"]),
    ],
)
def test_decide_reason_explains(outcome: AttemptOutcome, words: list[str]) -> None:
    reason = decide(STRICT, 1, outcome, NOW, random.Random(0)).reason
    for word in words:
        assert word in reason


@pytest.mark.parametrize("attempts_made", [1, 4, 7, 8, 9, 100])
def test_410_fails_and_disables_at_any_attempt(attempts_made: int) -> None:
    decision = decide(RetryPolicy(), attempts_made, AttemptOutcome(410), NOW, random.Random(1))
    assert decision == RetryDecision(
        "failed", None, True, "410 Gone: the endpoint asked for no more deliveries"
    )


@pytest.mark.parametrize("attempts_made", [1, 8, 9, 100])
def test_success_at_any_attempt(attempts_made: int) -> None:
    decision = decide(RetryPolicy(), attempts_made, AttemptOutcome(200), NOW, random.Random(1))
    assert (decision.action, decision.next_attempt_at, decision.disable_endpoint) == (
        "succeeded",
        None,
        False,
    )


@pytest.mark.parametrize("attempts_made", [0, -1, True, 1.0, "1", None])
def test_decide_rejects_invalid_attempt_count(attempts_made: Any) -> None:
    errors = errors_of(
        decide, RetryPolicy(), attempts_made, AttemptOutcome(500), NOW, random.Random()
    )
    assert list(errors) == ["attempts_made"]


# --- decide: Retry-After -------------------------------------------------------------------

IN_ONE_MINUTE = "Fri, 14 Mar 2025 12:01:00 GMT"
IN_ONE_DAY = "Sat, 15 Mar 2025 12:00:00 GMT"
AN_HOUR_AGO = "Fri, 14 Mar 2025 11:00:00 GMT"


@pytest.mark.parametrize(
    ("status", "header", "policy", "attempts_made", "delay"),
    [
        # Retry-After beyond the schedule wins: the receiver's wish is honoured.
        (429, "120", STRICT, 1, 120),
        (503, "120", STRICT, 1, 120),
        (429, IN_ONE_MINUTE, STRICT, 1, 60),
        (503, IN_ONE_MINUTE, STRICT, 1, 60),
        # A shorter Retry-After does not make us retry sooner than the schedule.
        (429, "1", STRICT, 1, 5),
        (503, "1", STRICT, 3, 1800),
        (429, "600", STRICT, 3, 1800),
        (429, "0", STRICT, 1, 5),
        (429, "-30", STRICT, 1, 5),
        (429, AN_HOUR_AGO, STRICT, 1, 5),
        # Junk or absent: the schedule alone.
        (429, "soon", STRICT, 1, 5),
        (503, "", STRICT, 1, 5),
        (503, None, STRICT, 1, 5),
        # Huge: clamped to max_retry_after.
        (429, "99999999999", STRICT, 1, 6 * 3600),
        (503, IN_ONE_DAY, STRICT, 1, 6 * 3600),
        (429, "99999", RetryPolicy(jitter=0, max_retry_after=600), 1, 600),
        (429, "9" * 400, STRICT, 1, 6 * 3600),  # too large for a float: inf, clamped
        # min_retry_after raises a tiny Retry-After.
        (429, "1", RetryPolicy(jitter=0, min_retry_after=30), 1, 30),
        # Other statuses ignore Retry-After.
        (500, "120", STRICT, 1, 5),
        (301, "120", STRICT, 1, 5),
        (404, IN_ONE_MINUTE, STRICT, 1, 5),
        (None, "120", STRICT, 1, 5),
    ],
)
def test_decide_with_retry_after(
    status: int | None, header: str | None, policy: RetryPolicy, attempts_made: int, delay: float
) -> None:
    outcome = AttemptOutcome(status, error=None if status else "timeout", retry_after=header)
    decision = decide(policy, attempts_made, outcome, NOW, random.Random(7))
    assert decision.action == "retry"
    assert seconds_after(decision.next_attempt_at) == pytest.approx(delay)


@pytest.mark.parametrize("seed", range(50))
def test_retry_after_is_never_shortened_by_jitter(seed: int) -> None:
    outcome = AttemptOutcome(429, retry_after="120")
    decision = decide(RetryPolicy(), 1, outcome, NOW, random.Random(seed))
    assert seconds_after(decision.next_attempt_at) == pytest.approx(120)


@pytest.mark.parametrize("seed", range(50))
def test_retry_after_below_schedule_keeps_jittered_schedule(seed: int) -> None:
    outcome = AttemptOutcome(503, retry_after="10")
    decision = decide(RetryPolicy(), 3, outcome, NOW, random.Random(seed))
    assert 0.8 * 1800 - MICRO <= seconds_after(decision.next_attempt_at) <= 1.2 * 1800 + MICRO


def test_retry_after_with_no_attempts_left_still_fails() -> None:
    outcome = AttemptOutcome(429, retry_after="5")
    decision = decide(RetryPolicy(), 8, outcome, NOW, random.Random(0))
    assert (decision.action, decision.next_attempt_at) == ("failed", None)


# --- decide: jitter ------------------------------------------------------------------------


@pytest.mark.parametrize("attempts_made", range(1, len(DEFAULT_SCHEDULE)))
def test_jitter_stays_within_twenty_percent_over_many_seeds(attempts_made: int) -> None:
    scheduled = DEFAULT_SCHEDULE[attempts_made]
    ratios = []
    for seed in range(500):
        decision = decide(
            RetryPolicy(), attempts_made, AttemptOutcome(500), NOW, random.Random(seed)
        )
        delay = seconds_after(decision.next_attempt_at)
        assert 0.8 * scheduled - MICRO <= delay <= 1.2 * scheduled + MICRO
        ratios.append(delay / scheduled)
    # The jitter is really applied and spread over the whole band.
    assert min(ratios) < 0.82
    assert max(ratios) > 1.18
    assert len({round(r, 6) for r in ratios}) > 400


@pytest.mark.parametrize("jitter", [0, 0.1, 0.5, 1])
def test_jitter_bounds_follow_the_policy(jitter: float) -> None:
    policy = RetryPolicy(jitter=jitter)
    for seed in range(200):
        delay = seconds_after(
            decide(policy, 2, AttemptOutcome(500), NOW, random.Random(seed)).next_attempt_at
        )
        assert (1 - jitter) * 300 - MICRO <= delay <= (1 + jitter) * 300 + MICRO
        assert delay >= 0


def test_zero_delay_entries_are_never_jittered_negative() -> None:
    policy = RetryPolicy(schedule=(0, 0, 0), jitter=1)
    for seed in range(100):
        decision = decide(policy, 1, AttemptOutcome(500), NOW, random.Random(seed))
        assert decision.next_attempt_at == NOW


def test_decide_is_deterministic_for_a_seed() -> None:
    first = decide(RetryPolicy(), 2, AttemptOutcome(500), NOW, random.Random(42))
    again = decide(RetryPolicy(), 2, AttemptOutcome(500), NOW, random.Random(42))
    other = decide(RetryPolicy(), 2, AttemptOutcome(500), NOW, random.Random(43))
    assert first == again
    assert first.next_attempt_at != other.next_attempt_at


def test_decision_is_a_frozen_value() -> None:
    decision = decide(RetryPolicy(), 1, AttemptOutcome(500), NOW, random.Random(0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.action = "failed"  # type: ignore[misc]


# --- decide: exhaustion and whole deliveries -----------------------------------------------


@pytest.mark.parametrize(
    "schedule", [DEFAULT_SCHEDULE, (0,), (0, 10), (60, 1, 2, 3), (0,) * MAX_SCHEDULE_LENGTH]
)
def test_exhaustion_at_exactly_len_schedule_attempts(schedule: tuple[float, ...]) -> None:
    policy = RetryPolicy(schedule=schedule)
    n = len(schedule)
    outcome = AttemptOutcome(500)
    if n > 1:
        assert decide(policy, n - 1, outcome, NOW, random.Random(0)).action == "retry"
    for attempts_made in (n, n + 1):
        decision = decide(policy, attempts_made, outcome, NOW, random.Random(0))
        assert decision.action == "failed"
        assert decision.next_attempt_at is None
        assert decision.disable_endpoint is False
        assert decision.reason.startswith(f"exhausted after {attempts_made} attempt")
    plural = "attempt;" if n == 1 else "attempts;"
    assert plural in decide(policy, n, outcome, NOW, random.Random(0)).reason


def test_planned_schedule_failing_three_times_then_succeeding() -> None:
    policy = RetryPolicy()
    rng = random.Random(2025)
    now = first_attempt_at(policy, NOW)
    assert now == NOW
    failures = [
        AttemptOutcome(500),
        AttemptOutcome(None, error="timeout"),
        AttemptOutcome(502),
    ]
    for attempts_made, outcome in enumerate(failures, start=1):
        decision = decide(policy, attempts_made, outcome, now, rng)
        assert decision.action == "retry"
        assert decision.disable_endpoint is False
        scheduled = DEFAULT_SCHEDULE[attempts_made]
        delay = seconds_after(decision.next_attempt_at, now)
        assert 0.8 * scheduled - MICRO <= delay <= 1.2 * scheduled + MICRO
        assert decision.next_attempt_at is not None
        now = decision.next_attempt_at
    # Three retries took between 0.8x and 1.2x of 5s + 5m + 30m.
    total = seconds_after(now)
    assert 0.8 * 2105 - 3 * MICRO <= total <= 1.2 * 2105 + 3 * MICRO
    final = decide(policy, 4, AttemptOutcome(200), now, rng)
    assert (final.action, final.next_attempt_at) == ("succeeded", None)


def test_a_delivery_that_always_fails_gets_exactly_len_schedule_attempts() -> None:
    policy = RetryPolicy()
    rng = random.Random(3)
    now = NOW
    attempts = 0
    decisions = []
    while True:
        attempts += 1
        decision = decide(policy, attempts, AttemptOutcome(503), now, rng)
        decisions.append(decision.action)
        if decision.action != "retry":
            break
        assert decision.next_attempt_at is not None
        now = decision.next_attempt_at
    assert attempts == len(DEFAULT_SCHEDULE)
    assert decisions == ["retry"] * 7 + ["failed"]
    assert decision.reason.startswith("exhausted after 8 attempts")
    # 5s + 5m + 30m + 2h + 5h + 10h + 10h = 99 305 s, within +-20 %.
    assert 0.8 * 99305 <= seconds_after(now) <= 1.2 * 99305


# --- first_attempt_at ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "now", "expected"),
    [
        (RetryPolicy(), NOW, NOW),
        (RetryPolicy(jitter=1), NOW, NOW),
        (RetryPolicy(schedule=(30, 60)), NOW, NOW + timedelta(seconds=30)),
        (RetryPolicy(schedule=(1.5,), jitter=1), NOW, NOW + timedelta(seconds=1.5)),
        (RetryPolicy(), NOW.replace(tzinfo=UTC), NOW.replace(tzinfo=UTC)),
    ],
)
def test_first_attempt_at(policy: RetryPolicy, now: datetime, expected: datetime) -> None:
    assert first_attempt_at(policy, now) == expected


# --- should_disable_endpoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing_since", "now", "threshold", "disable"),
    [
        (None, NOW, timedelta(days=5), False),
        (NOW, NOW, timedelta(days=5), False),
        (NOW - timedelta(days=1), NOW, timedelta(days=5), False),
        (NOW - timedelta(days=5) + timedelta(seconds=1), NOW, timedelta(days=5), False),
        (NOW - timedelta(days=5), NOW, timedelta(days=5), True),
        (NOW - timedelta(days=6), NOW, timedelta(days=5), True),
        (NOW + timedelta(days=6), NOW, timedelta(days=5), False),  # clock skew
        (NOW - timedelta(hours=2), NOW, timedelta(hours=1), True),
        (NOW - timedelta(minutes=30), NOW, timedelta(hours=1), False),
        (NOW, NOW, timedelta(0), True),
        (None, NOW, timedelta(0), False),
        # Naive UTC meets aware: compared in UTC.
        (NOW - timedelta(days=5), NOW.replace(tzinfo=UTC), timedelta(days=5), True),
        (
            (NOW - timedelta(days=4)).replace(tzinfo=UTC),
            NOW.replace(tzinfo=timezone(timedelta(hours=9))),  # 9 hours earlier in UTC
            timedelta(days=4),
            False,
        ),
    ],
)
def test_should_disable_endpoint(
    failing_since: datetime | None, now: datetime, threshold: timedelta, disable: bool
) -> None:
    assert should_disable_endpoint(failing_since, now, threshold) is disable


def test_should_disable_endpoint_defaults_to_five_days() -> None:
    assert should_disable_endpoint(NOW - timedelta(days=5), NOW) is True
    assert should_disable_endpoint(NOW - timedelta(days=4, hours=23), NOW) is False


def test_should_disable_endpoint_rejects_negative_threshold() -> None:
    errors = errors_of(should_disable_endpoint, NOW, NOW, timedelta(seconds=-1))
    assert list(errors) == ["threshold"]


# --- properties ----------------------------------------------------------------------------

schedules = st.lists(
    st.floats(min_value=0, max_value=MAX_DELAY, allow_nan=False), min_size=2, max_size=20
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
plain_failures = st.one_of(
    st.sampled_from([None, 300, 302, 400, 404, 429, 500, 502, 503, 504]).map(
        lambda code: AttemptOutcome(code, error=None if code else "timeout")
    ),
    st.integers(min_value=300, max_value=599)
    .filter(lambda code: code not in (410, 429, 503))
    .map(lambda code: AttemptOutcome(code, retry_after="60")),  # Retry-After ignored here
)


@settings(max_examples=300)
@given(
    schedule=schedules,
    data=st.data(),
    outcome=plain_failures,
    now=moments,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_retry_is_within_jitter_band_without_retry_after(
    schedule: list[float], data: st.DataObject, outcome: AttemptOutcome, now: datetime, seed: int
) -> None:
    policy = RetryPolicy(schedule=tuple(schedule))
    attempts_made = data.draw(st.integers(min_value=1, max_value=len(schedule) - 1))
    decision = decide(policy, attempts_made, outcome, now, random.Random(seed))
    assert decision.action == "retry"
    assert decision.next_attempt_at is not None
    assert decision.next_attempt_at >= now
    scheduled = schedule[attempts_made]
    delay = seconds_after(decision.next_attempt_at, now)
    assert 0.8 * scheduled - MICRO <= delay <= 1.2 * scheduled + MICRO


@settings(max_examples=300)
@given(
    schedule=schedules,
    data=st.data(),
    status=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    header=st.one_of(st.none(), st.text(max_size=40), st.integers(-(10**6), 10**12).map(str)),
    now=moments,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_next_attempt_is_never_before_now(
    schedule: list[float],
    data: st.DataObject,
    status: int | None,
    header: str | None,
    now: datetime,
    seed: int,
) -> None:
    policy = RetryPolicy(schedule=tuple(schedule))
    attempts_made = data.draw(st.integers(min_value=1, max_value=len(schedule) + 2))
    outcome = AttemptOutcome(status, retry_after=header)
    decision = decide(policy, attempts_made, outcome, now, random.Random(seed))
    assert decision.action in ("succeeded", "retry", "failed")
    if decision.action == "retry":
        assert decision.next_attempt_at is not None
        delay = seconds_after(decision.next_attempt_at, now)
        assert delay >= 0
        # Never sooner than the jittered schedule, never later than both bounds allow.
        scheduled = schedule[attempts_made]
        assert delay >= 0.8 * scheduled - MICRO
        assert delay <= max(1.2 * scheduled, policy.max_retry_after) + MICRO
    else:
        assert decision.next_attempt_at is None
        assert decision.disable_endpoint is (status == 410)
