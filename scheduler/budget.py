"""Send budgets and request limits shared by every process of one deployment.

Telegram counts a bot's messages (30/s overall, 1/s per chat, 20/min per group) whatever process
sends them, so the limit must live where all processes see it. One store per deployment, chosen
by ``budget_store(settings)``:

- ``RedisStore`` when ``REDIS_URL`` is set: Lua scripts, so each step is atomic in Redis;
- ``PostgresStore`` when the database is PostgreSQL: one short transaction per step under an
  advisory lock per bot (tables ``rate_hit`` and ``rate_budget``);
- otherwise one process on SQLite: ``scheduler.sender.RateLimiter`` in the process
  (``MemoryStore`` is the same logic as the shared stores, for tests).

Sends (``take``/``finish``) follow ``scheduler.sender.RateLimiter``, shared: the platform counts
arrivals, so a send holds a place while in flight and, once its answer is in, counts from the
moment of the answer (it arrived before that; counting from the answer less the fastest round trip,
as the one-process limiter does, proved too early when a loaded machine slows the way there and
not the way back). A send may start when the sends counted
in the last second (plus 1 %) and those in flight are fewer than the limit, this chat has none in
flight and its last one counted at least its interval ago. A stall anywhere (a process descheduled,
the platform answering late) thus only makes the count more careful, never lets a burst through.
Direct replies may use the whole limit, bulk sends (the outbox) all but ``REPLY_RESERVE`` of it:
replies go first. In-flight places expire after ``FLIGHT_TTL`` seconds (a sender that died). The
clock is the store's (Redis ``TIME``, PostgreSQL ``clock_timestamp()``).

``hit(key, limit, window)``: a sliding-window count (the rating page's per-address limit): True
and counted when fewer than ``limit`` hits fell in the last ``window`` seconds. Memory and Redis
use the ``limits`` library's moving window; PostgreSQL keeps one row per hit under an advisory
lock per key (``limits`` has no PostgreSQL storage).

Why not ``limits`` for the sends as well: its strategies count a hit when it is made and answer
yes or no per key; a send must hold its place until the platform's answer says when it counted,
and take the overall and the per-chat budget in one atomic step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

KEY_PREFIX = "zf:"
REPLY_RESERVE = 3  # places per second that bulk sends leave to direct replies
FLIGHT_TTL = 30.0  # an in-flight place of a sender that died is given up after this long
BUSY_POLL = 0.01  # wait when the limit is held by sends in flight (their answers free it)


@dataclass(frozen=True)
class Taken:
    granted: bool
    wait: float = 0.0  # refused: seconds to wait before asking again
    ticket: str = ""  # granted: hand back to ``finish``
    at: float = 0.0  # granted: the store's clock at the start


@dataclass(frozen=True)
class Rule:
    """One bot's limits as the stores apply them."""

    bot: str
    capacity: int  # sends per window
    window: float  # seconds
    chat_interval: float
    group_interval: float

    def interval(self, chat: str) -> float:
        if chat.startswith(REPLY_PREFIX):
            return 0.0  # a direct reply answers the user's own message: the overall budget only
        return self.group_interval if chat.startswith("-") else self.chat_interval


# A direct reply is counted under "reply:<chat>": it takes a place in the bot's overall budget (and
# waits for the previous reply to the same chat to be answered), but not Telegram's one-a-second
# spacing per chat, which is about messages nobody asked for: an answer of two messages is not held
# back a second, and a reminder to the same chat keeps its own spacing.
REPLY_PREFIX = "reply:"


class Store(Protocol):
    kind: str

    def take(self, rule: Rule, chat: str, capacity: int) -> Taken: ...

    def finish(self, rule: Rule, chat: str, taken: Taken) -> None: ...

    def pause(self, rule: Rule, seconds: float) -> None: ...

    def hit(self, key: str, limit: int, window: float) -> bool: ...

    def ping(self) -> bool: ...


def _verdict(now: float, rule: Rule, chat: str, capacity: int, sent: list[float], in_flight: int,
             chat_busy: bool, chat_last: float, paused_until: float) -> float:
    """0 when a send may start now, else how long to wait before asking again."""
    waits = [paused_until - now]
    if len(sent) + in_flight >= capacity:
        overflow = len(sent) + in_flight - capacity  # that many must leave the window first
        waits.append(sorted(sent)[overflow] + rule.window - now if in_flight == 0 and overflow < len(sent)
                     else BUSY_POLL)
    if chat_busy:
        waits.append(BUSY_POLL)
    waits.append(chat_last + rule.interval(chat) - now)
    wait = max(waits)
    return wait if wait > 0 else 0.0


class MemoryStore:
    """In this process only (tests; one process uses scheduler.sender.RateLimiter)."""

    kind = "memory"

    def __init__(self, clock=time.monotonic):
        from limits import storage, strategies

        self.clock = clock
        self._sent: dict[str, list[float]] = {}
        self._flight: dict[str, dict[str, tuple[str, float]]] = {}  # bot -> ticket -> (chat, expiry)
        self._last: dict[tuple[str, str], float] = {}
        self._paused: dict[str, float] = {}
        self._lock = threading.Lock()
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def take(self, rule, chat, capacity):
        with self._lock:
            now = self.clock()
            sent = [t for t in self._sent.get(rule.bot, []) if t > now - rule.window]
            self._sent[rule.bot] = sent
            flight = {k: v for k, v in self._flight.get(rule.bot, {}).items() if v[1] > now}
            self._flight[rule.bot] = flight
            wait = _verdict(now, rule, chat, capacity, sent, len(flight), any(c == chat for c, _ in flight.values()),
                            self._last.get((rule.bot, chat), -math.inf), self._paused.get(rule.bot, 0.0))
            if wait:
                return Taken(False, wait)
            ticket = uuid.uuid4().hex
            flight[ticket] = (chat, now + FLIGHT_TTL)
            return Taken(True, ticket=ticket, at=now)

    def finish(self, rule, chat, taken):
        with self._lock:
            counted = max(taken.at, self.clock())
            self._flight.get(rule.bot, {}).pop(taken.ticket, None)
            self._sent.setdefault(rule.bot, []).append(counted)
            self._last[(rule.bot, chat)] = max(self._last.get((rule.bot, chat), 0.0), counted)

    def pause(self, rule, seconds):
        with self._lock:
            self._paused[rule.bot] = max(self._paused.get(rule.bot, 0.0), self.clock() + seconds)

    def hit(self, key, limit, window):
        return self._limiter.hit(_item(limit, window), key)

    def ping(self):
        return True


def _item(limit: int, window: float):
    from limits import RateLimitItemPerSecond

    return RateLimitItemPerSecond(limit, max(1, int(math.ceil(window))))


# KEYS: sent (zset, score = counted time), flight (zset, score = expiry), chat's last counted time,
# chat's flight marker, pause. ARGV: window, capacity, interval, ticket, flight ttl, busy poll.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, capacity, interval = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local wait = tonumber(redis.call('GET', KEYS[5]) or '0') - now
local sent, flying = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
if sent + flying >= capacity then
  local w = tonumber(ARGV[6])
  local overflow = sent + flying - capacity
  if flying == 0 and overflow < sent then
    local oldest = redis.call('ZRANGE', KEYS[1], overflow, overflow, 'WITHSCORES')
    w = tonumber(oldest[2]) + window - now
  end
  if w > wait then wait = w end
end
if redis.call('EXISTS', KEYS[4]) == 1 and tonumber(ARGV[6]) > wait then wait = tonumber(ARGV[6]) end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last + interval - now > wait then wait = last + interval - now end
if wait > 0 then return {0, tostring(wait), ''} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
redis.call('SET', KEYS[4], ARGV[4], 'PX', math.ceil(tonumber(ARGV[5]) * 1000))
return {1, tostring(now), ARGV[4]}
"""

# KEYS: sent, flight, chat's last, chat's flight marker. ARGV: ticket, start time, ttl ms.
_FINISH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local counted = math.max(tonumber(ARGV[2]), now)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], counted, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 60000)
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if counted > last then redis.call('SET', KEYS[3], tostring(counted), 'PX', tonumber(ARGV[3])) end
return 1
"""

_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


class RedisStore:
    """Shared through Redis (``REDIS_URL``); keys start with ``zf:``."""

    kind = "redis"

    def __init__(self, url: str):
        import redis
        from limits import storage, strategies

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._take = self.client.register_script(_TAKE_LUA)
        self._finish = self.client.register_script(_FINISH_LUA)
        self._pause = self.client.register_script(_PAUSE_LUA)
        self._limiter = strategies.MovingWindowRateLimiter(storage.RedisStorage(url, key_prefix="zf-limits"))

    @staticmethod
    def _keys(rule: Rule, chat: str) -> list[str]:
        base = KEY_PREFIX + rule.bot
        return [f"{base}:sent", f"{base}:flight", f"{base}:last:{chat}", f"{base}:busy:{chat}", f"{base}:pause"]

    def take(self, rule, chat, capacity):
        granted, value, ticket = self._take(keys=self._keys(rule, chat), args=[
            repr(rule.window), capacity, repr(rule.interval(chat)), uuid.uuid4().hex, repr(FLIGHT_TTL),
            repr(BUSY_POLL)])
        if not granted:
            return Taken(False, float(value))
        return Taken(True, ticket=ticket.decode() if isinstance(ticket, bytes) else ticket, at=float(value))

    def finish(self, rule, chat, taken):
        ttl_ms = int(math.ceil(rule.interval(chat) * 1000)) + 1000
        self._finish(keys=self._keys(rule, chat)[:4], args=[taken.ticket, repr(taken.at), ttl_ms])

    def pause(self, rule, seconds):
        self._pause(keys=[KEY_PREFIX + rule.bot + ":pause"], args=[repr(seconds)])

    def hit(self, key, limit, window):
        return self._limiter.hit(_item(limit, window), key)

    def ping(self):
        try:
            return bool(self.client.ping())
        except Exception:
            return False


class PostgresStore:
    """Shared through the PostgreSQL database itself: no other service to run. Sends counted and in
    flight are ``rate_hit`` rows (key ``<bot>:sent`` at the counted time, ``<bot>:flight:<chat>`` at
    the expiry); a chat's last counted send and the pause are ``rate_budget`` rows."""

    kind = "postgresql"

    def __init__(self, engine):
        self.engine = engine

    @staticmethod
    def _now(conn) -> float:
        from sqlalchemy import text

        return float(conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar_one())

    def take(self, rule, chat, capacity):
        from sqlalchemy import text

        bot = KEY_PREFIX + rule.bot
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:bot))"), {"bot": bot})
            now = self._now(conn)
            conn.execute(text("DELETE FROM rate_hit WHERE (key = :sent AND at <= :old) "
                              "OR (key LIKE :flight AND at <= :now)"),
                         {"sent": f"{bot}:sent", "old": now - rule.window, "flight": f"{bot}:flight:%", "now": now})
            rows = conn.execute(text("SELECT key, at FROM rate_hit WHERE key = :sent OR key LIKE :flight"),
                                {"sent": f"{bot}:sent", "flight": f"{bot}:flight:%"}).all()
            sent = [at for key, at in rows if key == f"{bot}:sent"]
            flying = [key for key, _ in rows if key != f"{bot}:sent"]
            marks = dict(conn.execute(text("SELECT key, next_free FROM rate_budget WHERE key IN (:last, :pause)"),
                                      {"last": f"{bot}:last:{chat}", "pause": f"{bot}:pause"}).all())
            wait = _verdict(now, rule, chat, capacity, sent, len(flying), f"{bot}:flight:{chat}" in flying,
                            marks.get(f"{bot}:last:{chat}", -math.inf), marks.get(f"{bot}:pause", 0.0))
            if wait:
                return Taken(False, wait)
            ticket = conn.execute(text("INSERT INTO rate_hit (key, at) VALUES (:key, :at) RETURNING id"),
                                  {"key": f"{bot}:flight:{chat}", "at": now + FLIGHT_TTL}).scalar_one()
            return Taken(True, ticket=str(ticket), at=now)

    def finish(self, rule, chat, taken):
        from sqlalchemy import text

        bot = KEY_PREFIX + rule.bot
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:bot))"), {"bot": bot})
            counted = max(taken.at, self._now(conn))
            conn.execute(text("DELETE FROM rate_hit WHERE id = :id"), {"id": int(taken.ticket)})
            conn.execute(text("INSERT INTO rate_hit (key, at) VALUES (:key, :at)"), {"key": f"{bot}:sent", "at": counted})
            conn.execute(text("INSERT INTO rate_budget (key, next_free) VALUES (:key, :at) ON CONFLICT (key) DO UPDATE "
                              "SET next_free = greatest(rate_budget.next_free, EXCLUDED.next_free)"),
                         {"key": f"{bot}:last:{chat}", "at": counted})
            if int(taken.ticket) % 1000 == 0:  # chats' marks of long ago say nothing any more
                conn.execute(text("DELETE FROM rate_budget WHERE key LIKE :last AND next_free < :old"),
                             {"last": f"{bot}:last:%", "old": counted - 3600})

    def pause(self, rule, seconds):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO rate_budget (key, next_free) "
                              "VALUES (:key, extract(epoch from clock_timestamp()) + :s) ON CONFLICT (key) DO UPDATE "
                              "SET next_free = greatest(rate_budget.next_free, EXCLUDED.next_free)"),
                         {"key": KEY_PREFIX + rule.bot + ":pause", "s": seconds})

    def hit(self, key, limit, window):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            now = self._now(conn)
            conn.execute(text("DELETE FROM rate_hit WHERE key = :key AND at <= :cut"), {"key": key, "cut": now - window})
            count = conn.execute(text("SELECT count(*) FROM rate_hit WHERE key = :key"), {"key": key}).scalar_one()
            if count >= limit:
                return False
            conn.execute(text("INSERT INTO rate_hit (key, at) VALUES (:key, :at)"), {"key": key, "at": now})
            return True

    def ping(self):
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def budget_store(settings, engine=None) -> Store:
    """The store this deployment's processes share (one per process and URL)."""
    if settings.redis_url:
        key = "redis:" + settings.redis_url
    elif settings.sqlalchemy_url.startswith("postgresql"):
        key = "pg:" + settings.sqlalchemy_url
    else:
        key = "memory"
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if key.startswith("redis:"):
                store = RedisStore(settings.redis_url)
            elif key.startswith("pg:"):
                from storage.db import make_engine

                store = PostgresStore(engine if engine is not None else make_engine(settings.sqlalchemy_url))
            else:
                store = MemoryStore()
            _stores[key] = store
        return store


class SharedRateLimiter:
    """A messenger's limits for one bot, held by every process together (see the module docstring).

    The interface of ``scheduler.sender.RateLimiter`` (``acquire``/``done``/``pause``) for the outbox
    sender, plus ``acquire(chat, reply=True)`` for a direct reply, which may use the places bulk
    sends leave free (``REPLY_RESERVE``).
    """

    def __init__(self, store: Store, bot: str, per_second: float, per_chat: float, per_group_minute: float = 20,
                 *, margin: float = 0.01, sleep=asyncio.sleep, offload=asyncio.to_thread, clock=time.monotonic):
        self.store = store
        self.rule = Rule(bot, max(1, int(per_second)), 1.0 + margin, 1.0 / per_chat + margin,
                         60.0 / per_group_minute + margin)
        self.bulk_capacity = max(1, self.rule.capacity - REPLY_RESERVE)
        self.sleep, self.offload, self.clock = sleep, offload, clock  # tests drive a virtual clock
        self._held: dict[float, Taken] = {}
        self._bulk = asyncio.Lock()

    async def acquire(self, chat: str, *, reply: bool = False) -> float:
        """Waits until a send to ``chat`` may go, for every process together; returns a ticket for
        ``done``, to call once the platform's answer is in."""
        chat = str(chat)
        capacity = self.rule.capacity if reply else self.bulk_capacity
        failures = 0
        while True:
            try:
                if reply:
                    taken = await self.offload(self.store.take, self.rule, chat, capacity)
                else:
                    # One bulk send of this process asks at a time: when the overall budget is spent
                    # the others would be refused too, and each question costs the store a round trip.
                    async with self._bulk:
                        taken = await self.offload(self.store.take, self.rule, chat, capacity)
            except Exception as exc:  # the shared store is unreachable: nothing goes out unlimited
                failures += 1
                wait = min(30.0, 2.0 ** (failures - 1))
                log.warning("共享限流（%s）不可用（连续第 %d 次）：%s；%.0f 秒后重试", self.store.kind, failures,
                            " ".join(str(exc).split())[:200], wait)
                await self.sleep(wait)
                continue
            if taken.granted:
                ticket = self.clock()
                while ticket in self._held:
                    ticket = math.nextafter(ticket, math.inf)
                self._held[ticket] = taken
                return ticket
            await self.sleep(taken.wait)

    async def finish(self, chat: str, ticket: float) -> None:
        """The answer is in: the send counts from now, for every process."""
        taken = self._held.pop(ticket)
        try:
            await self.offload(self.store.finish, self.rule, str(chat), taken)
        except Exception as exc:  # its in-flight place expires on its own (FLIGHT_TTL)
            log.warning("共享限流（%s）未能记下一次发送：%s", self.store.kind, " ".join(str(exc).split())[:200])

    def done(self, chat: str, ticket: float):
        """``finish`` as the sender calls it (it awaits what ``done`` returns when it is awaitable)."""
        return self.finish(chat, ticket)

    async def pause(self, seconds: float) -> None:
        """The platform said 429: every process holds off for ``seconds``."""
        await self.offload(self.store.pause, self.rule, seconds)


def bot_limiter(settings, *, channel: str = "telegram", engine=None):
    """The limiter of this deployment's bot on ``channel``: shared by processes (Redis or PostgreSQL),
    or ``scheduler.sender.RateLimiter`` in this process for one process on SQLite (the app hands the
    channel's to its sender, so they share it)."""
    store = budget_store(settings, engine)
    if channel == "telegram":
        rates = (settings.telegram_rate_global, settings.telegram_rate_per_chat, settings.telegram_rate_per_group_minute)
        token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else "none"
        bot = "tg:" + token.split(":", 1)[0]
    else:
        rates = (settings.wechat_rate_global, 5.0, 20)
        bot = "wx:" + (settings.wechat_app_id or "none")
    if store.kind == "memory":
        return _local_limiter(bot, rates)
    return SharedRateLimiter(store, bot, *rates)


def _local_limiter(bot: str, rates):
    from scheduler.sender import RateLimiter

    return RateLimiter(*rates)
