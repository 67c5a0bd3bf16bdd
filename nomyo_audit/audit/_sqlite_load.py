"""Fill an empty SQLite log with an existing log's contents (``log migrate``): :func:`bulk_load`.

Called by :meth:`._sqlite.SQLiteStore.bulk_load` inside its write transaction, so the load is
all or nothing: a failure leaves the log empty. The record bytes, their columns and leaf hashes,
the checkpoints' notes and stored times and the blobs are written exactly as given (the caller
verifies the result); the positions must run 0, 1, 2... The frontier is computed from the leaves
as they stream past and saved at the end, as an append would have left it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

from ..errors import IntegrityError
from ._merkle import Frontier
from ._sqlite_blobs import put_blobs
from ._store import LogError, StoredCheckpoint, StoredRecord, missing

__all__ = ["bulk_load"]

_BATCH = 10_000


def bulk_load(
    db: sqlite3.Connection,
    label: str,
    meta: Mapping[str, bytes],
    records: Iterable[StoredRecord],
    checkpoints: Iterable[StoredCheckpoint],
    blobs: Iterable[tuple[str, bytes]],
) -> Frontier:
    """Inside the caller's transaction: load into the empty log; return the frontier saved.

    :class:`LogError` when the log is not empty (``label`` names it); :class:`IntegrityError`
    when the records do not run 0, 1, 2...; ``ValueError`` for a blob whose key is not its digest.
    """
    for table in ("records", "checkpoints", "meta", "blobs"):
        if db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            raise LogError(f"{label}: the log is not empty ({table}); load only into a new log")
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, bytes(v)) for k, v in meta.items()])
    frontier = Frontier()
    rows = _rows(records, frontier)
    insert = "INSERT INTO records (seq, payload_id, time, data, leaf) VALUES (?, ?, ?, ?, ?)"
    while batch := list(islice(rows, _BATCH)):
        db.executemany(insert, batch)
    db.executemany(
        "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
        [(c.size, c.root, c.note, time.time() if c.created is None else c.created) for c in checkpoints],
    )
    for digest, data in blobs:
        put_blobs(db, {digest: data})
    if frontier.size:  # an empty log has no saved frontier, as a new one has none
        db.execute("INSERT OR REPLACE INTO meta VALUES ('frontier', ?)", (frontier.to_bytes(),))
    return frontier


def _rows(records: Iterable[StoredRecord], frontier: Frontier) -> Iterator[tuple[object, ...]]:
    for record in records:
        if record.seq != frontier.size:
            raise IntegrityError(missing(frontier.size, record.seq))
        frontier.append(record.leaf)
        yield record.seq, record.payload_id, record.time, record.data, record.leaf
