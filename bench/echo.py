"""The baseline: a bare PTB echo bot behind a bare Starlette webhook endpoint.

Same web server, same PTB Bot and HTTP client, same secret check and same ``Update.de_json``
as the visit bot (bot.app), but no core and no database: a text message is echoed with one
sendMessage, a button press is echoed with one sendMessage and answered (answerCallbackQuery) in
the body of the webhook's HTTP answer, as the visit bot does.
"""

from __future__ import annotations

import contextlib
import hmac
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def _echo_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot.send_message(update.effective_chat.id, update.effective_message.text or "…")


async def _echo_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot.send_message(update.effective_chat.id, update.callback_query.data or "…")


def create_echo_app(*, token: str, api_url: str, webhook_url: str, secret: str, path: str) -> Starlette:
    api_url = api_url.rstrip("/")
    application = (Application.builder().token(token).base_url(f"{api_url}/bot")
                   .base_file_url(f"{api_url}/file/bot").updater(None).build())
    application.add_handler(MessageHandler(filters.ALL, _echo_message))
    application.add_handler(CallbackQueryHandler(_echo_press))

    async def webhook(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            return PlainTextResponse("forbidden", status_code=403)
        update = Update.de_json(json.loads(await request.body()), application.bot)
        await application.process_update(update)
        if update.callback_query is not None:
            return JSONResponse({"method": "answerCallbackQuery", "callback_query_id": update.callback_query.id})
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await application.initialize()
        await application.start()
        await application.bot.set_webhook(webhook_url, secret_token=secret)
        try:
            yield
        finally:
            await application.stop()
            await application.shutdown()

    return Starlette(routes=[Route(path, webhook, methods=["POST"])], lifespan=lifespan)
