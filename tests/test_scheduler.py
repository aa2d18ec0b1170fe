"""Reminders and digests on a fixed clock: a whole half-year, downtime, double runs, quiet hours."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from scheduler.jobs import remind_callbacks, remind_deadlines, send_digests
from scheduler.sender import SENT, OutboxSender, RateLimiter
from storage.db import session_scope
from storage.models import Cadre, ChatAccount, Household, OutboxAttachment, OutboxMessage, Role, ServiceObject, Unit, Visit

TZ = ZoneInfo("Asia/Shanghai")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=TZ)


class Recorder:
    """A transport that delivers instantly and remembers what it delivered and when."""

    channel = "telegram"

    def __init__(self, clock):
        self.clock = clock
        self.limiter = RateLimiter(10_000, 10_000)
        self.sent: list[tuple[int, str, datetime]] = []

    async def deliver(self, message):
        self.sent.append((message.id, message.recipient, self.clock()))
        return SENT


class City:
    """Two units: 市住建局 with three cadres and a muted supervisor, 市作风办 with the office's supervisor."""

    def __init__(self, db, now):
        with session_scope(db) as s:
            office, bureau = Unit(name="市作风办"), Unit(name="市住建局")
            s.add_all([office, bureau])
            s.flush()
            self.a = Cadre(name="甲", unit_id=bureau.id, mobile="13800000011", role=Role.CADRE)
            self.b = Cadre(name="乙", unit_id=bureau.id, mobile="13800000012", role=Role.CADRE)
            self.c = Cadre(name="丙", unit_id=bureau.id, mobile="13800000013", role=Role.CADRE)
            self.head = Cadre(name="局长", unit_id=bureau.id, mobile="13800000014", role=Role.SUPERVISOR,
                              digests_muted=True)
            self.office = Cadre(name="作风办", unit_id=office.id, mobile="13800000015", role=Role.SUPERVISOR)
            people = [self.a, self.b, self.c, self.head, self.office]
            s.add_all(people)
            s.flush()
            for n, (cadre, households, objects) in enumerate([(self.a, 3, 10), (self.b, 2, 10), (self.c, 1, 8)]):
                s.add_all([Household(address=f"{cadre.name}路{i}号", name=f"{cadre.name}户{i}", phone="13900000000",
                                     area_kind="居", cadre_id=cadre.id) for i in range(households)])
                s.add_all([ServiceObject(name=f"{cadre.name}对象{i}", workplace="某单位", phone=f"1370000{n}{i:03d}",
                                         cadre_id=cadre.id, unit_id=bureau.id) for i in range(objects)])
            for i, person in enumerate(people):
                s.add(ChatAccount(channel="telegram", external_user_id=str(9000 + i), cadre_id=person.id,
                                  bound_at=now, bound_by="code"))
            self.chat = {person.id: str(9000 + i) for i, person in enumerate(people)}

    def visit_all(self, db, cadre, when):
        with session_scope(db) as s:
            for h in s.exec(select(Household).where(Household.cadre_id == cadre.id)).all():
                s.add(Visit(cadre_id=cadre.id, household_id=h.id, half="2026H1", visited_at=when, card_left=True,
                            leaflet_given=True, channel="telegram"))


def simulate(db, settings, clock, start, end, *, events=(), down=lambda t: False, runs_per_tick=1):
    """Ticks every hour from start to end: the jobs, then the sender until nothing is due."""
    transport = Recorder(clock)
    sender = OutboxSender(db, settings, {"telegram": transport}, clock=clock, worker="sim")
    pending = sorted(events, key=lambda e: e[0])

    async def run():
        t = start
        while t <= end:
            clock.now = t.astimezone(timezone.utc)
            while pending and pending[0][0] <= t:
                pending.pop(0)[1]()
            if not down(t):
                for _ in range(runs_per_tick):
                    with session_scope(db) as s:
                        remind_deadlines(s, settings, clock.now)
                        remind_callbacks(s, settings, clock.now)
                        send_digests(s, settings, clock.now)
                while await sender.run_once():
                    pass
            t += timedelta(hours=1)

    asyncio.run(run())
    with session_scope(db) as s:
        keys = {m.id: m.idempotency_key for m in s.exec(select(OutboxMessage)).all()}
    return [(keys[i], recipient, when) for i, recipient, when in transport.sent]


@pytest.fixture
def sim_settings(settings):
    return settings.model_copy(update={"digest_daily_time": datetime(2000, 1, 1, 21, 30).time(),
                                       "quiet_hours_start": datetime(2000, 1, 1, 21, 0).time()})


def test_a_whole_half_year_reaches_exactly_the_right_people_once(db, sim_settings, clock):
    city = City(db, clock())
    sent = simulate(db, sim_settings, clock, local(2026, 1, 1, 8), local(2026, 6, 30, 23), events=[
        (local(2026, 2, 1, 10), lambda: city.visit_all(db, city.c, local(2026, 2, 1, 10))),
        (local(2026, 3, 10, 10), lambda: city.visit_all(db, city.b, local(2026, 3, 10, 10))),
    ])
    counts = Counter((key.rsplit(":c", 1)[0].rsplit(":", 2)[0] if key.startswith("deadline") else key.split(":")[1],
                      recipient) for key, recipient, _ in sent)
    a, c, head, office = (city.chat[x.id] for x in (city.a, city.c, city.head, city.office))
    assert counts == Counter({
        ("deadline:form12", a): 4,  # 甲 has not visited: 06-03, 06-07, 06-09, 06-10
        ("deadline:form34", c): 4,  # 丙 has 8 service objects: 05-29, 06-02, 06-04, 06-05
        ("deadline:form5", head): 4, ("deadline:form34", head): 4, ("deadline:form12", head): 4,
        ("deadline:form5", office): 4, ("deadline:form34", office): 4, ("deadline:form12", office): 4,
        ("daily", office): 181, ("weekly", office): 26,  # the muted head of the bureau gets no digest
    })
    assert len(sent) == len({key for key, _, _ in sent})  # nothing twice
    for key, _, when in sent:
        hour = when.astimezone(TZ).hour
        assert 8 <= hour < 21, f"{key} sent at {when.astimezone(TZ)} in quiet hours"
    daily = [when.astimezone(TZ) for key, _, when in sent if key.startswith("digest:daily")]
    assert all(w.hour == 8 for w in daily)  # written at 21:30, held until the quiet hours ended
    form12 = sorted(when.astimezone(TZ) for key, r, when in sent if key.startswith("deadline:form12") and r == a)
    assert [w.date().isoformat() for w in form12] == ["2026-06-03", "2026-06-07", "2026-06-09", "2026-06-10"]
    with session_scope(db) as s:
        body = s.exec(select(OutboxMessage).where(
            OutboxMessage.idempotency_key == f"deadline:form12:2026-06-10:7:c{city.a.id}")).one().body
    assert "将于 6月10日 截止（还有 7 天）" in body and "本半年已走访 0/3 户" in body and "甲户0" in body


def test_downtime_across_a_reminder_sends_it_once_after_restart(db, settings, clock):
    city = City(db, clock())
    # Down from 06-02 20:00 to 06-03 10:00: the 09:00 reminder of 06-03 is late but within the grace.
    sent = simulate(db, settings, clock, local(2026, 6, 2, 8), local(2026, 6, 3, 20),
                    down=lambda t: local(2026, 6, 2, 20) <= t < local(2026, 6, 3, 10))
    reminders = [(key, when.astimezone(TZ)) for key, r, when in sent
                 if key.startswith("deadline:form12:2026-06-10:7") and r == city.chat[city.a.id]]
    assert [w.strftime("%m-%d %H:%M") for _, w in reminders] == ["06-03 10:00"]


def test_two_missed_points_send_only_the_newer(db, settings, clock):
    city = City(db, clock())
    wide = settings.model_copy(update={"misfire_grace_hours": 48, "digest_daily_time": None})
    # Down across 06-09 09:00 and 06-10 09:00 (one and zero days before the 06-10 deadline).
    sent = simulate(db, wide, clock, local(2026, 6, 10, 12), local(2026, 6, 10, 14))
    keys = [key for key, r, _ in sent if r == city.chat[city.a.id]]
    assert keys == [f"deadline:form12:2026-06-10:0:c{city.a.id}"]


def test_a_job_run_twice_writes_once(db, settings, clock):
    City(db, clock())
    once = simulate(db, settings, clock, local(2026, 6, 3, 9), local(2026, 6, 3, 9))
    with session_scope(db) as s:
        rows = len(s.exec(select(OutboxMessage)).all())
    twice = simulate(db, settings, clock, local(2026, 6, 3, 9), local(2026, 6, 3, 9), runs_per_tick=2)
    with session_scope(db) as s:
        assert len(s.exec(select(OutboxMessage)).all()) == rows
    assert len(once) == rows and twice == []


def test_nobody_is_reminded_of_what_they_have_done(db, settings, clock):
    city = City(db, clock())
    for cadre in (city.a, city.b, city.c):
        city.visit_all(db, cadre, local(2026, 5, 1, 10))
    sent = simulate(db, settings, clock, local(2026, 6, 3, 9), local(2026, 6, 3, 9))
    assert {r for key, r, _ in sent if key.startswith("deadline:form12")} == {
        city.chat[city.head.id], city.chat[city.office.id]}
    with session_scope(db) as s:
        body = s.exec(select(OutboxMessage).where(
            OutboxMessage.idempotency_key == f"deadline:form12:2026-06-10:7:c{city.office.id}")).one().body
    assert "均已完成" in body


def test_mute_and_unmute_by_chat(core, db, clock):
    from tests.utils import Chat, bind, make_roster

    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "sup", clock())
    chat = Chat(core, "sup")
    assert "暂停日报和周报" in chat.say("/mute")
    with session_scope(db) as s:
        assert s.get(Cadre, roster.supervisor.id).digests_muted
    assert "已恢复" in chat.say("/unmute")
    with session_scope(db) as s:
        assert not s.get(Cadre, roster.supervisor.id).digests_muted


def _rate(db, cadre, level, when, *, comment=None, misuse=False, phone=None):
    from bot.core.evaluation import code_for
    from storage.models import Problem, Rating, TargetKind

    with session_scope(db) as s:
        code = code_for(s, TargetKind.CADRE, cadre.id, when)
        rating = Rating(code_id=code.id, target_kind=TargetKind.CADRE, cadre_id=cadre.id, unit_id=cadre.unit_id,
                        level=level, comment=comment, channel="web", rater_key=f"k{when.timestamp()}{level}{phone}{misuse}",
                        rated_at=when, rated_on=when.astimezone(TZ).date().isoformat(), misuse=misuse, phone=phone)
        s.add(rating)
        s.flush()
        if phone:
            problem = Problem(source="rating", category="干部作风", content=comment or "差评", unit_id=cadre.unit_id,
                              created_at=when, updated_at=when)
            s.add(problem)
            s.flush()
            return rating.id, problem.id
        return rating.id, None


def test_digest_counts_ratings_of_the_scope_without_misuse(db, settings, clock):
    city = City(db, clock())
    day = local(2026, 6, 15, 12)
    _rate(db, city.a, 5, day)
    _rate(db, city.a, 4, day)
    _rate(db, city.b, 1, day, comment="办事拖拉，态度冷淡")
    _rate(db, city.b, 5, day, misuse=True)  # a burst: kept, but not counted
    _rate(db, city.b, 2, day - timedelta(days=3))  # before this period
    daily = settings.model_copy(update={"digest_weekly_day": None})
    simulate(db, daily, clock, local(2026, 6, 15, 18), local(2026, 6, 15, 18))
    with session_scope(db) as s:
        body = s.exec(select(OutboxMessage).where(
            OutboxMessage.idempotency_key == f"digest:daily:2026-06-15:c{city.office.id}")).one().body
    assert "本期群众评价 3 条，满意率 66.7%（非常满意 1，满意 1，基本满意 0，不满意 0，非常不满意 1）" in body
    assert "差评 1 条：\n• 乙（市住建局）非常不满意：办事拖拉，态度冷淡" in body


def test_digest_gives_the_evidence_of_visits_and_names_the_cadres_with_weak_or_flagged_visits(db, settings, clock):
    """Per the digest's scope: the share of the half-year's visits at each level of evidence, the
    flags, and the cadres whose visits are flagged or mostly without evidence, from the stored levels."""
    from storage.models import VisitFlag

    city = City(db, clock())
    day = local(2026, 6, 15, 12).astimezone(timezone.utc)
    for cadre in (city.a, city.b, city.c):
        city.visit_all(db, cadre, day)
    with session_scope(db) as s:
        visits = {v.id: v for v in s.exec(select(Visit).order_by(Visit.id)).all()}
        levels = {city.a.id: ["confirmed", "location", "location"], city.b.id: ["photo", "none"],
                  city.c.id: ["none"]}
        for visit in visits.values():
            visit.evidence = levels[visit.cadre_id].pop()
            s.add(visit)
        [c_visit] = [v for v in visits.values() if v.cadre_id == city.c.id]
        s.add(VisitFlag(visit_id=c_visit.id, cadre_id=city.c.id, kind="burst", reason="…", created_at=day))
    daily = settings.model_copy(update={"digest_weekly_day": None})
    simulate(db, daily, clock, local(2026, 6, 15, 18), local(2026, 6, 15, 18))
    with session_scope(db) as s:
        body = s.exec(select(OutboxMessage).where(
            OutboxMessage.idempotency_key == f"digest:daily:2026-06-15:c{city.office.id}")).one().body
    assert "本半年走访 6 次的凭证：住户确认 17%、位置相符 33%、照片 17%、无凭证 33%。" in body
    assert "疑似走过场 1 次，涉及 1 名干部" in body
    # 丙 first (flagged), then 乙 (half without evidence); 甲's visits are all evidenced: not named.
    assert ("凭证偏弱或有走过场标记的干部 2 名（⚠ 为疑似走过场次数）：\n• 丙（市住建局）无凭证 100% ⚠ 1\n"
            "• 乙（市住建局）照片 50%、无凭证 50%") in body
    assert "• 甲" not in body


def test_callback_reminders_due_and_overdue_masked(db, settings, clock):
    from storage.models import CallbackTask

    city = City(db, clock())
    day = local(2026, 6, 15, 12)
    tasks = []
    for due, phone in (("2026-06-15", "13912345678"), ("2026-06-12", "13987654321"), ("2026-06-30", "13700000000")):
        rating_id, problem_id = _rate(db, city.b, 1, day - timedelta(days=5), comment="差", phone=phone)
        tasks.append((rating_id, problem_id, due, phone))
    with session_scope(db) as s:
        for rating_id, problem_id, due, phone in tasks:
            s.add(CallbackTask(rating_id=rating_id, problem_id=problem_id, unit_id=city.b.unit_id, phone=phone,
                               due_on=due, created_at=day))
    sent = simulate(db, settings.model_copy(update={"digest_daily_time": None, "digest_weekly_day": None}), clock,
                    local(2026, 6, 15, 9), local(2026, 6, 15, 9))
    assert {r for key, r, _ in sent if key.startswith("callbacks:")} == {
        city.chat[city.head.id], city.chat[city.office.id]}
    with session_scope(db) as s:
        body = s.exec(select(OutboxMessage).where(
            OutboxMessage.idempotency_key == f"callbacks:2026-06-15:c{city.head.id}")).one().body
    assert "2 项差评回访" in body and "139****5678 06-15 到期" in body and "139****4321 ⚠ 已逾期" in body
    assert "13912345678" not in body and "137****0000" not in body


def test_prune_forgets_old_redelivery_guards_only(db, settings, clock):
    from scheduler.jobs import prune
    from storage.models import ProcessedInbound

    now = clock()
    with session_scope(db) as s:
        s.add(ProcessedInbound(channel="telegram", event_key="old", created_at=now - timedelta(days=15)))
        s.add(ProcessedInbound(channel="telegram", event_key="new", created_at=now - timedelta(days=1)))
    with session_scope(db) as s:
        assert prune(s, settings, now) == 1
    with session_scope(db) as s:
        assert [r.event_key for r in s.exec(select(ProcessedInbound)).all()] == ["new"]


def test_a_digest_goes_without_its_chart_when_no_font_draws_chinese(db, settings, clock):
    from bot.fonts import FontNotFound

    city = City(db, clock())

    def no_font(*args):
        raise FontNotFound("找不到可显示中文的字体")

    with session_scope(db) as s:
        written = send_digests(s, settings.model_copy(update={"digest_weekly_day": None}),
                               local(2026, 6, 15, 18).astimezone(timezone.utc), chart=no_font)
    assert written == 1  # the office's digest (the bureau's head is muted), text only
    with session_scope(db) as s:
        [row] = s.exec(select(OutboxMessage)).all()
        assert row.cadre_id == city.office.id and "作风工作日报" in row.body


def test_digests_are_computed_without_holding_up_writers(db, settings, clock):
    """run_digests (what the worker runs) draws its charts in a read-only transaction: on SQLite
    another connection can write meanwhile, without waiting; the digests are then queued once."""
    import sqlite3

    from scheduler.jobs import run_digests

    City(db, clock())
    settings = settings.model_copy(update={"digest_weekly_day": None})
    now = local(2026, 6, 15, 18).astimezone(timezone.utc)
    wrote_meanwhile = []

    def chart(*args):
        if db.dialect.name == "sqlite":
            other = sqlite3.connect(db.url.database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # "database is locked" at once if the job held the lock
                other.execute("UPDATE unit SET active = active")
                other.execute("COMMIT")
                wrote_meanwhile.append(True)
            finally:
                other.close()
        return b"\x89PNG fake"

    assert run_digests(db, settings, now, chart=chart) == 1
    assert run_digests(db, settings, now, chart=chart) == 0  # due digests are queued once
    if db.dialect.name == "sqlite":
        assert wrote_meanwhile == [True]
    with session_scope(db) as s:
        [row] = s.exec(select(OutboxMessage)).all()
        assert "作风工作日报" in row.body
        assert [a.filename for a in s.exec(select(OutboxAttachment)).all()] == ["digest.png"]
