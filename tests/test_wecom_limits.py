"""The WeCom sender's per-member limits on a simulated clock: never more than a member's messages per
minute or per hour, whatever the backlog; other members are not held up."""

from __future__ import annotations

import asyncio

from handlers.wecom import MemberLimiter


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
            limiter.done(member, ticket)
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
