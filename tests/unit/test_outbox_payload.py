"""Unit tests for ``hookline.outbox.build_payload`` (pure: no database involved)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from hookline.errors import InvalidEvent
from hookline.outbox import EVENT_TYPES, MAX_PAYLOAD_BYTES, build_payload

WHEN = dt.datetime(2024, 5, 17, 12, 34, 56, 789_123)
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_shape_for_every_known_type(event_type: str) -> None:
    payload = build_payload(event_type, {"order_id": "A-1", "n": 2}, WHEN)
    body = json.loads(payload)
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == event_type
    assert ISO_Z.fullmatch(body["timestamp"])
    assert body["data"] == {"order_id": "A-1", "n": 2}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (dt.datetime(2024, 5, 17, 12, 34, 56, 789_123), "2024-05-17T12:34:56.789Z"),
        (dt.datetime(2024, 1, 1), "2024-01-01T00:00:00.000Z"),
        (
            dt.datetime(2024, 1, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-01T00:00:00.000Z",
        ),
        (dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC), "2024-01-01T00:00:00.000Z"),
    ],
)
def test_timestamp_is_iso_utc_with_z(timestamp: dt.datetime, expected: str) -> None:
    assert json.loads(build_payload("ping", {}, timestamp))["timestamp"] == expected


def test_compact_and_utf8() -> None:
    payload = build_payload("ping", {"name": "café 한국"}, dt.datetime(2024, 1, 1))
    assert payload == (
        '{"type":"ping","timestamp":"2024-01-01T00:00:00.000Z","data":{"name":"café 한국"}}'
    )


@pytest.mark.parametrize(
    "event_type", ["", "order", "order.deleted", "ORDER.CREATED", "order.created ", "ping.x"]
)
def test_unknown_type(event_type: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        build_payload(event_type, {}, WHEN)
    assert info.value.errors == {"type": "not a known event type"}
    assert info.value.status == 422


@pytest.mark.parametrize("data", [None, [], [1, 2], "text", 3, 1.5, True, ("a", 1)])
def test_data_must_be_a_dict(data: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        build_payload("ping", data, WHEN)
    assert info.value.errors == {"data": "must be an object"}


@pytest.mark.parametrize(
    ("data", "where", "reason"),
    [
        ({"x": object()}, "data.x", "object is not JSON"),
        ({"x": float("nan")}, "data.x", "must be a finite number"),
        ({"x": float("inf")}, "data.x", "must be a finite number"),
        ({"x": -float("inf")}, "data.x", "must be a finite number"),
        ({"x": (1, 2)}, "data.x", "tuple is not JSON"),
        ({"x": {1, 2}}, "data.x", "set is not JSON"),
        ({"x": b"bytes"}, "data.x", "bytes is not JSON"),
        ({"x": dt.datetime(2024, 1, 1)}, "data.x", "datetime is not JSON"),
        ({1: "int key"}, "data", "keys must be strings"),
        ({"x": {None: 1}}, "data.x", "keys must be strings"),
        ({"x": [1, {"y": [float("nan")]}]}, "data.x[1].y[0]", "must be a finite number"),
    ],
)
def test_non_json_values_are_refused(data: dict[Any, Any], where: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        build_payload("ping", data, WHEN)
    assert info.value.errors == {where: reason}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"a": None, "b": True, "c": False, "d": 0, "e": -1.5, "f": "", "g": [], "h": {}},
        {"nested": {"list": [1, "two", None, {"three": 3.0}]}},
        {"big": 10**30},
    ],
)
def test_json_values_round_trip(data: dict[str, Any]) -> None:
    assert json.loads(build_payload("order.updated", data, WHEN))["data"] == data


def test_size_limit() -> None:
    empty = len(build_payload("ping", {"x": ""}, WHEN).encode("utf-8"))
    exactly = {"x": "a" * (MAX_PAYLOAD_BYTES - empty)}
    assert len(build_payload("ping", exactly, WHEN).encode("utf-8")) == MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidEvent) as info:
        build_payload("ping", {"x": "a" * (MAX_PAYLOAD_BYTES - empty + 1)}, WHEN)
    assert info.value.errors == {"data": "too large"}


@pytest.mark.parametrize(
    ("text", "max_bytes", "ok"),
    [
        ("é" * 10, 100, True),  # 20 bytes of UTF-8 in the data
        ("é" * 40, 100, False),  # 40 characters but 80 bytes: counted in bytes
    ],
)
def test_size_is_counted_in_utf8_bytes(text: str, max_bytes: int, ok: bool) -> None:
    overhead = len(build_payload("ping", {"x": ""}, WHEN).encode("utf-8"))
    limit = overhead + max_bytes // 2
    if ok:
        build_payload("ping", {"x": text}, WHEN, max_bytes=limit)
    else:
        with pytest.raises(InvalidEvent):
            build_payload("ping", {"x": text}, WHEN, max_bytes=limit)


def test_deeply_nested_data_is_refused_not_crashing() -> None:
    # Guarantee 4 (never a crash): json.dumps recurses, so very deep data must be an
    # InvalidEvent rather than a RecursionError escaping build_payload/publish.
    deep: list[Any] = []
    cursor = deep
    for _ in range(100_000):
        child: list[Any] = []
        cursor.append(child)
        cursor = child
    with pytest.raises(InvalidEvent):
        build_payload("ping", {"deep": deep}, WHEN)


@pytest.mark.timeout(5)
def test_circular_data_is_refused_not_hanging() -> None:
    # json.dumps itself detects cycles; _check_json walks them forever.
    data: dict[str, Any] = {}
    data["self"] = data
    with pytest.raises(InvalidEvent):
        build_payload("ping", data, WHEN)
