"""The outbox and its Telegram sender against the Bot API stand-in: 429, 500, 403, quiet hours, races."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select
from telegram import Bot

from handlers.telegram import TelegramTransport
from scheduler import outbox
from scheduler.sender import OutboxSender, RateLimiter
from storage.db import session_scope
from storage.models import ChatAccount, OutboxMessage, OutboxState
from tests.standins.telegram_api import TEST_TOKEN
from tests.utils import bind, make_roster
from tests.utils import rows as all_rows


@pytest.fixture
def fast(settings):
    return settings.model_copy(update={"outbox_retry_base_seconds": 1.0, "outbox_max_attempts": 3,
                                       "telegram_rate_global": 1000.0, "telegram_rate_per_chat": 1000.0})


def run_sender(tg, db, settings, clock, worker="w1", rounds=1) -> int:
    async def go():
        bot = Bot(TEST_TOKEN, base_url=f"{tg.url}/bot", base_file_url=f"{tg.url}/file/bot")
        async with bot:
            sender = OutboxSender(db, settings, {"telegram": TelegramTransport(bot, settings)}, clock=clock,
                                  worker=worker)
            return sum([await sender.run_once() for _ in range(rounds)])
    return asyncio.run(go())


def queue(db, settings, clock, cadre, key, body="提醒", **kwargs):
    with session_scope(db) as s:
        return outbox.enqueue_for_cadre(s, cadre.id, key=key, kind="test", body=body, now=clock(), settings=settings,
                                        channels=["telegram"], **kwargs)


def rows(db):
    """The outbox rows by idempotency key."""
    return {r.idempotency_key: r for r in all_rows(db, OutboxMessage)}


def sent_texts(tg, chat_id: int) -> list[str]:
    return [c.params.get("text") or c.params.get("caption") for c in tg.calls
            if c.method in ("sendMessage", "sendPhoto") and c.params.get("chat_id") == chat_id and c.status == 200]


@pytest.fixture
def cadre(db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "telegram", "8001", clock())
    return roster.cadre


def test_same_key_is_written_once_and_sent_once(tg, db, fast, clock, cadre):
    assert queue(db, fast, clock, cadre, "deadline:form12:2026H2:7") is not None
    assert queue(db, fast, clock, cadre, "deadline:form12:2026H2:7") is None  # a job run twice
    assert run_sender(tg, db, fast, clock, rounds=2) == 1
    assert sent_texts(tg, 8001) == ["提醒"]
    [row] = rows(db).values()
    assert row.state == OutboxState.SENT and row.sent_at == clock()


def test_429_waits_for_retry_after_then_sends_once(tg, db, fast, clock, cadre):
    queue(db, fast, clock, cadre, "k1", body="第一条")
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    assert run_sender(tg, db, fast, clock) == 1
    row = rows(db)["k1:c1".replace("c1", f"c{cadre.id}")]
    assert row.state == OutboxState.PENDING and row.attempts == 0  # a 429 is not the message's fault
    assert row.next_attempt_at == clock() + timedelta(seconds=1)
    assert run_sender(tg, db, fast, clock) == 0  # not due yet
    clock.now += timedelta(seconds=1)
    assert run_sender(tg, db, fast, clock) == 1
    assert sent_texts(tg, 8001) == ["第一条"]


def test_500_backs_off_and_retries_then_dead_after_max_attempts(tg, db, fast, clock, cadre):
    queue(db, fast, clock, cadre, "flaky", body="会成功")
    tg.fail_next("sendMessage", 500, "Internal Server Error", count=2)
    run_sender(tg, db, fast, clock)
    [row] = rows(db).values()
    assert (row.state, row.attempts, row.next_attempt_at) == (OutboxState.PENDING, 1, clock() + timedelta(seconds=1))
    clock.now += timedelta(seconds=1)
    run_sender(tg, db, fast, clock)
    [row] = rows(db).values()
    assert (row.attempts, row.next_attempt_at) == (2, clock() + timedelta(seconds=2))  # exponential
    clock.now += timedelta(seconds=2)
    run_sender(tg, db, fast, clock)
    assert sent_texts(tg, 8001) == ["会成功"]

    queue(db, fast, clock, cadre, "doomed", body="发不出去")
    tg.fail_next("sendMessage", 500, "Internal Server Error", count=10)
    for _ in range(3):
        run_sender(tg, db, fast, clock)
        clock.now += timedelta(minutes=5)
    doomed = rows(db)[f"doomed:c{cadre.id}"]
    assert (doomed.state, doomed.attempts) == (OutboxState.DEAD, 3) and "network" in doomed.last_error
    assert "发不出去" not in sent_texts(tg, 8001)


def test_403_marks_the_user_unreachable_and_stops_sending(tg, db, fast, clock, cadre):
    queue(db, fast, clock, cadre, "a", body="甲")
    queue(db, fast, clock, cadre, "b", body="乙")
    tg.user(8001).block()
    run_sender(tg, db, fast, clock, rounds=2)
    states = {k.split(":")[0]: r.state for k, r in rows(db).items()}
    assert states == {"a": OutboxState.UNREACHABLE, "b": OutboxState.UNREACHABLE}
    assert len([c for c in tg.calls if c.method == "sendMessage"]) == 1  # one try, then no more
    with session_scope(db) as s:
        assert s.exec(select(ChatAccount)).one().unreachable_at is not None
    assert queue(db, fast, clock, cadre, "c") is None  # nobody reachable to write to


def test_quiet_hours_hold_messages_until_morning(tg, db, fast, clock, cadre):
    clock.now = datetime(2026, 11, 20, 15, 30, tzinfo=timezone.utc)  # 23:30 in Asia/Shanghai
    queue(db, fast, clock, cadre, "night", body="夜间产生")
    [row] = rows(db).values()
    assert row.next_attempt_at == datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc)  # 08:00 local
    clock.now = datetime(2026, 11, 20, 23, 59, tzinfo=timezone.utc)  # 07:59 local: still quiet
    assert run_sender(tg, db, fast, clock) == 0
    clock.now = datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc)
    assert run_sender(tg, db, fast, clock) == 1


def test_a_chart_goes_as_one_photo_with_caption(tg, db, fast, clock, cadre):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    queue(db, fast, clock, cadre, "digest", body="日报", attachments=[outbox.Attachment("chart.png", "image/png", png)])
    run_sender(tg, db, fast, clock)
    [call] = tg.calls_of("sendPhoto")
    assert call.params["caption"] == "日报" and call.files["photo"] == png


def test_two_senders_never_send_a_row_twice(tg, db, fast, clock, cadre):
    for i in range(40):
        queue(db, fast, clock, cadre, f"m{i}", body=f"消息{i}")
    results = []

    def sender(name):
        results.append(run_sender(tg, db, fast, clock, worker=name, rounds=3))

    threads = [threading.Thread(target=sender, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = sent_texts(tg, 8001)
    assert sorted(texts) == sorted(f"消息{i}" for i in range(40))  # all sent, none twice
    assert sum(results) == 40
    assert {r.state for r in rows(db).values()} == {OutboxState.SENT}


def test_a_lapsed_claim_comes_back_to_another_sender(db, fast, clock, cadre):
    queue(db, fast, clock, cadre, "lease")
    with session_scope(db) as s:
        [claimed] = outbox.claim_due(s, channels=["telegram"], now=clock(), worker="dead-worker",
                                     lease=timedelta(seconds=60), limit=10)
    with session_scope(db) as s:
        assert outbox.claim_due(s, channels=["telegram"], now=clock(), worker="w2", lease=timedelta(seconds=60),
                                limit=10) == []
    later = clock() + timedelta(seconds=61)
    with session_scope(db) as s:
        [again] = outbox.claim_due(s, channels=["telegram"], now=later, worker="w2", lease=timedelta(seconds=60),
                                   limit=10)
        assert again.id == claimed.id
    with session_scope(db) as s:
        assert not outbox.mark_sent(s, claimed.id, "dead-worker", later)  # the old holder cannot settle it
        assert outbox.mark_sent(s, claimed.id, "w2", later)


def test_rate_limiter_keeps_every_window_under_the_limit():
    now = [0.0]

    async def fake_sleep(seconds):
        now[0] += seconds

    limiter = RateLimiter(30, 1, clock=lambda: now[0], sleep=fake_sleep)

    async def go():
        stamps = []
        for i in range(300):
            ticket = await limiter.acquire(f"chat{i % 100}")
            stamps.append(now[0])
            now[0] += 0.004  # the answer takes a few milliseconds
            limiter.done(f"chat{i % 100}", ticket)
        return stamps

    stamps = asyncio.run(go())
    for i, t in enumerate(stamps):
        assert len([s for s in stamps[i:] if s < t + 1.0]) <= 30
    by_chat = {}
    for i, t in enumerate(stamps):
        chat = i % 100
        if chat in by_chat:
            assert t - by_chat[chat] >= 1.0
        by_chat[chat] = t
    assert stamps[-1] < 300 / 30 * 1.1  # close to the limit, not far below it


def test_rate_limiter_spaces_messages_to_one_group():
    now = [0.0]

    async def fake_sleep(seconds):
        now[0] += seconds

    limiter = RateLimiter(30, 1, 20, clock=lambda: now[0], sleep=fake_sleep)

    async def go():
        stamps = []
        for _ in range(21):
            ticket = await limiter.acquire("-100123")
            stamps.append(now[0])
            limiter.done("-100123", ticket)
        return stamps

    stamps = asyncio.run(go())
    assert stamps[20] - stamps[0] >= 60.0  # the 21st message to a group waits out the minute


def test_messages_to_one_chat_keep_their_order_when_the_first_must_wait(tg, db, fast, clock, cadre):
    queue(db, fast, clock, cadre, "first", body="第一")
    queue(db, fast, clock, cadre, "second", body="第二")
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    run_sender(tg, db, fast, clock)
    assert sent_texts(tg, 8001) == []  # the second did not overtake the first
    clock.now += timedelta(seconds=1)
    run_sender(tg, db, fast, clock)
    assert sent_texts(tg, 8001) == ["第一", "第二"]


def test_rate_limiter_counts_a_send_from_its_answer_less_the_fastest_round_trip():
    now = [0.0]

    async def fake_sleep(seconds):
        now[0] += seconds

    limiter = RateLimiter(2, 100, clock=lambda: now[0], sleep=fake_sleep)

    async def go():
        first = await limiter.acquire("a")
        second = await limiter.acquire("b")
        assert limiter.in_flight == 2  # both places are held while the sends are on their way
        now[0] = 0.05
        limiter.done("a", first)  # the fastest round trip: 50 ms, counted from 0.00
        now[0] = 0.30
        limiter.done("b", second)  # a slow answer: counted from 0.25, as it may have arrived that late
        await limiter.acquire("c")
        third = now[0]
        limiter.done("c", third)
        await limiter.acquire("d")
        return third, now[0]

    third, fourth = asyncio.run(go())
    assert third >= 1.0 and fourth >= 1.25
