"""``python -m bench.rating_page``: rating-page POSTs per second and their latency, on SQLite.

The production app (bot.app.create_app) under uvicorn on loopback, a fresh migrated SQLite file
with the example roster. Untimed: every simulated phone opens a card's page once (its cookie and
CSRF token). Timed: every phone submits its rating, --concurrency at a time, each from its own
address (as phones behind different networks; the per-address limit is not what is measured):
four in five are good ratings, one in five a 差评 with reasons, a comment and a phone, which also
writes a problem and a call-back task. Prints POSTs/s, p50, p99 and checks the rows landed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func
from sqlmodel import select

from bot.app import create_app
from bot.cards import card_specs
from bot.cli import load_example_if_empty
from bot.config import Settings
from bot.core.engine import Engine
from storage.db import make_engine, session_scope, upgrade
from storage.models import Rating

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def serve(app, port: int = 0) -> tuple[uvicorn.Server, threading.Thread, int]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rating_page", description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(environment="test", database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
                            evaluation_secret="bench-only-evaluation-secret-0123456789",
                            rating_rate_limit=10 ** 6, scheduler_in_run=False)
        db = make_engine(settings.sqlalchemy_url)
        upgrade(db)
        load_example_if_empty(db, settings)
        app = create_app(settings, Engine(db, settings), with_worker=False)
        server, thread, port = serve(app)
        base = f"http://127.0.0.1:{port}"
        with session_scope(db) as session:
            urls = [spec.payload.replace(settings.public_url, base)
                    for spec in card_specs(session, settings, Engine(db, settings).clock())]
        try:
            phones = []
            with httpx.Client(base_url=base) as opener:
                for n in range(args.posts):
                    page = opener.get(urls[n % len(urls)], headers={"X-Forwarded-For": "198.18.0.1"})
                    phones.append((urls[n % len(urls)], page.cookies, _CSRF.search(page.text).group(1), n))
                    opener.cookies.clear()

            latencies: list[float] = []
            statuses: list[int] = []
            local = threading.local()

            def post(phone) -> None:
                url, cookies, csrf, n = phone
                client = getattr(local, "client", None)
                if client is None:
                    client = local.client = httpx.Client()
                bad = n % 5 == 4
                form = {"csrf": csrf, "level": "2" if bad else str(5 - n % 3)}
                if bad:
                    form.update(reason=["办事拖拉", "态度生硬"], comment="等了很久没有人理", phone="13912345678")
                address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                started = time.perf_counter()
                response = client.post(url, data=form, cookies=dict(cookies),
                                       headers={"X-Forwarded-For": address})
                latencies.append(time.perf_counter() - started)
                statuses.append(response.status_code)

            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(post, phones))
            elapsed = time.perf_counter() - started
        finally:
            server.should_exit = True
            thread.join(10)
        with session_scope(db) as session:
            stored = session.exec(select(func.count()).select_from(Rating)).one()
        db.dispose()

    ok = statuses.count(200)
    print(f"{args.posts} rating-page POSTs, {args.concurrency} at a time, SQLite (WAL), {len(urls)} cards")
    print(f"throughput: {args.posts / elapsed:7.1f} POSTs/s   ({elapsed:.2f} s)")
    print(f"latency   : p50 {percentile(latencies, 0.5) * 1000:6.1f} ms   p99 {percentile(latencies, 0.99) * 1000:6.1f} ms")
    print(f"answers   : {ok} × 200, others {sorted(set(statuses) - {200}) or 'none'}; rows stored: {stored}")
    return 0 if ok == args.posts == stored else 1


if __name__ == "__main__":
    sys.exit(main())
