"""Verifying a log: recompute the tree from the record bytes and check every row and checkpoint.

:meth:`AuditLog.verify <nomyo_audit.audit.AuditLog.verify>` runs one :class:`_Verification`:
a pass over every record (the leaf hash from the bytes, the position the bytes say, the
columns they name, the event logs it keeps by digest: :class:`._blobs.BlobCheck`), then a
pass over the checkpoints kept in the log and those kept elsewhere. Its result is a
:class:`VerifyReport`; :class:`LogState` is the part of it a report cites. Problems name the
first bad record or checkpoint.

This is the ``log verify`` hot loop: its record pass reads locals only, keeps one frontier
and hashes each record once.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import IntegrityError
from ._blobs import BlobCheck
from ._dsse import key_fingerprint
from ._fields import TIME_COLUMN_EXACT, ColumnCheck
from ._merkle import Frontier
from ._note import Checkpoint, NoteError, parse_checkpoint, signed_by, signer_ids, verify_checkpoint
from ._store import CheckpointRow, LogStore, missing, truncated

__all__ = [
    "SALT_EXTENSION",
    "TIME_EXTENSION",
    "LogState",
    "VerifiedCheckpoint",
    "VerifyReport",
    "check_record",
    "salt_commitment",
    "verify_store",
]

#: Checkpoint extension lines: the salt commitment and the signing time (RFC 3339).
SALT_EXTENSION = "nomyo-audit-salt-sha256"
TIME_EXTENSION = "nomyo-audit-time"


def salt_commitment(salt: bytes) -> str:
    """What a checkpoint signs about the digest salt: a hash, so the salt itself stays secret."""
    return base64.b64encode(hashlib.sha256(b"nomyo-audit log salt\n" + salt).digest()).decode()


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature, origin, salt and root all held."""

    size: int
    root: bytes
    #: RFC 3339; signed unless ``time_signed`` is False (older checkpoints)
    time: str | None
    time_signed: bool
    #: :func:`nomyo_audit.audit.key_fingerprint` of the key it verified with
    signer: str
    note: str


@dataclass
class VerifyReport:
    """What :meth:`AuditLog.verify <nomyo_audit.audit.AuditLog.verify>` found: size, root, problems.

    ``problems`` empty means the log verified (:attr:`ok`); each one names the first bad
    record or checkpoint.
    """

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
        """True when nothing is wrong: every record, checkpoint and external checkpoint held."""
        return not self.problems

    @property
    def intact(self) -> bool:
        """The same as :attr:`ok`."""
        return not self.problems


@dataclass(frozen=True)
class LogState:
    """A verified log's size and root and the checkpoint a report cites (the latest that verified).

    Made by :meth:`AuditLog.verified_state <nomyo_audit.audit.AuditLog.verified_state>` only
    after the whole log verified; :meth:`to_dict` is the report's ``log`` section.
    """

    size: int
    root: bytes
    origin: str
    checkpoint: VerifiedCheckpoint | None
    #: True when the checkpoints were checked with a key given by the caller, False with the log's own
    key_given: bool

    def to_dict(self) -> dict[str, Any]:
        """The report's ``log`` section: size, root, the cited checkpoint and how it was verified."""
        cited = self.checkpoint
        checkpoint = None
        if cited is not None:
            checkpoint = {
                "origin": self.origin,
                "size": cited.size,
                "root": cited.root.hex(),
                "time": cited.time,
                "time_signed": cited.time_signed,
                "signer": cited.signer,
                "note": cited.note,
            }
        verification = {
            "intact": True,
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint": {k: checkpoint[k] for k in ("size", "root", "time", "signer")}
            if checkpoint
            else None,
            "key": "given" if self.key_given else "log",
        }
        return {
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint": checkpoint,
            "verification": verification,
        }


def verify_store(
    store: LogStore,
    key: Ed25519PublicKey | None,
    explicit: bool,
    progress: Callable[[int], None] | None,
    external: list[str],
) -> VerifyReport:
    """One verification of ``store``; ``explicit`` says ``key`` came from the caller, not the log."""
    return _Verification(store, key, explicit, progress, external).run()


class _Verification:
    """One run of ``AuditLog.verify``: the record pass, then the checkpoint pass."""

    def __init__(
        self,
        store: LogStore,
        key: Ed25519PublicKey | None,
        explicit: bool,
        progress: Callable[[int], None] | None,
        external: list[str],
    ) -> None:
        self.store = store
        self.explicit_key = key if explicit else None
        self.key = key
        self.progress = progress
        self.external = external
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.roots: dict[int, bytes] = {}
        self.frontier = Frontier()

    def run(self) -> VerifyReport:
        checkpoint_rows: list[CheckpointRow] = []
        try:
            if (status := self.store.integrity_check()) != "ok":
                self.problems.append(f"{_storage_name(self.store)} is damaged: {status}")
            self._metadata()
            checkpoint_rows = self.store.checkpoint_rows()
            blobs = self._blobs()
            self._records(self._sizes_wanted(checkpoint_rows), blobs)
            if blobs is not None:  # the kept event logs: each hashes to its key, each referenced is kept
                self.problems.extend(blobs.problems)
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

    def _blobs(self) -> BlobCheck | None:
        """The blobs table read and checked (a damaged one is a problem; the records are checked still)."""
        try:
            return BlobCheck(self.store.blobs(), lookup=self.store.blob)
        except IntegrityError as exc:
            self.problems.append(str(exc))
            return None

    def _sizes_wanted(self, rows: list[CheckpointRow]) -> set[int]:
        sizes = {row.size for row in rows if isinstance(row.size, int)}
        for note in self.external:
            with suppress(NoteError):
                sizes.add(parse_checkpoint(note)[0].size)
        return sizes

    def _records(self, checkpointed: set[int], blobs: BlobCheck | None) -> None:
        store, problems, frontier = self.store, self.problems, self.frontier
        saved = store.saved_frontier()
        roots = self.roots
        roots[0] = frontier.root()
        saved_root = frontier.root() if saved.size == 0 else None
        check = ColumnCheck(store.meta("time_column") == TIME_COLUMN_EXACT)
        expected = 0
        sha256, append, progress = hashlib.sha256, frontier.append, self.progress
        record_blobs = blobs.record if blobs is not None else None
        for seq, payload_id, moment, data, stored_leaf in store.scan():
            if record_blobs is not None and type(data) is bytes:
                record_blobs(seq, data)
            if type(data) is not bytes:
                if len(problems) < 20:
                    kind = {str: "TEXT", int: "INTEGER", float: "REAL"}.get(type(data), "NULL")
                    problems.append(f"record {seq}: its bytes are stored as {kind}, not a BLOB (altered)")
                data = data.encode() if isinstance(data, str) else str(data).encode()
            leaf = sha256(b"\x00" + data).digest()
            # "seq" sorts after "metadata", so the marker is near the end: rfind finds it fast
            bad = seq != expected or leaf != stored_leaf or data.rfind(b'"seq":%d,' % seq) < 0
            problem = check_record(seq, data, stored_leaf, leaf, expected) if bad else None
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
            problems.append(truncated(saved.size, frontier.size))
        elif saved_root != saved.root():
            problems.append(f"the log's saved state does not match records 0..{saved.size - 1}")

    def _checkpoints(self, rows: list[CheckpointRow], report: VerifyReport) -> None:
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



def _storage_name(store: LogStore) -> str:
    """What holds the log, for the integrity check's problem (each backend checks its own storage)."""
    from ._sqlite import SQLiteStore

    return "the SQLite file" if isinstance(store, SQLiteStore) else "the PostgreSQL database"


def check_record(seq: int, data: bytes, stored_leaf: bytes, leaf: bytes, expected: int) -> str | None:
    """What is wrong with a row that failed the fast check, in words that name it (None: nothing)."""
    if seq != expected:
        return missing(expected, seq)
    if leaf != stored_leaf:
        return f"record {seq}: its bytes do not match its leaf hash (altered)"
    if b'"seq":%d,' % seq not in data:
        return f"record {seq}: its bytes say another position (moved)"
    return None


def _dedupe(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))
