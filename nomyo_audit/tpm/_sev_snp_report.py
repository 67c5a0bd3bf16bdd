"""The AMD SEV-SNP ATTESTATION_REPORT (versions 2 and 3), read strictly. Pure, no I/O.

Layout: AMD "SEV Secure Nested Paging Firmware ABI Specification" (56860), Table "ATTESTATION_REPORT
Structure"; every offset below was checked against virtee/sev ``src/firmware/guest/types/snp.rs``
(``AttestationReport::from_bytes``, e7b634d5), google/go-sev-guest ``abi/abi.go`` (``ReportToProto``,
42a71173) and libkrun ``init/tee/snp_attest.h``, which agree:

=======  ====  =================================================================
offset   size  field
=======  ====  =================================================================
0x000    4     VERSION (2 or 3)
0x004    4     GUEST_SVN
0x008    8     POLICY (bit 19: DEBUG allowed)
0x010    16    FAMILY_ID
0x020    16    IMAGE_ID
0x030    4     VMPL
0x034    4     SIGNATURE_ALGO (1: ECDSA P-384 with SHA-384)
0x038    8     CURRENT_TCB
0x040    8     PLATFORM_INFO
0x048    4     KEY_INFO (bits 2-4 SIGNING_KEY: 0 VCEK, 1 VLEK, 7 none)
0x050    64    REPORT_DATA
0x090    48    MEASUREMENT
0x0C0    32    HOST_DATA
0x0E0    48    ID_KEY_DIGEST
0x110    48    AUTHOR_KEY_DIGEST
0x140    32    REPORT_ID
0x160    32    REPORT_ID_MA
0x180    8     REPORTED_TCB
0x188    3     CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3; reserved in 2)
0x1A0    64    CHIP_ID
0x1E0    8     COMMITTED_TCB
0x1F0    8     LAUNCH_TCB
0x2A0    72    SIGNATURE R (little-endian; only the low 48 bytes may be non-zero)
0x2E8    72    SIGNATURE S (little-endian)
=======  ====  =================================================================

The signature covers bytes 0 to 0x29F. A TCB_VERSION is 8 bytes whose layout depends on the CPU:
Milan and Genoa ``bootloader, tee, 4 reserved, snp, microcode``; Turin (family 1Ah) ``fmc,
bootloader, tee, snp, 3 reserved, microcode`` (virtee ``TcbVersion::from_turin_bytes``,
``from_legacy_bytes``). Anything else (another size, version or algorithm, non-zero bytes where the
signature's unused high bytes are, in the reserved ranges go-sev-guest's ``ReportToProto`` requires
to be zero, or in KEY_INFO's reserved bits) is :class:`EvidenceError` ``snp_malformed``.
"""

from __future__ import annotations

import struct
from typing import Literal, NamedTuple

from ..errors import EvidenceError

__all__ = [
    "POLICY_DEBUG",
    "SIGNED_LENGTH",
    "SNP_REPORT_SIZE",
    "SnpReport",
    "TcbLayout",
    "TcbVersion",
    "parse_snp_report",
    "read_tcb",
]

SNP_REPORT_SIZE = 1184
#: The report's signed bytes: 0 to 0x29F.
SIGNED_LENGTH = 0x2A0
#: GUEST_POLICY bit 19: the hypervisor may debug (read and write) the guest's memory.
POLICY_DEBUG = 1 << 19
_VERSIONS = (2, 3)
_ECDSA_P384_SHA384 = 1
_SIGNATURE_R, _SIGNATURE_S, _SIGNATURE_FIELD, _P384_BYTES = 0x2A0, 0x2E8, 72, 48

TcbLayout = Literal["milan-genoa", "turin"]


class TcbVersion(NamedTuple):
    """The security patch levels of an SNP TCB_VERSION (``fmc`` is 0 before Turin)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int = 0

    def facts(self) -> dict[str, int]:
        """The four levels every product has, as the ``reported_tcb`` fact holds them."""
        return {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}


class SnpReport(NamedTuple):
    """The fields of an ATTESTATION_REPORT a verifier appraises; ``raw`` is the whole report."""

    version: int
    guest_svn: int
    policy: int
    vmpl: int
    signature_algo: int
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    reported_tcb_raw: bytes
    cpuid: tuple[int, int, int] | None  # (family, model, stepping), version 3 only
    chip_id: bytes
    signature_r: int
    signature_s: int
    raw: bytes

    @property
    def signed(self) -> bytes:
        """The bytes the VCEK signed."""
        return self.raw[:SIGNED_LENGTH]

    @property
    def debug(self) -> bool:
        """Whether the guest policy allows the hypervisor to debug the guest."""
        return bool(self.policy & POLICY_DEBUG)


def parse_snp_report(data: bytes) -> SnpReport:
    """Read a version 2 or 3 ATTESTATION_REPORT. Raises :class:`EvidenceError` ``snp_malformed``."""
    if not isinstance(data, (bytes, bytearray)) or len(data) != SNP_REPORT_SIZE:
        raise _malformed(f"an SEV-SNP attestation report is exactly {SNP_REPORT_SIZE} bytes")
    data = bytes(data)
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x000)
    vmpl, algorithm = struct.unpack_from("<II", data, 0x030)
    (key_info,) = struct.unpack_from("<I", data, 0x048)
    if version not in _VERSIONS:
        raise _malformed(f"SEV-SNP report version {version} is not 2 or 3")
    if algorithm != _ECDSA_P384_SHA384:
        raise _malformed(f"SEV-SNP signature algorithm {algorithm} is not ECDSA P-384 with SHA-384")
    reserved = [(0x04C, 0x050), (0x18B if version >= 3 else 0x188, 0x1A0), (0x1EB, 0x1EC), (0x1EF, 0x1F0),
                (0x1F8, SIGNED_LENGTH)]  # fmt: skip
    if key_info >> 5 or any(any(data[low:high]) for low, high in reserved):
        raise _malformed("the SEV-SNP report has non-zero bytes where the ABI reserves zeros")
    r_field = data[_SIGNATURE_R : _SIGNATURE_R + _SIGNATURE_FIELD]
    s_field = data[_SIGNATURE_S : _SIGNATURE_S + _SIGNATURE_FIELD]
    if any(r_field[_P384_BYTES:]) or any(s_field[_P384_BYTES:]) or any(data[0x330:]):
        raise _malformed("the SEV-SNP report's signature area holds bytes beyond a P-384 signature")
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        vmpl=vmpl,
        signature_algo=algorithm,
        signing_key=(key_info >> 2) & 0b111,
        report_data=data[0x050:0x090],
        measurement=data[0x090:0x0C0],
        host_data=data[0x0C0:0x0E0],
        reported_tcb_raw=data[0x180:0x188],
        cpuid=(data[0x188], data[0x189], data[0x18A]) if version >= 3 else None,
        chip_id=data[0x1A0:0x1E0],
        signature_r=int.from_bytes(r_field[:_P384_BYTES], "little"),
        signature_s=int.from_bytes(s_field[:_P384_BYTES], "little"),
        raw=data,
    )


def read_tcb(raw: bytes, layout: TcbLayout) -> TcbVersion:
    """An 8-byte TCB_VERSION in the product's layout."""
    if layout == "turin":
        return TcbVersion(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
    return TcbVersion(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="snp_malformed")
