"""``hookline.webio.run`` against a real database, on SQLite and PostgreSQL.

Guarantee 4: whatever a handler raises, its writes are rolled back; a ``ClientError`` becomes its
own 4xx JSON answer and a lost uniqueness race (the driver's ``IntegrityError``) becomes 409,
never a 5xx, and the connection stays usable.
"""

from __future__ import annotations

import datetime as dt

import pytest

from hookline import orders
from hookline.errors import NotFound, ValidationFailed
from hookline.order_rules import parse_create
from hookline.webio import Request, Response, json_response, run

REQUEST = Request.build("POST", "/api/orders", {"Content-Type": "application/json"}, b"{}")


def _counts(db) -> tuple[int, int]:
    db.commit()  # end any read snapshot so we see what others committed
    return db(db.hookline_order).count(), db(db.hookline_event).count()


def _make(db, order_id: str) -> dict:
    return orders.create_order(
        db,
        parse_create(
            {"order_id": order_id, "product_name": "mug", "unit_price": "1.00", "currency": "USD"}
        ),
    )


def _raw_insert(db, order_id: str) -> None:
    """Insert an order row directly, bypassing the service's own duplicate check."""
    now = dt.datetime(2026, 3, 1, 12, 0, 0)
    db.hookline_order.insert(order_id=order_id, product_name="dup", created_at=now, updated_at=now)


def test_success_is_returned_unchanged_and_not_committed_by_run(db, other_db):
    def handler(db, request):
        _make(db, "A-1")
        return json_response(201, {"ok": True, "path": request.path})

    response = run(handler, db, REQUEST)
    assert response.status == 201
    assert response.json() == {"ok": True, "path": "/api/orders"}
    assert _counts(other_db) == (0, 0)  # committing is the caller's decision
    db.commit()
    assert _counts(other_db) == (1, 1)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValidationFailed("the order is invalid", errors={"quantity": "must be a number"}), 422),
        (NotFound("no order 'x'"), 404),
    ],
)
def test_client_error_rolls_back_and_answers_its_4xx(db, other_db, error, status):
    def handler(db, request):
        _make(db, "A-1")
        _make(db, "A-2")
        raise error

    response = run(handler, db, REQUEST)

    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == error.as_dict()
    assert response.json()["status"] == "error"
    # The handler's writes vanished, in this connection and for everyone else.
    assert _counts(db) == (0, 0)
    assert _counts(other_db) == (0, 0)


def test_client_error_from_the_service_rolls_back_earlier_writes(db, other_db):
    _make(db, "A-1")
    db.commit()

    def handler(db, request):
        _make(db, "B-1")  # written, then...
        _make(db, "A-1")  # ...Conflict: already exists
        return Response(200)

    response = run(handler, db, REQUEST)
    assert response.status == 409
    assert response.json()["errors"] == {"order_id": "already exists"}
    assert _counts(other_db) == (1, 1)
    assert orders.list_orders(other_db)["data"][0]["order_id"] == "A-1"


def test_integrity_error_answers_409_and_rolls_back(db, other_db):
    _make(db, "A-1")
    db.commit()

    def handler(db, request):
        _make(db, "B-1")
        _raw_insert(db, "A-1")  # the unique index refuses it: the driver's IntegrityError
        return Response(200)

    response = run(handler, db, REQUEST)

    assert response.status == 409
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "error"
    assert "retry" in body["message"]
    assert _counts(other_db) == (1, 1)
    assert _counts(db) == (1, 1)
    # The connection is usable afterwards (on PostgreSQL the failed transaction was ended).
    _make(db, "C-1")
    db.commit()
    assert _counts(other_db) == (2, 2)


def test_unexpected_error_rolls_back_and_propagates(db, other_db):
    class Boom(Exception):
        pass

    def handler(db, request):
        _make(db, "A-1")
        raise Boom("bug")

    with pytest.raises(Boom):
        run(handler, db, REQUEST)
    assert _counts(db) == (0, 0)
    assert _counts(other_db) == (0, 0)


def test_extra_arguments_reach_the_handler(db):
    def handler(db, request, order_id, *, note):
        return json_response(200, {"order_id": order_id, "note": note})

    response = run(handler, db, REQUEST, "A-9", note="hi")
    assert response.json() == {"order_id": "A-9", "note": "hi"}
