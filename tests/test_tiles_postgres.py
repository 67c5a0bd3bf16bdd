"""``log tiles`` and ``log serve`` of a PostgreSQL log (a real server, tests/postgres_server.py).

The tiles are read through the LogStore interface only, so a log copied from SQLite into
PostgreSQL publishes byte-identical files, grows incrementally there, and is served the same way.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_log_integrity import DAY, make_log, record_at
from test_tiles_cli import client_of, files_under, stats
from test_tiles_serve import start, stop

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._postgres import PostgresStore
from nomyo_audit.audit._sqlite import SQLiteStore
from nomyo_audit.cli import main

pytestmark = pytest.mark.postgres

KEY = Ed25519PrivateKey.generate()


def copy_to_postgres(sqlite_path, url):
    source = SQLiteStore(sqlite_path, readonly=True)
    names = ("salt", "origin", "public_key", "time_column")
    meta = {k: v for k in names if (v := source.meta(k)) is not None}
    target = PostgresStore(url)
    target.bulk_load(meta, source.records(), source.checkpoints(), source.blobs())
    target.close()
    source.close()


def test_a_postgresql_log_publishes_the_same_tiles_as_sqlite_and_grows_incrementally(tmp_path, postgres_url):
    db = make_log(tmp_path / "audit.db", KEY, count=300, every=1000)
    copy_to_postgres(db, postgres_url)
    from_sqlite, from_postgres = tmp_path / "sqlite", tmp_path / "postgres"
    assert main(["log", "tiles", "--log", str(db), "-o", str(from_sqlite)]) == 0
    assert main(["log", "tiles", "--log", postgres_url, "-o", str(from_postgres)]) == 0
    assert files_under(from_sqlite) == files_under(from_postgres)
    for path in files_under(from_sqlite):
        assert (from_sqlite / path).read_bytes() == (from_postgres / path).read_bytes(), path
    before = stats(from_postgres)
    with AuditLog(postgres_url, key=KEY, checkpoint_every=10**9, checkpoint_interval=1e12) as log:
        for n in range(300, 600):
            log.append(f"req-{n}", record_at(f"req-{n}", DAY + n), timestamp=DAY + n)
        log.checkpoint()
    assert main(["log", "tiles", "--log", postgres_url, "-o", str(from_postgres)]) == 0
    after = stats(from_postgres)
    assert after["tile/0/000"] == before["tile/0/000"]  # a full tile is never rewritten
    client = client_of(from_postgres)
    client.open_checkpoint(KEY.public_key())
    assert client.size == 600 and client.tree_root() == client.root


def test_log_serve_serves_a_postgresql_log(tmp_path, postgres_url):
    copy_to_postgres(make_log(tmp_path / "audit.db", KEY, count=20), postgres_url)
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", postgres_url, "-o", str(out)]) == 0
    server = start(postgres_url, tmp_path)
    try:
        for path in files_under(out):
            status, _, body = server.get("/" + path)
            assert (status, body) == (200, (out / path).read_bytes())
    finally:
        assert "Traceback" not in stop(server)
