"""Appraise an Azure SEV-SNP confidential VM's anchor of the vTPM AIK: ``aik_anchor`` kind
``azure-sev-snp``. Pure, no I/O.

On an Azure SEV-SNP confidential VM the paravisor puts the vTPM's AK into the HCL report's
variable data (:mod:`._hcl`) and binds those bytes into an SEV-SNP attestation report that the
CPU's AMD Secure Processor signs with the chip's VCEK. So the AIK that signed a quote is a key of
a genuine confidential VM's vTPM when, in this order (the order decides which code a bad report
gets; trustee ``deps/verifier/src/az_snp_vtpm/mod.rs`` and kinvolk ``az-cvm-vtpm`` check the same):

1. the HCL report reads (``hcl_malformed``) and holds an SNP report that reads (``snp_malformed``);
2. SHA-256 of the variable data is the report's ``report_data[0:32]`` (``hcl_binding_mismatch``);
3. the HCLAkPub JWK is the quoting AIK (``hcl_ak_mismatch``);
4. the VCEK is a VCEK of the product it claims (``snp_vcek_invalid``, ``snp_wrong_product``), the
   report's CPUID family and model (version 3) are that product's (``snp_wrong_product``), and the
   VCEK chains to that product's ARK in the trust store (``snp_wrong_product`` for another
   product's ASK or ARK, else the certificate layer's codes: ``cert_unknown_root``,
   ``cert_bad_signature``, ``cert_expired`` ...);
5. the report was signed by a VCEK (``snp_signing_key``), the VCEK's hwID is the report's CHIP_ID
   (``snp_chip_mismatch``) and its TCB extensions are the report's REPORTED_TCB
   (``snp_tcb_mismatch``): this VCEK is the key of this chip at this TCB;
6. the VCEK's ECDSA P-384 signature over the report verifies (``snp_signature_invalid``);
7. the guest policy does not allow debugging (``snp_debug_allowed``) and the report was requested
   at VMPL 0, the paravisor's level (``snp_vmpl``).

The TCB status is ``"unknown"``: whether the reported TCB is current needs AMD's collateral (the
KDS's current TCB, revocations), which offline evidence does not carry. A policy can set a floor
(``sev_snp.min_tcb``); nothing here says the TCB is up to date.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import EvidenceError
from ._anchor import AnchorResult
from ._hcl import hcl_ak_matches, parse_hcl_report
from ._public import Public
from ._sev_snp_report import SnpReport, TcbLayout, parse_snp_report, read_tcb
from ._sev_snp_vcek import Product, Vcek, read_vcek, validate_vcek_chain
from ._trust_store import TrustStore
from ._verdict import Finding

__all__ = ["ANCHOR_KIND", "appraise_sev_snp"]

ANCHOR_KIND = "azure-sev-snp"
_VCEK_SIGNING_KEY = 0
_FAMILY_MILAN_GENOA, _FAMILY_TURIN = 0x19, 0x1A


def appraise_sev_snp(
    aik: Public,
    hcl_report: bytes,
    vcek: bytes,
    chain: Sequence[bytes],
    store: Any,
    *,
    at: datetime,
) -> AnchorResult:
    """Whether the HCL report, SNP report and VCEK (DER; ``chain`` the ASK then the ARK, DER, may be
    empty: the store's are used) anchor ``aik`` to the ARK of its AMD product in ``store`` (a
    :class:`TrustStore`) at ``at``. Raises nothing: every failure is a failing finding with its
    code (module docstring)."""
    try:
        return _appraise(aik, hcl_report, vcek, chain, store, at)
    except EvidenceError as exc:  # CertificateError included: its code names the certificate problem
        return _fail(exc.code, exc.message)


def _appraise(
    aik: Public, hcl_report: bytes, vcek_der: bytes, chain: Sequence[bytes], store: TrustStore, at: datetime
) -> AnchorResult:
    hcl = parse_hcl_report(hcl_report)
    if hcl.report_type != "snp":
        raise EvidenceError("the HCL report holds a TDX report, not an SEV-SNP one", code="hcl_malformed")
    report = parse_snp_report(hcl.hw_report)
    if not hmac.compare_digest(hashlib.sha256(hcl.variable_data).digest(), report.report_data[:32]):
        raise EvidenceError(
            "SHA-256 of the HCL variable data is not the SNP report's report_data: the AK it names is "
            "not the one the CPU report binds",
            code="hcl_binding_mismatch",
        )
    if not hcl_ak_matches(hcl, aik):
        raise EvidenceError("the HCL report's HCLAkPub is not the quoting AIK", code="hcl_ak_mismatch")
    vcek = read_vcek(vcek_der)
    _check_cpuid(report, vcek.product)
    path = validate_vcek_chain(vcek, chain, store, at=at)
    _check_vcek_binds(report, vcek)
    try:
        signature = encode_dss_signature(report.signature_r, report.signature_s)
        vcek.public_key.verify(signature, report.signed, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise EvidenceError(
            "the SNP report's signature does not verify with the VCEK", code="snp_signature_invalid"
        ) from None
    if report.debug:
        raise EvidenceError(
            "the guest policy allows the hypervisor to debug the VM", code="snp_debug_allowed"
        )
    if report.vmpl != 0:
        raise EvidenceError(
            f"the SNP report was requested at VMPL {report.vmpl}, not by the paravisor at VMPL 0",
            code="snp_vmpl",
        )
    root = path[-1].sha256
    facts = {
        "anchor_kind": ANCHOR_KIND,
        "chain_subjects": [c.subject_text for c in path],
        "anchor_root_sha256": root,
        "manufacturer": "AMD",
        "tpm_model": None,
        "tpm_firmware_version": None,
        "platform": _platform_facts(report, vcek),
    }
    finding = Finding(
        "aik_anchor",
        "pass",
        "aik_anchored_azure_sev_snp",
        f"HCL report binds the AIK into an SEV-SNP report signed by an AMD {vcek.product} VCEK "
        f"to root {root[:16]}... (TCB status unknown: no AMD collateral)",
    )
    return AnchorResult(
        finding, facts, max(c.not_before for c in path), min(c.not_after for c in path)
    )


def _check_cpuid(report: SnpReport, product: Product) -> None:
    """A version 3 report names the CPU family and model: they must be the VCEK's product's
    (family 19h models 0xh Milan, 1xh and Axh Genoa; family 1Ah Turin: go-sev-guest ``kds``)."""
    if report.cpuid is None:
        return
    family, model, _ = report.cpuid
    if family == _FAMILY_TURIN:
        actual = "Turin"
    elif family == _FAMILY_MILAN_GENOA and model >> 4 == 0:
        actual = "Milan"
    elif family == _FAMILY_MILAN_GENOA and model >> 4 in (0x1, 0xA):
        actual = "Genoa"
    else:
        actual = f"family {family:#x} model {model:#x}"
    if actual != product:
        raise EvidenceError(
            f"the SNP report comes from an AMD {actual} CPU, the VCEK is for {product}",
            code="snp_wrong_product",
        )


def _check_vcek_binds(report: SnpReport, vcek: Vcek) -> None:
    if report.signing_key != _VCEK_SIGNING_KEY:
        raise EvidenceError(
            f"the SNP report was signed by key {report.signing_key} (1 VLEK, 7 none), not by a VCEK",
            code="snp_signing_key",
        )
    if not any(report.chip_id):
        raise EvidenceError(
            "the SNP report's CHIP_ID is masked (all zero): no VCEK can be tied to the chip",
            code="snp_chip_mismatch",
        )
    chip = report.chip_id[: len(vcek.hw_id)]
    if not hmac.compare_digest(chip, vcek.hw_id) or any(report.chip_id[len(vcek.hw_id) :]):
        raise EvidenceError(
            "the VCEK is another chip's: its hwID is not the SNP report's CHIP_ID", code="snp_chip_mismatch"
        )
    reported = read_tcb(report.reported_tcb_raw, _layout(vcek.product))
    if reported != vcek.tcb:
        raise EvidenceError(
            f"the VCEK is for TCB {vcek.tcb.facts()}, the SNP report's REPORTED_TCB is {reported.facts()}",
            code="snp_tcb_mismatch",
        )


def _platform_facts(report: SnpReport, vcek: Vcek) -> dict[str, Any]:
    return {
        "cloud": "azure",
        "cpu": "amd-sev-snp",
        "product": vcek.product,
        "report_version": report.version,
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "policy": report.policy,
        "debug": report.debug,
        "vmpl": report.vmpl,
        "reported_tcb": read_tcb(report.reported_tcb_raw, _layout(vcek.product)).facts(),
        "chip_id": report.chip_id.hex(),
        "tcb_status": "unknown",
    }


def _layout(product: Product) -> TcbLayout:
    """Turin's TCB_VERSION bytes are ordered differently from Milan's and Genoa's."""
    return "turin" if product == "Turin" else "milan-genoa"


def _fail(code: str, detail: str) -> AnchorResult:
    return AnchorResult(Finding("aik_anchor", "fail", code, detail), {})
