"""The SQLite blobs table: event logs kept once per SHA-256 digest (:mod:`._blobs` says why).

Functions on the store's connection, called inside its transactions: :func:`put_blobs` runs in
the appending transaction, so a record and the blobs it references are committed together or
not at all. A log made before the table existed gets it when a writer opens it (``CREATE TABLE
IF NOT EXISTS``); a reader of such a log sees no blobs.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing
from typing import Any

from ._blobs import is_digest

__all__ = ["BLOBS_SCHEMA", "blob_rows", "get_blob", "put_blobs"]

BLOBS_SCHEMA = "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)"


def _has_table(db: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='blobs'"
    return db.execute(query).fetchone() is not None


def put_blobs(db: sqlite3.Connection, blobs: Mapping[str, bytes]) -> None:
    """Inside the caller's transaction: keep each blob not kept yet (a kept one is not sent again).

    Raises ``ValueError`` for a key that is not the SHA-256 of its bytes (a caller's bug: the
    record would reference bytes the log does not hold).
    """
    for digest, data in blobs.items():
        if db.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (digest,)).fetchone() is not None:
            continue
        if not is_digest(digest) or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError("a blob's key must be the SHA-256 (lowercase hex) of its bytes")
        db.execute("INSERT INTO blobs (sha256, data) VALUES (?, ?)", (digest, bytes(data)))


def get_blob(db: sqlite3.Connection, digest: str) -> bytes | None:
    """The bytes kept under ``digest`` as stored (unchecked), or None (also for a log with no table)."""
    if not _has_table(db):
        return None
    row = db.execute("SELECT data FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
    if row is None:
        return None
    value = row[0]
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()


def blob_rows(db: sqlite3.Connection) -> Iterator[tuple[Any, Any]]:
    """(key, bytes) of every kept blob as stored, unchecked: what ``log verify`` reads."""
    if not _has_table(db):
        return
    with closing(db.execute("SELECT sha256, data FROM blobs")) as cursor:
        yield from cursor
