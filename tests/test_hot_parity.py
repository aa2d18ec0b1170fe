"""Every hot statement (storage/hot.py) gives the same answer on the fast path as through SQLAlchemy.

Each registered statement runs with representative parameters twice from the same rows, each time
in a transaction that is rolled back: once through ``Prepared`` on the driver's cursor, once as
``conn.execute(stmt, params)``. The rows returned (or the rowcount) must be equal, and for a write
so must the table it wrote, read back through SQLAlchemy in the same transaction. The statements
are taken from ``hot.STATEMENTS``: one without a case here fails ``test_every_statement_has_cases``.

Runs on SQLite, and on PostgreSQL with TEST_DATABASE_URL; pyproject.toml pins SQLAlchemy to the
versions this passed on. The refusals at build time are tested below it.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.sql.dml import UpdateBase

from bot.core.periods import half_of
from storage import hot
from storage.db import session_scope
from storage.models import (Cadre, ChatAccount, DialogueState, EverydayContact, Household, OutboxMessage,
                            ProblemStatus, ProcessedInbound, WeChatUser)
from storage.prepared import Prepared, UnsupportedStatement
from tests.utils import bind, make_problem, make_roster, make_visit

TZ = ZoneInfo("Asia/Shanghai")


@dataclasses.dataclass
class Seed:
    now: object
    half: str
    cadre_id: int
    other_cadre_id: int  # an active cadre with nothing assigned
    visited_id: int  # a household of the cadre's visited this half-year, with problems raised
    quiet_id: int  # a household nobody visited, that raised nothing
    visit_id: int  # the cadre's latest visit
    problem_id: int  # an item on the ledger, assigned


@pytest.fixture
def seed(db, clock) -> Seed:
    """Rows every statement finds something in: a roster with visits, problems nearby, contacts,
    bindings (one to an inactive cadre), a dialogue row, seen events, WeChat rows."""
    now = clock()
    half = half_of(now, TZ)
    roster = make_roster(db, households=4)
    visited, second, quiet = roster.households[0], roster.households[1], roster.households[3]
    make_visit(db, roster.cadre, visited, now - timedelta(days=2))
    visit_id = make_visit(db, roster.cadre, visited, now - timedelta(days=1))  # twice: counted once
    make_visit(db, roster.cadre, second, now - timedelta(days=200))  # another half-year
    problem_id = make_problem(db, now - timedelta(days=2), household_id=visited.id, status=ProblemStatus.ASSIGNED,
                              content="路灯不亮")
    make_problem(db, now - timedelta(days=1), household_id=visited.id, status=ProblemStatus.CLOSED,
                 category="物业", content="电梯常坏")
    make_problem(db, now - timedelta(hours=5), household_id=second.id, status=ProblemStatus.NEW)
    make_problem(db, now - timedelta(hours=4), household_id=second.id, status=ProblemStatus.IN_PROGRESS)
    bind(db, roster.cadre, "telegram", "100", now)
    bind(db, roster.supervisor, "wechat", "oSupervisor", now)
    with session_scope(db) as s:
        gone = Cadre(name="离岗", unit_id=roster.unit.id, mobile="13800000009", role="cadre", active=False)
        s.add(gone)
        s.flush()
        s.get(Household, roster.households[2].id).active = False
        s.add(EverydayContact(cadre_id=roster.cadre.id, household_id=visited.id, kind="phone", half=half,
                              contacted_at=now - timedelta(days=3), channel="test"))
        s.add(EverydayContact(cadre_id=roster.cadre.id, kind="holiday", half="2020H1",
                              contacted_at=now - timedelta(days=2000), channel="test"))
        s.add(DialogueState(channel="telegram", external_user_id="100", flow="visit", step="card",
                            data={"household": visited.id, "survey": {"q1": "是"}, "标签": ["一", 2, None]},
                            version=4, updated_at=now - timedelta(minutes=3)))
        s.add(DialogueState(channel="wechat", external_user_id="oSupervisor", flow=None, step=None, data={},
                            version=0, updated_at=now - timedelta(minutes=1)))
        s.add(ProcessedInbound(channel="telegram", event_key="seen-1", created_at=now - timedelta(minutes=3)))
        s.add(WeChatUser(openid="oOld", last_inbound_at=now - timedelta(days=3)))
        s.add(WeChatUser(openid="oFuture", last_inbound_at=now + timedelta(hours=1)))
        s.add(ProcessedInbound(channel="telegram", event_key="answered-1", created_at=now - timedelta(minutes=2),
                               answer={"replies": [{"text": "请选择", "options": [[["住户1", "4.0"]]], "contact": False,
                                                    "location": False, "files": 0}], "chosen": None, "stale": False,
                                       "rendered": None}))
        s.add(ProcessedInbound(channel="wechat", event_key="answered-2", created_at=now - timedelta(minutes=1),
                               answer={"replies": [], "rendered": "<xml><Content>好</Content></xml>"},
                               delivered_at=now - timedelta(seconds=50)))
        # A call-back list shows full numbers: the answer kept for it is sealed at rest (storage/crypto.py).
        s.add(ProcessedInbound(channel="telegram", event_key="answered-3", created_at=now - timedelta(minutes=1),
                               answer={"replies": [{"text": "回访电话 13912345678", "options": []}], "rendered": None}))
        # A WeCom answer held by a web process's reply pump, sent, waiting to be marked.
        s.add(OutboxMessage(idempotency_key="wecom-reply:held", kind="reply", channel="wecom", recipient="zhangsan",
                            body="请选择住户", payload={"wecom": []}, next_attempt_at=now, created_at=now,
                            claimed_by="web:1:pump", claimed_until=now + timedelta(minutes=5), in_flight_at=now))
    with session_scope(db) as s:
        s.add(ChatAccount(channel="telegram", external_user_id="200", cadre_id=gone.id, bound_at=now, bound_by="code"))
    return Seed(now, half, roster.cadre.id, roster.supervisor.id, visited.id, quiet.id, visit_id, problem_id)


# name -> parameter sets (plain values, as the functions in storage/hot.py pass them)
CASES = {
    "create_state": lambda s: [dict(channel="telegram", user_id="300", data={}, updated_at=s.now),
                               dict(channel="telegram", user_id="100", data={}, updated_at=s.now)],
    "save_state": lambda s: [
        dict(b_channel="telegram", b_user="100", b_version=4, flow="visit", step="survey:q2",
             data={"household": s.visited_id, "survey": {"q1": "否", "q2": "满意"}, "备注": "楼道灯"}, version=5,
             updated_at=s.now),
        dict(b_channel="telegram", b_user="100", b_version=3, flow=None, step=None, data={}, version=4,
             updated_at=s.now),
        dict(b_channel="telegram", b_user="100", b_version=4, flow="report", step="confirm",  # sealed: a number
             data={"category": "城建", "content": "路灯坏了", "phone": "0571-87654321"}, version=5, updated_at=s.now)],
    "bound_cadre": lambda s: [dict(channel="telegram", user_id="100"), dict(channel="wechat", user_id="oSupervisor"),
                              dict(channel="telegram", user_id="200"), dict(channel="telegram", user_id="nobody")],
    "households_with_status": lambda s: [dict(cadre_id=s.cadre_id, half=s.half),
                                         dict(cadre_id=s.cadre_id, half="2020H1"),
                                         dict(cadre_id=s.other_cadre_id, half=s.half)],
    "cadre_progress": lambda s: [dict(cadre_id=s.cadre_id, half=s.half), dict(cadre_id=s.cadre_id, half="2020H1"),
                                 dict(cadre_id=s.other_cadre_id, half=s.half)],
    "household": lambda s: [dict(id=s.visited_id), dict(id=s.quiet_id), dict(id=999_999)],
    "lookback": lambda s: [dict(household_id=s.visited_id), dict(household_id=s.quiet_id)],
    "open_nearby": lambda s: [dict(area_name="幸福社区", household_id=s.visited_id),
                              dict(area_name="幸福社区", household_id=s.quiet_id),
                              dict(area_name="别处", household_id=s.quiet_id)],
    "wechat_note_interaction": lambda s: [dict(openid="oNew", now=s.now), dict(openid="oOld", now=s.now),
                                          dict(openid="oFuture", now=s.now)],
    "queue_outbox_reply": lambda s: [
        dict(channel="wecom", key="wecom-reply:new", recipient="zhangsan", body="请选择住户",
             payload={"wecom": [{"path": "/cgi-bin/message/send", "body": {"touser": "zhangsan"}}]}, state="pending",
             attempts=0, interrupted=0, now=s.now, created_at=s.now, claimed_by=None, claimed_until=None,
             in_flight_at=None),
        dict(channel="wecom", key="wecom-reply:new", recipient="zhangsan", body="again", payload={}, state="pending",
             attempts=0, interrupted=0, now=s.now, created_at=s.now, claimed_by=None, claimed_until=None,
             in_flight_at=None),
        dict(channel="wecom", key="wecom-reply:phone", recipient="zhangsan", body="回访电话 13912345678",  # sealed
             payload={"wecom": [{"body": {"text": {"content": "回访电话 13912345678"}}}]}, state="pending", attempts=0,
             interrupted=0, now=s.now, created_at=s.now, claimed_by=None, claimed_until=None, in_flight_at=None),
        dict(channel="wecom", key="wecom-reply:claimed", recipient="zhangsan", body="请选择住户", payload={},
             state="pending", attempts=0, interrupted=0, now=s.now, created_at=s.now, claimed_by="web:1:pump",
             claimed_until=s.now + timedelta(minutes=5), in_flight_at=s.now)],
    "mark_reply_sent": lambda s: [dict(key="wecom-reply:held", worker="web:1:pump", now=s.now),
                                  dict(key="wecom-reply:held", worker="another", now=s.now),
                                  dict(key="wecom-reply:none", worker="web:1:pump", now=s.now)],
    "cadre_visits": lambda s: [dict(cadre_id=s.cadre_id, half=s.half), dict(cadre_id=s.cadre_id, half="2020H1"),
                               dict(cadre_id=s.other_cadre_id, half=s.half)],
    "add_visit_flag": lambda s: [dict(visit_id=s.visit_id, cadre_id=s.cadre_id, kind="burst",
                                      reason="10 分钟内确认了 4 次走访", created_at=s.now)],
    "add_problem_event": lambda s: [
        dict(problem_id=s.problem_id, at=s.now, actor_cadre_id=s.cadre_id, actor="李明", action="create",
             from_status=None, to_status=ProblemStatus.NEW, note=None),  # the enum, as ledger.open_problem passes it
        dict(problem_id=s.problem_id, at=s.now, actor_cadre_id=None, actor="热线导入", action="create",
             from_status=None, to_status="closed", note="已办结")],
    "start_event": lambda s: [dict(channel="telegram", user_id="100", event_key="answered-1"),
                              dict(channel="telegram", user_id="100", event_key="fresh-1"),
                              dict(channel="telegram", user_id="100", event_key=None),
                              dict(channel="telegram", user_id="200", event_key="seen-1"),
                              dict(channel="wechat", user_id="oSupervisor", event_key="answered-2"),
                              dict(channel="telegram", user_id="100", event_key="answered-3"),
                              dict(channel="telegram", user_id="nobody", event_key="seen-1")],
    "lock_state": lambda s: [dict(channel="telegram", user_id="100"), dict(channel="telegram", user_id="nobody")],
    "record_answer": lambda s: [dict(channel="telegram", event_key="new-2", created_at=s.now,
                                     answer={"replies": [{"text": "好的", "options": []}], "rendered": None}),
                                dict(channel="telegram", event_key="new-3", created_at=s.now, answer=None),
                                dict(channel="telegram", event_key="seen-1", created_at=s.now, answer={}),
                                dict(channel="telegram", event_key="new-4", created_at=s.now,  # sealed: a full number
                                     answer={"replies": [{"text": "回访电话 13912345678", "options": []}]})],
    "confirm_answer": lambda s: [dict(b_channel="telegram", b_event_key="answered-1", now=s.now),
                                 dict(b_channel="wechat", b_event_key="answered-2", now=s.now)],
    "finish_event": lambda s: [
        # saved, recorded, an earlier answer marked
        dict(s_channel="telegram", s_user="100", s_expected=4, s_save=True, s_flow="visit", s_step="survey:q2",
             s_data={"household": s.visited_id, "survey": {"q1": "否"}}, s_version=5, s_at=s.now,
             r_channel="telegram", r_event_key="new-5", r_created_at=s.now,
             r_answer={"replies": [{"text": "请选择", "options": [[["满意", "5.1"]]]}], "rendered": None},
             c_channel="telegram", c_key="answered-1", c_at=s.now),
        # nothing to save, nothing to mark, the key recorded already
        dict(s_channel="telegram", s_user="100", s_expected=4, s_save=False, s_flow=None, s_step=None, s_data={},
             s_version=5, s_at=s.now, r_channel="telegram", r_event_key="seen-1", r_created_at=s.now, r_answer=None,
             c_channel=None, c_key=None, c_at=None),
        # nothing to save, recorded, a sealed answer
        dict(s_channel="telegram", s_user="100", s_expected=4, s_save=False, s_flow=None, s_step=None, s_data={},
             s_version=5, s_at=s.now, r_channel="telegram", r_event_key="new-6", r_created_at=s.now,
             r_answer={"replies": [{"text": "回访电话 13912345678", "options": []}]}, c_channel=None, c_key=None,
             c_at=None),
        # a lost race (version 3 is gone): nothing saved nor recorded; a mark already written (kept as it was)
        dict(s_channel="telegram", s_user="100", s_expected=3, s_save=True, s_flow=None, s_step=None, s_data={},
             s_version=4, s_at=s.now, r_channel="telegram", r_event_key="new-6", r_created_at=s.now,
             r_answer={"replies": [{"text": "回访电话 13912345678", "options": []}]},
             c_channel="wechat", c_key="answered-2", c_at=s.now)],
}
CASES["start_event_unlocked"] = CASES["start_event"]
# Statements that write more than one table (a WITH of several writes): the tables compared after.
WRITES = {"finish_event": (DialogueState.__table__, ProcessedInbound.__table__)}


def test_every_statement_has_cases():
    assert set(CASES) == set(hot.STATEMENTS), "give every statement of storage/hot.py a case here"


def _typed(values) -> tuple:
    """Values with their types: 1 and True compare equal, but a user sees 是 for one and 1 for the other."""
    return tuple((type(value).__name__, value) for value in values)


def _values(row) -> tuple:
    return _typed(dataclasses.astuple(row) if dataclasses.is_dataclass(row) else row)


def _after(conn, name: str, stmt) -> list | None:
    """The tables the statement writes, read back through SQLAlchemy; None for a read."""
    tables = WRITES.get(name) or ((stmt.table,) if isinstance(stmt, UpdateBase) else ())
    return [_table_rows(conn, table) for table in tables] or None


def _table_rows(conn, table) -> list[tuple]:
    # A surrogate key is the database's to number (PostgreSQL's sequences do not roll back): compare
    # the rows without it, in the order of their other columns.
    columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is not False
                                                   and isinstance(c.type, Integer))]
    return sorted(_typed(r) for r in conn.execute(select(*columns)))


def _fast(db, name: str, prepared: Prepared, params: dict):
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            stmt = prepared.statement(conn.dialect)
            if prepared.row is not None:
                rows = prepared.rows(conn, **params)
                assert all(isinstance(row, prepared.row) for row in rows)
                out = [_values(row) for row in rows]
            else:
                out = prepared.run(conn, **params)
            after = _after(conn, name, stmt)
            return out, after
        finally:
            transaction.rollback()


def _through_sqlalchemy(db, name: str, prepared: Prepared, params: dict):
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            stmt = prepared.statement(conn.dialect)
            # preserve_rowcount: SQLAlchemy reads an INSERT's rowcount only when asked to.
            result = conn.execute(stmt.execution_options(preserve_rowcount=True), params)
            out = [_typed(row) for row in result] if prepared.row is not None else result.rowcount
            after = _after(conn, name, stmt)
            return out, after
        finally:
            transaction.rollback()


@pytest.mark.parametrize("name", sorted(hot.STATEMENTS))
def test_fast_path_matches_sqlalchemy(db, seed, name):
    prepared = hot.STATEMENTS[name]
    if db.dialect.name not in prepared.dialects:  # written for another database: refused here, by name
        with db.connect() as conn, pytest.raises(UnsupportedStatement, match=f"not {db.dialect.name}"):
            prepared.rows(conn, **CASES[name](seed)[0])
        return
    found_something = False
    for params in CASES[name](seed):
        fast, fast_after = _fast(db, name, prepared, params)
        slow, slow_after = _through_sqlalchemy(db, name, prepared, params)
        assert fast == slow, f"{name} {params}"
        assert fast_after == slow_after, f"{name} {params}: the table differs after the write"
        found_something = found_something or bool(fast)
    assert found_something, f"no case of {name} returned a row or changed one: the comparison proves little"


def test_cases_reach_the_interesting_rows(db, seed):
    """The seed is what the comparison above stands on: the answers users would see from it."""
    with db.connect() as conn, conn.begin():
        state = hot.start_event(conn, "telegram", "100", None)
        assert (state.flow, state.step, state.version) == ("visit", "card", 4)
        assert state.data["标签"] == ["一", 2, None]
        assert hot.bound_cadre(conn, "telegram", "100").name == "李明"
        assert hot.bound_cadre(conn, "telegram", "200") is None  # bound to a cadre no longer active
        again = hot.start_event(conn, "telegram", "100", "answered-1")  # a redelivery, its answer kept
        assert again.seen == "telegram" and again.answer["replies"][0]["text"] and again.version == 4
        fresh = hot.start_event(conn, "telegram", "100", "fresh-1")
        assert fresh.seen is None and fresh.answer is None and fresh.cadre().name == "李明"
        assert fresh.cadre() == hot.bound_cadre(conn, "telegram", "100")
        assert hot.start_event(conn, "telegram", "nobody", "fresh-1") is None  # no dialogue row yet
        progress = hot.cadre_progress(conn, seed.cadre_id, seed.half)
        assert progress == hot.ProgressRow(assigned=3, visited=1, contacts=1, objects=10)
        statuses = hot.households_with_status(conn, seed.cadre_id, seed.half)
        assert [h.visited for h in statuses] == [False, False, True]
        assert [p.content for p in hot.lookback(conn, seed.visited_id)] == ["路灯不亮", "电梯常坏"]
        assert hot.open_nearby(conn, "幸福社区", seed.visited_id) == 2
        kept = hot.start_event(conn, "telegram", "100", "answered-1")
        assert kept.answer["replies"][0]["options"] == [[["住户1", "4.0"]]] and kept.delivered_at is None
        assert hot.start_event(conn, "wechat", "oSupervisor", "answered-2").delivered_at is not None
        assert hot.save_state(conn, "telegram", "100", expected_version=3, flow=None, step=None, data={},
                              version=4, now=seed.now) == 0  # a lost race changes nothing


def test_finish_event_writes_what_it_is_given(db, seed):
    """An event's last writes (one statement on PostgreSQL, three on SQLite) as the unit of work reads them."""
    answer = {"replies": [{"text": "请选择", "options": []}], "rendered": None}
    with db.connect() as conn, conn.begin():
        done = hot.finish_event(conn, "telegram", "100", "new-7", answer, seed.now, version=4,
                                save=("visit", "survey:q3", {"household": seed.visited_id}),
                                confirm=("telegram", "answered-1", seed.now))
        assert done == hot.EventFinish(saved=1, recorded=1, confirmed=1, unchanged=1)
        row = hot.start_event(conn, "telegram", "100", "new-7")
        assert (row.flow, row.step, row.version, row.data) == ("visit", "survey:q3", 5, {"household": seed.visited_id})
        assert row.seen == "telegram" and row.answer == answer and row.delivered_at is None
        assert hot.start_event(conn, "telegram", "100", "answered-1").delivered_at is not None
        # an answer marked delivered before keeps its first time
        first = hot.start_event(conn, "wechat", "oSupervisor", "answered-2").delivered_at
        version = hot.lock_state(conn, "wechat", "oSupervisor")
        assert hot.finish_event(conn, "wechat", "oSupervisor", "new-9", None, seed.now + timedelta(minutes=5),
                                version=version, save=None,
                                confirm=("wechat", "answered-2", seed.now + timedelta(minutes=5))).confirmed == 0
        assert hot.start_event(conn, "wechat", "oSupervisor", "answered-2").delivered_at == first
        # nothing to save or mark; the same key again: not recorded twice, the row as it was
        assert hot.finish_event(conn, "telegram", "100", "new-7", None, seed.now, version=5, save=None,
                                confirm=None) == hot.EventFinish(0, 0, 0, 1)
        assert hot.start_event(conn, "telegram", "100", "new-7").answer == answer
        # a lost race: nothing saved, and on PostgreSQL nothing recorded either (the statement is whole
        # on its own; on SQLite the caller rolls back whatever else was written)
        lost = hot.finish_event(conn, "telegram", "100", "new-8", None, seed.now, version=4, save=(None, None, {}),
                                confirm=None)
        assert (lost.saved, lost.unchanged) == (0, 0)
        assert hot.start_event(conn, "telegram", "100", None).version == 5
        if db.dialect.name == "postgresql":
            assert lost.recorded == 0 and hot.start_event(conn, "telegram", "100", "new-8").seen is None
            # the version read, not saved: the key is recorded only while the row is still that version
            assert hot.finish_event(conn, "telegram", "100", "new-8", None, seed.now, version=4, save=None,
                                    confirm=None) == hot.EventFinish(0, 0, 0, 0)
            assert hot.start_event(conn, "telegram", "100", "new-8").seen is None
        conn.rollback()


def test_finish_event_waits_for_the_row_and_sees_it_changed(db, seed):
    """PostgreSQL, outside a transaction (the asyncpg path's events): another transaction holds the
    row and saves a new version while the event's last statement runs. The statement waits for it,
    then finds the row changed: nothing recorded, nothing saved, not the answer computed from the old
    row kept for a redelivery to send."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite's transaction holds the whole database")
    import threading

    other = db.connect()
    transaction = other.begin()
    other.execute(DialogueState.__table__.update().where(DialogueState.__table__.c.external_user_id == "100")
                  .values(version=DialogueState.__table__.c.version + 1))
    result = {}

    def last_statement():
        with db.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            result["done"] = hot.finish_event(conn, "telegram", "100", "late-1", {"replies": []}, seed.now,
                                              version=4, save=("report", "confirm", {}), confirm=None)

    runner = threading.Thread(target=last_statement)
    runner.start()
    runner.join(0.5)
    assert runner.is_alive()  # waiting for the row
    transaction.commit()
    other.close()
    runner.join(10)
    assert result["done"] == hot.EventFinish(saved=0, recorded=0, confirmed=0, unchanged=0)
    with db.connect() as conn:
        row = hot.start_event(conn, "telegram", "100", "late-1")
    assert row.seen is None and row.version == 5 and row.flow == "visit"


# -- refused when built --------------------------------------------------------------------------

_t = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20)),
           Column("kind", String(20), default="居"))


class IdRow(NamedTuple):
    id: int


class IdNameRow(NamedTuple):
    id: int
    name: str | None


class NameRow(NamedTuple):
    name: str | None


@pytest.mark.parametrize("stmt, reason", [
    (select(_t.c.id).where(_t.c.id.in_([1, 2])), "expanding IN"),
    (select(_t.c.id).where(_t.c.id.in_(bindparam("ids", expanding=True))), "expanding IN"),
    (select(_t.c.id).where(_t.c.name == bindparam("name", literal_execute=True)), "literal_execute"),
    (select(_t.c.id).where(_t.c.name == bindparam("name", callable_=lambda: "x")), "callable_"),
    (select(_t.c.id).where(_t.c.name == bindparam("the name")), "escaping"),
    (select(_t.c.id).execution_options(yield_per=10), "execution options"),
    (insert(_t).values(name=bindparam("name")), "default"),  # kind's default comes from SQLAlchemy
    (lambda insert: insert(_t).values(name=bindparam("name")).on_conflict_do_nothing(), "default"),
])
def test_what_the_fast_path_cannot_run_is_refused_when_built(stmt, reason):
    with pytest.raises(UnsupportedStatement, match=reason):
        Prepared(stmt, IdRow if not callable(stmt) and hasattr(stmt, "selected_columns") else None)


def test_a_row_type_must_name_the_statements_columns():
    with pytest.raises(UnsupportedStatement, match="row type NameRow"):
        Prepared(select(_t.c.id), NameRow)
    with pytest.raises(UnsupportedStatement, match="row type IdRow"):
        Prepared(select(_t.c.id, _t.c.name), IdRow)  # a column short
    with pytest.raises(UnsupportedStatement, match="give it a row type"):
        Prepared(select(_t.c.id))
    # What the fast path can run is accepted, with the kind's default given in values().
    assert Prepared(select(_t.c.id, _t.c.name).where(_t.c.id == bindparam("id")), IdNameRow).row is IdNameRow
    assert Prepared(insert(_t).values(name=bindparam("name"), kind=bindparam("kind"))).row is None


def test_a_number_in_a_kept_answer_or_a_dialogue_row_is_sealed_and_read_back_on_the_fast_path(db, seed):
    """The fast path converts through the column types as SQLAlchemy does: what carries a phone number
    is stored sealed (storage/crypto.py) and read back whole."""
    from sqlalchemy import text

    data = {"category": "城建", "phone": "0571-87654321"}
    with db.connect() as conn, conn.begin():
        kept = hot.start_event(conn, "telegram", "100", "answered-3")
        assert kept.answer["replies"][0]["text"] == "回访电话 13912345678"
        assert hot.save_state(conn, "telegram", "100", expected_version=4, flow="report", step="confirm", data=data,
                              version=5, now=seed.now) == 1
        assert hot.start_event(conn, "telegram", "100", None).data == data
        raw = [conn.execute(text("SELECT CAST(answer AS TEXT) FROM processed_inbound WHERE event_key = 'answered-3'"))
               .scalar_one(),
               conn.execute(text("SELECT CAST(data AS TEXT) FROM dialogue_state WHERE external_user_id = '100'"))
               .scalar_one()]
    assert all('"$sealed"' in value for value in raw)
    assert not any("13912345678" in value or "87654321" in value for value in raw)


def test_the_engines_json_serializer_writes_what_json_dumps_writes():
    """storage.db.json_dumps (every JSON column's serializer) is json.dumps with its encoder made once."""
    import enum
    import json
    import math
    import random

    from storage.db import json_dumps

    class Level(enum.IntEnum):
        HIGH = 3

    class Kind(enum.StrEnum):
        VISIT = "走访"

    rng = random.Random(10)
    atoms = ["", "走访", "a\"b\\c\n\t\x00\x1f\u2028", "\ud83d", "😀", 0, -1, 2 ** 70, 1.5, -0.0, 1e300, math.inf,
             -math.inf, math.nan, True, False, None, Level.HIGH, Kind.VISIT]

    def value(depth: int = 0):
        roll = rng.random()
        if depth > 3 or roll < 0.4:
            return rng.choice(atoms)
        if roll < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        if roll < 0.7:
            return tuple(value(depth + 1) for _ in range(rng.randint(0, 3)))
        return {rng.choice(["k", "键", "", 1, 2.5, True, None]): value(depth + 1) for _ in range(rng.randint(0, 4))}

    for _ in range(2000):
        item = value()
        assert json_dumps(item) == json.dumps(item), repr(item)
    with pytest.raises(TypeError):
        json_dumps({"when": object()})


def test_a_datetime_parameter_is_converted_again_for_another_time(db, clock):
    """The hot statements share a datetime column's conversion and keep its last result for the same
    object (storage.prepared._bind_processor): a new time, even an equal one, is converted anew."""
    from datetime import timezone

    with db.connect() as conn:
        process = hot.STATEMENTS["save_state"]._compile(conn.dialect).bind_procs["updated_at"]
        assert hot.STATEMENTS["record_answer"]._compile(conn.dialect).bind_procs["created_at"] is process
    now = clock()
    later = now + timedelta(microseconds=1)
    first = process(now)
    assert process(now) is first and process(later) != first
    assert process(now.astimezone(TZ)) == first  # the same instant in another zone: the same UTC value
    assert process(later.astimezone(timezone.utc)) == process(later)
