"""The process's Prometheus metrics (``prometheus-client``), served at ``/metrics``.

Per process: each web process answers ``/metrics`` with its own counters, and ``python -m bot
worker`` serves its own on ``METRICS_PORT`` when set; Prometheus scrapes each process and sums
(``sum by (channel) (rate(zf_updates_total[5m]))``). The outbox gauges are read from the database
at scrape time, so every process reports the same depth. (prometheus-client's multiprocess mode
would merge ``serve --workers N`` children into one answer, but needs a shared folder and loses
gauges of dead processes; per process is simpler and what uvicorn's separate processes give.)

Metrics, all prefixed ``zf_``:

- ``updates_total{channel,outcome}`` and ``update_seconds{channel}``: updates handled, and how
  long each took (``observe_event``);
- ``sends_total{channel,result}``: outbox sends by result (sent, retry, rate_limited = 429, wait,
  unreachable, failed) (``observe_send``);
- ``outbox_depth`` and ``outbox_oldest_seconds``: pending rows, and the age of the oldest due one;
- ``job_runs_total{job,outcome}`` and ``job_seconds{job}``: scheduled jobs (``observe_job``);
- ``channel_state{channel}``: 2 ok, 1 degraded, 0 down (``set_channel_state``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATE_VALUES = {"ok": 2, "degraded": 1, "down": 0}

UPDATES = Counter("zf_updates", "Updates handled, by channel and outcome", ["channel", "outcome"])
UPDATE_SECONDS = Histogram("zf_update_seconds", "Time to handle one update (the core's step and the answer)",
                           ["channel"], buckets=STEP_BUCKETS)
SENDS = Counter("zf_sends", "Outbox sends, by channel and result (rate_limited: the platform answered 429)",
                ["channel", "result"])
OUTBOX_DEPTH = Gauge("zf_outbox_depth", "Outbox rows waiting to be sent")
OUTBOX_OLDEST = Gauge("zf_outbox_oldest_seconds", "Age of the oldest outbox row that is due and not sent")
JOB_RUNS = Counter("zf_job_runs", "Scheduled job runs, by job and outcome", ["job", "outcome"])
JOB_SECONDS = Histogram("zf_job_seconds", "Duration of scheduled job runs", ["job"],
                        buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
CHANNEL_STATE = Gauge("zf_channel_state", "Channel state: 2 ok, 1 degraded, 0 down", ["channel"])


_EVENT_SERIES: dict[tuple[str, str], tuple] = {}  # (channel, outcome) -> its counter and histogram


def observe_event(channel: str, outcome: str, seconds: float) -> None:
    """Counts one update a channel handled (outcome: ok, error, duplicate...) and its duration. The
    labelled series are looked up once (``labels`` checks and locks: half of this, every update)."""
    series = _EVENT_SERIES.get((channel, outcome))
    if series is None:
        series = _EVENT_SERIES[(channel, outcome)] = (UPDATES.labels(channel, outcome), UPDATE_SECONDS.labels(channel))
    series[0].inc()
    series[1].observe(seconds)


def observe_send(channel: str, status: str, error: str = "") -> None:
    """Counts one outbox delivery result; a 429 is counted as ``rate_limited``."""
    result = "rate_limited" if status == "retry" and error.startswith("429") else status
    SENDS.labels(channel, result).inc()


def observe_job(job: str, outcome: str, seconds: float) -> None:
    JOB_RUNS.labels(job, outcome).inc()
    JOB_SECONDS.labels(job).observe(seconds)


def set_channel_state(channel: str, state: str) -> None:
    CHANNEL_STATE.labels(channel).set(STATE_VALUES[state])


def read_outbox(db, now: datetime | None = None) -> None:
    """Sets the outbox gauges from the database (called at scrape time, in a thread)."""
    from sqlalchemy import func
    from sqlmodel import select

    from storage.db import session_scope
    from storage.models import OutboxMessage, OutboxState

    now = now or datetime.now(timezone.utc)
    with session_scope(db) as session:
        depth, oldest = session.exec(
            select(func.count(), func.min(OutboxMessage.next_attempt_at))
            .where(OutboxMessage.state == OutboxState.PENDING)).one()
        due_oldest = session.exec(
            select(func.min(OutboxMessage.created_at))
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= now)).one()
    OUTBOX_DEPTH.set(depth or 0)
    if due_oldest is not None and due_oldest.tzinfo is None:
        due_oldest = due_oldest.replace(tzinfo=timezone.utc)
    OUTBOX_OLDEST.set(max(0.0, (now - due_oldest).total_seconds()) if due_oldest is not None else 0.0)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
