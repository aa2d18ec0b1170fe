"""WeCom's duplicate check (issue #13): every message/send carries ``enable_duplicate_check``, so
that a row sent again after a crash is dropped by WeCom; but WeCom drops ANY message whose content
equals one the member got within the interval. Distinct messages with the same words must arrive
(each text carries an invisible mark made from its row and place), and the same row sent again must
still be dropped (the same mark, the same card, the same media ids).

End to end against the WeCom stand-in, which compares contents as WeCom does (tests/standins/wecom_api.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from bot import texts
from bot.core.types import Option, Reply
from handlers.wecom import WeComApi, WeComTransport
from handlers.wecom import render
from scheduler import outbox
from scheduler.outbox import Attachment, enqueue
from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState
from tests.standins.wecom_api import ManualClock
from tests.test_wecom_e2e import (Talk, _bound_member, _members, _send_all, count, running_bot, wc,  # noqa: F401
                                  wc_settings)
from tests.utils import make_roster

BODY = "提醒：附件1-2 将于12月10日截止"
INVISIBLE = set("\u200b\u200c\u200d\u2060")


def _content(delivered) -> str:
    return delivered.body["text"]["content"]


# -- distinct messages with the same words all arrive ------------------------------------------------------

def test_a_member_who_cancels_two_visits_in_a_row_is_told_both_times(wc, wc_settings, db, clock):
    roster = make_roster(db)
    _bound_member(db, roster, clock)
    talk = Talk(wc, db, "LiMing")
    with running_bot(wc_settings, db, clock, wc):
        for _ in range(2):
            talk.click("visit")
            assert texts.PICK_HOUSEHOLD in talk.last and talk.card is not None
            assert "已取消" in talk.press("取消")  # answered by the API: a press has no passive text
    cancelled = [d for d in wc.received("LiMing") if "已取消" in d.text]
    assert len(cancelled) == 2 and cancelled[0].text == cancelled[1].text  # the same words, twice
    assert _content(cancelled[0]) != _content(cancelled[1])  # told apart by their invisible marks
    assert not wc.duplicates and not wc.over_limit


def test_two_reminders_with_the_same_words_to_one_member_both_arrive(wc, wc_settings, db, clock):
    [(_, member)] = _members(db, 1, clock)
    now = datetime.now(timezone.utc)
    with session_scope(db) as s:
        for key in ("deadline:form1", "deadline:form2"):
            enqueue(s, key=key, kind="deadline", channel="wecom", recipient=member, body=BODY, now=now,
                    settings=wc_settings)
    _send_all(db, wc_settings, None)
    assert [(d.touser, d.text) for d in wc.delivered] == [(member, BODY)] * 2
    assert not wc.duplicates
    assert count(db, OutboxMessage, OutboxMessage.state == OutboxState.SENT) == 2


# -- the same row sent again is still dropped --------------------------------------------------------------

def _claim(db, settings, now: datetime) -> outbox.Claimed:
    with session_scope(db) as s:
        [message] = outbox.claim_due(s, channels=["wecom"], now=now, worker="test", limit=10,
                                     lease=timedelta(seconds=settings.outbox_lease_seconds))
    return message


def _digest(db, settings, member: str, now: datetime) -> None:
    with session_scope(db) as s:
        enqueue(s, key="digest-daily:2026-11-20", kind="digest-daily", channel="wecom", recipient=member,
                body="今日简报", now=now, settings=settings,
                attachments=[Attachment("chart.png", "image/png", b"\x89PNG fake")])


def test_a_row_sent_again_after_its_sender_died_is_dropped_text_and_picture(wc, wc_settings, db, clock):
    """The row is claimed and sent, its sender dies before recording it; when the lease ends another
    sender claims it and sends it again: WeCom drops both repeats, the text (the same mark) and the
    picture (the media id kept on the row, not uploaded again)."""
    [(_, member)] = _members(db, 1, clock)
    now = datetime.now(timezone.utc)
    _digest(db, wc_settings, member, now)
    api = WeComApi(wc_settings, db)
    try:
        transport = WeComTransport(api, wc_settings, db)
        first = _claim(db, wc_settings, now)
        assert asyncio.run(transport.deliver(first)).status == "sent"  # ... and the sender dies here
        again = _claim(db, wc_settings, now + timedelta(seconds=wc_settings.outbox_lease_seconds + 1))
        assert again.id == first.id
        assert asyncio.run(transport.deliver(again)).status == "sent"  # WeCom answers ok, and drops it
    finally:
        api.close()
    assert [(d.msgtype, d.text) for d in wc.delivered] == [("text", "今日简报"), ("image", "[image]")]
    assert [(d.msgtype, d.text) for d in wc.duplicates] == [("text", "今日简报"), ("image", "[image]")]
    assert len(wc.calls_of("/cgi-bin/media/upload")) == 1 and list(wc.media.values()) == [b"\x89PNG fake"]


def test_a_row_sent_again_past_the_interval_arrives_again(wc, wc_settings, db, clock):
    """The stand-in's own clock moved past the duplicate check's interval: WeCom no longer drops it."""
    wc.monotonic = ManualClock()
    [(_, member)] = _members(db, 1, clock)
    now = datetime.now(timezone.utc)
    with session_scope(db) as s:
        enqueue(s, key="deadline:form1", kind="deadline", channel="wecom", recipient=member, body=BODY, now=now,
                settings=wc_settings)
    api = WeComApi(wc_settings, db)
    try:
        transport = WeComTransport(api, wc_settings, db)
        message = _claim(db, wc_settings, now)
        asyncio.run(transport.deliver(message))
        wc.monotonic.advance(wc_settings.wecom_duplicate_check_seconds - 1)
        asyncio.run(transport.deliver(message))
        assert len(wc.delivered) == 1 and len(wc.duplicates) == 1  # within the interval: dropped
        wc.monotonic.advance(2)
        asyncio.run(transport.deliver(message))
    finally:
        api.close()
    assert [d.text for d in wc.delivered] == [BODY, BODY] and len(wc.duplicates) == 1
    assert wc.delivered[1].at - wc.delivered[0].at == wc_settings.wecom_duplicate_check_seconds + 1


def test_the_stand_ins_member_limits_follow_its_clock(wc, wc_settings, db, clock):
    wc.monotonic = ManualClock()
    wc.per_minute = 1
    [(_, member)] = _members(db, 1, clock)
    now = datetime.now(timezone.utc)
    with session_scope(db) as s:
        for n in (1, 2, 3):
            enqueue(s, key=f"deadline:form{n}", kind="deadline", channel="wecom", recipient=member,
                    body=f"提醒{n}", now=now, settings=wc_settings)
    api = WeComApi(wc_settings, db)
    try:
        transport = WeComTransport(api, wc_settings, db)
        with session_scope(db) as s:
            messages = outbox.claim_due(s, channels=["wecom"], now=now, worker="test", limit=10,
                                        lease=timedelta(seconds=60))
        asyncio.run(transport.deliver(messages[0]))
        asyncio.run(transport.deliver(messages[1]))  # the same minute: dropped for the member's limit
        wc.monotonic.advance(60)
        asyncio.run(transport.deliver(messages[2]))
    finally:
        api.close()
    assert [d.text for d in wc.delivered] == ["提醒1", "提醒3"] and [d.text for d in wc.over_limit] == ["提醒2"]


# -- the mark ------------------------------------------------------------------------------------------------

def test_the_mark_is_invisible_deterministic_and_differs_between_rows_and_calls():
    mark = render.mark("wecom-reply:7000000000000000001", 0)
    assert mark == render.mark("wecom-reply:7000000000000000001", 0)  # the same row sent again: the same
    assert set(mark) <= INVISIBLE and len(mark) == render.MARK_LENGTH  # zero-width characters only
    assert len(mark.encode()) == render.TEXT_MAX_BYTES - render.TEXT_ROOM
    others = {render.mark(f"outbox:{n}", i) for n in range(200) for i in range(3)}
    assert len(others) == 600 and mark not in others  # every row and call its own
    assert render.unmarked("已取消走访。" + mark) == "已取消走访。"
    assert render.unmarked("已取消走访。") == "已取消走访。"
    assert render.marked("", "outbox:1", 0) == ""  # WeCom refuses an empty text: not made an invisible one


def test_texts_at_the_limit_keep_within_2048_bytes_with_their_mark():
    full = "走" * (render.TEXT_MAX_BYTES // 3) + "ab"  # 2,048 bytes of words
    assert len(full.encode()) == render.TEXT_MAX_BYTES
    body = render.text_message("LiMing", 1000002, full, 3600, key="outbox:1")
    content = body["text"]["content"]
    assert len(content.encode()) <= render.TEXT_MAX_BYTES and content.endswith(render.mark("outbox:1", 0))
    assert body["enable_duplicate_check"] == 1 and body["duplicate_check_interval"] == 3600

    # A long answer spread over several texts: every one within the limit, every one marked apart.
    long = "\n".join(["一行说明文字，长度适中。"] * 400)
    calls = render.actions([Reply(long), Reply("请选择：", [[Option("是", "t1"), Option("否", "t2")]]), Reply(long)],
                           touser="LiMing", agent_id=1000002, event_key="e1", duplicate_check=3600)
    texts_sent = [c["body"]["text"]["content"] for c in calls if c["body"]["msgtype"] == "text"]
    assert len(texts_sent) > 4 and all(len(t.encode()) <= render.TEXT_MAX_BYTES for t in texts_sent)
    assert len(set(texts_sent)) == len(texts_sent)  # the same words twice, still two messages
    assert all(t[-render.MARK_LENGTH:] == render.mark("e1", i) for i, t in
               ((i, c["body"]["text"]["content"]) for i, c in enumerate(calls) if c["body"]["msgtype"] == "text"))
    # The same callback rendered again (a retry, a row sent again): byte for byte the same calls.
    assert calls == render.actions([Reply(long), Reply("请选择：", [[Option("是", "t1"), Option("否", "t2")]]),
                                    Reply(long)], touser="LiMing", agent_id=1000002, event_key="e1",
                                   duplicate_check=3600)


# -- a card replaced by the next question, past the deadline ------------------------------------------------

@pytest.mark.parametrize("error, then", [({"errcode": -1, "errmsg": "system busy"}, "retry"),
                                         ({"errcode": 45009, "errmsg": "api freq out of limit"}, "retry"),
                                         ({"errcode": 40106, "errmsg": "invalid response_code"}, "sent")])
def test_a_refused_card_update_is_tried_again_or_left_never_sent_as_a_new_card(wc, wc_settings, db, clock, error, then):
    """WeCom busy or the app over its calls: the row is tried again (the update then goes through), not
    sent as a new card beside the pressed one still showing the old question. A spent code: this row's
    own update went through before (its sender died): nothing more is sent."""
    [(_, member)] = _members(db, 1, clock)
    api = WeComApi(wc_settings, db)
    try:
        sent = api.send({"touser": member, "agentid": wc_settings.wecom_agent_id, "msgtype": "template_card",
                         "template_card": {"card_type": "button_interaction", "main_title": {"title": "①？"},
                                           "task_id": "t-first", "button_list": [{"text": "是", "key": "1.0"}]}})
        code = sent["response_code"]
        card = {"card_type": "button_interaction", "source": {"desc": "已选：是"}, "main_title": {"title": "②？"},
                "button_list": [{"text": "满意", "key": "2.0"}]}
        now = datetime.now(timezone.utc)
        with session_scope(db) as s:
            enqueue(s, key="wecom-reply:late", kind="reply", channel="wecom", recipient=member, body="②？", now=now,
                    settings=wc_settings, payload={"wecom": [render.replace_card(code, card, touser=member,
                                                                                   agent_id=wc_settings.wecom_agent_id)]})
        transport = WeComTransport(api, wc_settings, db)
        message = _claim(db, wc_settings, now)
        wc.update_errors.append(error)
        assert asyncio.run(transport.deliver(message)).status == then
        if then == "retry":
            assert asyncio.run(transport.deliver(message)).status == "sent"
    finally:
        api.close()
    shown = [d for d in wc.received(member) if d.replaces == "t-first"]
    assert len(wc.received(member)) == 1 + len(shown)  # the first card, and no card sent beside it
    assert [d.text for d in shown] == (["②？"] if then == "retry" else [])
