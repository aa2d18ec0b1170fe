"""Backups (issue 15, item 8): ``backup`` then ``restore`` into an empty database gives identical
row counts and a working bot; a database with data is refused unless forced. On SQLite always; on
PostgreSQL when the test database is PostgreSQL and pg_dump / pg_restore are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from bot.cli import main as cli_main
from bot.config import get_settings
from bot.core.engine import Engine
from scheduler.outbox import enqueue
from storage import audit
from storage.backup import row_counts
from storage.db import make_engine, session_scope
from tests.utils import Chat, bind, make_problem, make_rating, make_roster, make_visit

SURVEY = [("press", "满意"), ("press", "基本满意"), ("press", "方便"), ("press", "不涉及"), ("press", "满意"),
          ("say", "无")]


def _cli(monkeypatch, url: str, *argv) -> int:
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


def _fill(db, core, settings, clock) -> None:
    """A little of everything: roster, a visit done in chat, a problem, a rating, an outbox row, audit rows."""
    roster = make_roster(db)
    bind(db, roster.cadre, "test", "u1", clock())
    chat = Chat(core)
    for action, arg in [("say", "/visit"), ("press", "住户1"), ("press", "是"), *SURVEY, ("press", "物业"),
                        ("say", "楼道灯坏了"), ("press", "未解决"), ("press", "是"), ("press", "跳过"), ("press", "跳过")]:
        chat.press(arg) if action == "press" else chat.say(arg)
    assert "✅" in chat.press("确认提交")
    make_visit(db, roster.cadre, roster.households[1], clock())
    make_problem(db, clock(), content="井盖缺失", unit_id=roster.unit.id)
    make_rating(db, roster.cadre, 1, clock())
    with session_scope(db) as s:
        enqueue(s, key="k1", kind="notice", channel="telegram", recipient="42", body="你好", now=clock(),
                settings=settings)
        audit.record(s, at=clock(), actor="cli", action="phone.reveal", target="problem:1")


def _works(url: str, settings, clock) -> str:
    """The bound cadre asks for their progress on a bot that runs on ``url``."""
    engine = make_engine(url)
    core = Engine(engine, settings.model_copy(update={"database_url": url}), clock=clock)
    try:
        return Chat(core).say("/progress")
    finally:
        core.close()
        engine.dispose()


def test_sqlite_backup_and_restore_round_trip(db, core, settings, clock, monkeypatch, capsys, tmp_path):
    if db.dialect.name != "sqlite":
        pytest.skip("the SQLite round trip runs on the SQLite suite")
    _fill(db, core, settings, clock)
    before = row_counts(db)
    assert before["visit"] == 2 and before["audit_log"] == 1 and before["outbox"] == 1 and before["problem"] == 2

    backup = tmp_path / "backups" / "bot.db"
    # As the operator runs it: a process of its own.
    done = subprocess.run([sys.executable, "-m", "bot", "backup", str(backup)], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "DATABASE_URL": settings.database_url}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"共 {sum(before.values())} 行" in done.stdout
    assert sorted(p.name for p in backup.parent.iterdir()) == ["bot.db"]  # one file, no -wal or -shm
    # What happens after the backup is not in it.
    make_problem(db, clock(), content="备份之后")

    restored = f"sqlite:///{tmp_path / 'restored' / 'bot.db'}"
    assert _cli(monkeypatch, restored, "restore", str(backup)) == 0
    assert "已从" in capsys.readouterr().out
    engine = make_engine(restored)
    assert row_counts(engine) == before
    engine.dispose()
    assert "已走访 2/3 户" in _works(restored, settings, clock)

    # Into a database with data: refused, unless forced.
    assert _cli(monkeypatch, settings.database_url, "restore", str(backup)) == 1
    assert "--force" in capsys.readouterr().err
    assert row_counts(db)["problem"] == 3
    assert _cli(monkeypatch, settings.database_url, "restore", str(backup), "--force") == 0
    assert row_counts(db) == before


def test_restore_refuses_what_is_not_a_backup(db, settings, monkeypatch, capsys, tmp_path):
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite files")
    not_a_backup = tmp_path / "notes.db"
    not_a_backup.write_text("这不是数据库", encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'new.db'}"
    assert _cli(monkeypatch, target, "restore", str(not_a_backup)) == 1
    assert "不是 SQLite 数据库文件" in capsys.readouterr().err
    assert _cli(monkeypatch, target, "restore", str(tmp_path / "missing.db")) == 1
    assert "找不到备份文件" in capsys.readouterr().err


def test_postgres_without_pg_dump_says_what_to_install(db, settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump here
    assert _cli(monkeypatch, "postgresql://postgres@127.0.0.1:1/none", "backup", str(tmp_path / "x.dump")) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "postgresql-client" in err
    assert not (tmp_path / "x.dump").exists()


def test_postgres_backup_and_restore_round_trip(db, core, settings, clock, monkeypatch, capsys, tmp_path):
    if db.dialect.name != "postgresql":
        pytest.skip("TEST_DATABASE_URL is not PostgreSQL")
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump / pg_restore not installed")
    _fill(db, core, settings, clock)
    before = row_counts(db)
    url = db.url.render_as_string(hide_password=False)
    backup = tmp_path / "bot.dump"
    assert _cli(monkeypatch, url, "backup", str(backup)) == 0
    assert backup.stat().st_size > 0
    # Into a database with data: refused.
    assert _cli(monkeypatch, url, "restore", str(backup)) == 1
    assert "--force" in capsys.readouterr().err

    # Empty the database completely (no tables at all), then restore into it.
    core.close()
    with db.begin() as conn:
        SQLModel.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    assert _cli(monkeypatch, url, "restore", str(backup)) == 0
    assert row_counts(db) == before
    assert "已走访 2/3 户" in _works(url, settings, clock)
