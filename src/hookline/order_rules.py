"""Pure rules for orders: field validation, money, and the status state machine.

No I/O here: every function takes plain values and returns values or raises
``ValidationFailed`` / ``Conflict`` naming the field or transition at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Context, Decimal
from typing import Any

from hookline.errors import Conflict, ValidationFailed

__all__ = [
    "CURRENCY_EXPONENTS",
    "TRANSITIONS",
    "OrderChanges",
    "check_transition",
    "format_minor",
    "parse_create",
    "parse_patch",
    "parse_webhook",
    "status_event",
]

#: ISO 4217 codes accepted, with their number of decimal places.
_TWO_DECIMALS = (
    "AED ARS AUD BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR MAD MXN MYR NOK NZD "
    "PEN PHP PKR PLN QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD ZAR"
)
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(("CLP", "ISK", "JPY", "KRW", "PYG", "UGX", "VND", "XAF", "XOF"), 0),
    **dict.fromkeys(("BHD", "JOD", "KWD", "OMR", "TND"), 3),
}

#: Allowed status changes: from -> the statuses it may become.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"paid", "cancelled"}),
    "paid": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset(),
    "cancelled": frozenset(),
}
_STATUS_EVENTS = {"paid": "order.paid", "shipped": "order.shipped", "cancelled": "order.cancelled"}

_ORDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_EMAIL = re.compile(
    r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Decimal() also takes "1_000" and unbounded text; a price is at most 40 plain characters.
_PRICE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Infinity", re.I)
_PRICE_MAX_CHARS = 40
_EXACT = Context(prec=40)
_MAX_QUANTITY = 1_000_000
_MAX_PRICE_MINOR = 10**15


@dataclass(frozen=True)
class OrderChanges:
    """Validated order fields; ``None`` means "not given"."""

    order_id: str | None = None
    product_name: str | None = None
    quantity: int | None = None
    unit_price_minor: int | None = None
    currency: str | None = None
    customer_email: str | None = None
    status: str | None = None

    def given(self) -> dict[str, Any]:
        """The fields that were given, without ``order_id`` and ``status``."""
        return {name: value for name in _GIVEN_FIELDS if (value := getattr(self, name)) is not None}


# Looked up once: ``dataclasses.fields`` rebuilds its tuple on every call.
_GIVEN_FIELDS = tuple(f.name for f in fields(OrderChanges) if f.name not in ("order_id", "status"))


def _scalar(raw: Any, name: str, errors: dict[str, str]) -> Any:
    if isinstance(raw, list):
        errors[name] = "given more than once"
        return None
    if isinstance(raw, dict):
        errors[name] = "must be a single value, not an object"
        return None
    return raw


def _text(raw: Any, name: str, max_length: int, errors: dict[str, str]) -> str | None:
    raw = _scalar(raw, name, errors)
    if raw is None or name in errors:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        errors[name] = "must be a string"
        return None
    value = str(raw).strip()
    if not value:
        errors[name] = "must not be blank"
    elif len(value) > max_length:
        errors[name] = f"must be at most {max_length} characters"
    elif _CONTROL.search(value):
        errors[name] = "must not contain control characters"
    else:
        return value
    return None


def _order_id(raw: Any, errors: dict[str, str]) -> str | None:
    value = _text(raw, "order_id", 64, errors)
    if value is not None and not _ORDER_ID.fullmatch(value):
        errors["order_id"] = (
            "may contain only letters, digits and . _ : - (starting with a letter or digit)"
        )
        return None
    return value


def _quantity(raw: Any, errors: dict[str, str]) -> int | None:
    raw = _scalar(raw, "quantity", errors)
    if raw is None or "quantity" in errors:
        return None
    if isinstance(raw, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors["quantity"] = "must be a whole number"
    elif not 1 <= raw <= _MAX_QUANTITY:
        errors["quantity"] = f"must be between 1 and {_MAX_QUANTITY}"
    else:
        return raw
    return None


def _currency(raw: Any, errors: dict[str, str]) -> str | None:
    value = _text(raw, "currency", 3, errors)
    if value is None:
        return None
    value = value.upper()
    if value not in CURRENCY_EXPONENTS:
        errors["currency"] = "must be a supported ISO 4217 code such as USD, EUR or KRW"
        return None
    return value


def _price_minor(raw: Any, currency: str | None, errors: dict[str, str]) -> int | None:
    raw = _scalar(raw, "unit_price", errors)
    if raw is None or "unit_price" in errors:
        return None
    text = repr(raw) if isinstance(raw, float) else str(raw).strip()
    if (
        isinstance(raw, bool)
        or not isinstance(raw, str | int | float)
        or len(text) > _PRICE_MAX_CHARS
        or not _PRICE.fullmatch(text)
    ):
        errors["unit_price"] = 'must be a decimal number such as "19.99"'
        return None
    amount = Decimal(text)
    if amount.is_nan():
        errors["unit_price"] = 'must be a decimal number such as "19.99"'
    elif amount < 0:
        errors["unit_price"] = "must be zero or more"
    elif amount.is_infinite() or amount.adjusted() >= 15:
        errors["unit_price"] = "is too large"
    if currency is None or "unit_price" in errors:
        return None  # a missing currency is reported by the caller
    exponent = CURRENCY_EXPONENTS[currency]
    # Exact: at most 40 characters in, 40 digits of precision, so nothing is rounded away.
    minor = amount.scaleb(exponent, context=_EXACT)
    if minor != minor.to_integral_value():
        errors["unit_price"] = f"{currency} allows at most {exponent} decimal places"
        return None
    if minor > _MAX_PRICE_MINOR:
        errors["unit_price"] = "is too large"
        return None
    return int(minor)


def format_minor(amount_minor: int | None, currency: str | None) -> str | None:
    """Minor units as a decimal string in the currency's precision: ``(1999, "USD")`` -> "19.99"."""
    if amount_minor is None or currency is None:
        return None
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    return str(Decimal(amount_minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


def _email(raw: Any, errors: dict[str, str]) -> str | None:
    value = _text(raw, "customer_email", 254, errors)
    if value is not None and not _EMAIL.fullmatch(value):
        errors["customer_email"] = "must be an email address"
        return None
    return value


def _parse(
    data: Mapping[str, Any], allowed: set[str], *, strict: bool
) -> tuple[OrderChanges, dict[str, str]]:
    errors: dict[str, str] = {}
    if strict:
        for name in data:
            if name not in allowed:
                errors[name] = "unknown field"
    currency = _currency(data.get("currency"), errors) if "currency" in allowed else None
    price = (
        _price_minor(data.get("unit_price"), currency, errors) if "unit_price" in allowed else None
    )
    if "unit_price" in allowed and (data.get("unit_price") is None) != (
        data.get("currency") is None
    ):
        missing = "currency" if data.get("currency") is None else "unit_price"
        errors.setdefault(missing, "unit_price and currency go together")
    status = None
    if "status" in allowed and data.get("status") is not None:
        status = _text(data.get("status"), "status", 16, errors)
        if status is not None and status not in TRANSITIONS:
            errors["status"] = f"must be one of {', '.join(TRANSITIONS)}"
            status = None
    changes = OrderChanges(
        order_id=_order_id(data.get("order_id"), errors) if "order_id" in allowed else None,
        product_name=_text(data.get("product_name"), "product_name", 200, errors),
        quantity=_quantity(data.get("quantity"), errors),
        unit_price_minor=price,
        currency=currency,
        customer_email=_email(data.get("customer_email"), errors),
        status=status,
    )
    return changes, errors


_ORDER_FIELDS = {"product_name", "quantity", "unit_price", "currency", "customer_email"}


def parse_create(data: Mapping[str, Any]) -> OrderChanges:
    """Validate a ``POST /api/orders`` body: product_name, unit_price and currency are required."""
    changes, errors = _parse(data, _ORDER_FIELDS | {"order_id"}, strict=True)
    for name in ("product_name", "unit_price", "currency"):
        if data.get(name) is None:
            errors.setdefault(name, "is required")
    if errors:
        raise ValidationFailed("the order is invalid", errors=errors)
    return changes if changes.quantity is not None else replace(changes, quantity=1)


def parse_patch(data: Mapping[str, Any]) -> OrderChanges:
    """Validate a ``PATCH /api/orders/<id>`` body: a new ``status`` and/or order fields."""
    changes, errors = _parse(data, _ORDER_FIELDS | {"status"}, strict=True)
    if not errors and changes.status is None and not changes.given():
        errors["status"] = "give a new status or at least one field to change"
    if errors:
        raise ValidationFailed("the change is invalid", errors=errors)
    return changes


def parse_webhook(data: Mapping[str, Any]) -> OrderChanges:
    """Validate the seed's order webhook fields: ``order_id`` required, unknown fields ignored."""
    changes, errors = _parse(data, _ORDER_FIELDS | {"order_id"}, strict=False)
    if data.get("order_id") is None:
        errors["order_id"] = "is required"
    if errors:
        raise ValidationFailed("the order webhook is invalid", errors=errors)
    return changes


def check_transition(current: str, new: str) -> None:
    """Raise ``Conflict`` unless an order in ``current`` may move to ``new``."""
    if new not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none"
        raise Conflict(
            f"an order that is {current} cannot become {new} (allowed: {allowed})",
            errors={"status": f"illegal transition {current} -> {new}"},
        )


def status_event(new_status: str) -> str:
    """The event type published when an order enters ``new_status``."""
    return _STATUS_EVENTS[new_status]
