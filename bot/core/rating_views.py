"""What supervisors see of the citizens' ratings: counts per level, satisfaction rate, the 差评 list,
and the call-back tasks.

Statistics cover the current half-year and leave out ratings flagged as misuse (a burst from one
address), saying how many were left out. Phone numbers show masked (138****1234) everywhere here
except in the call-back list, whose whole point is the number to call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from bot import texts
from bot.core import appeals
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.evaluation import BAD_LEVELS, LEVELS
from bot.core.periods import half_label
from bot.core.phones import mask
from bot.core.scope import overseen_problems, shows_rater, subjects_of, unit_scope
from storage import audit
from storage.models import Cadre, CallbackStatus, CallbackTask, Problem, Rating, Role, ServiceWindow, Unit

BAD_LIST_LIMIT = 10


@dataclass
class LevelCounts:
    """Ratings per level (5 非常满意 … 1 非常不满意) of one cadre, window or unit, misuse left out."""

    by_level: Counter = field(default_factory=Counter)
    misuse: int = 0
    voided: int = 0  # voided on appeal (申诉复核): out of every statistic

    @property
    def total(self) -> int:
        return sum(self.by_level.values())

    @property
    def bad(self) -> int:
        return sum(self.by_level[level] for level in BAD_LEVELS)

    @property
    def satisfaction(self) -> float | None:
        """满意率: the share of 非常满意, 满意 and 基本满意 among all counted ratings."""
        return (self.total - self.bad) / self.total if self.total else None

    def add(self, rating: Rating, include_misuse: bool = False) -> None:
        if rating.voided:
            self.voided += 1
        elif rating.misuse and not include_misuse:
            self.misuse += 1
        else:
            self.by_level[rating.level] += 1

    def rate_text(self) -> str:
        return "—" if self.satisfaction is None else f"{self.satisfaction:.1%}"

    def levels_text(self) -> str:
        return "，".join(f"{texts.RATING_LEVELS[level]} {self.by_level[level]}" for level in LEVELS)


def half_start(now: datetime, tz) -> datetime:
    """The first instant of the half-year ``now`` falls in, in the local zone."""
    local = now.astimezone(tz)
    return datetime(local.year, 1 if local.month <= 6 else 7, 1, tzinfo=tz)


def ratings_since(session: Session, since: datetime, unit_id: int | None = None) -> list[Rating]:
    query = select(Rating).where(Rating.rated_at >= since)
    if unit_id is not None:
        query = query.where(Rating.unit_id == unit_id)
    return list(session.exec(query.order_by(Rating.rated_at.desc())).all())


def counts_by(ratings: list[Rating], key) -> dict[object, LevelCounts]:
    out: dict[object, LevelCounts] = {}
    for rating in ratings:
        out.setdefault(key(rating), LevelCounts()).add(rating)
    return out


def _oversees_all(ctx: Context) -> bool:
    return unit_scope(ctx.session, ctx.cadre, ctx.settings) is None


def _names(session: Session, ratings: list[Rating]) -> dict[tuple[str, int], str]:
    cadre_ids = {r.cadre_id for r in ratings if r.cadre_id}
    window_ids = {r.window_id for r in ratings if r.window_id}
    names: dict[tuple[str, int], str] = {}
    if cadre_ids:
        names.update({("cadre", c.id): c.name for c in session.exec(select(Cadre).where(Cadre.id.in_(cadre_ids)))})
    if window_ids:
        names.update({("window", w.id): w.name
                      for w in session.exec(select(ServiceWindow).where(ServiceWindow.id.in_(window_ids)))})
    return names


def _target_key(rating: Rating) -> tuple[str, int]:
    return ("cadre", rating.cadre_id) if rating.cadre_id else ("window", rating.window_id)


def bad_lines(session: Session, ratings: list[Rating], names: dict, tz, viewer: Cadre,
              limit: int = BAD_LIST_LIMIT) -> list[str]:
    """The newest 差评 (misuse left out), phones masked; on a 差评 about the viewer neither the phone
    (not even masked) nor the comment (``scope.shows_rater``). A 差评 under appeal, or decided on
    appeal, says so (a voided one stays listed, marked, out of the counts)."""
    bad = [r for r in ratings if r.level in BAD_LEVELS and not r.misuse][:limit]
    if not bad:
        return []
    states = appeals.states_of(session, [r.id for r in bad])
    subjects = subjects_of(session, bad)
    lines = [texts.RATINGS_BAD_HEADER.format(count=len(bad))]
    for r in bad:
        rater = shows_rater(viewer.id, subjects[r.id])
        lines.append(texts.RATINGS_BAD_LINE.format(
            date=r.rated_at.astimezone(tz).strftime("%m-%d %H:%M"), target=names.get(_target_key(r), "?"),
            level=texts.RATING_LEVELS[r.level],
            reasons=f"（{'、'.join(r.reasons)}）" if r.reasons else "",
            comment=f"：{_short(r.comment)}" if r.comment and rater else "",
            phone=f"，电话 {mask(r.phone)}" if r.phone and rater else "",
            problem=f"，问题 #{r.problem_id}" if r.problem_id else ""))
        if r.id in states:
            lines[-1] += texts.RATINGS_APPEAL_MARK.format(state=texts.APPEAL_STATES[states[r.id]])
    return lines


def unit_report(session: Session, unit: Unit, since: datetime, tz, viewer: Cadre) -> list[str]:
    """One unit: its totals, each rated cadre and window, and its newest 差评."""
    ratings = ratings_since(session, since, unit.id)
    total = LevelCounts()
    for rating in ratings:
        total.add(rating)
    lines = [texts.RATINGS_UNIT_LINE.format(name=unit.name, total=total.total, rate=total.rate_text(), bad=total.bad)]
    if not ratings:
        return lines + [texts.RATINGS_NONE]
    lines.append(total.levels_text())
    names = _names(session, ratings)
    for key, counts in sorted(counts_by(ratings, _target_key).items(),
                              key=lambda item: (item[1].satisfaction is None, item[1].satisfaction or 0)):
        lines.append(texts.RATINGS_TARGET_LINE.format(name=names.get(key, "?"), total=counts.total,
                                                      rate=counts.rate_text(), bad=counts.bad))
    lines += bad_lines(session, ratings, names, tz, viewer)
    if total.misuse:
        lines.append(texts.RATINGS_MISUSE.format(count=total.misuse))
    if total.voided:
        lines.append(texts.RATINGS_VOIDED.format(count=total.voided))
    return lines


def cadre_report(session: Session, cadre: Cadre, since: datetime, tz, viewer: Cadre) -> list[str]:
    ratings = [r for r in ratings_since(session, since) if r.cadre_id == cadre.id]
    counts = LevelCounts()
    for rating in ratings:
        counts.add(rating)
    lines = [texts.RATINGS_TARGET_LINE.format(name=cadre.name, total=counts.total, rate=counts.rate_text(),
                                              bad=counts.bad).lstrip("• ")]
    if not ratings:
        return lines + [texts.RATINGS_NONE]
    lines.append(counts.levels_text())
    lines += bad_lines(session, ratings, {("cadre", cadre.id): cadre.name}, tz, viewer)
    if counts.misuse:
        lines.append(texts.RATINGS_MISUSE.format(count=counts.misuse))
    if counts.voided:
        lines.append(texts.RATINGS_VOIDED.format(count=counts.voided))
    return lines


def cmd_ratings(ctx: Context) -> None:
    """Shows the ratings of the supervisor's unit (or of all units, a named unit or a named cadre)."""
    session, tz = ctx.session, ctx.settings.tz
    since = half_start(ctx.now, tz)
    everyone = _oversees_all(ctx)
    lines = [texts.RATINGS_HEADER.format(half_label=half_label(ctx.half))]
    query = ctx.inbound.args.strip()[:50]
    own = session.get(Unit, ctx.cadre.unit_id)
    if query:
        unit = session.exec(select(Unit).where(Unit.name == query)).first()
        cadre = None if unit else session.exec(select(Cadre).where(Cadre.name == query, Cadre.active == True)  # noqa: E712
                                               .order_by(Cadre.id)).first()
        if unit is None and cadre is None:
            return ctx.say(texts.RATINGS_UNKNOWN.format(query=query))
        if not everyone and (unit.id if unit else cadre.unit_id) != own.id:
            return ctx.say(texts.RATINGS_FORBIDDEN_UNIT)
        lines += (unit_report(session, unit, since, tz, ctx.cadre) if unit
                  else cadre_report(session, cadre, since, tz, ctx.cadre))
    elif everyone:
        ratings = ratings_since(session, since)
        per_unit = counts_by(ratings, lambda r: r.unit_id)
        units = {u.id: u for u in session.exec(select(Unit).where(Unit.active == True))}  # noqa: E712
        # Ranked by satisfaction, best first: the last line is the unit the 末位问责 is about.
        ranked = sorted(units.values(), key=lambda u: (per_unit.get(u.id, LevelCounts()).satisfaction is None,
                                                       -(per_unit.get(u.id, LevelCounts()).satisfaction or 0)))
        for unit in ranked:
            counts = per_unit.get(unit.id, LevelCounts())
            lines.append(texts.RATINGS_UNIT_LINE.format(name=unit.name, total=counts.total, rate=counts.rate_text(),
                                                        bad=counts.bad))
        lines += bad_lines(session, ratings, _names(session, ratings), tz, ctx.cadre)
        misuse = sum(c.misuse for c in per_unit.values())
        if misuse:
            lines.append(texts.RATINGS_MISUSE.format(count=misuse))
        voided = sum(c.voided for c in per_unit.values())
        if voided:
            lines.append(texts.RATINGS_VOIDED.format(count=voided))
    else:
        lines += unit_report(session, own, since, tz, ctx.cadre)
    lines.append(texts.RATINGS_RATE_NOTE)
    ctx.say("\n".join(lines))


def open_callbacks(session: Session, cadre: Cadre, settings) -> list[tuple[CallbackTask, Rating]]:
    """The open call-back tasks ``cadre`` must see to: of the items they oversee (an office item only
    for the 作风办), never one about themselves (回避)."""
    query = (select(CallbackTask, Rating).join(Rating, Rating.id == CallbackTask.rating_id)
             .join(Problem, Problem.id == CallbackTask.problem_id)
             .where(CallbackTask.status == CallbackStatus.OPEN))
    query = overseen_problems(query, cadre, unit_scope(session, cadre, settings))
    return list(session.exec(query.order_by(CallbackTask.due_on, CallbackTask.id)).all())


def cmd_callbacks(ctx: Context) -> None:
    """Lists the open call-back tasks (回访) this supervisor must make, with full phones: each number
    shown is written to the audit log (who, when, which item)."""
    rows = open_callbacks(ctx.session, ctx.cadre, ctx.settings)
    if not rows:
        return ctx.say(texts.CALLBACKS_NONE)
    for task, _rating in rows:
        audit.record(ctx.session, at=ctx.now, actor=f"cadre:{ctx.cadre.id}", action="phone.reveal",
                     target=f"callback:{task.id}", channel=ctx.inbound.channel)
    names = _names(ctx.session, [rating for _task, rating in rows])
    lines = [texts.CALLBACKS_HEADER.format(count=len(rows))]
    for task, rating in rows:
        lines.append(texts.CALLBACKS_LINE.format(
            problem=task.problem_id, target=names.get(_target_key(rating), "?"),
            level=texts.RATING_LEVELS[rating.level], phone=task.phone, due=task.due_on,
            comment=f"；{_short(rating.comment)}" if rating.comment else ""))
    ctx.say("\n".join(lines))


def _short(text: str | None, limit: int = 30) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


RATINGS = Feature("ratings", Role.SUPERVISOR, "群众评价统计", help=texts.HELP_RATINGS_LINE, words=("评价", "评价统计"),
                  run=cmd_ratings, long=True, reads_only=True)
# Not read-only: every full phone it shows writes an audit row; it lists only open tasks, so it is short.
CALLBACKS = Feature("callbacks", Role.SUPERVISOR, "待回访的差评", help=texts.HELP_CALLBACKS, words=("回访",),
                    run=cmd_callbacks)
