"""End to end on WeCom / 政务微信: the production app under uvicorn, real HTTP both ways.

A local stand-in plays WeCom (tests/standins/wecom_api.py): it pushes encrypted, signed callbacks
in the published formats to our callback URL, reads our passive replies as WeCom would, and
serves the API the bot calls (token, message/send, update_template_card, the directory, menu,
media), recording what each member received. Like WeCom it silently drops messages beyond a
member's limits and repeats caught by the duplicate check, and lists them for the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, time as dtime, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.cli import main as cli_main
from bot.config import SettingsError, get_settings
from bot.core import binding
from bot.core.engine import Engine
from handlers.wecom import MemberLimiter, WeComApi, WeComTransport
from scheduler.outbox import Attachment, enqueue, enqueue_for_cadre
from scheduler.sender import OutboxSender
from storage.db import session_scope
from storage.models import AuditLog, Cadre, ChatAccount, DialogueState, OutboxMessage, OutboxState, ProcessedInbound, Unit, Visit
from storage.models import WeComMember
from tests.standins.server import ServedApp
from tests.standins.wecom_api import DirectoryEntry, WeComStandin
from tests.utils import make_roster, stop

CORP_ID = "ww1a2b3c4d5e6f7a8b"
AGENT_ID = 1000002
SECRET = "Qk3hTBm2p9xU8rVwZyN4cLd6eFgHjK1mA5sD7fG0qWe"
TOKEN = "zuofengwecom2026"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def wc(clock):
    with WeComStandin(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, token=TOKEN, aes_key=AES_KEY,
                      clock=lambda: clock().timestamp()) as standin:
        yield standin


def wecom_settings(settings, wc, **more):
    return settings.model_copy(update={
        "wecom_token": SecretStr(TOKEN), "wecom_aes_key": SecretStr(AES_KEY), "wecom_corp_id": CORP_ID,
        "wecom_agent_id": AGENT_ID, "wecom_secret": SecretStr(SECRET), "wecom_api_base_url": wc.url,
        # No quiet hours: the proactive tests send at the real time of day.
        "quiet_hours_start": dtime(0, 0), "quiet_hours_end": dtime(0, 0), **more})


@pytest.fixture
def wc_settings(settings, wc):
    return wecom_settings(settings, wc)


@contextmanager
def running_bot(settings, db, clock, wc, core: Engine | None = None):
    """The bot as deployed: create_app served on loopback, the stand-in pointed at it."""
    core = core or Engine(db, settings, clock=clock)
    with ServedApp(create_app(settings.check(), core)) as served:
        wc.webhook_url = f"{served.url}{settings.wecom_webhook_path}"
        yield served


def settle(db, timeout: float = 15.0) -> None:
    """Waits until the app's reply pump has sent every WeCom row that is due."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(db) as s:
            pending = s.exec(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.channel == "wecom", OutboxMessage.state == OutboxState.PENDING)).one()
        if not pending:
            return
        time.sleep(0.02)
    raise AssertionError("WeCom replies still pending")


def count(db, model, *where) -> int:
    with session_scope(db) as s:
        return s.exec(select(func.count()).select_from(model).where(*where)).one()


def number_of(content: str, label: str) -> str:
    options = [m.groups() for m in re.finditer(r"^(\d+)\. (.*)$", content, re.M)]
    for number, text in options:
        if label in text:
            return number
    raise AssertionError(f"no option {label!r} in:\n{content}")


def chosen(update: dict) -> str:
    """What a pressed card shows of the choice: its greyed-out buttons' text, or the source line of
    the card that took its place."""
    return update["button"]["replace_name"] if "button" in update else update["template_card"]["source"]["desc"]


class Talk:
    """A member in the app: what they see after each step is the passive reply plus the messages
    that arrived by the API; options on a card are pressed, numbered options answered by number."""

    def __init__(self, wc: WeComStandin, db, userid: str):
        self.wc, self.db, self.member = wc, db, wc.member(userid)
        self.seen = len(wc.received(userid))
        self.card = None  # the card of the last step, if it brought one
        self.last = ""

    def _after(self, passive: str | None) -> str:
        settle(self.db)
        new = self.wc.received(self.member.userid)[self.seen:]
        self.seen += len(new)
        cards = [d for d in new if d.msgtype == "template_card"]
        self.card = cards[-1] if cards else None
        if passive is not None and passive.startswith(("[update_button]", "[update_template_card]")):
            passive = None  # the pressed card greyed out, or replaced by the next (in ``new``)
        self.last = "\n".join(([passive] if passive else []) + [d.text for d in new])
        return self.last

    def say(self, text: str) -> str:
        return self._after(self.member.text(text))

    def click(self, key: str) -> str:
        return self._after(self.member.click(key))

    def press(self, label: str, card=None) -> str:
        return self._after(self.member.press(card or self.card, label))

    def pick(self, label: str) -> str:
        if self.card is not None and any(label in b["text"] for b in self.card.buttons):
            return self.press(label)
        return self.say(number_of(self.last, label))


def directory_of(roster) -> list[DirectoryEntry]:
    """The cadre and supervisor with their mobiles, a member whose mobile the app may not see, a
    member who is not in the roster; the roster's admin is not in the directory."""
    return [DirectoryEntry("LiMing", "李明", "+86 138-0000-0003", [2]), DirectoryEntry("WangFang", "王芳", "13800000002"),
            DirectoryEntry("ZhangWei", "张伟", None), DirectoryEntry("ChenJing", "陈静", "13911112222", [2])]


def _cli_env(monkeypatch, database_url, wc, **extra: str) -> None:
    env = {"DATABASE_URL": database_url, "WECOM_TOKEN": TOKEN, "WECOM_AES_KEY": AES_KEY, "WECOM_CORP_ID": CORP_ID,
           "WECOM_AGENT_ID": str(AGENT_ID), "WECOM_SECRET": SECRET, "WECOM_API_BASE_URL": wc.url, **extra}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def _cli(*argv: str) -> int:
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


# -- the callback URL ---------------------------------------------------------------------------------

def test_url_verification_answers_the_decrypted_echostr_only_when_signed_and_fresh(wc, wc_settings, db, clock):
    with running_bot(wc_settings, db, clock, wc):
        ok = wc.verify("1616140317555161061")
        assert (ok.status_code, ok.text) == (200, "1616140317555161061")
        assert wc.verify("1", signature="0" * 40).status_code == 403
        assert wc.verify("1", timestamp=int(clock().timestamp()) - 3600).status_code == 403


# -- directory sync, then a visit by card buttons -------------------------------------------------------

def test_directory_sync_binds_by_mobile_then_a_whole_visit_by_card_buttons(
        wc, wc_settings, db, clock, database_url, monkeypatch, capsys):
    roster = make_roster(db)
    wc.departments.append({"id": 2, "name": "市住建局", "parentid": 1})
    wc.directory = directory_of(roster)
    _cli_env(monkeypatch, database_url, wc)
    assert _cli("wecom-sync") == 0
    out = capsys.readouterr().out
    assert texts.WECOM_SYNC_HEADER.format(members=4, matched=2, bound=2) in out
    matched, roster_only = out.split(texts.WECOM_SYNC_ROSTER_ONLY)
    assert "市住建局 李明（LiMing）" in matched and "市住建局 王芳（WangFang）" in matched
    assert "市住建局 赵强" in roster_only.split(texts.WECOM_SYNC_DIRECTORY_ONLY)[0]
    assert "陈静（ChenJing）" in out.split(texts.WECOM_SYNC_DIRECTORY_ONLY)[1]
    assert "张伟（ZhangWei）" in out.split(texts.WECOM_SYNC_NO_MOBILE)[1]
    with session_scope(db) as s:
        accounts = {a.external_user_id: (a.cadre_id, a.bound_by) for a in s.exec(select(ChatAccount)).all()}
        assert accounts == {"LiMing": (roster.cadre.id, "wecom"), "WangFang": (roster.supervisor.id, "wecom")}
        assert s.get(WeComMember, "LiMing").departments == "市住建局"
    assert len(wc.calls_of("/cgi-bin/user/list_id")) == 2  # two pages
    assert _cli("wecom-sync") == 0  # again: nothing new to bind, nothing else changed
    assert texts.WECOM_SYNC_HEADER.format(members=4, matched=2, bound=0) in capsys.readouterr().out
    assert count(db, ChatAccount) == 2
    with session_scope(db) as s:
        audited = s.exec(select(AuditLog).where(AuditLog.action == "binding.directory")).all()
        assert sorted(a.target for a in audited) == sorted([f"cadre:{roster.cadre.id}", f"cadre:{roster.supervisor.id}"])

    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        talk.click("visit")  # the menu's 入户走访: no binding code was ever typed
        assert texts.PICK_HOUSEHOLD in talk.last and talk.card is not None
        assert [b["text"] for b in talk.card.buttons][-1] == texts.CANCEL
        assert "回头看" in talk.pick("住户2")
        talk.pick("是")
        for answer in ("满意", "基本满意", "方便", "不涉及"):
            talk.pick(answer)
        assert talk.card is not None and "调查 5/6" in talk.last
        talk.pick("满意")
        assert "③解决一件困难事" in talk.say("希望多组织文艺活动")
        assert talk.card is None and "1. 城建" in talk.last  # eleven options: numbered, no card
        talk.pick("物业")
        assert texts.ASK_DIFFICULTY_SOLVED in talk.say("电梯经常停运")
        talk.pick("未解决")
        assert texts.ASK_PHOTO in talk.pick("是")
        assert texts.ASK_LOCATION in talk._after(talk.member.image("MEDIA-7"))
        summary = talk._after(talk.member.location(31.2304, 121.4737))
        assert "电梯经常停运" in summary
        assert "本半年已走访 1/3 户" in talk.pick("确认提交")
        assert "已走访 1/3 户" in talk.click("progress")
    with session_scope(db) as s:
        [visit] = s.exec(select(Visit)).all()
        assert (visit.channel, visit.photo_ref) == ("wecom", "wecom:MEDIA-7")
        # WeCom sends GCJ-02, as WeChat does; one datum is stored, WGS-84.
        from bot.core.geo import GCJ02, to_wgs84

        assert (visit.latitude, visit.longitude) == pytest.approx(tuple(to_wgs84(31.2304, 121.4737, GCJ02).__dict__.values()))
    # Each pressed card was replaced by the next question with the choice on its source line, or, when
    # the answer was more than a card, greyed out with the choice.
    shown = [chosen(c) for c in wc.updated_cards]
    assert shown[:3] == ["➤ 住户2 · 幸…", "已选：是", "已选：满意"] and any("确认提交" in s for s in shown)
    assert all(c.get("passive") for c in wc.updated_cards) and not wc.calls_of("/cgi-bin/message/update_template_card")
    assert not wc.over_limit and not wc.duplicates
    assert wc.token_fetches == 1  # one access token for the two syncs and the app, kept in the database


def test_a_member_outside_the_directory_binds_with_a_code(wc, wc_settings, db, clock):
    roster = make_roster(db)
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), wc_settings)
    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        assert texts.NOT_BOUND in talk.say("走访") and texts.WECOM_BIND_HINT in talk.last
        assert talk.say(f"绑定 {code}") == texts.BOUND_OK.format(name="李明", unit="市住建局")
    with session_scope(db) as s:
        [account] = s.exec(select(ChatAccount)).all()
        assert (account.channel, account.external_user_id, account.bound_by) == ("wecom", "LiMing", "code")


def _bound_member(db, roster, clock, userid: str = "LiMing") -> None:
    with session_scope(db) as s:
        s.add(ChatAccount(channel="wecom", external_user_id=userid, cadre_id=roster.cadre.id, bound_at=clock(),
                          bound_by="wecom"))


def _survey_answer(db) -> dict:
    with session_scope(db) as s:
        return s.get(DialogueState, ("wecom", "LiMing")).data


def test_a_card_pressed_twice_counts_once(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        talk.click("visit")
        talk.pick("住户1")
        card = talk.card  # ①留下一张联系卡: 是 / 否
        assert "①留下一张联系卡" in card.text
        assert "②填好一张调查卷" in talk.press("是", card)
        # The pressed card now asks the next question, the choice on its source line.
        now_showing = [d for d in wc.received("LiMing") if d.replaces == card.body["template_card"]["task_id"]][-1]
        assert "②填好一张调查卷" in now_showing.text and chosen(wc.updated_cards[-1]) == "已选：是"
        before, updates = _survey_answer(db), len(wc.updated_cards)
        # A second press that raced the first one's update: the old question's other button.
        assert texts.STALE_BUTTON in talk.press("否", card)
        assert _survey_answer(db) == before
        # It changes no card: the card shows the question to answer now, still pressable.
        assert len(wc.updated_cards) == updates
        assert "调查 2/6" in talk.press("满意", now_showing)
        assert _survey_answer(db) != before


def test_a_press_on_a_card_from_an_earlier_visit_is_stale_and_changes_nothing(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        talk.click("visit")
        talk.pick("住户1")
        old = talk.card
        talk.say("取消")
        talk.click("visit")
        talk.pick("住户3")
        state = _survey_answer(db)
        assert texts.STALE_BUTTON in talk.press("否", old)
        assert _survey_answer(db) == state and "住户3" in talk.pick("是") + str(state)
    assert count(db, Visit) == 0


def test_the_same_callback_three_times_gives_one_record_and_the_same_answer(wc, wc_settings, db, clock):
    roster = make_roster(db)
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), wc_settings)
    member = wc.member("LiMing")
    with running_bot(wc_settings, db, clock, wc):
        bind_xml = member.xml_text(f"绑定 {code}")
        answers = [member.send(bind_xml) for _ in range(3)]
        assert answers == [texts.BOUND_OK.format(name="李明", unit="市住建局")] * 3

        talk = Talk(wc, db, "LiMing")
        talk.click("visit")
        press_xml = member.xml_press(talk.card, "住户2")
        answers = []
        for _ in range(3):
            answers.append(member.send(press_xml))
            settle(db)
        assert answers == ["[update_button] ➤ 住户2 · 幸…"] * 3  # the card greyed out; the rest by the API
    received = wc.received("LiMing")
    assert sum(1 for d in received if "回头看" in d.text) == 1
    assert count(db, ChatAccount) == 1
    assert count(db, ProcessedInbound) == 3 and rendered_answers(db) == 3  # bind, click, press: once each


def test_forged_stale_foreign_hostile_and_oversized_callbacks_are_refused_and_change_nothing(
        wc, wc_settings, db, clock):
    roster = make_roster(db)
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), wc_settings)
    member = wc.member("LiMing")
    xml = member.xml_text(f"绑定 {code}")
    with running_bot(wc_settings, db, clock, wc):
        assert wc.post(xml, signature="f" * 40).status_code == 403
        assert wc.post(xml, timestamp=int(clock().timestamp()) - 3600).status_code == 403
        assert wc.post(xml, corp_id="ww0000000000000000").status_code == 400  # sealed for another corp
        hostile = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY big "AAAA">]>'
                   f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>&big;</Encrypt></xml>").encode()
        assert wc.post(xml, content=hostile).status_code == 400
        inner = xml.replace("<xml>", '<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml>', 1)
        assert wc.post(inner).status_code == 400  # a declaration inside the encrypted message
        assert wc.post(xml, content=b"<xml>" + b"A" * 70_000 + b"</xml>").status_code == 413
        assert wc.post(xml.replace(CORP_ID, "wwforeign00000000")).status_code == 400  # another corp inside
    assert count(db, ProcessedInbound) == 0 and count(db, ChatAccount) == 0 and not wc.delivered


def _wait_for(condition, timeout: float = 10.0, message=lambda: "timed out") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message()
        time.sleep(0.02)


class SlowEngine(Engine):
    """The core taking longer than WeCom waits (a busy database, say)."""

    delay = 0.6

    def handle_now(self, inbound, *, before_commit=None):
        return None  # the write lock is taken elsewhere: the event goes to a thread

    def handle(self, inbound, *, before_commit=None):
        def slow(ctx, outcome):
            time.sleep(self.delay)
            if before_commit is not None:
                before_commit(ctx, outcome)
        return super().handle(inbound, before_commit=slow)


def test_answers_past_the_deadline_go_through_the_send_api_once(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    settings = wc_settings.model_copy(update={"wecom_reply_deadline_seconds": 0.1})
    talk = Talk(wc, db, "LiMing")
    with running_bot(settings, db, clock, wc, core=SlowEngine(db, settings, clock=clock)):
        xml = talk.member.xml_text("/progress")
        assert talk.member.send(xml) is None  # empty: the answer comes by message/send
        _wait_for(lambda: wc.received("LiMing"))
        assert "已走访 0/3 户" in talk._after(talk.member.send(xml))  # WeCom's retry: nothing new
        assert talk.last.count("已走访 0/3 户") == 1 and len(wc.received("LiMing")) == 1
        assert talk.member.click("visit") is None
        _wait_for(lambda: len(wc.received("LiMing")) == 2)  # the card, past the deadline
        talk._after(None)
        talk.member.press(talk.card, "住户1")
        _wait_for(lambda: any("回头看" in d.text for d in wc.received("LiMing")),
                  message=lambda: [d.text for d in wc.received("LiMing")])
        settle(db)
    [update] = [c for c in wc.updated_cards if not c.get("passive")]
    assert update["button"]["replace_name"] == "➤ 住户1 · 幸…" and update["userids"] == ["LiMing"]
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) == 3


def _late_press(wc, wc_settings, db, clock) -> tuple[Talk, str]:
    """A member at the visit's first question (a card of 是 / 否), the bot answering past WeCom's deadline
    from now on; the task id of that card."""
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    talk = Talk(wc, db, "LiMing")
    talk.click("visit")
    talk.pick("住户1")
    assert "①留下一张联系卡" in talk.card.text
    return talk, talk.card.body["template_card"]["task_id"]


@pytest.mark.parametrize("refused", [False, True], ids=["replaced", "refused-then-sent"])
def test_a_press_answered_past_the_deadline_replaces_the_card_by_its_response_code(wc, wc_settings, db, clock, refused):
    settings = wc_settings.model_copy(update={"wecom_reply_deadline_seconds": 0.1})
    with running_bot(wc_settings, db, clock, wc):
        talk, task = _late_press(wc, wc_settings, db, clock)
    if refused:  # WeCom refuses the update (not a spent code): the next question comes as a card of its own
        wc.update_errors.append({"errcode": 40058, "errmsg": "template_card invalid"})
    with running_bot(settings, db, clock, wc, core=SlowEngine(db, settings, clock=clock)):
        assert talk.member.press(talk.card, "是") is None  # empty: the answer comes by the API
        _wait_for(lambda: any("②填好一张调查卷" in d.text for d in wc.received("LiMing")),
                  message=lambda: [d.text for d in wc.received("LiMing")])
        settle(db)
    [update] = [c.body for c in wc.calls_of("/cgi-bin/message/update_template_card")]
    assert update["userids"] == ["LiMing"] and "task_id" not in update["template_card"]
    assert chosen(update) == "已选：是" and "②填好一张调查卷" in update["template_card"]["main_title"]["title"] + \
        update["template_card"].get("sub_title_text", "")
    [card] = [d for d in wc.received("LiMing") if "②填好一张调查卷" in d.text]
    if refused:
        assert card.replaces is None and card.body["template_card"]["task_id"] != task  # sent as a new card
    else:
        assert card.replaces == task and not [c for c in wc.calls_of("/cgi-bin/message/send")
                                              if "②填好一张调查卷" in json.dumps(c.body, ensure_ascii=False)]
    # The households' card, the answer to 住户1 (a text and a card), this press's update: one row each, sent.
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) == 3


# -- proactive messages --------------------------------------------------------------------------------

def _members(db, n: int, clock) -> list[tuple[int, str]]:
    with session_scope(db) as s:
        unit = Unit(name="市住建局")
        s.add(unit)
        s.flush()
        cadres = [Cadre(name=f"干部{i}", unit_id=unit.id, mobile=f"1380000{i:04d}") for i in range(n)]
        s.add_all(cadres)
        s.flush()
        s.add_all([ChatAccount(channel="wecom", external_user_id=f"u{i:03d}", cadre_id=c.id, bound_at=clock(),
                               bound_by="wecom") for i, c in enumerate(cadres)])
        return [(c.id, f"u{i:03d}") for i, c in enumerate(cadres)]


def _wave(db, settings, members, now) -> None:
    with session_scope(db) as s:
        for cadre_id, _ in members:
            for n in (1, 2):
                assert enqueue_for_cadre(s, cadre_id, key=f"wave{n}", kind="deadline", body=f"提醒{n}：附件1-2 将于12月10日截止",
                                         now=now, settings=settings, channels=("telegram", "wechat", "wecom"))


def _send_all(db, settings, limiter) -> None:
    api = WeComApi(settings, db)
    sender = OutboxSender(db, settings, {"wecom": WeComTransport(api, settings, db, limiter=limiter)})
    try:
        while asyncio.run(sender.run_once()):
            pass
    finally:
        api.close()


def test_a_reminder_wave_to_100_members_never_passes_a_members_limit(wc, wc_settings, db, clock):
    # WeCom's per-minute window scaled down to one second (one message per member per window) so
    # that the wave must wait: the stand-in drops what comes too soon, as WeCom drops it.
    wc.per_minute, wc.minute = 1, 1.0
    members = _members(db, 100, clock)
    now = datetime.now(timezone.utc)
    _wave(db, wc_settings, members, now)
    _send_all(db, wc_settings, MemberLimiter(100.0, per_minute=1, per_hour=1000, minute=1.0))
    assert not wc.over_limit and not wc.duplicates
    assert {(d.touser, d.text[:3]) for d in wc.delivered} == {(u, f"提醒{n}") for _, u in members for n in (1, 2)}
    assert len(wc.delivered) == 200
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) == 200


def test_without_the_members_limit_the_stand_in_drops_like_wecom(wc, wc_settings, db, clock):
    """The control of the test above: a sender that ignored the members' limit would lose messages."""
    wc.per_minute, wc.minute = 1, 1.0
    members = _members(db, 5, clock)
    _wave(db, wc_settings, members, datetime.now(timezone.utc))
    _send_all(db, wc_settings, MemberLimiter(100.0, per_minute=30, per_hour=1000))
    assert len(wc.over_limit) == 5


def test_a_sender_killed_mid_send_then_restarted_delivers_every_message_once(
        wc, wc_settings, db, database_url, tmp_path):
    members = _members(db, 6, lambda: datetime.now(timezone.utc))
    now = datetime.now(timezone.utc)
    bodies = {f"提醒{n}：附件1-2 将于12月10日截止" for n in (1, 2)}
    _wave(db, wc_settings, members, now)
    wc.send_delay = 0.6  # each send is delivered, then its answer held: the kill lands in flight
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": database_url, "WECOM_TOKEN": TOKEN,
           "WECOM_AES_KEY": AES_KEY, "WECOM_CORP_ID": CORP_ID, "WECOM_AGENT_ID": str(AGENT_ID),
           "WECOM_SECRET": SECRET, "WECOM_API_BASE_URL": wc.url, "OUTBOX_LEASE_SECONDS": "5",
           "QUIET_HOURS_START": "00:00", "QUIET_HOURS_END": "00:00", "REMINDER_DAYS_BEFORE": "[]",
           "DIGEST_DAILY_TIME": "", "DIGEST_WEEKLY_DAY": "", "LOAD_EXAMPLE_ROSTER": "false", "LOG_LEVEL": "WARNING"}

    def worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    first = worker()
    try:
        deadline = time.monotonic() + 60
        while not wc.delivered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wc.delivered, first.stderr.read().decode() if first.poll() is not None else "nothing sent"
        time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # answers in flight: their rows stay claimed, unsent
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) < 12
    wc.send_delay = 0.0
    second = worker()
    try:
        deadline = time.monotonic() + 60
        while count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(second)
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) == 12
    ours = [d for d in wc.delivered if d.text in bodies]
    assert sorted((d.touser, d.text) for d in ours) == sorted((u, b) for _, u in members for b in bodies)
    assert wc.duplicates  # the rows in flight at the kill were sent again, and WeCom dropped the repeats


def test_past_the_apps_daily_quota_messages_wait_for_the_next_day(wc, wc_settings, db, clock):
    members = _members(db, 2, clock)
    settings = wc_settings.model_copy(update={"wecom_daily_quota": 3})
    _wave(db, settings, members, datetime.now(timezone.utc))
    _send_all(db, settings, None)
    assert len(wc.delivered) == 3 and not wc.over_limit
    with session_scope(db) as s:
        [held] = s.exec(select(OutboxMessage).where(OutboxMessage.state == OutboxState.PENDING)).all()
    assert held.last_error == texts.WECOM_QUOTA_WAIT.format(quota=3) and held.attempts == 0
    due = held.next_attempt_at.astimezone(settings.tz)
    assert (due.date() - datetime.now(settings.tz).date()).days == 1 and (due.hour, due.minute) == (0, 0)


def test_a_digest_chart_is_uploaded_and_sent_as_an_image(wc, wc_settings, db, clock):
    members = _members(db, 1, clock)
    with session_scope(db) as s:
        enqueue(s, key="digest", kind="digest-daily", channel="wecom", recipient=members[0][1], body="今日简报",
                now=datetime.now(timezone.utc), settings=wc_settings,
                attachments=[Attachment("chart.png", "image/png", b"\x89PNG fake")])
    _send_all(db, wc_settings, None)
    assert [(d.msgtype, d.text) for d in wc.delivered] == [("text", "今日简报"), ("image", "[image]")]
    assert list(wc.media.values()) == [b"\x89PNG fake"]


def test_a_member_outside_the_apps_range_is_unreachable(wc, wc_settings, db, clock):
    members = _members(db, 2, clock)
    wc.directory = [DirectoryEntry("u000", "干部0", None)]
    _wave(db, wc_settings, members, datetime.now(timezone.utc))
    _send_all(db, wc_settings, None)
    with session_scope(db) as s:
        states = {(m.recipient, m.state) for m in s.exec(select(OutboxMessage)).all()}
        gone = s.exec(select(ChatAccount).where(ChatAccount.external_user_id == "u001")).one()
    assert states == {("u000", OutboxState.SENT), ("u001", OutboxState.UNREACHABLE)} and gone.unreachable_at


# -- operator commands and settings ----------------------------------------------------------------------

def test_wecom_menu_is_built_from_the_commands(wc, settings, db, database_url, monkeypatch):
    _cli_env(monkeypatch, database_url, wc)
    assert _cli("wecom-menu") == 0
    keys = [b["key"] for top in wc.menu for b in top.get("sub_button", [top])]
    assert keys == ["visit", "contact", "progress", "help"] and len(wc.menu) <= 3  # the features' menu places
    assert wc.calls_of("/cgi-bin/menu/create")[-1].params["agentid"] == str(AGENT_ID)


def test_wecom_commands_need_the_wecom_settings(settings, db, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    assert _cli("wecom-sync") == 2
    assert "WECOM_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, name", [
    ({"wecom_token": SecretStr("changeme")}, "WECOM_TOKEN"),
    ({"wecom_corp_id": "<your-corp-id>"}, "WECOM_CORP_ID"),
    ({"wecom_secret": SecretStr("your-secret")}, "WECOM_SECRET"),
    ({"wecom_secret": None}, "WECOM_SECRET"),
    ({"wecom_agent_id": None}, "WECOM_AGENT_ID"),
    ({"wecom_aes_key": SecretStr("xxx")}, "WECOM_AES_KEY"),
    ({"wecom_webhook_path": "wecom"}, "WECOM_WEBHOOK_PATH"),
    ({"wecom_api_base_url": "qyapi.weixin.qq.com"}, "WECOM_API_BASE_URL"),
    ({"wecom_login_base_url": "login.work.weixin.qq.com"}, "WECOM_LOGIN_BASE_URL"),
    ({"wecom_oauth_base_url": "https://open.weixin.qq.com/x?y=1"}, "WECOM_OAUTH_BASE_URL"),
    ({"environment": "production", "evaluation_secret": SecretStr("k3Zq9vT2mX7pL4wR8nB5"),
      "data_key": SecretStr("p7Vw2Lq9Xk4Rt8Nz3Bm6Hs1Jd5Fg0Yc2"), "wecom_member_minute_seconds": 5},
     "WECOM_MEMBER_MINUTE_SECONDS"),
])
def test_wrong_or_placeholder_wecom_settings_fail_with_the_name(wc_settings, overrides, name):
    wc_settings.check()
    with pytest.raises(SettingsError, match=name):
        wc_settings.model_copy(update=overrides).check()


def test_a_placeholder_wecom_setting_stops_the_cli_with_exit_code_2(wc, db, database_url, monkeypatch, capsys):
    _cli_env(monkeypatch, database_url, wc, WECOM_SECRET="changeme")
    assert _cli("wecom-menu") == 2
    assert "WECOM_SECRET" in capsys.readouterr().err


@pytest.mark.parametrize("path, page", [("/console", "/console"), ("/console/login", "/console/login"),
                                        ("/healthz", "/healthz"), ("/r/wecom", "/r/{token}")])
def test_a_webhook_path_that_would_hide_a_page_stops_the_service_with_the_setting(
        wc, wc_settings, db, clock, path, page):
    with pytest.raises(SettingsError, match=f"WECOM_WEBHOOK_PATH：回调路径 {path} 与本服务的页面 {re.escape(page)} 冲突"):
        create_app(wc_settings.model_copy(update={"wecom_webhook_path": path}), Engine(db, wc_settings, clock=clock),
                   with_worker=False)
    create_app(wc_settings.model_copy(update={"wecom_webhook_path": "/hooks/wecom"}),
               Engine(db, wc_settings, clock=clock), with_worker=False)  # a path of its own: fine


def test_a_webhook_path_on_a_page_stops_serve_with_exit_code_2(wc, db, database_url, monkeypatch, capsys):
    _cli_env(monkeypatch, database_url, wc, WECOM_WEBHOOK_PATH="/metrics")
    assert _cli("serve") == 2
    err = capsys.readouterr().err
    assert "WECOM_WEBHOOK_PATH" in err and "/metrics" in err and "Traceback" not in err


def rendered_answers(db) -> int:
    """Callbacks whose answer is kept as WeCom got it (the XML, or "" for one sent through the API)."""
    from sqlmodel import select

    with session_scope(db) as s:
        return sum(1 for e in s.exec(select(ProcessedInbound)).all() if e.answer and e.answer.get("rendered") is not None)



def test_an_appeal_photo_sent_in_wecom_is_fetched_by_the_api_and_kept_with_the_appeal(wc, wc_settings, db, clock):
    """A member's picture is fetched (media/get) so a cadre on WeCom can appeal with a photo."""
    import hashlib
    import io

    from PIL import Image

    from storage.models import Rating, RatingAppeal
    from tests.utils import bind, make_rating

    roster = make_roster(db)
    bind(db, roster.cadre, "wecom", "LiMing", clock())
    make_rating(db, roster.cadre, 1, clock())
    with session_scope(db) as s:
        rating = s.exec(select(Rating)).one()
    out = io.BytesIO()
    Image.new("RGB", (160, 120), (90, 140, 200)).save(out, "PNG")
    photo = out.getvalue()
    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        assert texts.APPEAL_ASK_REASON.format(rating=rating.id, limit=500) in talk.say(f"/appeal {rating.id}")
        assert texts.APPEAL_ASK_PHOTO.format(rating=rating.id) in talk.say("评价人认错了人")
        assert texts.APPEAL_FILED_PHOTO.strip() in talk._after(talk.member.image("MEDIA-APPEAL", content=photo))
    with session_scope(db) as s:
        appeal = s.exec(select(RatingAppeal)).one()
    assert (appeal.reason, appeal.photo_ref) == ("评价人认错了人", "wecom:MEDIA-APPEAL")
    assert appeal.photo_sha256 == hashlib.sha256(photo).hexdigest()
    assert [c.params["media_id"] for c in wc.calls if c.path == "/cgi-bin/media/get"] == ["MEDIA-APPEAL"]
