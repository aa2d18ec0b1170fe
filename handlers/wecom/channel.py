"""WeCom / 政务微信 channel: the callback URL of a self-built app (自建应用), translation only.

A callback becomes the core's ``Inbound`` (channel "wecom", user id = the member's UserId): a text
(a "/command" or words), a photo, a location, a menu click (its key is the command), or the press
of a card button (``template_card_event``: the button's key is the core's option token, so an old
card is answered stale by the core). Its event key drops WeCom's retries: the MsgId; for events
member + CreateTime + Event + EventKey; for a press the card's TaskId + ResponseCode.

One POST per callback, answered within WeCom's 5 seconds:

1. the checks of ``handlers.wecom.crypto`` (size, timestamp, signature, XML, corp id, agent):
   a refusal is a 4xx and changes nothing;
2. ``core.dispatch`` handles the event; inside its transaction (``before_commit``) the replies are
   rendered (``handlers.wecom.render``) and the answer is stored for the event key
   (``Outcome.rendered``, kept by the core), so a retry gets the very same answer and creates nothing.
   Plain text answers to a message go back as the passive reply (encrypted XML); a press whose
   answer is the next question alone is answered passively with that question's card in the
   pressed card's place (update_template_card), any other press by greying out the pressed card's
   buttons with the choice (update_button); cards, files and whatever else goes through the send
   API: the calls are written to the outbox as one row (kind "reply") in the same transaction, and
   the app's reply pump sends them at once;
3. after WECOM_REPLY_DEADLINE_SECONDS the request answers empty and the same hook writes the text
   to the outbox too; which of the two answers is decided once, under a lock.

The channel opens no database session and runs no SQL of its own: storage functions do, in the
core's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.enterprise.messages import ImageMessage, LocationMessage, TextMessage

from bot import texts
from bot.config import Settings
from bot.core.dialogue import Context
from bot.core.engine import Engine
from bot.core.geo import GCJ02
from bot.core.types import Inbound, Location, Outcome
from handlers.wechat.channel import _text, fetch_photo, pack
from handlers.wecom import render
from handlers.wecom.crypto import (MAX_BODY_BYTES, Cipher, Refused, button_reply, card_reply, check_timestamp, parse_xml,
                                   text_reply)
from bot.core import outbox
from storage.wecom import CHANNEL, mark_replies_sent, queue_reply

if TYPE_CHECKING:
    from handlers.wecom.transport import ReplyPump

log = logging.getLogger(__name__)

_COMMAND_KEY = re.compile(r"[a-z_]{1,20}")


class Unsupported:
    """A message type the bot does not take (voice, video, file, link...)."""


UNSUPPORTED = Unsupported()


def to_inbound(fields: dict[str, str]) -> tuple[Inbound | Unsupported | None, str | None]:
    """Our Inbound for a WeCom callback (None: nothing to answer), and a press's response code."""
    user = fields.get("FromUserName", "")
    if not user or len(user) > 64:
        return None, None
    base = {"channel": CHANNEL, "user_id": user}
    created = fields.get("CreateTime", "")
    kind = fields.get("MsgType", "").lower()
    if kind == "event":
        event, key = fields.get("Event", ""), fields.get("EventKey", "")
        if event == "template_card_event":
            code = fields.get("ResponseCode", "")
            event_key = f"card:{fields.get('TaskId', '')}:{code}" if code else f"{user}:{created}:{event}:{key}"
            if not key or len(key) > 64:
                return None, None
            return Inbound(token=key, event_key=event_key[:100], **base), code or None
        base["event_key"] = f"{user}:{created}:{event}:{key}"[:100]
        if event.lower() == "click" and _COMMAND_KEY.fullmatch(key):
            return Inbound(command=key, **base), None
        return None, None  # enter_agent, view, location reports, member changes...
    base["event_key"] = fields.get("MsgId") or f"{user}:{created}:{kind}"
    if kind == "text":
        return _text(TextMessage(fields).content or "", base), None
    if kind == "image":
        media = ImageMessage(fields).media_id
        return (Inbound(photo_ref=f"wecom:{media}"[:300], **base) if media else UNSUPPORTED), None
    if kind == "location":
        message = LocationMessage(fields)
        try:
            # WeCom's locations are GCJ-02 (火星坐标), from Tencent's map, as WeChat's are.
            return Inbound(location=Location(float(message.location_x), float(message.location_y), datum=GCJ02),
                           **base), None
        except (TypeError, ValueError):
            return UNSUPPORTED, None
    return UNSUPPORTED, None


class _Answer:
    """Who answers one event: the passive reply ("inline") or the outbox, decided once under a lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.mode: str | None = None
        self.xml: str | None = None
        self.queued = False  # calls were written to the outbox unclaimed: the pump's batch should run
        self.handoff: tuple | None = None  # a row written claimed by the pump: handed over once committed
        self.marks: list[str] | None = None  # rows the pump delivered, marked sent in this event's transaction
        self.settled = False  # the core ran the hook: the answer is stored with the event

    def claim(self, mode: str) -> str:
        with self._lock:
            if self.mode is None:
                self.mode = mode
            return self.mode


class WeComChannel:
    """The callback URL of one WeCom app, bound to the core. ``pump``: the web process's reply pump
    (``handlers.wecom.transport.ReplyPump``), which sends a callback's answer from memory once its
    transaction committed, and runs the outbox's batch for rows written unclaimed; without it the
    worker sends them. ``media``: fetches a picture a member sent (``WeComApi.media``), so the core
    gets the photo itself."""

    def __init__(self, core: Engine, settings: Settings, *, pump: "ReplyPump | None" = None,
                 media: Callable[[str, int], bytes] | None = None):
        self.core, self.settings, self.pump, self.media = core, settings, pump, media
        self.corp_id = settings.wecom_corp_id or ""
        self.agent_id = int(settings.wecom_agent_id or 0)
        self.cipher = Cipher(settings.wecom_token.get_secret_value(), settings.wecom_aes_key.get_secret_value(),
                             self.corp_id)
        self._pumping: asyncio.Task | None = None
        self._again = False
        self._late: set[asyncio.Future] = set()

    def routes(self) -> list[Route]:
        return [Route(self.settings.wecom_webhook_path, self.endpoint, methods=["GET", "POST"])]

    # -- HTTP --------------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """GET: WeCom checks the URL (encrypted echostr). POST: one callback, answered encrypted or empty."""
        try:
            if request.method == "GET":
                return self._verify(request)
            return await self._post(request)
        except Refused as refused:
            log.info("wecom request refused: %s", refused.reason)
            return PlainTextResponse(refused.reason, status_code=refused.status)

    def _timestamp(self, request: Request) -> tuple[str, str]:
        query = request.query_params
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        check_timestamp(timestamp, self.core.clock().timestamp(), self.settings.wecom_timestamp_tolerance_seconds)
        return timestamp, nonce

    def _verify(self, request: Request) -> Response:
        timestamp, nonce = self._timestamp(request)
        query = request.query_params
        return PlainTextResponse(self.cipher.echo(query.get("msg_signature"), timestamp, nonce, query.get("echostr", "")))

    async def _post(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise Refused(413, "too large")
        timestamp, nonce = self._timestamp(request)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise Refused(413, "too large")
        envelope = parse_xml(bytes(body))
        fields = parse_xml(self.cipher.open(envelope, request.query_params.get("msg_signature"), timestamp, nonce))
        if fields.get("ToUserName", "") != self.corp_id:
            raise Refused(400, "wrong corp id")
        agent = fields.get("AgentID", "")
        if agent and agent != str(self.agent_id):
            raise Refused(400, "another app")
        if not fields.get("MsgType"):
            raise Refused(400, "not a WeCom message")
        try:
            xml = await self.answer(fields)
        except Exception:
            log.exception("wecom callback %s failed", fields.get("MsgId") or fields.get("CreateTime"))
            return PlainTextResponse("error", status_code=500)  # WeCom tries again; nothing was stored
        if xml is None:
            return PlainTextResponse("")
        return Response(self.cipher.seal(xml, str(int(time.time()))), media_type="application/xml")

    # -- answering ----------------------------------------------------------------------------

    def _passive(self, user: str, content: str) -> str:
        return text_reply(to_user=user, corp_id=self.corp_id, agent_id=self.agent_id, content=content,
                          now=int(self.core.clock().timestamp()))

    async def answer(self, fields: dict[str, str]) -> str | None:
        """The plain reply XML for one callback, or None for an empty answer (none, or sent by API)."""
        inbound, code = to_inbound(fields)
        if inbound is None:
            return None
        if isinstance(inbound, Unsupported):
            return self._passive(fields["FromUserName"], texts.WECOM_UNSUPPORTED)
        inbound = await fetch_photo(self.media, inbound)
        answer = _Answer()
        hook = partial(self._settle, inbound=inbound, code=code, answer=answer)
        job = asyncio.ensure_future(self.core.dispatch(inbound, before_commit=hook))
        try:
            outcome: Outcome = await asyncio.wait_for(asyncio.shield(job), self.settings.wecom_reply_deadline_seconds)
        except asyncio.TimeoutError:
            if answer.claim("outbox") == "outbox":
                self._late.add(job)
                job.add_done_callback(partial(self._late_done, inbound.event_key, answer))
                return None
            outcome = await self._committed(job, answer)  # the core claimed the passive reply just in time
        except BaseException:
            self._marks_lost(answer)
            raise
        if outcome.duplicate:
            self._marks_lost(answer)
            return outcome.rendered or None  # the very answer given the first time ("": sent by the API)
        if not answer.settled:
            self._marks_lost(answer)
        self._send(answer)
        if not answer.settled and outcome.replies:
            # The core gave up before its commit (another event of this member won a race): nothing
            # was stored, so the answer is not kept either.
            return self._passive(inbound.user_id, pack([render.as_text(r) for r in outcome.replies])[0])
        return answer.xml

    async def _committed(self, job: asyncio.Future, answer: _Answer) -> Outcome:
        try:
            return await job
        except BaseException:
            self._marks_lost(answer)
            raise

    def _marks_lost(self, answer: _Answer) -> None:
        """The event's transaction did not commit (or ran no hook): its marks are taken again later."""
        if answer.marks and self.pump is not None:
            self.pump.give_back(answer.marks)
        answer.marks = None

    def _late_done(self, event_key: str, answer: _Answer, job: asyncio.Future) -> None:
        self._late.discard(job)
        if job.cancelled() or job.exception() is not None:
            self._marks_lost(answer)
            log.error("wecom event %s failed after its deadline; the member got no answer", event_key,
                      exc_info=None if job.cancelled() else job.exception())
        elif job.result().duplicate or not answer.settled:
            self._marks_lost(answer)
        else:
            self._send(answer)

    def _send(self, answer: _Answer) -> None:
        """The committed answer's API calls on their way: handed to the pump, or its batch run."""
        if answer.handoff is not None and self.pump is not None:
            self.pump.hand(*answer.handoff)
        if answer.queued:
            self.kick()

    def _settle(self, ctx: Context, outcome: Outcome, *, inbound: Inbound, code: str | None, answer: _Answer) -> None:
        """In the core's transaction: the answer rendered and stored for retries, and what goes by
        the send API written to the outbox (one row per callback, its calls in order)."""
        now = self.core.clock()
        key = inbound.event_key
        replies = outcome.replies
        duplicate_check = self.settings.wecom_duplicate_check_seconds
        inline = answer.claim("inline") == "inline"
        xml = None
        if code:  # a press: the card replaced by the next question, or greyed out with the choice
            calls = render.actions(replies, touser=inbound.user_id, agent_id=self.agent_id, event_key=key,
                                   duplicate_check=duplicate_check)
            card = None if outcome.stale else render.only_card(calls)
            if card is not None:  # the next question and nothing else: it takes the pressed card's place
                if outcome.chosen:
                    card = {"card_type": card.pop("card_type"), "source": {"desc": render.cut(
                        texts.WECOM_CARD_CHOSEN_SOURCE.format(label=outcome.chosen), render.SOURCE_DESC_MAX)}, **card}
                if inline:
                    xml = card_reply(to_user=inbound.user_id, corp_id=self.corp_id, card=card, now=int(now.timestamp()))
                    calls = []
                else:
                    calls = [render.replace_card(code, card, touser=inbound.user_id, agent_id=self.agent_id)]
            elif not outcome.stale:  # texts, or more than a card: the pressed card greyed out, the rest sent
                shown = render.cut(texts.WECOM_CARD_CHOSEN.format(label=outcome.chosen) if outcome.chosen
                                   else texts.WECOM_CARD_DONE, render.BUTTON_TEXT_MAX)
                if inline:
                    xml = button_reply(to_user=inbound.user_id, corp_id=self.corp_id, replace_name=shown,
                                       now=int(now.timestamp()))
                else:
                    calls.insert(0, render.grey_card(code, shown, touser=inbound.user_id, agent_id=self.agent_id))
            # A stale press changes no card: the card it came from may already hold the question to answer
            # now (a second press that raced the first one's update); the member is told by a text.
        elif inline and replies and not any(render.has_card(r) or r.files for r in replies):
            parts = pack([render.as_text(r) for r in replies], render.TEXT_ROOM)  # room for the marks
            xml = self._passive(inbound.user_id, parts[0])
            calls = [{"path": render.SEND, "body": render.text_message(inbound.user_id, self.agent_id, part,
                                                                      duplicate_check, key=key, index=index)}
                     for index, part in enumerate(parts[1:])]
        else:
            calls = render.actions(replies, touser=inbound.user_id, agent_id=self.agent_id, event_key=key,
                                   duplicate_check=duplicate_check)
        files = [outbox.Attachment(f.filename, f.content_type, f.content) for r in replies for f in r.files]
        summary = "\n".join(filter(None, map(_summary, calls)))
        if files:
            outbox.enqueue(ctx.session, key=f"wecom-reply:{key}", kind="reply", channel=CHANNEL,
                           recipient=inbound.user_id, body=summary, now=now, settings=self.settings,
                           payload={"wecom": calls}, attachments=files)
        answer.handoff = None
        if self.pump is not None:
            if answer.marks is None:  # once per event: a second run of the hook (a retried transaction) keeps them
                answer.marks = self.pump.take_marks()
            if answer.marks:
                mark_replies_sent(ctx.db, answer.marks, self.pump.worker, now)
        if files:
            answer.queued = True
        elif calls and self.pump is not None:
            holder, until = self.pump.claim(now)
            if queue_reply(ctx.db, key=f"wecom-reply:{key}", recipient=inbound.user_id, body=summary, calls=calls,
                           now=now, claimed_by=holder, claimed_until=until):
                answer.handoff = (f"wecom-reply:{key}", inbound.user_id, calls, until)
        elif calls:
            queue_reply(ctx.db, key=f"wecom-reply:{key}", recipient=inbound.user_id, body=summary, calls=calls, now=now)
        outcome.rendered = xml or ""  # kept with the event by the core, for WeCom's retries
        answer.xml, answer.settled = xml, True

    # -- the reply pump -----------------------------------------------------------------------

    def kick(self) -> None:
        """Runs the pump's batch now, or once more after the run under way (rows written meanwhile)."""
        if self.pump is None:
            return
        if self._pumping is not None and not self._pumping.done():
            self._again = True
            return
        self._pumping = asyncio.get_running_loop().create_task(self._pump_loop())

    async def _pump_loop(self) -> None:
        while True:
            self._again = False
            try:
                handled = await self.pump.run_once()
            except Exception:
                log.exception("wecom reply pump failed; the worker will send the rows")
                handled = 0
            if not handled and not self._again:
                return  # nothing due (rows waiting for a retry are the worker's, or the next kick's)

    async def drain(self) -> None:
        """Waits for answers past their deadline and the pump (the app's shutdown, tests)."""
        while self._late or (self._pumping is not None and not self._pumping.done()):
            await asyncio.gather(*self._late, *( [self._pumping] if self._pumping else []), return_exceptions=True)
        if self.pump is not None:
            await self.pump.drain()


def _summary(call: dict) -> str:
    """What an outbox row says in `python -m bot outbox`."""
    body = call.get("body") or {}
    if body.get("msgtype") == "text":
        return render.unmarked(body["text"]["content"])
    if "template_card" in body:  # a card sent, or one that takes a pressed card's place
        card = body["template_card"]
        return "\n".join(filter(None, [card.get("sub_title_text"), card["main_title"]["title"]]))
    return texts.WECOM_CARD_DONE if call.get("path") == render.UPDATE_CARD else ""
