"""Who has visited whom this half-year: the cadre's own progress and a unit's overview.

A visit its household denied on a spot-check (``Visit.disputed_at``) does not count until a supervisor
rules that it stands (bot.reports.spotcheck)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, literal_column, true
from sqlmodel import Session, select

from storage.models import Cadre, EverydayContact, Household, ServiceObject, Visit
from storage.prepared import Prepared


@dataclass(frozen=True)
class HouseholdStatus:
    id: int
    name: str
    address: str
    visited: bool  # this half-year, by this cadre


_h, _v = Household.__table__, Visit.__table__
_HOUSEHOLDS = Prepared(
    select(_h.c.id, _h.c.name, _h.c.address,
           exists().where(_v.c.household_id == _h.c.id, _v.c.cadre_id == bindparam("cadre_id"),
                          _v.c.half == bindparam("half"), _v.c.disputed_at.is_(None)).label("visited"))
    .where(_h.c.cadre_id == bindparam("cadre_id"), _h.c.active == true())
    .order_by(literal_column("visited"), _h.c.address, _h.c.name))


def households_with_status(db, cadre_id: int, half: str) -> list[HouseholdStatus]:
    """The cadre's active households, unvisited this half-year first, then by address (one query;
    ``db`` is a session or a connection)."""
    return [HouseholdStatus(r["id"], r["name"], r["address"], bool(r["visited"]))
            for r in _HOUSEHOLDS.rows(db, cadre_id=cadre_id, half=half)]


def unvisited_by_cadre(session: Session, cadre_ids: list[int], half: str) -> dict[int, list[Household]]:
    """Each cadre's active households not visited this half-year, in one query for all of them."""
    if not cadre_ids:
        return {}
    visited = select(Visit.household_id).where(Visit.half == half, Visit.cadre_id == Household.cadre_id,
                                               Visit.disputed_at.is_(None))
    rows = session.exec(
        select(Household).where(Household.cadre_id.in_(cadre_ids), Household.active == True,  # noqa: E712
                                Household.id.not_in(visited.scalar_subquery()))
        .order_by(Household.cadre_id, Household.address, Household.name)
    ).all()
    out: dict[int, list[Household]] = {}
    for household in rows:
        out.setdefault(household.cadre_id, []).append(household)
    return out


@dataclass(frozen=True)
class CadreProgress:
    cadre: Cadre
    visited: int
    assigned: int
    contacts: int
    service_objects: int


_c, _sv, _ec = Cadre.__table__, ServiceObject.__table__, EverydayContact.__table__
_ONE_CADRE = Prepared(select(
    select(func.count()).where(_h.c.cadre_id == bindparam("cadre_id"), _h.c.active == true())
    .scalar_subquery().label("assigned"),
    select(func.count(func.distinct(_v.c.household_id))).select_from(_v.join(_h, _h.c.id == _v.c.household_id))
    .where(_v.c.cadre_id == bindparam("cadre_id"), _v.c.half == bindparam("half"), _h.c.active == true(),
           _h.c.cadre_id == _v.c.cadre_id, _v.c.disputed_at.is_(None))
    .scalar_subquery().label("visited"),
    select(func.count()).where(_ec.c.cadre_id == bindparam("cadre_id"), _ec.c.half == bindparam("half"))
    .scalar_subquery().label("contacts"),
    select(func.count()).where(_sv.c.cadre_id == bindparam("cadre_id"), _sv.c.active == true())
    .scalar_subquery().label("objects"),
))


def cadre_progress(db, cadre: Cadre, half: str) -> CadreProgress:
    """One cadre's progress in one statement (the same counts as ``unit_progress``)."""
    r = _ONE_CADRE.first(db, cadre_id=cadre.id, half=half)
    return CadreProgress(cadre, r["visited"], r["assigned"], r["contacts"], r["objects"])


def unit_progress(session: Session, cadres: list[Cadre], half: str) -> list[CadreProgress]:
    """Progress of several cadres with four grouped queries, whatever their number."""
    ids = [c.id for c in cadres]
    if not ids:
        return []
    assigned = dict(session.exec(
        select(Household.cadre_id, func.count()).where(Household.cadre_id.in_(ids), Household.active == True)  # noqa: E712
        .group_by(Household.cadre_id)
    ).all())
    visited = dict(session.exec(
        select(Visit.cadre_id, func.count(func.distinct(Visit.household_id)))
        .join(Household, Household.id == Visit.household_id)
        .where(Visit.cadre_id.in_(ids), Visit.half == half, Household.active == True,  # noqa: E712
               Household.cadre_id == Visit.cadre_id, Visit.disputed_at.is_(None))
        .group_by(Visit.cadre_id)
    ).all())
    contacts = dict(session.exec(
        select(EverydayContact.cadre_id, func.count()).where(EverydayContact.cadre_id.in_(ids),
                                                             EverydayContact.half == half)
        .group_by(EverydayContact.cadre_id)
    ).all())
    objects = dict(session.exec(
        select(ServiceObject.cadre_id, func.count()).where(ServiceObject.cadre_id.in_(ids),
                                                           ServiceObject.active == True)  # noqa: E712
        .group_by(ServiceObject.cadre_id)
    ).all())
    return [CadreProgress(c, visited.get(c.id, 0), assigned.get(c.id, 0), contacts.get(c.id, 0),
                          objects.get(c.id, 0)) for c in cadres]


def progress_bar(done: int, total: int, width: int = 10) -> str:
    if total <= 0:
        return ""
    filled = round(width * done / total)
    return " " + "▓" * filled + "░" * (width - filled)
