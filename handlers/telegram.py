"""Telegram channel: translates PTB updates into ``Inbound`` and renders ``Reply`` back.

The conversation itself lives in the core; this module only parses, renders and sends. Choices
become inline keyboards whose callback data are the core's short opaque tokens; a contact or a
location request becomes a one-time reply keyboard. A pressed button's message is edited to show
what was chosen and, where it can, the answer with its buttons (``_grown``), so old keyboards do
not linger and a checklist walked by buttons reads as one message.

Long polling is PTB's own Updater; webhook mode is served by our ASGI app (bot.app), which calls
``TelegramChannel.process`` directly and answers 500 when the core failed, so Telegram redelivers
and the update is not lost (the core drops the redelivery if the first attempt did commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from dataclasses import replace
import time

from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.request import HTTPXRequest

from bot import texts
from bot.config import Settings
from bot.core.engine import Engine
from bot.core.features import REGISTRY
from bot.core.types import Inbound, Location, Outcome, Reply, SharedContact
from scheduler.outbox import Claimed
from scheduler.sender import SENT, Delivery

log = logging.getLogger(__name__)

CHANNEL = "telegram"
ALLOWED_UPDATES = ["message", "callback_query"]
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10_000_000
ERROR_TEXT = "系统繁忙，请稍后再试。"
FIRST_TRY_SECONDS = 15  # the first connection attempt holds the server's start this long at most

def bot_commands(role: str | None, *, bound: bool) -> list[BotCommand]:
    """Telegram's command menu for users of a role, from the list of features (bot.core.features)."""
    return [BotCommand(name, description) for name, description in REGISTRY.commands_for(role, bound=bound)]


BOT_COMMANDS = bot_commands(None, bound=False)  # everyone's menu; a bound user's chat gets their role's


def _short(exc: BaseException | None) -> str:
    """An error in one line for the operator's log: its kind and message, no traceback."""
    if exc is None:
        return ""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


class _WatchedRequest(HTTPXRequest):
    """PTB's HTTP client for getUpdates, telling the channel whether each poll got an answer."""

    def __init__(self, on_result, **kwargs):
        super().__init__(**kwargs)
        self._on_result = on_result

    async def do_request(self, *args, **kwargs):
        try:
            code, payload = await super().do_request(*args, **kwargs)
        except Exception:
            self._on_result(False)
            raise
        self._on_result(200 <= code < 300)
        return code, payload


def to_inbound(update: Update) -> Inbound | None:
    """Our Inbound for a private-chat message or button press; None for anything else."""
    chat = update.effective_chat
    user = update.effective_user
    if chat is None or user is None or chat.type != ChatType.PRIVATE or user.is_bot:
        return None
    base = {"channel": CHANNEL, "user_id": str(user.id), "event_key": str(update.update_id),
            "display_name": user.full_name}
    query = update.callback_query
    if query is not None:
        return Inbound(token=(query.data or "")[:64], **base)
    message = update.message
    if message is None:
        return None  # edited messages, channel posts, membership changes
    if message.contact is not None:
        contact = message.contact
        return Inbound(contact=SharedContact(contact.phone_number, str(contact.user_id) if contact.user_id else None),
                       **base)
    # A forwarded photo or location is someone else's: kept, but no evidence of a visit.
    base["forwarded"] = getattr(message, "forward_origin", None) is not None
    if message.photo:
        return Inbound(photo_ref=f"telegram:{message.photo[-1].file_id}", **base)
    if message.location is not None:
        spot = message.location
        return Inbound(location=Location(spot.latitude, spot.longitude, accuracy=spot.horizontal_accuracy,
                                         note="forwarded" if base["forwarded"] else None), **base)
    text = message.text or message.caption or ""
    if text.startswith("/"):
        head, _, args = text[1:].partition(" ")
        command = head.split("@", 1)[0].lower()
        if command:
            return Inbound(command=command, args=args.strip(), **base)
    return Inbound(text=text, **base)


def render(reply: Reply):
    """The text and keyboard markup Telegram gets for one reply."""
    text = reply.text if len(reply.text) <= MAX_TEXT else reply.text[:MAX_TEXT - 1] + "…"
    if reply.request_contact:
        markup = ReplyKeyboardMarkup([[KeyboardButton(texts.SHARE_CONTACT_BUTTON, request_contact=True)]],
                                     resize_keyboard=True, one_time_keyboard=True)
    elif reply.request_location:
        # A location can only be asked for by a reply keyboard; its other buttons send their labels,
        # which the core accepts as answers too.
        rows = [[KeyboardButton(texts.LOCATION_BUTTON, request_location=True)]]
        rows += [[KeyboardButton(option.label) for option in row] for row in reply.options]
        markup = ReplyKeyboardMarkup(rows, resize_keyboard=True, one_time_keyboard=True)
    elif reply.options:
        markup = _inline_keyboard(reply)
    else:
        markup = ReplyKeyboardRemove()
    return text, markup


def _grown(marked: str, reply: Reply) -> tuple[str, InlineKeyboardMarkup | None] | None:
    """The pressed message grown by the answer to the press: its text, the choice (➤), then the
    reply, with the reply's buttons. A checklist walked by buttons thus stays one message that grows
    answer by answer, one request per press instead of an edit and a send. None for a reply that
    needs a reply keyboard (contact, location) or carries files, or that would grow the message
    past Telegram's limit: it goes as a new message."""
    if reply.request_contact or reply.request_location or reply.files:
        return None
    text = f"{marked}\n\n{reply.text}"
    if len(text) > MAX_TEXT:
        return None
    return text, _inline_keyboard(reply) if reply.options else None


def _inline_keyboard(reply: Reply) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(o.label, callback_data=o.token) for o in row]
                                 for row in reply.options])


class TelegramChannel:
    """Binds one PTB Application to the core."""

    def __init__(self, core: Engine, settings: Settings, *, webhook: bool):
        self.core = core
        self.settings = settings
        token = settings.telegram_bot_token.get_secret_value()
        base = settings.telegram_api_base_url.rstrip("/")
        builder: ApplicationBuilder = (
            Application.builder().token(token).base_url(f"{base}/bot").base_file_url(f"{base}/file/bot")
        )
        if webhook:
            builder = builder.updater(None)
        else:
            builder = builder.get_updates_request(_WatchedRequest(self._on_poll_result, connection_pool_size=1))
        self.application = builder.build()
        self.application.add_handler(TypeHandler(Update, self._on_update))
        self._menus: dict[int, tuple[bool, str | None]] = {}  # chat -> the menu it was given (see _follow_role)
        self.state, self.detail = "down", "未启动"
        self._starting: asyncio.Task | None = None
        self._poll_failures = 0
        self._poll_wait = 0.0
        from scheduler.budget import bot_limiter

        self.limiter = bot_limiter(settings, channel=CHANNEL, engine=core.db)

    async def start(self) -> None:
        """Connects once; if the Bot API cannot be reached, keeps trying in the background and
        returns, so the HTTP server (rating page, webhooks) serves whatever the messenger does.
        Until connected the channel is ``down`` (see ``health``)."""
        from telegram.error import InvalidToken

        self._set_state("down", "正在连接 Telegram")
        try:
            await asyncio.wait_for(self._start_once(), FIRST_TRY_SECONDS)
            return
        except InvalidToken:
            self._token_rejected()
            return
        except (Exception, asyncio.TimeoutError) as exc:
            self._start_failed(1, exc, 1.0)
        self._starting = asyncio.get_running_loop().create_task(self._start_until_connected(),
                                                                name="telegram-start")

    def _start_failed(self, attempt: int, exc: BaseException | None, wait: float) -> None:
        error = _short(exc)
        self._set_state("down", f"无法连接：{error}")
        log.warning("Telegram 渠道启动失败（第 %d 次）：%s；%.0f 秒后重试", attempt, error, wait,
                    extra={"channel": CHANNEL, "retry_in": wait})

    def _token_rejected(self) -> None:
        self._set_state("down", "TELEGRAM_BOT_TOKEN 被 Telegram 拒绝")
        log.error("TELEGRAM_BOT_TOKEN 被 Telegram 拒绝：请用 @BotFather 给出的令牌，改后重启。Telegram 渠道未启用，"
                  "评价页照常服务。", extra={"channel": CHANNEL})

    async def _start_until_connected(self) -> None:
        """Tries to start until it succeeds: one log line per failed try, waits of 1, 2, 4 … up to
        CHANNEL_RETRY_MAX_SECONDS (tenacity's exponential wait). A rejected token is not retried."""
        from telegram.error import InvalidToken
        from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential

        await asyncio.sleep(1.0)
        try:
            async for attempt in AsyncRetrying(
                    wait=wait_exponential(multiplier=2, min=2, max=self.settings.channel_retry_max_seconds),
                    retry=retry_if_not_exception_type(InvalidToken),
                    before_sleep=lambda state: self._start_failed(
                        state.attempt_number + 1, state.outcome.exception(),
                        state.next_action.sleep if state.next_action else 0),
                    reraise=True):
                with attempt:
                    await self._start_once()
        except InvalidToken:
            self._token_rejected()

    async def _start_once(self) -> None:
        """Starts PTB and either registers the webhook or begins long polling."""
        application = self.application
        await application.initialize()
        if not application.running:
            await application.start()
        try:
            await application.bot.set_my_commands(BOT_COMMANDS)
        except Exception as exc:  # a menu is a convenience; the bot works without it
            log.warning("Telegram 菜单（setMyCommands）设置失败：%s", _short(exc))
        settings = self.settings
        if settings.telegram_webhook_url:
            await application.bot.set_webhook(
                settings.telegram_webhook_url, secret_token=settings.telegram_webhook_secret.get_secret_value(),
                allowed_updates=ALLOWED_UPDATES)
        else:
            await application.bot.delete_webhook()
            await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES,
                                                    error_callback=self._on_poll_error)
        self._set_state("ok", "webhook" if settings.telegram_webhook_url else "polling")
        log.info("Telegram 渠道已启动（%s）", "webhook" if settings.telegram_webhook_url else "长轮询",
                 extra={"channel": CHANNEL})

    def _on_poll_error(self, exc) -> None:
        """One line per failed poll; PTB's own loop retries after 1 s, then 1.5 times longer each
        time, up to 30 s. ``degraded`` at first, ``down`` from the third failure in a row."""
        self._poll_failures += 1
        self._poll_wait = 1.0 if self._poll_failures == 1 else min(30.0, self._poll_wait * 1.5)
        error = _short(exc)
        self._set_state("degraded" if self._poll_failures < 3 else "down", f"拉取消息失败：{error}")
        log.warning("Telegram 拉取消息失败（连续第 %d 次）：%s；约 %.0f 秒后重试", self._poll_failures, error,
                    self._poll_wait, extra={"channel": CHANNEL, "retry_in": self._poll_wait})

    def _on_poll_result(self, ok: bool) -> None:
        """Every getUpdates answer: a success after failures brings the channel back to ``ok``."""
        if ok and self._poll_failures:
            log.info("Telegram 连接已恢复（此前连续失败 %d 次）", self._poll_failures, extra={"channel": CHANNEL})
            self._poll_failures = 0
            self._set_state("ok", "polling")

    def _set_state(self, state: str, detail: str) -> None:
        from bot import metrics

        self.state, self.detail = state, detail
        metrics.set_channel_state(CHANNEL, state)

    def health(self) -> dict:
        """``{"state": ok | degraded | down, "detail": ...}`` for /readyz."""
        return {"state": self.state, "detail": self.detail}

    def _slot(self, chat_id):
        """The reply's place in the shared budget (``reply_slot``), unless TELEGRAM_REPLY_BUDGET is off."""
        return self.reply_slot(chat_id) if self.settings.telegram_reply_budget else contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def reply_slot(self, chat_id):
        """Holds one place in the bot's limits for a direct reply to ``chat_id``, shared with the
        outbox senders of every process (replies may use places bulk sends leave free)::

            async with channel.reply_slot(chat_id):
                await bot.send_message(chat_id, text)

        Wrap each Bot API call that puts or edits a message in a chat."""
        key = f"reply:{chat_id}"  # the overall budget, not the per-chat spacing (scheduler.budget.REPLY_PREFIX)
        ticket = await self.limiter.acquire(key, reply=True)
        try:
            yield
        finally:
            finished = self.limiter.done(key, ticket)
            if inspect.isawaitable(finished):
                await finished

    async def stop(self) -> None:
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        application = self.application
        with contextlib.suppress(Exception):  # never connected, or the API went away: nothing to hand back
            if application.updater is not None and application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()
        with contextlib.suppress(Exception):
            await application.shutdown()

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Handles an update fetched by long polling."""
        try:
            await self.process(update, polling=True)
        except Exception:
            log.exception("update %s failed", update.update_id)
            if update.effective_chat and update.effective_chat.type == ChatType.PRIVATE:
                await context.bot.send_message(update.effective_chat.id, ERROR_TEXT)

    async def process(self, update: Update, *, webhook_answer: bool = False, polling: bool = False) -> dict | None:
        """Passes one update to the core and delivers what it answers; raises if that fails.

        An answer the core gave is delivered or raised about: a 429 is waited out (``retry_after``)
        and a 5xx or a network error tried again (``_call``); if it still fails, the webhook answers
        500 and Telegram's redelivery of the update brings the stored answer back (``Outcome.resend``),
        so the user never stays at a step they were not shown. In long polling Telegram does not
        deliver an update twice: the answer goes to the outbox instead, as plain numbered text.

        With ``webhook_answer`` (webhook mode), a pressed button is not answered by a request of its
        own: the answerCallbackQuery is returned, for the webhook to put in the body of its HTTP
        answer, where Telegram carries it out (one request less per press; its result is never
        known, which for stopping the button's spinner does not matter).
        """
        try:
            inbound = to_inbound(update)
        except Exception as exc:  # valid JSON, but not what the Bot API sends (a number for a text...)
            log.warning("update %s is malformed and was ignored: %r", update.update_id, exc)
            return None  # answered 200: Telegram would otherwise send it again forever
        if inbound is None:
            return None
        if inbound.photo_ref is not None:
            inbound = replace(inbound, photo=await self._fetch_photo(update))
        outcome = await self.core.dispatch(inbound)
        replies = list(outcome.replies)
        if outcome.duplicate:
            if not outcome.resend:
                return None  # answered and delivered before: nothing at all to do
            replies = [_resent(reply) for reply in outcome.resend]
        query = update.callback_query
        answer = None
        if query is not None and webhook_answer:
            answer = {"method": "answerCallbackQuery", "callback_query_id": query.id}
            if outcome.stale:
                answer["text"] = texts.STALE_BUTTON
        try:
            await self._deliver(update, outcome, replies, answer is None)
        except (BadRequest, Forbidden) as exc:
            # Final (the chat is gone, the bot blocked): a redelivery could not do better. The press is
            # still answered, and the event counts as answered.
            log.warning("update %s: the answer cannot be delivered: %s", update.update_id, exc)
        except Exception:
            if not polling:
                raise
            log.exception("update %s: the answer could not be delivered; it goes through the outbox",
                          update.update_id)
            await self.core.defer(inbound, replies)
            return None
        await self.core.confirm(inbound)
        await self._follow_role(update, outcome)
        return answer

    async def _deliver(self, update: Update, outcome: Outcome, replies: list[Reply], answer_press: bool) -> None:
        """The replies sent, the pressed message edited (and the press answered, unless the webhook's
        HTTP answer does it)."""
        bot = self.application.bot
        query = update.callback_query
        chat_id = update.effective_chat.id
        if query is not None:
            notice = texts.STALE_BUTTON if outcome.stale else None
            if answer_press:
                try:
                    await _call(lambda: query.answer(notice))  # no message: outside the budget
                except BadRequest as exc:  # a query too old to answer: its spinner has stopped anyway
                    log.info("could not answer the press: %s", exc)
            message = query.message
            shown = getattr(message, "text", None) if message is not None else None
            try:
                if shown and outcome.chosen:
                    marked = f"{shown}\n➤ {outcome.chosen}"
                    grown = _grown(marked, replies[0]) if replies else None
                    if grown is not None:
                        text, markup = grown
                        async with self._slot(chat_id):
                            await _call(lambda: query.edit_message_text(text, reply_markup=markup))
                        replies = replies[1:]
                    else:
                        async with self._slot(chat_id):
                            await _call(lambda: query.edit_message_text(marked[:MAX_TEXT]))
                elif shown and outcome.stale:
                    async with self._slot(chat_id):
                        await _call(lambda: query.edit_message_reply_markup(None))
            except BadRequest as exc:  # too old to edit, or edited already: the answer goes as a new message
                log.info("could not edit the pressed message: %s", exc)
        for reply in replies:
            text, markup = render(reply)
            async with self._slot(chat_id):
                await _call(lambda: bot.send_message(chat_id, text, reply_markup=markup))
            for file in reply.files:
                async with self._slot(chat_id):
                    if file.is_image:
                        await _call(lambda: bot.send_photo(chat_id, photo=file.content, filename=file.filename))
                    else:
                        await _call(lambda: bot.send_document(chat_id, document=file.content, filename=file.filename))

    async def _fetch_photo(self, update: Update) -> bytes | None:
        """The picture itself (its largest size, up to ``MAX_PHOTO_BYTES``), for the visit's evidence;
        None when Telegram cannot give it now (the photo is kept by reference all the same)."""
        size = update.message.photo[-1]
        if size.file_size and size.file_size > MAX_PHOTO_BYTES:
            return None
        try:
            file = await _call(lambda: self.application.bot.get_file(size.file_id))
            content = bytes(await _call(lambda: file.download_as_bytearray()))
        except Exception as exc:
            log.info("photo %s could not be fetched: %s", size.file_unique_id, exc)
            return None
        return content if len(content) <= MAX_PHOTO_BYTES else None

    async def _follow_role(self, update: Update, outcome: Outcome) -> None:
        """Gives a user who is bound (or whose role changed) the command menu of their role, once per
        process, after the answer went out: a menu is a convenience and never holds up an answer. Not
        in a task of its own: requests beside the updates' own would grow the HTTP pool, which every
        later request then scans (httpx checks each idle connection)."""
        chat_id = update.effective_chat.id
        audience = outcome.audience
        if audience is None or self._menus.get(chat_id, (False, None)) == audience:
            return
        self._menus[chat_id] = audience
        if len(self._menus) > 100_000:
            self._menus.clear()
        await self._set_chat_menu(chat_id, audience)

    async def _set_chat_menu(self, chat_id: int, audience: tuple[bool, str | None]) -> None:
        bound, role = audience
        try:
            await self.application.bot.set_my_commands(bot_commands(role, bound=bound),
                                                       scope=BotCommandScopeChat(chat_id))
        except Exception as exc:
            log.info("setMyCommands for chat %s failed: %s", chat_id, exc)


REPLY_ATTEMPTS = 3
REPLY_MAX_WAIT = 10.0  # longer than this Telegram asks us to wait: give up, the redelivery will come
REPLY_BACKOFF = (0.5, 1.5)


async def _call(make):
    """One Bot API request for a direct reply, tried up to ``REPLY_ATTEMPTS`` times: after a 429 as
    long as ``retry_after`` says (up to ``REPLY_MAX_WAIT``), after a 5xx or a network error with a
    short backoff. A 400 or 403 is final. (PTB's AIORateLimiter would do the 429 part, but it throttles
    every request of the bot, the outbox's too, which keeps its own limits and retries.) A request
    that timed out may have arrived: tried again, the user may see that message twice."""
    for attempt in range(REPLY_ATTEMPTS):
        last = attempt == REPLY_ATTEMPTS - 1
        try:
            return await make()
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)
            if last or seconds > REPLY_MAX_WAIT:
                raise
            await asyncio.sleep(seconds)
        except (BadRequest, Forbidden):
            raise
        except (TimedOut, NetworkError):
            if last:
                raise
            await asyncio.sleep(REPLY_BACKOFF[attempt])


def _resent(reply: Reply) -> Reply:
    """A stored answer sent again: its files were not kept (exports are asked for again)."""
    if not reply.files_dropped:
        return reply
    return Reply(reply.text + "\n" + texts.FILES_NOT_RESENT.format(count=reply.files_dropped), options=reply.options,
                 request_contact=reply.request_contact, request_location=reply.request_location)


class TelegramTransport:
    """Delivers outbox rows with the Bot API, translating its errors into delivery results."""

    channel = CHANNEL

    def __init__(self, bot: Bot, settings: Settings, limiter=None, *, engine=None):
        """``limiter``: the channel's (``TelegramChannel.limiter``), so replies and sends share one
        budget; else this deployment's (``scheduler.budget.bot_limiter``)."""
        from scheduler.budget import bot_limiter

        self.bot = bot
        self.limiter = limiter if limiter is not None else bot_limiter(settings, channel=CHANNEL, engine=engine)

    async def deliver(self, message: Claimed) -> Delivery:
        chat_id = int(message.recipient)
        try:
            await self.bot.initialize()  # at once when done; a Bot API still unreachable is a retry below
            images = [a for a in message.attachments if a.content_type.startswith("image/")]
            files = [a for a in message.attachments if not a.content_type.startswith("image/")]
            if images and not files and len(images) == 1:
                # One call, so a retry can never repeat half of the message.
                await self.bot.send_photo(chat_id, photo=images[0].content, filename=images[0].filename,
                                          caption=message.body[:MAX_CAPTION])
            elif files and not images and len(files) == 1:
                await self.bot.send_document(chat_id, document=files[0].content, filename=files[0].filename,
                                             caption=message.body[:MAX_CAPTION])
            else:
                text = message.body if len(message.body) <= MAX_TEXT else message.body[:MAX_TEXT - 1] + "…"
                await self.bot.send_message(chat_id, text)
                for attachment in message.attachments:
                    await self.bot.send_document(chat_id, document=attachment.content, filename=attachment.filename)
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)
            return Delivery("retry", retry_after=seconds, error=f"429: {exc.message}")
        except Forbidden as exc:
            return Delivery("unreachable", error=f"403: {exc.message}")
        except BadRequest as exc:
            if "chat not found" in exc.message.lower() or "user is deactivated" in exc.message.lower():
                return Delivery("unreachable", error=f"400: {exc.message}")
            return Delivery("failed", error=f"400: {exc.message}")
        except (TimedOut, NetworkError) as exc:  # PTB reports 5xx as NetworkError
            return Delivery("retry", error=f"network: {exc.message}")
        return SENT
