"""Retention (issue 15, item 7): the prune job removes what each setting says and nothing else."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlmodel import select

from bot.cli import main as cli_main
from bot.config import get_settings
from scheduler import jobs
from scheduler.service import _run_job
from storage.db import session_scope
from storage.models import (BindingAttempt, ChatAccount, ConsoleSession, DialogueState, LoginCode, OutboxAttachment,
                            OutboxMessage, OutboxState, ProcessedInbound, WeChatUser)
from tests.utils import make_roster

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def retention(settings):
    return settings.model_copy(update={"prune_after_days": 14, "retain_citizen_state_days": 30,
                                       "retain_sent_outbox_days": 30, "retain_dead_outbox_days": 180,
                                       "bind_failure_window_minutes": 60})


def _outbox(s, key: str, state: str, created, sent=None, chart: bool = False) -> None:
    row = OutboxMessage(idempotency_key=key, kind="digest-daily", channel="telegram", recipient="1", body=key,
                        state=state, next_attempt_at=created, created_at=created, sent_at=sent)
    s.add(row)
    s.flush()
    if chart:
        s.add(OutboxAttachment(message_id=row.id, filename=f"{key}.png", content_type="image/png", content=b"\x89PNG"))


def _state(s, user: str, idle, now, flow: str | None = None, channel: str = "telegram") -> None:
    s.add(DialogueState(channel=channel, external_user_id=user, flow=flow, step="pick" if flow else None,
                        data={}, version=1, updated_at=now - idle))


@pytest.fixture
def grown(db, clock):
    """A database with rows on both sides of every retention limit (one minute inside or outside)."""
    now = clock()
    roster = make_roster(db)
    with session_scope(db) as s:
        s.add(ChatAccount(channel="telegram", external_user_id="cadre", cadre_id=roster.cadre.id, bound_at=now,
                          bound_by="code"))
        s.add(ChatAccount(channel="wechat", external_user_id="o-cadre", cadre_id=roster.supervisor.id, bound_at=now,
                          bound_by="code"))
        _state(s, "cadre", 400 * DAY, now, flow="visit")  # a bound cadre's: stays, however old
        _state(s, "citizen-old", 30 * DAY + MINUTE, now)
        _state(s, "citizen-left-flow", 30 * DAY + MINUTE, now, flow="rating")
        _state(s, "citizen-recent", 30 * DAY - MINUTE, now, flow="report")
        _state(s, "o-cadre", 400 * DAY, now, channel="wechat")
        s.add(WeChatUser(openid="o-cadre", last_inbound_at=now - 400 * DAY))
        s.add(WeChatUser(openid="o-citizen-old", last_inbound_at=now - 30 * DAY - MINUTE))
        s.add(WeChatUser(openid="o-citizen-recent", last_inbound_at=now - 30 * DAY + MINUTE))
        _outbox(s, "sent-old", OutboxState.SENT, now - 40 * DAY, sent=now - 30 * DAY - MINUTE, chart=True)
        _outbox(s, "sent-recent", OutboxState.SENT, now - 40 * DAY, sent=now - 30 * DAY + MINUTE, chart=True)
        _outbox(s, "pending-old", OutboxState.PENDING, now - 400 * DAY, chart=True)
        _outbox(s, "dead-old", OutboxState.DEAD, now - 180 * DAY - MINUTE)
        _outbox(s, "unreachable-old", OutboxState.UNREACHABLE, now - 180 * DAY - MINUTE)
        _outbox(s, "dead-recent", OutboxState.DEAD, now - 180 * DAY + MINUTE)
        s.add(ProcessedInbound(channel="telegram", event_key="old", created_at=now - 14 * DAY - MINUTE))
        s.add(ProcessedInbound(channel="telegram", event_key="recent", created_at=now - 14 * DAY + MINUTE))
        s.add(BindingAttempt(key="account:telegram:old", failures=3, first_failed_at=now - 61 * MINUTE))
        s.add(BindingAttempt(key="account:telegram:run", failures=3, first_failed_at=now - 59 * MINUTE))
        s.add(BindingAttempt(key="account:telegram:locked", failures=20, first_failed_at=now - 90 * MINUTE,
                             locked_until=now + 10 * MINUTE))
        for name, expired in (("code-old", 14 * DAY + MINUTE), ("code-recent", 14 * DAY - MINUTE), ("code-live", -MINUTE)):
            s.add(LoginCode(kind="code", secret_hash=name, created_at=now - expired - 5 * MINUTE,
                            expires_at=now - expired))
        for name, ended, seen in (("ended-old", 14 * DAY + MINUTE, 14 * DAY + MINUTE),
                                  ("ended-recent", 14 * DAY - MINUTE, 14 * DAY - MINUTE),
                                  ("idle-old", None, 14 * DAY + MINUTE), ("open", None, MINUTE)):
            s.add(ConsoleSession(token_hash=name, cadre_id=roster.supervisor.id, created_at=now - 20 * DAY,
                                 last_seen_at=now - seen, ended_at=now - ended if ended else None, how="code"))
    return roster


def _left(db) -> dict[str, list]:
    with session_scope(db) as s:
        return {
            "dialogue_state": sorted(r.external_user_id for r in s.exec(select(DialogueState))),
            "wechat_user": sorted(r.openid for r in s.exec(select(WeChatUser))),
            "outbox": sorted(r.idempotency_key for r in s.exec(select(OutboxMessage))),
            "outbox_attachment": sorted(r.filename for r in s.exec(select(OutboxAttachment))),
            "processed_inbound": sorted(r.event_key for r in s.exec(select(ProcessedInbound))),
            "binding_attempt": sorted(r.key for r in s.exec(select(BindingAttempt))),
            "login_code": sorted(r.secret_hash for r in s.exec(select(LoginCode))),
            "console_session": sorted(r.token_hash for r in s.exec(select(ConsoleSession))),
        }


KEPT = {
    "dialogue_state": ["cadre", "citizen-recent", "o-cadre"],
    "wechat_user": ["o-cadre", "o-citizen-recent"],
    "outbox": ["dead-recent", "pending-old", "sent-recent"],
    "outbox_attachment": ["pending-old.png", "sent-recent.png"],
    "processed_inbound": ["recent"],
    "binding_attempt": ["account:telegram:locked", "account:telegram:run"],
    "login_code": ["code-live", "code-recent"],
    "console_session": ["ended-recent", "open"],
}
REMOVED = {"processed_inbound": 1, "dialogue_state": 2, "wechat_user": 1, "outbox_attachment": 1,
           "outbox": 3, "binding_attempt": 1, "login_code": 1, "console_session": 2}


def test_pruning_removes_what_each_setting_says_and_nothing_else(db, retention, clock, grown):
    with session_scope(db) as s:
        assert jobs.prune_counts(s, retention, clock(), dry_run=True) == REMOVED
    assert _left(db)["outbox"] == sorted(KEPT["outbox"] + ["sent-old", "dead-old", "unreachable-old"])  # dry run
    with session_scope(db) as s:
        assert jobs.prune_counts(s, retention, clock()) == REMOVED
    assert _left(db) == KEPT
    with session_scope(db) as s:  # a second run finds nothing more
        assert sum(jobs.prune_counts(s, retention, clock()).values()) == 0


def test_longer_settings_keep_more(db, retention, clock, grown):
    longer = retention.model_copy(update={"retain_citizen_state_days": 31, "retain_sent_outbox_days": 31,
                                          "retain_dead_outbox_days": 181, "prune_after_days": 15})
    # login_code and console_session follow prune_after_days too: one day more keeps them all.
    with session_scope(db) as s:
        counts = jobs.prune_counts(s, longer, clock())
    assert counts == {**{table: 0 for table in REMOVED}, "binding_attempt": 1}


def test_the_worker_job_logs_a_count_per_table(db, retention, clock, grown, caplog):
    with caplog.at_level(logging.INFO, logger="scheduler.jobs"):
        _run_job("prune", db, retention, clock)
    [line] = [r.getMessage() for r in caplog.records if r.name == "scheduler.jobs" and "prune" in r.getMessage()]
    for table, n in REMOVED.items():
        assert f"{table} {n}" in line
    assert _left(db) == KEPT


def test_prune_cli_dry_run_then_for_real(db, settings, grown, monkeypatch, capsys):
    # The CLI's clock is the real one: rows made relative to the test clock (2026-11-20) are judged from
    # today; the dry run must report and keep, the real run must remove the same counts.
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        before = _left(db)
        assert cli_main(["prune", "--dry-run"]) == 0
        dry = capsys.readouterr().out
        assert "试运行" in dry and "outbox" in dry
        assert _left(db) == before
        assert cli_main(["prune"]) == 0
        real = capsys.readouterr().out
        assert real.split("：", 1)[1] == dry.split("：", 1)[1]
        assert "pending-old" in _left(db)["outbox"] and "cadre" in _left(db)["dialogue_state"]
    finally:
        get_settings.cache_clear()
