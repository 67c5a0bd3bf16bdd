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
)
from ._records import with_seq
from ._store import CheckpointMaker, LogError, missing, truncated

__all__ = ["BATCH", "Sequencer", "read_frontier"]

#: Most pending rows one sequencing transaction takes.
BATCH = 4000

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
        sequenced: Callable[[dict[bytes, int]], None],
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
                    conn.execute(f"LISTEN {PENDING_CHANNEL}")
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
        self.failure = None
        self.holding.set()
        while not self.stopping.is_set():
            done = self._batch(conn, frontier, last_time)
            if done is None:
                for _ in conn.notifies(timeout=0.05, stop_after=1):
                    pass
                continue
            frontier, last_time = done
        conn.execute("SELECT pg_advisory_unlock(%s)", (SEQUENCER_LOCK,))

    def _batch(
        self, conn: Any, frontier: Frontier, last_time: float | None
    ) -> tuple[Frontier, float | None] | None:
        """One batch in one transaction; None when nothing was pending."""
        maker = self.maker()
        made: list[tuple[int, bytes, str, float]] = []
        acks: dict[bytes, int] = {}
        now = time.time()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK,))
            self._clean_acks(conn, now)
            rows = conn.execute(
                "SELECT id, token, payload_id, time, data FROM pending ORDER BY id LIMIT %s", (BATCH,)
            ).fetchall()
            if not rows:
                return None
            last = conn.execute("SELECT seq FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            if (last[0] + 1 if last else 0) != frontier.size:  # someone else wrote: start from the table
                frontier, last_time = read_frontier(conn)
            work = Frontier(frontier.size, list(frontier.hashes))
            checkpoint_time = self._last_checkpoint(conn) if maker is not None else None
            out = []
            for _, token, payload_id, moment, pending_data in rows:
                seq = work.size
                try:
                    data = with_seq(bytes(pending_data), seq)
                except ValueError:
                    acks[bytes(token)] = -1  # not a record (altered in pending): refused, never sequenced
                    continue
                fields = record_fields(data)
                if fields is not None:
                    payload_id, moment = fields
                stamp = max(moment, last_time) if last_time is not None else moment
                last_time = stamp
                leaf = leaf_hash(data)
                out.append((seq, payload_id, stamp, data, leaf))
                work.append(leaf)
                acks[bytes(token)] = seq
                if maker is not None and (checkpoint := maker(work, checkpoint_time)) is not None:
                    made.append((checkpoint.size, checkpoint.root, checkpoint.note, now))
                    checkpoint_time = now
            with conn.cursor() as cur:
                if out:
                    with cur.copy("COPY records (seq, payload_id, time, data, leaf) FROM STDIN") as copy:
                        for row in out:
                            copy.write_row(row)
                if made:
                    cur.executemany(
                        "INSERT INTO checkpoints (size, root, note, created) VALUES (%s, %s, %s, %s)", made
                    )
                with cur.copy("COPY acks (token, seq, at) FROM STDIN") as copy:
                    for token, seq in acks.items():
                        copy.write_row((token, seq, now))
                cur.execute("DELETE FROM pending WHERE id = ANY(%s)", ([row[0] for row in rows],))
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES ('frontier', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (work.to_bytes(),),
                )
                cur.execute(f"NOTIFY {SEQUENCED_CHANNEL}")
        self.sequenced(acks)
        return work, last_time

    @staticmethod
    def _last_checkpoint(conn: Any) -> float | None:
        row = conn.execute("SELECT created FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        return float(row[0]) if row is not None else None

    def _clean_acks(self, conn: Any, now: float) -> None:
        """Forget acks older than :data:`ACK_RETENTION` (at most once a minute)."""
        if now - self._cleaned >= 60.0:
            conn.execute("DELETE FROM acks WHERE at < %s", (now - ACK_RETENTION,))
            self._cleaned = now
