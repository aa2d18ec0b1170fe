"""What an operator meets: settings checks, the CLI, the console channel, the migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import SQLModel, select

from bot.cli import main as cli_main
from bot.config import Settings, SettingsError, get_settings
from handlers.console import parse_line, run_console
from storage.db import session_scope
from storage.models import Cadre, Household, Visit
from tests.utils import make_roster

GOOD_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


@pytest.mark.parametrize("overrides, names", [
    ({"telegram_bot_token": SecretStr("changeme")}, "TELEGRAM_BOT_TOKEN"),
    ({"telegram_bot_token": SecretStr("<your-token>")}, "TELEGRAM_BOT_TOKEN"),
    ({"telegram_bot_token": SecretStr("12345")}, "TELEGRAM_BOT_TOKEN"),
    ({"telegram_bot_token": SecretStr(GOOD_TOKEN), "telegram_webhook_url": "https://bot.example.org/tg"},
     "TELEGRAM_WEBHOOK_SECRET"),
    ({"telegram_bot_token": SecretStr(GOOD_TOKEN), "telegram_webhook_url": "https://bot.example.org/tg",
      "telegram_webhook_secret": SecretStr("changeme")}, "TELEGRAM_WEBHOOK_SECRET"),
    ({"telegram_webhook_url": "https://bot.example.org/tg"}, "TELEGRAM_BOT_TOKEN"),
    ({"timezone": "Mars/Olympus"}, "TIMEZONE"),
])
def test_missing_or_placeholder_settings_fail_with_the_name(settings, overrides, names):
    with pytest.raises(SettingsError, match=names):
        settings.model_copy(update=overrides).check()


def test_good_settings_pass_and_postgres_urls_get_the_driver(settings):
    ok = settings.model_copy(update={"telegram_bot_token": SecretStr(GOOD_TOKEN)}).check()
    assert ok.telegram_enabled
    assert Settings(database_url="postgresql://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"


def test_cli_refuses_a_placeholder_token_before_doing_anything(settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "your-token-here")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/never.db")
    get_settings.cache_clear()
    assert cli_main(["migrate"]) == 2
    assert "TELEGRAM_BOT_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()
    get_settings.cache_clear()


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "console", "migrate", "import-roster", "roster-template", "bind-code"):
        assert command in out


def _cli(monkeypatch, database_url, *argv) -> int:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


def test_cli_import_roster_reports_bad_rows_and_writes_nothing(db, database_url, monkeypatch, capsys, tmp_path):
    from openpyxl import load_workbook

    template = tmp_path / "roster.xlsx"
    assert _cli(monkeypatch, database_url, "roster-template", str(template)) == 0
    workbook = load_workbook(template)
    sheet = workbook["联户"]
    header = [c.value for c in sheet[1]]
    sheet.cell(row=3, column=header.index("联系电话") + 1, value="1380000")
    broken = tmp_path / "broken.xlsx"
    workbook.save(broken)

    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(broken)) == 1
    err = capsys.readouterr().err
    assert "未写入任何数据" in err and "联户 第3行 联系电话" in err
    with session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(Cadre)).one() == 0

    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(template)) == 0
    assert "联户：新增 20" in capsys.readouterr().out
    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(template)) == 0
    assert "联户：新增 0，更新 0，未变 20，停用 0" in capsys.readouterr().out
    assert _cli(monkeypatch, database_url, "import-roster", str(tmp_path / "missing.xlsx")) == 1


def test_console_walks_a_visit_with_numbers(db, core):
    roster = make_roster(db, households=2)
    lines = iter(["/visit", "1", "1", "1", "1", "1", "1", "1", "跳过", "本次无困难诉求", "是", "跳过",
                  ":location 31.2,121.4", "1", ":quit"])
    out: list[str] = []
    assert run_console(core, roster.cadre.mobile, read=lambda prompt: next(lines), write=out.append) == 0
    transcript = "\n".join(out)
    assert "已以 李明（13800000003）身份登录" in transcript
    assert "1. 住户1 · 幸福路1号" in transcript and "（回复编号或选项文字）" in transcript
    assert "✅ 走访已登记。本半年已走访 1/2 户。" in transcript
    with session_scope(db) as s:
        [visit] = s.exec(select(Visit)).all()
        assert visit.channel == "console" and (visit.latitude, visit.longitude) == (31.2, 121.4)
        assert visit.household_id == s.exec(select(Household).where(Household.name == "住户1")).one().id


def test_console_without_a_roster_says_so(db, core):
    out: list[str] = []
    assert run_console(core, None, read=lambda prompt: ":quit", write=out.append) == 1
    assert "请先导入花名册" in out[0]


def test_console_line_parsing():
    assert parse_line("  ") is None
    assert parse_line("/Visit now").command == "visit"
    assert parse_line(":photo door.jpg").photo_ref == "console:door.jpg"
    assert parse_line(":contact 13800000001").contact.user_id == "local"


def test_migrations_match_the_models(db):
    """A model changed without a migration shows up here as a difference."""
    with db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []


def test_env_example_names_every_setting_and_loads(monkeypatch, tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / ".env.example"
    names = {line.split("=", 1)[0].strip() for line in example.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")}
    assert {name.upper() for name in Settings.model_fields} == names
    (tmp_path / ".env").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    loaded = Settings().check()  # the example itself is a valid configuration
    assert loaded.telegram_bot_token is None and loaded.reminder_days_before == [7, 3, 1, 0]
