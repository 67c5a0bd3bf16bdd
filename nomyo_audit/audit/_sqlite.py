"""The SQLite backend of the log's storage (:class:`SQLiteStore`).

About 450 lines, one class: every transaction on the file is here, so that their locking
(one connection per process, ``BEGIN IMMEDIATE`` for every write) can be read in one place.

One file, WAL, ``synchronous=FULL``, one ``BEGIN IMMEDIATE`` transaction per append, so
threads and processes append to one log and an acknowledged record survives a crash.

The frontier (compact range) is derived data: it is saved in the appending transaction
every :data:`FRONTIER_SAVE_EVERY` records and at each checkpoint, and rebuilt from the
saved one plus the (fewer than that) leaves after it, so the root at the current size is
always cheap and an append writes no extra page.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._files import FileExistsRefused, write_file
from ..errors import ConfigurationError, IntegrityError
from ._fields import TIME_COLUMN_EXACT, record_fields
from ._merkle import Frontier, leaf_hash
from ._sqlite_blobs import BLOBS_SCHEMA, blob_rows, get_blob, put_blobs
from ._sqlite_load import bulk_load
from ._store import (
    CheckpointMaker,
    CheckpointRow,
    LogError,
    StoredCheckpoint,
    StoredRecord,
    checked_records,
    missing,
    read_saved_frontier,
    truncated,
)

__all__ = ["FRONTIER_SAVE_EVERY", "TABLES", "SQLiteStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    payload_id TEXT NOT NULL,
    time REAL NOT NULL,
    data BLOB NOT NULL,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_payload_id ON records (payload_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created REAL NOT NULL
);
""" + BLOBS_SCHEMA + ";\n"

#: The columns each table must have for a file to be a nomyo-audit log.
TABLES = {
    "meta": {"key", "value"},
    "records": {"seq", "payload_id", "time", "data", "leaf"},
    "checkpoints": {"id", "size", "root", "note", "created"},
}

#: How often (in records) the frontier is saved; between saves it is rebuilt from the newer leaves.

FRONTIER_SAVE_EVERY = 64


_SQLITE_MAGIC = b"SQLite format 3\x00"


@contextmanager
def _damage_is_integrity(path: Path) -> Iterator[None]:
    """A read that SQLite cannot do on a file that was an audit log: the file is damaged (exit 3)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{path}: the audit log file is damaged ({_sqlite_reason(exc)})") from None


def _sqlite_reason(exc: sqlite3.Error) -> str:
    """SQLite's message, without the column text it quotes (that text may be the secret salt)."""
    message = str(exc)
    if message.startswith("Could not decode to UTF-8"):
        return "a column holds text that is not UTF-8: its type was altered"
    return message.partition(" with text ")[0][:200]


def _check_file(path: Path) -> None:
    """Refuse, without touching it, a path that is not an SQLite file (LogError, exit 2)."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise LogError(f"{path}: no such audit log") from None
    except IsADirectoryError:
        raise LogError(f"{path}: a directory, not an audit log") from None
    except OSError as exc:
        raise LogError(f"{path}: cannot read the audit log ({exc.strerror})") from None
    if not header:
        raise LogError(f"{path}: an empty file, not an audit log")
    if header != _SQLITE_MAGIC:
        raise LogError(f"{path}: not an SQLite database, so not an audit log")


def _create_private(path: Path) -> None:
    """Create the database file 0600 (it holds the digest salt), or make an empty one so.

    The file is made by :func:`nomyo_audit._files.write_file` (exclusive create, no symlink
    followed, mode set whatever the umask); an empty file already there (``touch``) is used.
    """
    try:
        write_file(path, b"", mode=0o600)
    except FileExistsRefused:
        if path.is_symlink() and not path.exists():
            message = f"{path}: a symbolic link to a missing file; not creating a log through it"
            raise LogError(message) from None
        if path.stat().st_size == 0 and not path.is_symlink():
            path.chmod(0o600)
    except ConfigurationError as exc:
        raise LogError(f"{path}: cannot create the audit log ({exc})") from None


class SQLiteStore:
    """The SQLite backend. ``readonly=True`` opens with ``mode=ro`` and writes nothing.

    Raises :class:`LogError` when the file is missing (read-only), not an SQLite file or
    not a log, or cannot be created; :class:`nomyo_audit.errors.IntegrityError` when it
    is a damaged log.

    A read-only open of a log that has no ``-wal`` file (no writer has it open) uses
    ``immutable=1`` as well, so SQLite leaves no ``-wal``/``-shm`` behind.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly or (self.path.exists() and self.path.stat().st_size):
            _check_file(self.path)
        else:
            _create_private(self.path)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise LogError(f"{self.path}: cannot open the audit log ({exc})") from None
        # One connection serves this process's threads: one transaction at a time on it.
        # Other processes have their own connections; SQLite's locks order them. Reentrant, so
        # that work inside exclusive() can use the store's own methods.
        self._lock = threading.RLock()
        self._current = Frontier()  # as of this connection's last look; a copy is handed out
        try:
            if readonly:
                self._check_schema()
            else:
                self._enter_wal()
                self._db.execute("PRAGMA synchronous=FULL")
                # Check and create in one write transaction: a second process opening the same
                # new file waits, then sees every table or none (never a log half made).
                with self.exclusive():
                    self._check_schema()
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
        except BaseException:
            self._db.close()
            raise

    def _enter_wal(self, patience: float = 60.0) -> None:
        """Switch the file to WAL, waiting out another process doing the same.

        SQLite answers "database is locked" at once, without its busy handler, when two
        connections race to change a new file's journal mode; the loser retries.
        """
        deadline = time.monotonic() + patience
        pause = 0.005
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``) around the caller's reads and writes.

        What runs inside sees no other writer's half-done work and is seen whole or not at all,
        so first-time set-up (tables, salt, origin) cannot race another process doing the same.
        """
        if self.readonly:
            raise LogError(f"{self.path}: opened read-only")
        with self._lock, _damage_is_integrity(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        quiet = not os.path.exists(f"{self.path}-wal") and not os.path.exists(f"{self.path}-shm")
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro" + ("&immutable=1" if quiet else "")
        return sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)

    def _check_schema(self) -> None:
        """An SQLite file is a log when it has the log's tables (or, to be created, no tables)."""
        with _damage_is_integrity(self.path):
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables or self.readonly:  # a file with no tables is a log still to be made (writers)
                for table, columns in TABLES.items():
                    have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                    if not columns <= have:
                        raise LogError(f"{self.path}: an SQLite database, but not a nomyo-audit log")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> int:
        """Append ``build(seq)`` as record ``seq`` in one transaction, with ``checkpoint``'s if it makes one
        and the ``blobs`` (SHA-256 hex -> bytes) it references not kept yet.

        The payload_id and time columns are taken from the record's own bytes when they
        carry them. Returns the record's seq; :class:`LogError` when opened read-only,
        :class:`nomyo_audit.errors.IntegrityError` when the log is cut short or has a gap.
        """
        if self.readonly:
            raise LogError(f"{self.path}: opened read-only")
        with self._lock:
            return self._append_locked(payload_id, timestamp, build, checkpoint, blobs)

    def _append_locked(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
        blobs: Mapping[str, bytes] | None,
    ) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if blobs:
                put_blobs(db, blobs)
            last = db.execute("SELECT seq, time FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            frontier = self._frontier_at(last[0] + 1 if last else 0)
            seq = frontier.size
            data = build(seq)
            leaf = leaf_hash(data)
            # The columns mirror the record's own bytes, so a reader can check them. The time
            # column only locates records by period (a binary search over seq), so it is the
            # running maximum of the records' times: it never goes back, even when the clock does.
            fields = record_fields(data)
            if fields is not None:
                payload_id, timestamp = fields
            stamp = max(timestamp, last[1]) if last else timestamp
            db.execute(
                "INSERT INTO records (seq, payload_id, time, data, leaf) VALUES (?, ?, ?, ?, ?)",
                (seq, payload_id, stamp, data, leaf),
            )
            frontier.append(leaf)
            made = None
            if checkpoint is not None:
                last = db.execute("SELECT MAX(created) FROM checkpoints").fetchone()[0]
                made = checkpoint(frontier, last)
                if made is not None:
                    db.execute(
                        "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
                        (made.size, made.root, made.note, time.time()),
                    )
            if made is not None or frontier.size % FRONTIER_SAVE_EVERY == 0:
                self._save_frontier(frontier)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._current = frontier
        return seq

    def bulk_load(self, meta: Mapping[str, bytes], records: Iterable[StoredRecord],
                  checkpoints: Iterable[StoredCheckpoint], blobs: Iterable[tuple[str, bytes]]) -> None:
        """Fill this empty log in one transaction (``log migrate``): :func:`._sqlite_load.bulk_load`."""
        with self.exclusive():
            self._current = bulk_load(self._db, str(self.path), meta, records, checkpoints, blobs)

    def records(self, since: float | None = None, until: float | None = None) -> Iterator[StoredRecord]:
        """Records in order, each checked against its own bytes; with a period, those in [since, until).

        A record is in a period when its time column is, and that column is checked to be
        exactly the running maximum of the records' own times: the walk starts at record 0
        so the maximum is known, and a missing row, a row whose columns disagree with its
        bytes, or a log shorter than its saved state raises :class:`IntegrityError`. It stops
        at the first record at or after ``until`` (the column never goes back).
        """
        exact = self.meta("time_column") == TIME_COLUMN_EXACT
        query = "SELECT seq, payload_id, time, data, leaf FROM records ORDER BY seq"
        with _damage_is_integrity(self.path), closing(self._db.execute(query)) as cursor:
            yield from checked_records(cursor, exact, since, until, lambda: self.saved_frontier().size)

    def scan(self) -> Iterator[tuple[Any, ...]]:
        """(seq, payload_id, time, data, leaf) of every row in order, unchecked: what verify reads."""
        query = "SELECT seq, payload_id, time, data, leaf FROM records ORDER BY seq"
        with _damage_is_integrity(self.path), closing(self._db.execute(query)) as cursor:
            yield from cursor

    def find(self, payload_id: str) -> StoredRecord | None:
        """The first record whose own bytes name ``payload_id`` (the column is checked, not trusted)."""
        for record in self.records():
            if record.payload_id == payload_id:
                return record
        return None

    def count(self) -> int:
        """The number of rows up to the highest seq (cheap; for progress lines, not for proofs)."""
        with _damage_is_integrity(self.path):
            row = self._db.execute("SELECT MAX(seq) FROM records").fetchone()
        return int(row[0]) + 1 if row and isinstance(row[0], int) else 0

    def frontier(self) -> Frontier:
        """The tree's right edge at the log's current size.

        Exact even when other processes appended meanwhile: their leaves are
        added to what this connection knew. A log with fewer rows than its
        saved state, or with a gap, is refused (:class:`IntegrityError`). Taken
        under the connection's lock: a read on the shared connection during
        another thread's append would see its uncommitted row, and this
        connection remembers what it computes.
        """
        with self._lock, _damage_is_integrity(self.path):
            return self._frontier_now()

    def _frontier_now(self) -> Frontier:
        row = self._db.execute("SELECT MAX(seq) FROM records").fetchone()
        return self._frontier_at(row[0] + 1 if row and row[0] is not None else 0)

    def _frontier_at(self, size: int) -> Frontier:
        db = self._db
        known = self._current
        if known.size != size:
            saved = self.saved_frontier()
            if max(saved.size, known.size) > size:
                raise IntegrityError(f"{self.path}: {truncated(max(saved.size, known.size), size)}")
            base = saved if saved.size > known.size else known
            known = Frontier(base.size, list(base.hashes))
            rows = db.execute("SELECT seq, leaf FROM records WHERE seq >= ? ORDER BY seq", (known.size,))
            for seq, leaf in rows:
                if seq != known.size:
                    raise IntegrityError(f"{self.path}: {missing(known.size, seq)}")
                known.append(bytes(leaf))
            self._current = known
        return Frontier(known.size, list(known.hashes))

    def _save_frontier(self, frontier: Frontier) -> None:
        """Inside the caller's transaction: what a later connection starts from."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('frontier', ?)", (frontier.to_bytes(),))

    def saved_frontier(self) -> Frontier:
        """The frontier as last saved (at a multiple of FRONTIER_SAVE_EVERY or a checkpoint)."""
        return read_saved_frontier(self.meta("frontier"), str(self.path))

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Keep a signed checkpoint; at the current size it also saves the frontier (one transaction)."""
        with self.exclusive():
            self._db.execute(
                "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
                (checkpoint.size, checkpoint.root, checkpoint.note, time.time()),
            )
            frontier = self._frontier_now()
            if frontier.size == checkpoint.size:
                self._save_frontier(frontier)

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The kept checkpoints in the order they were stored; rows with altered column types are left out.

        Signatures are not checked here (:meth:`AuditLog.verify` does).
        """
        return [
            StoredCheckpoint(row.size, row.root, row.note, _seconds(row.created))
            for row in self.checkpoint_rows()
            if isinstance(row.size, int) and isinstance(row.root, bytes) and isinstance(row.note, str)
        ]

    def checkpoint_rows(self) -> list[CheckpointRow]:
        """(id, size, root, note, created) as stored, unchecked."""
        query = "SELECT id, size, root, note, created FROM checkpoints ORDER BY id"
        with _damage_is_integrity(self.path):
            return [CheckpointRow(*row) for row in self._db.execute(query)]

    def meta(self, key: str) -> bytes | None:
        """The log metadata value ``key`` (salt, origin, public_key, frontier...), or None."""
        with _damage_is_integrity(self.path):
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = row[0]
        return value.encode() if isinstance(value, str) else bytes(value) if value is not None else None

    def set_meta(self, key: str, value: bytes, *, replace: bool = False) -> None:
        """Set metadata ``key``; an existing value is kept unless ``replace``."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(f"{verb} INTO meta VALUES (?, ?)", (key, value))

    def blob(self, sha256_hex: str) -> bytes | None:
        """The blob kept under ``sha256_hex`` as stored, or None (unchecked: ``_blobs.BlobReader`` checks)."""
        with _damage_is_integrity(self.path):
            return get_blob(self._db, sha256_hex)

    def blobs(self) -> Iterator[tuple[Any, Any]]:
        """(key, bytes) of every kept blob as stored, unchecked: what verify reads."""
        with _damage_is_integrity(self.path):
            yield from blob_rows(self._db)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``ok``, or the first problems it names."""
        with _damage_is_integrity(self.path):
            rows = self._db.execute("PRAGMA integrity_check(20)").fetchall()
        return "; ".join(str(row[0]) for row in rows)


def _seconds(value: Any) -> float | None:
    """A stored ``created`` column as epoch seconds, or None when it is not a number (altered)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
