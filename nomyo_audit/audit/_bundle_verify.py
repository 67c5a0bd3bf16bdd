"""Verifying an offline evidence bundle (:mod:`._bundle`) air-gapped: integrity first, then the reply.

The integrity checks say whether the bundle is the log's evidence, untouched: the checkpoint signed
by the auditor's key, the record's inclusion under its root, the blobs by their digests, the anchor
copy by equality with the record's. Each failure has its own stable code; the hints the bundle
carries (``leaf_sha256``, ``payload_id``, ``seq``) only name what was altered, they never make a
check pass. Only intact evidence is appraised: the quote again, bound to what the record holds, and
a policy. Pure: a parsed document in, a :class:`BundleResult` out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import ExitCode, IntegrityError
from ._blobs import references
from ._bundle import anchor_copy, decode_base64, record_document
from ._merkle import ProofError, leaf_hash, verify_inclusion
from ._note import NoteError, signed_by, verify_checkpoint
from ._proof import parse_tlog_proof

__all__ = ["BundleCheck", "BundleResult", "verify_bundle"]


@dataclass(frozen=True)
class BundleCheck:
    """One integrity check of a bundle: ``status`` pass or fail, a stable ``code``, and why."""

    check: str
    status: str
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"check": self.check, "status": self.status, "code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class BundleResult:
    """What a bundle proves: its integrity checks, then (only when intact) the quote and the policy.

    ``code`` is one stable result: the first failing integrity check's code (exit 3), else
    ``attestation_failed``, ``policy_denied`` (re-evaluated with the given policy) or
    ``policy_denied_recorded`` (no policy given; the client's own result, signed with the record,
    denied) (exit 1), else ``checkpoint_key_untrusted`` when no key was given (the bundle's own key
    proves nothing against whoever wrote it, so it is never ``ok``; exit 1), else ``ok`` (exit 0).
    Intact evidence and the reply's acceptance are separate statements, and :meth:`summary` says both.
    ``origin`` is the log the signed checkpoint names (one key may sign several logs).
    """

    checks: tuple[BundleCheck, ...]
    payload_id: str | None = None
    seq: int | None = None
    key_trusted: bool = False
    verdict: Any = None
    policy: Any = None
    recorded: Mapping[str, Any] = field(default_factory=dict)
    origin: str | None = None

    @property
    def intact(self) -> bool:
        """Whether every integrity check passed: the record is the log's, its evidence complete."""
        return all(c.status == "pass" for c in self.checks)

    @property
    def code(self) -> str:
        """The one stable result code (see the class)."""
        failed = next((c for c in self.checks if c.status == "fail"), None)
        if failed is not None:
            return failed.code
        if self.verdict is not None and not self.verdict.passed:
            return "attestation_failed"
        if self.policy is not None and self.policy.outcome == "deny":
            return "policy_denied"
        if self.policy is None and self.recorded.get("policy_outcome") == "deny":
            return "policy_denied_recorded"
        return "ok" if self.key_trusted else "checkpoint_key_untrusted"

    @property
    def exit_code(self) -> int:
        """3 when the evidence is not intact, 1 when the reply fails or is denied, else 0."""
        if not self.intact:
            return ExitCode.INTEGRITY
        return ExitCode.OK if self.code == "ok" else ExitCode.FINDING

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the result, the checks, the verdict and the policy result."""
        return {
            "result": self.code,
            "intact": self.intact,
            "payload_id": self.payload_id,
            "seq": self.seq,
            "key_trusted": self.key_trusted,
            "origin": self.origin,
            "checks": [c.to_dict() for c in self.checks],
            "verdict": self.verdict.to_dict() if self.verdict is not None else None,
            "policy": self.policy.to_dict() if self.policy is not None else None,
            "recorded": dict(self.recorded),
        }

    def summary(self) -> list[str]:
        """Lines for people: integrity first, then the reply's acceptance, never one for the other."""
        lines = [f"payload_id={self.payload_id} seq={self.seq}  {self.code.upper()}"]
        if not self.intact:
            lines += [f"  FAIL {c.check:<16} {c.code}: {c.detail}" for c in self.checks if c.status == "fail"]
            lines.append("  the evidence is not intact: nothing in it is appraised")
            return lines
        key = "the given key" if self.key_trusted else "the key the bundle names (untrusted: pass --key)"
        lines.append(
            f"  evidence intact: record, inclusion proof, checkpoint of log {self.origin} signed by {key}, "
            "blobs, anchor"
        )
        if self.verdict is not None:
            lines.append(f"  quote: {self.verdict.result}")
            for finding in self.verdict.findings:
                if finding.status == "fail" or finding.check == "aik_anchor":
                    lines.append(f"    {finding.status} {finding.check}: {finding.code}: {finding.detail}")
        if self.policy is not None:
            lines.append(f"  {self.policy.summary()}")
        elif self.recorded.get("policy_outcome") is not None:
            lines.append(
                f"  policy as recorded by the client: {self.recorded.get('policy')}: "
                f"{self.recorded.get('policy_outcome')}"
            )
        return lines


def _fail(check: str, code: str, detail: str) -> BundleCheck:
    return BundleCheck(check, "fail", code, detail)


def _checkpoint_check(note: str, key: Ed25519PublicKey) -> tuple[BundleCheck, Any]:
    try:
        if not signed_by(note, key):
            return _fail("checkpoint", "checkpoint_wrong_key", "no signature by this key"), None
        checkpoint = verify_checkpoint(note, key)
    except NoteError as exc:
        return _fail("checkpoint", "checkpoint_signature_invalid", str(exc)), None
    return BundleCheck("checkpoint", "pass", "checkpoint_signed", f"size {checkpoint.size}"), checkpoint


def _inclusion_checks(bundle: Mapping[str, Any], record: bytes, checkpoint: Any) -> list[BundleCheck]:
    problems: list[BundleCheck] = []
    if leaf_hash(record).hex() != bundle["leaf_sha256"]:
        problems.append(_fail("record", "record_altered", "the record's bytes do not hash to its leaf"))
    try:
        proof = parse_tlog_proof(bundle["inclusion_proof"])
    except IntegrityError as exc:
        return [*problems, _fail("inclusion_proof", "inclusion_proof_invalid", exc.message)]
    if checkpoint is not None:
        try:
            verify_inclusion(leaf_hash(record), proof.index, checkpoint.size, proof.hashes, checkpoint.root)
        except ProofError as exc:
            problems.append(_fail("inclusion_proof", "inclusion_proof_invalid", str(exc)))
    if proof.record is not None and proof.record != record:
        problems.append(_fail("record", "bundle_record_mismatch", "the proof carries other record bytes"))
    if proof.note != bundle["checkpoint"]:
        problems.append(_fail("checkpoint", "bundle_checkpoint_mismatch", "the proof leads to another note"))
    if proof.index != bundle["seq"]:
        problems.append(_fail("record", "record_seq_mismatch", "the proof is for another position"))
    return problems


def _content_checks(bundle: Mapping[str, Any], document: Mapping[str, Any]) -> list[BundleCheck]:
    problems: list[BundleCheck] = []
    if document.get("seq") != bundle["seq"]:
        problems.append(_fail("record", "record_seq_mismatch", "the record says another position"))
    if bundle.get("payload_id") != document.get("payload_id"):
        problems.append(
            _fail("payload_id", "bundle_payload_id_mismatch", "the bundle names another one than its record")
        )
    blobs = bundle["blobs"]
    for digest, text in blobs.items():
        data = _b64_or_none(text)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            problems.append(_fail("blobs", "blob_altered", f"blob {digest[:16]}... does not hash to its key"))
    metadata = document.get("metadata")
    for what, digest in references(metadata) if isinstance(metadata, Mapping) else ():
        if not isinstance(digest, str) or digest not in blobs:
            problems.append(_fail("blobs", "blob_missing", f"the {what} the record references is missing"))
    if bundle["anchor"] != anchor_copy(document):
        problems.append(
            _fail("anchor", "anchor_altered", "the anchor evidence shown is not the record's own")
        )
    return problems


def _b64_or_none(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_bundle(
    bundle: Mapping[str, Any],
    *,
    key: Ed25519PublicKey | None,
    roots: Any = None,
    policy: Any = None,
) -> BundleResult:
    """Check a parsed bundle (:func:`parse_bundle`) with no network and no log.

    The checkpoint's signature by ``key`` (None: the key the bundle names, which proves nothing
    against whoever wrote the bundle; the result says so), the record's inclusion under that root,
    the blobs' digests and the anchor copy; then, only when all are intact, the quote again
    (:func:`nomyo_audit.policy.verify_record`: bound to the record's payload id and recorded content
    digest, the AIK's anchor re-checked at its recorded time against ``roots``, default the shipped
    TPM roots) and ``policy`` at the record's own time. Raises nothing for bad evidence.
    """
    from ..policy._appraise import appraise, stored_record
    from ..tpm import TrustStore

    record = decode_base64(bundle["record"], "record")
    trusted = key is not None
    if key is None:
        key = _named_key(bundle)
    checks: list[BundleCheck] = []
    checkpoint = None
    if key is None:
        checks.append(_fail("checkpoint", "checkpoint_wrong_key", "no key given, and the bundle names none"))
    else:
        check, checkpoint = _checkpoint_check(bundle["checkpoint"], key)
        checks.append(check)
    problems = _inclusion_checks(bundle, record, checkpoint)
    document = record_document(record)
    if document is None:
        problems.append(_fail("record", "record_malformed", "the record is not a JSON object"))
    else:
        problems += _content_checks(bundle, document)
    checks += problems or [BundleCheck("inclusion_proof", "pass", "record_included", "under the signed root")]
    payload_id = document.get("payload_id") if document is not None else None
    named = payload_id if isinstance(payload_id, str) else None
    origin = checkpoint.origin if checkpoint is not None else None  # the signed one, never log.origin
    result = BundleResult(tuple(checks), named, bundle["seq"], trusted, origin=origin)
    if not result.intact or document is None or origin is None:
        return result
    blobs = {d: base64.b64decode(t) for d, t in bundle["blobs"].items()}
    stored = stored_record(document, origin, blobs.get)
    if roots is None and policy is not None:
        from ..policy._anchor_rule import policy_roots

        roots = policy_roots(policy.spec)
    appraisal = appraise(stored, policy, at=stored.received_at, roots=roots or TrustStore.bundled())
    recorded = document.get("policy")
    return BundleResult(
        result.checks,
        result.payload_id,
        result.seq,
        trusted,
        appraisal.verdict,
        appraisal.result,
        {
            "outcome": document.get("outcome"),
            "time": document.get("time"),
            "policy": recorded.get("policy") if isinstance(recorded, Mapping) else None,
            "policy_outcome": recorded.get("outcome") if isinstance(recorded, Mapping) else None,
        },
        origin,
    )


def _named_key(bundle: Mapping[str, Any]) -> Ed25519PublicKey | None:
    """The key the bundle's ``log.public_key`` names (a note verifier key), or None."""
    text = bundle["log"].get("public_key")
    if not isinstance(text, str) or text.count("+") < 2:
        return None
    raw = text.split("+", 2)[2]  # name+keyid+base64: the name and key id hold no "+", base64 may
    try:
        decoded = base64.b64decode(raw, validate=True)
        return Ed25519PublicKey.from_public_bytes(decoded[1:]) if decoded[:1] == b"\x01" else None
    except (binascii.Error, ValueError):
        return None
