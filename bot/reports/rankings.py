"""Rankings (排名) of units and cadres for a half-year, each computed by SQL aggregates (GROUP BY):

  satisfaction (满意度)  满意率 = ratings 非常满意/满意/基本满意 ÷ all ratings of the half-year, misuse
                         left out; a unit's ratings include its service windows. Fewer than
                         RANKING_MIN_RATINGS ratings: listed as not ranked.
  visits (走访)          visited ÷ assigned: the active households a cadre is assigned and how many
                         of them that cadre visited this half-year (as /progress counts them).
  timeliness (时效)      closed by the deadline ÷ (closed + overdue still open), over the ledger items
                         whose deadline falls in the half-year: an overdue open item counts against.
                         Units by responsible unit, cadres by their A post (A岗).

Best first; ties share a rank and are ordered by the larger base, then by name. The last rank is
the bottom (末位), named in every answer: it is what 末位问责 is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Sequence

from sqlalchemy import Date, case, cast, func, select
from sqlmodel import Session

from bot import texts
from bot.config import Settings
from bot.core.periods import half_bounds, half_label
from storage.models import Cadre, Household, Problem, ProblemStatus, Rating, Role, Unit, Visit

SATISFACTION, VISITS, TIMELINESS = "satisfaction", "visits", "timeliness"
METRICS = (SATISFACTION, VISITS, TIMELINESS)
UNITS, CADRES = "units", "cadres"
CLOSED = (ProblemStatus.CLOSED, ProblemStatus.ANSWERED)
OPEN = (ProblemStatus.ASSIGNED, ProblemStatus.IN_PROGRESS)


@dataclass(frozen=True)
class Entry:
    """One unit or cadre: ``good`` of ``total`` (and, for timeliness, how many of those are overdue)."""

    id: int
    name: str
    unit: str  # the cadre's unit; the unit's own name for units
    good: int
    total: int
    overdue: int = 0
    rank: int | None = None  # None: not ranked (too few ratings, no households, no items due)

    @property
    def rate(self) -> float | None:
        return self.good / self.total if self.total else None


@dataclass
class Ranking:
    metric: str
    level: str  # units or cadres
    half: str
    ranked: list[Entry] = field(default_factory=list)
    unranked: list[Entry] = field(default_factory=list)

    @property
    def bottom(self) -> list[Entry]:
        """末位: every entry sharing the last rank."""
        if not self.ranked:
            return []
        last = self.ranked[-1].rank
        return [e for e in self.ranked if e.rank == last]

    def position(self, entry_id: int) -> Entry | None:
        return next((e for e in self.ranked if e.id == entry_id), None)


def parse_metric(text: str) -> str | None:
    """'满意度', '走访', '时效' (or the English names); '' is satisfaction; None if unknown."""
    text = (text or "").strip().lower()
    if not text:
        return SATISFACTION
    if text in METRICS:
        return text
    return texts.RANKING_ALIASES.get(text)


# ---------------------------------------------------------------------------------------------
# The aggregates


def _local_date(column, settings: Settings, dialect: str):
    """The local calendar date of a UTC timestamp column, in SQL."""
    if dialect == "postgresql":
        return cast(func.timezone(settings.timezone, column), Date)
    # SQLite keeps UTC text; the zone's offset now is exact for zones without daylight saving (China).
    offset = datetime.now(settings.tz).utcoffset() or timedelta(0)
    return func.date(column, f"{int(offset.total_seconds()):+d} seconds")


def _counts(session: Session, metric: str, level: str, half: str, settings: Settings, today: date,
            unit_ids: Sequence[int] | None) -> dict[int, tuple[int, int, int]]:
    """id -> (good, total, overdue), one or two grouped queries."""
    start, end = half_bounds(half, settings.tz)
    dialect = session.get_bind().dialect.name
    if metric == SATISFACTION:
        key = Rating.unit_id if level == UNITS else Rating.cadre_id
        query = (select(key, func.sum(case((Rating.level >= 3, 1), else_=0)), func.count())
                 .where(Rating.misuse == False, Rating.voided == False, Rating.rated_at >= start, Rating.rated_at < end,  # noqa: E712
                        key.is_not(None))
                 .group_by(key))
        if unit_ids is not None:
            query = query.where(Rating.unit_id.in_(list(unit_ids)))
        return {k: (int(good or 0), total, 0) for k, good, total in session.execute(query)}
    if metric == VISITS:
        key = Cadre.unit_id if level == UNITS else Household.cadre_id
        assigned = (select(key, func.count()).select_from(Household).join(Cadre, Cadre.id == Household.cadre_id)
                    .where(Household.active == True).group_by(key))  # noqa: E712
        visited_households = (select(Visit.id).where(Visit.household_id == Household.id, Visit.half == half,
                                                     Visit.cadre_id == Household.cadre_id,
                                                     Visit.disputed_at.is_(None)).exists())
        visited = (select(key, func.count()).select_from(Household).join(Cadre, Cadre.id == Household.cadre_id)
                   .where(Household.active == True, visited_households).group_by(key))  # noqa: E712
        if unit_ids is not None:
            assigned = assigned.where(Cadre.unit_id.in_(list(unit_ids)))
            visited = visited.where(Cadre.unit_id.in_(list(unit_ids)))
        done = dict(session.execute(visited).all())
        return {k: (done.get(k, 0), total, 0) for k, total in session.execute(assigned)}
    if metric == TIMELINESS:
        key = Problem.responsible_unit_id if level == UNITS else Problem.responsible_a_id
        closed = Problem.status.in_(CLOSED) & Problem.closed_at.is_not(None)
        on_time = closed & (_local_date(Problem.closed_at, settings, dialect) <= Problem.deadline)
        overdue = Problem.status.in_(OPEN) & (Problem.deadline < today)
        first, last = start.date(), (end - timedelta(days=1)).date()
        query = (select(key, func.sum(case((on_time, 1), else_=0)), func.sum(case((closed | overdue, 1), else_=0)),
                        func.sum(case((overdue, 1), else_=0)))
                 .where(Problem.deadline.is_not(None), Problem.deadline >= first, Problem.deadline <= last,
                        key.is_not(None))
                 .group_by(key))
        if unit_ids is not None:
            query = query.where(Problem.responsible_unit_id.in_(list(unit_ids)))
        return {k: (int(good or 0), int(total or 0), int(late or 0)) for k, good, total, late in session.execute(query)}
    raise ValueError(f"unknown metric {metric!r}")


def _names(session: Session, level: str, unit_ids: Sequence[int] | None) -> list[tuple]:
    """(id, name, unit name) of every active unit or cadre (role 干部) that can be ranked."""
    if level == UNITS:
        query = select(Unit.id, Unit.name, Unit.name).where(Unit.active == True)  # noqa: E712
        if unit_ids is not None:
            query = query.where(Unit.id.in_(list(unit_ids)))
    else:
        query = (select(Cadre.id, Cadre.name, Unit.name).join(Unit, Unit.id == Cadre.unit_id)
                 .where(Cadre.active == True, Cadre.role == Role.CADRE))  # noqa: E712
        if unit_ids is not None:
            query = query.where(Cadre.unit_id.in_(list(unit_ids)))
    return list(session.execute(query))


def ranking(session: Session, metric: str, level: str, half: str, settings: Settings, today: date,
            unit_ids: Sequence[int] | None = None) -> Ranking:
    """Units or cadres (within ``unit_ids``, or all) ranked by one metric for a half-year."""
    counts = _counts(session, metric, level, half, settings, today, unit_ids)
    out = Ranking(metric, level, half)
    minimum = settings.ranking_min_ratings if metric == SATISFACTION else 1
    entries = []
    for id_, name, unit in _names(session, level, unit_ids):
        good, total, overdue = counts.get(id_, (0, 0, 0))
        entries.append(Entry(id_, name, unit, good, total, overdue))
    rankable = sorted((e for e in entries if e.total >= minimum),
                      key=lambda e: (-e.good * 1.0 / e.total, -e.total, e.name, e.id))
    rank, previous = 0, None
    for index, e in enumerate(rankable, start=1):
        if previous is None or e.good * previous.total != previous.good * e.total:  # exact: no float ties
            rank = index
        out.ranked.append(Entry(e.id, e.name, e.unit, e.good, e.total, e.overdue, rank))
        previous = e
    out.unranked = sorted((e for e in entries if e.total < minimum), key=lambda e: (-e.total, e.name))
    return out


# ---------------------------------------------------------------------------------------------
# Text and chart


def percent(entry: Entry) -> str:
    return "—" if entry.rate is None else f"{100 * entry.rate:.1f}%"


def detail(entry: Entry, metric: str) -> str:
    overdue = texts.RANKING_OVERDUE.format(count=entry.overdue) if entry.overdue else ""
    return texts.RANKING_DETAIL[metric].format(good=entry.good, total=entry.total, overdue=overdue)


def _label(entry: Entry, level: str, with_unit: bool) -> str:
    return f"{entry.name}（{entry.unit}）" if level == CADRES and with_unit else entry.name


def lines(r: Ranking, *, who: str, limit: int | None = 10, with_unit: bool = True, minimum: int = 0) -> list[str]:
    """The ranking as chat lines: the header, the top ``limit`` and the bottom ``limit`` (all when
    there are few or ``limit`` is None), the 末位, how many were not ranked."""
    out = [texts.RANKING_HEADER.format(half_label=half_label(r.half), who=who, title=texts.RANKING_TITLES[r.metric])]
    if not r.ranked:
        out.append(texts.RANKING_NONE)
    else:
        shown = r.ranked
        gap = limit is not None and len(shown) > 2 * limit + 1
        for index, e in enumerate(shown):
            if gap and limit <= index < len(shown) - limit:
                if index == limit:
                    out.append(texts.RANKING_GAP)
                continue
            out.append(texts.RANKING_LINE.format(rank=e.rank, name=_label(e, r.level, with_unit), rate=percent(e),
                                                 detail=detail(e, r.metric)))
        out.append(texts.RANKING_BOTTOM.format(
            names="、".join(f"{_label(e, r.level, with_unit)} {percent(e)}" for e in r.bottom)))
    if r.unranked:
        out.append(texts.RANKING_UNRANKED[r.metric].format(count=len(r.unranked), what=texts.RANKING_WHAT[r.level],
                                                           minimum=minimum))
    return out


def chart(r: Ranking, *, who: str, count: int = 15, with_unit: bool = False) -> bytes | None:
    """A PNG bar chart of the bottom ``count`` of a ranking (the 末位 in red), or None if nothing is ranked."""
    from bot.charts import bar_chart

    if not r.ranked:
        return None
    tail = r.ranked[-count:]
    bottom = {e.id for e in r.bottom}
    return bar_chart(
        [f"{e.rank}. {_label(e, r.level, with_unit)}" for e in tail], [100 * (e.rate or 0) for e in tail],
        [f"{e.good}/{e.total}" for e in tail],
        title=texts.RANKING_CHART_TITLE.format(half_label=half_label(r.half), who=who,
                                               title=texts.RANKING_TITLES[r.metric], count=len(tail)),
        xlabel=texts.RANKING_CHART_AXIS[r.metric],
        colors=["#c0392b" if e.id in bottom else "#e67e22" if (e.rate or 0) < 0.9 else "#27ae60" for e in tail])
