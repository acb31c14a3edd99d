"""``SqlConn`` on both backends: multi-row inserts split into statements the driver accepts and
hand back every returned row."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from hookline.sqlconn import SqlConn, marks

HEAD = "INSERT INTO hookline_event (event_id, type, payload, created_at)"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0)


class _Counting:
    """A DB-API connection wrapper that records the statements its cursors run."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.statements: list[str] = []

    def cursor(self) -> Any:
        cursor = self.connection.cursor()
        recorded = self.statements

        class Cursor:
            def execute(self, statement: str, params: Any = ()) -> Any:
                recorded.append(statement)
                return cursor.execute(statement, params)

            def fetchall(self) -> list:
                return cursor.fetchall()

        return Cursor()


@pytest.mark.parametrize(("count", "expected"), [(1, "?"), (2, "?, ?"), (4, "?, ?, ?, ?")])
def test_marks_gives_one_placeholder_per_value(count: int, expected: str) -> None:
    assert marks(count) == expected


@pytest.mark.parametrize(("variables", "rows"), [(4, 1), (4, 3), (10, 7), (1000, 250)])
def test_insert_rows_splits_into_statements_and_returns_every_row(
    db, other_db, monkeypatch, variables, rows
):
    plain = SqlConn.of(db)
    counting = _Counting(plain.connection)
    sql = SqlConn(counting, postgres=plain.postgres)
    monkeypatch.setattr(SqlConn, "_max_variables", lambda self: variables)
    names = [f"evt_{n:04d}" for n in range(rows)]

    returned = sql.insert_rows(
        HEAD, [(name, "ping", "{}", sql.when(NOW)) for name in names], returning="id, event_id"
    )
    db.commit()

    per_statement = variables // 4  # four columns
    assert len(counting.statements) == math.ceil(rows / per_statement)
    assert sorted(event_id for _, event_id in returned) == names
    stored = {row.event_id: row.id for row in other_db(other_db.hookline_event).select()}
    assert stored == {event_id: row_id for row_id, event_id in returned}


def test_insert_rows_of_nothing_runs_no_statement(db):
    counting = _Counting(SqlConn.of(db).connection)
    sql = SqlConn(counting, postgres=SqlConn.of(db).postgres)

    assert sql.insert_rows(HEAD, [], returning="id") == []
    assert counting.statements == []
