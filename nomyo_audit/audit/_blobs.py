"""Event logs and platform evidence kept once, by digest: what a record stores instead. Pure.

A reply's ``tpm_attestation`` may carry a TCG event log (``event_log_b64``, tens of KB) and an
IMA measurement list (``ima_log_b64``, up to MBs), mostly the same ones reply after reply.
Kept in every record they would swell the log a thousandfold, so a record keeps
``event_log_sha256`` / ``ima_log_sha256`` (hex SHA-256 of the decoded bytes) instead, and the
bytes go once per digest into the store's blobs table, in the record's own transaction
(:func:`detach_logs`). Re-appraisal puts them back (:class:`BlobReader`, :func:`attach_logs`):
a missing blob or one that does not hash to its digest is an :class:`IntegrityError`, never a
silent pass. :class:`BlobCheck` is what ``log verify`` checks.

A field that is not canonical base64 is kept as it came (the verdict already failed on it):
only a value that decodes and re-encodes to the very same text is replaced, so putting it back
gives the verifier exactly what the reply carried. A reply's own ``*_sha256`` field of that name
(no part of the protocol, the router's word) is not kept: in a record the name always means a blob.

The cloud ``platform`` object (issue 17: a GCE AK certificate chain, an Azure HCL report with its
VCEK or TD quote: up to ~30 KB, the same reply after reply) is kept the same way: the record keeps
``platform_sha256``, the hex SHA-256 of the object's RFC 8785 canonical JSON bytes, and those bytes
are the blob. Only an object whose canonical bytes parse back to an equal object is replaced, so
putting it back gives the verifier the same object; anything else stays inline, as it came.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._canonical import CanonicalJSONError, canonical_json
from ..errors import IntegrityError

__all__ = [
    "EVIDENCE_PATHS",
    "LOG_FIELDS",
    "PLATFORM_FIELDS",
    "BlobCheck",
    "BlobReader",
    "attach_logs",
    "blob_problems",
    "detach_logs",
    "is_digest",
    "references",
]

#: (field a reply carries, field a record keeps instead, what it is called in messages)
LOG_FIELDS = (
    ("event_log_b64", "event_log_sha256", "event log"),
    ("ima_log_b64", "ima_log_sha256", "IMA log"),
)
#: (the platform object a reply carries, the field a record keeps instead, its name in messages)
PLATFORM_FIELDS = ("platform", "platform_sha256", "platform evidence")
#: Where in a record's ``metadata`` evidence with logs sits: the reply's, and the router key's.
EVIDENCE_PATHS = (("tpm_attestation",), ("key_attestation", "tpm_attestation"))

_REFERENCES = (*(fields[1:] for fields in LOG_FIELDS), PLATFORM_FIELDS[1:])  # (field, what)
_DETACHED = frozenset(name for fields in (*LOG_FIELDS, PLATFORM_FIELDS) for name in fields[:2])
#: What precedes a blob reference's value in a record's bytes (canonical JSON and Python's json alike).
_MARKER = b'_sha256":'
#: What precedes :data:`_MARKER` in a reference's name (other ``*_sha256`` fields are no reference).
_REFERENCE_STARTS = (b"_log", b'"platform')


def is_digest(value: Any) -> bool:
    """A blob key: 64 lowercase hex characters."""
    return (
        isinstance(value, str)
        and len(value) == 64
        and value.isascii()
        and all(c in "0123456789abcdef" for c in value)
    )


class _Recent:
    """The last few logs detached, (text, digest, bytes), so the same log reply after reply costs one
    comparison of its text instead of a decode, a hash and an encode (milliseconds per MB).

    Replies carry the same logs until the machine's state changes; the few kept are bounded
    (``keep`` logs of at most the payload limit each) and compared exactly, never by a hash.
    """

    def __init__(self, keep: int = 4) -> None:
        self._entries: deque[tuple[str, str, bytes]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def decoded(self, value: Any) -> tuple[str, bytes] | None:
        """(SHA-256 hex, bytes) of canonical base64 text (decodes and re-encodes to it), else None."""
        if not isinstance(value, str):
            return None
        with self._lock:
            for text, digest, raw in self._entries:
                if len(text) == len(value) and text == value:
                    return digest, raw
        if not value.isascii():
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if base64.b64encode(raw).decode("ascii") != value:
            return None
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            self._entries.append((value, digest, raw))
        return digest, raw


_RECENT = _Recent()


def _evidence(metadata: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    node: Any = metadata
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def _replace(metadata: Mapping[str, Any], path: tuple[str, ...], evidence: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` with the dict at ``path`` replaced (the dicts on its way copied)."""
    top = dict(metadata)
    node = top
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[path[-1]] = evidence
    return top


def detach_logs(metadata: Mapping[str, Any] | None) -> tuple[Mapping[str, Any] | None, dict[str, bytes]]:
    """``metadata`` as a record keeps it (logs replaced by their digests) and the blobs to store with it.

    ``metadata`` itself is never changed; it is returned as is when it carries no log.
    """
    blobs: dict[str, bytes] = {}
    if not isinstance(metadata, Mapping):
        return metadata, blobs
    result: Mapping[str, Any] = metadata
    for path in EVIDENCE_PATHS:
        evidence = _evidence(result, path)
        if evidence is None or _DETACHED.isdisjoint(evidence):
            continue
        kept = dict(evidence)
        for carried, reference, _ in LOG_FIELDS:
            kept.pop(reference, None)  # the router's word; in a record the name means a blob
            decoded = _RECENT.decoded(kept.get(carried))
            if decoded is not None:
                digest, raw = decoded
                blobs[digest] = raw
                del kept[carried]
                kept[reference] = digest
        _detach_platform(kept, blobs)
        result = _replace(result, path, kept)
    return result, blobs


def _detach_platform(evidence: dict[str, Any], blobs: dict[str, bytes]) -> None:
    """Replace ``evidence``'s platform object by the digest of its canonical bytes, kept in ``blobs``."""
    carried, reference, _ = PLATFORM_FIELDS
    evidence.pop(reference, None)  # the router's word; in a record the name means a blob
    value = evidence.get(carried)
    if not isinstance(value, Mapping):
        return
    try:
        raw = canonical_json(value)
    except CanonicalJSONError:
        return
    if json.loads(raw) != value:  # e.g. integer keys: putting back would not give the same object
        return
    digest = hashlib.sha256(raw).hexdigest()
    blobs[digest] = raw
    del evidence[carried]
    evidence[reference] = digest


def references(metadata: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """(what, digest as stored) of every blob reference in a record's ``metadata``."""
    for path in EVIDENCE_PATHS:
        evidence = _evidence(metadata, path)
        if evidence is not None:
            for reference, what in _REFERENCES:
                if reference in evidence:
                    yield what, evidence[reference]


class BlobReader:
    """Blobs by digest from a store's lookup, checked against their digest, the last few kept.

    A record after record re-appraisal reads the same log again and again: it is fetched,
    hashed and base64-encoded once while it stays among the last ``keep`` read (a platform
    object's bytes likewise, parsed afresh for each record so no caller shares another's dict).
    """

    def __init__(self, lookup: Callable[[str], bytes | None] | None, keep: int = 4) -> None:
        self._lookup = lookup
        self._keep = keep
        self._kept: OrderedDict[tuple[str, str], str | bytes] = OrderedDict()

    def encoded(self, digest: Any, where: str, what: str) -> str:
        """The blob ``digest`` names as base64; :class:`IntegrityError` when it is missing or altered."""
        text = self._read(digest, where, what, "base64", lambda data: base64.b64encode(data).decode("ascii"))
        assert isinstance(text, str)
        return text

    def platform(self, digest: Any, where: str, what: str = PLATFORM_FIELDS[2]) -> dict[str, Any]:
        """The platform object the blob ``digest`` names; :class:`IntegrityError` when missing or altered."""
        raw = self._read(digest, where, what, "json", lambda data: data)
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):  # it hashes to its digest, so only a client bug stored this
            raise IntegrityError(f"{where}: the stored {what} (sha256 {digest[:16]}...) is not a JSON object")
        return value

    def _read(
        self, digest: Any, where: str, what: str, form: str, convert: Callable[[bytes], str | bytes]
    ) -> str | bytes:
        if not is_digest(digest):
            raise IntegrityError(f"{where}: its {what} reference is not a SHA-256 digest (altered)")
        cached = self._kept.get((form, digest))
        if cached is not None:
            self._kept.move_to_end((form, digest))
            return cached
        data = self._lookup(digest) if self._lookup is not None else None
        if data is None:
            raise IntegrityError(
                f"{where}: the {what} it references (sha256 {digest[:16]}...) is missing from the log's blobs"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(
                f"{where}: the stored {what} (sha256 {digest[:16]}...) does not hash to its digest (altered)"
            )
        value = convert(data)
        self._kept[(form, digest)] = value
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return value


def attach_logs(metadata: Mapping[str, Any], reader: BlobReader, where: str) -> Mapping[str, Any]:
    """``metadata`` with every blob reference replaced by what the reply carried: a log's base64,
    the platform object.

    ``metadata`` itself is never changed. Raises :class:`IntegrityError` (exit 3) for a reference
    whose blob is missing or does not hash to it.
    """
    result = metadata
    for path in EVIDENCE_PATHS:
        evidence = _evidence(result, path)
        if evidence is None or not any(reference in evidence for reference, _ in _REFERENCES):
            continue
        kept = dict(evidence)
        for carried, reference, what in LOG_FIELDS:
            if reference in kept:
                kept[carried] = reader.encoded(kept.pop(reference), where, what)
        carried, reference, what = PLATFORM_FIELDS
        if reference in kept:
            kept[carried] = reader.platform(kept.pop(reference), where, what)
        result = _replace(result, path, kept)
    return result


def _all_kept(data: bytes, present: set[bytes]) -> bool:
    """Whether everything in ``data`` shaped like a reference (``…_log_sha256":"<64 hex>"``,
    ``"platform_sha256":"<64 hex>"``) names a kept blob: byte searches only, the fast path of
    :class:`BlobCheck`. One pass for every reference name: their common end, then what precedes it."""
    at = data.find(_MARKER)
    while at >= 0:
        value = at + len(_MARKER)
        if data.endswith(_REFERENCE_STARTS, 0, at):
            if data[value : value + 1] != b'"' or data[value + 65 : value + 66] != b'"':
                return False
            if data[value + 1 : value + 65] not in present:
                return False
        at = data.find(_MARKER, value)
    return True


class BlobCheck:
    """What ``log verify`` finds wrong with the blobs, checked inside its one pass over the records.

    Made from the (key, bytes) rows of the blobs table, as stored: each must hash to its key.
    :meth:`record` then checks one record's bytes: every reference it keeps must name a kept blob.
    The fast path searches the bytes for anything shaped like a reference; only a record with one
    that names no kept blob is parsed, to tell a reference the client wrote (a problem) from a
    field of that name elsewhere in the router's metadata (none). At most ``limit`` problems.
    """

    def __init__(
        self,
        blobs: Iterable[tuple[Any, Any]],
        limit: int = 20,
        lookup: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.limit = limit
        #: reads one blob again: a record appended after ``blobs`` was read may reference a new one
        self._lookup = lookup
        self._absent: set[str] = set()
        self.problems: list[str] = []
        self.present: set[bytes] = set()
        for key, data in blobs:
            if not is_digest(key) or type(data) is not bytes:
                self._problem(f"blob {str(key)[:70]!r}: not a SHA-256 key with bytes (altered)")
            elif hashlib.sha256(data).hexdigest() != key:
                self._problem(f"blob {key[:16]}...: its bytes do not hash to its key (altered)")
            else:
                self.present.add(key.encode())

    def _problem(self, problem: str) -> None:
        if len(self.problems) < self.limit:
            self.problems.append(problem)

    def record(self, seq: Any, data: bytes) -> None:
        """Check one record's stored bytes (not JSON: the record pass names that)."""
        if _all_kept(data, self.present):
            return
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return
        metadata = document.get("metadata") if isinstance(document, dict) else None
        for what, digest in references(metadata) if isinstance(metadata, Mapping) else ():
            if not is_digest(digest):
                self._problem(f"record {seq}: its {what} reference is not a SHA-256 digest (altered)")
            elif digest.encode() not in self.present and not self._kept_since(digest):
                self._problem(f"record {seq}: the {what} it references ({digest[:16]}...) is missing")

    def _kept_since(self, digest: str) -> bool:
        """Whether a blob the first read did not see is kept now (a writer appended it since), intact."""
        if self._lookup is None or digest in self._absent:
            return False
        data = self._lookup(digest)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            if len(self._absent) < 4096:  # a blob every record references is looked up once
                self._absent.add(digest)
            return False
        self.present.add(digest.encode())
        return True


def blob_problems(
    records: Iterable[tuple[Any, Any]], blobs: Iterable[tuple[Any, Any]], limit: int = 20
) -> list[str]:
    """:class:`BlobCheck` over ``records`` ((seq, bytes) rows) and ``blobs`` ((key, bytes) rows)."""
    check = BlobCheck(blobs, limit)
    for seq, data in records:
        if type(data) is bytes:
            check.record(seq, data)
    return check.problems
