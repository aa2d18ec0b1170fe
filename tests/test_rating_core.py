"""Citizen evaluation in the core: tokens, the chat rating flow as a dialogue table, replacement within
a day, bursts, 差评 on the ledger with a call-back, self-rating, revoked cards, supervisor views."""

from __future__ import annotations

from datetime import timedelta

from bot import texts
from bot.core import evaluation
from storage.db import session_scope
from storage.models import CallbackTask, Problem, ProblemSource, Rating, TargetKind
from tests.utils import Chat, bind, make_window, rows, token_for

KEY = b"k" * 32


def test_tokens_are_short_url_safe_and_signed():
    token = evaluation.make_token(KEY, 123456, 7)
    assert len(token) <= 64 and evaluation.looks_like_token(token)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    assert evaluation.parse_token(KEY, token) == (123456, 7)
    assert evaluation.parse_token(b"another-secret-entirely", token) is None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert evaluation.parse_token(KEY, flipped) is None
    assert evaluation.parse_token(KEY, token[:-1]) is None
    assert evaluation.parse_token(KEY, "bind-ABCDEFGH") is None


def test_good_rating_in_chat_is_one_tap(core, db, roster, settings):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    citizen = Chat(core, "citizen-1")
    prompt = citizen.say(f"/start {token}")
    assert "您正在评价：李明（市住建局）" in prompt
    assert citizen.labels()[:5] == ["😄 非常满意", "🙂 满意", "😐 基本满意", "🙁 不满意", "😣 非常不满意"]
    assert citizen.press("满意") == texts.RATING_THANKS  # the first label containing 满意: 非常满意
    [rating] = rows(db, Rating)
    assert (rating.level, rating.cadre_id, rating.channel, rating.misuse) == (5, roster.cadre.id, "test", False)
    assert rating.rater_key != "citizen-1" and len(rating.rater_key) == 64
    assert rows(db, Problem) == []


def test_bad_rating_in_chat_puts_a_problem_and_a_callback_on_the_ledger(core, db, roster, settings):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    citizen = Chat(core, "citizen-2")
    citizen.say(f"/start {token}")
    assert "请选择原因" in citizen.press("非常不满意")
    citizen.press("办事拖拉")
    assert "☑ 办事拖拉" in citizen.labels()
    citizen.press("态度生硬")
    citizen.press("☑ 办事拖拉")  # ticked twice: unticked
    assert citizen.labels()[:2] == ["☑ 态度生硬", "办事拖拉"]
    assert "请简要说明情况" in citizen.press(texts.RATING_REASONS_DONE)
    assert "手机号" in citizen.say("窗口前等了两个小时没人理")
    assert texts.RATING_BAD_PHONE in citizen.say("12345")
    done = citizen.say("13912345678")
    assert texts.RATING_FOLLOW_UP_CALL.format(days=settings.rating_follow_up_days) in done

    [rating] = rows(db, Rating)
    [problem] = rows(db, Problem)
    [task] = rows(db, CallbackTask)
    assert (rating.level, rating.reasons, rating.phone) == (1, ["态度生硬"], "13912345678")
    assert (problem.source, problem.unit_id, problem.raiser_phone) == (
        ProblemSource.RATING, roster.unit.id, "13912345678")
    assert "非常不满意" in problem.content and "态度生硬" in problem.content and "两个小时" in problem.content
    assert (task.problem_id, task.phone, task.rating_id) == (problem.id, "13912345678", rating.id)
    assert task.due_on == "2026-11-27"  # five working days after Friday 2026-11-20


def test_a_second_rating_the_same_day_replaces_the_first(core, db, roster, settings, clock):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    citizen = Chat(core, "citizen-3")
    citizen.say(f"/start {token}")
    citizen.press("基本满意")
    citizen.say(f"/start {token}")
    assert citizen.press("🙂 满意") == texts.RATING_THANKS_REPLACED
    assert [r.level for r in rows(db, Rating)] == [4]
    clock.now += timedelta(days=1)
    citizen.say(f"/start {token}")
    citizen.press("🙂 满意")
    assert len(rows(db, Rating)) == 2


def test_staff_cannot_rate_themselves_or_their_window(core, db, roster, settings, clock):
    bind(db, roster.cadre, "test", "staff", clock())
    window = make_window(db, roster, on_duty=[roster.cadre])
    staff = Chat(core, "staff")
    assert staff.say(f"/start {token_for(db, settings, TargetKind.CADRE, roster.cadre.id)}") == texts.RATING_SELF
    assert staff.say(f"/start {token_for(db, settings, TargetKind.WINDOW, window.id)}") == texts.RATING_SELF
    # A colleague may.
    assert "您正在评价" in staff.say(f"/start {token_for(db, settings, TargetKind.CADRE, roster.supervisor.id)}")
    assert rows(db, Rating) == []


def test_forged_and_revoked_codes_are_refused_in_chat(core, db, roster, settings, clock):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    citizen = Chat(core, "citizen-4")
    forged = evaluation.make_token(b"not-our-secret-not-our-secret!!", 1, 1)
    assert citizen.say(f"/start {forged}") == texts.RATING_CODE_INVALID
    citizen.say(f"/start {token}")  # opened before the card is revoked ...
    with session_scope(db) as s:
        code = s.get(evaluation.EvaluationCode, evaluation.parse_token(settings.evaluation_key, token)[0])
        evaluation.revoke(s, code, clock())
    assert citizen.press("满意") == texts.RATING_CODE_INVALID  # ... and submitted after: refused
    assert citizen.say(f"/start {token}") == texts.RATING_CODE_INVALID
    assert rows(db, Rating) == []
    fresh = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    assert fresh != token and "您正在评价" in citizen.say(f"/start {fresh}")


def test_burst_from_one_address_is_flagged_and_left_out_of_statistics(db, roster, settings, clock):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    with session_scope(db) as s:
        target = evaluation.resolve(s, settings.evaluation_key, token)
        for n in range(settings.rating_burst_count):
            clock.now += timedelta(seconds=30)
            evaluation.submit_rating(s, settings, target, evaluation.check_input(5), channel="web",
                                     rater=f"cookie-{n}", address="203.0.113.9", now=clock())
        evaluation.submit_rating(s, settings, target, evaluation.check_input(2, ["办事拖拉"]), channel="web",
                                 rater="someone-else", address="198.51.100.1", now=clock())
    flagged = [r.misuse for r in sorted(rows(db, Rating), key=lambda r: r.id)]
    assert flagged == [True] * settings.rating_burst_count + [False]


def test_supervisor_sees_counts_rate_and_masked_bad_ratings(core, db, roster, settings, clock):
    token = token_for(db, settings, TargetKind.CADRE, roster.cadre.id)
    for n, (level, phone) in enumerate([(5, None), (4, None), (2, "13912345678")]):
        with session_scope(db) as s:
            target = evaluation.resolve(s, settings.evaluation_key, token)
            evaluation.submit_rating(s, settings, target, evaluation.check_input(level, ["办事拖拉"], "慢", phone),
                                     channel="web", rater=f"c{n}", now=clock())
    bind(db, roster.supervisor, "test", "boss", clock())
    boss = Chat(core, "boss")
    report = boss.say("/ratings")
    assert "市住建局：3 条，满意率 66.7%，差评 1" in report
    assert "• 李明：3 条，满意率 66.7%，差评 1" in report
    assert "139****5678" in report and "13912345678" not in report
    callbacks = boss.say("/callbacks")
    assert "13912345678" in callbacks  # the call-back task is where the full number is shown
    assert "李明" in boss.say("/ratings 李明")
    bind(db, roster.cadre, "test", "plain-cadre", clock())
    assert "仅限" in Chat(core, "plain-cadre").say("/ratings")
