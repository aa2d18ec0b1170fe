"""Whose data a supervisor sees, and what nobody may see of a 差评 about themselves.

Oversight (监督范围): the 作风办 (``Role.OFFICE``) and admins see every unit by their role; a
supervisor sees their own unit, or every unit when their unit is named in ``SUPERVISION_UNITS``
(kept as an extra for rosters that still give the office the 主管 role).

Conflicts of interest (回避): a 差评 is about a cadre (the one rated, or the cadres on duty at the
rated window). Those cadres are its *subjects*: they do not act as its supervisor, may not be its A岗
or B岗, and are never shown what identifies its rater, wherever the rating is listed (chat, digests,
the console): the rater's name and phone (not even masked), and the comment, which is free text the
rater typed and may name them, their address or their number (``shows_rater`` is that rule, for
every view). A 差评 whose subject is a supervisor, or whose unit has no other supervisor, is marked
``to_office``: only those who oversee every unit handle it (the 作风办).
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import Session, select

from bot.config import Settings
from storage.models import Cadre, Problem, Rating, Role, Unit, WindowDuty


def unit_scope(session: Session, cadre: Cadre, settings: Settings) -> set[int] | None:
    """The ids of the units ``cadre`` oversees, or None for all of them."""
    if cadre.role in (Role.ADMIN, Role.OFFICE):
        return None
    unit = session.get(Unit, cadre.unit_id)
    if unit is not None and unit.name in settings.supervision_units:
        return None
    return {cadre.unit_id}


def in_scope(scope: set[int] | None, unit_id: int | None) -> bool:
    return scope is None or unit_id in scope


def oversees_all(session: Session, cadre: Cadre, settings: Settings) -> bool:
    return cadre.role in Role.OVERSEERS and unit_scope(session, cadre, settings) is None


# -- conflicts of interest (回避) --------------------------------------------------------------------


def rating_subjects(session: Session, rating: Rating) -> set[int]:
    """The cadres a rating is about: the cadre rated, or the cadres on duty at the rated window."""
    if rating.cadre_id is not None:
        return {rating.cadre_id}
    if rating.window_id is None:
        return set()
    return set(session.exec(select(WindowDuty.cadre_id).where(WindowDuty.window_id == rating.window_id)).all())


def subjects_of(session: Session, ratings) -> dict[int, set[int]]:
    """``rating_subjects`` of many ratings (by rating id), the windows' duty rosters read in one query."""
    windows = {r.window_id for r in ratings if r.cadre_id is None and r.window_id is not None}
    duty: dict[int, set[int]] = {}
    if windows:
        for window_id, cadre_id in session.exec(select(WindowDuty.window_id, WindowDuty.cadre_id)
                                                .where(WindowDuty.window_id.in_(sorted(windows)))).all():
            duty.setdefault(window_id, set()).add(cadre_id)
    return {r.id: {r.cadre_id} if r.cadre_id is not None else set(duty.get(r.window_id, ())) for r in ratings}


def shows_rater(viewer_id: int, subjects: set[int]) -> bool:
    """Whether a viewer may be shown what identifies a rating's rater (phone, even masked; comment):
    never when the rating is about them (``subjects``: ``rating_subjects`` or ``subjects_of``)."""
    return viewer_id not in subjects


def problem_subjects(session: Session, problem_id: int | None) -> set[int]:
    """The cadres a ledger item is about (empty unless it came from a 差评)."""
    if problem_id is None:
        return set()
    rating = session.exec(select(Rating).where(Rating.problem_id == problem_id)).first()
    return rating_subjects(session, rating) if rating is not None else set()


def about_cadre(cadre_id: int):
    """A SQL condition on ``Problem.id``: the item is a 差评 about ``cadre_id`` (rated, or on duty at
    the rated window)."""
    duty_windows = select(WindowDuty.window_id).where(WindowDuty.cadre_id == cadre_id)
    rated = select(Rating.problem_id).where(Rating.problem_id.is_not(None),
                                            or_(Rating.cadre_id == cadre_id, Rating.window_id.in_(duty_windows)))
    return Problem.id.in_(rated)


def needs_office(session: Session, unit_id: int, subjects: set[int]) -> bool:
    """Whether a 差评 about ``subjects`` goes to the 作风办: a subject oversees others, or the unit has no
    supervisor left once the subjects step aside."""
    if not subjects:
        return False
    people = session.exec(select(Cadre).where(Cadre.id.in_(subjects))).all()
    if any(p.role in Role.OVERSEERS for p in people):
        return True
    others = session.exec(select(Cadre.id).where(Cadre.unit_id == unit_id, Cadre.role == Role.SUPERVISOR,
                                                 Cadre.active == True, Cadre.id.not_in(subjects))).first()  # noqa: E712
    return others is None


def sees_problem(session: Session, cadre: Cadre, settings: Settings, problem: Problem,
                 scope: set[int] | None | str = "?") -> bool:
    """Whether ``cadre`` oversees this item: in scope, an office item only for whoever oversees every
    unit, and never an item about themselves."""
    if cadre.role not in Role.OVERSEERS:
        return False
    if scope == "?":
        scope = unit_scope(session, cadre, settings)
    if problem.to_office and scope is not None:
        return False
    if not (scope is None or problem.unit_id in scope or problem.responsible_unit_id in scope):
        return False
    return cadre.id not in problem_subjects(session, problem.id)


def overseen_problems(query, cadre: Cadre, scope: set[int] | None):
    """``query`` (a select of Problem) narrowed to what ``cadre`` oversees, as ``sees_problem`` decides."""
    if scope is not None:
        query = query.where(or_(Problem.unit_id.in_(scope), Problem.responsible_unit_id.in_(scope)),
                            Problem.to_office == False)  # noqa: E712
    return query.where(~about_cadre(cadre.id))
