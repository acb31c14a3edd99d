"""The delivery management API from the outside: a real `hookline serve` (worker included) per
backend, a real HTTP sink on 127.0.0.1, and an API key made with the CLI.

Covers issue #3's operator routes that the delivery flow tests leave out: retrying a delivery,
recovering an endpoint's failures since a time, replaying an event to every endpoint, deleting,
listing and changing endpoints (and a refused change, which must leave the endpoint as it was).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sinks import Sink, unique_name, wait_until

pytestmark = pytest.mark.e2e

QUIET_S = 0.5  # how long "nothing else arrives" is watched for


def _failed(api, endpoint_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the endpoint has ``count`` failed deliveries; returns them, newest first."""
    return wait_until(
        lambda: (
            (rows := api.deliveries(endpoint_id=endpoint_id, status="failed"))
            and len(rows) >= count
            and rows
        ),
        15,
        f"{count} failed deliveries",
    )


def _status(api, delivery_id: str, status: str) -> dict[str, Any]:
    return wait_until(
        lambda: (shown := api.delivery(delivery_id))["status"] == status and shown,
        15,
        f"{delivery_id} to be {status}",
    )


def _patch(hook, auth, endpoint_id: str, body: Any):
    payload = body if isinstance(body, str) else json.dumps(body)
    return hook.request("PATCH", f"/myapp/api/endpoints/{endpoint_id}", payload, auth)


def test_retry_sends_a_failed_delivery_again(api, sink: Sink):
    name = unique_name("retried")
    sink.behave(name, fail_times=1, fail_status=500)
    endpoint = api.create(sink.url(name), retry_schedule="0", event_types=["order.created"])
    api.create_order()
    [first] = sink.wait_for(name, timeout=10)
    [failed] = _failed(api, endpoint["endpoint_id"], 1)
    assert (failed["attempts"], failed["last_status_code"]) == (1, 500)
    assert failed["finished_at"] is not None

    answer = api.post(f"/myapp/api/deliveries/{failed['delivery_id']}/retry")
    assert answer.status == 202, answer.body
    retried = answer.json()
    assert retried["delivery_id"] == failed["delivery_id"]
    assert (retried["status"], retried["finished_at"]) == ("pending", None)
    assert retried["next_attempt_at"] is not None

    _, second = sink.wait_for(name, 2, timeout=10)
    assert second.webhook_id == first.webhook_id == failed["event_id"]
    assert second.body == first.body
    shown = _status(api, failed["delivery_id"], "succeeded")
    assert shown["attempts"] == 2
    assert [a["status_code"] for a in shown["attempt_log"]] == [500, 200]
    time.sleep(QUIET_S)
    assert len(sink.received(name)) == 2

    missing = api.post("/myapp/api/deliveries/dlv_nosuchdelivery/retry")
    assert missing.status == 404
    assert "dlv_nosuchdelivery" in missing.json()["message"]


def test_recover_retries_the_endpoints_failures_since_the_given_time_only(api, sink: Sink):
    name = unique_name("recovered")
    sink.behave(name, fail_times=2, fail_status=500)
    endpoint = api.create(sink.url(name), retry_schedule="0", event_types=["order.created"])
    endpoint_id = endpoint["endpoint_id"]
    path = f"/myapp/api/endpoints/{endpoint_id}/recover"
    api.create_order()
    [early] = _failed(api, endpoint_id, 1)
    time.sleep(1.1)  # created_at is kept to the second: the next delivery is strictly later
    api.create_order()
    late = next(d for d in _failed(api, endpoint_id, 2) if d["delivery_id"] != early["delivery_id"])
    assert late["created_at"] > early["created_at"]

    answer = api.post(path, {"since": late["created_at"]})
    assert answer.status == 200, answer.body
    assert answer.json() == {"endpoint_id": endpoint_id, "recovered": 1}

    third = sink.wait_for(name, 3, timeout=10)[2]
    assert third.webhook_id == late["event_id"]
    assert _status(api, late["delivery_id"], "succeeded")["attempts"] == 2
    time.sleep(QUIET_S)
    assert len(sink.received(name)) == 3
    still = api.delivery(early["delivery_id"])
    assert (still["status"], still["attempts"]) == ("failed", 1)

    for body in ({"since": "last tuesday"}, {}):
        refused = api.post(path, body)
        assert refused.status == 422, (body, refused.body)
        assert "since" in refused.json()["errors"]
    assert api.delivery(early["delivery_id"])["status"] == "failed"
    missing = api.post("/myapp/api/endpoints/ep_nosuchendpoint/recover", {"since": "2020-01-01"})
    assert missing.status == 404


def test_replay_without_an_endpoint_reaches_every_subscribed_endpoint(api, sink: Sink):
    created_only, everything, paid_only = (
        unique_name("created"),
        unique_name("all"),
        unique_name("paid"),
    )
    first = api.create(sink.url(created_only), event_types=["order.created"])
    second = api.create(sink.url(everything))
    api.create(sink.url(paid_only), event_types=["order.paid"])
    api.create_order()
    [original] = sink.wait_for(created_only, timeout=10)
    sink.wait_for(everything, timeout=10)
    event_id = original.webhook_id
    before = wait_until(
        lambda: (
            (rows := api.deliveries(event_id=event_id, status="succeeded"))
            and len(rows) == 2
            and rows
        ),
        10,
        "both deliveries to succeed",
    )

    answer = api.post(f"/myapp/api/events/{event_id}/replay")
    assert answer.status == 202, answer.body
    replay = answer.json()
    assert replay["event_id"] == event_id
    assert len(replay["deliveries"]) == 2
    assert not set(replay["deliveries"]) & {d["delivery_id"] for d in before}

    for name in (created_only, everything):
        _, again = sink.wait_for(name, 2, timeout=10)
        assert again.webhook_id == event_id
        assert again.body == original.body
    time.sleep(QUIET_S)
    assert sink.received(paid_only) == []
    new = [api.delivery(d) for d in replay["deliveries"]]
    assert sorted(d["endpoint_id"] for d in new) == sorted(
        [first["endpoint_id"], second["endpoint_id"]]
    )
    assert len(api.deliveries(event_id=event_id)) == 4

    refused = api.post(f"/myapp/api/events/{event_id}/replay", {"endpoint_id": 5})
    assert refused.status == 422
    assert "endpoint_id" in refused.json()["errors"]


def test_delete_answers_200_once_then_404(hook, api, auth, sink: Sink):
    endpoint = api.create(sink.url(unique_name("deleted")))
    path = f"/myapp/api/endpoints/{endpoint['endpoint_id']}"

    deleted = hook.request("DELETE", path, headers=auth)
    assert deleted.status == 200, deleted.body
    assert deleted.json() == {
        "object": "endpoint",
        "endpoint_id": endpoint["endpoint_id"],
        "deleted": True,
    }
    again = hook.request("DELETE", path, headers=auth)
    assert again.status == 404
    assert endpoint["endpoint_id"] in again.json()["message"]
    assert hook.request("GET", path, headers=auth).status == 404
    assert _patch(hook, auth, endpoint["endpoint_id"], {"description": "x"}).status == 404
    listed = api.get("/myapp/api/endpoints")["data"]
    assert endpoint["endpoint_id"] not in [e["endpoint_id"] for e in listed]


def test_list_shows_the_endpoint_with_its_fields_and_never_a_secret(hook, api, auth, sink: Sink):
    fields = {
        "description": "Orders feed",
        "event_types": ["order.paid", "order.created"],
        "headers": {"X-Tenant": "acme"},
        "retry_schedule": "0,1m,1h",
        "timeout_s": 9,
        "connect_timeout_s": 2,
        "max_in_flight": 4,
        "rate_limit": 3.5,
        "fifo": True,
    }
    url = sink.url(unique_name("listed"))
    endpoint = api.create(url, **fields)
    other = api.create(sink.url(unique_name("other")))

    answer = hook.request("GET", "/myapp/api/endpoints", headers=auth)
    assert answer.status == 200
    listed = answer.json()
    assert listed["object"] == "list"
    by_id = {e["endpoint_id"]: e for e in listed["data"]}
    assert set(by_id) == {endpoint["endpoint_id"], other["endpoint_id"]}
    mine = by_id[endpoint["endpoint_id"]]
    assert mine == {k: v for k, v in endpoint.items() if k != "secret"}
    assert mine["url"] == url
    assert mine["description"] == "Orders feed"
    assert mine["event_types"] == ["order.created", "order.paid"]
    assert mine["headers"] == {"X-Tenant": "acme"}
    assert (mine["retry_schedule"], mine["timeout_s"], mine["connect_timeout_s"]) == (
        "0,1m,1h",
        9.0,
        2.0,
    )
    assert (mine["max_in_flight"], mine["rate_limit"], mine["fifo"]) == (4, 3.5, True)
    assert mine["enabled"] is True
    text = answer.body.decode()
    assert endpoint["secret"] not in text and other["secret"] not in text
    assert "whsec_" not in text
    assert not [key for e in listed["data"] for key in e if "secret" in key]


def test_patch_changes_filter_headers_and_policy_and_the_worker_follows(
    hook, api, auth, sink: Sink
):
    name = unique_name("patched")
    endpoint = api.create(sink.url(name), event_types=["order.paid"], description="kept")
    endpoint_id = endpoint["endpoint_id"]
    changes = {
        "event_types": ["order.created"],
        "headers": {"X-Tenant": "acme"},
        "rate_limit": 50,
        "timeout_s": 9,
        "connect_timeout_s": 2,
        "max_in_flight": 4,
        "retry_schedule": "0,10s",
        "fifo": True,
    }
    answer = _patch(hook, auth, endpoint_id, changes)
    assert answer.status == 200, answer.body
    patched = answer.json()
    expected = {**changes, "rate_limit": 50.0, "timeout_s": 9.0, "connect_timeout_s": 2.0}
    assert {k: patched[k] for k in changes} == expected
    assert patched["description"] == "kept" and patched["url"] == endpoint["url"]
    assert api.get(f"/myapp/api/endpoints/{endpoint_id}") == patched

    order = api.create_order()
    [request] = sink.wait_for(name, timeout=10)
    assert request.json()["type"] == "order.created"
    assert request.json()["data"]["order"]["order_id"] == order["order_id"]
    assert request.headers["x-tenant"] == "acme"

    cleared = _patch(hook, auth, endpoint_id, {"rate_limit": None})
    assert cleared.status == 200, cleared.body
    assert cleared.json() == {
        **patched,
        "rate_limit": None,
        "updated_at": cleared.json()["updated_at"],
    }


BAD_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({"rate_limit": "fast"}, "rate_limit"),
    ({"event_types": ["order.nope"]}, "event_types"),
    ({"event_types": "order.created,order.nope"}, "event_types"),
    ({"headers": {"Content-Type": "text/plain"}}, "headers"),
    ({"headers": {"X-Tenant": "a\r\nX-Injected: 1"}}, "headers"),
    ({"headers": ["X-Tenant: acme"]}, "headers"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"connect_timeout_s": 1e300}, "connect_timeout_s"),
    ({"max_in_flight": 2.5}, "max_in_flight"),
    ({"retry_schedule": "soon"}, "retry_schedule"),
    ({"url": "http://10.0.0.1/hooks"}, "url"),
    ({"fifo": "yes"}, "fifo"),
    ({"enabled": "no"}, "enabled"),
    ({"colour": "red"}, "colour"),
]


def test_a_bad_patch_is_refused_with_a_reason_and_changes_nothing(hook, api, auth, sink: Sink):
    endpoint = api.create(
        sink.url(unique_name("unchanged")), event_types=["order.paid"], rate_limit=2
    )
    endpoint_id = endpoint["endpoint_id"]
    before = api.get(f"/myapp/api/endpoints/{endpoint_id}")

    for bad, field in BAD_PATCHES:
        answer = _patch(hook, auth, endpoint_id, {"description": "changed", **bad})
        assert answer.status == 422, (bad, answer.status, answer.body)
        refusal = answer.json()
        assert refusal["message"], bad
        assert set(refusal["errors"]) == {field}, (bad, refusal)
        assert refusal["errors"][field], bad
    empty = _patch(hook, auth, endpoint_id, {})
    assert (empty.status, set(empty.json()["errors"])) == (422, {"body"})
    malformed = _patch(hook, auth, endpoint_id, '{"description": ')
    assert malformed.status == 400 and malformed.json()["message"]
    infinite = _patch(hook, auth, endpoint_id, '{"timeout_s": Infinity}')
    assert infinite.status == 400 and "Infinity" in infinite.json()["message"]
    not_an_object = _patch(hook, auth, endpoint_id, '["description"]')
    assert not_an_object.status == 422
    as_text = hook.request(
        "PATCH",
        f"/myapp/api/endpoints/{endpoint_id}",
        '{"description": "changed"}',
        {"Authorization": auth["Authorization"], "Content-Type": "text/plain"},
    )
    assert as_text.status == 415

    assert api.get(f"/myapp/api/endpoints/{endpoint_id}") == before


def test_a_nul_character_in_the_description_is_refused_with_a_4xx(hook, api, auth, sink: Sink):
    endpoint = api.create(sink.url(unique_name("nul")))
    before = api.get(f"/myapp/api/endpoints/{endpoint['endpoint_id']}")
    patched = _patch(hook, auth, endpoint["endpoint_id"], {"description": "a\u0000b"})
    assert patched.status == 422, patched.status
    assert "description" in patched.json()["errors"]
    body = json.dumps({"url": sink.url(unique_name("nul")), "description": "\u0000"})
    created = hook.request("POST", "/myapp/api/endpoints", body, auth)
    assert created.status == 422, created.status
    assert api.get(f"/myapp/api/endpoints/{endpoint['endpoint_id']}") == before


def test_a_host_that_is_not_valid_idna_is_refused_with_a_4xx(hook, api, auth, sink: Sink):
    endpoint = api.create(sink.url(unique_name("idna")))
    patched = _patch(hook, auth, endpoint["endpoint_id"], {"url": "https://xn--/hooks"})
    assert patched.status == 422, patched.status
    assert "url" in patched.json()["errors"]
    body = json.dumps({"url": "https://xn--/hooks"})
    created = hook.request("POST", "/myapp/api/endpoints", body, auth)
    assert created.status == 422, created.status


def test_recover_with_a_since_beyond_the_calendar_is_refused_with_a_4xx(api, sink: Sink):
    endpoint = api.create(sink.url(unique_name("overflow")))
    path = f"/myapp/api/endpoints/{endpoint['endpoint_id']}/recover"
    for since in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00"):
        answer = api.post(path, {"since": since})
        assert answer.status == 422, (since, answer.status)
        assert "since" in answer.json()["errors"]
