"""One unit of work per inbound event: the only place where an event's transaction is run.

Every event, whichever way the core runs it (inline on the event loop, in a worker thread, or as a
long read), goes through the same steps, in one transaction:

1. one statement (``hot.start_event``): the user's dialogue row, locked (FOR UPDATE on PostgreSQL;
   SQLite's BEGIN IMMEDIATE has taken the whole database), created empty for a new user; whether the
   event's key was recorded before, with the answer stored for it (a redelivery, answered with that:
   ``Outcome.duplicate``; ``delivered`` says whether a channel confirmed sending it); the bound cadre;
2. run the step: the router (bot/core/router.py) with the event's ``Context``;
3. run the channel's ``before_commit`` hook (WeChat stores its XML, queues the slow part);
4. one statement (``hot.finish_event``) for the event's last writes: the dialogue saved if the step
   changed it, with a version check (``ChangedMeanwhile``: rolled back and run again, the hook's
   work with it; the row lock of step 1 makes it a guard that only a path without that lock would
   trip), the event's key with the rendered answer, and an earlier event's answer marked delivered
   (``confirm``; a mark written by an event that rolls back is kept for a later one). A key that is
   there already was recorded by a redelivery of the same event that another process committed
   meanwhile (the row lock of step 1 made this one wait for it): ``Redelivered``, the transaction
   rolls back and the engine runs the event again, which then finds the answer in step 1. One
   statement on PostgreSQL (a WITH of the three writes); on SQLite, in the process, the three;
5. commit, once: the answer and the next step are stored together or not at all.

Two statements of bookkeeping per event, where there were five or six (the key, the row, the cadre,
the row saved, the answer, the last answer's delivery mark): on PostgreSQL each is a round trip.

On the asyncpg path (``DATABASE_ASYNC_EVENTS``, events with a key) the transaction begins late
(``write``'s ``lazy``, ``storage.prepared.LazyTransaction``): step 1 reads the row without a lock,
outside a transaction, and so does the step while it only reads. The first statement that writes
begins the transaction, locks the row and checks it is still the version read; step 4 makes the
same check itself (``finish_event`` is whole on its own), so most events, which write nothing before
it, have no BEGIN and no COMMIT. A row changed meanwhile: ``ChangedMeanwhile``, the event runs again
with the row locked from the start.

An answer saved is an answer delivered: a channel that could not deliver it (the messenger down, the
process killed after the commit) gets it back when the messenger delivers the event again, and sends
it then; ``confirm`` marks it sent.

On SQLite a long command that only reads (``Feature.reads_only``: exports, rankings) runs its step in
a read-only transaction that takes no write lock, and records the event (steps 1, 3, 4) in a short
write transaction afterwards (``read_then_write``): seconds of reading do not hold up every writer.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime
from typing import Any, Callable

from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session

from bot.config import Settings
from bot.core import binding
from bot.core.dialogue import Context, Dialogue
from bot.core.router import Router
from bot.core.types import Inbound, Option, Outcome, Reply
from storage import hot
from storage.prepared import LazyTransaction

log = logging.getLogger(__name__)

BeforeCommit = Callable[[Context, Outcome], None]
KEY_LIMIT = 100  # the event_key column

class Decline(Exception):
    """The inline path backs out: the event belongs in a thread (rolled back, nothing done)."""


class ConcurrentUpdate(Exception):
    """The dialogue row changed under us: another event for the same user won the race."""


class Redelivered(Exception):
    """The event's key was recorded by another transaction while this one ran (a redelivery handled
    in another process, PostgreSQL): roll back and run the event again, which then finds its answer."""


class ChangedMeanwhile(Redelivered):
    """The dialogue row was not the version read when the event's first write or its last writes
    came (the row lock of step 1 rules this out on the full path; the asyncpg path, which reads
    without it, meets it whenever another process changed the row meanwhile): not a stale answer,
    which would leave the hook's work as if committed, but, as for a redelivery, roll back and run
    the event again, from the row as it is now, with the row locked from the start."""


# -- the stored answer -------------------------------------------------------------------------------

def encode_answer(outcome: Outcome) -> dict[str, Any]:
    """The answer as kept with the event (JSON): texts, buttons with their tokens, what they ask for.
    Files (exported forms, charts) are not kept: a redelivery says they must be asked for again."""
    return {"replies": [{"text": r.text, "options": [[[o.label, o.token] for o in row] for row in r.options],
                         "contact": r.request_contact, "location": r.request_location, "files": len(r.files)}
                        for r in outcome.replies],
            "chosen": outcome.chosen, "stale": outcome.stale, "rendered": outcome.rendered}


def decode_answer(stored: dict[str, Any] | None, delivered: bool) -> Outcome:
    """A redelivery's outcome: the stored answer to send again if it was never delivered, and the
    channel's rendering of it, if the channel kept one."""
    rendered = stored.get("rendered") if stored else None
    if not stored or delivered:
        return Outcome(duplicate=True, rendered=rendered)  # delivered, nothing to say, or from before answers were kept
    replies = [Reply(r["text"], options=[[Option(label, token) for label, token in row] for row in r["options"]],
                     request_contact=r["contact"], request_location=r["location"], files_dropped=r.get("files", 0))
               for r in stored.get("replies", [])]
    return Outcome(resend=replies, chosen=stored.get("chosen"), stale=stored.get("stale", False), duplicate=True,
                   rendered=rendered)


# -- the unit of work -----------------------------------------------------------------------------

def _key(inbound: Inbound) -> str | None:
    return inbound.event_key[:KEY_LIMIT] if inbound.event_key is not None else None


def _dialogue(row: hot.EventStart) -> Dialogue:
    # The row's data was decoded from JSON just now: a fresh object, the dialogue's own to change.
    return Dialogue(row.flow, row.step, row.data or {}, row.version)


class _Sessions:
    """The ORM sessions an event opened on its connection (usually none): joined to its transaction."""

    def __init__(self, conn):
        self.conn = conn
        self.open: list[Session] = []

    def opener(self) -> Session:
        # Joins the transaction begun on ``conn``: it flushes into it and never commits it.
        session = Session(bind=self.conn, expire_on_commit=False, join_transaction_mode="rollback_only")
        self.open.append(session)
        return session

    def flush(self) -> None:
        for session in self.open:
            session.flush()

    def close(self) -> None:
        for session in self.open:
            session.close()
        self.open.clear()


class UnitOfWork:
    """Runs events through the steps above; shared by every path of the engine."""

    def __init__(self, router: Router, settings: Settings):
        self.router = router
        self.settings = settings
        # Answers channels confirmed sending, not yet marked: written by the next event's transaction
        # (or the engine's timer when none comes), not by a transaction each (see ``confirm``).
        self.delivered: deque[tuple[str, str, datetime]] = deque()

    # -- the steps ---------------------------------------------------------------------------------

    def start(self, conn, inbound: Inbound, now: datetime) -> hot.EventStart:
        """Steps 1 and 2 in one statement: the user's dialogue row, locked (created empty for a new
        user), whether the event was handled before (and its answer), and the bound cadre."""
        row = hot.start_event(conn, inbound.channel, inbound.user_id, _key(inbound))
        if row is None:
            hot.create_state(conn, inbound.channel, inbound.user_id, now)
            row = hot.start_event(conn, inbound.channel, inbound.user_id, _key(inbound))
        return row

    def redelivery(self, inbound: Inbound, row: hot.EventStart) -> Outcome:
        """A redelivered event's outcome: its stored answer, to send again unless it was delivered."""
        key = _key(inbound)
        delivered = row.delivered_at is not None or any(
            (channel, pending) == (inbound.channel, key) for channel, pending, _at in list(self.delivered))
        return decode_answer(row.answer, delivered)

    def context(self, conn, sessions: _Sessions, inbound: Inbound, dialogue: Dialogue, now: datetime,
                cadre: hot.BoundCadre | None) -> Context:
        return Context(connection=conn, open_session=sessions.opener, inbound=inbound, dialogue=dialogue,
                       settings=self.settings, now=now, cadre=cadre)

    def conclude(self, conn, ctx: Context, version: int, before_commit: BeforeCommit | None,
                 sessions: _Sessions, save: Dialogue | None = None, lazy: LazyTransaction | None = None) -> Outcome:
        """Steps 3 to 5: buttons rendered for the state's version, ``before_commit`` run and flushed,
        then the event's last writes together (``hot.finish_event``: one statement on PostgreSQL): the
        dialogue ``save``d if the step changed it (read at ``version``), the answer kept with the event,
        an answer delivered earlier marked."""
        if save is None and lazy is not None and lazy.transaction is not None:
            # The step wrote (its transaction began before this): the row's version moves on, so that
            # another process's event that read the row before this one committed runs again (its
            # first write, or its last statement, finds the version changed), as the row lock of the
            # full path would have made it wait and read what this one wrote.
            save = ctx.dialogue
        shown = version + 1 if save is not None else version
        replies = [item(shown) if callable(item) else item for item in ctx.replies]
        cadre = ctx.cadre
        outcome = Outcome(replies=replies, chosen=ctx.chosen, stale=ctx.stale,
                          audience=(cadre is not None, cadre.role if cadre is not None else None))
        if before_commit is not None:
            before_commit(ctx, outcome)
            sessions.flush()
        key = _key(ctx.inbound)
        answer = encode_answer(outcome) if key is not None and (outcome.replies or outcome.rendered is not None) else None
        taken: list[tuple[str, str, datetime]] = []  # delivery marks written in this transaction
        if lazy is not None:  # the last statement is whole on its own: no transaction begun for it
            lazy.armed = False
        try:
            if key is None:  # nothing to record (an event no messenger will deliver again)
                if save is not None and hot.save_state(conn, ctx.inbound.channel, ctx.inbound.user_id,
                                                       expected_version=version, flow=save.flow, step=save.step,
                                                       data=save.data, version=version + 1, now=ctx.now) != 1:
                    raise ChangedMeanwhile()
            else:
                mark = self._next_mark()
                if mark is not None:
                    taken.append(mark)
                done = hot.finish_event(conn, ctx.inbound.channel, ctx.inbound.user_id, key, answer, ctx.now,
                                        version=version,
                                        save=None if save is None else (save.flow, save.step, save.data),
                                        confirm=mark)
                if not done.unchanged:
                    raise ChangedMeanwhile()
                if save is not None and done.recorded and not done.saved:  # the statement rules it out
                    log.error("event %s: the answer was recorded but the dialogue not saved", key)
                if not done.recorded:
                    raise Redelivered()  # another process handled this event meanwhile: roll back, ask again
            self.mark_delivered(conn, taken)
        except BaseException:
            # Rolled back with the event: written by a later one (or at close).
            self.delivered.extendleft(reversed(taken))
            raise
        return outcome

    def _next_mark(self) -> tuple[str, str, datetime] | None:
        try:
            return self.delivered.popleft()
        except IndexError:  # none, or another thread took the last one
            return None

    # -- the paths -----------------------------------------------------------------------------------

    def write(self, conn, inbound: Inbound, now: datetime, before_commit: BeforeCommit | None, *,
              inline: bool = False, lazy: LazyTransaction | None = None) -> Outcome:
        """The whole unit in the transaction the caller began on ``conn``. ``inline``: on the event loop,
        where a step of a long flow declines (``Decline``; the caller rolls back).

        ``lazy`` (the asyncpg path; the event has a key): no transaction begun yet. The row is read
        without a lock; the first statement that writes begins the transaction, locks the row and
        checks it is still the version read (``ChangedMeanwhile`` if not: run again); an event that
        wrote nothing before its last statement (``finish_event``, whole on its own, with the same
        check) never begins one. A new user's row is made in a transaction, as on the full path."""
        if lazy is None:
            row = self.start(conn, inbound, now)
        else:
            row = hot.start_event(conn, inbound.channel, inbound.user_id, _key(inbound), lock=False)
            if row is None:
                lazy.begin(conn)
                row = self.start(conn, inbound, now)
            elif row.seen is None:
                lazy.on_begin = lambda locked: self._still(locked, inbound, row.version)
        if row.seen is not None:
            return self.redelivery(inbound, row)
        if inline and row.flow in self.router.long_flows:
            raise Decline()  # a step of a long flow: the transaction rolls back
        dialogue = _dialogue(row)
        before = dialogue.snapshot()
        sessions = _Sessions(conn)
        try:
            ctx = self.context(conn, sessions, inbound, dialogue, now, row.cadre())
            self.router.route(ctx)
            sessions.flush()
            changed = dialogue.snapshot() != before
            return self.conclude(conn, ctx, row.version, before_commit, sessions, dialogue if changed else None, lazy)
        finally:
            sessions.close()

    @staticmethod
    def _still(conn, inbound: Inbound, version: int) -> None:
        """A lazy transaction just begun: the dialogue row locked, still at the version the event read."""
        if hot.lock_state(conn, inbound.channel, inbound.user_id) != version:
            raise ChangedMeanwhile()

    def read_then_write(self, db: DbEngine, inbound: Inbound, now: datetime,
                        before_commit: BeforeCommit | None) -> Outcome:
        """A long command that only reads, on SQLite: the step in a read-only transaction, then the
        event recorded in a short write one.

        SQLite refuses any write in the first (``query_only``), so a command that started writing
        would fail loudly, not lose its writes. In the second, a redelivery that got there first makes
        this event a duplicate (its result dropped); the dialogue is saved if the command changed it;
        if the row changed in between and what was said depends on it (a flow's question shown again,
        buttons): ``ConcurrentUpdate``. A keyword typed inside a flow is the flow's answer: ``Decline``.
        """
        sessions = _Sessions(None)
        with db.connect() as conn:
            conn.execution_options(read_only=True)  # BEGIN, not BEGIN IMMEDIATE (storage.db)
            transaction = conn.begin()
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA query_only = ON")
            try:
                row = hot.start_event(conn, inbound.channel, inbound.user_id, _key(inbound))
                if row is not None and row.seen is not None:
                    return self.redelivery(inbound, row)
                dialogue = _dialogue(row) if row is not None else Dialogue(None, None, {}, 0)
                if inbound.command is None and dialogue.flow is not None:
                    raise Decline()
                before = dialogue.snapshot()
                sessions.conn = conn
                cadre = row.cadre() if row is not None else binding.bound_cadre(conn, inbound.channel, inbound.user_id)
                ctx = self.context(conn, sessions, inbound, dialogue, now, cadre)
                self.router.route(ctx)
                sessions.flush()  # a write here fails: query_only
            finally:
                sessions.close()
                if transaction.is_active:  # a failed flush has rolled it back already
                    transaction.rollback()
                driver.execute("PRAGMA query_only = OFF")

        with db.connect() as conn, conn.begin():
            row = self.start(conn, inbound, now)
            if row.seen is not None:
                return self.redelivery(inbound, row)
            version = row.version
            changed = dialogue.snapshot() != before
            # The user's dialogue moved on meanwhile: what was said about it (a flow's question
            # shown again, buttons) is out of date. A plain export or ranking is not.
            if version != dialogue.version and (changed or any(callable(item) for item in ctx.replies)):
                raise ConcurrentUpdate()
            sessions = _Sessions(conn)
            ctx.rebind(conn, sessions.opener)
            try:
                return self.conclude(conn, ctx, version, before_commit, sessions, dialogue if changed else None)
            finally:
                sessions.close()

    def confirm(self, inbound: Inbound, now: datetime) -> None:
        """The event's answer was sent: marked with the next transaction (``mark_delivered``). Until then
        (under load, one event; when idle, up to the engine's flush delay) a redelivery of the event would
        send the answer again: only a process killed in that moment, in long polling, can repeat one."""
        key = _key(inbound)
        if key is not None:
            self.delivered.append((inbound.channel, key, now))

    def mark_delivered(self, conn, taken: list | None = None) -> int:
        """Writes the pending delivery marks in the caller's transaction; how many. ``taken``: a list
        the marks are added to, to be put back should the transaction roll back."""
        done = 0
        while (mark := self._next_mark()) is not None:
            if taken is not None:
                taken.append(mark)
            hot.confirm_answer(conn, *mark)
            done += 1
        return done
