"""The WeCom sender's per-member limits on a simulated clock: never more than a member's messages per
minute or per hour, whatever the backlog, and whichever of several senders sends them; other members
are not held up. The stores that share them between processes (PostgreSQL with TEST_DATABASE_URL,
Redis when it answers on 127.0.0.1:6379, db 11 of it) answer as the in-process one does."""

from __future__ import annotations

import asyncio

import pytest

from handlers.wecom import MemberLimiter
from scheduler.budget import MemoryStore, PostgresStore, RedisStore, Rule, Window
from tests.test_production_limits import VirtualTime


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)
        await asyncio.sleep(0)


def _send(limiter: MemberLimiter, clock: FakeTime, member: str, count: int, trip: float = 0.05) -> list[float]:
    """``count`` sends to ``member`` one after the other; when each one's answer came back."""
    async def main() -> list[float]:
        arrived = []
        for _ in range(count):
            ticket = await limiter.acquire(member)
            clock.now += trip
            arrived.append(clock.now)
            await limiter.done(member, ticket)
        return arrived
    return asyncio.run(main())


def _most_in(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_a_backlog_to_one_member_keeps_within_the_minute_and_the_hour():
    clock = FakeTime()
    limiter = MemberLimiter(1000.0, per_minute=30, per_hour=100, clock=clock, sleep=clock.sleep)
    times = _send(limiter, clock, "LiMing", 130)
    assert _most_in(times, 60.0) == 30 and _most_in(times, 3600.0) == 100
    assert times[-1] - times[0] > 3600.0  # the 101st had to wait for the hour


def test_another_member_is_not_held_up_by_a_full_minute():
    clock = FakeTime()
    limiter = MemberLimiter(1000.0, per_minute=30, per_hour=1000, clock=clock, sleep=clock.sleep)
    _send(limiter, clock, "LiMing", 30)
    before = clock.now
    _send(limiter, clock, "WangFang", 5)
    assert clock.now - before < 1.0


def test_a_row_of_several_messages_takes_as_many_places():
    clock = FakeTime()
    limiter = MemberLimiter(1000.0, per_minute=3, per_hour=1000, clock=clock, sleep=clock.sleep)

    async def main() -> float:
        first = await limiter.acquire("LiMing", sends=2)  # a text and a card
        await limiter.done("LiMing", first)
        start = clock.now
        second = await limiter.acquire("LiMing", sends=2)  # only one place left this minute
        await limiter.done("LiMing", second)
        return clock.now - start

    assert asyncio.run(main()) >= 60.0


def _two_senders(limiters, vt: VirtualTime, members: list[str], per_member: int) -> list[tuple[float, str]]:
    """Two senders (one per limiter, as two processes) send ``per_member`` messages to each member,
    each one arriving halfway through its round trip; the arrivals."""
    arrivals: list[tuple[float, str]] = []

    async def one(limiter, member):
        held = await limiter.acquire(member)
        await vt.sleep(0.025)
        arrivals.append((vt.now, member))
        await vt.sleep(0.025)
        await limiter.done(member, held)

    async def sender(limiter, share):
        for member in members:
            for _ in range(share):
                await one(limiter, member)

    asyncio.run(vt.run(*(sender(limiter, per_member // 2) for limiter in limiters)))
    return arrivals


def _busiest_minute(arrivals, member: str, window: float = 60.0) -> int:
    times = sorted(t for t, m in arrivals if m == member)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def test_two_senders_sharing_one_store_keep_a_members_30_a_minute_together():
    vt = VirtualTime()
    store = MemoryStore(clock=vt.clock)
    limiters = [MemberLimiter(20.0, 30, 1000, store=store, clock=vt.clock, sleep=vt.sleep) for _ in range(2)]
    arrivals = _two_senders(limiters, vt, ["LiMing", "WangFang"], 80)
    assert len(arrivals) == 160
    assert all(_busiest_minute(arrivals, m) == 30 for m in ("LiMing", "WangFang"))

    # The control: a store each (two processes counting alone) lets twice the limit through.
    vt2 = VirtualTime()
    alone = [MemberLimiter(20.0, 30, 1000, store=MemoryStore(clock=vt2.clock), clock=vt2.clock, sleep=vt2.sleep)
             for _ in range(2)]
    assert _busiest_minute(_two_senders(alone, vt2, ["LiMing"], 80), "LiMing") > 30


REDIS_URL = "redis://127.0.0.1:6379/11"


def shared_stores(database_url, db):
    found = []
    if database_url.startswith("postgresql"):
        found.append(PostgresStore(db))
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
        client.ping()
        client.flushdb()
        found.append(RedisStore(REDIS_URL))
    except Exception:
        pass
    return found


def test_each_shared_store_holds_windows_in_flight_waits_for_the_oldest_pauses_and_spends(database_url, db):
    found = shared_stores(database_url, db)
    if not found:
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL) or Redis on 127.0.0.1:6379")
    for store in found + [MemoryStore()]:
        minute = Window("app:m:Li_Ming%:minute", 3, 60.0, 2)
        first = store.take_windows([minute])
        assert first.granted
        held = store.take_windows([Window(minute.key, 3, 60.0, 2)])  # two in flight, a limit of three
        assert not held.granted and held.wait <= 0.1
        other = store.take_windows([Window("app:m:LiXMing_:minute", 3, 60.0, 2)])  # no LIKE wildcard leaks
        assert other.granted
        store.finish_windows([minute], first)
        one = store.take_windows([Window(minute.key, 3, 60.0, 1)])
        assert one.granted
        store.finish_windows([Window(minute.key, 3, 60.0, 1)], one)
        full = store.take_windows([Window(minute.key, 3, 60.0, 1)])  # three counted: wait for the oldest to leave
        assert not full.granted and full.wait == pytest.approx(60.0, abs=2.0)
        store.pause(Rule("app", 1, 1.0, 0.0, 0.0), 30)
        paused = store.take_windows([Window("app:calls", 100, 1.0, 1)], "app")
        assert not paused.granted and paused.wait > 25
        assert [store.spend("app:quota", "2026-11-20", 2, 5) for _ in range(3)] == [True, True, False]
        assert store.spend("app:quota", "2026-11-21", 2, 5)  # a new day, a new count
        assert store.spend("app:quota2", "2026-11-20", 9, 5)  # more than the quota at once: the day's first
        assert not store.spend("app:quota2", "2026-11-20", 1, 5)
