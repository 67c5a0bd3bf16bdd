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

__all__ = ["is_cpu_root", "tpm_anchors"]

_CN = "2.5.4.3"
#: AMD SEV: ARK-<product>, SEV-<product> (ASK), SEV-VLEK-<product> (ASVK); Intel SGX/TDX: "Intel SGX ...".
_CPU_CN = re.compile(r"^(ark|sev|sev-vlek)-(milan|genoa|turin|naples|rome|siena)$|^intel sgx ")
#: per store: its filtered copy, or None when it holds no CPU root (never the store itself: a value
#: that refers to its weak key would keep it alive)
_FILTERED: weakref.WeakKeyDictionary[TrustStore, TrustStore | None] = weakref.WeakKeyDictionary()


def is_cpu_root(certificate: RawCertificate) -> bool:
    """Whether this certificate is an AMD SEV or Intel SGX CA certificate (by its subject CN)."""
    names = [value for rdn in decode_name(certificate.subject) for oid, value in rdn if oid == _CN]
    return any(_CPU_CN.match(name) for name in names)


def tpm_anchors(store: TrustStore) -> TrustStore:
    """``store`` without CPU attestation roots (the same object when it holds none); computed once
    per store (stores are immutable)."""
    if store not in _FILTERED:
        kept = [c for c in store.certificates if not is_cpu_root(c)]
        _FILTERED[store] = None if len(kept) == len(store) else TrustStore(kept)
    return _FILTERED[store] or store
