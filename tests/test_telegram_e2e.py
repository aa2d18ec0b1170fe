"""End to end on Telegram: the production app factory, the real PTB Application, real HTTP.

The bot runs as ``python -m bot run`` would run it (bot.app.create_app under uvicorn), talking to
a local stand-in of the Bot API on 127.0.0.1, in long-polling mode and in webhook mode.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import pytest
from pydantic import SecretStr
from sqlmodel import select

from bot import texts
from bot.app import create_app
from bot.cli import main as cli_main
from bot.config import get_settings
from bot.core.engine import Engine
from storage.db import session_scope
from storage.models import ChatAccount, DialogueState, EverydayContact, Problem, ProblemStatus, Visit
from tests.standins.server import ServedApp
from tests.standins.telegram_api import TEST_TOKEN
from tests.utils import bind, make_roster, wait_for

BOT_USERNAME = "zuofeng_test_bot"
pytestmark = pytest.mark.telegram_standin(bot_username=BOT_USERNAME)
SECRET = "s3cret-token_for-the-webhook-0123456789"


@pytest.fixture
def tg_settings(settings, tg):
    return settings.model_copy(update={
        "telegram_bot_token": SecretStr(TEST_TOKEN), "telegram_api_base_url": tg.url,
        "telegram_bot_username": BOT_USERNAME})


@contextmanager
def running_bot(settings, db, clock, *, webhook: bool = False):
    """The bot as deployed: our ASGI app with its lifespan starting PTB, served on loopback."""
    served = ServedApp(None)
    if webhook:
        port = served.bind()
        settings = settings.model_copy(update={
            "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
            "telegram_webhook_secret": SecretStr(SECRET)})
    served.app = create_app(settings.check(), Engine(db, settings, clock=clock))
    served.start()
    try:
        yield served
    finally:
        served.stop()


def texts_of(messages) -> str:
    return "\n".join(m.get("text") or "" for m in messages)


def press(user, label_part: str, quiet: float = 0.15):
    """Presses the inline button containing ``label_part`` on the newest keyboard."""
    for row in user.buttons():
        for text, data in row:
            if label_part in text:
                return user.press_wait(data, quiet=quiet)
    raise AssertionError(f"no button {label_part!r} in {user.buttons()}")


def bound_user(tg, db, clock, user_id: int):
    """A Telegram user bound to the roster's cadre (李明, three households)."""
    roster = make_roster(db)
    bind(db, roster.cadre, "telegram", str(user_id), clock())
    return tg.user(user_id, first_name="李明")


def issue_code_by_cli(monkeypatch, capsys, database_url, mobile: str) -> tuple[str, str]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("TELEGRAM_BOT_USERNAME", BOT_USERNAME)
    get_settings.cache_clear()
    try:
        assert cli_main(["bind-code", mobile]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    code = re.search(r"绑定码：([A-Z0-9]{8})", out).group(1)
    link = re.search(r"https://t\.me/\S+", out).group(0)
    return code, link


def walk_visit(user, photo: bool = True):
    """A whole four-ones visit by buttons, with an unsolved difficulty, photo and location."""
    assert texts.PICK_HOUSEHOLD in texts_of(user.command_wait("/visit"))
    assert "回头看" in texts_of(press(user, "住户2"))
    press(user, "是")
    for answer in ("满意", "基本满意", "方便", "不涉及", "满意"):
        press(user, answer)
    assert "③解决一件困难事" in texts_of(user.text_wait("希望多组织文艺活动"))
    press(user, "物业")
    assert texts.ASK_DIFFICULTY_SOLVED in texts_of(user.text_wait("电梯经常停运"))
    press(user, "未解决")
    assert texts.ASK_PHOTO in texts_of(press(user, "是"))
    if photo:
        replies = user.photo_wait(file_id="PHOTO-1")
        assert texts.ASK_LOCATION in texts_of(replies)
        assert user.buttons()[0] == [(texts.LOCATION_BUTTON, False, True)]  # a reply keyboard asks for it
        summary = texts_of(user.location_wait(31.2304, 121.4737))
    else:
        user.text_wait("跳过")
        summary = texts_of(user.text_wait("跳过"))
    assert "电梯经常停运" in summary
    return texts_of(press(user, "确认提交"))


def test_polling_binding_visit_contact_progress_and_restart(
        tg, tg_settings, db, clock, database_url, monkeypatch, capsys):
    roster = make_roster(db)
    user = tg.user(5001, first_name="李明")
    with running_bot(tg_settings, db, clock):
        assert tg.commands()  # the command menu was installed
        # An unbound user is told how to bind and offered the contact button.
        welcome = user.command_wait("/start")
        assert welcome[-1]["text"] == texts.WELCOME_UNBOUND
        assert user.buttons(welcome[-1]) == [[(texts.SHARE_CONTACT_BUTTON, True, False)]]
        assert texts_of(user.command_wait("/visit")) == texts.NOT_BOUND

        code, link = issue_code_by_cli(monkeypatch, capsys, database_url, "13800000003")
        assert link == f"https://t.me/{BOT_USERNAME}?start=bind-{code}"
        assert texts_of(user.command_wait("/start", f"bind-{code}")) == texts.BOUND_OK.format(
            name="李明", unit="市住建局")

        done = walk_visit(user)
        assert "本半年已走访 1/3 户" in done and "问题台账" in done
        # The pressed message shows the choice, then the answer to it, in place of its keyboard.
        edits = [m for m in user.sent() if m["kind"] == "edit"]
        assert edits and not edits[-1].get("reply_markup")
        summary, saved = edits[-1]["text"].split("\n➤ ✅ 确认提交\n\n")
        assert summary.startswith("请核对本次走访") and saved.startswith("✅ 走访已登记。本半年已走访 1/3 户。")

        user.command_wait("/contact")
        press(user, "电话联系")
        press(user, "不针对具体住户")
        user.text_wait("电话询问供暖情况")
        assert "已记录日常走访：电话联系" in texts_of(press(user, texts.CONTACT_NO_PROBLEM))
        progress = texts_of(user.command_wait("/progress"))
        assert "已走访 1/3 户" in progress and "日常走访 1 次" in progress and "住户1 · 幸福路1号" in progress

        # Half a visit, then the service stops.
        user.command_wait("/visit")
        press(user, "住户3")
        press(user, "否")
        before_restart = user.last()
        assert "调查 1/6" in before_restart["text"]

    with session_scope(db) as s:
        [visit] = s.exec(select(Visit)).all()
        [problem] = s.exec(select(Problem)).all()
        assert (visit.photo_ref, visit.latitude, visit.channel) == ("telegram:PHOTO-1", 31.2304, "telegram")
        assert (problem.status, problem.content, problem.household_id) == (
            ProblemStatus.NEW, "电梯经常停运", roster.households[1].id)
        assert len(s.exec(select(EverydayContact)).all()) == 1

    # A new Application on the same database continues where the user left off,
    # and the buttons of the message sent before the restart still answer.
    with running_bot(tg_settings, db, clock):
        data = {text: cb for row in user.buttons(before_restart) for text, cb in row}
        replies = user.press_wait(data["满意"], before_restart["message_id"])
        assert "调查 2/6" in texts_of(replies)
        assert "继续未完成的入户走访" in texts_of(user.command_wait("/visit"))


def test_binding_by_shared_contact(tg, tg_settings, db, clock):
    make_roster(db)
    user = tg.user(6001, first_name="王芳")
    with running_bot(tg_settings, db, clock):
        assert texts_of(user.contact_wait("+8613800000002", user_id=999)) == texts.CONTACT_NOT_OWN
        assert texts_of(user.contact_wait("8613800000002")) == texts.BOUND_OK.format(name="王芳", unit="市住建局")
        assert "/unit" in texts_of(user.command_wait("/help"))
    with session_scope(db) as s:
        [account] = s.exec(select(ChatAccount)).all()
        assert (account.external_user_id, account.bound_by) == ("6001", "contact")


def test_webhook_mode_secret_and_redelivery(tg, tg_settings, db, clock):
    roster = make_roster(db)
    user = tg.user(7001, first_name="李明")
    bind(db, roster.cadre, "telegram", "7001", clock())
    with running_bot(tg_settings, db, clock, webhook=True) as served:
        assert tg.webhook["url"] == f"http://127.0.0.1:{served.port}/telegram/webhook"
        assert tg.webhook["secret_token"] == SECRET
        assert tg.pending_updates == []

        # Without the secret, or with a wrong one: refused, nothing processed.
        update = user.command("/visit", deliver=False)
        assert tg.deliver(update, secret=None) == 403
        assert tg.deliver(update, secret="wrong-secret-wrong-secret") == 403
        assert user.sent() == []

        # Delivered three times: one answer, one state change.
        assert [tg.deliver(update) for _ in range(3)] == [200, 200, 200]
        assert len(user.sent()) == 1 and texts.PICK_HOUSEHOLD in user.sent()[0]["text"]
        with session_scope(db) as s:
            assert s.get(DialogueState, ("telegram", "7001")).version == 1

        # The whole visit works the same way in webhook mode.
        press(user, texts.CANCEL)
        done = walk_visit(user, photo=False)
        assert "本半年已走访 1/3 户" in done
    with session_scope(db) as s:
        [visit] = s.exec(select(Visit)).all()
        assert visit.photo_ref is None and visit.latitude is None


def test_webhook_answers_presses_in_its_response_and_a_checklist_grows_in_one_message(tg, tg_settings, db, clock):
    user = bound_user(tg, db, clock, 7002)
    with running_bot(tg_settings, db, clock, webhook=True):
        [question] = user.command_wait("/visit")
        tg.clear_calls()
        press(user, "住户2")
        # The press was answered in the body of the webhook's answer, carried out by the stand-in
        # as Telegram does, and not by a request of the bot's own.
        [answer] = tg.calls_of("answerCallbackQuery")
        assert answer.via_webhook and answer.status == 200
        assert list(tg.callback_answers) == [str(answer.params["callback_query_id"])]
        # The household list now shows the choice and 回头看 (no buttons); the card question is new.
        first = [m for m in user.sent() if m["message_id"] == question["message_id"]][-1]
        assert first["text"].startswith(texts.PICK_HOUSEHOLD) and "\n➤ 住户2 · 幸福路2号\n\n🔎 回头看" in first["text"]
        assert not first.get("reply_markup")
        card = user.last()
        assert card["kind"] == "text" and texts.ASK_CARD in card["text"]

        # From here on each press grows the card question's message: one request per press.
        tg.clear_calls()
        press(user, "是")
        press(user, "满意")
        assert [c.method for c in tg.calls if not c.via_webhook] == ["editMessageText", "editMessageText"]
        grown = user.last()
        assert grown["message_id"] == card["message_id"] and grown["kind"] == "edit"
        lines = grown["text"].split("\n")
        assert lines[0] == texts.ASK_CARD and lines[1] == f"➤ {texts.YES}" and "➤ 满意" in lines
        assert user.buttons()  # the next question's buttons are on the same message
        # A stale press (the card question's old buttons are gone; a replayed token) is told so in
        # the answer, and the keyboard of the message it came from is removed.
        tg.clear_calls()
        stale = user.press("0.0", card["message_id"], deliver=False)
        assert tg.deliver(stale) == 200
        [answer] = tg.calls_of("answerCallbackQuery")
        assert answer.via_webhook and answer.params.get("text") == texts.STALE_BUTTON
        assert not [m for m in user.sent() if m["message_id"] == card["message_id"]][-1].get("reply_markup")
        assert user.buttons() and texts.STALE_BUTTON in texts_of(user.sent()[-2:])  # asked again, anew


def test_a_press_whose_answer_cannot_grow_the_message_gets_a_new_one(tg, tg_settings, db, clock):
    user = bound_user(tg, db, clock, 7003)
    with running_bot(tg_settings, db, clock, webhook=True):
        user.command_wait("/visit")
        press(user, "住户2")
        # Editing fails (the message is too old, say): the message stays as it was, the answer is sent.
        card = user.last()
        tg.fail_next("editMessageText", 400, "Bad Request: message can't be edited")
        replies = press(user, "是")
        assert [m["kind"] for m in replies] == ["text"] and "调查" in replies[0]["text"]
        assert user.buttons(replies[0])
        assert [m for m in user.sent() if m["message_id"] == card["message_id"]][-1]["text"] == card["text"]

        # An answer that needs a reply keyboard (the location) always comes as a new message.
        for answer in ("满意", "基本满意", "方便", "不涉及", "满意"):
            press(user, answer)
        user.text_wait("希望多组织文艺活动")
        press(user, texts.NO_DIFFICULTY)
        press(user, "是")  # the leaflet; the photo question grows the same message
        replies = user.text_wait(texts.SKIP)  # no photo
        assert texts.ASK_LOCATION in texts_of(replies)
        assert user.buttons()[0] == [(texts.LOCATION_BUTTON, False, True)]


def test_an_update_arriving_while_another_process_writes_waits_for_it_off_the_loop(tg, tg_settings, db, clock):
    """The bot's event loop never waits for SQLite's lock: the update goes to a thread, which does."""
    import sqlite3
    import threading

    if db.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    user = bound_user(tg, db, clock, 7004)
    with running_bot(tg_settings, db, clock, webhook=True) as served:
        other = sqlite3.connect(db.url.database, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(1.5, lambda: other.execute("COMMIT"))
        release.start()
        try:
            waiting = threading.Thread(target=lambda: user.command_wait("/visit", timeout=10))
            waiting.start()
            time.sleep(0.15)  # the update is with the bot, which waits for the lock
            assert user.sent() == []
            # Meanwhile the loop is free: the health check answers at once.
            import httpx
            assert httpx.get(f"{served.url}/healthz", timeout=1.0).status_code == 200
            waiting.join(10)
        finally:
            release.join()
            other.close()
        assert texts.PICK_HOUSEHOLD in user.last()["text"]


def test_a_press_whose_answer_cannot_be_delivered_still_stops_the_spinner(tg, tg_settings, db, clock):
    user = bound_user(tg, db, clock, 7005)
    with running_bot(tg_settings, db, clock, webhook=True):
        user.command_wait("/visit")
        # The household's 回头看 grows the pressed message; sending the card question then fails.
        tg.fail_next("sendMessage", 400, "Bad Request: chat not found")
        update = user.press(user.buttons()[0][0][1], deliver=False)
        tg.clear_calls()
        # The chat is gone (400): a redelivery could not do better, so 200, with the button answered.
        assert tg.deliver(update) == 200
        [answer] = tg.calls_of("answerCallbackQuery")
        assert answer.via_webhook and answer.status == 200
        assert tg.deliver(update) == 200 and len(tg.calls_of("answerCallbackQuery")) == 1  # redelivery: nothing


def test_garbage_webhook_body_is_refused(tg, tg_settings, db, clock):
    import httpx

    with running_bot(tg_settings, db, clock, webhook=True) as served:
        url = f"{served.url}/telegram/webhook"
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert httpx.post(url, content=b"{not json", headers=headers).status_code == 400
        assert httpx.post(url, content=b"x" * 2_000_000, headers=headers).status_code == 413
        assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok", "telegram": "webhook"}


def test_loopback_guard_is_installed():
    import socket

    from tests import conftest

    assert socket.socket.connect is conftest._guarded_connect
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="non-loopback"):
        conftest._check_loopback(sock, ("192.0.2.1", 80))  # refused before any packet leaves
    conftest._check_loopback(socket.socket(), ("127.0.0.1", 80))  # loopback passes


Q = 0.5  # the scheduler and sender share the process and the database: allow them their turn


def test_a_visit_problem_is_assigned_progressed_closed_and_answered(tg, tg_settings, db, clock):
    from storage.models import Cadre, Role, Unit

    roster = make_roster(db)
    with session_scope(db) as s:
        office = Unit(name="市作风办")
        s.add(office)
        s.flush()
        head = Cadre(name="督查员", unit_id=office.id, mobile="13800000041", role=Role.SUPERVISOR)
        backup = Cadre(name="备岗", unit_id=roster.unit.id, mobile="13800000042", role=Role.CADRE)
        s.add_all([head, backup])
    cadre, chief, b = tg.user(9101, first_name="李明"), tg.user(9102, first_name="督查员"), tg.user(9103)
    for person, user in ((roster.cadre, cadre), (head, chief), (backup, b)):
        bind(db, person, "telegram", str(user.id), clock())
    live = tg_settings.model_copy(update={"scheduler_in_run": True})
    with running_bot(live, db, clock):
        walk_visit(cadre, photo=False)
        with session_scope(db) as s:
            [problem] = s.exec(select(Problem)).all()
        chief.command_wait("/ledger", quiet=Q)
        press(chief, "待交办", quiet=Q)
        press(chief, f"#{problem.id}", quiet=Q)
        press(chief, "交办", quiet=Q)
        press(chief, "市住建局", quiet=Q)
        press(chief, "李明", quiet=Q)
        press(chief, "备岗", quiet=Q)
        press(chief, "默认", quiet=Q)
        assert "已交办" in texts_of(press(chief, "确认提交", quiet=Q))
        # The 交办单 reaches A and B through the outbox and the sender.
        assert wait_for(lambda: any("交办单" in (m.get("text") or "") for m in cadre.sent()))
        assert wait_for(lambda: any("交办单" in (m.get("text") or "") for m in b.sent()))

        cadre.command_wait("/todo", quiet=Q)
        press(cadre, f"#{problem.id}", quiet=Q)
        press(cadre, "报告进展", quiet=Q)
        cadre.text_wait("已联系物业维修电梯", quiet=Q)
        cadre.command_wait("/todo", quiet=Q)
        press(cadre, f"#{problem.id}", quiet=Q)
        press(cadre, "办结", quiet=Q)
        assert "已办结" in texts_of(cadre.text_wait("电梯已修复并通过检验", quiet=Q))
        # The household has no chat: the call-back is recorded by the A post.
        cadre.command_wait("/todo", quiet=Q)
        press(cadre, f"#{problem.id}", quiet=Q)
        press(cadre, "登记回访", quiet=Q)
        assert "已回访" in texts_of(cadre.text_wait("已电话告知住户2，表示满意", quiet=Q))
        assert wait_for(lambda: any("已办结" in (m.get("text") or "") for m in chief.sent()))
    with session_scope(db) as s:
        done = s.get(Problem, problem.id)
        assert (done.status, done.result, done.answer) == (
            ProblemStatus.ANSWERED, "电梯已修复并通过检验", "已电话告知住户2，表示满意")



# -- an answer saved is an answer delivered ------------------------------------------------------------

def test_a_reply_answered_429_is_sent_after_retry_after(tg, tg_settings, db, clock):
    user = bound_user(tg, db, clock, 7101)
    with running_bot(tg_settings, db, clock, webhook=True):
        tg.fail_next("sendMessage", 429, retry_after=1)
        update = user.command("/visit", deliver=False)
        assert tg.deliver(update) == 200
        assert texts.PICK_HOUSEHOLD in texts_of(user.sent())
        assert [c.status for c in tg.calls_of("sendMessage")] == [429, 200]


def test_a_reply_the_api_keeps_failing_is_sent_when_telegram_delivers_the_update_again(tg, tg_settings, db, clock):
    user = bound_user(tg, db, clock, 7102)
    with running_bot(tg_settings, db, clock, webhook=True):
        tg.fail_next("sendMessage", 502, "Bad Gateway", count=3)
        update = user.command("/visit", deliver=False)
        assert tg.deliver(update) == 500  # the state moved on, the answer did not reach the user
        assert user.sent() == []
        with session_scope(db) as s:
            assert s.get(DialogueState, ("telegram", "7102")).flow == "visit"
        assert tg.deliver(update) == 200  # Telegram's redelivery: the stored answer, sent now
        assert len(user.sent()) == 1 and texts.PICK_HOUSEHOLD in user.sent()[0]["text"]
        assert tg.deliver(update) == 200 and len(user.sent()) == 1  # delivered once: nothing more
        press(user, "住户1")  # its buttons work: the user is at the step they were shown
        assert "回头看：住户1" in texts_of(user.sent())


def test_an_answer_committed_but_never_sent_is_sent_on_redelivery(tg, tg_settings, db, clock):
    """The process killed between the commit and the reply: the core has the answer, nobody sent it."""
    import asyncio

    from bot.core.types import Inbound

    user = bound_user(tg, db, clock, 7103)
    with running_bot(tg_settings, db, clock, webhook=True) as served:
        update = user.command("/visit", deliver=False)
        core = Engine(db, served.app.state.core.settings, clock=clock)
        asyncio.run(core.dispatch(Inbound("telegram", "7103", command="visit", event_key=str(update["update_id"]))))
        core.close()
        assert user.sent() == []
        assert tg.deliver(update) == 200
        assert len(user.sent()) == 1 and texts.PICK_HOUSEHOLD in user.sent()[0]["text"]
        with session_scope(db) as s:
            assert s.get(DialogueState, ("telegram", "7103")).version == 1  # handled once


def test_a_malformed_update_is_answered_200_and_logged_once(tg, tg_settings, db, clock, caplog):
    user = bound_user(tg, db, clock, 7104)
    with running_bot(tg_settings, db, clock, webhook=True):
        update = user.text("hello", deliver=False)
        update["message"]["text"] = 12345  # a number where the Bot API sends a string
        with caplog.at_level("WARNING"):
            assert tg.deliver(update) == 200
        assert [r for r in caplog.records if "malformed" in r.getMessage()] != []
        assert user.sent() == []
        assert texts.PICK_HOUSEHOLD in texts_of(user.command_wait("/visit"))  # the bot carries on


def test_a_bound_user_gets_the_command_menu_of_their_role(tg, tg_settings, db, clock):
    roster = make_roster(db)
    bind(db, roster.supervisor, "telegram", "7105", clock())
    boss = tg.user(7105, first_name="王芳")
    with running_bot(tg_settings, db, clock):
        assert [c["command"] for c in tg.commands()] == ["bind", "report", "mine", "status", "cancel", "help"]
        boss.command_wait("/help")
        scope = {"type": "chat", "chat_id": 7105}
        assert wait_for(lambda: tg.commands(scope))
        names = [c["command"] for c in tg.commands(scope)]
        assert {"visit", "ledger", "ratings", "export", "spotcheck"} <= set(names) and "bind" not in names
        assert "bindcode" not in names  # an admin's command
