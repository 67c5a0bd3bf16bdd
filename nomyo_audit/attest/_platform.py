"""The router's ``platform`` evidence: what a cloud put next to the vTPM to anchor its AK, read once.

At start, with a real TPM, the router reads three NV indices (and fetches nothing, then or later):

* ``0x01400001``: the Azure confidential VM's HCL report (kinvolk/azure-cvm-tooling
  ``az-cvm-vtpm/src/vtpm/mod.rs`` ``VTPM_HCL_REPORT_NV_INDEX``); its hardware report says whether
  the VM is SEV-SNP or TDX;
* ``0x01c10000`` / ``0x01c10002``: the GCE Shielded VM's RSA / ECC AK certificate (go-tpm-tools
  ``client/handles.go`` ``GceAKCertNVIndexRSA`` / ``ECC``).

What the vTPM does not hold comes from a file the operator gives (``serve --platform-evidence
FILE``, a JSON object with any of the ``platform`` fields of docs/protocol.md): the SEV-SNP VCEK and
its ASK/ARK, the TD quote the Azure IMDS returns for the HCL report's TDREPORT (``/acc/tdquote``)
and its collateral, GCE intermediates. :func:`platform_object` (pure) detects the kind and builds
the object; :func:`attach_platform` reads, checks it the way a verifier reads it
(``nomyo_audit.tpm._platform.read_platform``) and hands it to the attester, which attaches it to
every quote. A machine without any of these gets no ``platform``; an HCL report without the CPU
evidence the verifier needs is logged and not attached, never half-sent.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._json import DuplicateKeyError, unique_object
from ..errors import ConfigurationError, EvidenceError

__all__ = [
    "NV_GCE_AK_CERT_ECC",
    "NV_GCE_AK_CERT_RSA",
    "NV_HCL_REPORT",
    "PLATFORM_NV_INDICES",
    "attach_platform",
    "load_platform_file",
    "platform_object",
    "read_platform_nv",
]

logger = logging.getLogger("nomyo_audit.router")

NV_HCL_REPORT = 0x01400001
NV_GCE_AK_CERT_RSA = 0x01C10000
NV_GCE_AK_CERT_ECC = 0x01C10002
PLATFORM_NV_INDICES = (NV_HCL_REPORT, NV_GCE_AK_CERT_RSA, NV_GCE_AK_CERT_ECC)
#: The largest platform evidence file read (a TD quote, a VCEK chain and TCB collateral fit easily).
MAX_PLATFORM_FILE = 256 * 1024
#: The fields a platform evidence file may hold (docs/protocol.md, ``platform``).
FILE_FIELDS = frozenset(
    {"kind", "hcl_report_b64", "td_quote_b64", "collateral", "vcek_pem", "cert_chain_pem",
     "ak_cert_pem", "intermediates_pem"}
)  # fmt: skip
#: What each kind needs beyond what the vTPM holds, and where it comes from.
_NEEDS = {
    "azure-tdx": ("td_quote_b64", "the TD quote the Azure IMDS returns for the HCL report (/acc/tdquote)"),
    "azure-sev-snp": ("vcek_pem", "the VCEK certificate (Azure THIM or AMD KDS)"),
}


def read_platform_nv(source: Any) -> dict[int, bytes]:
    """The contents of the :data:`PLATFORM_NV_INDICES` this TPM defines (I/O, tpm2-pytss), each read
    whole with the owner's authorization (as ``tpm2_nvread -C o`` does), else with the index's own.
    A source without a TPM connection (software) has none."""
    esys = getattr(source, "_esys", None)  # Tpm2QuoteSource's ESAPI context
    if esys is None:
        return {}
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.utils import NVReadEK

    from ._endorsement import _defined_nv

    defined = _defined_nv(esys, NV_HCL_REPORT, 1)
    defined += [i for i in _defined_nv(esys, NV_GCE_AK_CERT_RSA, 3) if i in PLATFORM_NV_INDICES]
    readers = [NVReadEK(esys, auth_handle=ESYS_TR.OWNER), NVReadEK(esys)] if defined else []
    found: dict[int, bytes] = {}
    for index in defined:
        for read in readers:
            try:
                found[index] = bytes(read(index))
                break
            except Exception as exc:  # TSS2_Exception: this authorization may not read the index
                reason = exc
        else:
            raise ConfigurationError(f"cannot read NV index 0x{index:08x}: {type(reason).__name__}")
    return found


def load_platform_file(path: Path) -> dict[str, Any]:
    """The operator's platform evidence file: a JSON object of known ``platform`` fields, bounded and
    strict (no repeated key). Raises ConfigurationError naming the file."""
    try:
        with path.open("rb") as file:  # read to the bound, not to a size stat may not know (FIFO, /dev/zero)
            data = file.read(MAX_PLATFORM_FILE + 1)
    except OSError as exc:
        raise ConfigurationError(f"--platform-evidence {path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_PLATFORM_FILE:
        raise ConfigurationError(f"--platform-evidence {path}: larger than {MAX_PLATFORM_FILE} bytes")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=unique_object)
    except (UnicodeDecodeError, ValueError, DuplicateKeyError, RecursionError):
        raise ConfigurationError(f"--platform-evidence {path}: not a strict UTF-8 JSON object") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"--platform-evidence {path}: not a JSON object")
    unknown = sorted(str(k)[:40] for k in document if k not in FILE_FIELDS)
    if unknown:
        raise ConfigurationError(f"--platform-evidence {path}: unknown fields {', '.join(unknown[:4])}")
    return document


def platform_object(
    nv: Mapping[int, bytes], supplied: Mapping[str, Any], *, aik_is_rsa: bool = True
) -> tuple[dict[str, Any] | None, str]:
    """The ``platform`` object for what the vTPM holds (``nv``, index -> bytes) and the operator
    ``supplied``, and one sentence saying what it is (or why there is none). Pure.

    The kind is the vTPM's: an HCL report makes ``azure-sev-snp`` or ``azure-tdx`` (by its
    hardware report), else a GCE AK certificate makes ``gce`` (the one for the AIK's algorithm
    first); the file's fields complete it. Without anything in NV, a file with a ``kind`` is the
    whole object. Raises ConfigurationError when the HCL report does not read, or when the file
    names another kind than the vTPM's.
    """
    detected, document = _from_nv(nv, supplied, aik_is_rsa)
    stated = supplied.get("kind")
    if detected is None and stated is None:
        return None, "no cloud platform evidence in the vTPM (no HCL report, no GCE AK certificate)"
    if detected is not None and stated is not None and stated != detected:
        raise ConfigurationError(f"--platform-evidence says {stated!r}, the vTPM holds {detected} evidence")
    kind = detected or stated
    document.update({k: v for k, v in supplied.items() if k not in document})
    document["kind"] = kind
    missing = _NEEDS.get(str(kind))
    if missing is not None and missing[0] not in document:
        return None, (
            f"this is an {kind} VM, but no {missing[0]} was given ({missing[1]}): --platform-evidence "
            "FILE; no platform evidence is attached"
        )
    return document, f"{kind} platform evidence attached to every quote"


def _from_nv(
    nv: Mapping[int, bytes], supplied: Mapping[str, Any], aik_is_rsa: bool
) -> tuple[str | None, dict[str, Any]]:
    hcl = nv.get(NV_HCL_REPORT)
    if hcl is not None:
        from ..tpm._hcl import parse_hcl_report

        try:
            report = parse_hcl_report(hcl)
        except EvidenceError as exc:
            raise ConfigurationError(
                f"NV index 0x{NV_HCL_REPORT:08x} holds {len(hcl)} bytes that are not an HCL report "
                f"({exc.code}: {exc.message})"
            ) from None
        kind = "azure-tdx" if report.report_type == "tdx" else "azure-sev-snp"
        return kind, {"hcl_report_b64": base64.b64encode(hcl).decode()}
    order = (
        (NV_GCE_AK_CERT_RSA, NV_GCE_AK_CERT_ECC) if aik_is_rsa else (NV_GCE_AK_CERT_ECC, NV_GCE_AK_CERT_RSA)
    )
    certificate = next((nv[i] for i in order if i in nv), None)
    if certificate is None:
        return None, {}
    from ..tpm._platform import PlatformEvidence

    pem = PlatformEvidence("gce", (_trimmed(certificate),)).to_dict()["ak_cert_pem"]  # the verifier's PEM
    return "gce", {"ak_cert_pem": pem}


def _check_file_anchor(platform: Any, aik: Any, evidence_file: Path | None) -> None:
    """An anchor only the operator's file supplies must name the key this router quotes with: the
    start check of attest._cloud_aik sees the anchors in NV only, so without this a router keeping its
    ephemeral AIK (``auto`` without an anchor in NV) would attach, to every reply, an anchor its quotes
    can never have. Raises ConfigurationError ``cloud_aik_mismatch`` (or ``cloud_anchor_malformed``)."""
    from ._cloud_aik import check_anchor_key

    index = NV_HCL_REPORT if platform.hcl_report else NV_GCE_AK_CERT_RSA
    anchor = platform.hcl_report or (platform.certificates[0] if platform.certificates else b"")
    try:
        check_anchor_key({index: anchor}, aik, index)
    except ConfigurationError as exc:
        what = "HCL report" if platform.hcl_report else "GCE AK certificate"
        raise ConfigurationError(
            f"--platform-evidence {evidence_file}: its {what} names another key than the AIK this router "
            f"quotes with ({exc.code}): every reply would claim an anchor its quotes cannot have (with the "
            "anchor in a file, use --aik-source persistent:HANDLE with the key it names)",
            code=exc.code,
        ) from None


def _trimmed(der: bytes) -> bytes:
    """A certificate read from NV without the index's padding: its outer DER SEQUENCE only."""
    if len(der) < 4 or der[0] != 0x30 or der[1] != 0x82:
        return der
    return der[: 4 + int.from_bytes(der[2:4], "big")]


def attach_platform(
    attester: Any,
    source: Any,
    evidence_file: Path | None = None,
    *,
    read_nv: Callable[[Any], Mapping[int, bytes]] = read_platform_nv,
) -> str:
    """Read the platform evidence once (NV, and ``evidence_file``), check it as a verifier reads it,
    and make ``attester`` attach it to every quote. Returns what was done, also logged, with what a
    verifier holding the bundled roots will say of it now (``hcl_ak_mismatch`` when the cloud
    certified another key than this router's AIK, ``tdx_report_data_mismatch`` for a TD quote of
    another HCL report...): advice for the operator, never a reason to send less. Raises
    ConfigurationError for evidence that does not read."""
    from datetime import datetime, timezone

    from ..tpm._marshal import ALG
    from ..tpm._platform import appraise_platform, read_platform
    from ..tpm._public import parse_public
    from ..tpm._trust_store import TrustStore

    supplied = load_platform_file(evidence_file) if evidence_file is not None else {}
    aik = parse_public(source.aik_public)
    nv = read_nv(source)
    document, note = platform_object(nv, supplied, aik_is_rsa=aik.type == ALG.RSA)
    if document is not None:
        try:
            platform = read_platform(document)
        except EvidenceError as exc:
            raise ConfigurationError(f"the platform evidence does not read: {exc.message}") from None
        if not any(index in nv for index in PLATFORM_NV_INDICES):
            _check_file_anchor(platform, aik, evidence_file)
        attester.set_platform(document)
        now = datetime.now(timezone.utc)
        finding = appraise_platform(aik, platform, TrustStore.bundled(), at=now).finding
        note += f"; a verifier with the bundled roots says: {finding.status} {finding.code}"
        if finding.status != "pass":
            note += f" ({finding.detail[:200]})"
    logger.info("platform: %s", note)
    return note
