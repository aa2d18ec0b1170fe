"""Evidence of visits and the flags of visits in name only (走过场), through the dialogue as cadres walk them."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from PIL import Image, ImageDraw
from sqlmodel import select

from bot import texts
from bot.core import evidence
from bot.core.geo import GCJ02, Point, to_gcj02
from bot.core.types import Inbound, Location
from storage.db import session_scope
from storage.models import AuditLog, Household, SpotCheck, Visit, VisitFlag
from tests.utils import Chat, bind, make_roster

HOME = Point(31.2304, 121.4737)  # the household's coordinates, WGS-84


def north_of(point: Point, meters: float) -> Point:
    return Point(point.latitude + meters / 111_195, point.longitude)


def picture(quality: int, seed: int = 1) -> bytes:
    """A photo of a door, as a phone would send it (JPEG at this quality)."""
    image = Image.new("RGB", (320, 240), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    draw.rectangle((110 + seed * 7, 40, 210, 230), fill=(90 + seed * 20, 50, 30))
    draw.ellipse((190, 130, 200, 140), fill=(230, 200, 60))
    draw.line((0, 20 * seed, 320, 240 - 10 * seed), fill=(20, 20, 20), width=4)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


class Cadre(Chat):
    def send(self, **kwargs) -> str:
        return self._send(**kwargs)


@pytest.fixture
def walk(core, db, clock, settings, tmp_path):
    """Walks a whole visit of household ``index`` with what is given at the photo and location steps."""
    core.settings = core.work.settings = settings.model_copy(update={"media_dir": tmp_path / "media"})
    roster = make_roster(db, households=4)
    with session_scope(db) as s:
        for i, h in enumerate(roster.households):
            row = s.get(Household, h.id)
            spot = Point(HOME.latitude + i * 0.09, HOME.longitude)  # 10 km apart
            row.latitude, row.longitude, row.coord_source = spot.latitude, spot.longitude, "surveyed"
    bind(db, roster.cadre, "test", "u1", clock())

    def walk(index: int, *, photo: bytes | None = None, location: Location | None = None, forwarded=False,
             survey: int = 0) -> str:
        chat = Cadre(core)
        chat.say("/visit")
        chat.say(f"住户{index + 1}")
        chat.press("是")
        while "调查 " in chat.last.text:  # the survey: the option numbered ``survey`` each time
            chat.token(chat.last.flat_options()[survey].token)
        chat.press(texts.NO_DIFFICULTY)
        chat.press("是")  # the leaflet
        if photo is not None:
            chat.send(photo_ref=f"test:{len(photo)}", photo=photo, forwarded=forwarded)
        else:
            chat.press(texts.SKIP)
        said = chat.send(location=location, forwarded=forwarded) if location is not None else chat.press(texts.SKIP)
        chat.press(texts.CONFIRM)
        return said

    walk.roster = roster
    return walk


def visits(db) -> list[Visit]:
    with session_scope(db) as s:
        return s.exec(select(Visit).order_by(Visit.id)).all()


def flags(db) -> list[tuple[int, str]]:
    with session_scope(db) as s:
        return [(f.visit_id, f.kind) for f in s.exec(select(VisitFlag).order_by(VisitFlag.id)).all()]


def test_a_location_40_m_away_matches_and_2_km_away_does_not_in_either_datum(walk, db, clock):
    near, far = north_of(HOME, 40), north_of(HOME, 2000)
    said = walk(0, location=Location(near.latitude, near.longitude, accuracy=15))  # Telegram: WGS-84
    assert said.startswith(texts.LOCATION_MATCHES.format(distance="40 米"))
    clock.now += timedelta(hours=1)
    lat, lng = to_gcj02(near)  # the same spot as WeChat sends it
    assert walk(1, location=Location(lat, lng, datum=GCJ02)).startswith("📍 位置与该户登记地址相距")  # household 2 is 10 km north
    clock.now += timedelta(hours=1)
    lat, lng = to_gcj02(far)
    said = walk(0, location=Location(lat, lng, datum=GCJ02))
    assert said.startswith(texts.LOCATION_FAR.format(distance="2.0 公里"))
    first, second, third = visits(db)
    assert first.distance_m == pytest.approx(40, abs=1) and first.evidence == evidence.LOCATION
    assert third.distance_m == pytest.approx(2000, abs=5) and third.evidence == evidence.NONE
    # Ignoring WeChat's datum would have put the same doorstep hundreds of metres off:
    assert second.latitude == pytest.approx(near.latitude, abs=1e-6)


def test_a_forwarded_or_inaccurate_location_is_no_evidence(walk, db, clock):
    near = north_of(HOME, 40)
    assert walk(0, location=Location(near.latitude, near.longitude), forwarded=True).startswith(texts.LOCATION_FORWARDED)
    clock.now += timedelta(hours=1)
    said = walk(0, location=Location(near.latitude, near.longitude, accuracy=1500))
    assert said.startswith("📍 定位精度约 1.5 公里")
    forwarded, vague = visits(db)
    assert forwarded.evidence == vague.evidence == evidence.NONE
    assert (forwarded.id, "forwarded") in flags(db)


def test_the_same_photo_reencoded_is_flagged_on_the_second_visit(walk, db, clock):
    walk(0, photo=picture(quality=90))
    clock.now += timedelta(hours=2)
    walk(1, photo=picture(quality=35))  # the same door, saved again at another quality
    clock.now += timedelta(hours=2)
    walk(2, photo=picture(quality=90, seed=3))  # another door
    first, second, third = visits(db)
    assert first.photo_sha256 != second.photo_sha256  # not the same bytes
    assert flags(db) == [(second.id, "same_photo")]
    assert first.evidence == second.evidence == third.evidence == evidence.PHOTO


def test_two_visits_20_km_apart_5_minutes_apart_are_flagged(walk, db, clock):
    walk(0, location=Location(HOME.latitude, HOME.longitude))
    clock.now += timedelta(minutes=5)
    far = Point(HOME.latitude + 0.18, HOME.longitude)  # household 3, 20 km north
    walk(2, location=Location(far.latitude, far.longitude))
    first, second = visits(db)
    assert second.evidence == evidence.LOCATION  # each doorstep matches: the trip between them does not
    [(visit_id, kind)] = flags(db)
    assert (visit_id, kind) == (second.id, "too_fast")


def test_a_cadre_with_every_visit_confirmed_by_the_household_has_no_flag(walk, db, clock, settings):
    for i in range(4):
        near = north_of(Point(HOME.latitude + i * 0.09, HOME.longitude), 30)
        walk(i, location=Location(near.latitude, near.longitude))
        clock.now += timedelta(hours=3)
    with session_scope(db) as s:
        for visit in s.exec(select(Visit)).all():
            evidence.household_confirmed(s, visit, settings, clock())
    assert {v.evidence for v in visits(db)} == {evidence.CONFIRMED}
    assert flags(db) == []


def test_a_burst_of_visits_and_identical_surveys_are_flagged(walk, db, clock, settings):
    for i in range(4):
        walk(i)
        clock.now += timedelta(minutes=2)
    kinds = [kind for _visit, kind in flags(db)]
    assert kinds.count("burst") == 1  # the fourth within ten minutes
    assert "same_answers" not in kinds  # four visits: below VISIT_SAME_ANSWERS_MINIMUM
    clock.now += timedelta(hours=5)
    walk(0)
    assert [kind for _visit, kind in flags(db)].count("same_answers") == 1


def test_a_household_without_coordinates_learns_them_from_a_confirmed_visit(walk, db, clock, settings):
    roster = walk.roster
    with session_scope(db) as s:
        row = s.get(Household, roster.households[0].id)
        row.latitude = row.longitude = row.coord_source = None
    said = walk(0, location=Location(HOME.latitude, HOME.longitude, accuracy=10))
    assert said.startswith(texts.LOCATION_NO_COORDS)
    [visit] = visits(db)
    assert visit.evidence == evidence.NONE
    with session_scope(db) as s:
        evidence.household_confirmed(s, s.get(Visit, visit.id), settings, clock())
    with session_scope(db) as s:
        row = s.get(Household, roster.households[0].id)
        assert (row.latitude, row.coord_source) == (pytest.approx(HOME.latitude), "learned")


def test_flags_and_evidence_in_the_supervisors_views(walk, db, clock, core):
    walk(0, photo=picture(90))
    clock.now += timedelta(hours=1)
    walk(1, photo=picture(40))
    bind(db, walk.roster.supervisor, "test", "boss", clock())
    boss = Chat(core, "boss")
    answer = boss.say("/flags")
    assert "李明：照片 2 ⚠ 1" in answer and "重复照片" in answer
    assert "凭证：照片 2 ⚠ 1" in boss.say("/unit")
    assert texts.ROLE_FORBIDDEN.format(command="flags", role="主管（作风办）") == Chat(core).say("/flags")


# -- the weighted spot-check draw (电话随机访问) ------------------------------------------------------

def _recorded_visits(db, roster, plan: list[tuple[str, tuple[str, ...]]], half: str = "2026H2") -> list[int]:
    """Visits of the roster's cadre with the given stored evidence level and flags, a day apart."""
    from datetime import datetime, timezone

    ids = []
    with session_scope(db) as s:
        for n, (level, kinds) in enumerate(plan):
            visit = Visit(cadre_id=roster.cadre.id, household_id=roster.households[n % len(roster.households)].id,
                          half=half, visited_at=datetime(2026, 9, 1, 2, tzinfo=timezone.utc) + timedelta(days=n),
                          card_left=True, survey={}, leaflet_given=True, channel="test", evidence=level,
                          household_confirmed_at=datetime(2026, 9, 2, tzinfo=timezone.utc)
                          if level == evidence.CONFIRMED else None)
            s.add(visit)
            s.flush()
            s.add_all([VisitFlag(visit_id=visit.id, cadre_id=roster.cadre.id, kind=kind, reason="…",
                                 created_at=visit.visited_at) for kind in kinds])
            ids.append(visit.id)
    return ids


def _hypergeometric_sum_cdf(draws: int, population: int, marked: int, rounds: int, at_most: int) -> float:
    """P(S <= at_most) for S the sum of ``rounds`` independent draws, each of ``draws`` items without
    replacement from ``population`` of which ``marked`` are marked: the count of marked items a uniform
    (unweighted) draw would take, computed exactly by convolution."""
    from math import comb

    one = [comb(marked, x) * comb(population - marked, draws - x) / comb(population, draws) for x in range(draws + 1)]
    total = [1.0]
    for _ in range(rounds):
        out = [0.0] * (len(total) + draws)
        for i, p in enumerate(total):
            for x, q in enumerate(one):
                out[i + x] += p * q
        total = out
    return sum(total[:at_most + 1])


def test_the_draw_takes_household_confirmed_visits_least_over_200_seeds(db):
    """Half of a cadre's twenty visits were confirmed by the household, half have no evidence. Two are
    drawn per seed (share 0.1). Over the seeds 0–199 a uniform draw would take about 200 confirmed
    ones; the weighted draw takes far fewer, beyond any chance (exact tail of the uniform draw's
    distribution below 10⁻⁹), yet some: a confirmed visit can still be rung."""
    from bot.reports import spotcheck

    roster = make_roster(db, households=4)
    ids = _recorded_visits(db, roster, [(evidence.CONFIRMED, ())] * 10 + [(evidence.NONE, ())] * 10)
    confirmed = set(ids[:10])
    taken = 0
    with session_scope(db) as s:
        for seed in range(200):
            drawn = spotcheck.plan(s, "2026H2", 0.1, seed)
            assert len(drawn) == 2
            taken += sum(1 for _cadre, visit in drawn if visit.id in confirmed)
    p_value = _hypergeometric_sum_cdf(draws=2, population=20, marked=10, rounds=200, at_most=taken)
    assert p_value < 1e-9, (taken, p_value)
    assert 0 < taken < 100


def test_the_draw_goes_by_strength_of_evidence_and_flags(db):
    """Five visits of each kind, five drawn per seed: over the seeds 0–199 flagged visits are drawn
    most, then those with no evidence, a photo only, a matching location, and confirmed ones least."""
    from collections import Counter

    from bot.reports import spotcheck

    roster = make_roster(db, households=4)
    kinds = [(evidence.CONFIRMED, ()), (evidence.LOCATION, ()), (evidence.PHOTO, ()), (evidence.NONE, ()),
             (evidence.PHOTO, ("same_photo",))]
    ids = _recorded_visits(db, roster, [kind for kind in kinds for _ in range(5)])
    label = {visit_id: ("flagged" if kinds[n // 5][1] else kinds[n // 5][0]) for n, visit_id in enumerate(ids)}
    counts = Counter()
    with session_scope(db) as s:
        for seed in range(200):
            counts.update(label[visit.id] for _cadre, visit in spotcheck.plan(s, "2026H2", 0.2, seed))
    assert counts["flagged"] > counts[evidence.NONE] > counts[evidence.PHOTO] > counts[evidence.LOCATION] \
        > counts[evidence.CONFIRMED] > 0, counts


def test_a_draw_is_reproducible_for_a_seed_and_stores_why_each_visit_was_drawn(db, clock):
    from bot.reports import spotcheck
    from storage.models import SpotCheck

    roster = make_roster(db, households=4)
    _recorded_visits(db, roster, [(evidence.NONE, ()), (evidence.PHOTO, ()), (evidence.LOCATION, ()),
                                  (evidence.CONFIRMED, ()), (evidence.PHOTO, ("same_photo", "burst"))] * 4)
    with session_scope(db) as s:
        first = [(visit.id, visit.reason) for _c, visit in spotcheck.plan(s, "2026H2", 0.5, 42)]
        assert first == [(visit.id, visit.reason) for _c, visit in spotcheck.plan(s, "2026H2", 0.5, 42)]
        assert first != [(visit.id, visit.reason) for _c, visit in spotcheck.plan(s, "2026H2", 0.5, 43)]
    with session_scope(db) as s:
        result = spotcheck.draw(s, "2026H2", 0.5, clock(), seed=42)
    assert result.drawn == [v for v, _r in first] and result.new == 10
    with session_scope(db) as s:
        stored = {c.visit_id: c.reason for c in s.exec(select(SpotCheck)).all()}
        levels = {v.id: v.evidence for v in s.exec(select(Visit)).all()}
    assert stored == dict(first)
    for visit_id, reason in stored.items():
        if reason.startswith("flags:"):
            assert reason == "flags:burst,same_photo"
        else:
            assert reason == {"none": "none", "photo": "photo", "location": "random", "confirmed": "random"}[
                levels[visit_id]]
    assert spotcheck.reason_text("flags:burst,same_photo") == "有走过场标记：集中确认、重复照片"
    assert spotcheck.reason_text("none") == "无佐证" and spotcheck.reason_text("photo") == "仅照片"
    assert spotcheck.reason_text("random", evidence.CONFIRMED) == "随机（住户确认）"
    assert spotcheck.reason_text(None) == "随机"  # drawn before the draw was weighted
    assert result.reasons_text().startswith("抽取原因：")
    assert sum(result.reasons.values()) == 10


def test_a_supervisor_sees_why_each_visit_was_drawn_in_chat_and_in_the_cli(core, db, clock, settings, capsys,
                                                                          monkeypatch):
    from bot.cli import main as cli_main

    roster = make_roster(db, households=4)
    [flagged] = _recorded_visits(db, roster, [(evidence.PHOTO, ("same_photo",))])
    bind(db, roster.supervisor, "test", "boss", clock())
    boss = Chat(core, "boss")
    said = boss.say("/spotcheck 抽取")
    assert "已抽取 1 条新的走访记录" in said and "抽取原因：有走过场标记 1" in said
    [label] = [l for l in boss.labels() if "（李明）" in l]
    assert "抽取原因：有走过场标记：重复照片" in boss.press(label)
    with session_scope(db) as s:  # the household's full number was shown to the caller: audited
        [check] = s.exec(select(SpotCheck)).all()
        shown = s.exec(select(AuditLog).where(AuditLog.action == "phone.reveal")).all()
        assert [(row.actor, row.target) for row in shown] == [(f"cadre:{roster.supervisor.id}", f"spotcheck:{check.id}")]
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    _recorded_visits(db, roster, [(evidence.NONE, ())] * 9)
    assert cli_main(["spot-check", "--share", "1", "--seed", "5", "--half", "2026H2"]) == 0
    out = capsys.readouterr().out
    assert "抽取原因：无佐证 9" in out  # the new ones; the flagged one was drawn before
    lines = [line for line in out.splitlines() if line.startswith("#")]
    assert len(lines) == 10 and sum(line.endswith("抽取原因：无佐证") for line in lines) == 9
    assert sum(line.endswith("抽取原因：有走过场标记：重复照片") for line in lines) == 1


def test_same_photo_is_found_by_a_shared_byte_and_then_compared_exactly(db, clock):
    """Hashes six bits apart, each bit in a different byte, still share two bytes in place: the
    database returns the candidate and the exact comparison flags it; seven bits apart is another
    picture. The earliest visit with the same photo is the one named."""
    roster = make_roster(db, households=4)
    base = 0x0123456789ABCDEF
    six = base ^ sum(1 << (8 * byte + byte % 8) for byte in (0, 1, 2, 3, 4, 5))  # bytes 6 and 7 untouched
    seven = base ^ sum(1 << (8 * byte + 7 - byte % 8) for byte in range(7))
    ids = _recorded_visits(db, roster, [(evidence.PHOTO, ())] * 4)
    with session_scope(db) as s:
        for visit_id, value in zip(ids, (base, base, six, seven)):
            visit = s.get(Visit, visit_id)
            visit.photo_phash = f"{value:016x}"
            s.add(visit)
    with session_scope(db) as s:
        for visit_id in ids[2:]:
            evidence._same_photo(s, s.get(Visit, visit_id), clock())
    with session_scope(db) as s:
        found = s.exec(select(VisitFlag)).all()
    assert [(f.visit_id, f.kind) for f in found] == [(ids[2], "same_photo")]
    assert f"第 {ids[0]} 号走访" in found[0].reason


def test_the_office_gets_the_totals_and_the_weakest_cadres_not_two_thousand_lines(core, db, clock):
    """/flags for a scope of more cadres than a message can list: the shares of the whole scope, the
    flags, and the cadres with flagged or mostly unevidenced visits, worst first, at most 40."""
    from datetime import datetime, timezone

    from storage.models import Cadre as CadreRow, Role

    roster = make_roster(db, households=4)
    at = datetime(2026, 9, 1, 2, tzinfo=timezone.utc)
    with session_scope(db) as s:
        office = CadreRow(name="周主任", unit_id=roster.unit.id, mobile="13800000099", role=Role.OFFICE)
        s.add(office)
        for n in range(50):  # fifty cadres: the first 45 each with one visit without evidence, the rest located
            cadre = CadreRow(name=f"干部{n:02d}", unit_id=roster.unit.id, mobile=f"139000001{n:02d}", role=Role.CADRE)
            s.add(cadre)
            s.flush()
            visit = Visit(cadre_id=cadre.id, household_id=roster.households[0].id, half="2026H2", visited_at=at,
                          card_left=True, survey={}, leaflet_given=True, channel="test",
                          evidence=evidence.NONE if n < 45 else evidence.LOCATION)
            s.add(visit)
            s.flush()
            if n == 7:
                s.add(VisitFlag(visit_id=visit.id, cadre_id=cadre.id, kind="burst", reason="10 分钟内确认了 4 次走访",
                                created_at=at))
        s.flush()
        office_id = office.id
    with session_scope(db) as s:
        office = s.get(CadreRow, office_id)
    bind(db, office, "test", "office", clock())
    answer = Chat(core, "office").say("/flags")
    lines = answer.splitlines()
    assert lines[0] == "🔍 走访凭证（2026年下半年），50 名干部："
    assert lines[1] == "本半年走访 50 次的凭证：位置相符 10%、无凭证 90%。疑似走过场 1 次，涉及 1 名干部（/flags 查看原因）。"
    assert lines[2] == "凭证偏弱或有走过场标记的干部 45 名（⚠ 为疑似走过场次数）："
    assert lines[3] == "• 干部07（市住建局）无凭证 100% ⚠ 1"  # the flagged one first
    assert lines[4] == "• 干部00（市住建局）无凭证 100%" and len([l for l in lines if l.startswith("• ")]) == 40
    assert "…… 另有 5 名" in answer and "干部45" not in answer  # the located ones are not named
    assert "集中确认：10 分钟内确认了 4 次走访" in answer  # and the flags list follows
