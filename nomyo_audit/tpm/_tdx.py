"""Appraise an Azure TDX confidential VM's anchor for the vTPM's AK: the ``azure-tdx`` kind of
``aik_anchor``. Pure, no I/O.

On an Azure TDX confidential VM the paravisor puts the vTPM's AK (the JWK ``HCLAkPub``) into the
HCL report's variable data (:mod:`._hcl`), whose SHA-256 is the TDREPORT's report_data[0:32]; the
TD quote made from that TDREPORT signs the same report_data. The chain of proof, checked here in
the order DCAP checks it (Intel SGXDataCenterAttestationPrimitives ``QuoteVerification``; google/
go-tdx-guest ``verify/verify.go`` ``verifyQuote`` @ c7c68f5a; confidential-containers/trustee
``deps/verifier/src/az_tdx_vtpm/mod.rs`` @ 78962cd4 for the HCL binding):

1. the PCK certificate chain in the quote leads to a root of the trust store whose subject CN is
   "Intel SGX Root CA" (certificate-layer codes, or ``tdx_pck_chain``);
2. the PCK key signed the Quoting Enclave's report (``tdx_qe_report_invalid``), and that enclave is
   Intel's TD Quoting Enclave (``tdx_qe_identity``): the PCK signs the report of any enclave allowed
   the provisioning key, which a platform owner with flexible launch control can grant to an
   enclave of its own, so only Intel's QE identity makes the attestation key Intel's;
3. that report's report_data[0:32] is SHA-256(attestation key || QE authentication data), the
   rest zero: the attestation key is the QE's (``tdx_qe_binding``);
4. the attestation key signed the quote's header and TD body (``tdx_signature_invalid``);
5. the HCL report is a TDX one, SHA-256 of its variable data is the TDREPORT's report_data[0:32]
   (``hcl_binding_mismatch``), the quote signs that same report_data (``tdx_report_data_mismatch``)
   and the rest of the TDREPORT it was made from: TEE_TCB_INFO's and TDINFO's fields
   (``tdx_tdreport_mismatch``), so no field of the HCL report's TDREPORT says other than the quote;
6. HCLAkPub is exactly the quoting AIK (``hcl_ak_mismatch``);
7. the TD ran on Intel's TDX module: MRSIGNERSEAM and SEAMATTRIBUTES zero, as every TDX tcbInfo's
   ``tdxModule`` identity says (``tdx_module_identity``);
8. the TD is not a debug TD (``tdx_debug``).

Without TCB collateral (Intel's signed tcbInfo for the PCK certificate's FMSPC) nothing says whether
the platform's TCB is up to date: the fact ``tcb_status`` is then ``"unknown"``, stated, never
assumed. The collateral a router may attach is not evaluated yet, so it stays ``"unknown"`` too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from ..errors import CertificateError, EvidenceError
from ._anchor import AnchorResult, validity_window
from ._chain import build_path, read_chain
from ._der import OCTET_STRING, decode_oid, read_one
from ._hcl import HclReport, hcl_ak_matches, parse_hcl_report
from ._public import Public
from ._tdx_quote import TdQuote, parse_td_quote
from ._verdict import Finding
from ._x509 import RawCertificate

__all__ = ["INTEL_SGX_ROOT_CN", "appraise_tdx", "pck_fmspc"]

#: The only root a PCK chain may end at (go-tdx-guest ``rootCertPhrase``).
INTEL_SGX_ROOT_CN = "Intel SGX Root CA"
#: Intel's SGX extension in PCK certificates, and its FMSPC member (Intel "SGX PCK Certificate and
#: Certificate Revocation List Profile Specification", section 1.3.5).
OID_SGX_EXTENSIONS = "1.2.840.113741.1.13.1"
OID_SGX_FMSPC = "1.2.840.113741.1.13.1.4"
#: TDREPORT (REPORTMACSTRUCT) report_data: bytes 128-191 of the 1024-byte TDREPORT (Intel TDX
#: module ABI; trustee ``az_tdx_vtpm`` compares it with the quote's).
_TDREPORT_DATA = slice(128, 192)
#: Where the TD quote body's fields sit in the TDREPORT (Intel TDX Module ABI, TDREPORT_STRUCT):
#: TEE_TCB_SVN .. SEAMATTRIBUTES in TEE_TCB_INFO (after its 8-byte VALID), TDATTRIBUTES .. RTMR3
#: at the start of TDINFO; checked on both real Azure reports.
_TDREPORT_TEE_TCB, _TDREPORT_TDINFO = slice(264, 264 + 0x78), slice(512, 512 + 0x190)
#: Intel's TD Quoting Enclave identity as Intel PCS publishes it (``tdx/certification/v4/qe/identity``,
#: id ``TD_QE``; a copy: edgelesssys/go-tdx-qpl ``blobs/qeidentity.json`` @ 7376c95f): MRSIGNER,
#: ISVPRODID, attributes under their mask, MISCSELECT under its mask. Pinned because no identity
#: collateral is fetched, as Open Enclave pins the SGX QE's MRSIGNER (``qeidentity.c`` ``g_qe_mrsigner``).
TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
TD_QE_ISVPRODID = 2
TD_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
TD_QE_ATTRIBUTES_MASK = bytes.fromhex("fbffffffffffffff0000000000000000")


def appraise_tdx(
    aik: Public,
    hcl_report: bytes,
    td_quote: bytes,
    store: Any,
    *,
    at: datetime,
    collateral: Mapping[str, Any] | None = None,
) -> AnchorResult:
    """Whether the HCL report and the TD quote anchor ``aik`` in a genuine Intel TDX confidential VM
    at ``at`` (timezone-aware), with the PCK chain validated against ``store`` (a TrustStore).

    Raises nothing for any input: every problem is a failing finding with its own code (the module
    docstring lists them; ``hcl_malformed`` and ``tdx_malformed`` for bytes that do not parse).
    """
    try:
        report = parse_hcl_report(hcl_report)
        quote = parse_td_quote(td_quote)
        path = _pck_path(quote, store, at)
        fmspc = pck_fmspc(path[0])
    except (EvidenceError, CertificateError) as exc:
        return _fail(exc.code, exc.message)
    failure = _quote_failure(quote, path[0]) or _binding_failure(report, quote, aik)
    if failure is not None:
        return failure
    body = quote.body
    if any(body.mr_signer_seam) or any(body.seam_attributes):
        return _fail(
            "tdx_module_identity",
            "the TD ran on a TDX module not signed by Intel (MRSIGNERSEAM or SEAMATTRIBUTES is not zero)",
        )
    if body.debug:
        return _fail(
            "tdx_debug", "the TD is a debug TD (TDATTRIBUTES.DEBUG): the host can read and change it"
        )
    subjects = [c.subject_text for c in path]
    root = path[-1].sha256
    platform = {
        "cloud": "azure",
        "cpu": "intel-tdx",
        "mrtd": body.mr_td.hex(),
        "rtmrs": [r.hex() for r in body.rtmrs],
        "mr_seam": body.mr_seam.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "debug": False,
        "fmspc": fmspc.hex(),
        "tcb_status": "unknown",
    }
    facts = {
        "anchor_kind": "azure-tdx",
        "chain_subjects": subjects,
        "anchor_root_sha256": root,
        "manufacturer": "Intel",
        "tpm_model": None,
        "tpm_firmware_version": None,
        "platform": platform,
    }
    why = "no TCB collateral was given" if collateral is None else "the TCB collateral is not evaluated"
    detail = (
        f"HCLAkPub bound into a TD quote (MRTD {body.mr_td.hex()[:16]}...) signed through the PCK chain "
        f"to {INTEL_SGX_ROOT_CN} {root[:16]}...; TCB status unknown: {why} (FMSPC {fmspc.hex()})"
    )
    valid_from, valid_until = validity_window(quote.pck_chain, store, subjects)
    return AnchorResult(
        Finding("aik_anchor", "pass", "aik_anchored_azure_tdx", detail), facts, valid_from, valid_until
    )


def pck_fmspc(pck: RawCertificate) -> bytes:
    """The 6-byte FMSPC (family-model-stepping-platform-custom SKU) of a PCK certificate's SGX
    extension: what TCB collateral is looked up by. Raises CertificateError ``tdx_pck_chain``."""
    extension = pck.extension(OID_SGX_EXTENSIONS)
    if extension is None:
        raise CertificateError("the PCK certificate has no SGX extension", code="tdx_pck_chain")
    sequence, end = read_one(extension.value)
    if end != len(extension.value):
        raise CertificateError("the PCK certificate's SGX extension has bytes after it", code="tdx_pck_chain")
    for member in sequence.children():
        parts = member.children()
        if len(parts) == 2 and decode_oid(parts[0]) == OID_SGX_FMSPC:
            if parts[1].tag != OCTET_STRING or len(parts[1].value) != 6:
                break
            return parts[1].value
    raise CertificateError("the PCK certificate's SGX extension holds no 6-byte FMSPC", code="tdx_pck_chain")


def _pck_path(quote: TdQuote, store: Any, at: datetime) -> list[RawCertificate]:
    certificates = read_chain(quote.pck_chain)
    path = build_path(certificates[0], certificates[1:], store, at=at)
    names = path[-1].certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [INTEL_SGX_ROOT_CN]:
        raise CertificateError(
            f"the PCK chain ends at {path[-1].subject_text!r}, not at the {INTEL_SGX_ROOT_CN}",
            code="tdx_pck_chain",
        )
    if len(path) < 2 or not isinstance(path[0].public_key, ec.EllipticCurvePublicKey):
        raise CertificateError(
            "the PCK certificate is not an ECDSA key issued below the root", code="tdx_pck_chain"
        )
    return path


def _quote_failure(quote: TdQuote, pck: RawCertificate) -> AnchorResult | None:
    """Steps 2-4: Intel's QE report by the PCK, attestation key bound to it, quote by that key."""
    assert isinstance(pck.public_key, ec.EllipticCurvePublicKey)
    if not _verify(pck.public_key, quote.qe_report_signature, quote.qe_report.raw):
        return _fail("tdx_qe_report_invalid", "the QE report's signature does not verify with the PCK key")
    report = quote.qe_report
    attributes = bytes(a & m for a, m in zip(report.attributes, TD_QE_ATTRIBUTES_MASK, strict=True))
    if (report.mr_signer, report.isv_prod_id, attributes, report.misc_select) != (
        TD_QE_MRSIGNER,
        TD_QE_ISVPRODID,
        TD_QE_ATTRIBUTES,
        0,
    ):
        return _fail(
            "tdx_qe_identity",
            f"the PCK signed the report of enclave MRSIGNER {report.mr_signer.hex()[:16]}... ISVPRODID "
            f"{report.isv_prod_id}, not of Intel's TD Quoting Enclave",
        )
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(quote.qe_report.report_data, expected):
        return _fail(
            "tdx_qe_binding",
            "the QE report does not bind the attestation key: its report_data is not "
            "SHA-256(attestation key || QE authentication data)",
        )
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
    except ValueError:
        return _fail("tdx_signature_invalid", "the attestation key is not a point on P-256")
    if not _verify(key, quote.signature, quote.signed):
        return _fail(
            "tdx_signature_invalid", "the TD quote's signature does not verify with its attestation key"
        )
    return None


def _binding_failure(report: HclReport, quote: TdQuote, aik: Public) -> AnchorResult | None:
    """Steps 5-6: the HCL report's variable data, bound by the quote, holds the quoting AIK."""
    if report.report_type != "tdx":
        return _fail("hcl_malformed", "the HCL report holds an SEV-SNP report, not a TDREPORT")
    report_data = report.hw_report[_TDREPORT_DATA]
    if not hmac.compare_digest(hashlib.sha256(report.variable_data).digest(), report_data[:32]):
        return _fail(
            "hcl_binding_mismatch",
            "SHA-256 of the HCL report's variable data is not the TDREPORT's report_data[0:32]",
        )
    if not hmac.compare_digest(quote.body.report_data, report_data):
        return _fail(
            "tdx_report_data_mismatch",
            "the TD quote signs another report_data than the HCL report's TDREPORT",
        )
    tdreport = report.hw_report[_TDREPORT_TEE_TCB] + report.hw_report[_TDREPORT_TDINFO] + report_data
    if not hmac.compare_digest(tdreport, quote.signed[48:]):
        return _fail(
            "tdx_tdreport_mismatch",
            "the TD quote was not made from the HCL report's TDREPORT: their measurements differ",
        )
    if not hcl_ak_matches(report, aik):
        return _fail("hcl_ak_mismatch", "the HCL report's HCLAkPub is not the quoting AIK")
    return None


def _verify(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """ECDSA P-256/SHA-256 with the raw r || s (32 bytes each, big-endian) of Intel's structures."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _fail(code: str, detail: str) -> AnchorResult:
    return AnchorResult(Finding("aik_anchor", "fail", code, detail), {})
