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
    """The number a numbered reply gives the option whose label contains ``label``."""
    for line in content.splitlines():
        match = re.match(r"(\d+)\. (.*)", line)
        if match and label in match.group(2):
            return match.group(1)
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
