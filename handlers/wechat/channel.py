"""WeChat channel: the webhook that turns WeChat's XML into ``Inbound`` and the core's replies into XML.

The conversation lives in the core; this module checks, translates and renders. Replies have no
buttons on WeChat: options become numbered lines (``Reply.numbered_text``) and the user answers
with the number or the words, which the core already accepts. Menu clicks are commands; a scan of
an evaluation QR code, by a new follower (subscribe with ``qrscene_<token>``) or an existing one
(SCAN), is ``/start <token>`` exactly as Telegram's deep link, so the rating flow starts the same way.

One POST per message. WeChat waits five seconds and retries the same message up to three times,
so a POST goes like this:

1. the checks of ``handlers.wechat.crypto`` (size, signature, timestamp, XML, app id): a refusal is
   a 4xx and changes nothing;
2. the core handles the event in a thread, deduplicated by its key (MsgId; for events
   FromUserName + CreateTime). Inside the core's transaction (``before_commit``) the replies are
   rendered, the user's last interaction is recorded (for the 48-hour window) and the answer is
   stored for the key, so a retry gets the very same answer and creates nothing;
3. if the core needs longer than WECHAT_REPLY_DEADLINE_SECONDS, the request answers "success" and
   the same hook puts the answer in the outbox instead (kind "reply": sent at once through the
   customer-service API). Which of the two answers is decided once, under a lock, so an answer
   is never lost between the request giving up and the core finishing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Callable

from starlette.concurrency import run_in_threadpool

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.events import EVENT_TYPES, ClickEvent, ScanEvent, SubscribeEvent, SubscribeScanEvent
from wechatpy.messages import MESSAGE_TYPES, ImageMessage, LocationMessage, TextMessage, UnknownMessage, VoiceMessage

from bot import texts
from bot.config import Settings
from bot.core.dialogue import Context
from bot.core.engine import Engine
from bot.core.features import REGISTRY
from bot.core.geo import GCJ02
from bot.core.types import Inbound, Location, Outcome, Reply
from handlers.wechat.crypto import MAX_BODY_BYTES, Cipher, Refused, check_signature, check_timestamp, parse_xml, \
    text_reply
from bot.core import outbox
from storage import hot

log = logging.getLogger(__name__)

CHANNEL = "wechat"
MAX_TEXT_BYTES = 2048  # WeChat's limit for one text message
MENU_COMMANDS = REGISTRY.menu_keys()  # click-event keys of the custom menu (bot.core.features)
# A user's last interaction is written at most this often per process (the outbox keeps a wider margin).
INTERACTION_GRAIN = timedelta(minutes=10)
SUCCESS = "success"  # tells WeChat "no reply, do not retry"
MAX_PHOTO_BYTES = 10_000_000  # a picture a user sent, fetched by media/get (as Telegram's channel caps it)
MEDIA_SECONDS = 2.5  # what fetching it may take of the five seconds WeChat waits for the answer


class Unsupported:
    """A message type the bot does not take (voice without recognition, video, link...)."""


UNSUPPORTED = Unsupported()


def to_inbound(message, fields: dict[str, str]) -> Inbound | Unsupported | None:
    """Our Inbound for a WeChat message or event; None for events that need no answer."""
    openid = fields.get("FromUserName", "")
    if not openid or len(openid) > 64:
        return None
    # No buttons on WeChat and no button to share one's phone: answers say what to type instead.
    base = {"channel": CHANNEL, "user_id": openid, "buttons": False, "share_contact": False}
    created = fields.get("CreateTime", "")
    if fields.get("MsgType", "").lower() == "event":
        base["event_key"] = event_key(openid, created, fields.get("Event", ""), fields.get("EventKey", ""))
        if isinstance(message, (SubscribeScanEvent, ScanEvent)):
            # wechatpy has already cut the qrscene_ prefix of a new follower's scan.
            return Inbound(command="start", args=(message.scene_id or "")[:64], **base)
        if isinstance(message, SubscribeEvent):
            return Inbound(command="start", **base)
        if isinstance(message, ClickEvent) and message.key in MENU_COMMANDS:
            return Inbound(command=message.key, **base)
        return None  # unsubscribe, VIEW, location reports, template delivery reports
    base["event_key"] = fields.get("MsgId") or f"{openid}:{created}"
    if isinstance(message, TextMessage):
        return _text(message.content or "", base)
    if isinstance(message, ImageMessage) and message.media_id:
        return Inbound(photo_ref=f"wechat:{message.media_id}"[:300], **base)
    if isinstance(message, LocationMessage):
        try:
            # WeChat's locations are GCJ-02 (火星坐标), as on every Chinese map.
            return Inbound(location=Location(float(message.location_x), float(message.location_y), datum=GCJ02),
                           **base)
        except (TypeError, ValueError):
            return UNSUPPORTED
    if isinstance(message, VoiceMessage) and message.recognition:  # speech recognition, when switched on
        return _text(message.recognition, base)
    return UNSUPPORTED


async def fetch_photo(fetch: Callable[[str, int], bytes] | None, inbound: Inbound) -> Inbound:
    """The event with the picture itself (``Inbound.photo``) when it is a photo and ``fetch`` (the API's
    ``media``, run in a thread) gets it in time; else as it was: the photo is kept by reference, and
    what needs the picture (an appeal's evidence) says it did not arrive. WeChat and WeCom alike."""
    if fetch is None or inbound.photo_ref is None:
        return inbound
    media_id = inbound.photo_ref.partition(":")[2]
    try:
        content = await asyncio.wait_for(run_in_threadpool(fetch, media_id, MAX_PHOTO_BYTES), MEDIA_SECONDS)
    except Exception as exc:  # an API error, too large, too slow: the event goes on without the bytes
        log.info("photo %s could not be fetched: %s", inbound.photo_ref[:80], exc)
        return inbound
    return replace(inbound, photo=content)


def event_key(openid: str, created: str, event: str, key: str) -> str:
    """The deduplication key of an event, which has no MsgId: the follower, the second, the event
    and its key (WeChat's own rule for retried events), so a menu click in the same second as a
    LOCATION report is an event of its own. At most 100 characters, as the core keeps them."""
    whole = f"{openid}:{created}:{event}:{key}"
    if len(whole) <= 100:
        return whole
    return f"{openid}:{created}:" + hashlib.sha256(f"{event}:{key}".encode()).hexdigest()[:32]


def message_of(fields: dict[str, str]):
    """wechatpy's message or event object for fields parsed by ``parse_xml``: what wechatpy's own
    ``parse_message`` makes of the same XML, without parsing it a third time (xmltodict)."""
    data = dict(fields)
    message_type = data["MsgType"].lower()
    if message_type != "event":
        return MESSAGE_TYPES.get(message_type, UnknownMessage)(data)
    event_type = data.get("Event", "").lower()
    event_key = data.get("EventKey") or ""
    if event_type == "subscribe" and event_key.startswith(("scanbarcode|", "scanimage|")):
        event_type = data["Event"] = "subscribe_scan_product"
    elif event_type == "subscribe" and event_key.startswith("qrscene_"):
        # A new follower who scanned a QR code with a scene: wechatpy cuts the prefix.
        event_type = data["Event"] = "subscribe_scan"
        data["EventKey"] = event_key[len("qrscene_"):]
    return EVENT_TYPES.get(event_type, UnknownMessage)(data)


def _text(text: str, base: dict) -> Inbound:
    if text[:1] in ("/", "／"):
        head, _, args = text[1:].partition(" ")
        if head:
            return Inbound(command=head.lower()[:40], args=args.strip(), **base)
    return Inbound(text=text, **base)


def render(reply: Reply) -> str:
    """The text WeChat gets for one reply: options numbered, hints for what has no button here."""
    text = reply.numbered_text()  # a request for the phone is already worded for typing (Inbound.share_contact)
    if reply.request_location:
        text += "\n" + texts.WECHAT_LOCATION_HINT
    if getattr(reply, "files", None):
        text += "\n" + texts.WECHAT_FILES_NOT_SENT.format(count=len(reply.files))
    return text


def fit(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with an ellipsis when cut."""
    if len(text.encode()) <= limit:
        return text
    cut = text.encode()[:limit - len("…".encode())].decode(errors="ignore")
    return cut + "…"


def split(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes, cut between lines (a line too long is cut itself)."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        joined = f"{current}\n{line}" if current else line
        if len(joined.encode()) <= limit:
            current = joined
            continue
        if current:
            pieces.append(current)
        current = fit(line, limit)
    if current or not pieces:
        pieces.append(current)
    return pieces


def pack(messages: list[str], limit: int = MAX_TEXT_BYTES) -> list[str]:
    """The replies joined into as few WeChat messages as fit, in order; a long one spread over several."""
    out: list[str] = []
    current = ""
    for piece in (piece for message in messages for piece in split(message, limit)):
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined.encode()) <= limit:
            current = joined
        else:
            out.append(current)
            current = piece
    if current:
        out.append(current)
    return out


# The rows this channel keeps (interactions, answers for retries) are written by storage.hot; the
# tests import record_interaction from here.
record_interaction = hot.note_wechat_interaction


class _Answer:
    """Who answers one event: the request itself ("inline") or the outbox, decided once under a lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.mode: str | None = None
        self.xml: str | None = None
        self.noted: datetime | None = None  # the interaction written with the event

    def claim(self, mode: str) -> str:
        with self._lock:
            if self.mode is None:
                self.mode = mode
            return self.mode


class WeChatChannel:
    """The webhook of one Official Account, bound to the core. ``media``: fetches a picture a user sent
    (``WeChatApi.media``), so the core gets the photo itself (an appeal's evidence, a visit's hashes)."""

    def __init__(self, core: Engine, settings: Settings, *, media: Callable[[str, int], bytes] | None = None):
        self.core, self.settings, self.media = core, settings, media
        self.token = settings.wechat_token.get_secret_value()
        self.app_id = settings.wechat_app_id or ""
        aes = settings.wechat_aes_key
        self.cipher = Cipher(self.token, aes.get_secret_value(), self.app_id) if aes is not None else None
        self._noted: dict[str, datetime] = {}  # openid -> the last interaction this process wrote

    def routes(self) -> list[Route]:
        return [Route(self.settings.wechat_webhook_path, self.endpoint, methods=["GET", "POST"])]

    # -- HTTP --------------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """GET: WeChat checks the server (echostr). POST: one message or event, answered in XML."""
        try:
            if request.method == "GET":
                return self._verify(request)
            return await self._post(request)
        except Refused as refused:
            log.info("wechat request refused: %s", refused.reason)
            return PlainTextResponse(refused.reason, status_code=refused.status)

    def _check(self, request: Request) -> tuple[str, str]:
        query = request.query_params
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        check_signature(query.get("signature"), self.token, timestamp, nonce)
        check_timestamp(timestamp, self.core.clock().timestamp(), self.settings.wechat_timestamp_tolerance_seconds)
        return timestamp, nonce

    def _verify(self, request: Request) -> Response:
        self._check(request)
        echo = request.query_params.get("echostr", "")
        if not echo or len(echo) > 200:
            raise Refused(400, "no echostr")
        return PlainTextResponse(echo)

    async def _post(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise Refused(413, "too large")
        timestamp, nonce = self._check(request)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise Refused(413, "too large")
        fields = parse_xml(bytes(body))
        if self.cipher is not None:
            if request.query_params.get("encrypt_type", "").lower() != "aes":
                raise Refused(400, "plain message in safe mode")
            plain = self.cipher.open(fields, request.query_params.get("msg_signature"), timestamp, nonce)
            fields = parse_xml(plain)
        elif "Encrypt" in fields and "MsgType" not in fields:
            raise Refused(400, "encrypted message but WECHAT_AES_KEY is not set")
        else:
            try:
                plain = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "not UTF-8") from None
        try:
            message = message_of(fields)
        except Exception:  # wechatpy wants MsgType and the like; we checked the XML, not the fields
            raise Refused(400, "not a WeChat message") from None
        try:
            xml = await self.answer(message, fields)
        except Exception:
            log.exception("wechat message %s failed", fields.get("MsgId") or fields.get("CreateTime"))
            return PlainTextResponse("error", status_code=500)  # WeChat tries again; nothing was stored
        if xml is None:
            return PlainTextResponse(SUCCESS)
        if self.cipher is not None:
            xml = self.cipher.seal(xml, str(int(time.time())))
        return Response(xml, media_type="application/xml")

    # -- answering ----------------------------------------------------------------------------

    async def answer(self, message, fields: dict[str, str]) -> str | None:
        """The plain reply XML for one message, or None for "success" (no reply, or one sent later)."""
        inbound = to_inbound(message, fields)
        if inbound is None:
            return None
        account = fields.get("ToUserName", "")
        if isinstance(inbound, Unsupported):
            return text_reply(to_user=fields["FromUserName"], from_account=account, content=texts.WECHAT_UNSUPPORTED,
                              now=int(self.core.clock().timestamp()))
        inbound = await fetch_photo(self.media, inbound)
        answer = _Answer()
        hook = partial(self._settle, inbound=inbound, account=account, answer=answer)
        outcome = await self._within_deadline(inbound, hook, answer)
        if outcome is None:
            return None
        if outcome.duplicate:
            return outcome.rendered or None  # the very answer given the first time ("" : sent by the API)
        if answer.noted is not None:
            if len(self._noted) > 100_000:
                self._noted.clear()
            self._noted[inbound.user_id] = answer.noted
        if answer.mode is None and outcome.replies:
            # The core gave up before its commit (another event of this user won a race): nothing was
            # stored, so the answer is not kept either.
            parts = pack([render(r) for r in outcome.replies])
            return text_reply(to_user=inbound.user_id, from_account=account, content=parts[0],
                              now=int(self.core.clock().timestamp()))
        return answer.xml

    async def _within_deadline(self, inbound: Inbound, hook, answer: _Answer) -> Outcome | None:
        """The core's outcome; None when WeChat's deadline passed first and the outbox will answer."""
        job = asyncio.ensure_future(self.core.dispatch(inbound, before_commit=hook))
        try:
            return await asyncio.wait_for(asyncio.shield(job), self.settings.wechat_reply_deadline_seconds)
        except asyncio.TimeoutError:
            if answer.claim("outbox") == "outbox":
                job.add_done_callback(partial(_log_late_failure, inbound.event_key))
                return None
            return await job  # the core claimed the inline answer just in time: its commit is under way

    def _settle(self, ctx: Context, outcome: Outcome, *, inbound: Inbound, account: str, answer: _Answer) -> None:
        """In the core's transaction: the interaction noted, the answer stored for retries and,
        after the deadline or beyond one message's size, queued for the customer-service API."""
        now = self.core.clock()
        key = inbound.event_key
        noted = self._noted.get(inbound.user_id)
        if noted is None or not timedelta(0) <= now - noted < INTERACTION_GRAIN:
            hot.note_wechat_interaction(ctx.db, inbound.user_id, now)
            answer.noted = now
        parts = pack([render(reply) for reply in outcome.replies])
        xml = None
        if answer.claim("inline") == "inline" and parts:
            xml = text_reply(to_user=inbound.user_id, from_account=account, content=parts[0], now=int(now.timestamp()))
            parts = parts[1:]
        for i, text in enumerate(parts):
            outbox.enqueue(ctx.session, key=f"wechat-reply:{key}:{i}", kind="reply", channel=CHANNEL,
                           recipient=inbound.user_id, body=text, now=now, settings=self.settings)
        outcome.rendered = xml or ""  # kept with the event by the core, for WeChat's retries
        answer.xml = xml


def _log_late_failure(event_key: str, job: asyncio.Future) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("wechat event %s failed after its deadline; the user got no answer", event_key,
                  exc_info=job.exception())
