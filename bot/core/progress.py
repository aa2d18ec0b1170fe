"""Who has visited whom this half-year: the cadre's own progress and a unit's overview.

The counts of progress (assigned households, those visited this half-year, everyday contacts,
service objects) are defined once, in ``storage.hot.progress_counts``: ``/progress`` runs them for
one cadre as a hot statement, ``/unit`` correlated with the unit's cadres; each in one query.

A visit its household denied on a spot-check (``Visit.disputed_at``) does not count until a supervisor
rules that it stands (bot.reports.spotcheck).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from storage import hot
from storage.hot import HouseholdStatus
from storage.models import Cadre, Household, Visit

__all__ = ["HouseholdStatus", "CadreProgress", "households_with_status", "unvisited_by_cadre", "cadre_progress",
           "unit_progress", "progress_bar"]


def households_with_status(db, cadre_id: int, half: str) -> list[HouseholdStatus]:
    """The cadre's active households, unvisited this half-year first, then by address (one query;
    ``db`` is a session or a connection)."""
    return hot.households_with_status(db, cadre_id, half)


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
    cadre: Cadre | hot.BoundCadre
    visited: int
    assigned: int
    contacts: int
    service_objects: int


def cadre_progress(db, cadre: Cadre | hot.BoundCadre, half: str) -> CadreProgress:
    """One cadre's progress in one statement (the same counts as ``unit_progress``)."""
    r = hot.cadre_progress(db, cadre.id, half)
    return CadreProgress(cadre, r.visited, r.assigned, r.contacts, r.objects)


def unit_progress(session: Session, cadres: list[Cadre], half: str) -> list[CadreProgress]:
    """Progress of several cadres in one query, whatever their number."""
    ids = [c.id for c in cadres]
    if not ids:
        return []
    counts = hot.progress_counts(Cadre.id, half)  # correlated with each cadre of the outer query
    rows = session.exec(select(Cadre.id, *counts).where(Cadre.id.in_(ids))).all()
    by_id = {row.id: row for row in rows}
    return [CadreProgress(c, by_id[c.id].visited, by_id[c.id].assigned, by_id[c.id].contacts, by_id[c.id].objects)
            for c in cadres]


def progress_bar(done: int, total: int, width: int = 10) -> str:
    if total <= 0:
        return ""
    filled = round(width * done / total)
    return " " + "▓" * filled + "░" * (width - filled)
