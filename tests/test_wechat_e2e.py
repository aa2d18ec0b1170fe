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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.cli import main as cli_main
from bot.config import SettingsError, get_settings
from bot.core import binding, evaluation
from bot.core.engine import Engine
from handlers.wechat import WeChatApi, WeChatTransport
from handlers.wechat.channel import record_interaction
from scheduler.jobs import remind_deadlines
from scheduler.outbox import enqueue
from scheduler.sender import OutboxSender
from storage.db import session_scope
from storage.models import (
    ChatAccount,
    DialogueState,
    OutboxMessage,
    ProcessedInbound,
    Rating,
    Visit,
    WeChatAccessToken,
    WeChatQrCode,
    WeChatUser,
)
from tests.standins.server import ServedApp
from tests.standins.wechat_api import ACCOUNT, WeChatStandin
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
        # WeChat has neither buttons nor a share-phone button: the answers say what to type instead.
        assert texts.WELCOME_UNBOUND_TYPED in welcome and "按钮" not in welcome
        assert texts.NOT_BOUND_TYPED in chat.say("走访")
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
        assert (visit.channel, visit.photo_ref) == ("wechat", "wechat:MEDIA-7")
        # WeChat sends GCJ-02; one datum is stored, WGS-84 (a few hundred metres apart in Shanghai).
        from bot.core.geo import GCJ02, to_wgs84

        assert (visit.latitude, visit.longitude) == pytest.approx(tuple(to_wgs84(31.2304, 121.4737, GCJ02).__dict__.values()))
        assert abs(visit.longitude - 121.4737) > 0.003
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


def test_a_one_time_service_ticket_works_as_a_scene_once_and_not_after_it_expired(wx, wx_settings, db, clock):
    """一事一评 on WeChat: the ticket's token is a scene like a card's, so a scan of it (a new follower's
    subscribe or an existing one's SCAN) rates that visit once; expired, it is refused."""
    from storage.models import Visit
    from tests.utils import make_visit

    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    visit_id = make_visit(db, roster.cadre, roster.households[0], clock())
    cadre = Chat(wx.follower(OPENID))
    with running_bot(wx_settings, db, clock, wx):
        issued = cadre.say("/serviceqr")
        token = re.search(r"/r/(s[A-Za-z0-9_-]{24})", issued).group(1)
        assert texts.WECHAT_FILES_NOT_SENT.format(count=1) in issued  # the link is there to open instead
        household = Chat(wx.follower("oCitizen000000000000000000011"))
        household.last = household.follower.subscribe(scene=token).content
        assert "您正在评价" in household.last and "本次服务（一次有效）" in household.last
        assert texts.RATING_THANKS in household.pick("非常满意")
        assert wx.follower("oCitizen000000000000000000012").scan(token).content == texts.PAGE_SERVICE_USED

        expiring = re.search(r"/r/(s[A-Za-z0-9_-]{24})", cadre.say("/serviceqr")).group(1)
        clock.now += timedelta(minutes=wx_settings.service_qr_minutes + 1)
        assert wx.follower("oCitizen000000000000000000013").scan(expiring).content == texts.PAGE_SERVICE_EXPIRED
    with session_scope(db) as s:
        [rating] = s.exec(select(Rating)).all()
        assert (rating.level, rating.visit_id, rating.channel) == (5, visit_id, "wechat")
        assert s.get(Visit, visit_id).household_confirmed_at is not None


def _jpeg() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (200, 150), (180, 190, 200))
    ImageDraw.Draw(image).ellipse((40, 30, 160, 120), fill=(30, 120, 60))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def test_an_appeal_photo_sent_on_wechat_is_fetched_by_the_api_and_kept_with_the_appeal(wx, wx_settings, db, clock):
    """The channel fetches the picture a follower sends (media/get, the shared access token), so an
    appeal's photo works on WeChat; a picture WeChat no longer gives is said to be missing."""
    import hashlib

    from storage.models import RatingAppeal
    from tests.utils import make_rating

    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    make_rating(db, roster.cadre, 2, clock())
    with session_scope(db) as s:
        rating = s.exec(select(Rating)).one()
    photo = _jpeg()
    cadre = Chat(wx.follower(OPENID))
    with running_bot(wx_settings, db, clock, wx):
        asked = cadre.say(f"/appeal {rating.id} 当天系统故障，照片为证")
        assert texts.APPEAL_ASK_PHOTO.format(rating=rating.id) in asked and f". {texts.SKIP}" in asked
        assert cadre.follower.image("MEDIA-GONE").content.startswith(texts.APPEAL_PHOTO_NOT_RECEIVED)
        filed = cadre.follower.image("MEDIA-OWN", content=photo).content
        assert texts.APPEAL_FILED_PHOTO.strip() in filed
    with session_scope(db) as s:
        appeal = s.exec(select(RatingAppeal)).one()
    assert (appeal.photo_ref, appeal.photo_sha256) == ("wechat:MEDIA-OWN", hashlib.sha256(photo).hexdigest())
    assert [c.params["media_id"] for c in wx.calls if c.path == "/cgi-bin/media/get"] == ["MEDIA-GONE", "MEDIA-OWN"]


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
    assert count(db, ProcessedInbound) == 3 and rendered_answers(db) == 3  # bind, scan, rate: once each


def rendered_answers(db) -> int:
    """Events whose answer is kept as WeChat got it (the XML, or "" for one sent through the API)."""
    with session_scope(db) as s:
        return sum(1 for e in s.exec(select(ProcessedInbound)).all() if e.answer and e.answer.get("rendered") is not None)


class SlowEngine(Engine):
    """The core taking longer than WeChat waits (a busy database, say)."""

    delay = 0.6

    def handle_now(self, inbound, *, before_commit=None):
        return None  # a busy database: the write lock is taken, so the event goes to a thread

    def handle(self, inbound, *, before_commit=None):
        def slow(ctx, outcome):
            time.sleep(self.delay)
            if before_commit is not None:
                before_commit(ctx, outcome)
        return super().handle(inbound, before_commit=slow)


def test_a_slow_answer_goes_through_the_customer_service_api_once(wx, wx_settings, db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    settings = wx_settings.model_copy(update={"wechat_reply_deadline_seconds": 0.1})
    follower = wx.follower(OPENID)
    with running_bot(settings, db, clock, wx, core=SlowEngine(db, settings, clock=clock)) as served:
        channel = served.app.state.wechat
        xml = follower.xml_text("/progress")
        started = time.monotonic()
        assert follower.send(xml).content is None  # "success": no passive reply
        assert time.monotonic() - started < SlowEngine.delay
        lane = ("wechat", OPENID)
        assert lane in channel.core._lanes  # past its deadline the event is still the core's: later ones queue
        deadline = time.monotonic() + 10
        while count(db, OutboxMessage) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        while lane in channel.core._lanes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lane not in channel.core._lanes
        assert send_outbox(db, settings, clock) == 1
        [sent] = wx.calls_of("/cgi-bin/message/custom/send")
        assert sent.body["touser"] == OPENID and "已走访 0/3 户" in sent.body["text"]["content"]
        # WeChat's retry of the same message: "success" again, nothing new queued or sent.
        assert follower.send(xml).content is None
        assert send_outbox(db, settings, clock) == 0
    assert count(db, OutboxMessage) == 1 and len(wx.calls_of("/cgi-bin/message/custom/send")) == 1


def test_the_apps_own_worker_delivers_a_slow_answer(wx, wx_settings, db, clock):
    """As deployed (SCHEDULER_IN_RUN): the worker in the web process has the WeChat transport."""
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    settings = wx_settings.model_copy(update={"wechat_reply_deadline_seconds": 0.1, "scheduler_in_run": True})
    with running_bot(settings, db, clock, wx, core=SlowEngine(db, settings, clock=clock)):
        assert wx.follower(OPENID).text("/help").content is None
        deadline = time.monotonic() + 10
        while not wx.calls_of("/cgi-bin/message/custom/send") and time.monotonic() < deadline:
            time.sleep(0.05)
    [sent] = wx.calls_of("/cgi-bin/message/custom/send")
    assert sent.body["touser"] == OPENID and "/visit" in sent.body["text"]["content"]


def test_an_answer_longer_than_one_wechat_message_continues_through_the_customer_service_api(
        wx, wx_settings, db, clock):
    roster = make_roster(db, households=120)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    with running_bot(wx_settings, db, clock, wx):
        first = wx.follower(OPENID).text("/progress").content
    assert len(first.encode()) <= 2048 and "已走访 0/120 户" in first
    assert send_outbox(db, wx_settings, clock) >= 1
    rest = "\n".join(c.body["text"]["content"] for c in wx.calls_of("/cgi-bin/message/custom/send"))
    whole = first + "\n" + rest
    assert len(whole.encode()) > 2048 and first.count("住户") < 120
    assert all(f"住户{i} · 幸福路{i}号" in whole for i in range(1, 121))


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
    assert count(db, ProcessedInbound) == 1 and rendered_answers(db) == 1
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


# -- the outbox on WeChat ---------------------------------------------------------------------------

def test_a_reminder_goes_out_as_a_template_message_through_the_outbox_sender(wx, wx_settings, db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    settings = wx_settings.model_copy(update={"wechat_template_ids": {"deadline": "TPL-DEADLINE-1"}})
    clock.now = datetime(2026, 12, 3, 1, 30, tzinfo=timezone.utc)  # 09:30 local, 7 days before 附件1-2 are due
    with session_scope(db) as s:
        assert remind_deadlines(s, settings, clock()) == 1
    assert send_outbox(db, settings, clock) == 1
    [call] = wx.calls_of("/cgi-bin/message/template/send")
    data = call.body["data"]
    assert (call.body["touser"], call.body["template_id"]) == (OPENID, "TPL-DEADLINE-1")
    assert data["keyword1"]["value"] == "报表截止提醒" and data["keyword2"]["value"] == "2026-12-03 09:30"
    assert "附件1、2" in data["first"]["value"] + data["remark"]["value"]
    assert wx.calls_of("/cgi-bin/message/custom/send") == []  # no 48-hour window needed for a template
    with session_scope(db) as s:
        [row] = s.exec(select(OutboxMessage)).all()
        assert row.state == "sent"


def test_outside_48_hours_a_message_waits_says_why_and_goes_once_the_user_writes(
        wx, wx_settings, db, clock, database_url, monkeypatch, capsys):
    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    with session_scope(db) as s:
        record_interaction(s, OPENID, clock() - timedelta(hours=49))
        enqueue(s, key="digest:daily:1", kind="digest-daily", channel="wechat", recipient=OPENID,
                body="作风工作日报\n走访 3/9 户", now=clock(), settings=wx_settings)
    assert send_outbox(db, wx_settings, clock) == 1
    assert wx.calls == []  # not even a token: nothing was sent
    with session_scope(db) as s:
        [row] = s.exec(select(OutboxMessage)).all()
        assert (row.state, row.attempts) == ("pending", 0) and "48 小时" in row.last_error
        assert row.next_attempt_at == clock() + timedelta(minutes=30)
    _cli_env(monkeypatch, database_url, wx)
    try:
        assert cli_main(["outbox"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "等待中 1 条" in out and "48 小时客服消息窗口已关闭" in out

    with running_bot(wx_settings, db, clock, wx):
        wx.follower(OPENID).text("/help")  # the user writes: the window opens again
    clock.now += timedelta(minutes=31)
    assert send_outbox(db, wx_settings, clock) == 1
    [sent] = wx.calls_of("/cgi-bin/message/custom/send")
    assert sent.body["text"]["content"] == "作风工作日报\n走访 3/9 户"
    # Given up after WECHAT_WINDOW_WAIT_HOURS.
    with session_scope(db) as s:
        enqueue(s, key="digest:daily:2", kind="digest-daily", channel="wechat", recipient="oSilent", body="日报",
                now=clock() - timedelta(hours=73), settings=wx_settings)
    assert send_outbox(db, wx_settings, clock) == 1
    with session_scope(db) as s:
        row = s.exec(select(OutboxMessage).where(OutboxMessage.recipient == "oSilent")).one()
        assert row.state == "dead" and "已放弃" in row.last_error


def test_outside_the_window_the_default_template_or_nothing_as_configured(wx, wx_settings, db, clock):
    by_template = wx_settings.model_copy(update={"wechat_outside_window": "template",
                                                 "wechat_template_ids": {"default": "TPL-DEFAULT"}})
    with session_scope(db) as s:
        record_interaction(s, "oRecent", clock())
        for openid in ("oNever", "oRecent"):
            enqueue(s, key=f"callbacks:{openid}", kind="callbacks", channel="wechat", recipient=openid,
                    body="差评回访提醒\n#3 138****0000", now=clock(), settings=by_template)
    wx.out_of_window.add("oRecent")  # WeChat's own view wins over ours (45015)
    assert send_outbox(db, by_template, clock) == 2
    templates = {c.body["touser"]: c.body for c in wx.calls_of("/cgi-bin/message/template/send")}
    assert set(templates) == {"oNever", "oRecent"} and templates["oNever"]["template_id"] == "TPL-DEFAULT"
    assert templates["oNever"]["data"]["keyword1"]["value"] == "差评回访提醒"

    dropping = wx_settings.model_copy(update={"wechat_outside_window": "drop"})
    with session_scope(db) as s:
        enqueue(s, key="callbacks:again", kind="callbacks", channel="wechat", recipient="oNever", body="x",
                now=clock(), settings=dropping)
    assert send_outbox(db, dropping, clock) == 1
    with session_scope(db) as s:
        row = s.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == "callbacks:again")).one()
        assert row.state == "dead" and "drop" in row.last_error


def test_unfollowed_users_are_unreachable_and_wechat_errors_are_retried(wx, wx_settings, db, clock):
    with session_scope(db) as s:
        for openid in ("oGone", "oBusy"):
            record_interaction(s, openid, clock())
            enqueue(s, key=f"k:{openid}", kind="digest-daily", channel="wechat", recipient=openid, body="日报",
                    now=clock(), settings=wx_settings)
    wx.fail_next("/cgi-bin/message/custom/send", errcode=43004, errmsg="require subscribe")
    wx.fail_next("/cgi-bin/message/custom/send", status=502)
    assert send_outbox(db, wx_settings, clock) == 2
    with session_scope(db) as s:
        states = {r.recipient: (r.state, r.attempts) for r in s.exec(select(OutboxMessage)).all()}
    assert sorted(states.values()) == [("pending", 1), ("unreachable", 1)]
    clock.now += timedelta(minutes=5)
    assert send_outbox(db, wx_settings, clock) == 1  # the 502 one, again
    assert len(wx.calls_of("/cgi-bin/message/custom/send")) == 1


# -- the access token --------------------------------------------------------------------------------

def test_one_access_token_for_every_worker_refreshed_once_before_it_expires(wx, wx_settings, db, clock):
    wx.token_delay = 0.3  # refreshes would overlap if each worker fetched its own
    workers = [WeChatApi(wx_settings, db, clock=clock) for _ in range(4)]

    def send_from_all() -> None:
        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(lambda api: api.send_text(OPENID, "hi"), workers))

    try:
        send_from_all()
        assert wx.token_fetches == 1 and len(wx.calls_of("/cgi-bin/message/custom/send")) == 4
        clock.now += timedelta(seconds=7200 - 240)  # four minutes left: inside the refresh margin
        send_from_all()
        assert wx.token_fetches == 2
        wx.expire_tokens()  # WeChat revokes the token early: one refresh, and the call goes through
        workers[0].send_text(OPENID, "again")
        assert wx.token_fetches == 3
        workers[1].send_text(OPENID, "again")  # its own copy is refused; the stored new token serves
        assert wx.token_fetches == 3 and len(wx.calls_of("/cgi-bin/message/custom/send")) == 10
    finally:
        for api in workers:
            api.close()
    with session_scope(db) as s:
        row = s.get(WeChatAccessToken, APP_ID)
        assert row.access_token.startswith("ACCESS_TOKEN_3_") and row.expires_at == clock() + timedelta(seconds=7200)


# -- operator commands -------------------------------------------------------------------------------

def _cli_env(monkeypatch, database_url, wx, **extra: str) -> None:
    env = {"DATABASE_URL": database_url, "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": AES_KEY, "WECHAT_APP_ID": APP_ID,
           "WECHAT_APP_SECRET": APP_SECRET, "WECHAT_API_BASE_URL": wx.url, **extra}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def _cli(*argv: str) -> int:
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


def test_wechat_qr_makes_one_permanent_scene_code_per_card_once_within_the_cap(
        wx, settings, db, clock, database_url, monkeypatch, capsys, tmp_path):
    roster = make_roster(db)
    window = make_window(db, roster)
    _cli_env(monkeypatch, database_url, wx)
    assert _cli("wechat-qr", "--out", str(tmp_path / "qr.csv")) == 0
    made = wx.calls_of("/cgi-bin/qrcode/create")
    assert len(made) == 4  # three cadres and a window
    scenes = {c.body["action_info"]["scene"]["scene_str"] for c in made}
    assert token_for(db, settings, "window", window.id) in scenes and all(len(s) <= 64 for s in scenes)
    assert {c.body["action_name"] for c in made} == {"QR_LIMIT_STR_SCENE"}
    with session_scope(db) as s:
        rows = s.exec(select(WeChatQrCode)).all()
        assert {r.scene for r in rows} == scenes and all(r.url.startswith("http://weixin.qq.com/q/") for r in rows)
    assert len((tmp_path / "qr.csv").read_text(encoding="utf-8-sig").splitlines()) == 5

    assert _cli("wechat-qr", "--out", str(tmp_path / "again.csv")) == 0  # nothing new to make
    assert len(wx.calls_of("/cgi-bin/qrcode/create")) == 4

    with session_scope(db) as s:  # a lost card: its new token needs a new code, past the cap
        evaluation.revoke(s, evaluation.code_for(s, "cadre", roster.cadre.id, clock()), clock())
    _cli_env(monkeypatch, database_url, wx, WECHAT_QR_LIMIT="4")
    capsys.readouterr()
    assert _cli("wechat-qr", "--cadre", roster.cadre.mobile) == 1
    assert "WECHAT_QR_LIMIT" in capsys.readouterr().err and len(wx.calls_of("/cgi-bin/qrcode/create")) == 4


def test_wechat_menu_installs_visit_contact_progress_and_help(wx, settings, db, database_url, monkeypatch):
    _cli_env(monkeypatch, database_url, wx)
    assert _cli("wechat-menu") == 0
    keys = [b.get("key") for top in wx.menu for b in top.get("sub_button", [top])]
    assert keys == ["visit", "contact", "progress", "help"] and len(wx.menu) <= 3


def test_wechat_commands_need_the_wechat_settings(settings, db, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    assert _cli("wechat-menu") == 2
    assert "WECHAT_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, name", [
    ({"wechat_token": SecretStr("changeme")}, "WECHAT_TOKEN"),
    ({"wechat_app_id": "<your-app-id>"}, "WECHAT_APP_ID"),
    ({"wechat_app_secret": SecretStr("your-secret")}, "WECHAT_APP_SECRET"),
    ({"wechat_app_secret": None}, "WECHAT_APP_SECRET"),
    ({"wechat_aes_key": SecretStr("xxx")}, "WECHAT_AES_KEY"),
    ({"wechat_webhook_path": "wechat"}, "WECHAT_WEBHOOK_PATH"),
    ({"wechat_outside_window": "template"}, "WECHAT_TEMPLATE_IDS"),
    ({"wechat_template_fields": {"first": "headline"}}, "WECHAT_TEMPLATE_FIELDS"),
])
def test_wrong_or_placeholder_wechat_settings_fail_with_the_name(wx_settings, overrides, name):
    wx_settings.check()
    with pytest.raises(SettingsError, match=name):
        wx_settings.model_copy(update=overrides).check()


def test_cards_carry_the_wechat_scene_code_and_its_scan_starts_the_rating(
        wx, wx_settings, db, clock, database_url, monkeypatch, capsys, tmp_path):
    import zxingcpp
    from PIL import Image

    roster = make_roster(db)
    _cli_env(monkeypatch, database_url, wx)
    assert _cli("qr-cards", "--cadre", "李明", "--encode", "wechat", "--quiet", "--out", str(tmp_path / "none")) == 1
    assert "wechat-qr" in capsys.readouterr().err  # the code must be made first
    assert _cli("wechat-qr", "--cadre", "李明", "--out", str(tmp_path / "qr.csv")) == 0
    assert _cli("qr-cards", "--cadre", "李明", "--encode", "wechat", "--quiet", "--out", str(tmp_path / "cards")) == 0
    [png] = (tmp_path / "cards").glob("*.png")
    [read] = zxingcpp.read_barcodes(Image.open(png))
    with session_scope(db) as s:
        [code] = s.exec(select(WeChatQrCode)).all()
    assert read.text == code.url
    # WeChat resolves that URL to the scene: the scan of a follower starts the rating of 李明.
    with running_bot(wx_settings, db, clock, wx):
        answer = wx.follower("oCitizen000000000000000000003").subscribe(scene=code.scene).content
    assert "您正在评价" in answer and roster.cadre.name in answer


@pytest.mark.parametrize("inner", [
    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ 你好 ]]></Content><MsgId>1</MsgId>",
    "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x/y.jpg]]></PicUrl><MediaId><![CDATA[m1]]></MediaId><MsgId>2</MsgId>",
    "<MsgType><![CDATA[location]]></MsgType><Location_X>23.13</Location_X><Location_Y>113.26</Location_Y><Scale>15</Scale><Label><![CDATA[某地]]></Label><MsgId>3</MsgId>",
    "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[v1]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[走访]]></Recognition><MsgId>4</MsgId>",
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>",
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_AbC-12_x]]></EventKey><Ticket><![CDATA[t]]></Ticket>",
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[AbC-12_x]]></EventKey><Ticket><![CDATA[t]]></Ticket>",
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[visit]]></EventKey>",
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event>",
    "<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[s1]]></MediaId><MsgId>5</MsgId>",
    "<MsgType><![CDATA[hologram]]></MsgType><MsgId>6</MsgId>",
])
def test_messages_are_built_from_the_checked_fields_as_wechatpy_parses_them(inner):
    from wechatpy import parse_message

    from handlers.wechat.channel import message_of, to_inbound
    from handlers.wechat.crypto import parse_xml

    xml = ("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>"
           f"<CreateTime>1795140000</CreateTime>{inner}</xml>")
    fields = parse_xml(xml)
    ours, theirs = message_of(fields), parse_message(xml)
    assert type(ours) is type(theirs)
    for name in ("type", "event", "content", "media_id", "location_x", "location_y", "recognition", "scene_id",
                 "key", "id", "source", "target"):
        assert getattr(ours, name, None) == getattr(theirs, name, None), name
    assert to_inbound(ours, fields) == to_inbound(theirs, fields)


def test_a_menu_click_in_the_same_second_as_another_event_is_answered(wx, wx_settings, db, clock):
    """Events have no MsgId: they are told apart by follower, second, event and key (WeChat's rule)."""
    from tests.standins.wechat_api import ACCOUNT, message_xml

    roster = make_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    follower = wx.follower(OPENID)
    second = int(time.time())
    fields = {"ToUserName": ACCOUNT, "FromUserName": OPENID, "CreateTime": second, "MsgType": "event"}
    with running_bot(wx_settings, db, clock, wx):
        welcome = follower.send(message_xml({**fields, "Event": "subscribe", "EventKey": ""})).content
        assert welcome.startswith(texts.WELCOME_BOUND.format(name="李明", unit="市住建局"))
        click = message_xml({**fields, "Event": "CLICK", "EventKey": "progress"})
        assert "已走访 0/3 户" in follower.send(click).content  # not taken for a retry of the subscribe
        assert "已走访 0/3 户" in follower.send(click).content  # WeChat's retry of the click: the same answer
    assert count(db, ProcessedInbound) == 2
