"""A wave of reminders through the outbox to a rate-limited Telegram: ``python -m bench.reminder_wave``.

What it measures: how long the production sender takes to deliver one reminder each to N distinct
Telegram users (default 10,000) against a Bot API stand-in that enforces Telegram's limits (30
messages/s overall, 1/s per chat) by answering 429 beyond them, compared with the physical
minimum N / 30 s. Targets (issue 5): at most 1.15 x the minimum, and zero 429 answers.

How:
  1. a fresh SQLite database (temporary file), migrated; N cadres with a bound Telegram account;
  2. the wave: one outbox row per cadre, written by ``bot.core.outbox.enqueue`` in one
     transaction, as a job writes it;
  3. the stand-in (tests.standins TelegramStandin with enforce_limits(30, 1), via
     bench.harness.BenchStandin for TCP_NODELAY as a real server has it) runs in a child process by
     default, so it does not share a GIL with the sender; --standin thread runs it in this process
     instead, to measure whether that matters;
  4. the sender as production runs it: ``OutboxSender.run`` with its defaults and Settings'
     defaults (telegram_rate_global=30, telegram_rate_per_chat=1, outbox_batch=200, concurrency 8),
     the real ``TelegramTransport`` on a python-telegram-bot ``Bot`` built as ``python -m bot
     worker`` builds it. One deviation: quiet hours are switched off (start = end), else a run
     between 22:00 and 08:00 Asia/Shanghai would send nothing;
  5. optionally (--rtt, --jitter) a simulated network path between the two: loopback answers in a
     few milliseconds, a real Bot API in tens to hundreds, with jitter;
  6. a monitor polls the outbox every 0.25 s (its own plain engine, reads only, so it never takes
     the write lock) and stops the sender when no row is pending; completion time is from the
     sender's start to the newest ``sent_at``.
--trace also times every send in the sender (a thin wrapper round the transport) and explains each
429: which earlier send the stand-in counted in the same second, and how late each one arrived.

Printed: completion time, the minimum, their ratio, 429 answers, rows sent/dead/unreachable/
pending, throughput, what the stand-in saw (most accepted sends in any 1 s window, chats that got
more than one message) and the CPU time of both processes. Exit 1 unless every row was sent,
each chat got exactly one message, and the run ended within its time limit. --quick: 600
recipients (about 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

GLOBAL_RATE = 30  # what the stand-in enforces, as Telegram does
PER_CHAT_RATE = 1
TARGET_RATIO = 1.15
CHAT_ID_BASE = 800_000_000
SEND_METHODS = ("sendMessage", "sendPhoto", "sendDocument")


# --------------------------------------------------------------------------- the stand-in


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window of ``window`` seconds (the stand-in's own rule)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def standin_stats(tg) -> dict:
    """What the stand-in saw: accepted sends (arrival times, monotonic clock), 429s, chats."""
    sends = [c for c in tg.calls if c.method in SEND_METHODS]
    ok = [c for c in sends if c.status == 200]
    times = sorted(c.at for c in ok)
    per_chat = Counter(c.params.get("chat_id") for c in ok)
    return {"accepted": len(ok), "requests": len(sends), "too_many_requests": tg.too_many_requests,
            "other_errors": sum(1 for c in sends if c.status not in (200, 429)),
            "first": times[0] if times else None, "last": times[-1] if times else None,
            "max_per_second": max_in_window(times), "chats": len(per_chat),
            "chats_more_than_once": sum(1 for n in per_chat.values() if n > 1)}


def standin_trace(tg) -> list[tuple[int, float, int]]:
    """(chat id, arrival time on the monotonic clock, HTTP status) of every send request."""
    return [(c.params.get("chat_id"), c.at, c.status) for c in tg.calls if c.method in SEND_METHODS]


class NetworkDelay:
    """ASGI middleware: holds each request ``one_way`` (+ up to ``jitter``) seconds before the stand-in
    sees it and again before its answer leaves, like a path to a distant server. The stand-in stamps
    and counts a request when it sees it, so request-side jitter is what moves sends in its window."""

    def __init__(self, app, one_way: float, jitter: float, seed: int = 5):
        import random

        self.app, self.one_way, self.jitter = app, one_way, jitter
        self.random = random.Random(seed)

    def _delay(self) -> float:
        return self.one_way + self.random.uniform(0, self.jitter)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await asyncio.sleep(self._delay())

        async def delayed(message):
            if message["type"] == "http.response.start":
                await asyncio.sleep(self._delay())
            await send(message)

        await self.app(scope, receive, delayed)


def _start_standin(rtt_ms: float = 0.0, jitter_ms: float = 0.0):
    from bench.harness import BenchStandin
    from tests.standins.telegram_api import TEST_TOKEN

    tg = BenchStandin(TEST_TOKEN, bot_username="zuofeng_wave_bot")
    if rtt_ms or jitter_ms:
        tg.app = NetworkDelay(tg.app, rtt_ms / 2000, jitter_ms / 1000)  # served by start() below
    tg.start()
    tg.enforce_limits(global_per_sec=GLOBAL_RATE, per_chat_per_sec=PER_CHAT_RATE)
    return tg


def serve_standin(conn, rtt_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
    """Child process: serves the stand-in on 127.0.0.1; answers "stats" and "stop" on the pipe."""
    logging.basicConfig(level=logging.WARNING)
    tg = _start_standin(rtt_ms, jitter_ms)
    conn.send(("ready", tg.url, os.getpid()))
    try:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                break  # the driver went away
            if command == "stats":
                conn.send(standin_stats(tg))
            elif command == "trace":
                conn.send(standin_trace(tg))
            else:
                break
    finally:
        tg.stop()


class StandinProcess:
    """The stand-in in a child process ('spawn': its own interpreter and GIL)."""

    def __init__(self, rtt_ms: float = 0.0, jitter_ms: float = 0.0):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=serve_standin, args=(child, rtt_ms, jitter_ms), name="bench-wave-standin",
                                    daemon=True)
        self.url: str = ""
        self.pid: int | None = None

    def __enter__(self) -> "StandinProcess":
        self._process.start()
        if not self._conn.poll(60):
            self._process.terminate()
            raise RuntimeError("the stand-in process did not start within 60 s")
        _, self.url, self.pid = self._conn.recv()
        return self

    def stats(self) -> dict:
        self._conn.send("stats")
        return self._conn.recv()

    def trace(self) -> list:
        self._conn.send("trace")
        return self._conn.recv()

    def __exit__(self, *exc_info) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()  # our own child, by its handle
            self._process.join(5)


class StandinThread:
    """The stand-in in this process (uvicorn in a thread), sharing the GIL with the sender."""

    def __init__(self, rtt_ms: float = 0.0, jitter_ms: float = 0.0):
        self.rtt_ms, self.jitter_ms = rtt_ms, jitter_ms

    def __enter__(self) -> "StandinThread":
        self.tg = _start_standin(self.rtt_ms, self.jitter_ms)
        self.url, self.pid = self.tg.url, None
        return self

    def stats(self) -> dict:
        return standin_stats(self.tg)

    def trace(self) -> list:
        return standin_trace(self.tg)

    def __exit__(self, *exc_info) -> None:
        self.tg.stop()


# --------------------------------------------------------------------------- database and wave


def prepare(url: str, recipients: int):
    """Migrates the database and writes N cadres (100 per unit) with a bound Telegram account."""
    from storage.db import make_engine, upgrade
    from storage.models import Cadre, ChatAccount, Role, Unit

    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(timezone.utc)
    units = (recipients + 99) // 100
    with engine.begin() as conn:  # Core executemany: the roster is set-up, not what is measured
        conn.execute(Unit.__table__.insert(), [{"id": u + 1, "name": f"单位{u + 1}", "kind": "市直部门", "active": True}
                                               for u in range(units)])
        conn.execute(Cadre.__table__.insert(), [
            {"id": n + 1, "name": f"干部{n + 1}", "unit_id": n // 100 + 1, "mobile": f"139{n + 1:08d}",
             "role": Role.CADRE, "post": None, "duties": None, "active": True, "digests_muted": False}
            for n in range(recipients)])
        conn.execute(ChatAccount.__table__.insert(), [
            {"id": n + 1, "channel": "telegram", "external_user_id": str(CHAT_ID_BASE + n + 1), "cadre_id": n + 1,
             "bound_at": now - timedelta(days=3), "bound_by": "code", "unreachable_at": None}
            for n in range(recipients)])
    return engine


def write_wave(engine, settings, recipients: int) -> float:
    """One reminder per cadre through bot.core.outbox.enqueue, in one transaction; returns seconds."""
    from bot.core.outbox import enqueue
    from storage.db import session_scope

    now = datetime.now(timezone.utc)
    head = "⏰ 附件1、2（联户走访名单及收集问题）将于 12月10日 截止（还有 7 天）。\n本半年已走访 3/5 户，尚未走访："
    started = time.perf_counter()
    with session_scope(engine) as session:
        for n in range(1, recipients + 1):
            body = f"{head}\n• 住户{n}-4 · 幸福路{n}-4号\n• 住户{n}-5 · 幸福路{n}-5号"
            enqueue(session, key=f"deadline:form12:2026-12-10:7:c{n}", kind="deadline", channel="telegram",
                    recipient=str(CHAT_ID_BASE + n), body=body, now=now, settings=settings, cadre_id=n)
    return time.perf_counter() - started


def outbox_states(reader) -> dict[str, int]:
    from sqlalchemy import text

    with reader.connect() as conn:
        return dict(conn.execute(text("SELECT state, count(*) FROM outbox GROUP BY state")).all())


# --------------------------------------------------------------------------- the run


class TracedTransport:
    """--trace only: the real transport, noting when each send starts (just after the limiter let it
    go) and ends, on the monotonic clock the stand-in stamps arrivals with (system-wide on Linux)."""

    def __init__(self, inner):
        self.inner, self.channel, self.limiter = inner, inner.channel, inner.limiter
        self.sends: list[tuple[int, float, float]] = []

    async def deliver(self, message):
        started = time.monotonic()
        result = await self.inner.deliver(message)
        self.sends.append((int(message.recipient), started, time.monotonic()))
        return result


async def deliver(url: str, settings, engine, reader, time_limit: float, trace: bool = False) -> dict:
    """Runs the production sender until no row is pending (or the time limit); returns timings."""
    from telegram import Bot

    from handlers.telegram import TelegramTransport
    from scheduler.sender import OutboxSender

    base = settings.telegram_api_base_url.rstrip("/")
    # As `python -m bot worker` builds it (bot/cli.py cmd_worker).
    bot = Bot(settings.telegram_bot_token.get_secret_value(), base_url=f"{base}/bot", base_file_url=f"{base}/file/bot")
    await bot.initialize()
    try:
        transport = TelegramTransport(bot, settings)
        if trace:
            transport = TracedTransport(transport)
        sender = OutboxSender(engine, settings, {"telegram": transport})
        stop = asyncio.Event()
        started_wall, started, cpu = datetime.now(timezone.utc), time.monotonic(), time.process_time()
        task = asyncio.create_task(sender.run(stop))
        timed_out = False
        while True:
            await asyncio.sleep(0.25)
            states = await asyncio.to_thread(outbox_states, reader)
            if not states.get("pending"):
                break
            if time.monotonic() - started > time_limit:
                timed_out = True
                break
            if task.done():  # the sender's loop died: report, do not wait for the time limit
                break
        stop.set()
        await task
        return {"started_wall": started_wall, "started": started, "cpu": time.process_time() - cpu,
                "timed_out": timed_out, "sends": transport.sends if trace else None}
    finally:
        await bot.shutdown()


def explain_429s(sends: list[tuple[int, float, float]], calls: list[tuple[int, float, int]]) -> None:
    """For each 429: the 1 s window the stand-in counted, as the sender timed the same requests.

    The sender's limiter lets the 31st send start 1.05 s after the 1st started; the stand-in counts
    arrivals. A 429 means the 1st arrived more than 50 ms later after its start than the 31st did.
    """
    started: dict[int, list[tuple[float, float]]] = {}
    for chat, t0, t1 in sends:
        started.setdefault(chat, []).append((t0, t1))
    accepted = sorted((at, chat) for chat, at, status in calls if status == 200)
    rejected = [(at, chat) for chat, at, status in calls if status == 429]
    print(f"  the 429s, against the window the stand-in counted (times in ms; delay = arrival - send start):")
    seen: dict[int, int] = {}
    for at, chat in sorted(rejected):
        window = [(a, c) for a, c in accepted if at - 1.0 < a <= at]
        if not window or chat not in started:
            continue
        first_at, first_chat = window[0]
        k = seen.get(chat, 0)
        seen[chat] = k + 1
        s_rej = started[chat][min(k, len(started[chat]) - 1)][0]
        s_first = max(t0 for t0, _ in started[first_chat] if t0 <= first_at)
        print(f"    window of {len(window)}: sender gap {1000 * (s_rej - s_first):7.1f}, stand-in gap "
              f"{1000 * (at - first_at):7.1f}; delay of the window's first {1000 * (first_at - s_first):6.1f}, "
              f"of the rejected {1000 * (at - s_rej):6.1f}")
    # A chat retried after a 429 was started twice: its delay is from the newest start before arrival.
    delays = sorted(1000 * (a - max(t0 for t0, _ in started[c] if t0 <= a)) for a, c in accepted
                    if c in started and any(t0 <= a for t0, _ in started[c]))
    if delays:
        pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
        print(f"  send start -> arrival at the stand-in: p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, "
              f"max {delays[-1]:.1f} ms")


def report(args, run: dict, seen: dict, states: dict, db_figures: dict, standin_cpu, write_seconds: float,
           placement: str) -> int:
    n = args.recipients
    minimum = n / GLOBAL_RATE
    completion = (db_figures["last_sent"] - run["started_wall"]).total_seconds() if db_figures["last_sent"] else None
    limiter_bound = n / GLOBAL_RATE * 1.05  # the sender's own limiter: 30 per 1.05 s window
    print()
    network = f"; simulated network: rtt {args.rtt:g} ms + jitter up to {args.jitter:g} ms each way" \
        if args.rtt or args.jitter else ""
    print(f"reminder wave: {n} recipients, stand-in in {placement}, limits {GLOBAL_RATE}/s overall and "
          f"{PER_CHAT_RATE}/s per chat; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}{network}")
    print(f"  wave written (enqueue, one transaction)   {write_seconds:8.2f} s")
    if completion is not None:
        ratio = completion / minimum
        print(f"  completion (sender start -> last sent_at) {completion:8.2f} s")
        print(f"  physical minimum {n} / {GLOBAL_RATE}               {minimum:8.2f} s")
        print(f"  the sender limiter's own bound (x1.05)    {limiter_bound:8.2f} s")
        print(f"  ratio to the minimum                      {ratio:8.3f}   (target <= {TARGET_RATIO})  "
              f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
        print(f"  throughput                                {n / completion:8.2f} messages/s")
    if seen["first"] is not None:
        span = seen["last"] - seen["first"]
        print(f"  stand-in: first to last accepted send     {span:8.2f} s  "
              f"({(seen['accepted'] - 1) / span if span else 0:.2f}/s); "
              f"most in any 1 s window: {seen['max_per_second']}")
    print(f"  429 answers                               {seen['too_many_requests']:8d}   (target 0)  "
          f"{'PASS' if seen['too_many_requests'] == 0 else 'FAIL'}")
    print(f"  other error answers                       {seen['other_errors']:8d}")
    print(f"  send requests / accepted                  {seen['requests']:8d} / {seen['accepted']}")
    print(f"  chats reached / reached more than once    {seen['chats']:8d} / {seen['chats_more_than_once']}")
    print(f"  rows: sent {states.get('sent', 0)}, dead {states.get('dead', 0)}, unreachable "
          f"{states.get('unreachable', 0)}, pending {states.get('pending', 0)}; rows retried: {db_figures['retried']}")
    cpu_standin = f"{standin_cpu:.1f} s" if standin_cpu is not None else "(same process)"
    print(f"  CPU: sender process {run['cpu']:.1f} s, stand-in process {cpu_standin}")
    ok = (states.get("sent", 0) == n and not run["timed_out"] and seen["chats_more_than_once"] == 0
          and seen["accepted"] == n)
    if not ok:
        print("!!! NOT EVERY ROW WAS SENT EXACTLY ONCE"
              + (" (time limit reached)" if run["timed_out"] else "") + " !!!")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reminder_wave", description=__doc__.split("\n")[0])
    p.add_argument("--recipients", type=int, default=10_000, help="distinct recipients (default 10000)")
    p.add_argument("--quick", action="store_true", help="600 recipients, about 20 s")
    p.add_argument("--standin", choices=("process", "thread"), default="process",
                   help="where the stand-in runs: a child process (default) or a thread of this process")
    p.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                   help="simulated round trip to the stand-in, half each way (default 0: loopback as is)")
    p.add_argument("--jitter", type=float, default=0.0, metavar="MS",
                   help="up to this much more delay, drawn each way for each request (default 0)")
    p.add_argument("--trace", action="store_true", help="time each send in the sender too and explain every 429 "
                                                         "(wraps the transport; off for the figures)")
    p.add_argument("--time-limit", type=float, help="seconds before the run gives up (default 2 x minimum + 60)")
    args = p.parse_args(argv)
    if args.quick:
        args.recipients = 600
    if args.recipients < 1:
        p.error("--recipients must be at least 1")
    time_limit = args.time_limit or 2 * args.recipients / GLOBAL_RATE + 60

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import SecretStr
    from sqlalchemy import create_engine, func, select

    from bench.harness import cpu_seconds
    from bot.config import Settings
    from storage.models import OutboxMessage
    from tests.standins.telegram_api import TEST_TOKEN

    with tempfile.TemporaryDirectory(prefix="zuofeng-wave-") as folder:
        url = f"sqlite:///{Path(folder) / 'wave.db'}"
        print(f"bench.reminder_wave: {args.recipients} cadres with bound Telegram accounts in {url}", flush=True)
        engine = prepare(url, args.recipients)
        # A plain engine for the monitor: no BEGIN IMMEDIATE, so its reads never wait for the sender's writes.
        reader = create_engine(url)
        try:
            placement = StandinProcess if args.standin == "process" else StandinThread
            with placement(args.rtt, args.jitter) as standin:
                quiet_off = datetime(2000, 1, 1, 8, 0).time()
                settings = Settings(_env_file=None, database_url=url, telegram_bot_token=SecretStr(TEST_TOKEN),
                                    telegram_api_base_url=standin.url, quiet_hours_start=quiet_off,
                                    quiet_hours_end=quiet_off)
                write_seconds = write_wave(engine, settings, args.recipients)
                print(f"bench.reminder_wave: {args.recipients} rows written in {write_seconds:.2f} s; sending "
                      f"(minimum {args.recipients / GLOBAL_RATE:.0f} s)…", flush=True)
                cpu_before = cpu_seconds(standin.pid) if standin.pid else None
                run = asyncio.run(deliver(url, settings, engine, reader, time_limit, trace=args.trace))
                standin_cpu = cpu_seconds(standin.pid) - cpu_before if cpu_before is not None else None
                seen = standin.stats()
                calls = standin.trace() if args.trace else None
            states = outbox_states(reader)
            with reader.connect() as conn:
                last_sent = conn.execute(select(func.max(OutboxMessage.sent_at))).scalar()
                retried = conn.execute(select(func.count()).select_from(OutboxMessage)
                                       .where(OutboxMessage.attempts > 0)).scalar()
            # sent_at is read back through the model's column type: an aware UTC datetime.
            db_figures = {"last_sent": last_sent, "retried": retried}
        finally:
            reader.dispose()
            engine.dispose()
    status = report(args, run, seen, states, db_figures, standin_cpu, write_seconds,
                    "a thread of the sender's process" if args.standin == "thread" else "a child process")
    if args.trace:
        explain_429s(run["sends"], calls)
    return status


if __name__ == "__main__":
    sys.exit(main())
