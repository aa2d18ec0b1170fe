"""The ledger's lifecycle as a table, random sequences of actions, and the scheduler's ledger duties."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from sqlmodel import select

from bot.core import ledger
from bot.core.ledger import ANSWER, ASSIGN, CLOSE, PROGRESS, REOPEN, LedgerError
from storage.db import session_scope
from storage.models import Cadre, ChatAccount, OutboxMessage, Problem, ProblemEvent, ProblemStatus, Role, Unit

S = ProblemStatus
STATES = [S.NEW, S.ASSIGNED, S.IN_PROGRESS, S.CLOSED, S.ANSWERED, S.SOLVED_ON_SPOT]
ROLES = ["supervisor", "responsible", "raiser", "other"]
ACTIONS = [ASSIGN, PROGRESS, CLOSE, ANSWER, REOPEN]
TZ = ZoneInfo("Asia/Shanghai")

# (role, action, state) -> (new state, who is notified). Everything not listed is refused.
ALLOWED = {
    ("supervisor", ASSIGN, S.NEW): (S.ASSIGNED, {"A", "B"}),
    ("responsible", PROGRESS, S.ASSIGNED): (S.IN_PROGRESS, set()),
    ("responsible", PROGRESS, S.IN_PROGRESS): (S.IN_PROGRESS, set()),
    # The raiser has a chat here: closing tells them at once, which is the answer (已回访).
    ("responsible", CLOSE, S.ASSIGNED): (S.ANSWERED, {"assigner", "raiser"}),
    ("responsible", CLOSE, S.IN_PROGRESS): (S.ANSWERED, {"assigner", "raiser"}),
    ("responsible", ANSWER, S.CLOSED): (S.ANSWERED, set()),
    ("supervisor", ANSWER, S.CLOSED): (S.ANSWERED, set()),
    ("supervisor", REOPEN, S.CLOSED): (S.ASSIGNED, {"A", "B"}),
    ("supervisor", REOPEN, S.ANSWERED): (S.ASSIGNED, {"A", "B"}),
    ("raiser", REOPEN, S.CLOSED): (S.ASSIGNED, {"A", "B"}),
    ("raiser", REOPEN, S.ANSWERED): (S.ASSIGNED, {"A", "B"}),
}


class Office:
    """The work-style office's supervisor, a bureau with A and B posts, an outsider, a citizen in chat."""

    def __init__(self, db, now):
        with session_scope(db) as s:
            office, bureau, other_unit = Unit(name="市作风办"), Unit(name="市住建局"), Unit(name="市教育局")
            s.add_all([office, bureau, other_unit])
            s.flush()
            self.bureau, self.other_unit = bureau.id, other_unit.id
            self.sup = Cadre(name="督查", unit_id=office.id, mobile="13800000021", role=Role.SUPERVISOR)
            self.a = Cadre(name="甲岗", unit_id=bureau.id, mobile="13800000022", role=Role.CADRE)
            self.b = Cadre(name="乙岗", unit_id=bureau.id, mobile="13800000023", role=Role.CADRE)
            self.other = Cadre(name="旁人", unit_id=bureau.id, mobile="13800000024", role=Role.CADRE)
            self.bureau_head = Cadre(name="局长", unit_id=bureau.id, mobile="13800000025", role=Role.SUPERVISOR)
            s.add_all([self.sup, self.a, self.b, self.other, self.bureau_head])
            s.flush()
            for i, person in enumerate([self.sup, self.a, self.b, self.other, self.bureau_head]):
                s.add(ChatAccount(channel="telegram", external_user_id=f"p{i}", cadre_id=person.id, bound_at=now,
                                  bound_by="code"))
        self.recipients = {self.a.id: "A", self.b.id: "B", self.sup.id: "assigner"}

    def problem(self, db, status, now, *, raiser_chat=True) -> int:
        with session_scope(db) as s:
            p = Problem(source="complaint", status=status, category="物业", content="电梯坏了", created_at=now,
                        updated_at=now, raiser_channel="test" if raiser_chat else None,
                        raiser_user_id="citizen" if raiser_chat else None)
            if status != S.NEW:
                p.responsible_unit_id, p.responsible_a_id, p.responsible_b_id = self.bureau, self.a.id, self.b.id
                p.assigned_by_id, p.assigned_at, p.deadline = self.sup.id, now, date(2026, 12, 1)
            if status in (S.CLOSED, S.ANSWERED):
                p.result, p.closed_at = "已维修", now
            if status == S.ANSWERED:
                p.answer, p.answered_at = "满意", now
            s.add(p)
            s.flush()
            return p.id

    def actor(self, role):
        return {"supervisor": (self.sup, None, None), "responsible": (self.a, None, None),
                "raiser": (None, "test", "citizen"), "other": (self.other, "test", "p3")}[role]

    def act(self, db, pid, role, action, now, settings):
        cadre, channel, user = self.actor(role)
        with session_scope(db) as s:
            if cadre is not None:
                cadre = s.get(Cadre, cadre.id)
            return ledger.act(s, settings, pid, action, now=now, actor=cadre, channel=channel, user_id=user,
                              note="处理说明", unit_id=self.bureau, a_id=self.a.id, b_id=self.b.id).status


def snapshot(db, pid):
    with session_scope(db) as s:
        p = s.get(Problem, pid)
        events = s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == pid)).all()
        rows = s.exec(select(OutboxMessage)).all()
        return p.model_dump(), len(events), len(rows)


@pytest.fixture
def office(db, clock):
    return Office(db, clock())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("state", STATES)
def test_lifecycle_table(db, settings, clock, office, role, action, state):
    pid = office.problem(db, state, clock())
    before = snapshot(db, pid)
    expected = ALLOWED.get((role, action, state))
    if expected is None:
        with pytest.raises(LedgerError):
            office.act(db, pid, role, action, clock(), settings)
        assert snapshot(db, pid) == before  # refused: nothing changed, nobody told
        return
    new_state, notified = expected
    assert office.act(db, pid, role, action, clock(), settings) == new_state
    with session_scope(db) as s:
        rows = s.exec(select(OutboxMessage)).all()
        told = {office.recipients.get(r.cadre_id) if r.cadre_id else "raiser" for r in rows}
        events = s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == pid)).all()
    assert told == notified
    assert events[0].action == action and events[0].from_status == state


def test_closing_without_a_chat_waits_for_the_call_back(db, settings, clock, office):
    pid = office.problem(db, S.IN_PROGRESS, clock(), raiser_chat=False)
    assert office.act(db, pid, "responsible", CLOSE, clock(), settings) == S.CLOSED
    assert office.act(db, pid, "responsible", ANSWER, clock(), settings) == S.ANSWERED


@pytest.mark.parametrize("change, message", [
    ({"note": "  "}, "请填写办理结果"),
    ({"note": "长" * 600}, "内容过长"),
])
def test_closing_needs_a_result(db, settings, clock, office, change, message):
    pid = office.problem(db, S.ASSIGNED, clock())
    before = snapshot(db, pid)
    with session_scope(db) as s, pytest.raises(LedgerError, match=message):
        ledger.act(s, settings, pid, CLOSE, now=clock(), actor=s.get(Cadre, office.a.id), **change)
    assert snapshot(db, pid) == before


@pytest.mark.parametrize("change, message", [
    ({"deadline": date(2026, 11, 1)}, "已过"),
    ({"unit_id": None}, "请选择责任单位"),
    ({"b_id": "same"}, "不能是同一人"),
    ({"a_id": "outsider"}, "在册干部"),
])
def test_assignment_is_checked(db, settings, clock, office, change, message):
    pid = office.problem(db, S.NEW, clock())
    args = {"unit_id": office.bureau, "a_id": office.a.id, "b_id": office.b.id, "deadline": None}
    args.update(change)
    if args["b_id"] == "same":
        args["b_id"] = office.a.id
    if args["a_id"] == "outsider":  # A and B belong to another unit than the one chosen
        args["a_id"], args["unit_id"] = office.a.id, office.other_unit
    before = snapshot(db, pid)
    with session_scope(db) as s, pytest.raises(LedgerError, match=message):
        ledger.act(s, settings, pid, ASSIGN, now=clock(), actor=s.get(Cadre, office.sup.id), **args)
    assert snapshot(db, pid) == before


def test_a_unit_supervisor_cannot_assign_outside_the_unit(db, settings, clock, office):
    pid = office.problem(db, S.NEW, clock())
    with session_scope(db) as s:
        p = s.get(Problem, pid)
        p.unit_id = office.bureau
        s.add(p)
    with session_scope(db) as s, pytest.raises(LedgerError, match="不在您的管辖范围"):
        ledger.act(s, settings, pid, ASSIGN, now=clock(), actor=s.get(Cadre, office.bureau_head.id),
                   unit_id=office.other_unit, a_id=office.a.id, b_id=office.b.id)


def test_default_deadline_counts_working_days(db, settings, clock, office):
    clock.now = datetime(2026, 9, 29, 2, tzinfo=timezone.utc)  # Tuesday before 国庆
    pid = office.problem(db, S.NEW, clock())
    with session_scope(db) as s:
        ledger.act(s, settings, pid, ASSIGN, now=clock(), actor=s.get(Cadre, office.sup.id), unit_id=office.bureau,
                   a_id=office.a.id, b_id=office.b.id)
    with session_scope(db) as s:
        # 5 working days for a complaint: 9-30, 10-8, 10-9, 10-10 (the make-up Saturday), 10-12
        assert s.get(Problem, pid).deadline == date(2026, 10, 12)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(ROLES), st.sampled_from(ACTIONS)), min_size=1, max_size=12))
def test_random_sequences_never_break_an_item_or_its_history(db, settings, clock, office, steps):
    pid = office.problem(db, S.NEW, clock())
    for role, action in steps:
        before = snapshot(db, pid)
        try:
            office.act(db, pid, role, action, clock(), settings)
        except LedgerError:
            assert snapshot(db, pid) == before
    with session_scope(db) as s:
        p = s.get(Problem, pid)
        events = s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == pid)
                        .order_by(ProblemEvent.id)).all()
    assert p.status in (S.NEW, S.ASSIGNED, S.IN_PROGRESS, S.CLOSED, S.ANSWERED)
    if p.status != S.NEW:
        assert p.responsible_unit_id and p.responsible_a_id and p.responsible_b_id and p.deadline
    if p.status in (S.CLOSED, S.ANSWERED):
        assert p.result and p.closed_at
    if p.status == S.ANSWERED:
        assert p.answer and p.answered_at
    state = S.NEW
    for event in events:  # the history is a chain that ends where the item is
        assert event.from_status == state
        state = event.to_status
    assert state == p.status


def test_ledger_tick_hands_over_to_b_reminds_and_escalates_once(db, settings, clock, office):
    assigned = datetime(2026, 11, 23, 1, tzinfo=timezone.utc)  # Monday 09:00 local
    clock.now = assigned
    pid = office.problem(db, S.NEW, clock())
    with session_scope(db) as s:
        ledger.act(s, settings, pid, ASSIGN, now=clock(), actor=s.get(Cadre, office.sup.id), unit_id=office.bureau,
                   a_id=office.a.id, b_id=office.b.id, deadline=date(2026, 11, 26))

    def tick(at):
        with session_scope(db) as s:
            ledger.ledger_tick(s, settings, at)
            ledger.ledger_tick(s, settings, at)  # twice: harmless
        with session_scope(db) as s:
            return sorted((r.idempotency_key.split(":")[0], office.recipients.get(r.cadre_id, str(r.cadre_id)))
                          for r in s.exec(select(OutboxMessage).where(OutboxMessage.kind == "ledger")).all())

    base = tick(assigned + timedelta(hours=2))
    assert base == [("ledger", "A"), ("ledger", "B")]  # only the assignment notices so far
    after_a_day = tick(assigned + timedelta(hours=25))  # A did nothing for 24 hours: B is asked
    assert after_a_day.count(("ledger", "B")) == 2
    day_before = tick(datetime(2026, 11, 25, 1, tzinfo=timezone.utc))
    assert ("ledger-due", "A") in day_before and ("ledger-due", "B") in day_before
    overdue = tick(datetime(2026, 11, 27, 1, tzinfo=timezone.utc))
    heads = [x for x in overdue if x[0] == "ledger-overdue"]
    assert sorted(heads) == sorted([("ledger-overdue", "assigner"), ("ledger-overdue", str(office.bureau_head.id))])
    assert tick(datetime(2026, 11, 28, 1, tzinfo=timezone.utc)) == overdue  # escalated once per deadline
    with session_scope(db) as s:
        actions = [e.action for e in s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == pid)
                                            .order_by(ProblemEvent.id)).all()]
    assert actions == ["assign", "handover"]
