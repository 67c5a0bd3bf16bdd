"""Appraising saved evidence offline: read records at the edge, then a pure appraise step per record.

A *record* is one reply's evidence as it was kept: a saved response (its
``_metadata`` is the evidence and its content is re-hashed for the response
binding), a bare ``_metadata`` object, or a record of an audit log (its stored
evidence, checked against the request it was written for). :func:`appraise`
verifies one record's quote and, given a policy, evaluates it at a stated time:
no clock is read and nothing is written, so the same record gives the same
appraisal wherever and whenever it is run.

Only :func:`read_records` touches the file system; everything else takes bytes
or values in and gives values out. Records are produced and appraised one at a
time, so a log of millions of records is appraised in flat memory.
"""

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..audit._blobs import BlobReader, attach_logs
from ..errors import EvidenceError
from ..tpm._anchoring import Anchoring, recorded_anchoring
from ..tpm._binding import legacy_content_digest, recorded_content_digest, response_content_digest
from ..tpm._verify import Verdict, verify_attestation
from ._anchor_rule import policy_roots
from ._evaluate import PolicyResult, evaluate
from ._model import Policy

__all__ = [
    "Appraisal",
    "Record",
    "appraise",
    "appraise_all",
    "parse_records",
    "read_records",
    "stored_record",
    "stored_records",
    "verify_record",
]


@dataclass(frozen=True)
class Record:
    """One response or ``_metadata`` read from an input, and where it came from.

    ``digest_origin`` says what the response binding is checked against:
    ``"content"`` (the response content, re-hashed), ``"recorded"`` (the
    content digest recorded with the evidence) or ``"none"`` (nothing: the
    binding cannot be checked).
    """

    #: where the record came from, for people: ``file``, ``file:line``, ``file[i]`` or ``log#seq``
    source: str
    #: the evidence: a response's ``_metadata``, or the ``_metadata`` object itself
    metadata: dict[str, Any]
    #: the response-content digest the quote must be bound to, or None
    content_digest: bytes | None
    digest_origin: str
    #: the whole response, when the record is one (a policy's ``models`` rule reads its model)
    response: dict[str, Any] | None = None
    #: an audit record's own time: when the client received the reply (seconds since the epoch)
    received_at: float | None = None
    #: the anchor evidence the client recorded (an AnchorEvidence dict) in an audit record whose bytes
    #: matched their leaf; never taken from a file, whose ``_metadata.verification`` anyone can edit
    anchor: Any = None
    #: the model the client asked for, as an audit record keeps it (a policy's ``models`` rule reads it)
    model: str | None = None
    #: the exact extraData the quote must carry (``verify --nonce``: evidence made outside NOMYO),
    #: instead of a NOMYO derivation from the payload id and content
    expected_nonce: bytes | None = None


class Appraisal(NamedTuple):
    """One record's appraisal: the verifier's verdict and, with a policy, the policy's result.

    ``evaluated_at`` is the time ``max_age`` was judged at (seconds since the
    epoch), stated so that the appraisal can be reproduced; None without a policy.
    """

    record: Record
    verdict: Verdict
    result: PolicyResult | None
    evaluated_at: float | None

    @property
    def failed(self) -> bool:
        """True when the policy denied the record or, without a policy, its evidence did not verify."""
        if self.result is not None:
            return self.result.outcome == "deny"
        return not self.verdict.passed


# -- reading (the edge) --------------------------------------------------------------------------------


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record in a file: one JSON value, a JSON array, or JSON Lines.

    The file is read when iteration starts. Raises :class:`nomyo_audit.errors.EvidenceError`
    (code ``unreadable``) when it cannot be read, and whatever :func:`parse_records` raises.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror or exc}", code="unreadable") from None
    yield from parse_records(data, str(path))


def parse_records(data: bytes, label: str) -> Iterator[Record]:
    """The records in ``data`` (one JSON value, a JSON array, or JSON Lines), named after ``label``.

    Raises :class:`nomyo_audit.errors.EvidenceError`: ``unreadable`` for text that
    is not UTF-8, ``invalid_json`` for a value that is not JSON (naming its line),
    ``invalid_input`` for no records at all or a value that is neither a response
    with ``_metadata`` nor a ``_metadata`` object. Nothing is yielded before the
    whole input parsed, so bad input never gives half an appraisal.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EvidenceError(f"{label}:{line}: not UTF-8 text (byte {exc.start})", code="unreadable") from None
    try:
        whole = json.loads(text)
    except RecursionError:
        raise EvidenceError(f"{label}: JSON nested too deeply", code="invalid_json") from None
    except ValueError:
        values = list(_json_lines(text, label))
    else:
        items = whole if isinstance(whole, list) else [whole]
        values = [(label if len(items) == 1 else f"{label}[{i}]", v) for i, v in enumerate(items)]
    if not values:
        raise EvidenceError(f"{label}: no records", code="invalid_input")
    for source, value in values:
        yield _record(source, value)


def _json_lines(text: str, label: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{label}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvidenceError(f"{label}:{number}: not JSON ({exc.msg})", code="invalid_json") from None
            except RecursionError:
                raise EvidenceError(
                    f"{label}:{number}: JSON nested too deeply", code="invalid_json"
                ) from None


def _record(source: str, value: object) -> Record:
    if isinstance(value, dict) and isinstance(value.get("_metadata"), dict):
        return Record(source, value["_metadata"], response_content_digest(value), "content", value)
    if isinstance(value, dict) and ("tpm_attestation" in value or "payload_id" in value):
        recorded = recorded_content_digest(value.get("verification"))
        if recorded is not None:
            return Record(source, value, recorded, "recorded")
        return Record(source, value, None, "none")
    raise EvidenceError(
        f"{source}: neither a response (with _metadata) nor a _metadata object", code="invalid_input"
    )


def stored_records(
    rows: Iterable[bytes], origin: str, blob: Callable[[str], bytes | None] | None = None
) -> Iterator[Record]:
    """Audit-log records (each one record's stored bytes) as verification inputs, one at a time.

    The quote is checked against the ``payload_id`` the record was written for,
    never the one its stored ``_metadata`` names; each record carries its own
    time (:attr:`Record.received_at`), so a re-appraisal a year later judges
    freshness as of then. ``origin`` names the log in each record's source
    (``origin#seq``). The rows are records the log has already checked against
    their own bytes (``AuditLog.store.records``); a row that is not JSON raises
    :class:`ValueError`. ``blob`` reads the event logs the records reference by digest
    (``AuditLog.store.blob``): see :func:`stored_record`.
    """
    reader = BlobReader(blob)
    for data in rows:
        yield stored_record(json.loads(data), origin, reader)


def stored_record(
    document: Mapping[str, Any],
    origin: str,
    blob: "BlobReader | Callable[[str], bytes | None] | None" = None,
) -> Record:
    """One audit-log record (its decoded stored document) as a verification input, as
    :func:`stored_records` and a report's re-appraisal read it. The document is not changed.

    The event logs a record keeps by digest (``event_log_sha256``, ``ima_log_sha256``) are put
    back as the reply carried them, read through ``blob`` (``AuditLog.store.blob``), so stored
    logs are appraised again against new rules. Raises :class:`nomyo_audit.errors.IntegrityError`
    (exit 3) when a referenced log is missing (or no ``blob`` is given) or does not hash to its
    digest: never a verdict without the evidence the record names."""
    metadata = document.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    reader = blob if isinstance(blob, BlobReader) else BlobReader(blob)
    metadata = dict(attach_logs(metadata, reader, f"{origin}#{document.get('seq')}"))
    # the quote is checked against the request the record was written for, never the router's word
    metadata["payload_id"] = document.get("payload_id")
    metadata.setdefault("security_tier", document.get("security_tier"))
    metadata.pop("verification", None)  # only ever the client's own, never a stored claim
    verdict = document.get("verdict")
    digest = recorded_content_digest(verdict)
    model = document.get("model")
    return Record(
        f"{origin}#{document.get('seq')}",
        metadata,
        digest,
        "recorded" if digest else "none",
        received_at=_record_time(document),
        # the client's own anchor evidence, hashed with the record (this row matched its leaf)
        anchor=verdict.get("anchor") if isinstance(verdict, Mapping) else None,
        model=model if isinstance(model, str) else None,
    )


def _record_time(document: Mapping[str, Any]) -> float | None:
    """A record's ``time`` (hashed with it): when the client received the reply."""
    value = document.get("time")
    if not isinstance(value, str):
        return None
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # a time without a zone is UTC, never this machine's local time
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


# -- appraising (pure) -----------------------------------------------------------------------------------


def verify_record(record: Record, *, roots: Any = None) -> Verdict:
    """The verifier's verdict on one record's TPM evidence, bound to its payload id and content.

    With ``roots`` (a :class:`nomyo_audit.tpm.TrustStore`) the AIK's anchor is re-checked against
    it: the anchor evidence the client recorded in an audit log (:attr:`Record.anchor`), at the time
    it was validated, else the quote's AK certificate chain at the record's time (a file's: now).
    Never raises for bad evidence: every problem is a failing finding in the verdict.
    """
    payload_id = record.metadata.get("payload_id")
    pid = payload_id if isinstance(payload_id, str) else None
    evidence = record.metadata.get("tpm_attestation")
    # Offline there is no "our" key: the one the record names is checked (a client refuses a reply
    # whose quote binds another key than its own, so an accepted reply names the client's key).
    client_key = _recorded_client_key(record.metadata.get("client_key_sha256"))
    anchor = None if roots is None else _anchoring(record, roots)
    verdict = verify_attestation(
        evidence,
        pid,
        content_digest=record.content_digest,
        client_key_sha256=client_key,
        anchor=anchor,
        expected_nonce=record.expected_nonce,
    )
    if verdict.result == "pass" or record.digest_origin != "content" or record.response is None:
        return verdict
    # A response saved before RFC 8785 was adopted is bound to the digest of its older encoding
    # (docs/protocol.md, "Canonical JSON"); None when both texts are the same bytes.
    if record.expected_nonce is None and any(f.code == "nonce_mismatch" for f in verdict.findings):
        legacy = legacy_content_digest(record.response)
        if legacy is not None:
            retried = verify_attestation(
                evidence, pid, content_digest=legacy, client_key_sha256=client_key, anchor=anchor
            )
            if not any(f.code == "nonce_mismatch" for f in retried.findings):
                return retried
    return verdict


def _anchoring(record: Record, roots: Any) -> Anchoring:
    at = _dt.datetime.fromtimestamp(record.received_at, _dt.timezone.utc) if record.received_at else None
    return recorded_anchoring(roots, record.anchor, at=at)


def _recorded_client_key(value: object) -> bytes | None:
    if not isinstance(value, str) or len(value) != 64 or not value.isascii():
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def appraise(
    record: Record, policy: Policy | None = None, *, at: float | None = None, roots: Any = None
) -> Appraisal:
    """Verify one record and, given ``policy``, evaluate it with ``max_age`` judged at ``at``.

    ``at`` is seconds since the epoch: the record's own time for a stored
    record, the present for a saved file (:func:`appraise_all` chooses). Without
    a usable ``at`` a policy's ``max_age`` rule fails rather than guess. Never
    raises for bad evidence or metadata: they give failing findings and rule outcomes. ``roots``
    re-checks the AIK's anchor (:func:`verify_record`).
    """
    if roots is None and policy is not None:  # aik_trust ek/ca: the policy's roots (or the shipped ones)
        roots = policy_roots(policy.spec)
    verdict = verify_record(record, roots=roots)
    if policy is None:
        return Appraisal(record, verdict, None, None)
    target = record.response if record.response is not None else record.metadata
    result = evaluate(policy, target, now=at, model=record.model, verdict=verdict)
    return Appraisal(record, verdict, result, at)


def appraise_all(
    records: Iterable[Record],
    policy: Policy | None = None,
    *,
    at: float | None = None,
    now: float,
    roots: Any = None,
) -> Iterator[Appraisal]:
    """Appraise each record as it is read: ``max_age`` judged at ``at``, else at the record's own time.

    A stored record carries when the client received the reply, so re-appraising
    a log a year later gives the freshness outcome it had then. Evidence from
    files carries no such time: it is judged at ``now`` (pass the present), unless
    ``at`` says otherwise. Nothing is kept per record. Raises what reading the
    records raises (:class:`nomyo_audit.errors.EvidenceError` for bad input).
    """
    for record in records:
        when = at if at is not None else record.received_at if record.received_at is not None else now
        yield appraise(record, policy, at=when, roots=roots)
