"""Audit records: what one request leaves behind. Pure: builds bytes, does no I/O.

A record is a versioned JSON document serialised canonically once; those exact
bytes are stored and are the Merkle leaf, never re-serialised to be hashed.
It holds no prompt and no completion: only their digests, keyed with the log's
secret salt (HMAC-SHA256), so a short prompt cannot be guessed back from a
digest by anyone who lacks the log's salt. An auditor holding the plaintext
recomputes ``HMAC-SHA256(salt, canonical JSON)`` with ``nomyo-audit log
digest`` (docs/audit-log.md).

The record's ``v`` names the encoding of its bytes and of its keyed digests:

* ``3`` (written now): RFC 8785 canonical JSON (:mod:`nomyo_audit._canonical`),
  which any language reproduces;
* ``2`` (written before; still read and verified): Python's ``json`` with sorted keys.
  A v3 writer falls back to it only for a record whose values have no canonical JSON
  (NaN or an infinity passed in from Python; nothing a strict parser or the client
  lets through), so the request still leaves its record.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
from collections.abc import Mapping
from typing import Any

from .._canonical import CanonicalJSONError, canonical_json, legacy_json
from .._json import unique_object
from .._version import __version__
from ..tpm._binding import recorded_content_digest as _recorded_content_digest
from ._labels import check_label

__all__ = [
    "RECORD_VERSION",
    "RECORD_VERSIONS",
    "build_record",
    "keyed_digest",
    "recorded_content_digest",
    "with_seq",
]

#: The version :func:`build_record` writes: RFC 8785 canonical JSON.
RECORD_VERSION = 3
#: Every version a reader accepts, with the encoding of its bytes and keyed digests.
RECORD_VERSIONS = {3: canonical_json, 2: legacy_json}


def keyed_digest(salt: bytes, value: Any, version: int = RECORD_VERSION) -> str:
    """HMAC-SHA256 under the log's salt of ``value`` as a record of ``version`` encodes it, hex.

    Raises :class:`nomyo_audit._canonical.CanonicalJSONError` (v3) when ``value`` has no
    canonical JSON, ``ValueError`` or ``TypeError`` (v2) when it is not JSON data, and
    ``KeyError`` for a version no reader knows.
    """
    return hmac.digest(salt, RECORD_VERSIONS[version](value), "sha256").hex()


def rfc3339(timestamp: float) -> str:
    return (
        _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def build_record(
    *,
    seq: int,
    timestamp: float,
    salt: bytes,
    payload_id: str,
    router: str,
    server_key: str | None,
    model: str | None,
    security_tier: str | None,
    outcome: str,
    request: Mapping[str, Any] | None,
    response: Mapping[str, Any] | None,
    error: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    service: str | None = None,
    tenant: str | None = None,
) -> bytes:
    """The exact bytes of record ``seq``: a v3 record, RFC 8785 canonical JSON.

    ``service`` and ``tenant`` (:mod:`._labels`, checked: ``ConfigurationError`` ``invalid_label``)
    are top-level fields only when given, so a record without them keeps the bytes it always had.

    ``metadata`` defaults to the response's ``_metadata``; it is given on its
    own when the content must not be kept (a policy denial). ``policy`` is the
    client's own policy result; nothing in ``metadata`` stands in for it.

    A record whose values have no canonical JSON (NaN, an infinity) is written as
    v2 instead, which holds them, so that no request is left unrecorded. Raises
    :class:`nomyo_audit._canonical.CanonicalJSONError` only for what neither holds
    (a lone surrogate, a type JSON has no form for), which the client refuses
    before sending.
    """
    if metadata is None and response is not None:
        metadata = response.get("_metadata")
    metadata = dict(metadata) if metadata is not None else None
    # What the client added to _metadata is kept once, outside it: its verdict compactly under
    # "verdict" (the prose is left out: re-verifying the stored evidence reproduces it, see
    # nomyo-audit verify --log). The policy result is only ever the ``policy`` argument, the
    # client's own evaluation: a "policy" in _metadata is either a copy of it or the router's
    # word (which would make an unattested reply look passed), so it is dropped, never used.
    verification: Any = None
    if metadata is not None:
        verification = metadata.pop("verification", None)
        metadata.pop("policy", None)
    content = {k: v for k, v in response.items() if k != "_metadata"} if response is not None else None
    fields = {
        "seq": seq,
        "time": rfc3339(timestamp),
        "payload_id": payload_id,
        "router": router,
        "server_key_sha256": server_key,
        "model": model,
        "security_tier": security_tier,
        "outcome": outcome,
        "error": dict(error) if error else None,
        "metadata": metadata,
        "verdict": _compact_verdict(verification),
        "policy": dict(policy) if policy else None,
        "tool": _TOOL,
    }
    for name, label in (("service", service), ("tenant", tenant)):
        if label is not None:
            fields[name] = check_label(name, label)
    try:
        return _encode_record(RECORD_VERSION, salt, request, content, fields)
    except CanonicalJSONError as exc:
        try:
            return _encode_record(2, salt, request, content, fields)
        except (ValueError, TypeError, RecursionError):
            raise exc from None


def _encode_record(
    version: int, salt: bytes, request: Any, content: Any, fields: Mapping[str, Any]
) -> bytes:
    document = {
        "v": version,
        **fields,
        "request_digest": keyed_digest(salt, request, version) if request is not None else None,
        "response_digest": keyed_digest(salt, content, version) if content is not None else None,
    }
    return RECORD_VERSIONS[version](document)


_TOOL = f"nomyo-audit {__version__}"


def _compact_verdict(verification: Any) -> dict[str, Any] | None:
    """The verdict without its prose; a malformed one is kept as far as it reads, never raised on."""
    if not isinstance(verification, Mapping) or not verification:
        return None
    findings = verification.get("findings")
    findings = [f for f in findings if isinstance(f, Mapping)] if isinstance(findings, list) else []
    compact = {
        "result": verification.get("result"),
        "failed": [f.get("code") for f in findings if f.get("status") == "fail"],
        "findings": {str(f.get("check")): [f.get("status"), f.get("code")] for f in findings},
        "facts": verification.get("facts") or {},
        "content_digest": verification.get("content_digest"),
    }
    anchor = verification.get("anchor")
    if anchor is not None:  # the anchor evidence (versioned, tpm._anchor), to re-check offline
        compact["anchor"] = anchor
    return compact


def with_seq(data: bytes, seq: int) -> bytes:
    """The same record with ``seq`` as its position: parse strictly, set seq, re-encode.

    A server log's sequencer gives a record its position after the writer built it (with seq
    0): the record is re-encoded with its own version's encoder, so ``with_seq(build(0), n) ==
    build(n)`` for every record version. The sequencer runs this for every record, so a record
    whose one ``seq`` key is the top-level one just gets new digits (what re-encoding gives);
    any other is parsed. Raises ``ValueError`` for bytes that are not a record (not a JSON
    object, a repeated key, no integer ``seq``, a version no reader knows).
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError("a record's seq is a non-negative integer")
    fast = _with_seq_in_place(data, seq)
    return fast if fast is not None else _with_seq_parsed(data, seq)


_KEY_SEQ = (b',"seq":', b'{"seq":')
_KEY_V = (b',"v":', b'{"v":')
_VERSION_TEXT = {str(version).encode() for version in RECORD_VERSIONS}


def _only_key(data: bytes, patterns: tuple[bytes, bytes]) -> int:
    """Where the value of the one key named so starts, or -1 (none, or more than one).

    Both encoders are compact (no spaces) and escape every ``"`` inside a string, so
    ``,"seq":`` or ``{"seq":`` occurs in the bytes exactly where an object has the key ``seq``.
    """
    inner, first = data.count(patterns[0]), data.count(patterns[1])
    if inner + first != 1:
        return -1
    pattern = patterns[0] if inner else patterns[1]
    return data.find(pattern) + len(pattern)


def _integer_end(data: bytes, start: int) -> int:
    """Where the unsigned JSON integer at ``start`` ends (followed by , or }), or -1."""
    end = start
    while end < len(data) and 0x30 <= data[end] <= 0x39:
        end += 1
    if end == start or end >= len(data) or data[end] not in b",}":
        return -1
    if data[start] == 0x30 and end > start + 1:  # a leading zero: not JSON
        return -1
    return end


def _with_seq_in_place(data: bytes, seq: int) -> bytes | None:
    """The fast path: a record whose only ``seq`` key is the top-level one gets new digits, no parse.

    The record's own encoder writes an integer as its decimal digits, so replacing them is what
    re-encoding gives; a record with a ``seq`` key anywhere else (router metadata), or anything
    not laid out so, returns None and is parsed.
    """
    if data[:1] != b"{" or data[-1:] != b"}":
        return None
    # The one "seq" spelled so is the record's own key only if the bytes are one JSON object
    # (no repeated key, as the careful path requires) with an integer seq and a known version at
    # the top, and no key is spelled with an escape: else a nested seq could be rewritten while
    # the record's own, spelled "\u0073eq" or "seq" :, keeps another position.
    if b"\\u" in data or data.count(b'"seq"') != 1 or data.count(b'"v"') != 1:
        return None
    try:
        document = json.loads(data, object_pairs_hook=unique_object)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if type(document) is not dict or not all(type(document.get(key)) is int for key in ("seq", "v")):
        return None
    version = _only_key(data, _KEY_V)
    if version < 0 or (end := _integer_end(data, version)) < 0 or data[version:end] not in _VERSION_TEXT:
        return None
    start = _only_key(data, _KEY_SEQ)
    if start < 0 or (end := _integer_end(data, start)) < 0:
        return None
    return b"%s%d%s" % (data[:start], seq, data[end:])


def _with_seq_parsed(data: bytes, seq: int) -> bytes:
    """The careful path of :func:`with_seq`: parse strictly, set seq, re-encode."""
    try:
        document = json.loads(data, object_pairs_hook=unique_object)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ValueError("not a record: its bytes are not one JSON object") from None
    if not isinstance(document, dict):
        raise ValueError("not a record: its bytes are not one JSON object")
    version, old = document.get("v"), document.get("seq")
    if type(version) is not int or version not in RECORD_VERSIONS or type(old) is not int:
        raise ValueError("not a record: no known version or no integer seq")
    document["seq"] = seq
    try:
        return RECORD_VERSIONS[version](document)
    except (ValueError, TypeError, RecursionError):
        raise ValueError("not a record: it has no encoding in its own version") from None


def recorded_content_digest(document: Mapping[str, Any]) -> bytes | None:
    """The response-content digest a record's verdict was checked against, for re-appraisal."""
    return _recorded_content_digest(document.get("verdict"))
