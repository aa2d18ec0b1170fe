"""One function opens a problem (``bot.core.ledger.open_problem``): every source leaves its creation
in the history (``ProblemEvent``, action "create"), as a dialogue through the core or the import a
user runs. Also: an item that was never assigned shows no 交办单 when opened."""

from __future__ import annotations

import openpyxl
import pytest
from sqlalchemy import text
from sqlmodel import select

from bot import texts
from bot.cli import main as cli_main
from bot.config import get_settings
from bot.core import ledger
from storage.db import session_scope
from storage.models import Cadre, Problem, ProblemEvent, ProblemSource, ProblemStatus, Role, TargetKind, Unit
from tests.test_dialogue import play, visit_until_summary
from tests.utils import Chat, bind, make_roster, token_for


@pytest.fixture
def roster(db, clock):
    r = make_roster(db)
    bind(db, r.cadre, "test", "u1", clock())
    return r


def created(db) -> list[tuple]:
    """Each problem with its history: (source, status, [(action, from, to, actor, actor cadre, note)])."""
    with session_scope(db) as s:
        out = []
        for p in s.exec(select(Problem).order_by(Problem.id)).all():
            events = s.exec(select(ProblemEvent).where(ProblemEvent.problem_id == p.id)
                            .order_by(ProblemEvent.id)).all()
            out.append((p.source, p.status, [(e.action, e.from_status, e.to_status, e.actor, e.actor_cadre_id, e.note)
                                             for e in events]))
        return out


def test_a_visit_difficulty_on_the_ledger_and_one_solved_on_the_spot_both_have_history(core, db, roster, clock):
    chat = Chat(core)
    visit_until_summary(chat, "住户2", ("物业", "楼道灯坏了", "未解决"))
    chat.press("确认提交")
    visit_until_summary(chat, "住户1", ("治安", "邻里纠纷已调解", "已当场解决"))
    chat.press("确认提交")
    cadre = roster.cadre
    assert created(db) == [
        ("visit", "new", [("create", None, "new", "李明", cadre.id, None)]),
        ("visit", "solved", [("create", None, "solved", "李明", cadre.id, None)]),
    ]
    with session_scope(db) as s:
        first = s.exec(select(Problem).order_by(Problem.id)).first()
        assert (first.raised_by_cadre_id, first.unit_id, first.raiser_name) == (cadre.id, roster.unit.id, "住户2")


def test_an_everyday_contact_problem_has_history(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/contact"), ("press", "电话联系"), ("press", "住户3"), ("press", texts.SKIP),
                ("press", "环保")])
    assert "列入问题台账" in chat.say("河道有异味")
    assert created(db) == [("contact", "new", [("create", None, "new", "李明", roster.cadre.id, None)])]


def test_a_service_object_problem_has_history(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/object"), ("press", "对象4"), ("press", "公共方面"), ("press", "城建")])
    assert "（公共方面），列入问题台账" in chat.say("公交站台破损")
    assert created(db) == [("service_object", "new", [("create", None, "new", "李明", roster.cadre.id, None)])]


def test_a_bad_rating_in_chat_has_history_in_the_raters_name(core, db, roster, settings):
    citizen = Chat(core, "citizen-9")
    citizen.say(f"/start {token_for(db, settings, TargetKind.CADRE, roster.cadre.id)}")
    citizen.press("非常不满意")
    citizen.press("办事拖拉")
    citizen.press(texts.RATING_REASONS_DONE)
    citizen.say("让我跑了三趟")
    citizen.say("13912345678")
    assert created(db) == [("rating", "new", [("create", None, "new", texts.RATING_ACTOR, None, None)])]


def test_a_report_by_a_citizen_has_history(core, db, roster):
    citizen = Chat(core, "citizen")
    play(citizen, [("say", "/report"), ("press", "城建"), ("say", "小区路灯坏了"), ("say", "13912345678")])
    assert "已收到，编号 #" in citizen.press("确认")
    assert created(db) == [("complaint", "new", [("create", None, "new", texts.RAISER_LABEL, None, None)])]
    with session_scope(db) as s:
        [problem] = s.exec(select(Problem)).all()
        assert (problem.raiser_channel, problem.raiser_user_id, problem.raiser_phone) == (
            "test", "citizen", "13912345678")


def _import_hotline(monkeypatch, settings, path) -> int:
    """``python -m bot import-hotline FILE`` as the operator runs it, on the test database."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("LOAD_EXAMPLE_ROSTER", "false")
    get_settings.cache_clear()
    try:
        return cli_main(["import-hotline", str(path), "--quiet"])
    finally:
        get_settings.cache_clear()


def _hotline_book(path, rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "附件5"
    ws.append(["反映人姓名", "联系电话", "问题内容", "办理情况", "责任单位", "备注"])
    for row in rows:
        ws.append(list(row))
    wb.save(path)
    return path


def test_hotline_items_imported_by_the_operator_have_history(db, roster, settings, tmp_path, monkeypatch):
    path = _hotline_book(tmp_path / "hotline.xlsx", [
        ("张三", "13912345678", "路灯坏了", "办理中", "市住建局", ""),
        ("", "0535-6543210", "咨询公租房", "已办结，已电话答复", "市住建局", "网上民声")])
    assert _import_hotline(monkeypatch, settings, path) == 0
    assert created(db) == [
        ("hotline", "new", [("create", None, "new", texts.HOTLINE_IMPORT_ACTOR, None, "办理中")]),
        ("hotline", "closed", [("create", None, "closed", texts.HOTLINE_IMPORT_ACTOR, None, "已办结，已电话答复")]),
    ]


def test_every_source_opens_through_one_function_and_only_in_an_opening_state(db, roster, clock):
    with session_scope(db) as s:
        for source in ProblemSource:
            ledger.open_problem(s, source=source, category="城建", content=f"{source} 的问题", now=clock(),
                                actor_label="系统")
        with pytest.raises(ValueError):
            ledger.open_problem(s, source=ProblemSource.VISIT, category="城建", content="x", now=clock(),
                                status=ProblemStatus.ASSIGNED)
    history = created(db)
    assert [h[0] for h in history] == [str(source) for source in ProblemSource]
    assert all(events == [("create", None, "new", "系统", None, None)] for _, _, events in history)
    # The enumerations are StrEnums, but what is stored is the very strings stored before them.
    with db.connect() as conn:
        stored = conn.execute(text("SELECT source, status FROM problem ORDER BY id")).all()
    assert [tuple(row) for row in stored] == [(source, "new") for source in (
        "visit", "contact", "service_object", "rating", "complaint", "hotline")]
    assert all(type(value) is str for row in stored for value in row)


def test_a_hotline_item_that_arrived_closed_shows_no_slip_when_opened_from_awaiting_callback(
        core, db, roster, settings, clock, tmp_path, monkeypatch):
    with session_scope(db) as s:
        office = Unit(name="市作风办")
        s.add(office)
        s.flush()
        head = Cadre(name="督查员", unit_id=office.id, mobile="13800000031", role=Role.SUPERVISOR)
        s.add(head)
    bind(db, head, "test", "head", clock())
    path = _hotline_book(tmp_path / "hotline.xlsx", [("", "0535-6543210", "咨询公租房", "已办结，已电话答复",
                                                      "市住建局", "")])
    assert _import_hotline(monkeypatch, settings, path) == 0
    with session_scope(db) as s:
        [problem] = s.exec(select(Problem)).all()
    chat = Chat(core, "head")
    chat.say("/ledger")
    chat.press("待回访")
    opened = chat.press(f"#{problem.id}")
    assert "交办单" not in opened and "A岗" not in opened and "?" not in opened and "限 —" not in opened
    assert texts.LEDGER_DETAIL_UNIT_UNASSIGNED.format(unit="市住建局") in opened
    assert "办理结果：已办结，已电话答复" in opened
