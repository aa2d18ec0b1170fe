"""Rankings and report exports on the city-sized data set: ``python -m bench.rankings``.

The city of bench.citydata (2,000 cadres, 10,000 households, 100,000 visits, 50,000 ratings, 5,000
problems, ~100 units), generated fresh into a temporary SQLite file unless --db names one that
holds it. Its 5,000 problems are then given what the ledger adds (bench setup, not timed):
responsible unit, A post, a deadline in the current half-year and, for closed ones, when they
were closed (some late, some overdue still open); 500 of the 差评 become hotline items (附件5) and
500 become service-object problems, half 行业领域 and half 公共方面 (附件4). Still 5,000 problems.

Timed, each in its own session as a command runs it (median of --reps warm runs; the first run,
with its imports and matplotlib's font cache, reported apart):
  * ranking: what /ranking answers the work-style office for each metric (every unit and every
    cadre ranked by SQL aggregates, the text, the PNG chart), and the aggregates alone;
    one unit's supervisor (that unit's cadres and the unit's place);
  * export: each form 附件1–5 for every unit (one workbook, one sheet per unit and part), all five
    together, and all five for one unit (what a unit's supervisor gets);
  * a spot-check draw (share 0.1) of the half-year, for information.
Target (issue 4): ranking and export each at most 2 s on SQLite.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, delete, func, select, update

from bench.citydata import SEED, TZ, generate
from bot.config import Settings
from bot.reports import forms, rankings, spotcheck
from bot.reports.commands import ranking_report
from storage.db import make_engine, session_scope
from storage.models import Cadre, Problem, ProblemSource, Rating, Role, ServiceObject, SpotCheck, Unit

TARGET_SECONDS = 2.0


def add_ledger(db, today: date, half: str, seed: int = SEED) -> dict:
    """Gives the city's problems the ledger's columns, and turns 1,000 差评 into hotline and
    service-object items (附件5, 附件4); returns counts."""
    rng = random.Random(seed + 4)
    start = date(today.year, 1 if today.month <= 6 else 7, 1)
    with session_scope(db) as s:
        staff: dict[int, list[int]] = {}
        for cadre_id, unit_id in s.execute(select(Cadre.id, Cadre.unit_id).where(Cadre.role == Role.CADRE)):
            staff.setdefault(unit_id, []).append(cadre_id)
        objects: dict[int, list[tuple[int, str, str]]] = {}
        for obj_id, unit_id, name, phone in s.execute(select(ServiceObject.id, ServiceObject.unit_id,
                                                             ServiceObject.name, ServiceObject.phone)):
            objects.setdefault(unit_id, []).append((obj_id, name, phone))
        rows = s.execute(select(Problem.id, Problem.source, Problem.status, Problem.unit_id)
                         .order_by(Problem.id)).all()
        rated = [r for r in rows if r.source == ProblemSource.RATING]
        converted = {r.id: kind for r, kind in zip(rng.sample(rated, 1000), ["hotline"] * 500 + ["object"] * 500)}
        updates = []
        for r in rows:
            unit_id = r.unit_id if r.unit_id in staff else rng.choice(list(staff))
            deadline = start + timedelta(days=rng.randrange(max(1, (today - start).days + 30)))
            values = {"pid": r.id, "responsible_unit_id": unit_id, "responsible_a_id": rng.choice(staff[unit_id]),
                      "deadline": deadline, "closed_at": None, "source": r.source, "service_object_id": None,
                      "remit": None, "raiser_name": None, "hotline_status": None, "category": None}
            if r.status in ("closed", "answered"):
                closed = deadline + timedelta(days=rng.choice((-5, -2, -1, 0, 0, 1, 3)))
                values["closed_at"] = datetime.combine(closed, datetime.min.time().replace(hour=10), tzinfo=TZ)
            kind = converted.get(r.id)
            if kind == "hotline":
                values.update(source=ProblemSource.HOTLINE, raiser_name=f"热线来电{r.id}", category="热线",
                              hotline_status=rng.choice(("办理中", "已办结，已电话答复", "已转办")))
            elif kind == "object":
                obj_id, name, _phone = rng.choice(objects.get(unit_id) or [(None, None, None)])
                values.update(source=ProblemSource.SERVICE_OBJECT, service_object_id=obj_id, raiser_name=name,
                              remit=rng.choice(("行业领域", "公共方面")), category="医疗")
            updates.append(values)
        table = Problem.__table__
        stmt = (update(table).where(table.c.id == bindparam("pid"))
                .values(responsible_unit_id=bindparam("responsible_unit_id"),
                        responsible_a_id=bindparam("responsible_a_id"), deadline=bindparam("deadline"),
                        closed_at=bindparam("closed_at"), source=bindparam("source"),
                        service_object_id=bindparam("service_object_id"), remit=bindparam("remit"),
                        raiser_name=func.coalesce(bindparam("raiser_name"), table.c.raiser_name),
                        hotline_status=bindparam("hotline_status"),
                        category=func.coalesce(bindparam("category"), table.c.category)))
        s.connection().execute(stmt, updates)
        by_source = dict(s.execute(select(Problem.source, func.count()).group_by(Problem.source)).all())
    return by_source


def _has_city(db) -> bool:
    from sqlalchemy import inspect

    if "cadre" not in inspect(db).get_table_names():
        return False
    with session_scope(db) as s:
        return bool(s.execute(select(func.count()).select_from(Cadre)).scalar())


def timed(db, run, reps: int) -> dict:
    """Runs ``run(session)`` reps+1 times, each in its own session; the first reported apart."""
    seconds, cpu, result = [], [], None
    for _ in range(reps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        with session_scope(db) as s:
            result = run(s)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"first": seconds[0], "median": statistics.median(seconds[1:]), "min": min(seconds[1:]),
            "cpu": statistics.median(cpu[1:]), "result": result}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rankings", description=__doc__.split("\n")[0])
    p.add_argument("--db", help="database URL: an empty one gets the city (and this benchmark's ledger columns); "
                                "one holding it is used as it is (default: a new temporary SQLite file)")
    p.add_argument("--reps", type=int, default=3, help="warm runs per case (default 3), after one cold run")
    args = p.parse_args(argv)

    folder = None
    if args.db:
        url = args.db
    else:
        folder = tempfile.TemporaryDirectory(prefix="zuofeng-rankings-")
        url = f"sqlite:///{Path(folder.name) / 'city.db'}"
    settings = Settings(environment="test", database_url=url, load_example_roster=False)
    db = make_engine(settings.sqlalchemy_url)
    today = datetime.now(TZ).date()
    half = f"{today.year}H{1 if today.month <= 6 else 2}"
    if not _has_city(db):
        print(f"bench.rankings: generating the city into {url} ...", file=sys.stderr, flush=True)
        summary = generate(db, today=today, progress=sys.stderr.isatty())
        sources = add_ledger(db, today, half)
        print(f"city: {summary['cadres']} cadres, {summary['households']} households, {summary['visits']} visits, "
              f"{summary['ratings']} ratings, {summary['problems']} problems "
              f"({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}), {summary['units']} units; "
              f"generated in {summary['seconds']} s")
    with session_scope(db) as s:
        unit = s.execute(select(Unit).where(Unit.name == "市住建局")).scalar_one()
        ratings_in_half = s.execute(select(func.count()).select_from(Rating)
                                    .where(Rating.rated_at >= datetime(today.year, 1 if today.month <= 6 else 7, 1,
                                                                       tzinfo=TZ))).scalar()
    print(f"half-year {half}, today {today}, {ratings_in_half} ratings in the half-year; {db.dialect.name}; "
          f"{args.reps} warm runs per case (median), target {TARGET_SECONDS:.0f} s\n")

    cases = []
    for metric in rankings.METRICS:
        cases.append((f"ranking {metric}: office (text+PNG)", "ranking",
                      lambda s, m=metric: ranking_report(s, settings, m, half, None, today, own_unit_id=None)))
    for metric in rankings.METRICS:
        cases.append((f"ranking {metric}: SQL only", "ranking",
                      lambda s, m=metric: (rankings.ranking(s, m, "units", half, settings, today),
                                           rankings.ranking(s, m, "cadres", half, settings, today))))
    cases.append(("ranking satisfaction: one unit", "ranking",
                  lambda s: ranking_report(s, settings, "satisfaction", half, {unit.id}, today, own_unit_id=unit.id)))
    for n in forms.FORMS:
        cases.append((f"export 附件{n}: every unit", "export",
                      lambda s, n=n: forms.export(s, [n], half, forms.units_for(s, None), settings)))
    cases.append(("export 附件1-5: every unit", "export",
                  lambda s: forms.export(s, forms.FORMS, half, forms.units_for(s, None), settings)))
    cases.append(("export 附件1-5: one unit", "export",
                  lambda s: forms.export(s, forms.FORMS, half, [unit], settings)))

    verdicts = []
    for name, kind, run in cases:
        r = timed(db, run, args.reps)
        size = ""
        if kind == "export":
            files = r["result"]
            size = f"  {sum(len(f.content) for f in files) / 1024:7.0f} KiB in {len(files)} file(s)"
        ok = r["median"] <= TARGET_SECONDS
        verdicts.append(ok)
        print(f"  {name:<36} first {r['first']:6.2f} s  median {r['median']:6.3f} s  min {r['min']:6.3f} s  "
              f"cpu {r['cpu']:6.3f} s  {'ok' if ok else 'OVER'}{size}", flush=True)

    with session_scope(db) as s:
        s.execute(delete(SpotCheck))
    started = time.perf_counter()
    with session_scope(db) as s:
        drawn = spotcheck.draw(s, half, 0.1, datetime.now(TZ), seed=1)
    print(f"\n  spot-check draw (share 0.1)            {time.perf_counter() - started:6.2f} s  "
          f"{drawn.new} visits drawn")
    print(f"\nverdict: {'every case within' if all(verdicts) else 'NOT every case within'} {TARGET_SECONDS:.0f} s")
    db.dispose()
    if folder is not None:
        folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
