"""Delivers outbox rows on WeChat: template messages where the kind has a template, customer-service
messages otherwise — and those only within 48 hours of the user's last interaction.

Outside the window (by our record of the user's last message, click or scan, or because WeChat
answers 45015) WECHAT_OUTSIDE_WINDOW decides: "wait" puts the row back to look again every
WECHAT_WINDOW_RECHECK_MINUTES (not an attempt; it goes as soon as the user has written again) and
gives it up after WECHAT_WINDOW_WAIT_HOURS; "template" sends it with the "default" template;
"drop" gives it up at once. The reason is the row's last_error, which ``python -m bot outbox``
shows. Files attached to a row (a digest's chart) are not sent: they would need WeChat's media
upload; the text says so.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Callable

import httpx
from sqlalchemy.engine import Engine as DbEngine

from bot import texts
from bot.config import Settings
from storage.db import utcnow as system_clock
from handlers.wechat.api import WeChatApi, WeChatApiError
from handlers.wechat.channel import CHANNEL, fit
from scheduler.outbox import Claimed
from scheduler.sender import SENT, Delivery
from storage.db import session_scope
from storage.models import WeChatUser

# A margin for the clocks, the queue and the channel writing a user's interaction at most every 10 minutes.
SERVICE_WINDOW = timedelta(hours=48) - timedelta(minutes=15)
OUT_OF_WINDOW = 45015  # "response out of time limit or subscription is canceled"
UNREACHABLE = {43004: "用户未关注公众号", 40003: "OpenID 无效", 43019: "用户已被拉黑", 43101: "用户拒收消息"}
ACCOUNT_LIMITS = {45009: 3600.0, 45011: 60.0}  # daily quota reached, calls too frequent: the whole channel waits
USER_LIMITS = {45047: 3600.0}  # too many messages to one user without an answer: this row waits
THING_MAX = 20  # new-style template fields named thing* take at most 20 characters
VALUE_MAX = 200


def template_data(settings: Settings, kind: str, body: str, now: datetime) -> dict[str, dict[str, str]]:
    """The template's fields filled from the message as WECHAT_TEMPLATE_FIELDS says."""
    title, _, rest = body.strip().partition("\n")
    parts = {"title": title, "body": rest.strip() or title, "text": body.strip(),
             "kind": texts.WECHAT_TEMPLATE_KINDS.get(kind, texts.WECHAT_TEMPLATE_KIND_OTHER),
             "date": now.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")}
    data = {}
    for field, part in settings.wechat_template_fields.items():
        value = parts.get(part, "")
        limit = THING_MAX if field.startswith("thing") else VALUE_MAX
        data[field] = {"value": value if len(value) <= limit else value[:limit - 1] + "…"}
    return data


class WeChatTransport:
    """The outbox sender's way to WeChat; the API calls run in a thread (they are synchronous)."""

    channel = CHANNEL

    def __init__(self, api: WeChatApi, settings: Settings, db: DbEngine,
                 clock: Callable[[], datetime] = system_clock):
        from scheduler.budget import bot_limiter

        self.api, self.settings, self.db, self.clock = api, settings, db, clock
        # The account's limits for every process that sends for it (Redis or PostgreSQL; in this
        # process for one process on SQLite): each worker and web process used to keep them alone.
        self.limiter = bot_limiter(settings, channel=CHANNEL, engine=db)

    async def deliver(self, message: Claimed) -> Delivery:
        return await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: Claimed) -> Delivery:
        text = fit(message.body + ("\n" + texts.WECHAT_FILES_NOT_SENT.format(count=len(message.attachments))
                                   if message.attachments else ""))
        template = self.settings.wechat_template_ids.get(message.kind) if message.kind != "reply" else None
        try:
            if template:
                self.api.send_template(message.recipient, template,
                                       template_data(self.settings, message.kind, text, self.clock()))
                return SENT
            last = self._last_interaction(message.recipient)
            if last is None or self.clock() - last >= SERVICE_WINDOW:
                return self._outside_window(message, text, last)
            try:
                self.api.send_text(message.recipient, text)
            except WeChatApiError as exc:
                if exc.errcode != OUT_OF_WINDOW:
                    raise
                return self._outside_window(message, text, last)
            return SENT
        except WeChatApiError as exc:
            return self._failure(exc)
        except httpx.HTTPError as exc:
            return Delivery("retry", error=f"network: {type(exc).__name__}: {exc}"[:500])

    def _last_interaction(self, openid: str) -> datetime | None:
        with session_scope(self.db) as session:
            user = session.get(WeChatUser, openid)
            return user.last_inbound_at if user is not None else None

    def _outside_window(self, message: Claimed, text: str, last: datetime | None) -> Delivery:
        settings = self.settings
        when = last.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M") if last else texts.WECHAT_NEVER
        policy = settings.wechat_outside_window
        if policy == "template":
            self.api.send_template(message.recipient, settings.wechat_template_ids["default"],
                                   template_data(settings, message.kind, text, self.clock()))
            return SENT
        if policy == "drop":
            return Delivery("failed", error=texts.WECHAT_OUTSIDE_WINDOW_DROP.format(last=when))
        waited = self.clock() - (message.created_at or self.clock())
        if waited >= timedelta(hours=settings.wechat_window_wait_hours):
            return Delivery("failed", error=texts.WECHAT_OUTSIDE_WINDOW_GAVE_UP.format(
                last=when, hours=settings.wechat_window_wait_hours))
        return Delivery("wait", retry_after=settings.wechat_window_recheck_minutes * 60.0,
                        error=texts.WECHAT_OUTSIDE_WINDOW_WAIT.format(last=when))

    @staticmethod
    def _failure(exc: WeChatApiError) -> Delivery:
        error = str(exc)[:500]
        if exc.errcode is None:  # an HTTP error: the server's trouble is worth a retry, a 4xx is not
            return Delivery("retry" if exc.status >= 500 else "failed", error=error)
        if exc.errcode in UNREACHABLE:
            return Delivery("unreachable", error=f"{error}（{UNREACHABLE[exc.errcode]}）")
        if exc.errcode in ACCOUNT_LIMITS:
            return Delivery("retry", retry_after=ACCOUNT_LIMITS[exc.errcode], error=error)
        if exc.errcode in USER_LIMITS:
            return Delivery("wait", retry_after=USER_LIMITS[exc.errcode], error=error)
        if exc.errcode == -1 or exc.errcode in (40001, 40014, 42001):  # system busy; a token refused twice
            return Delivery("retry", error=error)
        return Delivery("failed", error=error)
