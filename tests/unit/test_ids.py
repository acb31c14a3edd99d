"""Unit tests for ``hookline.ids``: prefixed ULIDs, their shape, uniqueness and order."""

from __future__ import annotations

import re

import pytest

from hookline import ids
from hookline.ids import is_id, new_id

ULID = re.compile(r"[0-9ABCDEFGHJKMNPQRSTVWXYZ]{26}")


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset the module's monotonic state so fixed ``now_ms`` values are honoured."""
    monkeypatch.setattr(ids, "_last_ms", -1)
    monkeypatch.setattr(ids, "_last_random", 0)


@pytest.mark.parametrize("prefix", ["ev", "evt", "ord", "endpoint", "abcdefgh"])
def test_new_id_shape(prefix: str) -> None:
    value = new_id(prefix)
    head, _, body = value.partition("_")
    assert head == prefix
    assert ULID.fullmatch(body)
    assert is_id(value, prefix)


@pytest.mark.parametrize("prefix", ["", "e", "abcdefghi", "Evt", "ev1", "ev_t", "évt", "ev t"])
def test_new_id_rejects_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        new_id(prefix)


def test_new_ids_are_unique() -> None:
    made = [new_id("evt") for _ in range(20_000)]
    assert len(set(made)) == len(made)


def test_new_ids_sort_in_creation_order() -> None:
    made = [new_id("evt") for _ in range(5_000)]
    assert made == sorted(made)


def test_same_millisecond_is_monotonic(fresh_state: None) -> None:
    made = [ids._next_ulid(now_ms=1_700_000_000_000) for _ in range(1_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    # The time part is the same millisecond for all of them.
    assert {value[:10] for value in made} == {made[0][:10]}


def test_same_millisecond_counts_up_by_one(fresh_state: None) -> None:
    first = ids._next_ulid(now_ms=1_000)
    second = ids._next_ulid(now_ms=1_000)

    def decode(text: str) -> int:
        value = 0
        for char in text:
            value = value * 32 + ids._ALPHABET.index(char)
        return value

    assert decode(second[10:]) == decode(first[10:]) + 1
    assert first[:10] == second[:10] == "00000000Z8"


def test_backwards_clock_keeps_order(fresh_state: None) -> None:
    later = ids._next_ulid(now_ms=2_000_000)
    earlier = ids._next_ulid(now_ms=1_000_000)
    assert earlier > later


@pytest.mark.parametrize(
    ("now_ms", "time_part"),
    [(0, "0000000000"), (1, "0000000001"), (32, "0000000010"), ((1 << 48) - 1, "7ZZZZZZZZZ")],
)
def test_time_part_encoding(fresh_state: None, now_ms: int, time_part: str) -> None:
    assert ids._next_ulid(now_ms=now_ms)[:10] == time_part


def test_later_millisecond_sorts_after(fresh_state: None) -> None:
    a = ids._next_ulid(now_ms=1_000)
    b = ids._next_ulid(now_ms=1_001)
    assert a < b


@pytest.mark.parametrize(
    ("value", "prefix", "expected"),
    [
        ("evt_01JD3ZK4Q8X6W2Y9V7T5R3P1N0", "evt", True),
        ("evt_01JD3ZK4Q8X6W2Y9V7T5R3P1N", "evt", False),  # 25 characters
        ("evt_01JD3ZK4Q8X6W2Y9V7T5R3P1N00", "evt", False),  # 27 characters
        ("evt_01jd3zk4q8x6w2y9v7t5r3p1n0", "evt", False),  # lower case
        ("evt_01JD3ZK4Q8X6W2Y9V7T5R3P1NU", "evt", False),  # U is not Crockford
        ("evt_01JD3ZK4Q8X6W2Y9V7T5R3P1NI", "evt", False),  # I is not Crockford
        ("ord_01JD3ZK4Q8X6W2Y9V7T5R3P1N0", "evt", False),  # other prefix
        ("evt01JD3ZK4Q8X6W2Y9V7T5R3P1N00", "evt", False),  # no underscore
        ("", "evt", False),
        ("evt_", "evt", False),
    ],
)
def test_is_id(value: str, prefix: str, expected: bool) -> None:
    assert is_id(value, prefix) is expected
