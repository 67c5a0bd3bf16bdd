"""The TD quote header names Intel's Quoting Enclave as its vendor (939a7233-f79c-4ca9-940a-0db3957f0607,
Intel's DCAP ``INTEL_QE_VENDOR_ID``; dcap-qvl and go-tdx-guest's validate reject any other): a quote
whose header names another vendor is ``tdx_malformed``, even when every signature over it verifies
(a forged hierarchy trusted as Intel's: tests/tdx_forge.py)."""

from __future__ import annotations

import pytest
from tdx_forge import ForgedPck, QuoteParts
from test_tdx import appraise, code, files

from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._tdx_quote import INTEL_QE_VENDOR_ID, parse_td_quote


def test_the_real_quotes_name_intels_quoting_enclave():
    for name in ("trustee", "openpcc-DCesv6"):
        assert parse_td_quote(files(name)[1]).qe_vendor_id == INTEL_QE_VENDOR_ID


@pytest.mark.parametrize("vendor", [bytes(16), bytes.fromhex("939a7233f79c4ca9940a0db3957f0608")])
def test_another_qe_vendor_is_refused_even_when_signed(vendor):
    hcl, quote = files("trustee")
    parts = QuoteParts.of(parse_td_quote(quote))
    header = parts.header[:12] + vendor + parts.header[28:]
    pck = ForgedPck()
    forged = pck.forge(parts, header=header)
    assert code(appraise(hcl, pck.forge(parts), store=TrustStore.from_pem(pck.root_pem)))[0] == "pass"
    assert code(appraise(hcl, forged, store=TrustStore.from_pem(pck.root_pem))) == ("fail", "tdx_malformed")
    with pytest.raises(EvidenceError, match="vendor"):
        parse_td_quote(forged)


def test_an_sgx_extension_with_bytes_after_it_holds_no_fmspc():
    """The FMSPC (a fact) is read from a PCK certificate's SGX extension only when the extension is
    exactly one DER SEQUENCE: bytes after it are not a guess's to skip."""
    from datetime import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from nomyo_audit.errors import CertificateError
    from nomyo_audit.tpm._tdx import OID_SGX_EXTENSIONS, pck_fmspc
    from nomyo_audit.tpm._x509 import read_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    oid = bytes.fromhex("060a2a864886f84d010d0104")
    member = b"\x30" + bytes([len(oid) + 8]) + oid + b"\x04\x06" + bytes.fromhex("00806f050000")
    sequence = b"\x30" + bytes([len(member)]) + member

    def pck(value: bytes):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX PCK Certificate")])
        extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_SGX_EXTENSIONS), value)
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime(2024, 1, 1)).not_valid_after(datetime(2030, 1, 1))
            .add_extension(extension, critical=False)
        )  # fmt: skip
        return read_certificate(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))

    assert pck_fmspc(pck(sequence)) == bytes.fromhex("00806f050000")
    with pytest.raises(CertificateError) as caught:
        pck_fmspc(pck(sequence + b"\x04\x00"))
    assert caught.value.code == "tdx_pck_chain"
