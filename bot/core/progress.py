"""Who has visited whom this half-year: the cadre's own progress and a unit's overview."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from storage.models import Cadre, EverydayContact, Household, ServiceObject, Visit


@dataclass(frozen=True)
class HouseholdStatus:
    household: Household
    visited: bool


def households_with_status(session: Session, cadre_id: int, half: str) -> list[HouseholdStatus]:
    """The cadre's active households, unvisited this half-year first, then by address."""
    visited_ids = set(session.exec(
        select(Visit.household_id).where(Visit.cadre_id == cadre_id, Visit.half == half).distinct()
    ).all())
    households = session.exec(
        select(Household).where(Household.cadre_id == cadre_id, Household.active == True)  # noqa: E712
        .order_by(Household.address, Household.name)
    ).all()
    items = [HouseholdStatus(h, h.id in visited_ids) for h in households]
    return sorted(items, key=lambda item: item.visited)  # stable: keeps address order within groups


def unvisited_by_cadre(session: Session, cadre_ids: list[int], half: str) -> dict[int, list[Household]]:
    """Each cadre's active households not visited this half-year, in one query for all of them."""
    if not cadre_ids:
        return {}
    visited = select(Visit.household_id).where(Visit.half == half, Visit.cadre_id == Household.cadre_id)
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


def cadre_progress(session: Session, cadre: Cadre, half: str) -> CadreProgress:
    return unit_progress(session, [cadre], half)[0]


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
               Household.cadre_id == Visit.cadre_id)
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
