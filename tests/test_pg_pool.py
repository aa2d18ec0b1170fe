"""PostgreSQL's pool without a ping per checkout: a connection that sat idle is pinged, and replaced
when the server closed it; one in steady use is not pinged (storage.db._ping_when_idle)."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage.db import make_engine


@pytest.fixture
def pg_url(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's pool (SQLite has one connection per file and no server to lose)")
    return database_url


def _backend(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(admin, pid: int) -> None:
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()


def test_an_idle_connection_closed_by_the_server_is_replaced(pg_url):
    engine, admin = make_engine(pg_url, ping_after_idle=0), make_engine(pg_url)
    try:
        first = _backend(engine)
        _terminate(admin, first)  # what a server restart or an idle timeout does
        second = _backend(engine)  # the checkout pings, finds it gone, takes a new connection
        assert second != first
        with engine.connect() as conn:  # and the replacement is pooled like any other
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_in_steady_use_is_not_pinged(pg_url):
    engine, admin = make_engine(pg_url, ping_after_idle=3600), make_engine(pg_url)
    try:
        first = _backend(engine)
        _terminate(admin, first)
        # No ping: the dead connection is handed out and its first statement fails loudly.
        with pytest.raises(OperationalError):
            _backend(engine)
        assert _backend(engine) != first  # the pool threw the dead one away
    finally:
        engine.dispose()
        admin.dispose()


def test_the_ping_leaves_no_transaction_open(pg_url):
    engine = make_engine(pg_url, ping_after_idle=0)
    try:
        _backend(engine)
        with engine.connect() as conn:  # pinged at checkout
            raw = conn.connection.dbapi_connection
            assert raw.info.transaction_status.name == "IDLE"
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_the_asyncpg_pool_replaces_an_idle_connection_closed_by_the_server(pg_url):
    """DATABASE_ASYNC_EVENTS' pool: the same ping after idling, awaited on the event loop."""
    import asyncio

    from storage.db import make_async_engine

    async def backend(engine) -> int:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()

    async def main():
        engine, admin = make_async_engine(pg_url, ping_after_idle=0), make_engine(pg_url)
        try:
            first = await backend(engine)
            _terminate(admin, first)
            second = await backend(engine)  # pinged at checkout, found gone, replaced
            assert second != first
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await engine.dispose()
            admin.dispose()

    asyncio.run(main())
