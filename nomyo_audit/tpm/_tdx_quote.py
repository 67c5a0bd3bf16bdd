"""The Intel TDX quote, version 4 (ECDSA P-256 attestation key): a strict, bounded reader.

Layout (all integers little-endian), checked against three implementations we did not write:
Intel's SGXDataCenterAttestationPrimitives (``QuoteVerification/QVL/Src/AttestationLibrary/src/
QuoteVerification/QuoteConstants.h`` @ 127cfc0a: the sizes, TEE type 0x81, key type 2, certification
data types 5 and 6), google/go-tdx-guest ``abi/abi.go`` (@ c7c68f5a: the ``quoteHeader*``, ``td*``,
``signedData*``, ``qe*`` offsets) and confidential-containers/trustee ``deps/verifier/src/tdx/quote.rs``
(@ 0257a61b: ``QuoteHeader`` and ``ReportBody2``):

* bytes 0-47, the header: version (u16, 4), attestation key type (u16, 2 = ECDSA-256-with-P-256),
  TEE type (u32, 0x81 = TDX), QE SVN, PCE SVN, QE vendor ID (16, Intel's QE only), user data (20);
* bytes 48-631, the TD quote body (584 bytes): TEE_TCB_SVN (16), MRSEAM (48), MRSIGNERSEAM (48),
  SEAMATTRIBUTES (8), TDATTRIBUTES (8), XFAM (8), MRTD (48), MRCONFIGID (48), MROWNER (48),
  MROWNERCONFIG (48), RTMR0-3 (4 x 48), REPORTDATA (64);
* u32 signature data size, then the signature data: the ECDSA signature (r || s, 64, big-endian)
  over SHA-256 of bytes 0-631, the attestation public key (x || y, 64), and certification data:
  u16 type 6 (QE report certification data) and u32 size, holding the QE's SGX report (384
  bytes; its REPORTDATA at 320-383), the PCK's ECDSA signature over that report (64), the QE
  authentication data (u16 size, bytes), and nested certification data: u16 type 5 and u32 size,
  the PCK certificate chain as concatenated PEM (PCK, intermediate CA, root), NUL-terminated in
  real quotes.

Real Azure TD quotes are zero-padded after the signature data (70 bytes, read from IMDS; go-tdx-guest
keeps such bytes as ``ExtraBytes``): zero padding is accepted, anything else is not. Every other
deviation is :class:`EvidenceError` ``tdx_malformed``. Nothing here checks a signature: that is
:mod:`._tdx`. Pure, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import struct
from typing import NamedTuple

from ..errors import EvidenceError

__all__ = ["INTEL_QE_VENDOR_ID", "MAX_TD_QUOTE", "QeReport", "TdQuote", "TdQuoteBody", "parse_td_quote"]

#: The largest TD quote accepted (real ones are about 5 KiB, most of it the PEM chain).
MAX_TD_QUOTE = 16 * 1024
#: The most certificates a PCK chain may hold (real ones hold three).
MAX_PCK_CHAIN = 8
QUOTE_VERSION = 4
ECDSA_P256 = 2
TEE_TDX = 0x81
QE_REPORT_CERTIFICATION_DATA = 6
#: The header's QE vendor ID of Intel's Quoting Enclave (DCAP ``QuoteConstants.h`` ``INTEL_QE_VENDOR_ID``)
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
PCK_CERT_CHAIN = 5

_HEADER = struct.Struct("<HHI2s2s16s20s")
_BODY_AT, _BODY_SIZE = 48, 584
_SIGNED_END = _BODY_AT + _BODY_SIZE  # 632: the quote signature covers bytes 0-631
_CERT_HEAD = struct.Struct("<HI")
_QE_REPORT_SIZE = 384
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class TdQuoteBody(NamedTuple):
    """The TD's measurements and attributes as the quote signs them (go-tdx-guest ``TDQuoteBody``)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0 (TUD.DEBUG): the host may read and change the TD's memory."""
        return bool(self.td_attributes[0] & 0x01)


class QeReport(NamedTuple):
    """The Quoting Enclave's SGX report (384 bytes) and the fields a verifier reads from it."""

    raw: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


class TdQuote(NamedTuple):
    """A TD quote v4, read: what is signed, by which key, and what certifies that key."""

    header: bytes
    qe_vendor_id: bytes
    body: TdQuoteBody
    #: header || body: the bytes the attestation key signed
    signed: bytes
    #: r || s, 32 bytes each, big-endian
    signature: bytes
    #: the attestation key, x || y on P-256
    attestation_key: bytes
    qe_report: QeReport
    #: the PCK's signature (r || s) over ``qe_report.raw``
    qe_report_signature: bytes
    qe_auth_data: bytes
    #: DER certificates, in the order of the quote (PCK certificate first)
    pck_chain: tuple[bytes, ...]


def parse_td_quote(data: bytes) -> TdQuote:
    """Read a TD quote v4 strictly. Raises :class:`EvidenceError` ``tdx_malformed`` for anything off."""
    if not isinstance(data, (bytes, bytearray)) or not _SIGNED_END + 4 <= len(data) <= MAX_TD_QUOTE:
        raise _malformed(f"a TD quote is {_SIGNED_END + 4} to {MAX_TD_QUOTE} bytes")
    data = bytes(data)
    version, key_type, tee_type, _, _, vendor, _ = _HEADER.unpack_from(data)
    if (version, key_type, tee_type) != (QUOTE_VERSION, ECDSA_P256, TEE_TDX):
        raise _malformed(
            f"quote version {version}, attestation key type {key_type}, TEE type {tee_type:#x} is not a "
            "TDX quote v4 with an ECDSA P-256 attestation key"
        )
    if vendor != INTEL_QE_VENDOR_ID:
        raise _malformed(f"the quote's QE vendor {vendor.hex()} is not Intel's Quoting Enclave")
    (size,) = struct.unpack_from("<I", data, _SIGNED_END)
    end = _SIGNED_END + 4 + size
    if end > len(data):
        raise _malformed("the signature data runs past the end of the quote")
    if any(data[end:]):
        raise _malformed("non-zero bytes follow the quote's signature data")
    signature_data = data[_SIGNED_END + 4 : end]
    if len(signature_data) < 128 + _CERT_HEAD.size:
        raise _malformed("the signature data is too short for a signature, a key and certification data")
    qe_data = _certification(signature_data[128:], QE_REPORT_CERTIFICATION_DATA)
    if len(qe_data) < _QE_REPORT_SIZE + 64 + 2:
        raise _malformed("the QE report certification data is too short")
    (auth_size,) = struct.unpack_from("<H", qe_data, _QE_REPORT_SIZE + 64)
    auth_end = _QE_REPORT_SIZE + 66 + auth_size
    if auth_end > len(qe_data):
        raise _malformed("the QE authentication data runs past its certification data")
    chain_pem = _certification(qe_data[auth_end:], PCK_CERT_CHAIN)
    return TdQuote(
        header=data[:_BODY_AT],
        qe_vendor_id=vendor,
        body=_body(data[_BODY_AT:_SIGNED_END]),
        signed=data[:_SIGNED_END],
        signature=signature_data[:64],
        attestation_key=signature_data[64:128],
        qe_report=_qe_report(qe_data[:_QE_REPORT_SIZE]),
        qe_report_signature=qe_data[_QE_REPORT_SIZE : _QE_REPORT_SIZE + 64],
        qe_auth_data=qe_data[_QE_REPORT_SIZE + 66 : auth_end],
        pck_chain=_pem_chain(chain_pem),
    )


def _certification(data: bytes, expected: int) -> bytes:
    """The content of certification data of type ``expected`` that fills ``data`` exactly."""
    if len(data) < _CERT_HEAD.size:
        raise _malformed(f"certification data of type {expected} is missing")
    kind, size = _CERT_HEAD.unpack_from(data)
    if kind != expected:
        raise _malformed(f"certification data of type {kind}, expected type {expected}")
    if size != len(data) - _CERT_HEAD.size:
        raise _malformed(f"certification data of type {kind} does not fill its container exactly")
    return data[_CERT_HEAD.size :]


def _body(raw: bytes) -> TdQuoteBody:
    f = [raw[a:b] for a, b in itertools.pairwise(_BODY_OFFSETS)]
    rtmrs = raw[0x148:0x208]
    return TdQuoteBody(
        f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9],
        rtmrs=(rtmrs[0:48], rtmrs[48:96], rtmrs[96:144], rtmrs[144:192]),
        report_data=raw[0x208:0x248],
    )  # fmt: skip


#: go-tdx-guest ``tdTeeTcbSvnStart`` ... ``tdMrOwnerConfigEnd``: TEE_TCB_SVN to MROWNERCONFIG
_BODY_OFFSETS = (0x00, 0x10, 0x40, 0x70, 0x78, 0x80, 0x88, 0xB8, 0xE8, 0x118, 0x148)


def _qe_report(raw: bytes) -> QeReport:
    # SGX REPORT_BODY (go-tdx-guest qeMrEnclaveStart ... qeReportDataEnd)
    (misc_select,) = struct.unpack_from("<I", raw, 0x10)
    isv_prod_id, isv_svn = struct.unpack_from("<HH", raw, 0x100)
    return QeReport(
        raw,
        misc_select,
        raw[0x30:0x40],
        raw[0x40:0x60],
        raw[0x80:0xA0],
        isv_prod_id,
        isv_svn,
        raw[0x140:0x180],
    )


def _pem_chain(data: bytes) -> tuple[bytes, ...]:
    text = data.rstrip(b"\0")
    blocks = list(_PEM.finditer(text))
    if not blocks or len(blocks) > MAX_PCK_CHAIN:
        raise _malformed(f"the PCK certificate chain is not 1 to {MAX_PCK_CHAIN} PEM certificates")
    if text[blocks[-1].end() :].strip() or any(
        text[a.end() : b.start()].strip() for a, b in itertools.pairwise(blocks)
    ):
        raise _malformed("the PCK certificate chain holds something between or after its certificates")
    if text[: blocks[0].start()].strip():
        raise _malformed("the PCK certificate chain holds something before its first certificate")
    try:
        return tuple(base64.b64decode(b"".join(m.group(1).split()), validate=True) for m in blocks)
    except (binascii.Error, ValueError):
        raise _malformed("a PCK certificate is not valid base64") from None


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="tdx_malformed")
