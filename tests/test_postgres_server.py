"""The PostgreSQL test harness itself: a real server, a fresh database per test, backends terminated."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def test_fresh_database_is_empty_and_reachable(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")


def test_each_test_gets_its_own_database(postgres_url: str, postgres_server: Any) -> None:
    other = postgres_server.create_database()
    try:
        assert other != postgres_url
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (other.rsplit("/", 1)[1],)
    finally:
        postgres_server.drop_database(other.rsplit("/", 1)[1])


def test_terminate_kills_open_connections(postgres_url: str, postgres_server: Any) -> None:
    conn = psycopg.connect(postgres_url)
    assert postgres_server.terminate(postgres_url.rsplit("/", 1)[1]) == 1
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


def test_durable_server_keeps_postgres_defaults() -> None:
    from postgres_server import PostgresServer

    with PostgresServer(durable=True) as server:
        directory = server.directory
        assert directory is not None and directory.exists()
        with psycopg.connect(server.create_database()) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    assert not directory.exists()


def test_relaxed_server_says_so(postgres_server: Any) -> None:
    assert postgres_server.durable is False
    with psycopg.connect(postgres_server.url("postgres")) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
