"""The PostgreSQL backend of the log's storage (:class:`PostgresStore`): one log shared by many processes.

The same rows as :class:`._sqlite.SQLiteStore`, so records, tree, checkpoints, proofs and reports
are the same bytes. What differs is how a record gets its position: appends go into ``pending``
(:mod:`._postgres_append`, group commit) and one sequencer per log (:mod:`._postgres_sequencer`)
moves them into ``records`` in batches, Trillian/Tessera style; ``append`` returns once its record
is durable with its position. Reads stream with server-side cursors on their own connections, so
``log verify`` of a large log holds one batch of rows at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import IntegrityError
from ._fields import TIME_COLUMN_EXACT
from ._merkle import Frontier
from ._postgres_append import Appender, check_blobs
from ._postgres_schema import (
    CHECKPOINT_LOCK,
    CREATE_LOCK,
    PENDING_CHANNEL,
    SCHEMA,
    connect,
    database_errors,
    psycopg_module,
    schema_problem,
    storable,
)
from ._postgres_sequencer import Sequencer, read_frontier
from ._store import (
    CheckpointMaker,
    CheckpointRow,
    LogError,
    StoredCheckpoint,
    StoredRecord,
    checked_records,
    read_saved_frontier,
)

__all__ = ["PostgresStore", "database_name"]

_T = TypeVar("_T")

#: Rows a streaming read fetches at a time.
FETCH = 5000


def database_name(url: str) -> str:
    """The database a URL names (its path), or ``log`` when it names none."""
    try:
        name = unquote(urlsplit(url).path.lstrip("/"))
    except ValueError:
        return "log"
    return name or "log"


class PostgresStore:
    """A log in a PostgreSQL database. ``readonly=True`` uses a read-only session and creates nothing.

    Raises :class:`LogError` when the database cannot be reached (no server, no such database,
    wrong credentials: the message never holds the password), is not a log, or (read-only) is
    empty. A writable store makes the tables when the database has none, and runs a sequencer
    thread (which sequences only while it holds the log's sequencer lock) until :meth:`close`.
    """

    def __init__(self, url: str, *, readonly: bool = False, display: str | None = None) -> None:
        from ._stores import database_url, display_location

        url = database_url(url)
        self.url = url
        self.location = display if display is not None else display_location(url)
        self.readonly = readonly
        self._conn = connect(url, self.location, readonly=readonly)
        self._reconnecting = threading.Lock()
        self._closed = False
        self._maker: CheckpointMaker | None = None
        self._sequencer: Sequencer | None = None
        self._appender: Appender | None = None
        try:
            with self._errors():
                if readonly:
                    problem = schema_problem(self._db, creating=False)
                    if problem is not None:
                        raise LogError(f"{self.location}: {problem}")
                else:
                    with self._db.transaction():
                        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
                        if (problem := schema_problem(self._db, creating=True)) is not None:
                            raise LogError(f"{self.location}: {problem}")
                        self._db.execute(SCHEMA)
        except BaseException:
            self._conn.close()
            raise
        if not readonly:
            self._sequencer = Sequencer(url, self.location, lambda: self._maker, self._sequenced)
            self._sequencer.start()

    @property
    def _db(self) -> Any:
        """The main connection; one the server dropped (restart, terminated) is opened again."""
        if self._conn.closed and not self._closed:
            with self._reconnecting:
                if self._conn.closed:
                    self._conn = connect(self.url, self.location, readonly=self.readonly)
        return self._conn

    def _errors(self) -> Any:
        return database_errors(self.location, self.url)

    def _read(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)``, once more on a new connection when the server dropped this one.

        Only outside a transaction (inside :meth:`exclusive` the caller's work is lost, so the
        error stands): a statement run again on its own is the same statement.
        """
        psycopg = psycopg_module()
        with self._errors():
            idle = self._db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            try:
                return work(self._db)
            except psycopg.OperationalError:
                if not (idle and self._conn.closed and not self._closed):
                    raise
            return work(self._db)

    def _sequenced(self, acks: dict[str, int]) -> None:
        if self._appender is not None:
            self._appender.resolve(acks)

    def _failure(self) -> str | None:
        return self._sequencer.failure if self._sequencer is not None else None

    def close(self) -> None:
        """Finish this process's appends, stop its sequencer (another takes over), close."""
        if self._appender is not None:
            self._appender.close()
        if self._sequencer is not None:
            self._sequencer.stopping.set()
            if self._sequencer.holding.is_set():  # wake it from its wait for pending rows
                with contextlib.suppress(LogError):
                    self._read(lambda db: db.execute(f"NOTIFY {PENDING_CHANNEL}"))
            self._sequencer.stop()
        self._closed = True
        self._conn.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One transaction around the caller's reads and writes, serialised with other creators."""
        if self.readonly:
            raise LogError(f"{self.location}: opened read-only")
        with self._errors(), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
            yield

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> int:
        """Put ``build(0)`` into ``pending`` with its ``blobs``; return the position the sequencer gave it.

        Returns once the record is committed in ``records`` with that position (durable). The
        sequencer gives it its position with :func:`._records.with_seq`, so the stored bytes are
        ``build(seq)``. ``checkpoint`` is kept as this process's checkpoint maker: the sequencer
        calls it while this process holds the sequencer lock.
        """
        if self.readonly:
            raise LogError(f"{self.location}: opened read-only")
        if not storable(payload_id):  # else its group's submit fails, and is retried, for every record in it
            raise LogError(f"{self.location}: a payload_id with NUL or a lone surrogate cannot be stored")
        self._maker = checkpoint
        kept = check_blobs(blobs)
        data = build(0)
        if self._appender is None:
            self._appender = Appender(self.url, self.location, self._failure)
        return self._appender.append(payload_id, timestamp, data, kept)

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Keep a signed checkpoint; kept in size order (one smaller than a kept one is refused)."""
        if self.readonly:
            raise LogError(f"{self.location}: opened read-only")
        with self._errors(), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK,))
            row = self._db.execute("SELECT max(size) FROM checkpoints").fetchone()
            if row is not None and row[0] is not None and row[0] > checkpoint.size:
                raise LogError(
                    f"{self.location}: a checkpoint at size {row[0]} was kept meanwhile; run it again"
                )
            self._db.execute(
                "INSERT INTO checkpoints (size, root, note, created) VALUES (%s, %s, %s, %s)",
                (checkpoint.size, checkpoint.root, checkpoint.note, time.time()),
            )

    def set_meta(self, key: str, value: bytes, *, replace: bool = False) -> None:
        """Set metadata ``key``; an existing value is kept unless ``replace``."""
        if self.readonly:
            raise LogError(f"{self.location}: opened read-only")
        action = "UPDATE SET value = EXCLUDED.value" if replace else "NOTHING"
        query = f"INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO {action}"
        self._read(lambda db: db.execute(query, (key, bytes(value))))

    def bulk_load(
        self,
        meta: Mapping[str, bytes],
        records: Iterable[StoredRecord],
        checkpoints: Iterable[StoredCheckpoint],
        blobs: Iterable[tuple[str, bytes]],
    ) -> None:
        """Load a whole log (``log migrate``) into this empty one in one transaction, bytes unchanged.

        The records keep their positions, columns and bytes; the checkpoints their ``created``;
        the frontier is computed from the records' leaves and saved at the end. Raises
        :class:`LogError` when this log is not empty, :class:`IntegrityError` when the records
        are not 0, 1, 2... in order.
        """
        from ._postgres_load import load

        if self.readonly:
            raise LogError(f"{self.location}: opened read-only")
        with self._errors(), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK,))
            load(self._db, self.location, meta, records, checkpoints, blobs)

    # -- reading -------------------------------------------------------------------------------

    @contextmanager
    def _stream(self, query: str, params: tuple[Any, ...] = ()) -> Iterator[Iterator[tuple[Any, ...]]]:
        """Rows of ``query`` from a server-side cursor on a connection of its own (one snapshot)."""
        conn = connect(self.url, self.location, readonly=True)
        try:
            with self._errors(), conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                with conn.cursor("nomyo_audit_stream", binary=True) as cursor:
                    cursor.itersize = FETCH
                    cursor.execute(query, params)
                    yield iter(cursor)
        finally:
            conn.close()

    def scan(self) -> Iterator[tuple[Any, ...]]:
        """(seq, payload_id, time, data, leaf) of every row in order, unchecked: what verify reads.

        Streamed by a binary COPY (a third faster than a server-side cursor's fetches): one
        snapshot, rows parsed as they arrive, never the whole table in memory.
        """
        conn = connect(self.url, self.location, readonly=True)
        query = "COPY (SELECT seq, payload_id, time, data, leaf FROM records ORDER BY seq) TO STDOUT"
        query += " (FORMAT BINARY)"
        try:
            with self._errors(), conn.transaction(), conn.cursor() as cursor, cursor.copy(query) as copy:
                copy.set_types(["int8", "text", "float8", "bytea", "bytea"])
                yield from copy.rows()
        finally:
            conn.close()

    def records(self, since: float | None = None, until: float | None = None) -> Iterator[StoredRecord]:
        """Records in order, each checked against its own bytes; with a period, those in [since, until).

        The same checks as :meth:`._sqlite.SQLiteStore.records`: a missing row, a row whose
        columns disagree with its bytes, or a log shorter than its saved state raises
        :class:`IntegrityError`.
        """
        exact = self.meta("time_column") == TIME_COLUMN_EXACT
        yield from checked_records(self.scan(), exact, since, until, lambda: self.saved_frontier().size)

    def find(self, payload_id: str) -> StoredRecord | None:
        """The first record whose own bytes name ``payload_id`` (the column is checked, not trusted)."""
        for record in self.records():
            if record.payload_id == payload_id:
                return record
        return None

    def count(self) -> int:
        """The number of rows up to the highest seq (cheap; for progress lines, not for proofs)."""
        row = self._read(lambda db: db.execute("SELECT max(seq) FROM records").fetchone())
        return int(row[0]) + 1 if row and row[0] is not None else 0

    def frontier(self) -> Frontier:
        """The tree's right edge at the log's current size (IntegrityError: truncated or a gap)."""
        try:
            return self._read(lambda db: read_frontier(db)[0])
        except IntegrityError as exc:
            raise IntegrityError(f"{self.location}: {exc}") from None

    def saved_frontier(self) -> Frontier:
        """The frontier as last saved (every sequenced batch saves it)."""
        return read_saved_frontier(self.meta("frontier"), str(self.location))

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The kept checkpoints in the order they were stored (signatures are checked by verify)."""
        return [
            StoredCheckpoint(row.size, row.root, row.note, float(row.created))
            for row in self.checkpoint_rows()
        ]

    def checkpoint_rows(self) -> list[CheckpointRow]:
        """(id, size, root, note, created) as stored, unchecked."""
        query = "SELECT id, size, root, note, created FROM checkpoints ORDER BY id"
        rows = self._read(lambda db: db.execute(query).fetchall())
        return [CheckpointRow(i, s, bytes(r), n, c) for i, s, r, n, c in rows]

    def meta(self, key: str) -> bytes | None:
        """The log metadata value ``key`` (salt, origin, public_key, frontier...), or None."""
        row = self._read(lambda db: db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone())
        return bytes(row[0]) if row is not None else None

    def blob(self, sha256_hex: str) -> bytes | None:
        """The blob kept under ``sha256_hex`` as stored, or None (unchecked: the reader hashes it)."""
        query = "SELECT data FROM blobs WHERE sha256 = %s"
        row = self._read(lambda db: db.execute(query, (sha256_hex,)).fetchone())
        return bytes(row[0]) if row is not None else None

    def blobs(self) -> Iterator[tuple[Any, Any]]:
        """(key, bytes) of every kept blob as stored, unchecked: what verify reads."""
        with self._stream("SELECT sha256, data FROM blobs ORDER BY sha256") as rows:
            yield from rows

    def integrity_check(self) -> str:
        """``ok`` when the log's tables are all there (PostgreSQL checks its own pages)."""
        problem = self._read(lambda db: schema_problem(db, creating=False))
        return "ok" if problem is None else problem
