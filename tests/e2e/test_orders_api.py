"""The orders management API over HTTP, with keys made by the real CLI."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def auth(server) -> dict[str, str]:
    """Headers carrying a fresh API key."""
    return {"Authorization": f"Bearer {server.new_api_key('orders-e2e')}", **JSON}


def _create(server, auth, **fields):
    body = {
        "product_name": "kettle",
        "quantity": 2,
        "unit_price": "19.99",
        "currency": "USD",
        **fields,
    }
    return server.request("POST", "/myapp/api/orders", json.dumps(body), auth)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/myapp/api/orders"),
        ("POST", "/myapp/api/orders"),
        ("GET", "/myapp/api/orders/1234"),
        ("PATCH", "/myapp/api/orders/1234"),
        ("GET", "/myapp/api/anything/else"),
    ],
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer hk_wrong", "Basic dXNlcjpwYXNz", "Bearer " + "hk_" + "A" * 43]
)
def test_every_api_route_needs_a_valid_key(server, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = server.request(method, path, b"{}", {**headers, **JSON})
    assert answer.status == 401
    assert answer.json()["status"] == "error"
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_create_show_list_and_walk_the_state_machine(server, auth):
    created = _create(server, auth, customer_email="kim@example.com")
    assert created.status == 201
    order = created.json()
    assert order["order_id"].startswith("ord_")
    assert (order["unit_price"], order["total"], order["status"]) == ("19.99", "39.98", "pending")
    assert created.headers["location"] == f"/myapp/api/orders/{order['order_id']}"

    path = f"/myapp/api/orders/{order['order_id']}"
    assert server.request("GET", path, headers=auth).json() == order

    for status in ("paid", "shipped"):
        answer = server.request("PATCH", path, json.dumps({"status": status}), auth)
        assert (answer.status, answer.json()["status"]) == (200, status)
    illegal = server.request("PATCH", path, json.dumps({"status": "cancelled"}), auth)
    assert illegal.status == 409
    assert "shipped" in illegal.json()["message"]
    assert server.request("GET", path, headers=auth).json()["status"] == "shipped"

    paid_only = server.request("GET", "/myapp/api/orders?status=shipped&limit=200", headers=auth)
    assert order["order_id"] in [o["order_id"] for o in paid_only.json()["data"]]


def test_pagination_walks_every_order_once(server, auth):
    made = {_create(server, auth, product_name=f"item {n}").json()["order_id"] for n in range(7)}
    seen: list[str] = []
    cursor = ""
    while True:
        page = server.request("GET", f"/myapp/api/orders?limit=3{cursor}", headers=auth).json()
        seen += [o["order_id"] for o in page["data"]]
        if not page["has_more"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert made <= set(seen)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (
            {"product_name": "", "unit_price": "1", "currency": "USD"},
            "application/json",
            422,
            "product_name",
        ),
        (
            {"product_name": "x", "unit_price": "1.999", "currency": "USD"},
            "application/json",
            422,
            "unit_price",
        ),
        (
            {"product_name": "x", "unit_price": "1", "currency": "USD", "quantity": 0},
            "application/json",
            422,
            "quantity",
        ),
        (
            {"product_name": "x", "unit_price": "1", "currency": "XXX"},
            "application/json",
            422,
            "currency",
        ),
        (
            {"product_name": "x", "unit_price": "1", "currency": "USD", "colour": "red"},
            "application/json",
            422,
            "colour",
        ),
        ({"product_name": "x", "unit_price": "1", "currency": "USD"}, "text/plain", 415, None),
    ],
)
def test_invalid_orders_get_field_errors_and_write_nothing(
    server, auth, body, content_type, status, field
):
    before = server.request("GET", "/myapp/api/orders?limit=200", headers=auth).json()["data"]
    answer = server.request(
        "POST", "/myapp/api/orders", json.dumps(body), {**auth, "Content-Type": content_type}
    )
    assert answer.status == status
    if field:
        assert field in answer.json()["errors"]
    assert (
        server.request("GET", "/myapp/api/orders?limit=200", headers=auth).json()["data"] == before
    )


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=201", "status=lost", "cursor=-1"])
def test_bad_list_parameters_get_422(server, auth, query):
    assert server.request("GET", f"/myapp/api/orders?{query}", headers=auth).status == 422


def test_unknown_order_and_unknown_route_are_json_404(server, auth):
    assert server.request("GET", "/myapp/api/orders/nope-404", headers=auth).status == 404
    answer = server.request("GET", "/myapp/api/not-a-route", headers=auth)
    assert answer.status == 404
    assert answer.json()["status"] == "error"


def test_a_revoked_key_is_refused(server):
    key = server.new_api_key("short-lived")
    headers = {"Authorization": f"Bearer {key}"}
    assert server.request("GET", "/myapp/api/orders", headers=headers).status == 200
    server.cli("keys", "revoke", "short-lived")
    answer = server.request("GET", "/myapp/api/orders", headers=headers)
    assert answer.status == 401
    assert "revoked" in answer.json()["message"]
    listed = json.loads(server.cli("keys", "list", "--json").stdout)
    assert [k["active"] for k in listed if k["name"] == "short-lived"] == [False]
    assert key not in json.dumps(listed)


def test_a_page_too_large_for_one_piece_arrives_whole(server, auth):
    """200 orders with long names are well over the 64 KiB that the front sends in one piece:
    this answer streams through granian (web/rsgi_bridge.py), and must arrive intact."""
    made = set()
    for n in range(200):
        answer = _create(server, auth, product_name=f"{n:03d}-" + "ü" * 190)
        assert answer.status == 201
        made.add(answer.json()["order_id"])

    answer = server.request("GET", "/myapp/api/orders?limit=200", b"", auth)

    assert answer.status == 200
    assert len(answer.body) > 2 * 65536
    listed = answer.json()["data"]
    assert {order["order_id"] for order in listed} == made
    assert all(order["product_name"].endswith("ü" * 190) for order in listed)
