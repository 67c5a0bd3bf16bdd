"""The tamper-evident audit log: records as Merkle leaves, signed checkpoints, proofs.

Storage sits behind :class:`LogStore`, a small interface with one backend,
:class:`SQLiteStore`: one file, WAL, ``synchronous=FULL``, one ``BEGIN
IMMEDIATE`` transaction per append, so threads and processes append to one log
and an acknowledged record survives a crash. A server database can be added
as another store without touching the Merkle, checkpoint or report code.

Rules :class:`AuditLog` keeps:

* record ``n`` is the ``n``-th leaf (0-based) and says ``"seq": n`` in its own
  bytes, so a deleted, inserted or reordered row is named by its position;
* the frontier (compact range) is derived data: it is saved in the appending
  transaction every :data:`FRONTIER_SAVE_EVERY` records and at each checkpoint,
  and rebuilt from the saved one plus the (fewer than that) leaves after it, so
  the root at the current size is always cheap and an append writes no extra page;
* checkpoints are C2SP signed notes over (origin, size, root), all kept;
  with a key configured one is made every ``checkpoint_every`` records or
  ``checkpoint_interval`` seconds, in the appending transaction.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import IntegrityError, NomyoAuditError
from .merkle import Frontier, inclusion_proof, leaf_hash
from .note import Checkpoint, NoteError, parse_checkpoint, sign_checkpoint, verify_checkpoint

__all__ = [
    "AuditLog",
    "IntegrityError",
    "LogError",
    "LogStore",
    "SQLiteStore",
    "StoredRecord",
    "VerifyReport",
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


#: How often (in records) the frontier is saved; between saves it is rebuilt from the newer leaves.
FRONTIER_SAVE_EVERY = 64


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
    def scan(self) -> Iterator[tuple[int, bytes, bytes]]: ...
    def find(self, payload_id: str) -> StoredRecord | None: ...
    def frontier(self) -> Frontier: ...
    def saved_frontier(self) -> Frontier: ...
    def add_checkpoint(self, size: int, root: bytes, note: str) -> None: ...
    def checkpoints(self) -> list[tuple[int, bytes, str]]: ...
    def meta(self, key: str) -> bytes | None: ...
    def set_meta(self, key: str, value: bytes) -> None: ...
    def integrity_check(self) -> str: ...


class SQLiteStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LogError(f"{self.path}: not an audit log ({exc})") from None
        # One connection serves this process's threads: one transaction at a time on it.
        # Other processes have their own connections; SQLite's locks order them.
        self._lock = threading.Lock()
        self._current = Frontier()  # as of this connection's last look; a copy is handed out

    def close(self) -> None:
        self._db.close()

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
    ) -> int:
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
            # The time column only locates records by period (a binary search over seq), so it
            # never goes back, even when the clock does; the record's own "time" is exact.
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
        """Records in order; with a period, those whose time column lies in [since, until).

        The time column never decreases along seq (see ``append``), so a period
        is a seq range found by binary search: no time index to update per append.
        """
        query, args = "SELECT seq, payload_id, time, data, leaf FROM records", []
        clauses = []
        if since is not None:
            clauses.append("seq >= ? AND time >= ?")
            args += [self._first_seq_at(since), since]
        if until is not None:
            clauses.append("seq < ? AND time < ?")
            args += [self._first_seq_at(until), until]
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with closing(self._db.execute(query + " ORDER BY seq", args)) as cursor:
            for row in cursor:
                yield StoredRecord(*row)

    def _first_seq_at(self, moment: float) -> int:
        """The first seq whose time column is at or after ``moment`` (the log's size if none)."""
        db = self._db
        row = db.execute("SELECT MAX(seq) FROM records").fetchone()
        low, high = 0, (row[0] + 1 if row and row[0] is not None else 0)
        while low < high:
            middle = (low + high) // 2
            # the nearest row at or after middle, should one be missing
            found = db.execute(
                "SELECT time FROM records WHERE seq >= ? ORDER BY seq LIMIT 1", (middle,)
            ).fetchone()
            if found is not None and found[0] < moment:
                low = middle + 1
            else:
                high = middle
        return low

    def scan(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, data, leaf) of every record in order: the lean path verification reads."""
        with closing(self._db.execute("SELECT seq, data, leaf FROM records ORDER BY seq")) as cursor:
            yield from cursor

    def find(self, payload_id: str) -> StoredRecord | None:
        row = self._db.execute(
            "SELECT seq, payload_id, time, data, leaf FROM records WHERE payload_id = ? ORDER BY seq LIMIT 1",
            (payload_id,),
        ).fetchone()
        return StoredRecord(*row) if row else None

    def frontier(self) -> Frontier:
        """The tree's right edge at the log's current size.

        Exact even when other processes appended meanwhile: their leaves are
        added to what this connection knew. A log with fewer rows than its
        saved state, or with a gap, is refused (``nomyo-audit log verify``
        says what happened). Taken under the connection's lock: a read on the
        shared connection during another thread's append would see its
        uncommitted row, and this connection remembers what it computes.
        """
        with self._lock:
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
                raise LogError(
                    f"{self.path}: the log's saved state covers {max(saved.size, known.size)} records "
                    f"but it has {size}; run 'nomyo-audit log verify'"
                )
            base = saved if saved.size > known.size else known
            known = Frontier(base.size, list(base.hashes))
            rows = db.execute("SELECT seq, leaf FROM records WHERE seq >= ? ORDER BY seq", (known.size,))
            for seq, leaf in rows:
                if seq != known.size:
                    raise LogError(
                        f"{self.path}: record {known.size} is missing; run 'nomyo-audit log verify'"
                    )
                known.append(bytes(leaf))
            self._current = known
        return Frontier(known.size, list(known.hashes))

    def _save_frontier(self, frontier: Frontier) -> None:
        """Inside the caller's transaction: what a later connection starts from."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('frontier', ?)", (frontier.to_bytes(),))

    def saved_frontier(self) -> Frontier:
        """The frontier as last saved (at a multiple of FRONTIER_SAVE_EVERY or a checkpoint)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'frontier'").fetchone()
        return Frontier.from_bytes(row[0]) if row else Frontier()

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
        rows = self._db.execute("SELECT size, root, note FROM checkpoints ORDER BY id")
        return [(int(size), bytes(root), str(note)) for size, root, note in rows]

    def meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


@dataclass
class VerifyReport:
    size: int
    root: bytes
    checkpoints: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """``AuditLog("audit.db")``: append records, checkpoint, verify, prove."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: Ed25519PrivateKey | None = None,
        origin: str | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 300.0,
        store: LogStore | None = None,
    ) -> None:
        self.store: LogStore = store if store is not None else SQLiteStore(path)
        self.path = Path(path)
        self.store.set_meta("salt", os.urandom(32))
        self.store.set_meta("origin", (origin or f"nomyo-audit.local/{self.path.stem}").encode())
        self.salt = self.store.meta("salt") or b""
        self.origin = (self.store.meta("origin") or b"").decode()
        self.key = key
        if key is not None:
            self.store.set_meta("public_key", _raw_public(key.public_key()))
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval

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
        return frontier.size, root, sign_checkpoint(Checkpoint(self.origin, frontier.size, root), self.key)

    def checkpoint(self, key: Ed25519PrivateKey | None = None) -> str:
        """Sign and keep a checkpoint at the current size."""
        signer = key or self.key
        if signer is None:
            raise LogError("a checkpoint needs a signing key (--key)")
        frontier = self.store.frontier()
        root = frontier.root()
        note = sign_checkpoint(Checkpoint(self.origin, frontier.size, root), signer)
        self.store.set_meta("public_key", _raw_public(signer.public_key()))
        self.store.add_checkpoint(frontier.size, root, note)
        return note

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.store.frontier().size

    def public_key(self) -> Ed25519PublicKey | None:
        raw = self.store.meta("public_key")
        return Ed25519PublicKey.from_public_bytes(raw) if raw else None

    def latest_checkpoint(self) -> tuple[int, bytes, str] | None:
        checkpoints = self.store.checkpoints()
        return checkpoints[-1] if checkpoints else None

    def verify(
        self,
        public_key: Ed25519PublicKey | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Recompute the tree, check every record, checkpoint and their consistency.

        Every checkpoint's root is compared with the root recomputed from the
        records at its size; two checkpoints that both match are roots of
        prefixes of one sequence, so they are consistent without a proof
        (``consistency_proof`` exports one for third parties). Problems name
        the first bad record or checkpoint. Without ``public_key``
        the key stored in the log is used, which proves nothing against
        whoever could rewrite the log: pass the key from a trusted place.
        """
        problems: list[str] = []
        if (status := self.store.integrity_check()) != "ok":
            problems.append(f"SQLite integrity check failed: {status}")
        key = public_key or self.public_key()
        checkpoints = self.store.checkpoints()
        by_size: dict[int, list[tuple[bytes, str]]] = {}
        for size, root, note in checkpoints:
            by_size.setdefault(size, []).append((root, note))
        saved = self.store.saved_frontier()
        frontier = Frontier()
        roots: dict[int, bytes] = {0: frontier.root()}
        saved_root = frontier.root() if saved.size == 0 else None
        expected = 0
        sha256, append, checkpointed = hashlib.sha256, frontier.append, by_size.keys()
        for seq, data, stored_leaf in self.store.scan():
            leaf = sha256(b"\x00" + data).digest()
            # "seq" sorts after "metadata", so the marker is near the end: rfind finds it fast
            bad = seq != expected or leaf != stored_leaf or data.rfind(b'"seq":%d,' % seq) < 0
            if (
                bad
                and len(problems) < 20
                and (problem := _check_record(seq, data, stored_leaf, leaf, expected))
            ):
                problems.append(problem)
            append(leaf)
            expected = seq + 1
            if frontier.size in checkpointed:
                roots[frontier.size] = frontier.root()
            if frontier.size == saved.size:
                saved_root = frontier.root()
            if progress is not None and frontier.size % 10000 == 0:
                progress(frontier.size)
        if saved.size > frontier.size:
            problems.append(
                f"the log's saved state says {saved.size} records, "
                f"the records make {frontier.size} (truncated)"
            )
        elif saved_root != saved.root():
            problems.append(f"the log's saved state does not match records 0..{saved.size - 1}")
        previous: tuple[int, bytes] | None = None
        for size, root, note in checkpoints:
            where = f"checkpoint at size {size}"
            try:
                parsed = verify_checkpoint(note, key) if key is not None else parse_checkpoint(note)[0]
            except NoteError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if (parsed.size, parsed.root) != (size, root):
                problems.append(f"{where}: the signed note and the stored row differ")
            if size > frontier.size:
                problems.append(f"{where}: the log has only {frontier.size} records (truncated)")
                continue
            if roots.get(size) != root:
                problems.append(f"{where}: its root does not match records 0..{size - 1}")
            if len({r for r, _ in by_size[size]}) > 1:
                problems.append(f"{where}: two checkpoints of this size with different roots")
            if previous is not None and previous[0] > size:
                problems.append(
                    f"{where}: smaller than the checkpoint before it ({previous[0]}): the log shrank"
                )
            previous = (size, root)
        if key is None and checkpoints:
            problems.append("no public key to check checkpoint signatures with (pass --key)")
        return VerifyReport(frontier.size, frontier.root(), len(checkpoints), _dedupe(problems))

    def prove(self, payload_id: str) -> str:
        """A C2SP tlog-proof (c2sp.org/tlog-proof) of the record, against the latest checkpoint."""
        record = self.store.find(payload_id)
        if record is None:
            raise LogError(f"no record for payload_id {payload_id}")
        latest = self.latest_checkpoint()
        if latest is None or latest[0] <= record.seq:
            raise LogError("no checkpoint covers this record yet: run 'nomyo-audit log checkpoint' first")
        size, _, note = latest
        leaves = [r.leaf for r, _ in zip(self.store.records(), range(size), strict=False)]
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


def _check_record(seq: int, data: bytes, stored_leaf: bytes, leaf: bytes, expected: int) -> str | None:
    """What is wrong with a row that failed the fast check, in words that name it."""
    if seq != expected:
        if seq > expected:
            return f"record {expected} is missing (next row is {seq})"
        return f"record {seq} appears twice"
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
    from .merkle import ProofError, verify_inclusion

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
