"""Delivers outbox rows on WeCom within WeCom's own limits, which it enforces by dropping the excess
silently (the API still answers "ok"): so the sender must never pass them.

* per member at most WECOM_MEMBER_PER_MINUTE (30) messages a minute and WECOM_MEMBER_PER_HOUR
  (1,000) an hour: ``MemberLimiter`` counts each member's sends from when WeCom's answer came
  back (WeCom counts arrivals, and an arrival comes before its answer), sends in flight included;
* the app's daily quota (WECOM_DAILY_QUOTA, 成员数 × 200 person-messages a day): counted per local
  day; once used up a row waits until the next day (not an attempt, the reason in last_error);
* API calls per second for the whole app (WECOM_RATE_GLOBAL), through the sender's RateLimiter.

Every message/send carries ``enable_duplicate_check`` with an interval twice the outbox lease: a
row whose sender died with the send in flight is claimed again when the lease ends and sent again,
and WeCom drops the repeat, so a crash costs no duplicate. The counts live in this process: the
web app's reply pump and the worker share one transport when they run in one process (``bot run``).

A row is either a reply prepared by the channel (``payload["wecom"]``: the API calls in order, see
``handlers.wecom.render``) or a proactive message (a reminder, a digest): its body as a text
message. Attached files (a digest's chart) are uploaded (media/upload) and sent as images or files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable

import httpx
from sqlalchemy.engine import Engine as DbEngine

from bot import texts
from bot.config import Settings
from storage.db import utcnow as system_clock
from handlers.wecom.api import NOT_A_MEMBER, WeComApi, WeComApiError
from handlers.wecom.render import SEND, UPDATE_CARD, text_message
from scheduler import outbox
from scheduler.outbox import Claimed
from scheduler.sender import SENT, Delivery, OutboxSender, RateLimiter
from storage.db import session_scope
from storage.models import OutboxState
from storage.wecom import CHANNEL

log = logging.getLogger(__name__)

UNREACHABLE = {NOT_A_MEMBER: texts.WECOM_NOT_A_MEMBER, 60111: "成员 userid 不存在", 60011: "应用无权限访问该成员"}
APP_LIMITS = {45009: 60.0, 45033: 1.0, 45011: 60.0}  # calls too frequent, too many at once: the channel waits
RETRY = {-1, 40014, 42001, 40001}  # system busy; a token refused twice


class MemberLimiter:
    """The sender's limiter for WeCom: the app's calls per second, and each member's sends per minute
    and per hour (``minute`` and ``hour`` are the windows' lengths in seconds)."""

    def __init__(self, per_second: float, per_minute: int, per_hour: int, *, minute: float = 60.0,
                 hour: float = 3600.0, margin: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.app = RateLimiter(per_second, per_chat=1000.0, margin=0.0, clock=clock, sleep=sleep)
        self.per_minute, self.per_hour = per_minute, per_hour
        self.minute, self.hour = minute + margin, hour + margin
        self.clock, self.sleep = clock, sleep
        self.sent: dict[str, deque[float]] = {}  # member -> when their sends counted, oldest first
        self.in_flight: dict[str, int] = {}

    def pause(self, seconds: float) -> None:
        self.app.pause(seconds)

    def _wait(self, member: str, now: float) -> float:
        """Seconds until one more send to ``member`` keeps both windows within their limits."""
        sent = self.sent.get(member)
        flying = self.in_flight.get(member, 0)
        if sent:
            while sent and sent[0] <= now - self.hour:
                sent.popleft()
        counted = list(sent or ())
        waits = [0.0]
        for window, limit in ((self.minute, self.per_minute), (self.hour, self.per_hour)):
            times = [t for t in counted if t > now - window]
            if len(times) + flying < limit:
                continue
            if flying:  # one in flight comes back first: look again shortly
                waits.append(0.01)
            else:  # the oldest send that keeps the window full leaves it
                waits.append(times[len(times) - limit] + window - now)
        return max(waits)

    async def acquire(self, member: str) -> float:
        while True:
            wait = self._wait(member, self.clock())
            if wait <= 0:
                break
            await self.sleep(wait)
        self.in_flight[member] = self.in_flight.get(member, 0) + 1
        try:
            return await self.app.acquire(member)
        except BaseException:
            self.in_flight[member] -= 1
            raise

    def done(self, member: str, ticket: float) -> None:
        self.app.done(member, ticket)
        now = self.clock()
        self.in_flight[member] -= 1
        if not self.in_flight[member]:
            del self.in_flight[member]
        self.sent.setdefault(member, deque()).append(now)
        if len(self.sent) > 10_000:
            self.sent = {m: q for m, q in self.sent.items() if q and q[-1] > now - self.hour}


class WeComTransport:
    """The outbox sender's way to WeCom; the API calls run in a thread (they are synchronous)."""

    channel = CHANNEL

    def __init__(self, api: WeComApi, settings: Settings, db: DbEngine | None = None,
                 clock: Callable[[], datetime] = system_clock, limiter: MemberLimiter | None = None):
        self.api, self.settings, self.db, self.clock = api, settings, db, clock
        self.limiter = limiter or MemberLimiter(settings.wecom_rate_global, settings.wecom_member_per_minute,
                                                settings.wecom_member_per_hour)
        self.quota = settings.wecom_daily_quota
        self._day: date | None = None
        self._used = 0

    async def deliver(self, message: Claimed) -> Delivery:
        return await asyncio.to_thread(self._deliver, message)

    def _take_quota(self) -> Delivery | None:
        """Counts one message against today's quota; a "wait" until tomorrow when it is used up."""
        local = self.clock().astimezone(self.settings.tz)
        if local.date() != self._day:
            self._day, self._used = local.date(), 0
        if self._used >= self.quota:
            tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=self.settings.tz)
            return Delivery("wait", retry_after=max(60.0, (tomorrow - local).total_seconds()),
                            error=texts.WECOM_QUOTA_WAIT.format(quota=self.quota))
        self._used += 1
        return None

    def _deliver(self, message: Claimed) -> Delivery:
        calls: Any = (message.payload or {}).get("wecom")
        if calls is None:  # a proactive message: its body as text
            calls = [{"path": SEND, "body": text_message(message.recipient, self.api.agent_id, message.body,
                                                         self.settings.wecom_duplicate_check_seconds)}]
        elif isinstance(calls, dict):
            calls = [calls]
        try:
            for call in calls:
                if call["path"] == UPDATE_CARD:
                    self._grey_out(call["body"])
                    continue
                held = self._take_quota()
                if held is not None:
                    return held
                self.api.send(call["body"])
            for attachment in message.attachments:
                held = self._take_quota()
                if held is not None:
                    return held
                kind = "image" if attachment.content_type.startswith("image/") else "file"
                media = self.api.upload_media(kind, attachment.filename, attachment.content, attachment.content_type)
                self.api.send({"touser": message.recipient, "agentid": self.api.agent_id, "msgtype": kind,
                               kind: {"media_id": media}, "enable_duplicate_check": 1,
                               "duplicate_check_interval": self.settings.wecom_duplicate_check_seconds})
            return SENT
        except WeComApiError as exc:
            return self._failure(exc)
        except httpx.HTTPError as exc:
            return Delivery("retry", error=f"network: {type(exc).__name__}: {exc}"[:500])

    def _grey_out(self, body: dict[str, Any]) -> None:
        """The pressed card's buttons greyed out with the choice. Cosmetic and once only: a response
        code is spent after one use, so a row sent again after a crash finds it spent; that is fine."""
        try:
            self.api.update_template_card(body)
        except WeComApiError as exc:
            if exc.errcode is None and exc.status >= 500:
                raise
            log.info("wecom card not updated: %s", exc)

    @staticmethod
    def _failure(exc: WeComApiError) -> Delivery:
        error = str(exc)[:500]
        if exc.errcode is None:
            return Delivery("retry" if exc.status >= 500 else "failed", error=error)
        if exc.errcode in UNREACHABLE:
            return Delivery("unreachable", error=f"{error}（{UNREACHABLE[exc.errcode]}）")
        if exc.errcode in APP_LIMITS:
            return Delivery("retry", retry_after=APP_LIMITS[exc.errcode], error=error)
        if exc.errcode in RETRY:
            return Delivery("retry", error=error)
        return Delivery("failed", error=error)


class ReplyPump(OutboxSender):
    """The web app's sender of its own callbacks' answers, run as soon as a callback wrote some.

    The outbox sender, with one change: rows delivered are marked sent together, in one
    transaction at the end of the batch, not one transaction each. In the web process every write
    transaction is one more holder of SQLite's write lock that the callbacks' inline path
    (``Engine.handle_now``) must then decline and hand to a thread; one per batch keeps that rare.
    A crash between the sends and the mark leaves the rows to be sent again when their lease ends,
    and WeCom's duplicate check drops the repeats.
    """

    def __init__(self, db: DbEngine, settings: Settings, transport: "WeComTransport", *, concurrency: int = 2,
                 **kwargs):
        # Two members' answers at a time: each call is a thread holding the GIL against the event
        # loop that serves the callbacks; more would not send faster within the app's call rate.
        super().__init__(db, settings, {CHANNEL: transport}, concurrency=concurrency, **kwargs)
        self._sent: list[int] = []

    def _record(self, message: Claimed, result: Delivery) -> str:
        if result.status == "sent":
            self._sent.append(message.id)
            return OutboxState.SENT
        return super()._record(message, result)

    def _mark_sent(self, ids: list[int]) -> None:
        now = self.clock()
        with session_scope(self.db) as session:
            for message_id in ids:
                outbox.mark_sent(session, message_id, self.worker, now)

    async def run_once(self) -> int:
        try:
            return await super().run_once()
        finally:
            ids, self._sent = self._sent, []
            if ids:
                await asyncio.to_thread(self._mark_sent, ids)
