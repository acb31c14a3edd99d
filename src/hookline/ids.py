"""Prefixed, sortable, unique identifiers (``evt_01JD...``).

The body is a ULID: 48 bits of milliseconds since the epoch then 80 random bits, in Crockford
base32 (26 characters). Within one millisecond the random part is incremented instead of drawn
again, so ids made by one process sort in the order they were made.
"""

from __future__ import annotations

import os
import re
import threading
import time

__all__ = ["is_id", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


# Two base32 digits per 10 bits: half the steps of a digit-by-digit loop (ids are made on every
# request's hot path).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_checked_prefixes: set[str] = set()


def _encode_ulid(ms: int, random: int) -> str:
    value = (ms << _RANDOM_BITS) | random  # 128 bits, written as 26 digits (130 bits)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def _next_ulid(now_ms: int | None = None) -> str:
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    # Drawn before taking the lock: os.urandom releases the GIL, and a thread holding the lock
    # while it waits would make every other request thread queue on the lock.
    fresh = int.from_bytes(os.urandom(10), "big")
    with _lock:
        if ms <= _last_ms:
            # Same (or a backwards-stepped) millisecond: keep the order by counting up.
            ms = _last_ms
            _last_random += 1
            if _last_random >> _RANDOM_BITS:  # the counter ran out: borrow the next millisecond
                ms, _last_random = ms + 1, 0
        else:
            _last_random = fresh
        _last_ms = ms
        random = _last_random
    return _encode_ulid(ms, random)


def new_id(prefix: str) -> str:
    """A new identifier ``<prefix>_<ULID>``, e.g. ``new_id("evt")`` -> ``evt_01JD3...``."""
    if prefix not in _checked_prefixes:
        if not re.fullmatch(r"[a-z]{2,8}", prefix):
            raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
        _checked_prefixes.add(prefix)
    return f"{prefix}_{_next_ulid()}"


def is_id(value: str, prefix: str) -> bool:
    """True when ``value`` has the shape of an id made by ``new_id(prefix)``."""
    return re.fullmatch(rf"{prefix}_[{_ALPHABET}]{{26}}", value) is not None
