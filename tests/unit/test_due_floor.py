"""``duefloor.DueFloor``: where a worker's PostgreSQL claims start reading a due index (pure,
table-driven).

The first claim and one every ``DUE_FULL_READ_EVERY_S`` read from the start (``-inf``); the
others start ``DUE_FLOOR_MARGIN_S`` below the earliest pending delivery the last claim saw.
"""

from __future__ import annotations

import math

import pytest

from hookline.duefloor import DUE_FLOOR_MARGIN_S, DUE_FULL_READ_EVERY_S, DueFloor

EVERY = DUE_FULL_READ_EVERY_S
MARGIN = DUE_FLOOR_MARGIN_S
FULL = -math.inf


def test_the_margin_and_the_full_reads_are_a_few_seconds():
    # The tables below are written for these; a margin wider than the period between full
    # reads would only cost reads, one narrower would delay more deliveries.
    assert MARGIN == 5.0 and EVERY == 5.0


# (id, steps, expected start of each ``start`` step). A step is ("start", clock) or
# ("seen", the claim's next_floor).
CASES = [
    pytest.param([("start", 0.0)], [FULL], id="the first claim reads from the start"),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", 1.0)],
        [FULL, 1000.0 - MARGIN],
        id="then a margin below the earliest pending delivery it saw",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", 1.0), ("seen", 1050.0), ("start", 2.0)],
        [FULL, 1000.0 - MARGIN, 1050.0 - MARGIN],
        id="each claim moves it to what it saw",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", 1.0), ("seen", 990.0), ("start", 2.0)],
        [FULL, 1000.0 - MARGIN, 990.0 - MARGIN],
        id="down as well as up: a delivery seen below it lowers it",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("seen", None), ("start", 1.0)],
        [FULL, 1000.0 - MARGIN],
        id="a claim that did not read the due index leaves it",
    ),
    pytest.param(
        [("start", 0.0), ("start", 1.0)],
        [FULL, FULL],
        id="nothing seen yet: still from the start",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", EVERY - 0.001)],
        [FULL, 1000.0 - MARGIN],
        id="within the period: from the floor",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", EVERY)],
        [FULL, FULL],
        id="a period after the last full read: from the start again",
    ),
    pytest.param(
        [("start", 0.0), ("seen", 1000.0), ("start", EVERY), ("start", EVERY + 1.0)],
        [FULL, FULL, 1000.0 - MARGIN],
        id="the period counts from that full read",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), CASES)
def test_where_each_claim_starts(steps, expected):
    clock = [0.0]
    floor = DueFloor(clock=lambda: clock[0])
    starts = []
    for step, value in steps:
        if step == "start":
            clock[0] = value
            starts.append(floor.start())
        else:
            floor.seen(value)
    assert starts == expected
