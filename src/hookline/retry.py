"""The delivery retry policy: when to try a webhook delivery again, and when to give up.

Pure functions, no I/O, no global state (DESIGN §5, §7): the caller passes ``now`` and a
``random.Random`` for jitter, and gets a ``RetryDecision`` value back to store.

Semantics
---------
* ``schedule[i]`` is the delay before attempt ``i + 1``; ``schedule[0]`` (``0`` by default) is
  the delay of the first attempt, every later entry is measured from the moment the previous
  attempt failed (the ``now`` passed to ``decide``). ``len(schedule)`` is the number of attempts.
* Jitter spreads retries by up to ``+-jitter`` of their delay, never below zero. It is not applied
  to the first attempt (``first_attempt_at``), which is due exactly ``schedule[0]`` after ``now``.
* ``2xx`` succeeds. ``410 Gone`` fails the delivery at once and asks for the endpoint to be
  disabled. Everything else fails the attempt: ``1xx``, ``3xx`` (redirects are not followed),
  ``4xx``, ``5xx`` and no response at all (timeout, refused connection: ``status_code=None``).
* ``Retry-After`` is honoured only on ``429`` and ``503``. It is clamped to
  ``[min_retry_after, max_retry_after]`` and the retry waits ``max(jittered schedule delay,
  clamped Retry-After)``: never sooner than the receiver asked (up to the clamp), never sooner
  than our own schedule. It does not add attempts: with none left the delivery fails anyway.
* Times are whatever ``now`` is: hookline passes naive UTC datetimes (``timeutil.utcnow``); a
  naive datetime is read as UTC wherever it meets an aware one (an HTTP-date).
"""

from __future__ import annotations

import email.utils
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from hookline.errors import ValidationFailed

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_DELAY",
    "MAX_SCHEDULE_LENGTH",
    "AttemptOutcome",
    "RetryDecision",
    "RetryPolicy",
    "apply_jitter",
    "classify",
    "decide",
    "first_attempt_at",
    "format_schedule",
    "parse_retry_after",
    "parse_schedule",
    "should_disable_endpoint",
]

#: Seconds before attempt 1, 2, ... 8: now, 5s, 5m, 30m, 2h, 5h, 10h, 10h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
#: A schedule has at most this many attempts.
MAX_SCHEDULE_LENGTH = 50
#: The longest delay a schedule entry or ``max_retry_after`` may name: 30 days, in seconds.
MAX_DELAY = 30 * 86400.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)", re.ASCII | re.IGNORECASE)
_DELTA_SECONDS = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _schedule_problem(schedule: object) -> str | None:
    """Why ``schedule`` is not a valid schedule, or ``None`` when it is."""
    if isinstance(schedule, str | bytes) or not isinstance(schedule, Sequence):
        return "must be a sequence of delays in seconds"
    if not schedule:
        return "must name at least one attempt"
    if len(schedule) > MAX_SCHEDULE_LENGTH:
        return f"at most {MAX_SCHEDULE_LENGTH} attempts, got {len(schedule)}"
    for index, delay in enumerate(schedule):
        if not _is_number(delay) or not math.isfinite(delay):
            return f"entry {index + 1} is not a finite number of seconds: {delay!r}"
        if delay < 0:
            return f"entry {index + 1} is negative: {delay!r}"
        if delay > MAX_DELAY:
            return f"entry {index + 1} is longer than 30 days: {delay!r}"
    return None


def _seconds_problem(value: object, *, upper: float = MAX_DELAY) -> str | None:
    if not _is_number(value) or not math.isfinite(value):
        return f"must be a finite number of seconds, got {value!r}"
    if not 0 <= value <= upper:
        return f"must be between 0 and {upper:g} seconds, got {value!r}"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a delivery; validated on construction.

    Raises ``ValidationFailed`` naming ``retry_schedule``, ``retry_jitter``, ``min_retry_after``
    or ``max_retry_after`` when a value is out of range.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    max_retry_after: float = 3600 * 6
    min_retry_after: float = 0

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        problem = _schedule_problem(self.schedule)
        if problem:
            errors["retry_schedule"] = problem
        else:
            object.__setattr__(self, "schedule", tuple(self.schedule))
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            errors["retry_jitter"] = f"must be a fraction between 0 and 1, got {self.jitter!r}"
        for name in ("min_retry_after", "max_retry_after"):
            problem = _seconds_problem(getattr(self, name))
            if problem:
                errors[name] = problem
        if (
            "min_retry_after" not in errors
            and "max_retry_after" not in errors
            and self.min_retry_after > self.max_retry_after
        ):
            errors["min_retry_after"] = "must not exceed max_retry_after"
        if errors:
            raise ValidationFailed("invalid retry policy", errors=errors)

    @classmethod
    def from_config(
        cls,
        retry_schedule: str | None = None,
        *,
        jitter: float = 0.2,
        max_retry_after: float = 3600 * 6,
        min_retry_after: float = 0,
    ) -> RetryPolicy:
        """A policy from settings text: ``retry_schedule`` as ``parse_schedule`` reads it."""
        schedule = DEFAULT_SCHEDULE if retry_schedule is None else parse_schedule(retry_schedule)
        return cls(schedule, jitter, max_retry_after, min_retry_after)

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets before it fails: ``len(schedule)``."""
        return len(self.schedule)

    def clamp_retry_after(self, seconds: float) -> float:
        """``seconds`` limited to ``[min_retry_after, max_retry_after]``."""
        return min(max(seconds, self.min_retry_after), self.max_retry_after)


def parse_schedule(text: str) -> tuple[float, ...]:
    """Read ``"0,5s,5m,30m,2h,5h,10h,10h"`` into seconds.

    Entries are comma-separated numbers with an optional unit ``s``, ``m``, ``h`` or ``d`` (a bare
    number is seconds); whitespace around entries and units is ignored. Anything else, an empty
    entry, or a schedule ``RetryPolicy`` would refuse raises ``ValidationFailed`` with field
    ``retry_schedule``.
    """
    if not isinstance(text, str):
        raise ValidationFailed(
            "invalid retry schedule", errors={"retry_schedule": "must be text like 0,5s,5m,2h"}
        )
    delays: list[float] = []
    for item in text.split(","):
        match = _DELAY.fullmatch(item.strip())
        if match is None:
            shown = item.strip()[:40]
            raise ValidationFailed(
                "invalid retry schedule",
                errors={"retry_schedule": f"{shown!r} is not a delay like 30s, 5m, 2h or 1d"},
            )
        number, unit = match.groups()
        delays.append(float(number) * _UNITS[unit.lower() or "s"])
    problem = _schedule_problem(delays)
    if problem:
        raise ValidationFailed("invalid retry schedule", errors={"retry_schedule": problem})
    return tuple(delays)


def _format_delay(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds) % size == 0:
            return f"{int(seconds // size)}{unit}"
    # A fraction of a second: the shortest text that reads back as the same float.
    return format(Decimal(repr(float(seconds))), "f") + "s"


def format_schedule(schedule: Sequence[float]) -> str:
    """The compact text of ``schedule`` (``"0,5s,5m,30m,2h,5h,10h,10h"``).

    Each entry takes the largest unit that divides it exactly; ``parse_schedule`` reads the text
    back to the same values. An invalid schedule raises ``ValidationFailed`` (``retry_schedule``).
    """
    problem = _schedule_problem(schedule)
    if problem:
        raise ValidationFailed("invalid retry schedule", errors={"retry_schedule": problem})
    return ",".join(_format_delay(delay) for delay in schedule)


def _as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or ``None`` when absent or junk.

    Accepts delta-seconds (``"120"``; a decimal or negative number is tolerated) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), measured from ``now``. A negative delay or a date in
    the past gives ``0``. The result is not clamped: that is the policy's job.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return max(float(text), 0.0)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    return max((_as_utc(when) - _as_utc(now)).total_seconds(), 0.0)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one delivery attempt got back.

    ``status_code`` is the HTTP status, or ``None`` when no response came (``error`` then says
    why: timeout, refused connection, ...). ``retry_after`` is the raw ``Retry-After`` header.
    """

    status_code: int | None
    error: str | None = None
    retry_after: str | None = None

    def __post_init__(self) -> None:
        code = self.status_code
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise ValidationFailed(
                "invalid attempt outcome", errors={"status_code": f"not an integer: {code!r}"}
            )
        if code is not None and not 100 <= code <= 599:
            raise ValidationFailed(
                "invalid attempt outcome", errors={"status_code": f"not an HTTP status: {code}"}
            )
        for name in ("error", "retry_after"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValidationFailed("invalid attempt outcome", errors={name: "must be text"})


def classify(outcome: AttemptOutcome) -> Literal["success", "gone", "failure"]:
    """``"success"`` for any 2xx, ``"gone"`` for 410, ``"failure"`` for everything else.

    3xx is a failure because redirects are not followed; no response (``status_code=None``) is
    a failure too.
    """
    code = outcome.status_code
    if code is not None and 200 <= code <= 299:
        return "success"
    if code == 410:
        return "gone"
    return "failure"


@dataclass(frozen=True)
class RetryDecision:
    """What to do with a delivery after an attempt; the worker stores it as is."""

    action: Literal["succeeded", "retry", "failed"]
    next_attempt_at: datetime | None
    disable_endpoint: bool
    reason: str


def apply_jitter(delay: float, jitter: float, fraction: float) -> float:
    """``delay`` moved by ``fraction * jitter`` of itself, ``fraction`` in ``[-1, 1]``.

    Deterministic: ``decide`` draws ``fraction`` from its ``random.Random``. Never negative.
    """
    if not -1 <= fraction <= 1:
        raise ValidationFailed(
            "invalid jitter", errors={"fraction": f"must be in [-1, 1], got {fraction!r}"}
        )
    return max(delay * (1 + jitter * fraction), 0.0)


def _describe(outcome: AttemptOutcome) -> str:
    code = outcome.status_code
    if code is None:
        return f"no response ({outcome.error})" if outcome.error else "no response"
    if 300 <= code <= 399:
        return f"HTTP {code} (redirects are not followed)"
    return f"HTTP {code}"


def decide(
    policy: RetryPolicy,
    attempts_made: int,
    outcome: AttemptOutcome,
    now: datetime,
    rng: random.Random,
) -> RetryDecision:
    """The decision after attempt number ``attempts_made`` (1-based) ended with ``outcome``.

    * 2xx: ``succeeded``.
    * 410: ``failed`` with ``disable_endpoint`` (whatever the attempts left).
    * other failure, ``attempts_made < len(schedule)``: ``retry`` at ``now`` plus
      ``schedule[attempts_made]`` jittered; on 429/503 with a readable ``Retry-After``, plus
      ``max(that, clamped Retry-After)``.
    * other failure with no attempts left: ``failed``, reason ``"exhausted after N attempts"``.

    ``attempts_made`` below 1 raises ``ValidationFailed``.
    """
    if not isinstance(attempts_made, int) or isinstance(attempts_made, bool) or attempts_made < 1:
        raise ValidationFailed(
            "invalid attempt count",
            errors={"attempts_made": f"must be an integer >= 1, got {attempts_made!r}"},
        )
    kind = classify(outcome)
    if kind == "success":
        return RetryDecision("succeeded", None, False, _describe(outcome))
    if kind == "gone":
        return RetryDecision(
            "failed", None, True, "410 Gone: the endpoint asked for no more deliveries"
        )
    if attempts_made >= policy.max_attempts:
        return RetryDecision(
            "failed",
            None,
            False,
            f"exhausted after {attempts_made} attempt{'s' if attempts_made != 1 else ''}; "
            f"last: {_describe(outcome)}",
        )
    delay = apply_jitter(policy.schedule[attempts_made], policy.jitter, rng.uniform(-1, 1))
    note = ""
    if outcome.status_code in _RETRY_AFTER_STATUSES:
        asked = parse_retry_after(outcome.retry_after, now)
        if asked is not None:
            clamped = policy.clamp_retry_after(asked)
            note = f", Retry-After {clamped:g}s" + (" (clamped)" if clamped != asked else "")
            delay = max(delay, clamped)
    reason = (
        f"{_describe(outcome)}; attempt {attempts_made + 1} of {policy.max_attempts} "
        f"in {delay:.3f}s{note}"
    )
    return RetryDecision("retry", now + timedelta(seconds=delay), False, reason)


def first_attempt_at(policy: RetryPolicy, now: datetime) -> datetime:
    """When a new delivery's first attempt is due: ``now + schedule[0]``, without jitter."""
    return now + timedelta(seconds=policy.schedule[0])


def should_disable_endpoint(
    failing_since: datetime | None,
    now: datetime,
    threshold: timedelta = timedelta(days=5),
) -> bool:
    """Whether an endpoint failing without a success since ``failing_since`` should be disabled.

    ``None`` (not failing) is never disabled; otherwise it is once ``now - failing_since``
    reaches ``threshold`` (inclusive). A negative ``threshold`` raises ``ValidationFailed``.
    """
    if threshold < timedelta(0):
        raise ValidationFailed(
            "invalid threshold", errors={"threshold": f"must not be negative, got {threshold}"}
        )
    if failing_since is None:
        return False
    return _as_utc(now) - _as_utc(failing_since) >= threshold
