"""``digits.read_digits``: ASCII digits read against an upper bound, however many there are."""

from __future__ import annotations

import pytest

from hookline.digits import read_digits


@pytest.mark.parametrize(
    ("text", "high", "value"),
    [
        ("0", 10, 0),
        ("10", 10, 10),
        ("11", 10, 11),  # as many digits as the bound: read, the caller compares
        ("100", 10, None),  # more digits than the bound: above it, not read
        ("0000000010", 10, 10),  # leading zeros are not significant
        ("0" * 5000, 10, 0),
        ("0" * 5000 + "7", 10, 7),
        ("9" * 5000, 10**9, None),  # past int()'s 4,300 digits: no ValueError
    ],
)
def test_read_digits(text: str, high: int, value: int | None) -> None:
    assert read_digits(text, high) == value
