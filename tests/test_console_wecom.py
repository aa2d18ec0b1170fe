"""企业微信登录 into the web console end to end: the production app (bot.app.create_app) under uvicorn
on loopback, the WeCom stand-in playing WeCom's API and its two login pages (the QR login page, and
OAuth2 inside the WeCom client), and a real headless Chromium (Debian's, driven by Playwright).

The members come from the directory as ``wecom-sync`` reads it (matched to the roster by mobile):
王芳 (supervisor) as WangFang, 李明 (cadre) as LiMing, and ZhangWei, whose mobile the directory does
not show. The stand-in sends the browser back with a code once ``login_as`` names who scanned.
"""

from __future__ import annotations

import re
import secrets
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.core.engine import Engine
from handlers.wecom import WeComApi, WeComApiError
from handlers.wecom.directory import sync_directory
from storage.db import session_scope
from storage.models import AuditLog, ConsoleSession
from tests.standins.server import ServedApp
from tests.standins.wecom_api import DirectoryEntry, WeComStandin
from tests.test_console_web import browser, new_page, shot  # noqa: F401  (the module's Chromium)
from tests.test_wecom_e2e import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN
from tests.utils import bind, make_roster

WXWORK_UA = ("Mozilla/5.0 (Linux; Android 13; V2227A) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
             "Chrome/105.0.5195.136 Mobile Safari/537.36 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh")


@pytest.fixture
def wc():
    with WeComStandin(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, token=TOKEN, aes_key=AES_KEY) as standin:
        standin.directory = [DirectoryEntry("LiMing", "李明", "13800000003"), DirectoryEntry("WangFang", "王芳", "13800000002"),
                             DirectoryEntry("ZhangWei", "张伟", None)]
        yield standin


@pytest.fixture
def roster(db, settings, wc, clock):
    """The roster, and the directory read and matched as ``python -m bot wecom-sync`` does."""
    built = make_roster(db)
    api = WeComApi(wecom_settings(settings, wc), db)
    try:
        sync_directory(db, api, clock())
    finally:
        api.close()
    return built


def wecom_settings(settings, wc, **more):
    return settings.model_copy(update={
        "wecom_token": SecretStr(TOKEN), "wecom_aes_key": SecretStr(AES_KEY), "wecom_corp_id": CORP_ID,
        "wecom_agent_id": AGENT_ID, "wecom_secret": SecretStr(SECRET), "wecom_api_base_url": wc.url,
        "wecom_login_base_url": wc.url, "wecom_oauth_base_url": wc.url, **more})


@contextmanager
def running(settings, db, clock, wc=None):
    """The production app on loopback; with ``wc`` WeCom is set up (its login pages the stand-in's, whose
    trusted domain is the app's address)."""
    served = ServedApp(None)
    served.bind()
    settings = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{served.port}"})
    if wc is not None:
        settings = wecom_settings(settings, wc)
        wc.trusted_domain = f"127.0.0.1:{served.port}"
    served.app = create_app(settings.check(), Engine(db, settings, clock=clock))
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def app(settings, db, clock, wc, roster):
    with running(settings, db, clock, wc) as served:
        yield served


def audit(db, action: str) -> list[AuditLog]:
    with session_scope(db) as s:
        return list(s.exec(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).all())


def sessions(db) -> list[ConsoleSession]:
    with session_scope(db) as s:
        return list(s.exec(select(ConsoleSession)).all())


def state_of(wc: WeComStandin) -> str:
    """The state our server sent with the browser to WeCom's login page, as WeCom saw it."""
    return wc.login_pages[-1][1]["state"]


def callback(app, code: str | None, state: str) -> str:
    query = {"code": code, "state": state} if code is not None else {"state": state}
    return f"{app.url}/console/login/wecom/callback?{urlencode(query)}"


def test_wecom_login_logs_a_member_in_with_no_code_and_a_replay_is_refused(browser, app, wc, roster, db):
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/overview")
        assert "/console/login" in page.url
        assert texts.CONSOLE_WECOM_WAY in page.content()
        shot(page, "login-wecom")
        wc.login_as = "WangFang"  # 王芳 scans the QR code with WeCom
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        page.wait_for_url("**/console/overview")
        assert "王芳" in page.content()

        [(path, query)] = wc.login_pages
        assert path == "/wwlogin/sso/login"
        assert {k: query[k] for k in ("login_type", "appid", "agentid")} == {
            "login_type": "CorpApp", "appid": CORP_ID, "agentid": str(AGENT_ID)}
        assert query["redirect_uri"] == f"{app.url}/console/login/wecom/callback?next=%2Fconsole%2Foverview"
        assert len(query["state"]) == 64 and query["state"].isalnum()
        assert len(wc.calls_of("/cgi-bin/auth/getuserinfo")) == 1

        [started] = sessions(db)
        assert (started.cadre_id, started.how) == (roster.supervisor.id, "wecom")
        [login] = audit(db, "login")
        assert (login.actor, login.detail, login.target) == (f"cadre:{roster.supervisor.id}", "wecom", f"session:{started.id}")
        cookie = next(c for c in context.cookies() if c["name"] == "zf_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
        page.goto(app.url + "/console/sessions")
        assert "企业微信" in page.locator("table").inner_text()

        # The same answer from WeCom again (a replayed URL): the state is spent.
        [back] = wc.login_redirects
        response = page.goto(back)
        assert response.status == 400 and texts.CONSOLE_WECOM_STATE_INVALID.format(minutes=5) in page.content()
        assert len(sessions(db)) == 1 and len(wc.calls_of("/cgi-bin/auth/getuserinfo")) == 1
        assert [r.detail for r in audit(db, "login.refused")] == ["wecom state"]
    finally:
        context.close()


def test_inside_the_wecom_client_its_oauth2_page_logs_the_member_in(browser, app, wc, roster, db):
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", java_script_enabled=False,
                                  user_agent=WXWORK_UA)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(app.url + "/console/login")
        wc.login_as = "LiMing"  # opened in the WeCom client: WeCom knows who it is, no QR code
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        # a cadre sees their own work (the browser keeps WeCom's #wechat_redirect through the redirects)
        page.wait_for_url(re.compile(rf"/console/cadres/{roster.cadre.id}(#wechat_redirect)?$"))
        assert "李明" in page.locator("h1").inner_text()
        [(path, query)] = wc.login_pages
        assert path == "/connect/oauth2/authorize"
        assert {k: query[k] for k in ("appid", "response_type", "scope", "agentid")} == {
            "appid": CORP_ID, "response_type": "code", "scope": "snsapi_base", "agentid": str(AGENT_ID)}
        assert query["redirect_uri"] == f"{app.url}/console/login/wecom/callback"
        assert [s.how for s in sessions(db)] == ["wecom"]
    finally:
        context.close()


def test_a_forged_or_another_browsers_state_and_a_spent_or_stale_code_are_refused_and_audited(
        browser, app, wc, roster, db):
    wanted = {}
    # A forged state, with a code WeCom did give out: refused before WeCom is asked (the code stays unspent).
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/login")
        code = wc.issue_login_code("WangFang")
        response = page.goto(callback(app, code, secrets.token_hex(32)))
        assert response.status == 400 and texts.CONSOLE_WECOM_STATE_INVALID.format(minutes=5) in page.content()
        assert not wc.calls_of("/cgi-bin/auth/getuserinfo")
        wanted["forged"] = "wecom state"
        shot(page, "login-wecom-refused")
    finally:
        context.close()

    # A state made for one browser, brought back by another: refused; in its own browser it logs in.
    mine, own = new_page(browser)
    other, stranger = new_page(browser)
    try:
        own.goto(app.url + "/console/login")
        own.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()  # nobody has scanned yet
        state = state_of(wc)
        stranger.goto(app.url + "/console/login")
        response = stranger.goto(callback(app, wc.issue_login_code("WangFang"), state))
        assert response.status == 400 and texts.CONSOLE_WECOM_STATE_INVALID.format(minutes=5) in stranger.content()
        assert not sessions(db)
        spent = wc.issue_login_code("WangFang")
        own.goto(callback(app, spent, state))
        assert own.url.endswith("/console/overview")
        wanted["foreign"] = "wecom state"
    finally:
        mine.close()
        other.close()

    # A code already spent, brought back with a fresh state of the browser's own: WeCom says 40029.
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/login")
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        response = page.goto(callback(app, spent, state_of(wc)))
        assert response.status == 400 and texts.CONSOLE_WECOM_CODE_INVALID in page.content()
        wanted["spent"] = "wecom code refused by WeCom (errcode 40029)"
        # A code past its five minutes: the same.
        wc.code_ttl = 0.0
        page.goto(app.url + "/console/login")
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        response = page.goto(callback(app, wc.issue_login_code("WangFang"), state_of(wc)))
        assert response.status == 400 and texts.CONSOLE_WECOM_CODE_INVALID in page.content()
        wanted["stale"] = "wecom code refused by WeCom (errcode 40029)"
        # The member declined on WeCom's page: no code, nothing asked of WeCom.
        wc.login_declined = True
        page.goto(app.url + "/console/login")
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        assert texts.CONSOLE_WECOM_CANCELLED in page.content() and "zf_console" not in {c["name"] for c in context.cookies()}
    finally:
        context.close()
    assert len(sessions(db)) == 1  # only the browser whose state it was
    refused = audit(db, "login.refused")
    assert [r.detail for r in refused] == [wanted["forged"], wanted["foreign"], wanted["spent"], wanted["stale"]]
    assert all(r.channel == "console" and r.address == "127.0.0.1" for r in refused)


def test_an_unknown_member_is_told_to_ask_the_admin_and_a_binding_lets_them_in(browser, app, wc, roster, db, clock):
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/login")
        wc.login_as = "ZhangWei"  # in the directory without a mobile: no cadre matched
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        content = page.content()
        assert texts.CONSOLE_WECOM_UNKNOWN_TITLE in content and "wecom-sync" in content and "ZhangWei" in content
        assert texts.CONSOLE_BACK_TO_LOGIN in content
        shot(page, "login-wecom-unknown")
        assert not sessions(db)
        wc.login_as = "openid:oOutsider"  # someone outside the organisation: WeCom gives no userid
        page.goto(app.url + "/console/login")
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        assert texts.CONSOLE_WECOM_NOT_MEMBER in page.content() and not sessions(db)
        assert [r.detail for r in audit(db, "login.refused")] == ["wecom unknown member ZhangWei",
                                                                  "wecom not a member of the organisation"]

        bind(db, roster.admin, "wecom", "ZhangWei", clock())  # the admin's binding code, sent from the app
        wc.login_as = "ZhangWei"
        page.goto(app.url + "/console/login")
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        page.wait_for_url("**/console/overview")
        assert [(s.cadre_id, s.how) for s in sessions(db)] == [(roster.admin.id, "wecom")]
    finally:
        context.close()


def test_a_wecom_session_idles_out_like_any_other(browser, app, wc, roster, db, clock):
    context, page = new_page(browser)
    try:
        page.goto(app.url + "/console/login")
        wc.login_as = "WangFang"
        page.get_by_role("link", name=texts.CONSOLE_WECOM_LOGIN).click()
        page.wait_for_url("**/console/overview")
        clock.now += timedelta(minutes=31)  # CONSOLE_IDLE_MINUTES is 30
        page.goto(app.url + "/console/overview")
        assert "/console/login" in page.url and texts.CONSOLE_EXPIRED in page.content()
    finally:
        context.close()


def test_without_wecom_the_login_page_offers_no_wecom_login(browser, settings, db, clock):
    make_roster(db)
    with running(settings, db, clock) as served:
        context, page = new_page(browser)
        try:
            page.goto(served.url + "/console/login")
            assert texts.CONSOLE_WECOM_LOGIN not in page.content() and page.locator("#wecom-login").count() == 0
            assert page.goto(served.url + "/console/login/wecom").status == 404
            assert page.goto(served.url + "/console/login/wecom/callback?code=x&state=y").status == 404
        finally:
            context.close()


def test_the_stand_ins_getuserinfo_checks_the_token_and_spends_a_code_once(wc):
    import httpx

    token = httpx.get(f"{wc.url}/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}).json()["access_token"]
    code = wc.issue_login_code("LiMing")
    ask = lambda path, **params: httpx.get(f"{wc.url}{path}", params=params).json()  # noqa: E731
    assert ask("/cgi-bin/auth/getuserinfo", access_token="wrong", code=code)["errcode"] == 42001
    assert ask("/cgi-bin/auth/getuserinfo", access_token=token, code=code)["userid"] == "LiMing"
    assert ask("/cgi-bin/auth/getuserinfo", access_token=token, code=code)["errcode"] == 40029
    assert ask("/cgi-bin/user/getuserinfo", access_token=token, code=wc.issue_login_code("LiMing"))["UserId"] == "LiMing"
    assert ask("/cgi-bin/auth/getuserinfo", access_token=token, code="forged")["errcode"] == 40029
    page = httpx.get(f"{wc.url}/wwlogin/sso/login", params={"login_type": "CorpApp", "appid": "wrong",
                                                            "agentid": AGENT_ID, "redirect_uri": "http://x/", "state": "s"})
    assert page.status_code == 400
    wc.trusted_domain, wc.login_as = "127.0.0.1:1", "LiMing"
    page = httpx.get(f"{wc.url}/wwlogin/sso/login", params={"login_type": "CorpApp", "appid": CORP_ID,
                                                            "agentid": AGENT_ID, "redirect_uri": "http://evil.example/",
                                                            "state": "s"})
    assert page.status_code == 400  # not the app's trusted domain: WeCom refuses to send a code there


def test_an_older_private_deployment_is_asked_by_the_older_name(wc, settings, db):
    wc.older_version = True  # no auth/getuserinfo there, only user/getuserinfo
    api = WeComApi(wecom_settings(settings, wc), db)
    try:
        assert api.login_userid(wc.issue_login_code("LiMing")) == "LiMing"
        with pytest.raises(WeComApiError) as refused:
            api.login_userid("forged")
        assert refused.value.errcode == 40029
        assert api.login_userid(wc.issue_login_code("openid:oAbc")) is None  # not a member
    finally:
        api.close()
