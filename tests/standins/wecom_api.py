"""Local stand-in for WeCom / 政务微信: the server API the bot calls, and the callbacks it pushes.

Two halves, both in the published formats over real HTTP on loopback:

* ``WeComStandin`` serves ``/cgi-bin/gettoken``, ``message/send``, ``message/update_template_card``,
  ``department/list``, ``user/list_id``, ``user/get``, ``menu/create``, ``media/upload`` and
  ``media/get`` (also the pictures members sent, as ``Member.image(content=...)`` registered them); checks
  what it gets as WeCom does (corp id and secret, the access token, agent id, message shapes: a
  button card has 1-6 buttons with keys and a task id unique in the app), records every call and
  every message a member received. Like WeCom it **drops silently** (answers ok, delivers nothing)
  a message beyond a member's 30 a minute or 1,000 an hour (``over_limit`` keeps them, so a test
  can assert there were none), and a message identical to one the member got within the
  ``duplicate_check_interval`` when ``enable_duplicate_check`` is set (``duplicates``): any
  message with the same content, whichever row or call it came from, as WeCom compares them. Both
  windows run on ``monotonic`` (``time.monotonic`` unless a test gives a clock of its own, such as
  ``ManualClock``, to move time past them).
  ``send_delay`` holds every send's answer after delivering it (a sender killed while waiting);
  ``send_errors`` answers the next sends with the given errors (``{"errcode": 45009, ...}``) and delivers nothing;
  ``update_errors`` does the same to the next update_template_card calls.
  It also plays WeCom's web login: the QR login page (``/wwlogin/sso/login``) and the OAuth2
  authorize page (``/connect/oauth2/authorize``) check their parameters as WeCom does and, once
  ``login_as`` names the member who scans (or opens the page in the client), send the browser back
  to ``redirect_uri`` with a code and the state; ``auth/getuserinfo`` (and the older
  ``user/getuserinfo``) checks the access token and turns a code into the userid once, within
  ``code_ttl`` seconds, answering errcode 40029 for a code unknown, spent or expired.
* ``Member`` is a WeCom member as our callback URL sees them: it builds the XML WeCom pushes (text,
  image, location, menu click, template_card_event), encrypts it with the corp id inside (AES
  written from the published algorithm in tests/standins/wechat_api.py, not wechatpy), signs it,
  posts it and decrypts the passive reply.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .server import ServedApp
from .wechat_api import aes_decrypt, aes_encrypt, cdata, message_xml, sign

_TASK_ID = re.compile(r"[A-Za-z0-9_\-@]{1,128}")
_STATE = re.compile(r"[A-Za-z0-9]{0,128}")


@dataclass
class Call:
    path: str
    params: dict[str, str]
    body: Any
    answer: dict[str, Any]


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060"))  # zero-width characters


class ManualClock:
    """A monotonic clock a test moves by hand (``advance``), for ``WeComStandin(monotonic=...)``."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Delivered:
    """A message a member received: ``at`` on the stand-in's monotonic clock; ``text`` as the member
    reads it (zero-width characters are invisible: left out; ``body`` has them as sent)."""

    touser: str
    msgtype: str
    body: dict[str, Any]
    at: float
    replaces: str | None = None  # a card that took the place of the pressed card of this task id

    @property
    def text(self) -> str:
        if self.msgtype == "text":
            return self.body["text"]["content"].translate(_INVISIBLE)
        if self.msgtype == "template_card":
            card = self.body["template_card"]
            return "\n".join(filter(None, [card.get("sub_title_text"), card["main_title"]["title"]]))
        return f"[{self.msgtype}]"

    @property
    def buttons(self) -> list[dict[str, str]]:
        return self.body["template_card"]["button_list"] if self.msgtype == "template_card" else []


@dataclass
class DirectoryEntry:
    userid: str
    name: str
    mobile: str | None
    department: list[int] = field(default_factory=lambda: [1])


class WeComStandin:
    """WeCom's API and its callbacks, on 127.0.0.1."""

    def __init__(self, *, corp_id: str, agent_id: int, secret: str, token: str, aes_key: str,
                 clock: Callable[[], float] = time.time, per_minute: int = 30, per_hour: int = 1000,
                 minute: float = 60.0, hour: float = 3600.0, monotonic: Callable[[], float] = time.monotonic):
        self.corp_id, self.agent_id, self.secret, self.token, self.aes_key = corp_id, agent_id, secret, token, aes_key
        self.clock = clock  # callback timestamps (the bot's clock may be a test's)
        # Arrivals: the duplicate check's interval, a member's limits, a login code's lifetime.
        self.monotonic = monotonic
        self.per_minute, self.per_hour, self.minute, self.hour = per_minute, per_hour, minute, hour
        self.webhook_url: str | None = None
        self.calls: list[Call] = []
        self.delivered: list[Delivered] = []
        self.duplicates: list[Delivered] = []  # dropped by the duplicate check
        self.over_limit: list[Delivered] = []  # dropped for a member's limits: must stay empty
        self.updated_cards: list[dict] = []
        self.departments = [{"id": 1, "name": "市政府", "parentid": 0}]
        self.directory: list[DirectoryEntry] = []
        self.menu: list[dict] | None = None
        self.media: dict[str, bytes] = {}
        self.page_size = 2  # user/list_id pages, small so that paging is used
        self.send_delay = 0.0
        self.send_errors: list[dict] = []  # answered, in turn, to the next sends instead of delivering them
        self.update_errors: list[dict] = []  # the same for the next update_template_card calls
        self.tokens: set[str] = set()
        self.token_fetches = 0
        self._task_ids: set[str] = set()
        self._codes: dict[str, bool] = {}  # response codes issued -> spent
        self._code_task: dict[str, str] = {}  # a press's response code -> the task id of the card pressed
        self._showing: dict[str, dict] = {}  # task id -> the card that replaced it last
        self._by_member: dict[str, list[float]] = defaultdict(list)  # arrivals per member
        self.login_as: str | None = None  # the member who scans the QR code (or is in the client); None: nobody yet
        self.login_declined = False  # the member refused: back to redirect_uri with the state only
        self.trusted_domain: str | None = None  # the app's 可信域名: redirect_uri must be on it (host:port)
        self.code_ttl = 300.0  # a login code is valid five minutes
        self.older_version = False  # an older private deployment: no auth/getuserinfo (404), only user/getuserinfo
        self.login_pages: list[tuple[str, dict[str, str]]] = []  # (path, query) of each login page served
        self.login_codes: dict[str, list] = {}  # code -> [userid, issued at, spent]
        self.login_redirects: list[str] = []  # where the login pages sent the browser back
        self._counter = 0
        self._lock = threading.Lock()
        self._served = ServedApp(Starlette(routes=[
            Route("/cgi-bin/gettoken", self._gettoken, methods=["GET"]),
            Route("/cgi-bin/message/send", self._send, methods=["POST"]),
            Route("/cgi-bin/message/update_template_card", self._update_card, methods=["POST"]),
            Route("/cgi-bin/department/list", self._department_list, methods=["GET"]),
            Route("/cgi-bin/user/list_id", self._list_id, methods=["POST"]),
            Route("/cgi-bin/user/get", self._user_get, methods=["GET"]),
            Route("/cgi-bin/menu/create", self._menu_create, methods=["POST"]),
            Route("/cgi-bin/media/upload", self._media_upload, methods=["POST"]),
            Route("/cgi-bin/media/get", self._media_get, methods=["GET"]),
            Route("/cgi-bin/auth/getuserinfo", self._getuserinfo, methods=["GET"]),
            Route("/cgi-bin/user/getuserinfo", self._getuserinfo_old, methods=["GET"]),
            Route("/wwlogin/sso/login", self._qr_login, methods=["GET"]),
            Route("/connect/oauth2/authorize", self._oauth_authorize, methods=["GET"]),
        ]))

    # -- life ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._served.url

    def __enter__(self) -> "WeComStandin":
        self._served.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()

    def member(self, userid: str) -> "Member":
        return Member(self, userid)

    def received(self, userid: str) -> list[Delivered]:
        with self._lock:
            return [d for d in self.delivered if d.touser == userid]

    def calls_of(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    # -- endpoints -----------------------------------------------------------------------------

    def _record(self, path: str, request: Request, body: Any, answer: dict) -> Response:
        with self._lock:
            self.calls.append(Call(path, dict(request.query_params), body, answer))
        return JSONResponse(answer)

    async def _gettoken(self, request: Request) -> Response:
        query = request.query_params
        if query.get("corpid") != self.corp_id:
            return self._record("/cgi-bin/gettoken", request, None, {"errcode": 40013, "errmsg": "invalid corpid"})
        if query.get("corpsecret") != self.secret:
            return self._record("/cgi-bin/gettoken", request, None, {"errcode": 40001, "errmsg": "invalid credential"})
        with self._lock:
            self.token_fetches += 1
            issued = f"WECOM_TOKEN_{self.token_fetches}_{secrets.token_hex(8)}"
            self.tokens.add(issued)
        return self._record("/cgi-bin/gettoken", request, None,
                            {"errcode": 0, "errmsg": "ok", "access_token": issued, "expires_in": 7200})

    def _token_error(self, request: Request) -> dict | None:
        token = request.query_params.get("access_token", "")
        if not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        with self._lock:
            if token not in self.tokens:
                return {"errcode": 42001, "errmsg": "access_token expired"}
        return None

    async def _json_body(self, request: Request) -> Any:
        try:
            return json.loads((await request.body()).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def _check_message(self, body: dict) -> dict | None:
        if body.get("agentid") != self.agent_id:
            return {"errcode": 301002, "errmsg": "not allow operate another agent with this accesstoken"}
        kind = body.get("msgtype")
        if kind == "text":
            content = (body.get("text") or {}).get("content") or ""
            if not content:
                return {"errcode": 41016, "errmsg": "missing content"}
            if len(content.encode()) > 2048:
                return {"errcode": 45002, "errmsg": "content size out of limit"}
        elif kind == "template_card":
            card = body.get("template_card") or {}
            buttons = card.get("button_list") or []
            if card.get("card_type") != "button_interaction" or not (card.get("main_title") or {}).get("title"):
                return {"errcode": 40058, "errmsg": "template_card invalid"}
            if not 1 <= len(buttons) <= 6 or any(not b.get("text") or not b.get("key") or len(b["key"].encode()) > 1024
                                                 for b in buttons):
                return {"errcode": 40058, "errmsg": "button_list invalid"}
            if not _TASK_ID.fullmatch(str(card.get("task_id") or "")):
                return {"errcode": 40058, "errmsg": "task_id invalid"}
        elif kind in ("image", "file"):
            if (body.get(kind) or {}).get("media_id") not in self.media:
                return {"errcode": 40007, "errmsg": "invalid media_id"}
        else:
            return {"errcode": 40008, "errmsg": "invalid message type"}
        return None

    async def _send(self, request: Request) -> Response:
        path = "/cgi-bin/message/send"
        body = await self._json_body(request)
        error = self._token_error(request) or (None if isinstance(body, dict) else {"errcode": 47001, "errmsg": "data format error"})
        error = error or self._check_message(body)
        if error:
            return self._record(path, request, body, error)
        with self._lock:
            injected = self.send_errors.pop(0) if self.send_errors else None
        if injected is not None:
            return self._record(path, request, body, injected)
        touser = str(body.get("touser") or "")
        if "|" in touser or not touser:
            return self._record(path, request, body, {"errcode": 40031, "errmsg": "one member per message here"})
        if self.directory and touser not in {m.userid for m in self.directory}:
            return self._record(path, request, body, {"errcode": 81013, "errmsg": "user & party & tag all invalid"})
        now = self.monotonic()
        item = Delivered(touser, body["msgtype"], body, now)
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "invaliduser": ""}
        with self._lock:
            content = json.dumps({k: v for k, v in body.items() if k not in ("enable_duplicate_check",
                                                                               "duplicate_check_interval")},
                                 sort_keys=True, ensure_ascii=False)
            interval = float(body.get("duplicate_check_interval") or 1800)
            duplicate = body.get("enable_duplicate_check") == 1 and any(
                d.touser == touser and now - d.at < interval and _content(d.body) == content for d in self.delivered)
            self._counter += 1
            answer["msgid"] = f"msg{self._counter:08d}"
            if duplicate:
                self.duplicates.append(item)
            else:
                task = (body.get("template_card") or {}).get("task_id")
                if task is not None:
                    if task in self._task_ids:
                        self.calls.append(Call(path, dict(request.query_params), body, {"errcode": 40099}))
                        return JSONResponse({"errcode": 40099, "errmsg": "task_id already exists"})
                    self._task_ids.add(task)
                arrivals = [t for t in self._by_member[touser] if t > now - self.hour]
                self._by_member[touser] = arrivals
                if (sum(1 for t in arrivals if t > now - self.minute) >= self.per_minute
                        or len(arrivals) >= self.per_hour):
                    self.over_limit.append(item)  # WeCom says ok and delivers nothing
                else:
                    arrivals.append(now)
                    self.delivered.append(item)
            if body["msgtype"] == "template_card":
                answer["response_code"] = self._issue_code()
                self._code_task[answer["response_code"]] = body["template_card"]["task_id"]
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        return self._record(path, request, body, answer)

    def _issue_code(self) -> str:
        code = f"rc{secrets.token_hex(12)}"
        self._codes[code] = False
        return code

    async def _update_card(self, request: Request) -> Response:
        path = "/cgi-bin/message/update_template_card"
        body = await self._json_body(request)
        error = self._token_error(request) or (None if isinstance(body, dict) else {"errcode": 47001, "errmsg": "data format error"})
        if error:
            return self._record(path, request, body, error)
        with self._lock:
            if self.update_errors:
                return JSONResponse(self._note(path, request, body, self.update_errors.pop(0)))
            code = body.get("response_code")
            if self._codes.get(code) is not False:
                return JSONResponse(self._note(path, request, body, {"errcode": 40106, "errmsg": "invalid response_code"}))
            if body.get("agentid") != self.agent_id or not body.get("userids"):
                return JSONResponse(self._note(path, request, body, {"errcode": 40058, "errmsg": "invalid args"}))
            card = body.get("template_card")
            if card is not None:
                error = self._check_message({"agentid": body["agentid"], "msgtype": "template_card",
                                             "template_card": {**card, "task_id": "replaced"}})
                if error or "task_id" in card:
                    return JSONResponse(self._note(path, request, body, error or {"errcode": 40058,
                                                                                  "errmsg": "task_id not allowed"}))
            elif not (body.get("button") or {}).get("replace_name"):
                return JSONResponse(self._note(path, request, body, {"errcode": 40058, "errmsg": "invalid args"}))
            if card is not None and code not in self._code_task:
                return JSONResponse(self._note(path, request, body, {"errcode": 40106, "errmsg": "invalid response_code"}))
            self._codes[code] = True
            self.updated_cards.append(body)
            if card is not None:
                self._replace(body["userids"][0], self._code_task[code], card)
        return self._record(path, request, body, {"errcode": 0, "errmsg": "ok"})

    def _replace(self, touser: str, task: str, card: dict) -> bool:
        """The pressed card of ``task`` now shows ``card`` (under the lock): seen by the member as a card
        delivered again (``replaces``), unless it shows that very card already (a retried callback)."""
        shown = {**card, "task_id": task}
        if self._showing.get(task) == shown:
            return False
        self._showing[task] = shown
        self.delivered.append(Delivered(touser, "template_card", {"template_card": shown}, self.monotonic(),
                                        replaces=task))
        return True

    def _note(self, path: str, request: Request, body: Any, answer: dict) -> dict:
        self.calls.append(Call(path, dict(request.query_params), body, answer))
        return answer

    async def _department_list(self, request: Request) -> Response:
        path = "/cgi-bin/department/list"
        error = self._token_error(request)
        return self._record(path, request, None, error or {"errcode": 0, "errmsg": "ok", "department": self.departments})

    async def _list_id(self, request: Request) -> Response:
        path = "/cgi-bin/user/list_id"
        body = await self._json_body(request) or {}
        error = self._token_error(request)
        if error:
            return self._record(path, request, body, error)
        start = int(body.get("cursor") or 0)
        page = self.directory[start:start + min(self.page_size, int(body.get("limit") or 10000))]
        following = start + len(page)
        return self._record(path, request, body, {
            "errcode": 0, "errmsg": "ok", "next_cursor": str(following) if following < len(self.directory) else "",
            "dept_user": [{"userid": m.userid, "department": m.department[0]} for m in page]})

    async def _user_get(self, request: Request) -> Response:
        path = "/cgi-bin/user/get"
        error = self._token_error(request)
        if error:
            return self._record(path, request, None, error)
        member = next((m for m in self.directory if m.userid == request.query_params.get("userid")), None)
        if member is None:
            return self._record(path, request, None, {"errcode": 60111, "errmsg": "userid not found"})
        data = {"errcode": 0, "errmsg": "ok", "userid": member.userid, "name": member.name,
                "department": member.department}
        if member.mobile is not None:
            data["mobile"] = member.mobile
        return self._record(path, request, None, data)

    async def _menu_create(self, request: Request) -> Response:
        path = "/cgi-bin/menu/create"
        body = await self._json_body(request)
        error = self._token_error(request)
        if error is None and request.query_params.get("agentid") != str(self.agent_id):
            error = {"errcode": 301002, "errmsg": "invalid agentid"}
        buttons = (body or {}).get("button")
        if error is None and (not isinstance(buttons, list) or not 1 <= len(buttons) <= 3):
            error = {"errcode": 60007, "errmsg": "invalid button size"}
        for button in buttons or []:
            subs = button.get("sub_button")
            entries = subs if subs is not None else [button]
            if error is None and (not 1 <= len(entries) <= 5 or len(button.get("name", "").encode()) > 16 or any(
                    e.get("type") != "click" or not e.get("key") or len(e.get("name", "").encode()) > 40 for e in entries)):
                error = {"errcode": 60007, "errmsg": "invalid button"}
        if error is None:
            self.menu = buttons
        return self._record(path, request, body, error or {"errcode": 0, "errmsg": "ok"})

    async def _media_upload(self, request: Request) -> Response:
        path = "/cgi-bin/media/upload"
        error = self._token_error(request)
        if error:
            return self._record(path, request, None, error)
        form = await request.form()
        upload = form.get("media")
        if upload is None or request.query_params.get("type") not in ("image", "file", "voice", "video"):
            return self._record(path, request, None, {"errcode": 40004, "errmsg": "invalid media type"})
        content = await upload.read()
        media_id = f"media{secrets.token_hex(8)}"
        with self._lock:
            self.media[media_id] = content
        return self._record(path, request, {"filename": upload.filename}, {
            "errcode": 0, "errmsg": "ok", "type": request.query_params["type"], "media_id": media_id})

    async def _media_get(self, request: Request) -> Response:
        """A temporary media file (uploaded, or a picture a member sent): its bytes, or a JSON error."""
        path = "/cgi-bin/media/get"
        error = self._token_error(request)
        if error:
            return self._record(path, request, None, error)
        with self._lock:
            content = self.media.get(request.query_params.get("media_id", ""))
        if content is None:
            return self._record(path, request, None, {"errcode": 40007, "errmsg": "invalid media_id"})
        with self._lock:
            self.calls.append(Call(path, dict(request.query_params), None, {"bytes": len(content)}))
        return Response(content, media_type="image/jpeg",
                        headers={"Content-Disposition": f'attachment; filename="{request.query_params["media_id"]}.jpg"'})

    # -- web login ------------------------------------------------------------------------------

    def issue_login_code(self, userid: str) -> str:
        """A code as WeCom's login pages hand one out for ``userid`` (tests forge with it too)."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            self.login_codes[code] = [userid, self.monotonic(), False]
        return code

    def _login_page_error(self, query: dict[str, str], *, oauth: bool) -> str | None:
        if query.get("appid") != self.corp_id:
            return "appid 参数错误"
        if query.get("agentid") != str(self.agent_id):
            return "agentid 参数错误"
        if oauth and (query.get("response_type") != "code" or query.get("scope") not in ("snsapi_base", "snsapi_privateinfo")):
            return "response_type / scope 参数错误"
        if not oauth and query.get("login_type") != "CorpApp":
            return "login_type 参数错误"
        redirect = urlsplit(query.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            return "redirect_uri 参数错误"
        if self.trusted_domain is not None and redirect.netloc != self.trusted_domain:
            return "redirect_uri 与配置的授权完成回跳域名不一致"
        if not _STATE.fullmatch(query.get("state", "")):
            return "state 参数错误"
        return None

    def _login_page(self, request: Request, *, oauth: bool) -> Response:
        query = dict(request.query_params)
        with self._lock:
            self.login_pages.append((request.url.path, query))
        error = self._login_page_error(query, oauth=oauth)
        if error:
            return HTMLResponse(f"<html><body><p>{error}</p></body></html>", status_code=400)
        if self.login_as is None and not self.login_declined:
            return HTMLResponse("<html><body><p>请使用企业微信扫描二维码登录</p></body></html>")
        back = {"state": query.get("state", "")}
        if not self.login_declined:
            back = {"code": self.issue_login_code(self.login_as), **back}
        parts = urlsplit(query["redirect_uri"])
        target = urlunsplit(parts._replace(query=urlencode(parse_qsl(parts.query) + list(back.items()))))
        with self._lock:
            self.login_redirects.append(target)
        return RedirectResponse(target, status_code=302)

    async def _qr_login(self, request: Request) -> Response:
        return self._login_page(request, oauth=False)

    async def _oauth_authorize(self, request: Request) -> Response:
        return self._login_page(request, oauth=True)

    def _userinfo(self, request: Request, path: str, fields: tuple[str, str]) -> Response:
        error = self._token_error(request)
        if error:
            return self._record(path, request, None, error)
        code = request.query_params.get("code", "")
        with self._lock:
            issued = self.login_codes.get(code)
            fresh = issued is not None and not issued[2] and self.monotonic() - issued[1] < self.code_ttl
            if fresh:
                issued[2] = True
        if not fresh:
            return self._record(path, request, None, {"errcode": 40029, "errmsg": "invalid code"})
        userid = issued[0]
        if userid.startswith("openid:"):  # someone outside the organisation
            return self._record(path, request, None, {"errcode": 0, "errmsg": "ok", "openid": userid[7:]})
        return self._record(path, request, None, {"errcode": 0, "errmsg": "ok", fields[0]: userid,
                                                  fields[1]: f"ticket{secrets.token_hex(8)}"})

    async def _getuserinfo(self, request: Request) -> Response:
        if self.older_version:
            return Response("not found", status_code=404)
        return self._userinfo(request, "/cgi-bin/auth/getuserinfo", ("userid", "user_ticket"))

    async def _getuserinfo_old(self, request: Request) -> Response:
        return self._userinfo(request, "/cgi-bin/user/getuserinfo", ("UserId", "DeviceId"))

    # -- the callback side -----------------------------------------------------------------------

    def post(self, xml: str, *, timestamp: int | None = None, nonce: str | None = None,
             signature: str | None = None, corp_id: str | None = None, content: bytes | None = None) -> httpx.Response:
        """POSTs a callback as WeCom does: encrypted with the corp id inside, signed. The keyword
        arguments forge what a test wants forged."""
        assert self.webhook_url, "set webhook_url first"
        timestamp = int(self.clock()) if timestamp is None else timestamp
        nonce = nonce or str(secrets.randbelow(10 ** 9))
        encrypted = aes_encrypt(self.aes_key, xml.encode(), corp_id or self.corp_id)
        params = {"msg_signature": signature or sign(self.token, str(timestamp), nonce, encrypted),
                  "timestamp": str(timestamp), "nonce": nonce}
        if content is None:
            content = (f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><AgentID>{self.agent_id}</AgentID>"
                       f"<Encrypt>{cdata(encrypted)}</Encrypt></xml>").encode()
        return httpx.post(self.webhook_url, params=params, content=content, headers={"Content-Type": "text/xml"},
                          timeout=30)

    def verify(self, echo: str, *, timestamp: int | None = None, signature: str | None = None) -> httpx.Response:
        """The GET WeCom sends when the callback URL is saved: an encrypted echostr to decrypt."""
        timestamp = int(self.clock()) if timestamp is None else timestamp
        nonce = "1372623149"
        echostr = aes_encrypt(self.aes_key, echo.encode(), self.corp_id)
        params = {"msg_signature": signature or sign(self.token, str(timestamp), nonce, echostr),
                  "timestamp": str(timestamp), "nonce": nonce, "echostr": echostr}
        return httpx.get(self.webhook_url, params=params, timeout=10)

    def read_reply(self, response: httpx.Response, *, pressed: str | None = None, member: str | None = None) -> str | None:
        """The passive reply's text, decrypted and checked as WeCom would; None for an empty answer.
        A reply to a card press (``pressed``: the card's task id) is applied to the card
        (``updated_cards``): update_button is read as "[update_button] <the new text>";
        update_template_card puts the new card in the pressed one's place (the member sees it as
        a card delivered, ``replaces`` the task id) and is read as "[update_template_card] <title>"."""
        assert response.status_code == 200, (response.status_code, response.text)
        if response.text == "":
            return None
        fields = {child.tag: child.text or "" for child in ET.fromstring(response.text)}
        assert fields["MsgSignature"] == sign(self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
        plain, receive_id = aes_decrypt(self.aes_key, fields["Encrypt"])
        assert receive_id == self.corp_id
        root = ET.fromstring(plain.decode())
        inner = {child.tag: child.text or "" for child in root}
        if inner.get("MsgType") == "update_button":
            assert sorted(inner) == ["Button", "CreateTime", "FromUserName", "MsgType", "ToUserName"], inner
            name = root.findtext("Button/ReplaceName") or ""
            assert name and inner["FromUserName"] == self.corp_id
            with self._lock:
                self.updated_cards.append({"button": {"replace_name": name}, "passive": True})
            return f"[update_button] {name}"
        if inner.get("MsgType") == "update_template_card":
            assert pressed is not None, "update_template_card answers a card press only"
            assert sorted(inner) == ["CreateTime", "FromUserName", "MsgType", "TemplateCard", "ToUserName"], inner
            assert inner["FromUserName"] == self.corp_id and inner["ToUserName"] == member, inner
            card = _card_from_xml(root.find("TemplateCard"), _BUTTON_CARD)
            error = self._check_message({"agentid": self.agent_id, "msgtype": "template_card",
                                         "template_card": {**card, "task_id": pressed}})
            assert error is None and "task_id" not in card, (error, card)
            with self._lock:
                self.updated_cards.append({"template_card": card, "passive": True})
                self._replace(inner["ToUserName"], pressed, card)
            return f"[update_template_card] {card['main_title']['title']}"
        assert sorted(inner) == ["AgentID", "Content", "CreateTime", "FromUserName", "MsgType", "ToUserName"], inner
        assert inner["MsgType"] == "text" and inner["FromUserName"] == self.corp_id
        return inner["Content"]


# The elements of a button_interaction card in a passive update_template_card reply, as WeCom's
# documentation names them (被动回复消息格式, 按钮交互型): tag -> (JSON name, its elements, repeated).
_TEXT = {"Title": ("title", None, False), "Desc": ("desc", None, False)}
_BUTTON_CARD = {
    "CardType": ("card_type", None, False),
    "Source": ("source", {"IconUrl": ("icon_url", None, False), "Desc": ("desc", None, False),
                          "DescColor": ("desc_color", None, False)}, False),
    "MainTitle": ("main_title", _TEXT, False),
    "SubTitleText": ("sub_title_text", None, False),
    "ButtonList": ("button_list", {"Text": ("text", None, False), "Style": ("style", None, False),
                                   "Key": ("key", None, False)}, True),
    "ReplaceText": ("replace_text", None, False),
}


def _card_from_xml(element: ET.Element, schema: dict) -> dict:
    """A card of a passive reply as message/send's JSON (``SubTitleText`` → ``sub_title_text``, one
    ``<ButtonList>`` per button → ``button_list``, the texts as strings); an element WeCom does not
    name (a misspelt tag, one in the wrong place) fails the test."""
    out: dict[str, Any] = {}
    for child in element:
        assert child.tag in schema, f"<{child.tag}> is not an element of {element.tag} in WeCom's format"
        name, inner, repeated = schema[child.tag]
        value = _card_from_xml(child, inner) if inner else (child.text or "")
        assert inner or len(child) == 0, f"<{child.tag}> holds elements"
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            assert name not in out, f"<{child.tag}> twice"
            out[name] = value
    return out


def _content(body: dict) -> str:
    return json.dumps({k: v for k, v in body.items() if k not in ("enable_duplicate_check", "duplicate_check_interval")},
                      sort_keys=True, ensure_ascii=False)


class Member:
    """A WeCom member using the app; each method posts one callback and returns the passive reply."""

    def __init__(self, standin: WeComStandin, userid: str):
        self.standin, self.userid = standin, userid
        self._last_time = 0

    def _time(self) -> int:
        now = max(int(self.standin.clock()), self._last_time + 1)
        self._last_time = now
        return now

    def _fields(self, msg_type: str, **more: str | int) -> dict[str, str | int]:
        return {"ToUserName": self.standin.corp_id, "FromUserName": self.userid, "CreateTime": self._time(),
                "MsgType": msg_type, **more, "AgentID": self.standin.agent_id}

    def send(self, xml: str, **post: Any) -> str | None:
        task = re.search(r"<TaskId><!\[CDATA\[(.*?)\]\]></TaskId>", xml)
        return self.standin.read_reply(self.standin.post(xml, **post), pressed=task.group(1) if task else None,
                                       member=self.userid)

    def xml_text(self, content: str) -> str:
        return message_xml(self._fields("text", Content=content, MsgId=_msg_id()))

    def text(self, content: str) -> str | None:
        return self.send(self.xml_text(content))

    def image(self, media_id: str = "MEDIA_1", content: bytes | None = None) -> str | None:
        """A picture; with ``content``, the stand-in serves it at media/get under ``media_id``."""
        if content is not None:
            with self.standin._lock:
                self.standin.media[media_id] = content
        return self.send(message_xml(self._fields("image", PicUrl="https://wework.qpic.cn/x", MediaId=media_id,
                                                  MsgId=_msg_id())))

    def location(self, lat: float, lon: float) -> str | None:
        return self.send(message_xml(self._fields("location", Location_X=str(lat), Location_Y=str(lon), Scale=15,
                                                  Label="位置", MsgId=_msg_id())))

    def click(self, key: str) -> str | None:
        return self.send(message_xml(self._fields("event", Event="click", EventKey=key)))

    def xml_press(self, card: Delivered, label: str) -> str:
        """The template_card_event of pressing the button whose text contains ``label`` on ``card``."""
        # A card that took a pressed one's place with a replace_text shows its buttons grey, not pressable.
        assert not (card.replaces and card.body["template_card"].get("replace_text")), "the card's buttons are grey"
        buttons = [b for b in card.buttons if label in b["text"]]
        assert buttons, f"no button {label!r} on the card: {[b['text'] for b in card.buttons]}"
        task = card.body["template_card"]["task_id"]
        with self.standin._lock:
            code = self.standin._issue_code()
            self.standin._code_task[code] = task
        return message_xml(self._fields("event", Event="template_card_event", EventKey=buttons[0]["key"],
                                        TaskId=task, CardType="button_interaction",
                                        ResponseCode=code))

    def press(self, card: Delivered, label: str) -> str | None:
        return self.send(self.xml_press(card, label))


_msg_ids = iter(range(7_000_000_000_000_000_000, 2 ** 63))
_msg_lock = threading.Lock()


def _msg_id() -> int:
    with _msg_lock:
        return next(_msg_ids)
