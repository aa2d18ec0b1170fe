"""The WeChat API calls the bot makes, over httpx, with one access token shared through the database.

Why not wechatpy's client: it is synchronous ``requests`` with a per-process token cache, every
process refreshes on its own (and each refresh invalidates the others' tokens after five minutes),
its automatic retry on an expired token refreshes in every process at once, and its base URL is a
class attribute. The bot needs six endpoints; they are here, against WECHAT_API_BASE_URL (an
egress proxy, or the tests' stand-in).

The token lives in the ``wechat_access_token`` row of the app id. ``access_token`` returns the
process's copy while it has more than ``REFRESH_MARGIN`` left, else the stored one if that is
fresh; otherwise it locks the row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every
transaction begins IMMEDIATE, which is the lock), looks again — another process may have refreshed
while this one waited — and only then fetches a new token, so one process refreshes at a time and
the others use its token. A token WeChat rejects (40001, 40014, 42001) is marked expired only
while it is still the stored one, and the call is tried once more.

Calls are synchronous (the CLI uses them as they are; the outbox transport runs them in a thread).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable

import httpx
from sqlalchemy import update
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import select

from bot.config import Settings
from storage.db import utcnow as system_clock
from bot.errors import ServiceError
from storage.db import insert_ignore, session_scope
from storage.models import WeChatAccessToken

log = logging.getLogger(__name__)

TOKEN_ERRORS = {40001, 40014, 42001}  # invalid credential, invalid token, expired token
REFRESH_MARGIN = timedelta(minutes=5)


class WeChatApiError(ServiceError):
    """WeChat answered with an error: ``errcode`` from its JSON, or ``status`` for an HTTP error."""

    def __init__(self, errcode: int | None, errmsg: str = "", status: int = 200):
        super().__init__(f"{errcode if errcode is not None else 'HTTP ' + str(status)}: {errmsg}")
        self.errcode, self.errmsg, self.status = errcode, errmsg, status


class WeChatApi:
    """The account's API: customer-service and template messages, scene QR codes, the custom menu, and
    the pictures users send (``media``)."""

    def __init__(self, settings: Settings, db: DbEngine, *, clock: Callable[[], datetime] = system_clock,
                 http: httpx.Client | None = None, timeout: float = 10.0):
        self.base = settings.wechat_api_base_url.rstrip("/")
        self.app_id = settings.wechat_app_id or ""
        self._secret = settings.wechat_app_secret.get_secret_value() if settings.wechat_app_secret else ""
        self.db, self.clock = db, clock
        self.http = http or httpx.Client(timeout=timeout)
        self._copy: tuple[str, datetime] | None = None  # this process's copy of the stored token
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # -- messages, QR codes, menu ------------------------------------------------------------------

    def send_text(self, openid: str, content: str) -> None:
        """A customer-service text message (only within 48 hours of the user's last interaction)."""
        self.call("/cgi-bin/message/custom/send", {"touser": openid, "msgtype": "text", "text": {"content": content}})

    def send_template(self, openid: str, template_id: str, data: dict[str, dict[str, str]]) -> None:
        """A template message; ``data`` maps the template's fields to {"value": ...}."""
        self.call("/cgi-bin/message/template/send", {"touser": openid, "template_id": template_id, "data": data})

    def create_scene_qr(self, scene: str) -> dict[str, Any]:
        """A permanent QR code with a string scene (QR_LIMIT_STR_SCENE); returns ticket and url."""
        return self.call("/cgi-bin/qrcode/create", {"action_name": "QR_LIMIT_STR_SCENE",
                                                    "action_info": {"scene": {"scene_str": scene}}})

    def create_menu(self, buttons: list[dict[str, Any]]) -> None:
        self.call("/cgi-bin/menu/create", {"button": buttons})

    def media(self, media_id: str, limit: int) -> bytes:
        """A temporary media file (the picture a user sent) by ``media/get``, at most ``limit`` bytes; the
        same call on WeChat and WeCom. ``WeChatApiError`` for an error answer or a file too large."""
        for attempt in (1, 2):
            token = self.access_token()
            with self.http.stream("GET", f"{self.base}/cgi-bin/media/get",
                                  params={"access_token": token, "media_id": media_id}) as response:
                if response.status_code >= 400:
                    raise WeChatApiError(None, "media/get failed", status=response.status_code)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise WeChatApiError(None, "media too large", status=response.status_code)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise WeChatApiError(None, "media too large", status=response.status_code)
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in ("application/json", "text/plain"):
                return bytes(body)
            try:  # an error comes as JSON instead of the file
                data = json.loads(bytes(body))
            except ValueError:
                raise WeChatApiError(None, "media/get: not a file and not JSON") from None
            code = int(data.get("errcode") or 0) if isinstance(data, dict) else -1
            if code in TOKEN_ERRORS and attempt == 1:
                self._expire(token)
                continue
            raise WeChatApiError(code, str(data.get("errmsg", "")) if isinstance(data, dict) else "")
        raise AssertionError("unreachable")

    # -- calls ---------------------------------------------------------------------------------

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POSTs JSON with the access token; raises ``WeChatApiError`` unless WeChat says errcode 0."""
        body = json.dumps(payload, ensure_ascii=False).encode()  # WeChat shows \\u escapes literally in places
        for attempt in (1, 2):
            token = self.access_token()
            response = self.http.post(f"{self.base}{path}", params={"access_token": token}, content=body,
                                      headers={"Content-Type": "application/json; charset=utf-8"})
            data = _json(response)
            code = int(data.get("errcode") or 0)
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("wechat token rejected (%s); refreshing", code)
                self._expire(token)
                continue
            if code != 0:
                raise WeChatApiError(code, str(data.get("errmsg", "")))
            return data
        raise AssertionError("unreachable")

    # -- the shared access token -----------------------------------------------------------------

    def access_token(self) -> str:
        """A token with more than REFRESH_MARGIN to live: this process's copy, the stored one, or a new one."""
        copy = self._copy
        if copy is not None and copy[1] - REFRESH_MARGIN > self.clock():
            return copy[0]
        with self._lock:  # one thread per process goes to the database
            copy = self._copy
            if copy is None or copy[1] - REFRESH_MARGIN <= self.clock():
                copy = self._copy = self._stored_or_refreshed()
            return copy[0]

    def _fresh(self, row: WeChatAccessToken | None) -> bool:
        return (row is not None and row.access_token is not None and row.expires_at is not None
                and row.expires_at - REFRESH_MARGIN > self.clock())

    def _stored_or_refreshed(self) -> tuple[str, datetime]:
        with session_scope(self.db) as session:
            row = session.get(WeChatAccessToken, self.app_id)
            if self._fresh(row):
                return row.access_token, row.expires_at
        with session_scope(self.db) as session:
            insert_ignore(session, WeChatAccessToken, {"app_id": self.app_id})
            row = session.exec(select(WeChatAccessToken).where(WeChatAccessToken.app_id == self.app_id)
                               .with_for_update().execution_options(populate_existing=True)).one()
            if self._fresh(row):  # refreshed by another process while this one waited for the lock
                return row.access_token, row.expires_at
            token, lifetime = self._fetch_token()  # under the lock: the others wait for this one
            now = self.clock()
            row.access_token, row.expires_at, row.refreshed_at = token, now + timedelta(seconds=lifetime), now
            session.add(row)
            log.info("wechat access token refreshed, valid %d s", lifetime)
            return row.access_token, row.expires_at

    def _fetch_token(self) -> tuple[str, int]:
        response = self.http.get(f"{self.base}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": self.app_id, "secret": self._secret})
        data = _json(response)
        if not data.get("access_token"):
            raise WeChatApiError(int(data.get("errcode") or -1), str(data.get("errmsg", "no access_token")))
        return str(data["access_token"]), int(data.get("expires_in") or 7200)

    def _expire(self, token: str) -> None:
        """Marks ``token`` expired, unless another process has stored a newer one already."""
        with self._lock:
            if self._copy is not None and self._copy[0] == token:
                self._copy = None
        with session_scope(self.db) as session:
            session.execute(update(WeChatAccessToken)
                            .where(WeChatAccessToken.app_id == self.app_id, WeChatAccessToken.access_token == token)
                            .values(expires_at=self.clock()).execution_options(synchronize_session=False))


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise WeChatApiError(None, response.text[:200], status=response.status_code)
    try:
        data = response.json()
    except ValueError:
        raise WeChatApiError(None, "not JSON", status=response.status_code) from None
    if not isinstance(data, dict):
        raise WeChatApiError(None, "not a JSON object", status=response.status_code)
    return data
