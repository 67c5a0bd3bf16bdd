"""The PostgreSQL log's sequencer: the one place positions are given, the way Trillian and Tessera do it.

Writers put records (built with seq 0) into ``pending``; the sequencer, one per log at a time
(whoever holds the session advisory lock :data:`SEQUENCER_LOCK`), takes them in batches and in
ONE transaction per batch gives each the next position (:func:`._records.with_seq`), inserts them
into ``records`` with their leaf hashes (COPY), keeps any checkpoint the holder's checkpoint
maker makes, saves the frontier, deletes the pending rows and records the acks. A batch is
committed whole or not at all, so a pending row is sequenced exactly once whatever dies when.
Every writable :class:`._postgres.PostgresStore` runs one :class:`Sequencer` thread that waits
for the lock, so when the holder stops (or its connection dies) another takes over, and pending
rows a dead writer left are sequenced by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import IntegrityError
from ._fields import record_fields
from ._merkle import Frontier, leaf_hash
from ._postgres_schema import (
    ACK_RETENTION,
    CHECKPOINT_LOCK,
    PENDING_CHANNEL,
    SEQUENCED_CHANNEL,
    SEQUENCER_LOCK,
    connect,
    psycopg_module,
    storable,
)
from ._records import with_seq
from ._store import CheckpointMaker, LogError, missing, truncated

__all__ = ["BATCH", "Sequencer", "ack_payloads", "parse_acks", "read_frontier"]

#: Most pending rows one sequencing transaction takes.
BATCH = 4000
#: Most bytes of records one batch takes (the first row always): a batch is in memory several
#: times over (rows, re-encoded records, the statement's parameters).
BATCH_BYTES = 8_000_000

_LOG = logging.getLogger("nomyo_audit.audit.postgres")


def read_frontier(conn: Any) -> tuple[Frontier, float | None]:
    """The tree's right edge at the log's current size, and the last record's time column.

    The saved frontier (every batch saves it) plus the leaves after it; a log with fewer rows
    than its saved state, or a gap, is an :class:`IntegrityError`. The frontier is read before
    the leaves, so a batch committed between the two reads only adds leaves.
    """
    raw = conn.execute("SELECT value FROM meta WHERE key = 'frontier'").fetchone()
    try:
        frontier = Frontier.from_bytes(bytes(raw[0])) if raw is not None else Frontier()
    except ValueError:
        raise IntegrityError("the log's saved state is damaged") from None
    last = conn.execute("SELECT seq, time FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    size = last[0] + 1 if last is not None else 0
    if frontier.size > size:
        raise IntegrityError(truncated(frontier.size, size))
    if size > frontier.size:
        rows = conn.execute("SELECT seq, leaf FROM records WHERE seq >= %s ORDER BY seq", (frontier.size,))
        for seq, leaf in rows:
            if seq != frontier.size:
                raise IntegrityError(missing(frontier.size, seq))
            frontier.append(bytes(leaf))
        if frontier.size != size:
            raise IntegrityError(missing(frontier.size, size))
    return frontier, (float(last[1]) if last is not None else None)


class _Batch:
    """The positions, records, acks and checkpoints of one batch: pure, no I/O."""

    def __init__(self, frontier: Frontier, last_time: float | None) -> None:
        self.frontier = Frontier(frontier.size, list(frontier.hashes))
        self.last_time = last_time
        self.records: list[tuple[int, str, float, bytes, bytes]] = []
        self.checkpoints: list[tuple[int, bytes, str, float]] = []
        self.acks: dict[str, int] = {}  # token (hex) -> position, -1: refused

    def sequence(
        self, rows: list[Any], maker: CheckpointMaker | None, checkpointed: float | None, now: float
    ) -> None:
        """Give each pending row the next position, in id order; run the checkpoint maker after each."""
        frontier, last_time = self.frontier, self.last_time
        for _, token, payload_id, moment, pending_data, _, _, sequenced in rows:
            if sequenced is not None:  # its token has a position (a resubmission): the same record again
                continue
            if len(token) != TOKEN_BYTES:  # no writer of ours: its ack would overflow the NOTIFY payload
                continue
            seq = frontier.size
            try:
                data = with_seq(bytes(pending_data), seq)
            except ValueError:
                self.acks[bytes(token).hex()] = -1  # not a record (altered in pending): refused
                continue
            fields = record_fields(data)  # the columns mirror the bytes, whatever pending's columns say
            if fields is None or not storable(fields[0]):  # verify (or the insert) would fail at it forever
                self.acks[bytes(token).hex()] = -1
                continue
            payload_id, moment = fields
            last_time = max(moment, last_time) if last_time is not None else moment
            leaf = leaf_hash(data)
            self.records.append((seq, payload_id, last_time, data, leaf))
            frontier.append(leaf)
            self.acks[bytes(token).hex()] = seq
            if maker is not None and (checkpoint := maker(frontier, checkpointed)) is not None:
                self.checkpoints.append((checkpoint.size, checkpoint.root, checkpoint.note, now))
                checkpointed = now
        self.last_time = last_time


def ack_payloads(acks: dict[str, int]) -> list[str]:
    """NOTIFY payloads (under PostgreSQL's 8000 bytes) telling every writer its tokens' positions.

    ``<first seq> <token>,<token>,...``: consecutive positions from the first, in order; a token
    marked ``-`` was refused and takes no position. :func:`parse_acks` reads them.
    """
    payloads: list[str] = []
    chunk: list[str] = []
    first = -1
    for token, seq in acks.items():
        if first < 0 and seq >= 0:
            first = seq
        chunk.append(token if seq >= 0 else f"-{token}")
        if len(chunk) == _ACKS_PER_PAYLOAD:
            payloads.append(f"{first} {','.join(chunk)}")
            chunk, first = [], -1
    if chunk:
        payloads.append(f"{first} {','.join(chunk)}")
    return payloads


def parse_acks(payload: str) -> dict[str, int]:
    """The positions one :func:`ack_payloads` payload gives (a malformed one gives none)."""
    first, _, tokens = payload.partition(" ")
    try:
        seq = int(first)
    except ValueError:
        return {}
    acks: dict[str, int] = {}
    for token in tokens.split(","):
        if token.startswith("-"):
            acks[token[1:]] = -1
        else:
            acks[token] = seq
            seq += 1
    return acks


#: A writer's token: 16 random bytes (33 characters a token in a payload).
TOKEN_BYTES = 16

#: 33 characters a token: 230 tokens keep a payload under 8000 bytes.
_ACKS_PER_PAYLOAD = 230


#: Take a batch: delete it from pending and return it, with the last position and checkpoint time,
#: and the position each row's token already has (acks), if any.
_TAKE = """
WITH taken AS (
    DELETE FROM pending WHERE id IN (
        SELECT id FROM (
            SELECT id, sum(octet_length(data)) OVER (ORDER BY id) - octet_length(data) AS before
            FROM (SELECT id, data FROM pending ORDER BY id LIMIT %d) AS head
        ) AS sized WHERE before < %d
    )
    RETURNING id, token, payload_id, time, data
)
SELECT taken.*, last.seq, latest.created, done.seq FROM taken
LEFT JOIN (SELECT seq FROM records ORDER BY seq DESC LIMIT 1) AS last ON true
LEFT JOIN (SELECT created FROM checkpoints ORDER BY id DESC LIMIT 1) AS latest ON true
LEFT JOIN acks AS done ON done.token = taken.token
"""

#: Write a batch: records, checkpoints, acks, the frontier, and the notifications, in one statement.
_WRITE = """
WITH r AS (
    INSERT INTO records (seq, payload_id, time, data, leaf)
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::bytea[], %b::bytea[])
), c AS (
    INSERT INTO checkpoints (size, root, note, created)
    SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::text[], %b::float8[])
), a AS (
    INSERT INTO acks (token, seq, at) SELECT t, s, %b FROM unnest(%b::bytea[], %b::bigint[]) AS x(t, s)
), f AS (
    INSERT INTO meta (key, value) VALUES ('frontier', %b)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
)
SELECT pg_notify(%b, payload) FROM unnest(%b::text[]) AS payload
"""


class Sequencer(threading.Thread):
    """Waits for the sequencer lock, then sequences pending rows until stopped.

    ``maker`` returns the checkpoint maker of the holder's log (None: no automatic checkpoint);
    ``sequenced`` is told, after each commit, the tokens it sequenced and their positions (so
    writers in this process need not ask the database). ``failure`` holds why the log could not
    be sequenced (a damaged log), for the writers waiting in this process.
    """

    def __init__(
        self,
        url: str,
        display: str,
        maker: Callable[[], CheckpointMaker | None],
        sequenced: Callable[[dict[str, int]], None],
    ) -> None:
        super().__init__(name="nomyo-audit-sequencer", daemon=True)
        self.url, self.display = url, display
        self.maker, self.sequenced = maker, sequenced
        self.stopping = threading.Event()
        self.holding = threading.Event()
        self.failure: str | None = None
        self._cleaned = 0.0

    def stop(self) -> None:
        """Finish the batch under way, release the lock and end the thread."""
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()

    def run(self) -> None:
        psycopg = psycopg_module()
        pause = 0.1
        while not self.stopping.is_set():
            try:
                with connect(self.url, self.display) as conn:
                    pause = 0.1
                    while not self.stopping.is_set():
                        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (SEQUENCER_LOCK,)).fetchone()
                        if got and got[0]:
                            self._hold(conn)
                        else:
                            self.stopping.wait(0.25)
            except (LogError, psycopg.Error) as exc:
                _LOG.warning("%s: sequencer connection lost, retrying (%s)", self.display, type(exc).__name__)
            except IntegrityError as exc:
                self.failure = str(exc)
                _LOG.error("%s: cannot sequence: %s", self.display, exc)
                pause = 1.0
            except Exception as exc:  # a checkpoint maker's bug: never leave the log without a sequencer
                _LOG.exception("%s: sequencing failed (%s), retrying", self.display, type(exc).__name__)
                pause = 1.0
            finally:
                self.holding.clear()
            self.stopping.wait(pause)
            pause = min(pause * 2, 2.0)

    def _hold(self, conn: Any) -> None:
        """Holding the lock: sequence batches until stopped; the lock goes with the connection."""
        with conn.transaction():
            frontier, last_time = read_frontier(conn)
        conn.execute(f"LISTEN {PENDING_CHANNEL}")  # only the holder: every writer's commit notifies
        self.failure = None
        self.holding.set()
        while not self.stopping.is_set():
            done = self._batch(conn, frontier, last_time)
            if done is None:  # idle: a writer's commit notifies; the timeout only bounds a stop
                for _ in conn.notifies(timeout=0.5, stop_after=1):
                    pass
                continue
            frontier, last_time = done
        conn.execute(f"UNLISTEN {PENDING_CHANNEL}")
        conn.execute("SELECT pg_advisory_unlock(%s)", (SEQUENCER_LOCK,))

    def _batch(
        self, conn: Any, frontier: Frontier, last_time: float | None
    ) -> tuple[Frontier, float | None] | None:
        """One batch in one transaction, three round trips; None when nothing was pending.

        Few statements, not a pipeline of many: each wait for the server hands the GIL to this
        process's appending threads, and taking it back is what a batch waits for most. BEGIN
        goes with the take (one simple query), the write is one statement, then COMMIT.
        """
        maker = self.maker()
        now = time.time()
        done = False
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"BEGIN; {_TAKE % (BATCH, BATCH_BYTES)}")
                cursor.nextset()
                rows = cursor.fetchall()
            self._clean_acks(conn, now)
            if not rows:
                conn.execute("COMMIT")
                done = True
                return None
            batch = self._sequence(conn, rows, frontier, last_time, maker, now)
            conn.execute("COMMIT")
            done = True
        finally:
            if not done and not conn.closed:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
        self.sequenced(batch.acks)
        return batch.frontier, batch.last_time

    def _sequence(
        self,
        conn: Any,
        rows: list[Any],
        frontier: Frontier,
        last_time: float | None,
        maker: CheckpointMaker | None,
        now: float,
    ) -> _Batch:
        """Inside the batch's transaction: positions, leaves, checkpoints, and the one write."""
        rows.sort()
        top, checkpointed = rows[0][5], rows[0][6]
        if (top + 1 if top is not None else 0) != frontier.size:  # someone else wrote: read the table
            frontier, last_time = read_frontier(conn)
        batch = _Batch(frontier, last_time)
        batch.sequence(rows, maker, float(checkpointed) if checkpointed is not None else None, now)
        if batch.checkpoints:  # kept in size order with log checkpoint's (PostgresStore.add_checkpoint)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK,))
        records = tuple(list(column) for column in zip(*batch.records, strict=True)) or ([],) * 5
        checkpoints = tuple(list(column) for column in zip(*batch.checkpoints, strict=True)) or ([],) * 4
        conn.execute(
            _WRITE,
            (
                *records,
                *checkpoints,
                now,
                [bytes.fromhex(token) for token in batch.acks],
                list(batch.acks.values()),
                batch.frontier.to_bytes(),
                SEQUENCED_CHANNEL,
                ack_payloads(batch.acks),
            ),
        ).fetchall()
        return batch

    def _clean_acks(self, conn: Any, now: float) -> None:
        """Forget acks older than :data:`ACK_RETENTION` (at most once a minute)."""
        if now - self._cleaned >= 60.0:
            conn.execute("DELETE FROM acks WHERE at < %s", (now - ACK_RETENTION,))
            self._cleaned = now
