"""The web process's reply pump on WeCom: a callback's answer written to the outbox already claimed and
in flight, sent from memory once its transaction committed, marked sent in batches; a failure left
to the outbox's rules; a web process killed with an answer in flight, whose worker sends it once more
after the lease and WeCom drops the repeat. Real HTTP both ways, the stand-in playing WeCom."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import httpx
from sqlmodel import select

from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState
from tests.standins.wecom_api import WeComStandin
from tests.test_wecom_e2e import (AES_KEY, AGENT_ID, CORP_ID, REPO, SECRET, TOKEN, Talk, _bound_member, running_bot,  # noqa: F401
                                  settle, wc, wc_settings)
from tests.utils import free_port, make_roster, stop, wait_for


def _rows(db) -> list[OutboxMessage]:
    with session_scope(db) as s:
        return list(s.exec(select(OutboxMessage).where(OutboxMessage.channel == "wecom")
                           .order_by(OutboxMessage.id)).all())


def _cards(wc, userid: str = "LiMing"):
    return [d for d in wc.received(userid) if d.msgtype == "template_card"]


def test_an_answer_is_written_claimed_and_in_flight_then_sent_from_memory_and_marked(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    talk = Talk(wc, db, "LiMing")
    wc.send_delay = 0.6  # the card is delivered, then WeCom's answer held: the row is seen in flight
    with running_bot(wc_settings, db, clock, wc):
        assert talk.member.click("visit") is None  # the card goes by message/send
        assert wait_for(lambda: _cards(wc), timeout=10)
        [row] = _rows(db)
        assert row.state == OutboxState.PENDING and row.kind == "reply"
        assert row.claimed_by and row.in_flight_at is not None and row.claimed_until > row.in_flight_at
        wc.send_delay = 0.0
        settle(db)
        [row] = _rows(db)
        assert row.state == OutboxState.SENT and row.interrupted == 0 and row.in_flight_at is None
        talk._after(None)
        assert "住户1" in " ".join(b["text"] for b in talk.card.buttons)
        talk.pick("住户1")
        assert "①留下一张联系卡" in talk.card.text and not talk.card.replaces  # a text and a card: by the API
        talk.pick("是")
        assert "②填好一张调查卷" in talk.card.text and talk.card.replaces  # passively, in the pressed card's place
        assert "已取消" in talk.pick("取消")  # a text: by message/send again
    sends = [c for c in wc.calls if c.path == "/cgi-bin/message/send"]
    by_api = [d for d in wc.received("LiMing") if d.replaces is None]
    assert len(sends) == len(by_api) == 4 and not wc.duplicates  # each sent once
    assert {r.state for r in _rows(db)} == {OutboxState.SENT}


def test_a_failed_send_goes_by_the_outbox_rules_and_the_worker_sends_it_later(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    wc.send_errors = [{"errcode": 45009, "errmsg": "api freq out of limit"}]
    with running_bot(wc_settings, db, clock, wc):
        assert wc.member("LiMing").click("visit") is None
        assert wait_for(lambda: _rows(db) and _rows(db)[0].last_error, timeout=10)
    [row] = _rows(db)
    # WeCom said the app calls too often: tried again after a minute, not counted as an attempt,
    # and no longer held by the web process, so the worker may claim it.
    assert row.state == OutboxState.PENDING and row.attempts == 0 and "45009" in row.last_error
    assert row.claimed_until is None and row.in_flight_at is None
    assert (row.next_attempt_at.replace(tzinfo=timezone.utc) - clock()).total_seconds() >= 55
    assert not _cards(wc)


def test_a_web_process_killed_with_an_answer_in_flight_gets_it_to_the_member_once(db, database_url, tmp_path):
    roster = make_roster(db)
    _bound_member(db, roster, lambda: datetime.now(timezone.utc))
    port = free_port()
    with WeComStandin(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, token=TOKEN, aes_key=AES_KEY) as wc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WECHAT_", "REDIS_"))}
        env.update({"PYTHONPATH": str(REPO), "DATABASE_URL": database_url, "ENVIRONMENT": "test",
                    "LOAD_EXAMPLE_ROSTER": "false", "HTTP_PORT": str(port), "WECOM_TOKEN": TOKEN,
                    "WECOM_AES_KEY": AES_KEY, "WECOM_CORP_ID": CORP_ID, "WECOM_AGENT_ID": str(AGENT_ID),
                    "WECOM_SECRET": SECRET, "WECOM_API_BASE_URL": wc.url, "OUTBOX_LEASE_SECONDS": "5",
                    "QUIET_HOURS_START": "00:00", "QUIET_HOURS_END": "00:00", "REMINDER_DAYS_BEFORE": "[]",
                    "DIGEST_DAILY_TIME": "", "DIGEST_WEEKLY_DAY": "", "LOG_LEVEL": "WARNING"})

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        web = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_for(up, timeout=30), web.stderr.read().decode() if web.poll() is not None else "not up"
            wc.webhook_url = f"http://127.0.0.1:{port}/wecom"
            wc.send_delay = 5.0  # the card arrives; WeCom's answer is held: the kill lands in flight
            assert wc.member("LiMing").click("visit") is None
            assert wait_for(lambda: _cards(wc), timeout=10)
            web.send_signal(signal.SIGKILL)
            web.wait()
        finally:
            if web.poll() is None:
                web.kill()
        [row] = _rows(db)
        assert row.state == OutboxState.PENDING and row.in_flight_at is not None  # sent, never marked
        wc.send_delay = 0.0
        worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=tmp_path, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: _rows(db)[0].state == OutboxState.SENT, timeout=30)
        finally:
            stop(worker)
        [row] = _rows(db)
        assert row.interrupted == 1  # listed as 可能重复 by `python -m bot outbox`
        assert len(_cards(wc)) == 1  # the member has the card once
        assert [d.msgtype for d in wc.duplicates] == ["template_card"]  # the repeat, dropped by WeCom
