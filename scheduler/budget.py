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

``take_windows``/``finish_windows``: several sliding windows taken in one atomic step, each a
count of places (``Window``: at most ``limit`` in any ``seconds``, this take costing ``cost``), held
while in flight and counted from the answer as above: WeCom's limits (the app's calls a second, a
member's 30 messages a minute and 1,000 an hour, ``handlers.wecom.transport.MemberLimiter``). A take
waits until the oldest counted places that keep a window full have left it. ``spend``: a counter
per period (the app's daily quota), refused once a period's count would pass its limit.

Why not ``limits`` for the sends as well: its strategies count a hit when it is made and answer
yes or no per key; a send must hold its place until the platform's answer says when it counted,
and take the overall and the per-chat budget in one atomic step.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
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
class Window:
    """A sliding window shared by processes: at most ``limit`` places in any ``seconds``; one take
    costs ``cost`` places (one per message). Windows longer than ``WINDOW_HORIZON`` are not kept."""

    key: str
    limit: int
    seconds: float
    cost: int = 1

    @property
    def places(self) -> int:
        """What a take costs: never more than the limit (else it could never pass)."""
        return max(0, min(self.cost, self.limit))


WINDOW_HORIZON = 86400.0  # counted places older than this are cleared whatever their window


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

    def take_windows(self, windows: list[Window], pause: str | None = None, ttl: float = FLIGHT_TTL) -> Taken: ...

    def finish_windows(self, windows: list[Window], taken: Taken) -> None: ...

    def spend(self, key: str, period: str, amount: int, limit: int) -> bool: ...

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


def _windows_verdict(now: float, checks: list[tuple[Window, list[float], int]], paused_until: float) -> float:
    """0 when a take of every window may start now, else how long to wait before asking again.
    ``checks``: each window with its counted places (times, oldest first) and places in flight."""
    waits = [paused_until - now]
    for window, sent, flying in checks:
        over = len(sent) + flying + window.places - window.limit  # that many must leave the window first
        if over <= 0:
            continue
        if over <= len(sent):  # places in flight count from their answer, later than any counted one
            waits.append(sent[over - 1] + window.seconds - now)
        else:  # the window is held by places in flight: they count once answered; look again then
            waits.append(max(BUSY_POLL, sent[-1] + window.seconds - now) if sent else BUSY_POLL)
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
        self._wsent: dict[str, list[float]] = {}  # window key -> counted places' times, sorted
        self._wflight: dict[str, dict[str, tuple[float, int]]] = {}  # window key -> ticket -> (expiry, places)
        self._wseconds: dict[str, float] = {}
        self._periods: dict[str, tuple[str, int]] = {}  # spend key -> (period, used)

    def take_windows(self, windows, pause=None, ttl=FLIGHT_TTL):
        with self._lock:
            now = self.clock()
            checks = []
            for window in windows:
                sent = self._wsent.get(window.key, [])
                cut = bisect.bisect_right(sent, now - window.seconds)
                sent = self._wsent[window.key] = sent[cut:]
                flight = {t: v for t, v in self._wflight.get(window.key, {}).items() if v[0] > now}
                self._wflight[window.key] = flight
                self._wseconds[window.key] = window.seconds
                checks.append((window, sent, sum(places for _, places in flight.values())))
            wait = _windows_verdict(now, checks, self._paused.get(pause, 0.0) if pause else 0.0)
            if wait:
                return Taken(False, wait)
            ticket = uuid.uuid4().hex[:16]
            for window in windows:
                self._wflight[window.key][ticket] = (now + ttl, window.places)
            if len(self._wsent) > 10_000:
                self._forget_windows(now)
            return Taken(True, ticket=ticket, at=now)

    def finish_windows(self, windows, taken):
        with self._lock:
            counted = max(taken.at, self.clock())
            for window in windows:
                held = self._wflight.get(window.key, {}).pop(taken.ticket, None)
                sent = self._wsent.setdefault(window.key, [])
                for _ in range(held[1] if held else window.places):
                    bisect.insort(sent, counted)

    def _forget_windows(self, now: float) -> None:
        """Windows with nothing counted or in flight any more (members not written to lately)."""
        for key in list(self._wsent):
            seconds = self._wseconds.get(key, WINDOW_HORIZON)
            if (not any(t > now - seconds for t in self._wsent[key][-1:])
                    and not any(v[0] > now for v in self._wflight.get(key, {}).values())):
                self._wsent.pop(key, None)
                self._wflight.pop(key, None)
                self._wseconds.pop(key, None)

    def spend(self, key, period, amount, limit):
        with self._lock:
            held, used = self._periods.get(key, (period, 0))
            used = used if held == period else 0
            if used > 0 and used + amount > limit:
                return False
            self._periods[key] = (period, used + amount)
            return True

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

# Several sliding windows in one step. KEYS: per window its counted places (zset, score = counted
# time) and its places in flight (zset, score = expiry); last, the pause (may be absent).
# ARGV: n, flight ttl, busy poll, ticket, then per window: limit, seconds, places.
_TAKE_WINDOWS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n, ttl, busy, ticket = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local wait = 0
if #KEYS > 2 * n then wait = tonumber(redis.call('GET', KEYS[2 * n + 1]) or '0') - now end
for i = 1, n do
  local sent, flight = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, seconds, places = tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - seconds)
  redis.call('ZREMRANGEBYSCORE', flight, '-inf', now)
  local s, f = redis.call('ZCARD', sent), redis.call('ZCARD', flight)
  local over = s + f + places - limit
  if over > 0 then
    local w = busy
    if over <= s then
      w = tonumber(redis.call('ZRANGE', sent, over - 1, over - 1, 'WITHSCORES')[2]) + seconds - now
    elseif s > 0 then
      w = math.max(busy, tonumber(redis.call('ZRANGE', sent, -1, -1, 'WITHSCORES')[2]) + seconds - now)
    end
    if w > wait then wait = w end
  end
end
if wait > 0 then return {0, tostring(wait), ''} end
for i = 1, n do
  for j = 1, tonumber(ARGV[4 + 3 * i]) do
    redis.call('ZADD', KEYS[2 * i], now + ttl, ticket .. ':' .. j)
  end
  redis.call('PEXPIRE', KEYS[2 * i], math.ceil(ttl * 1000) + 1000)
end
return {1, tostring(now), ticket}
"""

# KEYS: per window, counted and in flight. ARGV: n, ticket, start time, then per window: seconds, places.
_FINISH_WINDOWS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n, ticket = tonumber(ARGV[1]), ARGV[2]
local counted = math.max(tonumber(ARGV[3]), now)
for i = 1, n do
  local seconds, places = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  for j = 1, places do
    redis.call('ZREM', KEYS[2 * i], ticket .. ':' .. j)
    redis.call('ZADD', KEYS[2 * i - 1], counted, ticket .. ':' .. j)
  end
  redis.call('PEXPIRE', KEYS[2 * i - 1], math.ceil(seconds * 1000) + 1000)
end
return 1
"""

# KEYS: the counter of the period. ARGV: amount, limit, ttl seconds.
_SPEND_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if used > 0 and used + amount > limit then return 0 end
redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

SPEND_TTL = 3 * 86400  # a period's counter (a day's quota) is kept this long in Redis


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
        self._take_windows = self.client.register_script(_TAKE_WINDOWS_LUA)
        self._finish_windows = self.client.register_script(_FINISH_WINDOWS_LUA)
        self._spend = self.client.register_script(_SPEND_LUA)
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

    @staticmethod
    def _window_keys(windows) -> list[str]:
        keys = []
        for window in windows:
            keys += [f"{KEY_PREFIX}w:{window.key}:sent", f"{KEY_PREFIX}w:{window.key}:flight"]
        return keys

    def take_windows(self, windows, pause=None, ttl=FLIGHT_TTL):
        keys = self._window_keys(windows) + ([f"{KEY_PREFIX}{pause}:pause"] if pause else [])
        args = [len(windows), repr(ttl), repr(BUSY_POLL), uuid.uuid4().hex[:16]]
        for window in windows:
            args += [window.limit, repr(window.seconds), window.places]
        granted, value, ticket = self._take_windows(keys=keys, args=args)
        if not granted:
            return Taken(False, float(value))
        return Taken(True, ticket=ticket.decode() if isinstance(ticket, bytes) else ticket, at=float(value))

    def finish_windows(self, windows, taken):
        args = [len(windows), taken.ticket, repr(taken.at)]
        for window in windows:
            args += [repr(window.seconds), window.places]
        self._finish_windows(keys=self._window_keys(windows), args=args)

    def spend(self, key, period, amount, limit):
        return bool(self._spend(keys=[f"{KEY_PREFIX}q:{key}:{period}"], args=[amount, limit, SPEND_TTL]))

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

    # -- windows (WeCom) ------------------------------------------------------------------------
    # Counted places are ``rate_hit`` rows under ``zf:w:<key>:sent`` at their counted time, places
    # in flight rows under ``zf:w:<key>:flight:<ticket>`` at their expiry; the windows' keys are
    # locked (advisory, in the order of their lock ids, so two takes never wait on each other in a
    # circle) for the step.

    @staticmethod
    def _lock_windows(conn, keys) -> None:
        from sqlalchemy import text

        for lock in sorted({_lock_id(key) for key in keys}):
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})

    def take_windows(self, windows, pause=None, ttl=FLIGHT_TTL):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            self._lock_windows(conn, [w.key for w in windows])
            now = self._now(conn)
            checks = []
            for window in windows:
                base = f"{KEY_PREFIX}w:{window.key}"
                flight = _like_prefix(f"{base}:flight:")
                conn.execute(text("DELETE FROM rate_hit WHERE (key = :sent AND at <= :old) "
                                  "OR (key LIKE :flight ESCAPE '\\' AND at <= :now)"),
                             {"sent": f"{base}:sent", "old": now - window.seconds, "flight": flight, "now": now})
                rows = conn.execute(text("SELECT key, at FROM rate_hit WHERE key = :sent "
                                         "OR key LIKE :flight ESCAPE '\\'"),
                                    {"sent": f"{base}:sent", "flight": flight}).all()
                sent = sorted(at for key, at in rows if key == f"{base}:sent")
                checks.append((window, sent, len(rows) - len(sent)))
            paused = 0.0
            if pause:
                paused = conn.execute(text("SELECT next_free FROM rate_budget WHERE key = :key"),
                                      {"key": f"{KEY_PREFIX}{pause}:pause"}).scalar() or 0.0
            wait = _windows_verdict(now, checks, paused)
            if wait:
                return Taken(False, wait)
            ticket = uuid.uuid4().hex[:16]
            rows = [{"key": f"{KEY_PREFIX}w:{w.key}:flight:{ticket}", "at": now + ttl}
                    for w in windows for _ in range(w.places)]
            if rows:
                conn.execute(text("INSERT INTO rate_hit (key, at) VALUES (:key, :at)"), rows)
            return Taken(True, ticket=ticket, at=now)

    def finish_windows(self, windows, taken):
        from sqlalchemy import text

        with self.engine.begin() as conn:
            self._lock_windows(conn, [w.key for w in windows])
            counted = max(taken.at, self._now(conn))
            for window in windows:
                base = f"{KEY_PREFIX}w:{window.key}"
                conn.execute(text("DELETE FROM rate_hit WHERE key = :key"), {"key": f"{base}:flight:{taken.ticket}"})
            rows = [{"key": f"{KEY_PREFIX}w:{w.key}:sent", "at": counted} for w in windows for _ in range(w.places)]
            if rows:
                conn.execute(text("INSERT INTO rate_hit (key, at) VALUES (:key, :at)"), rows)
            if int(taken.ticket[:4], 16) % 256 == 0:  # windows of members not written to lately
                conn.execute(text("DELETE FROM rate_hit WHERE key LIKE :all ESCAPE '\\' AND at < :old"),
                             {"all": _like_prefix(f"{KEY_PREFIX}w:"), "old": counted - WINDOW_HORIZON})

    def spend(self, key, period, amount, limit):
        from sqlalchemy import text

        name = f"{KEY_PREFIX}q:{key}:"
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(name)})
            used = conn.execute(text("SELECT next_free FROM rate_budget WHERE key = :key"),
                                {"key": name + period}).scalar()
            if used is None:  # a new period: the counters of the ones before say nothing any more
                conn.execute(text("DELETE FROM rate_budget WHERE key LIKE :all ESCAPE '\\'"),
                             {"all": _like_prefix(name)})
                used = 0
            if used > 0 and used + amount > limit:
                return False
            conn.execute(text("INSERT INTO rate_budget (key, next_free) VALUES (:key, :used) ON CONFLICT (key) "
                              "DO UPDATE SET next_free = EXCLUDED.next_free"), {"key": name + period, "used": used + amount})
            return True

    def ping(self):
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


def _lock_id(key: str) -> int:
    """A PostgreSQL advisory lock id (a signed 64-bit integer) for ``key``."""
    return int.from_bytes(hashlib.sha256(f"{KEY_PREFIX}{key}".encode()).digest()[:8], "big", signed=True)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character backslash) matching what starts with ``prefix``."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


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
