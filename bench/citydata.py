"""The city-sized data set the scheduler benchmarks run on: ``python -m bench.citydata [--db URL]``.

What it writes (fixed random seed, so two runs give the same rows):
  * ~100 units (市直部门 and 镇街) plus 市作风办;
  * 2,000 cadres (role cadre) spread over the units, one supervisor per unit and 5 supervisors in
    市作风办 (they oversee every unit); a Telegram chat account bound for everyone;
  * 10,000 households (5 per cadre on average, 村 or 居) and 10 service objects per cadre, a few
    cadres short of the minimum (what the 附件3-4 reminder is about);
  * 100,000 visits, half in the previous half-year and half in the current one up to today; in
    the current half about a quarter of the households are not visited yet, so some cadres are
    behind plan (what the digests and the 附件1-2 reminder list);
  * 50,000 ratings (好差评) of cadres and of one service window per unit, 2,500 of them 差评,
    each with its problem on the ledger and, when the rater left a phone, a call-back task;
  * 5,000 problems: those 2,500 plus 2,500 raised on visits (a visit with a difficulty);
  * evidence of visits (issue 14, ``evidence=True``, the default): four households in five with
    surveyed coordinates; a third of the visits with a location (most at the doorstep, some
    kilometres off, a few vague), a tenth with a photo (some of them the same picture again), one in
    twelve confirmed by the household; each visit's level as bot.core.evidence.level gives it, and
    flags (reused photo, too fast, burst, far, forwarded) on a few percent of the visits.

How: SQLAlchemy Core ``insert`` with lists of dicts in chunks (executemany, one transaction),
primary keys assigned here so no row has to be read back. On SQLite it takes a few seconds.

``generate(engine, seed=...)`` is the entry point for other benchmarks (it migrates an empty
database first); ``add_visits`` adds more visits to a generated city (the scaling checks).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, time as dtime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine

from types import SimpleNamespace

from bot import texts
from bot.config import Settings
from bot.core import evidence as proof
from bot.core.geo import Point, distance_m
from bot.core.periods import half_of
from bot.core.survey import CATEGORIES
from bot.texts import RATING_REASONS
from storage import crypto
from storage.db import make_engine, upgrade
from storage.models import (Cadre, CallbackTask, ChatAccount, EvaluationCode, Household, Problem, ProblemSource,
                            ProblemStatus, Rating, Role, ServiceObject, ServiceWindow, TargetKind, Unit, Visit,
                            VisitFlag)

SEED = 20260610
TZ = ZoneInfo("Asia/Shanghai")
CHUNK = 5_000
CHANNEL = "telegram"
OFFICE = "市作风办"
CHAT_ID_BASE = 700_000_000  # a cadre's Telegram user id is this plus the cadre id
SURVEY = {"security": ("满意", "基本满意", "不满意"), "environment": ("满意", "基本满意", "不满意"),
          "medical": ("方便", "一般", "不方便"), "education": ("满意", "基本满意", "不满意", "不涉及"),
          "culture": ("满意", "基本满意", "不满意")}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅琳建国志文斌波辉鹏宇浩凯"
DEPARTMENTS = ("住建局", "民政局", "教育局", "卫健委", "人社局", "公安局", "市场监管局", "自然资源局", "交通局", "水利局",
               "农业农村局", "商务局", "文旅局", "应急局", "城管局", "税务局", "医保局", "行政审批局", "生态环境局", "司法局")


# --------------------------------------------------------------------------- time frame


def halves(today: date) -> tuple[datetime, datetime, datetime]:
    """(start of the previous half, start of the current half, the end of ``today``), aware UTC."""
    start = date(today.year, 1 if today.month <= 6 else 7, 1)
    prev = date(start.year - 1, 7, 1) if start.month == 1 else date(start.year, 1, 1)
    as_utc = lambda d: datetime.combine(d, dtime(0), tzinfo=TZ).astimezone(timezone.utc)  # noqa: E731
    return as_utc(prev), as_utc(start), as_utc(today + timedelta(days=1))


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A random moment in [start, end), in working hours most of the time (what cadres do)."""
    day = start + timedelta(days=rng.randrange(max(1, (end - start).days)))
    local = day.astimezone(TZ).replace(hour=rng.choice((8, 9, 10, 11, 14, 15, 16, 17, 19)), minute=rng.randrange(60),
                                       second=rng.randrange(60))
    return min(local.astimezone(timezone.utc), end - timedelta(seconds=1))


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


# --------------------------------------------------------------------------- writing


class _Writer:
    """Bulk inserts in chunks with one progress bar over every row."""

    def __init__(self, conn, total: int, progress: bool):
        from tqdm import tqdm

        self.conn = conn
        self.bar = tqdm(total=total, unit="row", unit_scale=True, disable=not progress, file=sys.stderr,
                        desc="city data", dynamic_ncols=True)
        self.counts: dict[str, int] = {}

    def insert(self, model, rows: list[dict]) -> None:
        table = model.__table__
        # A Core insert: the phone columns encrypt through their type, their keyed hashes are ours to give.
        for spec in crypto.PHONE_COLUMNS:
            if spec.table == table.name:
                keys = crypto.keyring()
                rows = [{**row, spec.hash_column: keys.hash(row.get(spec.column))} for row in rows]
        keys = set().union(*(row.keys() for row in rows)) if rows else set()
        # executemany takes its columns from the first row: every row gets every key.
        rows = [row if len(row) == len(keys) else {k: row.get(k) for k in keys} for row in rows]
        self.bar.set_postfix_str(table.name)
        for i in range(0, len(rows), CHUNK):
            chunk = rows[i:i + CHUNK]
            self.conn.execute(table.insert(), chunk)
            self.bar.update(len(chunk))
        self.counts[table.name] = self.counts.get(table.name, 0) + len(rows)

    def close(self) -> None:
        self.bar.close()


def _next_id(conn, model) -> int:
    return (conn.execute(select(func.max(model.__table__.c.id))).scalar() or 0) + 1


def _prepare(engine: Engine) -> None:
    """Migrates an empty database; refuses one that already holds a roster."""
    if "cadre" not in inspect(engine).get_table_names():
        upgrade(engine)
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(Cadre.__table__)).scalar():
            raise SystemExit(f"bench.citydata: {engine.url.render_as_string()} already has cadres; "
                             "give an empty database")


def generate(engine: Engine, seed: int = SEED, *, today: date | None = None, units: int = 100, cadres: int = 2_000,
             households: int = 10_000, visits: int = 100_000, ratings: int = 50_000, bad_ratings: int = 2_500,
             visit_problems: int = 2_500, office_supervisors: int = 5, progress: bool = True,
             evidence: bool = True) -> dict:
    """Writes the city into an empty (or unmigrated) database; returns a summary of what it wrote.

    ``today`` (local date, default: today in Asia/Shanghai) ends the current half-year's visits.
    """
    _prepare(engine)
    rng = random.Random(seed)
    today = today or datetime.now(TZ).date()
    prev_start, cur_start, cur_end = halves(today)
    now = cur_end - timedelta(days=1)
    started = time.perf_counter()
    people_count = cadres + units + office_supervisors
    total = (units + 1 + 2 * people_count + households + 10 * cadres + visits + units + cadres + units + ratings
             + bad_ratings + visit_problems + int(0.6 * bad_ratings))  # for the progress bar only
    with engine.begin() as conn:
        w = _Writer(conn, total, progress)
        # Units: departments and townships, then the office that oversees them all.
        unit_rows = []
        for n in range(units):
            kind = "市直部门" if n % 2 == 0 else "镇街区"
            name = (f"市{DEPARTMENTS[n // 2 % len(DEPARTMENTS)]}" if kind == "市直部门" else f"第{n // 2 + 1}镇") \
                + (f"{n // (2 * len(DEPARTMENTS)) + 1}分局" if kind == "市直部门" and n >= 2 * len(DEPARTMENTS) else "")
            unit_rows.append({"id": n + 1, "name": name, "kind": kind, "active": True})
        office_id = units + 1
        unit_rows.append({"id": office_id, "name": OFFICE, "kind": "市直部门", "active": True})
        w.insert(Unit, unit_rows)
        unit_kind = {u["id"]: u["kind"] for u in unit_rows}

        # Cadres, then one supervisor per unit and the office's supervisors; all with a chat account.
        people = []
        for n in range(cadres):
            people.append({"id": n + 1, "name": _name(rng), "unit_id": 1 + rng.randrange(units), "role": Role.CADRE})
        for u in range(units):
            people.append({"id": len(people) + 1, "name": _name(rng), "unit_id": u + 1, "role": Role.SUPERVISOR,
                           "post": "主管领导"})
        for _ in range(office_supervisors):
            people.append({"id": len(people) + 1, "name": _name(rng), "unit_id": office_id, "role": Role.SUPERVISOR,
                           "post": "督查专员"})
        for p in people:
            p.update(mobile=f"139{p['id']:08d}", active=True, digests_muted=False, post=p.get("post"),
                     duties=None)
        w.insert(Cadre, people)
        bound = now - timedelta(days=30)
        w.insert(ChatAccount, [{"id": p["id"], "channel": CHANNEL, "external_user_id": str(CHAT_ID_BASE + p["id"]),
                                "cadre_id": p["id"], "bound_at": bound, "bound_by": "code", "unreachable_at": None}
                               for p in people])
        staff = [p for p in people if p["role"] == Role.CADRE]
        by_unit: dict[int, list[int]] = {}
        for c in staff:
            by_unit.setdefault(c["unit_id"], []).append(c["id"])
        unit_heads = {u: ids[:2] for u, ids in by_unit.items()}  # the A and B posts of a unit's ledger items

        # Households: each cadre gets some (5 on average, 3 to 7), 村 in townships, 居 in the city.
        house_rows, owner = [], {}
        for h in range(households):
            cadre = staff[h % len(staff)] if h < len(staff) * 3 else rng.choice(staff)
            area = "村" if unit_kind[cadre["unit_id"]] == "镇街区" else "居"
            area_name = f"{'幸福' if area == '居' else '红旗'}{'社区' if area == '居' else '村'}{cadre['unit_id']}-{h % 7}"
            house_rows.append({"id": h + 1, "address": f"{area_name}{h // 7 + 1}号", "name": _name(rng) + f"{h}",
                               "phone": f"137{h:08d}", "area_kind": area, "area_name": area_name,
                               "cadre_id": cadre["id"], "active": True})
            owner[h + 1] = cadre
        # Coordinates and evidence from a generator of their own: the rows above and below stay as they
        # were before the city had evidence.
        evidence_rng = random.Random(seed + 14)
        if evidence:
            _coordinates(evidence_rng, house_rows)
        w.insert(Household, house_rows)

        # Service objects: ten per cadre, one cadre in twenty short of the minimum.
        objects = []
        for c in staff:
            for j in range(10 if rng.random() > 0.05 else rng.randrange(3, 10)):
                objects.append({"id": len(objects) + 1, "name": f"对象{c['id']}-{j}", "workplace": f"某企业{j}",
                                "phone": f"136{c['id']:05d}{j:03d}", "note": None, "cadre_id": c["id"],
                                "unit_id": c["unit_id"], "active": True})
        w.insert(ServiceObject, objects)

        # Visits; their difficulties become the visit problems below.
        visit_rows = _visit_rows(rng, house_rows, owner, visits, prev_start, cur_start, cur_end, first_id=1)
        problems = []
        for v in rng.sample(visit_rows, visit_problems):
            h = house_rows[v["household_id"] - 1]
            solved = rng.random() < 0.3
            v.update(difficulty_category=rng.choice(CATEGORIES[h["area_kind"]]),
                     difficulty_content=f"{h['area_name']}路灯不亮、下水道堵塞，希望尽快处理（{v['id']}）",
                     difficulty_solved=solved)
            problems.append({"source": ProblemSource.VISIT,
                             "status": ProblemStatus.SOLVED_ON_SPOT if solved else rng.choice(LEDGER_STATES),
                             "category": v["difficulty_category"], "content": v["difficulty_content"],
                             "household_id": h["id"], "visit_id": v["id"], "raised_by_cadre_id": v["cadre_id"],
                             "unit_id": owner[h["id"]]["unit_id"], "raiser_name": h["name"], "raiser_phone": h["phone"],
                             "created_at": v["visited_at"], "updated_at": v["visited_at"]})
        flag_rows = _evidence(evidence_rng, house_rows, visit_rows) if evidence else []
        w.insert(Visit, visit_rows)
        w.insert(VisitFlag, flag_rows)

        # Evaluation codes: every cadre and one service window per unit.
        w.insert(ServiceWindow, [{"id": u, "name": "综合窗口", "unit_id": u, "active": True} for u in range(1, units + 1)])
        codes = [{"id": c["id"], "target_kind": TargetKind.CADRE, "cadre_id": c["id"], "window_id": None, "version": 1,
                  "issued_at": prev_start, "revoked_at": None} for c in staff]
        codes += [{"id": len(staff) + u, "target_kind": TargetKind.WINDOW, "cadre_id": None, "window_id": u,
                   "version": 1, "issued_at": prev_start, "revoked_at": None} for u in range(1, units + 1)]
        w.insert(EvaluationCode, codes)

        # Ratings, as bot.core.evaluation.submit_rating writes them: a keyed-hash rater, the local day,
        # the target's unit; a 差评 carries reasons, maybe a comment and a phone, and a ledger problem.
        rating_rows, callbacks = [], []
        bad = set(rng.sample(range(ratings), bad_ratings))
        for r in range(ratings):
            code = rng.choice(codes)
            unit_id = people[code["cadre_id"] - 1]["unit_id"] if code["cadre_id"] else code["window_id"]
            at = _moment(rng, prev_start, cur_end)
            channel = rng.choice(("web", "web", "web", "telegram"))
            row = {"id": r + 1, "code_id": code["id"], "target_kind": code["target_kind"], "cadre_id": code["cadre_id"],
                   "window_id": code["window_id"], "unit_id": unit_id, "reasons": [], "comment": None, "phone": None,
                   "channel": channel, "rater_key": hashlib.sha256(f"rater:{seed}:{r}".encode()).hexdigest(),
                   "address_key": hashlib.sha256(f"addr:{r % 9973}".encode()).hexdigest() if channel == "web" else None,
                   "rated_at": at, "rated_on": at.astimezone(TZ).date().isoformat(), "misuse": False,
                   "problem_id": None}
            if r in bad:
                row["level"] = rng.choice((1, 2))
                row["reasons"] = rng.sample(RATING_REASONS, rng.choice((1, 1, 2)))
                row["comment"] = rng.choice((None, "等了一个多小时没人理", "材料让跑了三趟"))
                row["phone"] = f"135{r:08d}" if rng.random() < 0.6 else None
                problem_id = len(problems) + 1
                problems.append({"source": ProblemSource.RATING, "status": rng.choice(LEDGER_STATES),
                                 "category": "干部作风", "content": f"差评：{'、'.join(row['reasons'])}",
                                 "household_id": None, "visit_id": None, "raised_by_cadre_id": None,
                                 "unit_id": unit_id, "raiser_name": None, "raiser_phone": row["phone"],
                                 "created_at": at, "updated_at": at})
                row["problem_id"] = problem_id
                if row["phone"]:
                    done = rng.random() < 0.5
                    callbacks.append({"id": len(callbacks) + 1, "rating_id": r + 1, "problem_id": problem_id,
                                      "unit_id": unit_id, "phone": row["phone"], "status": "done" if done else "open",
                                      "due_on": (at.astimezone(TZ).date() + timedelta(days=7)).isoformat(),
                                      "created_at": at, "done_at": at + timedelta(days=2) if done else None})
            else:
                row["level"] = rng.choices((5, 4, 3), weights=(65, 23, 12))[0]
            rating_rows.append(row)
        for i, p in enumerate(problems, 1):
            p["id"] = i
            _ledger_fields(rng, p, unit_heads)
        w.insert(Problem, problems)  # before the ratings and call-backs that point at them
        w.insert(Rating, rating_rows)
        w.insert(CallbackTask, callbacks)
        w.close()
    seconds = time.perf_counter() - started
    supervisors = units + office_supervisors
    return {"seconds": round(seconds, 2), "today": today.isoformat(), "half": half_of(now, TZ),
            "units": units + 1, "cadres": cadres, "supervisors": supervisors, "office_supervisors": office_supervisors,
            "chat_accounts": len(people), "households": households, "service_objects": len(objects),
            "visits": visits, "visit_flags": len(flag_rows),
            "visits_by_evidence": dict(sorted(Counter(v.get("evidence", "none") for v in visit_rows).items())),
            "ratings": ratings, "bad_ratings": bad_ratings, "problems": len(problems),
            "callback_tasks": len(callbacks), "rows": sum(w.counts.values())}


CENTRE = Point(30.2741, 120.1551)  # the city's centre (WGS-84); households lie within about 30 km


def _coordinates(rng: random.Random, house_rows: list[dict]) -> None:
    """Four households in five surveyed (WGS-84, as the roster stores them); the rest have none."""
    for h in house_rows:
        if rng.random() < 0.8:
            h.update(latitude=CENTRE.latitude + rng.uniform(-0.25, 0.25),
                     longitude=CENTRE.longitude + rng.uniform(-0.3, 0.3), coord_source="surveyed")
        else:
            h.update(latitude=None, longitude=None, coord_source=None)


def _evidence(rng: random.Random, house_rows: list[dict], visit_rows: list[dict]) -> list[dict]:
    """Gives the visits their evidence, as the visit flow and bot.core.evidence would have stored it,
    and returns the flags found: a third with a location, a tenth with a photo, one in twelve
    confirmed by the household."""
    settings = Settings.model_construct()
    homes = {h["id"]: h for h in house_rows}
    flags, photos = [], []

    def flag(visit: dict, kind: str, reason: str) -> None:
        flags.append({"id": len(flags) + 1, "visit_id": visit["id"], "cadre_id": visit["cadre_id"], "kind": kind,
                      "reason": reason, "created_at": visit["visited_at"]})

    for v in visit_rows:
        home = homes[v["household_id"]]
        v.update(location_accuracy=None, location_note=None, distance_m=None, photo_sha256=None, photo_phash=None,
                 photo_forwarded=False, household_confirmed_at=None, evidence=proof.NONE)
        if rng.random() < 1 / 3:
            near = home["latitude"] is not None and rng.random() < 0.85
            meters = rng.uniform(5, 200) if near else rng.uniform(500, 12_000)
            base = Point(home["latitude"], home["longitude"]) if home["latitude"] is not None else CENTRE
            here = Point(base.latitude + meters / 111_195, base.longitude)
            v.update(latitude=here.latitude, longitude=here.longitude,
                     location_accuracy=rng.choice((5.0, 10.0, 20.0, 35.0, 65.0, 1_500.0)),
                     location_note="forwarded" if rng.random() < 0.01 else None)
            if home["latitude"] is not None:
                v["distance_m"] = distance_m(here, Point(home["latitude"], home["longitude"]))
        if rng.random() < 0.1:
            again = photos and rng.random() < 0.03
            phash = (f"{int(rng.choice(photos), 16) ^ (1 << rng.randrange(64)):016x}" if again
                     else f"{rng.getrandbits(64):016x}")
            v.update(photo_ref=f"telegram:photo-{v['id']}", photo_sha256=f"{rng.getrandbits(256):064x}",
                     photo_phash=phash)
            if again:
                flag(v, "same_photo", texts.FLAG_SAME_PHOTO.format(other=v["id"] - 1, date="2026-01-01"))
            photos.append(phash)
        if rng.random() < 1 / 12:
            v["household_confirmed_at"] = v["visited_at"] + timedelta(minutes=rng.randrange(5, 120))
        v["evidence"] = proof.level(SimpleNamespace(**v), settings)
        if v["location_note"] == "forwarded":
            flag(v, "forwarded", texts.FLAG_FORWARDED)
        if v["distance_m"] is not None and v["distance_m"] > settings.visit_far_km * 1000:
            flag(v, "far", texts.FLAG_FAR.format(distance=f"{v['distance_m'] / 1000:.1f} 公里"))
        if rng.random() < 0.01:
            flag(v, "too_fast", texts.FLAG_TOO_FAST.format(other=v["id"] - 1, distance="20.0 公里", minutes=5))
        elif rng.random() < 0.005:
            flag(v, "burst", texts.FLAG_BURST.format(count=4, minutes=10))
    return flags


LEDGER_STATES = (ProblemStatus.NEW, ProblemStatus.ASSIGNED, ProblemStatus.IN_PROGRESS, ProblemStatus.CLOSED,
                 ProblemStatus.ANSWERED)


def _ledger_fields(rng: random.Random, problem: dict, unit_heads: dict[int, list[int]]) -> None:
    """An item past 待交办 has a responsible unit, A and B posts and a deadline (some overdue); a
    closed one its result. Only columns that exist are set (the ledger migration added them)."""
    columns = Problem.__table__.c
    if problem["status"] in (ProblemStatus.NEW, ProblemStatus.SOLVED_ON_SPOT) or "deadline" not in columns:
        return
    heads = unit_heads.get(problem["unit_id"]) or [None, None]
    assigned = problem["created_at"] + timedelta(days=rng.randrange(1, 5))
    problem.update(responsible_unit_id=problem["unit_id"], responsible_a_id=heads[0],
                   responsible_b_id=heads[-1], assigned_at=assigned, last_action_at=assigned,
                   deadline=(assigned + timedelta(days=rng.choice((5, 10, 15)))).astimezone(TZ).date())
    if problem["status"] in (ProblemStatus.CLOSED, ProblemStatus.ANSWERED):
        problem.update(result="已协调相关部门处理完毕", closed_at=assigned + timedelta(days=rng.randrange(1, 10)))
    problem["updated_at"] = max(problem["updated_at"], problem.get("closed_at") or assigned)


def _visit_rows(rng, house_rows, owner, count, prev_start, cur_start, cur_end, first_id,
                pools: tuple[list[int], list[int]] | None = None) -> list[dict]:
    """``count`` visits, half in each half-year; a quarter of the households not yet visited this half.

    ``pools`` (households to visit in the previous and in the current half) defaults to all of them
    and a random three quarters."""
    cur_half, prev_half = half_of(cur_start, TZ), half_of(prev_start, TZ)
    ids = [h["id"] for h in house_rows]
    prev_pool, cur_pool = pools or (ids, [i for i in ids if rng.random() >= 0.25])
    rows = []
    for n in range(count):
        current = n % 2 == 0
        household = rng.choice(cur_pool if current else prev_pool)
        at = _moment(rng, cur_start, cur_end) if current else _moment(rng, prev_start, cur_start)
        rows.append({"id": first_id + n, "cadre_id": owner[household]["id"], "household_id": household,
                     "half": cur_half if current else prev_half, "visited_at": at, "card_left": rng.random() < 0.95,
                     "survey": {q: rng.choice(opts) for q, opts in SURVEY.items()}, "difficulty_category": None,
                     "difficulty_content": None, "difficulty_solved": None, "leaflet_given": rng.random() < 0.97,
                     "photo_ref": None, "latitude": None, "longitude": None, "channel": CHANNEL})
    return rows


def add_visits(engine: Engine, count: int, seed: int = SEED + 1, *, today: date | None = None,
               progress: bool = False) -> int:
    """Adds ``count`` more visits to a generated city, spread like the first ones; returns the count.

    Only households already visited in a half get the new visits of that half, so who is behind
    plan, and so who gets a reminder, stays the same: only the number of visit rows grows."""
    rng = random.Random(seed)
    today = today or datetime.now(TZ).date()
    prev_start, cur_start, cur_end = halves(today)
    v = Visit.__table__.c
    with engine.begin() as conn:
        house_rows = [dict(r._mapping) for r in conn.execute(select(Household.__table__.c.id,
                                                                    Household.__table__.c.cadre_id)
                                                             .order_by(Household.__table__.c.id))]
        owner = {h["id"]: {"id": h["cadre_id"]} for h in house_rows}
        pools = tuple(sorted(conn.execute(select(v.household_id).where(v.half == half_of(start, TZ)).distinct())
                             .scalars()) for start in (prev_start, cur_start))
        rows = _visit_rows(rng, house_rows, owner, count, prev_start, cur_start, cur_end,
                           first_id=_next_id(conn, Visit), pools=pools)
        w = _Writer(conn, count, progress)
        w.insert(Visit, rows)
        w.close()
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.citydata", description=__doc__.split("\n")[0])
    p.add_argument("--db", help="database URL (default: a new SQLite file in a temporary folder, kept)")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='zuofeng-city-')) / 'city.db'}"
    print(f"bench.citydata: writing the city into {url}", flush=True)
    engine = make_engine(url)
    try:
        summary = generate(engine, seed=args.seed)
    finally:
        engine.dispose()
    print(f"city data written to {url}")
    for key, value in summary.items():
        print(f"  {key:<20}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
