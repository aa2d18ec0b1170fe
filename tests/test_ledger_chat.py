"""The ledger by chat, as dialogue tables through the core: report, assign, progress, close, reopen."""

from __future__ import annotations

from datetime import date

import pytest
from sqlmodel import select

from bot import texts
from storage.db import session_scope
from storage.models import Cadre, ChatAccount, OutboxMessage, Problem, ProblemEvent, ProblemStatus, Role, Unit
from tests.utils import Chat, bind, make_roster

S = ProblemStatus


@pytest.fixture
def people(db, clock):
    roster = make_roster(db)
    with session_scope(db) as s:
        office = Unit(name="市作风办")
        s.add(office)
        s.flush()
        head = Cadre(name="督查员", unit_id=office.id, mobile="13800000031", role=Role.SUPERVISOR)
        head2 = Cadre(name="督查员二", unit_id=office.id, mobile="13800000033", role=Role.SUPERVISOR)
        b = Cadre(name="备岗", unit_id=roster.unit.id, mobile="13800000032", role=Role.CADRE)
        s.add_all([head, head2, b])
        s.flush()
        # Everyone can be reached on Telegram for the outbox; they chat with the core on "test".
        for person in (head, roster.cadre, b):
            s.add(ChatAccount(channel="telegram", external_user_id=f"tg{person.id}", cadre_id=person.id,
                              bound_at=clock(), bound_by="code"))
    for person, user in ((head, "head"), (head2, "head2"), (roster.cadre, "a"), (b, "b")):
        bind(db, person, "test", user, clock())
    return roster, head, b


def problem(db, pid):
    with session_scope(db) as s:
        return s.get(Problem, pid)


def notices(db):
    with session_scope(db) as s:
        return [(r.channel, r.recipient, r.body) for r in s.exec(select(OutboxMessage).order_by(OutboxMessage.id))]


def report(core, user="citizen", content="小区路灯坏了一个月"):
    citizen = Chat(core, user)
    assert texts.REPORT_ASK_CATEGORY in citizen.say("/report")
    citizen.press("城建")
    citizen.say(content)
    assert "请确认" in citizen.say("13912345678")
    saved = citizen.press("确认")
    assert "已收到，编号 #" in saved and "5 个工作日内答复" in saved
    return citizen, int(saved.split("#")[1].split("。")[0])


def up_to_deadline(core, pid, user="head") -> Chat:
    """A supervisor opens the item and picks unit, A and B; the deadline question is next."""
    head = Chat(core, user)
    head.say("/ledger")
    assert "待交办 1" in head.labels()
    head.press("待交办")
    answer = head.press(f"#{pid}")
    assert "139****5678" not in answer and "13912345678" in answer  # the supervisor must be able to call
    head.press("交办")
    head.press("市住建局")
    head.press("李明")
    assert "李明" not in head.labels()  # B cannot be A
    head.press("备岗")
    return head


def assign(core, pid, deadline=None, user="head"):
    head = up_to_deadline(core, pid, user)
    if deadline:
        answer = head.say(deadline)
    else:
        answer = head.press("默认")
    assert "请确认交办" in answer
    return head, head.press("确认")


def test_report_assign_progress_close_and_the_raiser_is_told(core, db, people, clock):
    roster, head_cadre, b = people
    citizen, pid = report(core)
    p = problem(db, pid)
    assert (p.status, p.source, p.raiser_phone, p.raiser_channel) == (S.NEW, "complaint", "13912345678", "test")

    head, done = assign(core, pid)
    assert "已交办" in done
    p = problem(db, pid)
    assert (p.status, p.responsible_a_id, p.responsible_b_id) == (S.ASSIGNED, roster.cadre.id, b.id)
    assert p.deadline == date(2026, 11, 27)  # 5 working days after Friday 11-20
    told = notices(db)
    assert {r for _, r, _ in told} == {f"tg{roster.cadre.id}", f"tg{b.id}"}
    assert all("交办单 JB2026-" in body and "/todo" in body for _, _, body in told)

    a = Chat(core, "a")
    assert texts.TODO_PICK_ITEM in a.say("/todo")
    answer = a.press(f"#{pid}")
    assert "A岗 李明，B岗 备岗" in answer
    a.press("报告进展")
    assert "已进展" in a.say("已联系物业，配件已订")
    assert problem(db, pid).status == S.IN_PROGRESS
    a.say("/todo")
    a.press(f"#{pid}")
    a.press("办结")
    assert "当前状态：已回访" in a.say("已更换灯具，恢复照明")
    p = problem(db, pid)
    assert (p.status, p.result) == (S.ANSWERED, "已更换灯具，恢复照明")
    raiser_notes = [body for channel, r, body in notices(db) if (channel, r) == ("test", "citizen")]
    assert len(raiser_notes) == 1 and "已更换灯具" in raiser_notes[0]

    # The citizen is not satisfied and asks for it to be done again.
    mine = citizen.say("/mine")
    assert texts.MINE_PICK_ITEM in mine and "已回访" in " ".join(citizen.labels())
    answer = citizen.press(f"#{pid}")
    assert "办理结果：已更换灯具" in answer and citizen.labels()[0] == texts.LEDGER_ACTION_LABELS["reopen"]
    citizen.press("重新办理")
    assert "当前状态：已交办" in citizen.say("灯又不亮了")
    p = problem(db, pid)
    assert (p.status, p.reopened) == (S.ASSIGNED, 1)
    with session_scope(db) as s:
        actions = [e.action for e in s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == pid)
                                            .order_by(ProblemEvent.id))]
    assert actions == ["create", "assign", "progress", "close", "answer", "reopen"]


def test_typed_deadline_and_bad_ones(core, db, people):
    citizen, pid = report(core)
    head = up_to_deadline(core, pid)
    assert texts.LEDGER_BAD_DATE in head.say("下周")
    assert "已过" in head.say("2026-11-01")
    assert "办结时限：2026-12-15" in head.say("12-15")


def test_who_may_use_the_ledger(core, db, people):
    citizen, pid = report(core)
    assert texts.ROLE_FORBIDDEN.format(command="ledger", role="主管（作风办）") in Chat(core, "a").say("/ledger")
    assert Chat(core, "b").say("/todo") == texts.TODO_EMPTY
    assert Chat(core, "stranger").say("/mine") == texts.MINE_EMPTY
    # Another citizen cannot see or reopen someone else's item.
    assert problem(db, pid).raiser_user_id == "citizen"


def test_a_button_for_an_action_no_longer_possible_is_stale(core, db, people):
    citizen, pid = report(core)
    head = Chat(core, "head")
    head.say("/ledger")
    head.press("待交办")
    head.press(f"#{pid}")
    assign(core, pid, user="head2")  # meanwhile another supervisor assigns it
    answer = head.press("交办")
    assert texts.STALE_BUTTON in answer and "已交办" in answer
    assert "📌 交办" not in head.labels()


def test_the_table_refuses_what_changed_after_the_last_question(core, db, people):
    citizen, pid = report(core)
    head = up_to_deadline(core, pid)
    head.press("默认")
    assign(core, pid, user="head2", deadline="12-20")  # assigned elsewhere while head was confirming
    refused = head.press("确认")
    assert "当前为“已交办”，不能“交办”" in refused
    p = problem(db, pid)
    assert (p.status, p.deadline) == (S.ASSIGNED, date(2026, 12, 20))
