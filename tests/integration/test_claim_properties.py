"""Properties of ``queue.claim`` over generated queues, on SQLite and PostgreSQL.

Each example is a small queue: a few endpoints with their own ``max_in_flight``, rate limit,
FIFO switch and enabled state, deliveries due or not, some already leased, and a capacity. The
claim reads a window of candidates, the due index only as far as its reach, and then endpoint by
endpoint; whichever way it reads, what it takes must keep every rule (room, rate slots, FIFO
heads, time order within an endpoint), and it must take something whenever anything can be
taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookline import endpoints, outbox, queue, secretbox
from hookline.endpoint_rules import parse_endpoint
from hookline.fanout import is_postgres
from hookline.netguard import NetworkPolicy
from hookline.timeutil import to_epoch, utcnow

NETWORK = NetworkPolicy.from_settings("127.0.0.0/8")
NOW_DT = utcnow().replace(microsecond=0)
NOW = to_epoch(NOW_DT)


@dataclass(frozen=True)
class EndpointSpec:
    max_in_flight: int
    rate_limit: float | None
    next_send_in: float | None  # the endpoint's next rate slot, seconds from now
    fifo: bool
    enabled: bool
    early: bool  # its deliveries are due before every other endpoint's (a backlog in front)


@dataclass(frozen=True)
class DeliverySpec:
    endpoint: int  # index into the endpoints
    due_in: float  # seconds from now; due when <= 0
    leased: bool


endpoint_specs = st.builds(
    EndpointSpec,
    max_in_flight=st.integers(1, 3),
    rate_limit=st.one_of(st.none(), st.sampled_from([0.5, 2.0, 10.0])),
    next_send_in=st.one_of(st.none(), st.sampled_from([-5.0, 0.5, 3.0])),
    fifo=st.booleans(),
    enabled=st.booleans() | st.just(True),
    early=st.booleans(),
)


@st.composite
def queues(draw) -> tuple[list[EndpointSpec], list[DeliverySpec], int]:
    specs = draw(st.lists(endpoint_specs, min_size=1, max_size=4))
    rows = draw(
        st.lists(
            st.builds(
                DeliverySpec,
                endpoint=st.integers(0, len(specs) - 1),
                due_in=st.integers(-300, 60).map(float),
                leased=st.booleans(),
            ),
            max_size=50,
            unique_by=lambda d: d.due_in,  # distinct times: the order within an endpoint is defined
        )
    )
    return specs, rows, draw(st.integers(1, 4))


def _reset(db) -> None:
    for table in ("hookline_lease", "hookline_delivery", "hookline_event", "hookline_endpoint"):
        db.executesql(f"DELETE FROM {table}")
    db.commit()


def _build(db, box, specs: list[EndpointSpec], rows: list[DeliverySpec]) -> tuple[list, dict]:
    """The queue in the database; returns the endpoint row ids and, per delivery row id, its
    spec (leases are only made where the endpoint allows them: within ``max_in_flight``, and for
    a FIFO endpoint only on its oldest delivery)."""
    ids = []
    for spec in specs:
        view, _ = endpoints.create_endpoint(
            db, box, parse_endpoint({"url": "http://127.0.0.1:9/p"}, NETWORK, creating=True)
        )
        row = endpoints.find_endpoint(db, view["endpoint_id"])
        next_send = None if spec.next_send_in is None else NOW + spec.next_send_in
        row.update_record(
            max_in_flight=spec.max_in_flight,
            rate_limit=spec.rate_limit,
            next_send_at=next_send if spec.rate_limit else None,
            fifo=int(spec.fifo),
            enabled=int(spec.enabled),
        )
        ids.append(int(row.id))
    event_id = outbox.publish(db, "ping", {"properties": True}, now=NOW_DT)
    db(db.hookline_delivery.id > 0).delete()  # the fan-out's; the queue is made below
    event = db(db.hookline_event.event_id == event_id).select().first().id
    made: dict[int, DeliverySpec] = {}
    leases = dict.fromkeys(range(len(specs)), 0)
    for n, spec in enumerate(rows):
        due_in = spec.due_in - (1000 if specs[spec.endpoint].early else 0)
        delivery = db.hookline_delivery.insert(
            delivery_id=f"dlv_prop{n}",
            event=event,
            endpoint=ids[spec.endpoint],
            status="pending",
            attempts=0,
            next_attempt_at=NOW + due_in,
            created_at=NOW_DT,
            updated_at=NOW_DT,
        )
        endpoint = specs[spec.endpoint]
        first_of_endpoint = all(other.endpoint != spec.endpoint for other in made.values())
        leased = (
            spec.leased
            and endpoint.enabled
            and leases[spec.endpoint] < endpoint.max_in_flight
            and (not endpoint.fifo or first_of_endpoint)
        )
        if leased:
            leases[spec.endpoint] += 1
            db.hookline_lease.insert(
                delivery=delivery,
                endpoint=ids[spec.endpoint],
                owner="other",
                attempt=1,
                until_at=NOW + 600,
            )
        made[int(delivery)] = DeliverySpec(spec.endpoint, due_in, leased)
    db.commit()
    return ids, made


def _in_front(blocking: EndpointSpec) -> tuple[list[EndpointSpec], list[DeliverySpec], int]:
    """``blocking``'s 12 deliveries, its first leased, due before an open endpoint's 2: more
    than a claim of 2 reads of the due index (a window of 4 and what is in flight)."""
    specs = [blocking, EndpointSpec(3, None, None, False, True, False)]
    rows = [DeliverySpec(0, float(-290 + n), n == 0) for n in range(12)]
    rows += [DeliverySpec(1, -5.0, False), DeliverySpec(1, -3.0, False)]
    return specs, rows, 2


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(queue_=queues())
# Always, besides what hypothesis draws: a backlog in front that the claim cannot take, held by
# a full endpoint, a disabled one, a FIFO one whose head is in flight, a rate-limited one whose
# next slot is beyond the horizon.
@example(queue_=_in_front(EndpointSpec(1, None, None, False, True, True)))
@example(queue_=_in_front(EndpointSpec(1, None, None, False, False, True)))
@example(queue_=_in_front(EndpointSpec(3, None, None, True, True, True)))
@example(queue_=_in_front(EndpointSpec(3, 0.5, 3.0, False, True, True)))
def test_a_claim_keeps_every_rule_and_takes_something_whenever_it_can(db, queue_):
    specs, rows, capacity = queue_
    box = secretbox.SecretBox([secretbox.generate_key()])
    _reset(db)
    ids, made = _build(db, box, specs, rows)

    claimed = queue.claim(db, "w", now=NOW, capacity=capacity, lease_s=60.0)

    assert len(claimed) <= capacity
    assert len({item.delivery_row for item in claimed}) == len(claimed)
    taken: dict[int, list] = {}
    for item in claimed:
        spec = made[item.delivery_row]
        assert spec.due_in <= 0 and not spec.leased, (item, spec)
        assert ids[spec.endpoint] == item.endpoint_row
        taken.setdefault(spec.endpoint, []).append(item)
    horizon = NOW + queue.RATE_HORIZON_S
    can_take_any = False
    first_free: dict[int, float] = {}  # open plain endpoints: when their first free one is due
    for index, endpoint in enumerate(specs):
        own = sorted(
            (row_id for row_id, spec in made.items() if spec.endpoint == index),
            key=lambda row_id: made[row_id].due_in,
        )
        in_flight = sum(1 for row_id in own if made[row_id].leased)
        got = taken.get(index, [])
        if not endpoint.enabled:
            assert got == []
            continue
        assert in_flight + len(got) <= endpoint.max_in_flight
        slot = None
        if endpoint.rate_limit:
            next_send = None if endpoint.next_send_in is None else NOW + endpoint.next_send_in
            slot = max(NOW, next_send) if next_send is not None else NOW
            starts = sorted(item.not_before for item in got)
            for k, start in enumerate(starts):
                assert start == pytest.approx(slot + k / endpoint.rate_limit)
                assert start <= horizon
        open_ = in_flight < endpoint.max_in_flight and (slot is None or slot <= horizon)
        if endpoint.fifo:
            head = min(own) if own else None  # the oldest unfinished, by id
            assert [item.delivery_row for item in got] in ([], [head])
            head_free = head is not None and made[head].due_in <= 0 and not made[head].leased
            can_take_any |= open_ and head_free
            if open_ and head_free and len(claimed) < capacity:
                assert got, (index, specs, made, capacity)  # heads are read apart: always seen
            continue
        free = [row_id for row_id in own if made[row_id].due_in <= 0 and not made[row_id].leased]
        # Within an endpoint, in time order: the earliest takeable ones, none skipped.
        assert sorted(item.delivery_row for item in got) == sorted(free[: len(got)])
        can_take_any |= open_ and bool(free)
        if open_ and free:
            first_free[index] = made[free[0]].due_in
    if can_take_any:
        assert claimed, (specs, made, capacity)
    if len(claimed) < capacity:
        # Room to spare: an open endpoint got nothing only if the window (CLAIM_WINDOW times
        # the capacity, in time order) was full of other endpoints' candidates before its first.
        window = capacity * (queue.CLAIM_WINDOW_PG if is_postgres(db) else queue.CLAIM_WINDOW)
        for index, due_in in first_free.items():
            if index in taken:
                continue
            earlier = sum(
                1
                for spec in made.values()
                if spec.endpoint in first_free
                and spec.endpoint != index
                and not spec.leased
                and spec.due_in < due_in
            )
            assert earlier >= window, (index, specs, made, capacity, claimed)
