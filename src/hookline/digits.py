"""Whole numbers written as ASCII digits, read against an upper bound.

``int()`` refuses a string of more than 4,300 digits with a ``ValueError`` of its own, so input
from a request, a JSON body or the environment is measured against its bound before it is read.
"""

from __future__ import annotations

__all__ = ["read_digits"]


def read_digits(text: str, high: int) -> int | None:
    """The value of ``text`` (ASCII digits only, checked by the caller), or ``None`` when it has
    more significant digits than ``high`` and so is above it."""
    digits = text.lstrip("0") or "0"
    return None if len(digits) > len(str(high)) else int(digits)
