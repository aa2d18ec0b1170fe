"""Entry point of the bot process: the bot under test, in webhook mode, served by uvicorn on 127.0.0.1.

``serve`` runs in a process of its own (multiprocessing "spawn"), so the bot gets its own
interpreter and GIL, apart from the driver and the Bot API stand-in. It binds a free port first
(the webhook URL must name it before the app is built), starts uvicorn, and once the lifespan has
run (PTB started, setWebhook answered by the stand-in) reports ``("ready", port)`` on the pipe.
A ``"stop"`` on the pipe, or the driver going away, shuts it down gracefully.

Both bots get the identical server, as ``python -m bot run`` has it: uvicorn's "auto" loop and
HTTP parser (uvloop and httptools, which the project depends on), no access log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import traceback

HOST = "127.0.0.1"
WEBHOOK_PATH = "/telegram/webhook"


def _build_app(kind: str, options: dict, webhook_url: str):
    if kind == "echo":
        from bench.echo import create_echo_app

        return create_echo_app(token=options["token"], api_url=options["api_url"], webhook_url=webhook_url,
                               secret=options["secret"], path=WEBHOOK_PATH)

    from pydantic import SecretStr

    from bot.app import create_app
    from bot.config import Settings
    from bot.core.engine import Engine
    from storage.db import make_engine

    # Production settings, with whatever secrets production insists on; _env_file=None: a
    # developer's .env must not change what is measured.
    secrets = {name: SecretStr(options["secret"]) for name in ("evaluation_secret",) if name in Settings.model_fields}
    settings = Settings(
        _env_file=None, environment="production", database_url=options["database_url"],
        load_example_roster=False, log_level="WARNING",
        # Telegram's 30 messages/s would cap the visit bot's replies and not the echo bot's: the bench
        # measures what each bot costs, so the shared reply budget is off (bench/README.md).
        **({"telegram_reply_budget": False} if "telegram_reply_budget" in Settings.model_fields else {}),
        telegram_bot_token=SecretStr(options["token"]), telegram_api_base_url=options["api_url"],
        telegram_webhook_url=webhook_url, telegram_webhook_secret=SecretStr(options["secret"]), **secrets,
    ).check()
    return create_app(settings, Engine(make_engine(settings.sqlalchemy_url), settings))


def serve(kind: str, options: dict, conn) -> None:
    """Serves the ``kind`` bot ("visit" or "echo") until told to stop; runs in the child process."""
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="bot process %(levelname)s %(name)s: %(message)s")
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if options.get("reuse_port"):  # several processes of one bot on one port (BotProcess)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # As uvicorn.run's own socket gets it in production (see BenchStandin.start).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((HOST, options.get("port") or 0))
        port = sock.getsockname()[1]
        app = _build_app(kind, options, f"http://{HOST}:{port}{WEBHOOK_PATH}")
        server = uvicorn.Server(uvicorn.Config(
            app, host=HOST, port=port, loop="auto", http="auto", lifespan="on", log_level="warning",
            log_config=None, access_log=False, timeout_graceful_shutdown=2))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return

    def wait_for_stop() -> None:
        # A dedicated thread, not asyncio.to_thread: the default executor runs the core's work.
        try:
            conn.recv()
        except (EOFError, OSError):
            pass  # the driver went away
        server.should_exit = True

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            conn.send(("ready", port, os.getpid()))
            threading.Thread(target=wait_for_stop, daemon=True).start()
        await task
        if not server.started:
            conn.send(("error", f"{kind} bot did not start (see its log above)"))

    try:
        asyncio.run(main())
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
