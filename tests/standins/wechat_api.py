"""Local stand-in for WeChat: the API the bot calls, and the server that pushes messages to the bot.

Two halves, both speaking the published formats over real HTTP on loopback:

* ``WeChatStandin`` serves the API endpoints the bot uses — ``/cgi-bin/token``,
  ``message/custom/send``, ``message/template/send``, ``qrcode/create``, ``menu/create``, ``media/get``
  (the pictures followers sent, as ``Follower.image(content=...)`` registered them) — checks
  what it gets as WeChat does (app id and secret, access token, field shapes and sizes), records
  every call, and fails on demand (``fail_next``, ``expire_tokens``, ``out_of_window``).
* ``Follower`` is a WeChat user as the bot's webhook sees them: it builds the XML WeChat pushes
  (text, image, location, subscribe with ``qrscene_``, SCAN, CLICK), signs it and, in safe mode,
  encrypts it — with its own AES code written from the published algorithm, not with wechatpy, so
  the bot's use of wechatpy is checked against the format, not against itself — posts it to the
  webhook and decrypts the answer.

Typical use::

    with WeChatStandin(app_id=APP_ID, app_secret=SECRET, token=TOKEN, aes_key=AES) as wx:
        wx.webhook_url = served.url + "/wechat"
        user = wx.follower("o6_bmjrPTlm6_2sgVt7hMZOPfL2M")
        assert "已绑定" in user.text("绑定 ABCD2345").content
        wx.calls_of("/cgi-bin/message/custom/send")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import ServedApp

ACCOUNT = "gh_7f083739789a"  # the account's original id (原始ID), ToUserName of every message
BLOCK = 32  # WeChat pads to 32-byte blocks (PKCS#7 with k = 32)


# -- the published crypto, written out ----------------------------------------------------------

def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def aes_encrypt(aes_key: str, plain: bytes, app_id: str) -> str:
    """random(16) + len(4, network order) + msg + appid, PKCS#7 to 32, AES-256-CBC, IV = key[:16], Base64."""
    key = base64.b64decode(aes_key + "=")
    raw = os.urandom(16) + struct.pack(">I", len(plain)) + plain + app_id.encode()
    pad = BLOCK - len(raw) % BLOCK
    raw += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(raw) + encryptor.finalize()).decode()


def aes_decrypt(aes_key: str, encrypted: str) -> tuple[bytes, str]:
    """The message and the app id inside."""
    key = base64.b64decode(aes_key + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    raw = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    raw = raw[:-raw[-1]]
    length = struct.unpack(">I", raw[16:20])[0]
    return raw[20:20 + length], raw[20 + length:].decode()


def cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def message_xml(fields: dict[str, str | int]) -> str:
    """A message as WeChat pushes it: one element per field, strings in CDATA, numbers bare."""
    body = "".join(f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}>{cdata(v)}</{k}>" for k, v in fields.items())
    return f"<xml>{body}</xml>"


# -- the API ------------------------------------------------------------------------------------

@dataclass
class Call:
    path: str
    params: dict[str, str]
    body: dict[str, Any] | None
    answer: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class _Failure:
    errcode: int | None
    errmsg: str
    status: int


class WeChatStandin:
    """WeChat's API and its message push, on 127.0.0.1."""

    def __init__(self, *, app_id: str, app_secret: str, token: str, aes_key: str | None = None,
                 clock: Callable[[], float] = time.time, qr_limit: int = 100_000):
        self.app_id, self.app_secret, self.token, self.aes_key = app_id, app_secret, token, aes_key
        self.clock = clock
        self.qr_limit = qr_limit
        self.webhook_url: str | None = None
        self.calls: list[Call] = []
        self.tokens: set[str] = set()
        self.token_fetches = 0
        self.token_delay = 0.0  # seconds /cgi-bin/token takes, to make refreshes overlap
        self.menu: list[dict] | None = None
        self.out_of_window: set[str] = set()  # openids whose 48 hours are over, as WeChat sees it
        self.media: dict[str, bytes] = {}  # media_id -> the picture a follower sent (temporary media)
        self._failures: dict[str, list[_Failure]] = {}
        self._counter = 0
        self._lock = threading.Lock()
        self._served = ServedApp(Starlette(routes=[
            Route("/cgi-bin/token", self._token, methods=["GET"]),
            Route("/cgi-bin/message/custom/send", self._custom_send, methods=["POST"]),
            Route("/cgi-bin/message/template/send", self._template_send, methods=["POST"]),
            Route("/cgi-bin/qrcode/create", self._qrcode_create, methods=["POST"]),
            Route("/cgi-bin/menu/create", self._menu_create, methods=["POST"]),
            Route("/cgi-bin/media/get", self._media_get, methods=["GET"]),
        ]))

    # -- life ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._served.url

    def start(self) -> "WeChatStandin":
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop()

    def __enter__(self) -> "WeChatStandin":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -------------------------------------------------------------------------------

    def fail_next(self, path: str, *, errcode: int | None = None, errmsg: str = "failed on demand",
                  status: int = 200, times: int = 1) -> None:
        """The next ``times`` calls of ``path`` fail: with an errcode, or with an HTTP ``status``."""
        with self._lock:
            self._failures.setdefault(path, []).extend([_Failure(errcode, errmsg, status)] * times)

    def expire_tokens(self) -> None:
        """Every access token issued so far is refused from now on (42001)."""
        with self._lock:
            self.tokens.clear()

    def calls_of(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path and c.status == 200 and not c.answer.get("errcode")]

    # -- endpoints -----------------------------------------------------------------------------

    def _record(self, path: str, request: Request, body: dict | None, answer: dict, status: int = 200) -> Response:
        with self._lock:
            self.calls.append(Call(path, dict(request.query_params), body, answer, status))
        return JSONResponse(answer, status_code=status)

    def _injected(self, path: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.pop(0) if queue else None

    async def _token(self, request: Request) -> Response:
        query = request.query_params
        failure = self._injected("/cgi-bin/token")
        if failure is not None:
            return self._record("/cgi-bin/token", request, None, _error(failure), failure.status)
        if query.get("grant_type") != "client_credential" or query.get("appid") != self.app_id:
            return self._record("/cgi-bin/token", request, None, {"errcode": 40013, "errmsg": "invalid appid"})
        if query.get("secret") != self.app_secret:
            return self._record("/cgi-bin/token", request, None, {"errcode": 40125, "errmsg": "invalid appsecret"})
        if self.token_delay:
            time.sleep(self.token_delay)  # uvicorn's thread: the other requests wait, as a slow WeChat would
        with self._lock:
            self.token_fetches += 1
            issued = f"ACCESS_TOKEN_{self.token_fetches}_{secrets.token_hex(8)}"
            self.tokens.add(issued)
        return self._record("/cgi-bin/token", request, None, {"access_token": issued, "expires_in": 7200})

    async def _api(self, path: str, request: Request, check: Callable[[dict], dict]) -> Response:
        failure = self._injected(path)
        raw = await request.body()
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._record(path, request, None, {"errcode": 47001, "errmsg": "data format error"})
        if failure is not None:
            return self._record(path, request, body, _error(failure), failure.status)
        token = request.query_params.get("access_token", "")
        with self._lock:
            known = token in self.tokens
        if not token:
            return self._record(path, request, body, {"errcode": 41001, "errmsg": "access_token missing"})
        if not known:
            return self._record(path, request, body, {"errcode": 42001, "errmsg": "access_token expired"})
        return self._record(path, request, body, check(body))

    async def _custom_send(self, request: Request) -> Response:
        def check(body: dict) -> dict:
            if body.get("msgtype") != "text" or not isinstance(body.get("text"), dict):
                return {"errcode": 40008, "errmsg": "invalid message type"}
            content = body["text"].get("content") or ""
            if not content:
                return {"errcode": 44003, "errmsg": "empty news data"}
            if len(content.encode()) > 2048:
                return {"errcode": 45002, "errmsg": "content size out of limit"}
            if body.get("touser") in self.out_of_window:
                return {"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"}
            return {"errcode": 0, "errmsg": "ok"}
        return await self._api("/cgi-bin/message/custom/send", request, check)

    async def _template_send(self, request: Request) -> Response:
        def check(body: dict) -> dict:
            data = body.get("data")
            if not body.get("touser") or not body.get("template_id"):
                return {"errcode": 40037, "errmsg": "invalid template_id"}
            if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
                return {"errcode": 47001, "errmsg": "data format error"}
            for name, value in data.items():
                if name.startswith("thing") and len(value["value"]) > 20:
                    return {"errcode": 47003, "errmsg": f"argument invalid! data.{name}.value too long"}
            with self._lock:
                self._counter += 1
                return {"errcode": 0, "errmsg": "ok", "msgid": 200228332000 + self._counter}
        return await self._api("/cgi-bin/message/template/send", request, check)

    async def _qrcode_create(self, request: Request) -> Response:
        def check(body: dict) -> dict:
            scene = ((body.get("action_info") or {}).get("scene") or {}).get("scene_str")
            if body.get("action_name") != "QR_LIMIT_STR_SCENE" or not isinstance(scene, str) or not 1 <= len(scene) <= 64:
                return {"errcode": 40053, "errmsg": "invalid action info"}
            with self._lock:
                made = sum(1 for c in self.calls if c.path == "/cgi-bin/qrcode/create" and c.answer.get("ticket"))
                if made >= self.qr_limit:
                    return {"errcode": 45028, "errmsg": "has no masssend quota"}
                self._counter += 1
                n = self._counter
            return {"ticket": f"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL{n:06d}", "url": f"http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI{n:04d}"}
        return await self._api("/cgi-bin/qrcode/create", request, check)

    async def _menu_create(self, request: Request) -> Response:
        def check(body: dict) -> dict:
            buttons = body.get("button")
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
                return {"errcode": 40016, "errmsg": "invalid button size"}
            for button in buttons:
                if len(button.get("name", "").encode()) > 16:
                    return {"errcode": 40018, "errmsg": "invalid button name size"}
                subs = button.get("sub_button")
                if subs is not None:
                    if not 1 <= len(subs) <= 5:
                        return {"errcode": 40023, "errmsg": "invalid sub button size"}
                    if any(len(s.get("name", "").encode()) > 60 or s.get("type") != "click" or not s.get("key")
                           for s in subs):
                        return {"errcode": 40019, "errmsg": "invalid button key"}
                elif button.get("type") != "click" or not button.get("key"):
                    return {"errcode": 40019, "errmsg": "invalid button key"}
            self.menu = buttons
            return {"errcode": 0, "errmsg": "ok"}
        return await self._api("/cgi-bin/menu/create", request, check)

    async def _media_get(self, request: Request) -> Response:
        """A temporary media file: the bytes (image/jpeg), or a JSON error as WeChat answers one."""
        path = "/cgi-bin/media/get"
        failure = self._injected(path)
        if failure is not None:
            return self._record(path, request, None, _error(failure), failure.status)
        token = request.query_params.get("access_token", "")
        with self._lock:
            known = token in self.tokens
            content = self.media.get(request.query_params.get("media_id", ""))
        if not token:
            return self._record(path, request, None, {"errcode": 41001, "errmsg": "access_token missing"})
        if not known:
            return self._record(path, request, None, {"errcode": 42001, "errmsg": "access_token expired"})
        if content is None:
            return self._record(path, request, None, {"errcode": 40007, "errmsg": "invalid media_id"})
        with self._lock:
            self.calls.append(Call(path, dict(request.query_params), None, {"bytes": len(content)}))
        return Response(content, media_type="image/jpeg",
                        headers={"Content-Disposition": f'attachment; filename="{request.query_params["media_id"]}.jpg"'})

    # -- the push side ---------------------------------------------------------------------------

    def follower(self, openid: str) -> "Follower":
        return Follower(self, openid)

    def post(self, xml: str, *, timestamp: int | None = None, nonce: str | None = None,
             signature: str | None = None, app_id: str | None = None, encrypt: bool | None = None,
             content: bytes | None = None) -> httpx.Response:
        """POSTs a message to the webhook as WeChat does: signed, and encrypted in safe mode.
        The keyword arguments forge what a test wants forged."""
        assert self.webhook_url, "set webhook_url first"
        timestamp = int(self.clock()) if timestamp is None else timestamp
        nonce = nonce or str(secrets.randbelow(10 ** 9))
        params = {"timestamp": str(timestamp), "nonce": nonce, "openid": "o"}
        params["signature"] = signature or sign(self.token, str(timestamp), nonce)
        encrypt = self.aes_key is not None if encrypt is None else encrypt
        if content is None and encrypt:
            encrypted = aes_encrypt(self.aes_key, xml.encode(), app_id or self.app_id)
            params["encrypt_type"] = "aes"
            params["msg_signature"] = sign(self.token, str(timestamp), nonce, encrypted)
            content = f"<xml><ToUserName>{cdata(ACCOUNT)}</ToUserName><Encrypt>{cdata(encrypted)}</Encrypt></xml>".encode()
        elif content is None:
            content = xml.encode()
        return httpx.post(self.webhook_url, params=params, content=content,
                          headers={"Content-Type": "text/xml"}, timeout=30)

    def verify(self, echostr: str, *, timestamp: int | None = None, signature: str | None = None) -> httpx.Response:
        """The GET WeChat sends when the server URL is saved in the account's settings."""
        timestamp = int(self.clock()) if timestamp is None else timestamp
        nonce = "1514711492"
        params = {"signature": signature or sign(self.token, str(timestamp), nonce), "timestamp": str(timestamp),
                  "nonce": nonce, "echostr": echostr}
        return httpx.get(self.webhook_url, params=params, timeout=10)

    def read_reply(self, response: httpx.Response) -> "Answer":
        """The reply in a webhook response, decrypted and checked as WeChat would."""
        assert response.status_code == 200, (response.status_code, response.text)
        if response.text in ("success", ""):
            return Answer(None, {}, response.text)
        root = ET.fromstring(response.text)
        fields = {child.tag: child.text or "" for child in root}
        if "Encrypt" in fields:
            assert self.aes_key is not None, "an encrypted reply in plain mode"
            assert fields["MsgSignature"] == sign(self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
            plain, app_id = aes_decrypt(self.aes_key, fields["Encrypt"])
            assert app_id == self.app_id
            xml = plain.decode()
            root = ET.fromstring(xml)
            fields = {child.tag: child.text or "" for child in root}
        else:
            xml = response.text
        tags = sorted(child.tag for child in root)  # exactly the fields of a text reply: nothing injected
        assert tags == ["Content", "CreateTime", "FromUserName", "MsgType", "ToUserName"], tags
        assert fields["MsgType"] == "text" and fields["FromUserName"] == ACCOUNT
        return Answer(fields.get("Content"), fields, xml)


@dataclass
class Answer:
    content: str | None  # None: "success" (no reply)
    fields: dict[str, str]
    xml: str


class Follower:
    """A WeChat user writing to the account; each method returns the bot's answer."""

    def __init__(self, standin: WeChatStandin, openid: str):
        self.standin, self.openid = standin, openid
        self._last_time = 0

    def _time(self) -> int:
        # Events are told apart by FromUserName + CreateTime: a user acts at most once a second.
        now = max(int(self.standin.clock()), self._last_time + 1)
        self._last_time = now
        return now

    def _fields(self, msg_type: str, **more: str | int) -> dict[str, str | int]:
        return {"ToUserName": ACCOUNT, "FromUserName": self.openid, "CreateTime": self._time(), "MsgType": msg_type,
                **more}

    def xml_text(self, content: str, msg_id: int | None = None) -> str:
        return message_xml(self._fields("text", Content=content, MsgId=msg_id or _msg_id()))

    def send(self, xml: str, **post: Any) -> Answer:
        return self.standin.read_reply(self.standin.post(xml, **post))

    def text(self, content: str) -> Answer:
        return self.send(self.xml_text(content))

    def image(self, media_id: str = "MEDIA_ID_1", content: bytes | None = None) -> Answer:
        """A picture; with ``content``, the stand-in serves it at media/get under ``media_id``."""
        if content is not None:
            with self.standin._lock:
                self.standin.media[media_id] = content
        return self.send(message_xml(self._fields("image", PicUrl="http://mmbiz.qpic.cn/x", MediaId=media_id,
                                                  MsgId=_msg_id())))

    def location(self, lat: float, lon: float) -> Answer:
        return self.send(message_xml(self._fields("location", Location_X=str(lat), Location_Y=str(lon), Scale=20,
                                                  Label="位置信息", MsgId=_msg_id())))

    def subscribe(self, scene: str | None = None) -> Answer:
        extra = {"EventKey": f"qrscene_{scene}", "Ticket": "TICKET"} if scene else {"EventKey": ""}
        return self.send(message_xml(self._fields("event", Event="subscribe", **extra)))

    def scan(self, scene: str) -> Answer:
        return self.send(message_xml(self._fields("event", Event="SCAN", EventKey=scene, Ticket="TICKET")))

    def click(self, key: str) -> Answer:
        return self.send(message_xml(self._fields("event", Event="CLICK", EventKey=key)))


_msg_ids = iter(range(6_054_768_590_064_713_728, 2 ** 63))
_msg_lock = threading.Lock()


def _msg_id() -> int:
    with _msg_lock:
        return next(_msg_ids)


def _error(failure: _Failure) -> dict:
    if failure.errcode is None:
        return {"error": failure.errmsg}
    return {"errcode": failure.errcode, "errmsg": failure.errmsg}
