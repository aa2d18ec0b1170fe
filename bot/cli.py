"""``python -m bot``: every operator command, one subcommand each.

Configuration errors stop the command before it does anything, with the setting named and the
fix (exit code 2); bad input files are reported row by row (exit code 1). Both are operator errors
of the error tree (bot/errors.py): ``main`` prints their message, in Chinese, without a traceback,
and exits with their ``exit_code``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from bot.config import DEVELOPMENT_EVALUATION_KEY, Settings, get_settings
from bot.errors import OperatorError, SettingFileError, SettingsError, settings_error
from storage.crypto import DataKeyError
from storage.db import make_engine, session_scope, upgrade

log = logging.getLogger("bot")


def install_keys(settings: Settings) -> None:
    """Makes the settings' DATA_KEY the process's key for the phone numbers at rest (storage/crypto.py),
    before anything reads or writes them (the migrations included)."""
    from storage import crypto

    try:
        crypto.configure(settings.data_keyring)
    except crypto.DataKeyError as exc:
        raise SettingsError(str(exc)) from exc


def _check_keys(engine) -> None:
    """The configured keys open every phone number in the database; else the key ids are named (exit 2)."""
    from storage import crypto, rekey

    with engine.connect() as conn:
        try:
            rekey.check_keys(conn, crypto.keyring())
        except crypto.DataKeyError as exc:
            raise SettingsError(str(exc)) from exc


def _engine(settings: Settings):
    """The database of DATABASE_URL, migrated, its phone numbers readable with DATA_KEY; a database
    that cannot be opened or reached, or a key that does not open it, is the operator's to fix, and
    the error says so (SettingsError, exit code 2)."""
    from sqlalchemy.exc import DatabaseError

    install_keys(settings)
    try:
        engine = make_engine(settings.sqlalchemy_url)
        upgrade(engine)
        _check_keys(engine)
    except OSError as exc:  # the SQLite file's folder could not be created
        raise SettingFileError(f"设置 DATABASE_URL：无法创建 {exc.filename or '数据库文件的目录'}（{exc.strerror}）。"
                               "请改为可写目录下的文件，例如 sqlite:///./data/bot.db。") from exc
    except DatabaseError as exc:  # not reachable, refused, not a database
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if reason == "file is not a database":
            raise SettingFileError(f"设置 DATABASE_URL：文件 {engine_path(settings)} 不是 SQLite 数据库。请改为本程序的"
                                   "数据库文件，或改为尚不存在的文件名（启动时新建），例如 sqlite:///./data/bot.db。") from exc
        raise SettingsError(f"设置 DATABASE_URL：无法打开数据库（{reason}）。请检查地址、用户和密码，"
                            "确认数据库服务已启动、SQLite 文件所在目录可写。") from exc
    return engine


def engine_path(settings: Settings) -> str:
    """The SQLite file DATABASE_URL names, as the operator wrote it."""
    return settings.database_url.split(":///", 1)[-1]


def _core(settings: Settings):
    from bot.core.engine import Engine

    return Engine(_engine(settings), settings)


def load_example_if_empty(engine, settings: Settings) -> bool:
    """Loads the example roster into an empty database (the embedded quick start)."""
    from storage.example_roster import write_example_workbook
    from storage.models import Cadre
    from bot.imports.roster import import_roster

    with session_scope(engine) as session:
        if session.exec(select(func.count()).select_from(Cadre)).one():
            return False
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "roster.xlsx"
        write_example_workbook(path)
        report = import_roster(engine, path, minimum=settings.service_object_minimum,
                               supervision_units=tuple(settings.supervision_units), settings=settings)
    print("数据库为空，已载入示例花名册：\n" + report.summary(), file=sys.stderr)
    return True


def _print_addresses(core, settings: Settings) -> None:
    """Says where the HTTP server answers, with the rating page of the first cadre as an example."""
    from bot.core import evaluation
    from storage.models import Cadre, Role, TargetKind

    print(f"HTTP 服务：http://{settings.http_host}:{settings.http_port}/healthz", file=sys.stderr)
    with session_scope(core.db) as session:
        cadre = session.exec(select(Cadre).where(Cadre.active == True, Cadre.role == Role.CADRE)  # noqa: E712
                             .order_by(Cadre.id)).first()
        if cadre is not None:
            target = evaluation.target_of(session, evaluation.code_for(session, TargetKind.CADRE, cadre.id,
                                                                       core.clock()))
            if target is not None:
                token = evaluation.token_of(settings.evaluation_key, target)
                print(f"评价页（示例：{cadre.name}）：{settings.public_url}/r/{token}", file=sys.stderr)
    if settings.evaluation_secret is None:
        print("提醒：未设置 EVALUATION_SECRET，评价码使用公开的开发密钥，切勿据此印制评价卡。", file=sys.stderr)
    _warn_development_data_key(settings)


def _warn_development_data_key(settings: Settings) -> None:
    if settings.data_key is None:
        print("提醒：未设置 DATA_KEY，群众的电话号码用公开的开发密钥加密，只能试用（生产环境必须设置，见 README）。",
              file=sys.stderr)


def uvicorn_options(settings: Settings) -> dict:
    """What every uvicorn we start is told beyond host and port: forwarded headers believed only
    from FORWARDED_ALLOW_IPS (uvicorn's own default trusts 127.0.0.1, so a local proxy, or anyone
    on this host, could set the client address the per-address limits see), and our logging."""
    allowed = ",".join(part.strip() for part in settings.forwarded_allow_ips.split(",") if part.strip())
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed or "", "log_config": None,
            "server_header": False}


def _serve_in_background(app, settings: Settings):
    """Serves the ASGI app with uvicorn in a daemon thread (the console keeps the foreground)."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                                           log_level="warning", access_log=False, **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        print(f"HTTP 服务未能启动（端口 {settings.http_port} 被占用？可设置 HTTP_PORT），评价页不可用。", file=sys.stderr)
        return None, thread
    return server, thread


def cmd_run(args, settings: Settings) -> int:
    """Starts the bot and its HTTP server (rating page): with Telegram when TELEGRAM_BOT_TOKEN is set,
    else the console channel in the foreground and the HTTP server in the background."""
    core = _core(settings)
    if settings.load_example_roster:
        load_example_if_empty(core.db, settings)
    if not (settings.telegram_enabled or settings.wechat_enabled or settings.wecom_enabled) or args.console:
        from bot.app import create_app
        from handlers.console import run_console

        if not (settings.telegram_enabled or settings.wechat_enabled or settings.wecom_enabled):
            print("未设置 TELEGRAM_BOT_TOKEN 或 WECHAT_TOKEN，使用本地控制台渠道（设置后即启用 Telegram / 微信）。",
                  file=sys.stderr)
        local = settings.model_copy(update={"telegram_bot_token": None, "telegram_webhook_url": None,
                                            "wechat_token": None, "wecom_token": None})
        server, thread = _serve_in_background(create_app(local, core), settings)
        if server is not None:
            _print_addresses(core, settings)
        try:
            return run_console(core, args.as_mobile)
        finally:
            if server is not None:
                server.should_exit = True
                thread.join(5)
    import uvicorn

    from bot.app import create_app

    app = create_app(settings, core)
    _print_addresses(core, settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level=settings.log_level.lower(),
                **uvicorn_options(settings))
    return 0


def cmd_serve(args, settings: Settings) -> int:
    """Runs the HTTP server (rating page, webhooks, /healthz, /readyz, /metrics) and the configured
    channels, with no console: for systemd and containers. It stays up whatever the messengers do:
    a channel that cannot reach its API retries in the background (see /readyz)."""
    import uvicorn

    workers = getattr(args, "workers", 1) or 1
    options = dict(host=settings.http_host, port=settings.http_port, log_level=settings.log_level.lower(),
                   access_log=False, **uvicorn_options(settings))
    if workers > 1:
        # Each worker process builds its own app (bot.app.app_from_settings); they share the database
        # and the limits (PostgreSQL or REDIS_URL), not memory.
        if not settings.sqlalchemy_url.startswith("postgresql"):
            print("配置错误：--workers 大于 1 需要 PostgreSQL（DATABASE_URL=postgresql://…）；SQLite 只用一个进程。",
                  file=sys.stderr)
            return 2
        if settings.telegram_enabled and not settings.telegram_webhook_url:
            print("配置错误：--workers 大于 1 时 Telegram 须用 Webhook 模式（设置 TELEGRAM_WEBHOOK_URL）："
                  "长轮询只能由一个进程进行，多个进程会互相挤掉（409 Conflict）。", file=sys.stderr)
            return 2
        _engine(settings).dispose()  # migrate once, before the workers start
        print(f"serve：{workers} 个进程，http://{settings.http_host}:{settings.http_port}", file=sys.stderr)
        uvicorn.run("bot.app:app_from_settings", factory=True, workers=workers, **options)
        return 0
    from bot.app import create_app

    core = _core(settings)
    if settings.load_example_roster:
        load_example_if_empty(core.db, settings)
    app = create_app(settings, core)
    print(f"serve：http://{settings.http_host}:{settings.http_port}（/healthz /readyz /metrics）", file=sys.stderr)
    _warn_development_data_key(settings)
    uvicorn.run(app, **options)
    return 0


def cmd_console(args, settings: Settings) -> int:
    """Talks to the bot in this terminal, as the cadre with the given mobile."""
    from handlers.console import run_console

    core = _core(settings)
    if settings.load_example_roster:
        load_example_if_empty(core.db, settings)
    return run_console(core, args.as_mobile)


def cmd_migrate(args, settings: Settings) -> int:
    """Brings the database schema up to date."""
    _engine(settings)
    print("数据库结构已是最新。")
    return 0


def cmd_import_roster(args, settings: Settings) -> int:
    """Imports units, cadres, households and service objects from a workbook or a CSV folder."""
    from bot.imports.roster import RosterDeactivationRefused, RosterError, import_roster

    engine = _engine(settings)
    share = None if args.allow_deactivate else settings.roster_max_deactivate_share
    try:
        report = import_roster(engine, Path(args.file), minimum=settings.service_object_minimum,
                               supervision_units=tuple(settings.supervision_units),
                               progress=not args.quiet, max_deactivate_share=share, settings=settings)
    except RosterError as exc:
        # One header, then one line per issue (the exception's own header would say it twice).
        print(f"导入失败，未写入任何数据。名册有 {len(exc.issues)} 处错误：", file=sys.stderr)
        print("\n".join(str(issue) for issue in exc.issues), file=sys.stderr)
        return 1
    except RosterDeactivationRefused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"找不到文件：{args.file}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_roster_template(args, settings: Settings) -> int:
    """Writes the example roster workbook, a template to fill in."""
    from storage.example_roster import write_example_workbook

    write_example_workbook(Path(args.file))
    print(f"已写出示例花名册：{args.file}")
    return 0


def cmd_bind_code(args, settings: Settings) -> int:
    """Prints a one-time binding code (and the Telegram deep link) for a cadre."""
    from bot.core import binding
    from storage.db import utcnow as system_clock
    from storage.models import Unit

    engine = _engine(settings)
    # The code is committed before a line of it is printed: a reader that stops early (``| head -1``)
    # makes the next write fail, and a failure inside the transaction would roll the code back
    # after the operator had already been shown it.
    with session_scope(engine) as session:
        cadre = binding.cadre_by_mobile(session, args.mobile)
        if cadre is None:
            print(f"花名册中没有手机号为 {args.mobile} 的干部。", file=sys.stderr)
            return 1
        code, expires = binding.issue_code(session, cadre, system_clock(), settings)
        unit = session.get(Unit, cadre.unit_id)
        who = f"{cadre.name}（{unit.name if unit else ''}）"
    link = binding.telegram_link(settings, code)
    lines = [f"{who}的绑定码：{code}",
             f"有效期至：{expires.astimezone(settings.tz):%Y-%m-%d %H:%M}（一次有效）",
             f"Telegram 链接：{link}" if link else
             f"在机器人对话中发送：/bind {code}（设置 TELEGRAM_BOT_USERNAME 后可生成一键绑定链接）"]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # The reader took what it wanted (``| head -1``) and left; the code is saved all the same.
        _quiet_broken_pipe()
    return 0


def _quiet_broken_pipe() -> None:
    """After the reader of stdout has gone: no second BrokenPipeError when Python flushes at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def cmd_worker(args, settings: Settings) -> int:
    """Runs the scheduler and the outbox sender alone, without the web server."""
    import asyncio
    import contextlib
    import signal

    from scheduler.service import Worker

    engine = _engine(settings)

    async def main() -> None:
        transports = {}
        bot = None
        if settings.telegram_enabled:
            from telegram import Bot

            from handlers.telegram import TelegramTransport

            base = settings.telegram_api_base_url.rstrip("/")
            bot = Bot(settings.telegram_bot_token.get_secret_value(), base_url=f"{base}/bot",
                      base_file_url=f"{base}/file/bot")
            # Not initialised here: the transport does it before its first send, so an unreachable
            # Bot API means sends retried later, not a worker that fails to start.
            transports["telegram"] = TelegramTransport(bot, settings, engine=engine)
        wechat_api = None
        if settings.wechat_enabled:
            from handlers.wechat import WeChatApi, WeChatTransport

            wechat_api = WeChatApi(settings, engine)
            transports["wechat"] = WeChatTransport(wechat_api, settings, engine)
        wecom_api = None
        if settings.wecom_enabled:
            from handlers.wecom import WeComApi, WeComTransport

            wecom_api = WeComApi(settings, engine)
            transports["wecom"] = WeComTransport(wecom_api, settings, engine)
        worker = Worker(engine, settings, transports)
        worker.start()
        if settings.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr=settings.http_host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"worker 已启动：定时任务与消息发送（渠道：{', '.join(transports) or '无'}）。Ctrl+C 停止。",
              file=sys.stderr)
        await stop.wait()
        await worker.stop()
        if bot is not None:
            with contextlib.suppress(Exception):
                await bot.shutdown()
        if wechat_api is not None:
            wechat_api.close()
        if wecom_api is not None:
            wecom_api.close()

    asyncio.run(main())
    return 0


def cmd_outbox(args, settings: Settings) -> int:
    """Shows the outbox: rows per state, and the dead ones with their last error."""
    from sqlalchemy import func as sa_func

    from scheduler import outbox
    from storage.models import OutboxMessage, OutboxState

    engine = _engine(settings)
    with session_scope(engine) as session:
        counts = dict(session.exec(select(OutboxMessage.state, sa_func.count()).group_by(OutboxMessage.state)).all())
        print("待发送 {p}，已发送 {s}，失败 {d}，无法送达 {u}".format(
            p=counts.get(OutboxState.PENDING, 0), s=counts.get(OutboxState.SENT, 0),
            d=counts.get(OutboxState.DEAD, 0), u=counts.get(OutboxState.UNREACHABLE, 0)))
        shown = OutboxState.DEAD if not args.unreachable else OutboxState.UNREACHABLE
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.state == shown)
                            .order_by(OutboxMessage.id.desc()).limit(args.limit)).all()
        for row in rows:
            when = row.created_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
            print(f"#{row.id} {when} {row.kind} → {row.channel}:{row.recipient} 尝试 {row.attempts} 次："
                  f"{row.last_error or ''}")
        # Pending rows that already failed once or wait for something (WeChat's 48-hour window): why.
        waiting = session.exec(select(OutboxMessage).where(OutboxMessage.state == OutboxState.PENDING,
                                                           OutboxMessage.last_error != None)  # noqa: E711
                               .order_by(OutboxMessage.id.desc()).limit(args.limit)).all()
        if waiting:
            print(f"等待中 {len(waiting)} 条：")
        for row in waiting:
            when = row.next_attempt_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
            print(f"#{row.id} {row.kind} → {row.channel}:{row.recipient} 下次 {when}：{row.last_error}")
        repeated = outbox.possibly_repeated(session, args.limit)
        if repeated:
            print(f"可能重复 {len(repeated)} 条（发送时进程中断，用户可能收到两次）：")
        for row in repeated:
            when = (row.sent_at or row.created_at).astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
            print(f"#{row.id} {when} {row.kind} → {row.channel}:{row.recipient} 可能重复（{row.state}）")
    return 0


def cmd_qr_cards(args, settings: Settings) -> int:
    """Prints evaluation cards: one PNG per cadre or window, and an A4 PDF of them for cutting."""
    from bot.cards import CardError, card_specs, write_cards
    from bot.fonts import FontNotFound, find_cjk_font
    from storage.db import utcnow as system_clock

    try:
        font = find_cjk_font(settings.card_font)
    except FontNotFound as exc:
        print(f"配置错误：{exc}", file=sys.stderr)
        return 2
    encode = args.encode or settings.card_encode
    if settings.evaluation_key == DEVELOPMENT_EVALUATION_KEY:
        print("提醒：EVALUATION_SECRET 未设置或是公开的开发密钥，这些评价卡用它签名，只能试用，不要张贴。", file=sys.stderr)
    if encode == "web" and not settings.public_base_url:
        print(f"提醒：未设置 PUBLIC_BASE_URL，二维码指向 {settings.public_url}，群众的手机打不开。", file=sys.stderr)
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            specs = card_specs(session, settings, system_clock(), unit=args.unit, cadre=args.cadre,
                               window=args.window, encode=encode)
    except CardError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if not specs:
        print("没有符合条件的在册干部或窗口。", file=sys.stderr)
        return 1
    written = write_cards(specs, Path(args.out), font, progress=not args.quiet)
    print(f"已印制 {len(specs)} 张评价卡（每张一个 PNG）：{Path(args.out)}")
    print(f"A4 裁切版：{written.pdf}（{written.pages} 页，每页 4 张）")
    return 0


def cmd_revoke_card(args, settings: Settings) -> int:
    """Revokes a lost evaluation card: the old card is refused at once; print the new one with qr-cards."""
    from bot.cards import CardError, find_targets
    from bot.core import evaluation
    from storage.db import utcnow as system_clock

    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            found = find_targets(session, unit=args.unit, cadre=args.cadre, window=args.window)
            if len(found) != 1:
                print(f"找到 {len(found)} 个对象，请用 --cadre 手机号 或 --window 窗口名称 --unit 单位 指定一个。",
                      file=sys.stderr)
                return 1
            kind, row = found[0]
            code = evaluation.revoke(session, evaluation.code_for(session, kind, row.id, system_clock()),
                                     system_clock())
    except CardError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    again = f"--cadre {row.mobile}" if hasattr(row, "mobile") else f"--window {row.name}"
    print(f"已挂失 {row.name} 的评价卡，旧卡即刻失效（新版本 {code.version}）。")
    print(f"印制新卡：python -m bot qr-cards {again}")
    return 0


def _wechat_api(settings: Settings, engine):
    from handlers.wechat import WeChatApi

    if not settings.wechat_enabled:
        print("配置错误：未设置 WECHAT_TOKEN / WECHAT_APP_ID / WECHAT_APP_SECRET，无法调用微信接口。", file=sys.stderr)
        return None
    return WeChatApi(settings, engine)


def cmd_wechat_qr(args, settings: Settings) -> int:
    """Creates a permanent scene QR code per cadre or window (scene = its evaluation token) and saves them."""
    import csv

    from bot.cards import CardError, find_targets
    from storage.db import utcnow as system_clock
    from handlers.wechat import WeChatApiError
    from bot.reports.forms import csv_text
    from handlers.wechat.account import SHOW_QR_URL, QrLimitReached, create_scene_codes

    engine = _engine(settings)
    api = _wechat_api(settings, engine)
    if api is None:
        return 2
    if settings.evaluation_key == DEVELOPMENT_EVALUATION_KEY:
        print("提醒：EVALUATION_SECRET 未设置或是公开的开发密钥，二维码携带的评价码用它签名，只能试用。", file=sys.stderr)

    def targets(session):
        return find_targets(session, unit=args.unit, cadre=args.cadre, window=args.window)

    def shown(code) -> None:
        print(f"{'新建' if code.created else '已有'} {code.unit} {code.name}：{code.url}")

    made = []
    try:
        made = create_scene_codes(engine, api, settings, targets, system_clock(), progress=shown)
    except (CardError, QrLimitReached) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except WeChatApiError as exc:
        print(f"微信接口出错（已创建的二维码均已保存，可重试）：{exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
        if made:
            with open(args.out, "w", encoding="utf-8-sig", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["单位", "名称", "评价码", "ticket", "二维码内容", "二维码图片"])
                for code in made:  # unit and name are roster text: never a formula in a spreadsheet
                    writer.writerow([csv_text(code.unit), csv_text(code.name), code.scene, code.ticket, code.url,
                                     SHOW_QR_URL.format(ticket=code.ticket)])
    if not made:
        print("没有符合条件的在册干部或窗口。", file=sys.stderr)
        return 1
    print(f"共 {len(made)} 个二维码（新建 {sum(c.created for c in made)} 个），清单：{args.out}")
    return 0


def cmd_wechat_menu(args, settings: Settings) -> int:
    """Installs the Official Account's custom menu: 走访 (入户走访, 日常走访), 我的进度, 帮助."""
    from handlers.wechat import WeChatApiError
    from handlers.wechat.account import MENU

    engine = _engine(settings)
    api = _wechat_api(settings, engine)
    if api is None:
        return 2
    try:
        api.create_menu(MENU)
    except WeChatApiError as exc:
        print(f"微信接口出错：{exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    print("已安装公众号菜单：" + "、".join(b["name"] for b in MENU) + "（约 5 分钟内对用户生效）")
    return 0


def cmd_backup(args, settings: Settings) -> int:
    """Writes a backup of the whole database to FILE (SQLite: online backup; PostgreSQL: pg_dump)."""
    from storage.backup import BackupError, backup

    engine = make_engine(settings.sqlalchemy_url)
    try:
        counts = backup(engine, settings.sqlalchemy_url, Path(args.file))
    except BackupError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    finally:
        engine.dispose()
    print(f"已备份到 {args.file}：{len(counts)} 张表，共 {sum(counts.values())} 行。")
    return 0


def cmd_restore(args, settings: Settings) -> int:
    """Restores FILE (written by backup) into the configured database, which must be empty unless --force."""
    from storage.backup import BackupError, restore, row_counts

    engine = make_engine(settings.sqlalchemy_url)
    try:
        restore(engine, settings.sqlalchemy_url, Path(args.file), force=args.force)
        upgrade(engine)  # a backup of an older version gets the newer tables and columns
        counts = row_counts(engine)
        try:
            _check_keys(engine)
            unreadable = None
        except SettingsError as exc:  # restored all the same; the bot will not start until the key is set
            unreadable = str(exc)
    except BackupError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    finally:
        engine.dispose()
    print(f"已从 {args.file} 恢复：{len(counts)} 张表，共 {sum(counts.values())} 行。")
    if unreadable:
        print(f"提醒：{unreadable}", file=sys.stderr)
    return 0


def cmd_rotate_key(args, settings: Settings) -> int:
    """Re-encrypts every phone number (and sealed text) at rest under DATA_KEY, in committed batches; the
    old key stays readable through DATA_KEY_OLD until this has finished. Idempotent: after a crash, run
    it again and it goes on where it stopped."""
    from tqdm import tqdm

    from storage import crypto, rekey

    engine = _engine(settings)  # refuses a database holding a key that neither setting names (exit 2)
    keys = crypto.keyring()
    current = f"当前密钥编号 {keys.current.kid}（{keys.cipher}）"
    try:
        with engine.connect() as conn:
            todo = {name: n for name, n in rekey.pending(conn, keys).items() if n}
        if not todo:
            print(f"{current}：所有电话号码都已用当前密钥加密，无需轮换。")
        else:
            print(f"{current}；待重新加密：" + "，".join(f"{name} {n} 行" for name, n in todo.items()))
            with tqdm(total=sum(todo.values()), unit="行", desc="重新加密", disable=args.quiet, file=sys.stderr) as bar, \
                    engine.connect() as conn:
                done = rekey.reencrypt(conn, keys, batch=args.batch, after_batch=conn.commit,
                                       progress=lambda _name, n: bar.update(n))
            print(f"已用新密钥重新加密 {done.total} 行。")
            with engine.connect() as conn:
                left = {name: n for name, n in rekey.pending(conn, keys).items() if n}
            if left:  # written meanwhile by a process still running with the old DATA_KEY
                print("仍有行未用当前密钥加密：" + "，".join(f"{name} {n} 行" for name, n in left.items())
                      + "。请确认 web 与 worker 都已用新的 DATA_KEY 重启，再运行本命令。", file=sys.stderr)
                return 1
    except crypto.DataKeyError as exc:
        print(f"配置错误：{exc}已完成的批次已保存，改正后重新运行即可继续。", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if settings.data_keys_old:
        print("轮换完成。确认服务正常后，从设置中删去 DATA_KEY_OLD 并重启 web 与 worker；"
              "此前的数据库备份仍要用旧密钥才能读取，旧密钥请与那些备份一同保管。")
    return 0


def cmd_prune(args, settings: Settings) -> int:
    """Removes what the retention settings say (RETAIN_*, PRUNE_AFTER_DAYS); --dry-run only counts."""
    from scheduler.jobs import prune_counts
    from storage.db import utcnow as system_clock

    engine = _engine(settings)
    with session_scope(engine) as session:
        counts = prune_counts(session, settings, system_clock(), dry_run=args.dry_run)
    head = "将删除（试运行，未删除任何数据）" if args.dry_run else "已删除"
    print(f"{head}：" + "，".join(f"{table} {n} 行" for table, n in counts.items()))
    return 0


def _wecom_api(settings: Settings, engine):
    from handlers.wecom import WeComApi

    if not settings.wecom_enabled:
        print("配置错误：未设置 WECOM_TOKEN / WECOM_AES_KEY / WECOM_CORP_ID / WECOM_AGENT_ID / WECOM_SECRET，"
              "无法调用企业微信接口。", file=sys.stderr)
        return None
    return WeComApi(settings, engine)


def cmd_wecom_sync(args, settings: Settings) -> int:
    """Reads the WeCom directory, matches members to cadres by mobile, binds them and reports."""
    from storage.db import utcnow as system_clock
    from handlers.wecom import WeComApiError
    from handlers.wecom.directory import report_lines, sync_directory

    engine = _engine(settings)
    api = _wecom_api(settings, engine)
    if api is None:
        return 2
    try:
        count, report = sync_directory(engine, api, system_clock())
    except WeComApiError as exc:
        print(f"企业微信接口出错（未做任何更改，可重试）：{exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    print("\n".join(report_lines(count, report)))
    return 0


def cmd_wecom_menu(args, settings: Settings) -> int:
    """Installs the WeCom app's menu, built from the core's commands."""
    from handlers.wecom import WeComApiError
    from handlers.wecom.directory import menu_from_features

    engine = _engine(settings)
    api = _wecom_api(settings, engine)
    if api is None:
        return 2
    menu = menu_from_features()
    try:
        api.create_menu(menu)
    except WeComApiError as exc:
        print(f"企业微信接口出错：{exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    print("已安装企业微信应用菜单：" + "、".join(b["name"] for b in menu))
    return 0


def _target_filters(parser: argparse.ArgumentParser) -> None:
    """--unit, --cadre, --window: which cadres and windows an evaluation-code command acts on."""
    parser.add_argument("--unit", help="only this unit's cadres and windows (单位名称)")
    parser.add_argument("--cadre", help="only this cadre (mobile or name)")
    parser.add_argument("--window", help="only this service window (窗口名称)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="干部作风建设助手：入户走访（四个一）、群众评价与问题台账。")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="start the bot (Telegram if TELEGRAM_BOT_TOKEN is set, else the console)")
    p.add_argument("--console", action="store_true", help="use the console channel even when Telegram is configured")
    p.add_argument("--as", dest="as_mobile", metavar="MOBILE", help="console: act as the cadre with this mobile")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="服务模式（systemd / 容器）：HTTP 服务与已配置的渠道，无控制台 / "
                                     "serve HTTP and the configured channels, no console")
    p.add_argument("--workers", type=int, default=1, help="web processes (PostgreSQL only; default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("console", help="chat with the bot in this terminal")
    p.add_argument("--as", dest="as_mobile", metavar="MOBILE", help="act as the cadre with this mobile")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("import-roster", help="import the roster from an XLSX workbook or a folder of CSV files")
    p.add_argument("file", help="roster.xlsx, or a folder with 单位.csv 干部.csv 联户.csv 服务对象.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-deactivate", action="store_true",
                   help="deactivate rows the file no longer lists even beyond ROSTER_MAX_DEACTIVATE_SHARE of a sheet")
    p.set_defaults(func=cmd_import_roster)

    p = sub.add_parser("roster-template", help="write the example roster workbook to fill in")
    p.add_argument("file", help="where to write it, e.g. roster.xlsx")
    p.set_defaults(func=cmd_roster_template)

    p = sub.add_parser("bind-code", help="print a one-time binding code and Telegram link for a cadre")
    p.add_argument("mobile", help="the cadre's mobile number as in the roster")
    p.set_defaults(func=cmd_bind_code)
    p = sub.add_parser("worker", help="run the scheduler (reminders, digests) and the outbox sender alone")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("outbox", help="show the outbox: counts per state and the messages that failed")
    p.add_argument("--unreachable", action="store_true", help="list messages to users who blocked the bot")
    p.add_argument("--limit", type=int, default=50, help="how many to list (default 50)")
    p.set_defaults(func=cmd_outbox)

    p = sub.add_parser("qr-cards", help="print evaluation cards: one PNG per cadre or window and an A4 PDF")
    _target_filters(p)
    p.add_argument("--out", default="cards", help="output folder (default: cards)")
    p.add_argument("--encode", choices=["web", "telegram", "wechat"],
                   help="what the QR code encodes: the rating page URL, the Telegram deep link or the WeChat scene "
                        "QR code made by wechat-qr (default CARD_ENCODE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_qr_cards)

    p = sub.add_parser("revoke-card", help="revoke a lost evaluation card (the old one is refused; reprint it)")
    _target_filters(p)
    p.set_defaults(func=cmd_revoke_card)

    p = sub.add_parser("wechat-qr", help="create permanent WeChat scene QR codes (scan to rate) for cadres and windows")
    _target_filters(p)
    p.add_argument("--out", default="wechat-qr.csv", help="CSV of name, unit, scene, ticket, url (default: wechat-qr.csv)")
    p.set_defaults(func=cmd_wechat_qr)

    p = sub.add_parser("wechat-menu", help="install the WeChat account's custom menu (visit, contact, progress, help)")
    p.set_defaults(func=cmd_wechat_menu)

    p = sub.add_parser("backup", help="备份整个数据库到文件 / back up the whole database to FILE "
                                      "(SQLite: online backup; PostgreSQL: pg_dump)")
    p.add_argument("file", help="备份文件，例如 backup-2026-11-30.db（PostgreSQL：.dump）")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="从备份文件恢复到空数据库 / restore FILE into an empty database")
    p.add_argument("file", help="backup 写出的备份文件")
    p.add_argument("--force", action="store_true", help="目标数据库已有数据时也恢复（覆盖全部数据）/ overwrite a database with data")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("rotate-key", help="更换数据加密密钥后重新加密全部电话号码 / re-encrypt every phone number "
                                          "under DATA_KEY (the old key in DATA_KEY_OLD)")
    p.add_argument("--batch", type=int, default=500, help="每批行数，每批单独提交 / rows per committed batch (default 500)")
    p.add_argument("--quiet", action="store_true", help="不显示进度条 / no progress bar")
    p.set_defaults(func=cmd_rotate_key)

    p = sub.add_parser("prune", help="按保存期限清理过期数据 / remove what the retention settings say (RETAIN_*)")
    p.add_argument("--dry-run", action="store_true", help="只统计将删除的行数，不删除 / count only")
    p.set_defaults(func=cmd_prune)


    p = sub.add_parser("wecom-sync", help="read the WeCom directory, match members to cadres by mobile and bind them")
    p.set_defaults(func=cmd_wecom_sync)

    p = sub.add_parser("wecom-menu", help="install the WeCom app's menu (built from the bot's commands)")
    p.set_defaults(func=cmd_wecom_menu)

    from bot.reports.cli import add_commands  # import-hotline, export, ranking, spot-check

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings().check()
    except SettingsError as exc:
        print(f"配置错误：{exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # pydantic's ValidationError: a value of the wrong type or out of range
        print(f"配置错误：{settings_error(exc)}", file=sys.stderr)
        return SettingsError.exit_code
    from bot.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)  # quiets migration and HTTP-client chatter too
    try:
        install_keys(settings)  # before any command touches a phone number (a restore's migrations too)
        return args.func(args, settings)
    except SettingsError as exc:  # a setting only this command needs, found wrong when it needed it
        print(f"配置错误：{exc}", file=sys.stderr)
        return exc.exit_code
    except OperatorError as exc:  # a file or an argument given to this command
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except DataKeyError as exc:  # a phone number at rest that DATA_KEY does not open, met mid-command
        print(f"配置错误：{exc}", file=sys.stderr)
        return SettingsError.exit_code
