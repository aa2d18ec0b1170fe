"""WeCom's limits held by several processes together: two ``python -m bot worker`` processes on one
PostgreSQL database send a wave to a few members, more messages each than a member may receive in a
minute, against the WeCom stand-in, which (like WeCom) drops silently what passes a member's limit.
The limits are shared through PostgreSQL, or through Redis (db 11) when REDIS_URL is set.

WeCom's minute is shortened to 5 seconds on both sides (WECOM_MEMBER_MINUTE_SECONDS, a setting for
tests only, and the stand-in's window), so the wave must wait for the window without the test
waiting whole minutes.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest
from sqlmodel import select

from bot.core.outbox import enqueue
from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState
from tests.standins.wecom_api import WeComStandin
from tests.test_production_processes import Worker, awake, bot_env, pending
from tests.test_wecom_e2e import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN
from tests.utils import wait_for

REDIS_URL = "redis://127.0.0.1:6379/11"
WINDOW = 5  # seconds: WeCom's minute, shortened for the test on both sides
MEMBERS, EACH = ("LiMing", "WangFang", "ZhaoLei"), 45


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(params=["postgresql", "redis"])
def shared(request, database_url) -> dict:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes need PostgreSQL: TEST_DATABASE_URL=postgresql://…")
    if request.param == "postgresql":
        return {}
    if not redis_answers():
        pytest.skip("needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return {"REDIS_URL": REDIS_URL}


def busiest_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def test_two_workers_keep_each_members_limit_per_minute_together(db, settings, database_url, shared, tmp_path):
    with WeComStandin(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, token=TOKEN, aes_key=AES_KEY,
                      per_minute=30, minute=float(WINDOW)) as wc:
        env = bot_env(database_url, WECOM_TOKEN=TOKEN, WECOM_AES_KEY=AES_KEY, WECOM_CORP_ID=CORP_ID,
                      WECOM_AGENT_ID=str(AGENT_ID), WECOM_SECRET=SECRET, WECOM_API_BASE_URL=wc.url,
                      WECOM_MEMBER_MINUTE_SECONDS=str(WINDOW), OUTBOX_BATCH="10", LOG_LEVEL="WARNING", **shared)
        workers = [Worker(env, tmp_path, f"worker{i}") for i in range(2)]
        try:
            assert wait_for(lambda: all(w.started() for w in workers), timeout=30)
            now = datetime.now(timezone.utc)
            with session_scope(db) as s:
                for i in range(EACH):
                    for member in MEMBERS:
                        enqueue(s, key=f"wave-{member}-{i}", kind="reminder", channel="wecom", recipient=member,
                                body=f"提醒 {member} {i}", now=now, settings=awake(settings))
            assert wait_for(lambda: pending(db) == 0, timeout=90), [w.log.read_text()[-2000:] for w in workers]
        finally:
            for w in workers:
                w.stop()

        assert not wc.over_limit  # nothing dropped for a member's limit: the two never passed it together
        assert not wc.duplicates
        received = Counter((d.touser, d.text) for d in wc.delivered)
        assert received == Counter({(m, f"提醒 {m} {i}"): 1 for m in MEMBERS for i in range(EACH)})
        for member in MEMBERS:
            times = [d.at for d in wc.delivered if d.touser == member]
            assert busiest_window(times, WINDOW) <= 30
            assert max(times) - min(times) >= WINDOW  # the wave had to wait for the window
    with session_scope(db) as s:
        rows = s.exec(select(OutboxMessage)).all()
    assert {row.state for row in rows} == {OutboxState.SENT}
    assert len({row.claimed_by.split(":")[1] for row in rows}) == 2  # both processes sent part of the wave
