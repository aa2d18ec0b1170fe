"""The problem ledger (整改台账): who may do what to an item, in which state, and who hears of it.

    待交办 new ──assign──▶ 已交办 assigned ──progress──▶ 整改中 in_progress
                              │                              │
                              └────────────close─────────────┴──▶ 已办结 closed ──answer──▶ 已回访 answered
                                                                     ▲    │                     │
                              ◀────────────────reopen────────────────┘────┴─────────────────────┘

``RULES`` is the whole table: (action) -> roles allowed, states it starts from, the state it ends
in, and who is notified. Roles are relative to the item: ``supervisor`` (a supervisor or admin
whose scope covers the item), ``responsible`` (its A or B post), ``raiser`` (the chat account that
reported it). Every transition writes a ``ProblemEvent``; every notice goes through the outbox in
the same transaction. Closing an item whose raiser we can reach by chat tells them at once and
marks it answered; otherwise it waits for a call-back (``answer``) with the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core.scope import in_scope, problem_subjects, sees_problem, unit_scope
from bot.core.workdays import work_calendar
from bot.errors import UserError
from bot.core.outbox import SEND_CHANNELS, enqueue, enqueue_for_cadre, existing_keys
from storage import hot
from storage.models import Cadre, Problem, ProblemEvent, ProblemSource, ProblemStatus, Role, Unit

ASSIGN, PROGRESS, CLOSE, ANSWER, REOPEN = "assign", "progress", "close", "answer", "reopen"
SUPERVISOR, RESPONSIBLE, RAISER = "supervisor", "responsible", "raiser"
OPEN_STATES = (ProblemStatus.ASSIGNED, ProblemStatus.IN_PROGRESS)
NOTE_LIMIT = 500


class LedgerError(UserError):
    """The action is not allowed or its input is wrong; the message says why, nothing changed."""


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    from_states: frozenset[str]
    to_state: str
    notify: tuple[str, ...]  # "responsible" (A and B), "assigner", "raiser"


RULES: dict[str, Rule] = {
    ASSIGN: Rule(frozenset({SUPERVISOR}), frozenset({ProblemStatus.NEW}), ProblemStatus.ASSIGNED, ("responsible",)),
    PROGRESS: Rule(frozenset({RESPONSIBLE}), frozenset(OPEN_STATES), ProblemStatus.IN_PROGRESS, ()),
    CLOSE: Rule(frozenset({RESPONSIBLE}), frozenset(OPEN_STATES), ProblemStatus.CLOSED, ("assigner", "raiser")),
    ANSWER: Rule(frozenset({RESPONSIBLE, SUPERVISOR}), frozenset({ProblemStatus.CLOSED}), ProblemStatus.ANSWERED, ()),
    REOPEN: Rule(frozenset({SUPERVISOR, RAISER}), frozenset({ProblemStatus.CLOSED, ProblemStatus.ANSWERED}),
                 ProblemStatus.ASSIGNED, ("responsible",)),
}
ACTION_NAMES = {ASSIGN: "交办", PROGRESS: "进展", CLOSE: "办结", ANSWER: "回访", REOPEN: "重新交办", "handover": "转B岗",
                "create": "登记"}


def roles_of(session: Session, problem: Problem, settings: Settings, cadre: Cadre | None,
             channel: str | None = None, user_id: str | None = None) -> set[str]:
    roles: set[str] = set()
    if cadre is not None and sees_problem(session, cadre, settings, problem):
        roles.add(SUPERVISOR)
    if cadre is not None and cadre.id in (problem.responsible_a_id, problem.responsible_b_id):
        roles.add(RESPONSIBLE)
    if channel and user_id and (problem.raiser_channel, problem.raiser_user_id) == (channel, user_id):
        roles.add(RAISER)
    return roles


def allowed(action: str, roles: set[str], state: str) -> bool:
    rule = RULES[action]
    return bool(roles & rule.roles) and state in rule.from_states


def allowed_actions(roles: set[str], state: str) -> list[str]:
    return [action for action in RULES if allowed(action, roles, state)]


def default_deadline(settings: Settings, source: str, today: date) -> date:
    days = settings.ledger_deadline_days.get(source, 10)
    return work_calendar(settings.holiday_file).add_working_days(today, days)


def local_today(settings: Settings, now: datetime) -> date:
    return now.astimezone(settings.tz).date()


def is_overdue(problem: Problem, today: date) -> bool:
    return problem.status in OPEN_STATES and problem.deadline is not None and problem.deadline < today


def slip_number(problem: Problem) -> str:
    """交办单编号: the year of assignment and the item's number."""
    year = problem.assigned_at.year if problem.assigned_at else problem.created_at.year
    return f"JB{year}-{problem.id:05d}"


def record(session: Session, problem: Problem, *, action: str, actor: Cadre | None, actor_label: str | None,
           from_status: str | None, now: datetime, note: str | None = None) -> ProblemEvent:
    event = ProblemEvent(problem_id=problem.id, at=now, actor_cadre_id=actor.id if actor else None,
                         actor=actor_label or (actor.name if actor else "系统"), action=action,
                         from_status=from_status, to_status=problem.status, note=note)
    session.add(event)
    session.flush()
    return event


def _clean(note: str | None, what: str) -> str:
    note = (note or "").strip()
    if not note:
        raise LedgerError(texts.LEDGER_NEED_TEXT.format(what=what))
    if len(note) > NOTE_LIMIT:
        raise LedgerError(texts.TEXT_TOO_LONG.format(length=len(note), limit=NOTE_LIMIT))
    return note


def act(session: Session, settings: Settings, problem_id: int, action: str, *, now: datetime,
        actor: Cadre | None = None, channel: str | None = None, user_id: str | None = None, note: str | None = None,
        unit_id: int | None = None, a_id: int | None = None, b_id: int | None = None,
        deadline: date | None = None) -> Problem:
    """Carries out one action on an item, or raises ``LedgerError`` and changes nothing."""
    problem = session.exec(select(Problem).where(Problem.id == problem_id).with_for_update()).first()
    if problem is None:
        raise LedgerError(texts.LEDGER_NO_ITEM.format(id=problem_id))
    roles = roles_of(session, problem, settings, actor, channel, user_id)
    rule = RULES[action]
    if not roles & rule.roles:
        raise LedgerError(texts.LEDGER_NOT_YOURS.format(action=ACTION_NAMES[action]))
    if problem.status not in rule.from_states:
        raise LedgerError(texts.LEDGER_WRONG_STATE.format(
            action=ACTION_NAMES[action], status=texts.STATUS_NAMES.get(problem.status, problem.status)))
    today = local_today(settings, now)
    before = problem.status
    if action == ASSIGN:
        note = _assign(session, settings, problem, actor, unit_id, a_id, b_id, deadline, today, now)
    elif action == PROGRESS:
        note = _clean(note, "进展情况")
        problem.last_action_at = now
    elif action == CLOSE:
        problem.result = _clean(note, "办理结果")
        problem.closed_at = problem.last_action_at = now
        note = problem.result
    elif action == ANSWER:
        problem.answer = _clean(note, "回访情况")
        problem.answered_at = now
        note = problem.answer
    elif action == REOPEN:
        note = (note or "").strip()[:NOTE_LIMIT] or texts.LEDGER_REOPEN_DEFAULT
        problem.reopened += 1
        problem.deadline = deadline or default_deadline(settings, problem.source, today)
        problem.assigned_at, problem.last_action_at, problem.b_asked_at = now, None, None
        problem.closed_at = problem.answered_at = None
    problem.status = rule.to_state
    problem.updated_at = now
    session.add(problem)
    label = texts.RAISER_LABEL if RAISER in roles and actor is None else None
    event = record(session, problem, action=action, actor=actor, actor_label=label, from_status=before, now=now,
                   note=note)
    _notify(session, settings, problem, rule, event, now)
    return problem


def _assign(session, settings, problem, actor, unit_id, a_id, b_id, deadline, today, now) -> str:
    unit = session.get(Unit, unit_id) if unit_id else None
    if unit is None or not unit.active:
        raise LedgerError(texts.LEDGER_NEED_UNIT)
    if not in_scope(unit_scope(session, actor, settings), unit.id):
        raise LedgerError(texts.LEDGER_UNIT_OUT_OF_SCOPE.format(unit=unit.name))
    a, b = session.get(Cadre, a_id) if a_id else None, session.get(Cadre, b_id) if b_id else None
    for post, person in (("A岗", a), ("B岗", b)):
        if person is None or not person.active or person.unit_id != unit.id:
            raise LedgerError(texts.LEDGER_NEED_POST.format(post=post, unit=unit.name))
    if a.id == b.id:
        raise LedgerError(texts.LEDGER_SAME_AB)
    subjects = problem_subjects(session, problem.id)
    for post, person in (("A岗", a), ("B岗", b)):
        if person.id in subjects:  # 回避: nobody handles a 差评 about themselves
            raise LedgerError(texts.LEDGER_POST_IS_SUBJECT.format(post=post, name=person.name))
    deadline = deadline or default_deadline(settings, problem.source, today)
    if deadline < today:
        raise LedgerError(texts.LEDGER_PAST_DEADLINE.format(date=deadline.isoformat()))
    problem.responsible_unit_id, problem.responsible_a_id, problem.responsible_b_id = unit.id, a.id, b.id
    problem.assigned_by_id, problem.assigned_at, problem.deadline = actor.id, now, deadline
    problem.last_action_at = problem.b_asked_at = None
    return texts.LEDGER_ASSIGN_NOTE.format(unit=unit.name, a=a.name, b=b.name, deadline=deadline.isoformat())


def _notify(session: Session, settings: Settings, problem: Problem, rule: Rule, event: ProblemEvent,
            now: datetime) -> None:
    key = f"ledger:{problem.id}:ev{event.id}"
    summary = texts.LEDGER_ITEM_LINE.format(id=problem.id, category=problem.category, content=_short(problem.content))
    if "responsible" in rule.notify:
        body = texts.LEDGER_NOTICE_ASSIGNED.format(
            slip=slip_number(problem), item=summary, deadline=problem.deadline.isoformat(),
            again=texts.LEDGER_AGAIN if problem.reopened else "")
        for cadre_id in (problem.responsible_a_id, problem.responsible_b_id):
            enqueue_for_cadre(session, cadre_id, key=key, kind="ledger", body=body, now=now, settings=settings,
                              channels=SEND_CHANNELS)
    if "assigner" in rule.notify and problem.assigned_by_id:
        enqueue_for_cadre(session, problem.assigned_by_id, key=key, kind="ledger", now=now, settings=settings,
                          channels=SEND_CHANNELS, body=texts.LEDGER_NOTICE_CLOSED.format(item=summary, result=problem.result))
    if "raiser" in rule.notify and problem.raiser_channel and problem.raiser_user_id:
        enqueue(session, key=f"{key}:raiser", kind="ledger-answer", channel=problem.raiser_channel,
                recipient=problem.raiser_user_id, now=now, settings=settings,
                body=texts.LEDGER_TELL_RAISER.format(content=_short(problem.content), result=problem.result))
        # The raiser is told by chat: that is the answer (已回访), recorded as the system's step.
        before = problem.status
        problem.status, problem.answered_at = ProblemStatus.ANSWERED, now
        problem.answer = texts.LEDGER_ANSWERED_BY_CHAT
        record(session, problem, action=ANSWER, actor=None, actor_label="系统", from_status=before, now=now,
               note=problem.answer)


# The states an item may be opened in: 待交办 (on the ledger), 当场解决 (a visit's difficulty solved
# there and then), 已办结 (a hotline item that arrived already handled).
OPENING_STATES = frozenset({ProblemStatus.NEW, ProblemStatus.SOLVED_ON_SPOT, ProblemStatus.CLOSED})


def open_problem(session: Session, *, source: ProblemSource, category: str, content: str, now: datetime,
                 actor: Cadre | None = None, actor_label: str | None = None,
                 status: ProblemStatus = ProblemStatus.NEW, note: str | None = None,
                 unit_id: int | None = None, household_id: int | None = None, visit_id: int | None = None,
                 service_object_id: int | None = None, remit: str | None = None,
                 raiser_name: str | None = None, raiser_phone: str | None = None,
                 raiser_channel: str | None = None, raiser_user_id: str | None = None,
                 responsible_unit_id: int | None = None, result: str | None = None,
                 hotline_status: str | None = None, item_note: str | None = None, to_office: bool = False) -> Problem:
    """Opens an item on the ledger (登记), from any source, and writes its creation to the history.

    The one place a ``Problem`` row is created: a visit's difficulty, an everyday contact, a service
    object, a 差评, a ``/report`` complaint and a hotline import all come here. ``actor`` is the cadre
    who took it in (they become ``raised_by`` and, unless ``unit_id`` says otherwise, their unit is
    the item's); without one, ``actor_label`` names who it was (群众, 热线导入). ``note`` goes on the
    history entry, ``item_note`` is the item's own 备注. ``to_office``: a 差评 about a supervisor (or
    about the only supervisor of a unit) goes to the 作风办, whoever oversees every unit.
    """
    status = ProblemStatus(status)
    if status not in OPENING_STATES:
        raise ValueError(f"a problem cannot be opened as {status!r}")
    problem = Problem(source=ProblemSource(source), status=status, category=category, content=content,
                      household_id=household_id, visit_id=visit_id, service_object_id=service_object_id,
                      remit=remit, raised_by_cadre_id=actor.id if actor else None,
                      unit_id=unit_id if unit_id is not None else (actor.unit_id if actor else None),
                      raiser_name=raiser_name, raiser_phone=raiser_phone, raiser_channel=raiser_channel,
                      raiser_user_id=raiser_user_id, responsible_unit_id=responsible_unit_id, result=result,
                      closed_at=now if status == ProblemStatus.CLOSED else None, hotline_status=hotline_status,
                      note=item_note, created_at=now, updated_at=now, to_office=to_office)
    session.add(problem)
    session.flush()  # the caller shows the item's number
    # Not ``record``: nothing needs this entry's id, so it is one statement, not an ORM object to flush.
    hot.add_problem_event(session, problem_id=problem.id, at=now, actor_cadre_id=actor.id if actor else None,
                          actor=actor_label or (actor.name if actor else "系统"), action="create",
                          from_status=None, to_status=problem.status, note=note)
    return problem


def history(session: Session, problem_id: int) -> list[ProblemEvent]:
    return list(session.exec(select(ProblemEvent).where(ProblemEvent.problem_id == problem_id)
                             .order_by(ProblemEvent.at, ProblemEvent.id)).all())


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- what the scheduler does with the ledger -------------------------------------------------

def ledger_tick(session: Session, settings: Settings, now: datetime) -> int:
    """AB handover, the day-before reminder, and overdue escalation; each once per item and deadline."""
    today = local_today(settings, now)
    calendar = work_calendar(settings.holiday_file)
    tomorrow = calendar.add_working_days(today, 1)
    items = session.exec(select(Problem).where(Problem.status.in_(OPEN_STATES))).all()
    heads = session.exec(select(Cadre).where(Cadre.role.in_(Role.HEADS), Cadre.active == True)).all()  # noqa: E712
    scopes = {head.id: unit_scope(session, head, settings) for head in heads}
    planned: list[tuple[str, int, str]] = []  # (key, cadre id, body)
    written = 0
    for problem in items:
        summary = texts.LEDGER_ITEM_LINE.format(id=problem.id, category=problem.category,
                                                content=_short(problem.content))
        idle_since = problem.last_action_at or problem.assigned_at
        if (problem.b_asked_at is None and idle_since is not None
                and now - idle_since >= timedelta(hours=settings.ab_handover_hours)):
            problem.b_asked_at = now
            session.add(problem)
            event = record(session, problem, action="handover", actor=None, actor_label="系统",
                           from_status=problem.status, now=now, note=texts.LEDGER_HANDOVER_NOTE)
            planned.append((f"ledger:{problem.id}:ev{event.id}", problem.responsible_b_id,
                            texts.LEDGER_NOTICE_HANDOVER.format(item=summary, hours=settings.ab_handover_hours,
                                                                deadline=problem.deadline.isoformat())))
        if problem.deadline is None:
            continue
        if today < problem.deadline <= tomorrow:
            for cadre_id in sorted({problem.responsible_a_id, problem.responsible_b_id}):
                planned.append((f"ledger-due:{problem.id}:{problem.deadline.isoformat()}", cadre_id,
                                texts.LEDGER_NOTICE_DUE.format(item=summary, deadline=problem.deadline.isoformat())))
        if problem.deadline < today:
            body = texts.LEDGER_NOTICE_OVERDUE.format(item=summary, deadline=problem.deadline.isoformat(),
                                                      days=calendar.working_days_between(problem.deadline, today))
            for head in heads:
                if in_scope(scopes[head.id], problem.responsible_unit_id) and (
                        problem.source != ProblemSource.RATING
                        or sees_problem(session, head, settings, problem, scopes[head.id])):
                    planned.append((f"ledger-overdue:{problem.id}:{problem.deadline.isoformat()}", head.id, body))
    # Most of these were written on an earlier tick: look them up in one query, not one insert each.
    done = existing_keys(session, [f"{key}:c{cadre_id}" for key, cadre_id, _ in planned])
    for key, cadre_id, body in planned:
        if f"{key}:c{cadre_id}" not in done:
            written += enqueue_for_cadre(session, cadre_id, key=key, kind="ledger", body=body, now=now,
                                         settings=settings, channels=SEND_CHANNELS) is not None
    return written
