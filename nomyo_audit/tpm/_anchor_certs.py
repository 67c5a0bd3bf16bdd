"""The certificate layer as the anchor appraisal uses it: chain validation, EK matching, and the time
window in which a validated chain stays valid. Pure, no I/O.

The validation itself is the certificate layer's (``validate_ak_chain``, ``validate_ek_chain``,
``ek_matches_public``, exported by :mod:`nomyo_audit.tpm`); this module only names what
:mod:`._anchor` needs from it, so the appraisal reads as one story.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import CertificateError

__all__ = ["ek_matches_public", "validate_ak_chain", "validate_ek_chain", "validity_window"]


def _layer(name: str) -> Any:
    from .. import tpm

    found = getattr(tpm, name, None)
    if found is None:  # the certificate layer is not installed in this tree
        raise CertificateError(f"the certificate layer has no {name}", code="cert_trust_store")
    return found


def validate_ak_chain(chain: Sequence[bytes], store: Any, aik: Any, *, at: datetime) -> Any:
    """The AK certificate chain's validation (subjects, root_sha256, manufacturer, model, version)."""
    return _layer("validate_ak_chain")(chain, store, aik, at=at)


def validate_ek_chain(ek_der: bytes, chain: Sequence[bytes], store: Any, *, at: datetime) -> Any:
    """The EK certificate chain's validation (subjects, root_sha256, ek)."""
    return _layer("validate_ek_chain")(ek_der, chain, store, at=at)


def ek_matches_public(ek: Any, ek_public: Any) -> bool:
    """Whether the certified EK key is the TPM's EK public area."""
    return bool(_layer("ek_matches_public")(ek, ek_public))


def validity_window(
    chain: Sequence[bytes], store: Any = None, subjects: Sequence[str] = ()
) -> tuple[datetime | None, datetime | None]:
    """The latest notBefore and earliest notAfter of the validated path's certificates: while a time
    lies in between, a chain that validated once validates again. The path is the chain's
    certificates and those the trust store supplied (the root, and intermediates the chain left
    out): every store certificate named in ``subjects`` counts (one of the same name that was not
    on the path only narrows the window). (None, None) when a certificate cannot be read."""
    from ._x509 import read_certificate

    try:
        certificates = [read_certificate(der) for der in chain]
    except CertificateError:
        return None, None
    named = set(subjects)
    certificates += [c for c in getattr(store, "certificates", ()) if c.subject_text in named]
    return max(c.not_before for c in certificates), min(c.not_after for c in certificates)
