"""Delivers outbox rows on WeCom within WeCom's own limits, which it enforces by dropping the excess
silently (the API still answers "ok"): so the sender must never pass them.

* per member at most WECOM_MEMBER_PER_MINUTE (30) messages a minute and WECOM_MEMBER_PER_HOUR
  (1,000) an hour: ``MemberLimiter`` counts each member's messages from when WeCom's answer came
  back (WeCom counts arrivals, and an arrival comes before its answer), those in flight included;
* the app's daily quota (WECOM_DAILY_QUOTA, 成员数 × 200 person-messages a day): counted per local
  day; once used up a row waits until the next day (not an attempt, the reason in last_error);
* API calls per second for the whole app (WECOM_RATE_GLOBAL).

All three are kept where every process sees them (``scheduler.budget``: Redis when REDIS_URL is
set, else PostgreSQL's tables; one process on SQLite keeps them in memory), so web processes
answering callbacks and any number of workers never pass them together. A row's places are taken
at once, as many as it sends messages (a reply may be a text and a card, a digest its text and its
chart), before its first call: a row is never sent half.

Every message/send carries ``enable_duplicate_check`` with an interval twice the outbox lease: a
row whose sender died with the send in flight is claimed again when the lease ends and sent again,
and WeCom drops the repeat, so a crash costs no duplicate. WeCom drops any message identical to one
the member got within the interval, so what is sent must be the same for the same row and differ
between rows: every text ends with an invisible mark made from the row's key and the call's place
(``handlers.wecom.render.mark``; a proactive row's key is ``outbox:<row id>``), a card has a task id
of its own, and an attachment's media id is kept on the row (``payload["wecom_media"]``, written
after the uploads and before the first send), so the same row sent again sends the same media ids
(reused for ``MEDIA_REUSE``: WeCom keeps temporary media three days). A crash after the uploads but
before the media ids are kept has sent nothing yet: the row uploads again.

A row is either a reply prepared by the channel (``payload["wecom"]``: the API calls in order, see
``handlers.wecom.render``) or a proactive message (a reminder, a digest): its body as a text
message. Attached files (a digest's chart) are uploaded (media/upload) before the row's first call
and sent as images or files after its calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import httpx
from sqlalchemy.engine import Engine as DbEngine

from bot import metrics, texts
from bot.config import Settings
from storage.db import utcnow as system_clock
from handlers.wecom.api import NOT_A_MEMBER, WeComApi, WeComApiError
from handlers.wecom.render import SEND, UPDATE_CARD, card_message, task_id, text_message
from scheduler import outbox
from scheduler.outbox import Claimed
from scheduler.budget import MemoryStore, Rule, Taken, Window, budget_store
from scheduler.sender import SENT, Delivery, OutboxSender
from storage.db import session_scope
from storage.models import OutboxState
from storage.wecom import CHANNEL, keep_media, mark_replies_sent

log = logging.getLogger(__name__)

UNREACHABLE = {NOT_A_MEMBER: texts.WECOM_NOT_A_MEMBER, 60111: "成员 userid 不存在", 60011: "应用无权限访问该成员"}
APP_LIMITS = {45009: 60.0, 45033: 1.0, 45011: 60.0}  # calls too frequent, too many at once: the channel waits
RETRY = {-1, 40014, 42001, 40001}  # system busy; a token refused twice
SPENT_CODE = 40106  # invalid response_code: spent (or past its 72 hours)
FLIGHT_SECONDS = 120.0  # places of a row whose sender died are given back after this long
IN_LINE_MAX = 1.5  # a wait this long or longer is a member's window or a pause, not the app's calls a second
MEDIA_KEY = "wecom_media"  # in a row's payload: {"at": when uploaded, "ids": its attachments' media ids}
MEDIA_REUSE = timedelta(days=2)  # a kept media id is sent again for this long (WeCom keeps it 3 days)


class MemberLimiter:
    """WeCom's limits on the app's sends: API calls a second for the app, and each member's
    messages a minute and an hour (``minute`` and ``hour`` are the windows' lengths in seconds),
    held in ``store`` (scheduler.budget): Redis or PostgreSQL, shared by every process of the
    deployment, or this process's ``MemoryStore`` (one process on SQLite).

    ``acquire(member, sends=, calls=)`` takes the places of one outbox row at once (its messages to
    the member, its API calls) and waits until every window has room; ``done`` counts them from
    when WeCom's answer came back. ``pause`` holds the app's sends back in every process (WeCom said
    the app calls too often). The app's daily quota is a counter per local day (``spend_quota``).
    """

    def __init__(self, per_second: float, per_minute: int, per_hour: int, *, minute: float = 60.0,
                 hour: float = 3600.0, margin: float = 0.05, store=None, app: str = "wecom",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 offload=None):
        self.store = store if store is not None else MemoryStore(clock=clock)
        self.app = app
        self.per_call = max(1, int(per_second))
        self.call_window = max(1.0, self.per_call / per_second) + margin
        self.per_minute, self.per_hour = per_minute, per_hour
        self.minute, self.hour = minute + margin, hour + margin
        self.sleep = sleep
        self.offload = offload or (_inline if self.store.kind == "memory" else asyncio.to_thread)
        self.rule = Rule(app, self.per_call, self.call_window, 0.0, 0.0)  # for the pause only
        self._lines: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}  # per loop (tests run several)

    @classmethod
    def for_settings(cls, settings: Settings, engine=None, app: str | None = None) -> "MemberLimiter":
        """The deployment's limiter: through the shared store, or one of this transport's own."""
        store = budget_store(settings, engine)
        return cls(settings.wecom_rate_global, settings.wecom_member_per_minute, settings.wecom_member_per_hour,
                   minute=float(settings.wecom_member_minute_seconds),
                   store=None if store.kind == "memory" else store,
                   app=app or f"wecom:{settings.wecom_corp_id}:{settings.wecom_agent_id}")

    def windows(self, member: str, sends: int = 1, calls: int | None = None) -> list[Window]:
        calls = sends if calls is None else calls
        out = [Window(f"{self.app}:calls", self.per_call, self.call_window, calls)] if calls else []
        if sends:
            out += [Window(f"{self.app}:m:{member}:minute", self.per_minute, self.minute, sends),
                    Window(f"{self.app}:m:{member}:hour", self.per_hour, self.hour, sends)]
        return out

    async def _ask(self, what: str, call, *args):
        """One step of the store; an unreachable store is asked again (with a warning), never skipped:
        nothing goes out unlimited."""
        failures = 0
        while True:
            try:
                return await self.offload(call, *args)
            except Exception as exc:
                failures += 1
                wait = min(30.0, 2.0 ** (failures - 1))
                log.warning("共享限流（%s）不可用（%s，连续第 %d 次）：%s；%.0f 秒后重试", self.store.kind, what, failures,
                            " ".join(str(exc).split())[:200], wait)
                await self.sleep(wait)

    async def acquire(self, member: str, *, sends: int = 1, calls: int | None = None) -> "Held":
        """Waits until ``sends`` messages to ``member`` (and ``calls`` API calls) keep every window
        within its limit, in every process together; hand what it returns to ``done``."""
        windows = self.windows(member, sends, calls)
        loop = asyncio.get_running_loop()
        line = self._lines.get(loop)
        if line is None:  # senders of this loop waiting for the app's window, first come first served
            line = self._lines[loop] = asyncio.Lock()
            for old in [other for other in self._lines if other.is_closed()]:
                del self._lines[old]
        while True:
            if not line.locked():
                taken = await self._ask("take", self.store.take_windows, windows, self.app, FLIGHT_SECONDS)
                if taken.granted:
                    return Held(windows, taken)
                if taken.wait >= IN_LINE_MAX:  # the member's own window (or a pause): waited out alone
                    await self.sleep(taken.wait)
                    continue
            # The app's window is full: this process's senders wait in line, and only the first asks
            # the store again when its place may be free, instead of every one of them polling.
            async with line:
                while True:
                    taken = await self._ask("take", self.store.take_windows, windows, self.app, FLIGHT_SECONDS)
                    if taken.granted:
                        return Held(windows, taken)
                    if taken.wait >= IN_LINE_MAX:
                        break  # held back by the member's window: out of the line, so others pass
                    await self.sleep(taken.wait)
            await self.sleep(taken.wait)

    async def done(self, member: str, held: "Held") -> None:
        """WeCom's answer is in: the places count from now (a failure to say so leaves them in flight
        until they expire, which only holds the member back a little longer)."""
        try:
            await self.offload(self.store.finish_windows, held.windows, held.taken)
        except Exception as exc:
            log.warning("共享限流（%s）未能记下一次发送：%s", self.store.kind, " ".join(str(exc).split())[:200])

    async def pause(self, seconds: float) -> None:
        await self._ask("pause", self.store.pause, self.rule, seconds)

    async def spend_quota(self, day: str, amount: int, quota: int) -> bool:
        """Counts ``amount`` messages against ``day``'s quota; False (nothing counted) when it is used up."""
        return await self._ask("quota", self.store.spend, f"{self.app}:quota", day, amount, quota)


@dataclass(frozen=True)
class Held:
    """The places one row took: handed back to ``MemberLimiter.done``."""

    windows: list[Window]
    taken: Taken


async def _inline(call, *args):
    return call(*args)


class _RowGate:
    """What the outbox sender holds around each row: nothing of its own. WeCom's places are taken
    by the transport, which knows how many messages and calls a row makes; the sender's pause
    (WeCom said the app calls too often) goes to the shared limiter."""

    def __init__(self, members: MemberLimiter):
        self.members = members

    async def acquire(self, chat: str, *, reply: bool = False) -> float:
        return 0.0

    def done(self, chat: str, ticket: float) -> None:
        return None

    def pause(self, seconds: float):
        return self.members.pause(seconds)


class WeComTransport:
    """The outbox sender's way to WeCom; the API calls run in a thread (they are synchronous)."""

    channel = CHANNEL

    def __init__(self, api: WeComApi, settings: Settings, db: DbEngine | None = None,
                 clock: Callable[[], datetime] = system_clock, limiter: MemberLimiter | None = None):
        self.api, self.settings, self.db, self.clock = api, settings, db, clock
        self.members = limiter or MemberLimiter.for_settings(settings, db)
        self.limiter = _RowGate(self.members)
        self.quota = settings.wecom_daily_quota

    async def deliver(self, message: Claimed) -> Delivery:
        """Takes the row's places (the daily quota, then the app's and the member's windows), sends
        its calls in a thread (the API is synchronous), and counts the places from the answer."""
        calls = self._calls(message)
        sends = _sends(calls) + len(message.attachments)
        api_calls = _api_calls(calls) + 2 * len(message.attachments)  # an attachment is uploaded, then sent
        return await self._within_limits(message.recipient, sends, api_calls,
                                         lambda: asyncio.to_thread(self._deliver, message, calls))

    async def deliver_reply(self, recipient: str, calls: list[dict[str, Any]]) -> Delivery:
        """A callback's answer (its calls, no files) within the same limits, sent on the event loop."""
        sends = _sends(calls)
        return await self._within_limits(recipient, sends, _api_calls(calls), lambda: self._deliver_async(calls))

    async def _within_limits(self, recipient: str, sends: int, api_calls: int,
                             send: Callable[[], Awaitable[Delivery]]) -> Delivery:
        if sends:
            local = self.clock().astimezone(self.settings.tz)
            if not await self.members.spend_quota(local.date().isoformat(), sends, self.quota):
                tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(),
                                            tzinfo=self.settings.tz)
                return Delivery("wait", retry_after=max(60.0, (tomorrow - local).total_seconds()),
                                error=texts.WECOM_QUOTA_WAIT.format(quota=self.quota))
        held = await self.members.acquire(recipient, sends=sends, calls=api_calls)
        try:
            return await send()
        finally:
            await self.members.done(recipient, held)

    async def _deliver_async(self, calls: list[dict[str, Any]]) -> Delivery:
        try:
            for call in calls:
                if call["path"] == UPDATE_CARD:
                    try:
                        await self.api.update_template_card_async(call["body"])
                    except WeComApiError as exc:
                        instead = self._card_not_updated(exc, call["body"])
                        if instead is not None:
                            await self.api.send_async(instead)
                    continue
                await self.api.send_async(call["body"])
            return SENT
        except WeComApiError as exc:  # a network failure included (no errcode, status 599): tried again
            return self._failure(exc)

    def _calls(self, message: Claimed) -> list[dict[str, Any]]:
        calls: Any = (message.payload or {}).get("wecom")
        if calls is None:  # a proactive message: its body as text
            return [{"path": SEND, "body": text_message(message.recipient, self.api.agent_id, message.body,
                                                        self.settings.wecom_duplicate_check_seconds,
                                                        key=f"outbox:{message.id}")}]
        return [calls] if isinstance(calls, dict) else list(calls)

    def _deliver(self, message: Claimed, calls: list[dict[str, Any]]) -> Delivery:
        try:
            media = self._media(message)
            for call in calls:
                if call["path"] == UPDATE_CARD:
                    self._update_card(call["body"])
                    continue
                self.api.send(call["body"])
            for kind, media_id in media:
                self.api.send({"touser": message.recipient, "agentid": self.api.agent_id, "msgtype": kind,
                               kind: {"media_id": media_id}, "enable_duplicate_check": 1,
                               "duplicate_check_interval": self.settings.wecom_duplicate_check_seconds})
            return SENT
        except WeComApiError as exc:
            return self._failure(exc)
        except httpx.HTTPError as exc:
            return Delivery("retry", error=f"network: {type(exc).__name__}: {exc}"[:500])

    def _media(self, message: Claimed) -> list[tuple[str, str]]:
        """The attachments' (kind, media id), uploaded before anything of the row is sent and kept on
        the row, or those kept by an earlier attempt while they are fresh: the same row sends the
        same media ids, and WeCom's duplicate check drops the repeat."""
        if not message.attachments:
            return []
        kinds = ["image" if a.content_type.startswith("image/") else "file" for a in message.attachments]
        kept = (message.payload or {}).get(MEDIA_KEY)
        now = self.clock()
        try:
            if now - datetime.fromisoformat(kept["at"]) < MEDIA_REUSE and len(kept["ids"]) == len(kinds):
                return list(zip(kinds, kept["ids"]))
        except (KeyError, TypeError, ValueError):
            pass  # none kept (or not readable): upload
        ids = [self.api.upload_media(kind, a.filename, a.content, a.content_type)
               for kind, a in zip(kinds, message.attachments)]
        if self.db is not None:
            keep_media(self.db, message.id, {**(message.payload or {}), MEDIA_KEY: {"at": now.isoformat(), "ids": ids}})
        return list(zip(kinds, ids))

    def _update_card(self, body: dict[str, Any]) -> None:
        """The pressed card greyed out, or replaced by the next question. Once only: a response code
        is spent after one use, so a row sent again after a crash finds it spent; that is fine."""
        try:
            self.api.update_template_card(body)
        except WeComApiError as exc:
            instead = self._card_not_updated(exc, body)
            if instead is not None:
                self.api.send(instead)

    def _card_not_updated(self, exc: WeComApiError, body: dict[str, Any]) -> dict[str, Any] | None:
        """After WeCom refused to update a card: raises for a failure to try again (5xx, network);
        otherwise None (greying out is cosmetic; a spent code was spent by this very row's earlier
        send), or, when the refused update carried the next question, the message that sends it as
        a card of its own, so the member is never left without it."""
        if exc.errcode is None and exc.status >= 500:
            raise exc
        card = body.get("template_card")
        if card is not None and (exc.errcode in RETRY or exc.errcode in APP_LIMITS):
            raise exc  # the next question: the row is tried again by the outbox's rules
        log.info("wecom card not updated: %s", exc)
        if card is None or exc.errcode == SPENT_CODE:
            return None
        return card_message(body["userids"][0], self.api.agent_id,
                            {**card, "task_id": task_id(f"replaced:{body.get('response_code')}", 0)},
                            self.settings.wecom_duplicate_check_seconds)

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


@dataclass
class _Reply:
    """One callback's answer handed to the pump once its transaction committed."""

    key: str  # the outbox row's idempotency key
    recipient: str
    calls: list[dict[str, Any]]
    claimed_until: datetime


class ReplyPump(OutboxSender):
    """The web process's sender of its own callbacks' answers, at once and from memory.

    The channel writes a callback's answer (its API calls) to the outbox already claimed by this
    pump and in flight (``claim``; ``storage.hot.queue_outbox_reply``), in the core's transaction;
    once that commits it hands the calls over (``hand``). The pump sends them on the event loop
    (``WeComTransport.deliver_reply``: the daily quota, the app's and the member's windows, then
    aiohttp), one member's answers in order. The rows delivered are marked sent by the next
    callback's own transaction (``take_marks``, one short UPDATE each), or, when no callback comes
    within ``MARK_IDLE`` seconds, together in one transaction of their own. So an answer costs no
    claiming query, no take-off write, no thread and no transaction of its own, where the outbox's
    path spends three transactions and a thread per row. On SQLite that matters twice: every other
    write transaction holds the write lock that the callbacks' inline path (``Engine.handle_now``)
    must then decline and hand to a thread (measured: marking in a transaction of its own every
    0.2 s took the bench from 0.39 of the bare endpoint's throughput to 0.25).

    Nothing is lost and nothing repeats beyond what WeCom drops: a process that dies leaves its rows
    claimed and in flight; the worker claims them when the lease ends and sends them once more (they
    are listed as 可能重复), and WeCom's duplicate check drops what had already arrived (the calls
    are the same bytes). A row held back past half its lease (the limits) renews its claim before
    its send, and one whose claim lapsed is left to the worker. A failure goes by the outbox
    sender's rules (retry, wait, unreachable, dead) and the member's later answers wait behind it.

    ``run_once`` remains for rows written unclaimed (answers with files): the outbox sender's batch,
    with the rows delivered marked together at its end.
    """

    MARK_IDLE = 1.0  # seconds delivered rows wait for a callback's transaction to mark them in

    def __init__(self, db: DbEngine, settings: Settings, transport: "WeComTransport", *, concurrency: int = 2,
                 **kwargs):
        super().__init__(db, settings, {CHANNEL: transport}, concurrency=concurrency, **kwargs)
        self.transport = transport
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)
        self._sent: list[int] = []  # ids delivered by run_once, marked at its end
        self._waiting: dict[str, deque[_Reply]] = {}  # per member, in the order handed
        self._members: set[asyncio.Task] = set()
        self._delivered: list[str] = []  # keys of handed rows delivered, not yet marked
        self._marking: asyncio.Task | None = None
        self._marks_lock = threading.Lock()

    # -- handed answers ------------------------------------------------------------------------

    def claim(self, now: datetime) -> tuple[str, datetime]:
        """Who holds a row the channel writes for ``hand``, and until when."""
        return self.worker, now + self.lease

    def hand(self, key: str, recipient: str, calls: list[dict[str, Any]], claimed_until: datetime) -> None:
        """Sends a committed row's calls (on the running loop), after the member's earlier ones."""
        reply = _Reply(key, recipient, calls, claimed_until)
        queue = self._waiting.get(recipient)
        if queue is not None:
            queue.append(reply)
            return
        self._waiting[recipient] = deque([reply])
        task = asyncio.get_running_loop().create_task(self._member(recipient))
        self._members.add(task)
        task.add_done_callback(self._members.discard)

    async def _member(self, recipient: str) -> None:
        queue = self._waiting[recipient]
        try:
            while queue:
                reply = queue[0]
                result = await self._send(reply)
                queue.popleft()
                if result is not None and result.status != "sent":
                    # The later answers wait behind this one, by the worker's rules.
                    behind = Delivery("wait", retry_after=result.retry_after or self.settings.outbox_retry_base_seconds,
                                      error="behind an earlier message")
                    for later in list(queue):
                        await asyncio.to_thread(self._settle, later, behind)
                    queue.clear()
        except Exception:
            log.exception("wecom reply pump: answers to %s left to the worker (sent after the lease)", recipient)
        finally:
            del self._waiting[recipient]

    async def _send(self, reply: _Reply) -> Delivery | None:
        """One handed row: sent, or settled by the sender's rules; None when the claim had lapsed."""
        if reply.claimed_until - self.clock() < self.lease / 2:
            if not await asyncio.to_thread(self._renew, reply):
                return None  # another sender holds it now
        try:
            result = await self.transport.deliver_reply(reply.recipient, reply.calls)
        except Exception as exc:  # a transport bug must not lose the row: retry it later
            log.exception("wecom reply %s: transport error", reply.key)
            result = Delivery("retry", error=f"{type(exc).__name__}: {exc}")
        metrics.observe_send(CHANNEL, result.status, result.error)
        if result.status == "sent":
            with self._marks_lock:
                self._delivered.append(reply.key)
            self._flush_later()
            return result
        if result.retry_after and result.status == "retry":
            await self.transport.limiter.pause(result.retry_after)
        await asyncio.to_thread(self._settle, reply, result)
        return result

    # -- marking the delivered rows sent ------------------------------------------------------

    def take_marks(self, limit: int = 100) -> list[str]:
        """Rows delivered and not yet marked, for the channel to mark sent in a callback's own
        transaction (``storage.wecom.mark_replies_sent``): no transaction of their own while
        callbacks come. Hand back with ``give_back`` what did not commit."""
        with self._marks_lock:  # the core may run the hook in a worker thread
            keys, self._delivered = self._delivered[:limit], self._delivered[limit:]
        return keys

    def give_back(self, keys: list[str]) -> None:
        """Marks taken for a transaction that did not commit: marked later."""
        if keys:
            with self._marks_lock:
                self._delivered.extend(keys)
            self._flush_later()

    def _flush_later(self) -> None:
        if self._marking is None or self._marking.done():
            self._marking = asyncio.get_running_loop().create_task(self._mark_delivered())

    async def _mark_delivered(self) -> None:
        """What no callback took within ``MARK_IDLE`` seconds (none came) is marked in a transaction
        of its own."""
        while self._delivered:
            await asyncio.sleep(self.MARK_IDLE)
            keys = self.take_marks(limit=10_000)
            if not keys:
                continue
            try:
                await asyncio.to_thread(self._mark_keys, keys)
            except Exception:
                log.exception("wecom reply pump: %d rows sent but not marked; the worker sends them again after "
                              "the lease and WeCom drops the repeats", len(keys))

    def _mark_keys(self, keys: list[str]) -> None:
        with self.db.begin() as conn:  # the statement a callback's transaction marks them with
            marked = mark_replies_sent(conn, keys, self.worker, self.clock())
        if marked < len(keys):
            log.warning("wecom reply pump: %d of %d rows sent after their claim had lapsed", len(keys) - marked,
                        len(keys))

    def _held(self, key: str) -> Claimed | None:
        with session_scope(self.db) as session:
            return outbox.held_row(session, key, self.worker)

    def _renew(self, reply: _Reply) -> bool:
        held = self._held(reply.key)
        if held is None or not self._take_off(held):
            return False
        reply.claimed_until = self.clock() + self.lease
        return True

    def _settle(self, reply: _Reply, result: Delivery) -> None:
        held = self._held(reply.key)
        if held is None:
            return
        state = self._record(held, result)
        if state != OutboxState.SENT:
            log.info("outbox %s -> %s (%s)", held.id, state, result.error)

    # -- rows written unclaimed ------------------------------------------------------------------

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

    async def drain(self) -> None:
        """Waits until every handed answer is sent (or settled) and marked."""
        while self._members or (self._marking is not None and not self._marking.done()):
            await asyncio.gather(*self._members, *([self._marking] if self._marking else []), return_exceptions=True)


def _sends(calls: list[dict[str, Any]]) -> int:
    """The messages ``calls`` may deliver, for the member's windows and the quota: each send, and each
    card replaced by the next question (sent as a card of its own if WeCom refuses the update)."""
    return sum(1 for call in calls if call["path"] == SEND or "template_card" in call["body"])


def _api_calls(calls: list[dict[str, Any]]) -> int:
    """The API calls ``calls`` may take: one each, two for a card replaced by the next question (the
    update, and the send if WeCom refuses it)."""
    return len(calls) + sum(1 for call in calls if call["path"] == UPDATE_CARD and "template_card" in call["body"])
