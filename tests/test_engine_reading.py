"""Long commands on SQLite: computed in a read-only transaction, recorded in a short write one.

An export or a ranking reads for seconds; in the event's write transaction it would hold SQLite's
only write lock that long, and every other chat event would wait.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlmodel import func, select

from bot import texts
from dataclasses import replace

from bot.core.features import REGISTRY
from bot.core.engine import Engine
from bot.core.types import Inbound
from storage.db import session_scope
from storage.models import DialogueState, ProcessedInbound, Role, Unit
from tests.utils import bind, make_roster


@pytest.fixture
def sqlite_core(db, settings, clock):
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    core = Engine(db, settings, clock=clock)
    yield core
    core.close()


def count(db, model) -> int:
    with session_scope(db) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def write_elsewhere(db) -> None:
    """A write by another connection that refuses to wait: fails if anyone holds the write lock."""
    other = sqlite3.connect(db.url.database, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE unit SET active = active")
        other.execute("COMMIT")
    finally:
        other.close()


def test_others_write_while_a_long_command_reads(db, sqlite_core, clock, monkeypatch):
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "s1", clock())
    real = REGISTRY.get("ratings")
    wrote = []

    def ratings_meanwhile(ctx):
        real.run(ctx)
        write_elsewhere(db)  # raises "database is locked" if the event held the lock
        wrote.append(True)

    monkeypatch.setitem(REGISTRY.by_name, "ratings", replace(REGISTRY.get("ratings"), run=ratings_meanwhile))
    outcome = sqlite_core.handle(Inbound(channel="test", user_id="s1", command="ratings", event_key="r1"))
    assert wrote == [True] and outcome.replies and not outcome.duplicate
    assert count(db, ProcessedInbound) == 1
    # The same event again: a duplicate, nothing computed or sent twice.
    assert sqlite_core.handle(Inbound(channel="test", user_id="s1", command="ratings", event_key="r1")).duplicate
    assert count(db, ProcessedInbound) == 1


def test_a_long_command_that_writes_fails_loudly_and_records_nothing(db, sqlite_core, clock, monkeypatch):
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "s1", clock())

    def writes(ctx):
        ctx.session.add(Unit(name="不该写入的单位"))
        ctx.say("done")

    monkeypatch.setitem(REGISTRY.by_name, "ratings", replace(REGISTRY.get("ratings"), run=writes))
    with pytest.raises(Exception, match="readonly"):
        sqlite_core.handle(Inbound(channel="test", user_id="s1", command="ratings", event_key="w1"))
    assert count(db, ProcessedInbound) == 0 and count(db, Unit) == 1  # the roster's unit only
    write_elsewhere(db)  # and the connection is not left read-only or locked
    with session_scope(db) as s:
        s.add(Unit(name="之后可以写入"))
    assert count(db, Unit) == 2


def test_inside_a_flow_the_question_comes_again_and_a_change_in_between_makes_it_stale(
        db, sqlite_core, clock, monkeypatch):
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "s1", clock())
    roster_cadre_flow = sqlite_core.handle(Inbound(channel="test", user_id="s1", command="report", event_key="f1"))
    assert roster_cadre_flow.replies
    with session_scope(db) as s:
        version = s.get(DialogueState, ("test", "s1")).version
    # /ratings inside the flow: the figures, then the flow's question again, its buttons valid.
    outcome = sqlite_core.handle(Inbound(channel="test", user_id="s1", command="ratings", event_key="f2"))
    assert len(outcome.replies) >= 2 and outcome.replies[-1].text == roster_cadre_flow.replies[-1].text
    with session_scope(db) as s:
        assert s.get(DialogueState, ("test", "s1")).version == version
    button = outcome.replies[-1].flat_options()[0]
    pressed = sqlite_core.handle(Inbound(channel="test", user_id="s1", token=button.token, event_key="f2b"))
    assert not pressed.stale
    sqlite_core.handle(Inbound(channel="test", user_id="s1", command="cancel", event_key="f2c"))
    sqlite_core.handle(Inbound(channel="test", user_id="s1", command="report", event_key="f2d"))
    # Typed as a keyword inside the flow, 评价 is the flow's answer, not the command.
    typed = sqlite_core.handle(Inbound(channel="test", user_id="s1", text="评价", event_key="f3"))
    assert "满意率" not in "\n".join(r.text for r in typed.replies)

    # Another event of the user lands while the command reads: the command's answer is stale.
    real = REGISTRY.get("ratings")

    def ratings_and_a_press_meanwhile(ctx):
        real.run(ctx)
        assert sqlite_core.handle_now(Inbound(channel="test", user_id="s1", command="cancel", event_key="f5"))

    monkeypatch.setitem(REGISTRY.by_name, "ratings", replace(REGISTRY.get("ratings"), run=ratings_and_a_press_meanwhile))
    sqlite_core.handle(Inbound(channel="test", user_id="s1", command="report", event_key="f4"))
    stale = sqlite_core.handle(Inbound(channel="test", user_id="s1", command="ratings", event_key="f6"))
    assert stale.stale and stale.replies[0].text == texts.STALE_BUTTON
    with session_scope(db) as s:
        assert s.get(DialogueState, ("test", "s1")).flow is None  # the cancel stood
