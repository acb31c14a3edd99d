"""Hand-written SQL on a DB-API connection, for the write paths that run on every request.

pydal builds each statement in Python (tens of microseconds per insert); the receiver, the
outbox and the fan-out run per request, so they speak SQL directly through ``SqlConn``. The same
functions serve a pydal caller (``SqlConn.of(db)`` shares the request's connection and
transaction) and the group committer (which owns its connection). Values are written the way
pydal writes them, so pydal reads these rows back unchanged: datetimes to the second, blobs in
base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydal import DAL

from hookline.timeutil import sql_datetime

__all__ = ["SqlConn", "as_sql", "marks"]

T = TypeVar("T")


def marks(count: int) -> str:
    """``count`` comma-separated ``?`` placeholders, for ``IN (...)`` and ``VALUES (...)``."""
    return ", ".join("?" * count)


class SqlConn:
    """A DB-API connection and its dialect; statements are written with ``?`` placeholders."""

    __slots__ = ("_memo", "_statements", "connection", "deferred_sync", "postgres")

    def __init__(
        self, connection: Any, *, postgres: bool, deferred_sync: Path | None = None
    ) -> None:
        """``deferred_sync``: the file whose sync makes this connection's commits durable, for a
        connection that commits without waiting for the disk (see ``groupcommit``)."""
        self.connection = connection
        self.postgres = postgres
        self.deferred_sync = deferred_sync
        self._statements: dict[str, str] = {}
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, read: Callable[[], T]) -> T:
        """``read()``, remembered under ``key`` until ``forget()``: for reads that many units of
        one transaction repeat (the group committer forgets at every ``BEGIN``)."""
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    def forget(self) -> None:
        """Drop what ``memo`` remembered (a new transaction may see other values)."""
        self._memo.clear()

    @classmethod
    def of(cls, db: DAL) -> SqlConn:
        """The connection ``db`` holds for this thread (same transaction as its pydal calls)."""
        return cls(db._adapter.connection, postgres=db._adapter.dbengine == "postgres")

    def _sql(self, statement: str) -> str:
        if not self.postgres:
            return statement
        converted = self._statements.get(statement)
        if converted is None:
            converted = self._statements[statement] = statement.replace("?", "%s")
        return converted

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return its cursor."""
        cursor = self.connection.cursor()
        cursor.execute(self._sql(statement), params)
        return cursor

    def one(self, statement: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row of a query, or ``None``."""
        return self.execute(statement, params).fetchone()

    def all(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Every row of a query."""
        return self.execute(statement, params).fetchall()

    def insert(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run an ``INSERT`` of one row; return its ``id``."""
        if self.postgres:
            return self.execute(statement + " RETURNING id", params).fetchone()[0]
        return self.execute(statement, params).lastrowid

    def insert_rows(
        self, head: str, rows: Sequence[Sequence[Any]], *, returning: str | None = None
    ) -> list[tuple]:
        """Insert ``rows`` with multi-row ``INSERT`` statements: ``head`` is the statement up to
        ``VALUES`` (``INSERT INTO t (a, b)``), each row the values of its columns. One statement
        per chunk, however many rows; with ``returning`` (columns), the rows it returns, in no
        particular order.
        """
        if not rows:
            return []
        width = len(rows[0])
        group = f"({marks(width)})"
        per_statement = max(1, self._max_variables() // width)
        returned: list[tuple] = []
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            statement = f"{head} VALUES {', '.join([group] * len(chunk))}"
            if returning:
                statement += f" RETURNING {returning}"
            params = [value for row in chunk for value in row]
            cursor = self.connection.cursor()
            cursor.execute(statement.replace("?", "%s") if self.postgres else statement, params)
            if returning:
                returned.extend(cursor.fetchall())
        return returned

    def _max_variables(self) -> int:
        if self.postgres:
            return 32767  # psycopg2 binds on the client; this only bounds a statement's size
        return min(self.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), 32766)

    def when(self, value: dt.datetime | None) -> Any:
        """A datetime as pydal stores it: to the second (text on SQLite)."""
        if value is None:
            return None
        # ``sql_datetime`` remembers its recent values: a request stamps several rows with the
        # same ``now``, and the requests of one batch share it.
        return value.replace(microsecond=0) if self.postgres else sql_datetime(value)

    def params(self, values: Sequence[Any]) -> list[Any]:
        """``values`` ready to bind: datetimes as ``when`` stores them, the rest as they are
        (rows prepared ahead of their transaction keep plain datetimes)."""
        return [self.when(v) if isinstance(v, dt.datetime) else v for v in values]

    @property
    def integrity_error(self) -> type[Exception]:
        """The driver's ``IntegrityError``: what a lost uniqueness race raises."""
        if self.postgres:
            import psycopg2

            return psycopg2.IntegrityError
        return sqlite3.IntegrityError

    @staticmethod
    def blob(value: bytes | None) -> str | None:
        """Bytes as pydal stores a ``blob`` field (base64 text), so pydal reads them back."""
        return None if value is None else base64.b64encode(value).decode("ascii")

    @staticmethod
    def read_blob(value: Any) -> bytes:
        """A ``blob`` field's bytes as stored by pydal (base64 text; ``NULL`` is empty)."""
        if value is None:
            return b""
        return base64.b64decode(value if isinstance(value, str) else bytes(value))

    @staticmethod
    def read_when(value: Any) -> dt.datetime | None:
        """A stored datetime read back (SQLite gives text, PostgreSQL a datetime)."""
        if value is None or isinstance(value, dt.datetime):
            return value
        return dt.datetime.fromisoformat(value)


def as_sql(db: DAL | SqlConn) -> SqlConn:
    """``db`` itself when it is a ``SqlConn``, else the connection of the pydal ``db``."""
    return db if isinstance(db, SqlConn) else SqlConn.of(db)
