"""Statements on the hot path, compiled once and run on the driver's own cursor.

Every inbound chat event runs the same handful of statements (record the event id, lock and load
the dialogue row, find the bound cadre, save the row). Through SQLAlchemy each of them costs
80–300 µs of Python per call on a small machine, although SQLite itself answers in a few µs:
building the statement, the execution context, the result object and, for ORM queries, the
identity map. ``Prepared`` keeps SQLAlchemy as the source of truth (the statement is an ordinary
Core construct, compiled by the dialect in use, with the column types' own conversions for
parameters and results: UTC datetimes, JSON, booleans, PostgreSQL's casts) and only skips the
per-call machinery. It runs inside the caller's transaction, on the caller's connection.

Errors come from the driver as they are (sqlite3.OperationalError, psycopg.errors...), not
wrapped in SQLAlchemy's exceptions: nothing here catches them, the event's transaction rolls back.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from storage.db import dialect_insert
from sqlalchemy.sql import ClauseElement


class _Compiled:
    __slots__ = ("sql", "positional", "names", "fixed", "bind_procs", "result_names", "result_procs")

    def __init__(self, stmt: ClauseElement, dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        # Bind names in the order the driver wants them (positional styles), or all of them.
        self.names: Sequence[str] = tuple(compiled.positiontup) if self.positional else tuple(compiled.binds)
        binds = compiled.binds
        # Values written into the statement itself (``Cadre.active == True`` becomes a bind).
        self.fixed = {name: bind.value for name, bind in binds.items()
                      if not bind.required and bind.callable is None}
        procs: dict[str, Callable[[Any], Any]] = {}
        for name, bind in binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs[name] = proc
        self.bind_procs = procs
        columns = list(getattr(stmt, "selected_columns", ()) or ())
        returning = getattr(stmt, "_returning", None)
        if not columns and returning:
            columns = list(returning)
        self.result_names = tuple(col.key for col in columns)
        self.result_procs = tuple(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in columns)

    def params(self, values: dict[str, Any]):
        procs = self.bind_procs
        fixed = self.fixed
        out = {}
        for name in self.names:
            value = values[name] if name in values else fixed[name]
            proc = procs.get(name)
            out[name] = proc(value) if proc is not None and value is not None else value
        if self.positional:
            return tuple(out[name] for name in self.names)
        return out


class Prepared:
    """A Core statement run with plain parameters on the DBAPI cursor of a SQLAlchemy connection
    (or of a session's connection, after flushing the session).

    ``rows(conn, **params)`` returns the result rows as dicts (column key → converted value) for
    a SELECT or a statement with RETURNING; ``run(conn, **params)`` returns the cursor's rowcount.
    """

    def __init__(self, stmt: ClauseElement | Callable[[Any], ClauseElement]) -> None:
        """``stmt``: the statement, or for an INSERT … ON CONFLICT a function given the dialect's
        insert construct (``lambda insert: insert(table).values(…).on_conflict_do_nothing()``)."""
        self.stmt = stmt
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def _compiled(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        key = (dialect.name, dialect.driver)  # the driver decides the parameter style
        compiled = self._by_dialect.get(key)
        if compiled is None:
            stmt = self.stmt if isinstance(self.stmt, ClauseElement) else self.stmt(dialect_insert(dialect.name))
            compiled = self._by_dialect[key] = _Compiled(stmt, dialect)
        return compiled

    def _execute(self, conn: Connection | Session, values: dict[str, Any]):
        if isinstance(conn, Session):
            conn.flush()  # the cursor below does not autoflush what the session holds
            conn = conn.connection()
        compiled = self._compiled(conn)
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(compiled.sql, compiled.params(values))
        return compiled, cursor

    def rows(self, conn: Connection | Session, **values: Any) -> list[dict[str, Any]]:
        compiled, cursor = self._execute(conn, values)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        names, procs = compiled.result_names, compiled.result_procs
        return [{name: (proc(value) if proc is not None else value)
                 for name, proc, value in zip(names, procs, row)} for row in fetched]

    def first(self, conn: Connection | Session, **values: Any) -> dict[str, Any] | None:
        rows = self.rows(conn, **values)
        return rows[0] if rows else None

    def run(self, conn: Connection | Session, **values: Any) -> int:
        _compiled, cursor = self._execute(conn, values)
        try:
            return cursor.rowcount
        finally:
            cursor.close()
