"""Evidence of visits (走访真实性) end to end over HTTP, through the real channels and their stand-ins.

tests/test_evidence.py proves the rules through the core's dialogue; here the same rules are walked as
cadres walk them: the production app (create_app under uvicorn) talking to the local stand-ins of the
Telegram Bot API, WeChat and WeCom, which send locations and photos in their own wire formats
(Telegram: WGS-84 with ``horizontal_accuracy`` and ``forward_origin``; WeChat and WeCom: GCJ-02 XML),
and the bot fetches the photos through the channels' file APIs.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
import zxingcpp
from PIL import Image
from sqlmodel import select

from bot import texts
from bot.core import evidence
from bot.core.geo import Point, distance_m, to_gcj02
from storage.db import session_scope
from storage.models import Household, Rating, Visit, VisitFlag
from tests.test_evidence import picture
from tests.test_telegram_e2e import BOT_USERNAME, press, texts_of
from tests.test_telegram_e2e import running_bot as telegram_bot
from tests.test_telegram_e2e import tg_settings  # noqa: F401  (a fixture)
from tests.test_wechat_e2e import OPENID
from tests.test_wechat_e2e import Chat as WeChatChat
from tests.test_wechat_e2e import running_bot as wechat_bot
from tests.test_wechat_e2e import wx, wx_settings  # noqa: F401  (fixtures)
from tests.test_wecom_e2e import Talk
from tests.test_wecom_e2e import running_bot as wecom_bot
from tests.test_wecom_e2e import wc, wc_settings  # noqa: F401  (fixtures)
from tests.utils import bind, make_roster

pytestmark = pytest.mark.telegram_standin(bot_username=BOT_USERNAME)

HOME = Point(31.2304, 121.4737)  # household 1's doorstep, WGS-84 (Shanghai)
SPACING = 0.09  # degrees of latitude between households: 10 km; households 1 and 3 are 20 km apart
SURVEY = ("满意", "基本满意", "方便", "不涉及", "满意")
HOUR = timedelta(hours=1)


def north_of(point: Point, meters: float) -> Point:
    return Point(point.latitude + meters / 111_195, point.longitude)


def doorstep(index: int) -> Point:
    return Point(HOME.latitude + index * SPACING, HOME.longitude)


def located_roster(db, households: int = 3):
    """The test roster (cadre 李明), its households surveyed 10 km apart along a meridian."""
    roster = make_roster(db, households=households)
    with session_scope(db) as s:
        for i, h in enumerate(roster.households):
            row = s.get(Household, h.id)
            spot = doorstep(i)
            row.latitude, row.longitude, row.coord_source = spot.latitude, spot.longitude, "surveyed"
    return roster


def visits(db) -> list[Visit]:
    with session_scope(db) as s:
        return s.exec(select(Visit).order_by(Visit.id)).all()


def flags(db) -> list[tuple[int, str, str]]:
    with session_scope(db) as s:
        return [(f.visit_id, f.kind, f.reason) for f in s.exec(select(VisitFlag).order_by(VisitFlag.id)).all()]


# -- Telegram: WGS-84 -----------------------------------------------------------------------------------

def tg_visit(user, household: str, *, photo: bytes | None = None, location: Point | None = None,
             **how) -> tuple[str, str]:
    """A whole visit over Telegram by buttons, with what is given at the photo and location steps (``how``:
    ``horizontal_accuracy``, ``forwarded_from``); (what the bot said to the location, its answer to 确认提交)."""
    assert texts.PICK_HOUSEHOLD in texts_of(user.command_wait("/visit"))
    assert "回头看" in texts_of(press(user, household))
    press(user, "是")  # the contact card
    for answer in SURVEY:
        press(user, answer)
    user.text_wait("希望多组织文艺活动")
    press(user, texts.NO_DIFFICULTY)
    assert texts.ASK_PHOTO in texts_of(press(user, "是"))  # the leaflet
    replies = user.photo_wait(content=photo) if photo is not None else user.text_wait(texts.SKIP)
    assert texts.ASK_LOCATION in texts_of(replies)
    if location is not None:
        said = texts_of(user.location_wait(location.latitude, location.longitude, **how))
    else:
        said = texts_of(user.text_wait(texts.SKIP))
    done = texts_of(press(user, "确认提交"))
    assert "走访已登记" in done
    return said, done


def test_telegram_a_location_40_m_away_matches_2_km_does_not_a_vague_or_forwarded_one_is_no_evidence(
        tg, tg_settings, db, clock):
    roster = located_roster(db)
    bind(db, roster.cadre, "telegram", "8301", clock())
    cadre, stranger = tg.user(8301, first_name="李明"), tg.user(8399, first_name="张三")
    near, far = north_of(HOME, 40), north_of(HOME, 2000)
    with telegram_bot(tg_settings, db, clock):
        said, _ = tg_visit(cadre, "住户1", location=near, horizontal_accuracy=15)
        assert texts.LOCATION_MATCHES.format(distance="40 米") in said  # at once, before the summary
        clock.now += HOUR
        said, done = tg_visit(cadre, "住户1", location=far, horizontal_accuracy=15)
        assert texts.LOCATION_FAR.format(distance="2.0 公里") in said and "不相符" in said
        assert "本半年已走访 1/3 户" in done  # logged all the same: never blocked
        clock.now += HOUR
        # At the doorstep, but the phone is only sure to within a kilometre: a location, not a match.
        said, _ = tg_visit(cadre, "住户1", location=near, horizontal_accuracy=1000)
        assert texts.LOCATION_INACCURATE.format(accuracy="1.0 公里", distance="40 米") in said
        assert texts.LOCATION_MATCHES.format(distance="40 米") not in said
        clock.now += HOUR
        # The right spot, forwarded from someone else's chat (forward_origin set): no evidence.
        said, _ = tg_visit(cadre, "住户1", location=near, horizontal_accuracy=15, forwarded_from=stranger)
        assert texts.LOCATION_FORWARDED in said
    matching, distant, vague, forwarded = visits(db)
    assert {v.channel for v in visits(db)} == {"telegram"}
    assert matching.evidence == evidence.LOCATION and matching.distance_m == pytest.approx(40, abs=1)
    assert (matching.latitude, matching.location_accuracy) == (pytest.approx(near.latitude), 15)
    assert distant.evidence == evidence.NONE and distant.distance_m == pytest.approx(2000, abs=5)
    assert vague.evidence == evidence.NONE and vague.location_accuracy == 1000 and vague.latitude is not None
    assert forwarded.evidence == evidence.NONE and forwarded.location_note == "forwarded"
    assert [(visit_id, kind) for visit_id, kind, _reason in flags(db)] == [(forwarded.id, "forwarded")]


def test_telegram_the_same_photo_reencoded_is_flagged_on_the_second_visit(tg, tg_settings, db, clock):
    roster = located_roster(db)
    bind(db, roster.cadre, "telegram", "8302", clock())
    cadre = tg.user(8302, first_name="李明")
    with telegram_bot(tg_settings, db, clock):
        tg_visit(cadre, "住户1", photo=picture(quality=90))
        clock.now += 2 * HOUR
        tg_visit(cadre, "住户2", photo=picture(quality=35))  # the same door, saved again at another quality
        clock.now += 2 * HOUR
        tg_visit(cadre, "住户3", photo=picture(quality=90, seed=3))  # another door
    first, second, third = visits(db)
    # The bot fetched each picture through getFile and the file URL: hashes of the bytes it got.
    assert None not in (first.photo_sha256, second.photo_sha256, third.photo_sha256)
    assert first.photo_sha256 != second.photo_sha256 and first.photo_ref != second.photo_ref
    [(visit_id, kind, reason)] = flags(db)
    assert (visit_id, kind) == (second.id, "same_photo") and f"第 {first.id} 号走访" in reason
    assert first.evidence == second.evidence == third.evidence == evidence.PHOTO


def test_telegram_two_visits_20_km_apart_5_minutes_apart_are_flagged_as_impossible_travel(tg, tg_settings, db, clock):
    roster = located_roster(db)
    bind(db, roster.cadre, "telegram", "8303", clock())
    cadre = tg.user(8303, first_name="李明")
    assert distance_m(doorstep(0), doorstep(2)) == pytest.approx(20_000, rel=0.01)
    with telegram_bot(tg_settings, db, clock):
        said, _ = tg_visit(cadre, "住户1", location=doorstep(0), horizontal_accuracy=10)
        assert texts.LOCATION_MATCHES.format(distance="0 米") in said
        clock.now += timedelta(minutes=5)
        said, _ = tg_visit(cadre, "住户3", location=doorstep(2), horizontal_accuracy=10)
        assert texts.LOCATION_MATCHES.format(distance="0 米") in said  # each doorstep matches
        clock.now += 3 * HOUR
        tg_visit(cadre, "住户2", location=doorstep(1), horizontal_accuracy=10)  # 10 km in 3 hours: fine
    first, second, third = visits(db)
    assert first.evidence == second.evidence == third.evidence == evidence.LOCATION
    [(visit_id, kind, reason)] = flags(db)
    assert (visit_id, kind) == (second.id, "too_fast")
    assert reason == texts.FLAG_TOO_FAST.format(distance="20.0 公里", minutes=5, other=first.id)


def test_telegram_a_cadre_whose_every_visit_the_household_confirmed_by_its_one_time_qr_has_no_flag(
        tg, tg_settings, db, clock):
    """Each visit is followed by /serviceqr; the QR the bot sends is read by a real decoder, and the
    household, on its own Telegram account, opens it and rates: its confirmation of the visit."""
    roster = located_roster(db)
    bind(db, roster.cadre, "telegram", "8304", clock())
    cadre = tg.user(8304, first_name="李明")
    settings = tg_settings.model_copy(update={"card_encode": "telegram"})
    with telegram_bot(settings, db, clock):
        for i in range(3):
            tg_visit(cadre, f"住户{i + 1}", location=north_of(doorstep(i), 30), horizontal_accuracy=20)
            sent = cadre.command_wait("/serviceqr")
            assert f"住户{i + 1}" in texts_of(sent)
            [png] = [m["content"] for m in sent if m["kind"] == "photo"]
            [link] = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
            token = re.fullmatch(rf"https://t\.me/{BOT_USERNAME}\?start=(s[A-Za-z0-9_-]{{24}})", link).group(1)
            household = tg.user(8310 + i, first_name=f"住户{i + 1}")
            assert "本次服务（一次有效）" in texts_of(household.command_wait("/start", token))
            assert texts.RATING_THANKS in texts_of(press(household, "非常满意"))
            clock.now += 3 * HOUR
    logged = visits(db)
    assert len(logged) == 3
    assert all(v.household_confirmed_at is not None and v.evidence == evidence.CONFIRMED for v in logged)
    with session_scope(db) as s:
        assert sorted(r.visit_id for r in s.exec(select(Rating)).all()) == [v.id for v in logged]
    assert flags(db) == []


# -- WeChat and WeCom: GCJ-02 ----------------------------------------------------------------------------

def visit_with_location(chat, household: str, open_visit, send_location) -> str:
    """A whole visit by numbered answers or card buttons (WeChatChat or Talk), no photo; ``open_visit``
    starts it from the menu, ``send_location`` sends the location as the channel does and returns
    what the bot said to it."""
    open_visit()
    assert "回头看" in chat.pick(household)
    chat.pick("是")
    for answer in SURVEY:
        chat.pick(answer)
    chat.say("希望多组织文艺活动")
    chat.pick(texts.NO_DIFFICULTY)
    assert texts.ASK_PHOTO in chat.pick("是")
    assert texts.ASK_LOCATION in chat.say(texts.SKIP)
    said = send_location()
    assert "走访已登记" in chat.pick("确认提交")
    return said


def wechat_visit(chat: WeChatChat, household: str, lat: float, lng: float) -> str:
    """A whole visit on WeChat, the location as WeChat sends it."""
    def opened() -> None:
        chat.last = chat.follower.click("visit").content

    def located() -> str:
        chat.last = chat.follower.location(lat, lng).content
        return chat.last

    return visit_with_location(chat, household, opened, located)


def test_wechat_the_same_doorstep_sent_in_gcj02_lands_on_the_same_verdict_as_telegrams_wgs84(
        wx, wx_settings, db, clock):
    roster = located_roster(db)
    bind(db, roster.cadre, "wechat", OPENID, clock())
    chat = WeChatChat(wx.follower(OPENID))
    near, far = north_of(HOME, 40), north_of(HOME, 2000)
    with wechat_bot(wx_settings, db, clock, wx):
        said = wechat_visit(chat, "住户1", *to_gcj02(near))  # 40 m from the door, as WeChat's map gives it
        assert texts.LOCATION_MATCHES.format(distance="40 米") in said
        clock.now += HOUR
        said = wechat_visit(chat, "住户1", *to_gcj02(far))
        assert texts.LOCATION_FAR.format(distance="2.0 公里") in said
        clock.now += HOUR
        # The doorstep's WGS-84 numbers, which a WeChat location never carries: read as GCJ-02 they are
        # hundreds of metres off. The verdict depends on the datum being converted.
        said = wechat_visit(chat, "住户1", near.latitude, near.longitude)
        assert "不相符" in said
    matching, distant, shifted = visits(db)
    assert matching.evidence == evidence.LOCATION and matching.distance_m == pytest.approx(40, abs=1)
    assert (matching.latitude, matching.longitude) == (pytest.approx(near.latitude, abs=1e-6),
                                                        pytest.approx(near.longitude, abs=1e-6))
    assert distant.evidence == evidence.NONE and distant.distance_m == pytest.approx(2000, abs=5)
    assert shifted.evidence == evidence.NONE and shifted.distance_m > 300
    assert flags(db) == []


def wecom_visit(talk: Talk, household: str, lat: float, lng: float) -> str:
    """A whole visit in WeCom by card buttons and numbers, the location as WeCom sends it."""
    return visit_with_location(talk, household, lambda: talk.click("visit"),
                               lambda: talk._after(talk.member.location(lat, lng)))


def test_wecom_the_same_doorstep_sent_in_gcj02_matches(wc, wc_settings, db, clock):
    roster = located_roster(db)
    bind(db, roster.cadre, "wecom", "LiMing", clock())
    talk = Talk(wc, db, "LiMing")
    # Another household for the far one: WeCom itself drops a message identical to one sent in the last
    # half hour (the duplicate check the bot asks for), and a second visit of the same household's
    # 回头看 and 走访已登记 would be word for word the first's.
    near, far = north_of(HOME, 40), north_of(doorstep(1), 2000)
    with wecom_bot(wc_settings, db, clock, wc):
        assert texts.LOCATION_MATCHES.format(distance="40 米") in wecom_visit(talk, "住户1", *to_gcj02(near))
        clock.now += HOUR
        assert texts.LOCATION_FAR.format(distance="2.0 公里") in wecom_visit(talk, "住户2", *to_gcj02(far))
    assert not wc.duplicates
    matching, distant = visits(db)
    assert (matching.channel, matching.evidence) == ("wecom", evidence.LOCATION)
    assert matching.latitude == pytest.approx(near.latitude, abs=1e-6)
    assert distant.evidence == evidence.NONE
