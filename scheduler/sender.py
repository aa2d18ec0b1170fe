"""The outbox sender: delivers due rows through each channel's transport, within its rate limits.

One loop per process; several processes may run it on one database (rows are claimed, see
scheduler.outbox). Per result: sent; retry later (429 honours retry_after and pauses the whole
channel, 5xx and network errors back off exponentially, until ``OUTBOX_MAX_ATTEMPTS`` moves the
row to dead); wait (the platform will not take it yet, e.g. WeChat's 48-hour window: looked at
again after retry_after, not counted as an attempt, the channel not paused); unreachable (403: the
user blocked the bot — flagged, never retried); failed (a permanent error such as a malformed
request: dead at once). Nothing is sent in quiet hours but replies (``outbox.IMMEDIATE_KINDS``).

Each transport brings its limiter: ``RateLimiter`` below for one process, or
``scheduler.budget.SharedRateLimiter`` when several processes send for one bot (Redis or
PostgreSQL); the sender awaits ``done`` and ``pause`` when they return awaitables. A row is marked
in flight just before its send (``outbox.take_off``), so a crash repeats at most what was in flight.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Protocol

from sqlalchemy.engine import Engine as DbEngine

from bot import metrics
from bot.config import Settings
from scheduler import outbox
from scheduler.outbox import Claimed
from storage.db import Clock, session_scope, utcnow
from storage.models import OutboxState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """What a transport made of one message."""

    status: str  # "sent", "retry", "wait", "unreachable" or "failed"
    retry_after: float | None = None  # seconds the platform asked us to wait (429), or until a "wait" looks again
    error: str = ""


SENT = Delivery("sent")


class RateLimiter:
    """At most ``per_second`` sends in any window of one second (plus a margin), at most ``per_chat``
    per second to one chat and ``per_group_minute`` per minute to one group (Telegram group ids are
    negative); ``pause`` stops every send for a while (after a 429).

    A send counts from when its answer comes back, less the fastest round trip seen, and holds its
    place while it is in flight: the platform counts arrivals, and a send that left early but
    arrived late would otherwise put one more into its window than the limit (a 429).
    ``acquire`` returns a ticket that ``done`` takes back once the answer is in.
    """

    def __init__(self, per_second: float, per_chat: float, per_group_minute: float = 20, *, margin: float = 0.01,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.capacity = max(1, int(per_second))
        self.window = 1.0 + margin
        self.chat_interval = 1.0 / per_chat + margin
        self.group_interval = 60.0 / per_group_minute + margin
        self.clock, self.sleep = clock, sleep
        self.sent: list[float] = []  # when finished sends count, sorted
        self.in_flight = 0
        self.chats_in_flight: set[str] = set()
        self.last_by_chat: dict[str, float] = {}
        self.paused_until = 0.0
        self.fastest: float | None = None  # the shortest round trip seen

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    async def acquire(self, chat: str, *, reply: bool = False) -> float:
        """Waits for a send to ``chat``; ``reply`` (a direct reply) takes the same queue here, in one
        process (scheduler.budget's shared limiter puts replies first)."""
        while True:
            now = self.clock()
            cut = bisect.bisect_right(self.sent, now - self.window)
            del self.sent[:cut]
            waits = [self.paused_until - now]
            if len(self.sent) + self.in_flight >= self.capacity:
                # Full: the oldest counted send leaves the window, or an in-flight one comes back.
                waits.append(self.sent[0] + self.window - now if self.sent and self.in_flight == 0 else 0.002)
            if chat in self.chats_in_flight:
                waits.append(0.002)
            last = self.last_by_chat.get(chat)
            if last is not None and not chat.startswith("reply:"):  # scheduler.budget.REPLY_PREFIX
                interval = self.group_interval if chat.startswith("-") else self.chat_interval
                waits.append(last + interval - now)
            wait = max(waits)
            if wait <= 0:
                self.in_flight += 1
                self.chats_in_flight.add(chat)
                return now
            await self.sleep(wait)

    def done(self, chat: str, ticket: float) -> None:
        """The answer to the send that ``acquire`` gave ``ticket`` for is in."""
        now = self.clock()
        trip = now - ticket
        self.fastest = trip if self.fastest is None else min(self.fastest, trip)
        counted = max(ticket, now - self.fastest)
        bisect.insort(self.sent, counted)
        self.last_by_chat[chat] = max(self.last_by_chat.get(chat, counted), counted)
        self.in_flight -= 1
        self.chats_in_flight.discard(chat)
        if len(self.last_by_chat) > 10_000:
            self._forget_old_chats(now)

    def _forget_old_chats(self, now: float) -> None:
        self.last_by_chat = {c: t for c, t in self.last_by_chat.items() if t > now - self.group_interval}


class Transport(Protocol):
    """A channel's way to send one outbox message."""

    channel: str
    limiter: RateLimiter

    async def deliver(self, message: Claimed) -> Delivery: ...


def backoff(attempt: int, base: float, cap: float = 3600.0) -> float:
    return min(cap, base * 2 ** max(0, attempt - 1))


class OutboxSender:
    """Claims due outbox rows and delivers them; safe to run in several processes at once."""

    def __init__(self, db: DbEngine, settings: Settings, transports: dict[str, Transport], *,
                 clock: Clock = utcnow, worker: str | None = None, concurrency: int = 8):
        self.db, self.settings, self.transports, self.clock = db, settings, transports, clock
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.concurrency = concurrency

    # -- database side (run in a thread: the drivers are synchronous) --------------------------

    def _claim(self) -> list[Claimed]:
        now = self.clock()
        quiet = outbox.quiet_end(now, self.settings) is not None
        with session_scope(self.db) as session:
            return outbox.claim_due(session, channels=list(self.transports), now=now, worker=self.worker,
                                    lease=timedelta(seconds=self.settings.outbox_lease_seconds),
                                    limit=self.settings.outbox_batch,
                                    kinds=outbox.IMMEDIATE_KINDS if quiet else None)

    def _take_off(self, message: Claimed) -> bool:
        """Marks the row in flight just before its send (see scheduler.outbox.take_off)."""
        with session_scope(self.db) as session:
            return outbox.take_off(session, message.id, self.worker, self.clock(),
                                   lease=timedelta(seconds=self.settings.outbox_lease_seconds))

    def _record(self, message: Claimed, result: Delivery) -> str:
        now: datetime = self.clock()
        with session_scope(self.db) as session:
            if result.status == "sent":
                if not outbox.mark_sent(session, message.id, self.worker, now):
                    log.warning("outbox %s was sent but its claim had lapsed", message.id)
                return OutboxState.SENT
            if result.status == "wait":
                at = now + timedelta(seconds=result.retry_after or self.settings.outbox_retry_base_seconds)
                return outbox.mark_retry(session, message.id, self.worker, at=at, error=result.error,
                                         count_attempt=False, max_attempts=self.settings.outbox_max_attempts)
            if result.status == "retry":
                if result.retry_after is not None:  # rate limited: not the message's fault
                    at, counted = now + timedelta(seconds=result.retry_after), False
                else:
                    at = now + timedelta(seconds=backoff(message.attempts + 1, self.settings.outbox_retry_base_seconds))
                    counted = True
                return outbox.mark_retry(session, message.id, self.worker, at=at, error=result.error,
                                         count_attempt=counted, max_attempts=self.settings.outbox_max_attempts)
            state = OutboxState.UNREACHABLE if result.status == "unreachable" else OutboxState.DEAD
            outbox.mark_failed(session, message.id, self.worker, state=state, error=result.error, now=now)
            return state

    # -- delivery ----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Delivers one batch of due rows; returns how many were handled."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.concurrency)
        # One task per recipient, its messages in order: a chat gets them in the order written,
        # and a 403 on the first spares the rest of the batch another call.
        by_recipient: dict[tuple[str, str], list[Claimed]] = {}
        for message in claimed:
            by_recipient.setdefault((message.channel, message.recipient), []).append(message)

        async def deliver_all(messages: list[Claimed]) -> None:
            async with gate:
                blocked = False
                held: Delivery | None = None  # an earlier message waits: the later ones wait behind it
                for message in messages:
                    transport = self.transports[message.channel]
                    if blocked:
                        result = Delivery("unreachable", error="recipient unreachable")
                    elif held is not None:
                        result = Delivery("wait", retry_after=held.retry_after, error="behind an earlier message")
                    else:
                        # Marked in flight before waiting for the limiter, so nothing but the send
                        # itself stands between the limiter's go and the platform counting it.
                        if not await asyncio.to_thread(self._take_off, message):
                            continue  # the claim lapsed and another sender has the row now
                        ticket = await transport.limiter.acquire(message.recipient)
                        try:
                            result = await transport.deliver(message)
                        except Exception as exc:  # a transport bug must not lose the row: retry it later
                            log.exception("outbox %s: transport error", message.id)
                            result = Delivery("retry", error=f"{type(exc).__name__}: {exc}")
                        finally:
                            finished = transport.limiter.done(message.recipient, ticket)
                            if inspect.isawaitable(finished):  # the shared limiter tells the store
                                await finished
                        metrics.observe_send(message.channel, result.status, result.error)
                        if result.retry_after and result.status == "retry":
                            paused = transport.limiter.pause(result.retry_after)
                            if inspect.isawaitable(paused):  # the shared limiter tells the other processes
                                await paused
                        blocked = result.status == "unreachable"
                        held = result if result.status in ("retry", "wait") else None
                    state = await asyncio.to_thread(self._record, message, result)
                    if state != OutboxState.SENT:
                        log.info("outbox %s -> %s (%s)", message.id, state, result.error)

        await asyncio.gather(*(deliver_all(group) for group in by_recipient.values()))
        return len(claimed)

    async def run(self, stop: asyncio.Event, idle_seconds: float = 1.0) -> None:
        """Delivers until ``stop`` is set, polling for due rows when there are none."""
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("outbox sender: batch failed")
                handled = 0
            if not handled:
                try:
                    await asyncio.wait_for(stop.wait(), idle_seconds)
                except asyncio.TimeoutError:
                    pass
