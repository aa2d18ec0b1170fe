"""The supervisors' tools: report forms 附件1–5 (opened with openpyxl and compared with seed 004),
rankings, spot-checks, and the chat commands for them."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import openpyxl
import pytest
from sqlmodel import select

from bot import texts
from bot.cli import main as cli_main
from bot.reports import forms, rankings, spotcheck
from storage.db import session_scope
from storage.models import Cadre, Household, Role, ServiceObject, SpotCheck, Unit
from tests.utils import Chat, Roster, bind, make_problem, make_rating, make_roster, make_visit

FORM_HEADERS = Path(__file__).resolve().parent / "data" / "form_headers.json"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------
# The seed's forms, as extracted from the seed into tests/data/form_headers.json


def seed_forms() -> dict[int, dict]:
    """附件1–5 of seed 004: title, the line under it, and the header row's columns, as extracted from
    the seed into tests/data/form_headers.json (which says how)."""
    forms = json.loads(FORM_HEADERS.read_text(encoding="utf-8"))["forms"]
    return {int(n): {**form, "columns": tuple(form["columns"])} for n, form in forms.items()}


@dataclass
class FormSheet:
    title: str
    subtitle: str | None
    unit_line: str
    header: tuple
    rows: list[tuple]
    note: str


def read_form(ws) -> FormSheet:
    """One sheet as the seed's form: title, subtitle, unit line, header, data rows, note."""
    values = [tuple("" if v is None else v for v in row) for row in ws.iter_rows(values_only=True)]
    header_at = next(i for i, row in enumerate(values) if row and row[-1] == "备注")
    note_at = next(i for i in range(header_at + 1, len(values)) if str(values[i][0]).startswith("注:"))
    return FormSheet(title=values[0][0], subtitle=values[1][0] if header_at == 3 else None,
                     unit_line=values[header_at - 1][0], header=values[header_at],
                     rows=[tuple(str(v) for v in row) for row in values[header_at + 1:note_at]], note=values[note_at][0])


def workbook_of(file) -> openpyxl.Workbook:
    return openpyxl.load_workbook(io.BytesIO(file.content))


# ---------------------------------------------------------------------------------------------
# A small city


@dataclass
class City:
    roster: Roster
    village: Household  # 李明's village household
    town: Unit
    town_cadre: Cadre
    town_households: list[Household]
    office: Cadre  # a supervisor of 市作风办: sees every unit


@pytest.fixture
def city(db) -> City:
    roster = make_roster(db, households=3)
    with session_scope(db) as s:
        village = Household(address="红旗村5号", name="村户甲", phone="13911110000", area_kind="村", area_name="红旗村",
                            cadre_id=roster.cadre.id)
        town = Unit(name="第一镇", kind="镇街区")
        office_unit = Unit(name="市作风办", kind="市直部门")
        s.add_all([village, town, office_unit])
        s.flush()
        town_cadre = Cadre(name="张伟", unit_id=town.id, mobile="13800000011", role=Role.CADRE)
        office = Cadre(name="周敏", unit_id=office_unit.id, mobile="13800000021", role=Role.SUPERVISOR)
        s.add_all([town_cadre, office])
        s.flush()
        town_households = [Household(address=f"东山村{i}号", name=f"东山户{i}", phone=f"0535-8888000{i}", area_kind="村",
                                     cadre_id=town_cadre.id) for i in range(2)]
        s.add_all(town_households)
    return City(roster, village, town, town_cadre, town_households, office)


def test_forms_have_the_seed_titles_columns_and_notes(settings):
    seed = seed_forms()
    for n in forms.FORMS:
        assert forms.title(n) == seed[n]["title"]
        assert forms.columns(n) == seed[n]["columns"], n
    assert forms.subtitle(2, "村") == seed[2]["next"] == "(公共方面)"
    assert seed[4]["next"] == "(行业领域/公共方面)"
    assert {forms.subtitle(4, part) for part in forms.PARTS[4]} == {"(行业领域)", "(公共方面)"}
    assert forms.note(1, settings) == ("注:1.请于每年6月10日、12月10日前报送市作风办(电子版、纸质版同时报送),"
                                       "联系电话:3222889;2.走访农村群众、社区居民分别上报。")
    assert "6月5日、12月5日" in forms.note(4, settings) and "6月1日、12月1日" in forms.note(5, settings)


def _evidence(db, visit_id: int, level: str, *flags: str) -> None:
    """Gives a visit the evidence level and flags that bot.core.evidence stores when it is confirmed."""
    from storage.models import Visit, VisitFlag

    with session_scope(db) as s:
        visit = s.get(Visit, visit_id)
        visit.evidence = level
        s.add(visit)
        s.add_all([VisitFlag(visit_id=visit_id, cadre_id=visit.cadre_id, kind=kind, reason="…",
                             created_at=visit.visited_at) for kind in flags])


def test_form1_lists_the_visited_households_village_and_community_apart(db, settings, city):
    r = city.roster
    make_visit(db, r.cadre, r.households[0], utc(2026, 9, 3, 2))
    # Visited twice: listed once, the first date, the stronger evidence of the two.
    _evidence(db, make_visit(db, r.cadre, r.households[0], utc(2026, 10, 1, 2)), "location")
    # 01:00 on the 16th, local time; a photo used before
    _evidence(db, make_visit(db, r.cadre, city.village, utc(2026, 8, 15, 17)), "photo", "same_photo")
    make_visit(db, r.cadre, r.households[1], utc(2026, 3, 1, 2))  # the other half-year
    make_visit(db, city.town_cadre, city.town_households[0], utc(2026, 9, 9, 2))  # another unit
    with session_scope(db) as s:
        [file] = forms.export(s, [1], "2026H2", forms.units_for(s, None, "市住建局"), settings)
    assert file.filename == "附件1_走访村民(居民)情况统计表_2026H2_市住建局.xlsx"
    wb = workbook_of(file)
    assert wb.sheetnames == ["市住建局-村民", "市住建局-居民"]
    village, community = (read_form(wb[name]) for name in wb.sheetnames)
    seed = seed_forms()[1]
    for sheet in (village, community):
        assert sheet.title == seed["title"] and sheet.header == seed["columns"]
        assert sheet.unit_line == "单位(公章)：市住建局"
        assert sheet.note == forms.note(1, settings)
    # 备注: who, when, the household's evidence and flags, and the cadre's evidence of the half-year.
    cadre = "李明本半年走访凭证：位置相符 33%、照片 33%、无凭证 33%，疑似走过场 1 次"
    assert village.rows == [("红旗村5号", "村户甲", "13911110000",
                             f"李明 8月16日走访；凭证：照片；⚠ 疑似走过场：重复照片；{cadre}")]
    assert community.rows == [("幸福路1号", "住户1", "13900000000", f"李明 9月3日走访；凭证：位置相符；{cadre}")]


def test_an_empty_half_year_gives_valid_empty_forms(db, settings, city):
    make_visit(db, city.roster.cadre, city.roster.households[0], utc(2026, 9, 3, 2))
    with session_scope(db) as s:
        files = forms.export(s, forms.FORMS, "2025H1", forms.units_for(s, None, "市住建局"), settings)
    assert [f.filename[:3] for f in files] == ["附件1", "附件2", "附件3", "附件4", "附件5"]
    seed = seed_forms()
    for n, file in zip(forms.FORMS, files):
        wb = workbook_of(file)
        for ws in wb.worksheets:
            sheet = read_form(ws)
            assert sheet.header == seed[n]["columns"] and sheet.note == forms.note(n, settings)
            if n != 3:  # 附件3 is the roster of service objects, not events of the half-year
                assert sheet.rows == []
    assert len(read_form(workbook_of(files[2]).worksheets[0]).rows) == 10


def test_form2_has_the_households_public_problems_by_village_and_community(db, settings, city):
    r = city.roster
    at = utc(2026, 9, 3, 2)
    make_problem(db, at, household_id=r.households[0].id, unit_id=r.unit.id, raiser_name="住户1",
                 raiser_phone="13900000000", category="物业", content="电梯常坏", status="assigned")
    make_problem(db, at, source="contact", household_id=city.village.id, unit_id=r.unit.id, category="治安",
                 content="夜里有人偷电动车", note="已报派出所")
    make_problem(db, at, household_id=r.households[1].id, unit_id=r.unit.id, remit="行业领域", content="本单位的事")
    make_problem(db, utc(2026, 5, 1), household_id=r.households[1].id, unit_id=r.unit.id, content="上半年的事")
    make_problem(db, at, household_id=city.town_households[0].id, unit_id=city.town.id, content="别的单位的事")
    with session_scope(db) as s:
        [file] = forms.export(s, [2], "2026H2", forms.units_for(s, None, "市住建局"), settings)
    wb = workbook_of(file)
    village, community = (read_form(wb[name]) for name in ("市住建局-村民", "市住建局-居民"))
    assert village.subtitle == "(公共方面)" and village.header == seed_forms()[2]["columns"]
    assert village.rows == [("村户甲", "红旗村5号", "13911110000", "治安", "夜里有人偷电动车", "待交办；已报派出所")]
    assert community.rows == [("住户1", "幸福路1号", "13900000000", "物业", "电梯常坏", "已交办")]


def test_forms_3_and_4_service_objects_and_their_problems_by_remit(db, settings, city):
    with session_scope(db) as s:
        objects = s.exec(select(ServiceObject).order_by(ServiceObject.name)).all()
    at = utc(2026, 10, 8, 3)
    for obj, remit, content in ((objects[0], "行业领域", "挂号排队太久"), (objects[1], "公共方面", "门口道路破损"),
                                (objects[2], None, "未分类的问题")):
        make_problem(db, at, source="service_object", service_object_id=obj.id, unit_id=obj.unit_id, remit=remit,
                     raiser_name=obj.name, raiser_phone=obj.phone, category="医疗", content=content)
    with session_scope(db) as s:
        obj3 = s.get(ServiceObject, objects[3].id)
        obj3.note = "民营企业"
        s.add(obj3)
    with session_scope(db) as s:
        form3, form4 = forms.export(s, [3, 4], "2026H2", forms.units_for(s, None, "市住建局"), settings)
    sheet3 = read_form(workbook_of(form3)["市住建局"])
    assert sheet3.header == seed_forms()[3]["columns"]
    assert sheet3.rows[3] == ("对象3", "某企业3", "13700000003", "民营企业；联系干部：李明")
    assert [row[0] for row in sheet3.rows] == [f"对象{i}" for i in range(10)]
    wb = workbook_of(form4)
    industry, public = read_form(wb["市住建局-行业领域"]), read_form(wb["市住建局-公共方面"])
    assert (industry.subtitle, public.subtitle) == ("(行业领域)", "(公共方面)")
    assert industry.header == public.header == seed_forms()[4]["columns"]
    assert industry.rows == [("对象0", "某企业0", "13700000000", "医疗", "挂号排队太久", "待交办")]
    assert [row[4] for row in public.rows] == ["门口道路破损", "未分类的问题"]


def test_all_units_in_one_workbook_per_form_one_sheet_each(db, settings, city):
    make_visit(db, city.town_cadre, city.town_households[1], utc(2026, 9, 9, 2))
    with session_scope(db) as s:
        [file] = forms.export(s, [1], "2026H2", forms.units_for(s, None), settings)
    wb = workbook_of(file)
    # 市作风办 has no households: both its (empty) sheets; 第一镇 only villages: no empty 居民 sheet.
    assert wb.sheetnames == ["汇总", "市住建局-村民", "市住建局-居民", "市作风办-村民", "市作风办-居民", "第一镇-村民"]
    # The summary: rows per unit and part, so the office sees who reported nothing.
    summary = [tuple(row) for row in wb["汇总"].iter_rows(min_row=3, values_only=True)]
    assert summary == [("单位", "村民", "居民", "合计"), ("市住建局", 0, 0, 0), ("市作风办", 0, 0, 0),
                       ("第一镇", 1, 0, 1), ("全部单位", 1, 0, 1)]
    assert read_form(wb["第一镇-村民"]).rows == [("东山村1号", "东山户1", "0535-88880001",
                                                   "张伟 9月9日走访；凭证：无凭证；张伟本半年走访凭证：无凭证 100%")]
    assert read_form(wb["第一镇-村民"]).unit_line == "单位(公章)：第一镇"
    assert file.filename == "附件1_走访村民(居民)情况统计表_2026H2.xlsx"


def test_sheet_titles_are_what_excel_accepts():
    taken: set[str] = set()
    long = "某某市某某区某某街道办事处社会事务管理服务中心第一分中心[试点]"
    first, second = forms.sheet_title(long, "村", taken), forms.sheet_title(long, "村", taken)
    assert len(first) <= 31 and len(second) <= 31 and first != second
    assert first.endswith("-村民") and not set("[]:*?/\\") & set(first)


# ---------------------------------------------------------------------------------------------
# Rankings


def _rankings_city(db, city) -> tuple[Cadre, Cadre, Cadre]:
    """李明 5 of 6 satisfied; 张伟 5 of 5 plus one misuse 差评; 王五 (市住建局) only 4 ratings."""
    r = city.roster
    with session_scope(db) as s:
        wang = Cadre(name="王五", unit_id=r.unit.id, mobile="13800000005", role=Role.CADRE)
        s.add(wang)
    at = utc(2026, 10, 1, 2)
    for n, level in enumerate((5, 5, 4, 3, 4, 1)):
        make_rating(db, r.cadre, level, at, n=n)
    for n in range(5):
        make_rating(db, city.town_cadre, 5, at, n=n)
    make_rating(db, city.town_cadre, 1, at, misuse=True)
    make_rating(db, city.town_cadre, 1, utc(2026, 3, 1), n=9)  # the other half-year
    for n in range(4):
        make_rating(db, wang, 2, at, n=n)
    return r.cadre, city.town_cadre, wang


def test_satisfaction_ranking_orders_leaves_out_misuse_and_thin_data_and_names_the_bottom(db, settings, city):
    li, zhang, wang = _rankings_city(db, city)
    with session_scope(db) as s:
        cadres = rankings.ranking(s, "satisfaction", "cadres", "2026H2", settings, date(2026, 11, 20))
        units = rankings.ranking(s, "satisfaction", "units", "2026H2", settings, date(2026, 11, 20))
        loose = rankings.ranking(s, "satisfaction", "cadres", "2026H2",
                                 settings.model_copy(update={"ranking_min_ratings": 4}), date(2026, 11, 20))
    assert [(e.name, e.good, e.total, e.rank) for e in cadres.ranked] == [("张伟", 5, 5, 1), ("李明", 5, 6, 2)]
    assert [e.name for e in cadres.bottom] == ["李明"]
    assert [e.name for e in cadres.unranked] == ["王五"]
    assert [e.name for e in loose.ranked] == ["张伟", "李明", "王五"] and loose.bottom[0].name == "王五"
    assert [(e.name, e.good, e.total) for e in units.ranked] == [("第一镇", 5, 5), ("市住建局", 5, 10)]
    text = "\n".join(rankings.lines(cadres, who="干部", minimum=5))
    assert "1. 张伟（第一镇）：100.0%（满意 5/5 条）" in text
    assert "⚠ 末位：李明（市住建局） 83.3%" in text and "另有 1 个干部评价不足 5 条" in text


def test_ties_share_a_rank(db, settings, city):
    at = utc(2026, 10, 1, 2)
    for cadre in (city.roster.cadre, city.town_cadre):
        for n, level in enumerate((5, 5, 5, 5, 1)):
            make_rating(db, cadre, level, at, n=n)
    with session_scope(db) as s:
        r = rankings.ranking(s, "satisfaction", "cadres", "2026H2", settings, date(2026, 11, 20))
    assert [e.rank for e in r.ranked] == [1, 1] and len(r.bottom) == 2


def test_visit_completion_ranking(db, settings, city):
    r = city.roster
    make_visit(db, r.cadre, r.households[0], utc(2026, 9, 3, 2))
    make_visit(db, r.cadre, city.village, utc(2026, 9, 4, 2))
    make_visit(db, r.cadre, r.households[1], utc(2026, 3, 4, 2))  # last half-year
    for h in city.town_households:
        make_visit(db, city.town_cadre, h, utc(2026, 9, 5, 2))
    with session_scope(db) as s:
        cadres = rankings.ranking(s, "visits", "cadres", "2026H2", settings, date(2026, 11, 20))
        units = rankings.ranking(s, "visits", "units", "2026H2", settings, date(2026, 11, 20))
    assert [(e.name, e.good, e.total) for e in cadres.ranked] == [("张伟", 2, 2), ("李明", 2, 4)]
    assert [(e.name, e.good, e.total) for e in units.ranked] == [("第一镇", 2, 2), ("市住建局", 2, 4)]
    assert [e.name for e in units.unranked] == ["市作风办"]  # no households


def test_timeliness_counts_closures_by_the_local_date_and_overdue_items_against(db, settings, city):
    r, at = city.roster, utc(2026, 10, 1)
    common = {"responsible_unit_id": r.unit.id, "responsible_a_id": r.cadre.id}
    make_problem(db, at, status="closed", deadline=date(2026, 11, 10), closed_at=utc(2026, 11, 10, 15, 30), **common)
    make_problem(db, at, status="answered", deadline=date(2026, 11, 10), closed_at=utc(2026, 11, 10, 16, 30),
                 **common)  # 00:30 on the 11th in Beijing: late
    make_problem(db, at, status="in_progress", deadline=date(2026, 11, 1), **common)  # overdue
    make_problem(db, at, status="assigned", deadline=date(2026, 12, 1), **common)  # not due yet: not counted
    make_problem(db, at, status="closed", deadline=date(2026, 11, 2), closed_at=utc(2026, 11, 1),
                 responsible_unit_id=city.town.id, responsible_a_id=city.town_cadre.id)
    with session_scope(db) as s:
        units = rankings.ranking(s, "timeliness", "units", "2026H2", settings, date(2026, 11, 20))
        cadres = rankings.ranking(s, "timeliness", "cadres", "2026H2", settings, date(2026, 11, 20))
    assert [(e.name, e.good, e.total, e.overdue) for e in units.ranked] == [("第一镇", 1, 1, 0), ("市住建局", 1, 3, 1)]
    assert [e.name for e in cadres.bottom] == ["李明"]
    assert "逾期未办 1 件" in "\n".join(rankings.lines(units, who="各单位"))


def test_ranking_in_chat_answers_with_text_and_a_chart(core, db, settings, clock, city):
    _rankings_city(db, city)
    bind(db, city.office, "test", "office", clock.now)
    bind(db, city.roster.supervisor, "test", "sup", clock.now)
    bind(db, city.roster.cadre, "test", "cadre", clock.now)
    office = Chat(core, "office")
    text = office.say("/ranking 满意度")
    assert "各单位群众满意率排名" in text and "⚠ 末位：市住建局" in text and "⚠ 末位：李明（市住建局）" in text
    [reply] = office.outcomes[-1].replies
    [png] = reply.files
    assert png.content_type == "image/png" and png.content.startswith(b"\x89PNG")
    own = Chat(core, "sup").say("/ranking")
    assert "市住建局干部群众满意率排名" in own and "1. 李明" in own and "张伟" not in own
    assert "本单位在全部 2 个单位中排第 2 名" in own
    assert "用法" in office.say("/ranking 身高")
    assert "主管" in Chat(core, "cadre").say("/ranking")  # a cadre may not


# ---------------------------------------------------------------------------------------------
# Spot-checks


def _visits(db, city, per_cadre: int = 10) -> None:
    r = city.roster
    for i in range(per_cadre):
        make_visit(db, r.cadre, r.households[i % 3], utc(2026, 9, 1 + i, 2))
        make_visit(db, city.town_cadre, city.town_households[i % 2], utc(2026, 9, 1 + i, 3))
    make_visit(db, r.cadre, r.households[0], utc(2026, 3, 1, 2))  # the other half-year: never drawn


def test_a_draw_is_reproducible_takes_at_least_one_per_cadre_and_never_a_visit_twice(db, settings, city, clock):
    _visits(db, city)
    with session_scope(db) as s:
        first = spotcheck.draw(s, "2026H2", 0.1, clock.now, seed=42)
    with session_scope(db) as s:
        again = spotcheck.draw(s, "2026H2", 0.1, clock.now, seed=42)
    assert (first.new, again.new, again.again) == (2, 0, 2) and again.drawn == first.drawn
    with session_scope(db) as s:
        rows = s.exec(select(SpotCheck)).all()
        assert sorted(c.cadre_id for c in rows) == sorted([city.roster.cadre.id, city.town_cadre.id])
        assert {c.half for c in rows} == {"2026H2"} and {c.seed for c in rows} == {42}
    # The same seed on another database with the same data draws the same visits.
    visits = [spotcheck.Candidate(n) for n in range(1, 11)]
    assert spotcheck.sample(visits, 0.3, 42, "2026H2", 7) == spotcheck.sample(visits[::-1], 0.3, 42, "2026H2", 7)
    assert len(spotcheck.sample(visits, 0.3, 42, "2026H2", 7)) == 3
    with session_scope(db) as s:
        more = spotcheck.draw(s, "2026H2", 0.5, clock.now, seed=7)
        total = len(s.exec(select(SpotCheck)).all())
    assert total == 2 + more.new and more.new + more.again == 10
    assert len({c for c in more.drawn}) == 10


def test_spot_check_in_chat_draws_records_and_flags_denied_visits(core, db, settings, clock, city):
    _visits(db, city, per_cadre=3)
    bind(db, city.roster.supervisor, "test", "sup", clock.now)
    chat = Chat(core, "sup")
    text = chat.say("/spotcheck")
    assert "已抽取 0 条" in text and "没有待核实" in text
    text = chat.press("抽取样本")
    assert "已抽取 1 条新的走访记录" in text  # 市住建局's supervisor: only 李明's visits
    [label] = [l for l in chat.labels() if "（李明）" in l]
    text = chat.press(label)
    assert "电话：1390000000" in text and "走访干部：李明（市住建局）" in text
    text = chat.press("否认走访")
    assert "对方的说法" in text
    text = chat.say("说没有人来过")
    assert "已记录" in text and "否认走访" in text and "没有待核实" in text
    with session_scope(db) as s:
        [check] = s.exec(select(SpotCheck)).all()
        assert (check.outcome, check.note, check.checked_by_id) == ("denied", "说没有人来过", city.roster.supervisor.id)
    text = chat.press("汇总")
    assert "否认 1" in text and "• 李明（市住建局）：抽查 1，否认 1，未核实 0" in text
    assert texts.NOTHING_TO_CANCEL in chat.say("/cancel")  # the summary ended the flow


def test_not_reached_comes_back_and_confirmed_clears(core, db, settings, clock, city):
    _visits(db, city, per_cadre=2)
    bind(db, city.office, "test", "office", clock.now)
    chat = Chat(core, "office")
    assert "已抽取 2 条新的走访记录" in chat.say("/spotcheck 抽取")  # the office: every unit
    chat.press("（张伟）")
    text = chat.press("未接通")
    assert "未接通" in text and any(l.startswith("↻") and "（张伟）" in l for l in chat.labels())
    chat.press("（李明）")
    chat.press("已核实走访")
    text = chat.press("汇总")
    assert "抽查 2 条，已核实 1，未接通 1，否认 0，待核实 0" in text
    assert "• 张伟（第一镇）：抽查 1，否认 0，未核实 1" in text and "李明" not in text


def test_spot_check_cli_prints_the_list_with_full_phones_and_the_report(db, settings, city, capsys, monkeypatch):
    _visits(db, city, per_cadre=2)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert cli_main(["spot-check", "--share", "0.5", "--seed", "3", "--half", "2026H2"]) == 0
    out = capsys.readouterr().out
    assert "已抽取 2 条新的走访记录（随机种子 3）" in out
    assert "0535-8888000" in out and "张伟（第一镇）→ 东山户" in out
    assert cli_main(["spot-check", "--share", "0.5", "--seed", "3", "--half", "2026H2"]) == 0
    assert "已抽取 0 条新的走访记录（随机种子 3），另有 2 条此前已抽过" in capsys.readouterr().out
    assert cli_main(["spot-check", "--report", "--half", "2026H2"]) == 0
    assert "待核实 2" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# /export in chat and the CLI


def test_export_in_chat_keeps_to_the_supervisors_scope(core, db, settings, clock, city):
    make_visit(db, city.roster.cadre, city.roster.households[0], utc(2026, 9, 3, 2))
    bind(db, city.roster.supervisor, "test", "sup", clock.now)
    bind(db, city.office, "test", "office", clock.now)
    sup = Chat(core, "sup")
    text = sup.say("/export 1")
    assert "附件1" in text and "市住建局" in text and "未打码" in text
    [file] = sup.outcomes[-1].replies[0].files
    assert file.filename.endswith("_市住建局.xlsx") and file.content_type == forms.XLSX
    assert workbook_of(file).sheetnames == ["市住建局-村民", "市住建局-居民"]
    assert texts.EXPORT_FORBIDDEN_UNIT in sup.say("/export 1 第一镇")
    assert "没有找到单位" in sup.say("/export 2 不存在的局")
    assert "用法" in sup.say("/export 7")
    office = Chat(core, "office")
    office.say("/export")
    files = office.outcomes[-1].replies[0].files
    assert len(files) == 5 and "第一镇" in workbook_of(files[2]).sheetnames
    office.say("/export 3 第一镇 2026H1")
    [file] = office.outcomes[-1].replies[0].files
    assert file.filename == "附件3_干部联系服务对象情况统计表_2026H1_第一镇.xlsx"


def test_export_cli_writes_the_files(db, settings, city, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert cli_main(["export", "--form", "all", "--half", "2026H2", "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.xlsx"))) == 5
    assert cli_main(["export", "--form", "3", "--unit", "第一镇", "--out", str(tmp_path / "one")]) == 0
    [path] = (tmp_path / "one").glob("*.xlsx")
    assert openpyxl.load_workbook(path).sheetnames == ["第一镇"]
    assert cli_main(["export", "--form", "7"]) == 1
    assert cli_main(["export", "--unit", "无此单位", "--out", str(tmp_path / "x")]) == 1
    assert cli_main(["export", "--half", "2026H3"]) == 1
