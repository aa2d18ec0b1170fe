"""Instructions per update in the bot process, counted by callgrind: the bench's visits without timings.

``python -m bench`` times; on a shared, noisy machine a few per cent are lost in the noise. This runs
the same visits (bench/__main__.py's users, updates and buttons, through the same webhook, uvicorn,
PTB, core and SQLite, with the Bot API stand-in in this process) against a bot process run under
valgrind's callgrind, instrumentation switched on only for the counted visits, and prints the
instructions the bot process executed per update, for the visit bot and the bare echo bot::

    .venv/bin/python bench/callgrind_visits.py                    # both bots, 8 users at once, about 3 minutes
    .venv/bin/python bench/callgrind_visits.py --bot visit --users 1 --visits 6     # repeatable to 0.1 %
    .venv/bin/python bench/callgrind_visits.py --bot visit --users 1 --per-step     # each step of the visit
    .venv/bin/python bench/callgrind_visits.py --bot visit --profile /tmp/p         # cProfile, no valgrind

Run as a file, it measures the code on PYTHONPATH (bench's and bot's), so another checkout is measured
with ``cd /that/checkout && PYTHONPATH=$PWD python /this/bench/callgrind_visits.py``.

What runs besides the updates is counted too: the process's timers (uvicorn's tick; with ``--worker``
the scheduler and the outbox sender, which the bench's visit bot runs: 3.4 M instructions a second),
stretched 30-100 times by valgrind. They are counted alone for ``--idle`` seconds with no traffic, and
that rate times the phase's length is subtracted ("net"). With ``--users 1`` the count repeats to about
0.1 %; with the bench's 8 users at once it varies by 2-3 % from run to run (how many connections
PTB's HTTP pool ends up with, each polled on every request, depends on the interleaving).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Listener
from pathlib import Path

if __package__ in (None, ""):  # run as a file: bench and bot from PYTHONPATH or the working directory, not bench/
    sys.path[0] = os.getcwd()

from bench.__main__ import FIRST_USER_ID, echo_user, visit_user  # noqa: E402
from bench.harness import SECRET, Poster, http_client, standin  # noqa: E402
from bench.visits import VISIT, count_visits, prepare_database, sqlalchemy_url  # noqa: E402

BOOT = """
import sys, json
from multiprocessing.connection import Client
kind, options, address = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
conn = Client(address, authkey=b"callgrind-visits")
if options.get("profile"):  # --profile: cProfile (CPU time of the main thread) between SIGUSR1 and SIGUSR2
    import cProfile, signal, time
    profiler = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: (profiler.disable(), profiler.dump_stats(options["profile"])))
from bench.servers import serve
serve(kind, options, conn)
"""


class Callgrind:
    """A bot process (bench.servers.serve) under callgrind, instrumentation off until ``on``."""

    def __init__(self, kind: str, options: dict, folder: Path, *, valgrind: bool = True, profile: str | None = None,
                 worker: bool = False):
        import json

        self.kind = kind
        self.out = folder / f"callgrind.out.{kind}"
        self.log = folder / f"{kind}.log"
        self.profile = profile
        if profile:
            options = dict(options, profile=profile)
        listener = Listener(str(folder / f"{kind}.sock"), authkey=b"callgrind-visits")
        command = [sys.executable, "-c", BOOT, kind, json.dumps(options), listener.address]
        if valgrind:
            command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}",
                       *command]
        # The same hashes every run: dict and set layouts, hence instruction counts, repeat.
        env = dict(os.environ, PYTHONHASHSEED="0")
        if not worker:
            env["SCHEDULER_IN_RUN"] = "false"  # the visit bot's scheduler and outbox sender: timers only
        self.valgrind = valgrind
        self.process = subprocess.Popen(command, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        self.conn = listener.accept()
        listener.close()
        message = self.conn.recv() if self.conn.poll(600) else ("error", "did not start within 600 s")
        if message[0] != "ready":
            self.process.kill()
            raise RuntimeError(f"{kind} bot: {message[1]}\n{self.log.read_text()[-3000:]}")
        self.port = message[1]

    @property
    def webhook_url(self) -> str:
        from bench.servers import HOST, WEBHOOK_PATH

        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"

    def control(self, *args: str) -> None:
        if self.profile and args[0].startswith("--instr="):
            import signal

            self.process.send_signal(signal.SIGUSR1 if args[0] == "--instr=on" else signal.SIGUSR2)
        if self.valgrind:
            subprocess.run(["callgrind_control", *args, str(self.process.pid)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def count(self) -> int:
        """Dumps the counts so far and returns the instructions since the previous dump (zeroed then)."""
        if not self.valgrind:
            return 0
        before = set(self.out.parent.glob(self.out.name + ".*"))
        self.control("--dump")
        for _ in range(200):
            new = set(self.out.parent.glob(self.out.name + ".*")) - before
            if new:
                break
            time.sleep(0.05)
        (dump,) = new
        for _ in range(200):  # written once the dump command is done
            match = re.search(r"^totals:\s+(\d+)", dump.read_text(errors="replace"), re.M)
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        raise RuntimeError(f"no totals in {dump}")

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class CountingPoster(Poster):
    """Counts the bot's instructions after each update (``--per-step``; one user: one update at a time)."""

    def __init__(self, *args, bot: Callgrind, **kwargs):
        super().__init__(*args, **kwargs)
        self.bot = bot
        self.counts: list[tuple[int, float]] = []  # instructions, seconds since the previous count
        self.last = time.monotonic()

    async def post(self, update):
        elapsed = await super().post(update)
        count, now = self.bot.count(), time.monotonic()
        self.counts.append((count, now - self.last))
        self.last = now
        return elapsed


async def measure(bot: Callgrind, tg, users, updates: dict | None, visits: int, idle: float, per_step: bool = False):
    """Instructions of the bot process for the phase (visits, or a replay of ``updates`` to the echo
    bot) and for ``idle`` seconds after it; the updates each user sent; the counts per update."""
    async with http_client(len(users)) as client:
        poster = CountingPoster(client, bot.webhook_url, tg, bot=bot) if per_step else Poster(client, bot.webhook_url, tg)
        sent = {u.id: [] for u in users}
        bot.control("--instr=on")
        bot.count()  # zero
        poster.last = started = time.monotonic()
        if updates is None:
            await asyncio.gather(*[visit_user(tg, poster, u, sent[u.id], visits=visits) for u in users])
        else:
            await asyncio.gather(*[echo_user(tg, poster, u, updates[u.id]) for u in users])
        seconds = time.monotonic() - started
        busy = bot.count()
        await asyncio.sleep(idle)
        idle_count = bot.count()
        bot.control("--instr=off")
    if per_step:
        busy += sum(count for count, _ in poster.counts)
    return busy, seconds, idle_count, sent, getattr(poster, "counts", None)


async def run(args, folder: Path, url: str) -> list[str]:
    lines = []
    with standin() as tg:
        users = [tg.user(FIRST_USER_ID + n, first_name=f"干部{n + 1}") for n in range(args.users)]
        options = {"token": tg.token, "api_url": tg.url, "secret": SECRET, "database_url": url}
        bots = {kind: Callgrind(kind, options, folder, valgrind=not (args.no_valgrind or args.profile),
                                profile=args.profile and str(Path(args.profile).absolute()) + f".{kind}",
                                worker=args.worker)
                for kind in ("visit", "echo") if args.bot in (kind, "both")}
        try:
            if "visit" not in bots:  # the echo bot alone still echoes the visit bot's updates: made without one
                bots["visit"] = Callgrind("visit", options, folder, valgrind=False)
            async with http_client(len(users)) as client:
                for _ in range(args.warmup):
                    sent = {u.id: [] for u in users}
                    poster = Poster(client, bots["visit"].webhook_url, tg)
                    await asyncio.gather(*[visit_user(tg, poster, u, sent[u.id], visits=1) for u in users])
                    if "echo" in bots:
                        poster = Poster(client, bots["echo"].webhook_url, tg)
                        await asyncio.gather(*[echo_user(tg, poster, u, sent[u.id]) for u in users])
            n = args.users * args.visits * len(VISIT)
            tg.clear_calls()
            busy, seconds, idle, sent, counts = await measure(bots["visit"], tg, users, None, args.visits, args.idle,
                                                              args.per_step)
            results = {"visit": (busy, seconds, idle, counts)}
            if "echo" in bots:
                results["echo"] = await measure(bots["echo"], tg, users, sent, args.visits, args.idle, args.per_step)
            for kind, (busy, seconds, idle, *rest) in results.items():
                if kind == "visit" and args.bot == "echo":
                    continue
                net = busy - idle * seconds / args.idle if args.idle else busy
                counts = rest[-1]
                if counts:
                    rate = idle / args.idle if args.idle else 0.0
                    lines.append(f"{kind} bot, instructions per step (mean of {args.visits} visits, net of the idle rate):")
                    for i, step in enumerate(VISIT):
                        mine = [c - rate * t for c, t in counts[i::len(VISIT)]]
                        lines.append(f"  {step.name:<20}{sum(mine) / len(mine):>14,.0f}")
                lines.append(f"{kind:>5} bot: {n} updates in {seconds:.1f} s; instructions per update "
                             f"{busy / n:,.0f} gross, {net / n:,.0f} net of the idle rate "
                             f"({idle / args.idle:,.0f}/s over {args.idle:g} s)" if args.idle else
                             f"{kind:>5} bot: {n} updates in {seconds:.1f} s; instructions per update {busy / n:,.0f}")
        finally:
            for bot in bots.values():
                bot.stop()
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bot", choices=("visit", "echo", "both"), default="both")
    p.add_argument("--users", type=int, default=8, help="users at once, as in the bench (default 8)")
    p.add_argument("--visits", type=int, default=2, help="counted visits per user (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="visits per user before counting (default 1)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of no traffic counted after each phase "
                                                            "(default 10; 0: no correction)")
    p.add_argument("--out", help="keep the callgrind files (and the bots' logs) in this folder")
    p.add_argument("--worker", action="store_true", help="keep the visit bot's scheduler and outbox sender running "
                                                         "(the bench's; their timers are subtracted with the idle rate)")
    p.add_argument("--per-step", action="store_true", help="instructions of each step of the visit (needs --users 1)")
    p.add_argument("--profile", metavar="FILE", help="no callgrind: cProfile the counted phase of each bot "
                                                     "(main thread, CPU time) into FILE.visit and FILE.echo")
    p.add_argument("--no-valgrind", action="store_true", help="no callgrind (checks the driver quickly)")
    p.add_argument("--db", help="an empty PostgreSQL database (postgresql://…; its tables are dropped first) "
                                "instead of a fresh SQLite file; DATABASE_ASYNC_EVENTS from the environment")
    args = p.parse_args(argv)
    if args.per_step and args.users != 1:
        p.error("--per-step needs --users 1")
    if shutil.which("valgrind") is None and not args.no_valgrind:
        raise SystemExit("callgrind_visits: valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="zuofeng-cg-") as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        url = sqlalchemy_url(args.db) if args.db else f"sqlite:///{Path(tmp) / 'bench.db'}"
        user_ids = [FIRST_USER_ID + n for n in range(args.users)]
        prepare_database(url, user_ids=user_ids, households=args.warmup + args.visits + 2, reset=bool(args.db))
        lines = asyncio.run(run(args, folder, url))
        found, expected = count_visits(url), args.users * (args.warmup + args.visits)
    print(f"callgrind_visits: {args.users} users x {args.visits} visits x {len(VISIT)} updates "
          f"(+{args.warmup} warm-up visits); code from {os.path.dirname(sys.modules['bench'].__file__)}")
    for line in lines:
        print(line)
    if found != expected:
        print(f"!!! {found} visits saved, {expected} expected")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
