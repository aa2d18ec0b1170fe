"""``python -m bench``: complete visits through the whole webhook path, and a bare echo bot.

Order of a run:
  1. a fresh database (a temporary SQLite file unless --db), migrated, with the roster and
     every simulated user bound to a cadre;
  2. both bots started, each in its own process, on the same stand-in;
  3. warm-up, untimed: every user walks --warmup visits with the visit bot, then replays the
     very same updates (fresh update and callback ids) to the echo bot;
  4. --visits rounds, timed: every user walks one visit with the visit bot, all users at once,
     then the echo bot gets the round's updates the same way (same users, same order, same
     concurrency). Alternating round by round keeps the comparison fair on a shared machine:
     whatever else runs there slows both bots alike;
  5. steady load, timed: --paced-users cadres (others than above) walk visits for --paced-seconds,
     each pausing between two updates for a random think time (exponential, mean chosen so
     that together they send --rate updates/s), first to the visit bot, then, with the same
     pauses, the same updates to the echo bot. This is the latency a user sees at a given load;
     step 4 is the most either bot can do, where every update queues behind the others;
  6. the figures, the ratio and the verdicts against the targets; the Visit rows are counted.

The throughput target (visit/echo >= 0.5) is judged at saturation (step 4) and the p99 target
(<= 50 ms) at the steady load (step 5). At saturation the p99 is printed too: there it is the
queue's length, not the bot's speed; 8 users back to back give even the echo bot a p99 above 50 ms.

Exit code 0 whatever the figures; 1 if the visits did not all land; 2 if --time-limit ran out;
a crash is a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (SECRET, BotProcess, OtherLoad, Phase, Poster, PySpy, Sample, http_client, percentile,
                           run_phase, standin)
from bench.visits import FIRST_BUTTON, VISIT, Step, count_visits, prepare_database, sqlalchemy_url
from bot import texts

TARGET_RATIO = 0.5
TARGET_RATIO_POSTGRES = 0.6  # issue 15: the production store as fast as the embedded one
TARGET_P99_MS = 50.0
FIRST_USER_ID = 910_001
FIRST_PACED_USER_ID = 920_001
SAVED = texts.VISIT_SAVED.split("{", 1)[0]  # what the reply to a confirmed visit begins with


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=8, help="concurrent simulated cadres (default 8)")
    p.add_argument("--visits", type=int, default=5, help="timed complete visits per user (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed visits per user first (default 1)")
    p.add_argument("--db", help="database URL (default: a fresh SQLite file in a temporary folder); "
                                "a postgresql:// database must be empty, or give --reset-db")
    p.add_argument("--reset-db", action="store_true", help="drop every table of --db first")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 users, 1 timed visit each")
    p.add_argument("--py-spy", metavar="FILE", help="record the visit bot process with py-spy during its timed "
                                                     "rounds (collapsed stacks, GIL holder only)")
    p.add_argument("--rate", type=float, default=40.0,
                   help="updates/s of the steady-load phase, all its users together (default 40)")
    p.add_argument("--paced-users", type=int, default=32, help="cadres of the steady-load phase (default 32)")
    p.add_argument("--paced-seconds", type=float, default=25.0,
                   help="length of the steady-load phase, per bot (default 25; 0 skips it)")
    p.add_argument("--processes", type=int, default=1,
                   help="processes of each bot on one port (default 1; more than 1 needs --db postgresql://…)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the think times (default 1)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds before the run gives up (default 300)")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.visits, args.warmup, args.paced_users, args.paced_seconds = 4, 1, 1, 8, 5.0
    if args.users < 1 or args.visits < 1 or args.warmup < 0:
        p.error("--users and --visits must be at least 1, --warmup at least 0")
    if args.processes < 1 or (args.processes > 1 and not (args.db or "").startswith("postgres")):
        p.error("--processes must be at least 1, and more than 1 needs --db postgresql://… (SQLite: one process)")
    if args.paced_seconds < 0 or args.paced_users < 1 or args.rate <= 0:
        p.error("--paced-seconds must be at least 0, --paced-users at least 1, --rate above 0")
    return args


# --------------------------------------------------------------------------- one user, either bot


def _find(rows: list[list[tuple[str, str]]], label: Any) -> str:
    """The callback data of the button labelled ``label`` (exactly, else containing it)."""
    flat = [button for row in rows for button in row]
    if label is FIRST_BUTTON:
        return flat[0][1]
    for wanted in (lambda text: text == label, lambda text: label in text):
        for text, data in flat:
            if wanted(text):
                return data
    raise LookupError(f"no button {label!r} among {[text for text, _ in flat]}")


def _build(tg, user, step: Step) -> dict:
    """The update for one step, made by the stand-in's own builders (not delivered)."""
    if step.kind == "command":
        return dict(user.command(step.value, deliver=False))
    if step.kind == "text":
        return dict(user.text(step.value, deliver=False))
    message_id, rows = tg.keyboards[user.id]  # the newest inline keyboard the bot sent this chat
    update = dict(user.press(_find(rows, step.value), message_id, deliver=False))
    tg.expect(update)
    return update


async def visit_user(tg, poster: Poster, user, sent: list, *, visits: int | None = None, until: float = 0.0,
                     think: list[float] = ()) -> list[Sample]:
    """Walks ``visits`` whole visits, or visits until ``until`` (time.monotonic; the visit under way
    then is finished, so every visit begun is saved), checking each step was answered and pausing
    ``think[i]`` s before the i-th update; appends its updates to ``sent``."""
    samples, i, walked = [], 0, 0
    while walked < visits if visits is not None else time.monotonic() < until:
        for step in VISIT:
            if think:
                await asyncio.sleep(think[i % len(think)])
            i += 1
            replies_before = tg.sends[user.id]
            update = _build(tg, user, step)
            sent.append((step, update))
            at = time.monotonic()
            samples.append(Sample(user.id, step.kind, step.name, await poster.post(update), at))
            if tg.sends[user.id] == replies_before:
                raise RuntimeError(f"user {user.id}: no reply to {step.name} ({tg.last_text.get(user.id)!r})")
        # The confirmation's answer ends the last message, be it new or the pressed one grown by it.
        if SAVED not in tg.last_text[user.id].rsplit("\n➤ ", 1)[-1]:
            raise RuntimeError(f"user {user.id}: the visit was not saved: {tg.last_text[user.id]!r}")
        walked += 1
    return samples


async def echo_user(tg, poster: Poster, user, updates: list, think: list[float] = ()) -> list[Sample]:
    """Replays a user's updates to the echo bot, after the same pauses as ``visit_user`` made,
    checking each was echoed (and each press answered)."""
    samples = []
    for i, (step, recorded) in enumerate(updates):
        if think:
            await asyncio.sleep(think[i % len(think)])
        update = tg.restamp(recorded)
        tg.expect(update)
        replies_before = tg.sends[user.id]
        at = time.monotonic()
        samples.append(Sample(user.id, step.kind, step.name, await poster.post(update), at))
        query = update.get("callback_query")
        if tg.sends[user.id] == replies_before or (query and query["id"] not in tg.callback_answers):
            raise RuntimeError(f"user {user.id}: the echo bot did not answer {step.name}")
    return samples


async def drive_paced(tg, visit_bot: BotProcess, echo_bot: BotProcess, users, args, deadline: float):
    """Step 5 of the module's docstring: both bots at the same steady load."""
    rng = random.Random(args.seed)
    mean = len(users) / args.rate  # each user's mean pause, so that all together send --rate/s
    think = {u.id: [rng.expovariate(1 / mean) for _ in range(1000)] for u in users}
    async with http_client(len(users)) as visit_client, http_client(len(users)) as echo_client:
        to_visit = Poster(visit_client, visit_bot.webhook_url, tg)
        to_echo = Poster(echo_client, echo_bot.webhook_url, tg)
        tg.clear_calls()
        sent = {u.id: [] for u in users}
        start = time.monotonic()
        until = start + args.paced_seconds
        visit = await run_phase([visit_user(tg, to_visit, u, sent[u.id], until=until, think=think[u.id]) for u in users],
                                deadline, visit_bot.pids)
        walked = len(visit.samples) // len(VISIT)
        visit = _window(visit, start, args.paced_seconds)
        tg.clear_calls()
        start = time.monotonic()
        echo = await run_phase([echo_user(tg, to_echo, u, sent[u.id], think[u.id]) for u in users],
                               deadline, echo_bot.pids)
        echo = _window(echo, start, args.paced_seconds)
    return visit, echo, walked


def _window(phase: Phase, start: float, seconds: float) -> Phase:
    """The updates sent in the first ``seconds``: after that the users only finish the visit under
    way, fewer and fewer of them, a lighter load than the one asked for."""
    return Phase(samples=[s for s in phase.samples if s.at < start + seconds], seconds=seconds,
                 bot_cpu=None, driver_cpu=phase.driver_cpu)


async def drive(tg, visit_bot: BotProcess, echo_bot: BotProcess, users, args, deadline: float):
    visit, echo = Phase(), Phase()
    async with http_client(len(users)) as visit_client, http_client(len(users)) as echo_client:
        to_visit = Poster(visit_client, visit_bot.webhook_url, tg)
        to_echo = Poster(echo_client, echo_bot.webhook_url, tg)
        if args.warmup:
            sent = {u.id: [] for u in users}
            await run_phase([visit_user(tg, to_visit, u, sent[u.id], visits=args.warmup) for u in users], deadline)
            await run_phase([echo_user(tg, to_echo, u, sent[u.id]) for u in users], deadline)
        # py-spy keeps only samples holding the GIL, so the visit bot idling through the echo rounds adds none.
        with PySpy(visit_bot.pid, args.py_spy) if args.py_spy else contextlib.nullcontext(), \
                OtherLoad(visit_bot.pids, echo_bot.pids) as others:
            for _ in range(args.visits):
                tg.clear_calls()  # the stand-in's call log is not used; keep it from growing
                sent = {u.id: [] for u in users}
                visit.add(await run_phase([visit_user(tg, to_visit, u, sent[u.id], visits=1) for u in users], deadline,
                                          visit_bot.pids))
                echo.add(await run_phase([echo_user(tg, to_echo, u, sent[u.id]) for u in users], deadline,
                                         echo_bot.pids))
    return visit, echo, others.share


# --------------------------------------------------------------------------- report


def _row(label: str, samples: list[Sample], seconds: float | None = None) -> str:
    ms = [s.ms for s in samples]
    rate = f"{len(samples) / seconds:9.1f}" if seconds else " " * 9
    return (f"  {label:<22}{len(samples):>8}{rate}{percentile(ms, 50):>9.1f}{percentile(ms, 99):>9.1f}"
            f"{max(ms):>9.1f}")


def _cpu_ms(cpu: float | None, n: int) -> str:
    return f"{cpu * 1000 / n:10.2f}" if cpu is not None else "         ?"


def report(args, db_kind: str, visit: Phase, echo: Phase, others: float | None,
           visits_found: int, visits_expected: int, paced: tuple[Phase, Phase] | None = None) -> int:
    print()
    print(f"bench: {args.users} users x {args.visits} timed visits (+{args.warmup} warm-up) x {len(VISIT)} updates"
          f" per visit; {os.cpu_count()} cores; database: {db_kind}"
          + (f"; {args.processes} processes per bot" if args.processes > 1 else ""))
    if others is not None:
        print(f"  other processes took {others:.0%} of the machine's CPU during the timed rounds"
              + ("  -- noisy: the figures vary; the CPU-time ratio below varies less" if others > 0.1 else ""))
    print(f"  {'':<22}{'updates':>8}{'upd/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, phase in (("visit bot (full path)", visit), ("echo bot (bare PTB)", echo)):
        print(name)
        print(_row("all", phase.samples, phase.seconds))
        for kind in ("command", "press", "text"):
            print(_row(kind, [s for s in phase.samples if s.kind == kind]))
    print("visit bot per step")
    for step in VISIT:
        print(_row(step.name, [s for s in visit.samples if s.step == step.name]))
    print("CPU per timed update (ms)     bot process  driver process (stand-in + load driver)")
    for name, phase in (("visit bot", visit), ("echo bot", echo)):
        n = len(phase.samples)
        print(f"  {name:<28}{_cpu_ms(phase.bot_cpu, n)}  {_cpu_ms(phase.driver_cpu, n)}")

    if paced is not None:
        paced_visit, paced_echo = paced
        print(f"steady load: {args.paced_users} users, {args.rate:g} updates/s asked together (random pauses), "
              f"the first {args.paced_seconds:g} s of each bot's run (then the visits under way are finished)")
        print(f"  {'':<22}{'updates':>8}{'upd/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for name, phase in (("visit bot", paced_visit), ("echo bot", paced_echo)):
            print(_row(name, phase.samples, phase.seconds))

    ratio = visit.throughput / echo.throughput
    saturated_p99 = percentile([s.ms for s in visit.samples], 99)
    p99 = percentile([s.ms for s in paced[0].samples], 99) if paced is not None else None
    print()
    target = TARGET_RATIO_POSTGRES if db_kind.startswith("postgres") else TARGET_RATIO
    print(f"throughput ratio visit/echo: {ratio:.2f}  (target >= {target})  {'PASS' if ratio >= target else 'FAIL'}")
    if visit.bot_cpu and echo.bot_cpu:
        # Both bot processes are CPU-bound (one GIL each), so this is the ratio a quiet machine gives.
        cpu_ratio = (echo.bot_cpu / len(echo.samples)) / (visit.bot_cpu / len(visit.samples))
        print(f"  the same from the bots' CPU time per update: {cpu_ratio:.2f}")
    if p99 is not None:
        print(f"visit bot p99 at the steady load of {args.rate:g} updates/s: {p99:.1f} ms  "
              f"(target <= {TARGET_P99_MS:.0f} ms)  {'PASS' if p99 <= TARGET_P99_MS else 'FAIL'}")
    print(f"  (at saturation, {args.users} users back to back: visit bot p99 {saturated_p99:.1f} ms, echo bot "
          f"{percentile([s.ms for s in echo.samples], 99):.1f} ms)")
    ok = visits_found == visits_expected
    print(f"Visit rows in the database: {visits_found} (expected {visits_expected}: every visit walked, "
          f"saturated and steady)  {'OK' if ok else 'MISMATCH'}")
    if not ok:
        print("!!! THE VISITS DID NOT ALL LAND: the figures above do not measure complete visits !!!")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.time_limit
    with tempfile.TemporaryDirectory(prefix="zuofeng-bench-") as folder:
        url = sqlalchemy_url(args.db) if args.db else f"sqlite:///{Path(folder) / 'bench.db'}"
        db_kind = url.split(":", 1)[0].split("+", 1)[0] + ("" if args.db else " (fresh temporary file)")
        user_ids = [FIRST_USER_ID + n for n in range(args.users)]
        paced_ids = [FIRST_PACED_USER_ID + n for n in range(args.paced_users)] if args.paced_seconds else []
        # Enough households that no visit goes to one already visited: a paced user walks about
        # rate x seconds / users updates, a visit being len(VISIT) of them.
        paced_visits = math.ceil(args.rate * args.paced_seconds / args.paced_users / len(VISIT)) * 2 + 2
        print(f"bench: preparing the database ({db_kind})…", flush=True)
        prepare_database(url, user_ids=user_ids + paced_ids,
                         households=max(5, args.visits + args.warmup, paced_visits), reset=args.reset_db)

        with standin() as tg:
            users = [tg.user(uid, first_name=f"干部{n}") for n, uid in enumerate(user_ids, 1)]
            paced_users = [tg.user(uid, first_name=f"干部P{n}") for n, uid in enumerate(paced_ids, 1)]
            options = {"token": tg.token, "api_url": tg.url, "secret": SECRET, "database_url": url}
            print("bench: starting both bots; warm-up, then timed rounds visit bot / echo bot…", flush=True)
            with BotProcess("visit", options, processes=args.processes) as visit_bot, \
                    BotProcess("echo", options, processes=args.processes) as echo_bot:
                try:
                    visit, echo, others = asyncio.run(drive(tg, visit_bot, echo_bot, users, args, deadline))
                    paced = None
                    if paced_users:
                        print("bench: steady load, visit bot then echo bot…", flush=True)
                        paced = asyncio.run(drive_paced(tg, visit_bot, echo_bot, paced_users, args, deadline))
                except TimeoutError:
                    print(f"bench: gave up after --time-limit {args.time_limit:.0f} s", file=sys.stderr)
                    return 2
        visits_found = count_visits(url)

    paced_visits_walked = paced[2] if paced else 0
    return report(args, db_kind, visit, echo, others, visits_found,
                  args.users * (args.visits + args.warmup) + paced_visits_walked, paced[:2] if paced else None)


if __name__ == "__main__":
    sys.exit(main())
