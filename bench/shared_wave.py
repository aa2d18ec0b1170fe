"""A wave of reminders sent by several worker processes sharing one limiter: ``python -m bench.shared_wave``.

What it measures: N reminders (default 600, one per chat) sent by 1 and then by 2 ``python -m bot
worker`` processes on one database, their Telegram limits shared through PostgreSQL (``--db
postgresql://…``) or Redis (``--redis redis://…``), against the Bot API stand-in enforcing 30
messages/s overall and 1/s per chat (in a child process, as bench.reminder_wave runs it).

Bulk sends use 27 of the 30 places a second (``scheduler.budget.REPLY_RESERVE`` keeps 3 for direct
replies), so the minimum for a wave alone is N / 27 s; the ratio is printed against N / 30 s.

Printed per run: completion time (from the wave's write to the last ``sent_at``), the physical
minimum N / 30 s and the ratio to it, 429 answers, the most sends the stand-in accepted in any
1 s window, and chats that got a message more than once. The floor is the one-worker run of the
same invocation: two workers must not be slower than it, and neither may see a 429. Exit 1
otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.reminder_wave import GLOBAL_RATE, StandinProcess

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


def clear(engine) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        for table in ("outbox_attachment", "outbox", "rate_hit", "rate_budget"):
            conn.execute(text(f"DELETE FROM {table}"))


def run_wave(url: str, redis_url: str | None, recipients: int, workers: int, folder: Path) -> dict:
    from sqlalchemy import func, select

    from bot.config import Settings
    from scheduler.outbox import enqueue
    from storage.db import make_engine, session_scope, upgrade
    from storage.models import OutboxMessage, OutboxState

    engine = make_engine(Settings(database_url=url).sqlalchemy_url)
    upgrade(engine)
    clear(engine)
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    settings = Settings(database_url=url, quiet_hours_start="00:00", quiet_hours_end="00:00")
    with StandinProcess() as standin:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WECHAT_", "REDIS_"))}
        env.update({"DATABASE_URL": url, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": standin.url,
                    "LOAD_EXAMPLE_ROSTER": "false", "QUIET_HOURS_START": "00:00", "QUIET_HOURS_END": "00:00",
                    "DIGEST_DAILY_TIME": "", "DIGEST_WEEKLY_DAY": "", "OUTBOX_BATCH": "20",
                    "PYTHONPATH": str(ROOT), **({"REDIS_URL": redis_url} if redis_url else {})})
        logs = [folder / f"w{workers}-{i}.log" for i in range(workers)]
        processes = []
        for log_path in logs:
            with open(log_path, "w") as log_file:
                processes.append(subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=folder, env=env,
                                                  stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file))
        try:
            deadline = time.monotonic() + 60
            while not all("worker 已启动" in p.read_text() for p in logs):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not start: " + " | ".join(p.read_text()[-300:] for p in logs))
                time.sleep(0.1)
            started = datetime.now(timezone.utc)
            with session_scope(engine) as session:
                for n in range(recipients):
                    enqueue(session, key=f"wave-{n}", kind="reminder", channel="telegram", recipient=str(800_000_000 + n),
                            body=f"⏰ 附件1、2 将于 12月10日 截止（提醒 {n}）", now=started, settings=settings)
            limit = time.monotonic() + recipients / GLOBAL_RATE * 3 + 60
            while True:
                with session_scope(engine) as session:
                    waiting = session.exec(select(func.count()).select_from(OutboxMessage)
                                           .where(OutboxMessage.state == OutboxState.PENDING)).one()[0]
                if not waiting or time.monotonic() > limit:
                    break
                time.sleep(0.25)
            wave = OutboxMessage.idempotency_key.like("wave-%")  # the workers' own jobs may queue a few more
            with session_scope(engine) as session:
                last = session.exec(select(func.max(OutboxMessage.sent_at)).where(wave)).one()[0]
                sent = session.exec(select(func.count()).select_from(OutboxMessage)
                                    .where(OutboxMessage.state == OutboxState.SENT, wave)).one()[0]
        finally:
            for process in processes:
                process.terminate()  # our own children, by their handles
            for process in processes:
                process.wait(15)
        seen = standin.stats()
    engine.dispose()
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    seconds = (last - started).total_seconds() if last else float("inf")
    return {"workers": workers, "seconds": seconds, "sent": sent, "minimum": recipients / GLOBAL_RATE,
            "too_many": seen["too_many_requests"], "max_per_second": seen["max_per_second"],
            "repeated_chats": seen["chats_more_than_once"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shared_wave", description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, help="postgresql://… (its tables outbox, rate_hit, rate_budget are emptied)")
    p.add_argument("--redis", help="share the limits through this Redis (its db is flushed) instead of the database")
    p.add_argument("--recipients", type=int, default=600)
    args = p.parse_args(argv)
    if not args.db.startswith("postgres"):
        p.error("--db must be PostgreSQL: several processes on SQLite are not supported")
    print(f"shared wave: {args.recipients} reminders, limits shared through {'Redis' if args.redis else 'PostgreSQL'}")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in (1, 2):
            run = run_wave(args.db, args.redis, args.recipients, workers, Path(folder))
            runs.append(run)
            print(f"  {workers} worker(s): {run['seconds']:6.2f} s for {run['sent']} sent "
                  f"(minimum {run['minimum']:.2f} s, x{run['seconds'] / run['minimum']:.3f}); "
                  f"429s {run['too_many']}; most in 1 s {run['max_per_second']}; "
                  f"chats with repeats {run['repeated_chats']}")
    floor = runs[0]["seconds"]
    two = runs[1]["seconds"]
    print(f"  floor (1 worker, same run) {floor:.2f} s; 2 workers / floor = {two / floor:.3f}")
    ok = all(r["too_many"] == 0 and r["repeated_chats"] == 0 and r["sent"] == args.recipients for r in runs)
    ok = ok and two <= floor * 1.10
    print("  verdict:", "ok" if ok else "FAILED (429s, repeats, losses, or two workers slower than one)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
