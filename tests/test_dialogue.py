"""Dialogue tables for the core: what the user sends, what the bot answers, what is stored.

Every case goes through ``Engine.handle`` (one transaction per message) on the real database.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from bot import texts
from bot.core.engine import Engine
from bot.core.types import Inbound
from storage.db import session_scope
from storage.models import (
    BindingCode,
    ChatAccount,
    DialogueState,
    EverydayContact,
    Household,
    Problem,
    ProblemStatus,
    Visit,
)
from tests.utils import Chat, bind, make_roster, rows

pytestmark = pytest.mark.roster(bound_as="u1")

SURVEY_ANSWERS = [("press", "满意"), ("press", "基本满意"), ("press", "方便"), ("press", "不涉及"), ("press", "满意"),
                  ("say", "希望多组织文艺活动")]


def state(db, user="u1", channel="test") -> tuple:
    with session_scope(db) as s:
        row = s.get(DialogueState, (channel, user))
        return (row.flow, row.step, row.data, row.version) if row else None


def play(chat: Chat, script) -> list[str]:
    """Runs (action, argument) pairs; returns each answer."""
    out = []
    for action, arg in script:
        out.append(chat.press(arg) if action == "press" else chat.say(arg))
    return out


def visit_until_summary(chat: Chat, household="住户2", difficulty=("物业", "楼道灯坏了", "未解决")):
    script = [("say", "/visit"), ("press", household), ("press", "是"), *SURVEY_ANSWERS]
    if difficulty:
        script += [("press", difficulty[0]), ("say", difficulty[1]), ("press", difficulty[2])]
    else:
        script += [("press", texts.NO_DIFFICULTY)]
    script += [("press", "是"), ("press", texts.SKIP), ("press", texts.SKIP)]
    return play(chat, script)


def test_full_visit_with_unsolved_difficulty_creates_visit_and_problem(core, db, roster):
    chat = Chat(core)
    answers = visit_until_summary(chat)
    assert answers[0].startswith(texts.PICK_HOUSEHOLD)
    assert "回头看" in answers[1] and texts.ASK_CARD in answers[1]
    assert "调查 1/6" in answers[2]
    summary = answers[-1]
    assert "住户2（幸福路2号）" in summary and "[物业] 楼道灯坏了（未解决" in summary
    assert "意见建议：希望多组织文艺活动" in summary
    assert rows(db, Visit) == []  # nothing is stored before the confirmation

    done = chat.press("确认提交")
    assert "本半年已走访 1/3 户" in done and "问题台账（编号" in done
    [visit] = rows(db, Visit)
    assert visit.card_left and visit.leaflet_given and visit.half == "2026H2"
    assert visit.survey == {"security": "满意", "environment": "基本满意", "medical": "方便", "education": "不涉及",
                            "culture": "满意", "suggestion": "希望多组织文艺活动"}
    [problem] = rows(db, Problem)
    assert (problem.status, problem.category, problem.content, problem.visit_id) == (
        ProblemStatus.NEW, "物业", "楼道灯坏了", visit.id)
    assert problem.household_id == roster.households[1].id
    assert state(db)[:2] == (None, None)


def test_solved_on_the_spot_and_no_difficulty(core, db, roster):
    chat = Chat(core)
    visit_until_summary(chat, "住户1", ("治安", "邻里纠纷已调解", "已当场解决"))
    assert "当场解决（编号" in chat.press("确认提交")
    visit_until_summary(chat, "住户3", None)
    assert "③困难事：无" in chat.outcomes[-1].replies[-1].text
    chat.press("确认提交")
    problems = rows(db, Problem)
    assert [(p.status, p.content) for p in problems] == [(ProblemStatus.SOLVED_ON_SPOT, "邻里纠纷已调解")]
    assert {v.difficulty_category for v in rows(db, Visit)} == {"治安", None}


def test_village_household_offers_village_categories(core, db, clock):
    r = make_roster(db, village=True)
    bind(db, r.cadre, "test", "u1", clock())
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户1"), ("press", "是"), *SURVEY_ANSWERS])
    assert chat.labels()[:6] == ["治安", "教育", "医疗", "文化生活", "居住环境", "干部作风"]
    assert "物业" not in chat.labels()


def test_back_goes_one_step_and_keeps_earlier_answers(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2"), ("press", "否"), ("press", "满意")])
    assert "调查 2/6" in chat.outcomes[-1].replies[-1].text
    assert "调查 1/6" in chat.press(texts.BACK)
    assert texts.ASK_CARD in chat.press(texts.BACK)
    assert texts.PICK_HOUSEHOLD in chat.press(texts.BACK)
    assert texts.BACK not in chat.labels()  # nothing before the first step
    assert state(db)[2]["survey"] == {"security": "满意"}
    # walking forward again overwrites the card answer
    play(chat, [("press", "住户2"), ("press", "是")])
    assert state(db)[2]["card"] is True


def test_cancel_at_any_point_stores_nothing(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2"), ("press", "是"), ("press", "满意")])
    assert chat.press(texts.CANCEL) == texts.CANCELLED.format(flow="入户走访")
    assert state(db)[:3] == (None, None, {})
    assert rows(db, Visit) == [] and rows(db, Problem) == []
    assert chat.say("/cancel") == texts.NOTHING_TO_CANCEL


def test_typed_cancel_and_numbers_work_like_buttons(core, db, roster):
    chat = Chat(core)
    chat.say("/visit")
    assert texts.ASK_CARD in chat.say("2")  # the second household, by number
    assert state(db)[2]["household"] == roster.households[1].id
    assert "调查 1/6" in chat.say("是")  # an option's words
    assert chat.say("取消") == texts.CANCELLED.format(flow="入户走访")


def test_resume_after_restart_continues_at_the_same_step(core, db, settings, clock, roster):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2"), ("press", "是"), ("press", "满意")])
    old_message = chat.last
    # A new engine: a restarted process, or a second worker, on the same database.
    later = Engine(db, settings, clock=lambda: clock() + timedelta(hours=5))
    chat2 = Chat(later)
    answer = chat2.say("/visit")
    assert texts.RESUME.format(flow="入户走访") in answer and "调查 2/6" in answer
    # The buttons of the message sent before the restart still work: nothing changed since.
    assert "调查 3/6" in chat2.press("基本满意", reply=old_message)
    assert state(db)[2]["survey"] == {"security": "满意", "environment": "基本满意"}


UNEXPECTED = [
    ("text where a choice is due", lambda c: c.say("随便说点什么"), texts.PICK_AN_OPTION.format(count=5)),
    ("emoji where a choice is due", lambda c: c.say("👍👍"), texts.PICK_AN_OPTION.format(count=5)),
    ("number out of range", lambda c: c.say("9"), texts.PICK_AN_OPTION.format(count=5)),
    ("2,000 characters", lambda c: c.say("长" * 2000), texts.PICK_AN_OPTION.format(count=5)),
    ("a photo", lambda c: c.photo("telegram:abc"), texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_PHOTO)),
    ("a location", lambda c: c.location(31.2, 121.4), texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_LOCATION)),
    ("a contact", lambda c: c.contact("13800000003", "u1"), texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_CONTACT)),
    ("a forged token", lambda c: c.token("999.0"), texts.STALE_BUTTON),
    ("garbage token", lambda c: c.token("x" * 64), texts.STALE_BUTTON),
    ("an admin command", lambda c: c.say("/bindcode 13800000003"),
     texts.ROLE_FORBIDDEN.format(command="bindcode", role="管理员")),
    ("a supervisor command", lambda c: c.say("/unit"), texts.ROLE_FORBIDDEN.format(command="unit", role="主管（作风办）")),
    ("an unknown command", lambda c: c.say("/foo"), texts.UNKNOWN_COMMAND.format(command="foo")),
    ("another flow", lambda c: c.say("/contact"), texts.FLOW_BUSY.format(flow="入户走访")),
]


@pytest.mark.parametrize("what, send, expected", UNEXPECTED, ids=[u[0] for u in UNEXPECTED])
def test_unexpected_input_gets_a_clear_answer_and_changes_nothing(core, db, roster, what, send, expected):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2"), ("press", "是")])  # at survey question 1 (3 answers, back, cancel)
    before = state(db)
    answer = send(chat)
    assert expected in answer
    assert "调查 1/6" in answer  # the question is asked again
    assert state(db) == before


@pytest.mark.parametrize("text, expected", [
    ("长" * 2000, texts.TEXT_TOO_LONG.format(length=2000, limit=500)),
    ("😀🎉", texts.TEXT_EMPTY),
    ("   ", texts.TEXT_EMPTY),
])
def test_bad_free_text_is_refused(core, db, roster, text, expected):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2"), ("press", "是"), *SURVEY_ANSWERS, ("press", "物业")])
    before = state(db)
    assert expected in chat.say(text)
    assert state(db) == before


def test_stale_button_from_an_older_message(core, db, roster):
    chat = Chat(core)
    chat.say("/visit")
    household_message = chat.last
    chat.press("住户2")
    before = state(db)
    answer = chat.press("住户3", reply=household_message)
    assert texts.STALE_BUTTON in answer and chat.outcomes[-1].stale
    assert state(db) == before


def test_two_racing_presses_of_one_button_advance_once(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户2")])
    token = [o for o in chat.last.flat_options() if o.label == "是"][0].token
    barrier = threading.Barrier(2)
    outcomes = []

    def press():
        barrier.wait()
        outcomes.append(core.handle(Inbound(channel="test", user_id="u1", token=token)))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.stale for o in outcomes) == [False, True]
    flow, step, data, version = state(db)
    assert step == "survey:security" and data["_history"] == ["household", "card"]


def test_redelivered_event_is_dropped(core, db, roster):
    first = core.handle(Inbound(channel="test", user_id="u1", command="visit", event_key="42"))
    again = core.handle(Inbound(channel="test", user_id="u1", command="visit", event_key="42"))
    assert first.replies and not first.duplicate
    assert again.duplicate and again.replies == []
    assert state(db)[3] == 1


def test_a_delivery_mark_outlives_an_event_rolled_back(core, db, roster, clock):
    """The mark of an answer delivered goes with the next event's last writes; when that event rolls
    back (its key recorded meanwhile by another process, here by its own hook, once), the mark is
    written by the event's second run, not lost."""
    from storage import hot

    first = Inbound(channel="test", user_id="u1", command="visit", event_key="k1")
    assert core.handle(first).replies
    core.work.confirm(first, clock())
    raced = []

    def another_process_first(ctx, outcome):
        if not raced:
            raced.append(ctx.inbound.event_key)
            hot.record_answer(ctx.connection, "test", "k2", None, ctx.now)

    second = core.handle(Inbound(channel="test", user_id="u2", command="help", event_key="k2"),
                         before_commit=another_process_first)
    assert raced == ["k2"] and second.replies and not second.duplicate  # rolled back, run again
    with db.connect() as conn:
        assert hot.start_event(conn, "test", "u1", "k1").delivered_at is not None
        assert hot.start_event(conn, "test", "u2", "k2").answer is not None  # the second run's answer
    assert not core.work.delivered


def test_a_row_changed_after_the_hook_runs_the_event_again(core, db, roster):
    """The dialogue row is saved after the channel's hook; should it have changed by then (the row lock
    rules it out, so the hook changes it itself, once), the event is not answered as stale with the
    hook's work rolled back behind it: it runs again from the row as it is, hook included."""
    from storage import hot

    core.handle(Inbound(channel="test", user_id="u1", command="visit", event_key="v1"))
    runs = []

    def row_changes_meanwhile(ctx, outcome):
        runs.append(ctx.dialogue.version)
        if len(runs) == 1:
            row = hot.start_event(ctx.connection, "test", "u1", None)
            assert hot.save_state(ctx.connection, "test", "u1", expected_version=row.version, flow=row.flow,
                                  step=row.step, data=row.data, version=row.version + 1, now=ctx.now) == 1

    answer = core.handle(Inbound(channel="test", user_id="u1", text="住户1", event_key="v2"),
                         before_commit=row_changes_meanwhile)
    assert runs == [1, 1]  # the second run read the row as the first left it: rolled back
    assert answer.replies and not answer.stale
    flow, step, data, version = state(db)
    assert (step, version) == ("card", 2)


def test_lookback_shows_what_the_household_raised_before(core, db, roster, clock):
    chat = Chat(core)
    visit_until_summary(chat, "住户2", ("物业", "楼道灯坏了", "未解决"))
    chat.press("确认提交")
    clock.now += timedelta(days=1)
    chat.say("/visit")
    assert chat.labels()[-2] == "✅ 住户2 · 幸福路2号"  # visited ones go last
    answer = chat.press("住户2")
    assert "此前反映的问题" in answer and "[物业] 楼道灯坏了 — 待交办（2026-11-20）" in answer


def test_photo_and_location_are_kept(core, db, roster):
    chat = Chat(core)
    play(chat, [("say", "/visit"), ("press", "住户1"), ("press", "是"), *SURVEY_ANSWERS,
                ("press", texts.NO_DIFFICULTY), ("press", "否")])
    assert chat.last.request_location is False
    chat.photo("telegram:PHOTO1")
    assert chat.last.request_location is True
    assert texts.LOCATION_INVALID in chat.say("不知道")
    answer = chat.say("31.2304, 121.4737")
    assert "照片：已提供　位置：已提供" in answer
    chat.press("确认提交")
    [visit] = rows(db, Visit)
    assert (visit.photo_ref, visit.latitude, visit.longitude, visit.leaflet_given) == (
        "telegram:PHOTO1", 31.2304, 121.4737, False)


def test_household_list_pages(core, db, clock):
    r = make_roster(db, households=12)
    bind(db, r.cadre, "test", "u1", clock())
    chat = Chat(core)
    answer = chat.say("/visit")
    assert "（第1/2页）" in answer and len([l for l in chat.labels() if "·" in l]) == 8
    answer = chat.press(texts.NEXT_PAGE)
    assert "（第2/2页）" in answer and "住户9 · 幸福路9号" in chat.labels()
    chat.press("住户9")
    assert state(db)[2]["household"] == r.households[8].id


def test_everyday_contact(core, db, roster):
    chat = Chat(core)
    assert texts.ASK_CONTACT_KIND in chat.say("/contact")
    chat.press("节日走访")
    chat.press("住户3")
    assert texts.CONTACT_ASK_PROBLEM in chat.say("春节慰问，送米面油")
    answer = chat.press(texts.CONTACT_NO_PROBLEM)
    assert answer == texts.CONTACT_SAVED.format(kind="节日走访", who="（住户3）", count=1)
    chat.say("/contact")
    chat.press("电话联系")
    chat.press("不针对具体住户")
    chat.press(texts.SKIP)
    chat.press("环保")
    answer = chat.say("河道有异味")
    assert "本半年共 2 次" in answer and "列入问题台账" in answer
    contacts = rows(db, EverydayContact)
    assert [(c.kind, c.note, c.household_id is not None) for c in contacts] == [
        ("holiday", "春节慰问，送米面油", True), ("phone", None, False)]
    [problem] = rows(db, Problem)
    assert (problem.source, problem.category, problem.content, problem.household_id) == (
        "contact", "环保", "河道有异味", None)


def test_service_object_contact_with_a_problem_in_the_units_remit(core, db, roster):
    chat = Chat(core)
    assert texts.OBJECT_PICK in chat.say("/object")
    chat.press("对象3")
    assert texts.OBJECT_SAVED_NO_PROBLEM.format(name="对象3") == chat.press(texts.OBJECT_NO_PROBLEM)
    chat.say("/object")
    chat.press("对象4")
    chat.press("行业领域")
    chat.press("城建")
    answer = chat.say("审批材料要求不清楚")
    assert "（行业领域），列入问题台账" in answer
    [problem] = rows(db, Problem)
    assert (problem.source, problem.remit, problem.raiser_name, problem.service_object_id is not None) == (
        "service_object", "行业领域", "对象4", True)


def test_progress(core, db, roster):
    chat = Chat(core)
    answer = chat.say("/progress")
    assert "已走访 0/3 户" in answer and "住户1 · 幸福路1号" in answer and "服务对象 10 名" in answer
    for name in ("住户1", "住户2", "住户3"):
        visit_until_summary(chat, name, None)
        chat.press("确认提交")
    answer = chat.say("进度")
    assert "已走访 3/3 户" in answer and texts.PROGRESS_ALL_DONE in answer


def test_progress_warns_about_few_service_objects(core, db, clock):
    r = make_roster(db, objects=8)
    bind(db, r.cadre, "test", "u1", clock())
    assert texts.PROGRESS_OBJECTS_LOW.format(minimum=10) in Chat(core).say("/progress")


def test_unbound_user_gets_an_explanation_and_no_cadre_command(core, db, roster):
    chat = Chat(core, user_id="stranger")
    for message in ("/visit", "/progress", "你好"):
        assert chat.say(message) == texts.NOT_BOUND
        assert chat.outcomes[-1].replies[0].request_contact
    assert "/bind" in chat.say("/help") and "/visit" not in chat.say("/help")
    assert chat.say("/start") == texts.WELCOME_UNBOUND
    assert rows(db, Visit) == []


def test_help_lists_what_each_role_may_do(core, db, roster, clock):
    bind(db, roster.supervisor, "test", "sup", clock())
    bind(db, roster.admin, "test", "adm", clock())
    cadre, sup, adm = (Chat(core, u).say("/help") for u in ("u1", "sup", "adm"))
    assert "/visit" in cadre and "/unit" not in cadre and "/bindcode" not in cadre
    assert "/unit" in sup and "/bindcode" not in sup
    assert "/unit" in adm and "/bindcode" in adm


def test_binding_by_code_is_one_time(core, db, roster, clock):
    admin = Chat(core, "adm")
    bind(db, roster.admin, "test", "adm", clock())
    answer = admin.say("/bindcode 138 0000 0003")
    code = answer.split("绑定码：")[1].split()[0]
    assert len(code) == 8
    newcomer = Chat(core, "new")
    assert newcomer.say(f"/bind {code.lower()}") == texts.BOUND_OK.format(name="李明", unit="市住建局")
    assert texts.ASK_CONTACT_KIND in newcomer.say("/contact")
    other = Chat(core, "other")
    assert other.say(f"/bind {code}") == texts.BIND_CODE_INVALID
    # only the hash is stored
    assert all(code not in b.code_hash for b in rows(db, BindingCode))


def test_expired_or_wrong_code_binds_nothing(core, db, roster, clock, settings):
    from bot.core import binding
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, roster.cadre, clock(), settings)
    clock.now += timedelta(hours=settings.bind_code_ttl_hours + 1)
    chat = Chat(core, "late")
    assert chat.say(f"/start bind-{code}") == texts.BIND_CODE_INVALID
    assert chat.say("/bind NOTACODE") == texts.BIND_CODE_INVALID
    assert chat.say("/bind") == texts.BIND_USAGE
    assert [a.external_user_id for a in rows(db, ChatAccount)] == ["u1"]


def test_binding_by_shared_contact_only_with_ones_own_card(core, db, roster):
    chat = Chat(core, "tg42")
    assert chat.contact("+86 138 0000 0002", user_id="someone-else") == texts.CONTACT_NOT_OWN
    assert chat.contact("13900009999", user_id="tg42") == texts.CONTACT_UNKNOWN.format(phone="13900009999")
    assert chat.contact("+86 138 0000 0002", user_id="tg42") == texts.BOUND_OK.format(name="王芳", unit="市住建局")
    assert "/unit" in chat.say("/help")


def test_supervisor_sees_the_unit(core, db, roster, clock):
    chat = Chat(core)
    visit_until_summary(chat, "住户1", None)
    chat.press("确认提交")
    bind(db, roster.supervisor, "test", "sup", clock())
    answer = Chat(core, "sup").say("/unit")
    assert "李明：1/3 户，服务对象 10 名 ⚠" in answer


def test_deactivated_household_cannot_be_confirmed(core, db, roster):
    chat = Chat(core)
    visit_until_summary(chat, "住户2", None)
    with session_scope(db) as s:
        h = s.get(Household, roster.households[1].id)
        h.active = False
        s.add(h)
    assert texts.HOUSEHOLD_GONE in chat.press("确认提交")
    assert rows(db, Visit) == []


def test_the_work_style_office_sees_every_unit(core, db, roster, clock):
    from storage.models import Cadre, Role, Unit

    with session_scope(db) as s:
        office = Unit(name="市作风办")
        s.add(office)
        s.flush()
        head = Cadre(name="孙主任", unit_id=office.id, mobile="13800000099", role=Role.SUPERVISOR)
        s.add(head)
    bind(db, head, "test", "office", clock())
    answer = Chat(core, "office").say("/unit")
    assert "各单位" in answer and "市住建局：0/3 户（干部 1 名） ⚠ 1 名未完成" in answer


def test_a_household_is_picked_by_its_name_or_a_unique_part_of_its_address(core, db, clock):
    roster = make_roster(db, households=12)  # two pages of eight
    bind(db, roster.cadre, "test", "u1", clock())
    chat = Chat(core)
    chat.say("/visit")
    assert "回头看：住户11（幸福路11号）" in chat.say("住户11")  # on the second page, by its name alone
    chat.say("/cancel")
    chat.say("/visit")
    assert "回头看：住户3（幸福路3号）" in chat.say("幸福路3号")  # a whole part: not 幸福路3x号
    chat.say("/cancel")
    chat.say("/visit")
    assert texts.PICK_AN_OPTION.format(count=10) in chat.say("住户")  # twelve have it: which one?
    assert texts.PICK_AN_OPTION.format(count=10) in chat.say("幸福路1")  # 幸福路1号, 幸福路10-12号


def test_channels_without_buttons_are_told_to_type(core, db, roster, clock):
    chat = Chat(core, user_id="wx1", channel="wechat-like")
    chat._send = lambda **kw: Chat._send(chat, buttons=False, share_contact=False, **kw)  # what WeChat's channel says
    assert chat.say("/start") == texts.WELCOME_UNBOUND_TYPED and "按钮" not in texts.WELCOME_UNBOUND_TYPED
    assert chat.say("走访") == texts.NOT_BOUND_TYPED
    bind(db, roster.cadre, "wechat-like", "wx1", clock())
    chat.say("/visit")
    assert texts.PICK_AN_OPTION_TYPED.format(count=4) in chat.say("随便说点什么")
