"""The core's one entry point (``Engine.dispatch``): where an event runs, and one user's order kept."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bot.core.types import Inbound
from tests.utils import bind, make_roster


def test_a_users_later_event_never_overtakes_one_waiting_in_a_thread(core, db, clock, monkeypatch):
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    order: list[str] = []
    real_now, real_handle = core.handle_now, core.handle

    def handle_now(inbound, **kwargs):
        if inbound.event_key == "slow":
            return None  # this one goes to a thread
        order.append(f"inline:{inbound.event_key}")
        return real_now(inbound, **kwargs)

    def handle(inbound, **kwargs):
        if inbound.event_key == "slow":
            time.sleep(0.3)
        order.append(f"thread:{inbound.event_key}")
        return real_handle(inbound, **kwargs)

    monkeypatch.setattr(core, "handle_now", handle_now)
    monkeypatch.setattr(core, "handle", handle)

    async def main():
        first = asyncio.ensure_future(core.dispatch(Inbound("test", "u1", command="visit", event_key="slow")))
        await asyncio.sleep(0.05)  # the first is in its thread now
        second = asyncio.ensure_future(core.dispatch(Inbound("test", "u1", text="1", event_key="next")))
        other = asyncio.ensure_future(core.dispatch(Inbound("test", "u2", command="help", event_key="other")))
        return await asyncio.gather(first, second, other)

    outcomes = asyncio.run(main())
    # Another user is not held up; the same user's second event waits for the first.
    assert order.index("inline:other") < order.index("thread:slow") < order.index("inline:next")
    assert "住户1" in outcomes[0].replies[-1].numbered_text()
    assert "回头看：住户1" in outcomes[1].replies[0].text  # the "1" answered the visit's first question


def test_inline_when_free_and_a_thread_for_long_commands(core, db, clock):
    if db.dialect.name != "sqlite":
        pytest.skip("the inline path is SQLite's: on PostgreSQL every event goes to a thread")
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "boss", clock())
    threads: list[str] = []
    real = core.handle

    def handle(inbound, **kwargs):
        threads.append(threading.current_thread().name)
        return real(inbound, **kwargs)

    core.handle = handle
    asyncio.run(core.dispatch(Inbound("test", "boss", command="help", event_key="h")))
    assert threads == []  # a short event on SQLite ran inline
    asyncio.run(core.dispatch(Inbound("test", "boss", command="unit", event_key="u")))
    assert len(threads) == 1 and threads[0] != threading.main_thread().name
    assert core._lanes == {}  # nothing left behind per user
