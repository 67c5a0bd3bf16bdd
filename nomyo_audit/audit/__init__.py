"""The tamper-evident audit log and the compliance reports made from it.

An :class:`AuditLog` keeps one canonical JSON record per request in an append-only
SQLite file; the records are the leaves of an RFC 6962 Merkle tree, and C2SP signed
checkpoints commit to its size and root. From a log:

* :meth:`AuditLog.verify` recomputes the tree from the record bytes and checks every
  checkpoint (a :class:`VerifyReport`); :meth:`AuditLog.verified_state` is the
  :class:`LogState` a report cites;
* :meth:`AuditLog.prove` writes a C2SP tlog-proof that :func:`verify_tlog_proof` checks
  offline, with nothing but the signer's public key;
* :func:`build_bundle` packs one record with its event logs, proof, checkpoint and anchor
  chains, and :func:`verify_bundle` re-checks all of it with no network (:func:`parse_bundle`);
* :func:`build_report` aggregates the records into a report document, and
  :func:`write_report` renders and signs it (DSSE, in-toto); :func:`verify_report_dir`
  checks a signed report.

Creating a log is explicit (``AuditLog(path)``); ``AuditLog.open(path)`` opens an
existing one read-only. Failures are :class:`LogError` (the log cannot be used as asked,
exit 2) and :class:`nomyo_audit.errors.IntegrityError` (something was altered or
damaged, exit 3).

Example::

    from nomyo_audit.audit import AuditLog, ed25519_public

    with AuditLog.open("audit.db") as log:
        result = log.verify(ed25519_public("audit.key.pub"))
    print("intact" if result.ok else result.problems)
"""

from ..errors import IntegrityError
from ._bundle import BUNDLE_SCHEMA, build_bundle, parse_bundle
from ._bundle_verify import BundleResult, verify_bundle
from ._controls import Control, ControlStatus, controls_evidenced, load_mapping
from ._dsse import EnvelopeError, key_fingerprint
from ._ear_jwt import sign_ear
from ._keys import (
    SigningKey,
    VerifyingKey,
    ed25519_private,
    ed25519_public,
    generate_audit_key,
    load_private_key,
    load_public_key,
)
from ._log import AuditLog
from ._merkle import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ._note import Checkpoint, NoteError, parse_checkpoint, verifier_key, verify_checkpoint
from ._proof import TlogProof, VerifiedInclusion, parse_tlog_proof, verify_tlog_proof
from ._records import build_record, keyed_digest
from ._render import FORMATS, render_report, verify_report_dir, write_report
from ._report import build_report
from ._sqlite import SQLiteStore
from ._store import LogError, LogStore, StoredCheckpoint, StoredRecord
from ._verification import LogState, VerifiedCheckpoint, VerifyReport, salt_commitment

__all__ = [
    "BUNDLE_SCHEMA",
    "FORMATS",
    "AuditLog",
    "BundleResult",
    "Checkpoint",
    "Control",
    "ControlStatus",
    "EnvelopeError",
    "IntegrityError",
    "LogError",
    "LogState",
    "LogStore",
    "NoteError",
    "ProofError",
    "SQLiteStore",
    "SigningKey",
    "StoredCheckpoint",
    "StoredRecord",
    "TlogProof",
    "VerifiedCheckpoint",
    "VerifiedInclusion",
    "VerifyReport",
    "VerifyingKey",
    "build_bundle",
    "build_record",
    "build_report",
    "consistency_proof",
    "controls_evidenced",
    "ed25519_private",
    "ed25519_public",
    "generate_audit_key",
    "inclusion_proof",
    "key_fingerprint",
    "keyed_digest",
    "leaf_hash",
    "load_mapping",
    "load_private_key",
    "load_public_key",
    "parse_bundle",
    "parse_checkpoint",
    "parse_tlog_proof",
    "render_report",
    "salt_commitment",
    "sign_ear",
    "verifier_key",
    "verify_bundle",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_report_dir",
    "verify_tlog_proof",
    "write_report",
]
