"""Unit tests for ``hookline.order_rules``: validation, money and the status state machine."""

from __future__ import annotations

from typing import Any

import pytest

from hookline.errors import Conflict, ValidationFailed
from hookline.order_rules import (
    CURRENCY_EXPONENTS,
    TRANSITIONS,
    OrderChanges,
    check_transition,
    format_minor,
    parse_create,
    parse_patch,
    parse_webhook,
    status_event,
)

TOGETHER = "unit_price and currency go together"
BASE = {"product_name": "Widget", "unit_price": "19.99", "currency": "USD"}


def create_errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        parse_create(data)
    assert info.value.status == 422
    return info.value.errors


# --- parse_create: money -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "currency", "minor", "stored_currency"),
    [
        ("19.99", "USD", 1999, "USD"),
        ("19.9", "USD", 1990, "USD"),
        ("19", "USD", 1900, "USD"),
        ("0", "USD", 0, "USD"),
        ("0.00", "EUR", 0, "EUR"),
        (" 5.50 ", "usd", 550, "USD"),
        ("1000", "KRW", 1000, "KRW"),
        ("1000.0", "KRW", 1000, "KRW"),
        ("1000", "krw", 1000, "KRW"),
        ("1.234", "KWD", 1234, "KWD"),
        ("1.2", "KWD", 1200, "KWD"),
        ("7", "JPY", 7, "JPY"),
        ("0.005", "BHD", 5, "BHD"),
        (19.99, "USD", 1999, "USD"),  # a JSON number
        (12, "USD", 1200, "USD"),
        (1500, "KRW", 1500, "KRW"),
        ("10000000000000.00", "USD", 10**15, "USD"),  # the largest price accepted
    ],
)
def test_price_in_minor_units(price: Any, currency: str, minor: int, stored_currency: str) -> None:
    changes = parse_create({**BASE, "unit_price": price, "currency": currency})
    assert changes.unit_price_minor == minor
    assert changes.currency == stored_currency


@pytest.mark.parametrize(
    ("price", "currency", "reason"),
    [
        ("19.999", "USD", "USD allows at most 2 decimal places"),
        ("1000.5", "KRW", "KRW allows at most 0 decimal places"),
        ("0.1", "JPY", "JPY allows at most 0 decimal places"),
        ("1.2345", "KWD", "KWD allows at most 3 decimal places"),
        ("-1", "USD", "must be zero or more"),
        ("-0.01", "USD", "must be zero or more"),
        ("NaN", "USD", 'must be a decimal number such as "19.99"'),
        ("Infinity", "USD", "is too large"),
        ("abc", "USD", 'must be a decimal number such as "19.99"'),
        ("19,99", "USD", 'must be a decimal number such as "19.99"'),
        ("", "USD", 'must be a decimal number such as "19.99"'),
        (True, "USD", 'must be a decimal number such as "19.99"'),
        ({"amount": 1}, "USD", "must be a single value, not an object"),
        (["1", "2"], "USD", "given more than once"),
        ("10000000000000.01", "USD", "is too large"),
        ("1e20", "USD", "is too large"),
    ],
)
def test_bad_price(price: Any, currency: str, reason: str) -> None:
    errors = create_errors({**BASE, "unit_price": price, "currency": currency})
    assert errors["unit_price"] == reason


@pytest.mark.parametrize(
    "price",
    [
        "9E+999999",  # scaleb past the decimal context's Emax raises decimal.Overflow
        "1E+999999",
        "9.99E+999998",
    ],
)
def test_huge_exponent_price_is_a_validation_error_not_a_crash(price: str) -> None:
    errors = create_errors({**BASE, "unit_price": price})
    assert errors == {"unit_price": "is too large"}


@pytest.mark.parametrize(
    "price",
    [
        "19.990000000000000000000000000001",  # 32 significant digits: beyond 28-digit context
        "0.0100000000000000000000000000000001",
    ],
)
def test_extra_decimal_places_are_not_rounded_away(price: str) -> None:
    errors = create_errors({**BASE, "unit_price": price})
    assert errors == {"unit_price": "USD allows at most 2 decimal places"}


@pytest.mark.parametrize(
    ("currency", "reason"),
    [
        ("XXX", "must be a supported ISO 4217 code such as USD, EUR or KRW"),
        ("US", "must be a supported ISO 4217 code such as USD, EUR or KRW"),
        ("USDX", "must be at most 3 characters"),
        ("   ", "must not be blank"),
        (["USD", "EUR"], "given more than once"),
        (840, "must be a supported ISO 4217 code such as USD, EUR or KRW"),
        (1.5, "must be a string"),
    ],
)
def test_bad_currency(currency: Any, reason: str) -> None:
    errors = create_errors({**BASE, "currency": currency})
    assert errors["currency"] == reason


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"product_name": "W", "unit_price": "1"}, {"currency": TOGETHER}),
        ({"product_name": "W", "currency": "USD"}, {"unit_price": TOGETHER}),
        ({"product_name": "W"}, {"unit_price": "is required", "currency": "is required"}),
    ],
)
def test_price_and_currency_are_required_on_create(
    data: dict[str, Any], expected: dict[str, str]
) -> None:
    assert create_errors(data) == expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "paid", "unit_price": "1.00"}, "currency"),
        ({"status": "paid", "currency": "USD"}, "unit_price"),
    ],
)
def test_price_and_currency_go_together_on_patch(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_patch(data)
    assert info.value.errors == {field: "unit_price and currency go together"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"order_id": "A1", "unit_price": "1.00"}, "currency"),
        ({"order_id": "A1", "currency": "USD"}, "unit_price"),
    ],
)
def test_price_and_currency_go_together_on_webhook(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_webhook(data)
    assert info.value.errors == {field: "unit_price and currency go together"}


# --- parse_create: other fields ------------------------------------------------------------


def test_create_minimal_defaults_quantity_to_one() -> None:
    assert parse_create(BASE) == OrderChanges(
        product_name="Widget", quantity=1, unit_price_minor=1999, currency="USD"
    )


def test_create_full() -> None:
    changes = parse_create(
        {
            **BASE,
            "order_id": "ORD-2024.05:17_a",
            "quantity": "3",
            "customer_email": "kim@example.co.kr",
            "product_name": "  café 한국  ",
        }
    )
    assert changes == OrderChanges(
        order_id="ORD-2024.05:17_a",
        product_name="café 한국",
        quantity=3,
        unit_price_minor=1999,
        currency="USD",
        customer_email="kim@example.co.kr",
    )
    assert changes.given() == {
        "product_name": "café 한국",
        "quantity": 3,
        "unit_price_minor": 1999,
        "currency": "USD",
        "customer_email": "kim@example.co.kr",
    }


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("product_name", "", "must not be blank"),
        ("product_name", "   ", "must not be blank"),
        ("product_name", "x" * 201, "must be at most 200 characters"),
        ("product_name", "bad\x00name", "must not contain control characters"),
        ("product_name", "bad\nname", "must not contain control characters"),
        ("product_name", "bad\x7fname", "must not contain control characters"),
        ("product_name", ["a", "b"], "given more than once"),
        ("product_name", {"a": 1}, "must be a single value, not an object"),
        ("product_name", True, "must be a string"),
        ("product_name", 1.5, "must be a string"),
        ("quantity", "0", "must be between 1 and 1000000"),
        ("quantity", 0, "must be between 1 and 1000000"),
        ("quantity", 1_000_001, "must be between 1 and 1000000"),
        ("quantity", "-1", "must be a whole number"),
        ("quantity", "1.5", "must be a whole number"),
        ("quantity", 2.0, "must be a whole number"),
        ("quantity", "two", "must be a whole number"),
        ("quantity", "1234567890", "must be a whole number"),
        ("quantity", True, "must be a whole number"),
        ("quantity", ["1", "2"], "given more than once"),
        ("customer_email", "not-an-email", "must be an email address"),
        ("customer_email", "a@b", "must be an email address"),
        ("customer_email", "a b@example.com", "must be an email address"),
        ("customer_email", "a@-example.com", "must be an email address"),
        ("customer_email", "a@@example.com", "must be an email address"),
        ("customer_email", ["a@x.io", "b@x.io"], "given more than once"),
        (
            "order_id",
            "-starts-with-dash",
            "may contain only letters, digits and . _ : - (starting with a letter or digit)",
        ),
        (
            "order_id",
            "has space",
            "may contain only letters, digits and . _ : - (starting with a letter or digit)",
        ),
        (
            "order_id",
            "slash/no",
            "may contain only letters, digits and . _ : - (starting with a letter or digit)",
        ),
        (
            "order_id",
            "café",
            "may contain only letters, digits and . _ : - (starting with a letter or digit)",
        ),
        ("order_id", "a" * 65, "must be at most 64 characters"),
        ("order_id", ["1", "2"], "given more than once"),
        ("order_id", "", "must not be blank"),
    ],
)
def test_bad_field(field: str, value: Any, reason: str) -> None:
    assert create_errors({**BASE, field: value}) == {field: reason}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("quantity", " 7 ", 7),
        ("quantity", 1_000_000, 1_000_000),
        ("quantity", "1", 1),
        ("order_id", "a" * 64, "a" * 64),
        ("order_id", 1234, "1234"),
        ("order_id", " 1234 ", "1234"),
        ("order_id", "0:a.b_c-d", "0:a.b_c-d"),
        ("product_name", "x" * 200, "x" * 200),
        ("product_name", 42, "42"),
        ("customer_email", "first.last+tag@sub.example.com", "first.last+tag@sub.example.com"),
    ],
)
def test_good_field(field: str, value: Any, expected: Any) -> None:
    assert getattr(parse_create({**BASE, field: value}), field) == expected


@pytest.mark.parametrize("field", ["status", "extra", "unit_price_minor", "id", "Product_Name"])
def test_create_rejects_unknown_fields(field: str) -> None:
    assert create_errors({**BASE, field: "x"}) == {field: "unknown field"}


def test_create_reports_every_bad_field_at_once() -> None:
    errors = create_errors({"quantity": "0", "currency": "XXX", "customer_email": "no", "junk": 1})
    assert set(errors) == {
        "quantity",
        "currency",
        "customer_email",
        "junk",
        "product_name",
        "unit_price",
    }


def test_none_means_not_given() -> None:
    assert create_errors({**BASE, "product_name": None}) == {"product_name": "is required"}
    assert parse_create({**BASE, "quantity": None, "customer_email": None}).quantity == 1


# --- parse_patch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"status": "paid"}, OrderChanges(status="paid")),
        ({"status": " cancelled "}, OrderChanges(status="cancelled")),
        ({"quantity": "2"}, OrderChanges(quantity=2)),
        (
            {"unit_price": "1000", "currency": "KRW"},
            OrderChanges(unit_price_minor=1000, currency="KRW"),
        ),
        (
            {"status": "shipped", "product_name": "New"},
            OrderChanges(status="shipped", product_name="New"),
        ),
    ],
)
def test_patch_ok(data: dict[str, Any], expected: OrderChanges) -> None:
    assert parse_patch(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, {"status": "give a new status or at least one field to change"}),
        ({"status": None}, {"status": "give a new status or at least one field to change"}),
        ({"status": "refunded"}, {"status": "must be one of pending, paid, shipped, cancelled"}),
        ({"status": "PAID"}, {"status": "must be one of pending, paid, shipped, cancelled"}),
        ({"status": ["paid", "shipped"]}, {"status": "given more than once"}),
        ({"status": "paid", "order_id": "X"}, {"order_id": "unknown field"}),
        ({"status": "paid", "foo": "1"}, {"foo": "unknown field"}),
        ({"quantity": "0"}, {"quantity": "must be between 1 and 1000000"}),
        ({"product_name": " "}, {"product_name": "must not be blank"}),
    ],
)
def test_patch_invalid(data: dict[str, Any], expected: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_patch(data)
    assert info.value.errors == expected


# --- parse_webhook (the seed's form) -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"order_id": "1234", "product_name": "example"},
            OrderChanges(order_id="1234", product_name="example"),
        ),
        ({"order_id": "1234"}, OrderChanges(order_id="1234")),
        (
            {"order_id": "1234", "utm_source": "x", "status": "paid", "_csrf": "y"},
            OrderChanges(order_id="1234"),
        ),
        (
            {"order_id": "A", "unit_price": "1.5", "currency": "KWD", "quantity": "4"},
            OrderChanges(order_id="A", unit_price_minor=1500, currency="KWD", quantity=4),
        ),
    ],
)
def test_webhook_ok(data: dict[str, Any], expected: OrderChanges) -> None:
    assert parse_webhook(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, {"order_id": "is required"}),
        ({"product_name": "example"}, {"order_id": "is required"}),
        ({"order_id": ["1", "2"]}, {"order_id": "given more than once"}),
        (
            {"order_id": "1", "product_name": ["a", "b"]},
            {"product_name": "given more than once"},
        ),
        (
            {"order_id": "bad id!"},
            {
                "order_id": "may contain only letters, digits and . _ : - "
                "(starting with a letter or digit)"
            },
        ),
        ({"order_id": "1", "quantity": "many"}, {"quantity": "must be a whole number"}),
        (
            {"order_id": "1", "unit_price": "1.001", "currency": "USD"},
            {"unit_price": "USD allows at most 2 decimal places"},
        ),
    ],
)
def test_webhook_invalid(data: dict[str, Any], expected: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_webhook(data)
    assert info.value.errors == expected


# --- state machine -------------------------------------------------------------------------

ALLOWED = {
    ("pending", "paid"),
    ("pending", "cancelled"),
    ("paid", "shipped"),
    ("paid", "cancelled"),
}
STATUSES = ["pending", "paid", "shipped", "cancelled"]


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("new", STATUSES)
def test_check_transition_table(current: str, new: str) -> None:
    if (current, new) in ALLOWED:
        check_transition(current, new)
    else:
        with pytest.raises(Conflict) as info:
            check_transition(current, new)
        assert info.value.status == 409
        assert info.value.errors == {"status": f"illegal transition {current} -> {new}"}


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("shipped", "paid", "none"),
        ("cancelled", "pending", "none"),
        ("pending", "shipped", "cancelled, paid"),
        ("paid", "pending", "cancelled, shipped"),
        ("bogus", "paid", "none"),
        ("pending", "bogus", "cancelled, paid"),
    ],
)
def test_check_transition_message(current: str, new: str, allowed: str) -> None:
    with pytest.raises(Conflict, match=f"cannot become {new} \\(allowed: {allowed}\\)"):
        check_transition(current, new)


def test_transitions_table_matches_design() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


@pytest.mark.parametrize(
    ("status", "event"),
    [("paid", "order.paid"), ("shipped", "order.shipped"), ("cancelled", "order.cancelled")],
)
def test_status_event(status: str, event: str) -> None:
    assert status_event(status) == event


@pytest.mark.parametrize("status", ["pending", "bogus"])
def test_status_event_unknown(status: str) -> None:
    with pytest.raises(KeyError):
        status_event(status)


# --- format_minor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1999, "USD", "19.99"),
        (0, "USD", "0.00"),
        (5, "EUR", "0.05"),
        (100, "GBP", "1.00"),
        (1000, "KRW", "1000"),
        (0, "JPY", "0"),
        (1234, "KWD", "1.234"),
        (5, "BHD", "0.005"),
        (10**15, "USD", "10000000000000.00"),
        (1999, "ZZZ", "19.99"),  # unknown currency: two decimals
        (None, "USD", None),
        (1999, None, None),
    ],
)
def test_format_minor(minor: int | None, currency: str | None, text: str | None) -> None:
    assert format_minor(minor, currency) == text


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_format_minor_round_trips_through_parse(currency: str) -> None:
    minor = 123_456
    text = format_minor(minor, currency)
    assert text is not None
    assert parse_create({**BASE, "unit_price": text, "currency": currency}).unit_price_minor == (
        minor
    )


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("USD", 2), ("EUR", 2), ("KRW", 0), ("JPY", 0), ("VND", 0), ("KWD", 3), ("BHD", 3)],
)
def test_currency_exponents(currency: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[currency] == exponent
