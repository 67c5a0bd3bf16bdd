"""TPM 2.0 structures: our pure-Python parser agrees with tpm2-pytss (libtss2-mu) byte for byte,
and malformed input only ever raises TPMStructureError with a stable code."""

from __future__ import annotations

import contextlib
import struct

import pytest
from conftest import require
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm._structures import (
    ALG,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    EccPoint,
    ObjectAttributes,
    PCRSelection,
    Public,
    Signature,
    TPMSAttest,
    TPMStructureError,
    parse_attest,
    parse_pcr_selection_list,
    parse_public,
    parse_signature,
)

AK = ObjectAttributes.ATTESTATION_KEY | ObjectAttributes.USER_WITH_AUTH


def quote(**overrides) -> TPMSAttest:
    fields = dict(
        magic=TPM_GENERATED_VALUE,
        type=TPM_ST_ATTEST_QUOTE,
        qualified_signer=b"\x00\x0b" + b"\x11" * 32,
        extra_data=b"\x22" * 32,
        clock_info=ClockInfo(123456789, 3, 1, True),
        firmware_version=0x2000000000001,
        pcr_select=(PCRSelection(ALG.SHA256, (0, 7, 10)), PCRSelection(ALG.SHA1, (16,))),
        pcr_digest=b"\x33" * 32,
    )
    fields.update(overrides)
    return TPMSAttest(**fields)


def rsa_public(bits: int = 2048, attributes: int = AK) -> Public:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    n = key.public_numbers().n.to_bytes(bits // 8, "big")
    return Public(
        ALG.RSA,
        ALG.SHA256,
        attributes,
        b"",
        (ALG.NULL,),
        ALG.RSASSA,
        ALG.SHA256,
        rsa_key_bits=bits,
        rsa_exponent=0,
        rsa_modulus=n,
    )


def ecc_public() -> Public:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    point = EccPoint(numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big"))
    return Public(
        ALG.ECC,
        ALG.SHA256,
        AK,
        b"",
        (ALG.NULL,),
        ALG.ECDSA,
        ALG.SHA256,
        curve_id=0x0003,
        kdf=(ALG.NULL,),
        ecc_point=point,
    )


# -- round trips ------------------------------------------------------------------------------


def test_quote_round_trip_both_encodings():
    original = quote()
    data = original.marshal()
    parsed = parse_attest(data)
    assert parsed == original._replace(raw=data) and parsed.encoding == "TPMS_ATTEST"
    sized = parse_attest(struct.pack(">H", len(data)) + data)
    assert sized == original._replace(encoding="TPM2B_ATTEST", raw=data)
    assert parsed.pcr_select[0].bank == "sha256" and parsed.pcr_select[0].indices == (0, 7, 10)


def test_signature_and_public_round_trip():
    for sig in (
        Signature(ALG.RSASSA, ALG.SHA256, rsa=b"\x01" * 256),
        Signature(ALG.ECDSA, ALG.SHA384, r=b"\x00\x02" * 16, s=b"\x03" * 31),
    ):
        assert parse_signature(sig.marshal()) == sig
    for public in (rsa_public(), ecc_public()):
        parsed = parse_public(public.marshal())
        assert parsed == public
        assert parsed.name == public.name and parsed.name[:2] == b"\x00\x0b" and len(parsed.name) == 34


def test_pcr_selection_list():
    data = struct.pack(">I", 1) + PCRSelection(ALG.SHA256, (0, 1, 23)).marshal()
    assert parse_pcr_selection_list(data) == (PCRSelection(ALG.SHA256, (0, 1, 23), 3),)


def test_object_attribute_names():
    assert ObjectAttributes.names(AK) == [
        "fixedTPM",
        "fixedParent",
        "sensitiveDataOrigin",
        "userWithAuth",
        "restricted",
        "sign",
    ]


# -- agreement with tpm2-pytss -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pytss():
    try:
        import tpm2_pytss.types as types
    except ImportError:
        types = None
    require(types is not None, "tpm2-pytss (the 'tpm' extra) is not installed")
    return types


def test_pytss_reads_our_quote(pytss):
    ours = quote()
    theirs, offset = pytss.TPMS_ATTEST.unmarshal(ours.marshal())
    assert offset == len(ours.marshal())
    assert int(theirs.magic) == ours.magic and int(theirs.type) == ours.type
    assert bytes(theirs.qualifiedSigner) == ours.qualified_signer
    assert bytes(theirs.extraData) == ours.extra_data
    assert (
        int(theirs.clockInfo.clock),
        int(theirs.clockInfo.resetCount),
        int(theirs.clockInfo.restartCount),
        bool(theirs.clockInfo.safe),
    ) == (123456789, 3, 1, True)
    assert int(theirs.firmwareVersion) == ours.firmware_version
    info = theirs.attested.quote
    assert bytes(info.pcrDigest) == ours.pcr_digest
    assert int(info.pcrSelect.count) == 2
    first = info.pcrSelect.pcrSelections[0]
    assert int(first.hash) == ALG.SHA256 and bytes(first.pcrSelect)[: first.sizeofSelect] == bytes(
        [0x81, 0x04, 0]
    )


def test_we_read_pytss_public_keys_and_names(pytss):
    for key in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    ):
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public = pytss.TPM2B_PUBLIC(pytss.TPMT_PUBLIC.from_pem(pem, objectAttributes=AK))
        ours = parse_public(public.marshal())
        assert ours.object_attributes == AK
        assert ours.name == bytes(public.get_name())
        assert ours.marshal() == public.marshal()


def test_pytss_reads_our_public_and_signature(pytss):
    for public in (rsa_public(), ecc_public()):
        theirs, _ = pytss.TPM2B_PUBLIC.unmarshal(public.marshal())
        assert int(theirs.publicArea.objectAttributes) == public.object_attributes
        assert bytes(theirs.get_name()) == public.name
    sig = Signature(ALG.ECDSA, ALG.SHA256, r=b"\x05" * 32, s=b"\x00\x06" * 16)
    theirs, _ = pytss.TPMT_SIGNATURE.unmarshal(sig.marshal())
    assert (
        bytes(theirs.signature.ecdsa.signatureR) == sig.r
        and bytes(theirs.signature.ecdsa.signatureS) == sig.s
    )


# -- strictness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b"\xff\x54\x43\x48" + b[4:], "bad_magic"),  # CVE-2024-29038: wrong magic
        (lambda b: b[:4] + b"\x80\x99" + b[6:], "bad_type"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing_bytes"),
        (lambda b: b[:6] + b"\x01\x00" + b[8:], "size_limit"),  # qualifiedSigner size 256
        (lambda b: b"", "truncated"),
        (lambda b: b"\x00" * 2000, "size_limit"),
    ],
)
def test_malformed_quotes(mutate, code):
    with pytest.raises(TPMStructureError) as err:
        parse_attest(mutate(quote().marshal()))
    assert err.value.code == code
    assert isinstance(err.value, EvidenceError)


@pytest.mark.parametrize("attest_type", [TPM_ST_ATTEST_QUOTE, 0x8017])
@pytest.mark.parametrize("safe", [2, 0xFF])
def test_clock_safe_is_yes_or_no(attest_type, safe):
    """clockInfo.safe is a TPMI_YES_NO: 0 or 1, whichever parser reads it."""
    with pytest.raises(TPMStructureError, match=f"clockInfo.safe is {safe}") as err:
        parse_attest(quote(type=attest_type, clock_info=ClockInfo(1, 0, 0, safe)).marshal())
    assert err.value.code == "bad_value"
    for yes_no in (0, 1):
        parsed = parse_attest(quote(type=attest_type, clock_info=ClockInfo(1, 0, 0, yes_no)).marshal())
        assert parsed.clock_info.safe is bool(yes_no)


def test_unknown_hash_in_pcr_selection():
    data = quote().marshal()
    index = data.index(struct.pack(">I", 2) + struct.pack(">H", ALG.SHA256)) + 4
    with pytest.raises(TPMStructureError, match="0x0099") as err:
        parse_attest(data[:index] + b"\x00\x99" + data[index + 2 :])
    assert err.value.code == "unknown_algorithm"


def test_non_quote_types_parse_up_to_the_union():
    certify_header = quote(
        type=0x8017
    ).marshal()  # NV_Certify-style structure: the verifier refuses it by type
    assert parse_attest(certify_header).type_name == "TPM_ST_ATTEST_CERTIFY"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack(">HH", ALG.HMAC, ALG.SHA256), "unknown_algorithm"),
        (struct.pack(">HH", ALG.RSASSA, 0x0099), "unknown_algorithm"),
        (struct.pack(">HHH", ALG.RSASSA, ALG.SHA256, 600) + b"\x00" * 600, "size_limit"),
        (Signature(ALG.RSASSA, ALG.SHA256, rsa=b"\x01" * 4).marshal() + b"\x00", "trailing_bytes"),
    ],
)
def test_malformed_signatures(data, code):
    with pytest.raises(TPMStructureError) as err:
        parse_signature(data)
    assert err.value.code == code


def test_malformed_public_keys():
    good = rsa_public().marshal()
    with pytest.raises(TPMStructureError, match="trailing") as err:
        parse_public(good + b"\x00")
    assert err.value.code == "trailing_bytes"
    with pytest.raises(TPMStructureError) as err:
        parse_public(good[2:])  # a bare TPMT_PUBLIC
    with pytest.raises(TPMStructureError) as err:
        parse_public(struct.pack(">HH", 2, ALG.KEYEDHASH))
    assert err.value.code == "unknown_algorithm"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_blobs_raise_only_evidence_errors(blob):
    for parse in (parse_attest, parse_signature, parse_public, parse_pcr_selection_list):
        with contextlib.suppress(EvidenceError):
            parse(blob)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_structures(data):
    for parse, blob in (
        (parse_attest, quote().marshal()),
        (parse_public, ecc_public().marshal()),
        (parse_signature, Signature(ALG.ECDSA, ALG.SHA256, r=b"\x01" * 32, s=b"\x02" * 32).marshal()),
    ):
        mutated = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(mutated)))
        with contextlib.suppress(EvidenceError):
            parse(bytes(mutated[:cut]))
