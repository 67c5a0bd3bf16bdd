"""The tamper-evident audit log: records as Merkle leaves, signed checkpoints, proofs.

Storage sits behind :class:`LogStore`, a small interface with one backend,
:class:`SQLiteStore`: one file, WAL, ``synchronous=FULL``, one ``BEGIN
IMMEDIATE`` transaction per append, so threads and processes append to one log
and an acknowledged record survives a crash. A server database can be added
as another store without touching the Merkle, checkpoint or report code.

Rules :class:`AuditLog` keeps:

* record ``n`` is the ``n``-th leaf (0-based) and says ``"seq": n`` in its own
  bytes, so a deleted, inserted or reordered row is named by its position;
* nothing but the record bytes decides what a reader sees: the ``payload_id``
  and ``time`` columns only mirror what the bytes say (``time`` is the running
  maximum of the records' own times, so it never goes back), and every read
  checks them against the bytes, so editing a column cannot drop or pick a record;
* the frontier (compact range) is derived data: it is saved in the appending
  transaction every :data:`FRONTIER_SAVE_EVERY` records and at each checkpoint,
  and rebuilt from the saved one plus the (fewer than that) leaves after it, so
  the root at the current size is always cheap and an append writes no extra page;
* checkpoints are C2SP signed notes over (origin, size, root) with two extension
  lines, the commitment to the log's digest salt and the signing time, all kept;
  with a key configured one is made every ``checkpoint_every`` records or
  ``checkpoint_interval`` seconds, in the appending transaction;
* :meth:`AuditLog.open` reads and never writes: a missing, empty, foreign or
  damaged file is refused before anything is created.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import IntegrityError, NomyoAuditError
from ._merkle import Frontier, inclusion_proof, leaf_hash, root_of
from ._note import (
    Checkpoint,
    NoteError,
    parse_checkpoint,
    sign_checkpoint,
    signed_by,
    signer_ids,
    verify_checkpoint,
)

__all__ = [
    "AuditLog",
    "IntegrityError",
    "LogError",
    "LogStore",
    "SQLiteStore",
    "StoredRecord",
    "VerifiedCheckpoint",
    "VerifyReport",
    "key_fingerprint",
    "salt_commitment",
]

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
"""

#: The columns each table must have for a file to be a nomyo-audit log.
TABLES = {
    "meta": {"key", "value"},
    "records": {"seq", "payload_id", "time", "data", "leaf"},
    "checkpoints": {"id", "size", "root", "note", "created"},
}

#: How often (in records) the frontier is saved; between saves it is rebuilt from the newer leaves.
FRONTIER_SAVE_EVERY = 64

#: Checkpoint extension lines: the salt commitment and the signing time (RFC 3339).
SALT_EXTENSION = "nomyo-audit-salt-sha256"
TIME_EXTENSION = "nomyo-audit-time"

#: meta ``time_column`` = ``record``: the time column is exactly max(record time, previous).
#: Logs written before that kept the append clock (within a millisecond of the record's time).
_TIME_COLUMN_EXACT = b"record"

_SQLITE_MAGIC = b"SQLite format 3\x00"


class LogError(NomyoAuditError):
    """The log cannot be opened or used as asked."""

    code = "log_error"
    exit_code = 2


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    payload_id: str
    time: float
    data: bytes
    leaf: bytes


#: Called inside an append's transaction: returns (size, root, signed note) to keep, or None.
CheckpointMaker = Callable[[Frontier, "float | None"], "tuple[int, bytes, str] | None"]


class LogStore(Protocol):
    """What the log needs from storage."""

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
    ) -> int: ...
    def records(self, since: float | None = None, until: float | None = None) -> Iterator[StoredRecord]: ...
    def scan(self) -> Iterator[tuple[Any, ...]]: ...
    def find(self, payload_id: str) -> StoredRecord | None: ...
    def count(self) -> int: ...
    def frontier(self) -> Frontier: ...
    def saved_frontier(self) -> Frontier: ...
    def add_checkpoint(self, size: int, root: bytes, note: str) -> None: ...
    def checkpoints(self) -> list[tuple[int, bytes, str]]: ...
    def checkpoint_rows(self) -> list[tuple[Any, ...]]: ...
    def meta(self, key: str) -> bytes | None: ...
    def set_meta(self, key: str, value: bytes, *, replace: bool = False) -> None: ...
    def integrity_check(self) -> str: ...


# -- what a record's own bytes say -------------------------------------------------------------------


def _fields_fast(data: bytes) -> tuple[bytes, bytes] | None:
    """(payload_id as JSON, time text) found by position in canonical JSON, or None.

    Keys are sorted, so the top level reads ``…"payload_id":"…","policy":…,"time":"…","tool":…``:
    the top-level payload_id is the last one before ``time`` (the client's policy result after it
    has no such key, but has a nested ``policy`` key of its own) and is followed by ``,"policy":``.
    A string with an escaped quote cannot end in front of ``,"policy":``. A record laid out
    otherwise returns None and is read by :func:`_fields_careful`.
    """
    end = data.rfind(b'","tool":')
    start = data.rfind(b',"time":"', 0, end)
    if end < 0 or start < 0:
        return None
    payload = data.rfind(b',"payload_id":"', 0, start)
    if payload < 0:
        return None
    close = data.find(b'"', payload + 15, start)
    if close < 0 or not data.startswith(b',"policy":', close + 1):
        return None
    return data[payload + 14 : close + 1], data[start + 9 : end]


def _fields_careful(data: bytes) -> tuple[str, str] | None:
    """(payload_id, time text) from the parsed record, or None when it carries no such strings."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    payload_id, moment = document.get("payload_id"), document.get("time")
    if not isinstance(payload_id, str) or not isinstance(moment, str):
        return None
    return payload_id, moment


def _parse_time(text: str) -> float | None:
    try:
        parsed = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def record_fields(data: bytes) -> tuple[str, float] | None:
    """(payload_id, time in epoch seconds) the record's bytes say, or None if they say neither."""
    fast = _fields_fast(data)
    if fast is not None:
        raw = fast[0]
        try:
            plain = raw[:1] == b'"' and raw[-1:] == b'"' and b"\\" not in raw and len(raw) > 1
            payload_id = raw[1:-1].decode() if plain else json.loads(raw)
            moment = _parse_time(fast[1].decode())
        except (ValueError, UnicodeDecodeError):
            payload_id = moment = None
        if isinstance(payload_id, str) and moment is not None:
            return payload_id, moment
    careful = _fields_careful(data)
    if careful is None or (moment := _parse_time(careful[1])) is None:
        return None
    return careful[0], moment


_ENCODE_STRING = json.JSONEncoder(ensure_ascii=False).encode


class _ColumnCheck:
    """Checks, row after row, that a row's ``payload_id`` and ``time`` columns are what its bytes say.

    ``exact``: the time column is max(record time, previous column) exactly; otherwise (a log
    written before) it may be the append clock, up to a millisecond after the record's time.
    The fast path compares bytes by position; any doubt goes to :func:`record_fields`.
    """

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.previous = float("-inf")
        self._last_text = b""
        self._last_time = 0.0

    def problem(self, seq: int, data: bytes, payload_id: Any, column_time: Any) -> str | None:
        previous, self.previous = self.previous, column_time
        if not isinstance(payload_id, str) or not isinstance(column_time, (int, float)):
            return f"record {seq}: its payload_id or time column has the wrong type (altered)"
        fast = _fields_fast(data)
        moment: float | None = None
        if fast is not None and (
            fast[0] == b'"' + payload_id.encode() + b'"' or fast[0] == _ENCODE_STRING(payload_id).encode()
        ):
            text = fast[1]
            if text == self._last_text:
                moment = self._last_time
            else:
                moment = _parse_time(text.decode("utf-8", "replace"))
                if moment is not None:
                    self._last_text, self._last_time = text, moment
        if moment is None:
            fields = record_fields(data)
            if fields is None:
                return f"record {seq}: its bytes carry no payload_id and time"
            if fields[0] != payload_id:
                return f"record {seq}: its payload_id column disagrees with its bytes (altered)"
            moment = fields[1]
        if self.exact:
            good = column_time == max(moment, previous)
        else:
            # the append clock was max(clock, previous): the previous column only when the record's
            # own time is no later, else a clock reading within the record's millisecond
            appended = previous < column_time and moment <= column_time < moment + 0.001
            good = (column_time == previous and moment <= previous) or appended
        if not good:
            return f"record {seq}: its time column disagrees with its bytes (altered)"
        return None


# -- storage --------------------------------------------------------------------------------------------


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
    """Create the database file 0600 (it holds the digest salt), or make an empty one so."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        if path.is_symlink() and not path.exists():
            message = f"{path}: a symbolic link to a missing file; not creating a log through it"
            raise LogError(message) from None
        if path.stat().st_size == 0 and not path.is_symlink():
            path.chmod(0o600)
        return
    except OSError as exc:
        raise LogError(f"{path}: cannot create the audit log ({exc.strerror})") from None
    os.fchmod(fd, 0o600)
    os.close(fd)


class SQLiteStore:
    """The SQLite backend. ``readonly=True`` opens with ``mode=ro`` and writes nothing.

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
        try:
            self._check_schema()
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(SCHEMA)
        except BaseException:
            self._db.close()
            raise
        # One connection serves this process's threads: one transaction at a time on it.
        # Other processes have their own connections; SQLite's locks order them.
        self._lock = threading.Lock()
        self._current = Frontier()  # as of this connection's last look; a copy is handed out

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
        self._db.close()

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
    ) -> int:
        if self.readonly:
            raise LogError(f"{self.path}: opened read-only")
        with self._lock:
            return self._append_locked(payload_id, timestamp, build, checkpoint)

    def _append_locked(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
    ) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
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
                        (*made, time.time()),
                    )
            if made is not None or frontier.size % FRONTIER_SAVE_EVERY == 0:
                self._save_frontier(frontier)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._current = frontier
        return seq

    def records(self, since: float | None = None, until: float | None = None) -> Iterator[StoredRecord]:
        """Records in order, each checked against its own bytes; with a period, those in [since, until).

        A record is in a period when its time column is, and that column is checked to be
        exactly the running maximum of the records' own times: the walk starts at record 0
        so the maximum is known, and a missing row, a row whose columns disagree with its
        bytes, or a log shorter than its saved state raises :class:`IntegrityError`. It stops
        at the first record at or after ``until`` (the column never goes back).
        """
        check = _ColumnCheck(self.meta("time_column") == _TIME_COLUMN_EXACT)
        expected = 0
        query = "SELECT seq, payload_id, time, data, leaf FROM records ORDER BY seq"
        with _damage_is_integrity(self.path), closing(self._db.execute(query)) as cursor:
            for seq, payload_id, moment, data, leaf in cursor:
                if seq != expected:
                    raise IntegrityError(_missing(expected, seq))
                if type(data) is not bytes or type(leaf) is not bytes:
                    raise IntegrityError(f"record {seq}: its bytes are not stored as a BLOB (altered)")
                if problem := check.problem(seq, data, payload_id, moment):
                    raise IntegrityError(problem)
                expected = seq + 1
                if until is not None and moment >= until:
                    return
                if since is None or moment >= since:
                    yield StoredRecord(seq, payload_id, float(moment), data, leaf)
            saved = self.saved_frontier().size
            if saved > expected:
                raise IntegrityError(_truncated(saved, expected))

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
                raise IntegrityError(f"{self.path}: {_truncated(max(saved.size, known.size), size)}")
            base = saved if saved.size > known.size else known
            known = Frontier(base.size, list(base.hashes))
            rows = db.execute("SELECT seq, leaf FROM records WHERE seq >= ? ORDER BY seq", (known.size,))
            for seq, leaf in rows:
                if seq != known.size:
                    raise IntegrityError(f"{self.path}: {_missing(known.size, seq)}")
                known.append(bytes(leaf))
            self._current = known
        return Frontier(known.size, list(known.hashes))

    def _save_frontier(self, frontier: Frontier) -> None:
        """Inside the caller's transaction: what a later connection starts from."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('frontier', ?)", (frontier.to_bytes(),))

    def saved_frontier(self) -> Frontier:
        """The frontier as last saved (at a multiple of FRONTIER_SAVE_EVERY or a checkpoint)."""
        raw = self.meta("frontier")
        if raw is None:
            return Frontier()
        try:
            return Frontier.from_bytes(raw)
        except ValueError:
            raise IntegrityError(f"{self.path}: the log's saved state is damaged") from None

    def add_checkpoint(self, size: int, root: bytes, note: str) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
                    (size, root, note, time.time()),
                )
                frontier = self._frontier_now()
                if frontier.size == size:
                    self._save_frontier(frontier)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def checkpoints(self) -> list[tuple[int, bytes, str]]:
        return [
            (int(size), bytes(root), str(note))
            for _, size, root, note, _ in self.checkpoint_rows()
            if isinstance(size, int) and isinstance(root, bytes) and isinstance(note, str)
        ]

    def checkpoint_rows(self) -> list[tuple[Any, ...]]:
        """(id, size, root, note, created) as stored, unchecked."""
        with _damage_is_integrity(self.path):
            return list(self._db.execute("SELECT id, size, root, note, created FROM checkpoints ORDER BY id"))

    def meta(self, key: str) -> bytes | None:
        with _damage_is_integrity(self.path):
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = row[0]
        return value.encode() if isinstance(value, str) else bytes(value) if value is not None else None

    def set_meta(self, key: str, value: bytes, *, replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(f"{verb} INTO meta VALUES (?, ?)", (key, value))

    def integrity_check(self) -> str:
        with _damage_is_integrity(self.path):
            rows = self._db.execute("PRAGMA integrity_check(20)").fetchall()
        return "; ".join(str(row[0]) for row in rows)


def _missing(expected: int, seq: int) -> str:
    if seq > expected:
        return f"record {expected} is missing (next row is {seq})"
    return f"record {seq} appears twice"


def _truncated(saved: int, size: int) -> str:
    return f"the log's saved state says {saved} records, the records make {size} (truncated)"


# -- verification results --------------------------------------------------------------------------------


def key_fingerprint(public: Ed25519PublicKey) -> str:
    """The key's fingerprint as reports print it: SHA-256 of its DER SubjectPublicKeyInfo, hex."""
    from ._dsse import key_fingerprint as fingerprint

    return fingerprint(public)


def salt_commitment(salt: bytes) -> str:
    """What a checkpoint signs about the digest salt: a hash, so the salt itself stays secret."""
    return base64.b64encode(hashlib.sha256(b"nomyo-audit log salt\n" + salt).digest()).decode()


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature, origin, salt and root all held."""

    size: int
    root: bytes
    time: str | None  # RFC 3339; signed unless time_signed is False (older checkpoints)
    time_signed: bool
    signer: str  # key_fingerprint of the key it verified with
    note: str


@dataclass
class VerifyReport:
    size: int
    root: bytes
    checkpoints: int
    problems: list[str] = field(default_factory=list)
    #: the latest checkpoint (largest size) signed by the trusted key that verified
    checkpoint: VerifiedCheckpoint | None = None
    #: checkpoints signed by keys other than the trusted one, by ``name+keyID`` (not problems)
    other_signers: dict[str, int] = field(default_factory=dict)
    #: what held but is worth saying (older checkpoints without a salt commitment...)
    notes: list[str] = field(default_factory=list)
    #: checkpoints kept elsewhere (``--checkpoint``) that the log was checked against
    external: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def intact(self) -> bool:
        return not self.problems


class AuditLog:
    """``AuditLog("audit.db")``: append records, checkpoint, verify, prove.

    The constructor opens a log to write, creating it (0600) when missing;
    :meth:`open` opens an existing one to read and never writes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: Ed25519PrivateKey | None = None,
        origin: str | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 300.0,
        store: LogStore | None = None,
        new_signer: bool = False,
    ) -> None:
        self.path = Path(path)
        self.store: LogStore = store if store is not None else SQLiteStore(path)
        try:
            self._initialise(origin)
            self.key = key
            if key is not None:
                self._establish_signer(key, new_signer)
        except BaseException:
            self.close()
            raise
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AuditLog:
        """An existing log, read-only: never creates or writes a file.

        A missing, empty or foreign file is a :class:`LogError` (exit 2); a
        damaged one, or one that lost its salt or origin, an :class:`IntegrityError` (exit 3).
        """
        log = cls.__new__(cls)
        log.path = Path(path)
        log.store = SQLiteStore(path, readonly=True)
        log.key = None
        log.checkpoint_every, log.checkpoint_interval = 0, 0.0
        try:
            log._salt, log._origin = log.store.meta("salt"), log.store.meta("origin")
        except BaseException:
            log.close()
            raise
        return log

    def _initialise(self, origin: str | None) -> None:
        """A new log gets its salt, origin and time-column rule; an existing one must have them."""
        store = self.store
        if store.meta("salt") is None and store.meta("origin") is None and self._is_blank():
            store.set_meta("salt", os.urandom(32))
            store.set_meta("origin", (origin or f"nomyo-audit.local/{self.path.stem}").encode())
            store.set_meta("time_column", _TIME_COLUMN_EXACT)
        self._salt, self._origin = store.meta("salt"), store.meta("origin")
        self._require_metadata()

    def _is_blank(self) -> bool:
        store = self.store
        return store.count() == 0 and not store.checkpoint_rows() and store.meta("frontier") is None

    def _require_metadata(self) -> None:
        missing = [name for name, value in (("salt", self._salt), ("origin", self._origin)) if not value]
        if missing:
            raise IntegrityError(
                f"{self.path}: the log's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                "missing (deleted?); the log's records and checkpoints depend on them"
            )

    def _establish_signer(self, key: Ed25519PrivateKey, new_signer: bool) -> None:
        """The first checkpoint key becomes the log's signer; another one only when asked."""
        raw = _raw_public(key.public_key())
        established = self.store.meta("public_key")
        if established is not None and established != raw and not new_signer:
            raise LogError(
                f"{self.path}: its checkpoints are signed by another key "
                f"({_fingerprint_raw(established)}); to change the log's signer on purpose, "
                "pass --new-signer (new_signer=True)"
            )
        self.store.set_meta("public_key", raw, replace=established is not None)

    @property
    def salt(self) -> bytes:
        """The log's secret digest salt (IntegrityError if deleted)."""
        self._require_metadata()
        assert self._salt is not None
        return self._salt

    @property
    def origin(self) -> str:
        """The checkpoints' origin line (IntegrityError if deleted)."""
        self._require_metadata()
        assert self._origin is not None
        return self._origin.decode("utf-8", "replace")

    def close(self) -> None:
        closer = getattr(self.store, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, payload_id: str, build: Callable[[int, bytes], bytes], timestamp: float | None = None
    ) -> int:
        """Append the record ``build(seq, salt)`` returns; durable when this returns."""
        now = time.time() if timestamp is None else timestamp
        salt = self.salt
        return self.store.append(
            payload_id,
            now,
            lambda seq: build(seq, salt),
            self._auto_checkpoint if self.key is not None else None,
        )

    def _note(self, size: int, root: bytes, key: Ed25519PrivateKey) -> str:
        from ._records import rfc3339

        extensions = (
            f"{SALT_EXTENSION} {salt_commitment(self.salt)}",
            f"{TIME_EXTENSION} {rfc3339(time.time())}",
        )
        return sign_checkpoint(Checkpoint(self.origin, size, root, extensions), key)

    def _auto_checkpoint(self, frontier: Frontier, last: float | None) -> tuple[int, bytes, str] | None:
        if self.key is None:
            return None
        due = (
            frontier.size % self.checkpoint_every == 0
            or last is None
            or time.time() - last >= self.checkpoint_interval
        )
        if not due:
            return None
        root = frontier.root()
        return frontier.size, root, self._note(frontier.size, root, self.key)

    def checkpoint(self, key: Ed25519PrivateKey | None = None, *, new_signer: bool = False) -> str:
        """Sign and keep a checkpoint at the current size.

        ``key`` must be the log's established signer (the key of its earlier
        checkpoints) unless ``new_signer`` says the change is meant.
        """
        signer = key or self.key
        if signer is None:
            raise LogError("a checkpoint needs a signing key (--key)")
        self._establish_signer(signer, new_signer)
        frontier = self.store.frontier()
        root = frontier.root()
        note = self._note(frontier.size, root, signer)
        self.store.add_checkpoint(frontier.size, root, note)
        return note

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.store.frontier().size

    def public_key(self) -> Ed25519PublicKey | None:
        """The signer the log names (whoever can write the log can change it: prefer --key)."""
        raw = self.store.meta("public_key")
        try:
            return Ed25519PublicKey.from_public_bytes(raw) if raw else None
        except ValueError:
            return None

    def latest_checkpoint(self) -> tuple[int, bytes, str] | None:
        checkpoints = self.store.checkpoints()
        return checkpoints[-1] if checkpoints else None

    def root_at(self, size: int) -> bytes:
        """The Merkle root over records 0..size-1, recomputed from their bytes.

        :class:`IntegrityError` when a record in that range is missing, sits
        where its bytes say it does not, or no longer matches its leaf hash, or
        when the log has fewer than ``size`` records.
        """
        if size < 0:
            raise LogError(f"a tree size is not negative ({size})")
        frontier = Frontier()
        if size:
            for seq, _, _, data, stored_leaf in self.store.scan():
                if seq != frontier.size:
                    raise IntegrityError(_missing(frontier.size, seq))
                if type(data) is not bytes:
                    raise IntegrityError(f"record {seq}: its bytes are not stored as a BLOB (altered)")
                leaf = leaf_hash(data)
                problem = _check_record(seq, data, stored_leaf, leaf, seq)
                if problem is not None:
                    raise IntegrityError(problem)
                frontier.append(leaf)
                if frontier.size == size:
                    break
        if frontier.size < size:
            raise IntegrityError(f"the log has {frontier.size} records, fewer than {size}")
        return frontier.root()

    def verify(
        self,
        public_key: Ed25519PublicKey | None = None,
        progress: Callable[[int], None] | None = None,
        *,
        checkpoints: Iterable[str] = (),
    ) -> VerifyReport:
        """Recompute the tree from the record bytes; check every row, checkpoint and their consistency.

        Every checkpoint's root is compared with the root recomputed from the
        records at its size; two checkpoints that both match are roots of
        prefixes of one sequence, so they are consistent without a proof
        (``consistency_proof`` exports one for third parties). ``checkpoints``
        are signed notes kept elsewhere (a report's, a CI artefact): the log must
        be at least as large as each and match its root, which is what catches a
        rollback. With ``public_key`` at least one checkpoint in the log must be
        signed by it; checkpoints by other keys are listed, not failed. Without
        it the key stored in the log is used, which proves nothing against
        whoever could rewrite the log: pass the key from a trusted place.
        Problems name the first bad record or checkpoint.
        """
        return _Verification(self, public_key, progress, list(checkpoints)).run()

    def prove(self, payload_id: str) -> str:
        """A C2SP tlog-proof (c2sp.org/tlog-proof) of the record, against the latest checkpoint."""
        self.store.frontier()  # a log cut below its saved state is named truncated (exit 3) first
        record = self.store.find(payload_id)
        if record is None:
            raise LogError(f"no record for payload_id {payload_id}")
        latest = self.latest_checkpoint()
        if latest is None or latest[0] <= record.seq:
            raise LogError("no checkpoint covers this record yet: run 'nomyo-audit log checkpoint' first")
        size, root, note = latest
        leaves = [leaf_hash(r.data) for r, _ in zip(self.store.records(), range(size), strict=False)]
        if len(leaves) < size or root_of(leaves) != root:
            raise IntegrityError(
                f"the records do not match the latest checkpoint (size {size}): run 'nomyo-audit log verify'"
            )
        proof = inclusion_proof(leaves, record.seq)
        lines = [
            "c2sp.org/tlog-proof@v1",
            f"extra {base64.b64encode(record.data).decode()}",
            f"index {record.seq}",
        ]
        lines += [base64.b64encode(h).decode() for h in proof]
        return "\n".join(lines) + "\n\n" + note

    def record_bytes(self, payload_id: str) -> bytes | None:
        record = self.store.find(payload_id)
        return record.data if record else None


class _Verification:
    """One run of :meth:`AuditLog.verify`: the record pass, then the checkpoint pass."""

    def __init__(
        self,
        log: AuditLog,
        public_key: Ed25519PublicKey | None,
        progress: Callable[[int], None] | None,
        external: list[str],
    ) -> None:
        self.log = log
        self.store = log.store
        self.explicit_key = public_key
        self.key = public_key or log.public_key()
        self.progress = progress
        self.external = external
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.roots: dict[int, bytes] = {}
        self.frontier = Frontier()

    def run(self) -> VerifyReport:
        checkpoint_rows: list[tuple[Any, ...]] = []
        try:
            if (status := self.store.integrity_check()) != "ok":
                self.problems.append(f"the SQLite file is damaged: {status}")
            self._metadata()
            checkpoint_rows = self.store.checkpoint_rows()
            self._records(self._sizes_wanted(checkpoint_rows))
        except IntegrityError as exc:
            self.problems.append(str(exc))
        report = VerifyReport(self.frontier.size, self.frontier.root(), len(checkpoint_rows))
        self._checkpoints(checkpoint_rows, report)
        self._external(report)
        report.problems = _dedupe(self.problems)
        report.notes = _dedupe(self.notes)
        return report

    def _metadata(self) -> None:
        for name in ("salt", "origin"):
            if not self.store.meta(name):
                self.problems.append(f"the log's {name} is missing (deleted?)")

    def _sizes_wanted(self, rows: list[tuple[Any, ...]]) -> set[int]:
        sizes = {row[1] for row in rows if isinstance(row[1], int)}
        for note in self.external:
            with suppress(NoteError):
                sizes.add(parse_checkpoint(note)[0].size)
        return sizes

    def _records(self, checkpointed: set[int]) -> None:
        store, problems, frontier = self.store, self.problems, self.frontier
        saved = store.saved_frontier()
        roots = self.roots
        roots[0] = frontier.root()
        saved_root = frontier.root() if saved.size == 0 else None
        check = _ColumnCheck(store.meta("time_column") == _TIME_COLUMN_EXACT)
        expected = 0
        sha256, append, progress = hashlib.sha256, frontier.append, self.progress
        for seq, payload_id, moment, data, stored_leaf in store.scan():
            if type(data) is not bytes:
                if len(problems) < 20:
                    kind = {str: "TEXT", int: "INTEGER", float: "REAL"}.get(type(data), "NULL")
                    problems.append(f"record {seq}: its bytes are stored as {kind}, not a BLOB (altered)")
                data = data.encode() if isinstance(data, str) else str(data).encode()
            leaf = sha256(b"\x00" + data).digest()
            # "seq" sorts after "metadata", so the marker is near the end: rfind finds it fast
            bad = seq != expected or leaf != stored_leaf or data.rfind(b'"seq":%d,' % seq) < 0
            problem = _check_record(seq, data, stored_leaf, leaf, expected) if bad else None
            if problem and len(problems) < 20:
                problems.append(problem)
            if (column := check.problem(seq, data, payload_id, moment)) and len(problems) < 20:
                problems.append(column)
            append(leaf)
            expected = seq + 1 if isinstance(seq, int) else expected + 1
            if frontier.size in checkpointed:
                roots[frontier.size] = frontier.root()
            if frontier.size == saved.size:
                saved_root = frontier.root()
            if progress is not None and not frontier.size & 4095:
                progress(frontier.size)
        if progress is not None:
            progress(frontier.size)
        if saved.size > frontier.size:
            problems.append(_truncated(saved.size, frontier.size))
        elif saved_root != saved.root():
            problems.append(f"the log's saved state does not match records 0..{saved.size - 1}")

    def _checkpoints(self, rows: list[tuple[Any, ...]], report: VerifyReport) -> None:
        key, problems = self.key, self.problems
        if key is None:
            if rows:
                problems.append("no public key to check checkpoint signatures with (pass --key)")
            return
        others: Counter[str] = Counter()
        trusted_roots: dict[int, set[bytes]] = {}
        latest: VerifiedCheckpoint | None = None
        previous = 0
        for _, size, root, note, created in rows:
            where = f"checkpoint at size {size}"
            if not isinstance(note, str) or not isinstance(size, int) or not isinstance(root, bytes):
                problems.append(f"{where}: its row has the wrong types (altered)")
                continue
            try:
                if not signed_by(note, key):
                    for signer in signer_ids(note):
                        others[signer] += 1
                    continue
                parsed = verify_checkpoint(note, key)
            except NoteError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if (parsed.size, parsed.root) != (size, root):
                problems.append(f"{where}: the signed note and the stored row differ")
            trusted_roots.setdefault(parsed.size, set()).add(parsed.root)
            if len(trusted_roots[parsed.size]) > 1:
                problems.append(f"{where}: two checkpoints of this size with different roots")
            if not self._binds_this_log(parsed, where):
                continue
            if size > self.frontier.size:
                problems.append(f"{where}: the log has only {self.frontier.size} records (truncated)")
                continue
            if self.roots.get(size) != parsed.root:
                problems.append(f"{where}: its root does not match records 0..{size - 1}")
                continue
            if size < previous:
                problems.append(f"{where}: smaller than the checkpoint before it ({previous}): it shrank")
            previous = max(previous, size)
            if latest is None or size >= latest.size:
                latest = _verified(parsed, note, key, created)
        if self.explicit_key is not None and latest is None:
            problems.append(
                f"no checkpoint in the log verifies with the key {key_fingerprint(key)[:16]}...: "
                "the log is not signed by that key (checkpoints deleted, or never made)"
            )
        report.checkpoint = latest
        report.other_signers = dict(others)
        if others:
            self.notes.append(
                f"{sum(others.values())} checkpoint(s) signed by other keys, not trusted: "
                + ", ".join(f"{name} ({n})" for name, n in others.items())
            )

    def _binds_this_log(self, parsed: Checkpoint, where: str) -> bool:
        origin, salt = self.store.meta("origin"), self.store.meta("salt")
        if origin is None or parsed.origin != origin.decode("utf-8", "replace"):
            self.problems.append(f"{where}: signed for origin {parsed.origin}, the log's origin differs")
            return False
        commitment = parsed.extension(SALT_EXTENSION)
        if commitment is None:
            self.notes.append(f"{where}: an older checkpoint, it does not sign the digest salt")
        elif salt is None or commitment != salt_commitment(salt):
            self.problems.append(f"{where}: the log's digest salt is not the one the checkpoint signed")
            return False
        return True

    def _external(self, report: VerifyReport) -> None:
        for number, note in enumerate(self.external, 1):
            where = f"the checkpoint kept elsewhere (#{number})"
            if self.key is None:
                self.problems.append(f"{where}: no public key to check its signature with (pass --key)")
                continue
            try:
                parsed = verify_checkpoint(note, self.key)
            except NoteError as exc:
                self.problems.append(f"{where}: {exc}")
                continue
            report.external += 1
            if not self._binds_this_log(parsed, where):
                continue
            if parsed.size > self.frontier.size:
                self.problems.append(
                    f"{where}: it covers {parsed.size} records, the log has {self.frontier.size} "
                    "(rolled back or truncated)"
                )
            elif self.roots.get(parsed.size) != parsed.root:
                self.problems.append(
                    f"{where}: records 0..{parsed.size - 1} do not match its root (rewritten or forked)"
                )


def _verified(parsed: Checkpoint, note: str, key: Ed25519PublicKey, created: Any) -> VerifiedCheckpoint:
    from ._records import rfc3339

    signed_time = parsed.extension(TIME_EXTENSION)
    if signed_time is None and isinstance(created, (int, float)):
        moment: str | None = rfc3339(float(created))
    else:
        moment = signed_time
    return VerifiedCheckpoint(
        parsed.size, parsed.root, moment, signed_time is not None, key_fingerprint(key), note
    )


def _fingerprint_raw(raw: bytes) -> str:
    try:
        return key_fingerprint(Ed25519PublicKey.from_public_bytes(raw))[:16] + "..."
    except ValueError:
        return "an unreadable key"


def _check_record(seq: int, data: bytes, stored_leaf: bytes, leaf: bytes, expected: int) -> str | None:
    """What is wrong with a row that failed the fast check, in words that name it."""
    if seq != expected:
        return _missing(expected, seq)
    if leaf != stored_leaf:
        return f"record {seq}: its bytes do not match its leaf hash (altered)"
    if b'"seq":%d,' % seq not in data:
        return f"record {seq}: its bytes say another position (moved)"
    return None


def _dedupe(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


def _raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def parse_tlog_proof(text: str) -> tuple[bytes | None, int, list[bytes], str]:
    """(record bytes, index, hashes, checkpoint note) from a tlog-proof."""
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines or lines[0] != "c2sp.org/tlog-proof@v1":
        raise IntegrityError("not a c2sp.org/tlog-proof@v1 proof")
    extra: bytes | None = None
    position = 1
    try:
        if lines[position].startswith("extra "):
            extra = base64.b64decode(lines[position][6:], validate=True)
            position += 1
        if not lines[position].startswith("index "):
            raise IntegrityError("tlog-proof: missing index line")
        index = int(lines[position][6:])
        hashes = [base64.b64decode(line, validate=True) for line in lines[position + 1 :]]
    except (IndexError, ValueError) as exc:
        raise IntegrityError(f"tlog-proof: malformed ({exc})") from None
    return extra, index, hashes, note


def verify_tlog_proof(text: str, public_key: Ed25519PublicKey, record: bytes | None = None) -> dict[str, Any]:
    """Check a tlog-proof offline: checkpoint signature, then inclusion of the record's leaf."""
    from ._merkle import ProofError, verify_inclusion

    extra, index, hashes, note = parse_tlog_proof(text)
    data = record if record is not None else extra
    if data is None:
        raise IntegrityError("tlog-proof carries no record; pass the record bytes")
    try:
        checkpoint = verify_checkpoint(note, public_key)
        verify_inclusion(leaf_hash(data), index, checkpoint.size, hashes, checkpoint.root)
    except (NoteError, ProofError) as exc:
        raise IntegrityError(f"tlog-proof does not verify: {exc}") from None
    return {"index": index, "size": checkpoint.size, "origin": checkpoint.origin}
