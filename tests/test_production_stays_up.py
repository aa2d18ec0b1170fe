"""A service that stays up: the HTTP server serves whatever the messenger does, the channel retries
with one log line per try and reports itself at /readyz; /metrics after traffic; JSON logs; serve."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bot import texts
from bot.app import create_app
from bot.core.engine import Engine
from scheduler import outbox
from scheduler.sender import OutboxSender
from handlers.telegram import TelegramTransport
from storage.db import session_scope
from storage.models import TargetKind
from tests.standins.server import ServedApp
from tests.standins.telegram_api import TEST_TOKEN, TelegramStandin
from tests.utils import make_roster, token_for, wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandinOnPort(TelegramStandin):
    """The Bot API stand-in on a port chosen beforehand, so the bot can be pointed at it while it is down."""

    def __init__(self, port: int, **kwargs):
        super().__init__(TEST_TOKEN, **kwargs)
        self.port = port

    def start(self):
        if self._served is None:
            self._closing = False
            served = ServedApp(self.app)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            served._sock, served._port = sock, self.port
            self._served = served.start()
        return self


def channel_lines(records) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "handlers.telegram" and r.levelno >= logging.WARNING]


def test_rating_page_answers_while_the_bot_api_is_down_and_the_bot_starts_when_it_comes_up(
        db, settings, clock, caplog):
    caplog.set_level(logging.INFO)
    roster = make_roster(db)
    port = free_port()
    standin = StandinOnPort(port)
    tg_settings = settings.model_copy(update={
        "telegram_bot_token": SecretStr(TEST_TOKEN), "telegram_api_base_url": f"http://127.0.0.1:{port}",
        "channel_retry_max_seconds": 2.0})
    token = token_for(db, tg_settings, TargetKind.CADRE, roster.cadre.id)
    with ServedApp(create_app(tg_settings.check(), Engine(db, tg_settings, clock=clock))) as served:
        page = httpx.get(f"{served.url}/r/{token}")
        assert page.status_code == 200 and roster.cadre.name in page.text
        assert httpx.get(f"{served.url}/healthz").status_code == 200
        ready = httpx.get(f"{served.url}/readyz")
        assert ready.status_code == 200  # the database is up; the messenger's state is in the body
        assert ready.json()["channels"]["telegram"]["state"] == "down"
        assert ready.json()["database"]["state"] == "ok"
        assert wait_for(lambda: len(channel_lines(caplog.records)) >= 3, timeout=15)

        lines = channel_lines(caplog.records)
        assert all("Telegram 渠道启动失败" in r.getMessage() and "秒后重试" in r.getMessage() for r in lines)
        numbers = [int(re.search(r"第 (\d+) 次", r.getMessage()).group(1)) for r in lines]
        assert numbers == list(range(1, len(lines) + 1))  # one line per try, none twice
        assert not [r for r in caplog.records if r.exc_info]  # no traceback

        with standin:
            assert wait_for(lambda: httpx.get(f"{served.url}/readyz").json()["channels"]["telegram"]["state"] == "ok",
                            timeout=15)
            user = standin.user(7001, first_name="李明")
            assert user.command_wait("/start")[-1]["text"] == texts.WELCOME_UNBOUND
        assert not [r for r in caplog.records if r.exc_info]


def test_polling_failures_log_a_line_each_degrade_the_channel_and_it_recovers(db, settings, clock, caplog):
    caplog.set_level(logging.INFO)
    make_roster(db)
    with TelegramStandin(TEST_TOKEN) as tg:
        tg_settings = settings.model_copy(update={"telegram_bot_token": SecretStr(TEST_TOKEN),
                                                  "telegram_api_base_url": tg.url})
        with ServedApp(create_app(tg_settings.check(), Engine(db, tg_settings, clock=clock))) as served:
            assert httpx.get(f"{served.url}/readyz").json()["channels"]["telegram"]["state"] == "ok"
            user = tg.user(7002)
            user.command_wait("/start")
            tg.fail_next("getUpdates", 500, count=3)
            # The long poll in progress ends when a message arrives; the next three answer 500.
            user.text("唤醒", deliver=True)
            assert wait_for(lambda: len(channel_lines(caplog.records)) >= 2, timeout=10)
            state = httpx.get(f"{served.url}/readyz").json()["channels"]["telegram"]
            assert state["state"] in ("degraded", "down") and "拉取消息失败" in state["detail"]
            assert wait_for(lambda: httpx.get(f"{served.url}/readyz").json()["channels"]["telegram"]["state"] == "ok",
                            timeout=15)
            lines = channel_lines(caplog.records)
            assert len(lines) == 3 and all("拉取消息失败（连续第" in r.getMessage() for r in lines)
            assert not [r for r in caplog.records if r.exc_info]
            assert user.command_wait("/start")[-1]["text"] == texts.WELCOME_UNBOUND


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_updates_sends_429s_and_the_outbox(db, settings, clock):
    import asyncio
    from datetime import timedelta

    from telegram import Bot

    make_roster(db)
    with TelegramStandin(TEST_TOKEN) as tg:
        tg_settings = settings.model_copy(update={"telegram_bot_token": SecretStr(TEST_TOKEN),
                                                  "telegram_api_base_url": tg.url})
        core = Engine(db, tg_settings, clock=clock)
        with ServedApp(create_app(tg_settings.check(), core)) as served:
            before = httpx.get(f"{served.url}/metrics").text
            user = tg.user(7003)
            for _ in range(3):
                user.command_wait("/start")
            with session_scope(db) as s:
                for i in range(2):
                    outbox.enqueue(s, key=f"m{i}", kind="notice", channel="telegram", recipient=str(7100 + i),
                                   body=f"通知 {i}", now=clock(), settings=tg_settings)
            page = httpx.get(f"{served.url}/metrics").text
            assert metric(page, "zf_outbox_depth") == 2
            tg.fail_next("sendMessage", 429, retry_after=1)

            async def send() -> None:
                bot = Bot(TEST_TOKEN, base_url=tg.base_url, base_file_url=tg.base_file_url)
                sender = OutboxSender(db, tg_settings, {"telegram": TelegramTransport(bot, tg_settings)}, clock=clock)
                await sender.run_once()
                clock.now += timedelta(minutes=5)
                await sender.run_once()
                await bot.shutdown()

            asyncio.run(send())
            after = httpx.get(f"{served.url}/metrics").text

    def grew(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("zf_updates_total", channel="telegram", outcome="ok") == 3
    assert grew("zf_update_seconds_count", channel="telegram") == 3
    assert grew("zf_sends_total", channel="telegram", result="sent") == 2
    assert grew("zf_sends_total", channel="telegram", result="rate_limited") == 1
    assert metric(after, "zf_outbox_depth") == 0
    assert metric(after, "zf_channel_state", channel="telegram") == 2  # ok
    assert "# TYPE zf_job_seconds histogram" in after


def bot_env(database_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WECHAT_"))}
    env.update({"DATABASE_URL": database_url, "ENVIRONMENT": "test", "LOAD_EXAMPLE_ROSTER": "false",
                "SCHEDULER_IN_RUN": "false", "PYTHONPATH": str(ROOT), **extra})
    return env


def test_serve_stays_up_without_a_chat_token_and_logs_json(db, database_url, tmp_path):
    port = free_port()
    dead = free_port()  # nothing listens there: the Bot API is unreachable
    env = bot_env(database_url, HTTP_PORT=str(port), LOG_FORMAT="json", TELEGRAM_BOT_TOKEN=TEST_TOKEN,
                  TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{dead}", CHANNEL_RETRY_MAX_SECONDS="2")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready["channels"]["telegram"]["state"] == "down"
        assert wait_for(lambda: log_path.read_text().count("Telegram 渠道启动失败") >= 2, timeout=15)
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        failures = [r for r in records if "Telegram 渠道启动失败" in r["message"]]
        assert len(failures) >= 2 and {r["level"] for r in failures} == {"WARNING"}
        assert failures[0]["logger"] == "handlers.telegram" and failures[0]["channel"] == "telegram"
        assert "time" in failures[0] and "retry_in" in failures[0]
        assert "Traceback" not in log_path.read_text()
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)

    # No chat token at all, no terminal: serve keeps serving the rating page.
    env = bot_env(database_url, HTTP_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["channels"] == {
            "web": {"state": "ok", "detail": "rating page"}}
        time.sleep(1)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully and re-raises the signal it caught, as systemd expects.
        assert process.wait(15) in (0, -signal.SIGTERM)


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_readyz_answers_503_when_the_database_is_gone_and_the_process_stays_alive(settings, tmp_path):
    import shutil

    from storage.db import make_engine, upgrade

    folder = tmp_path / "data"
    url = f"sqlite:///{folder / 'bot.db'}"
    engine = make_engine(url)
    upgrade(engine)
    local = settings.model_copy(update={"database_url": url})
    core = Engine(engine, local)
    with ServedApp(create_app(local.check(), core)) as served:
        ready = httpx.get(f"{served.url}/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == {"state": "ok"}
        shutil.rmtree(folder)  # the disk under the database is gone
        engine.dispose()
        ready = httpx.get(f"{served.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"]["state"] == "down" and ready.json()["status"] == "down"
        assert httpx.get(f"{served.url}/healthz").status_code == 200  # liveness: the process still serves
        assert httpx.get(f"{served.url}/metrics").status_code == 200
