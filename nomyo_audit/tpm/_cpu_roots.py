"""Keep the CPU vendors' attestation roots out of TPM certificate chains. Pure, no I/O.

The shipped trust store (and a ``--roots`` directory) holds AMD's SEV-SNP ARK/ASK and Intel's SGX
root beside the TPM manufacturers' roots, so one store serves every anchor kind. But a CPU
attestation root vouches for CPU keys, never for a TPM: AMD's VCEK or Intel's PCK certificate is
not an EK or AK certificate, and the TCG EK profile is lenient enough (real EK certificates lack its
extended key usage and name their TPM in the subject) that a VCEK, chained to the ARK, would
otherwise validate as an "EK certificate". :func:`tpm_anchors` is the store EK and AK chains are
validated against: the same anchors without the CPU roots. The SEV-SNP and TDX appraisers pick
their own product's root out of the full store instead.
"""

from __future__ import annotations

import re
import weakref

from ._trust_store import TrustStore
from ._x509 import RawCertificate, decode_name

__all__ = ["by_common_name", "common_name", "is_cpu_root", "tpm_anchors"]

_CN = "2.5.4.3"
#: AMD SEV: ARK-<product>, SEV-<product> (ASK), SEV-VLEK-<product> (ASVK); Intel SGX/TDX: "Intel SGX ...".
_CPU_CN = re.compile(r"^(ark|sev|sev-vlek)-(milan|genoa|turin|naples|rome|siena)$|^intel sgx ")
#: per store: its filtered copy, or None when it holds no CPU root (never the store itself: a value
#: that refers to its weak key would keep it alive)
_FILTERED: weakref.WeakKeyDictionary[TrustStore, TrustStore | None] = weakref.WeakKeyDictionary()
_BY_CN: weakref.WeakKeyDictionary[TrustStore, dict[str, tuple[RawCertificate, ...]]] = (
    weakref.WeakKeyDictionary()
)


def common_name(raw_name: bytes) -> str:
    """The (case-folded) CN of a DER Name, or "" when it has none or several."""
    values = [value for rdn in decode_name(raw_name) for oid, value in rdn if oid == _CN]
    return values[0] if len(values) == 1 else ""


def by_common_name(store: TrustStore) -> dict[str, tuple[RawCertificate, ...]]:
    """The store's certificates by their subject's case-folded CN; computed once per store (stores
    are immutable), so picking a product's roots costs a lookup, not a decode of every name."""
    found = _BY_CN.get(store)
    if found is None:
        grouped: dict[str, list[RawCertificate]] = {}
        for certificate in store.certificates:
            grouped.setdefault(common_name(certificate.subject), []).append(certificate)
        found = _BY_CN[store] = {name: tuple(group) for name, group in grouped.items()}
    return found


def is_cpu_root(certificate: RawCertificate) -> bool:
    """Whether this certificate is an AMD SEV or Intel SGX CA certificate (by its subject CN)."""
    return bool(_CPU_CN.match(common_name(certificate.subject)))


def tpm_anchors(store: TrustStore) -> TrustStore:
    """``store`` without CPU attestation roots (the same object when it holds none); computed once
    per store (stores are immutable)."""
    if store not in _FILTERED:
        cpu = {id(c) for name, group in by_common_name(store).items() if _CPU_CN.match(name) for c in group}
        kept = [c for c in store.certificates if id(c) not in cpu]
        _FILTERED[store] = None if len(kept) == len(store) else TrustStore(kept)
    return _FILTERED[store] or store
