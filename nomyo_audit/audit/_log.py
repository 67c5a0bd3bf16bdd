"""The tamper-evident audit log (:class:`AuditLog`): append records, checkpoint, verify, prove.

Records are Merkle leaves (:mod:`._merkle`), checkpoints C2SP signed notes (:mod:`._note`),
storage sits behind :class:`._store.LogStore` (:mod:`._sqlite`), verification is
:mod:`._verification` and proofs :mod:`._proof`. Rules the log keeps:

* record ``n`` is the ``n``-th leaf (0-based) and says ``"seq": n`` in its own
  bytes, so a deleted, inserted or reordered row is named by its position;
* nothing but the record bytes decides what a reader sees: the ``payload_id``
  and ``time`` columns only mirror what the bytes say (``time`` is the running
  maximum of the records' own times, so it never goes back), and every read
  checks them against the bytes, so editing a column cannot drop or pick a record;
* checkpoints are C2SP signed notes over (origin, size, root) with two extension
  lines, the commitment to the log's digest salt and the signing time, all kept;
  with a key configured one is made every ``checkpoint_every`` records or
  ``checkpoint_interval`` seconds, in the appending transaction;
* creating a log is explicit (the constructor); :meth:`AuditLog.open` reads and never
  writes: a missing, empty, foreign or damaged file is refused before anything is created.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import IntegrityError
from ._dsse import key_fingerprint
from ._fields import TIME_COLUMN_EXACT
from ._merkle import Frontier, inclusion_proof, leaf_hash, root_of
from ._note import Checkpoint, sign_checkpoint
from ._proof import tlog_proof
from ._store import LogError, LogStore, StoredCheckpoint, missing
from ._stores import display_location, is_database_url, open_store
from ._verification import (
    SALT_EXTENSION,
    TIME_EXTENSION,
    LogState,
    VerifyReport,
    check_record,
    salt_commitment,
    verify_store,
)

__all__ = ["AuditLog"]


class AuditLog:
    """``AuditLog("audit.db")``: append records, checkpoint, verify, prove.

    The constructor opens a log to write, creating it (0600) when missing; ``key`` makes
    it sign a checkpoint every ``checkpoint_every`` records or ``checkpoint_interval``
    seconds, and becomes the log's signer (another key later only with ``new_signer``).
    :meth:`open` opens an existing one to read and never writes.

    Raises :class:`LogError` (exit 2) when the file cannot be created or is not a log, or
    ``key`` is not the log's signer; :class:`nomyo_audit.errors.IntegrityError` (exit 3)
    when the file is damaged or lost its salt or origin.
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
        self.location = _shown(path, self.path)  # a URL's password is never shown
        self.store: LogStore = store if store is not None else open_store(path)
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
        log.location = _shown(path, log.path)
        log.store = open_store(path, readonly=True)
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
        with store.exclusive():  # another process making the same new log waits, then finds it made
            if store.meta("salt") is None and store.meta("origin") is None and self._is_blank():
                store.set_meta("salt", os.urandom(32))
                store.set_meta("origin", (origin or _default_origin(self.path, self.location)).encode())
                store.set_meta("time_column", TIME_COLUMN_EXACT)
            self._salt, self._origin = store.meta("salt"), store.meta("origin")
        self._require_metadata()

    def _is_blank(self) -> bool:
        store = self.store
        return store.count() == 0 and not store.checkpoint_rows() and store.meta("frontier") is None

    def _require_metadata(self) -> None:
        lost = [name for name, value in (("salt", self._salt), ("origin", self._origin)) if not value]
        if lost:
            raise IntegrityError(
                f"{self.location}: the log's {' and '.join(lost)} {'is' if len(lost) == 1 else 'are'} "
                "missing (deleted?); the log's records and checkpoints depend on them"
            )

    def _establish_signer(self, key: Ed25519PrivateKey, new_signer: bool) -> None:
        """The first checkpoint key becomes the log's signer; another one only when asked."""
        raw = _raw_public(key.public_key())
        established = self.store.meta("public_key")
        if established is not None and established != raw and not new_signer:
            raise LogError(
                f"{self.location}: its checkpoints are signed by another key "
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
        """Close the store; the log object is not used after this."""
        closer = getattr(self.store, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> AuditLog:
        """The log itself; it is closed when the ``with`` block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        payload_id: str,
        build: Callable[[int, bytes], bytes],
        timestamp: float | None = None,
        *,
        blobs: Mapping[str, bytes] | None = None,
    ) -> int:
        """Append the record ``build(seq, salt)`` returns; durable when this returns. Returns its seq.

        ``build`` gets the record's position and the log's digest salt and returns the
        record's canonical bytes (:func:`nomyo_audit.audit.build_record`). ``blobs`` are the
        event logs the record references by digest (SHA-256 hex -> bytes, from
        ``_blobs.detach_logs``), kept once per digest in the record's transaction. Raises
        :class:`LogError` on a log opened read-only, and
        :class:`nomyo_audit.errors.IntegrityError` when the log is shorter than its
        saved state or has a gap (nothing is appended then).
        """
        now = time.time() if timestamp is None else timestamp
        salt = self.salt
        return self.store.append(
            payload_id,
            now,
            lambda seq: build(seq, salt),
            self._auto_checkpoint if self.key is not None else None,
            blobs,
        )

    def _note(self, size: int, root: bytes, key: Ed25519PrivateKey) -> str:
        from ._records import rfc3339

        extensions = (
            f"{SALT_EXTENSION} {salt_commitment(self.salt)}",
            f"{TIME_EXTENSION} {rfc3339(time.time())}",
        )
        return sign_checkpoint(Checkpoint(self.origin, size, root, extensions), key)

    def _auto_checkpoint(self, frontier: Frontier, last: float | None) -> StoredCheckpoint | None:
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
        return StoredCheckpoint(frontier.size, root, self._note(frontier.size, root, self.key))

    def checkpoint(self, key: Ed25519PrivateKey | None = None, *, new_signer: bool = False) -> str:
        """Sign and keep a checkpoint at the current size; return its signed note.

        ``key`` must be the log's established signer (the key of its earlier
        checkpoints) unless ``new_signer`` says the change is meant. Raises
        :class:`LogError` without a key, with another signer's key, or on a log opened
        read-only.
        """
        signer = key or self.key
        if signer is None:
            raise LogError("a checkpoint needs a signing key (--key)")
        self._establish_signer(signer, new_signer)
        frontier = self.store.frontier()
        root = frontier.root()
        note = self._note(frontier.size, root, signer)
        self.store.add_checkpoint(StoredCheckpoint(frontier.size, root, note))
        return note

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of records (IntegrityError when the log is shorter than its saved state)."""
        return self.store.frontier().size

    def public_key(self) -> Ed25519PublicKey | None:
        """The signer the log names (whoever can write the log can change it: prefer --key)."""
        raw = self.store.meta("public_key")
        try:
            return Ed25519PublicKey.from_public_bytes(raw) if raw else None
        except ValueError:
            return None

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every checkpoint kept in the log, oldest first; their signatures are checked by :meth:`verify`."""
        return self.store.checkpoints()

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint kept last, or None; its signature is checked by :meth:`verify`."""
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
                    raise IntegrityError(missing(frontier.size, seq))
                if type(data) is not bytes:
                    raise IntegrityError(f"record {seq}: its bytes are not stored as a BLOB (altered)")
                leaf = leaf_hash(data)
                problem = check_record(seq, data, stored_leaf, leaf, seq)
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
        key = public_key or self.public_key()
        return verify_store(self.store, key, public_key is not None, progress, list(checkpoints))

    def verified_state(
        self, public_key: Ed25519PublicKey | None = None, progress: Callable[[int], None] | None = None
    ) -> LogState:
        """The log's size, root and the checkpoint a report cites, after verifying the whole log.

        Every record is hashed again from its bytes and every checkpoint checked
        against them (:meth:`verify`); the checkpoint cited is the latest one that
        verified (with ``public_key`` when given, else with the key the log names).
        Raises :class:`nomyo_audit.errors.IntegrityError` (exit 3) naming the first
        problems when the log does not verify: nothing may be rendered or signed over it.
        """
        result = self.verify(public_key, progress=progress)
        if not result.intact:
            shown = "; ".join(result.problems[:5])
            more = f" (and {len(result.problems) - 5} more)" if len(result.problems) > 5 else ""
            raise IntegrityError(
                f"the audit log {self.location} does not verify, so no report was made: {shown}{more}"
            )
        return LogState(result.size, result.root, self.origin, result.checkpoint, public_key is not None)

    def prove(self, payload_id: str) -> str:
        """A C2SP tlog-proof (c2sp.org/tlog-proof) of the record, against the latest checkpoint.

        Raises :class:`LogError` when no record has that payload_id or no checkpoint covers
        it yet, and :class:`nomyo_audit.errors.IntegrityError` when the log is truncated or
        its records no longer match the latest checkpoint.
        """
        self.store.frontier()  # a log cut below its saved state is named truncated (exit 3) first
        record = self.store.find(payload_id)
        if record is None:
            raise LogError(f"no record for payload_id {payload_id}")
        latest = self.latest_checkpoint()
        if latest is None or latest.size <= record.seq:
            raise LogError("no checkpoint covers this record yet: run 'nomyo-audit log checkpoint' first")
        size, root = latest.size, latest.root
        leaves = [leaf_hash(r.data) for r, _ in zip(self.store.records(), range(size), strict=False)]
        if len(leaves) < size or root_of(leaves) != root:
            raise IntegrityError(
                f"the records do not match the latest checkpoint (size {size}): run 'nomyo-audit log verify'"
            )
        return tlog_proof(record.data, record.seq, inclusion_proof(leaves, record.seq), latest.note)

    def record_bytes(self, payload_id: str) -> bytes | None:
        """The bytes of the first record whose own bytes name ``payload_id``, or None."""
        record = self.store.find(payload_id)
        return record.data if record else None


def _shown(location: str | os.PathLike[str], path: Path) -> str:
    """How messages name the log: a URL without its password, a file as its path."""
    return display_location(location) if is_database_url(location) else str(path)


def _default_origin(path: Path, location: str) -> str:
    """``nomyo-audit.local/<file stem>``, or ``/<database name>`` for a PostgreSQL log."""
    if is_database_url(location):
        from ._postgres import database_name

        return f"nomyo-audit.local/{database_name(location)}"
    return f"nomyo-audit.local/{path.stem}"


def _fingerprint_raw(raw: bytes) -> str:
    try:
        return key_fingerprint(Ed25519PublicKey.from_public_bytes(raw))[:16] + "..."
    except ValueError:
        return "an unreadable key"


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)
