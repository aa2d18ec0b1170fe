"""The worker role: APScheduler runs the jobs, the outbox sender delivers what they write.

``python -m bot run`` runs this inside the web server's event loop (unless SCHEDULER_IN_RUN is
false); ``python -m bot worker`` runs it alone. Every job has a stable id, the deployment's time
zone, a misfire grace of hours and coalescing; jobs also run once at start, to catch up on points
passed while the service was down. Duplicate runs are harmless (see scheduler.jobs).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine as DbEngine

from bot.config import Settings
from bot.core import ledger
from scheduler import jobs, retention
from scheduler.sender import OutboxSender, Transport
from storage.db import session_scope, utcnow

log = logging.getLogger(__name__)


def _run_job(name: str, db: DbEngine, settings: Settings, clock: Callable[[], datetime]) -> None:
    """Runs one job, counted in the metrics (bot.metrics: zf_job_runs_total, zf_job_seconds)."""
    import time

    from bot import metrics

    started = time.perf_counter()
    job = name.removesuffix("-at-start")
    try:
        _run_job_body(name, db, settings, clock)
    except Exception:
        metrics.observe_job(job, "error", time.perf_counter() - started)
        raise
    metrics.observe_job(job, "ok", time.perf_counter() - started)


def _run_job_body(name: str, db: DbEngine, settings: Settings, clock: Callable[[], datetime]) -> None:
    if name.startswith("digest"):  # computed without the write lock (see run_digests)
        written = jobs.run_digests(db, settings, clock(), chart=jobs.digest_chart)
        if written:
            log.info("%s: %d messages queued", name, written)
        return
    with session_scope(db) as session:
        now = clock()
        if name == "deadline-reminders":
            written = jobs.remind_deadlines(session, settings, now) + jobs.remind_callbacks(session, settings, now)
        elif name == "ledger":
            written = ledger.ledger_tick(session, settings, now)
        elif name == "prune":
            removed = jobs.prune(session, settings, now)
            if removed:
                log.info("prune: %d old rows removed", removed)
            erased = retention.erase_contacts(session, settings, now)
            log.info("retention: contacts erased from %d ratings and %d reports (kept %d days after the follow-up)",
                     erased.ratings, erased.reports, settings.rating_contact_retention_days)
            return
    if written:
        log.info("%s: %d messages queued", name, written)


def build_scheduler(db: DbEngine, settings: Settings, clock: Callable[[], datetime] | None = None) -> AsyncIOScheduler:
    """The scheduler with its jobs, not started."""
    clock = clock or utcnow
    tz = settings.tz
    scheduler = AsyncIOScheduler(timezone=tz)
    options = {"coalesce": True, "max_instances": 1, "misfire_grace_time": settings.misfire_grace_hours * 3600,
               "replace_existing": True}
    reminder = settings.reminder_time
    triggers = {"deadline-reminders": CronTrigger(hour=reminder.hour, minute=reminder.minute, timezone=tz),
                # AB handover, due-tomorrow reminders and overdue escalation of ledger items, hourly.
                "ledger": CronTrigger(minute=5, timezone=tz),
                "prune": CronTrigger(hour=3, minute=30, timezone=tz)}
    if settings.digest_daily_time is not None:
        daily = settings.digest_daily_time
        triggers["digest-daily"] = CronTrigger(hour=daily.hour, minute=daily.minute, timezone=tz)
    if settings.digest_weekly_day is not None:
        weekly = settings.digest_weekly_time
        triggers["digest-weekly"] = CronTrigger(day_of_week=settings.digest_weekly_day, hour=weekly.hour,
                                                minute=weekly.minute, timezone=tz)
    started = datetime.now(tz)
    for job_id, trigger in triggers.items():
        scheduler.add_job(_run_job, trigger, args=[job_id, db, settings, clock], id=job_id, name=job_id, **options)
        # A catch-up run at start; the job itself decides whether a point was missed.
        scheduler.add_job(_run_job, "date", run_date=started, args=[job_id, db, settings, clock],
                          id=f"{job_id}-at-start", name=f"{job_id}-at-start", **options)
    return scheduler


class Worker:
    """The scheduler plus one outbox sender, started and stopped together on a running loop."""

    def __init__(self, db: DbEngine, settings: Settings, transports: dict[str, Transport],
                 clock: Callable[[], datetime] | None = None):
        self.scheduler = build_scheduler(db, settings, clock)
        kwargs = {"clock": clock} if clock else {}
        self.sender = OutboxSender(db, settings, transports, **kwargs)
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.scheduler.start()
        self._task = asyncio.get_running_loop().create_task(self.sender.run(self._stop))
        log.info("worker started: jobs %s", ", ".join(j.id for j in self.scheduler.get_jobs()))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.scheduler.shutdown(wait=False)
