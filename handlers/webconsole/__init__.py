"""The 作风办 web console (控制台) under /console: server-rendered pages for office PCs and phones.

A channel like the others: it translates HTTP requests into calls of core functions
(``bot.core.console_views``, ``bot.core.login``) through ``Engine.run`` and renders their results with
Jinja2 (bot/templates/console, autoescaped). It opens no session, runs no SQL and picks no thread.

What the open web needs, and where it is done here:

- **login** without passwords (bot/core/login.py): the chat's one-time link or the login page's
  6-digit code, and with WeCom set up 企业微信登录 (``wecom_start``, ``wecom_callback``: WeCom's QR
  login or OAuth2 page, then its code turned into the member's userid by the WeCom API, called in
  the thread pool as the rating page calls its limiter); the session cookie ``zf_console`` is HttpOnly, SameSite=Lax, Secure when
  PUBLIC_BASE_URL is https; a request without a live session is sent to the login page;
- **CSRF**: every form carries a token, an HMAC of the browser's cookie (the session's, or before
  login the ``zf_console_pre`` cookie) under a key derived from EVALUATION_SECRET; a POST without
  it is refused with 403 and changes nothing;
- **CSP**: no script at all, styles only from /console/static, forms only to ourselves, no framing;
  every page works without JavaScript (the charts are SVG drawn on the server);
- **scope**: a row out of the user's scope is a 404, as if it did not exist, and an ``access.refused``
  audit row.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import tempfile
from datetime import date, datetime, time
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import bot
from bot import texts
from bot.config import Settings
from bot.core import console_views as views
from bot.core import appeals, ledger, login
from bot.core.engine import Engine
from bot.core.periods import half_label, half_of, parse_half
from handlers.wecom import weblogin
from handlers.wecom.api import WeComApi, WeComApiError

log = logging.getLogger(__name__)

COOKIE = "zf_console"
PRE_COOKIE = "zf_console_pre"
MAX_UPLOAD = 10 * 1024 * 1024
TEMPLATES = Path(bot.__file__).resolve().parent / "templates"
STATIC = TEMPLATES / "console" / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # login links carry their token in the path
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def console_routes(core: Engine, settings: Settings, wecom: WeComApi | None = None) -> list[Route]:
    """The console's routes, served by the same ASGI app as the webhooks and the rating page;
    ``wecom``: the WeCom app's API when WeCom is set up (the login page then offers 企业微信登录)."""
    key = hashlib.sha256(b"console-csrf:" + settings.evaluation_key).digest()
    secure = settings.public_url.startswith("https://")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.globals.update(texts=texts, half_label=half_label, tz=settings.tz, ledger=ledger)
    env.filters["local"] = lambda moment, fmt="%Y-%m-%d %H:%M": moment.astimezone(settings.tz).strftime(fmt) if moment else ""
    env.filters["pct"] = lambda rate: "—" if rate is None else f"{100 * rate:.1f}%"

    def csrf_for(cookie: str) -> str:
        return hmac.new(key, f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()

    def page(request: Request, name: str, status: int = 200, who=None, **context) -> Response:
        cookie = request.cookies.get(COOKIE) if who is not None else request.state.pre
        html = env.get_template(f"console/{name}.html").render(who=who, csrf=csrf_for(cookie or ""), path=request.url.path,
                                                               **context)
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        if who is None and request.state.new_pre:
            response.set_cookie(PRE_COOKIE, request.state.pre, httponly=True, samesite="lax", secure=secure,
                                path="/console")
        return response

    def message(request: Request, status: int, title: str, *lines: str, who=None) -> Response:
        return page(request, "message", status, who=who, title=title, lines=lines)

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        expired = "&expired=1" if request.cookies.get(COOKIE) else ""  # a session there was has ended
        response = RedirectResponse(f"/console/login?next={quote(target)}{expired}", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    def pre_cookie(request: Request) -> None:
        value = request.cookies.get(PRE_COOKIE, "")
        request.state.new_pre = not (20 <= len(value) <= 64)
        request.state.pre = secrets.token_urlsafe(24) if request.state.new_pre else value

    async def current(request: Request):
        """The logged-in user, read without the write lock; the session marked seen when due."""
        token, now = request.cookies.get(COOKIE), core.clock()
        if not token:
            return None
        who = await core.run(login.who, settings, token, now, read_only=True)
        if who is None:
            await core.run(login.expire_idle, settings, token, now)
        elif login.due_for_seen(who, now):
            await core.run(login.seen, who.session_id, now)
        return who

    async def form_of(request: Request, cookie: str | None) -> dict | None:
        """The posted fields if the CSRF token matches the browser's cookie, else None (also for a body
        larger than any form of ours, or one that is not a form)."""
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > MAX_UPLOAD + 64 * 1024:
            return None
        try:
            form = await request.form(max_files=1, max_fields=30, max_part_size=MAX_UPLOAD)
        except Exception:  # a malformed body: refused like a missing token, nothing done
            return None
        given = str(form.get("csrf", ""))
        if not cookie or not hmac.compare_digest(given, csrf_for(cookie)):
            return None
        return form

    def recent_halves(count: int = 4) -> list[str]:
        """This half-year and the ones before it, newest first: "2026H2", "2026H1", "2025H2", ..."""
        year, part = (int(x) for x in half_of(core.clock(), settings.tz).split("H"))
        out = []
        for _ in range(count):
            out.append(f"{year}H{part}")
            year, part = (year, 1) if part == 2 else (year - 1, 2)
        return out

    def half_from(request: Request) -> str:
        return parse_half(request.query_params.get("half", "")) or half_of(core.clock(), settings.tz)

    async def not_found(request: Request, who, target: str) -> Response:
        await core.run(views.refuse, who, target, _address(request), core.clock())
        return message(request, 404, texts.CONSOLE_NOT_FOUND_TITLE, texts.CONSOLE_NOT_FOUND, who=who)

    def guarded(handler, *, method: str = "GET"):
        """A page for logged-in users: the session checked (else the login page), CSRF on POST, scope
        refusals as 404 with an audit row, role refusals as 403."""
        async def endpoint(request: Request) -> Response:
            request.state.new_pre, request.state.pre = False, ""
            who = await current(request)
            if who is None:
                return to_login(request)
            form = None
            if method == "POST":
                form = await form_of(request, request.cookies.get(COOKIE))
                if form is None:
                    return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_CSRF, who=who)
            try:
                return await (handler(request, who, form) if method == "POST" else handler(request, who))
            except views.NotFound as missing:
                return await not_found(request, who, missing.target)
            except views.Forbidden:
                return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_FORBIDDEN, who=who)
        return endpoint

    def int_param(request: Request, name: str) -> int | None:
        value = request.path_params.get(name) if name in request.path_params else request.query_params.get(name)
        value = str(value or "")
        return int(value) if value.isdigit() and len(value) < 10 else None

    # -- login ---------------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        """Shows the two ways in; with a code asked for, the code to send to the bot."""
        pre_cookie(request)
        if await current(request) is not None:
            return RedirectResponse("/console", status_code=303)
        expired = request.query_params.get("expired") == "1"
        return page(request, "login", code=None, next=request.query_params.get("next", ""),
                    notice=texts.CONSOLE_EXPIRED if expired else None, minutes=settings.console_login_minutes,
                    wecom=wecom is not None)

    def safe_next(value: str) -> str:
        return value if value.startswith("/console") and "//" not in value and "\\" not in value else "/console"

    def logged_in(started: login.Started, next_path: str) -> Response:
        response = RedirectResponse(safe_next(next_path), status_code=303)
        response.set_cookie(COOKIE, started.token, httponly=True, samesite="lax", secure=secure, path="/console")
        response.delete_cookie(PRE_COOKIE, path="/console")
        return response

    async def login_code(request: Request) -> Response:
        """Gives this browser a 6-digit code to send to the bot."""
        pre_cookie(request)
        form = await form_of(request, request.cookies.get(PRE_COOKIE))
        if form is None:
            return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_CSRF)
        try:
            code = await core.run(login.issue_page_code, settings, request.state.pre, _address(request), core.clock())
        except login.TooMany:
            return message(request, 429, texts.CONSOLE_TOO_MANY_TITLE,
                           texts.CONSOLE_TOO_MANY.format(minutes=settings.console_wrong_code_minutes))
        return page(request, "login", code=code, next=str(form.get("next", "")), notice=None,
                    minutes=settings.console_login_minutes, wecom=wecom is not None)

    async def login_enter(request: Request) -> Response:
        """The user says the code was sent: a session if the bot confirmed it."""
        pre_cookie(request)
        form = await form_of(request, request.cookies.get(PRE_COOKIE))
        if form is None:
            return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_CSRF)
        try:
            result = await core.run(login.redeem_page_code, settings, request.state.pre, _address(request),
                                    request.headers.get("user-agent"), core.clock())
        except login.TooMany:
            return message(request, 429, texts.CONSOLE_TOO_MANY_TITLE,
                           texts.CONSOLE_TOO_MANY.format(minutes=settings.console_wrong_code_minutes))
        if isinstance(result, login.Started):
            return logged_in(result, str(form.get("next", "")))
        code = str(form.get("code", ""))[:6]
        notice = texts.CONSOLE_CODE_WAITING.format(code=code) if result == "waiting" else texts.CONSOLE_CODE_EXPIRED
        return page(request, "login", 400, code=code if result == "waiting" else None, next=str(form.get("next", "")),
                    notice=notice, minutes=settings.console_login_minutes, wecom=wecom is not None)

    async def link_page(request: Request) -> Response:
        """The chat's login link: one press to log in (a link preview fetches this page, never posts)."""
        pre_cookie(request)
        return page(request, "link", token=request.path_params["token"])

    async def link_redeem(request: Request) -> Response:
        pre_cookie(request)
        form = await form_of(request, request.cookies.get(PRE_COOKIE))
        if form is None:
            return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_CSRF)
        try:
            started = await core.run(login.redeem_link, settings, request.path_params["token"], _address(request),
                                     request.headers.get("user-agent"), core.clock())
        except login.TooMany:
            return message(request, 429, texts.CONSOLE_TOO_MANY_TITLE,
                           texts.CONSOLE_TOO_MANY.format(minutes=settings.console_wrong_code_minutes))
        if started is None:
            return message(request, 400, texts.CONSOLE_ERROR_TITLE,
                           texts.CONSOLE_LINK_INVALID.format(minutes=settings.console_login_minutes))
        return logged_in(started, "/console")

    async def wecom_start(request: Request) -> Response:
        """企业微信登录: a one-time state for this browser, then WeCom's login page (its OAuth2 page
        when the browser is the WeCom client's own)."""
        if wecom is None:
            return Response("not found", status_code=404)
        pre_cookie(request)
        try:
            state = await core.run(login.start_wecom, settings, request.state.pre, _address(request), core.clock())
        except login.TooMany:
            return message(request, 429, texts.CONSOLE_TOO_MANY_TITLE,
                           texts.CONSOLE_TOO_MANY.format(minutes=settings.console_wrong_code_minutes))
        callback = login.console_url(settings, "/login/wecom/callback")
        next_path = safe_next(request.query_params.get("next", ""))
        if next_path != "/console":
            callback += "?" + urlencode({"next": next_path})
        target = weblogin.login_url(settings, callback, state,
                                    in_client=weblogin.in_wecom_client(request.headers.get("user-agent")))
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        if request.state.new_pre:
            response.set_cookie(PRE_COOKIE, request.state.pre, httponly=True, samesite="lax", secure=secure,
                                path="/console")
        return response

    async def wecom_callback(request: Request) -> Response:
        """WeCom sends the browser back with the state and a code: the state spent (this browser's,
        once), the code turned into the member's userid, the member's cadre logged in."""
        if wecom is None:
            return Response("not found", status_code=404)
        pre_cookie(request)
        address, now = _address(request), core.clock()
        state, code = request.query_params.get("state", "")[:200], request.query_params.get("code", "")[:600]

        def refused(status: int, *lines: str, title: str = texts.CONSOLE_WECOM_TITLE) -> Response:
            return page(request, "message", status, title=title, lines=lines, back=("/console/login",
                                                                                      texts.CONSOLE_BACK_TO_LOGIN))
        try:
            if not await core.run(login.spend_wecom_state, settings, state, request.state.pre, address, now):
                return refused(400, texts.CONSOLE_WECOM_STATE_INVALID.format(minutes=settings.console_login_minutes))
        except login.TooMany:
            return message(request, 429, texts.CONSOLE_TOO_MANY_TITLE,
                           texts.CONSOLE_TOO_MANY.format(minutes=settings.console_wrong_code_minutes))
        if not code:  # the member declined, or closed WeCom's page
            return refused(400, texts.CONSOLE_WECOM_CANCELLED)
        try:
            userid = await run_in_threadpool(wecom.login_userid, code)
        except WeComApiError as exc:
            if exc.errcode is None or exc.errcode == -1:  # WeCom (or the way there) failed, not the code
                log.warning("企业微信登录：接口不可用：%s", exc)
                return refused(502, texts.CONSOLE_WECOM_UNAVAILABLE)
            await core.run(login.refuse_wecom, address, now, f"code refused by WeCom (errcode {exc.errcode})")
            return refused(400, texts.CONSOLE_WECOM_CODE_INVALID)
        except httpx.HTTPError as exc:
            log.warning("企业微信登录：无法连接企业微信：%s", exc)
            return refused(502, texts.CONSOLE_WECOM_UNAVAILABLE)
        if userid is None:
            await core.run(login.refuse_wecom, address, now, "not a member of the organisation")
            return refused(403, texts.CONSOLE_WECOM_NOT_MEMBER)
        started = await core.run(login.redeem_wecom, settings, userid, address, request.headers.get("user-agent"), now)
        if started is None:
            return refused(403, *[line.format(userid=userid) for line in texts.CONSOLE_WECOM_UNKNOWN],
                           title=texts.CONSOLE_WECOM_UNKNOWN_TITLE)
        return logged_in(started, request.query_params.get("next", ""))

    async def logout(request: Request, who, form) -> Response:
        await core.run(login.end_session, who.cadre_id, who.session_id, _address(request), core.clock())
        response = message(request, 200, texts.CONSOLE_LOGGED_OUT, texts.CONSOLE_LOGGED_OUT)
        response.delete_cookie(COOKIE, path="/console")
        return response

    async def sessions(request: Request, who) -> Response:
        """The user's open sessions, each with a button to end it."""
        rows = await core.run(login.open_sessions, settings, who.cadre_id, core.clock(), read_only=True)
        return page(request, "sessions", who=who, rows=rows)

    async def end_session(request: Request, who, form) -> Response:
        session_id = int_param(request, "id")
        if session_id is None or not await core.run(login.end_session, who.cadre_id, session_id, _address(request),
                                                     core.clock()):
            raise views.NotFound(f"session:{request.path_params['id']}")
        return RedirectResponse("/console/sessions", status_code=303)

    # -- pages ---------------------------------------------------------------------------------

    async def home(request: Request, who) -> Response:
        target = f"/console/cadres/{who.cadre_id}" if who.role == "cadre" else "/console/overview"
        return RedirectResponse(target, status_code=303)

    async def overview(request: Request, who) -> Response:
        """总览: the half-year per unit, with charts and the next deadlines."""
        half = half_from(request)
        view = await core.run(views.overview, settings, who, half, core.clock(), read_only=True)
        return page(request, "overview", who=who, view=view, half=half)

    async def units(request: Request, who) -> Response:
        half = half_from(request)
        view = await core.run(views.overview, settings, who, half, core.clock(), read_only=True)
        return page(request, "units", who=who, view=view, half=half)

    async def unit(request: Request, who) -> Response:
        """A unit's cadres, the furthest behind first, with a legend for every mark."""
        half = half_from(request)
        unit_id = int_param(request, "id")
        if unit_id is None:
            raise views.NotFound(f"unit:{request.path_params['id']}")
        view = await core.run(views.unit_page, settings, who, unit_id, half, read_only=True)
        return page(request, "unit", who=who, view=view, half=half, radius=settings.visit_radius_meters)

    async def cadre(request: Request, who) -> Response:
        half = half_from(request)
        cadre_id = int_param(request, "id")
        if cadre_id is None:
            raise views.NotFound(f"cadre:{request.path_params['id']}")
        view = await core.run(views.cadre_page, settings, who, cadre_id, half, read_only=True)
        return page(request, "cadre", who=who, view=view, half=half, minimum=settings.service_object_minimum)

    async def ledger_list(request: Request, who) -> Response:
        """台账: filters in the URL, paging, the full text."""
        filters = views.LedgerFilters.parse(dict(request.query_params))
        view = await core.run(views.ledger_page, settings, who, filters, core.clock(), read_only=True)
        return page(request, "ledger", who=who, view=view)

    async def ledger_download(request: Request, who) -> Response:
        """The filtered ledger, every page, as CSV (what is on screen)."""
        filters = views.LedgerFilters.parse(dict(request.query_params))
        content = await core.run(views.ledger_csv, settings, who, filters, core.clock(), read_only=True)
        await core.run(views.note, who, "ledger.download", None, _address(request), core.clock(), filters.query())
        return Response(content, media_type="text/csv; charset=utf-8", headers={
            **HEADERS, "Content-Disposition": "attachment; filename*=UTF-8''" + quote("问题台账.csv")})

    async def item(request: Request, who, error: str | None = None, done: str | None = None,
                   status: int = 200) -> Response:
        problem_id = int_param(request, "id")
        if problem_id is None:
            raise views.NotFound(f"problem:{request.path_params['id']}")
        view = await core.run(views.item_page, settings, who, problem_id, core.clock(), int_param(request, "unit"),
                              read_only=True)
        if view.phone_in_full:  # a full phone shown to whoever must call: each showing audited (who, when, which)
            await core.run(views.note, who, "phone.reveal", f"problem:{problem_id}", _address(request), core.clock())
        return page(request, "item", status, who=who, view=view, error=error, done=done)

    async def item_act(request: Request, who, form) -> Response:
        """交办 / 重新交办 / 记录回访 (or another action the rule table allows) through the core."""
        problem_id = int_param(request, "id")
        if problem_id is None:
            raise views.NotFound(f"problem:{request.path_params['id']}")
        fields = {name: str(form.get(name, ""))[:600] for name in ("unit", "a", "b", "deadline", "note", "days")}
        if fields["days"] and not fields["deadline"] and fields["days"].isdigit() and int(fields["days"]) < 200:
            fields["deadline"] = views.deadline_from_days(settings, core.clock(), int(fields["days"])).isoformat()
        try:
            done = await core.run(views.item_act, settings, who, problem_id, request.path_params["action"], fields,
                                  _address(request), core.clock())
        except ledger.LedgerError as refused:
            return await item(request, who, error=str(refused), status=400)
        return await item(request, who, done=done)

    async def ratings(request: Request, who) -> Response:
        half = half_from(request)
        view = await core.run(_ratings, who, half, int_param(request, "unit"), request.query_params.get("bad") == "1",
                              int_param(request, "cadre"), read_only=True)
        return page(request, "ratings", who=who, view=view, revealed=None)

    def _ratings(session, who, half, unit_id, bad, cadre_id=None):
        return views.ratings_page(session, settings, who, half, unit_id=unit_id, bad_only=bad, cadre_id=cadre_id)

    async def reveal(request: Request, who, form) -> Response:
        """Shows one rater's full number to whoever must call back, and writes the audit row."""
        rating_id = int_param(request, "id")
        if rating_id is None:
            raise views.NotFound(f"rating:{request.path_params['id']}")
        result = await core.run(views.reveal_phone, settings, who, rating_id, _address(request), core.clock())
        if result is None:
            return message(request, 403, texts.CONSOLE_ERROR_TITLE, texts.CONSOLE_REVEAL_REFUSED, who=who)
        half = half_from(request)
        view = await core.run(_ratings, who, half, None, True, read_only=True)
        return page(request, "ratings", who=who, view=view, revealed=(rating_id, result[1]))

    async def appeals_list(request: Request, who, error: str | None = None, done: str | None = None,
                           status: int = 200) -> Response:
        """申诉复核: the appeals this user may see, a photo named by a link, the 作风办's ruling form."""
        rows = await core.run(views.appeals_page, settings, who, read_only=True)
        return page(request, "appeals", status, who=who, rows=rows, error=error, done=done,
                    decisions=tuple(appeals.DECISIONS))

    async def appeal_photo(request: Request, who) -> Response:
        """One appeal's photo, only for whoever may see the appeal; each showing is audited."""
        appeal_id = int_param(request, "id")
        if appeal_id is None:
            raise views.NotFound(f"appeal:{request.path_params['id']}")
        content, kind = await core.run(views.appeal_photo, settings, who, appeal_id, _address(request), core.clock())
        return Response(content, media_type=kind, headers={**HEADERS, "Content-Disposition": "inline"})

    async def appeal_decide(request: Request, who, form) -> Response:
        appeal_id = int_param(request, "id")
        if appeal_id is None:
            raise views.NotFound(f"appeal:{request.path_params['id']}")
        try:
            done = await core.run(views.appeal_decide, settings, who, appeal_id, str(form.get("decision", ""))[:10],
                                  str(form.get("note", ""))[:600], _address(request), core.clock())
        except appeals.AppealError as refused:
            return await appeals_list(request, who, error=str(refused), status=400)
        return await appeals_list(request, who, done=done)

    async def reports(request: Request, who) -> Response:
        """报表: the forms to download and a ranking with its chart."""
        half = half_from(request)
        metric = request.query_params.get("metric", "satisfaction")
        level = request.query_params.get("level", "units")
        ranking = await core.run(views.ranking_view, settings, who, metric, level, half, core.clock(), read_only=True)
        units = await core.run(views.units_in_scope, settings, who, read_only=True)
        return page(request, "reports", who=who, half=half, ranking=ranking, units=units, halves=recent_halves())

    async def form_download(request: Request, who) -> Response:
        """附件N for a half-year and a unit: the same workbook as the chat's export."""
        half = half_from(request)
        form = int_param(request, "form") or 0
        unit_id = int_param(request, "unit")
        file = await core.run(views.export_form, settings, who, form, half, unit_id, read_only=True)
        await core.run(views.note, who, "form.download", f"form:{form}:{unit_id or 'all'}", _address(request),
                       core.clock(), half)
        return Response(file.content, media_type=file.content_type, headers={
            **HEADERS, "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file.filename)}"})

    async def spotchecks(request: Request, who, done: str | None = None) -> Response:
        """电话随机访问: draw the half-year's sample and record each call."""
        half = half_from(request)
        items, summary = await core.run(views.spotcheck_page, settings, who, half, read_only=True)
        if items:  # whom to ring, in full: every number shown is in the audit log
            await core.run(views.note_reveals, who, [f"spotcheck:{i.id}" for i in items], _address(request),
                           core.clock())
        return page(request, "spotcheck", who=who, half=half, items=items, summary=summary, done=done)

    async def spotcheck_draw(request: Request, who, form) -> Response:
        done = await core.run(views.spotcheck_draw, settings, who, half_from(request), _address(request), core.clock())
        return await spotchecks(request, who, done=done)

    async def spotcheck_record(request: Request, who, form) -> Response:
        check_id = int_param(request, "id")
        if check_id is None:
            raise views.NotFound(f"spotcheck:{request.path_params['id']}")
        done = await core.run(views.spotcheck_record, settings, who, check_id, str(form.get("outcome", ""))[:20],
                              str(form.get("note", ""))[:300], _address(request), core.clock())
        return await spotchecks(request, who, done=done)

    async def cards(request: Request, who) -> Response:
        """The A4 PDF of one unit's evaluation cards."""
        unit_id = int_param(request, "unit")
        if unit_id is None:
            raise views.NotFound("cards:")
        with tempfile.TemporaryDirectory() as folder:
            content = await core.run(views.cards_pdf, settings, who, unit_id, folder, core.clock())
        await core.run(views.note, who, "cards.download", f"unit:{unit_id}", _address(request), core.clock())
        return Response(content, media_type="application/pdf", headers={
            **HEADERS, "Content-Disposition": "attachment; filename*=UTF-8''" + quote(f"评价卡_{unit_id}.pdf")})

    async def admin(request: Request, who, **context) -> Response:
        status = context.pop("status", 200)
        outbox = await core.run(views.outbox_view, who, read_only=True)
        units = await core.run(views.admin_units, who, read_only=True)
        return page(request, "admin", status, who=who, outbox=outbox, units=units, **context)

    async def roster_upload(request: Request, who, form) -> Response:
        """Checks the uploaded workbook: every row error as a table and nothing imported, or the counts."""
        from bot.imports.roster import RosterDeactivationRefused, RosterError

        upload = form.get("roster")
        name = getattr(upload, "filename", "") or ""
        if upload is None or not name.lower().endswith(".xlsx"):
            return await admin(request, who, status=400, error=texts.CONSOLE_ROSTER_BAD_FILE)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "roster.xlsx"
            path.write_bytes(await upload.read())
            try:
                report = await core.run(views.import_roster, settings, who, str(path), name[:100], _address(request),
                                        core.clock())
            except RosterError as refused:
                await core.run(views.roster_refused, who, name, len(refused.issues), _address(request), core.clock())
                return await admin(request, who, status=400, issues=refused.issues)
            except RosterDeactivationRefused as refused:  # would deactivate most of a sheet: nothing written
                await core.run(views.roster_refused, who, name, len(refused.sheets), _address(request), core.clock())
                return await admin(request, who, status=400, error=str(refused))
            except Exception as broken:  # not a workbook openpyxl can read
                if isinstance(broken, views.Forbidden):
                    raise
                return await admin(request, who, status=400, error=texts.CONSOLE_ROSTER_BAD_FILE)
        return await admin(request, who, report=report)

    async def bindcode(request: Request, who, form) -> Response:
        done = await core.run(views.issue_binding_code, settings, who, str(form.get("mobile", ""))[:30],
                              _address(request), core.clock())
        return await admin(request, who, done=done)

    async def revoke(request: Request, who, form) -> Response:
        done = await core.run(views.revoke_card, settings, who, str(form.get("mobile", ""))[:30], _address(request),
                              core.clock())
        return await admin(request, who, done=done)

    async def roster_template(request: Request, who) -> Response:
        from storage.example_roster import write_example_workbook

        if who.role != "admin":
            raise views.Forbidden()
        with tempfile.TemporaryDirectory() as folder:
            content = write_example_workbook(Path(folder) / "roster.xlsx").read_bytes()
        return Response(content, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={**HEADERS, "Content-Disposition": "attachment; filename*=UTF-8''" + quote("名册模板.xlsx")})

    def audit_filters(request: Request) -> dict:
        since = request.query_params.get("since", "")
        try:
            day = date.fromisoformat(since) if since else None
        except ValueError:
            day = None
        return {"action": request.query_params.get("action", "")[:40],
                "actor": request.query_params.get("actor", "")[:130], "since": day,
                "since_at": datetime.combine(day, time.min, settings.tz) if day else None}

    async def audit(request: Request, who) -> Response:
        """审计: who did what, when, from where; filterable."""
        filters = audit_filters(request)
        view = await core.run(_audit, who, filters, 200, read_only=True)
        return page(request, "audit", who=who, view=view, filters=filters)

    def _audit(session, who, filters, limit):
        return views.audit_rows(session, who, limit=limit, action=filters["action"], actor=filters["actor"],
                                since=filters["since_at"])

    async def audit_download(request: Request, who) -> Response:
        view = await core.run(_audit, who, audit_filters(request), None, read_only=True)
        await core.run(views.note, who, "audit.download", None, _address(request), core.clock())
        return Response(views.audit_csv(view, settings.tz), media_type="text/csv; charset=utf-8", headers={
            **HEADERS, "Content-Disposition": "attachment; filename*=UTF-8''" + quote("审计日志.csv")})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if name not in ("console.css",) or not path.is_file():
            return Response("not found", status_code=404)
        return Response(path.read_bytes(), media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    get, post = (lambda h: guarded(h)), (lambda h: guarded(h, method="POST"))
    return [
        Route("/console", get(home)),
        Route("/console/static/{name}", static),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login/code", login_code, methods=["POST"]),
        Route("/console/login/enter", login_enter, methods=["POST"]),
        Route("/console/login/wecom", wecom_start, methods=["GET"]),
        Route("/console/login/wecom/callback", wecom_callback, methods=["GET"]),
        Route("/console/login/{token}", link_page, methods=["GET"]),
        Route("/console/login/{token}", link_redeem, methods=["POST"]),
        Route("/console/logout", post(logout), methods=["POST"]),
        Route("/console/sessions", get(sessions)),
        Route("/console/sessions/{id}/end", post(end_session), methods=["POST"]),
        Route("/console/overview", get(overview)),
        Route("/console/units", get(units)),
        Route("/console/units/{id}", get(unit)),
        Route("/console/cadres/{id}", get(cadre)),
        Route("/console/ledger", get(ledger_list)),
        Route("/console/ledger.csv", get(ledger_download)),
        Route("/console/ledger/{id}", get(item)),
        Route("/console/ledger/{id}/{action}", post(item_act), methods=["POST"]),
        Route("/console/ratings", get(ratings)),
        Route("/console/ratings/{id}/reveal", post(reveal), methods=["POST"]),
        Route("/console/appeals", get(appeals_list)),
        Route("/console/appeals/{id}/photo", get(appeal_photo)),
        Route("/console/appeals/{id}/decide", post(appeal_decide), methods=["POST"]),
        Route("/console/reports", get(reports)),
        Route("/console/reports/form/{form}", get(form_download)),
        Route("/console/spotchecks", get(spotchecks)),
        Route("/console/spotchecks/draw", post(spotcheck_draw), methods=["POST"]),
        Route("/console/spotchecks/{id}", post(spotcheck_record), methods=["POST"]),
        Route("/console/admin", get(admin)),
        Route("/console/admin/cards", get(cards)),
        Route("/console/admin/roster", post(roster_upload), methods=["POST"]),
        Route("/console/admin/roster-template", get(roster_template)),
        Route("/console/admin/bindcode", post(bindcode), methods=["POST"]),
        Route("/console/admin/revoke", post(revoke), methods=["POST"]),
        Route("/console/audit", get(audit)),
        Route("/console/audit.csv", get(audit_download)),
    ]
