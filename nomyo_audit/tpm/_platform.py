"""The ``platform`` extension of ``tpm_attestation``: a cloud's own anchor of the vTPM's AK. Pure.

A router on a cloud VM attaches what the cloud put next to its vTPM (docs/protocol.md, "platform"):

* ``{"kind": "gce", "ak_cert_pem": str, "intermediates_pem": [str]}``: Google's AK certificate;
* ``{"kind": "azure-sev-snp", "hcl_report_b64": str, "vcek_pem": str, "cert_chain_pem": [str]}``:
  the HCL report (with the AMD SEV-SNP report that binds the AK) and the chip's VCEK, then ASK, ARK;
* ``{"kind": "azure-tdx", "hcl_report_b64": str, "td_quote_b64": str, "collateral": {...}}``:
  the HCL report and the Intel TD quote that binds it.

:func:`read_platform` reads that object strictly and bounded: an unknown kind or field, a field
of the wrong type, base64 or PEM that does not decode, or anything over its bound is
:class:`EvidenceError` ``platform_malformed``. :func:`appraise_platform` hands the decoded bytes to
the appraiser of the kind (:mod:`._gce`, :mod:`._sev_snp`, :mod:`._tdx`, imported when first
needed). The object authenticates itself (Google's, AMD's or Intel's signatures), so it is read
from the evidence like an AK certificate chain; nothing in it is believed before its appraiser
verified it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from ..errors import EvidenceError
from ._public import Public

__all__ = [
    "ANCHOR_KINDS",
    "MAX_COLLATERAL",
    "MAX_HCL_REPORT",
    "MAX_PEM",
    "MAX_PLATFORM_CERTIFICATES",
    "MAX_TD_QUOTE",
    "PlatformEvidence",
    "appraise_platform",
    "read_platform",
]

PlatformKind = Literal["gce", "azure-sev-snp", "azure-tdx"]
#: the ``anchor_kind`` (and ``aik_trust`` mode) each platform kind establishes
ANCHOR_KINDS: dict[str, str] = {
    "gce": "gce-ak-cert",
    "azure-sev-snp": "azure-sev-snp",
    "azure-tdx": "azure-tdx",
}
#: bounds on untrusted input: decoded bytes for the reports, text for PEM and collateral
MAX_HCL_REPORT = 8 * 1024
MAX_TD_QUOTE = 16 * 1024
MAX_PEM = 16 * 1024
MAX_PLATFORM_CERTIFICATES = 8
MAX_COLLATERAL = 64 * 1024

#: per kind: (required fields, optional fields); every field is read by its name's suffix
_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gce": (("ak_cert_pem",), ("intermediates_pem",)),
    "azure-sev-snp": (("hcl_report_b64", "vcek_pem"), ("cert_chain_pem",)),
    "azure-tdx": (("hcl_report_b64", "td_quote_b64"), ("collateral",)),
}
_BYTES_BOUND = {"hcl_report_b64": MAX_HCL_REPORT, "td_quote_b64": MAX_TD_QUOTE}
_PEM = re.compile(r"\s*-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END CERTIFICATE-----\s*")


@dataclass(frozen=True)
class PlatformEvidence:
    """A ``platform`` object, decoded: hashable, so an appraisal is cached by its bytes.

    ``certificates`` is DER: for ``gce`` the AK certificate then the intermediates, for
    ``azure-sev-snp`` the VCEK then the chain (ASK, ARK), for ``azure-tdx`` empty. ``collateral``
    is the TDX collateral object as canonical JSON text (None when the router sent none).
    """

    kind: PlatformKind
    certificates: tuple[bytes, ...] = ()
    hcl_report: bytes = b""
    td_quote: bytes = b""
    collateral: str | None = None

    @property
    def anchor_kind(self) -> str:
        """What an ``aik_anchor`` pass on this evidence is called (``gce-ak-cert`` ...)."""
        return ANCHOR_KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The wire form again (certificates as PEM, reports as base64): what :func:`read_platform` reads."""
        document: dict[str, Any] = {"kind": self.kind}
        pems = [_to_pem(der) for der in self.certificates]
        if self.kind == "gce":
            document.update(ak_cert_pem=pems[0], intermediates_pem=pems[1:])
        elif self.kind == "azure-sev-snp":
            document.update(hcl_report_b64=_b64(self.hcl_report), vcek_pem=pems[0], cert_chain_pem=pems[1:])
        else:
            document.update(hcl_report_b64=_b64(self.hcl_report), td_quote_b64=_b64(self.td_quote))
            if self.collateral is not None:
                document["collateral"] = json.loads(self.collateral)
        return document


def read_platform(value: object) -> PlatformEvidence:
    """The ``platform`` object ``value``, checked and decoded. Raises :class:`EvidenceError`
    (``platform_malformed``) naming the field at fault; never anything else."""
    return _decode(_shape(value))


def appraise_platform(aik: Public, platform: PlatformEvidence, store: Any, *, at: datetime) -> Any:
    """The ``aik_anchor`` :class:`~nomyo_audit.tpm._anchor.AnchorResult` of ``platform`` for ``aik``,
    by the appraiser of its kind. Raises nothing: an appraiser that is not installed, or fails
    unexpectedly, is a failing finding."""
    from ._anchor import AnchorResult
    from ._verdict import Finding

    try:
        if platform.kind == "gce":
            from ._gce import appraise_gce

            return appraise_gce(aik, platform.certificates[0], platform.certificates[1:], store, at=at)
        if platform.kind == "azure-sev-snp":
            from ._sev_snp import appraise_sev_snp  # type: ignore[import-not-found,unused-ignore]

            vcek, chain = platform.certificates[0], platform.certificates[1:]
            return appraise_sev_snp(aik, platform.hcl_report, vcek, chain, store, at=at)
        from ._tdx import appraise_tdx  # type: ignore[import-not-found,unused-ignore]

        collateral = json.loads(platform.collateral) if platform.collateral is not None else None
        return appraise_tdx(aik, platform.hcl_report, platform.td_quote, store, at=at, collateral=collateral)
    except ImportError:
        detail = f"this verifier cannot appraise {platform.kind} evidence"
        return AnchorResult(Finding("aik_anchor", "fail", "platform_unsupported", detail), {})
    except EvidenceError as exc:  # an appraiser must not raise; if one does, its code still says why
        return AnchorResult(Finding("aik_anchor", "fail", exc.code, exc.message[:300]), {})


# -- reading ---------------------------------------------------------------------------------------------


def _shape(value: object) -> tuple[Any, ...]:
    """A hashable key of the object, after the checks that need no decoding (types, names, lengths)."""
    if not isinstance(value, Mapping):
        raise _malformed("platform is not an object")
    kind = value.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise _malformed(f"platform kind is not one of {', '.join(sorted(_FIELDS))}")
    required, optional = _FIELDS[kind]
    unknown = sorted(str(k)[:40] for k in value if k != "kind" and k not in required + optional)
    if unknown:
        raise _malformed(f"platform ({kind}) has unknown fields: {', '.join(unknown[:4])}")
    missing = [k for k in required if k not in value]
    if missing:
        raise _malformed(f"platform ({kind}) lacks {', '.join(missing)}")
    key: list[Any] = [kind]
    for name in required + optional:
        item = value.get(name)
        if name == "collateral":
            key.append(_collateral_text(item))
        elif name.endswith("_pem") and name not in ("ak_cert_pem", "vcek_pem"):
            key.append(_texts(item, name, MAX_PLATFORM_CERTIFICATES - 1))
        else:
            key.append(_text(item, name))
    return tuple(key)


def _text(item: object, name: str) -> str:
    bound = MAX_PEM if name.endswith("_pem") else _BYTES_BOUND[name] * 4 // 3 + 4
    if not isinstance(item, str) or not item or len(item) > bound:
        raise _malformed(f"platform.{name} is not text of at most {bound} characters")
    return item


def _texts(item: object, name: str, most: int) -> tuple[str, ...] | None:
    if item is None:
        return None
    if not isinstance(item, list) or len(item) > most:
        raise _malformed(f"platform.{name} is not a list of at most {most} PEM certificates")
    return tuple(_text(entry, name) for entry in item)


def _collateral_text(item: object) -> str | None:
    if item is None:
        return None
    if not isinstance(item, Mapping):
        raise _malformed("platform.collateral is not an object")
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise _malformed("platform.collateral is not a JSON object") from None
    if len(text) > MAX_COLLATERAL:
        raise _malformed(f"platform.collateral is larger than {MAX_COLLATERAL} characters")
    try:  # a lone surrogate (a valid JSON escape) is no text: it has no UTF-8, no RFC 8785 form
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("platform.collateral holds a lone UTF-16 surrogate") from None
    return text


@lru_cache(maxsize=64)
def _decode(key: tuple[Any, ...]) -> PlatformEvidence:
    """Decoded once per distinct object: a router attaches the same one to every quote."""
    kind = key[0]
    if kind == "gce":
        ak, intermediates = key[1], key[2] or ()
        return PlatformEvidence("gce", (_pem(ak, "ak_cert_pem"), *_pems(intermediates, "intermediates_pem")))
    if kind == "azure-sev-snp":
        hcl, vcek, chain = key[1], key[2], key[3] or ()
        certificates = (_pem(vcek, "vcek_pem"), *_pems(chain, "cert_chain_pem"))
        return PlatformEvidence("azure-sev-snp", certificates, hcl_report=_bytes(hcl, "hcl_report_b64"))
    hcl, quote, collateral = key[1], key[2], key[3]
    return PlatformEvidence(
        "azure-tdx",
        hcl_report=_bytes(hcl, "hcl_report_b64"),
        td_quote=_bytes(quote, "td_quote_b64"),
        collateral=collateral,
    )


def _pems(texts: Sequence[str], name: str) -> tuple[bytes, ...]:
    return tuple(_pem(text, name) for text in texts)


def _pem(text: str, name: str) -> bytes:
    match = _PEM.fullmatch(text)
    if match is None:
        raise _malformed(f"platform.{name} is not one PEM CERTIFICATE block")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"platform.{name} is not valid base64 inside its PEM block") from None
    if not der:
        raise _malformed(f"platform.{name} holds an empty certificate")
    return der


def _bytes(text: str, name: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"platform.{name} is not valid base64") from None
    if not data or len(data) > _BYTES_BOUND[name]:
        raise _malformed(f"platform.{name} is empty or larger than {_BYTES_BOUND[name]} bytes")
    return data


def _to_pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    body = "".join(text[i : i + 64] + "\n" for i in range(0, len(text), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="platform_malformed")
