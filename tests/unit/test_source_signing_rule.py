"""Which sources accept unsigned requests (``sources.is_unsigned``), one rule for both webhook
paths: the verifying one (with the active secrets) and the group committer's (with what is
stored)."""

from __future__ import annotations

import pytest

from hookline.sources import ORDERS_SOURCE, is_unsigned


@pytest.mark.parametrize(
    ("kind", "name", "has_secrets", "has_public_keys", "unsigned"),
    [
        ("none", "anything", False, False, True),
        ("none", "anything", True, False, True),  # kind none never verifies
        ("none", ORDERS_SOURCE, True, True, True),
        ("hmac", ORDERS_SOURCE, False, False, True),  # the seed's endpoint, no secret yet
        ("standard", ORDERS_SOURCE, False, False, True),
        ("hmac", ORDERS_SOURCE, True, False, False),  # given a secret: signed from now on
        ("standard", ORDERS_SOURCE, False, True, False),  # or an ed25519 key
        ("stripe", "payments", False, False, False),  # any other source must be signed
        ("github", "repo", True, False, False),
        ("standard", "partner", False, True, False),
    ],
)
def test_is_unsigned(kind, name, has_secrets, has_public_keys, unsigned):
    assert (
        is_unsigned(kind, name, has_secrets=has_secrets, has_public_keys=has_public_keys)
        is unsigned
    )
