"""``queue.plan_claims``: which due deliveries one claim may take (pure, table-driven).

The planner must keep every endpoint's budget across the whole claim: ``max_in_flight``
(counting what is already being sent), ``rate_limit`` slots ``1/rate`` apart and never beyond
``RATE_HORIZON_S`` ahead, the claim's ``capacity``, and the candidates' order.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from hookline.queue import RATE_HORIZON_S, EndpointBudget, plan_claims

NOW = 1_700_000_000.0


def budget(
    max_in_flight: int = 20,
    in_flight: int = 0,
    rate: float | None = None,
    next_send_at: float | None = None,
) -> EndpointBudget:
    return EndpointBudget(max_in_flight, in_flight, rate, next_send_at)


def test_the_horizon_is_one_second():
    # The tables below are written for a one-second horizon.
    assert RATE_HORIZON_S == 1.0


# (id, candidates, budgets, capacity, expected chosen [(delivery, not_before - NOW)],
#  expected changed {endpoint: next_send_at - NOW})
CASES = [
    pytest.param(
        [(1, 10), (2, 10), (3, 10)],
        {10: budget()},
        10,
        [(1, 0.0), (2, 0.0), (3, 0.0)],
        {},
        id="no-limits-takes-all-now",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10), (4, 10)],
        {10: budget(max_in_flight=2)},
        10,
        [(1, 0.0), (2, 0.0)],
        {},
        id="max-in-flight",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10)],
        {10: budget(max_in_flight=3, in_flight=2)},
        10,
        [(1, 0.0)],
        {},
        id="max-in-flight-counts-existing-in-flight",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(max_in_flight=2, in_flight=2)},
        10,
        [],
        {},
        id="already-full",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(max_in_flight=1, in_flight=5)},
        10,
        [],
        {},
        id="over-full-after-limit-lowered",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10), (4, 10), (5, 10)],
        {10: budget(rate=2.0)},
        10,
        [(1, 0.0), (2, 0.5), (3, 1.0)],
        {10: 1.5},
        id="rate-2-per-second-three-slots-within-horizon",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10), (4, 10), (5, 10), (6, 10)],
        {10: budget(rate=4.0)},
        10,
        [(1, 0.0), (2, 0.25), (3, 0.5), (4, 0.75), (5, 1.0)],
        {10: 1.25},
        id="rate-4-per-second",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(rate=0.5)},
        10,
        [(1, 0.0)],
        {10: 2.0},
        id="slow-rate-one-slot",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10)],
        {10: budget(rate=2.0, next_send_at=NOW + 0.75)},
        10,
        [(1, 0.75)],
        {10: 1.25},
        id="rate-continues-from-stored-next-send",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(rate=2.0, next_send_at=NOW + 1.0)},
        10,
        [(1, 1.0)],
        {10: 1.5},
        id="slot-exactly-at-horizon-is-allowed",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(rate=2.0, next_send_at=NOW + 1.25)},
        10,
        [],
        {},
        id="next-slot-beyond-horizon-nothing-and-unchanged",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget(rate=2.0, next_send_at=NOW - 100.0)},
        10,
        [(1, 0.0), (2, 0.5)],
        {10: 1.0},
        id="stale-next-send-starts-now",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10), (4, 10)],
        {10: budget(rate=4.0, max_in_flight=2)},
        10,
        [(1, 0.0), (2, 0.25)],
        {10: 0.5},
        id="rate-and-max-in-flight-together",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10)],
        {10: budget(rate=2.0, max_in_flight=1, in_flight=1)},
        10,
        [],
        {},
        id="rate-limited-but-full-no-slot-consumed",
    ),
    pytest.param(
        [(1, 10), (2, 20), (3, 10), (4, 20), (5, 30)],
        {10: budget(), 20: budget(), 30: budget()},
        3,
        [(1, 0.0), (2, 0.0), (3, 0.0)],
        {},
        id="capacity",
    ),
    pytest.param(
        [(1, 10), (2, 10)],
        {10: budget()},
        0,
        [],
        {},
        id="zero-capacity",
    ),
    pytest.param(
        [(7, 10), (3, 20), (9, 10), (1, 20), (5, 30), (2, 10)],
        {10: budget(max_in_flight=2), 20: budget(rate=1.0), 30: budget()},
        10,
        [(7, 0.0), (3, 0.0), (9, 0.0), (1, 1.0), (5, 0.0)],
        {20: 2.0},
        id="candidate-order-kept-across-endpoints",
    ),
    pytest.param(
        [(1, 10), (2, 20), (3, 10), (4, 20), (5, 10), (6, 20)],
        {10: budget(rate=2.0), 20: budget(rate=1.0, next_send_at=NOW + 0.5)},
        10,
        [(1, 0.0), (2, 0.5), (3, 0.5), (5, 1.0)],
        {10: 1.5, 20: 1.5},
        id="two-rate-limited-endpoints-independent",
    ),
    pytest.param(
        [(1, 10), (2, 10), (3, 10), (4, 20)],
        {10: budget(rate=2.0), 20: budget()},
        3,
        [(1, 0.0), (2, 0.5), (3, 1.0)],
        {10: 1.5},
        id="capacity-stops-before-unrated-endpoint",
    ),
]


@pytest.mark.parametrize(("candidates", "budgets", "capacity", "chosen", "changed"), CASES)
def test_plan_claims(candidates, budgets, capacity, chosen, changed):
    before = {ep: dataclasses.replace(b) for ep, b in budgets.items()}
    got_chosen, got_changed = plan_claims(candidates, budgets, NOW, capacity)
    assert [(d, round(nb - NOW, 9)) for d, nb in got_chosen] == chosen
    assert {ep: round(at - NOW, 9) for ep, at in got_changed.items()} == changed
    assert budgets == before  # pure: the inputs are not changed


@pytest.mark.parametrize(
    # Powers of two: their slots are exact in binary floating point, so the count is too.
    "rate",
    [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0],
    ids=lambda r: f"rate={r:g}",
)
def test_rate_slots_are_spaced_and_within_horizon(rate):
    candidates = [(n, 1) for n in range(1, 5000)]
    chosen, changed = plan_claims(
        candidates, {1: budget(max_in_flight=10_000, rate=rate)}, NOW, 5000
    )
    slots = [nb for _, nb in chosen]
    assert slots[0] == NOW
    assert all(s <= NOW + RATE_HORIZON_S + 1e-9 for s in slots)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(g == pytest.approx(1.0 / rate) for g in gaps)
    # As many slots as fit in [now, now + horizon], and the next free slot is stored.
    assert len(slots) == int(RATE_HORIZON_S * rate + 1e-9) + 1
    assert changed == {1: pytest.approx(slots[-1] + 1.0 / rate)}


def test_candidates_of_a_full_endpoint_do_not_use_capacity():
    candidates = [(1, 10), (2, 10), (3, 10), (4, 20), (5, 20)]
    budgets = {10: budget(max_in_flight=1, in_flight=1), 20: budget()}
    chosen, _ = plan_claims(candidates, budgets, NOW, 2)
    assert [d for d, _ in chosen] == [4, 5]


def test_endpoint_without_rate_limit_never_reported_changed():
    chosen, changed = plan_claims([(1, 10), (2, 10)], {10: budget(next_send_at=NOW + 50)}, NOW, 5)
    assert [nb for _, nb in chosen] == [NOW, NOW]  # next_send_at only matters with a rate
    assert changed == {}
