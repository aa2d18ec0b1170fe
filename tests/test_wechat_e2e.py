"""End to end on WeChat: the production app factory under uvicorn, real HTTP both ways.

A local stand-in plays WeChat (tests/standins/wechat_api.py): it pushes signed and, in safe mode,
encrypted XML in the published formats to our webhook, reads our answers as WeChat would, and
serves the API endpoints the bot calls (access token, customer-service and template messages,
QR codes, menu), recording what it gets.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import contextmanager

import pytest
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.core import binding
from bot.core.engine import Engine
from handlers.wechat import WeChatApi, WeChatTransport
from scheduler.sender import OutboxSender
from storage.db import session_scope
from storage.models import (
    ChatAccount,
    DialogueState,
    EverydayContact,
    OutboxMessage,
    ProcessedInbound,
    Rating,
    Visit,
    WeChatReply,
    WeChatUser,
)
from tests.standins.server import ServedApp
from tests.standins.wechat_api import ACCOUNT, WeChatStandin, message_xml
from tests.utils import bind, make_roster, make_window, token_for

APP_ID = "wx1f2e3d4c5b6a7988"
APP_SECRET = "9c1b2a3d4e5f60718293a4b5c6d7e8f9"
TOKEN = "zuofeng2026token"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ"  # 43 characters, as WeChat generates them
OPENID = "oLVPpjqs9BhvzwPj5A-vTYAX3GLc"


@pytest.fixture
def wx(clock):
    with WeChatStandin(app_id=APP_ID, app_secret=APP_SECRET, token=TOKEN, aes_key=AES_KEY,
                       clock=lambda: clock().timestamp()) as standin:
        yield standin


@pytest.fixture
def wx_settings(settings, wx):
    return settings.model_copy(update={
        "wechat_token": SecretStr(TOKEN), "wechat_aes_key": SecretStr(AES_KEY), "wechat_app_id": APP_ID,
        "wechat_app_secret": SecretStr(APP_SECRET), "wechat_api_base_url": wx.url})


def plain(settings):
    return settings.model_copy(update={"wechat_aes_key": None})


@contextmanager
def running_bot(settings, db, clock, wx, core: Engine | None = None):
    """The bot as deployed: our ASGI app (create_app) served on loopback, the stand-in pointed at it."""
    if settings.wechat_aes_key is None:
        wx.aes_key = None
    core = core or Engine(db, settings, clock=clock)
    with ServedApp(create_app(settings.check(), core)) as served:
        wx.webhook_url = f"{served.url}{settings.wechat_webhook_path}"
        yield served


def send_outbox(db, settings, clock) -> int:
    """One run of the outbox sender with the WeChat transport, as the worker runs it."""
    api = WeChatApi(settings, db, clock=clock)
    sender = OutboxSender(db, settings, {"wechat": WeChatTransport(api, settings, db, clock)}, clock=clock)
    try:
        return asyncio.run(sender.run_once())
    finally:
        api.close()


def number_of(content: str, label: str) -> str:
    """The number a numbered reply gives the option labelled ``label`` (its last word), else containing it."""
    options = [m.groups() for m in re.finditer(r"^(\d+)\. (.*)$", content, re.M)]
    for number, text in options:
        if text.split()[-1] == label:
            return number
    for number, text in options:
        if label in text:
            return number
    raise AssertionError(f"no option {label!r} in:\n{content}")


class Chat:
    """A follower answering by numbers, as a cadre on WeChat does."""

    def __init__(self, follower):
        self.follower, self.last = follower, ""

    def say(self, text: str) -> str:
        self.last = self.follower.text(text).content or ""
        return self.last

    def pick(self, label: str) -> str:
        return self.say(number_of(self.last, label))


def count(db, model) -> int:
    with session_scope(db) as s:
        return s.exec(select(func.count()).select_from(model)).one()


# -- server check and binding ----------------------------------------------------------------------

def test_server_verification_echoes_only_a_signed_fresh_request(wx, wx_settings, db, clock):
    with running_bot(wx_settings, db, clock, wx):
        ok = wx.verify("5837397520665436492")
        assert (ok.status_code, ok.text) == (200, "5837397520665436492")
        assert wx.verify("1", signature="0" * 40).status_code == 403
        assert wx.verify("1", timestamp=int(clock().timestamp()) - 3600).status_code == 403


@pytest.mark.parametrize("mode", ["safe", "plain"])
def test_binding_then_a_whole_visit_by_numbered_answers(mode, wx, wx_settings, db, clock):
    roster = make_roster(db)
    settings = wx_settings if mode == "safe" else plain(wx_settings)
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), settings)
    follower = wx.follower(OPENID)
    chat = Chat(follower)
    with running_bot(settings, db, clock, wx):
        welcome = follower.subscribe().content
        assert texts.WELCOME_UNBOUND in welcome and texts.WECHAT_BIND_HINT in welcome
        assert texts.NOT_BOUND in chat.say("走访")
        assert chat.say(f"绑定 {code}") == texts.BOUND_OK.format(name="李明", unit="市住建局")

        chat.last = follower.click("visit").content  # the menu's 入户走访
        assert texts.PICK_HOUSEHOLD in chat.last
        assert "回头看" in chat.pick("住户2")
        chat.pick("是")
        for answer in ("满意", "基本满意", "方便", "不涉及", "满意"):
            chat.pick(answer)
        assert "③解决一件困难事" in chat.say("希望多组织文艺活动")
        chat.pick("物业")
        assert texts.ASK_DIFFICULTY_SOLVED in chat.say("电梯经常停运")
        chat.pick("未解决")
        assert texts.ASK_PHOTO in chat.pick("是")
        assert texts.ASK_LOCATION in follower.image("MEDIA-7").content
        summary = follower.location(31.2304, 121.4737).content
        assert "电梯经常停运" in summary
        chat.last = summary
        done = chat.pick("确认提交")
        assert "本半年已走访 1/3 户" in done

        assert "已走访 1/3 户" in follower.click("progress").content
    with session_scope(db) as s:
        [visit] = s.exec(select(Visit)).all()
        assert (visit.channel, visit.photo_ref, visit.latitude) == ("wechat", "wechat:MEDIA-7", 31.2304)
        [account] = s.exec(select(ChatAccount)).all()
        assert (account.channel, account.external_user_id) == ("wechat", OPENID)
        assert s.get(WeChatUser, OPENID).last_inbound_at == clock()


# -- ratings from a scan ---------------------------------------------------------------------------

def test_rating_started_by_a_new_followers_scan_and_by_an_existing_followers_scan(wx, wx_settings, db, clock):
    roster = make_roster(db)
    window = make_window(db, roster, on_duty=[roster.cadre])
    window_token = token_for(db, wx_settings, "window", window.id)
    cadre_token = token_for(db, wx_settings, "cadre", roster.cadre.id)
    citizen = Chat(wx.follower("oCitizen000000000000000000001"))
    with running_bot(wx_settings, db, clock, wx):
        # A new follower: subscribe with qrscene_<token>.
        citizen.last = citizen.follower.subscribe(scene=window_token).content
        assert "您正在评价" in citizen.last and "不动产登记窗口" in citizen.last
        assert texts.RATING_THANKS in citizen.pick("满意")
        # Already following: a SCAN event with the bare token.
        citizen.last = citizen.follower.scan(cadre_token).content
        assert "您正在评价" in citizen.last and "李明" in citizen.last
        assert texts.RATING_REASONS_DONE in citizen.pick("非常不满意")
        citizen.pick("态度生硬")
        citizen.pick("选好了")
        citizen.say("窗口排队等了很久")
        assert texts.RATING_THANKS in citizen.say("跳过")
        # A forged scene starts nothing.
        assert citizen.follower.scan("r" + "A" * 24).content == texts.RATING_CODE_INVALID
    with session_scope(db) as s:
        ratings = {r.target_kind: r for r in s.exec(select(Rating)).all()}
        assert (ratings["window"].level, ratings["window"].channel, ratings["window"].window_id) == (4, "wechat", window.id)
        assert (ratings["cadre"].level, ratings["cadre"].reasons, ratings["cadre"].comment) == (
            1, ["态度生硬"], "窗口排队等了很久")


# -- retries ---------------------------------------------------------------------------------------

def test_the_same_message_three_times_gives_one_record_and_the_same_reply(wx, wx_settings, db, clock):
    roster = make_roster(db)
    window = make_window(db, roster)
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), wx_settings)
    follower = wx.follower(OPENID)
    citizen = wx.follower("oCitizen000000000000000000002")
    with running_bot(wx_settings, db, clock, wx):
        bind_xml = follower.xml_text(f"绑定 {code}")
        answers = [follower.send(bind_xml).content for _ in range(3)]
        assert answers == [texts.BOUND_OK.format(name="李明", unit="市住建局")] * 3

        citizen.scan(token_for(db, wx_settings, "window", window.id))
        rate_xml = citizen.xml_text("1")  # 非常满意 ends the rating at once
        answers = [citizen.send(rate_xml).content for _ in range(3)]
        assert answers[0].startswith(texts.RATING_THANKS) and answers == [answers[0]] * 3
    assert count(db, ChatAccount) == 1 and count(db, Rating) == 1
    assert count(db, ProcessedInbound) == 3 and count(db, WeChatReply) == 3  # bind, scan, rate: once each


class SlowEngine(Engine):
    """The core taking longer than WeChat waits (a busy database, say)."""

    delay = 0.6

    def handle(self, inbound, *, before_commit=None):
        def slow(session, outcome):
            time.sleep(self.delay)
            if before_commit is not None:
                before_commit(session, outcome)
        return super().handle(inbound, before_commit=slow)


def test_a_slow_answer_goes_through_the_customer_service_api_once(wx, wx_settings, db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    settings = wx_settings.model_copy(update={"wechat_reply_deadline_seconds": 0.1})
    follower = wx.follower(OPENID)
    with running_bot(settings, db, clock, wx, core=SlowEngine(db, settings, clock=clock)):
        xml = follower.xml_text("/progress")
        started = time.monotonic()
        assert follower.send(xml).content is None  # "success": no passive reply
        assert time.monotonic() - started < SlowEngine.delay
        deadline = time.monotonic() + 10
        while count(db, OutboxMessage) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert send_outbox(db, settings, clock) == 1
        [sent] = wx.calls_of("/cgi-bin/message/custom/send")
        assert sent.body["touser"] == OPENID and "已走访 0/3 户" in sent.body["text"]["content"]
        # WeChat's retry of the same message: "success" again, nothing new queued or sent.
        assert follower.send(xml).content is None
        assert send_outbox(db, settings, clock) == 0
    assert count(db, OutboxMessage) == 1 and len(wx.calls_of("/cgi-bin/message/custom/send")) == 1


# -- what is refused -------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>
<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>&lol9;</Content><MsgId>1</MsgId></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>
<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>&xxe;</Content><MsgId>2</MsgId></xml>"""


@pytest.mark.parametrize("mode", ["safe", "plain"])
def test_forged_stale_foreign_hostile_and_oversized_requests_are_refused_and_change_nothing(
        mode, wx, wx_settings, db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    settings = wx_settings if mode == "safe" else plain(wx_settings)
    follower = wx.follower(OPENID)
    now = int(clock().timestamp())
    hostile = {name: payload.format(account=ACCOUNT, openid=OPENID, now=now)
               for name, payload in (("billion laughs", BILLION_LAUGHS), ("external entity", EXTERNAL_ENTITY))}
    with running_bot(settings, db, clock, wx):
        good = follower.xml_text("/progress")
        refused = {
            "forged signature": wx.post(good, signature="f" * 40).status_code,
            "stale timestamp": wx.post(good, timestamp=now - 301).status_code,
            "future timestamp": wx.post(good, timestamp=now + 301).status_code,
            "billion laughs": wx.post(hostile["billion laughs"]).status_code,
            "external entity": wx.post(hostile["external entity"]).status_code,
            "malformed": wx.post("<xml><Content>unclosed</xml>").status_code,
            "not WeChat's": wx.post("<html><body>hi</body></html>").status_code,
            "oversized": wx.post(good, content=b"<xml>" + b"x" * 70_000 + b"</xml>").status_code,
        }
        # A DTD in the outer document itself, and one hidden from a byte search by UTF-16.
        refused["outer DTD"] = wx.post("", content=hostile["billion laughs"].encode()).status_code
        refused["UTF-16 DTD"] = wx.post("", content=hostile["external entity"].replace(
            'version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")).status_code
        if mode == "safe":
            refused["wrong app id"] = wx.post(good, app_id="wx0000000000000000").status_code
            refused["plain in safe mode"] = wx.post(good, encrypt=False).status_code
        assert refused == {name: 413 if name == "oversized" else 403 if "signature" in name or "timestamp" in name
                           else 400 for name in refused}
        # The genuine message still works afterwards.
        assert "已走访 0/3 户" in follower.send(good).content
    assert count(db, ProcessedInbound) == 1 and count(db, WeChatReply) == 1
    with session_scope(db) as s:
        assert s.get(DialogueState, ("wechat", OPENID)).version == 0
    assert wx.calls == []


@pytest.mark.parametrize("mode", ["safe", "plain"])
def test_user_text_cannot_break_out_of_the_reply_cdata(mode, wx, wx_settings, db, clock):
    settings = wx_settings if mode == "safe" else plain(wx_settings)
    follower = wx.follower(OPENID)
    with running_bot(settings, db, clock, wx):
        injected = "]]></Content><MsgType>news</MsgType><x>"
        answer = follower.text("/" + injected)  # read_reply checks the reply has exactly a text reply's fields
        assert answer.content == texts.UNKNOWN_COMMAND.format(command=injected.lower()[:30])
        assert "]]]]><![CDATA[>" in answer.xml
