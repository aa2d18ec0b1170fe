"""The conversation engine: the core's one door for every channel, and where each event runs.

A channel translates its messenger's event into an ``Inbound`` and awaits ``Engine.dispatch``; it
gets an ``Outcome`` (the replies to render) and never opens a session, reads the database's dialect,
runs SQL or chooses a thread. The dispatch decision is taken here, once:

- **inline**, on the channel's event loop (``handle_now``), when that costs no waiting: SQLite, a
  short event, the write lock free. An event is about a millisecond of Python with the database in
  the process; a worker thread would add the hand-off and, above all, the thread's fight for the GIL
  with the loop (every SQLite call releases it, and getting it back waits out the loop's switch
  interval: 10-20 ms a step under load);
- **a worker thread** (``handle``) for the rest: PostgreSQL (statements wait on the network), a
  feature declared ``long`` (exports, rankings, a unit's figures, every step of the spot-check), or
  the write lock held elsewhere (another process, the scheduler). On SQLite those threads are one
  writer thread, first come first served, and the long reads have threads of their own;
- **the read path** for a long command that only reads (``Feature.reads_only``) on SQLite: seconds
  of reading without the write lock (``UnitOfWork.read_then_write``).

A user's events run one at a time in arrival order (a lane per user), whichever way each goes.
What runs in every case is the one unit of work (bot/core/unit_of_work.py); what a command or a
typed word means is the router's (bot/core/router.py), from the list of features
(bot/core/features.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Callable

from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import OperationalError

from bot import metrics, texts
from bot.config import Settings
from bot.core.router import Router
from bot.core.types import Inbound, Outcome, Reply
from bot.core.unit_of_work import BeforeCommit, ConcurrentUpdate, Decline, Redelivered, UnitOfWork
from storage.db import Clock, make_engine, session_scope, utcnow
from storage.prepared import LAZY_TRANSACTION, LazyTransaction

log = logging.getLogger(__name__)

__all__ = ["Engine", "ConcurrentUpdate"]


CONFIRM_DELAY = 0.5  # seconds a delivery mark may wait for the next event's transaction


def _stale() -> Outcome:
    return Outcome(replies=[Reply(texts.STALE_BUTTON)], stale=True)


class Engine:
    """Handles inbound events for every channel; safe to share between threads and processes."""

    def __init__(self, db: DbEngine, settings: Settings, clock: Clock = utcnow):  # the one clock (storage.db); tests pass a settable one
        self.db = db
        self.settings = settings
        self.clock = clock
        self.router = Router(settings)
        self.work = UnitOfWork(self.router, settings)
        self._sqlite = db.dialect.name == "sqlite"
        self._now_db: DbEngine | None = None  # see _now_connection
        self._now_conn = None
        self._now_lock = threading.Lock()
        # Per user, events run one at a time and in arrival order (see dispatch).
        self._lanes: dict[tuple[str, str], list] = {}
        # SQLite takes one writer at a time and lets the others sleep and poll: events that need a
        # thread queue for one, first come first served. Long reads have their own threads.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="core") if self._sqlite else None
        # DATABASE_ASYNC_EVENTS (PostgreSQL): events on the loop through asyncpg, on the one loop that
        # started it (``start_async``: the web app's); events on any other loop go to threads.
        self._async = not self._sqlite and settings.database_async_events
        self._adb: tuple[asyncio.AbstractEventLoop, object] | None = None
        self._in_flight = 0  # events on the asyncpg path now
        self._idle: asyncio.Event | None = None
        self._confirm_timer: asyncio.TimerHandle | None = None

    # -- the door --------------------------------------------------------------------------------

    async def dispatch(self, inbound: Inbound, *, before_commit: BeforeCommit | None = None) -> Outcome:
        """Handles one event from any channel: the one entry point channels call.

        ``before_commit(ctx, outcome)`` runs in the event's own transaction with the event's context
        and the outcome: a channel that must answer a redelivery byte for byte (WeChat) stores its
        rendered reply there, through a storage function.
        """
        started = time.perf_counter()
        key = (inbound.channel, inbound.user_id)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = [asyncio.Lock(), 0]
        lane[1] += 1
        try:
            async with lane[0]:
                outcome = self.handle_now(inbound, before_commit=before_commit)
                if outcome is None and self._on_loop(inbound):
                    outcome = await self._handle_async(inbound, before_commit)
                if outcome is None:
                    executor = None if self.router.is_long(inbound) else self._writer
                    outcome = await asyncio.get_running_loop().run_in_executor(
                        executor, partial(self.handle, inbound, before_commit=before_commit))
                metrics.observe_event(inbound.channel, "duplicate" if outcome.duplicate else
                                      "stale" if outcome.stale else "ok", time.perf_counter() - started)
                return outcome
        except Exception:
            metrics.observe_event(inbound.channel, "error", time.perf_counter() - started)
            raise
        finally:
            lane[1] -= 1
            if lane[1] == 0:
                self._lanes.pop(key, None)

    async def confirm(self, inbound: Inbound) -> None:
        """The channel delivered the event's answer: a redelivery of the event now gets nothing. The mark
        goes with the next event's transaction, or after ``CONFIRM_DELAY`` when none comes."""
        if inbound.event_key is None:
            return
        self.work.confirm(inbound, self.clock())
        if self._confirm_timer is None:
            loop = asyncio.get_running_loop()
            self._confirm_timer = loop.call_later(CONFIRM_DELAY, lambda: loop.create_task(self._flush_confirms()))

    async def _flush_confirms(self) -> None:
        self._confirm_timer = None
        if not self.work.delivered:
            return
        if self._inline(lambda conn: self.work.mark_delivered(conn) + 1) is None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._confirm_now)

    async def defer(self, inbound: Inbound, replies: list[Reply]) -> None:
        """The channel could not deliver the event's answer and no redelivery will come (long polling):
        the replies go to the durable outbox as numbered text, and the event counts as answered."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._defer_now, inbound, replies)

    def _defer_now(self, inbound: Inbound, replies: list[Reply]) -> None:
        from sqlmodel import Session

        from bot.core import outbox

        now = self.clock()
        with self.db.connect() as conn, conn.begin():
            session = Session(bind=conn, join_transaction_mode="rollback_only")
            for i, reply in enumerate(replies):
                outbox.enqueue(session, key=f"reply:{inbound.channel}:{inbound.event_key}:{i}", kind="reply",
                               channel=inbound.channel, recipient=inbound.user_id, body=reply.numbered_text(),
                               now=now, settings=self.settings)
            session.flush()
            self.work.confirm(inbound, now)
            self.work.mark_delivered(conn)

    def _confirm_now(self) -> None:
        with self.db.connect() as conn, conn.begin():
            self.work.mark_delivered(conn)

    async def run(self, work: Callable, *args, read_only: bool = False):
        """``work(session, *args)`` in a session of its own, committed when it returns, where the core
        runs such work (SQLite: the writer thread; a read-only one on any thread): for a web page or a
        console that calls a core function outside a chat event. Channels never open sessions."""
        def in_session():
            with session_scope(self.db, read_only=read_only) as session:
                return work(session, *args)

        executor = None if read_only or not self._sqlite else self._writer
        return await asyncio.get_running_loop().run_in_executor(executor, in_session)

    # -- where it runs -----------------------------------------------------------------------------

    def handle_now(self, inbound: Inbound, *, before_commit: BeforeCommit | None = None) -> Outcome | None:
        """Handles the event on the calling thread if that costs no waiting; None: call ``handle`` in
        a worker thread instead (nothing was done). See the module's docstring for when it declines."""
        if not self._sqlite or self.router.is_long(inbound):
            return None
        now = self.clock()
        try:
            return self._inline(lambda conn: self.work.write(conn, inbound, now, before_commit, inline=True))
        except (Decline, Redelivered):
            return None
        except ConcurrentUpdate:
            return _stale()

    def handle(self, inbound: Inbound, *, before_commit: BeforeCommit | None = None) -> Outcome:
        """Processes one event on this thread, waiting for the database as long as it takes."""
        try:
            return self._handle(inbound, before_commit)
        except Redelivered:  # the same event, handled meanwhile by another process: its answer now
            return self._handle(inbound, before_commit)

    def _handle(self, inbound: Inbound, before_commit: BeforeCommit | None) -> Outcome:
        now = self.clock()
        try:
            if self._sqlite and self.router.reads_only(inbound):
                try:
                    return self.work.read_then_write(self.db, inbound, now, before_commit)
                except Decline:
                    pass  # a keyword typed inside a flow is the flow's answer: the usual way
            with self.db.connect() as conn, conn.begin():
                return self.work.write(conn, inbound, now, before_commit)
        except ConcurrentUpdate:
            return _stale()

    async def start_async(self) -> None:
        """DATABASE_ASYNC_EVENTS: the asyncpg engine for the running loop (the web app's, at start),
        connected once so that a wrong setting fails now, not at the first event."""
        if not self._async or self._adb is not None:
            return
        from sqlalchemy import text as sql

        from storage.db import make_async_engine

        adb = make_async_engine(self.db.url.render_as_string(hide_password=False),  # URL checked by Settings.check
                                own_transactions=True)
        async with adb.connect() as conn:
            await conn.execute(sql("SELECT 1"))
        self._adb = (asyncio.get_running_loop(), adb)

    def _on_loop(self, inbound: Inbound) -> bool:
        """The event goes the asyncpg way: the path is started on this loop, and the event is not a
        long command, nor carries a picture (its file is written and hashed by Pillow: a thread's work)."""
        return (self._adb is not None and self._adb[0] is asyncio.get_running_loop()
                and not self.router.is_long(inbound) and inbound.photo is None and inbound.photo_ref is None)

    async def _handle_async(self, inbound: Inbound, before_commit: BeforeCommit | None) -> Outcome | None:
        """``handle`` on the event loop: the unit of work run by SQLAlchemy's ``run_sync`` on an asyncpg
        connection, each statement awaited (no thread, the loop free while the server answers). None:
        a step of a long flow, for a thread (``Decline``, rolled back, nothing done)."""
        self._in_flight += 1
        try:
            try:
                return await self._write_async(inbound, before_commit)
            except Redelivered:  # the same event, handled meanwhile by another process, or its row changed:
                return await self._write_async(inbound, before_commit, lazy=False)  # again, with the row locked
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    def _inline(self, work):
        """``work(conn)`` in a transaction on the event loop's own SQLite connection, if the write lock
        is free now (its connection has no busy timeout, so BEGIN IMMEDIATE fails at once rather than
        blocking the loop); None when it is not, or another thread is in here."""
        if not self._sqlite or not self._now_lock.acquire(blocking=False):
            return None
        try:
            conn = self._now_connection()
            if conn is None:
                return None
            try:
                transaction = conn.begin()
            except (OperationalError, sqlite3.OperationalError) as exc:  # BEGIN IMMEDIATE runs on the driver
                if "locked" in str(exc) or "busy" in str(exc):
                    return None
                raise
            with transaction:
                return work(conn)
        finally:
            self._now_lock.release()

    def _now_connection(self):
        """The connection of the inline path (under ``_now_lock``): the same SQLite file, never waiting
        for its lock, kept open between events (a pool checkout and the rollback on return were a
        fifth of a short event)."""
        if self._now_conn is None:
            database = self.db.url.database
            if not database or database == ":memory:":
                return None  # a second connection would be a second, empty database
            self._now_db = make_engine(self.db.url.render_as_string(hide_password=False), wait_for_lock=False)
            self._now_conn = self._now_db.connect()
        return self._now_conn

    async def _write_async(self, inbound: Inbound, before_commit: BeforeCommit | None, *,
                           lazy: bool = True) -> Outcome | None:
        """One event on an asyncpg connection. The transaction is asyncpg's own (make_async_engine's
        own_transactions): its BEGIN and COMMIT, and the hot statements, skip SQLAlchemy's adapter; the
        step's other statements go through it, in the same transaction. ``lazy`` (an event with a key):
        the transaction begins at the event's first write, if it has one before its last statement
        (``LazyTransaction``, see ``UnitOfWork.write``): an event that only reads and answers costs
        two round trips fewer, BEGIN and COMMIT."""
        now = self.clock()
        try:
            async with self._adb[1].connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                try:
                    if not lazy or inbound.event_key is None:
                        async with driver.transaction():
                            return await conn.run_sync(
                                lambda sync: self.work.write(sync, inbound, now, before_commit, inline=True))
                    pending = LazyTransaction(driver)
                    try:
                        outcome = await conn.run_sync(self._lazily, pending, inbound, now, before_commit)
                        if pending.transaction is not None:
                            await pending.transaction.commit()
                        return outcome
                    except BaseException:
                        if pending.transaction is not None and driver.is_in_transaction() and not driver.is_closed():
                            with contextlib.suppress(Exception):  # a connection in doubt is dropped below
                                await pending.transaction.rollback()
                        raise
                except BaseException as exc:
                    # SQLAlchemy resets on return only what it began itself: a connection closed, still in
                    # a transaction (a rollback that failed), or left by a cancelled statement is thrown
                    # away here, never handed to the next event.
                    if (driver.is_closed() or driver.is_in_transaction()
                            or isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit))):
                        await asyncio.shield(conn.invalidate())
                    raise
        except Decline:
            return None
        except ConcurrentUpdate:
            return _stale()

    def _lazily(self, sync, pending: LazyTransaction, inbound: Inbound, now, before_commit: BeforeCommit | None):
        info = sync.connection.info
        info[LAZY_TRANSACTION] = pending
        try:
            return self.work.write(sync, inbound, now, before_commit, inline=True, lazy=pending)
        finally:
            del info[LAZY_TRANSACTION]

    async def aclose(self, wait: float = 10.0) -> None:
        """Closes the asyncio engine of DATABASE_ASYNC_EVENTS on its loop, after the events on it have
        committed (at most ``wait`` seconds: an answer WeChat was told would come must not be rolled
        back by the shutdown), then ``close``."""
        if self._adb is not None and self._adb[0] is asyncio.get_running_loop():
            if self._in_flight:
                self._idle = asyncio.Event()
                try:
                    await asyncio.wait_for(self._idle.wait(), wait)
                except asyncio.TimeoutError:
                    log.warning("%d events still running at shutdown", self._in_flight)
            await self._adb[1].dispose()
            self._adb = None
        self.close()

    def close(self) -> None:
        """Closes what the engine opened itself (the database engine given is the caller's to dispose);
        delivery marks still pending are written first."""
        if self.work.delivered:
            try:
                self._confirm_now()
            except Exception:  # closing: a mark lost only lets a redelivery send the answer again
                log.warning("could not write %d delivery marks on close", len(self.work.delivered))
        if self._writer is not None:
            self._writer.shutdown(wait=False)
        with self._now_lock:
            if self._now_conn is not None:
                self._now_conn.close()
                self._now_conn = None
            if self._now_db is not None:
                self._now_db.dispose()
                self._now_db = None
