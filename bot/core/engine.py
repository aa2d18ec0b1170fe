"""The conversation engine: one inbound event in, one transaction, the replies out.

For every event it opens one session, drops the event if its key was seen before (a webhook
delivered twice), loads and locks the user's dialogue row, routes the event to a command or the
current flow, saves the new state with a version check, and commits once: the answer and the next
step are stored together or not at all. Replies are returned to the channel, never sent from here.
"""

from __future__ import annotations

from dataclasses import replace
import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot import texts
from bot.config import Settings
from bot.core import binding, commands
from bot.core.dialogue import Context, Dialogue, Flow
from bot.core.flows.contact import ContactFlow
from bot.core.flows.ledger import LedgerFlow, MineFlow, ReportFlow, TodoFlow
from bot.core.flows.service_object import ServiceObjectFlow
from bot.core.flows.spotcheck import SpotCheckFlow
from bot.core.flows import rating
from bot.core.flows.visit import VisitFlow
from bot.core.survey import load_survey
from bot.core.types import Inbound, Outcome, Reply
from storage.db import make_engine
from storage.models import Role
from storage import hot

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


# Flows whose steps read a whole unit's or the city's data (the spot-check: the draw, the open
# calls): neither their start nor any step of them runs inline (handle_now).
LONG_FLOWS = {"spotcheck"}


class _Decline(Exception):
    """handle_now backs out: the event turned out to belong in a thread (rolled back, nothing done)."""


class ConcurrentUpdate(Exception):
    """The dialogue row changed under us: another event for the same user won the race."""


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


def _record_event(conn, inbound: Inbound, now: datetime) -> bool:
    """Records the event's key; False if it was there already (a redelivery)."""
    return inbound.event_key is None or hot.record_event(conn, inbound.channel, inbound.event_key[:100], now)


def _dialogue(row: hot.StateRow) -> Dialogue:
    # The row's data was decoded from JSON just now: a fresh object, the dialogue's own to change.
    return Dialogue(row.flow, row.step, row.data or {}, row.version)


def _session_opener(conn, sessions: list[Session]) -> Callable[[], Session]:
    def open_session() -> Session:
        # Joins the transaction begun on ``conn``: it flushes into it and never commits it.
        session = Session(bind=conn, expire_on_commit=False, join_transaction_mode="rollback_only")
        sessions.append(session)
        return session
    return open_session


def _flush(sessions: list[Session]) -> None:
    for session in sessions:
        session.flush()


def _close(sessions: list[Session]) -> None:
    for session in sessions:
        session.close()
    sessions.clear()


def _conclude(ctx: Context, version: int, before_commit, sessions: list[Session]) -> Outcome:
    """The outcome, buttons rendered for the state's version; ``before_commit`` run and flushed."""
    replies = [item(version) if callable(item) else item for item in ctx.replies]
    outcome = Outcome(replies=replies, chosen=ctx.chosen, stale=ctx.stale)
    if before_commit is not None:
        before_commit(ctx, outcome)
        _flush(sessions)
    return outcome


class Engine:
    """Handles inbound events for every channel; safe to share between threads and processes."""

    def __init__(self, db: DbEngine, settings: Settings, clock: Clock = system_clock):
        self.db = db
        self.settings = settings
        self.clock = clock
        self.flows: dict[str, Flow] = {
            "visit": VisitFlow(load_survey(settings.survey_file), page_size=settings.household_page_size),
            "contact": ContactFlow(page_size=settings.household_page_size),
            "rating": rating.FLOW,  # started by /start <evaluation token>, open to citizens
            "ledger": LedgerFlow(page_size=settings.household_page_size),
            "todo": TodoFlow(page_size=settings.household_page_size),
            "report": ReportFlow(),
            "object": ServiceObjectFlow(page_size=settings.household_page_size),
            "mine": MineFlow(page_size=settings.household_page_size),
            "spotcheck": SpotCheckFlow(page_size=settings.household_page_size),  # 电话随机访问
        }
        # Flow-starting commands live beside the one-shot ones, with the least role they need.
        self.flow_commands = {"visit": Role.CADRE, "contact": Role.CADRE, "ledger": Role.SUPERVISOR,
                              "todo": Role.CADRE, "report": None, "mine": None, "object": Role.CADRE}
        self.flow_commands["spotcheck"] = Role.SUPERVISOR
        self._now_db: DbEngine | None = None  # see handle_now
        self._now_conn = None
        self._now_lock = threading.Lock()
        # Per user, events run one at a time and in arrival order (see dispatch).
        self._lanes: dict[tuple[str, str], list] = {}
        # SQLite takes one writer at a time and lets the others sleep and poll: events that need a
        # thread queue for one, first come first served. Long reads have their own threads.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="core") if db.dialect.name == "sqlite" else None

    async def dispatch(self, inbound: Inbound, *,
                       before_commit: Callable[[Context, Outcome], None] | None = None) -> Outcome:
        """Handles one event from any channel: the one entry point channels call.

        The core decides where the event runs: inline on the event loop when that costs no waiting
        (``handle_now``), else in a worker thread; a user's events run one at a time, in the order
        they arrived, whichever way each of them goes.
        """
        key = (inbound.channel, inbound.user_id)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = [asyncio.Lock(), 0]
        lane[1] += 1
        try:
            async with lane[0]:
                outcome = self.handle_now(inbound, before_commit=before_commit)
                if outcome is None:
                    executor = None if self._runs_long(inbound) else self._writer
                    outcome = await asyncio.get_running_loop().run_in_executor(
                        executor, partial(self.handle, inbound, before_commit=before_commit))
                return outcome
        finally:
            lane[1] -= 1
            if lane[1] == 0:
                self._lanes.pop(key, None)

    def handle_now(self, inbound: Inbound, *, before_commit: Callable[[Context, Outcome], None] | None = None
                   ) -> Outcome | None:
        """Handles the event on the calling thread if that costs no waiting; None: call ``handle`` in
        a worker thread instead (nothing was done).

        For SQLite, where an event is about a millisecond of Python and the database is in the
        process: a channel's event loop calls this first, which spares the hand-off to a thread and
        back and, above all, the worker thread's fight for the GIL with the loop (every SQLite call
        releases the GIL, and getting it back waits out the loop's switch interval: 10-20 ms a
        step under load, for a millisecond of work). It declines, and the channel uses a thread, when
        the event may take long (a command marked ``long``: exports, rankings, a unit's figures), when
        the database is PostgreSQL (statements wait on the network), or when the write lock is held
        elsewhere (another process, the scheduler in this one): its own connection has no busy
        timeout, so BEGIN IMMEDIATE fails at once rather than blocking the loop.
        """
        if self.db.dialect.name != "sqlite" or self._runs_long(inbound):
            return None
        if not self._now_lock.acquire(blocking=False):
            return None  # another thread is in here (two event loops on one core): never wait
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
                return self._handle(conn, inbound, self.clock(), before_commit, inline=True)
        except _Decline:
            return None
        except ConcurrentUpdate:
            return Outcome(replies=[Reply(texts.STALE_BUTTON)], stale=True)
        finally:
            self._now_lock.release()

    def _runs_long(self, inbound: Inbound) -> bool:
        return self._long_command(inbound) is not None or self._command_name(inbound) in LONG_FLOWS

    @staticmethod
    def _command_name(inbound: Inbound) -> str:
        name = inbound.command
        if name is None and inbound.text:
            name = commands.KEYWORDS.get(inbound.text.strip().partition(" ")[0])
        return (name or "").lower()

    def _long_command(self, inbound: Inbound) -> str | None:
        """The name of the long command (``Command.long``: it only reads) the event asks for, if any."""
        name = self._command_name(inbound)
        command = commands.COMMANDS.get(name)
        return name if command is not None and command.long else None

    def _now_connection(self):
        """The connection ``handle_now`` uses (under ``_now_lock``): the same SQLite file, never
        waiting for its lock, kept open between events (a pool checkout and the rollback on return
        were a fifth of a short event)."""
        if self._now_conn is None:
            database = self.db.url.database
            if not database or database == ":memory:":
                return None  # a second connection would be a second, empty database
            self._now_db = make_engine(self.db.url.render_as_string(hide_password=False), wait_for_lock=False)
            self._now_conn = self._now_db.connect()
        return self._now_conn

    def close(self) -> None:
        """Closes what ``handle_now`` opened (the database engine given is the caller's to dispose)."""
        if self._writer is not None:
            self._writer.shutdown(wait=False)
        with self._now_lock:
            if self._now_conn is not None:
                self._now_conn.close()
                self._now_conn = None
            if self._now_db is not None:
                self._now_db.dispose()
                self._now_db = None

    def handle(self, inbound: Inbound, *, before_commit: Callable[[Context, Outcome], None] | None = None) -> Outcome:
        """Processes one event and returns what to send; a redelivered event returns ``duplicate``.

        ``before_commit`` runs in the event's own transaction with the event's context and the
        outcome: a channel that must answer a redelivery identically (WeChat) stores its rendered
        reply there, with the event (``ctx.db`` for prepared statements, ``ctx.session`` for the ORM).

        The event's bookkeeping runs as prepared statements on one connection; an ORM session on
        the same connection and transaction is opened only when a flow or command asks for
        ``ctx.session`` (most steps of a flow never touch the database beyond their own row).
        """
        now = self.clock()
        try:
            if self.db.dialect.name == "sqlite" and self._long_command(inbound) is not None:
                try:
                    return self._handle_reading(inbound, now, before_commit)
                except _Decline:
                    pass  # a keyword typed inside a flow is the flow's answer: the usual way
            with self.db.connect() as conn, conn.begin():
                return self._handle(conn, inbound, now, before_commit)
        except ConcurrentUpdate:
            return Outcome(replies=[Reply(texts.STALE_BUTTON)], stale=True)

    def _handle_reading(self, inbound: Inbound, now: datetime, before_commit) -> Outcome:
        """A long command on SQLite (an export, a ranking: seconds of reading) in two transactions.

        The command runs in a read-only one, which takes no write lock (every other event would
        wait for it) and is rolled back; SQLite refuses any write in it (``query_only``), so a
        long command that started writing would fail loudly, not lose its writes. Then a short
        write transaction records the event (a redelivery that got there first makes this one a
        duplicate, its result dropped), saves the dialogue if the command changed it (a user in
        a flow is shown the flow's question again; if the row changed in between: stale) and runs
        ``before_commit``.
        """
        sessions: list[Session] = []
        with self.db.connect() as conn:
            conn.execution_options(read_only=True)  # BEGIN, not BEGIN IMMEDIATE (storage.db)
            transaction = conn.begin()
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA query_only = ON")
            try:
                if inbound.event_key is not None and hot.event_seen(conn, inbound.channel, inbound.event_key[:100]):
                    return Outcome(duplicate=True)
                row = hot.load_state(conn, inbound.channel, inbound.user_id)
                dialogue = _dialogue(row) if row is not None else Dialogue(None, None, {}, 0)
                if inbound.command is None and dialogue.flow is not None:
                    raise _Decline()
                before = dialogue.snapshot()
                ctx = Context(connection=conn, open_session=_session_opener(conn, sessions), inbound=inbound,
                              dialogue=dialogue, settings=self.settings, now=now,
                              cadre=binding.bound_cadre(conn, inbound.channel, inbound.user_id))
                self._route(ctx)
                _flush(sessions)  # a write here fails: query_only
            finally:
                _close(sessions)
                if transaction.is_active:  # a failed flush has rolled it back already
                    transaction.rollback()
                driver.execute("PRAGMA query_only = OFF")

        with self.db.connect() as conn, conn.begin():
            if not _record_event(conn, inbound, now):
                return Outcome(duplicate=True)
            version = self._load_state(conn, inbound, now).version
            changed = dialogue.snapshot() != before
            # The user's dialogue moved on meanwhile: what was said about it (a flow's question
            # shown again, buttons) is out of date. A plain export or ranking is not.
            if version != dialogue.version and (changed or any(callable(item) for item in ctx.replies)):
                raise ConcurrentUpdate()
            if changed:
                version = self._save_state(conn, inbound, dialogue, version, now)
            ctx.connection, ctx.open_session, ctx._session = conn, _session_opener(conn, sessions), None
            try:
                return _conclude(ctx, version, before_commit, sessions)
            finally:
                _close(sessions)

    def _handle(self, conn, inbound: Inbound, now: datetime, before_commit, *, inline: bool = False) -> Outcome:
        if not _record_event(conn, inbound, now):
            return Outcome(duplicate=True)
        row = self._load_state(conn, inbound, now)
        if inline and row.flow in LONG_FLOWS:
            raise _Decline()  # a step of a long flow: the transaction rolls back, the event key with it
        dialogue = _dialogue(row)
        before = dialogue.snapshot()
        sessions: list[Session] = []
        try:
            ctx = Context(connection=conn, open_session=_session_opener(conn, sessions), inbound=inbound,
                          dialogue=dialogue, settings=self.settings, now=now,
                          cadre=binding.bound_cadre(conn, inbound.channel, inbound.user_id))
            self._route(ctx)
            version = row.version
            _flush(sessions)
            if dialogue.snapshot() != before:
                version = self._save_state(conn, inbound, dialogue, version, now)
            return _conclude(ctx, version, before_commit, sessions)
        finally:
            _close(sessions)

    # -- state ---------------------------------------------------------------------------------

    def _load_state(self, conn, inbound: Inbound, now: datetime) -> hot.StateRow:
        row = hot.load_state(conn, inbound.channel, inbound.user_id)
        if row is None:
            hot.create_state(conn, inbound.channel, inbound.user_id, now)
            row = hot.load_state(conn, inbound.channel, inbound.user_id)
        return row

    def _save_state(self, conn, inbound: Inbound, dialogue: Dialogue, version: int, now: datetime) -> int:
        changed = hot.save_state(conn, inbound.channel, inbound.user_id, expected_version=version,
                                 flow=dialogue.flow, step=dialogue.step, data=dialogue.data, version=version + 1, now=now)
        if changed != 1:
            raise ConcurrentUpdate()
        return version + 1

    # -- routing -------------------------------------------------------------------------------

    def _route(self, ctx: Context) -> None:
        inbound = ctx.inbound
        flow = self.flows.get(ctx.dialogue.flow or "")
        if ctx.dialogue.flow is not None and (flow is None or ctx.dialogue.step not in flow.steps
                                              or (flow.requires_cadre and ctx.cadre is None)):
            # A flow that no longer exists after an upgrade, or a binding removed mid-flow.
            ctx.end_flow()
            flow = None
        command, args = inbound.command, inbound.args
        if command is None and inbound.text and ctx.dialogue.flow is None:
            word, _, rest = inbound.text.strip().partition(" ")
            if word in commands.KEYWORDS:
                command, args = commands.KEYWORDS[word], rest.strip()
        if command is not None:
            if args != inbound.args:
                ctx.inbound = inbound = _with_args(inbound, command, args)
            return self._command(ctx, command.lower())

        if flow is not None:
            return flow.feed(ctx)
        if inbound.contact is not None:
            return commands.bind_by_contact(ctx)
        if inbound.token is not None:
            ctx.stale = True
            return ctx.say(texts.STALE_BUTTON)
        if ctx.cadre is None:
            return ctx.say(texts.NOT_BOUND, request_contact=True)
        ctx.say(texts.UNKNOWN_INPUT)

    def _command(self, ctx: Context, name: str) -> None:
        flow = self.flows.get(ctx.dialogue.flow or "")
        if name == "cancel":
            if flow is None:
                return ctx.say(texts.NOTHING_TO_CANCEL)
            ctx.end_flow()
            return ctx.say(texts.CANCELLED.format(flow=texts.FLOW_NAMES.get(flow.name, "")))
        if name == "resume":
            if flow is None:
                return ctx.say(texts.NOTHING_TO_CANCEL)
            ctx.say(texts.RESUME.format(flow=texts.FLOW_NAMES.get(flow.name, "")))
            return flow.prompt(ctx)

        needed = self.flow_commands.get(name, commands.COMMANDS[name].role if name in commands.COMMANDS else "?")
        if needed == "?":
            ctx.say(texts.UNKNOWN_COMMAND.format(command=name[:30]))
        elif needed is not None and ctx.cadre is None:
            return ctx.say(texts.NOT_BOUND, request_contact=True)
        elif commands.rank(ctx.cadre) < commands.RANK[needed]:
            ctx.say(texts.ROLE_FORBIDDEN.format(command=name, role=texts.ROLE_NAMES[needed]))
        elif name in self.flows:
            if flow is None:
                return self.flows[name].start(ctx)
            if flow.name == name:
                ctx.say(texts.RESUME.format(flow=texts.FLOW_NAMES.get(name, "")))
            else:
                ctx.say(texts.FLOW_BUSY.format(flow=texts.FLOW_NAMES.get(flow.name, "")))
        else:
            commands.COMMANDS[name].run(ctx)
            if flow is not None and name == "help":
                ctx.say(texts.HELP_IN_FLOW.format(flow=texts.FLOW_NAMES.get(flow.name, "")))
        # Whatever was said, a user in the middle of a flow sees where they are.
        if flow is not None and ctx.dialogue.flow == flow.name:
            flow.prompt(ctx)


def _with_args(inbound: Inbound, command: str, args: str) -> Inbound:
    return replace(inbound, command=command, args=args, text=None)
