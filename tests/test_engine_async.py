"""DATABASE_ASYNC_EVENTS (PostgreSQL): the web process's chat events on the event loop through asyncpg.

The same unit of work as the threads' (bot/core/unit_of_work.py), run by SQLAlchemy's ``run_sync`` on
an asyncpg connection: a redelivery answered with the kept answer, one user's events in order, an old
button stale, nothing on a worker thread.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update
from sqlmodel import select

from bot.core.engine import Engine
from bot.core.types import Inbound
from storage.db import session_scope
from storage.models import Cadre, DialogueState, ProcessedInbound, WeChatUser
from tests.utils import bind, make_roster


@pytest.fixture
def acore(db, settings, clock):
    if db.dialect.name == "sqlite":
        pytest.skip("DATABASE_ASYNC_EVENTS is PostgreSQL's (SQLite runs events inline on the loop already)")
    engine = Engine(db, settings.model_copy(update={"database_async_events": True}), clock=clock)
    yield engine
    engine.close()


def test_events_run_on_the_loop_in_order_redelivered_and_stale_as_on_threads(acore, db, clock, monkeypatch):
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    monkeypatch.setattr(acore, "handle", lambda *a, **k: pytest.fail("an event went to a worker thread"))

    async def main():
        await acore.start_async()
        try:
            # One user's two events at once: the second waits for the first (the "1" answers its question).
            first, second = await asyncio.gather(
                acore.dispatch(Inbound("test", "u1", command="visit", event_key="e1")),
                acore.dispatch(Inbound("test", "u1", text="1", event_key="e2")))
            again = await acore.dispatch(Inbound("test", "u1", command="visit", event_key="e1"))  # redelivered
            household = first.replies[-1].flat_options()[0].token
            stale = await acore.dispatch(Inbound("test", "u1", token=household, event_key="e3"))
            other = await acore.dispatch(Inbound("test", "u2", command="help", event_key="e4"))
            return first, second, again, stale, other
        finally:
            await acore.aclose()

    first, second, again, stale, other = asyncio.run(main())
    assert "住户1" in first.replies[-1].numbered_text()
    assert "回头看：住户1" in second.replies[0].text
    assert again.duplicate and [r.text for r in again.resend] == [r.text for r in first.replies]
    assert stale.stale and not other.stale and other.replies
    with session_scope(db) as s:
        keys = sorted(e.event_key for e in s.exec(select(ProcessedInbound)).all())
        state = s.get(DialogueState, ("test", "u1"))
    assert keys == ["e1", "e2", "e3", "e4"]
    assert state.flow == "visit" and state.version == 2  # /visit, then the household: the stale press changed nothing


def test_other_loops_pictures_and_long_commands_go_to_threads(acore, db, clock, monkeypatch):
    """Only the loop that started the path (the web app's) uses it; an event with a picture (written to
    disk and hashed by Pillow) and a long command keep their threads."""
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    threaded: list[str] = []
    real = acore.handle

    def handle(inbound, **kwargs):
        threaded.append(inbound.event_key)
        return real(inbound, **kwargs)

    monkeypatch.setattr(acore, "handle", handle)
    # No start_async on this loop: threads.
    asyncio.run(acore.dispatch(Inbound("test", "u1", command="help", event_key="elsewhere")))

    async def main():
        await acore.start_async()
        try:
            await acore.dispatch(Inbound("test", "u1", command="progress", event_key="on-loop"))
            await acore.dispatch(Inbound("test", "u1", photo_ref="test:p1", event_key="picture"))
            await acore.dispatch(Inbound("test", "u1", command="export", event_key="long"))
        finally:
            await acore.aclose()

    asyncio.run(main())
    assert threaded == ["elsewhere", "picture", "long"]


def _keys(db) -> list[str]:
    with session_scope(db) as s:
        return sorted(e.event_key for e in s.exec(select(ProcessedInbound)).all())


def _openids(db) -> list[str]:
    with session_scope(db) as s:
        return sorted(u.openid for u in s.exec(select(WeChatUser)).all())


def _bump(db, user_id: str) -> None:
    """Another process changes the user's dialogue row (and commits) while an event runs."""
    with db.begin() as conn:
        conn.execute(update(DialogueState).where(DialogueState.channel == "test", DialogueState.external_user_id == user_id)
                     .values(version=DialogueState.version + 1))


def _household_chosen(acore, hook):
    """/visit, then the household chosen with ``hook`` as the channel's before_commit: its answer."""
    async def main():
        await acore.start_async()
        try:
            await acore.dispatch(Inbound("test", "u1", command="visit", event_key="v1"))
            return await acore.dispatch(Inbound("test", "u1", text="住户1", event_key="v2"), before_commit=hook)
        finally:
            await acore.aclose()

    return asyncio.run(main())


def test_a_write_before_the_last_statement_begins_the_transaction_first(acore, db, clock):
    """The asyncpg path reads without a transaction (an event that only reads and answers has none
    before its last statement); the first statement that writes begins one. Writes through the fast
    path and through the ORM, each first in its event, then a failure: nothing of either is left, nor
    the event's key; the same writes in an event that succeeds are kept, with its key."""
    from storage import hot

    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())

    def fast_first(ctx, outcome):
        hot.note_wechat_interaction(ctx.db, "oFast", ctx.now)  # storage/prepared.py, on asyncpg itself
        ctx.session.add(WeChatUser(openid="oOrm", last_inbound_at=ctx.now))
        ctx.session.flush()

    def orm_first(ctx, outcome):
        ctx.session.add(WeChatUser(openid="oOrm", last_inbound_at=ctx.now))  # SQLAlchemy's flush
        ctx.session.flush()
        hot.note_wechat_interaction(ctx.db, "oFast", ctx.now)

    def then_fail(hook):
        def failing(ctx, outcome):
            hook(ctx, outcome)
            raise RuntimeError("the hook fails after writing")
        return failing

    async def main():
        await acore.start_async()
        try:
            await acore.dispatch(Inbound("test", "u1", command="help", event_key="first"))  # the row made
            for n, hook in enumerate((fast_first, orm_first)):
                with pytest.raises(RuntimeError, match="fails after writing"):
                    await acore.dispatch(Inbound("test", "u1", command="help", event_key=f"failed{n}"),
                                         before_commit=then_fail(hook))
                assert _openids(db) == [] and _keys(db) == ["first"]
            return await acore.dispatch(Inbound("test", "u1", command="help", event_key="kept"), before_commit=orm_first)
        finally:
            await acore.aclose()

    assert asyncio.run(main()).replies
    assert _openids(db) == ["oFast", "oOrm"] and _keys(db) == ["first", "kept"]


def test_a_row_changed_before_the_last_statement_runs_the_event_again_locked(acore, db, clock):
    """Another process changes the dialogue row after this event read it without a lock: its last
    statement finds the row changed and records nothing; the event runs again, with the row locked from
    the start, and answers from the row as it is now. Recorded once, saved once."""
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    runs = []

    def changed_meanwhile(ctx, outcome):
        runs.append(ctx.dialogue.version)
        if len(runs) == 1:
            _bump(db, "u1")

    answer = _household_chosen(acore, changed_meanwhile)
    assert runs == [1, 2]  # the second run read the row the other process left
    assert answer.replies and not answer.stale and "回头看：住户1" in answer.replies[0].text
    assert _keys(db) == ["v1", "v2"]
    with session_scope(db) as s:
        state = s.get(DialogueState, ("test", "u1"))
    assert (state.step, state.version) == ("card", 3)


def test_a_row_changed_before_the_first_write_runs_the_event_again_locked(acore, db, clock):
    """The row lock taken when an event's first write begins its transaction finds the row changed by
    another process since the event read it: that write is not made, the event runs again from the row
    as it is now, and its writes are made once."""
    from storage import hot

    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    runs, after_first_write = [], []

    def changed_then_writes(ctx, outcome):
        runs.append(ctx.dialogue.version)
        if len(runs) == 1:
            _bump(db, "u1")
        hot.note_wechat_interaction(ctx.db, f"o{len(runs)}", ctx.now)
        after_first_write.append(len(runs))  # not in the first run: its first write found the row changed

    answer = _household_chosen(acore, changed_then_writes)
    assert runs == [1, 2] and after_first_write == [2] and answer.replies and not answer.stale
    assert _openids(db) == ["o2"] and _keys(db) == ["v1", "v2"]


def test_a_step_that_writes_moves_the_rows_version_on(acore, db, clock):
    """An event whose step wrote (here /mute, which changes the cadre and not the dialogue) saves the
    row as its next version, so that another process's event that read the row before it committed
    runs again rather than act on what it read; an event that only read leaves the version as it was."""
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())

    def version() -> int:
        with session_scope(db) as s:
            return s.get(DialogueState, ("test", "u1")).version

    async def main():
        await acore.start_async()
        try:
            await acore.dispatch(Inbound("test", "u1", command="help", event_key="h1"))
            before = version()
            await acore.dispatch(Inbound("test", "u1", command="help", event_key="h2"))
            after_read = version()
            muted = await acore.dispatch(Inbound("test", "u1", command="mute", event_key="m1"))
            return before, after_read, version(), muted
        finally:
            await acore.aclose()

    before, after_read, after_write, muted = asyncio.run(main())
    assert muted.replies and after_read == before and after_write == before + 1
    with session_scope(db) as s:
        assert s.get(Cadre, roster.cadre.id).digests_muted


def test_an_event_cancelled_in_its_transaction_leaves_no_transaction_to_the_next(acore, db, clock):
    """An event cancelled while its transaction is open (the web request gone, the server shutting
    down), here while its first write waits for the row another transaction holds: nothing of it is
    kept, and its connection is not handed to the next event still in that (failed) transaction."""
    from sqlalchemy import select as sql_select

    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())

    async def main():
        await acore.start_async()
        try:
            await acore.dispatch(Inbound("test", "u1", command="help", event_key="first"))
            other = db.connect()
            holding = other.begin()
            other.execute(sql_select(DialogueState.version).where(DialogueState.external_user_id == "u1")
                          .with_for_update())
            job = asyncio.ensure_future(acore.dispatch(Inbound("test", "u1", command="mute", event_key="cancelled")))
            await asyncio.sleep(0.5)
            assert not job.done()  # /mute's first write waits for the row
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            holding.rollback()
            other.close()
            for n in range(3):  # as many as the pool has connections
                await acore.dispatch(Inbound("test", "u1", command="unmute", event_key=f"after{n}"))
        finally:
            await acore.aclose()

    asyncio.run(main())
    assert _keys(db) == ["after0", "after1", "after2", "first"]


def test_url_parameters_asyncpg_does_not_take_stop_the_start_with_the_setting(settings):
    from bot.config import SettingsError

    url = "postgresql://bot@127.0.0.1:5432/bot?sslmode=require"
    with pytest.raises(SettingsError, match="DATABASE_ASYNC_EVENTS：asyncpg 不接受 DATABASE_URL 中的参数 sslmode"):
        settings.model_copy(update={"database_url": url, "database_async_events": True}).check()
    settings.model_copy(update={"database_url": url}).check()  # the threads' psycopg takes it


def test_a_unix_socket_folder_is_the_one_url_parameter_asyncpg_takes(settings, database_url):
    """postgresql://user@/db?host=/var/run/postgresql: a database on the same machine, without TCP."""
    import os

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from bot.config import SettingsError
    from storage.db import make_async_engine

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or not os.path.exists(f"/var/run/postgresql/.s.PGSQL.{url.port or 5432}"):
        pytest.skip("needs PostgreSQL with its Unix socket in /var/run/postgresql")
    socket_url = url.set(host=None).update_query_dict({"host": "/var/run/postgresql"}).render_as_string(False)
    settings.model_copy(update={"database_url": socket_url, "database_async_events": True}).check()
    with pytest.raises(SettingsError, match="参数 sslmode（只接受 host"):
        settings.model_copy(update={"database_url": socket_url + "&sslmode=disable",
                                    "database_async_events": True}).check()

    async def main():
        engine = make_async_engine(socket_url)
        try:
            async with engine.connect() as conn:  # no server address: the socket, not TCP
                assert (await conn.execute(text("SELECT inet_server_addr() IS NULL"))).scalar_one() is True
        finally:
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("sql, reads", [
    ("SELECT a FROM t WHERE b = $1", True),
    ("  select updated_at, deleted_flag from t", True),
    ("SELECT a FROM t FOR UPDATE", False),
    ("SELECT a FROM t FOR NO KEY UPDATE OF t", False),
    ("SELECT a FROM t FOR SHARE", False),
    ("SELECT nextval('visit_id_seq')", False),
    ("SELECT pg_advisory_xact_lock(1)", False),
    ("SELECT pg_try_advisory_xact_lock(1)", False),
    ("SELECT pg_notify('outbox', '1')", False),
    ("SELECT set_config('app.user', 'x', true)", False),
    ("SELECT lo_unlink(42)", False),
    ("SELECT a INTO b FROM t", False),
    ("WITH x AS (SELECT 1) SELECT * FROM x", False),  # not sure: counted as a write
    ("WITH x AS (UPDATE t SET a = 1 RETURNING 1) SELECT count(*) FROM x", False),
    ("INSERT INTO t VALUES (1)", False),
    ("UPDATE t SET a = 1", False),
    ("DELETE FROM t", False),
])
def test_what_counts_as_only_reading(sql, reads):
    """Only a plain SELECT runs outside an event's transaction on the asyncpg path; anything else
    begins the transaction first (a statement counted as a write wrongly only costs it earlier)."""
    from storage.prepared import only_reads

    assert only_reads(sql) is reads
