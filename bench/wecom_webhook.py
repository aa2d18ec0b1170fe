"""``python -m bench.wecom_webhook``: encrypted WeCom callbacks (texts and card presses), round trips
per second and p99 at 25 concurrent members, for the bot against a bare endpoint that only checks,
decrypts and echoes.

Five processes besides the driver (spawned, each under uvicorn on 127.0.0.1):

* bot:  the production app (bot.app.create_app) with WeCom on: timestamp, signature, XML and
        corp-id checks, AES, the core's transaction (event key, dialogue state, the answer stored
        for retries, the API calls written to the outbox), the passive reply sealed; and the app's
        reply pump sending the cards and texts through message/send and update_template_card;
* echo: the same checks and AES (handlers.wecom.crypto), then the text (or the pressed button's
        key) echoed back sealed: no core, no database, no API call;
* floor: the echo plus each callback's key committed to the bot's database (one INSERT, one
        transaction): the least any bot that drops WeCom's retries must do, its ratios printed too;
* core: the echo plus the core: each callback made the core's event (``to_inbound``) and handled by
        ``Engine.dispatch`` on its own members' dialogues, the echo's answer: no channel around it;
* api:  a minimal WeCom API for the bot's reply pump (gettoken, message/send,
        update_template_card), which counts what it gets, stale answers included.

Every cycle is the same, walked by one member: ``/visit`` (a card of households, sent by the API), a press of
the first household (the card greyed out passively; the household's look back and the first question's card
by the API), a press of 是 (the next question's card alone: in the pressed card's place, by the passive
reply), a press of ✖ 取消 (the card greyed out passively, a text by the API), then ``/progress`` (a passive
text reply): five callbacks, three of them presses, four sends. The cards' button keys are the core's
versioned tokens ("<version>.<index>"), which the driver predicts (the cycle moves the dialogue's version by 4);
the api process counts stale answers, and the run fails if there are any. Each of the 25 slots
walks its cycles with a pool of members in turn, so that no member passes WeCom's 30 messages a
minute (the bot's sender would rightly hold the excess back). Every payload is built
(XML, AES, signature) before the timed phase; rounds alternate bot and echo on the same harness.
Target: bot throughput >= 0.5 × echo, bot p99 <= 2 × echo's p99. After each bot round the driver
waits until the pump has sent everything (so the echo's round runs alone); ``--without-pump``
measures the callback path alone, the answers left queued.

    python -m bench.wecom_webhook [--concurrency 25] [--cycles 20] [--rounds 3] [--db URL] [--without-pump]
                                  [--py-spy FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from contextlib import nullcontext

from bench.harness import PySpy
from bench.wechat_webhook import Connection, percentile

HOST = "127.0.0.1"
PATH = "/wecom"
CORP_ID = "ww1a2b3c4d5e6f7a8b"
AGENT_ID = 1000002
SECRET = "Qk3hTBm2p9xU8rVwZyN4cLd6eFgHjK1mA5sD7fG0qWe"
TOKEN = "benchwecom2026"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
HOUSEHOLDS = 5  # a card of 5 households and ✖ 取消
CANCEL_ON_QUESTION_ONE = 4  # 满意, 基本满意, 不满意, ⬅ 上一步, ✖ 取消
CALLBACKS = 5  # a cycle's callbacks
VERSIONS = 4  # a cycle's saves of the dialogue: /visit once, each press once more


def _settings(db_url: str, api_url: str):
    from pydantic import SecretStr

    from bot.config import Settings

    return Settings(_env_file=None, environment="development", database_url=db_url, load_example_roster=False,
                    scheduler_in_run=False, wecom_token=SecretStr(TOKEN), wecom_aes_key=SecretStr(AES_KEY),
                    wecom_corp_id=CORP_ID, wecom_agent_id=AGENT_ID, wecom_secret=SecretStr(SECRET),
                    wecom_api_base_url=api_url, wecom_rate_global=150.0, log_level="WARNING", quiet_hours_start="00:00",
                    quiet_hours_end="00:00")


def echo_app(db_url: str | None = None, core: bool = False):
    """The baseline: check, decrypt, echo the text (or the button's key) back sealed. Nothing else.

    With ``db_url`` (the durable echo): the same, and each callback's key written to the database in
    a transaction of its own (INSERT ... ON CONFLICT DO NOTHING, committed) before the answer, as any
    endpoint must that drops WeCom's retries and answers a retry the same: the least a correct bot
    does per callback, on the bot's own database (a table of its own), through the driver directly.

    With ``core`` too (the core alone): the callback made the core's event as the channel makes it
    (``to_inbound``) and handled by ``Engine.dispatch`` (the event key, the dialogue state, the flow,
    the answer kept), with no channel around it: nothing rendered, no outbox row, no API call, the
    echo's answer. What the bot costs beyond this is the channel's."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from handlers.wecom.crypto import Cipher, Refused, check_timestamp, parse_xml, text_reply

    cipher = Cipher(TOKEN, AES_KEY, CORP_ID)
    record = _recorder(db_url) if db_url and not core else None
    if core:
        from bot.core.engine import Engine
        from bot.core.types import Inbound
        from handlers.wecom.channel import to_inbound
        from storage.db import make_engine

        settings = _settings(db_url, "http://127.0.0.1:9").check()
        engine = Engine(make_engine(settings.sqlalchemy_url), settings)

    async def endpoint(request: Request) -> Response:
        query = request.query_params
        try:
            timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
            check_timestamp(timestamp, time.time(), 300)
            envelope = parse_xml(await request.body())
            message = parse_xml(cipher.open(envelope, query.get("msg_signature"), timestamp, nonce))
            if message.get("ToUserName") != CORP_ID:
                raise Refused(400, "wrong corp id")
        except Refused as refused:
            return PlainTextResponse(refused.reason, status_code=refused.status)
        if core:
            inbound, _ = to_inbound(message)
            if isinstance(inbound, Inbound) and (await engine.dispatch(inbound)).stale:
                return PlainTextResponse("stale press: the cycle did not run as planned", status_code=409)
        if record is not None:
            record(message.get("MsgId") or f"{message.get('FromUserName')}:{message.get('CreateTime')}:"
                                           f"{message.get('EventKey')}:{message.get('ResponseCode')}")
        xml = text_reply(to_user=message["FromUserName"], corp_id=CORP_ID, agent_id=AGENT_ID,
                         content=message.get("Content") or message.get("EventKey", ""), now=int(time.time()))
        return Response(cipher.seal(xml, str(int(time.time()))), media_type="application/xml")

    return Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])


def _recorder(db_url: str):
    """The durable echo's write: one committed INSERT of the callback's key, on the event loop (as the
    bot's inline path runs on SQLite)."""
    from storage.db import make_engine

    engine = make_engine(_settings(db_url, "http://127.0.0.1:9").sqlalchemy_url)
    raw = engine.raw_connection()
    driver = raw.driver_connection
    sqlite = engine.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    cursor = driver.cursor()
    cursor.execute("CREATE TABLE IF NOT EXISTS bench_floor_seen (key VARCHAR(100) PRIMARY KEY)")
    driver.commit()
    insert = f"INSERT INTO bench_floor_seen (key) VALUES ({mark}) ON CONFLICT DO NOTHING"

    def record(key: str) -> None:
        if sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(insert, (key,))
        driver.commit()

    return record


def api_app():
    """WeCom's API as far as the reply pump needs it; GET /stats tells what it got."""
    import secrets

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from bot import texts

    stats = {"send": 0, "cards": 0, "updates": 0, "stale": 0}

    async def gettoken(request: Request):
        return JSONResponse({"errcode": 0, "access_token": "BENCH_TOKEN", "expires_in": 7200})

    async def send(request: Request):
        body = json.loads(await request.body())
        stats["send"] += 1
        answer = {"errcode": 0, "errmsg": "ok", "invaliduser": ""}
        if body.get("msgtype") == "template_card":
            stats["cards"] += 1
            answer["response_code"] = secrets.token_hex(8)
        elif texts.STALE_BUTTON in (body.get("text") or {}).get("content", ""):
            stats["stale"] += 1
        return JSONResponse(answer)

    async def update(request: Request):
        stats["updates"] += 1
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def get_stats(request: Request):
        return JSONResponse(stats)

    return Starlette(routes=[Route("/cgi-bin/gettoken", gettoken), Route("/cgi-bin/message/send", send, methods=["POST"]),
                             Route("/cgi-bin/message/update_template_card", update, methods=["POST"]),
                             Route("/stats", get_stats)])


def _serve(kind: str, db_url: str, api_url: str, sock: socket.socket, ready) -> None:
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    if kind == "echo":
        app = echo_app()
    elif kind == "floor":
        app = echo_app(db_url)
    elif kind == "core":
        app = echo_app(db_url, core=True)
    elif kind == "api":
        app = api_app()
    else:
        from bot.app import create_app
        from bot.core.engine import Engine
        from storage.db import make_engine

        settings = _settings(db_url, api_url).check()
        app = create_app(settings, Engine(make_engine(settings.sqlalchemy_url), settings), with_worker=False)
        if os.environ.get("BENCH_WECOM_WITHOUT_PUMP"):
            app.state.wecom.pump = None  # --without-pump: the callback path alone; the rows stay queued
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    ready.set()
    server.run(sockets=[sock])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One server process on a free loopback port."""

    def __init__(self, kind: str, db_url: str, api_url: str = "", path: str = PATH):
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.base = f"http://{HOST}:{self.sock.getsockname()[1]}"
        self.url = self.base + path
        context = multiprocessing.get_context("spawn")
        self.ready = context.Event()
        self.process = context.Process(target=_serve, args=(kind, db_url, api_url, self.sock, self.ready), daemon=True)

    def start(self) -> "Server":
        import httpx

        self.process.start()
        if not self.ready.wait(60):
            raise RuntimeError(f"{self.kind} server did not start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=2)
                return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} server does not answer")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        self.sock.close()


def seed(db_url: str, members: int) -> list[str]:
    """A migrated database: one unit, ``members`` cadres of five households each, bound to WeCom members."""
    from storage.db import make_engine, session_scope, upgrade, utcnow
    from storage.models import Cadre, ChatAccount, Household, Unit

    engine = make_engine(_settings(db_url, "http://127.0.0.1:9").sqlalchemy_url)
    upgrade(engine)
    userids = [f"Bench{i:04d}" for i in range(members)]
    with session_scope(engine) as s:
        unit = Unit(name="压测局", kind="市直部门")
        s.add(unit)
        s.flush()
        for i, userid in enumerate(userids):
            cadre = Cadre(name=f"干部{i}", unit_id=unit.id, mobile=f"139{i:08d}")
            s.add(cadre)
            s.flush()
            s.add_all([Household(address=f"压测路{i}-{j}号", name=f"住户{i}-{j}", phone="13900000000", area_kind="居",
                                 cadre_id=cadre.id) for j in range(HOUSEHOLDS)])
            s.add(ChatAccount(channel="wecom", external_user_id=userid, cadre_id=cadre.id, bound_at=utcnow(),
                              bound_by="wecom"))
    engine.dispose()
    return userids


class Payloads:
    """Encrypted, signed callbacks in WeCom's format, built before they are timed."""

    def __init__(self):
        from tests.standins.wechat_api import aes_encrypt, message_xml, sign

        self._encrypt, self._xml, self._sign = aes_encrypt, message_xml, sign
        self._n = 7_100_000_000_000_000_000

    def _post(self, fields: dict) -> tuple[dict[str, str], bytes]:
        now = str(int(time.time()))
        nonce = str(self._n % 1_000_000_007)
        encrypted = self._encrypt(AES_KEY, self._xml(fields).encode(), CORP_ID)
        params = {"msg_signature": self._sign(TOKEN, now, nonce, encrypted), "timestamp": now, "nonce": nonce}
        body = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><AgentID>{AGENT_ID}</AgentID>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
        return params, body.encode()

    def text(self, userid: str, content: str) -> tuple[dict[str, str], bytes]:
        self._n += 1
        return self._post({"ToUserName": CORP_ID, "FromUserName": userid, "CreateTime": int(time.time()),
                           "MsgType": "text", "Content": content, "MsgId": self._n, "AgentID": AGENT_ID})

    def press(self, userid: str, key: str) -> tuple[dict[str, str], bytes]:
        self._n += 1
        return self._post({"ToUserName": CORP_ID, "FromUserName": userid, "CreateTime": int(time.time()),
                           "MsgType": "event", "Event": "template_card_event", "EventKey": key,
                           "TaskId": f"task{self._n}", "CardType": "button_interaction",
                           "ResponseCode": f"rc{self._n}", "AgentID": AGENT_ID})

    def cycles(self, userid: str, first: int, count: int, echo: bool) -> list[tuple[dict, bytes]]:
        """``count`` cycles of a member whose dialogue is at version ``first`` - 1 before them."""
        script = []
        for c in range(count):
            version = first + VERSIONS * c
            script += [self.text(userid, "/visit"), self.press(userid, f"{version}.0"),
                       self.press(userid, f"{version + 1}.0"),
                       self.press(userid, f"{version + 2}.{CANCEL_ON_QUESTION_ONE}"),
                       self.text(userid, "/progress" if not echo else f"回声 {c}")]
        return script


def drain(db_url: str, timeout: float = 120.0) -> None:
    """Waits until the bot's reply pump has sent every row its callbacks wrote."""
    from sqlalchemy import func
    from sqlmodel import select

    from storage.db import make_engine, session_scope
    from storage.models import OutboxMessage, OutboxState

    engine = make_engine(_settings(db_url, "http://127.0.0.1:9").sqlalchemy_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with session_scope(engine) as s:
                if not s.exec(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.state == OutboxState.PENDING)).one():
                    return
            time.sleep(0.1)
        raise RuntimeError("the reply pump did not catch up")
    finally:
        engine.dispose()


async def run_round(url: str, scripts: list[list[tuple[dict, bytes]]]) -> tuple[list[float], float]:
    """Each script is one member's callbacks, one after the other; all members at once."""
    latencies: list[float] = []
    failures: list[str] = []

    async def member(script):
        connection = Connection(url)
        try:
            for params, body in script:
                started = time.perf_counter()
                status, text = await connection.post(params, body)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures.append(f"{status} {text[:80]}")
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(member(script) for script in scripts))
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} bad answers, e.g. {failures[:3]}")
    return latencies, elapsed


def main(argv: list[str] | None = None) -> int:
    import httpx

    parser = argparse.ArgumentParser(prog="python -m bench.wecom_webhook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=25, help="members with a callback in flight (25)")
    parser.add_argument("--cycles", type=int, default=20, help="timed cycles of 4 callbacks per member per round (20)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, alternating bot and echo (3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed cycles per member first (3)")
    parser.add_argument("--pool", type=int, help="members per slot, walked in turn (default: a cycle each per 4 timed)")
    parser.add_argument("--db", help="database URL for the bot (default: a temporary SQLite file)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record the bot process with py-spy during its timed rounds (raw collapsed stacks)")
    parser.add_argument("--without-pump", action="store_true",
                        help="the bot's reply pump off: the callback path alone (cards stay queued, unsent)")
    args = parser.parse_args(argv)
    if args.without_pump:
        os.environ["BENCH_WECOM_WITHOUT_PUMP"] = "1"  # read by the spawned bot process

    folder = tempfile.TemporaryDirectory()
    db_url = args.db or f"sqlite:///{Path(folder.name) / 'bench.db'}"
    # Each of the --concurrency slots walks its cycles with the members of its own pool in turn, so
    # that no member gets more than WeCom's 30 messages a minute (a cycle brings them about three).
    pool = args.pool or max(2, -(-(args.warmup + args.cycles * args.rounds) // 4))
    # Members of the bot, then as many of the core alone's: each walks its own dialogues.
    userids = seed(db_url, 2 * args.concurrency * pool)
    half = args.concurrency * pool
    slots = {"bot": [userids[k * pool:(k + 1) * pool] for k in range(args.concurrency)],
             "core": [userids[half + k * pool:half + (k + 1) * pool] for k in range(args.concurrency)]}
    walked = {u: 0 for u in userids}  # cycles each member has walked with the bot (or the core alone)
    payloads = Payloads()

    def scripts(cycles: int, name: str, turn: int) -> list[list[tuple[dict, bytes]]]:
        echo = name not in slots
        out = []
        for members in slots.get(name, slots["bot"]):
            script = []
            for c in range(cycles):
                member = members[(turn + c) % pool]
                script += payloads.cycles(member, 1 + VERSIONS * walked[member], 1, echo)
                if not echo:
                    walked[member] += 1
            out.append(script)
        return out

    api = Server("api", db_url, path="/stats").start()
    servers = {"bot": Server("bot", db_url, api.base).start(), "echo": Server("echo", db_url).start(),
               "floor": Server("floor", db_url).start(), "core": Server("core", db_url).start()}
    results: dict[str, list[float]] = {name: [] for name in servers}
    elapsed = {name: 0.0 for name in servers}
    cpu = {name: [0.0, 0.0, 0.0] for name in servers}  # CPU seconds: the server, the API stand-in, the driver
    turn = 0
    try:
        plan = [("warm-up", args.warmup)] + [(f"round {n + 1}", args.cycles) for n in range(args.rounds)]
        for label, cycles in plan:
            for name, server in servers.items():
                echo = name != "bot"  # no API calls to wait for; not profiled
                profiled = args.py_spy and not echo and label != "warm-up"
                work = scripts(cycles, name, turn)
                before = cpu_seconds(server.process.pid), cpu_seconds(api.process.pid), time.process_time()
                with PySpy(server.process.pid, f"{args.py_spy}.{label.split()[-1]}") if profiled else nullcontext():
                    latencies, seconds = asyncio.run(run_round(server.url, work))
                driver = time.process_time() - before[2]
                if not echo and not args.without_pump:
                    drain(db_url)  # the pump's sends done before the echo's round: one server busy at a time
                if label != "warm-up":
                    results[name] += latencies
                    elapsed[name] += seconds
                    cpu[name][0] += cpu_seconds(server.process.pid) - before[0]
                    cpu[name][1] += cpu_seconds(api.process.pid) - before[1]
                    cpu[name][2] += driver
                    print(f"{label} {name}: {len(latencies) / seconds:.0f}/s, p99 {percentile(latencies, 99) * 1000:.1f} ms",
                          file=sys.stderr)
            turn += cycles
        stats = httpx.get(api.url, timeout=5).json()
    finally:
        for server in (*servers.values(), api):
            server.stop()
        folder.cleanup()

    walked = sum(walked[u] for u in userids[:half])  # the bot's cycles (the core alone's are checked as they run)
    backend = "PostgreSQL" if db_url.startswith("postgres") else "SQLite"
    print(f"WeCom callbacks (AES), {args.concurrency} concurrent, {args.rounds} rounds of {args.cycles * CALLBACKS * args.concurrency} "
          f"callbacks per server (texts and card presses, 2:3), {backend}, {os.cpu_count()} CPUs")
    print(f"{'':6} {'req/s':>7} {'p50':>8} {'p99':>8} {'max':>8}   CPU per callback: server, API stand-in, driver")
    for name in ("bot", "echo", "floor", "core"):
        values = results[name]
        per = [1000 * c / len(values) for c in cpu[name]]
        print(f"{name:6} {len(values) / elapsed[name]:7.0f} {percentile(values, 50) * 1000:6.1f} ms "
              f"{percentile(values, 99) * 1000:6.1f} ms {max(values) * 1000:6.1f} ms   "
              f"{per[0]:.3f} ms, {per[1]:.3f} ms, {per[2]:.3f} ms")
    rate = {name: len(results[name]) / elapsed[name] for name in results}
    throughput = rate["bot"] / rate["echo"]
    p99_ratio = percentile(results["bot"], 99) / percentile(results["echo"], 99)
    print(f"API calls the bot made: {stats['send']} sends ({stats['cards']} cards), {stats['updates']} cards greyed out by API, "
          f"{stats['stale']} stale answers (of {walked} cycles)")
    print(f"target: throughput bot/echo >= 0.5: {'met' if throughput >= 0.5 else 'missed'} ({throughput:.2f}); "
          f"p99 bot/echo <= 2: {'met' if p99_ratio <= 2 else 'missed'} ({p99_ratio:.2f})")
    print(f"the durable echo (floor: the echo plus each callback's key committed to the database): "
          f"{rate['floor'] / rate['echo']:.2f} of the echo's throughput, p99 "
          f"{percentile(results['floor'], 99) / percentile(results['echo'], 99):.2f}x; the bot against it: throughput "
          f"{rate['bot'] / rate['floor']:.2f}, p99 {percentile(results['bot'], 99) / percentile(results['floor'], 99):.2f}x")
    print(f"the core alone (the echo plus Engine.dispatch of the same callbacks: no rendering, outbox or API): "
          f"{rate['core'] / rate['echo']:.2f} of the echo's throughput, p99 "
          f"{percentile(results['core'], 99) / percentile(results['echo'], 99):.2f}x; the bot against it: throughput "
          f"{rate['bot'] / rate['core']:.2f}, p99 {percentile(results['bot'], 99) / percentile(results['core'], 99):.2f}x")
    if stats["stale"] or (stats["cards"] < 2 * walked and not args.without_pump):
        print("the cycles did not run as planned (stale presses or cards missing)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
