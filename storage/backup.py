"""Backups (备份) and restores of the whole database: ``python -m bot backup FILE`` / ``restore FILE``.

SQLite: the online backup API (``sqlite3.Connection.backup``) copies a consistent snapshot page
by page while the bot keeps running; the backup is itself a SQLite database file. Restoring copies
it back the same way into the configured database (stop the bot first).
PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore``, found on PATH (Debian: the
``postgresql-client`` package, of the server's major version or newer); the password is passed in
the environment (PGPASSWORD), never on the command line where ``ps`` would show it.

A restore goes into an empty database (no rows in any of the bot's tables; tables made by
``migrate`` alone are fine) and refuses one with data unless forced: it would replace everything
there. After a restore the caller runs the migrations, so a backup of an older version is
brought up to date.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (the tables whose rows are counted are the ones it defines)


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; the message says why and what to do.
    ``exit_code`` is 2 for what the operator must set up (a missing tool), 1 for the rest."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table of the bot's schema (tables not there yet count as absent)."""
    present = set(inspect(engine).get_table_names())
    counts = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in present:
                counts[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return counts


def is_empty(engine: Engine) -> bool:
    return not any(row_counts(engine).values())


# ---------------------------------------------------------------------------------------------
# SQLite


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"DATABASE_URL={url!r} 不是 SQLite 数据库文件，无法备份。")
    return Path(database)


def _copy_sqlite(source: sqlite3.Connection, target_path: Path) -> None:
    target = sqlite3.connect(target_path)
    try:
        source.backup(target)
    finally:
        target.close()


def _single_file(path: Path) -> None:
    """A backup is one file: journal mode DELETE, so opening it makes no -wal and -shm beside it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def backup_sqlite(url: str, path: Path) -> None:
    database = _sqlite_path(url)
    if not database.exists():
        raise BackupError(f"数据库文件 {database} 不存在：请检查 DATABASE_URL。")
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        _copy_sqlite(source, partial)
    finally:
        source.close()
    _single_file(partial)
    os.replace(partial, path)  # a backup file is complete or absent, never half written


def restore_sqlite(url: str, path: Path) -> None:
    database = _sqlite_path(url)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            known = source.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} 不是 SQLite 数据库文件（{exc}）：请给出 `python -m bot backup` 写出的备份。") from exc
        if known is None:
            raise BackupError(f"{path} 不是本程序的数据库备份（没有 alembic_version 表）。")
        database.parent.mkdir(parents=True, exist_ok=True)
        _copy_sqlite(source, database)
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"未找到 {name}：PostgreSQL 的备份与恢复需要 PostgreSQL 客户端工具，请安装（Debian/Ubuntu："
                          f"apt-get install postgresql-client，版本不低于数据库服务器），或把它所在的目录加入 PATH。",
                          exit_code=2)
    return found


def _pg_target(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without the password, and the environment that carries it."""
    parsed = make_url(url).set(drivername="postgresql")
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
        parsed = parsed.set(password=None)
    return parsed.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BackupError(f"{what}失败（{Path(command[0]).name} 退出码 {done.returncode}）：\n{tail}")


def backup_postgres(url: str, path: Path) -> None:
    tool = _pg_tool("pg_dump")
    target, env = _pg_target(url)
    partial = path.with_name(path.name + ".partial")
    _run([tool, "--format=custom", "--no-owner", "--no-privileges", f"--file={partial}", target], env, "备份")
    os.replace(partial, path)


def restore_postgres(url: str, path: Path) -> None:
    tool = _pg_tool("pg_restore")
    target, env = _pg_target(url)
    # --clean --if-exists: the tables `migrate` made (empty, or forced) are dropped and made again as in the backup.
    _run([tool, "--no-owner", "--no-privileges", "--clean", "--if-exists", "--single-transaction",
          f"--dbname={target}", str(path)], env, "恢复")


# ---------------------------------------------------------------------------------------------


def _reachable(read, engine: Engine):
    """``read(engine)``, or a BackupError naming DATABASE_URL when the database cannot be reached."""
    from sqlalchemy.exc import OperationalError

    try:
        return read(engine)
    except OperationalError as exc:
        raise BackupError(f"无法连接数据库，请检查 DATABASE_URL 与数据库服务：{str(exc.orig).splitlines()[0]}",
                          exit_code=2) from exc


def backup(engine: Engine, url: str, path: Path) -> dict[str, int]:
    """Writes a backup of the database at ``url`` to ``path``; returns the rows per table it holds."""
    path = Path(path)
    if path.is_dir():
        raise BackupError(f"{path} 是目录：请给出备份文件名，例如 {path / 'bot-backup.db'}")
    if engine.dialect.name == "postgresql":
        _pg_tool("pg_dump")  # before anything else: the operator's fix comes first
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = _reachable(row_counts, engine)
    if engine.dialect.name == "sqlite":
        backup_sqlite(url, path)
    elif engine.dialect.name == "postgresql":
        backup_postgres(url, path)
    else:
        raise BackupError(f"不支持备份 {engine.dialect.name} 数据库。")
    return counts


def restore(engine: Engine, url: str, path: Path, *, force: bool = False) -> None:
    """Restores the backup at ``path`` into the database at ``url``, which must be empty unless ``force``."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"找不到备份文件：{path}")
    if engine.dialect.name == "postgresql":
        _pg_tool("pg_restore")
    if not force and not _reachable(is_empty, engine):
        raise BackupError("目标数据库中已有数据：恢复会覆盖全部数据。请恢复到空数据库，"
                          "或确认后加 --force（建议先用 backup 备份当前数据）。")
    engine.dispose()  # no pooled connection of ours holds the old tables open
    if engine.dialect.name == "sqlite":
        restore_sqlite(url, path)
    elif engine.dialect.name == "postgresql":
        restore_postgres(url, path)
    else:
        raise BackupError(f"不支持恢复 {engine.dialect.name} 数据库。")
