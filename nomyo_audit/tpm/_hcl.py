"""The Azure confidential VM's HCL report: how the paravisor binds the vTPM's AK into a CPU report.

On Azure confidential VMs (SEV-SNP and TDX) the paravisor ("HCL") writes this report to vTPM NV
index 0x01400001. Layout, little-endian, as read from kinvolk/azure-cvm-tooling
``az-cvm-vtpm/src/hcl/mod.rs`` (e4e44074, l.67-93) and confidential-containers/trustee
``deps/verifier/src/az_snp_vtpm/mod.rs`` (78962cd4):

* bytes 0-31: ``AttestationHeader``: signature ``"HCLA"``, version, report_size, request_type,
  status, three reserved words;
* bytes 32-1215: ``hw_report``: the 1184-byte SEV-SNP ATTESTATION_REPORT, or the 1024-byte TDX
  TDREPORT followed by zero padding;
* bytes 1216-1235: ``IgvmRequestData``: data_size, version, report_type (2 SNP, 4 TDX),
  report_data_hash_type (1 SHA-256), variable_data_size;
* the variable data: a UTF-8 JSON object whose ``keys`` hold the AK as the JWK with ``kid``
  ``"HCLAkPub"``. Its exact bytes are what SHA-256 is taken over (the CPU report's report_data
  binds them), so they are kept as read, never re-encoded;
* zero padding to the end of the NV index.

The reader is strict: anything off (a size that does not add up, a non-zero padding byte, a
duplicate JSON key, no AK) is :class:`EvidenceError` ``hcl_malformed``, never a guess. Pure, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import struct
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from .._json import DuplicateKeyError, unique_object
from ..errors import EvidenceError
from ._marshal import ALG
from ._public import Public

__all__ = ["MAX_HCL_REPORT", "HclReport", "hcl_ak_matches", "parse_hcl_report"]

#: The largest HCL report accepted (the NV index is 2600 bytes on every Azure CVM seen).
MAX_HCL_REPORT = 8192
#: The ``kid`` of the vTPM AK in the variable data (``HCL_AKPUB_KEY_ID``, kinvolk ``hcl/mod.rs`` l.17).
AK_KID = "HCLAkPub"

_MAGIC = b"HCLA"
_HEADER = struct.Struct("<4sIIIIIII")
_HW_REPORT_AT, _HW_REPORT_SIZE = 32, 1184
_IGVM = struct.Struct("<IIIII")
_VARIABLE_AT = _HW_REPORT_AT + _HW_REPORT_SIZE + _IGVM.size  # 1236
_TYPES: dict[int, Literal["snp", "tdx"]] = {2: "snp", 4: "tdx"}
_HW_SIZES = {"snp": 1184, "tdx": 1024}
_SHA256 = 1
_KNOWN_VERSIONS = (1, 2)
_MAX_JWK_FIELD = 2048


class HclReport(NamedTuple):
    """An HCL report, read: which CPU report it holds and the data that report binds."""

    report_type: Literal["snp", "tdx"]
    #: the 1184-byte SNP ATTESTATION_REPORT, or the 1024-byte TDREPORT (padding removed)
    hw_report: bytes
    #: the exact bytes whose SHA-256 is the CPU report's report_data[0:32]
    variable_data: bytes
    #: the JWK with kid "HCLAkPub" (the vTPM AK)
    ak_jwk: Mapping[str, Any]


def parse_hcl_report(data: bytes) -> HclReport:
    """Read an HCL report strictly. Raises :class:`EvidenceError` ``hcl_malformed`` for anything off."""
    if not isinstance(data, (bytes, bytearray)) or not _VARIABLE_AT <= len(data) <= MAX_HCL_REPORT:
        raise _malformed(f"an HCL report is {_VARIABLE_AT} to {MAX_HCL_REPORT} bytes")
    data = bytes(data)
    magic, version, report_size, request_type, status, *reserved = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise _malformed("the HCL report does not start with 'HCLA'")
    if version not in _KNOWN_VERSIONS or request_type != 2 or status != 0 or any(reserved):
        raise _malformed(
            f"HCL header version {version}, request type {request_type}, status {status} is not a "
            "completed attestation report of a known version"
        )
    data_size, igvm_version, report_type, hash_type, variable_size = _IGVM.unpack_from(
        data, _HW_REPORT_AT + _HW_REPORT_SIZE
    )
    kind = _TYPES.get(report_type)
    if kind is None or igvm_version != 1 or hash_type != _SHA256:
        raise _malformed(
            f"IgvmRequestData version {igvm_version}, report type {report_type}, hash type {hash_type} "
            "is not an SNP or TDX report bound with SHA-256"
        )
    end = _VARIABLE_AT + variable_size
    if data_size != _IGVM.size + variable_size or report_size != end or end > len(data):
        raise _malformed("the HCL report's sizes do not add up")
    if any(data[end:]):
        raise _malformed("non-zero bytes follow the HCL report's variable data")
    hw = data[_HW_REPORT_AT : _HW_REPORT_AT + _HW_SIZES[kind]]
    if any(data[_HW_REPORT_AT + _HW_SIZES[kind] : _HW_REPORT_AT + _HW_REPORT_SIZE]):
        raise _malformed("non-zero bytes pad the TDREPORT")
    variable = data[_VARIABLE_AT:end]
    return HclReport(kind, hw, variable, _ak_jwk(variable))


def hcl_ak_matches(report: HclReport, aik: Public) -> bool:
    """Whether the report's HCLAkPub is exactly the quoting AIK: an RSA key with equal n and e."""
    if aik.type != ALG.RSA:
        return False
    n, e = _b64url(report.ak_jwk["n"]), _b64url(report.ak_jwk["e"])
    exponent = aik.rsa_exponent or 65537  # TPM2B_PUBLIC writes 0 for the default exponent
    if int.from_bytes(e, "big") != exponent:
        return False
    return hmac.compare_digest(n.lstrip(b"\0"), aik.rsa_modulus.lstrip(b"\0"))


def _ak_jwk(variable: bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(variable.decode("utf-8"), object_pairs_hook=unique_object)
    except (UnicodeDecodeError, ValueError, DuplicateKeyError, RecursionError):
        raise _malformed("the HCL variable data is not a strict UTF-8 JSON object") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise _malformed("the HCL variable data has no 'keys' list")
    aks = [k for k in keys if isinstance(k, dict) and k.get("kid") == AK_KID]
    if len(aks) != 1:
        raise _malformed(f"the HCL variable data holds {len(aks)} keys with kid {AK_KID!r}, not one")
    ak = aks[0]
    if ak.get("kty") != "RSA":
        raise _malformed(f"{AK_KID} is not an RSA key")
    for name in ("n", "e"):
        value = ak.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_JWK_FIELD:
            raise _malformed(f"{AK_KID}'s {name!r} is not base64url text")
        _b64url(value)
    return ak


def _b64url(value: str) -> bytes:
    """Unpadded base64url (RFC 7515 section 2), strictly: no padding, no other alphabet."""
    if not value or "=" in value or len(value) % 4 == 1:
        raise _malformed("a JWK field is not unpadded base64url")
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("a JWK field is not unpadded base64url") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != value:
        raise _malformed("a JWK field is not canonical base64url")
    return decoded


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="hcl_malformed")
