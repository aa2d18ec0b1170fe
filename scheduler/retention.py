"""Retention (PIPL: keep personal information no longer than needed): the worker erases a rater's phone
and comment from a rating ``RATING_CONTACT_RETENTION_DAYS`` after its follow-up closed (the item was
closed or answered, 已办结 / 已回访), and a citizen's phone from a closed /report item after the same
time. The rating's level and reasons stay, so every statistic is unchanged; the ledger item keeps its
text without the comment. Runs with the nightly prune; the counts go to the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, select

from bot.config import Settings
from storage.models import CallbackTask, Problem, ProblemSource, ProblemStatus, Rating

CLOSED = (ProblemStatus.CLOSED, ProblemStatus.ANSWERED, ProblemStatus.SOLVED_ON_SPOT)


@dataclass
class Erased:
    ratings: int = 0  # ratings whose phone and/or comment were erased
    reports: int = 0  # /report items whose citizen's phone was erased

    @property
    def total(self) -> int:
        return self.ratings + self.reports


def _closed_before(cutoff: datetime):
    """The item's follow-up closed (its last of closed_at / answered_at) before ``cutoff``."""
    closed = func.coalesce(Problem.answered_at, Problem.closed_at, Problem.updated_at)
    return Problem.status.in_(CLOSED), closed < cutoff


def erase_contacts(session: Session, settings: Settings, now: datetime) -> Erased:
    """Erases what has been kept long enough; returns how many records were touched."""
    cutoff = now - timedelta(days=settings.rating_contact_retention_days)
    erased = Erased()
    rows = session.exec(select(Rating, Problem).join(Problem, Problem.id == Rating.problem_id)
                        .where(*_closed_before(cutoff), or_(Rating.phone.is_not(None), Rating.comment.is_not(None)))
                        ).all()
    for rating, problem in rows:
        if rating.comment:
            problem.content = problem.content.replace("；" + rating.comment, "").replace(rating.comment, "")
        problem.raiser_phone = None
        rating.phone = rating.comment = None
        session.add_all([rating, problem])
        task = session.exec(select(CallbackTask).where(CallbackTask.rating_id == rating.id)).first()
        if task is not None:
            task.phone = ""
            session.add(task)
        erased.ratings += 1
    reports = session.exec(select(Problem).where(Problem.source == ProblemSource.COMPLAINT,
                                                 Problem.raiser_phone.is_not(None), *_closed_before(cutoff))).all()
    for problem in reports:
        problem.raiser_phone = None
        session.add(problem)
        erased.reports += 1
    session.flush()
    return erased
