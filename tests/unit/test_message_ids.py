"""The stored form of an inbound message id (``inbox.storable_message_id``)."""

from __future__ import annotations

import hashlib

import pytest

from hookline.inbox import MAX_MESSAGE_ID, storable_message_id

LONG = "m" * 300


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("msg_1", "msg_1"),
        ("x" * MAX_MESSAGE_ID, "x" * MAX_MESSAGE_ID),
        ("x" * 256, "x" * 190 + "~" + _digest("x" * 256)),
        (LONG, "m" * 190 + "~" + _digest(LONG)),
        ("é" * 300, "é" * 190 + "~" + _digest("é" * 300)),
    ],
    ids=["short", "exactly-the-column", "one-over", "long", "non-ascii"],
)
def test_ids_that_fit_are_kept_and_longer_ones_become_prefix_and_digest(value, stored):
    assert storable_message_id(value) == stored
    assert len(storable_message_id(value)) <= MAX_MESSAGE_ID


@pytest.mark.parametrize(
    ("one", "other"),
    [(LONG + "a", LONG + "b"), ("x" * 256, "x" * 255 + "y"), ("x" * 256, "x" * 257)],
)
def test_long_ids_that_differ_anywhere_are_stored_apart(one, other):
    assert storable_message_id(one) != storable_message_id(other)


def test_an_id_with_a_lone_surrogate_still_gets_a_key():
    value = "s" * 250 + "\udcff" * 10
    assert len(storable_message_id(value)) == MAX_MESSAGE_ID
