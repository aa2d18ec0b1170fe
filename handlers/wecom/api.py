"""The WeCom server API the bot calls, over httpx at WECOM_API_BASE_URL (政务微信's own host, or a proxy).

One access token per app, shared by every process through the database exactly as the WeChat
channel's (``handlers.wechat.api.WeChatApi``, whose locking and refresh this class inherits): it is
stored in ``wechat_access_token`` under ``wecom:<corp id>:<agent id>``, only ``gettoken`` differs.
A token WeCom refuses (40014, 42001) is marked expired and the call tried once more.

Endpoints: ``auth/getuserinfo`` (the web console's 企业微信登录: a login code to the member's userid),
``message/send`` (text, image and button-card messages, with ``enable_duplicate_check``),
``message/update_template_card`` (a pressed card's button greyed out with the choice),
``department/list``, ``user/list_id`` and ``user/get`` (the directory sync), ``menu/create``
and ``media/upload`` (a digest's chart sent as an image). Calls are synchronous: the CLI uses them
as they are, the outbox worker's transport runs them in a thread. The web process's reply pump sends
its callbacks' answers with ``send_async`` and ``update_template_card_async`` on the event loop, with
aiohttp: no thread per call, and the token from this process's copy (the database is asked, in a
thread, only when the copy is due for renewal). aiohttp rather than httpx's async client there: a
call costs about 0.26 ms of CPU against httpx's 0.91 (and 0.56 for its synchronous client), measured
on loopback in one run, and the pump's calls share the CPU with the callbacks being answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, Callable, Iterator

import aiohttp
import httpx
from sqlalchemy.engine import Engine as DbEngine

from bot.config import Settings
from storage.db import utcnow as system_clock
from handlers.wechat.api import REFRESH_MARGIN, TOKEN_ERRORS, WeChatApi, WeChatApiError, _json

log = logging.getLogger(__name__)

WeComApiError = WeChatApiError  # the same shape: errcode and errmsg from the JSON, or the HTTP status
NOT_A_MEMBER = 81013  # every userid invalid or outside the app's visible range
INVALID_CODE = 40029  # a login code invalid, spent or expired


_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _json_bytes(status: int, raw: bytes) -> dict[str, Any]:
    """``handlers.wechat.api._json`` for a body read by aiohttp."""
    if status >= 400:
        raise WeComApiError(None, raw[:200].decode(errors="replace"), status=status)
    try:
        data = json.loads(raw)
    except ValueError:
        raise WeComApiError(None, "not JSON", status=status) from None
    if not isinstance(data, dict):
        raise WeComApiError(None, "not a JSON object", status=status)
    return data


def token_key(settings: Settings) -> str:
    """The app's row in the shared token table."""
    return f"wecom:{settings.wecom_corp_id}:{settings.wecom_agent_id}"[:40]


class WeComApi(WeChatApi):
    """One WeCom app (自建应用): messages, cards, the directory, the menu, media."""

    def __init__(self, settings: Settings, db: DbEngine, *, clock: Callable[[], Any] = system_clock,
                 http: httpx.Client | None = None, timeout: float = 10.0):
        self.base = settings.wecom_api_base_url.rstrip("/")
        self.app_id = token_key(settings)
        self.corp_id = settings.wecom_corp_id or ""
        self.agent_id = int(settings.wecom_agent_id or 0)
        self._secret = settings.wecom_secret.get_secret_value() if settings.wecom_secret else ""
        self.settings = settings
        self.db, self.clock = db, clock
        self.http = http or httpx.Client(timeout=timeout)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None  # the reply pump's, on the app's loop
        self._copy = None
        self._lock = threading.Lock()

    # -- messages ------------------------------------------------------------------------------

    def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """message/send; a recipient WeCom names invalid is a ``WeComApiError`` with NOT_A_MEMBER."""
        data = self.call("/cgi-bin/message/send", body)
        invalid = str(data.get("invaliduser") or "")
        if invalid:
            raise WeComApiError(NOT_A_MEMBER, f"invaliduser {invalid}")
        return data

    def update_template_card(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("/cgi-bin/message/update_template_card", body)

    async def send_async(self, body: dict[str, Any]) -> dict[str, Any]:
        """``send`` on the event loop."""
        data = await self._call_async("/cgi-bin/message/send", body)
        invalid = str(data.get("invaliduser") or "")
        if invalid:
            raise WeComApiError(NOT_A_MEMBER, f"invaliduser {invalid}")
        return data

    async def update_template_card_async(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call_async("/cgi-bin/message/update_template_card", body)

    def upload_media(self, kind: str, filename: str, content: bytes, content_type: str) -> str:
        """A temporary media file (3 days); its media_id."""
        data = self._request("POST", "/cgi-bin/media/upload", params={"type": kind},
                             files={"media": (filename, content, content_type)})
        return str(data["media_id"])

    def create_menu(self, buttons: list[dict[str, Any]]) -> None:
        self._request("POST", "/cgi-bin/menu/create", params={"agentid": str(self.agent_id)},
                      content=json.dumps({"button": buttons}, ensure_ascii=False).encode())

    # -- web login -------------------------------------------------------------------------------

    def login_userid(self, code: str) -> str | None:
        """The userid of the member WeCom gave this login code to (valid five minutes, once); None for
        someone outside the organisation (WeCom answers an openid). Raises ``WeComApiError``, errcode
        ``INVALID_CODE`` for a code invalid, spent or expired. Older private deployments know only the
        older name ``user/getuserinfo`` (answering ``UserId``): asked when the first is not there."""
        try:
            data = self._request("GET", "/cgi-bin/auth/getuserinfo", params={"code": code})
        except WeComApiError as exc:
            if exc.errcode is not None or exc.status != 404:
                raise
            data = self._request("GET", "/cgi-bin/user/getuserinfo", params={"code": code})
        return str(data.get("userid") or data.get("UserId") or "") or None

    # -- the directory --------------------------------------------------------------------------

    def departments(self) -> list[dict[str, Any]]:
        """Every department within the app's visible range: id, name, parentid."""
        return list(self._request("GET", "/cgi-bin/department/list").get("department") or [])

    def member_ids(self) -> Iterator[str]:
        """Every member's userid within the visible range, page by page (user/list_id)."""
        cursor = ""
        while True:
            data = self.call("/cgi-bin/user/list_id", {"cursor": cursor, "limit": 10000} if cursor else {"limit": 10000})
            for item in data.get("dept_user") or []:
                yield str(item["userid"])
            cursor = str(data.get("next_cursor") or "")
            if not cursor:
                return

    def member(self, userid: str) -> dict[str, Any]:
        """user/get: name, mobile (where the app may see it), department ids."""
        return self._request("GET", "/cgi-bin/user/get", params={"userid": userid})

    # -- calls -------------------------------------------------------------------------------

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, content=json.dumps(payload, ensure_ascii=False).encode())

    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None, content: bytes | None = None,
                 files: dict | None = None) -> dict[str, Any]:
        """One call with the access token; raises ``WeComApiError`` unless WeCom says errcode 0."""
        for attempt in (1, 2):
            token = self.access_token()
            query = {**(params or {}), "access_token": token}
            if method == "GET":
                response = self.http.get(f"{self.base}{path}", params=query)
            elif files is not None:
                response = self.http.post(f"{self.base}{path}", params=query, files=files)
            else:
                response = self.http.post(f"{self.base}{path}", params=query, content=content,
                                          headers={"Content-Type": "application/json; charset=utf-8"})
            data = _json(response)
            code = int(data.get("errcode") or 0)
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("wecom token rejected (%s); refreshing", code)
                self._expire(token)
                continue
            if code != 0:
                raise WeComApiError(code, str(data.get("errmsg", "")))
            return data
        raise AssertionError("unreachable")

    async def _call_async(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``call`` on the event loop: the same token handling, the same errors; a network failure is
        a ``WeComApiError`` with no errcode and status 599 (the outbox tries it again)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        content = json.dumps(payload, ensure_ascii=False).encode()
        for attempt in (1, 2):
            token = self._fresh_copy() or await asyncio.to_thread(self.access_token)
            try:
                async with self._session.post(f"{self.base}{path}", params={"access_token": token}, data=content,
                                              headers=_JSON) as response:
                    status, raw = response.status, await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise WeComApiError(None, f"network: {type(exc).__name__}: {exc}"[:200], status=599) from None
            data = _json_bytes(status, raw)
            code = int(data.get("errcode") or 0)
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("wecom token rejected (%s); refreshing", code)
                await asyncio.to_thread(self._expire, token)
                continue
            if code != 0:
                raise WeComApiError(code, str(data.get("errmsg", "")))
            return data
        raise AssertionError("unreachable")

    def _fresh_copy(self) -> str | None:
        """This process's token when it has more than the refresh margin to live, without the database."""
        copy = self._copy
        return copy[0] if copy is not None and copy[1] - REFRESH_MARGIN > self.clock() else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.close()

    def _fetch_token(self) -> tuple[str, int]:
        response = self.http.get(f"{self.base}/cgi-bin/gettoken", params={"corpid": self.corp_id,
                                                                          "corpsecret": self._secret})
        data = _json(response)
        if int(data.get("errcode") or 0) != 0 or not data.get("access_token"):
            raise WeComApiError(int(data.get("errcode") or -1), str(data.get("errmsg", "no access_token")))
        return str(data["access_token"]), int(data.get("expires_in") or 7200)
