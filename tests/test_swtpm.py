"""Against code we did not write: quotes made by swtpm through tpm2-pytss, read back by
tpm2-pytss, and judged by tpm2_checkquote as well as by our verifier.

These tests need swtpm, tpm2-tools and tpm2-pytss; in CI they fail (never skip) without them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fixtures.make_vectors import EMPTY_BANK_SELECTION, Tpm2Tools, tools_selection

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._swtpm import SwtpmProcess
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._keys import to_crypto_key
from nomyo_audit.tpm._structures import (
    HIERARCHIES,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    TPMSAttest,
    parse_attest,
    parse_public,
    parse_signature,
)
from nomyo_audit.tpm._verify import parse_pcr_banks, verify_attestation

pytestmark = pytest.mark.swtpm

PID = "9f1c2a5e-0000-4000-8000-000000000001"
COMPLETION = {"id": "chatcmpl-7", "choices": [{"message": {"content": "attested"}}]}
DIGEST = response_content_digest(COMPLETION)
BINDING = response_binding(PID, DIGEST)


@pytest.fixture
def source(swtpm, request):
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource

    tpm = Tpm2QuoteSource(swtpm.spec, getattr(request, "param", "rsa2048-rsassa"))
    yield tpm
    tpm.close()  # swtpm holds only a few transient objects


@pytest.fixture(scope="module")
def checkquote_version() -> tuple[int, ...]:
    out = subprocess.run(["tpm2_checkquote", "--version"], capture_output=True, text=True).stdout
    return tuple(int(p) for p in re.search(r'version="(\d+)\.(\d+)', out).groups())


def checkquote(tmp: Path, block: dict, nonce: bytes) -> bool:
    """tpm2_checkquote's verdict on the same evidence (signature, nonce and PCR digest)."""
    key = to_crypto_key(parse_public(base64.b64decode(block["aik_pubkey_b64"])))
    (tmp / "ak.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp / "quote.msg").write_bytes(base64.b64decode(block["quote_b64"]))
    (tmp / "quote.sig").write_bytes(base64.b64decode(block["signature_b64"]))
    selections = parse_pcr_banks(block["pcr_banks"])
    values = b"".join(
        bytes.fromhex(block["pcr_values"][s.bank][str(i)]) for s in selections for i in s.indices
    )
    (tmp / "pcrs.bin").write_bytes(values)
    result = subprocess.run(
        [
            "tpm2_checkquote",
            "-u",
            "ak.pem",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
            "-q",
            nonce.hex(),
            "-f",
            "pcrs.bin",
            "-l",
            tools_selection(block["pcr_banks"]),
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def measure(source) -> None:
    """Give PCRs 0, 7 and 10 non-zero values in both banks, as a booted machine has."""
    for index, event in ((0, b"firmware"), (7, b"secure boot db"), (10, b"ima aggregate")):
        for bank in ("sha1", "sha256"):
            source.extend(bank, index, event)


AIKS = ["rsa2048-rsassa", "rsa2048-rsapss", "ecc256-ecdsa"]


@pytest.mark.parametrize("source", AIKS, indirect=True)
@pytest.mark.parametrize("banks", ["sha256:0,7,10", "sha1:0,7,10+sha256:0,7,10"])
def test_swtpm_quotes_verify_and_tpm2_checkquote_agrees(source, banks, tmp_path):
    measure(source)
    block = TPMAttester(source, banks).evidence(BINDING)
    verdict = verify_attestation(block, PID, content_digest=DIGEST)
    assert verdict.passed, verdict.failures
    assert verdict.facts["nonce_derivation"] == "nomyo-audit-v1"
    assert all(v != "00" * len(v) for bank in block["pcr_values"].values() for v in bank.values())
    assert verdict.finding("signer_name").detail.endswith("endorsement hierarchy")
    # tpm2_checkquote refuses genuine RSAPSS quotes: see the named disagreement below
    assert checkquote(tmp_path, block, BINDING) is (source.aik_kind != "rsa2048-rsapss")


@pytest.mark.parametrize("source", ["ecc256-ecdsa"], indirect=True)
def test_the_router_quotes_a_bank_with_no_pcrs_through_tpm2_pytss(source):
    """A router configured with pcr_banks "sha1:+sha256:0,7" asks the TPM for exactly that."""
    measure(source)
    block = TPMAttester(source, EMPTY_BANK_SELECTION).evidence(BINDING)
    quoted = parse_attest(base64.b64decode(block["quote_b64"])).pcr_select
    assert [(s.bank, s.indices) for s in quoted] == [("sha1", ()), ("sha256", (0, 7))]
    verdict = verify_attestation(block, PID, content_digest=DIGEST)
    assert verdict.passed, verdict.failures
    assert verdict.facts["pcr_banks"] == EMPTY_BANK_SELECTION


@pytest.mark.parametrize("source", AIKS, indirect=True)
def test_every_field_we_parse_equals_tpm2_pytss(source):
    from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE

    block = TPMAttester(source, "sha1:0+sha256:0,7,10").evidence(BINDING)
    quote_bytes = base64.b64decode(block["quote_b64"])
    ours = parse_attest(quote_bytes)
    theirs, _ = TPMS_ATTEST.unmarshal(quote_bytes)
    assert (ours.magic, ours.type) == (int(theirs.magic), int(theirs.type))
    assert ours.qualified_signer == bytes(theirs.qualifiedSigner)
    assert ours.extra_data == bytes(theirs.extraData) == BINDING
    clock = theirs.clockInfo
    assert (
        ours.clock_info.clock,
        ours.clock_info.reset_count,
        ours.clock_info.restart_count,
        ours.clock_info.safe,
    ) == (int(clock.clock), int(clock.resetCount), int(clock.restartCount), bool(clock.safe))
    assert ours.firmware_version == int(theirs.firmwareVersion)
    quote_info = theirs.attested.quote
    assert ours.pcr_digest == bytes(quote_info.pcrDigest)
    pytss_selection = [
        (
            int(s.hash),
            tuple(
                b * 8 + bit for b in range(s.sizeofSelect) for bit in range(8) if s.pcrSelect[b] >> bit & 1
            ),
        )
        for s in list(quote_info.pcrSelect.pcrSelections)[: quote_info.pcrSelect.count]
    ]
    assert [(s.hash_alg, s.indices) for s in ours.pcr_select] == pytss_selection

    signature_bytes = base64.b64decode(block["signature_b64"])
    sig, their_sig = parse_signature(signature_bytes), TPMT_SIGNATURE.unmarshal(signature_bytes)[0]
    assert sig.sig_alg == int(their_sig.sigAlg)
    if sig.r:
        assert (sig.r, sig.s) == (
            bytes(their_sig.signature.ecdsa.signatureR),
            bytes(their_sig.signature.ecdsa.signatureS),
        )
    else:
        assert sig.rsa == bytes(their_sig.signature.rsassa.sig)

    aik_bytes = base64.b64decode(block["aik_pubkey_b64"])
    public, their_public = parse_public(aik_bytes), TPM2B_PUBLIC.unmarshal(aik_bytes)[0]
    assert public.object_attributes == int(their_public.publicArea.objectAttributes)
    assert public.name == bytes(their_public.get_name())
    assert public.name_alg == int(their_public.publicArea.nameAlg)


def test_tpm2_quote_echoes_a_bank_with_no_pcrs_and_both_verifiers_accept_it(swtpm, tmp_path):
    """tpm2_quote asked for sha1:none+sha256:0,7: the TPM lists the sha1 bank with an empty bitmap
    in what it signs, so the evidence says pcr_banks "sha1:+sha256:0,7"."""
    tools = Tpm2Tools(swtpm.host, swtpm.port, tmp_path)
    block = tools.quote(EMPTY_BANK_SELECTION, BINDING)
    quoted = parse_attest(base64.b64decode(block["quote_b64"])).pcr_select
    assert [(s.bank, s.indices) for s in quoted] == [("sha1", ()), ("sha256", (0, 7))]
    verdict = verify_attestation(block, PID, content_digest=DIGEST)
    assert verdict.passed, verdict.failures
    assert verdict.facts["pcr_banks"] == "sha1:+sha256:0,7"
    assert verdict.facts["pcr_values"] == block["pcr_values"]
    assert tools.checkquote(block, BINDING)

    block["pcr_values"]["sha256"]["7"] = hashlib.sha256(b"another boot").hexdigest()
    assert verify_attestation(block, PID, content_digest=DIGEST).finding("pcr_digest").code == (
        "pcr_digest_mismatch"
    )
    assert not tools.checkquote(block, BINDING)


# -- tamper matrix: ours and tpm2_checkquote on the same bytes ---------------------------------------


@pytest.fixture
def genuine(source):
    measure(source)
    return TPMAttester(source, "sha256:0,7,10").evidence(BINDING)


def test_flipped_signature_byte_both_refuse(genuine, tmp_path):
    raw = bytearray(base64.b64decode(genuine["signature_b64"]))
    raw[-5] ^= 0x40
    block = {**genuine, "signature_b64": base64.b64encode(bytes(raw)).decode()}
    assert (
        verify_attestation(block, PID, content_digest=DIGEST).finding("signature").code == "signature_invalid"
    )
    assert not checkquote(tmp_path, block, BINDING)


def test_altered_pcr_value_both_refuse(genuine, tmp_path):
    block = copy.deepcopy(genuine)
    block["pcr_values"]["sha256"]["7"] = hashlib.sha256(b"another boot").hexdigest()
    assert (
        verify_attestation(block, PID, content_digest=DIGEST).finding("pcr_digest").code
        == "pcr_digest_mismatch"
    )
    assert not checkquote(tmp_path, block, BINDING)


def test_another_requests_nonce_both_refuse(genuine, tmp_path):
    other = response_binding("another-request", DIGEST)
    verdict = verify_attestation(genuine, "another-request", content_digest=DIGEST)
    assert verdict.finding("nonce_binding").code == "nonce_mismatch"
    assert not checkquote(tmp_path, genuine, other)


def test_quote_with_another_tpms_aik_both_refuse(genuine, tmp_path):
    """The same template on the same TPM derives the same primary key, so the other AIK comes from
    a second swtpm: another machine's TPM."""
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource

    with SwtpmProcess() as second:
        other = Tpm2QuoteSource(second.spec, "rsa2048-rsassa")
        block = {**genuine, "aik_pubkey_b64": base64.b64encode(other.aik_public).decode()}
        other.close()
    assert block["aik_pubkey_b64"] != genuine["aik_pubkey_b64"]
    assert (
        verify_attestation(block, PID, content_digest=DIGEST).finding("signature").code == "signature_invalid"
    )
    assert not checkquote(tmp_path, block, BINDING)


# -- where tpm2_checkquote checks less: each disagreement named, and who is right ---------------------


@pytest.fixture
def unrestricted_signer(swtpm):
    """An unrestricted signing key in swtpm: TPM2_Sign signs any digest we give it."""
    from tpm2_pytss import ESAPI, TCTILdr
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_ST
    from tpm2_pytss.types import (
        TPM2B_DIGEST,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPMT_SIG_SCHEME,
        TPMT_TK_HASHCHECK,
    )

    from nomyo_audit.attest._tpm2 import parse_tpm_spec

    esys = ESAPI(TCTILdr(*parse_tpm_spec(swtpm.spec)))
    template = TPM2B_PUBLIC.parse(
        "rsa2048:rsassa-sha256:null",
        objectAttributes="sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
    )
    handle, public, *_ = esys.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
    aik = parse_public(public.marshal())

    def forge(magic=TPM_GENERATED_VALUE, attest_type=TPM_ST_ATTEST_QUOTE, quoted="sha256:0,7,10"):
        values = [hashlib.sha256(b"golden %d" % i).digest() for i in range(3)]  # any values the forger likes
        attest = TPMSAttest(
            magic,
            attest_type,
            aik.qualified_name(HIERARCHIES["endorsement"]),
            BINDING,
            ClockInfo(1, 0, 0, True),
            0,
            parse_pcr_banks(quoted),
            hashlib.sha256(b"".join(values)).digest(),
        ).marshal()
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        signature = esys.sign(
            handle,
            TPM2B_DIGEST(hashlib.sha256(attest).digest()),
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            ticket,
        )
        return {
            "is_available": True,
            "pcr_banks": "sha256:0,7,10",
            "pcr_values": {"sha256": {str(i): v.hex() for i, v in zip((0, 7, 10), values, strict=True)}},
            "quote_b64": base64.b64encode(attest).decode(),
            "signature_b64": base64.b64encode(signature.marshal()).decode(),
            "aik_pubkey_b64": base64.b64encode(public.marshal()).decode(),
        }

    yield forge
    esys.flush_context(handle)
    esys.close()


def test_disagreement_forged_quote_from_an_unrestricted_key(unrestricted_signer, tmp_path):
    """tpm2_checkquote accepts it: it does not look at the AIK's attributes. We are right to refuse:
    an unrestricted key signs whatever digest it is given, so the 'quote' proves nothing."""
    block = unrestricted_signer()
    assert checkquote(tmp_path, block, BINDING)
    verdict = verify_attestation(block, PID, content_digest=DIGEST)
    assert {f.check: f.code for f in verdict.failures} == {"aik_attributes": "aik_not_restricted"}


def test_disagreement_wrong_magic_cve_2024_29038(unrestricted_signer, tmp_path, checkquote_version):
    """tpm2-tools before 5.7 accepts a signed structure whose magic is not TPM_GENERATED_VALUE.
    We are right to refuse: only the TPM writes that magic into what it signs."""
    block = unrestricted_signer(magic=0xFF544348)
    assert checkquote(tmp_path, block, BINDING) is (checkquote_version < (5, 7))
    assert (
        verify_attestation(block, PID, content_digest=DIGEST).finding("evidence_format").code == "bad_magic"
    )


def test_disagreement_signed_selection_differs_cve_2024_29039(
    unrestricted_signer, tmp_path, checkquote_version
):
    """The quote covers sha256:0,7,11 while the evidence claims sha256:0,7,10. tpm2-tools before 5.7
    checks the digest of the supplied values against the quote but not the selection. We are right to
    refuse: the PCR 10 value shown was never quoted."""
    block = unrestricted_signer(quoted="sha256:0,7,11")
    assert checkquote(tmp_path, block, BINDING) is (checkquote_version < (5, 7))
    failures = {f.check: f.code for f in verify_attestation(block, PID, content_digest=DIGEST).failures}
    assert failures["pcr_selection"] == "pcr_selection_mismatch"


@pytest.mark.parametrize("source", ["rsa2048-rsapss"], indirect=True)
def test_disagreement_genuine_rsapss_quote(source, tmp_path, checkquote_version):
    """A genuine RSAPSS quote from swtpm: tpm2_checkquote 5.4 refuses it (with the key as PEM or as
    TPM2B_PUBLIC alike). libtpms salts PSS with the digest length (libtpms PR 143); other TPMs use the
    maximal salt. We accept any salt length, as PSS verification allows: the signature is valid, and
    we are right to accept it. It is checked here with an explicit 32-byte salt as well."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    measure(source)
    block = TPMAttester(source).evidence(BINDING)
    assert verify_attestation(block, PID, content_digest=DIGEST).passed
    key = to_crypto_key(parse_public(base64.b64decode(block["aik_pubkey_b64"])))
    signature = parse_signature(base64.b64decode(block["signature_b64"]))
    key.verify(
        signature.rsa,
        base64.b64decode(block["quote_b64"]),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    if checkquote_version < (5, 8):
        assert not checkquote(tmp_path, block, BINDING)


def test_agreement_aik_signed_non_quote_ghsa_gwfg_w3jr_xh66(unrestricted_signer, tmp_path):
    """An AIK-signed structure of another type (TPM_ST_ATTEST_NV): both refuse."""
    block = unrestricted_signer(attest_type=0x8014)
    assert not checkquote(tmp_path, block, BINDING)
    verdict = verify_attestation(block, PID, content_digest=DIGEST)
    assert verdict.finding("quote_structure").code == "not_a_quote"


# -- the router end to end with swtpm -------------------------------------------------------------------


def test_router_with_swtpm_end_to_end(swtpm, make_router, client_keys_dir):
    import asyncio

    from nomyo_audit import SecureChatCompletion
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester(swtpm.spec, "ecc256-ecdsa"))

    async def chat():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            return await client.create("echo", [{"role": "user", "content": "hello tpm"}])

    first = asyncio.run(chat())
    router.config.attester.source.extend("sha256", 10, b"a new measurement")
    second = asyncio.run(chat())
    for reply in (first, second):
        meta = reply["_metadata"]
        assert meta["tpm_attestation"]["attester"] == "swtpm"
        assert meta["verification"]["result"] == "pass", meta["verification"]
    pcr10 = [r["_metadata"]["tpm_attestation"]["pcr_values"]["sha256"]["10"] for r in (first, second)]
    assert pcr10[0] != pcr10[1]
