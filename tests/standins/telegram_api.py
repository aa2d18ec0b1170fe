"""Local stand-in for the Telegram Bot API, speaking the real HTTP wire protocol on loopback.

A real python-telegram-bot ``Application`` talks to it exactly as to api.telegram.org when
built with ``base_url=f"{standin.url}/bot"`` and ``base_file_url=f"{standin.url}/file/bot"``.

Typical use::

    with TelegramStandin(TOKEN) as tg:
        app = (ApplicationBuilder().token(TOKEN).base_url(f"{tg.url}/bot")
               .base_file_url(f"{tg.url}/file/bot").build())
        ...start polling...
        user = tg.user(42, first_name="张三")
        replies = user.text_wait("hi")        # from a thread other than the bot's loop

Thread model: the HTTP side runs in uvicorn's thread; tests drive simulated users from their
own thread. All shared state sits behind one lock; long polls poll that state in 10 ms steps.
Blocking helpers (``*_wait``, ``wait_idle``, webhook delivery) must not be called from the
event loop the bot runs on: use ``await asyncio.to_thread(user.text_wait, "hi")`` there.
"""

from __future__ import annotations

import asyncio
import copy
import html
import itertools
import json
import math
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import ServedApp

# Real tokens are "<bot id>:<35 chars>"; PTB does not check the shape, Telegram does.
TEST_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"
_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")

# Marks "use the secret recorded by setWebhook" in deliver(); None means "send no header".
CONFIGURED = object()
# Marks "the sender's own id" in SimUser.contact(); None means "no user_id in the contact".
OWN_ID = object()

# Field types for form-encoded parameters: PTB sends every value as a string (ints as "42",
# bools as "true", objects as JSON text), so Telegram's own coercion is mimicked per field.
_INT_FIELDS = {
    "chat_id", "from_chat_id", "message_id", "offset", "limit", "timeout", "max_connections",
    "reply_to_message_id", "message_thread_id", "user_id", "cache_time", "until_date",
    "duration", "width", "height", "live_period", "heading", "proximity_alert_radius",
}
_FLOAT_FIELDS = {"latitude", "longitude", "horizontal_accuracy"}
_BOOL_FIELDS = {
    "drop_pending_updates", "disable_notification", "protect_content", "show_alert",
    "disable_web_page_preview", "allow_sending_without_reply", "has_spoiler",
    "disable_content_type_detection", "allow_paid_broadcast", "show_caption_above_media",
    "is_personal", "is_big",
}
# Free text that must stay text even when it happens to look like JSON or a number.
_TEXT_FIELDS = {
    "text", "caption", "description", "short_description", "title", "query", "name",
    "secret_token", "data", "url", "photo", "document", "file_id", "inline_message_id",
    "callback_query_id", "parse_mode", "action", "language_code", "address",
}

# Methods counted by enforce_limits(): the ones that put or change a message in a chat.
_RATE_LIMITED = {
    "sendMessage", "sendPhoto", "sendDocument", "editMessageText",
    "editMessageReplyMarkup", "editMessageCaption",
}
_CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice",
    "upload_voice", "upload_document", "choose_sticker", "find_location",
    "record_video_note", "upload_video_note",
}
_INLINE_BUTTON_ACTIONS = {
    "callback_data", "url", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
    "copy_text", "callback_game", "pay",
}
_DEFAULT_ERRORS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
# Smallest valid JPEG-ish payload for simulated user photos that a test did not supply.
_FAKE_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 28 + b"\xff\xd9"


@dataclass
class Call:
    """One HTTP request to the Bot API, in arrival order."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # HTTP status answered; None while in flight
    response: dict[str, Any] | None = None
    at: float = field(default_factory=time.monotonic)
    via_webhook: bool = False  # the method came in the body of a webhook answer, not as a request


@dataclass
class WebhookDelivery:
    """One POST of an update to the webhook URL."""

    update: dict[str, Any]
    url: str
    secret: str | None
    status: int | None
    error: str | None = None


class ApiError(Exception):
    """An error answer in Telegram's envelope; raise it from a method handler."""

    def __init__(self, error_code: int, description: str | None = None,
                 retry_after: int | None = None, parameters: dict[str, Any] | None = None):
        self.error_code = error_code
        self.description = description or _DEFAULT_ERRORS.get(error_code, "Error")
        self.parameters = dict(parameters or {})
        if retry_after is not None:
            self.parameters["retry_after"] = int(retry_after)
        super().__init__(f"{error_code} {self.description}")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False, "error_code": self.error_code, "description": self.description,
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


class Delivered(dict):
    """The update dict a simulated user produced, plus the webhook answer's HTTP status.

    ``status`` is None when the update was queued for getUpdates instead.
    """

    status: int | None = None


# --------------------------------------------------------------------------- wire parsing


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str) and key not in _TEXT_FIELDS:
            s = value.strip()
            if s[:1] in ("{", "["):
                try:
                    value = json.loads(s)
                except ValueError:
                    pass  # left as text: the method answers "can't parse" like Telegram
            elif key in _INT_FIELDS and re.fullmatch(r"-?\d+", s):
                value = int(s)
            elif key in _FLOAT_FIELDS:
                try:
                    value = float(s)
                except ValueError:
                    pass
            elif key in _BOOL_FIELDS and s.lower() in ("true", "false"):
                value = s.lower() == "true"
        out[key] = value
    return out


def _header_params(header: str) -> dict[str, str]:
    found = {}
    for m in re.finditer(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', header):
        found[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return found


def _parse_multipart(body: bytes, content_type: str):
    """Split multipart/form-data by hand: binary-safe and needs no python-multipart."""
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise bad_request("multipart boundary is missing")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    filenames: dict[str, str] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if name is None:
            continue
        if "filename" in disposition:
            files[name] = data
            filenames[name] = disposition["filename"]
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files, filenames


async def _read_params(request: Request):
    params: dict[str, Any] = dict(request.query_params)
    files: dict[str, bytes] = {}
    filenames: dict[str, str] = {}
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    body = await request.body()
    if body:
        if kind == "application/json":
            try:
                data = json.loads(body)
            except ValueError:
                raise bad_request("can't parse JSON object") from None
            if not isinstance(data, dict):
                raise bad_request("JSON object expected")
            params.update(data)
        elif kind == "multipart/form-data":
            fields, files, filenames = _parse_multipart(body, content_type)
            params.update(fields)
        else:  # Telegram treats anything else as url-encoded, as does PTB's default request
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return _normalise(params), files, filenames


# --------------------------------------------------------------------------- text formatting

_HTML_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "tg-emoji", "code", "pre", "blockquote",
}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(\s[^<>]*)?/?>")


def _render_html(text: str) -> str:
    """Plain text of an HTML-formatted message, failing where Telegram's parser fails."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    while True:
        lt = text.find("<", pos)
        if lt < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:lt])
        offset = len(text[:lt].encode())
        m = _TAG.match(text, lt)
        if not m:
            raise bad_request(f'can\'t parse entities: Unsupported start tag "" at byte offset {offset}')
        closing, name = m.group(1) == "/", m.group(2).lower()
        if closing:
            if not stack or stack[-1] != name:
                raise bad_request(f"can't parse entities: Unexpected end tag at byte offset {offset}")
            stack.pop()
        else:
            if name not in _HTML_TAGS:
                raise bad_request(
                    f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}')
            stack.append(name)
        pos = m.end()
    if stack:
        raise bad_request(
            f'can\'t parse entities: Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return html.unescape("".join(out))


def _render_markdown_v2(text: str) -> str:
    """Plain text of a MarkdownV2 message; rejects unescaped reserved characters like Telegram.

    Approximate on purpose: it strips markup and catches the characters that are never markup
    ('#+-={}.!' and a '>' not opening a quote), the usual cause of real-world 400s.
    """
    out: list[str] = []
    i, n = 0, len(text)
    code = in_url = False
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            if not in_url:
                out.append(text[i + 1])
            i += 2
            continue
        if in_url:
            in_url = ch != ")"
            i += 1
            continue
        if text.startswith("```", i):
            code = not code
            i += 3
            if code:  # language name of a pre block
                while i < n and text[i] not in "\n":
                    i += 1
                i += 1
            continue
        if ch == "`":
            code = not code
            i += 1
            continue
        if code:
            out.append(ch)
            i += 1
            continue
        if text.startswith("](", i):
            in_url = True
            i += 2
            continue
        if ch in "_*~|[]":
            i += 1
            continue
        if ch == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1
            continue
        if ch in "#+-={}.!>()":
            raise bad_request(
                f"can't parse entities: Character '{ch}' is reserved and must be escaped "
                "with the preceding '\\'")
        out.append(ch)
        i += 1
    return "".join(out)


def _render(text: str, parse_mode: str | None) -> str:
    mode = (parse_mode or "").lower()
    if mode == "html":
        return _render_html(text)
    if mode == "markdownv2":
        return _render_markdown_v2(text)
    if mode in ("", "markdown"):
        return text
    raise bad_request("unsupported parse_mode")


def _check_markup(markup: Any) -> dict[str, Any] | None:
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or "text" not in button:
                    raise bad_request("can't parse inline keyboard button: Text must be non-empty")
                if not _INLINE_BUTTON_ACTIONS & button.keys():
                    raise bad_request("can't parse inline keyboard button: "
                                      "Text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
    elif "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request('field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays')
    elif not ({"remove_keyboard", "force_reply"} & markup.keys()):
        raise bad_request("can't parse reply keyboard markup JSON object")
    return markup


def _clone(obj: Any) -> Any:
    return copy.deepcopy(obj)


# --------------------------------------------------------------------------- simulated users


class SimUser:
    """A Telegram user chatting privately with the bot; every action becomes a real Update.

    Actions (text, command, contact, photo, location, press) deliver at once unless
    ``deliver=False`` and return the update as a :class:`Delivered` dict. Their ``*_wait``
    twins deliver, wait until the bot is idle and return what the bot sent to this chat since.
    """

    def __init__(self, standin: "TelegramStandin", user_id: int, first_name: str,
                 last_name: str | None, username: str | None, phone: str | None,
                 language_code: str | None):
        self.standin = standin
        self.id = user_id
        self.first_name = first_name
        self.last_name = last_name
        self.username = username
        self.phone = phone
        self.language_code = language_code

    @property
    def chat_id(self) -> int:
        return self.id

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def as_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat

    # -- building and delivering updates

    def _message(self, **content: Any) -> dict[str, Any]:
        return {
            "message_id": self.standin._next_message_id(self.id),
            "from": self.as_user(),
            "chat": self.as_chat(),
            "date": int(time.time()),
            **content,
        }

    def _send(self, kind: str, payload: dict[str, Any], deliver: bool) -> Delivered:
        update = Delivered({"update_id": self.standin._next_update_id(), kind: payload})
        if kind == "message":
            self.standin._remember_message(payload)
        if deliver:
            update.status = self.standin.deliver(update)
        return update

    def text(self, text: str, *, deliver: bool = True) -> Delivered:
        return self._send("message", self._message(text=text), deliver)

    def command(self, command: str, payload: str | None = None, *,
                deliver: bool = True) -> Delivered:
        command = command if command.startswith("/") else f"/{command}"
        text = f"{command} {payload}" if payload else command
        entity = {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
        return self._send("message", self._message(text=text, entities=[entity]), deliver)

    def contact(self, phone: str | None = None, user_id: Any = OWN_ID, *,
                first_name: str | None = None, deliver: bool = True) -> Delivered:
        """Share a contact; by default the user's own, as a request_contact button does.

        Pass another ``user_id`` (or None for none) to simulate a forwarded/forged contact.
        """
        phone = phone if phone is not None else self.phone
        if phone is None:
            raise ValueError("no phone: pass one or give the user a phone")
        contact: dict[str, Any] = {"phone_number": phone,
                                   "first_name": first_name or self.first_name}
        if user_id is OWN_ID:
            user_id = self.id
        if user_id is not None:
            contact["user_id"] = user_id
        return self._send("message", self._message(contact=contact), deliver)

    def photo(self, file_id: str | None = None, *, caption: str | None = None,
              content: bytes = _FAKE_JPEG, forwarded_from: "SimUser | None" = None,
              deliver: bool = True) -> Delivered:
        """A photo; ``forwarded_from``: forwarded from another user's message (``forward_origin``)."""
        sizes = self.standin._register_photo(content, file_id=file_id)
        fields: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            fields["caption"] = caption
        if forwarded_from is not None:
            fields["forward_origin"] = {"type": "user", "date": int(time.time()) - 3600,
                                        "sender_user": forwarded_from.as_user()}
        return self._send("message", self._message(**fields), deliver)

    def location(self, latitude: float, longitude: float, *, horizontal_accuracy: float | None = None,
                 forwarded_from: "SimUser | None" = None, deliver: bool = True) -> Delivered:
        """A location, as the attachment menu or a request_location button sends it: WGS-84, with
        the phone's ``horizontal_accuracy`` (metres, 0-1500) when it reported one; ``forwarded_from``:
        forwarded from another user's message (``forward_origin``, a MessageOriginUser)."""
        loc: dict[str, Any] = {"latitude": float(latitude), "longitude": float(longitude)}
        if horizontal_accuracy is not None:
            if not 0 <= horizontal_accuracy <= 1500:
                raise ValueError("horizontal_accuracy is 0-1500 metres in the Bot API")
            loc["horizontal_accuracy"] = float(horizontal_accuracy)
        fields: dict[str, Any] = {"location": loc}
        if forwarded_from is not None:
            fields["forward_origin"] = {"type": "user", "date": int(time.time()) - 3600,
                                        "sender_user": forwarded_from.as_user()}
        return self._send("message", self._message(**fields), deliver)

    def press(self, callback_data: str, message_id: int | None = None, *,
              deliver: bool = True) -> Delivered:
        """Press an inline button: callback_query on the given or newest keyboard message."""
        message = self.standin._keyboard_message(self.id, message_id)
        query = {
            "id": self.standin._next_callback_id(),
            "from": self.as_user(),
            "message": message,
            "chat_instance": str(-(10**12) - self.id),
            "data": callback_data,
        }
        return self._send("callback_query", query, deliver)

    def press_button(self, label: str, message_id: int | None = None, *,
                     deliver: bool = True) -> Delivered:
        """Press the inline button whose text is ``label`` (so tests need not know the data)."""
        message = self.standin._keyboard_message(self.id, message_id)
        for row in message.get("reply_markup", {}).get("inline_keyboard", []):
            for button in row:
                if button.get("text") == label and "callback_data" in button:
                    return self.press(button["callback_data"], message["message_id"],
                                      deliver=deliver)
        raise LookupError(f"no callback button {label!r} on message {message['message_id']}")

    # -- deliver and wait

    def _and_wait(self, action: Callable[..., Any], *args: Any, quiet: float, timeout: float,
                  **kwargs: Any) -> list[dict[str, Any]]:
        mark = self.standin._sent_mark()
        action(*args, **kwargs)
        # Silence alone is not enough: it may date from before the update was fetched, so wait
        # for the first answer in this chat, then for the bot to fall quiet.
        deadline = time.monotonic() + timeout
        while not self.standin._sent_since(mark, self.id) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.standin.wait_idle(quiet=quiet, timeout=max(0.1, deadline - time.monotonic()))
        return self.standin._sent_since(mark, self.id)

    def text_wait(self, text: str, *, quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.text, text, quiet=quiet, timeout=timeout)

    def command_wait(self, command: str, payload: str | None = None, *, quiet: float = 0.15,
                     timeout: float = 10.0):
        return self._and_wait(self.command, command, payload, quiet=quiet, timeout=timeout)

    def contact_wait(self, phone: str | None = None, user_id: Any = OWN_ID, *,
                     quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.contact, phone, user_id, quiet=quiet, timeout=timeout)

    def photo_wait(self, file_id: str | None = None, *, caption: str | None = None, content: bytes = _FAKE_JPEG,
                   forwarded_from: "SimUser | None" = None, quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.photo, file_id, caption=caption, content=content, forwarded_from=forwarded_from,
                              quiet=quiet, timeout=timeout)

    def location_wait(self, latitude: float, longitude: float, *, horizontal_accuracy: float | None = None,
                      forwarded_from: "SimUser | None" = None, quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.location, latitude, longitude, horizontal_accuracy=horizontal_accuracy,
                              forwarded_from=forwarded_from, quiet=quiet, timeout=timeout)

    def press_wait(self, callback_data: str, message_id: int | None = None, *,
                   quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.press, callback_data, message_id, quiet=quiet, timeout=timeout)

    def press_button_wait(self, label: str, message_id: int | None = None, *,
                          quiet: float = 0.15, timeout: float = 10.0):
        return self._and_wait(self.press_button, label, message_id, quiet=quiet, timeout=timeout)

    # -- what the bot did in this chat

    def sent(self) -> list[dict[str, Any]]:
        """Bot output in this chat, in order: kind is text|photo|document|edit|edit_markup."""
        return self.standin._sent_since(0, self.id)

    def last(self) -> dict[str, Any] | None:
        sent = self.sent()
        return sent[-1] if sent else None

    def buttons(self, message: Any = None) -> list[list[tuple]]:
        """Keyboard of a sent record, message dict or message_id (default: the last output).

        Inline keyboards give rows of (text, callback_data); reply keyboards give rows of
        (text, request_contact, request_location). No keyboard gives [].
        """
        if message is None:
            message = self.last()
        elif isinstance(message, int):
            matches = [r for r in self.sent() if r["message_id"] == message]
            message = matches[-1] if matches else None
        markup = (message or {}).get("reply_markup") or {}
        if "inline_keyboard" in markup:
            return [[(b.get("text"), b.get("callback_data")) for b in row]
                    for row in markup["inline_keyboard"]]
        if "keyboard" in markup:
            rows = []
            for row in markup["keyboard"]:
                cells = []
                for b in row:
                    b = {"text": b} if isinstance(b, str) else b
                    cells.append((b.get("text"), bool(b.get("request_contact")),
                                  bool(b.get("request_location"))))
                rows.append(cells)
            return rows
        return []

    def block(self) -> None:
        """From now on sends to this user answer 403 'bot was blocked by the user'."""
        with self.standin._lock:
            self.standin._blocked.add(self.id)

    def unblock(self) -> None:
        with self.standin._lock:
            self.standin._blocked.discard(self.id)

    def __repr__(self) -> str:
        return f"SimUser({self.id}, {self.first_name!r})"


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- the stand-in


class TelegramStandin:
    """The Bot API for one bot token, served over HTTP on 127.0.0.1."""

    def __init__(self, token: str = TEST_TOKEN, *, bot_first_name: str = "Stand-in Bot",
                 bot_username: str = "standin_bot", webhook_timeout: float = 10.0):
        self.token = token
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.bot_user = {
            "id": bot_id, "is_bot": True, "first_name": bot_first_name,
            "username": bot_username,
        }
        self._webhook_timeout = webhook_timeout
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._queue: list[list[Any]] = []  # [update, fetched] not yet confirmed by an offset
        self._update_ids = itertools.count(100_001)
        self._callback_ids = itertools.count(4_000_000_001)
        self._file_ids = itertools.count(1)
        self._poll_generation = 0
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._allowed_updates: list[str] = []
        self._webhook: dict[str, Any] | None = None
        self._webhook_error: tuple[int, str] | None = None
        self.deliveries: list[WebhookDelivery] = []
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._message_ids: dict[int, int] = defaultdict(int)
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._sent: list[dict[str, Any]] = []
        self._files: dict[str, dict[str, Any]] = {}
        self._file_paths: dict[str, str] = {}
        self._known_queries: set[str] = set()
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, deque[ApiError]] = defaultdict(deque)
        self._limits: tuple[int, int] | None = None
        self._global_window: deque[float] = deque()
        self._chat_windows: dict[Any, deque[float]] = defaultdict(deque)
        self.too_many_requests = 0  # 429s produced by enforce_limits (not by fail_next)
        self._users: dict[int, SimUser] = {}
        self._blocked: set[int] = set()
        self._closing = False
        self._custom: dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]] = {}
        self._handlers: dict[str, Callable[..., Any]] = {
            "getMe": self._get_me,
            "logOut": self._true,
            "close": self._true,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getMyCommands": self._get_my_commands,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "editMessageCaption": self._edit_message_caption,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendChatAction": self._send_chat_action,
            "getFile": self._get_file,
            "getChat": self._get_chat,
        }
        # Method names are case-insensitive on the real server.
        self._canonical = {name.lower(): name for name in [*self._handlers, "getUpdates"]}
        self.app = Starlette(routes=[
            Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
            Route("/file/bot{token}/{path:path}", self._download, methods=["GET"]),
        ])
        self._served: ServedApp | None = None

    # -- lifecycle

    def start(self) -> "TelegramStandin":
        if self._served is None:
            self._closing = False
            self._served = ServedApp(self.app).start()
        return self

    def stop(self) -> None:
        self._closing = True  # ends long polls at once so shutdown need not wait for them
        if self._served is not None:
            self._served.stop()
            self._served = None

    def __enter__(self) -> "TelegramStandin":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._served is None:
            raise RuntimeError("stand-in not started")
        return self._served.url

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    # -- inspection

    @property
    def calls(self) -> list[Call]:
        """Snapshot of every call so far, in arrival order."""
        with self._lock:
            return list(self._calls)

    def calls_of(self, method: str) -> list[Call]:
        method = self._canonical.get(method.lower(), method)
        return [c for c in self.calls if c.method == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def webhook(self) -> dict[str, Any] | None:
        with self._lock:
            return _clone(self._webhook)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued for getUpdates and not yet confirmed by an offset."""
        with self._lock:
            return [_clone(entry[0]) for entry in self._queue]

    def commands(self, scope: dict[str, Any] | None = None,
                 language_code: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return _clone(self._commands.get(self._commands_key(scope, language_code), []))

    def user(self, user_id: int, first_name: str = "张三", phone: str | None = None, *,
             last_name: str | None = None, username: str | None = None,
             language_code: str | None = "zh-hans") -> SimUser:
        """The simulated user with this id (created on first use, then the same object)."""
        with self._lock:
            if user_id not in self._users:
                self._users[user_id] = SimUser(self, user_id, first_name, last_name, username,
                                               phone, language_code)
            return self._users[user_id]

    # -- test controls

    def fail_next(self, method: str, error_code: int, description: str | None = None,
                  retry_after: int | None = None, count: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with this error instead of serving them.

        ``method`` "*" matches any method except getUpdates.
        """
        if description is None and error_code == 429:
            description = f"Too Many Requests: retry after {retry_after or 1}"
        if error_code == 429 and retry_after is None:
            retry_after = 1
        key = "*" if method == "*" else method.lower()
        with self._lock:
            for _ in range(count):
                self._failures[key].append(ApiError(error_code, description, retry_after))

    def enforce_limits(self, global_per_sec: int | None = 30,
                       per_chat_per_sec: int | None = 1) -> None:
        """Answer 429 with retry_after when sends exceed these rates (sliding 1 s window).

        Call with both None to switch off. Only accepted sends count towards the window.
        """
        with self._lock:
            if global_per_sec is None and per_chat_per_sec is None:
                self._limits = None
            else:
                self._limits = (global_per_sec or 10**9, per_chat_per_sec or 10**9)
            self._global_window.clear()
            self._chat_windows.clear()

    def handle(self, method: str, fn: Callable[[dict[str, Any], dict[str, bytes]], Any]) -> None:
        """Serve ``method`` with ``fn(params, files) -> result``; raise ApiError for errors."""
        name = self._canonical.get(method.lower(), method)
        with self._lock:
            self._canonical[method.lower()] = name
            self._custom[name] = fn

    # -- delivery of updates

    def deliver(self, update: dict[str, Any], secret: Any = CONFIGURED) -> int | None:
        """Hand an update to the bot the way Telegram would right now.

        Without a webhook it is queued for getUpdates and None is returned. With a webhook it
        is POSTed there (from the calling thread) and the HTTP status is returned; ``secret``
        overrides the X-Telegram-Bot-Api-Secret-Token header (None: send no header).
        """
        update = _clone(dict(update))
        with self._lock:
            query = update.get("callback_query")
            if query:
                self._known_queries.add(str(query["id"]))
            self._last_activity = time.monotonic()
            hook = _clone(self._webhook)
            if hook is None:
                if self._allowed_updates and not (set(update) & set(self._allowed_updates)):
                    return None  # Telegram never produces updates of types not asked for
                self._queue.append([update, False])
                self._queue.sort(key=lambda entry: entry[0]["update_id"])
                return None
        if secret is CONFIGURED:
            secret = hook.get("secret_token")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        record = WebhookDelivery(update=update, url=hook["url"], secret=secret, status=None)
        try:
            # trust_env=False: a proxy from the environment must never see loopback traffic.
            with httpx.Client(trust_env=False, timeout=self._webhook_timeout) as client:
                response = client.post(hook["url"], content=json.dumps(update).encode(),
                                       headers=headers)
            record.status = response.status_code
            if 200 <= record.status < 300:
                self.run_webhook_answer(response.headers.get("content-type", ""), response.content)
        except httpx.HTTPError as exc:
            record.error = repr(exc)
            with self._lock:
                self.deliveries.append(record)
                self._webhook_error = (int(time.time()), f"Connection failed: {exc}")
            raise
        with self._lock:
            self.deliveries.append(record)
            self._last_activity = time.monotonic()
            if not 200 <= record.status < 300:
                self._webhook_error = (
                    int(time.time()),
                    f"Wrong response from the webhook: {record.status} {response.reason_phrase}")
        return record.status

    def run_webhook_answer(self, content_type: str, body: bytes) -> Call | None:
        """Carry out a method the bot put in its answer to a webhook POST, as Telegram does.

        Telegram accepts one Bot API method in the body of the webhook's answer (JSON with a
        ``method`` field and its parameters) and never tells the bot how it went: an error is
        recorded on the call here and otherwise dropped. Returns the call, or None when the
        answer carried no method.
        """
        if content_type.split(";")[0].strip().lower() != "application/json" or not body:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("method"), str):
            return None
        params = _normalise({k: v for k, v in payload.items() if k != "method"})
        with self._lock:
            method = self._canonical.get(payload["method"].lower(), payload["method"])
            call = Call(method, params, via_webhook=True)
            self._calls.append(call)
            self._last_activity = time.monotonic()
            handler = self._handlers.get(method)
            try:
                if handler is None or method in ("getUpdates", "setWebhook", "deleteWebhook"):
                    raise ApiError(400, "Bad Request: method can't be used in a webhook answer")
                self._check_limits(method, params)
                result = handler(params, {}, {})
                if isinstance(result, tuple):
                    result = result[0]
                call.status, call.response = 200, {"ok": True, "result": result}
            except ApiError as exc:
                call.status, call.response = exc.error_code, exc.body()
        return call

    # -- synchronisation

    def wait_idle(self, quiet: float = 0.15, timeout: float = 10.0) -> None:
        """Block until every queued update was fetched and no API call (besides getUpdates)
        arrived or was in flight for ``quiet`` seconds. Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                unfetched = sum(1 for entry in self._queue if not entry[1])
                in_flight = self._in_flight
                silent_for = time.monotonic() - self._last_activity
            if not unfetched and not in_flight and silent_for >= quiet:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"bot not idle after {timeout}s: {unfetched} update(s) never fetched "
                    f"(is it polling?), {in_flight} call(s) in flight, "
                    f"last activity {silent_for:.2f}s ago")
            time.sleep(0.01)

    async def idle(self, quiet: float = 0.15, timeout: float = 10.0) -> None:
        """wait_idle for coroutines running on the bot's own event loop."""
        await asyncio.to_thread(self.wait_idle, quiet, timeout)

    # -- internals shared with SimUser

    def _next_update_id(self) -> int:
        with self._lock:
            return next(self._update_ids)

    def _next_callback_id(self) -> str:
        with self._lock:
            return str(next(self._callback_ids))

    def _next_message_id(self, chat_id: int) -> int:
        # One sequence per chat shared by both sides, as in real private chats.
        with self._lock:
            self._message_ids[chat_id] += 1
            return self._message_ids[chat_id]

    def _remember_message(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._messages[(message["chat"]["id"], message["message_id"])] = _clone(message)

    def _keyboard_message(self, chat_id: int, message_id: int | None) -> dict[str, Any]:
        with self._lock:
            if message_id is not None:
                message = self._messages.get((chat_id, message_id))
                if message is None:
                    raise LookupError(f"no message {message_id} in chat {chat_id}")
                return _clone(message)
            for (chat, _), message in sorted(self._messages.items(), reverse=True):
                if (chat == chat_id and message.get("from", {}).get("is_bot")
                        and "inline_keyboard" in (message.get("reply_markup") or {})):
                    return _clone(message)
        raise LookupError(f"no bot message with an inline keyboard in chat {chat_id}")

    def _sent_mark(self) -> int:
        with self._lock:
            return len(self._sent)

    def _sent_since(self, mark: int, chat_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [_clone(r) for r in self._sent[mark:] if r["chat_id"] == chat_id]

    def _register_file(self, kind: str, content: bytes, *, file_id: str | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            n = next(self._file_ids)
            file_id = file_id or f"standin-{kind}-{n:06d}"
            suffix = {"photo": "jpg"}.get(kind, "bin")
            if extra and "." in extra.get("file_name", ""):
                suffix = extra["file_name"].rsplit(".", 1)[1]
            meta = {"file_id": file_id, "file_unique_id": f"u{n:06d}{kind[:3]}",
                    "file_size": len(content), **(extra or {})}
            path = f"{kind}s/file_{n}.{suffix}"
            self._files[file_id] = {"meta": meta, "content": content, "path": path}
            self._file_paths[path] = file_id
            return _clone(meta)

    def _register_photo(self, content: bytes, file_id: str | None = None) -> list[dict[str, Any]]:
        # Telegram returns several sizes, largest last; the caller's id goes on the largest.
        sizes = []
        for width, height in ((90, 67), (320, 240), (800, 600)):
            own_id = file_id if (file_id and width == 800) else (
                f"{file_id}-{width}" if file_id else None)
            sizes.append(self._register_file("photo", content, file_id=own_id,
                                             extra={"width": width, "height": height}))
        return sizes

    def _chat_for(self, chat_id: Any) -> dict[str, Any]:
        if isinstance(chat_id, str) or chat_id is None:
            raise bad_request("chat not found")
        user = self._users.get(chat_id)
        if user is not None:
            return user.as_chat()
        if chat_id < 0:
            return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}
        return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}

    # -- HTTP endpoints

    async def _endpoint(self, request: Request) -> Response:
        token = request.path_params["token"]
        given = request.path_params["method"]
        try:
            params, files, filenames = await _read_params(request)
            parse_error = None
        except ApiError as exc:
            params, files, filenames, parse_error = {}, {}, {}, exc
        with self._lock:
            method = self._canonical.get(given.lower(), given)
            call = Call(method, params, files, filenames)
            self._calls.append(call)
            counts = method != "getUpdates"
            if counts:
                self._in_flight += 1
                self._last_activity = time.monotonic()
        try:
            if token != self.token:
                # Malformed tokens get 404 from Telegram, well-formed but wrong ones 401.
                if _TOKEN_SHAPE.fullmatch(token):
                    raise ApiError(401, "Unauthorized")
                raise ApiError(404, "Not Found")
            if parse_error is not None:
                raise parse_error
            result, description = await self._dispatch(method, params, files, filenames, request)
            status, body = 200, {"ok": True, "result": result}
            if description:
                body["description"] = description
        except ApiError as exc:
            status, body = exc.error_code, exc.body()
        finally:
            with self._lock:
                if counts:
                    self._in_flight -= 1
                    self._last_activity = time.monotonic()
        call.status, call.response = status, body
        return JSONResponse(body, status_code=status)

    async def _dispatch(self, method, params, files, filenames, request):
        with self._lock:
            failure = None
            for key in (method.lower(), "*"):
                if key == "*" and method == "getUpdates":
                    continue
                if self._failures.get(key):
                    failure = self._failures[key].popleft()
                    break
            if failure is not None:
                raise failure
            custom = self._custom.get(method)
        if custom is not None:
            return custom(params, files), None
        if method == "getUpdates":
            return await self._get_updates(params, request), None
        handler = self._handlers.get(method)
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        with self._lock:
            self._check_limits(method, params)
            result = handler(params, files, filenames)
        if isinstance(result, tuple):
            return result
        return result, None

    async def _download(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"},
                                status_code=404)
        with self._lock:
            file_id = self._file_paths.get(request.path_params["path"])
            content = self._files[file_id]["content"] if file_id else None
        if content is None:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"},
                                status_code=404)
        return Response(content, media_type="application/octet-stream")

    def _check_limits(self, method: str, params: dict[str, Any]) -> None:
        if self._limits is None or method not in _RATE_LIMITED:
            return
        per_sec, per_chat = self._limits
        now = time.monotonic()
        chat_window = self._chat_windows[params.get("chat_id")]
        for window in (self._global_window, chat_window):
            while window and now - window[0] >= 1.0:
                window.popleft()
        wait = 0.0
        if len(self._global_window) >= per_sec:
            wait = 1.0 - (now - self._global_window[0])
        if len(chat_window) >= per_chat:
            wait = max(wait, 1.0 - (now - chat_window[0]))
        if wait > 0:
            self.too_many_requests += 1
            retry = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        self._global_window.append(now)
        chat_window.append(now)

    # -- methods: bot and updates

    def _true(self, p, files, names):
        return True

    def _get_me(self, p, files, names):
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    async def _get_updates(self, p: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        with self._lock:
            if self._webhook is not None:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                    "active; use deleteWebhook to delete the webhook first")
            offset = p.get("offset")
            if isinstance(offset, int) and offset > 0:
                self._queue = [e for e in self._queue if e[0]["update_id"] >= offset]
            elif isinstance(offset, int) and offset < 0:
                self._queue = self._queue[offset:]
            limit = p.get("limit") if isinstance(p.get("limit"), int) else 100
            limit = min(max(limit, 1), 100)
            if isinstance(p.get("allowed_updates"), list):
                self._allowed_updates = list(p["allowed_updates"])
            try:
                timeout = float(p.get("timeout") or 0)
            except (TypeError, ValueError):
                timeout = 0.0
            self._poll_generation += 1
            generation = self._poll_generation
        deadline = time.monotonic() + max(timeout, 0)
        next_disconnect_check = time.monotonic() + 0.1
        while True:
            with self._lock:
                if generation != self._poll_generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; "
                                        "make sure that only one bot instance is running")
                batch = self._queue[:limit]
                if batch or self._closing or time.monotonic() >= deadline:
                    for entry in batch:
                        entry[1] = True
                    if batch:
                        self._last_activity = time.monotonic()
                    return [_clone(entry[0]) for entry in batch]
            await asyncio.sleep(0.01)
            if time.monotonic() >= next_disconnect_check:
                # A cancelled poll must not keep the server busy until its timeout.
                if await request.is_disconnected():
                    return []
                next_disconnect_check = time.monotonic() + 0.1

    def _set_webhook(self, p, files, names):
        url = p.get("url", "")
        if not url:
            return self._delete_webhook(p, files, names)
        if not re.match(r"https?://", url):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise bad_request("secret token contains unallowed characters")
        if p.get("drop_pending_updates"):
            self._queue.clear()
        self._webhook = {
            "url": url, "secret_token": secret,
            "allowed_updates": p.get("allowed_updates"),
            "max_connections": p.get("max_connections", 40),
            "ip_address": p.get("ip_address"),
        }
        if isinstance(p.get("allowed_updates"), list):
            self._allowed_updates = list(p["allowed_updates"])
        self._webhook_error = None
        return True, "Webhook was set"

    def _delete_webhook(self, p, files, names):
        if p.get("drop_pending_updates"):
            self._queue.clear()
        was_set = self._webhook is not None
        self._webhook = None
        self._webhook_error = None
        return True, ("Webhook was deleted" if was_set else "Webhook is already deleted")

    def _get_webhook_info(self, p, files, names):
        info: dict[str, Any] = {"url": "", "has_custom_certificate": False,
                                "pending_update_count": len(self._queue)}
        if self._webhook is not None:
            info.update(url=self._webhook["url"],
                        max_connections=self._webhook["max_connections"],
                        ip_address="127.0.0.1")
            if self._webhook.get("allowed_updates"):
                info["allowed_updates"] = self._webhook["allowed_updates"]
            if self._webhook_error:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    # -- methods: commands

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    def _set_my_commands(self, p, files, names):
        commands = p.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise bad_request("can't parse BotCommand")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(cmd.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(cmd.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self._commands[self._commands_key(p.get("scope"), p.get("language_code"))] = \
            [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _delete_my_commands(self, p, files, names):
        self._commands.pop(self._commands_key(p.get("scope"), p.get("language_code")), None)
        return True

    def _get_my_commands(self, p, files, names):
        return _clone(self._commands.get(self._commands_key(p.get("scope"),
                                                            p.get("language_code")), []))

    # -- methods: messages

    def _target_chat(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        chat_id = p.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        chat = self._chat_for(chat_id)
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id, chat

    def _new_bot_message(self, chat_id: Any, chat: dict[str, Any], markup: dict | None,
                         **content: Any) -> dict[str, Any]:
        message = {"message_id": self._next_message_id(chat_id), "from": dict(self.bot_user),
                   "chat": chat, "date": int(time.time()), **content}
        # Only inline keyboards travel with a Message; reply keyboards stay client-side.
        if markup and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._messages[(chat_id, message["message_id"])] = _clone(message)
        return message

    def _record(self, kind: str, method: str, chat_id: Any, message: dict[str, Any] | None,
                p: dict[str, Any], markup: dict | None, **extra: Any) -> None:
        self._sent.append(_clone({
            "kind": kind, "method": method, "chat_id": chat_id,
            "message_id": message["message_id"] if message else p.get("message_id"),
            "text": (message or {}).get("text", (message or {}).get("caption")),
            "caption": (message or {}).get("caption"),
            "raw_text": p.get("text", p.get("caption")),
            "parse_mode": p.get("parse_mode"),
            "reply_markup": markup,
            "message": message,
            "params": p,
            **extra,
        }))

    def _send_message(self, p, files, names):
        chat_id, chat = self._target_chat(p)
        raw = p.get("text")
        if raw is None or str(raw).strip() == "":
            raise bad_request("message text is empty")
        text = _render(str(raw), p.get("parse_mode"))
        if not text.strip():
            raise bad_request("message text is empty")
        if _utf16_len(text) > 4096:
            raise bad_request("message is too long")
        markup = _check_markup(p.get("reply_markup"))
        message = self._new_bot_message(chat_id, chat, markup, text=text)
        self._record("text", "sendMessage", chat_id, message, p, markup)
        return message

    def _caption(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("caption") in (None, ""):
            return {}
        caption = _render(str(p["caption"]), p.get("parse_mode"))
        if _utf16_len(caption) > 1024:
            raise bad_request("message caption is too long")
        return {"caption": caption}

    def _input_file(self, field_name: str, p, files, names, kind: str):
        """(content, filename, known meta) for a media parameter: upload, attach:// or file_id."""
        value = p.get(field_name)
        if field_name in files:
            return files[field_name], names.get(field_name), None
        if isinstance(value, str) and value.startswith("attach://"):
            part = value[len("attach://"):]
            if part not in files:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return files[part], names.get(part), None
        if isinstance(value, str) and value in self._files:
            entry = self._files[value]
            return entry["content"], entry["meta"].get("file_name"), entry["meta"]
        if isinstance(value, str) and re.match(r"https?://", value):
            # Never fetched: tests stay off the network; the URL is kept in the call record.
            return b"", value.rsplit("/", 1)[-1] or None, None
        if not value:
            raise bad_request(f"there is no {kind} in the request")
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _send_photo(self, p, files, names):
        chat_id, chat = self._target_chat(p)
        content, _, known = self._input_file("photo", p, files, names, "photo")
        if known is not None:
            sizes = [known]
        else:
            sizes = self._register_photo(content)
        markup = _check_markup(p.get("reply_markup"))
        message = self._new_bot_message(chat_id, chat, markup, photo=sizes, **self._caption(p))
        self._record("photo", "sendPhoto", chat_id, message, p, markup, content=content)
        return message

    def _send_document(self, p, files, names):
        chat_id, chat = self._target_chat(p)
        content, filename, known = self._input_file("document", p, files, names, "document")
        if known is not None:
            document = known
        else:
            extra = {"file_name": filename or "file"}
            extra["mime_type"] = _guess_mime(extra["file_name"])
            document = self._register_file("document", content, extra=extra)
        markup = _check_markup(p.get("reply_markup"))
        message = self._new_bot_message(chat_id, chat, markup, document=document,
                                        **self._caption(p))
        self._record("document", "sendDocument", chat_id, message, p, markup, content=content)
        return message

    def _message_to_edit(self, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        chat_id = p.get("chat_id")
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        message = self._messages.get((chat_id, p.get("message_id")))
        if message is None:
            raise bad_request("message to edit not found")
        if not message.get("from", {}).get("is_bot"):
            raise bad_request("message can't be edited")
        return chat_id, message

    def _edit(self, kind: str, method: str, p: dict[str, Any], changes: dict[str, Any],
              drop: tuple[str, ...] = ()):
        markup = _check_markup(p.get("reply_markup"))
        if p.get("inline_message_id"):
            self._record(kind, method, None, None, p, markup)
            return True
        chat_id, message = self._message_to_edit(p)
        new = dict(message, **changes)
        for key in (*drop, "reply_markup"):
            new.pop(key, None)
        # Omitting reply_markup in an edit removes the inline keyboard, as on Telegram.
        if markup and "inline_keyboard" in markup:
            new["reply_markup"] = markup
        same = ({k: v for k, v in new.items() if k != "edit_date"}
                == {k: v for k, v in message.items() if k != "edit_date"})
        if same:
            raise bad_request(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message")
        new["edit_date"] = int(time.time())
        self._messages[(chat_id, message["message_id"])] = _clone(new)
        self._record(kind, method, chat_id, new, p, markup)
        return new

    def _edit_message_text(self, p, files, names):
        raw = p.get("text")
        if raw is None or str(raw).strip() == "":
            raise bad_request("message text is empty")
        text = _render(str(raw), p.get("parse_mode"))
        if _utf16_len(text) > 4096:
            raise bad_request("MESSAGE_TOO_LONG")
        if not p.get("inline_message_id"):
            _, message = self._message_to_edit(p)
            if "text" not in message:
                raise bad_request("there is no text in the message to edit")
        return self._edit("edit", "editMessageText", p, {"text": text})

    def _edit_message_caption(self, p, files, names):
        changes = self._caption(p)
        if not p.get("inline_message_id"):
            _, message = self._message_to_edit(p)
            if "text" in message:
                raise bad_request("there is no caption in the message to edit")
        # An edit without caption clears it.
        return self._edit("edit", "editMessageCaption", p, changes,
                          drop=() if changes else ("caption",))

    def _edit_message_reply_markup(self, p, files, names):
        return self._edit("edit_markup", "editMessageReplyMarkup", p, {})

    def _delete_message(self, p, files, names):
        key = (p.get("chat_id"), p.get("message_id"))
        if key not in self._messages:
            raise bad_request("message to delete not found")
        del self._messages[key]
        return True

    def _answer_callback_query(self, p, files, names):
        query_id = str(p.get("callback_query_id", ""))
        if query_id not in self._known_queries or query_id in self.callback_answers:
            raise bad_request("query is too old and response timeout expired or query ID is "
                              "invalid")
        if len(str(p.get("text", ""))) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        self.callback_answers[query_id] = _clone(p)
        return True

    def _send_chat_action(self, p, files, names):
        self._target_chat(p)
        if p.get("action") not in _CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    def _get_file(self, p, files, names):
        entry = self._files.get(str(p.get("file_id", "")))
        if entry is None:
            raise bad_request("invalid file_id")
        meta = entry["meta"]
        return {"file_id": meta["file_id"], "file_unique_id": meta["file_unique_id"],
                "file_size": meta["file_size"], "file_path": entry["path"]}

    def _get_chat(self, p, files, names):
        chat = self._chat_for(p.get("chat_id"))
        return {**chat, "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False,
                                        "unique_gifts": False, "premium_subscription": False,
                                        "gifts_from_channels": False}}


def _guess_mime(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
