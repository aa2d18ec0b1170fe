"""Shared fixtures: the loopback guard, settings, a migrated database (SQLite or PostgreSQL), a clock,
the core, the example ``roster`` and the Telegram Bot API stand-in ``tg``.

The suite runs on SQLite by default and on PostgreSQL when TEST_DATABASE_URL is set. The schema
is built once per run by the Alembic migrations (so they are tested too); each test starts from
empty tables.

A module (``pytestmark``) or a test says what it needs of ``roster`` and ``tg`` with a marker:
``@pytest.mark.roster(bound_as="u1", window=True)`` binds the cadre to the test channel's user and
adds a service window with the cadre and the supervisor on duty; ``@pytest.mark.telegram_standin(
token=..., bot_username=...)`` starts the stand-in with that token or bot username. Builders of test
data are in tests/utils.py.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from bot.config import Settings, get_settings
from bot.core.engine import Engine
from storage.db import make_engine, upgrade
from tests.standins.telegram_api import TelegramStandin
from tests.utils import Roster, bind, make_roster, make_window

def pytest_configure(config):
    config.addinivalue_line("markers", "roster(bound_as=None, window=False): what the roster fixture adds")
    config.addinivalue_line("markers", "telegram_standin(**options): options of the tg fixture's stand-in")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_loopback(sock: socket.socket, address) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConnectionRefusedError(f"test guard: connection to non-loopback address {address!r} refused")


def _guarded_connect(self, address):
    _check_loopback(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_loopback(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """Any test that opens a connection off this machine fails."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(autouse=True)
def data_keys(monkeypatch):
    """Every test starts with the development key for the phone numbers at rest (storage/crypto.py):
    a test that installs its own (the CLI does, from DATA_KEY) does not hand it to the next."""
    from storage import crypto

    for name in ("DATA_KEY", "DATA_KEY_OLD", "DATA_CIPHER"):
        monkeypatch.delenv(name, raising=False)
    crypto.configure(None)
    yield
    crypto.configure(None)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return Settings(database_url=url).sqlalchemy_url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def migrated_engine(database_url):
    engine = make_engine(database_url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            SQLModel.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(migrated_engine):
    """The migrated engine with every table emptied before the test."""
    with migrated_engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())
    return migrated_engine


@pytest.fixture
def settings(database_url, monkeypatch, tmp_path) -> Settings:
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "WECHAT_", "WECOM_")) or name in ("DATABASE_URL", "SURVEY_FILE"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # so no developer's .env is read
    get_settings.cache_clear()
    # The scheduler is off unless a test turns it on: its catch-up run would send on its own.
    return Settings(environment="test", database_url=database_url, load_example_roster=False,
                    scheduler_in_run=False)


class Clock:
    """A settable clock; tests move it to cross half-years or expire codes."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc))  # 10:00 in Asia/Shanghai


@pytest.fixture
def core(db, settings, clock) -> Engine:
    engine = Engine(db, settings, clock=clock)
    yield engine
    engine.close()


@pytest.fixture
def roster(request, db) -> Roster:
    """One unit with a cadre (3 households, 10 service objects), a supervisor and an admin
    (``make_roster``); the ``roster`` marker binds the cadre or adds a window."""
    marker = request.node.get_closest_marker("roster")
    options = marker.kwargs if marker else {}
    built = make_roster(db)
    if options.get("bound_as"):
        bind(db, built.cadre, "test", options["bound_as"], request.getfixturevalue("clock")())
    if options.get("window"):
        make_window(db, built, on_duty=[built.cadre, built.supervisor])
    return built


@pytest.fixture
def tg(request):
    """A local stand-in of the Telegram Bot API on loopback; the ``telegram_standin`` marker sets its options."""
    marker = request.node.get_closest_marker("telegram_standin")
    with TelegramStandin(**(marker.kwargs if marker else {})) as standin:
        yield standin
