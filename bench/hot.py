"""The hot statements, fast path against SQLAlchemy: ``python -m bench.hot [--db URL] [--calls N]``.

For each statement of ``storage.hot`` that reads (and for the dialogue's save), the time per call
of the function callers use (``hot.start_event(conn, …)``: the fast path of storage/prepared.py,
typed rows included) and of the same statement through ``conn.execute(stmt, params).all()``, the
floor measured in the same run, on the same connection and rows, call for call alternated in
blocks so that whatever else runs on the machine slows both alike. Median of --repeats blocks.
A fresh SQLite file unless --db names an empty database (the bench's roster: 8 cadres, 20
households each, one visit and a few problems). Prints µs per call and the ratio fast/SQLAlchemy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.visits import prepare_database, sqlalchemy_url
from storage import hot
from storage.db import make_engine, session_scope
from storage.models import DialogueState, Problem, ProcessedInbound, Visit

CHANNEL = "telegram"


def _seed(engine, now: datetime) -> dict:
    with session_scope(engine) as s:
        from sqlmodel import select

        from storage.models import ChatAccount, Household

        account = s.exec(select(ChatAccount)).first()
        household = s.exec(select(Household).where(Household.cadre_id == account.cadre_id)).first()
        s.add(Visit(cadre_id=account.cadre_id, household_id=household.id, half="2026H2", visited_at=now,
                    card_left=True, survey={}, leaflet_given=True, channel="bench"))
        for i in range(3):
            s.add(Problem(source="visit", category="城建", content=f"路灯不亮{i}", household_id=household.id,
                          created_at=now, updated_at=now))
        s.add(DialogueState(channel=CHANNEL, external_user_id=account.external_user_id, flow="visit",
                            step="card", data={"household": household.id, "survey": {"q1": "是"}}, version=1,
                            updated_at=now))
        s.add(ProcessedInbound(channel=CHANNEL, event_key="seen", created_at=now))
        return {"user_id": account.external_user_id, "cadre_id": account.cadre_id, "household_id": household.id,
                "area_name": household.area_name}


def _cases(seed: dict, now: datetime):
    """(name, the call through storage.hot, the statement's name in hot.STATEMENTS, its parameters)"""
    u, c, h = seed["user_id"], seed["cadre_id"], seed["household_id"]
    return [
        ("start_event", lambda db: hot.start_event(db, CHANNEL, u, "seen"),
         dict(channel=CHANNEL, user_id=u, event_key="seen")),
        ("bound_cadre", lambda db: hot.bound_cadre(db, CHANNEL, u), dict(channel=CHANNEL, user_id=u)),
        ("households_with_status", lambda db: hot.households_with_status(db, c, "2026H2"),
         dict(cadre_id=c, half="2026H2")),
        ("cadre_progress", lambda db: hot.cadre_progress(db, c, "2026H2"), dict(cadre_id=c, half="2026H2")),
        ("household", lambda db: hot.household(db, h), dict(id=h)),
        ("lookback", lambda db: hot.lookback(db, h), dict(household_id=h)),
        ("open_nearby", lambda db: hot.open_nearby(db, seed["area_name"], h),
         dict(area_name=seed["area_name"], household_id=h)),
        # The same row saved again and again, with the version it has (an update that matches).
        ("save_state", None, None),
    ]


def _time(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hot", description=__doc__.split("\n")[0])
    p.add_argument("--db", help="an empty database URL (default: a fresh SQLite file)")
    p.add_argument("--calls", type=int, default=300, help="calls per block (default 300)")
    p.add_argument("--repeats", type=int, default=7, help="blocks per statement and way (default 7)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlalchemy_url(args.db) if args.db else f"sqlite:///{Path(tmp) / 'hot.db'}"
        prepare_database(url, user_ids=list(range(900_001, 900_009)), households=20)
        engine = make_engine(url)
        now = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
        seed = _seed(engine, now)
        print(f"hot statements on {engine.dialect.name}: µs per call, median of {args.repeats} blocks of "
              f"{args.calls} calls")
        print(f"  {'statement':<24} {'fast path':>10} {'SQLAlchemy':>11} {'fast/SA':>8}")
        fast_total = slow_total = 0.0
        with engine.connect() as conn, conn.begin():
            version = [1]

            def save_fast():
                hot.save_state(conn, CHANNEL, seed["user_id"], expected_version=version[0], flow="visit", step="card",
                               data={"survey": {"q1": "是"}}, version=version[0] + 1, now=now)
                version[0] += 1

            save = hot.STATEMENTS["save_state"].statement(conn.dialect)

            def save_slow():
                conn.execute(save, dict(b_channel=CHANNEL, b_user=seed["user_id"], b_version=version[0], flow="visit",
                                        step="card", data={"survey": {"q1": "是"}}, version=version[0] + 1,
                                        updated_at=now))
                version[0] += 1

            for name, call, params in _cases(seed, now):
                if call is None:
                    fast, slow = save_fast, save_slow
                else:
                    stmt = hot.STATEMENTS[name].statement(conn.dialect)
                    fast = (lambda call=call: call(conn))
                    slow = (lambda stmt=stmt, params=params: conn.execute(stmt, params).all())
                fast(), slow()  # compiled and cached both ways before timing
                fast_times, slow_times = [], []
                for _ in range(args.repeats):
                    fast_times.append(_time(fast, args.calls))
                    slow_times.append(_time(slow, args.calls))
                f, s = statistics.median(fast_times), statistics.median(slow_times)
                fast_total, slow_total = fast_total + f, slow_total + s
                print(f"  {name:<24} {f:>10.1f} {s:>11.1f} {f / s:>8.2f}")
        print(f"  {'all of them':<24} {fast_total:>10.1f} {slow_total:>11.1f} {fast_total / slow_total:>8.2f}")
        engine.dispose()


if __name__ == "__main__":
    main()
