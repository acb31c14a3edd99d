"""Where a worker's claims start reading a due index on PostgreSQL.

The deliveries and the received webhooks are claimed in due order from partial indexes
(``WHERE status = 'pending'``, ``WHERE status = 'received'``). A row that is sent or handled
leaves the index's range, but PostgreSQL keeps its entry until the table is vacuumed, and every
read from the start of the index steps over them. Autovacuum lets them grow to a fifth of the
table: with 30 days of history kept, millions of entries, and a claim at a million pending took
+2.5 ms after 200,000 sends. (SQLite removes an entry as its row leaves the index.)

Rows enter a due index at their due time, which is the time they were written or later. Below
the earliest row still waiting there are only those left-behind entries, so a claim may start
there, less a margin for a row whose transaction chose its time before it committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DUE_FLOOR_MARGIN_S", "DUE_FULL_READ_EVERY_S", "DueFloor"]

#: How far below the earliest waiting row the last claim saw the next one starts reading. It
#: covers a row whose transaction chose its due time (its ``now``) this long before it
#: committed, or on a clock this far behind.
DUE_FLOOR_MARGIN_S = 5.0

#: How often a claim reads the index from its start regardless, which bounds the delay of a row
#: that the margin did not cover.
DUE_FULL_READ_EVERY_S = 5.0


@dataclass
class DueFloor:
    """Where a worker's next claim on one due index starts reading (SQLite ignores it).

    A worker keeps one per index for its lifetime and passes it to every claim; a claim without
    one reads the index from its start.
    """

    clock: Callable[[], float] = time.monotonic
    at: float | None = None
    full_read_at: float = float("-inf")

    def start(self) -> float:
        """The lowest due time the next claim reads: ``-inf`` for a full read (the first, then
        every ``DUE_FULL_READ_EVERY_S`` of ``clock``)."""
        now = self.clock()
        if self.at is None or now - self.full_read_at >= DUE_FULL_READ_EVERY_S:
            self.full_read_at = now
            return float("-inf")
        return self.at - DUE_FLOOR_MARGIN_S

    def seen(self, at: float | None) -> None:
        """Keep the earliest due time of a waiting row that the claim saw (``None``: it saw
        none, or did not read the index)."""
        if at is not None:
            self.at = float(at)
