"""C2SP tlog-proofs (c2sp.org/tlog-proof): write, parse and verify one offline. Pure, no I/O.

A proof is the line ``c2sp.org/tlog-proof@v1``, an optional ``extra`` line (the record's
bytes, base64), ``index N``, the inclusion path (one base64 hash per line), a blank line and
the signed checkpoint note it leads to. Verifying one needs only the proof, the signer's
public key and (if the proof does not carry it) the record: no access to the log.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import IntegrityError
from ._merkle import ProofError, leaf_hash, verify_inclusion
from ._note import NoteError, verify_checkpoint

__all__ = [
    "TLOG_PROOF_HEADER",
    "TlogProof",
    "VerifiedInclusion",
    "parse_tlog_proof",
    "tlog_proof",
    "verify_tlog_proof",
]

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof: the record it carries (if any), its index, the inclusion path, the note."""

    record: bytes | None
    index: int
    hashes: tuple[bytes, ...]
    note: str

    def text(self) -> str:
        """The proof in its c2sp.org/tlog-proof@v1 text form."""
        lines = [TLOG_PROOF_HEADER]
        if self.record is not None:
            lines.append(f"extra {base64.b64encode(self.record).decode()}")
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.note


@dataclass(frozen=True)
class VerifiedInclusion:
    """What a verified tlog-proof proves: record ``index`` is in the log ``origin`` of ``size`` records."""

    index: int
    size: int
    origin: str


def parse_tlog_proof(text: str) -> TlogProof:
    """Split a tlog-proof into its parts, without checking any signature or hash.

    Raises :class:`nomyo_audit.errors.IntegrityError` when the text is not a
    c2sp.org/tlog-proof@v1 proof or a line of it is malformed.
    """
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines or lines[0] != TLOG_PROOF_HEADER:
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
        hashes = tuple(base64.b64decode(line, validate=True) for line in lines[position + 1 :])
    except (IndexError, ValueError) as exc:
        raise IntegrityError(f"tlog-proof: malformed ({exc})") from None
    return TlogProof(extra, index, hashes, note)


def tlog_proof(record: bytes, index: int, hashes: Sequence[bytes], note: str) -> str:
    """The tlog-proof text for ``record`` at ``index``, with its inclusion path and checkpoint note."""
    return TlogProof(record, index, tuple(hashes), note).text()


def verify_tlog_proof(
    text: str, public_key: Ed25519PublicKey, record: bytes | None = None
) -> VerifiedInclusion:
    """Check a tlog-proof offline: the checkpoint's signature, then the inclusion of the record's leaf.

    ``record`` is the record's bytes when the proof does not carry them (or to check
    those instead). Raises :class:`nomyo_audit.errors.IntegrityError` when the proof is
    malformed, carries no record and none is given, is not signed by ``public_key``, or
    does not lead from the record to the signed root.
    """
    proof = parse_tlog_proof(text)
    data = record if record is not None else proof.record
    if data is None:
        raise IntegrityError("tlog-proof carries no record; pass the record bytes")
    try:
        checkpoint = verify_checkpoint(proof.note, public_key)
        verify_inclusion(leaf_hash(data), proof.index, checkpoint.size, proof.hashes, checkpoint.root)
    except (NoteError, ProofError) as exc:
        raise IntegrityError(f"tlog-proof does not verify: {exc}") from None
    return VerifiedInclusion(proof.index, checkpoint.size, checkpoint.origin)
