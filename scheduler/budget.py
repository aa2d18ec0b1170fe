"""Send budgets and request limits shared by every process of one deployment.

Telegram counts a bot's messages (30/s overall, 1/s per chat, 20/min per group) whatever process
sends them, so the limit must live where all processes see it. One store per deployment, chosen
by ``budget_store(settings)``:

- ``RedisStore`` when ``REDIS_URL`` is set: a Lua script, so each step is atomic in Redis;
- ``PostgresStore`` when the database is PostgreSQL: rows locked in one short transaction
  (tables ``rate_budget`` and ``rate_hit``);
- ``MemoryStore`` otherwise (one process on SQLite): the same logic, in this process only.

Two operations:

``reserve(keys, max_ahead)``: virtual scheduling (the GCRA's "theoretical arrival time"). Each key
holds the earliest moment its next send may start; a reservation starts at the latest of now and
its keys' moments and pushes each key on by its interval. A bulk send (outbox) reserves only a
slot that starts within ``BULK_HORIZON`` seconds, else it is told how long to wait and reserves
nothing; a direct reply reserves whatever slot is next. So replies go first and bulk fills the
rest: a reply never waits behind more than the horizon of queued reminders. The clock is the
store's (Redis ``TIME``, PostgreSQL ``clock_timestamp()``), so hosts' clocks need not agree.

``hit(key, limit, window)``: a sliding-window count (the rating page's per-address limit): True
and counted when fewer than ``limit`` hits fell in the last ``window`` seconds. Memory and Redis
use the ``limits`` library's moving window; PostgreSQL keeps one row per hit under an advisory
lock per key (``limits`` has no PostgreSQL storage).

Why not ``limits`` for the sends as well: its strategies answer yes or no per key and whole
window, and cannot take the overall and the per-chat budget in one atomic step, nor say how long
to wait; a send that waits its turn needs both.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

log = logging.getLogger(__name__)

# A bulk send may hold a slot at most this far ahead: what a direct reply can wait behind it.
BULK_HORIZON = 0.1
KEY_PREFIX = "zf:"


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait: float  # granted: seconds until the slot starts; refused: seconds until one may be had
    blocked_by: int = -1  # refused: index of the key that stood in the way


class Store(Protocol):
    kind: str

    def reserve(self, keys: Sequence[tuple[str, float]], max_ahead: float) -> Reservation: ...

    def pause(self, key: str, seconds: float) -> None: ...

    def hit(self, key: str, limit: int, window: float) -> bool: ...

    def ping(self) -> bool: ...


def _decide(now: float, moments: list[float], keys: Sequence[tuple[str, float]], max_ahead: float):
    """The reservation for keys whose next-free moments are ``moments``: (Reservation, new moments)."""
    start = max([now, *moments])
    if start - now > max_ahead:
        blocked = max(range(len(moments)), key=lambda i: moments[i])
        return Reservation(False, start - now - max_ahead, blocked), None
    return Reservation(True, start - now), [start + interval for _, interval in keys]


class MemoryStore:
    """In this process only: right for one process on SQLite, wrong for several."""

    kind = "memory"

    def __init__(self, clock=time.monotonic):
        from limits import storage, strategies

        self.clock = clock
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def reserve(self, keys, max_ahead):
        with self._lock:
            now = self.clock()
            reservation, moments = _decide(now, [self._next.get(k, 0.0) for k, _ in keys], keys, max_ahead)
            if moments is not None:
                for (key, _), moment in zip(keys, moments):
                    self._next[key] = moment
                if len(self._next) > 50_000:
                    self._next = {k: v for k, v in self._next.items() if v > now}
            return reservation

    def pause(self, key, seconds):
        with self._lock:
            self._next[key] = max(self._next.get(key, 0.0), self.clock() + seconds)

    def hit(self, key, limit, window):
        return self._limiter.hit(_item(limit, window), key)

    def ping(self):
        return True


def _item(limit: int, window: float):
    from limits import RateLimitItemPerSecond

    return RateLimitItemPerSecond(limit, max(1, int(math.ceil(window))))


# KEYS: the budget keys; ARGV[1]: max_ahead, ARGV[2..]: each key's interval. Returns
# {granted (0/1), wait as text, blocked key index (1-based, 0 when granted)}.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start, blocked, top = now, 0, -1
for i, key in ipairs(KEYS) do
  local moment = tonumber(redis.call('GET', key) or '0')
  if moment > start then start = moment end
  if moment > top then top = moment; blocked = i end
end
local ahead = tonumber(ARGV[1])
if start - now > ahead then
  return {0, tostring(start - now - ahead), blocked}
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i + 1])
  redis.call('SET', key, tostring(start + interval), 'PX', math.ceil((start + interval - now) * 1000) + 60000)
end
return {1, tostring(start - now), 0}
"""

_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local moment = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > moment then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 60000)
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
        self._reserve = self.client.register_script(_RESERVE_LUA)
        self._pause = self.client.register_script(_PAUSE_LUA)
        self._limiter = strategies.MovingWindowRateLimiter(storage.RedisStorage(url, key_prefix="zf-limits"))

    def reserve(self, keys, max_ahead):
        granted, wait, blocked = self._reserve(keys=[KEY_PREFIX + k for k, _ in keys],
                                               args=[repr(max_ahead if math.isfinite(max_ahead) else 1e9),
                                                     *[repr(i) for _, i in keys]])
        return Reservation(bool(granted), float(wait), int(blocked) - 1)

    def pause(self, key, seconds):
        self._pause(keys=[KEY_PREFIX + key], args=[repr(seconds)])

    def hit(self, key, limit, window):
        return self._limiter.hit(_item(limit, window), key)

    def ping(self):
        try:
            return bool(self.client.ping())
        except Exception:
            return False


class PostgresStore:
    """Shared through the PostgreSQL database itself: no other service to run."""

    kind = "postgresql"

    def __init__(self, engine):
        self.engine = engine
        self._calls = 0

    def reserve(self, keys, max_ahead):
        from sqlalchemy import text

        names = [KEY_PREFIX + k for k, _ in keys]
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO rate_budget (key, next_free) SELECT k, 0 FROM unnest(CAST(:keys AS text[])) AS k "
                              "ON CONFLICT (key) DO NOTHING"), {"keys": names})
            # Locked in key order: two reservations of overlapping keys never wait on each other crosswise.
            rows = conn.execute(text("SELECT key, next_free, extract(epoch from clock_timestamp()) FROM rate_budget "
                                     "WHERE key = ANY(CAST(:keys AS text[])) ORDER BY key FOR UPDATE"),
                                {"keys": names}).all()
            found = {key: moment for key, moment, _ in rows}
            now = float(rows[0][2])
            reservation, moments = _decide(now, [found.get(n, 0.0) for n in names], keys, max_ahead)
            if moments is not None:
                conn.execute(text("UPDATE rate_budget SET next_free = :moment WHERE key = :key"),
                             [{"key": n, "moment": m} for n, m in zip(names, moments)])
            self._calls += 1
            if self._calls % 5000 == 0:  # chats' rows of long ago say nothing any more
                conn.execute(text("DELETE FROM rate_budget WHERE next_free < :old"), {"old": now - 3600})
        return reservation

    def pause(self, key, seconds):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO rate_budget (key, next_free) "
                              "VALUES (:key, extract(epoch from clock_timestamp()) + :s) ON CONFLICT (key) DO UPDATE "
                              "SET next_free = greatest(rate_budget.next_free, EXCLUDED.next_free)"),
                         {"key": KEY_PREFIX + key, "s": seconds})

    def hit(self, key, limit, window):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            now = float(conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar_one())
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
    sender, plus ``acquire(chat, reply=True)`` for a direct reply, which goes before bulk sends.
    ``margin`` widens every interval (0.1: 27 a second for a limit of 30): the platform counts
    arrivals, and a send's trip to it varies.
    """

    def __init__(self, store: Store, bot: str, per_second: float, per_chat: float, per_group_minute: float = 20,
                 *, margin: float = 0.1):
        self.store, self.bot = store, bot
        self.interval = (1.0 + margin) / per_second
        self.chat_interval = (1.0 + margin) / per_chat
        self.group_interval = (1.0 + margin) * 60.0 / per_group_minute
        self._bulk = asyncio.Lock()

    def _keys(self, chat: str) -> list[tuple[str, float]]:
        per_chat = self.group_interval if str(chat).startswith("-") else self.chat_interval
        return [(f"{self.bot}:all", self.interval), (f"{self.bot}:chat:{chat}", per_chat)]

    async def acquire(self, chat: str, *, reply: bool = False) -> float:
        """Waits until a send to ``chat`` may go, for every process together; returns a ticket."""
        keys = self._keys(str(chat))
        if reply:
            reservation = await asyncio.to_thread(self.store.reserve, keys, math.inf)
            if reservation.wait > 0:
                await asyncio.sleep(reservation.wait)
            return time.monotonic()
        while True:
            # One bulk sender of this process asks at a time: when the overall budget is spent the
            # others would be refused too, and asking costs the shared store a round trip.
            async with self._bulk:
                reservation = await asyncio.to_thread(self.store.reserve, keys, BULK_HORIZON)
                if not reservation.granted and reservation.blocked_by == 0:
                    await asyncio.sleep(reservation.wait)
                    continue
            if reservation.granted:
                if reservation.wait > 0:
                    await asyncio.sleep(reservation.wait)
                return time.monotonic()
            await asyncio.sleep(reservation.wait)  # this chat's own budget: the others go on

    def done(self, chat: str, ticket: float) -> None:
        """Nothing to give back: a reserved slot is spent whether or not the send succeeded."""

    async def pause(self, seconds: float) -> None:
        """The platform said 429: every process holds off for ``seconds``."""
        await asyncio.to_thread(self.store.pause, f"{self.bot}:all", seconds)


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
