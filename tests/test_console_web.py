"""The 作风办 web console end to end: the production app (bot.app.create_app) under uvicorn on loopback,
the Telegram stand-in for the chat side, and a real headless Chromium (Debian's, driven by Playwright)
at an office screen's size (1366×768) and a phone's. Users log in as a real user would: the login page
shows a code, the user sends it to the bot in Telegram, the page lets them in.

A screenshot of every page is kept under artifacts/console/.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import openpyxl
import pytest
from pydantic import SecretStr
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.core import ledger
from bot.core.engine import Engine
from bot.reports import forms
from storage.db import session_scope
from storage.example_roster import write_example_workbook
from storage.models import (AuditLog, Cadre, ConsoleSession, Problem, ProblemStatus, Rating, Role, Unit)
from bot.imports.roster import import_roster
from tests.standins.server import ServedApp
from tests.standins.telegram_api import TEST_TOKEN, TelegramStandin
from tests.test_rating_web import CHROMIUM, CHROMIUM_ARGS
from tests.utils import bind, make_problem, make_rating, wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
OFFICE = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
# Telegram users of the example roster's people
ADMIN, OFFICE_HEAD, WANG, CHEN, LIU, TOWN_HEAD = 9001, 9002, 9003, 9004, 9005, 9006


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `bash scripts/test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tg():
    with TelegramStandin(TEST_TOKEN, bot_username="zuofeng_test_bot") as standin:
        yield standin


def cadre_id(db, mobile: str) -> int:
    with session_scope(db) as s:
        return s.exec(select(Cadre.id).where(Cadre.mobile == mobile)).one()


def unit_id(db, name: str) -> int:
    with session_scope(db) as s:
        return s.exec(select(Unit.id).where(Unit.name == name)).one()


@pytest.fixture
def city(db, tmp_path, tg, clock):
    """The example roster, imported as `import-roster` does, plus a supervisor of 城关街道, each person
    bound to a Telegram user."""
    import_roster(db, write_example_workbook(tmp_path / "roster.xlsx"))
    with session_scope(db) as s:
        town = s.exec(select(Unit).where(Unit.name == "城关街道")).one()
        s.add(Cadre(name="孙主任", unit_id=town.id, mobile="13800000099", role=Role.SUPERVISOR))
    users = {}
    for user_id, mobile, name in ((ADMIN, "13800000001", "林晓明"), (OFFICE_HEAD, "13800000002", "周建华"),
                                  (WANG, "13800000003", "王立新"), (CHEN, "13800000004", "陈静"),
                                  (LIU, "13800000005", "刘海涛"), (TOWN_HEAD, "13800000099", "孙主任")):
        with session_scope(db) as s:
            cadre = s.exec(select(Cadre).where(Cadre.mobile == mobile)).one()
        bind(db, cadre, "telegram", str(user_id), clock())
        users[user_id] = tg.user(user_id, first_name=name)
    return users


@contextmanager
def running(settings, db, clock, tg, *, worker: bool = False, public: str | None = None):
    """The production app on loopback, with Telegram (the stand-in) and, if asked, the outbox sender;
    ``public``: the address users reach it at (PUBLIC_BASE_URL), by default its loopback address."""
    served = ServedApp(None)
    served.bind()
    settings = settings.model_copy(update={
        "public_base_url": public or f"http://127.0.0.1:{served.port}", "telegram_bot_token": SecretStr(TEST_TOKEN),
        "telegram_api_base_url": tg.url, "telegram_bot_username": "zuofeng_test_bot", "scheduler_in_run": worker})
    served.app = create_app(settings.check(), Engine(db, settings, clock=clock))
    served.settings = settings
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def app(settings, db, clock, tg, city):
    with running(settings, db, clock, tg) as served:
        yield served


def new_page(browser, viewport=OFFICE, javascript: bool = False):
    context = browser.new_context(viewport=viewport, locale="zh-CN", java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    return context, context.new_page()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, served, user, then: str = "/console") -> None:
    """Logs in as a user would: the login page's code, sent to the bot in Telegram, then the page."""
    page.goto(served.url + then)
    assert "/console/login" in page.url
    page.get_by_role("button", name=texts.CONSOLE_GET_CODE).click()
    code = page.locator("#login-code").inner_text().strip()
    assert re.fullmatch(r"\d{6}", code)
    answer = "\n".join(m.get("text") or "" for m in user.text_wait(f"登录 {code}"))
    assert "已确认" in answer
    page.get_by_role("button", name=texts.CONSOLE_CODE_ENTER).click()
    assert "/console/login" not in page.url


def audit_rows(db, action: str) -> list[AuditLog]:
    with session_scope(db) as s:
        return list(s.exec(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).all())


# -- login -----------------------------------------------------------------------------------------

def test_log_in_with_the_code_sent_to_the_bot_and_the_overview_shows_the_example_roster(browser, app, city, db):
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/overview")
        assert "/console/login" in page.url  # not logged in: the login page
        shot(page, "login")
        log_in(page, app, city[OFFICE_HEAD], then="/console/overview")
        assert page.url.endswith("/console/overview")
        # The example roster: 4 cadres with 5 households each (20), none visited yet; 赵敏 and 刘海涛 ...
        assert page.locator("#tile-visits").inner_text() == "0/20"
        table = page.locator("#units-table").inner_text()
        assert "市住建局" in table and "城关街道" in table
        assert page.locator("svg[role=img]").count() >= 1 and "市住建局" in page.locator("svg").first.inner_html()
        cookie = next(c for c in context.cookies() if c["name"] == "zf_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        csp = page.request.get(app.url + "/console/overview").headers["content-security-policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp and "style-src 'self'" in csp
        shot(page, "overview")
        [login] = audit_rows(db, "login")
        assert login.actor == f"cadre:{cadre_id(db, '13800000002')}" and login.detail == "code"
        for path, name in (("/console/units", "units"), (f"/console/units/{unit_id(db, '市住建局')}", "unit"),
                           (f"/console/cadres/{cadre_id(db, '13800000003')}", "cadre"), ("/console/ledger", "ledger"),
                           ("/console/ratings", "ratings"), ("/console/reports", "reports"),
                           ("/console/sessions", "sessions")):
            response = page.goto(app.url + path)
            assert response.status == 200, path
            shot(page, name)
        page.set_viewport_size(PHONE)
        page.goto(app.url + "/console/overview")
        shot(page, "overview-phone")
    finally:
        context.close()


def test_the_chat_link_logs_in_once(browser, app, city, db):
    answer = "\n".join(m.get("text") or "" for m in city[WANG].command_wait("/login"))
    link = re.search(r"http://\S+/console/login/\S+", answer).group(0)
    context, page = new_page(browser)
    try:
        page.goto(link)  # a link preview would stop here: logging in takes a press
        shot(page, "login-link")
        page.get_by_role("button", name=texts.CONSOLE_LINK_BUTTON).click()
        assert page.url.endswith(f"/console/cadres/{cadre_id(db, '13800000003')}")  # a cadre sees their own work
        assert "王立新" in page.locator("h1").inner_text()
    finally:
        context.close()
    context, page = new_page(browser)
    try:
        page.goto(link)
        page.get_by_role("button", name=texts.CONSOLE_LINK_BUTTON).click()
        assert texts.CONSOLE_LINK_INVALID.format(minutes=5) in page.content()  # single use
    finally:
        context.close()


def test_wrong_codes_are_limited_per_account(app, city, db):
    user = city[CHEN]
    for _ in range(5):
        assert "验证码不对" in "\n".join(m.get("text") or "" for m in user.text_wait("登录 000000"))
    assert "错误次数过多" in "\n".join(m.get("text") or "" for m in user.text_wait("登录 000000"))
    assert len(audit_rows(db, "login.wrong_code")) == 5


def test_logged_out_or_idle_sessions_go_to_the_login_page(browser, app, city, db, clock):
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/ledger")
        assert page.url.endswith("/console/ledger")
        page.get_by_role("button", name="退出").click()
        assert texts.CONSOLE_LOGGED_OUT in page.content()
        page.goto(app.url + "/console/ledger")
        assert "/console/login" in page.url
        log_in(page, app, city[OFFICE_HEAD], then="/console/ledger")
        clock.now += timedelta(minutes=31)  # CONSOLE_IDLE_MINUTES is 30
        page.goto(app.url + "/console/ledger")
        assert "/console/login" in page.url and texts.CONSOLE_EXPIRED in page.content()
    finally:
        context.close()
    with session_scope(db) as s:
        rows = s.exec(select(ConsoleSession)).all()
    assert len(rows) == 2 and all(r.ended_at is not None for r in rows)


def test_a_user_ends_another_of_their_sessions(browser, app, city, db):
    first, page1 = new_page(browser)
    second, page2 = new_page(browser)
    try:
        log_in(page1, app, city[OFFICE_HEAD])
        log_in(page2, app, city[OFFICE_HEAD])
        page1.goto(app.url + "/console/sessions")
        assert page1.locator("tbody tr").count() == 2
        page1.locator("tr:not(.current)").get_by_role("button", name="结束").click()
        page2.goto(app.url + "/console/overview")
        assert "/console/login" in page2.url
        page1.goto(app.url + "/console/overview")
        assert page1.url.endswith("/console/overview")
    finally:
        first.close()
        second.close()


# -- ledger ------------------------------------------------------------------------------------------

def test_an_assignment_made_in_the_console_reaches_a_and_b_in_chat(browser, settings, db, clock, tg, city):
    problem_id = make_problem(db, clock(), content="东门社区人民路路灯不亮已一周", unit_id=unit_id(db, "市住建局"))
    with running(settings, db, clock, tg, worker=True) as served:
        context, page = new_page(browser)
        try:
            log_in(page, served, city[OFFICE_HEAD], then="/console/ledger?state=new")
            assert "东门社区人民路路灯不亮已一周" in page.locator("#ledger-table").inner_text()
            page.get_by_role("link", name=f"#{problem_id}").click()
            page.select_option("#assign-unit", label="市住建局")
            page.get_by_role("button", name="下一步：选择A岗、B岗").click()
            assert page.locator("#assign-a option").all_inner_texts() == ["请选择", "王立新", "陈静"]  # that unit's
            page.select_option("#assign-a", label="王立新")
            page.select_option("#assign-b", label="陈静")
            expected = ledger.default_deadline(served.settings, "visit", ledger.local_today(served.settings, clock()))
            assert expected.isoformat() in page.content()  # the working-day deadline's date is shown
            shot(page, "item")
            page.get_by_role("button", name="交办").click()
            assert "已交办" in page.locator(".done").inner_text()
            shot(page, "item-assigned")
            slip = f"JB2026-{problem_id:05d}"
            for user in (city[WANG], city[CHEN]):
                assert wait_for(lambda: any(slip in (m.get("text") or "") and expected.isoformat() in m["text"]
                                            for m in user.sent())), user
        finally:
            context.close()
    with session_scope(db) as s:
        p = s.get(Problem, problem_id)
        assert (p.status, p.deadline) == (ProblemStatus.ASSIGNED, expected)
    assert [r.target for r in audit_rows(db, "ledger.assign")] == [f"problem:{problem_id}"]


def test_a_post_without_the_csrf_token_is_refused(browser, app, city, db, clock):
    problem_id = make_problem(db, clock(), unit_id=unit_id(db, "市住建局"))
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD])
        refused = page.request.post(f"{app.url}/console/ledger/{problem_id}/assign", form={
            "unit": str(unit_id(db, "市住建局")), "a": str(cadre_id(db, "13800000003")),
            "b": str(cadre_id(db, "13800000004"))})
        assert refused.status == 403 and texts.CONSOLE_CSRF in refused.text()
        forged = page.request.post(f"{app.url}/console/ledger/{problem_id}/assign", form={"csrf": "0" * 64})
        assert forged.status == 403
    finally:
        context.close()
    with session_scope(db) as s:
        assert s.get(Problem, problem_id).status == ProblemStatus.NEW


# -- scope -------------------------------------------------------------------------------------------

def test_a_unit_supervisor_changing_the_url_gets_404_and_an_audit_row(browser, app, city, db, clock):
    other_item = make_problem(db, clock(), unit_id=unit_id(db, "市住建局"))
    own_item = make_problem(db, clock(), unit_id=unit_id(db, "城关街道"), content="西坡村道路积水")
    context, page = new_page(browser)
    try:
        log_in(page, app, city[TOWN_HEAD])
        assert "市住建局" not in page.locator("#units-table").inner_text()
        assert page.goto(f"{app.url}/console/ledger/{own_item}").status == 200
        assert page.goto(f"{app.url}/console/cadres/{cadre_id(db, '13800000005')}").status == 200
        refused = [f"/console/cadres/{cadre_id(db, '13800000003')}", f"/console/ledger/{other_item}",
                   f"/console/units/{unit_id(db, '市住建局')}",
                   f"/console/reports/form/1?unit={unit_id(db, '市住建局')}"]
        for path in refused:
            response = page.goto(app.url + path) if "form" not in path else page.request.get(app.url + path)
            assert response.status == 404, path
        shot(page, "not-found")
        page.goto(f"{app.url}/console/ledger")
        ledger_text = page.locator("#ledger-table").inner_text()
        assert "西坡村道路积水" in ledger_text and f"#{other_item}" not in ledger_text
    finally:
        context.close()
    rows = audit_rows(db, "access.refused")
    assert [r.target for r in rows] == [f"cadre:{cadre_id(db, '13800000003')}", f"problem:{other_item}",
                                        f"unit:{unit_id(db, '市住建局')}", f"unit:{unit_id(db, '市住建局')}"]
    assert {r.actor for r in rows} == {f"cadre:{cadre_id(db, '13800000099')}"} and rows[0].address == "127.0.0.1"


# -- forms, ratings ------------------------------------------------------------------------------------

def test_a_form_downloaded_from_the_console_opens_with_the_seed_columns(browser, app, city, db):
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/reports")
        with page.expect_download() as info:
            page.locator("#forms-table tr", has_text="市住建局").get_by_role("link").first.click()
        download = info.value
        assert download.suggested_filename == "附件1_" + forms.title(1) + "_2026H2_市住建局.xlsx"
        workbook = openpyxl.load_workbook(io.BytesIO(Path(download.path()).read_bytes()))
        cells = [c.value for row in workbook.worksheets[-1].iter_rows(max_row=6) for c in row]
        assert all(column in cells for column in forms.columns(1))
    finally:
        context.close()
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/reports")
        page.select_option("select[name=half]", label="2026年上半年")
        page.get_by_role("button", name="切换").click()
        with page.expect_download() as info:
            page.locator("#forms-table tr", has_text="全部单位").get_by_role("link").nth(4).click()
        assert info.value.suggested_filename == "附件5_" + forms.title(5) + "_2026H1.xlsx"
    finally:
        context.close()
    rows = audit_rows(db, "form.download")
    assert [(r.target, r.detail) for r in rows] == [(f"form:1:{unit_id(db, '市住建局')}", "2026H2"),
                                                    ("form:5:all", "2026H1")]


def test_phones_are_masked_and_revealed_only_to_who_calls_back(browser, app, city, db, clock):
    with session_scope(db) as s:
        wang = s.exec(select(Cadre).where(Cadre.mobile == "13800000003")).one()
    make_rating(db, wang, 1, clock() - timedelta(hours=1))
    with session_scope(db) as s:
        rating = s.exec(select(Rating)).one()
        rating.phone = "13912345678"
        s.add(rating)
    item = make_problem(db, clock(), unit_id=unit_id(db, "市住建局"), source="hotline", raiser_name="赵女士",
                        raiser_phone="13700001111", content="小区门口路灯不亮")
    context, page = new_page(browser)
    try:
        log_in(page, app, city[WANG], then="/console/ratings")
        own = page.locator("#ratings-table").inner_text()
        assert "王立新" in own and "5678" not in own  # the rated cadre: no phone of his rater, not even masked
        assert page.get_by_role("button", name="显示号码").count() == 0  # the rated cadre may not
        forced = page.request.post(f"{app.url}/console/ratings/{rating.id}/reveal",
                                   form={"csrf": page.locator("input[name=csrf]").first.get_attribute("value")})
        assert forced.status == 403 and "13912345678" not in forced.text()
    finally:
        context.close()
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/ratings")
        assert "139****5678" in page.locator("#ratings-table").inner_text()
        page.get_by_role("button", name="显示号码").click()
        assert page.locator(".revealed").inner_text() == "13912345678"
        shot(page, "ratings-revealed")
        page.goto(f"{app.url}/console/ledger/{item}")  # the item's raiser, in full for who assigns it: audited too
        assert "13700001111" in page.locator("main").inner_text()
    finally:
        context.close()
    office = f"cadre:{cadre_id(db, '13800000002')}"
    assert [(r.actor, r.target) for r in audit_rows(db, "phone.reveal")] == [
        (office, f"rating:{rating.id}"), (office, f"problem:{item}")]
    assert len(audit_rows(db, "phone.reveal.refused")) == 1


def _photo() -> bytes:
    """A JPEG as a phone camera sends it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (190, 200, 210))
    ImageDraw.Draw(image).rectangle((60, 40, 200, 220), fill=(150, 80, 40))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def test_an_appeals_photo_is_shown_to_whoever_may_decide_it_each_time_audited(browser, app, city, db, clock):
    """A cadre appeals a 差评 on Telegram with his own photo (a forwarded one is refused); the 作风办
    sees the appeal with 附照片 in the console, opens the photo (audited) and rules on it there; a unit's
    supervisor gets 404 for the photo (audited as a refused access), the appellant sees his own."""
    from storage.models import RatingAppeal

    with session_scope(db) as s:
        wang = s.exec(select(Cadre).where(Cadre.mobile == "13800000003")).one()
    make_rating(db, wang, 2, clock() - timedelta(hours=1))
    with session_scope(db) as s:
        rating = s.exec(select(Rating)).one()
    photo = _photo()
    cadre = city[WANG]
    asked = "\n".join(m.get("text") or "" for m in cadre.command_wait("/appeal", f"{rating.id} 当天系统故障，照片为证"))
    assert texts.APPEAL_ASK_PHOTO.format(rating=rating.id) in asked
    forwarded = "\n".join(m.get("text") or "" for m in cadre.photo_wait(content=photo, forwarded_from=city[CHEN]))
    assert texts.APPEAL_PHOTO_FORWARDED in forwarded
    filed = "\n".join(m.get("text") or "" for m in cadre.photo_wait(content=photo))
    assert texts.APPEAL_FILED_PHOTO.strip() in filed
    with session_scope(db) as s:
        appeal = s.exec(select(RatingAppeal)).one()
    link = f"/console/appeals/{appeal.id}/photo"

    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/appeals")
        row = page.locator(f"#appeal-{appeal.id}").inner_text()
        assert "王立新" in row and "当天系统故障，照片为证" in row and "待复核" in row
        assert page.get_by_role("link", name="附照片（查看）").get_attribute("href") == link
        shot(page, "appeals")
        shown = page.request.get(app.url + link)
        assert shown.status == 200 and shown.body() == photo and shown.headers["content-type"] == "image/jpeg"
        page.get_by_role("combobox", name="复核结果").select_option("误评")
        page.get_by_role("button", name="复核").click()  # voiding needs a reason: refused, nothing changed
        assert texts.APPEAL_NEED_DECISION_REASON in page.locator("[role=alert]").inner_text()
        page.get_by_role("combobox", name="复核结果").select_option("误评")
        page.get_by_role("textbox", name="理由").fill("评价人认错了窗口")
        page.get_by_role("button", name="复核").click()
        assert "撤销（误评）" in page.locator("[role=status]").inner_text()
    finally:
        context.close()
    with session_scope(db) as s:
        assert s.get(Rating, rating.id).voided and s.get(RatingAppeal, appeal.id).state == "mistaken"

    context, page = new_page(browser)
    try:
        log_in(page, app, city[TOWN_HEAD], then="/console/appeals")
        assert "暂无申诉" in page.locator("#appeals-table").inner_text()
        assert page.request.get(app.url + link).status == 404
    finally:
        context.close()
    context, page = new_page(browser)
    try:
        log_in(page, app, cadre, then="/console/appeals")
        assert "撤销（误评）：评价人认错了窗口" in page.locator(f"#appeal-{appeal.id}").inner_text()
        assert page.request.get(app.url + link).body() == photo
    finally:
        context.close()

    office, appellant = cadre_id(db, "13800000002"), cadre_id(db, "13800000003")
    assert [(a.actor, a.target) for a in audit_rows(db, "appeal.photo")] == [
        (f"cadre:{office}", f"appeal:{appeal.id}"), (f"cadre:{appellant}", f"appeal:{appeal.id}")]
    refused = [a for a in audit_rows(db, "access.refused") if a.target == f"appeal:{appeal.id}"]
    assert [a.actor for a in refused] == [f"cadre:{cadre_id(db, '13800000099')}"]
    assert [a.detail for a in audit_rows(db, "appeal.decide")] == ["mistaken"]


# -- admin ---------------------------------------------------------------------------------------------

def test_a_roster_with_errors_shows_them_all_and_imports_nothing_then_a_good_one_imports(
        browser, app, city, db, tmp_path):
    good = write_example_workbook(tmp_path / "good.xlsx")
    workbook = openpyxl.load_workbook(good)
    sheet = workbook["干部"]
    sheet.append(["新干部", "市住建局", "13800000077", "干部", "科员", ""])
    workbook.save(good)
    sheet["C3"] = "12345"  # not a mobile
    sheet["D4"] = "局长"  # not a role
    bad = tmp_path / "bad.xlsx"
    workbook.save(bad)
    with session_scope(db) as s:
        before = len(s.exec(select(Cadre)).all())
    context, page = new_page(browser)
    try:
        log_in(page, app, city[ADMIN], then="/console/admin")
        page.set_input_files("#roster", str(bad))
        page.get_by_role("button", name="校验并导入").click()
        rows = [[cell.strip() for cell in row.split("\t")]
                for row in page.locator("#roster-errors tbody tr").all_inner_texts()]
        assert [row[:3] for row in rows] == [["干部", "3", "手机号"], ["干部", "4", "角色"]]
        assert "12345" in rows[0][3] and "局长" in rows[1][3]
        shot(page, "admin-roster-errors")
        with session_scope(db) as s:
            assert len(s.exec(select(Cadre)).all()) == before
        page.set_input_files("#roster", str(good))
        page.get_by_role("button", name="校验并导入").click()
        assert texts.CONSOLE_ROSTER_DONE in page.locator("#roster-report").inner_text()
        shot(page, "admin")
        page.goto(app.url + "/console/audit")
        assert "roster.import" in page.locator("#audit-table").inner_text()
        shot(page, "audit")
        csv = page.request.get(app.url + "/console/audit.csv?action=roster.refused")
        assert csv.status == 200 and "roster.refused" in csv.text() and "roster.import" not in csv.text()
    finally:
        context.close()
    with session_scope(db) as s:
        assert s.exec(select(Cadre).where(Cadre.mobile == "13800000077")).one().name == "新干部"
    assert len(audit_rows(db, "roster.refused")) == 1 and len(audit_rows(db, "roster.import")) == 1


def test_the_audit_log_is_for_admins_only(browser, app, city):
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD])
        assert page.goto(app.url + "/console/audit").status == 403
        assert page.goto(app.url + "/console/admin").status == 403
    finally:
        context.close()


def test_spot_checks_are_drawn_and_their_calls_recorded(browser, app, city, db, clock):
    from storage.models import Household, SpotCheck
    from tests.utils import make_visit

    with session_scope(db) as s:
        wang = s.exec(select(Cadre).where(Cadre.mobile == "13800000003")).one()
        households = s.exec(select(Household).where(Household.cadre_id == wang.id)).all()
    from storage.models import VisitFlag

    visits = [make_visit(db, wang, household, clock() - timedelta(days=3)) for household in households]
    with session_scope(db) as s:  # one visit flagged as a reused photo: the draw's weight goes there
        s.add(VisitFlag(visit_id=visits[1], cadre_id=wang.id, kind="same_photo", reason="照片与第 1 号走访的照片相同",
                        created_at=clock()))
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/spotchecks")
        page.get_by_role("button", name="抽取本半年的走访记录").click()
        assert "已抽取 1 条" in page.locator(".done").inner_text()
        assert "抽取原因：" in page.locator(".done").inner_text()
        row = page.locator("#spot-table tbody tr").first
        with session_scope(db) as s:
            [drawn] = s.exec(select(SpotCheck)).all()
        # Why it was drawn, as stored with the draw: its flag, or its lack of evidence.
        expected = "有走过场标记：重复照片" if drawn.visit_id == visits[1] else "无佐证"
        assert row.locator("td.reason").inner_text() == expected
        row.locator("select[name=outcome]").select_option(label="否认走访")
        row.locator("input[name=note]").fill("住户称无人来访")
        row.get_by_role("button", name="记录").click()
        assert "否认走访" in page.locator("#spot-table").inner_text()
        shot(page, "spotchecks")
        page.goto(f"{app.url}/console/cadres/{wang.id}")
        # The denied visit no longer counts (it is disputed until a supervisor rules), but it is still listed.
        assert page.locator("#households-table").inner_text().count("已走访") == len(households) - 1
        assert page.locator("#visits-table tbody tr").count() == len(households)
    finally:
        context.close()
    head = cadre_id(db, "13800000002")
    with session_scope(db) as s:
        [check] = s.exec(select(SpotCheck)).all()
        assert (check.outcome, check.note, check.checked_by_id) == ("denied", "住户称无人来访", head)
        # The page showed the household's full number each time it listed the check: each showing audited.
        shown = s.exec(select(AuditLog).where(AuditLog.action == "phone.reveal")).all()
        assert len(shown) >= 2 and {(row.actor, row.target) for row in shown} == {(f"cadre:{head}", f"spotcheck:{check.id}")}


def test_unit_and_cadre_pages_show_the_evidence_of_visits_and_every_flag(browser, app, city, db, clock):
    """The unit page: each cadre's share of visits at each level of evidence and the count of flagged
    visits, then every flag of the unit with its reason; the cadre page: the same line, and per visit
    its evidence and flags. All from what was stored when the visits were confirmed."""
    from zoneinfo import ZoneInfo

    from storage.models import Household, Visit, VisitFlag
    from tests.utils import make_visit

    with session_scope(db) as s:
        wang = s.exec(select(Cadre).where(Cadre.mobile == "13800000003")).one()
        households = s.exec(select(Household).where(Household.cadre_id == wang.id).order_by(Household.id)).all()
    visits = [make_visit(db, wang, h, clock() - timedelta(days=3 - n)) for n, h in enumerate(households[:4])]
    with session_scope(db) as s:
        for visit_id, level in zip(visits, ("confirmed", "location", "none", "none")):
            visit = s.get(Visit, visit_id)
            visit.evidence = level
            s.add(visit)
        s.add(VisitFlag(visit_id=visits[3], cadre_id=wang.id, kind="too_fast",
                        reason="与上一次走访（第 3 号）相距约 20.0 公里，仅隔 5 分钟", created_at=clock()))
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then=f"/console/units/{unit_id(db, '市住建局')}")
        row = page.locator("#cadres-table tbody tr", has_text="王立新")
        assert row.locator("td.evidence").inner_text() == "住户确认 25%、位置相符 25%、无凭证 50% ⚠ 1"
        flags = page.locator("#flags-table tbody tr")
        assert flags.count() == 1
        assert flags.first.inner_text().split("\t") == [
            "王立新", str(visits[3]), clock().astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M"),
            "行程过快", "与上一次走访（第 3 号）相距约 20.0 公里，仅隔 5 分钟"]
        shot(page, "unit-evidence")
        page.goto(f"{app.url}/console/cadres/{wang.id}")
        assert page.locator("#evidence-line").inner_text() == (
            "走访凭证（4 次）：住户确认 25%、位置相符 25%、无凭证 50%；⚠ 疑似走过场 1 次。")
        cells = page.locator("#visits-table tbody tr td.evidence").all_inner_texts()
        assert cells == ["无凭证\n⚠ 行程过快：与上一次走访（第 3 号）相距约 20.0 公里，仅隔 5 分钟", "无凭证", "位置相符",
                         "住户确认"]  # newest first
    finally:
        context.close()


def test_an_admin_downloads_a_units_cards_and_revokes_one(browser, app, city, db):
    import pymupdf

    from storage.models import EvaluationCode

    context, page = new_page(browser)
    try:
        log_in(page, app, city[ADMIN], then="/console/admin")
        page.locator("select[name=unit]").select_option(label="市住建局")
        with page.expect_download() as info:
            page.get_by_role("button", name=re.compile("下载评价卡")).click()
        pdf = pymupdf.open(stream=Path(info.value.path()).read_bytes(), filetype="pdf")
        assert pdf.page_count == 1  # 王立新, 陈静 and the 不动产登记窗口: one A4 sheet of four
        page.locator("#revoke-mobile").fill("13800000004")
        page.get_by_role("button", name="作废评价卡").click()
        assert "已作废 陈静 的评价卡" in page.locator(".done").inner_text()
    finally:
        context.close()
    chen = cadre_id(db, "13800000004")
    with session_scope(db) as s:
        code = s.exec(select(EvaluationCode).where(EvaluationCode.cadre_id == chen)).one()
        assert code.version == 2
    assert [r.target for r in audit_rows(db, "card.revoke")] == [f"cadre:{cadre_id(db, '13800000004')}"]


def test_wrong_login_links_are_limited_per_address(app, city, db):
    import httpx

    with httpx.Client(base_url=app.url) as client:
        page = client.get("/console/login/not-a-real-token-at-all")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        for _ in range(5):
            assert client.post("/console/login/not-a-real-token-at-all", data={"csrf": csrf}).status_code == 400
        assert client.post("/console/login/not-a-real-token-at-all", data={"csrf": csrf}).status_code == 429
        # a valid link from this address is refused too until the window passes
        answer = "\n".join(m.get("text") or "" for m in city[WANG].command_wait("/login"))
        token = re.search(r"/console/login/(\S+)", answer).group(1)
        assert client.post(f"/console/login/{token}", data={"csrf": csrf}).status_code == 429
    assert len(audit_rows(db, "login.refused")) == 5


def test_reassign_and_record_the_call_back_in_the_console(browser, app, city, db, clock):
    wang, chen = cadre_id(db, "13800000003"), cadre_id(db, "13800000004")
    problem_id = make_problem(db, clock(), unit_id=unit_id(db, "市住建局"), content="南苑小区垃圾清运不及时")
    with session_scope(db) as s:
        head = s.exec(select(Cadre).where(Cadre.mobile == "13800000002")).one()
        a = s.get(Cadre, wang)
        ledger.act(s, app.settings, problem_id, ledger.ASSIGN, now=clock(), actor=head, unit_id=a.unit_id, a_id=wang,
                   b_id=chen)
        ledger.act(s, app.settings, problem_id, ledger.CLOSE, now=clock(), actor=a, note="已增加清运频次")
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then=f"/console/ledger/{problem_id}")
        assert "已增加清运频次" in page.locator(".facts").inner_text()
        page.locator("#answer-note").fill("已电话回访住户，表示满意")
        page.get_by_role("button", name=texts.LEDGER_ACTION_LABELS["answer"]).click()
        assert "已回访" in page.locator(".done").inner_text()
        page.locator("#reopen-note").fill("住户再次反映，清运仍不及时")
        page.get_by_role("button", name="重新交办").click()
        assert "已交办" in page.locator(".done").inner_text()
        history = page.locator(".history").inner_text()
        assert "回访：已电话回访住户，表示满意" in history and "重新交办：住户再次反映，清运仍不及时" in history
        shot(page, "item-history")
    finally:
        context.close()
    with session_scope(db) as s:
        p = s.get(Problem, problem_id)
        assert (p.status, p.reopened) == (ProblemStatus.ASSIGNED, 1)


def test_the_session_cookie_is_secure_behind_https(settings, db, clock, tg, city):
    import httpx

    with running(settings, db, clock, tg, public="https://zuofeng.example.gov.cn") as served:
        answer = "\n".join(m.get("text") or "" for m in city[WANG].command_wait("/login"))
        link = re.search(r"https://zuofeng\.example\.gov\.cn(/console/login/\S+)", answer).group(1)
        shown = httpx.get(served.url + link)
        assert "secure" in shown.headers["set-cookie"].lower()  # the pre-login cookie too
        pre = shown.cookies["zf_console_pre"]  # sent back as a browser on https would
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', shown.text).group(1)
        response = httpx.post(served.url + link, data={"csrf": csrf}, headers={"Cookie": f"zf_console_pre={pre}"})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"].lower()
        assert "zf_console=" in cookie and "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_the_ledger_filters_in_the_url_pages_and_downloads_what_is_on_screen(browser, app, city, db, clock):
    housing = unit_id(db, "市住建局")
    for n in range(60):
        make_problem(db, clock() - timedelta(minutes=n), unit_id=housing, category="物业" if n % 2 else "城建",
                     content=f"事项{n:02d}")
    context, page = new_page(browser)
    try:
        log_in(page, app, city[OFFICE_HEAD], then="/console/ledger")
        page.select_option("select[name=category]", label="城建")
        page.select_option("select[name=state]", label="待交办")
        page.get_by_role("button", name="筛选").click()
        assert "category=%E5%9F%8E%E5%BB%BA" in page.url and "state=new" in page.url  # bookmarkable
        assert "共 30 项" in page.locator("h1").inner_text()
        assert page.locator("#ledger-table tbody tr").count() == 30
        page.goto(app.url + "/console/ledger")
        assert page.locator("#ledger-table tbody tr").count() == 50 and "第 1/2 页" in page.locator(".pager").inner_text()
        page.get_by_role("link", name="下一页").click()
        assert page.locator("#ledger-table tbody tr").count() == 10
        csv = page.request.get(app.url + "/console/ledger.csv?category=%E7%89%A9%E4%B8%9A").text()
        lines = csv.strip().splitlines()
        assert len(lines) == 31 and all(",物业," in line for line in lines[1:])
    finally:
        context.close()


def test_a_cadre_sees_their_own_households_and_nobody_elses_page(browser, app, city, db):
    context, page = new_page(browser, viewport=PHONE)
    try:
        log_in(page, app, city[WANG])
        assert page.url.endswith(f"/console/cadres/{cadre_id(db, '13800000003')}")
        assert page.locator("#households-table tbody tr").count() == 5
        shot(page, "cadre-phone")
        assert page.goto(f"{app.url}/console/cadres/{cadre_id(db, '13800000004')}").status == 404
        assert page.goto(f"{app.url}/console/overview").status == 403
    finally:
        context.close()
    assert [r.target for r in audit_rows(db, "access.refused")] == [f"cadre:{cadre_id(db, '13800000004')}"]
