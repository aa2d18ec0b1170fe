"""Database engine, sessions and migrations for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout and foreign keys on, and every transaction starts
with BEGIN IMMEDIATE: two workers that both read and then write would otherwise fail with
"database is locked" on the upgrade from reader to writer, which the busy timeout cannot wait out.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def utcnow() -> datetime:
    """Now, as an aware UTC time (every datetime column takes and returns aware UTC).

    The one clock of the program: the core, the scheduler and the sender take a ``Clock`` and
    default to this one; tests pass their own.
    """
    return datetime.now(timezone.utc)


Clock = Callable[[], datetime]


def _json_encoder():
    from json.encoder import JSONEncoder, c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:  # an interpreter without the C accelerator
        return None
    # Exactly what json.dumps(value) uses, made once instead of per call, without the check for
    # circular references (a circular value fails with RecursionError instead of ValueError).
    return c_make_encoder(None, JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True)


_ENCODE = _json_encoder()


def json_dumps(value) -> str:
    """``json.dumps(value)``, the same text, for every JSON column (``make_engine``, and the hot
    statements' own compilation in storage/prepared.py): json.dumps builds its encoder at every call,
    a fifth of the 65 K instructions a dialogue row or a kept answer cost to write."""
    return "".join(_ENCODE(value, 0)) if _ENCODE is not None else json.dumps(value)


PING_AFTER_IDLE = 10.0  # seconds a pooled PostgreSQL connection may sit unused before it is pinged


def make_engine(url: str, *, echo: bool = False, wait_for_lock: bool = True,
                ping_after_idle: float = PING_AFTER_IDLE) -> Engine:
    """Creates the engine for ``url``; SQLite files get their folder created and the pragmas above.

    ``wait_for_lock=False`` (SQLite): a transaction that cannot take the write lock at once fails
    with "database is locked" instead of waiting for it (see ``Engine.handle_now`` in the core).
    ``ping_after_idle`` (PostgreSQL): see ``_ping_when_idle``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, echo=echo, pool_size=10, max_overflow=10, json_serializer=json_dumps)
        _ping_when_idle(engine, ping_after_idle)
        return engine

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection per process: SQLite takes one writer at a time anyway, and threads queueing on
    # the pool are woken at once, where SQLite's busy handler would sleep them 1, 2, 5 … 100 ms.
    engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30 if wait_for_lock else 0},
                           pool_size=1, max_overflow=0, pool_timeout=60, json_serializer=json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take transaction control from the driver so BEGIN IMMEDIATE below is what runs.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={30000 if wait_for_lock else 0}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # On the driver's connection: exec_driver_sql would build a whole execution context for it.
        # A read-only session (session_scope(read_only=True)) begins deferred: it takes no write
        # lock, so a long report or digest computation does not hold up every writer.
        read_only = conn.get_execution_options().get("read_only", False)
        conn.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


# What the asyncpg engine takes of DATABASE_URL's query: the folder of PostgreSQL's Unix socket
# (postgresql://user@/db?host=/var/run/postgresql), for a database on the same machine: each round trip
# then skips TCP, about a tenth of an event's CPU in the process (bench/README.md, session 7).
ASYNC_URL_PARAMETERS = frozenset({"host"})


def make_async_engine(url: str, *, ping_after_idle: float = PING_AFTER_IDLE, own_transactions: bool = False):
    """An asyncio engine on asyncpg for the same PostgreSQL database as ``url`` (any driver named in
    it is replaced), with the same pool size and JSON as ``make_engine``'s: the web process's chat
    events run on it, on the event loop (``DATABASE_ASYNC_EVENTS``).

    ``own_transactions``: SQLAlchemy begins and ends no transaction on these connections (its
    AUTOCOMMIT level); the caller does, on asyncpg's own connection (``async with
    conn.driver_connection.transaction()``), and every statement inside, SQLAlchemy's or asyncpg's,
    runs in it. The event path does this: BEGIN and COMMIT through asyncpg directly, and the hot
    statements too (storage/prepared.py), each about 40 µs of Python less than through the adapter."""
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("asyncpg serves PostgreSQL only")
    refused = set(parsed.query) - ASYNC_URL_PARAMETERS
    if refused:  # asyncpg takes none of libpq's other parameters (sslmode, connect_timeout, options...)
        raise ValueError("、".join(sorted(refused)))
    # Beside the threads' pool (still used by long commands and pictures): 10 + 10 more connections per
    # web process. Not fewer kept: a connection beyond pool_size is closed when given back, and asyncpg's
    # connecting again for every event cost more than the threads saved (measured: 5 + 5, 8 users at once).
    engine = create_async_engine(parsed.set(drivername="postgresql+asyncpg"), pool_size=10, max_overflow=10,
                                 json_serializer=json_dumps,
                                 **({"isolation_level": "AUTOCOMMIT"} if own_transactions else {}))
    # The same ping of a connection that sat idle as the threads' pool: the pool's checkout runs in
    # SQLAlchemy's greenlet, where the asyncpg adapter's ping is awaited like any statement.
    _ping_when_idle(engine.sync_engine, ping_after_idle)
    if own_transactions:
        from storage.prepared import guard_writes

        guard_writes(engine.sync_engine)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pings a pooled connection at checkout only when it sat unused ``idle_seconds`` or more.

    ``pool_pre_ping`` pings at every checkout: a round trip more for every chat event (one in six of
    an event's). A connection in steady use is alive, or fails its event loudly; one that sat idle
    may have been closed by the server, a restart or a firewall, and is replaced here before use:
    SQLAlchemy's pool retries the checkout with a new connection when this raises
    ``DisconnectionError`` (the documented "pessimistic, custom" way).
    """
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()  # the ping began a transaction: the caller begins its own
        except Exception as err:
            if engine.dialect.is_disconnect(err, dbapi_conn, None) or getattr(dbapi_conn, "closed", False):
                raise exc.DisconnectionError() from err
            raise


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """One session, one transaction: committed when the block ends, rolled back on any error.

    ``read_only``: for work that only reads (computing digests, reports). On SQLite it then takes no
    write lock; a write in it may fail with "database is locked", so write in a session of its own.
    """
    bind = engine.execution_options(read_only=True) if read_only else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Brings the schema to the newest migration (what ``python -m bot migrate`` runs)."""
    migrate(engine, "head")


def migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    """Runs the migrations up (or ``down``) to ``revision``.

    On SQLite, foreign keys are off while they run and checked afterwards: SQLite changes a column
    by rebuilding its table (Alembic's batch mode), and dropping the old copy of a table other rows
    point at fails with foreign keys on (SQLite's own procedure for such changes:
    https://sqlite.org/lang_altertable.html#otheralter). After a migration that rewrote rows, the
    WAL's old pages are moved into the file (where secure_delete zeroed the freed space, see 0018)
    and the WAL is emptied, so nothing a migration replaced stays on disk in it.
    """
    from alembic import command
    from alembic.migration import MigrationContext

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        before = MigrationContext.configure(conn).get_current_heads()
        if conn.in_transaction():
            conn.rollback()
        # PRAGMAs on the driver's connection, outside any transaction (SQLAlchemy's would begin one).
        driver = conn.connection.driver_connection
        if sqlite:
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
            if sqlite:
                broken = driver.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows pointing at nothing (table, rowid, parent): {broken[:5]}")
        finally:
            if conn.in_transaction():
                conn.rollback()
            if sqlite:
                driver.execute("PRAGMA foreign_keys=ON")
        if sqlite and MigrationContext.configure(conn).get_current_heads() != before:
            conn.rollback()
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def dialect_insert(dialect: str):
    """The INSERT construct with ON CONFLICT (``on_conflict_do_nothing``/``_do_update``) of a dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


@lru_cache(maxsize=None)
def _insert_ignore_statement(dialect: str, model):
    insert = dialect_insert(dialect)
    table = model.__table__
    # RETURNING, not rowcount: psycopg reports -1 for this statement.
    return insert(table).on_conflict_do_nothing().returning(list(table.primary_key.columns)[0])


def insert_ignore(session, model, values: dict):
    """INSERT ... ON CONFLICT DO NOTHING on either database; the new row's key, or None if it existed.

    The statement is built once per model and run with parameters: this is on every inbound
    event's path, and building it each time cost more than running it.
    """
    stmt = _insert_ignore_statement(session.get_bind().dialect.name, model)
    row = session.connection().execute(stmt, values).first()
    return row[0] if row is not None else None
