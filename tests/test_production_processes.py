"""Several processes on one database: the messenger's limits hold for all senders together, a
sender killed mid-wave repeats no more than what it had in flight (and the outbox says which), and
the rating page's per-address limit holds across processes and ignores a forged X-Forwarded-For.

Each test runs with the limits shared through PostgreSQL (when TEST_DATABASE_URL is PostgreSQL)
and through Redis (when one answers on 127.0.0.1:6379; db 5 of it is this suite's).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from datetime import datetime, time, timezone
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from bot.config import Settings
from scheduler import outbox
from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState
from tests.standins.telegram_api import TEST_TOKEN, TelegramStandin
from tests.utils import wait_for

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/5"


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(params=["postgresql", "redis"])
def shared(request, database_url) -> dict:
    """The environment that makes processes share their limits: the database or Redis."""
    if request.param == "postgresql":
        if not database_url.startswith("postgresql"):
            pytest.skip("needs TEST_DATABASE_URL=postgresql://…")
        return {}
    if not redis_answers():
        pytest.skip("needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return {"REDIS_URL": REDIS_URL}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bot_env(database_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WECHAT_", "REDIS_", "FORWARDED_"))}
    env.update({"DATABASE_URL": database_url, "ENVIRONMENT": "test", "LOAD_EXAMPLE_ROSTER": "false",
                "QUIET_HOURS_START": "00:00", "QUIET_HOURS_END": "00:00", "DIGEST_DAILY_TIME": "",
                "DIGEST_WEEKLY_DAY": "", "PYTHONPATH": str(ROOT), **extra})
    return env


class Worker:
    """``python -m bot worker`` in a process of its own, its log in a file."""

    def __init__(self, env: dict, folder: Path, name: str):
        self.log = folder / f"{name}.log"
        with open(self.log, "w") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=folder, env=env,
                                            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)

    def started(self) -> bool:
        return "worker 已启动" in self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def awake(settings: Settings) -> Settings:
    """``settings`` with no quiet hours, like the workers' (``bot_env``): the tests enqueue at the real time of
    day, and a reminder enqueued between 22:00 and 08:00 Beijing time would otherwise wait for the morning."""
    return settings.model_copy(update={"quiet_hours_start": time(0, 0), "quiet_hours_end": time(0, 0)})


def enqueue_wave(db, settings, n: int, chats: int) -> None:
    """``n`` reminders, each with a body of its own, to ``chats`` chats in turn, due now at any hour."""
    now = datetime.now(timezone.utc)
    with session_scope(db) as s:
        for i in range(n):
            outbox.enqueue(s, key=f"wave-{i}", kind="reminder", channel="telegram", recipient=str(9000 + i % chats),
                           body=f"提醒 {i}", now=now, settings=awake(settings))


def delivered(tg) -> Counter:
    return Counter(c.params.get("text") for c in tg.calls_of("sendMessage") if c.status == 200)


def pending(db) -> int:
    with session_scope(db) as s:
        return len(s.exec(select(OutboxMessage.id).where(OutboxMessage.state == OutboxState.PENDING)).all())


def test_two_workers_keep_telegrams_limits_together(db, settings, database_url, shared, tmp_path):
    n = 150
    with TelegramStandin(TEST_TOKEN) as tg:
        tg.enforce_limits(30, 1)
        env = bot_env(database_url, TELEGRAM_BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_BASE_URL=tg.url,
                      OUTBOX_BATCH="10", OUTBOX_LEASE_SECONDS="30", **shared)
        workers = [Worker(env, tmp_path, f"worker{i}") for i in range(2)]
        try:
            assert wait_for(lambda: all(w.started() for w in workers), timeout=30)
            enqueue_wave(db, settings, n, chats=50)
            assert wait_for(lambda: pending(db) == 0, timeout=60)
        finally:
            for w in workers:
                w.stop()
        sends = tg.calls_of("sendMessage")
        limited = [(sum(1 for o in sends if o.status == 200 and c.at - 1 < o.at < c.at),
                    [round(c.at - o.at, 3) for o in sends if o.status == 200 and o.params.get("chat_id") == c.params.get("chat_id")
                     and c.at - 1.5 < o.at < c.at]) for c in sends if c.status == 429]
        assert tg.too_many_requests == 0, limited  # (sends in the second before, this chat's) for each 429
        counts = delivered(tg)
        assert sorted(counts) == sorted(f"提醒 {i}" for i in range(n)) and set(counts.values()) == {1}
    with session_scope(db) as s:
        senders = {row.claimed_by.split(":")[1] for row in s.exec(select(OutboxMessage)).all()}
    assert len(senders) == 2  # both processes sent part of the wave


class SlowAnswers:
    """Holds the Bot API's answer to sendMessage back a while after the message is delivered: the
    window in which a sender that dies leaves a message it cannot know was sent."""

    def __init__(self, app, delay: float):
        self.app, self.delay = app, delay

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/sendMessage"):
            return await self.app(scope, receive, send)

        async def slow(message):
            if message["type"] == "http.response.start":
                await asyncio.sleep(self.delay)
            await send(message)

        return await self.app(scope, receive, slow)


def test_a_sender_killed_mid_wave_repeats_at_most_what_it_had_in_flight_and_says_so(
        db, settings, database_url, shared, tmp_path):
    n = 120
    tg = TelegramStandin(TEST_TOKEN)
    tg.app = SlowAnswers(tg.app, 0.3)
    with tg:
        tg.enforce_limits(30, 1)
        env = bot_env(database_url, TELEGRAM_BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_BASE_URL=tg.url,
                      OUTBOX_BATCH="10", OUTBOX_LEASE_SECONDS="5", **shared)
        first = Worker(env, tmp_path, "first")
        try:
            assert wait_for(first.started, timeout=30)
            enqueue_wave(db, settings, n, chats=60)
            assert wait_for(lambda: sum(delivered(tg).values()) >= 30, timeout=30)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        finally:
            first.stop()
        with session_scope(db) as s:
            in_flight = {row.id: row.body for row in s.exec(select(OutboxMessage).where(
                OutboxMessage.state == OutboxState.PENDING, OutboxMessage.in_flight_at != None)).all()}  # noqa: E711
        second = Worker(env, tmp_path, "second")
        try:
            assert wait_for(lambda: pending(db) == 0, timeout=60)
        finally:
            second.stop()
        counts = delivered(tg)
        assert tg.too_many_requests == 0

    assert sorted(counts) == sorted(f"提醒 {i}" for i in range(n))  # nothing lost
    repeated = {body for body, times in counts.items() if times > 1}
    assert set(counts.values()) <= {1, 2}  # at most once more
    assert repeated <= set(in_flight.values())  # only what was in flight at the kill
    with session_scope(db) as s:
        states = {row.id: (row.state, row.interrupted) for row in s.exec(select(OutboxMessage)).all()}
    assert {states[i] for i in in_flight} <= {(OutboxState.SENT, 1)}

    listing = subprocess.run([sys.executable, "-m", "bot", "outbox"], cwd=tmp_path, capture_output=True, text=True,
                             env=bot_env(database_url), timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert f"可能重复 {len(in_flight)} 条" in listing.stdout or not in_flight
    for message_id in in_flight:
        assert re.search(rf"^#{message_id} .*可能重复", listing.stdout, re.M), listing.stdout


def test_the_rating_pages_address_limit_holds_across_processes_and_ignores_forged_addresses(
        db, database_url, shared, tmp_path):
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=bot_env(database_url, HTTP_PORT=str(port), RATING_RATE_LIMIT="6", **shared))
                 for port in ports]

    def up(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(lambda: all(up(p) for p in ports), timeout=30)
        statuses = []
        for i in range(10):
            # Each POST claims to come from another client, through a proxy nobody trusts.
            answer = httpx.post(f"http://127.0.0.1:{ports[i % 2]}/r/AAAAAAAAAAAA", data={"level": "5"},
                                headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
            statuses.append(answer.status_code)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(15)
    assert 429 not in statuses[:6]
    assert statuses[6:] == [429] * 4


def test_a_trusted_proxys_forwarded_address_is_believed_and_a_wrong_setting_stops_at_start(db, database_url, tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=bot_env(database_url, HTTP_PORT=str(port), RATING_RATE_LIMIT="2",
                                           FORWARDED_ALLOW_IPS="127.0.0.1"))
    try:
        assert wait_for(lambda: _up(port), timeout=30)

        def post(client: str) -> int:
            return httpx.post(f"http://127.0.0.1:{port}/r/AAAAAAAAAAAA", data={"level": "5"},
                              headers={"X-Forwarded-For": client}).status_code

        # Behind a trusted proxy every citizen has an address of their own ...
        assert 429 not in [post(f"203.0.113.{i}") for i in range(1, 7)]
        # ... and the limit still holds for each of them.
        assert [post("198.51.100.9") for _ in range(3)][2] == 429
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)

    wrong = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, capture_output=True, text=True,
                           env=bot_env(database_url, FORWARDED_ALLOW_IPS="proxy.example"), timeout=60)
    assert wrong.returncode == 2 and "FORWARDED_ALLOW_IPS" in wrong.stderr


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
