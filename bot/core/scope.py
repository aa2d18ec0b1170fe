"""Whose data a supervisor sees: the work-style office and admins see every unit, others their own."""

from __future__ import annotations

from sqlmodel import Session

from bot.config import Settings
from storage.models import Cadre, Role, Unit


def unit_scope(session: Session, cadre: Cadre, settings: Settings) -> set[int] | None:
    """The ids of the units ``cadre`` oversees, or None for all of them."""
    if cadre.role == Role.ADMIN:
        return None
    unit = session.get(Unit, cadre.unit_id)
    if unit is not None and unit.name in settings.supervision_units:
        return None
    return {cadre.unit_id}


def in_scope(scope: set[int] | None, unit_id: int | None) -> bool:
    return scope is None or unit_id in scope
