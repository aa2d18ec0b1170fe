"""``Engine.handle_now``: an event handled on the caller's thread when that costs no waiting.

On SQLite a channel's event loop calls it first; it must do exactly what ``handle`` does, and
decline (return None, change nothing) when the event may be long or the write lock is taken.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlmodel import func, select

from bot import texts
from bot.core.engine import Engine
from bot.core.types import Inbound
from storage.db import session_scope
from storage.models import DialogueState, ProcessedInbound, Visit
from tests.test_dialogue import SURVEY_ANSWERS
from tests.utils import bind, make_roster


@pytest.fixture
def now_core(db, settings, clock):
    core = Engine(db, settings, clock=clock)
    yield core
    core.close()


def sqlite_only(db):
    if db.dialect.name != "sqlite":
        pytest.skip("handle_now runs events inline on SQLite only")


def count(db, model) -> int:
    with session_scope(db) as s:
        return s.exec(select(func.count()).select_from(model)).one()


class NowChat:
    """Like tests.utils.Chat, but every event must be taken by handle_now."""

    def __init__(self, core: Engine, user_id: str = "u1"):
        self.core, self.user_id, self.n, self.last = core, user_id, 0, None

    def send(self, **kwargs) -> str:
        self.n += 1
        outcome = self.core.handle_now(Inbound(channel="test", user_id=self.user_id, event_key=f"e{self.n}", **kwargs))
        assert outcome is not None, f"handle_now declined {kwargs}"
        for reply in outcome.replies:
            if reply.options:
                self.last = reply
        return "\n".join(r.text for r in outcome.replies)

    def press(self, label: str) -> str:
        [option] = [o for o in self.last.flat_options() if label in o.label][:1]
        return self.send(token=option.token)


def test_a_whole_visit_inline_is_the_same_as_through_handle(db, now_core, clock):
    sqlite_only(db)
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    chat = NowChat(now_core)
    assert texts.PICK_HOUSEHOLD in chat.send(command="visit")
    assert "回头看" in chat.press("住户1")
    chat.press(texts.YES)
    for kind, answer in SURVEY_ANSWERS:
        chat.press(answer) if kind == "press" else chat.send(text=answer)
    chat.press("物业")
    chat.send(text="电梯经常停运")
    chat.press(texts.SOLVED_NO)
    chat.press(texts.YES)
    chat.send(text=texts.SKIP)
    chat.send(text=texts.SKIP)
    assert "本半年已走访 1/3 户" in chat.press("确认")
    assert count(db, Visit) == 1
    # A redelivered event is recognised inline too.
    outcome = now_core.handle_now(Inbound(channel="test", user_id="u1", command="visit", event_key="e1"))
    assert outcome is not None and outcome.duplicate


def test_it_declines_while_the_write_lock_is_held_elsewhere_and_changes_nothing(db, now_core, clock):
    sqlite_only(db)
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    other = sqlite3.connect(db.url.database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing (the worker, an import)
        event = Inbound(channel="test", user_id="u1", command="visit", event_key="k1")
        started = time.monotonic()
        assert now_core.handle_now(event) is None
        assert time.monotonic() - started < 5  # declined at once: it never waits out the 30 s busy timeout
        # handle() in a thread waits for the lock and then does the work.
        result = []
        worker = threading.Thread(target=lambda: result.append(now_core.handle(event)))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive()  # still waiting for the lock
        other.execute("COMMIT")
        worker.join(10)
        assert texts.PICK_HOUSEHOLD in result[0].replies[0].text
    finally:
        other.close()
    assert count(db, ProcessedInbound) == 1  # the declined attempt recorded nothing
    with session_scope(db) as s:
        assert s.get(DialogueState, ("test", "u1")).version == 1


@pytest.mark.parametrize("event", [
    {"command": "export"}, {"command": "ranking"}, {"command": "unit"}, {"command": "ratings"},
    {"command": "spotcheck"}, {"text": "导出"}, {"text": "排名 满意度"}])
def test_long_commands_go_to_a_thread(db, now_core, clock, event):
    sqlite_only(db)
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "s1", clock())
    assert now_core.handle_now(Inbound(channel="test", user_id="s1", event_key="x", **event)) is None
    assert count(db, ProcessedInbound) == 0


def test_postgresql_and_in_memory_databases_always_go_to_a_thread(db, settings, clock):
    from sqlalchemy import create_engine

    if db.dialect.name == "sqlite":
        # A second connection to an in-memory database would open a second, empty database.
        memory = create_engine("sqlite://")
        core = Engine(memory, settings, clock=clock)
        assert core.handle_now(Inbound(channel="test", user_id="u1", command="help", event_key="m1")) is None
        memory.dispose()
    else:
        core = Engine(db, settings, clock=clock)
        assert core.handle_now(Inbound(channel="test", user_id="u1", command="help", event_key="m1")) is None
        assert core.handle(Inbound(channel="test", user_id="u1", command="help", event_key="m1")).replies
    assert core._now_db is None


def test_a_second_thread_never_waits_for_the_first(db, now_core, clock):
    sqlite_only(db)
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    event = Inbound(channel="test", user_id="u1", command="help", event_key="h1")
    with now_core._now_lock:  # another event loop's thread is handling an event right now
        assert now_core.handle_now(event) is None
    assert now_core.handle_now(event).replies  # and once it is done, inline again


def test_no_step_of_a_long_flow_runs_inline(db, now_core, clock):
    """The spot-check's buttons draw and list a whole unit's visits: every step of it goes to a thread."""
    sqlite_only(db)
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "s1", clock())
    started = now_core.handle(Inbound(channel="test", user_id="s1", command="spotcheck", event_key="s-1"))
    [draw] = [o for r in started.replies for o in r.flat_options() if "抽取" in o.label]
    with session_scope(db) as s:
        before = s.get(DialogueState, ("test", "s1")).version
    press = Inbound(channel="test", user_id="s1", token=draw.token, event_key="s-2")
    assert now_core.handle_now(press) is None
    assert count(db, ProcessedInbound) == 1  # the declined press left no trace: its transaction rolled back
    with session_scope(db) as s:
        assert s.get(DialogueState, ("test", "s1")).version == before
    assert "已抽取" in "\n".join(r.text for r in now_core.handle(press).replies)
