"""Loading a whole log into an empty PostgreSQL log (``log migrate``), inside the caller's transaction.

The bytes, positions, columns and checkpoint times are copied unchanged (COPY), so the migrated
log verifies exactly as its source; the frontier is computed from the records' leaves as they
stream by and saved last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import IntegrityError
from ._merkle import Frontier
from ._store import LogError, StoredCheckpoint, StoredRecord, missing

__all__ = ["load"]

#: Metadata the destination makes for itself and the source's copy must not replace.
_DERIVED = frozenset({"frontier"})


def load(
    conn: Any,
    location: str,
    meta: Mapping[str, bytes],
    records: Iterable[StoredRecord],
    checkpoints: Iterable[StoredCheckpoint],
    blobs: Iterable[tuple[str, bytes]],
) -> None:
    """Copy everything into the empty log ``conn`` is in a transaction on (LogError: not empty)."""
    if _not_empty(conn):
        raise LogError(f"{location}: the destination log is not empty; migrate only into an empty log")
    frontier = Frontier()
    with conn.cursor() as cur:
        cur.execute("DELETE FROM meta")  # what a writer's open made (salt, origin): the source's replace it
        cur.executemany(
            "INSERT INTO meta (key, value) VALUES (%s, %s)",
            [(key, bytes(value)) for key, value in meta.items() if key not in _DERIVED],
        )
        with cur.copy("COPY records (seq, payload_id, time, data, leaf) FROM STDIN") as copy:
            for record in records:
                if record.seq != frontier.size:
                    gap = missing(frontier.size, record.seq)
                    raise IntegrityError(f"{location}: the records to load: {gap}")
                copy.write_row((record.seq, record.payload_id, record.time, record.data, record.leaf))
                frontier.append(record.leaf)
        with cur.copy("COPY checkpoints (size, root, note, created) FROM STDIN") as copy:
            for checkpoint in checkpoints:
                created = checkpoint.created if checkpoint.created is not None else 0.0
                copy.write_row((checkpoint.size, checkpoint.root, checkpoint.note, created))
        with cur.copy("COPY blobs (sha256, data) FROM STDIN") as copy:
            for digest, data in blobs:
                copy.write_row((digest, bytes(data)))
        cur.execute(
            "INSERT INTO meta (key, value) VALUES ('frontier', %s)", (frontier.to_bytes(),)
        )


def _not_empty(conn: Any) -> bool:
    for table in ("records", "checkpoints", "blobs", "pending"):
        if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            return True
    row = conn.execute("SELECT 1 FROM meta WHERE key NOT IN ('salt', 'origin', 'time_column') LIMIT 1")
    return row.fetchone() is not None
