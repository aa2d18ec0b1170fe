"""How a hot statement is run: compiled once per dialect, executed on the driver's own cursor.

Every inbound chat event runs the same handful of statements (record the event id, lock and load
the dialogue row, find the bound cadre, save the row). Through SQLAlchemy each of them costs
80–300 µs of Python per call on a small machine, although SQLite itself answers in a few µs:
building the statement, the execution context, the result object and, for ORM queries, the
identity map. ``Prepared`` keeps SQLAlchemy as the source of truth (the statement is an ordinary
Core construct, compiled by the dialect in use, with the column types' own conversions for
parameters and results: UTC datetimes, JSON, booleans, PostgreSQL's casts) and only skips the
per-call machinery. It runs inside the caller's transaction, on the caller's connection.

The statements themselves live in ``storage/hot.py``, each with its typed row; this module is the
mechanism and the one place that knows what it reads of SQLAlchemy's compiler:

- public API for what is run: ``SQLCompiler.construct_expanded_state`` (SQL text, parameter order
  of positional styles, values fixed in the statement), ``compiled.binds`` and ``BindParameter``'s
  flags, ``exported_columns`` (the columns of a SELECT or of RETURNING) and the types'
  ``bind_processor``/``result_processor``;
- attributes of ``SQLCompiler`` used only to refuse what the fast path cannot run
  (``insert_prefetch``/``update_prefetch``, ``escaped_bind_names``), read in ``_refusal``.

A statement the fast path cannot run exactly as SQLAlchemy would is refused when it is built
(``UnsupportedStatement``, raised at import of the module that declares it), for SQLite and for
PostgreSQL (psycopg) alike, not when an event first runs it:

- an expanding ``IN`` (``col.in_([...])``, ``bindparam(..., expanding=True)``) or a parameter
  rendered into the SQL at execution (``literal_execute=True``): the SQL text depends on the values;
- a parameter computed at execution (``bindparam(callable_=...)``) or a column default filled in
  by SQLAlchemy's execution context (``Column(default=...)`` not given in ``values``);
- a parameter name the driver cannot take as it is (escaped by SQLAlchemy: spaces, ``%``, ``.``);
- execution options on the statement (they act in SQLAlchemy's execution, which is skipped);
- a row type whose fields are not the statement's columns, in order.

``tests/test_hot_parity.py`` runs every registered statement both ways, fast and through
``Connection.execute``, on SQLite and PostgreSQL, and compares what comes back; pyproject.toml pins
SQLAlchemy to the minor versions that test passed on.

On the asyncpg engine of DATABASE_ASYNC_EVENTS a statement runs on asyncpg's own connection
(``fetch``/``execute``, asyncpg's statement cache) when a transaction is open there or the event's
``LazyTransaction`` is set: the adapter's cursor cost about 40 µs more a statement. The event path
opens no transaction until a statement writes (``LazyTransaction``, ``only_reads``).

Errors from the database come from the driver as they are (sqlite3.OperationalError,
psycopg.errors..., asyncpg.exceptions... on asyncpg), not wrapped in SQLAlchemy's exceptions:
nothing here catches them, the event's transaction rolls back (bot/core/engine.py invalidates an
asyncpg connection that closed). On that engine the statements bypass SQLAlchemy's handling of
asyncpg's prepared-statement cache: a migration that changes a column's type needs the web
processes restarted (as every deployment does).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any, Callable, Generic, Sequence, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import await_only

from storage.db import dialect_insert, json_dumps

R = TypeVar("R")

# The dialects every statement is checked against when it is built (and the parity test runs on); what
# runs is compiled for them too, so they serialize JSON as storage.db.make_engine's engines do.
CHECKED_DIALECTS = (sqlite.pysqlite.dialect(json_serializer=json_dumps),
                    postgresql.psycopg.dialect(json_serializer=json_dumps))


class UnsupportedStatement(TypeError):
    """A statement the fast path cannot run exactly as SQLAlchemy would; raised when it is built."""


def _fields(row_type: type) -> tuple[str, ...]:
    if dataclasses.is_dataclass(row_type):
        return tuple(f.name for f in dataclasses.fields(row_type))
    fields = getattr(row_type, "_fields", None)  # a NamedTuple
    if fields is None:
        raise UnsupportedStatement(f"row type {row_type.__name__} is neither a NamedTuple nor a dataclass")
    return tuple(fields)


def _refusal(stmt: ClauseElement, compiled) -> str | None:
    """Why the fast path cannot run this compiled statement, or None."""
    options = stmt.get_execution_options() if hasattr(stmt, "get_execution_options") else {}
    if options:
        return f"execution options {sorted(options)} would be ignored on the driver's cursor"
    for name, bind in compiled.binds.items():
        if bind.expanding:
            return f"parameter {name!r} is an expanding IN (its SQL depends on the list); run it through SQLAlchemy"
        if bind.literal_execute:
            return f"parameter {name!r} is rendered into the SQL at execution (literal_execute)"
        if bind.callable is not None:
            return f"parameter {name!r} is computed at execution (callable_)"
    if compiled.escaped_bind_names:
        return f"parameter names {sorted(compiled.escaped_bind_names)} need escaping; rename them"
    prefetch = [*getattr(compiled, "insert_prefetch", ()), *getattr(compiled, "update_prefetch", ())]
    if prefetch:
        return (f"columns {[c.key for c in prefetch]} take a default from SQLAlchemy's execution context; "
                "give them in values()")
    return None


class _Compiled:
    """One statement compiled for one dialect: the SQL text, how to build the driver's parameters
    from plain values, how to convert the result columns."""

    __slots__ = ("sql", "positional", "names", "fixed", "bind_procs", "result_names", "result_procs", "conversions",
                 "plan", "order", "reads")

    def __init__(self, stmt: ClauseElement, dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        refusal = _refusal(stmt, compiled)
        if refusal is not None:
            raise UnsupportedStatement(f"{dialect.name}: {refusal}: {str(compiled)[:200]}")
        required = {name for name, bind in compiled.binds.items() if bind.required}
        # Public API: the SQL, the parameter order and the bind processors SQLAlchemy itself would use.
        state = compiled.construct_expanded_state({name: None for name in required})
        self.sql: str = state.statement
        self.positional: bool = state.positiontup is not None
        self.names: Sequence[str] = tuple(state.positiontup if self.positional else state.parameters)
        # Values written into the statement itself (``Cadre.active == True`` becomes a bind).
        self.fixed = {name: value for name, value in state.parameters.items() if name not in required}
        # ExpandedState.processors holds only those of expanded parameters: ask each bind's type.
        procs = {name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()}
        self.bind_procs: dict[str, Callable[[Any], Any]] = {name: proc for name, proc in procs.items() if proc is not None}
        # Each parameter converted once, even one the SQL names twice (as SQLAlchemy does: a sealed value is
        # one token), then put in the driver's order.
        unique = tuple(dict.fromkeys(self.names))
        self.plan = tuple((name, self.bind_procs.get(name)) for name in unique)
        self.order = None if unique == tuple(self.names) else tuple(unique.index(name) for name in self.names)
        columns = list(stmt.exported_columns) if hasattr(stmt, "exported_columns") else []
        self.result_names = tuple(col.key for col in columns)
        self.result_procs = tuple(_result_processor(col.type, dialect) for col in columns)
        # Only the columns that need converting are touched per row (SQLite's booleans, JSON, UTC).
        self.conversions = tuple((i, proc) for i, proc in enumerate(self.result_procs) if proc is not None)
        self.reads = only_reads(self.sql)

    def params(self, values: dict[str, Any]):
        fixed = self.fixed
        out = []
        for name, proc in self.plan:
            value = values[name] if name in values else fixed[name]
            out.append(value if proc is None or value is None else proc(value))
        if self.order is not None:
            out = [out[i] for i in self.order]
        if self.positional:
            return tuple(out)
        return dict(zip(self.names, out))


class Prepared(Generic[R]):
    """A Core statement run with plain parameters on the DBAPI cursor of a SQLAlchemy connection
    (or of a session's connection, after flushing the session).

    ``rows(conn, **params)`` returns the result rows as ``row`` objects (a NamedTuple or dataclass
    whose fields are the statement's columns) for a SELECT or a statement with RETURNING;
    ``run(conn, **params)`` returns the cursor's rowcount.
    """

    def __init__(self, stmt: ClauseElement | Callable[[Any], ClauseElement], row: type[R] | None = None, *,
                 dialects: tuple[str, ...] = ("sqlite", "postgresql")) -> None:
        """``stmt``: the statement, or for an INSERT … ON CONFLICT a function given the dialect's
        insert construct (``lambda insert: insert(table).values(…).on_conflict_do_nothing()``).
        Compiled here for SQLite and PostgreSQL: what the fast path cannot run is refused now.
        ``dialects``: the databases the statement is written for (one that only PostgreSQL runs, a
        WITH of several writes, say); run on another, it is refused (``UnsupportedStatement``)."""
        self.build = stmt
        self.row = row
        self.dialects = dialects
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}
        for dialect in CHECKED_DIALECTS:
            if dialect.name not in dialects:
                continue
            compiled = self._compile(dialect)
            columns = compiled.result_names
            if row is not None and _fields(row) != columns:
                raise UnsupportedStatement(f"row type {row.__name__} has fields {_fields(row)}, "
                                           f"the statement returns {columns}")
            if row is None and columns:
                raise UnsupportedStatement(f"the statement returns {columns}: give it a row type")

    def statement(self, dialect) -> ClauseElement:
        """The SQLAlchemy statement for a dialect (what ``Connection.execute`` would run)."""
        return self.build if isinstance(self.build, ClauseElement) else self.build(dialect_insert(dialect.name))

    def _compile(self, dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)  # the driver decides the parameter style
        compiled = self._by_dialect.get(key)
        if compiled is None:
            if dialect.name not in self.dialects:
                raise UnsupportedStatement(f"written for {', '.join(self.dialects)}, not {dialect.name}")
            compiled = self._by_dialect[key] = _Compiled(self.statement(dialect), dialect)
        return compiled

    def _execute(self, conn: Connection | Session, values: dict[str, Any]):
        if isinstance(conn, Session):
            conn.flush()  # the cursor below does not autoflush what the session holds
            conn = conn.connection()
        compiled = self._compile(conn.dialect)
        # The DBAPI connection: the driver's own for psycopg and sqlite3, SQLAlchemy's synchronous face of
        # asyncpg's on the asyncio engine (DATABASE_ASYNC_EVENTS).
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(compiled.sql, compiled.params(values))
        return compiled, cursor

    def _asyncpg(self, conn: Connection | Session):
        """asyncpg's own connection, when the statement may run on it directly: the asyncio engine's
        connection (DATABASE_ASYNC_EVENTS) in a transaction already begun, or in an event's
        ``LazyTransaction`` (a statement that writes begins the transaction first). SQLAlchemy's
        adapter costs about 40 µs of Python a statement over asyncpg's own ``fetch`` (bench/README.md,
        session 8). Elsewhere the adapter's cursor runs it, which begins a transaction if it would."""
        if isinstance(conn, Session):
            conn.flush()
            conn = conn.connection()
        if conn.dialect.driver != "asyncpg":
            return conn, None, None
        compiled = self._compile(conn.dialect)
        driver = conn.connection.driver_connection
        if driver.is_in_transaction():
            return conn, compiled, driver
        lazy = conn.connection.info.get(LAZY_TRANSACTION)
        if lazy is None:
            return conn, compiled, None
        if not compiled.reads:
            lazy.begin(conn)
        return conn, compiled, driver

    def rows(self, conn: Connection | Session, **values: Any) -> list[R]:
        conn, compiled, driver = self._asyncpg(conn)
        if driver is not None:
            fetched = await_only(driver.fetch(compiled.sql, *compiled.params(values)))
        else:
            compiled, cursor = self._execute(conn, values)
            try:
                fetched = cursor.fetchall()
            finally:
                cursor.close()
        make = self.row
        conversions = compiled.conversions
        if not conversions:
            return [make(*row) for row in fetched]
        out = []
        for row in fetched:
            values = list(row)
            for i, proc in conversions:
                values[i] = proc(values[i])
            out.append(make(*values))
        return out

    def first(self, conn: Connection | Session, **values: Any) -> R | None:
        rows = self.rows(conn, **values)
        return rows[0] if rows else None

    def run(self, conn: Connection | Session, **values: Any) -> int:
        conn, compiled, driver = self._asyncpg(conn)
        if driver is not None:
            status = await_only(driver.execute(compiled.sql, *compiled.params(values)))  # "UPDATE 1", "INSERT 0 1"
            return int(status.rsplit(" ", 1)[-1])
        _compiled, cursor = self._execute(conn, values)
        try:
            return cursor.rowcount
        finally:
            cursor.close()


# -- a transaction begun at the first write (the asyncpg path of DATABASE_ASYNC_EVENTS) -----------

LAZY_TRANSACTION = "zuofeng.lazy_transaction"  # the key in the pooled connection's ``info``

_SELECT = re.compile(r"\s*SELECT\b", re.IGNORECASE)
# What makes a SELECT more than a read: a row lock, a sequence, an advisory lock, a notification, a
# setting, a large object, SELECT … INTO, a write in a WITH (a WITH is not a SELECT at its start
# anyway). The project's statements call no function of its own that writes.
_NOT_ONLY_READ = re.compile(r"\bFOR\s+(NO\s+KEY\s+)?UPDATE\b|\bFOR\s+(KEY\s+)?SHARE\b|\bnextval\b|\bsetval\b|"
                            r"\bpg_(try_)?advisory|\bpg_notify\b|\bset_config\b|\blo_\w+\s*\(|"
                            r"\bINTO\b|\bINSERT\b|\bUPDATE\b|\bDELETE\b", re.IGNORECASE)


def only_reads(sql: str) -> bool:
    """The statement reads and nothing more (it may run outside a transaction without changing what
    it does). Anything else counts as a write, a row lock included: text that is not sure is a write,
    which only costs the event its transaction a little earlier."""
    return bool(_SELECT.match(sql)) and not _NOT_ONLY_READ.search(sql)


class LazyTransaction:
    """A transaction that begins at the event's first statement that writes (or locks), not before.

    The asyncpg path (bot/core/engine.py) reads the dialogue row and runs the step outside a
    transaction: most steps only read, and their event's last writes are one statement that is whole
    on its own (``hot.finish_event``), so such an event costs two round trips fewer (BEGIN, COMMIT).
    Set in the connection's ``info`` (``LAZY_TRANSACTION``) while the event runs; every statement on
    the connection asks it first, SQLAlchemy's through ``guard_writes`` and the fast path's through
    ``Prepared``: one that does more than read (``only_reads``) begins the transaction, and
    ``on_begin(conn)`` runs in it before that statement (the caller locks the dialogue row there and
    checks it is still the version read). ``armed`` False: statements run as they come, in the
    transaction if one was begun, else each on its own (the event's last statement)."""

    __slots__ = ("driver", "on_begin", "armed", "transaction")

    def __init__(self, driver, on_begin: Callable[[Any], None] | None = None) -> None:
        self.driver = driver  # asyncpg's connection
        self.on_begin = on_begin
        self.armed = True
        self.transaction = None  # asyncpg's, once begun

    def begin(self, conn) -> None:
        if not self.armed:  # begun already, or the event's last statement
            return
        transaction = self.driver.transaction()
        await_only(transaction.start())
        self.transaction, self.armed = transaction, False
        if self.on_begin is not None:
            self.on_begin(conn)


def guard_writes(engine) -> None:
    """Makes SQLAlchemy's statements on ``engine`` (the asyncio engine's synchronous face) begin an
    event's ``LazyTransaction`` before any that does more than read: the ORM's flushes, Core
    statements, ``exec_driver_sql``."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        lazy = conn.connection.info.get(LAZY_TRANSACTION)
        if lazy is not None and lazy.armed and not only_reads(statement):
            lazy.begin(conn)


_REMEMBERING: dict[tuple, Callable[[Any], Any]] = {}


def _bind_processor(type_, dialect) -> Callable[[Any], Any] | None:
    """The type's bind processor, as SQLAlchemy gives it. A datetime column's is shared by the hot
    statements with a type of the same class and arguments, and gives its last result again for the
    same datetime object (immutable, so the same text): an event writes its ``now`` to the dialogue
    row and with its answer, and converting one is 22 K instructions on SQLite (UTC, then text)."""
    proc = type_.dialect_impl(dialect).bind_processor(dialect)
    try:
        is_datetime = proc is not None and getattr(type_, "impl_instance", type_).python_type is datetime
    except NotImplementedError:
        is_datetime = False
    if not is_datetime:
        return proc
    key = (dialect.name, dialect.driver, type(type_), repr(type_))
    shared = _REMEMBERING.get(key)
    if shared is None:
        shared = _REMEMBERING[key] = _remembering(proc)
    return shared


def _remembering(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    last = (None, None)  # one tuple, replaced whole: a thread never pairs a value with another's result

    def process(value):
        nonlocal last
        seen = last
        if seen[0] is value:
            return seen[1]
        result = proc(value)
        last = (value, result)
        return result

    return process


def _result_processor(type_, dialect):
    """The column type's conversion of a driver value; numbers need none where the driver gives floats
    already (psycopg's double precision), and PostgreSQL's Float asks for the cursor's type code,
    which a statement compiled ahead of running has not got."""
    from sqlalchemy import Float

    if isinstance(type_, Float) and dialect.name == "postgresql":
        return None
    return type_.dialect_impl(dialect).result_processor(dialect, None)

