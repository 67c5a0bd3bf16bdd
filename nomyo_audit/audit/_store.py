"""What the log needs from storage: the :class:`LogStore` interface and the rows it hands back.

:class:`._sqlite.SQLiteStore` and :class:`._postgres.PostgresStore` are the backends; neither
touches the Merkle, checkpoint or report code: the store keeps rows, and :mod:`._log` decides
what they mean. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..errors import IntegrityError, NomyoAuditError
from ._fields import ColumnCheck
from ._merkle import Frontier

__all__ = [
    "CheckpointMaker",
    "CheckpointRow",
    "LogError",
    "LogStore",
    "StoredCheckpoint",
    "StoredRecord",
    "checked_records",
    "missing",
    "read_saved_frontier",
    "truncated",
]


class LogError(NomyoAuditError):
    """The log cannot be opened or used as asked: missing, not a log, read-only, no key (exit 2)."""

    code = "log_error"
    exit_code = 2


@dataclass(frozen=True)
class StoredRecord:
    """One record as the log keeps it: its position, the columns its bytes name, its bytes and leaf hash."""

    seq: int
    payload_id: str
    time: float
    data: bytes
    leaf: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint kept in the log: the tree size and root it signs, the signed note itself.

    ``created`` is when the store kept it (epoch seconds; None when not known or not yet
    stored). The note is what counts: check it with :func:`nomyo_audit.audit.verify_checkpoint`
    or :meth:`nomyo_audit.audit.AuditLog.verify`, never trust ``size`` and ``root`` alone.
    """

    size: int
    root: bytes
    note: str
    created: float | None = None


class CheckpointRow(NamedTuple):
    """A checkpoints row exactly as stored, unchecked (any column may have been altered)."""

    id: Any
    size: Any
    root: Any
    note: Any
    created: Any


#: Called inside an append's transaction with the new frontier and the latest checkpoint's
#: ``created`` time: returns the checkpoint to keep with the record, or None.
CheckpointMaker = Callable[[Frontier, "float | None"], "StoredCheckpoint | None"]


class LogStore(Protocol):
    """What the log needs from storage (:class:`._sqlite.SQLiteStore`, :class:`._postgres.PostgresStore`).

    ``append`` runs ``build(seq)`` and the checkpoint maker inside one transaction, and keeps in
    it the ``blobs`` the record references (event logs, by SHA-256 hex: :mod:`._blobs`) that
    are not kept yet, so a record is never committed without them; ``blob`` reads one back
    (unchecked: the reader hashes it) and ``blobs`` yields every (key, bytes) row for verify;
    ``records`` yields records checked against their own bytes, ``scan`` the raw rows
    verification reads; ``frontier`` is the tree's right edge at the current size and
    ``saved_frontier`` the one last saved. Reads of a damaged store raise
    :class:`nomyo_audit.errors.IntegrityError`.
    """

    def append(
        self,
        payload_id: str,
        timestamp: float,
        build: Callable[[int], bytes],
        checkpoint: CheckpointMaker | None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> int: ...
    def records(self, since: float | None = None, until: float | None = None) -> Iterator[StoredRecord]: ...
    def scan(self) -> Iterator[tuple[Any, ...]]: ...
    def find(self, payload_id: str) -> StoredRecord | None: ...
    def count(self) -> int: ...
    def frontier(self) -> Frontier: ...
    def saved_frontier(self) -> Frontier: ...
    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...
    def checkpoints(self) -> list[StoredCheckpoint]: ...
    def checkpoint_rows(self) -> list[CheckpointRow]: ...
    def meta(self, key: str) -> bytes | None: ...
    def set_meta(self, key: str, value: bytes, *, replace: bool = False) -> None: ...
    def blob(self, sha256_hex: str) -> bytes | None: ...
    def blobs(self) -> Iterator[tuple[Any, Any]]: ...
    def integrity_check(self) -> str: ...
    def exclusive(self) -> AbstractContextManager[None]: ...


def read_saved_frontier(raw: bytes | None, where: str) -> Frontier:
    """The frontier a store saved (meta ``frontier``), or an empty one; IntegrityError if damaged."""
    if raw is None:
        return Frontier()
    try:
        return Frontier.from_bytes(raw)
    except ValueError:
        raise IntegrityError(f"{where}: the log's saved state is damaged") from None


def missing(expected: int, seq: int) -> str:
    """Why the row at ``seq`` is not the one expected: a missing or a repeated record."""
    if seq > expected:
        return f"record {expected} is missing (next row is {seq})"
    return f"record {seq} appears twice"


def truncated(saved: int, size: int) -> str:
    """A log with fewer records than its saved state says: cut short."""
    return f"the log's saved state says {saved} records, the records make {size} (truncated)"


def checked_records(
    rows: Iterable[tuple[Any, ...]],
    exact_time: bool,
    since: float | None,
    until: float | None,
    saved_size: Callable[[], int],
) -> Iterator[StoredRecord]:
    """``records()`` for every store: rows in order, each checked against its own bytes.

    A record is in a period when its time column is, and that column is checked to be exactly
    the running maximum of the records' own times (``exact_time``; older logs within a
    millisecond): the walk starts at record 0 so the maximum is known, and a missing row, a row
    whose columns disagree with its bytes, or a log shorter than its saved state
    (``saved_size()``, read before the rows) raises :class:`IntegrityError`. It stops at the
    first record at or after ``until`` (the column never goes back).
    """
    saved = saved_size()  # before the rows: a log growing meanwhile has more rows, never fewer
    check = ColumnCheck(exact_time)
    expected = 0
    for seq, payload_id, moment, data, leaf in rows:
        if seq != expected:
            raise IntegrityError(missing(expected, seq))
        if type(data) is not bytes or type(leaf) is not bytes:
            raise IntegrityError(f"record {seq}: its bytes are not stored as a BLOB (altered)")
        if problem := check.problem(seq, data, payload_id, moment):
            raise IntegrityError(problem)
        expected = seq + 1
        if until is not None and moment >= until:
            return
        if since is None or moment >= since:
            yield StoredRecord(seq, payload_id, float(moment), data, leaf)
    if saved > expected:
        raise IntegrityError(truncated(saved, expected))
