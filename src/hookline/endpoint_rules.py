"""Pure validation of endpoint settings (URL, event filter, headers, per-endpoint policy).

Takes the decoded JSON of an API call or the options of a CLI command and returns an
``EndpointChanges`` value, or raises ``ValidationFailed`` naming every bad field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hookline.errors import ValidationFailed
from hookline.netguard import BlockedTarget, NetworkPolicy, check_url
from hookline.outbox import EVENT_TYPES
from hookline.retry import parse_schedule

__all__ = ["RESERVED_HEADERS", "EndpointChanges", "parse_endpoint"]

#: Headers an endpoint may not set: hookline writes them, or HTTP owns them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
        "user-agent",
        "expect",
        "te",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_MAX_HEADERS = 20
# RFC 9110 field values: visible characters, spaces and tabs; no other control character.
_HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Free text (a description) may break lines; NUL and the other controls are refused (PostgreSQL
# cannot store NUL in text at all).
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FIELDS = {
    "url",
    "description",
    "event_types",
    "headers",
    "retry_schedule",
    "timeout_s",
    "connect_timeout_s",
    "max_in_flight",
    "rate_limit",
    "fifo",
    "ed25519",
    "enabled",
}


@dataclass(frozen=True)
class EndpointChanges:
    """Validated endpoint fields; ``None`` is "not given" (``clear_rate`` removes a rate limit)."""

    url: str | None = None
    description: str | None = None
    event_types: tuple[str, ...] | None = None
    headers: dict[str, str] | None = None
    retry_schedule: tuple[float, ...] | None = None
    timeout_s: float | None = None
    connect_timeout_s: float | None = None
    max_in_flight: int | None = None
    rate_limit: float | None = None
    clear_rate: bool = False
    fifo: bool | None = None
    ed25519: bool | None = None
    enabled: bool | None = None

    def given(self) -> dict[str, Any]:
        """The fields that were given."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "clear_rate" and getattr(self, f.name) is not None
        }


def _number(raw: Any, name: str, low: float, high: float, errors: dict[str, str]) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        errors[name] = "must be a number"
        return None
    try:
        value = float(raw)
    except ValueError:
        errors[name] = "must be a number"
        return None
    except OverflowError:  # an integer beyond any float (JSON allows 4300 digits)
        errors[name] = f"must be between {low:g} and {high:g}"
        return None
    if not math.isfinite(value) or not low <= value <= high:
        errors[name] = f"must be between {low:g} and {high:g}"
        return None
    return value


def _flag(raw: Any, name: str, errors: dict[str, str]) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    errors[name] = "must be true or false"
    return None


def _event_types(raw: Any, errors: dict[str, str]) -> tuple[str, ...] | None:
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        errors["event_types"] = "must be a list of event types"
        return None
    unknown = sorted(set(raw) - EVENT_TYPES)
    if unknown:
        errors["event_types"] = (
            f"unknown: {', '.join(unknown)} (known: {', '.join(sorted(EVENT_TYPES))})"
        )
        return None
    return tuple(sorted(set(raw)))


def _headers(raw: Any, errors: dict[str, str]) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        errors["headers"] = "must be an object of header names to values"
        return None
    if len(raw) > _MAX_HEADERS:
        errors["headers"] = f"at most {_MAX_HEADERS} headers"
        return None
    result: dict[str, str] = {}
    for name, value in raw.items():
        if not _HEADER_NAME.fullmatch(name):
            errors["headers"] = f"{name!r} is not a valid header name"
        elif name.lower() in RESERVED_HEADERS:
            errors["headers"] = f"{name} is set by hookline and cannot be overridden"
        elif not isinstance(value, str) or len(value) > 1024 or _HEADER_VALUE_CONTROL.search(value):
            errors["headers"] = f"the value of {name} must be a single-line string (<= 1024)"
        else:
            result[name] = value
            continue
        return None
    return result


def parse_endpoint(
    data: Mapping[str, Any], network: NetworkPolicy, *, creating: bool
) -> EndpointChanges:
    """Validate endpoint fields; ``creating`` requires ``url`` and refuses ``enabled``."""
    errors: dict[str, str] = {name: "unknown field" for name in data if name not in _FIELDS}
    values: dict[str, Any] = {}
    if "url" in data:
        url = data["url"]
        if not isinstance(url, str) or not url.strip() or len(url) > 2048:
            errors["url"] = "must be an http(s) URL of at most 2048 characters"
        else:
            try:
                check_url(url.strip(), network)
                values["url"] = url.strip()
            except BlockedTarget as blocked:
                errors["url"] = blocked.message
    elif creating:
        errors["url"] = "is required"
    if data.get("description") is not None:
        text = data["description"]
        if not isinstance(text, str) or len(text) > 512:
            errors["description"] = "must be a string of at most 512 characters"
        elif _TEXT_CONTROL.search(text):
            errors["description"] = "must not contain control characters other than line breaks"
        else:
            values["description"] = text.strip()
    if data.get("event_types") is not None:
        values["event_types"] = _event_types(data["event_types"], errors)
    if data.get("headers") is not None:
        values["headers"] = _headers(data["headers"], errors)
    if data.get("retry_schedule") is not None:
        raw = data["retry_schedule"]
        text = ",".join(str(x) for x in raw) if isinstance(raw, list) else raw
        if not isinstance(text, str):
            errors["retry_schedule"] = "must be a list of delays or text such as 0,5s,5m,1h"
        else:
            try:
                values["retry_schedule"] = parse_schedule(text)
            except ValidationFailed as bad:
                errors["retry_schedule"] = bad.errors.get("retry_schedule", bad.message)
    for name, low, high in (("timeout_s", 0.1, 120.0), ("connect_timeout_s", 0.1, 60.0)):
        if data.get(name) is not None:
            values[name] = _number(data[name], name, low, high, errors)
    if data.get("max_in_flight") is not None:
        number = _number(data["max_in_flight"], "max_in_flight", 1, 1000, errors)
        if number is not None and number != int(number):
            errors["max_in_flight"] = "must be a whole number"
        elif number is not None:
            values["max_in_flight"] = int(number)
    if "rate_limit" in data:
        if data["rate_limit"] is None:
            values["clear_rate"] = True
        else:
            values["rate_limit"] = _number(data["rate_limit"], "rate_limit", 0.01, 100_000, errors)
    for name in ("fifo", "ed25519", "enabled"):
        if data.get(name) is not None:
            values[name] = _flag(data[name], name, errors)
    if creating and "enabled" in data:
        errors["enabled"] = "a new endpoint starts enabled; disable it afterwards"
    if errors:
        raise ValidationFailed("the endpoint is invalid", errors=errors)
    changes = EndpointChanges(**values)
    if not creating and not changes.given() and not changes.clear_rate:
        raise ValidationFailed("nothing to change", errors={"body": "give at least one field"})
    return changes
