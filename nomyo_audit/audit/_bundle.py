"""Offline evidence bundles: one reply's record with everything needed to re-check it air-gapped.

A bundle is a versioned JSON document (:data:`BUNDLE_SCHEMA`): the record's exact bytes, the
event logs, IMA lists and cloud platform evidence it references by digest (from the log's blobs
table), a C2SP tlog-proof of its inclusion, the signed checkpoint it leads to (every signature
line the log kept, so cosignatures travel with it), a copy of the anchor evidence the record
holds (its certificate chains, for people and openssl; the record's own copy is what is checked)
and the log's origin and the key it names. Verifying one (:mod:`._bundle_verify`) needs nothing
else but a trusted checkpoint key and, for the anchor, the auditor's roots: no log, no router, no
network.

What is trusted, and why: the record bytes are believed only because the inclusion proof leads
from them to a root signed by the key the auditor passes. Everything else in the bundle is either
checked against those bytes (the blobs by their digests, the anchor copy by equality) or is only a
hint that names which part was altered (``leaf_sha256``, ``payload_id``, ``seq``). The quote is
then verified again, bound to the payload id and the content digest the record itself holds.

Pure: :func:`bundle_document` builds from values, :func:`parse_bundle` reads bytes and
:func:`._bundle_verify.verify_bundle` checks a parsed document. :func:`build_bundles` reads an
:class:`AuditLog`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._json import DuplicateKeyError, unique_object
from .._version import __version__
from ..errors import EvidenceError
from ._blobs import is_digest, references
from ._log import AuditLog
from ._merkle import _split, inclusion_proof, leaf_hash, node_hash
from ._note import verifier_key
from ._proof import parse_tlog_proof, tlog_proof
from ._store import LogError

__all__ = [
    "BUNDLE_SCHEMA",
    "MAX_BUNDLE_BYTES",
    "anchor_copy",
    "build_bundle",
    "build_bundles",
    "bundle_document",
    "decode_base64",
    "parse_bundle",
    "record_document",
]

#: The ``schema`` of a v1 evidence bundle: readers refuse any other.
BUNDLE_SCHEMA = "https://nomyo-audit.dev/schemas/evidence-bundle/v1"
#: A bundle file larger than this is refused before it is parsed (its event logs are the bulk).
MAX_BUNDLE_BYTES = 256 * 1024 * 1024


# -- building ---------------------------------------------------------------------------------------------


def anchor_copy(document: Mapping[str, Any]) -> dict[str, Any]:
    """The anchor evidence a record holds: the client's recorded anchor and the quote's AK chain."""
    verdict = document.get("verdict")
    metadata = document.get("metadata")
    attestation = metadata.get("tpm_attestation") if isinstance(metadata, Mapping) else None
    return {
        "recorded": verdict.get("anchor") if isinstance(verdict, Mapping) else None,
        "aik_cert_chain_b64": (
            attestation.get("aik_cert_chain_b64") if isinstance(attestation, Mapping) else None
        ),
    }


def record_document(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def bundle_document(
    record: bytes,
    seq: int,
    proof: str,
    blobs: Mapping[str, bytes],
    *,
    origin: str,
    public_key: Ed25519PublicKey | None,
) -> dict[str, Any]:
    """The bundle of one record: its bytes, its tlog-proof (whose note is the checkpoint), its blobs."""
    document = record_document(record) or {}
    return {
        "schema": BUNDLE_SCHEMA,
        "tool": f"nomyo-audit {__version__}",
        "payload_id": document.get("payload_id"),
        "seq": seq,
        "record": base64.b64encode(record).decode("ascii"),
        "leaf_sha256": leaf_hash(record).hex(),
        "blobs": {digest: base64.b64encode(data).decode("ascii") for digest, data in sorted(blobs.items())},
        "inclusion_proof": proof,
        "checkpoint": parse_tlog_proof(proof).note,
        "anchor": anchor_copy(document),
        "log": {
            "origin": origin,
            "public_key": verifier_key(origin, public_key) if public_key is not None else None,
        },
    }


class _Tree:
    """Subtree roots over a list of leaf hashes, the large ones kept: proofs for many records of one
    tree share their upper nodes, so k proofs cost about one pass over the leaves, not k."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self._kept: dict[tuple[int, int], bytes] = {}

    def root(self, start: int, end: int) -> bytes:
        if end - start == 1:
            return self.leaves[start]
        kept = self._kept.get((start, end))
        if kept is None:
            k = _split(end - start)
            kept = node_hash(self.root(start, start + k), self.root(start + k, end))
            if end - start >= 64:
                self._kept[(start, end)] = kept
        return kept

    def path(self, index: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[n]) (as :func:`._merkle.inclusion_proof`), from the kept nodes."""
        if len(self.leaves) < 64:
            return inclusion_proof(self.leaves, index)
        proof: list[bytes] = []
        start, end = 0, len(self.leaves)
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.root(start + k, end))
                end = start + k
            else:
                proof.append(self.root(start, start + k))
                start += k
        proof.reverse()
        return proof


def build_bundles(log: AuditLog, payload_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """A bundle for each of ``payload_ids`` (the first record of each), against the latest checkpoint.

    Reads the log once. Raises :class:`LogError` (exit 2) when no checkpoint is kept or a payload id
    has no record or is not covered by it, and :class:`nomyo_audit.errors.IntegrityError` (exit 3)
    when the records no longer give the checkpoint's root.
    """
    from ..errors import IntegrityError

    wanted = list(dict.fromkeys(payload_ids))
    looked_for = set(wanted)
    latest = log.latest_checkpoint()
    if latest is None:
        raise LogError("the log has no checkpoint to prove records against: run 'nomyo-audit log checkpoint'")
    log.store.frontier()  # a log cut below its saved state is named truncated (exit 3) first
    leaves: list[bytes] = []
    found: dict[str, tuple[int, bytes]] = {}
    for record in log.store.records():
        if record.seq >= latest.size:
            break
        leaves.append(leaf_hash(record.data))
        if record.payload_id in looked_for and record.payload_id not in found:
            found[record.payload_id] = (record.seq, record.data)
    tree = _Tree(leaves)
    if len(leaves) < latest.size or tree.root(0, len(leaves)) != latest.root:
        raise IntegrityError(
            f"the records do not match the latest checkpoint (size {latest.size}): "
            "run 'nomyo-audit log verify'"
        )
    for payload_id in wanted:
        if payload_id not in found:
            covered = log.record_bytes(payload_id) is not None
            raise LogError(
                f"the record of payload_id {payload_id} is after the latest checkpoint: "
                "run 'nomyo-audit log checkpoint' first"
                if covered
                else f"no record for payload_id {payload_id}"
            )
        seq, data = found[payload_id]
        document = record_document(data)
        blobs: dict[str, bytes] = {}
        metadata = document.get("metadata") if document is not None else None
        for _, digest in references(metadata) if isinstance(metadata, Mapping) else ():
            blob = log.store.blob(digest) if is_digest(digest) else None
            if blob is not None:  # a missing one is left out: the bundle then fails blob_missing, as it must
                blobs[digest] = blob
        proof = tlog_proof(data, seq, tree.path(seq), latest.note)
        yield bundle_document(data, seq, proof, blobs, origin=log.origin, public_key=log.public_key())


def build_bundle(log: AuditLog, payload_id: str) -> dict[str, Any]:
    """The bundle of the record of ``payload_id`` (:func:`build_bundles` for one)."""
    return next(iter(build_bundles(log, [payload_id])))


# -- reading ----------------------------------------------------------------------------------------------


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(f"not an evidence bundle: {message}", code="bundle_malformed")


def parse_bundle(data: bytes, *, limit: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """A bundle document from its bytes, its form checked (nothing verified yet).

    Raises :class:`EvidenceError` (exit 2): ``bundle_too_large`` above ``limit`` bytes,
    ``bundle_malformed`` for anything that is not a v1 bundle of the right shape.
    """
    if len(data) > limit:
        raise EvidenceError(
            f"the bundle is {len(data)} bytes, more than the {limit} a bundle may have",
            code="bundle_too_large",
        )
    try:
        document = json.loads(data, object_pairs_hook=unique_object)
    except DuplicateKeyError:  # which of two values would be checked is not for json to decide
        raise _malformed("a JSON object repeats a key") from None
    except (ValueError, RecursionError):
        raise _malformed("not JSON") from None
    if not isinstance(document, dict) or document.get("schema") != BUNDLE_SCHEMA:
        raise _malformed(f"its schema is not {BUNDLE_SCHEMA}")
    texts = ("record", "leaf_sha256", "inclusion_proof", "checkpoint")
    if not all(isinstance(document.get(name), str) for name in texts):
        raise _malformed(f"{', '.join(texts)} must be text")
    seq = document.get("seq")
    if type(seq) is not int or seq < 0:
        raise _malformed("seq is not a record position")
    blobs, log = document.get("blobs"), document.get("log")
    if not isinstance(blobs, dict) or not all(isinstance(v, str) for v in blobs.values()):
        raise _malformed("blobs is not an object of base64 texts")
    if not isinstance(log, dict) or not isinstance(log.get("origin"), str):
        raise _malformed("log does not name the log's origin")
    if not isinstance(document.get("anchor"), dict):
        raise _malformed("anchor is not an object")
    decode_base64(document["record"], "record")
    return document


def decode_base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{what} is not base64") from None
