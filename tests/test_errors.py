"""The error tree as an operator and a user meet it: `python -m bot` run as a process, with a wrong
file in each file setting, stops at start with the setting, the file, the fix and exit code 2; the
tree's leaves are where the docstring of bot/errors.py draws them; bind-code piped into `head`."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from bot import errors, texts
from storage.db import session_scope
from storage.models import BindingCode
from tests.utils import Chat, make_roster, wait_for


def run_cli(tmp_path: Path, *argv: str, env: dict[str, str] | None = None,
            database_url: str | None = None) -> subprocess.CompletedProcess:
    """``python -m bot ARGV`` in a fresh process, from a folder without a .env, as an operator runs it."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TELEGRAM_", "WECHAT_")) and k not in (
                 "DATABASE_URL", "SURVEY_FILE", "HOLIDAY_FILE", "CARD_FONT", "PYTHONUNBUFFERED")}
    clean.update(DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'bot.db'}", LOAD_EXAMPLE_ROSTER="false",
                 ENVIRONMENT="development")
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot", *argv], cwd=tmp_path, env=clean, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def _write(path: Path, content: str | bytes) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


# (setting, how to make the file, what the message must say besides the setting and the path)
BAD_FILES = [
    pytest.param("SURVEY_FILE", lambda d: str(d / "nonexistent.toml"), ["不存在", "删除该设置以使用内置问卷"],
                 id="survey-missing"),
    pytest.param("SURVEY_FILE", lambda d: _write(d / "survey.toml", "[[question]]\nid = \"q1\"\ntext = \n"),
                 ["TOML 格式错误", "line 3", "删除该设置以使用内置问卷"], id="survey-bad-toml"),
    pytest.param("SURVEY_FILE", lambda d: _write(d / "survey.toml", "[[question]]\nid = \"q1\"\ntext = \"满意吗？\"\n"
                                                                    "options = [\"满意\"]\n"),
                 ["第1题（q1）", "至少两个 options"], id="survey-one-option"),
    pytest.param("SURVEY_FILE", lambda d: _write(d / "survey.toml", "question = [1, 2]\n"),
                 ["第1题", "[[question]]"], id="survey-not-tables"),
    pytest.param("SURVEY_FILE", lambda d: _write(d / "survey.toml", b"\xff\xfe[[question]]\n"),
                 ["不是 UTF-8"], id="survey-not-utf8"),
    pytest.param("SURVEY_FILE", lambda d: str(d), ["不是文件"], id="survey-a-folder"),
    pytest.param("HOLIDAY_FILE", lambda d: str(d / "holidays.txt"), ["不存在", "2027-01-01 休"], id="holiday-missing"),
    pytest.param("HOLIDAY_FILE", lambda d: _write(d / "holidays.txt", "2027-01-01 休\n2027-02-30 班\n"),
                 ["第2行", "2027-02-30 班"], id="holiday-bad-line"),
    pytest.param("CARD_FONT", lambda d: str(d / "font.ttc"), ["不存在", "fonts-wqy-microhei"], id="font-missing"),
    pytest.param("CARD_FONT", lambda d: _write(d / "font.ttf", "not a font"), ["不是可读取的字体"], id="font-not-a-font"),
    pytest.param("DATABASE_URL", lambda d: "sqlite:///" + _write(d / "bot.db", "notes, not a database"),
                 ["不是 SQLite 数据库"], id="database-not-sqlite"),
]


@pytest.mark.parametrize("setting, make, says", BAD_FILES)
def test_a_bad_file_setting_stops_the_console_at_start(tmp_path, setting, make, says):
    value = make(tmp_path)
    result = run_cli(tmp_path, "console", env={setting: value})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"配置错误：设置 {setting}："), message
    shown = value.removeprefix("sqlite:///")
    assert shown in message
    for part in says:
        assert part in message
    assert "请" in message  # the fix
    assert "已以" not in result.stdout  # the console never started


def test_the_issue_s_example_is_answered_in_one_line(tmp_path):
    result = run_cli(tmp_path, "console", env={"SURVEY_FILE": "/nonexistent.toml"})
    assert result.returncode == 2
    assert result.stderr.startswith("配置错误：设置 SURVEY_FILE：文件 /nonexistent.toml 不存在。请改为")
    assert not (tmp_path / "bot.db").exists()  # stopped before touching anything


def test_good_file_settings_pass_the_check(tmp_path, settings):
    survey = _write(tmp_path / "survey.toml", "[[question]]\nid = \"q1\"\ntext = \"满意吗？\"\n"
                                              "options = [\"满意\", \"不满意\"]\n")
    holidays = _write(tmp_path / "holidays.txt", "# 2027\n2027-01-01 休\n2027-02-06 班\n")
    checked = settings.model_copy(update={"survey_file": Path(survey), "holiday_file": Path(holidays)}).check()
    assert checked.survey_file == Path(survey)


@pytest.mark.parametrize("setting, value, says", [
    ("HTTP_PORT", "八千", "设置 HTTP_PORT 的值“八千”不合要求"),
    ("LEDGER_DEADLINE_DAYS", "{visit: 10", "设置 LEDGER_DEADLINE_DAYS 的值无法解析"),
])
def test_a_wrong_value_names_the_setting_in_the_operator_s_words(tmp_path, setting, value, says):
    result = run_cli(tmp_path, "migrate", env={setting: value})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert says in result.stderr and "删除该设置以使用默认值" in result.stderr
    assert not (tmp_path / "bot.db").exists()


def test_a_database_that_cannot_be_reached_is_the_operator_s_to_fix(tmp_path):
    result = run_cli(tmp_path, "migrate", database_url="postgresql://nobody@127.0.0.1:9/none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "设置 DATABASE_URL：无法打开数据库" in result.stderr


def test_a_bad_roster_is_an_operator_error_of_the_command(tmp_path):
    """A file given to a command: listed and refused, exit code 1, no traceback, nothing written."""
    roster = _write(tmp_path / "roster.xlsx", "not a workbook")
    result = run_cli(tmp_path, "import-roster", "--quiet", roster)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "未写入任何数据" in result.stderr


def test_the_tree_is_what_its_docstring_draws():
    from bot.cards import CardError
    from bot.config import SettingsError
    from bot.core.dialogue import InputError
    from bot.core.ledger import LedgerError
    from bot.core.survey import SurveyFileError
    from bot.core.workdays import HolidayFileError
    from bot.fonts import FontNotFound
    from bot.reports.cli import _Refused
    from handlers import web
    from handlers.wechat import crypto
    from handlers.wechat.account import QrLimitReached
    from handlers.wechat.api import WeChatApiError
    from bot.imports.hotline import HotlineError
    from bot.imports.roster import RosterError

    drawn = {}  # each class of the drawing, by name, with its parent: the indentation says which
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.split("::", 1)[1].splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*)(?:[├└]── )?(\w+)", line)
        if not match or not line.strip():
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
        if match.group(2) == "WeChatApiError":
            break
    assert drawn["BotError"] is None
    for name, parent in drawn.items():
        if parent is not None:
            assert issubclass(getattr(errors, name), getattr(errors, parent)), (name, parent)
    # Every name stays importable where it was, and is the very class the tree re-exports.
    assert errors.SettingsError is SettingsError and errors.InputError is InputError
    assert errors.RatingRefused is web.Refused and errors.WebhookRefused is crypto.Refused
    assert errors.CommandRefused is _Refused
    for cls in (LedgerError, SurveyFileError, HolidayFileError, FontNotFound, RosterError, HotlineError, CardError,
                QrLimitReached, WeChatApiError):
        assert getattr(errors, cls.__name__) is cls
    # What callers caught before still catches them.
    assert issubclass(SurveyFileError, ValueError) and issubclass(HolidayFileError, ValueError)
    assert issubclass(SettingsError, RuntimeError) and issubclass(FontNotFound, RuntimeError)
    assert errors.SettingsError.exit_code == 2 and errors.CommandInputError.exit_code == 1


def _fill(fd: int) -> int:
    """Fills the pipe's buffer, so that the next write to it blocks until someone reads; returns how much."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    filled = 0
    for size in (4096, 1):
        while True:
            try:
                filled += os.write(fd, b"." * size)
            except BlockingIOError:
                break
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return filled


def _code_in(line: str) -> str:
    match = re.search(r"的绑定码：([A-Z0-9]{8})", line)
    assert match, line
    return match.group(1)


def test_bind_code_piped_into_head_gives_a_code_that_binds(db, core, database_url, tmp_path):
    roster = make_roster(db)
    mobile = roster.cadre.mobile

    # As an operator types it: the first line is the code, head leaves, the code must bind.
    env = {k: v for k, v in os.environ.items() if k not in ("SURVEY_FILE", "HOLIDAY_FILE", "CARD_FONT")}
    env.update(DATABASE_URL=database_url, LOAD_EXAMPLE_ROSTER="false", PYTHONUNBUFFERED="1")
    piped = subprocess.run(f"{sys.executable} -m bot bind-code {mobile} | head -1", shell=True, cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in piped.stderr, piped.stderr
    assert Chat(core, "u1").say(f"/bind {_code_in(piped.stdout)}") == texts.BOUND_OK.format(
        name=roster.cadre.name, unit=roster.unit.name)

    # The same with the reader held up: while bind-code waits to print its first line (the pipe is
    # full), the code is already saved; then the reader takes one line and closes the pipe early.
    read_end, write_end = os.pipe()
    filled = _fill(write_end)
    process = subprocess.Popen([sys.executable, "-m", "bot", "bind-code", roster.supervisor.mobile], cwd=tmp_path,
                               env=env, stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)

    def saved() -> bool:
        with session_scope(db) as s:
            return len(s.exec(select(BindingCode).where(BindingCode.cadre_id == roster.supervisor.id)).all()) == 1

    try:
        with os.fdopen(read_end, "rb") as reader:
            # Held at its first write, bind-code has saved the code already (or it ended: why is below).
            wait_for(lambda: saved() or process.poll() is not None, timeout=60)
            saved_first = saved()
            assert reader.read(filled) == b"." * filled  # now it may write
            first = reader.readline().decode()
        _, err = process.communicate(timeout=60)  # the pipe was closed after one line
    finally:
        if process.poll() is None:
            process.kill()
    assert saved_first, f"the code was not saved before bind-code printed it: {first!r} {err}"
    assert process.returncode == 0 and "Traceback" not in err, err
    assert Chat(core, "u2").say(f"/bind {_code_in(first)}") == texts.BOUND_OK.format(
        name=roster.supervisor.name, unit=roster.unit.name)
