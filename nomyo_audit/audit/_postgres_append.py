"""Appending to the PostgreSQL log: group commit into ``pending``, then a shared wait for positions.

The threads of one process that append at the same time share the work: each hands its record to
the :class:`Appender` and waits; one submit thread puts everything queued into ``pending`` (COPY,
with the blobs not kept yet) in one transaction, and one ack thread asks, after each sequenced
batch (LISTEN/NOTIFY, polled as a fallback), which of the waiting tokens got a position. Each
record carries a random 16-byte token: when a connection dies around a commit, the submit thread
reconnects and looks the tokens up, so a record is put in ``pending`` exactly once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import IntegrityError
from ._blobs import is_digest
from ._postgres_schema import PENDING_CHANNEL, SEQUENCED_CHANNEL, SEQUENCER_LOCK, connect, psycopg_module
from ._postgres_sequencer import parse_acks
from ._store import LogError

__all__ = ["Appender"]

#: Most records one submit transaction puts into ``pending``.
GROUP = 2000
#: Seconds an append waits for its position before giving up (its record stays pending).
WAIT_LIMIT = 120.0
#: Seconds the submit thread keeps trying to reach the database before failing the appends.
RECONNECT_LIMIT = 30.0
#: Blob digests known to be kept (not sent again), at most this many.
KNOWN_BLOBS = 4096
#: Seconds without news after which the waiting appends are looked up in the acks table.
POLL_AFTER = 1.0


_SUBMIT = """
WITH b AS (
    INSERT INTO blobs (sha256, data) SELECT * FROM unnest(%b::text[], %b::bytea[])
    ON CONFLICT (sha256) DO NOTHING
), p AS (
    INSERT INTO pending (token, payload_id, time, data)
    SELECT * FROM unnest(%b::bytea[], %b::text[], %b::float8[], %b::bytea[])
)
SELECT pg_notify(%b, '')
"""


class _Waiter:
    __slots__ = ("blobs", "data", "done", "error", "payload_id", "seq", "submitted", "time", "token")

    def __init__(self, payload_id: str, moment: float, data: bytes, blobs: Mapping[str, bytes]) -> None:
        self.token: str | None = None  # given by the submit thread, a group's at once
        self.payload_id, self.time, self.data, self.blobs = payload_id, moment, data, blobs
        self.seq = -1
        self.submitted = False  # committed into pending (as far as this process knows)
        self.error: Exception | None = None
        self.done = threading.Event()


def check_blobs(blobs: Mapping[str, bytes] | None) -> Mapping[str, bytes]:
    """The blobs, each key checked to be the SHA-256 of its bytes (ValueError: a caller's bug)."""
    for digest, data in (blobs or {}).items():
        if not is_digest(digest) or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError("a blob's key must be the SHA-256 (lowercase hex) of its bytes")
    return blobs or {}


class Appender:
    """The submit and ack threads of one store (started at the first append)."""

    def __init__(self, url: str, display: str, failure: Callable[[], str | None]) -> None:
        self.url, self.display, self.failure = url, display, failure
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._awaiting: dict[str, _Waiter] = {}  # by token (hex)
        self._known_blobs: dict[str, None] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    def append(self, payload_id: str, moment: float, data: bytes, blobs: Mapping[str, bytes]) -> int:
        """Put the record in ``pending`` and wait until it has its position, durable; return it."""
        waiter = _Waiter(payload_id, moment, data, blobs)
        with self._cond:
            if self._closed:
                raise LogError(f"{self.display}: the log is closed")
            if not self._threads:
                self._start()
            self._queue.append(waiter)
            self._cond.notify_all()
        deadline = time.monotonic() + WAIT_LIMIT
        while not waiter.done.wait(0.25):
            if (failure := self.failure()) is not None:
                self._fail([waiter], IntegrityError(f"{self.display}: {failure}"))
            elif time.monotonic() > deadline:
                self._fail([waiter], LogError(
                    f"{self.display}: no sequencer gave the record a position within {WAIT_LIMIT:.0f} s; "
                    "it stays pending and will be sequenced when one runs"
                ))
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    def resolve(self, acks: Mapping[str, int]) -> None:
        """Tell the waiting appends their positions (-1: the sequencer refused the record)."""
        with self._cond:
            for token, seq in acks.items():
                waiter = self._awaiting.pop(token, None)
                if waiter is None:
                    continue
                if seq < 0:
                    waiter.error = LogError(f"{self.display}: the sequencer refused the record (not one)")
                waiter.seq = seq
                waiter.done.set()

    def _fail(self, waiters: list[_Waiter], error: Exception) -> None:
        with self._cond:
            for waiter in waiters:
                if waiter.token is not None and self._awaiting.pop(waiter.token, None) is None:
                    continue  # answered meanwhile
                if waiter.token is None and waiter in self._queue:
                    self._queue.remove(waiter)
                waiter.error = error
                waiter.done.set()

    def close(self, patience: float = 10.0) -> None:
        """Stop the threads once what is queued is submitted and answered (or ``patience`` ran out)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + patience
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = list(self._awaiting.values()) + self._queue
        self._fail(left, LogError(f"{self.display}: the log was closed before the record had its position"))

    def _start(self) -> None:
        for target, name in ((self._submit_loop, "submit"), (self._ack_loop, "acks")):
            thread = threading.Thread(target=target, name=f"nomyo-audit-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- submit thread -------------------------------------------------------------------------

    def _submit_loop(self) -> None:
        psycopg = psycopg_module()
        conn: Any = None
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    break
                group, self._queue[:GROUP] = self._queue[:GROUP], []
            self._give_tokens(group)
            try:
                if conn is None:
                    conn = self._connect()
                self._insert(conn, group)
            except (psycopg.Error, LogError):
                if conn is not None:
                    conn.close()
                conn = self._recover(group)
        if conn is not None:
            conn.close()

    def _give_tokens(self, group: list[_Waiter]) -> None:
        """Random 16-byte tokens for the group's new records (one read of the OS's randomness)."""
        raw = os.urandom(16 * len(group))
        with self._cond:
            for index, waiter in enumerate(group):
                if waiter.token is None and not waiter.done.is_set():
                    waiter.token = raw[16 * index : 16 * index + 16].hex()
                    self._awaiting[waiter.token] = waiter
            self._cond.notify_all()  # the ack thread sleeps while nothing awaits

    def _connect(self) -> Any:
        """The submit connection. Not synchronous: an append is acknowledged only after the
        sequencer's durable commit, which flushes these earlier commits too; a row a crash lost
        before that was never acknowledged, and is submitted again (:meth:`_resubmit_lost`)."""
        conn = connect(self.url, self.display)
        conn.execute("SET synchronous_commit = off")
        return conn

    def _insert(self, conn: Any, group: list[_Waiter]) -> None:
        blobs: dict[str, bytes] = {}
        for waiter in group:
            for digest, data in waiter.blobs.items():
                if digest not in self._known_blobs:
                    blobs[digest] = data
        group = [waiter for waiter in group if waiter.token is not None and not waiter.done.is_set()]
        conn.execute(  # one statement, one round trip: the blobs and the records together or neither
            _SUBMIT,
            (
                list(blobs),
                [bytes(data) for data in blobs.values()],
                [bytes.fromhex(w.token) for w in group if w.token is not None],
                [w.payload_id for w in group],
                [w.time for w in group],
                [w.data for w in group],
                PENDING_CHANNEL,
            ),
        )
        for waiter in group:
            waiter.submitted = True
        for digest in blobs:
            self._known_blobs[digest] = None
        while len(self._known_blobs) > KNOWN_BLOBS:
            del self._known_blobs[next(iter(self._known_blobs))]

    def _recover(self, group: list[_Waiter]) -> Any:
        """After a failed submit: reconnect, keep the records that did commit, submit the others once."""
        psycopg = psycopg_module()
        deadline = time.monotonic() + RECONNECT_LIMIT
        pause = 0.05
        while time.monotonic() < deadline:
            conn = None
            try:
                conn = self._connect()
                open_tokens = [w.token for w in group if w.token is not None and not w.done.is_set()]
                there = _present(conn, open_tokens)
                missing = [w for w in group if not w.done.is_set() and w.token not in there]
                for waiter in group:
                    waiter.submitted = waiter.token in there
                if missing:
                    self._insert(conn, missing)
                return conn
            except (psycopg.Error, LogError):
                if conn is not None:
                    conn.close()
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        self._fail(group, LogError(f"{self.display}: lost the connection to the audit log database"))
        return None

    # -- ack thread ----------------------------------------------------------------------------

    def _ack_loop(self) -> None:
        """Positions from the sequencer's NOTIFY payloads; the acks table when none came for a while."""
        psycopg = psycopg_module()
        conn: Any = None
        holder: int | None = None  # the backend pid of the sequencer's session, as last looked up
        quiet_since = time.monotonic()
        while True:
            with self._cond:
                while not self._awaiting and not self._closed:
                    self._cond.wait()
                    quiet_since = time.monotonic()
                if not self._awaiting:
                    break
            try:
                if conn is None:
                    conn = connect(self.url, self.display)
                    conn.execute(f"LISTEN {SEQUENCED_CHANNEL}")
                    self._resubmit_lost(conn)  # after a dropped connection: the server may have restarted
                    quiet_since = 0.0  # notifications may have been missed: look in the table now
                if time.monotonic() - quiet_since >= POLL_AFTER:
                    self._poll(conn)
                    quiet_since = time.monotonic()
                # Taken as a list (the generator holds the connection, and _holder needs it), but
                # returned at the first arrival: waiting out the timeout would delay every ack.
                for notify in list(conn.notifies(timeout=0.2, stop_after=1)):
                    if notify.pid != holder and (holder := _holder(conn)) != notify.pid:
                        continue  # not the sequencer's session: anyone may NOTIFY (the poll still finds it)
                    self.resolve(parse_acks(notify.payload))
                    quiet_since = time.monotonic()
            except (psycopg.Error, LogError):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def _resubmit_lost(self, conn: Any) -> None:
        """Submit again what is in neither pending nor acks (lost in a server crash, never acknowledged)."""
        with self._cond:
            sent = {token: w for token, w in self._awaiting.items() if w.submitted and not w.done.is_set()}
        if not sent:
            return
        there = _present(conn, list(sent))
        lost = [waiter for token, waiter in sent.items() if token not in there]
        if lost:
            with self._cond:
                for waiter in lost:
                    waiter.submitted = False
                self._queue.extend(lost)
                self._cond.notify_all()

    def _poll(self, conn: Any) -> None:
        with self._cond:
            tokens = [bytes.fromhex(token) for token in self._awaiting]
        rows = conn.execute("SELECT token, seq FROM acks WHERE token = ANY(%s)", (tokens,)).fetchall()
        self.resolve({bytes(token).hex(): seq for token, seq in rows})


#: The backend holding the sequencer lock (a bigint advisory key shows as classid, objid, objsubid 1).
_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
    " AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _holder(conn: Any) -> int | None:
    """The pid of the session holding the sequencer lock now (None: nobody holds it)."""
    row = conn.execute(_HOLDER, (SEQUENCER_LOCK >> 32, SEQUENCER_LOCK & 0xFFFFFFFF)).fetchone()
    return int(row[0]) if row is not None else None


def _present(conn: Any, tokens: list[str]) -> set[str]:
    """Which of these tokens (hex) are in pending or acks: their records were committed."""
    raw = [bytes.fromhex(token) for token in tokens]
    rows = conn.execute(
        "SELECT token FROM pending WHERE token = ANY(%s) "
        "UNION ALL SELECT token FROM acks WHERE token = ANY(%s)",
        (raw, raw),
    )
    return {bytes(row[0]).hex() for row in rows}
