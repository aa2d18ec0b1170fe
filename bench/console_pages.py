"""The web console's pages on the city data set: ``python -m bench.console_pages``.

The city of bench.citydata (2,000 cadres, 10,000 households, 100,000 visits, 50,000 ratings, 5,000
problems, ~100 units), generated fresh into a temporary SQLite file unless --db names one holding it.
Two users are logged in through the core's own login functions: one of the 作风办's supervisors (every
unit) and one unit's supervisor. Each page is requested through the production ASGI app
(bot.app.create_app, in process through httpx's ASGI transport, so the figure is the server's time:
routing, session check, the core's queries, Jinja rendering) --reps times after one warm-up.

Beside each page, the floor: the same core view function run bare in a session of its own (what the
page costs without HTTP, the session check and the template), timed in the same run.
Target (issue 12): median <= 300 ms and p95 <= 600 ms for every page on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bench.citydata import TZ, generate
from bot.app import create_app
from bot.config import Settings
from bot.core import console_views as views
from bot.core import login
from bot.core.engine import Engine
from bot.core.periods import half_of
from storage.db import make_engine, session_scope
from storage.models import Cadre, Problem, ProblemStatus, Role, Unit

MEDIAN_TARGET, P95_TARGET = 0.300, 0.600


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def log_in(db, settings: Settings, cadre_id: int, now: datetime) -> tuple[str, login.Who]:
    """A session for the cadre, made as the chat's link makes it."""
    with session_scope(db) as s:
        link = login.issue_link(s, cadre_id, now, settings)
    with session_scope(db) as s:
        started = login.redeem_link(s, settings, link.rsplit("/", 1)[-1], "127.0.0.1", "bench", now)
    with session_scope(db) as s:
        return started.token, login.who(s, settings, started.token, now)


def bare(db, fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        with session_scope(db, read_only=True) as s:
            fn(s)
        out.append(time.perf_counter() - started)
    return out[1:]


async def served(client: httpx.AsyncClient, path: str, cookie: str, reps: int) -> tuple[list[float], int, int]:
    out, status, size = [], 0, 0
    for _ in range(reps + 1):
        started = time.perf_counter()
        response = await client.get(path, cookies={"zf_console": cookie})
        out.append(time.perf_counter() - started)
        status, size = response.status_code, len(response.content)
    return out[1:], status, size


async def run(db, settings: Settings, reps: int) -> bool:
    core = Engine(db, settings)
    app = create_app(settings, core, with_worker=False)
    now = core.clock()
    half = half_of(now, settings.tz)
    with session_scope(db) as s:
        office = s.execute(select(Cadre.id).join(Unit, Unit.id == Cadre.unit_id)
                           .where(Unit.name == "市作风办", Cadre.role == Role.SUPERVISOR)).scalars().first()
        # The unit with the most cadres: the heaviest unit supervisor's pages.
        unit_id = s.execute(select(Cadre.unit_id).where(Cadre.role == Role.CADRE).group_by(Cadre.unit_id)
                            .order_by(func.count().desc())).scalars().first()
        head = s.execute(select(Cadre.id).where(Cadre.unit_id == unit_id, Cadre.role == Role.SUPERVISOR)).scalar()
        cadre = s.execute(select(Cadre.id).where(Cadre.unit_id == unit_id, Cadre.role == Role.CADRE)).scalar()
        item = s.execute(select(Problem.id).where(Problem.unit_id == unit_id, Problem.status != ProblemStatus.NEW)).scalar()
        fresh = s.execute(select(Problem.id).where(Problem.unit_id == unit_id, Problem.status == ProblemStatus.NEW)).scalar()
    users = {"作风办": log_in(db, settings, office, now), "单位主管": log_in(db, settings, head, now)}
    filters = views.LedgerFilters
    pages = [
        ("总览 overview", "/console/overview", lambda s, w: views.overview(s, settings, w, half, now)),
        ("单位 units", "/console/units", lambda s, w: views.overview(s, settings, w, half, now)),
        ("单位 one unit", f"/console/units/{unit_id}", lambda s, w: views.unit_page(s, settings, w, unit_id, half)),
        ("干部 one cadre", f"/console/cadres/{cadre}", lambda s, w: views.cadre_page(s, settings, w, cadre, half)),
        ("台账 ledger", "/console/ledger", lambda s, w: views.ledger_page(s, settings, w, filters(), now)),
        ("台账 overdue p2", "/console/ledger?state=overdue&page=2",
         lambda s, w: views.ledger_page(s, settings, w, filters(state="overdue", page=2), now)),
        ("台账 one item", f"/console/ledger/{item}", lambda s, w: views.item_page(s, settings, w, item, now)),
        ("台账 交办 step 1", f"/console/ledger/{fresh}", lambda s, w: views.item_page(s, settings, w, fresh, now)),
        ("台账 交办 step 2", f"/console/ledger/{fresh}?unit={unit_id}",
         lambda s, w: views.item_page(s, settings, w, fresh, now, unit_id)),
        ("评价 ratings", "/console/ratings", lambda s, w: views.ratings_page(s, settings, w, half)),
        ("评价 差评", "/console/ratings?bad=1", lambda s, w: views.ratings_page(s, settings, w, half, bad_only=True)),
        ("报表 reports", "/console/reports",
         lambda s, w: (views.ranking_view(s, settings, w, "satisfaction", "units", half, now),
                       views.units_in_scope(s, settings, w))),
    ]
    print(f"{'page':<18} {'user':<6} {'median':>8} {'p95':>8}   {'bare median':>11} {'bare p95':>9}   status  size")
    ok = True
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.bench") as client:
        for name, path, view in pages:
            for who_name, (cookie, who) in users.items():
                times, status, size = await served(client, path, cookie, reps)
                floor = await asyncio.get_running_loop().run_in_executor(
                    None, bare, db, lambda s: view(s, who), reps)
                median, high = statistics.median(times), p95(times)
                good = status == 200 and median <= MEDIAN_TARGET and high <= P95_TARGET
                ok &= good
                print(f"{name:<18} {who_name:<6} {median * 1000:7.1f}ms {high * 1000:7.1f}ms   "
                      f"{statistics.median(floor) * 1000:10.1f}ms {p95(floor) * 1000:8.1f}ms   {status}  "
                      f"{size / 1024:5.0f} KiB {'ok' if good else 'OVER'}", flush=True)
    core.close()
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console_pages", description=__doc__.split("\n")[0])
    p.add_argument("--db", help="database URL holding the city (default: generate it into a temporary SQLite file)")
    p.add_argument("--reps", type=int, default=20, help="timed requests per page and user (default 20)")
    args = p.parse_args(argv)
    folder = None
    if args.db:
        url = args.db
    else:
        folder = tempfile.TemporaryDirectory(prefix="zuofeng-console-")
        url = f"sqlite:///{Path(folder.name) / 'city.db'}"
    settings = Settings(environment="test", database_url=url, load_example_roster=False, scheduler_in_run=False)
    db = make_engine(settings.sqlalchemy_url)
    from sqlalchemy import inspect

    has_city = "cadre" in inspect(db).get_table_names()
    if has_city:
        with db.connect() as conn:
            has_city = bool(conn.execute(select(func.count()).select_from(Cadre)).scalar())
    if not has_city:
        print(f"bench.console_pages: generating the city into {url} ...", file=sys.stderr, flush=True)
        summary = generate(db, today=datetime.now(TZ).date(), progress=sys.stderr.isatty())
        print(f"city: {summary['cadres']} cadres, {summary['households']} households, {summary['visits']} visits, "
              f"{summary['ratings']} ratings, {summary['problems']} problems, {summary['units']} units")
    print(f"{db.dialect.name}; {args.reps} requests per page and user after one warm-up; "
          f"target median <= {MEDIAN_TARGET * 1000:.0f} ms, p95 <= {P95_TARGET * 1000:.0f} ms\n")
    ok = asyncio.run(run(db, settings, args.reps))
    print(f"\nverdict: {'every page within' if ok else 'NOT every page within'} the targets")
    db.dispose()
    if folder is not None:
        folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
