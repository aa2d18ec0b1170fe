"""好差评 by the national rules (issue #11), through the core as dialogue tables and over real HTTP:
the person rated never sees the rater, a 差评 about a supervisor lands with the 作风办, nobody is A岗
or B岗 of a 差评 about themselves, every full phone shown to staff is in the audit log, the 作风办
of a county oversees every unit by its role, and a 差评 needs a reason or a comment."""

from __future__ import annotations

from datetime import datetime, time, timezone

import httpx
import pytest
from sqlmodel import select

from bot import texts
from bot.core import ledger
from scheduler.jobs import remind_callbacks
from storage.db import session_scope
from storage.models import (AuditLog, Cadre, CallbackTask, ChatAccount, OutboxMessage, Problem, Rating, Role,
                            TargetKind, Unit)
from tests.utils import Chat, bind, make_roster, make_window, token_for

PHONE = "13912345678"


def rows(db, model):
    with session_scope(db) as s:
        return list(s.exec(select(model).order_by(model.id)).all())


@pytest.fixture
def county(db, clock):
    """A county: 县住建局 with a cadre (李明), its only supervisor (王芳) and a second cadre; the
    work-style office 县作风办 (not named in SUPERVISION_UNITS) with 周长青 in the 作风办 role."""
    roster = make_roster(db)
    with session_scope(db) as s:
        unit = s.get(Unit, roster.unit.id)
        unit.name = "县住建局"
        office = Unit(name="县作风办")
        s.add_all([unit, office])
        s.flush()
        head = Cadre(name="周长青", unit_id=office.id, mobile="13800000041", role=Role.OFFICE)
        other = Cadre(name="陈静", unit_id=roster.unit.id, mobile="13800000042", role=Role.CADRE)
        s.add_all([head, other])
        s.flush()
        for person in (head, roster.supervisor, roster.cadre, other):
            s.add(ChatAccount(channel="telegram", external_user_id=f"tg{person.id}", cadre_id=person.id,
                              bound_at=clock(), bound_by="code"))
        s.flush()
        people = {"office": head, "other": other}
    bind(db, people["office"], "test", "office", clock())
    bind(db, roster.supervisor, "test", "boss", clock())
    bind(db, roster.cadre, "test", "cadre", clock())
    bind(db, people["other"], "test", "other", clock())
    roster.office, roster.other = people["office"], people["other"]
    return roster


def rate_badly(core, db, settings, cadre_id: int, user: str = "citizen", *, kind: str = TargetKind.CADRE,
               comment: str = "让我改天再来", phone: str = PHONE) -> str:
    """A citizen gives 不满意 with a reason, a comment and a phone, in chat."""
    citizen = Chat(core, user)
    citizen.say(f"/start {token_for(db, settings, kind, cadre_id)}")
    citizen.press("🙁 不满意")
    citizen.press("态度生硬")
    citizen.press(texts.RATING_REASONS_DONE)
    citizen.say(comment)
    return citizen.say(phone)


# -- 1. confidentiality and conflicts of interest ------------------------------------------------------


def test_a_bad_rating_of_a_supervisor_lands_with_the_office_and_never_shows_her_the_rater(
        core, db, settings, county, clock):
    rate_badly(core, db, settings, county.supervisor.id)
    [problem] = rows(db, Problem)
    [task] = rows(db, CallbackTask)
    assert problem.to_office and problem.unit_id == county.unit.id

    boss = Chat(core, "boss")
    ledger_view = boss.say("/ledger")
    assert f"#{problem.id}" not in ledger_view and PHONE not in ledger_view
    assert boss.labels()[0] == texts.LEDGER_BUCKETS["new"].format(count=0)
    boss.say("/cancel")
    assert boss.say("/callbacks") == texts.CALLBACKS_NONE
    ratings = boss.say("/ratings")
    assert "王芳" in ratings and "不满意" in ratings  # she sees the count and the level ...
    assert "139" not in ratings and "5678" not in ratings  # ... never the rater's phone, not even masked
    with pytest.raises(ledger.LedgerError):  # nor may she assign it herself
        with session_scope(db) as s:
            ledger.act(s, settings, problem.id, ledger.ASSIGN, now=clock(), actor=s.get(Cadre, county.supervisor.id),
                       unit_id=county.unit.id, a_id=county.cadre.id, b_id=county.other.id)

    # The morning call-back reminder: the 作风办 hears of it, she does not.
    clock.now = datetime(2026, 11, 27, 1, 5, tzinfo=timezone.utc)  # 09:05 on the due day
    with session_scope(db) as s:
        remind_callbacks(s, settings.model_copy(update={"reminder_time": time(9, 0)}), clock.now)
    reminders = {m.cadre_id: m.body for m in rows(db, OutboxMessage) if m.kind == "callbacks"}
    assert county.supervisor.id not in reminders
    assert f"#{problem.id}" in reminders[county.office.id] and "139****5678" in reminders[county.office.id]

    # The 作风办 sees the full phone to call back, and that is written to the audit log.
    office = Chat(core, "office")
    callbacks = office.say("/callbacks")
    assert f"#{problem.id} 王芳 不满意：回访电话 {PHONE}" in callbacks
    [entry] = [a for a in rows(db, AuditLog) if a.action == "phone.reveal"]
    assert (entry.actor, entry.target, entry.channel) == (f"cadre:{county.office.id}", f"callback:{task.id}", "test")
    office.say("/ledger")
    office.press("待交办 1")
    opened = office.press(f"#{problem.id}")
    assert PHONE in opened
    reveals = [a.target for a in rows(db, AuditLog) if a.action == "phone.reveal"]
    assert reveals.count(f"problem:{problem.id}") >= 1 and reveals[0] == f"callback:{task.id}"


def test_a_bad_rating_of_a_cadre_stays_with_the_unit_but_he_is_never_his_own_a_or_b_post(
        core, db, settings, county, clock):
    rate_badly(core, db, settings, county.cadre.id)
    [problem] = rows(db, Problem)
    assert not problem.to_office  # his unit has a supervisor who is not him

    boss = Chat(core, "boss")
    assert PHONE in boss.say("/callbacks")  # the unit's supervisor calls back
    boss.say("/ledger")
    boss.press("待交办 1")
    boss.press(f"#{problem.id}")
    boss.press(texts.LEDGER_ACTION_LABELS[ledger.ASSIGN])
    boss.press("县住建局")
    assert "李明" not in boss.labels()  # the cadre rated is not offered as A岗 ...
    with session_scope(db) as s:  # ... and refused if named anyway
        with pytest.raises(ledger.LedgerError) as refused:
            ledger.act(s, settings, problem.id, ledger.ASSIGN, now=clock(), actor=s.get(Cadre, county.supervisor.id),
                       unit_id=county.unit.id, a_id=county.cadre.id, b_id=county.other.id)
    assert str(refused.value) == texts.LEDGER_POST_IS_SUBJECT.format(post="A岗", name="李明")
    assert rows(db, Problem)[0].status == "new"


def test_a_unit_whose_only_supervisor_is_rated_sends_window_ratings_of_her_to_the_office(
        core, db, settings, county):
    window = make_window(db, county, on_duty=[county.supervisor])
    rate_badly(core, db, settings, window.id, kind=TargetKind.WINDOW)
    [problem] = rows(db, Problem)
    assert problem.to_office
    assert Chat(core, "boss").say("/callbacks") == texts.CALLBACKS_NONE
    assert PHONE in Chat(core, "office").say("/callbacks")


def test_the_rated_never_see_the_comment_of_a_bad_rating_about_them_in_digests_lists_console_or_forms(
        core, db, settings, county, clock, tmp_path):
    """A comment is free text the rater typed: it can name them, their door or their number. Like the
    phone, it is never shown to the person rated (nor to those on duty at a rated window), in the digest,
    /ratings, the console or the forms; whoever handles the item sees it."""
    import openpyxl

    from bot.core import console_views
    from bot.core.login import Who
    from bot.reports import forms
    from scheduler.jobs import plan_digests

    window = make_window(db, county, on_duty=[county.supervisor])
    rate_badly(core, db, settings, county.supervisor.id, "c1", comment="我是三号楼的老张", phone="13912340001")
    rate_badly(core, db, settings, window.id, "c2", kind=TargetKind.WINDOW, comment="我住幸福路3号", phone="13912340002")
    rate_badly(core, db, settings, county.cadre.id, "c3", comment="窗口排队太久", phone="13912340003")
    identifying = ("我是三号楼的老张", "我住幸福路3号", "13912340001", "13912340002", "1234****0001")
    his = {r.id for r in rows(db, Rating) if r.cadre_id == county.cadre.id}

    evening = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)  # 18:30: the daily digest is due
    with session_scope(db) as s:
        digests = {d.cadre_id: d.body for d in plan_digests(s, settings.model_copy(update={"digest_weekly_day": None}),
                                                            evening)}
    hers, office = digests[county.supervisor.id], digests[county.office.id]
    assert "• 王芳（县住建局）不满意\n" in hers and "• 不动产登记窗口（县住建局）不满意\n" in hers  # the level, no more
    assert "• 李明（县住建局）不满意：窗口排队太久" in hers  # not about her: she supervises him
    assert not any(text in hers for text in identifying)
    assert "• 王芳（县住建局）不满意：我是三号楼的老张" in office and "我住幸福路3号" in office

    ratings = Chat(core, "boss").say("/ratings")
    assert "窗口排队太久" in ratings and not any(text in ratings for text in identifying)
    assert "我是三号楼的老张" in Chat(core, "office").say("/ratings")

    with session_scope(db) as s:
        me = Who(0, county.supervisor.id, "王芳", county.unit.id, Role.SUPERVISOR, clock())
        page = console_views.ratings_page(s, settings, me, "2026H2")
        shown = {row.target: row for row in page.rows}
        assert not shown["王芳"].shows_rater and shown["王芳"].phone == ""
        assert not shown["不动产登记窗口"].shows_rater and shown["不动产登记窗口"].phone == ""
        assert shown["李明"].shows_rater and shown["李明"].phone == "139****0003"
        own = console_views.cadre_page(s, settings, me, county.supervisor.id, "2026H2")
        assert own.rater_hidden == {r.id for r in own.ratings}
        cadre = Who(0, county.cadre.id, "李明", county.unit.id, Role.CADRE, clock())
        assert console_views.cadre_page(s, settings, cadre, county.cadre.id, "2026H2").rater_hidden == his
        office_view = console_views.ratings_page(s, settings, Who(0, county.office.id, "周长青", county.office.unit_id,
                                                                  Role.OFFICE, clock()), "2026H2")
        assert all(row.shows_rater for row in office_view.rows)

        # The forms a unit's supervisor exports carry no rater at all (差评 are not problems of households).
        import io

        files = forms.export(s, list(forms.FORMS), "2026H2", [s.get(Unit, county.unit.id)], settings)
        assert len(files) == len(forms.FORMS)
        cells = [str(c) for f in files for ws in openpyxl.load_workbook(io.BytesIO(f.content)).worksheets
                 for row in ws.iter_rows(values_only=True) for c in row if c is not None]
        assert "县住建局" in "".join(cells) and not any(text in cell for cell in cells for text in identifying)


# -- 2. the 作风办 oversees every unit by its role ---------------------------------------------------------


def test_the_office_of_a_county_sees_every_unit(core, db, settings, county, clock):
    with session_scope(db) as s:
        town = Unit(name="城关镇")
        s.add(town)
        s.flush()
        s.add(Cadre(name="刘洋", unit_id=town.id, mobile="13800000051", role=Role.CADRE))
    office = Chat(core, "office")
    everything = office.say("/ratings")
    assert "县住建局" in everything and "城关镇" in everything and texts.RATINGS_NONE not in everything
    assert texts.RATINGS_FORBIDDEN_UNIT not in office.say("/ratings 城关镇")
    assert "城关镇" in office.say("/unit")
    # Ranked like a supervisor for commands; the help names the role.
    assert texts.ROLE_NAMES[Role.OFFICE] == "作风办"
    assert texts.HELP_RATINGS in office.say("/help")
    # The unit supervisor still sees only her own unit.
    assert Chat(core, "boss").say("/ratings 城关镇") == texts.RATINGS_FORBIDDEN_UNIT


# -- 3. a 差评 needs a reason or a comment ------------------------------------------------------------------


def test_a_bad_rating_with_no_reason_and_no_comment_is_refused_in_chat(core, db, settings, county):
    citizen = Chat(core, "citizen")
    citizen.say(f"/start {token_for(db, settings, TargetKind.CADRE, county.cadre.id)}")
    citizen.press("非常不满意")
    citizen.press(texts.RATING_REASONS_DONE)
    assert texts.RATING_NEED_REASON in citizen.press(texts.SKIP)
    assert rows(db, Rating) == [] and rows(db, Problem) == []
    assert "手机号" in citizen.say("办事大厅没人")  # a comment alone is enough
    citizen.press(texts.SKIP)
    [problem] = rows(db, Problem)
    assert "办事大厅没人" in problem.content


def test_a_bad_rating_with_no_reason_and_no_comment_is_refused_on_the_page(db, settings, county, clock):
    from bot.app import create_app
    from bot.core.engine import Engine
    from tests.standins.server import ServedApp
    from tests.test_rating_web import Rater

    served = ServedApp(None)
    served.bind()
    served.app = create_app(settings, Engine(db, settings, clock=clock), with_worker=False)
    with served:
        rater = Rater(served, token_for(db, settings, TargetKind.CADRE, county.cadre.id))
        csrf = rater.open()
        refused = rater.post(csrf=csrf, level="1", phone=PHONE)
        assert refused.status_code == 400 and texts.RATING_NEED_REASON in refused.text
        assert rows(db, Rating) == []
        assert rater.post(csrf=csrf, level="1", comment="等了一上午").status_code == 200
    assert [r.comment for r in rows(db, Rating)] == ["等了一上午"]


# -- 2. the roster import ---------------------------------------------------------------------------------


def test_roster_import_maps_the_office_and_warns_when_nobody_oversees_all_units(db, tmp_path):
    import openpyxl

    from storage.example_roster import write_example_workbook
    from bot.imports.roster import import_roster

    path = tmp_path / "roster.xlsx"
    write_example_workbook(path)
    book = openpyxl.load_workbook(path)
    sheet = book["干部"]
    header = [c.value for c in sheet[1]]
    role, mobile = header.index("角色") + 1, header.index("手机号") + 1
    [row] = [r for r in range(2, sheet.max_row + 1) if str(sheet.cell(r, mobile).value) == "13800000002"]

    sheet.cell(row, role).value = "作风办"
    book.save(path)
    report = import_roster(db, path, supervision_units=())
    assert not any("能查看全部单位" in w for w in report.warnings)
    with session_scope(db) as s:
        assert s.exec(select(Cadre).where(Cadre.mobile == "13800000002")).one().role == Role.OFFICE

    sheet.cell(row, role).value = "主管"  # the office's head as a plain supervisor, and no SUPERVISION_UNITS
    book.save(path)
    warned = import_roster(db, path, supervision_units=())
    assert any("能查看全部单位" in w and "作风办" in w for w in warned.warnings)
    # Named in SUPERVISION_UNITS (the default), the same supervisor oversees all: no warning.
    assert not any("能查看全部单位" in w for w in import_roster(db, path).warnings)


# -- 4. a spot-check denial disputes the visit ------------------------------------------------------------


def _deny_visit(core, db, county, clock) -> Chat:
    from tests.utils import make_visit

    make_visit(db, county.cadre, county.households[0], clock())
    cadre = Chat(core, "cadre")
    assert "已走访 1/3 户" in cadre.say("/progress")
    boss = Chat(core, "boss")
    assert "已抽取 1 条新的走访记录" in boss.say("/spotcheck 抽取")
    boss.press("（李明）")
    boss.press("否认走访")
    recorded = boss.say("说从没有人来过")
    assert texts.SPOT_DISPUTED in recorded
    return boss


def _counted_visits(db, settings, county, clock):
    from bot.reports import forms, rankings

    with session_scope(db) as s:
        form1 = forms.form_rows(s, 1, "2026H2", [county.unit.id], settings)
        ranked = rankings.ranking(s, rankings.VISITS, rankings.CADRES, "2026H2", settings, clock().date())
        return sum(len(v) for v in form1.values()), ranked.position(county.cadre.id).good


def test_a_denied_visit_stops_counting_and_the_cadre_is_told_until_the_supervisor_rules(
        core, db, settings, county, clock):
    boss = _deny_visit(core, db, county, clock)
    cadre = Chat(core, "cadre")
    assert "已走访 0/3 户" in cadre.say("/progress")
    assert "李明：0/3 户" in boss.say("/unit")
    assert _counted_visits(db, settings, county, clock) == (0, 0)  # not in 附件1, not in the visits ranking
    [notice] = [m for m in rows(db, OutboxMessage) if m.kind == "spotcheck"]
    assert notice.cadre_id == county.cadre.id and "住户1" in notice.body and "未接受过走访" in notice.body

    boss.say("/spotcheck")
    boss.press(texts.SPOT_RULING_MARK)
    assert "说从没有人来过" in boss.last.text
    ruled = boss.press(texts.SPOT_RULINGS["visit_stands"])
    assert "已裁定：住户1" in ruled
    assert "已走访 1/3 户" in cadre.say("/progress")
    assert _counted_visits(db, settings, county, clock) == (1, 1)
    told = [m for m in rows(db, OutboxMessage) if m.kind == "spotcheck"]
    assert len(told) == 2 and texts.SPOT_RULINGS["visit_stands"] in told[1].body
    assert not any(texts.SPOT_RULING_MARK in label for label in boss.labels())  # ruled once only


def test_a_denial_that_stands_keeps_the_visit_out(core, db, settings, county, clock):
    boss = _deny_visit(core, db, county, clock)
    boss.say("/spotcheck")
    boss.press(texts.SPOT_RULING_MARK)
    boss.press(texts.SPOT_RULINGS["denial_stands"])
    assert "已走访 0/3 户" in Chat(core, "cadre").say("/progress")
    assert _counted_visits(db, settings, county, clock) == (0, 0)


# -- 5. appeal and review (申诉复核) ------------------------------------------------------------------------


def _satisfaction(db, settings, county, clock):
    from bot.reports import rankings

    with session_scope(db) as s:
        ranked = rankings.ranking(s, rankings.SATISFACTION, rankings.CADRES, "2026H2",
                                  settings.model_copy(update={"ranking_min_ratings": 1}), clock().date())
        entry = ranked.position(county.cadre.id)
        return entry.good, entry.total


def test_an_appeal_voided_by_the_office_takes_the_rating_out_of_the_rate_and_the_ranking(
        core, db, settings, county, clock):
    from tests.utils import make_rating

    for n in range(4):
        make_rating(db, county.cadre, 5, clock(), n=n)
    rate_badly(core, db, settings, county.cadre.id)
    [bad] = [r for r in rows(db, Rating) if r.level == 2]
    assert _satisfaction(db, settings, county, clock) == (4, 5)

    cadre = Chat(core, "cadre")
    listed = cadre.say("/appeal")
    assert f"评价号 {bad.id}：" in listed and "2026-11-27 前可申诉" in listed
    assert Chat(core, "other").say(f"/appeal {bad.id} 不是我") == texts.APPEAL_NOT_YOURS.format(id=bad.id)
    assert cadre.say(f"/appeal {bad.id}") == texts.APPEAL_ASK_REASON.format(rating=bad.id, limit=500)
    assert texts.APPEAL_ASK_PHOTO.format(rating=bad.id) in cadre.say("当天系统故障，已当场说明")
    filed = cadre.say("跳过")  # no photo
    [appeal_id] = [int(filed.split("申诉号 ")[1].split("，")[0])]
    assert cadre.say(f"/appeal {bad.id} 再申诉一次") == texts.APPEAL_ALREADY.format(id=bad.id)
    [notice] = [m for m in rows(db, OutboxMessage) if m.kind == "appeal"]
    assert notice.cadre_id == county.office.id and "当天系统故障" in notice.body  # to the 作风办 only

    assert Chat(core, "boss").say("/appeals") == texts.APPEAL_OFFICE_ONLY
    office = Chat(core, "office")
    assert f"申诉号 {appeal_id}（评价号 {bad.id}）李明" in office.say("/appeals")
    assert "待复核" in office.say("/ratings 李明")
    assert office.say(f"/appeals {appeal_id} 误评") == texts.APPEAL_NEED_DECISION_REASON
    assert _satisfaction(db, settings, county, clock) == (4, 5)  # nothing changed by the refusal
    assert "撤销（误评）" in office.say(f"/appeals {appeal_id} 误评 评价人把窗口认错了")
    assert office.say(f"/appeals {appeal_id} 维持") == texts.APPEAL_DECIDED.format(id=appeal_id)

    assert _satisfaction(db, settings, county, clock) == (4, 4)
    report = office.say("/ratings 李明")
    assert texts.RATINGS_TARGET_LINE.format(name="李明", total=4, rate="100.0%", bad=0).lstrip("• ") in report
    assert "【撤销（误评）】" in report and texts.RATINGS_VOIDED.format(count=1) in report  # kept in the history
    decided = [m for m in rows(db, OutboxMessage) if m.kind == "appeal" and m.cadre_id == county.cadre.id]
    assert len(decided) == 1 and "撤销（误评）：评价人把窗口认错了" in decided[0].body


def _jpeg(seed: int = 1) -> bytes:
    """A photo as a phone sends it."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (240, 180), (210, 200, 180))
    ImageDraw.Draw(image).rectangle((40 + seed * 9, 30, 150, 170), fill=(120, 60 + seed * 10, 40))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
def media_core(core, settings, tmp_path):
    """The core keeping photos under a folder of the test's own (MEDIA_DIR)."""
    core.settings = core.work.settings = settings.model_copy(update={"media_dir": tmp_path / "media"})
    return core


def test_an_appeal_carries_the_cadres_own_photo_and_the_office_is_told_it_has_one(
        media_core, db, settings, county, clock):
    """申诉可附照片: after /appeal <评价号> <理由> the bot asks for one photo or 跳过. A forwarded photo, one
    the channel could not fetch, or a file that is no picture is refused with the reason and changes
    nothing; the cadre's own photo is kept by its content hash, named on the appeal, and the 作风办's
    notice and /appeals say 附照片. Only the appellant and the 作风办 may see it."""
    import hashlib

    from bot.core import appeals
    from storage.models import RatingAppeal

    core = media_core
    rate_badly(core, db, settings, county.cadre.id)
    [bad] = rows(db, Rating)
    cadre = Chat(core, "cadre")
    assert cadre.say(f"/appeal {bad.id} 当天系统故障，有照片为证") == texts.APPEAL_ASK_PHOTO.format(rating=bad.id)
    assert texts.SKIP in cadre.labels()
    photo = _jpeg()
    refused = {
        texts.APPEAL_PHOTO_FORWARDED: dict(photo_ref="test:fwd", photo=photo, forwarded=True),
        texts.APPEAL_PHOTO_NOT_RECEIVED: dict(photo_ref="test:lost"),  # the channel could not fetch it
        texts.APPEAL_PHOTO_NOT_PICTURE: dict(photo_ref="test:doc", photo=b"%PDF-1.4 not a picture"),
    }
    for answer, sent in refused.items():
        said = cadre._send(**sent)
        assert said.startswith(answer) and texts.APPEAL_ASK_PHOTO.format(rating=bad.id) in said
    assert cadre.say("照片在路上") .startswith(texts.NEED_PHOTO)
    assert rows(db, RatingAppeal) == [] and [m for m in rows(db, OutboxMessage) if m.kind == "appeal"] == []
    media = core.settings.media_dir
    assert not media.exists() or list(media.iterdir()) == []  # nothing refused was kept

    filed = cadre._send(photo_ref="test:own", photo=photo)
    [appeal] = rows(db, RatingAppeal)
    assert filed == texts.APPEAL_FILED.format(id=appeal.id, rating=bad.id) + texts.APPEAL_FILED_PHOTO
    assert (appeal.reason, appeal.photo_ref) == ("当天系统故障，有照片为证", "test:own")
    assert appeal.photo_sha256 == hashlib.sha256(photo).hexdigest()
    assert (media / f"{appeal.photo_sha256}.img").read_bytes() == photo

    [notice] = [m for m in rows(db, OutboxMessage) if m.kind == "appeal"]
    assert notice.cadre_id == county.office.id and "附照片" in notice.body
    assert f"/console/appeals#appeal-{appeal.id}" in notice.body
    listed = Chat(core, "office").say("/appeals")
    assert f"申诉号 {appeal.id}（评价号 {bad.id}）李明" in listed and "附照片" in listed

    with session_scope(db) as s:
        appeal = s.get(RatingAppeal, appeal.id)
        seen = {name: appeals.may_see(s, settings, s.get(Cadre, person.id), appeal)
                for name, person in (("office", county.office), ("cadre", county.cadre),
                                     ("boss", county.supervisor), ("other", county.other))}
    assert seen == {"office": True, "cadre": True, "boss": False, "other": False}


def test_an_appeal_asks_for_its_reason_and_can_go_without_a_photo(media_core, db, settings, county, clock):
    from storage.models import RatingAppeal

    core = media_core
    rate_badly(core, db, settings, county.cadre.id)
    [bad] = rows(db, Rating)
    cadre = Chat(core, "cadre")
    assert cadre.say(f"申诉 {bad.id}") == texts.APPEAL_ASK_REASON.format(rating=bad.id, limit=500)
    assert cadre.say("😀") .startswith(texts.TEXT_EMPTY)  # no words: asked again
    assert cadre.say("评价人认错了人") == texts.APPEAL_ASK_PHOTO.format(rating=bad.id)
    assert cadre.say("/appeal") .startswith(texts.RESUME.format(flow="差评申诉"))  # one appeal at a time
    cadre.say("跳过")
    [appeal] = rows(db, RatingAppeal)
    assert (appeal.reason, appeal.photo_ref, appeal.photo_sha256) == ("评价人认错了人", None, None)
    [notice] = [m for m in rows(db, OutboxMessage) if m.kind == "appeal"]
    assert "附照片" not in notice.body and "附照片" not in Chat(core, "office").say("/appeals")


def test_an_appeal_after_the_working_days_is_refused(core, db, settings, county, clock):
    from datetime import timedelta

    rate_badly(core, db, settings, county.cadre.id)
    [bad] = rows(db, Rating)
    clock.now += timedelta(days=8)  # Friday 11-20 + 5 working days = Friday 11-27; now Saturday 11-28
    assert Chat(core, "cadre").say("/appeal") == texts.APPEAL_NONE
    assert Chat(core, "cadre").say(f"/appeal {bad.id} 理由") == texts.APPEAL_TOO_LATE.format(
        id=bad.id, days=5, date="2026-11-27")
    assert [m for m in rows(db, OutboxMessage) if m.kind == "appeal"] == []


# -- 6. the rater's side: 评价编号, /r/status, the issuing body, the privacy notice ---------------------------

from tests.test_rating_web import CHROMIUM_ARGS, WECHAT_UA, browser  # noqa: E402,F401  (the Chromium fixture)


@pytest.fixture
def issued(db, settings, clock):
    """The production app on loopback with an issuing body and a supervision phone."""
    from bot.app import create_app
    from bot.core.engine import Engine
    from tests.standins.server import ServedApp

    served = ServedApp(None)
    served.bind()
    settings = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{served.port}",
                                           "issuer_name": "青山县作风办", "supervision_phone": "12345"})
    served.app = create_app(settings, Engine(db, settings, clock=clock), with_worker=False)
    served.settings = settings
    with served:
        yield served


def test_the_rater_gets_a_number_and_follows_the_item_on_the_page(browser, issued, db, county, clock):
    import re

    token = token_for(db, issued.settings, TargetKind.CADRE, county.cadre.id)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, user_agent=WECHAT_UA,
                                  locale="zh-CN", java_script_enabled=False)
    try:
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{issued.url}/r/{token}")
        footer = page.locator("footer").inner_text()
        assert "青山县作风办" in footer and "监督电话 12345" in footer
        page.get_by_role("link", name=texts.PAGE_PRIVACY_LINK).click()
        page.wait_for_load_state()
        notice = page.locator("main").inner_text()
        assert texts.PAGE_PRIVACY_TITLE in notice and "180 天" in notice and "审计日志" in notice
        page.go_back()
        page.get_by_label(re.compile(r"(^|\s)不满意$")).check()
        page.get_by_label("态度生硬").check()
        page.locator("input[name=phone]").fill(PHONE)
        page.get_by_role("button", name=texts.PAGE_SUBMIT).click()
        page.wait_for_load_state()
        thanks = page.locator("main").inner_text()
        number = re.search(r"评价编号：(\d{12})", thanks).group(1)
        assert f"{issued.url}/r/status/{number}" in thanks
        assert "青山县作风办" in page.locator("footer").inner_text()

        page.goto(f"{issued.url}/r/status/{number}")
        status = page.locator("main").inner_text()
        assert "目前进度：受理" in status and "不满意" in status
        assert "李明" not in status and PHONE not in status and "5678" not in status
    finally:
        context.close()

    [problem] = rows(db, Problem)
    with session_scope(db) as s:
        ledger.act(s, issued.settings, problem.id, ledger.ASSIGN, now=clock(), actor=s.get(Cadre, county.supervisor.id),
                   unit_id=county.unit.id, a_id=county.supervisor.id, b_id=county.other.id)
    status = httpx.get(f"{issued.url}/r/status/{number}")
    assert status.status_code == 200 and "目前进度：已交办" in status.text


def test_a_status_page_shows_nothing_of_a_rating_without_its_number(issued, db, core, county, settings):
    from tests.test_rating_web import Rater

    rater = Rater(issued, token_for(db, issued.settings, TargetKind.CADRE, county.cadre.id))
    thanks = rater.post(csrf=rater.open(), level="1", comment="排队两小时", phone=PHONE)
    import re

    number = re.search(r"评价编号：(\d{12})", thanks.text).group(1)
    other = Rater(issued, token_for(db, issued.settings, TargetKind.CADRE, county.other.id), address="198.51.100.8")
    assert other.post(csrf=other.open(), level="5").status_code == 200
    [mine, theirs] = rows(db, Rating)
    assert mine.number == number and theirs.number and theirs.number != number
    for guess in (str(int(number) + 1).zfill(12), "000000000000", "abc", mine.id):
        page = httpx.get(f"{issued.url}/r/status/{guess}")
        assert page.status_code == 404 and texts.FOLLOW_UP_UNKNOWN in page.text
        assert "非常不满意" not in page.text and "排队" not in page.text
    invalid = httpx.get(f"{issued.url}/r/rAAAAAAAAAAAAAAAAAAAAAAAA")
    assert invalid.status_code == 404 and "青山县作风办" in invalid.text and "监督电话 12345" in invalid.text
    # The same number in chat, for whoever has it.
    answer = Chat(core, "anyone").say(f"/status {number}")
    assert "目前进度：受理" in answer and "非常不满意" in answer
    assert Chat(core, "anyone").say(f"/status {theirs.number}").endswith(texts.FOLLOW_UP_NONE_NEEDED)  # a good one


def test_the_chat_thanks_carry_the_number(core, db, settings, county):
    import re

    thanks = rate_badly(core, db, settings, county.cadre.id)
    [rating] = rows(db, Rating)
    assert re.search(r"评价编号：(\d{12})", thanks).group(1) == rating.number


# -- 7. retention ----------------------------------------------------------------------------------------


def test_retention_erases_contacts_of_closed_items_only_and_logs_the_count(core, db, settings, county, clock, caplog):
    import logging
    from datetime import timedelta

    from scheduler.service import _run_job
    from storage.models import ProblemStatus
    from tests.utils import make_problem

    for user in ("old", "recent", "open"):
        rate_badly(core, db, settings, county.cadre.id, user=user)
    old, recent, still_open = rows(db, Rating)
    day = timedelta(days=1)
    with session_scope(db) as s:
        for rating, answered in ((old, clock() - 181 * day), (recent, clock() - 179 * day)):
            problem = s.get(Problem, rating.problem_id)
            problem.status, problem.closed_at, problem.answered_at = ProblemStatus.ANSWERED, answered, answered
            s.add(problem)
    report_old = make_problem(db, clock() - 400 * day, source="complaint", raiser_phone="13700001111",
                              status=ProblemStatus.CLOSED, closed_at=clock() - 200 * day)
    report_recent = make_problem(db, clock() - 30 * day, source="complaint", raiser_phone="13700002222",
                                 status=ProblemStatus.CLOSED, closed_at=clock() - 10 * day)
    report_open = make_problem(db, clock() - 400 * day, source="complaint", raiser_phone="13700003333",
                               status=ProblemStatus.ASSIGNED)

    with caplog.at_level(logging.INFO, logger="scheduler.service"):
        _run_job("prune", db, settings, clock)
    assert "retention: contacts erased from 1 ratings and 1 reports" in caplog.text

    by_id = {r.id: r for r in rows(db, Rating)}
    assert (by_id[old.id].phone, by_id[old.id].comment) == (None, None)
    assert (by_id[old.id].level, by_id[old.id].reasons) == (2, ["态度生硬"])  # the statistics keep it
    for kept in (recent, still_open):
        assert (by_id[kept.id].phone, by_id[kept.id].comment) == (PHONE, "让我改天再来")
    problems = {p.id: p for p in rows(db, Problem)}
    assert problems[old.problem_id].raiser_phone is None and "让我改天再来" not in problems[old.problem_id].content
    assert "态度生硬" in problems[old.problem_id].content
    assert problems[recent.problem_id].raiser_phone == PHONE and "让我改天再来" in problems[recent.problem_id].content
    tasks = {t.rating_id: t.phone for t in rows(db, CallbackTask)}
    assert tasks == {old.id: "", recent.id: PHONE, still_open.id: PHONE}
    assert [problems[i].raiser_phone for i in (report_old, report_recent, report_open)] == [
        None, "13700002222", "13700003333"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scheduler.service"):
        _run_job("prune", db, settings, clock)  # nothing left to erase: counted as none
    assert "retention: contacts erased from 0 ratings and 0 reports" in caplog.text


# -- 8. one rating per service (一事一评) --------------------------------------------------------------------


@pytest.fixture
def issued_core(db, issued, clock):
    """The core with the served page's settings, so the links it gives point at that page."""
    from bot.core.engine import Engine

    engine = Engine(db, issued.settings, clock=clock)
    yield engine
    engine.close()


def _service_qr(core) -> tuple[str, bytes, str]:
    """The cadre asks for a one-time service QR: (its link, the QR image, the reply's text)."""
    import re

    from bot.core.types import Inbound

    outcome = core.handle(Inbound(channel="test", user_id="cadre", command="serviceqr", args=""))
    [reply] = outcome.replies
    [png] = [f.content for f in reply.files]
    return re.search(r"(http://\S+/r/s[A-Za-z0-9_-]{24})", reply.text).group(1), png, reply.text


def test_a_one_time_service_qr_rated_twice_counts_once_and_confirms_the_visit(issued, issued_core, db, county,
                                                                              clock):
    import io

    import zxingcpp
    from PIL import Image

    from storage.models import Visit
    from tests.test_rating_web import Rater
    from tests.utils import make_visit

    core = issued_core
    visit_id = make_visit(db, county.cadre, county.households[1], clock())
    url, png, text = _service_qr(core)
    assert "对 住户2 的本次走访" in text and "30 分钟内" in text
    assert [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))] == [url]
    token = url.rsplit("/", 1)[1]

    household = Rater(issued, token)
    csrf = household.open()
    neighbour = Rater(issued, token, address="198.51.100.9")
    neighbour_csrf = neighbour.open()  # opened before the household rated
    assert household.post(csrf=csrf, level="4").status_code == 200
    again = household.post(csrf=csrf, level="1", comment="再评一次")
    assert again.status_code == 409 and texts.PAGE_SERVICE_USED in again.text
    late = neighbour.post(csrf=neighbour_csrf, level="2", reason="态度生硬")
    assert late.status_code == 409
    assert household.client.get(f"/r/{token}").status_code == 409

    [rating] = rows(db, Rating)
    assert (rating.level, rating.visit_id, rating.cadre_id) == (4, visit_id, county.cadre.id)
    assert rows(db, Problem) == []
    with session_scope(db) as s:
        assert s.get(Visit, visit_id).household_confirmed_at is not None
        assert s.get(Visit, visit_id).evidence == "confirmed"  # the strongest evidence of the visit (bot.core.evidence)
    boss = Chat(core, "boss")
    assert "李明：1 条，满意率 100.0%" in boss.say("/ratings")


def test_an_expired_service_qr_is_refused_and_the_card_still_works(issued, issued_core, db, county, clock):
    from datetime import timedelta

    from tests.test_rating_web import Rater

    core = issued_core
    url, _png, text = _service_qr(core)
    assert texts.SERVICE_QR_WALK_IN in text  # no visit or contact today: a walk-in service
    rater = Rater(issued, url.rsplit("/", 1)[1])
    csrf = rater.open()
    clock.now += timedelta(minutes=31)
    expired = rater.post(csrf=csrf, level="5")
    assert expired.status_code == 410 and texts.PAGE_SERVICE_EXPIRED in expired.text
    assert rater.client.get(url).status_code == 410
    assert rows(db, Rating) == []
    forged = Rater(issued, "s" + "A" * 24)
    assert forged.client.get(f"/r/s{'A' * 24}").status_code == 404
    card = Rater(issued, token_for(db, issued.settings, TargetKind.CADRE, county.cadre.id))
    assert card.post(csrf=card.open(), level="5").status_code == 200


def _ticket(core) -> str:
    """The token of a one-time service QR the cadre asks for in chat (its page link's last part)."""
    import re

    said = Chat(core, "cadre").say("/serviceqr")
    return re.search(r"/r/(s[A-Za-z0-9_-]{24})", said).group(1)


def test_a_service_ticket_scanned_in_chat_rates_once_and_confirms_the_visit(core, db, settings, county, clock):
    """The one-time QR's code works as a card's does in Telegram's /start and WeChat's scan: one
    rating, stored with the visit it rates, which the household has thereby confirmed."""
    from storage.models import Visit
    from tests.utils import make_visit

    visit_id = make_visit(db, county.cadre, county.households[1], clock())
    token = _ticket(core)
    assert Chat(core, "cadre").say(f"/start {token}") == texts.RATING_SELF  # not by the cadre himself

    household, neighbour = Chat(core, "household"), Chat(core, "neighbour")
    assert "您正在评价：李明（县住建局） · 本次服务（一次有效）" in household.say(f"/start {token}")
    assert "您正在评价" in neighbour.say(f"/start {token}")  # both opened it before either rated
    household.press("🙁 不满意")
    household.press("态度生硬")
    household.press(texts.RATING_REASONS_DONE)
    household.say("跳过")
    assert "评价编号" in household.say("跳过")
    assert neighbour.press("非常满意") == texts.PAGE_SERVICE_USED  # the ticket was used meanwhile
    assert Chat(core, "late").say(f"/start {token}") == texts.PAGE_SERVICE_USED

    [rating] = rows(db, Rating)
    assert (rating.level, rating.visit_id, rating.cadre_id, rating.channel) == (2, visit_id, county.cadre.id, "test")
    [problem] = rows(db, Problem)  # a 差评 through a ticket is a 差评 like any other
    assert problem.id == rating.problem_id
    with session_scope(db) as s:
        visit = s.get(Visit, visit_id)
        assert visit.household_confirmed_at is not None and visit.evidence == "confirmed"


def test_an_expired_or_forged_service_ticket_is_refused_in_chat_and_stores_nothing(core, db, settings, county, clock):
    from datetime import timedelta

    from storage.models import EverydayContact, Visit

    with session_scope(db) as s:
        contact = EverydayContact(cadre_id=county.cadre.id, household_id=county.households[0].id, kind="phone",
                                  half="2026H2", contacted_at=clock(), channel="test")
        s.add(contact)
        s.flush()
        contact_id = contact.id
    late = _ticket(core)
    clock.now += timedelta(minutes=31)
    assert Chat(core, "household").say(f"/start {late}") == texts.PAGE_SERVICE_EXPIRED
    assert Chat(core, "forger").say("/start s" + "A" * 24) == texts.RATING_CODE_INVALID

    token = _ticket(core)  # another, for the same everyday contact (the cadre's newest service today)
    slow = Chat(core, "slow")
    slow.say(f"/start {token}")
    clock.now += timedelta(minutes=31)  # opened in time, answered too late
    assert slow.press("满意") == texts.PAGE_SERVICE_EXPIRED
    assert rows(db, Rating) == [] and [v for v in rows(db, Visit) if v.household_confirmed_at] == []

    token = _ticket(core)
    on_time = Chat(core, "on-time")
    on_time.say(f"/start {token}")
    assert "感谢" in on_time.press("非常满意")
    [rating] = rows(db, Rating)
    assert (rating.contact_id, rating.visit_id) == (contact_id, None)


# -- 9. cards an office would hang up ---------------------------------------------------------------------


def test_cards_are_printed_for_people_who_serve_with_the_issuer_in_official_red(db, settings, county, clock):
    from bot import fonts
    from bot.cards import CardError, card_specs
    from bot.cards.render import BAND, CARD_PX, draw_card, instruction, mm

    make_window(db, county, on_duty=[county.cadre])
    issued = settings.model_copy(update={"issuer_name": "青山县作风办", "supervision_phone": "12345"})
    with session_scope(db) as s:
        specs = card_specs(s, issued, clock())
        with pytest.raises(CardError) as refused:
            card_specs(s, issued, clock(), cadre="周长青")
    assert str(refused.value) == texts.CARD_NOT_SERVING.format(name="周长青", role="作风办")
    names = [spec.name for spec in specs]
    assert names == ["李明", "王芳", "陈静", "不动产登记窗口"]  # not the admin 赵强, not the 作风办's 周长青
    cadre_card, window_card = specs[0], specs[-1]
    assert (cadre_card.issuer, cadre_card.supervision_phone) == ("青山县作风办", "12345")
    assert "我的服务" in instruction(cadre_card) and "我的" not in instruction(window_card)

    font = fonts.find_cjk_font(None)
    image = draw_card(cadre_card, font)
    assert image.getpixel((mm(2), mm(2))) == BAND  # the title band: official red, not black
    def red_below_band(card) -> int:  # the issuer line is the only red under the title band
        body = card.crop((0, mm(16), CARD_PX[0], CARD_PX[1]))
        return sum(1 for pixel in body.get_flattened_data() if pixel[0] > 150 and pixel[1] < 90)

    assert red_below_band(image) > 50
    assert red_below_band(draw_card(card_specs_without_issuer(cadre_card), font)) == 0


def card_specs_without_issuer(spec):
    from dataclasses import replace

    return replace(spec, issuer="", supervision_phone="")
