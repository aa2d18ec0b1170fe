"""Proves the Telegram Bot API stand-in works with the real python-telegram-bot over loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime as dtm
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    RetryAfter,
)
from telegram.warnings import PTBDeprecationWarning
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.standins.server import ServedApp
from tests.standins.telegram_api import TelegramStandin

TOKEN = "123456:ABCDEFabcdef_ghijklmnopqrstuvwxyz01"  # digits:35 chars, like a real one


# PTB 22.8 warns whenever RetryAfter reads retry_after, even inside its own constructor.
pytestmark = [pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning"),
              pytest.mark.telegram_standin(token=TOKEN)]


def make_bot(tg: TelegramStandin, token: str = TOKEN) -> Bot:
    return Bot(token, base_url=f"{tg.url}/bot", base_file_url=f"{tg.url}/file/bot")


# --------------------------------------------------------------------------- polling app


async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Yes", callback_data="yes"),
          InlineKeyboardButton("No", callback_data="no")]])
    await update.effective_message.reply_text(
        f"welcome {' '.join(context.args)}".strip(), reply_markup=keyboard)


async def on_share(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    keyboard = ReplyKeyboardMarkup([[KeyboardButton("Share phone", request_contact=True)]],
                                   one_time_keyboard=True)
    await update.effective_message.reply_text("please share", reply_markup=keyboard)


async def on_file(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_document(
        document=b"report-bytes", filename="report.txt", caption="<b>Report</b> &amp; more",
        parse_mode=ParseMode.HTML,
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="again")]]))


async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer(f"got {query.data}")
    await query.edit_message_text(f"pressed {query.data}")


async def describe(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message.contact:
        text = f"contact {message.contact.phone_number} user_id={message.contact.user_id}"
    elif message.photo:
        big = message.photo[-1]
        text = f"photo {big.file_id} {big.width}x{big.height} sizes={len(message.photo)}"
    elif message.location:
        text = f"location {message.location.latitude},{message.location.longitude}"
    else:
        text = f"echo: {message.text} from {message.from_user.first_name}"
    await message.reply_text(text)


def test_real_application_polls_and_replies(tg: TelegramStandin) -> None:
    user = tg.user(777, first_name="张三", phone="+8613800138000")

    async def scenario() -> None:
        app = (ApplicationBuilder().token(TOKEN).base_url(f"{tg.url}/bot")
               .base_file_url(f"{tg.url}/file/bot").build())
        app.add_handler(CommandHandler("start", on_start))
        app.add_handler(CommandHandler("share", on_share))
        app.add_handler(CommandHandler("file", on_file))
        app.add_handler(CallbackQueryHandler(on_press))
        app.add_handler(MessageHandler(~filters.COMMAND, describe))
        await app.initialize()
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            replies = await asyncio.to_thread(user.text_wait, "hi")
            assert [r["text"] for r in replies] == ["echo: hi from 张三"]
            assert replies[0]["kind"] == "text"

            replies = await asyncio.to_thread(user.command_wait, "/start", "ref42")
            assert [r["text"] for r in replies] == ["welcome ref42"]
            assert user.buttons() == [[("Yes", "yes"), ("No", "no")]]
            keyboard_id = replies[0]["message_id"]

            replies = await asyncio.to_thread(user.press_wait, "yes")
            answers = tg.calls_of("answerCallbackQuery")
            assert len(answers) == 1 and answers[0].params["text"] == "got yes"
            assert [(r["kind"], r["text"], r["message_id"]) for r in replies] == [
                ("edit", "pressed yes", keyboard_id)]
            assert user.buttons() == []  # an edit without reply_markup drops the keyboard
            edit = tg.calls_of("editMessageText")[0].params
            assert edit["chat_id"] == 777 and edit["message_id"] == keyboard_id

            replies = await asyncio.to_thread(user.contact_wait)
            assert [r["text"] for r in replies] == ["contact +8613800138000 user_id=777"]
            replies = await asyncio.to_thread(user.contact_wait, "+10000000000", 999)
            assert [r["text"] for r in replies] == ["contact +10000000000 user_id=999"]

            replies = await asyncio.to_thread(user.photo_wait, "PHOTO-ID-1")
            assert [r["text"] for r in replies] == ["photo PHOTO-ID-1 800x600 sizes=3"]

            replies = await asyncio.to_thread(user.location_wait, 31.23, 121.47)
            assert [r["text"] for r in replies] == ["location 31.23,121.47"]

            replies = await asyncio.to_thread(user.command_wait, "share")
            assert user.buttons(replies[0]) == [[("Share phone", True, False)]]

            # Multipart upload: the file arrives as a part, reply_markup as a JSON string field.
            replies = await asyncio.to_thread(user.command_wait, "file")
            assert [(r["kind"], r["text"]) for r in replies] == [("document", "Report & more")]
            call = tg.calls_of("sendDocument")[0]
            assert call.files == {"document": b"report-bytes"}
            assert call.filenames == {"document": "report.txt"}
            assert call.params["reply_markup"] == {
                "inline_keyboard": [[{"text": "Again", "callback_data": "again"}]]}
            doc_id = replies[0]["message"]["document"]["file_id"]
            tg_file = await app.bot.get_file(doc_id)
            assert bytes(await tg_file.download_as_bytearray()) == b"report-bytes"

            assert [r["text"] for r in user.sent()][:2] == ["echo: hi from 张三", "welcome ref42"]
        finally:
            await app.updater.stop()
            await app.stop()
            await app.shutdown()

    asyncio.run(scenario())
    methods = [c.method for c in tg.calls]
    assert methods[0] == "getMe" and "deleteWebhook" in methods and "getUpdates" in methods
    # getUpdates may end in 409: PTB's final confirming poll supersedes the cancelled one.
    assert all(c.status == 200 for c in tg.calls if c.method != "getUpdates")


# --------------------------------------------------------------------------- errors


def test_wrong_token_raises_invalid_token(tg: TelegramStandin) -> None:
    wrong = "654321:" + "Z" * 35

    async def scenario() -> None:
        app = (ApplicationBuilder().token(wrong).base_url(f"{tg.url}/bot")
               .base_file_url(f"{tg.url}/file/bot").build())
        try:
            with pytest.raises(InvalidToken):
                await app.initialize()
        finally:
            await app.bot.shutdown()  # app.shutdown() skips a never-initialised app

    asyncio.run(scenario())
    assert tg.calls[-1].method == "getMe" and tg.calls[-1].status == 401
    assert tg.calls[-1].response == {"ok": False, "error_code": 401,
                                     "description": "Unauthorized"}


def test_injected_failures_map_to_ptb_errors(tg: TelegramStandin, monkeypatch) -> None:
    async def scenario() -> None:
        async with make_bot(tg) as bot:
            tg.fail_next("sendMessage", 429, retry_after=1)
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(5, "x")
            with pytest.warns(PTBDeprecationWarning):
                assert caught.value.retry_after == 1  # int unless PTB_TIMEDELTA is set
            monkeypatch.setenv("PTB_TIMEDELTA", "true")
            assert caught.value.retry_after == dtm.timedelta(seconds=1)

            tg.fail_next("sendMessage", 403)
            with pytest.raises(Forbidden, match="(?i)bot was blocked by the user"):
                await bot.send_message(5, "x")
            sent = await bot.send_message(5, "<b>ok</b>", parse_mode=ParseMode.HTML)
            assert sent.text == "ok" and sent.message_id == 1

            with pytest.raises(BadRequest, match="(?i)can't parse entities"):
                await bot.send_message(5, "1 < 2", parse_mode=ParseMode.HTML)
            with pytest.raises(BadRequest, match="(?i)reserved"):
                await bot.send_message(5, "v1.2", parse_mode=ParseMode.MARKDOWN_V2)
            with pytest.raises(BadRequest, match="(?i)not modified"):
                await bot.edit_message_text("ok", chat_id=5, message_id=1)

            tg.enforce_limits(global_per_sec=30, per_chat_per_sec=1)
            await bot.send_message(6, "first")
            with pytest.raises(RetryAfter):
                await bot.send_message(6, "second")
            assert tg.too_many_requests == 1

            with pytest.raises(EndPointNotFound):
                await bot.do_api_request("frobnicate", api_kwargs={"a": 1})

    asyncio.run(scenario())
    assert tg.calls_of("frobnicate")[0].params == {"a": "1"}  # untyped on the wire
    statuses = [c.status for c in tg.calls_of("sendMessage")]
    assert statuses == [429, 403, 200, 400, 400, 200, 429]


def test_json_and_query_parameters_are_accepted(tg: TelegramStandin) -> None:
    url = f"{tg.url}/bot{TOKEN}"
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    with httpx.Client(trust_env=False) as client:
        r = client.post(f"{url}/sendmessage", json={"chat_id": 9, "text": "[1]",
                                                     "reply_markup": markup})
        assert r.status_code == 200 and r.json()["result"]["reply_markup"] == markup
        assert r.json()["result"]["text"] == "[1]"
        r = client.get(f"{url}/getMe")
        assert r.json()["result"]["is_bot"] is True
        r = client.get(f"{url}/getUpdates", params={"offset": "5", "timeout": "0"})
        assert r.json() == {"ok": True, "result": []}
    assert tg.calls_of("sendMessage")[0].params["chat_id"] == 9


# --------------------------------------------------------------------------- webhook


def test_webhook_delivery_with_secret(tg: TelegramStandin) -> None:
    received: list[tuple[str | None, dict]] = []

    async def hook(request: Request) -> Response:
        secret = request.headers.get("x-telegram-bot-api-secret-token")
        received.append((secret, await request.json()))
        return Response(status_code=200 if secret == "s3cret" else 403)

    receiver = ServedApp(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
    with receiver:
        async def set_hook() -> None:
            async with make_bot(tg) as bot:
                assert await bot.set_webhook(f"{receiver.url}/hook", secret_token="s3cret")
                info = await bot.get_webhook_info()
                assert info.url == f"{receiver.url}/hook"
                with pytest.raises(Conflict):
                    await bot.get_updates(timeout=0)

        asyncio.run(set_hook())
        user = tg.user(101, first_name="Li")
        update = user.text("hello")
        assert update.status == 200
        assert received[-1] == ("s3cret", dict(update))
        assert [tg.deliver(update) for _ in range(2)] == [200, 200]
        assert [body["update_id"] for _, body in received] == [update["update_id"]] * 3
        assert tg.deliver(update, secret="wrong") == 403
        assert tg.deliver(update, secret=None) == 403
        assert [secret for secret, _ in received[-2:]] == ["wrong", None]

        async def check_info() -> None:
            async with make_bot(tg) as bot:
                info = await bot.get_webhook_info()
                assert "403" in info.last_error_message
                assert await bot.delete_webhook()

        asyncio.run(check_info())
    # Back to polling mode: updates queue up again.
    assert user.text("queued").status is None
    assert tg.pending_updates[-1]["message"]["text"] == "queued"


def test_real_application_in_webhook_mode(tg: TelegramStandin) -> None:
    # PTB's own webhook server (tornado) must accept what the stand-in POSTs.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = tg.user(202, first_name="Wang")

    async def scenario() -> None:
        app = ApplicationBuilder().token(TOKEN).base_url(f"{tg.url}/bot").build()
        app.add_handler(MessageHandler(filters.TEXT, describe))
        await app.initialize()
        await app.start()
        await app.updater.start_webhook(
            listen="127.0.0.1", port=port, url_path="tg",
            webhook_url=f"http://127.0.0.1:{port}/tg", secret_token="s3cret")
        try:
            assert tg.webhook["secret_token"] == "s3cret"
            replies = await asyncio.to_thread(user.text_wait, "via hook")
            assert [r["text"] for r in replies] == ["echo: via hook from Wang"]
            update = user.text("forged", deliver=False)
            statuses = [await asyncio.to_thread(tg.deliver, update, secret)
                        for secret in ("wrong", None)]
            assert statuses == [403, 403]  # PTB refuses a wrong or missing secret
            await tg.idle()
            assert len(user.sent()) == 1
        finally:
            await app.updater.stop()
            await app.stop()
            await app.shutdown()

    asyncio.run(scenario())


def test_commands_media_and_update_queue(tg: TelegramStandin) -> None:
    user = tg.user(303, first_name="Zhao")
    first, second = user.text("one"), user.text("two")

    async def scenario() -> None:
        async with make_bot(tg) as bot:
            await bot.set_my_commands([("start", "Begin"), ("help", "Help")])
            assert [(c.command, c.description) for c in await bot.get_my_commands()] == [
                ("start", "Begin"), ("help", "Help")]
            with pytest.raises(BadRequest):
                await bot.set_my_commands([("Bad-Name", "x")])
            await bot.delete_my_commands()
            assert await bot.get_my_commands() == ()

            photo = await bot.send_photo(303, photo=b"\x89PNG-bytes", caption="pic")
            assert photo.caption == "pic" and photo.photo[-1].file_size == len(b"\x89PNG-bytes")
            assert tg.calls_of("sendPhoto")[0].files == {"photo": b"\x89PNG-bytes"}
            assert await bot.send_chat_action(303, "typing")
            chat = await bot.get_chat(303)
            assert chat.type == "private" and chat.first_name == "Zhao"

            updates = await bot.get_updates(timeout=0)
            assert [u.message.text for u in updates] == ["one", "two"]
            updates = await bot.get_updates(offset=second["update_id"], timeout=0)
            assert [u.update_id for u in updates] == [second["update_id"]]  # "one" confirmed
            await bot.delete_webhook(drop_pending_updates=True)
            assert await bot.get_updates(timeout=0) == ()

    asyncio.run(scenario())
    assert first["update_id"] + 1 == second["update_id"]
    assert [r["kind"] for r in user.sent()] == ["photo"]
