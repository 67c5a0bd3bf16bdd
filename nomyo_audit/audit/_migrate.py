"""Copy a log from one store to another (``nomyo-audit log migrate SRC DST``), proving the copy.

A migration must not be a way to launder a log: the source is verified first (a source that does
not verify is refused, exit 3, and nothing is copied), the destination must be empty (exit 2
otherwise), everything is copied exactly (the metadata that gives the records their meaning, the
record bytes and columns, the checkpoints with their stored times, the event-log blobs) in one
``bulk_load`` transaction, and the destination is then verified on its own and compared with the
source: same size, same root, same checkpoints (exit 3 otherwise). Records are streamed, so
memory does not grow with the log.

A destination that did not verify keeps what was loaded, for inspection; a failure before the
load leaves it empty, so the migration can be run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import IntegrityError
from ._store import LogError, LogStore, StoredCheckpoint, StoredRecord
from ._verification import VerifyReport, verify_store

__all__ = ["COPIED_META", "BulkLoadable", "Migration", "migrate"]

#: The metadata a log's records and checkpoints depend on (the frontier is derived: the store
#: saves its own), and the witness state (issue 16) so cosigning carries on after a move.
COPIED_META = ("salt", "origin", "public_key", "time_column", "witnesses", "cosigned_checkpoint")


class BulkLoadable(LogStore, Protocol):
    """A store that can be filled, empty and in one transaction, with an existing log's contents."""

    def bulk_load(
        self,
        meta: Mapping[str, bytes],
        records: Iterable[StoredRecord],
        checkpoints: Iterable[StoredCheckpoint],
        blobs: Iterable[tuple[str, bytes]],
    ) -> None: ...


@dataclass(frozen=True)
class Migration:
    """What was copied: the verified size and root both stores agree on, and how much was moved."""

    size: int
    root: bytes
    checkpoints: int
    blobs: int


def migrate(
    source: LogStore,
    destination: BulkLoadable,
    *,
    key: Ed25519PublicKey | None = None,
    progress: Callable[[str, int | None], Callable[[int], None] | None] | None = None,
) -> Migration:
    """Copy ``source`` into the empty ``destination`` and prove the copy; returns what was copied.

    ``key`` is the checkpoint signer to verify both logs with (default: the key the source
    names). ``progress(stage, total)`` may return a per-record callback for the two
    verifications. Raises :class:`LogError` (exit 2) for a destination that is not empty, and
    :class:`nomyo_audit.errors.IntegrityError` (exit 3) when the source does not verify or the
    destination does not verify to the same log.
    """
    refuse_non_empty(destination)
    signer = key or _stored_key(source)
    before = _verify(source, signer, key is not None, "source", progress)
    checkpoints = [c for c in source.checkpoints() if c.size <= before.size]
    blobs = _Blobs(source)
    meta = {name: value for name in COPIED_META if (value := source.meta(name)) is not None}
    destination.bulk_load(meta, _records(source, before.size), checkpoints, blobs)
    after = _verify(destination, signer, key is not None, "destination", progress)
    _require_same(before, after, checkpoints, destination.checkpoints())
    return Migration(after.size, after.root, len(checkpoints), blobs.count)


def refuse_non_empty(store: LogStore) -> None:
    """A migration only fills an empty log: one with records, checkpoints or metadata is refused."""
    if store.count() or store.checkpoint_rows() or any(store.meta(name) is not None for name in COPIED_META):
        raise LogError("the destination log is not empty; migrate only into a new, empty log")


def _stored_key(store: LogStore) -> Ed25519PublicKey | None:
    raw = store.meta("public_key")
    try:
        return Ed25519PublicKey.from_public_bytes(raw) if raw else None
    except ValueError:
        return None  # verification then names the checkpoints it cannot check


def _verify(
    store: LogStore,
    key: Ed25519PublicKey | None,
    explicit: bool,
    stage: str,
    progress: Callable[[str, int | None], Callable[[int], None] | None] | None,
) -> VerifyReport:
    step = progress(f"verifying the {stage}", store.count()) if progress is not None else None
    report = verify_store(store, key, explicit, step, [])
    if not report.ok:
        shown = "; ".join(report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        action = "nothing was copied" if stage == "source" else "the copy is not the same log"
        raise IntegrityError(f"the {stage} log does not verify, {action}: {shown}{more}")
    return report


def _records(source: LogStore, size: int) -> Iterator[StoredRecord]:
    """The first ``size`` rows, as stored (the verification just checked them), streamed."""
    if not size:
        return
    for seq, payload_id, moment, data, leaf in source.scan():
        yield StoredRecord(seq, payload_id, moment, bytes(data), bytes(leaf))
        if seq + 1 >= size:
            return


class _Blobs:
    """The source's blobs, streamed (an event log can be a megabyte; there can be many), counted."""

    def __init__(self, source: LogStore) -> None:
        self.source = source
        self.count = 0

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for key, data in self.source.blobs():
            self.count += 1
            yield str(key), bytes(data)


def _same_checkpoints(copied: list[StoredCheckpoint], landed: list[StoredCheckpoint]) -> bool:
    """The same signed notes in the same order, kept at the same times (to the microsecond: a
    server database may keep a time with that precision)."""
    return len(copied) == len(landed) and all(
        (a.size, a.root, a.note) == (b.size, b.root, b.note) and _same_time(a.created, b.created)
        for a, b in zip(copied, landed, strict=True)
    )


def _same_time(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and abs(a - b) <= 1e-6)


def _require_same(
    before: VerifyReport,
    after: VerifyReport,
    copied: list[StoredCheckpoint],
    landed: list[StoredCheckpoint],
) -> None:
    differences = []
    if after.size != before.size:
        differences.append(f"{after.size} records instead of {before.size}")
    if after.root != before.root:
        differences.append(f"root {after.root.hex()} instead of {before.root.hex()}")
    if not _same_checkpoints(copied, landed):
        differences.append(f"its {len(landed)} checkpoints are not the source's {len(copied)}")
    if differences:
        raise IntegrityError(f"the destination log is not the source log: {'; '.join(differences)}")
