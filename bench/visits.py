"""The database under test and the visit each simulated cadre walks.

``prepare_database`` migrates a fresh database with the Alembic migrations (as ``python -m bot
migrate`` does) and writes a roster: one unit, one cadre per simulated Telegram user, each with
enough households that every visit of the run goes to a household not yet visited, ten service
objects each, and the user's chat account already bound to the cadre.

``VISIT`` is the script of one complete visit by buttons and text, as tests/test_telegram_e2e.py
walks it with the photo and location skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import MetaData, func, inspect
from sqlmodel import select

from bot import texts
from storage.db import make_engine, session_scope, upgrade
from storage.models import Cadre, ChatAccount, Household, Role, ServiceObject, Unit, Visit

CHANNEL = "telegram"
FIRST_BUTTON = object()  # the household step: take the first household offered (unvisited first)


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # "command", "press" or "text"
    value: object  # the command, the label of the button to press, or the text to send


VISIT: tuple[Step, ...] = (
    Step("/visit", "command", "/visit"),
    Step("household", "press", FIRST_BUTTON),
    Step("card", "press", texts.YES),
    Step("survey 1", "press", "满意"),
    Step("survey 2", "press", "基本满意"),
    Step("survey 3", "press", "方便"),
    Step("survey 4", "press", "不涉及"),
    Step("survey 5", "press", "满意"),
    Step("survey 6 (text)", "text", "希望多组织文艺活动"),
    Step("category", "press", "物业"),
    Step("content", "text", "电梯经常停运，老人上下楼困难"),
    Step("unsolved", "press", texts.SOLVED_NO),
    Step("leaflet", "press", texts.YES),
    Step("photo skip", "text", texts.SKIP),
    Step("location skip", "text", texts.SKIP),
    Step("confirm", "press", texts.CONFIRM),
)


def sqlalchemy_url(url: str) -> str:
    """The URL as the bot would use it (bare postgresql:// gets the psycopg 3 driver)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def prepare_database(url: str, *, user_ids: list[int], households: int, reset: bool = False) -> None:
    """Migrates an empty database and writes the roster; refuses a non-empty one unless ``reset``."""
    engine = make_engine(url)
    try:
        existing = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        if existing:
            if not reset:
                raise SystemExit(f"bench: the database {engine.url.render_as_string()} already has tables "
                                 f"({', '.join(sorted(existing)[:5])}…); give an empty one, or --reset-db to drop them")
            with engine.begin() as conn:
                existing_tables = MetaData()
                existing_tables.reflect(conn)  # every table there, whichever migration made it
                existing_tables.drop_all(conn)
        upgrade(engine)
        _write_roster(engine, user_ids, households)
    finally:
        engine.dispose()


def _write_roster(engine, user_ids: list[int], households: int) -> None:
    now = datetime.now(timezone.utc)
    with session_scope(engine) as s:
        unit = Unit(name="基准测试单位", kind="市直部门")
        s.add(unit)
        s.flush()
        for n, user_id in enumerate(user_ids, 1):
            cadre = Cadre(name=f"干部{n}", unit_id=unit.id, mobile=f"139{n:08d}", role=Role.CADRE)
            s.add(cadre)
            s.flush()
            # A few communities shared by several cadres, so 回头看's open-problems count has work to do.
            s.add_all([Household(address=f"幸福路{n}-{j}号", name=f"住户{n}-{j}", phone=f"137{n:04d}{j:04d}",
                                 area_kind="居", area_name=f"幸福社区{n % 3 + 1}", cadre_id=cadre.id)
                       for j in range(1, households + 1)])
            s.add_all([ServiceObject(name=f"对象{n}-{j}", workplace=f"某企业{j}", phone=f"136{n:04d}{j:04d}",
                                     cadre_id=cadre.id, unit_id=unit.id) for j in range(1, 11)])
            s.add(ChatAccount(channel=CHANNEL, external_user_id=str(user_id), cadre_id=cadre.id,
                              bound_at=now, bound_by="code"))


def count_visits(url: str) -> int:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            return s.exec(select(func.count()).select_from(Visit).where(Visit.channel == CHANNEL)).one()
    finally:
        engine.dispose()
