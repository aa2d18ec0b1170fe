"""The shared send budget (scheduler.budget): limits held by several senders together, direct
replies before bulk sends, and the same answers from each store. Sends are simulated on a virtual
clock, so what is asserted is the schedule the limiter makes, not how long the test took."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from scheduler.budget import REPLY_RESERVE, MemoryStore, PostgresStore, RedisStore, Rule, SharedRateLimiter
from scheduler.sender import RateLimiter


class VirtualTime:
    """A clock that jumps to the next wake-up once every task is waiting."""

    def __init__(self):
        self.now = 0.0
        self._waiters: list = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def offload(self, fn, *args):
        return fn(*args)

    async def run(self, *coroutines):
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(t.done() for t in tasks):
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if self._waiters:
                at, _, future = heapq.heappop(self._waiters)
                self.now = max(self.now, at)
                future.set_result(None)
        return [t.result() for t in tasks]


TRIP = 0.05  # simulated round trip to the platform; a send arrives halfway


def shared_limiter(store, vt: VirtualTime) -> SharedRateLimiter:
    return SharedRateLimiter(store, "tg:1", 30, 1, 20, sleep=vt.sleep, offload=vt.offload, clock=vt.clock)


async def send(limiter, vt: VirtualTime, chat: str, arrivals: list, *, reply: bool = False) -> None:
    """One send through ``limiter``: it arrives at the platform halfway through its round trip."""
    ticket = await limiter.acquire(chat, reply=reply)
    await vt.sleep(TRIP / 2)
    arrivals.append((vt.now, chat))
    await vt.sleep(TRIP / 2)
    finished = limiter.done(chat, ticket)
    if asyncio.iscoroutine(finished):
        await finished


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))


def test_two_senders_sharing_one_store_keep_30_a_second_and_1_a_second_per_chat():
    vt = VirtualTime()
    store = MemoryStore(clock=vt.clock)
    arrivals: list[tuple[float, str]] = []

    async def sender(limiter, chats):
        gate = asyncio.Semaphore(8)

        async def one(chat):
            async with gate:
                await send(limiter, vt, chat, arrivals)
        await asyncio.gather(*(one(chat) for chat in chats))

    chats = [f"{i % 25}" for i in range(100)]
    asyncio.run(vt.run(sender(shared_limiter(store, vt), chats[::2]), sender(shared_limiter(store, vt), chats[1::2])))
    assert len(arrivals) == 100
    assert busiest_second([t for t, _ in arrivals]) <= 30
    for chat in set(chats):
        mine = sorted(t for t, c in arrivals if c == chat)
        assert all(b - a >= 1.0 for a, b in zip(mine, mine[1:]))

    # Two limiters of their own (one per process, nothing shared) let twice as many through.
    vt2 = VirtualTime()
    alone: list[tuple[float, str]] = []
    limiters = [RateLimiter(30, 1, clock=vt2.clock, sleep=vt2.sleep) for _ in range(2)]
    asyncio.run(vt2.run(*(send(limiters[i % 2], vt2, f"{i}", alone) for i in range(100))))
    assert busiest_second([t for t, _ in alone]) > 30


def test_a_direct_reply_goes_before_the_queued_bulk_sends():
    vt = VirtualTime()
    limiter = shared_limiter(MemoryStore(clock=vt.clock), vt)
    bulk: list[tuple[float, str]] = []
    replied: list[tuple[float, str]] = []

    async def reply():
        await vt.sleep(0.5)  # a cadre writes while 90 reminders are queued
        await send(limiter, vt, "reply-chat", replied, reply=True)

    asyncio.run(vt.run(*(send(limiter, vt, f"c{i}", bulk) for i in range(90)), reply()))
    [(at, _)] = replied
    assert at <= 0.5 + TRIP  # at once: bulk sends leave places free for replies
    assert sum(1 for t, _ in bulk if t > at) > 60  # most of the wave went after the reply
    assert busiest_second([t for t, _ in bulk + replied]) <= 30
    assert busiest_second([t for t, _ in bulk]) <= 30 - REPLY_RESERVE


def stores(database_url, db):
    found = []
    if database_url.startswith("postgresql"):
        found.append(PostgresStore(db))
    try:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/5", socket_connect_timeout=0.5)
        client.ping()
        client.flushdb()
        found.append(RedisStore("redis://127.0.0.1:6379/5"))
    except Exception:
        pass
    return found


def test_each_shared_store_holds_places_in_flight_spaces_a_chat_pauses_and_counts_hits(database_url, db):
    found = stores(database_url, db)
    if not found:
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL) or Redis on 127.0.0.1:6379")
    rule = Rule("t", capacity=2, window=1.01, chat_interval=2.0, group_interval=60.0)
    for store in found:
        first = store.take(rule, "1", 2)
        assert first.granted
        assert not store.take(rule, "1", 2).granted  # the chat has a send in flight
        second = store.take(rule, "2", 2)
        assert second.granted
        full = store.take(rule, "3", 2)  # two in flight: the limit of two is held
        assert not full.granted and full.wait <= 0.1
        store.finish(rule, "1", first)
        again = store.take(rule, "1", 3)  # counted now: the chat waits its interval
        assert not again.granted and again.wait == pytest.approx(2.0, abs=0.2)
        store.finish(rule, "2", second)
        assert not store.take(rule, "3", 2).granted  # two counted in the last second
        store.pause(rule, 30)
        paused = store.take(rule, "4", 10)
        assert not paused.granted and paused.wait > 25
        assert [store.hit("rating:198.51.100.7", 3, 600) for _ in range(4)] == [True, True, True, False]
        assert store.hit("rating:198.51.100.8", 3, 600)
        assert store.ping()


def test_the_wechat_transports_of_two_processes_hold_the_accounts_limit_together(settings, database_url, db,
                                                                                  monkeypatch):
    """Each process that sends for the Official Account (a worker, a web process) builds its own
    transport; on PostgreSQL their places come from one store, so the account's overall rate holds for
    all of them. On SQLite (one process) the transport keeps it in the process."""
    from handlers.wechat.transport import WeChatTransport
    from scheduler import budget

    if not database_url.startswith("postgresql"):
        assert isinstance(WeChatTransport(None, settings, db).limiter, RateLimiter)
        return
    shared = settings.model_copy(update={"wechat_rate_global": 2.0, "wechat_app_id": "wx-two-processes"})
    monkeypatch.setattr(budget, "_stores", {})  # as a new process finds it
    first = WeChatTransport(None, shared, db).limiter
    monkeypatch.setattr(budget, "_stores", {})
    second = WeChatTransport(None, shared, db).limiter
    assert isinstance(first, SharedRateLimiter) and first.store is not second.store
    assert first.rule.bot == second.rule.bot == "wx:wx-two-processes"
    capacity = first.rule.capacity
    assert capacity == 2
    assert first.store.take(first.rule, "openid-1", capacity).granted
    assert second.store.take(second.rule, "openid-2", capacity).granted
    # Two sends in flight, one from each process: a third, from either, waits.
    assert not second.store.take(second.rule, "openid-3", capacity).granted
    assert not first.store.take(first.rule, "openid-4", capacity).granted
