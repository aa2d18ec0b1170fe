"""Rating on Telegram end to end: a card's deep link (/start <token>) through the production app, the
real PTB Application and the local Bot API stand-in; a revoked card refused the same way."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot import texts
from bot.core import evaluation
from storage.db import session_scope
from storage.models import CallbackTask, EvaluationCode, Problem, Rating, TargetKind
from tests.test_telegram_e2e import BOT_USERNAME, press, running_bot, texts_of, tg_settings  # noqa: F401 (fixture)
from tests.utils import make_roster, token_for

pytestmark = pytest.mark.telegram_standin(bot_username=BOT_USERNAME)  # as tg_settings names the bot


def test_deep_link_rating_with_reasons_comment_and_phone(tg, tg_settings, db, clock):
    roster = make_roster(db)
    token = token_for(db, tg_settings, TargetKind.CADRE, roster.cadre.id)
    citizen = tg.user(8101, first_name="群众")
    with running_bot(tg_settings, db, clock):
        prompt = texts_of(citizen.command_wait("/start", token))
        assert "您正在评价：李明（市住建局）" in prompt
        assert "请选择原因" in texts_of(press(citizen, "非常不满意"))
        press(citizen, "推诿扯皮")
        assert "☑ 推诿扯皮" in [label for row in citizen.buttons() for label, _ in row]
        assert "请简要说明" in texts_of(press(citizen, texts.RATING_REASONS_DONE))
        assert "手机号" in texts_of(citizen.text_wait("让我找别的科室"))
        done = texts_of(citizen.text_wait("13712345678"))
        assert texts.RATING_FOLLOW_UP_CALL.format(days=tg_settings.rating_follow_up_days) in done

        # The card is reported lost and revoked: its link is refused from then on.
        with session_scope(db) as s:
            code = s.get(EvaluationCode, evaluation.parse_token(tg_settings.evaluation_key, token)[0])
            evaluation.revoke(s, code, clock())
        assert texts_of(tg.user(8102).command_wait("/start", token)) == texts.RATING_CODE_INVALID

    with session_scope(db) as s:
        [rating] = s.exec(select(Rating)).all()
        [problem] = s.exec(select(Problem)).all()
        [task] = s.exec(select(CallbackTask)).all()
        assert (rating.level, rating.reasons, rating.channel) == (1, ["推诿扯皮"], "telegram")
        assert rating.rater_key != "8101"
        assert problem.unit_id == roster.unit.id and task.phone == "13712345678"


def test_a_one_time_service_qr_by_deep_link_rates_once_and_an_expired_one_is_refused(tg, tg_settings, db, clock):
    """一事一评 on Telegram: the cadre's /serviceqr gives a QR of the deep link (CARD_ENCODE=telegram, as
    the cards), the household's /start <ticket> rates that visit once, a second scan is told it was
    rated, and a ticket past SERVICE_QR_MINUTES is refused."""
    import io
    import re
    from datetime import timedelta

    import zxingcpp
    from PIL import Image

    from storage.models import Visit
    from tests.utils import bind, make_visit

    roster = make_roster(db)
    bind(db, roster.cadre, "telegram", "8200", clock())
    visit_id = make_visit(db, roster.cadre, roster.households[0], clock())
    settings = tg_settings.model_copy(update={"card_encode": "telegram"})
    cadre = tg.user(8200, first_name="李明")
    with running_bot(settings, db, clock):
        sent = cadre.command_wait("/serviceqr")
        link = re.search(rf"https://t\.me/{BOT_USERNAME}\?start=(s[A-Za-z0-9_-]{{24}})", texts_of(sent))
        [picture] = [m["content"] for m in sent if m["kind"] == "photo"]
        assert [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(picture)))] == [link.group(0)]
        token = link.group(1)

        household = tg.user(8201, first_name="住户1")
        assert "本次服务（一次有效）" in texts_of(household.command_wait("/start", token))
        assert texts.RATING_THANKS in texts_of(press(household, "非常满意"))
        assert texts_of(tg.user(8202).command_wait("/start", token)) == texts.PAGE_SERVICE_USED
        assert texts_of(household.command_wait("/start", token)) == texts.PAGE_SERVICE_USED

        expiring = re.search(r"start=(s[A-Za-z0-9_-]{24})", texts_of(cadre.command_wait("/serviceqr"))).group(1)
        clock.now += timedelta(minutes=settings.service_qr_minutes + 1)
        assert texts_of(tg.user(8203).command_wait("/start", expiring)) == texts.PAGE_SERVICE_EXPIRED

    with session_scope(db) as s:
        [rating] = s.exec(select(Rating)).all()
        assert (rating.level, rating.visit_id, rating.channel) == (5, visit_id, "telegram")
        assert s.get(Visit, visit_id).household_confirmed_at is not None
