"""The ASGI app: one server for the Telegram, WeChat and WeCom webhooks and the rating page (/r/<token>).

``create_app`` wires the core and the channels; the Starlette lifespan starts and stops the PTB
Application (long polling, or setWebhook in webhook mode), so ``python -m bot run`` is one process.
A messenger that cannot be reached does not hold the server up: the channel connects in the
background and says how it fares at ``/readyz``. ``/healthz`` is liveness, ``/metrics`` Prometheus.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import json
import logging
import time
from urllib.parse import urlparse

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route
from telegram import Update

from bot import metrics
from bot.config import Settings
from bot.errors import SettingsError
from bot.core.engine import Engine
from handlers.telegram import TelegramChannel, TelegramTransport
from handlers.web import rating_routes
from handlers.webconsole import console_routes
from handlers.wechat import WeChatApi, WeChatChannel, WeChatTransport
from handlers.wecom import WeComApi, WeComChannel, WeComTransport
from handlers.wecom.transport import ReplyPump
from scheduler.service import Worker

log = logging.getLogger(__name__)

MAX_UPDATE_BYTES = 1_000_000
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_path(settings: Settings) -> str:
    """Our route for the webhook: the path of TELEGRAM_WEBHOOK_URL, behind whatever proxy."""
    path = urlparse(settings.telegram_webhook_url or "").path
    return path if path and path != "/" else "/telegram/webhook"


def check_webhook_paths(hooks: list[tuple[str, str]], pages: list[Route]) -> None:
    """A webhook's path may be neither another webhook's nor one of the service's pages: the webhooks
    are tried first, so a page under the same path would be unreachable (SettingsError, exit code 2)."""
    given: dict[str, str] = {}
    for setting, path in hooks:
        if path in given:
            raise SettingsError(f"{setting} 与 {given[path]} 给出了同一路径 {path}：两个渠道的回调地址须不同。")
        given[path] = setting
        for page in pages:
            if any(page.matches({"type": "http", "path": path, "method": method, "root_path": ""})[0] != Match.NONE
                   for method in ("GET", "POST")):
                raise SettingsError(f"{setting}：回调路径 {path} 与本服务的页面 {page.path} 冲突（回调优先，"
                                    f"该页面将无法访问）。请改用专用路径，例如 /wecom、/wechat、/telegram/webhook。")


def create_app(settings: Settings, core: Engine, *, with_worker: bool | None = None) -> Starlette:
    """The app; ``with_worker`` (default SCHEDULER_IN_RUN) also runs the scheduler and outbox sender."""
    with_worker = settings.scheduler_in_run if with_worker is None else with_worker
    webhook = bool(settings.telegram_webhook_url)
    telegram = TelegramChannel(core, settings, webhook=webhook) if settings.telegram_enabled else None
    # WeChat: the channel fetches the pictures users send through the API (one client for the app, the
    # worker's sender included).
    wechat_api = WeChatApi(settings, core.db, clock=core.clock) if settings.wechat_enabled else None
    wechat = (WeChatChannel(core, settings, media=wechat_api.media if wechat_api else None)
              if settings.wechat_enabled else None)
    # WeCom: the app sends the answers its callbacks wrote to the outbox at once (the reply pump),
    # through the same transport (and per-member limits) as the worker in this process.
    wecom = wecom_api = wecom_transport = None
    if settings.wecom_enabled:
        wecom_api = WeComApi(settings, core.db, clock=core.clock)
        wecom_transport = WeComTransport(wecom_api, settings, core.db, core.clock)
        pump = ReplyPump(core.db, settings, wecom_transport, clock=core.clock)
        wecom = WeComChannel(core, settings, pump=pump, media=wecom_api.media)

    async def health(request: Request) -> Response:
        """Liveness: 200 while this process serves (systemd's and the container's restart check)."""
        return JSONResponse({"status": "ok", "telegram": "webhook" if webhook else ("polling" if telegram else "off")})

    def database_state() -> dict:
        try:
            with core.db.connect() as conn:
                conn.execute(text("SELECT 1"))
            return {"state": "ok"}
        except Exception as exc:
            return {"state": "down", "detail": " ".join(str(exc).split())[:200]}

    async def ready(request: Request) -> Response:
        """Readiness: each channel ok / degraded / down, and the database; 503 when the database is
        down (nothing can be stored), 200 otherwise (a messenger that is down does not stop the
        rating page: the channels' states say what is missing)."""
        channels = {}
        if telegram is not None:
            channels["telegram"] = telegram.health()
        if wechat is not None:
            channels["wechat"] = {"state": "ok", "detail": "webhook"}
        channels["web"] = {"state": "ok", "detail": "rating page"}
        database = await run_in_threadpool(database_state)
        states = [c["state"] for c in channels.values()]
        overall = "down" if database["state"] != "ok" else ("ok" if all(s == "ok" for s in states) else "degraded")
        return JSONResponse({"status": overall, "database": database, "channels": channels},
                            status_code=503 if database["state"] != "ok" else 200)

    async def metrics_page(request: Request) -> Response:
        """Prometheus' text format (bot.metrics); the outbox gauges are read now."""
        try:
            await run_in_threadpool(metrics.read_outbox, core.db)
        except Exception as exc:  # the database is down: /readyz says so; the counters still answer
            log.warning("metrics: outbox not readable: %s", " ".join(str(exc).split())[:200])
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def telegram_webhook(request: Request) -> Response:
        """Receives one update from Telegram, after checking the secret token header."""
        expected = settings.telegram_webhook_secret.get_secret_value().encode()
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            return PlainTextResponse("forbidden", status_code=403)
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return PlainTextResponse("too large", status_code=413)
        try:
            data = json.loads(body)
            update = Update.de_json(data, telegram.application.bot)
        except Exception:
            return PlainTextResponse("bad update", status_code=400)
        if update is None:
            return PlainTextResponse("bad update", status_code=400)
        try:
            answer = await telegram.process(update, webhook_answer=True)
        except Exception:
            log.exception("webhook update %s failed", update.update_id)
            return PlainTextResponse("error", status_code=500)  # Telegram delivers it again
        if answer is not None:
            return JSONResponse(answer)  # a Bot API call, carried out by Telegram (see process)
        return PlainTextResponse("ok")

    # The webhooks first: Starlette tries the routes in order, a regular expression each, and the
    # console's forty routes in front of a webhook cost each update 0.3 M instructions (bench/README.md).
    routes = []
    hooks: list[tuple[str, str]] = []  # (the setting that gives a webhook's path, the path)
    if telegram is not None and webhook:
        routes.append(Route(webhook_path(settings), telegram_webhook, methods=["POST"]))
        hooks.append(("TELEGRAM_WEBHOOK_URL", webhook_path(settings)))
    if wechat is not None:
        routes += wechat.routes()
        hooks.append(("WECHAT_WEBHOOK_PATH", settings.wechat_webhook_path))
    if wecom is not None:
        routes += wecom.routes()
        hooks.append(("WECOM_WEBHOOK_PATH", settings.wecom_webhook_path))
    pages = [Route("/healthz", health), Route("/readyz", ready), Route("/metrics", metrics_page),
             *rating_routes(core), *console_routes(core, settings, wecom_api)]
    check_webhook_paths(hooks, pages)
    routes += pages

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await core.start_async()  # DATABASE_ASYNC_EVENTS: this loop's asyncpg engine
        if telegram is not None:
            await telegram.start()
        worker = None
        if with_worker:
            # The channel's limiter: its direct replies and the outbox share one budget per bot.
            transports = ({"telegram": TelegramTransport(telegram.application.bot, settings, telegram.limiter)}
                          if telegram else {})
            if wechat_api is not None:
                transports["wechat"] = WeChatTransport(wechat_api, settings, core.db, core.clock)
            if wecom_transport is not None:
                transports["wecom"] = wecom_transport
            worker = Worker(core.db, settings, transports, clock=core.clock)
            worker.start()
        # Everything loaded so far (modules, PTB, SQLAlchemy's compiled statements...) lives as long
        # as the process: out of the collector's way, so a full collection walks only what requests
        # leave behind (one took 80-100 ms every few thousand requests before, stalling the loop).
        gc.freeze()
        try:
            yield
        finally:
            if wecom is not None:
                await wecom.drain()
            if worker is not None:
                await worker.stop()
            if wecom_api is not None:
                await wecom_api.aclose()
            if wechat_api is not None:
                wechat_api.close()
            if telegram is not None:
                await telegram.stop()
            await core.aclose()  # the connections of the event-loop paths (Engine.handle_now, DATABASE_ASYNC_EVENTS)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.telegram = telegram
    app.state.wechat = wechat
    app.state.wecom = wecom
    app.state.core = core
    return app


def app_from_settings() -> Starlette:
    """The app of one ``serve --workers N`` process (uvicorn's factory): settings from the
    environment, its own core and connections."""
    from bot.cli import _core
    from bot.config import get_settings
    from bot.logs import setup_logging

    settings = get_settings().check()
    setup_logging(settings.log_level, settings.log_format)
    return create_app(settings, _core(settings))
