"""The worker as deployed: APScheduler's jobs, the sender, Telegram; two workers on one database."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from sqlmodel import select

from bot.app import create_app
from bot.cli import main as cli_main
from bot.config import Settings, get_settings
from bot.core.engine import Engine
from scheduler.service import build_scheduler
from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState
from tests.standins.server import ServedApp
from tests.standins.telegram_api import TEST_TOKEN
from tests.test_scheduler import City, local
from tests.utils import wait_for

TZ = ZoneInfo("Asia/Shanghai")


def test_jobs_have_stable_ids_timezone_grace_and_coalescing(db, settings):
    scheduler = build_scheduler(db, settings)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert {"deadline-reminders", "digest-daily", "digest-weekly", "ledger"} <= set(jobs)
    for job_id in ("deadline-reminders", "digest-daily", "digest-weekly", "ledger"):
        job = jobs[job_id]
        assert job.trigger.timezone == TZ
        assert job.coalesce is True and job.misfire_grace_time == settings.misfire_grace_hours * 3600
    assert "hour='9'" in str(jobs["deadline-reminders"].trigger)
    assert "day_of_week='0'" in str(jobs["digest-weekly"].trigger)



def test_run_sends_a_missed_reminder_and_a_digest_with_chart_through_telegram(tg, db, settings, clock):
    # The service starts at 10:00 on 06-03: the 09:00 reminder (7 days before 附件1-2) was missed.
    clock.now = local(2026, 6, 3, 10).astimezone(timezone.utc)
    city = City(db, clock())
    live = settings.model_copy(update={
        "telegram_bot_token": SecretStr(TEST_TOKEN), "telegram_api_base_url": tg.url, "scheduler_in_run": True,
        "digest_daily_time": local(2026, 1, 1, 9, 30).time()})
    with ServedApp(create_app(live, Engine(db, live, clock=clock))):
        a_chat, office_chat = int(city.chat[city.a.id]), int(city.chat[city.office.id])
        assert wait_for(lambda: any("附件1、2" in (c.params.get("text") or "") and c.params["chat_id"] == a_chat
                                     for c in tg.calls_of("sendMessage")))
        assert wait_for(lambda: any(c.params["chat_id"] == office_chat for c in tg.calls_of("sendPhoto")))
    [photo] = [c for c in tg.calls_of("sendPhoto") if c.params["chat_id"] == office_chat]
    assert "作风工作日报" in photo.params["caption"] and photo.files["photo"].startswith(b"\x89PNG")
    texts = [c.params.get("text") for c in tg.calls_of("sendMessage") if c.params["chat_id"] == a_chat]
    assert len(texts) == 1 and "还有 7 天" in texts[0]


def test_outbox_command_lists_dead_messages(db, settings, clock, database_url, monkeypatch, capsys):
    city = City(db, clock())
    with session_scope(db) as s:
        s.add(OutboxMessage(idempotency_key="x", kind="deadline", channel="telegram", recipient="9000",
                            cadre_id=city.a.id, body="b", state=OutboxState.DEAD, attempts=8,
                            last_error="network: Internal Server Error", next_attempt_at=clock(), created_at=clock()))
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert cli_main(["outbox"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "失败 1" in out and "尝试 8 次：network: Internal Server Error" in out


def _worker_process(database_url: str, api_url: str, name: str, ticks: list[str], barrier) -> None:
    """One worker process: at each simulated tick it runs the jobs and then delivers; the barrier keeps
    both processes' simulated clocks on the same tick, as real clocks would be."""
    from telegram import Bot

    from handlers.telegram import TelegramTransport
    from scheduler.jobs import remind_deadlines, send_digests
    from scheduler.sender import OutboxSender
    from storage.db import make_engine

    settings = Settings(_env_file=None, database_url=database_url, telegram_api_base_url=api_url,
                        telegram_bot_token=SecretStr(TEST_TOKEN), telegram_rate_global=1000, telegram_rate_per_chat=1000)
    engine = make_engine(database_url)
    now = [datetime.fromisoformat(ticks[0])]

    async def run():
        async with Bot(TEST_TOKEN, base_url=f"{api_url}/bot", base_file_url=f"{api_url}/file/bot") as bot:
            sender = OutboxSender(engine, settings, {"telegram": TelegramTransport(bot, settings)},
                                  clock=lambda: now[0], worker=name, concurrency=4)
            for tick in ticks:
                await asyncio.to_thread(barrier.wait, 60)
                now[0] = datetime.fromisoformat(tick)
                with session_scope(engine) as session:
                    remind_deadlines(session, settings, now[0])
                    send_digests(session, settings, now[0])
                while await sender.run_once():
                    pass

    asyncio.run(run())
    engine.dispose()


def test_two_workers_on_one_database_send_everything_exactly_once(tg, db, clock, database_url):
    City(db, clock())
    start = local(2026, 5, 28, 8)
    ticks = [(start + timedelta(hours=h)).astimezone(timezone.utc).isoformat() for h in range(0, 14 * 24, 3)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_worker_process, args=(database_url, tg.url, f"w{i}", ticks, barrier))
               for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    with session_scope(db) as s:
        rows = s.exec(select(OutboxMessage)).all()
    assert rows and {r.state for r in rows} == {OutboxState.SENT}
    delivered = [(c.params["chat_id"], c.params.get("text") or c.params.get("caption"))
                 for c in tg.calls if c.method in ("sendMessage", "sendPhoto") and c.status == 200]
    assert len(delivered) == len(rows)  # none lost
    assert max(Counter(delivered).values()) == 1  # none twice
    assert {r.claimed_by for r in rows} <= {"w0", "w1"}
