"""What the 作风办 web console shows and does, as core functions of a session (``Engine.run``).

Every function takes the session first and the logged-in user (``login.Who``) and checks scope where
the row is loaded: the 作风办 and admins see every unit, a supervisor their unit, a cadre their own
households, visits, ratings and ledger items. A row out of scope raises ``NotFound`` exactly as a row
that does not exist, so a changed URL learns nothing; the page answers 404 and records
``access.refused`` in the audit log (``refuse``).

Business rules are not written here: the ledger's actions go through ``bot.core.ledger.act`` (the
rule table the chat uses), the forms are ``bot.reports.forms.export``, rankings are
``bot.reports.rankings.ranking``, binding codes ``bot.core.binding.issue_code``, the roster import
``bot.imports.roster``'s checker and writer. Queries are grouped per unit or cadre so a page costs a few
statements whatever the size of the city (bench/console_pages.py).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, case, exists, func, or_
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core import appeals, binding, evidence, ledger
from bot.core.login import Who
from bot.core.periods import half_bounds
from bot.core.phones import mask
from bot.core.scope import rating_subjects, sees_problem, shows_rater, subjects_of, unit_scope
from bot.core.workdays import work_calendar
from storage import audit
from storage.models import (AppealState, AuditLog, Cadre, ChatAccount, EverydayContact, Household,
                            OutboxMessage, OutboxState, Problem, ProblemStatus, Rating, RatingAppeal, Role,
                            ServiceObject, TargetKind, Unit, Visit, VisitFlag)

S = ProblemStatus


class NotFound(Exception):
    """No such row, or not in the user's scope (the same answer either way); ``target`` names it."""

    def __init__(self, target: str):
        super().__init__(target)
        self.target = target


class Forbidden(Exception):
    """The user's role may not use this page at all (e.g. the audit log for a non-admin)."""


# -- who sees what -------------------------------------------------------------------------------

def _cadre(session: Session, who: Who) -> Cadre:
    return session.get(Cadre, who.cadre_id)


def scope_of(session: Session, settings: Settings, who: Who) -> set[int] | None:
    """Units whose pages this user sees (None: all); a cadre sees no unit page, only their own data."""
    if who.role == Role.CADRE:
        return set()
    return unit_scope(session, _cadre(session, who), settings)


def oversees_all(session: Session, settings: Settings, who: Who) -> bool:
    return who.role != Role.CADRE and scope_of(session, settings, who) is None


def is_supervisor(who: Who) -> bool:
    return who.role in (Role.SUPERVISOR, Role.ADMIN)


def _check_unit(session: Session, settings: Settings, who: Who, unit_id: int) -> Unit:
    unit = session.get(Unit, unit_id)
    scope = scope_of(session, settings, who)
    if unit is None or (scope is not None and unit.id not in scope):
        raise NotFound(f"unit:{unit_id}")
    return unit


def refuse(session: Session, who: Who | None, target: str, address: str | None, now: datetime) -> None:
    """The audit row of a refused access (a page, item or file out of scope, or none such)."""
    audit.record(session, at=now, actor=f"cadre:{who.cadre_id}" if who else "browser", action="access.refused",
                 target=target, address=address, channel="console")


def note(session: Session, who: Who, action: str, target: str | None, address: str | None, now: datetime,
         detail: str | None = None) -> None:
    """An audit row for something done in the console (a download, an import, a ledger action)."""
    audit.record(session, at=now, actor=f"cadre:{who.cadre_id}", action=action, target=target, address=address,
                 channel="console", detail=detail)


# -- 总览 overview --------------------------------------------------------------------------------

@dataclass
class UnitFigures:
    """One unit's half-year: visits, cadres behind, objects short, ratings, ledger buckets."""

    id: int
    name: str
    cadres: int = 0
    assigned: int = 0
    visited: int = 0
    behind: int = 0
    objects_short: int = 0
    ratings: int = 0
    bad: int = 0
    buckets: dict[str, int] = field(default_factory=lambda: {k: 0 for k in texts.CONSOLE_BUCKETS})

    @property
    def satisfaction(self) -> float | None:
        return (self.ratings - self.bad) / self.ratings if self.ratings else None

    @property
    def visit_rate(self) -> float:
        return self.visited / self.assigned if self.assigned else 0.0


@dataclass
class CadreFigures:
    id: int
    name: str
    unit_id: int
    role: str
    post: str | None
    assigned: int = 0
    visited: int = 0
    contacts: int = 0
    objects: int = 0

    def marks(self, minimum: int) -> list[str]:
        out = []
        if self.visited < self.assigned:
            out.append("visits")
        if self.role == Role.CADRE and self.objects < minimum:
            out.append("objects")
        return out

    def shortfall(self, minimum: int) -> tuple[int, int]:
        return (self.assigned - self.visited, max(0, minimum - self.objects) if self.role == Role.CADRE else 0)


def cadre_figures(session: Session, half: str, unit_ids: set[int] | None) -> list[CadreFigures]:
    """Every active cadre of the units (None: all) with their half-year counts: four grouped queries."""
    def within(query, column):
        return query if unit_ids is None else query.where(column.in_(list(unit_ids)))

    cadres = session.exec(within(select(Cadre.id, Cadre.name, Cadre.unit_id, Cadre.role, Cadre.post)
                                 .where(Cadre.active == True), Cadre.unit_id)).all()  # noqa: E712
    out = {c.id: CadreFigures(c.id, c.name, c.unit_id, c.role, c.post) for c in cadres}
    # Households per cadre, and those visited this half-year by that cadre: from the 10,000 households'
    # side with an indexed EXISTS, not from the 100,000 visits' side with a DISTINCT (a tenth of the time).
    seen = exists().where(Visit.household_id == Household.id, Visit.cadre_id == Household.cadre_id,
                          Visit.half == half)
    households = select(Household.cadre_id, func.count(), func.sum(case((seen, 1), else_=0))).where(
        Household.active == True)  # noqa: E712
    if unit_ids is not None:
        households = households.join(Cadre, Cadre.id == Household.cadre_id).where(Cadre.unit_id.in_(list(unit_ids)))
    households = session.exec(households.group_by(Household.cadre_id)).all()
    assigned = [(cadre_id, total) for cadre_id, total, _ in households]
    visited = [(cadre_id, done or 0) for cadre_id, _, done in households]
    contacts = select(EverydayContact.cadre_id, func.count()).where(EverydayContact.half == half)
    if unit_ids is not None:
        contacts = contacts.join(Cadre, Cadre.id == EverydayContact.cadre_id).where(Cadre.unit_id.in_(list(unit_ids)))
    contacts = session.exec(contacts.group_by(EverydayContact.cadre_id)).all()
    objects = session.exec(within(select(ServiceObject.cadre_id, func.count())
                                  .where(ServiceObject.active == True), ServiceObject.unit_id)  # noqa: E712
                           .group_by(ServiceObject.cadre_id)).all()
    for rows, attr in ((assigned, "assigned"), (visited, "visited"), (contacts, "contacts"), (objects, "objects")):
        for cadre_id, count in rows:
            if cadre_id in out:
                setattr(out[cadre_id], attr, count)
    return list(out.values())


def _bucket_counts(session: Session, settings: Settings, now: datetime, unit_ids: set[int] | None) -> dict:
    """Ledger buckets per unit (the responsible unit once assigned, else the unit that took it in)."""
    today = ledger.local_today(settings, now)
    owner = func.coalesce(Problem.responsible_unit_id, Problem.unit_id)
    bucket = case((Problem.status == S.NEW, "new"),
                  (and_(Problem.status.in_(ledger.OPEN_STATES), Problem.deadline < today), "overdue"),
                  (Problem.status.in_(ledger.OPEN_STATES), "open"),
                  (Problem.status == S.CLOSED, "closed"), else_="done")
    query = select(owner, bucket, func.count()).group_by(owner, bucket)
    if unit_ids is not None:
        query = query.where(owner.in_(list(unit_ids)))
    out: dict[int, dict[str, int]] = {}
    for unit_id, name, count in session.exec(query).all():
        out.setdefault(unit_id, {})[name] = count
    return out


def _rating_counts(session: Session, settings: Settings, half: str, unit_ids: set[int] | None) -> dict:
    start, end = half_bounds(half, settings.tz)
    bad = func.sum(case((Rating.level <= 2, 1), else_=0))
    query = (select(Rating.unit_id, func.count(), bad)
             .where(Rating.rated_at >= start, Rating.rated_at < end, Rating.misuse == False)  # noqa: E712
             .group_by(Rating.unit_id))
    if unit_ids is not None:
        query = query.where(Rating.unit_id.in_(list(unit_ids)))
    return {unit_id: (total, bad or 0) for unit_id, total, bad in session.exec(query).all()}


@dataclass
class Deadline:
    day: date
    forms: str
    missing: list[str]


@dataclass
class Overview:
    half: str
    units: list[UnitFigures]
    deadlines: list[Deadline]
    minimum: int

    @property
    def total(self) -> UnitFigures:
        t = UnitFigures(0, texts.CONSOLE_TOTAL)
        for u in self.units:
            for attr in ("cadres", "assigned", "visited", "behind", "objects_short", "ratings", "bad"):
                setattr(t, attr, getattr(t, attr) + getattr(u, attr))
            for k, v in u.buckets.items():
                t.buckets[k] += v
        return t


def overview(session: Session, settings: Settings, who: Who, half: str, now: datetime) -> Overview:
    """The half-year per unit in scope, and the next form deadlines with what each still lacks."""
    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    units_q = select(Unit.id, Unit.name).where(Unit.active == True)  # noqa: E712
    if scope is not None:
        units_q = units_q.where(Unit.id.in_(list(scope)))
    units = {uid: UnitFigures(uid, name) for uid, name in session.exec(units_q.order_by(Unit.name)).all()}
    minimum = settings.service_object_minimum
    for c in cadre_figures(session, half, scope):
        u = units.get(c.unit_id)
        if u is None or not (c.assigned or c.role == Role.CADRE):  # as the chat's 单位进度 counts them
            continue
        u.cadres += 1
        u.assigned += c.assigned
        u.visited += c.visited
        u.behind += bool(c.marks(minimum))
        u.objects_short += "objects" in c.marks(minimum)
    for uid, counts in _bucket_counts(session, settings, now, scope).items():
        if uid in units:
            for k in units[uid].buckets:
                units[uid].buckets[k] += counts.get(k, 0)
    for uid, (total, bad) in _rating_counts(session, settings, half, scope).items():
        if uid in units:
            units[uid].ratings, units[uid].bad = total, bad
    shown = [u for u in units.values() if u.cadres or u.ratings or any(u.buckets.values())]
    result = Overview(half, shown, [], minimum)
    result.deadlines = _deadlines(settings, now, result)
    return result


def _deadlines(settings: Settings, now: datetime, view: Overview) -> list[Deadline]:
    today = ledger.local_today(settings, now)
    total = view.total
    missing = {
        "附件5": [texts.CONSOLE_MISSING_LEDGER.format(count=total.buckets["new"] + total.buckets["open"]
                                                      + total.buckets["overdue"])],
        "附件3–4": [texts.CONSOLE_MISSING_OBJECTS.format(count=total.objects_short, minimum=view.minimum)],
        "附件1–2": [texts.CONSOLE_MISSING_VISITS.format(count=total.assigned - total.visited, cadres=total.behind)],
    }
    out = []
    for forms, days in (("附件5", settings.deadline_form5), ("附件3–4", settings.deadline_form34),
                        ("附件1–2", settings.deadline_form12)):
        for year in (today.year, today.year + 1):
            upcoming = [date(year, int(d[:2]), int(d[3:])) for d in days]
            upcoming = [d for d in upcoming if d >= today]
            if upcoming:
                out.append(Deadline(min(upcoming), forms, missing[forms]))
                break
    return sorted(out, key=lambda d: d.day)


# -- 单位 / 干部 ---------------------------------------------------------------------------------

def units_list(session: Session, settings: Settings, who: Who, half: str, now: datetime) -> list[UnitFigures]:
    return overview(session, settings, who, half, now).units


@dataclass
class UnitPage:
    unit: Unit
    cadres: list[CadreFigures]
    minimum: int
    proof: dict[int, evidence.CadreEvidence] = field(default_factory=dict)  # per cadre id, as stored
    flags: list = field(default_factory=list)  # (cadre, visit id, visited at, kind, reason): every flag


def unit_page(session: Session, settings: Settings, who: Who, unit_id: int, half: str) -> UnitPage:
    """A unit's cadres, the furthest behind first (households left, then service objects short), each
    with the share of visits at each level of evidence; then every visit flagged as possibly in name
    only (走过场), with its reason: the console is where /flags sends supervisors for the full list."""
    if who.role == Role.CADRE:
        raise NotFound(f"unit:{unit_id}")
    unit = _check_unit(session, settings, who, unit_id)
    minimum = settings.service_object_minimum
    cadres = [c for c in cadre_figures(session, half, {unit.id}) if c.assigned or c.role == Role.CADRE]
    cadres.sort(key=lambda c: (tuple(-x for x in c.shortfall(minimum)), c.name))
    proof = {row.cadre_id: row for row in evidence.summary(session, half, [unit.id])}
    return UnitPage(unit, cadres, minimum, proof, list(evidence.flags_of(session, half, [unit.id])))


@dataclass
class CadrePage:
    cadre: Cadre
    unit: Unit
    figures: CadreFigures
    visits: list[tuple[Visit, Household]]
    contacts: list[EverydayContact]
    objects: list[ServiceObject]
    ratings: list[Rating]
    items: list[Problem]
    households: list = field(default_factory=list)  # progress.HouseholdStatus, unvisited first
    questions: dict[str, str] = field(default_factory=dict)  # survey question id -> its short label
    rater_hidden: set[int] = field(default_factory=set)  # ratings about the viewer: no comment shown (回避)
    proof: evidence.CadreEvidence | None = None  # the half-year's visits by level, as stored
    visit_flags: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # visit id -> (kind, reason)


def _may_see_cadre(session: Session, settings: Settings, who: Who, cadre: Cadre) -> bool:
    if who.cadre_id == cadre.id:
        return True
    if who.role == Role.CADRE:
        return False
    scope = scope_of(session, settings, who)
    return scope is None or cadre.unit_id in scope


def cadre_page(session: Session, settings: Settings, who: Who, cadre_id: int, half: str) -> CadrePage:
    """One cadre: visits with the four-ones answers, photo and place, contacts, objects, ratings, items."""
    cadre = session.get(Cadre, cadre_id)
    if cadre is None or not _may_see_cadre(session, settings, who, cadre):
        raise NotFound(f"cadre:{cadre_id}")
    [figures] = [c for c in cadre_figures(session, half, {cadre.unit_id}) if c.id == cadre.id] or [
        CadreFigures(cadre.id, cadre.name, cadre.unit_id, cadre.role, cadre.post)]
    visits = session.exec(select(Visit, Household).join(Household, Household.id == Visit.household_id)
                          .where(Visit.cadre_id == cadre.id, Visit.half == half)
                          .order_by(Visit.visited_at.desc()).limit(200)).all()
    contacts = session.exec(select(EverydayContact).where(EverydayContact.cadre_id == cadre.id,
                                                          EverydayContact.half == half)
                            .order_by(EverydayContact.contacted_at.desc()).limit(200)).all()
    objects = session.exec(select(ServiceObject).where(ServiceObject.cadre_id == cadre.id,
                                                       ServiceObject.active == True)  # noqa: E712
                           .order_by(ServiceObject.name)).all()
    start, end = half_bounds(half, settings.tz)
    ratings = session.exec(select(Rating).where(Rating.cadre_id == cadre.id, Rating.rated_at >= start,
                                                Rating.rated_at < end).order_by(Rating.rated_at.desc()).limit(200)).all()
    items = session.exec(select(Problem).where(or_(Problem.raised_by_cadre_id == cadre.id,
                                                   Problem.responsible_a_id == cadre.id,
                                                   Problem.responsible_b_id == cadre.id))
                         .order_by(Problem.id.desc()).limit(200)).all()
    from bot.core.progress import households_with_status
    from bot.core.survey import load_survey

    questions = {q.id: q.label or q.text for q in load_survey(settings.survey_file)}
    subjects = subjects_of(session, ratings)
    hidden = {r.id for r in ratings if not shows_rater(who.cadre_id, subjects[r.id])}
    [proof] = [row for row in evidence.summary(session, half, [cadre.unit_id]) if row.cadre_id == cadre.id] or [None]
    flags: dict[int, list[tuple[str, str]]] = {}
    for visit_id, kind, reason in session.exec(
            select(VisitFlag.visit_id, VisitFlag.kind, VisitFlag.reason)
            .where(VisitFlag.visit_id.in_([v.id for v, _h in visits])).order_by(VisitFlag.visit_id, VisitFlag.kind)):
        flags.setdefault(visit_id, []).append((kind, reason))
    return CadrePage(cadre, session.get(Unit, cadre.unit_id), figures, list(visits), list(contacts), list(objects),
                     list(ratings), list(items), households_with_status(session, cadre.id, half), questions,
                     hidden, proof, flags)


# -- 台账 ledger ---------------------------------------------------------------------------------

LEDGER_FILTERS = ("state", "unit", "source", "category", "overdue", "since", "until", "page")


@dataclass
class LedgerFilters:
    state: str = ""  # a bucket of texts.CONSOLE_BUCKETS, or "answered"
    unit: int | None = None
    source: str = ""
    category: str = ""
    overdue: bool = False
    since: date | None = None
    until: date | None = None
    page: int = 1

    @classmethod
    def parse(cls, query: dict[str, str]) -> "LedgerFilters":
        """From the URL's query; anything malformed is ignored, never an error page."""
        def day(text: str | None) -> date | None:
            try:
                return date.fromisoformat(text) if text else None
            except ValueError:
                return None

        def number(text: str | None) -> int | None:
            return int(text) if text and text.isdigit() and len(text) < 10 else None

        state = query.get("state", "")
        return cls(state=state if state in (*texts.CONSOLE_BUCKETS, "answered") else "",
                   unit=number(query.get("unit")), source=query.get("source", "")[:20],
                   category=query.get("category", "")[:20], overdue=query.get("overdue") == "1",
                   since=day(query.get("since")), until=day(query.get("until")),
                   page=max(1, number(query.get("page")) or 1))

    def query(self, **change) -> str:
        """This filter as a URL query (with ``change`` applied): for paging links and bookmarks."""
        from urllib.parse import urlencode

        values = {"state": self.state, "unit": self.unit or "", "source": self.source, "category": self.category,
                  "overdue": "1" if self.overdue else "", "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else "", "page": self.page if self.page > 1 else ""}
        values.update(change)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass
class LedgerRow:
    problem: Problem
    unit: str
    a: str
    b: str
    overdue: bool


@dataclass
class LedgerPage:
    rows: list[LedgerRow]
    total: int
    filters: LedgerFilters
    pages: int
    units: list[tuple[int, str]]
    categories: list[str]


def _item_scope(session: Session, settings: Settings, who: Who, query):
    if who.role == Role.CADRE:
        me = who.cadre_id
        return query.where(or_(Problem.responsible_a_id == me, Problem.responsible_b_id == me,
                               Problem.raised_by_cadre_id == me))
    scope = scope_of(session, settings, who)
    if scope is None:
        return query
    return query.where(or_(Problem.unit_id.in_(list(scope)), Problem.responsible_unit_id.in_(list(scope))))


def ledger_page(session: Session, settings: Settings, who: Who, filters: LedgerFilters, now: datetime) -> LedgerPage:
    """The ledger items in scope matching the filters, a page at a time, oldest deadline first."""
    today = ledger.local_today(settings, now)
    query = _item_scope(session, settings, who, select(Problem))
    f = filters
    if f.state == "new":
        query = query.where(Problem.status == S.NEW)
    elif f.state == "open":
        query = query.where(Problem.status.in_(ledger.OPEN_STATES))
    elif f.state == "overdue" or f.overdue:
        query = query.where(Problem.status.in_(ledger.OPEN_STATES), Problem.deadline < today)
    elif f.state == "closed":
        query = query.where(Problem.status == S.CLOSED)
    elif f.state == "answered":
        query = query.where(Problem.status == S.ANSWERED)
    if f.unit:
        query = query.where(func.coalesce(Problem.responsible_unit_id, Problem.unit_id) == f.unit)
    if f.source:
        query = query.where(Problem.source == f.source)
    if f.category:
        query = query.where(Problem.category == f.category)
    if f.since:
        query = query.where(Problem.created_at >= datetime.combine(f.since, datetime.min.time(), settings.tz))
    if f.until:
        query = query.where(Problem.created_at < datetime.combine(f.until + timedelta(days=1), datetime.min.time(),
                                                                  settings.tz))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    size = settings.console_page_size
    pages = max(1, (total + size - 1) // size)
    f.page = min(f.page, pages)
    problems = session.exec(query.order_by(Problem.deadline.is_(None), Problem.deadline, Problem.id.desc())
                            .offset((f.page - 1) * size).limit(size)).all()
    names = _cadre_names(session, {i for p in problems for i in (p.responsible_a_id, p.responsible_b_id) if i})
    units = dict(session.exec(select(Unit.id, Unit.name)).all())
    rows = [LedgerRow(p, units.get(p.responsible_unit_id or p.unit_id, "—"), names.get(p.responsible_a_id, ""),
                      names.get(p.responsible_b_id, ""), ledger.is_overdue(p, today)) for p in problems]
    scope = scope_of(session, settings, who)
    unit_choices = sorted(((i, n) for i, n in units.items() if scope is None or i in scope), key=lambda x: x[1])
    categories = sorted(set(session.exec(select(Problem.category).distinct()).all()))
    return LedgerPage(rows, total, f, pages, unit_choices, categories)


def ledger_csv(session: Session, settings: Settings, who: Who, filters: LedgerFilters, now: datetime) -> bytes:
    """Every item matching the filters (all pages), as the table shows them: what is on screen, to download."""
    rows, page = [], 1
    while True:
        filters.page = page
        view = ledger_page(session, settings, who, filters, now)
        rows += view.rows
        if page >= view.pages:
            break
        page += 1
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["编号", "状态", "来源", "类型", "内容", "责任单位", "A岗", "B岗", "限期", "逾期", "登记时间"])
    for r in rows:
        p = r.problem
        writer.writerow([p.id, texts.STATUS_NAMES.get(p.status, p.status), texts.CONSOLE_SOURCES.get(p.source, p.source),
                         p.category, p.content, r.unit, r.a, r.b, p.deadline.isoformat() if p.deadline else "",
                         "是" if r.overdue else "", p.created_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _cadre_names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.exec(select(Cadre.id, Cadre.name).where(Cadre.id.in_(list(ids)))).all())


@dataclass
class ItemPage:
    problem: Problem
    unit: str
    a: str
    b: str
    overdue: bool
    history: list
    actions: list[str]
    units: list[tuple[int, str]]
    chosen_unit: tuple[int, str] | None  # 交办's unit, once picked (then its cadres for A and B)
    cadres: list[tuple[int, str]]
    default_deadline: date
    deadline_days: int
    raiser_phone: str
    slip: str
    phone_in_full: bool = False  # the raiser's full number is on the page: the handler audits the showing


def _load_item(session: Session, settings: Settings, who: Who, problem_id: int) -> Problem:
    query = _item_scope(session, settings, who, select(Problem).where(Problem.id == problem_id))
    problem = session.exec(query).first()
    if problem is None:
        raise NotFound(f"problem:{problem_id}")
    return problem


def item_page(session: Session, settings: Settings, who: Who, problem_id: int, now: datetime,
              unit_id: int | None = None) -> ItemPage:
    """One ledger item: its full text, who has it, its history and what this user may do with it."""
    p = _load_item(session, settings, who, problem_id)
    me = _cadre(session, who)
    roles = ledger.roles_of(session, p, settings, me)
    actions = ledger.allowed_actions(roles, p.status)
    today = ledger.local_today(settings, now)
    scope = unit_scope(session, me, settings) if is_supervisor(who) else set()
    units_q = select(Unit.id, Unit.name).where(Unit.active == True)  # noqa: E712
    if scope is not None:
        units_q = units_q.where(Unit.id.in_(list(scope)))
    units = list(session.exec(units_q.order_by(Unit.name)).all()) if ledger.ASSIGN in actions else []
    # 交办 in two steps without script: the unit first, then A and B among that unit's cadres only
    # (the city's 2,000 cadres in one list would be a 170 KB page and no help).
    chosen = next(((u, n) for u, n in units if u == unit_id), None)
    cadres = list(session.exec(select(Cadre.id, Cadre.name).where(Cadre.active == True, Cadre.unit_id == chosen[0])  # noqa: E712
                               .order_by(Cadre.name)).all()) if chosen else []
    names = _cadre_names(session, {i for i in (p.responsible_a_id, p.responsible_b_id) if i})
    unit = session.get(Unit, p.responsible_unit_id or p.unit_id) if (p.responsible_unit_id or p.unit_id) else None
    phone, in_full = "", False
    if p.raiser_phone:
        in_full = bool(roles & {ledger.RESPONSIBLE, ledger.SUPERVISOR})
        phone = p.raiser_phone if in_full else mask(p.raiser_phone)
    return ItemPage(p, unit.name if unit else "—", names.get(p.responsible_a_id, ""), names.get(p.responsible_b_id, ""),
                    ledger.is_overdue(p, today), ledger.history(session, p.id), actions, units, chosen, cadres,
                    ledger.default_deadline(settings, p.source, today), settings.ledger_deadline_days.get(p.source, 10),
                    phone, ledger.slip_number(p) if p.assigned_at else "", in_full)


def item_act(session: Session, settings: Settings, who: Who, problem_id: int, action: str, fields: dict[str, str],
             address: str | None, now: datetime) -> str:
    """Carries out 交办 / 重新交办 / 回访 (or any action the rule table allows this user) through
    ``ledger.act``, exactly as the chat does; the outcome's words. ``ledger.LedgerError`` for a refusal."""
    p = _load_item(session, settings, who, problem_id)
    if action not in ledger.RULES:
        raise ledger.LedgerError(texts.CONSOLE_FORBIDDEN)

    def number(name: str) -> int | None:
        value = (fields.get(name) or "").strip()
        return int(value) if value.isdigit() and len(value) < 10 else None

    deadline = None
    if fields.get("deadline"):
        try:
            deadline = date.fromisoformat(fields["deadline"])
        except ValueError:
            raise ledger.LedgerError(texts.LEDGER_BAD_DATE) from None
    done = ledger.act(session, settings, p.id, action, now=now, actor=_cadre(session, who), note=fields.get("note"),
                      unit_id=number("unit"), a_id=number("a"), b_id=number("b"), deadline=deadline)
    note(session, who, f"ledger.{action}", f"problem:{p.id}", address, now)
    return texts.LEDGER_DONE.format(action=ledger.ACTION_NAMES[action], id=done.id,
                                    status=texts.STATUS_NAMES.get(done.status, done.status))


def deadline_from_days(settings: Settings, now: datetime, days: int) -> date:
    """The date ``days`` working days from today (holidays and 调休 counted), shown beside the input."""
    return work_calendar(settings.holiday_file).add_working_days(ledger.local_today(settings, now), days)


# -- 评价 ratings -------------------------------------------------------------------------------

def may_reveal(session: Session, settings: Settings, cadre: Cadre, rating: Rating) -> bool:
    """Who must call the rater back may see the full number: the A/B posts of the 差评's ledger item, and
    the supervisors who handle it (bot.core.scope.sees_problem: its unit's supervisors, or the 作风办 for
    a 差评 about a supervisor). Never the person rated (回避), whatever their role. The one place this
    rule lives for the console."""
    if rating.phone is None or rating.level > 2 or cadre.id in rating_subjects(session, rating):
        return False
    problem = session.get(Problem, rating.problem_id) if rating.problem_id else None
    if problem is not None:
        if cadre.id in (problem.responsible_a_id, problem.responsible_b_id):
            return True
        return cadre.role in Role.OVERSEERS and sees_problem(session, cadre, settings, problem)
    if cadre.role in Role.OVERSEERS:
        scope = unit_scope(session, cadre, settings)
        return scope is None or rating.unit_id in scope
    return False


@dataclass
class RatingRow:
    rating: Rating
    target: str
    unit: str
    phone: str  # masked; empty on a rating about the viewer
    may_reveal: bool
    shows_rater: bool  # False on a rating about the viewer: neither its phone nor its comment (回避)


@dataclass
class RatingsPage:
    rows: list[RatingRow]
    per_unit: list[tuple[str, int, int]]  # (unit, total, bad)
    bad_only: bool
    unit: int | None
    units: list[tuple[int, str]]
    half: str


def ratings_page(session: Session, settings: Settings, who: Who, half: str, *, unit_id: int | None = None,
                 bad_only: bool = False, cadre_id: int | None = None) -> RatingsPage:
    """Ratings of the half-year in scope per unit, and the list (差评 only if asked), phones masked."""
    start, end = half_bounds(half, settings.tz)
    me = _cadre(session, who)
    query = select(Rating).where(Rating.rated_at >= start, Rating.rated_at < end)
    scope = scope_of(session, settings, who)
    if who.role == Role.CADRE:
        query = query.where(Rating.cadre_id == who.cadre_id)
    elif scope is not None:
        query = query.where(Rating.unit_id.in_(list(scope)))
    if unit_id:
        if who.role != Role.CADRE:
            _check_unit(session, settings, who, unit_id)
        query = query.where(Rating.unit_id == unit_id)
    if cadre_id:
        cadre = session.get(Cadre, cadre_id)
        if cadre is None or not _may_see_cadre(session, settings, who, cadre):
            raise NotFound(f"cadre:{cadre_id}")
        query = query.where(Rating.cadre_id == cadre_id)
    if bad_only:
        query = query.where(Rating.level <= 2, Rating.misuse == False)  # noqa: E712
    ratings = session.exec(query.order_by(Rating.rated_at.desc()).limit(settings.console_page_size)).all()
    units = dict(session.exec(select(Unit.id, Unit.name)).all())
    names = _cadre_names(session, {r.cadre_id for r in ratings if r.cadre_id})
    from storage.models import ServiceWindow
    windows = dict(session.exec(select(ServiceWindow.id, ServiceWindow.name)).all()) if any(
        r.window_id for r in ratings) else {}
    subjects = subjects_of(session, ratings)
    rows = []
    for r in ratings:
        rater = shows_rater(me.id, subjects[r.id])
        rows.append(RatingRow(r, names.get(r.cadre_id, "") if r.target_kind == TargetKind.CADRE
                              else windows.get(r.window_id, ""), units.get(r.unit_id, ""),
                              mask(r.phone) if rater else "", may_reveal(session, settings, me, r), rater))
    counts = _rating_counts(session, settings, half, scope if who.role != Role.CADRE else {who.unit_id})
    per_unit = sorted(((units.get(u, "?"), t, b) for u, (t, b) in counts.items()), key=lambda x: x[0])
    if who.role == Role.CADRE:
        per_unit = []
    unit_choices = sorted(((i, n) for i, n in units.items() if scope is None or i in scope), key=lambda x: x[1])
    return RatingsPage(rows, per_unit, bad_only, unit_id, unit_choices, half)


def reveal_phone(session: Session, settings: Settings, who: Who, rating_id: int, address: str | None,
                 now: datetime) -> tuple[Rating, str] | None:
    """The full number of a rating, for whoever must call back, with its audit row; None if not allowed
    (also audited). ``NotFound`` if the rating is not in the user's scope."""
    rating = session.get(Rating, rating_id)
    me = _cadre(session, who)
    if rating is None:
        raise NotFound(f"rating:{rating_id}")
    scope = scope_of(session, settings, who)
    visible = (rating.cadre_id == who.cadre_id) if who.role == Role.CADRE else (scope is None or rating.unit_id in scope)
    if not visible and not may_reveal(session, settings, me, rating):
        raise NotFound(f"rating:{rating_id}")
    if not may_reveal(session, settings, me, rating):
        note(session, who, "phone.reveal.refused", f"rating:{rating.id}", address, now)
        return None
    note(session, who, "phone.reveal", f"rating:{rating.id}", address, now)
    return rating, rating.phone


# -- 申诉复核 appeals ------------------------------------------------------------------------------

@dataclass
class AppealRow:
    appeal: RatingAppeal
    rating: Rating
    appellant: str
    target: str
    unit: str
    comment: str | None  # the rater's comment; None on a rating about the viewer (回避)
    may_decide: bool


def appeals_page(session: Session, settings: Settings, who: Who) -> list[AppealRow]:
    """The appeals this user may see (``appeals.may_see``): the 作风办 every appeal it does not have to
    step aside from, anyone else their own; waiting ones first. A photo is only named here: it is
    served (and audited) one by one, by ``appeal_photo``."""
    me = _cadre(session, who)
    query = (select(RatingAppeal, Rating, Cadre).join(Rating, Rating.id == RatingAppeal.rating_id)
             .join(Cadre, Cadre.id == RatingAppeal.cadre_id))
    office = appeals.oversees_all(session, me, settings)
    if not office:
        query = query.where(RatingAppeal.cadre_id == me.id)
    found = session.exec(query.order_by((RatingAppeal.state != AppealState.PENDING), RatingAppeal.filed_at.desc(),
                                        RatingAppeal.id.desc()).limit(200)).all()
    subjects = subjects_of(session, [rating for _a, rating, _c in found])
    targets = _cadre_names(session, {r.cadre_id for _a, r, _c in found if r.cadre_id})
    from storage.models import ServiceWindow
    windows = dict(session.exec(select(ServiceWindow.id, ServiceWindow.name)).all()) if any(
        r.window_id for _a, r, _c in found) else {}
    units = dict(session.exec(select(Unit.id, Unit.name)).all())
    rows = []
    for appeal, rating, appellant in found:
        if appeal.cadre_id != me.id and me.id in subjects[rating.id]:
            continue  # 回避: an appeal about oneself is not the viewer's to see
        rows.append(AppealRow(appeal, rating, appellant.name,
                              targets.get(rating.cadre_id, "") if rating.cadre_id else windows.get(rating.window_id, ""),
                              units.get(rating.unit_id, ""),
                              rating.comment if shows_rater(me.id, subjects[rating.id]) else None,
                              office and appeal.state == AppealState.PENDING and appeal.cadre_id != me.id))
    return rows


def _load_appeal(session: Session, settings: Settings, who: Who, appeal_id: int) -> RatingAppeal:
    appeal = session.get(RatingAppeal, appeal_id)
    if appeal is None or not appeals.may_see(session, settings, _cadre(session, who), appeal):
        raise NotFound(f"appeal:{appeal_id}")
    return appeal


def appeal_photo(session: Session, settings: Settings, who: Who, appeal_id: int, address: str | None,
                 now: datetime) -> tuple[bytes, str]:
    """An appeal's photo (bytes, MIME type) for whoever may see the appeal, each showing written to the
    audit log (``appeal.photo``); ``NotFound`` otherwise, or when it has none."""
    appeal = _load_appeal(session, settings, who, appeal_id)
    path = evidence.photo_path(settings, appeal.photo_sha256) if appeal.photo_sha256 else None
    content = path.read_bytes() if path is not None and path.is_file() else None
    kind = evidence.picture_type(content) if content else None
    if kind is None:
        raise NotFound(f"appeal-photo:{appeal_id}")
    note(session, who, "appeal.photo", f"appeal:{appeal.id}", address, now)
    return content, kind


def appeal_decide(session: Session, settings: Settings, who: Who, appeal_id: int, decision: str, text: str,
                  address: str | None, now: datetime) -> str:
    """The 作风办's ruling from the console, by ``appeals.decide`` (the chat's rules, its outbox notice to the
    cadre); ``appeals.AppealError`` for a refusal."""
    _load_appeal(session, settings, who, appeal_id)
    state = appeals.DECISIONS.get(decision)
    if state is None:
        raise appeals.AppealError(texts.CONSOLE_APPEAL_PICK)
    appeals.decide(session, settings, _cadre(session, who), appeal_id, state, text, now)
    note(session, who, "appeal.decide", f"appeal:{appeal_id}", address, now, state)
    return texts.APPEAL_DECIDED_OK.format(id=appeal_id, decision=texts.APPEAL_STATES[state])


# -- 报表 forms and rankings ---------------------------------------------------------------------

def export_form(session: Session, settings: Settings, who: Who, form: int, half: str, unit_id: int | None):
    """附件 ``form`` of a half-year for one unit (or every unit in scope): the same file as ``export``."""
    from bot.reports import forms

    if who.role == Role.CADRE or form not in forms.FORMS:
        raise NotFound(f"form:{form}:{unit_id or 'all'}")
    scope = scope_of(session, settings, who)
    if unit_id is not None:
        units = [_check_unit(session, settings, who, unit_id)]
    else:
        units = forms.units_for(session, scope)
    [file] = forms.export(session, [form], half, units, settings)
    return file


def units_in_scope(session: Session, settings: Settings, who: Who) -> list[tuple[int, str]]:
    """The active units this user oversees, by name (the forms' download table)."""
    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    query = select(Unit.id, Unit.name).where(Unit.active == True)  # noqa: E712
    if scope is not None:
        query = query.where(Unit.id.in_(list(scope)))
    return list(session.exec(query.order_by(Unit.name)).all())


def ranking_view(session: Session, settings: Settings, who: Who, metric: str, level: str, half: str, now: datetime):
    from bot.reports import rankings

    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    if level not in (rankings.UNITS, rankings.CADRES) or metric not in rankings.METRICS:
        metric, level = rankings.SATISFACTION, rankings.UNITS
    return rankings.ranking(session, metric, level, half, settings, ledger.local_today(settings, now),
                            None if scope is None else list(scope))


# -- 抽查 spot-checks (电话随机访问) ------------------------------------------------------------------

def spotcheck_page(session: Session, settings: Settings, who: Who, half: str):
    """The spot-checks of the half-year in scope: whom to ring (full phone: calling is the job), and
    each cadre's summary. The same functions as the chat's /spotcheck."""
    from bot.reports import spotcheck

    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    units = None if scope is None else list(scope)
    return spotcheck.items(session, half, unit_ids=units)[:settings.console_page_size * 4], \
        spotcheck.summary(session, half, units)


def note_reveals(session: Session, who: Who, targets: list[str], address: str | None, now: datetime) -> None:
    """One ``phone.reveal`` audit row per full number a page showed (the spot-checks' households)."""
    for target in targets:
        note(session, who, "phone.reveal", target, address, now)


def spotcheck_draw(session: Session, settings: Settings, who: Who, half: str, address: str | None,
                   now: datetime) -> str:
    from bot.reports import spotcheck

    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    result = spotcheck.draw(session, half, settings.spot_check_share, now,
                            unit_ids=None if scope is None else list(scope))
    note(session, who, "spotcheck.draw", half, address, now, detail=f"seed {result.seed}, {result.new} new")
    if not result.drawn:
        return texts.SPOT_NOTHING_TO_DRAW
    again = texts.SPOT_DRAWN_AGAIN.format(count=result.again) if result.again else ""
    return texts.SPOT_DRAWN.format(new=result.new, seed=result.seed, again=again) + result.reasons_text()


def spotcheck_record(session: Session, settings: Settings, who: Who, check_id: int, outcome: str, text: str,
                     address: str | None, now: datetime) -> str:
    """Records what a spot-check call found (已核实 / 未接通 / 否认走访), for a check in scope."""
    from bot.reports import spotcheck

    if who.role == Role.CADRE:
        raise Forbidden()
    scope = scope_of(session, settings, who)
    item = spotcheck.item(session, check_id, None if scope is None else list(scope))
    if item is None:
        raise NotFound(f"spotcheck:{check_id}")
    if outcome not in spotcheck.OUTCOMES:
        return texts.CONSOLE_FORBIDDEN
    spotcheck.record(session, check_id, outcome, _cadre(session, who), now, (text or "").strip()[:300] or None)
    note(session, who, "spotcheck.record", f"spotcheck:{check_id}", address, now, detail=outcome)
    return texts.CONSOLE_DONE.format(what=f"{item.household} · {texts.SPOT_OUTCOMES[outcome]}")


# -- 管理 admin ----------------------------------------------------------------------------------

def _admin(who: Who) -> None:
    if who.role != Role.ADMIN:
        raise Forbidden()


def import_roster(session: Session, settings: Settings, who: Who, path: str, filename: str, address: str | None,
                  now: datetime):
    """Checks the uploaded roster and imports it in this transaction; ``RosterError`` (every row error,
    nothing written) or the import's report. The same checker and writer as ``import-roster``."""
    from bot.imports import roster

    _admin(who)
    report = roster.import_into(session, roster.read_roster(path), filename, minimum=settings.service_object_minimum,
                                max_deactivate_share=settings.roster_max_deactivate_share,
                                supervision_units=tuple(settings.supervision_units), settings=settings)
    note(session, who, "roster.import", filename[:130], address, now, detail=report.summary()[:500])
    return report


def roster_refused(session: Session, who: Who, filename: str, count: int, address: str | None, now: datetime) -> None:
    note(session, who, "roster.refused", filename[:130], address, now, detail=f"{count} errors")


def issue_binding_code(session: Session, settings: Settings, who: Who, mobile: str, address: str | None,
                       now: datetime) -> str:
    from bot.core.phones import normalize_mobile

    _admin(who)
    normalized = normalize_mobile(mobile)
    cadre = binding.cadre_by_mobile(session, normalized) if normalized else None
    if cadre is None:
        return texts.BINDCODE_UNKNOWN.format(mobile=(mobile or "")[:20])
    code, expires = binding.issue_code(session, cadre, now, settings)
    note(session, who, "binding.issue", f"cadre:{cadre.id}", address, now)
    unit = session.get(Unit, cadre.unit_id)
    return texts.CONSOLE_BINDCODE_ISSUED.format(name=cadre.name, unit=unit.name if unit else "", code=code,
                                               expires=expires.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M"))


def revoke_card(session: Session, settings: Settings, who: Who, mobile: str, address: str | None,
                now: datetime) -> str:
    """Revokes a cadre's evaluation card (a new version; the old QR code is refused from now on)."""
    from bot.core import evaluation
    from bot.core.phones import normalize_mobile

    _admin(who)
    normalized = normalize_mobile(mobile)
    cadre = binding.cadre_by_mobile(session, normalized) if normalized else None
    if cadre is None:
        return texts.BINDCODE_UNKNOWN.format(mobile=(mobile or "")[:20])
    evaluation.revoke(session, evaluation.code_for(session, TargetKind.CADRE, cadre.id, now), now)
    note(session, who, "card.revoke", f"cadre:{cadre.id}", address, now)
    return texts.CONSOLE_REVOKED.format(name=cadre.name)


def cards_pdf(session: Session, settings: Settings, who: Who, unit_id: int, folder: str, now: datetime) -> bytes:
    """The A4 PDF of a unit's evaluation cards (its cadres and windows), as ``qr-cards --unit`` prints it."""
    from bot.cards import card_specs, write_cards
    from bot.fonts import find_cjk_font

    _admin(who)
    unit = session.get(Unit, unit_id)
    if unit is None:
        raise NotFound(f"unit:{unit_id}")
    specs = card_specs(session, settings, now, unit=unit.name, encode=settings.card_encode)
    if not specs:
        raise NotFound(f"cards:{unit_id}")
    written = write_cards(specs, Path(folder), find_cjk_font(settings.card_font), progress=False, workers=1)
    return written.pdf.read_bytes()


@dataclass
class OutboxView:
    pending: int
    dead: list[OutboxMessage]
    unreachable: list[tuple[str, str, datetime]]  # cadre, channel, since


def outbox_view(session: Session, who: Who) -> OutboxView:
    _admin(who)
    pending = session.exec(select(func.count()).select_from(OutboxMessage)
                           .where(OutboxMessage.state == OutboxState.PENDING)).one()
    dead = session.exec(select(OutboxMessage).where(OutboxMessage.state.in_((OutboxState.DEAD,
                                                                             OutboxState.UNREACHABLE)))
                        .order_by(OutboxMessage.id.desc()).limit(100)).all()
    unreachable = session.exec(select(Cadre.name, ChatAccount.channel, ChatAccount.unreachable_at)
                               .join(Cadre, Cadre.id == ChatAccount.cadre_id)
                               .where(ChatAccount.unreachable_at != None)).all()  # noqa: E711
    return OutboxView(pending, list(dead), list(unreachable))


def admin_units(session: Session, who: Who) -> list[tuple[int, str]]:
    _admin(who)
    return list(session.exec(select(Unit.id, Unit.name).where(Unit.active == True).order_by(Unit.name)).all())  # noqa: E712


# -- 审计 audit ----------------------------------------------------------------------------------

@dataclass
class AuditPage:
    rows: list[AuditLog]
    actions: list[str]


def audit_rows(session: Session, who: Who, *, action: str = "", actor: str = "", since: datetime | None = None,
               limit: int | None = 200) -> AuditPage:
    """The audit log, newest first, filtered (admins only)."""
    _admin(who)
    query = select(AuditLog)
    if action:
        query = query.where(AuditLog.action == action)
    if actor:
        query = query.where(AuditLog.actor == actor)
    if since:
        query = query.where(AuditLog.at >= since)
    query = query.order_by(AuditLog.id.desc())
    if limit:
        query = query.limit(limit)
    actions = sorted(session.exec(select(AuditLog.action).distinct()).all())
    return AuditPage(list(session.exec(query).all()), actions)


def audit_csv(page: AuditPage, tz) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["时间", "操作人", "操作", "对象", "地址", "渠道", "详情"])
    for r in page.rows:
        writer.writerow([r.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"), r.actor, r.action, r.target or "",
                         r.address or "", r.channel or "", r.detail or ""])
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # BOM: Excel opens it as UTF-8


__all__ = ["NotFound", "Forbidden", "overview", "unit_page", "cadre_page", "ledger_page", "item_page", "item_act",
           "ratings_page", "reveal_phone", "may_reveal", "appeals_page", "appeal_photo", "appeal_decide", "export_form", "ranking_view", "import_roster",
           "issue_binding_code", "revoke_card", "outbox_view", "audit_rows", "audit_csv", "refuse", "note"]
