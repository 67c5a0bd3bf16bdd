"""verify_attestation: one finding per check, and every tampering caught with its own code.

Evidence here comes from the in-process software TPM, which signs real TPMS_ATTEST
structures; tests/test_swtpm.py repeats the essentials with quotes from swtpm.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.tpm._binding import (
    canonical_json,
    response_binding,
    response_content_digest,
)
from nomyo_audit.tpm._structures import (
    ALG,
    HASH_NAMES,
    ClockInfo,
    ObjectAttributes,
    PCRSelection,
    Signature,
    marshal_pcr_selection_list,
    parse_pcr_selection_list,
    parse_signature,
    pcr_value_map,
    selection_text,
)
from nomyo_audit.tpm._verify import CHECKS, parse_pcr_banks, verify_attestation

PID = "5128aaf2-1ef9-4a21-aec8-2f6a6062008d"
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
DIGEST = response_content_digest(COMPLETION)


@pytest.fixture(scope="module", params=["rsa2048-rsassa", "rsa2048-rsapss", "ecc256-ecdsa"])
def tpm(request):
    source = SoftwareTPM(request.param)
    source.extend("sha256", 0, b"firmware")
    source.extend("sha256", 7, b"secure boot policy")
    return source


def evidence(tpm, banks="sha256:0,7,10", extra=None):
    return TPMAttester(tpm, banks).evidence(extra if extra is not None else response_binding(PID, DIGEST))


def verdict(block, payload_id=PID, digest=DIGEST, **kwargs):
    return verify_attestation(block, payload_id, content_digest=digest, **kwargs)


def failing(v):
    return {f.check: f.code for f in v.findings if f.status == "fail"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_quote(block, attest_bytes, tpm):
    """Replace the quote, re-signed by the same AIK (the attacker controls a signing oracle)."""
    forged = dict(block)
    forged["quote_b64"] = b64(attest_bytes)
    forged["signature_b64"] = b64(tpm.sign(attest_bytes))
    return forged


# -- the good case -------------------------------------------------------------------------------


def test_genuine_evidence_passes_with_one_finding_per_check(tpm):
    v = verdict(evidence(tpm))
    assert v.result == "pass", failing(v)
    assert [f.check for f in v.findings] == list(CHECKS)
    assert v.facts["nonce_derivation"] == "nomyo-audit-v1"
    assert v.facts["pcr_banks"] == "sha256:0,7,10"
    assert v.facts["pcr_values"]["sha256"]["0"] == tpm.pcrs[ALG.SHA256][0].hex()


def test_trust_honesty_an_unanchored_aik_is_said_so(tpm):
    v = verdict(evidence(tpm))
    anchor = v.finding("aik_anchor")
    assert anchor.status == "skip" and anchor.code == "aik_not_anchored"
    assert "not anchored to a hardware root of trust" in anchor.detail
    assert v.finding("attester").code == "software_attester"


def test_missing_or_unavailable_attestation_is_an_explicit_failure():
    for block in (None, {}, {"is_available": False}):
        v = verdict(block)
        assert v.result == "fail"
        assert failing(v) == {"attestation_present": "no_attestation"}
        assert all(f.status == "skip" for f in v.findings[1:])


# -- nonce binding ----------------------------------------------------------------------------------


def test_each_derivation_is_accepted_and_named(tpm):
    cases = {
        "sha256-payload-id": hashlib.sha256(PID.encode()).digest(),
        "raw-payload-id": PID.encode(),
        "nomyo-audit-v1": response_binding(PID, DIGEST),
    }
    for name, extra in cases.items():
        v = verdict(evidence(tpm, extra=extra))
        assert v.passed and v.facts["nonce_derivation"] == name


def test_another_requests_payload_id_fails(tpm):
    v = verdict(evidence(tpm), payload_id="another-request")
    assert failing(v) == {"nonce_binding": "nonce_mismatch"}


@pytest.mark.parametrize("payload_id", ["\ud800", "pid-\udfff", "\x00" * 200])
def test_a_payload_id_that_is_not_text_is_a_finding_not_an_exception(tpm, payload_id):
    v = verdict(evidence(tpm), payload_id=payload_id)
    assert failing(v)["nonce_binding"] in {"nonce_mismatch", "nonce_unverifiable"}
    v.to_dict()


def test_response_binding_covers_the_content(tpm):
    other = response_content_digest({**COMPLETION, "choices": [{"message": {"content": "altered"}}]})
    assert failing(verdict(evidence(tpm), digest=other)) == {"nonce_binding": "nonce_mismatch"}
    v = verdict(evidence(tpm), digest=None)
    assert failing(v) == {"nonce_binding": "nonce_mismatch"}
    assert "response content not available" in v.finding("nonce_binding").detail


def test_a_policy_can_narrow_the_accepted_derivations(tpm):
    block = evidence(tpm, extra=PID.encode())
    assert failing(verdict(block, accept_derivations=("nomyo-audit-v1",))) == {
        "nonce_binding": "nonce_mismatch"
    }


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == b'{"a":[1,"\xc3\xa9"],"b":1}'
    assert response_content_digest({"x": 1, "_metadata": {"a": 1}}) == response_content_digest({"x": 1})


# -- the tamper matrix ------------------------------------------------------------------------------


def test_flipped_signature_byte(tpm):
    block = evidence(tpm)
    raw = bytearray(base64.b64decode(block["signature_b64"]))
    raw[-1] ^= 0x01
    assert failing(verdict({**block, "signature_b64": b64(bytes(raw))})) == {"signature": "signature_invalid"}


def test_altered_pcr_value(tpm):
    block = copy.deepcopy(evidence(tpm))
    block["pcr_values"]["sha256"]["7"] = "00" * 32
    assert failing(verdict(block)) == {"pcr_digest": "pcr_digest_mismatch"}


@pytest.mark.parametrize(
    "claimed",
    [
        "sha256:0,7",
        "sha256:0,7,11",
        "sha1:0,7,10",
        "sha256:0,7,10+sha1:16",
        "sha256:0,7,10,16",
        "sha1:+sha256:0,7,10",  # a bank the quote does not list, even an empty one
        "sha256:0,7,10+sha1:",
    ],
)
def test_supplied_selection_differs_from_the_signed_one_cve_2024_29039(tpm, claimed):
    block = {**evidence(tpm), "pcr_banks": claimed}
    assert failing(verdict(block)) == {"pcr_selection": "pcr_selection_mismatch"}


def test_reordered_banks(tpm):
    block = evidence(tpm, "sha1:16+sha256:0,7,10")
    assert verdict(block).passed
    assert failing(verdict({**block, "pcr_banks": "sha256:0,7,10+sha1:16"})) == {
        "pcr_selection": "pcr_selection_mismatch"
    }
    swapped = copy.deepcopy(block)
    swapped["pcr_values"]["sha256"]["0"], swapped["pcr_values"]["sha256"]["7"] = (
        swapped["pcr_values"]["sha256"]["7"],
        swapped["pcr_values"]["sha256"]["0"],
    )
    assert failing(verdict(swapped)) == {"pcr_digest": "pcr_digest_mismatch"}


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda v: v["sha256"].__setitem__("7", "ab" * 20), "pcr_value_format"),  # a SHA-1 length in sha256
        (lambda v: v["sha256"].__setitem__("7", "zz" * 32), "pcr_value_format"),
        (lambda v: v["sha256"].pop("10"), "pcr_value_missing"),
        (lambda v: v["sha256"].__setitem__("16", "00" * 32), "pcr_value_unquoted"),
        (lambda v: v["sha256"].__setitem__("07", "00" * 32), "pcr_value_format"),  # PCR 7 given twice
        (lambda v: v.__setitem__("SHA256", v.pop("sha256")), "pcr_value_unquoted"),  # not the bank's name
    ],
)
def test_pcr_value_shapes(tpm, mutate, code):
    block = copy.deepcopy(evidence(tpm))
    mutate(block["pcr_values"])
    assert failing(verdict(block)) == {"pcr_digest": code}


def test_quote_signed_by_a_different_aik(tpm):
    genuine = evidence(tpm)
    other = SoftwareTPM("rsa2048-rsassa" if tpm.public.type == ALG.RSA else "ecc256-ecdsa")
    # the other AIK's public key with the genuine quote and signature
    swapped = {**genuine, "aik_pubkey_b64": b64(other.aik_public)}
    assert failing(verdict(swapped))["signature"] in ("signature_invalid", "scheme_mismatch")
    # the other AIK signs a quote naming the genuine AIK as its signer
    forged_attest = tpm.make_attest(parse_pcr_banks("sha256:0,7,10"), response_binding(PID, DIGEST)).marshal()
    forged = {
        **genuine,
        "aik_pubkey_b64": b64(other.aik_public),
        "quote_b64": b64(forged_attest),
        "signature_b64": b64(other.sign(forged_attest)),
    }
    assert failing(verdict(forged)) == {"signer_name": "signer_parent_unknown"}


def test_unrestricted_aik_fails_loudly():
    unrestricted = SoftwareTPM(attributes=ObjectAttributes.SIGN | ObjectAttributes.USER_WITH_AUTH)
    v = verdict(evidence(unrestricted))
    assert failing(v) == {"aik_attributes": "aik_not_restricted"}
    assert (
        "restricted" in v.finding("aik_attributes").detail and "forged" in v.finding("aik_attributes").detail
    )


def test_decrypt_capable_aik_fails():
    both = SoftwareTPM(attributes=ObjectAttributes.ATTESTATION_KEY | ObjectAttributes.DECRYPT)
    assert failing(verdict(evidence(both))) == {"aik_attributes": "aik_attributes"}


def test_wrong_magic_even_when_signed_cve_2024_29038(tpm):
    attest = bytearray(base64.b64decode(evidence(tpm)["quote_b64"]))
    attest[3] ^= 0xFF
    assert failing(verdict(with_quote(evidence(tpm), bytes(attest), tpm))) == {"evidence_format": "bad_magic"}


def test_a_non_quote_is_reported_as_such_even_without_pcr_banks(tpm):
    """pcr_banks describes a quote; a signed structure of another type has none to describe, so its
    absence (or any value) must not hide what the AIK really signed."""
    attest = bytearray(base64.b64decode(evidence(tpm)["quote_b64"]))
    attest[4:6] = (0x8017).to_bytes(2, "big")  # TPM_ST_ATTEST_CERTIFY
    forged = with_quote(evidence(tpm), bytes(attest), tpm)
    for pcr_banks in (None, "not a selection", 42):
        block = {k: v for k, v in forged.items() if k != "pcr_banks"}
        if pcr_banks is not None:
            block["pcr_banks"] = pcr_banks
        v = verdict(block)
        assert failing(v) == {"quote_structure": "not_a_quote"}
        assert v.finding("evidence_format").status == "pass"


@pytest.mark.parametrize("safe", [2, 0x80, 0xFF])
@pytest.mark.parametrize("attest_type", [0x8018, 0x8017])  # a quote (fast parser), a certify (careful)
def test_clock_safe_other_than_0_or_1_is_malformed_evidence(tpm, safe, attest_type):
    """clockInfo.safe is a TPMI_YES_NO: a TPM writes 0 or 1, nothing else."""
    attest = tpm.make_attest(parse_pcr_banks("sha256:0,7,10"), response_binding(PID, DIGEST))
    odd = attest._replace(type=attest_type, clock_info=ClockInfo(1, 0, 0, safe))
    v = verdict(with_quote(evidence(tpm), odd.marshal(), tpm))
    assert failing(v) == {"evidence_format": "bad_value"}
    assert "clockInfo.safe" in v.finding("evidence_format").detail


def test_aik_signed_non_quote_structure_ghsa_gwfg_w3jr_xh66(tpm):
    attest = bytearray(base64.b64decode(evidence(tpm)["quote_b64"]))
    attest[4:6] = (0x8014).to_bytes(2, "big")  # TPM_ST_ATTEST_NV, e.g. from an NV_Certify
    v = verdict(with_quote(evidence(tpm), bytes(attest), tpm))
    assert failing(v) == {"quote_structure": "not_a_quote"}
    assert v.finding("pcr_digest").status == "skip"


@pytest.mark.parametrize(
    ("field", "transform", "code"),
    [
        ("quote_b64", lambda raw: raw[:-3], "truncated"),
        ("quote_b64", lambda raw: raw + b"\x00\x00", "trailing_bytes"),
        ("aik_pubkey_b64", lambda raw: raw[:40], "truncated"),
        ("signature_b64", lambda raw: raw + b"\x01", "trailing_bytes"),
    ],
)
def test_truncated_and_padded_blobs(tpm, field, transform, code):
    block = evidence(tpm)
    block = {**block, field: b64(transform(base64.b64decode(block[field])))}
    assert failing(verdict(block)) == {"evidence_format": code}


@pytest.mark.parametrize("field", ["quote_b64", "signature_b64", "aik_pubkey_b64"])
def test_base64_garbage(tpm, field):
    assert failing(verdict({**evidence(tpm), field: "%%% not base64 %%%"})) == {
        "evidence_format": "bad_base64"
    }


@pytest.mark.parametrize("field", ["quote_b64", "signature_b64", "aik_pubkey_b64", "pcr_banks"])
def test_missing_fields(tpm, field):
    block = {k: v for k, v in evidence(tpm).items() if k != field}
    assert set(failing(verdict(block))) == {"evidence_format"}


def test_signature_scheme_must_be_the_aiks():
    tpm = SoftwareTPM("rsa2048-rsassa")
    block = evidence(tpm)
    sig = parse_signature(base64.b64decode(block["signature_b64"]))
    relabelled = Signature(ALG.RSAPSS, sig.hash_alg, rsa=sig.rsa).marshal()
    assert failing(verdict({**block, "signature_b64": b64(relabelled)})) == {"signature": "scheme_mismatch"}


@pytest.mark.parametrize("kind", ["rsa2048-rsassa", "ecc256-ecdsa"])
def test_an_aik_without_a_signing_scheme_is_refused(kind):
    """An AIK whose scheme is TPM_ALG_NULL names no scheme its quotes must use, so a signature
    under any scheme would do: refused with a finding, as go-attestation refuses it. The
    signature is still checked, so the verdict says exactly what is wrong."""
    tpm = SoftwareTPM(kind)
    tpm.public = dataclasses.replace(tpm.public, scheme=ALG.NULL, scheme_hash=ALG.NULL)
    tpm.aik_public = tpm.public.marshal()
    v = verdict(evidence(tpm))
    assert failing(v) == {"aik_attributes": "aik_no_scheme"}
    assert v.finding("signature").status == "pass"
    assert "TPM_ALG_NULL" in v.finding("aik_attributes").detail


# -- the classic pitfalls ------------------------------------------------------------------------


def test_a_wider_selection_bitmap_selects_the_same_pcrs(tpm):
    """TPMs with more PCRs send sizeofSelect 4; the selection means the same PCRs."""
    wide = tuple(s._replace(size_of_select=4) for s in parse_pcr_banks("sha256:0,7,10"))
    assert wide[0].marshal() != parse_pcr_banks("sha256:0,7,10")[0].marshal()
    attest = tpm.make_attest(wide, response_binding(PID, DIGEST))
    block = with_quote(evidence(tpm), attest.marshal(), tpm)
    assert verdict(block).passed


def test_a_bank_with_no_pcrs_selected_verifies(tpm):
    """A TPM echoes every requested bank in the quote, also one with no PCR selected."""
    block = evidence(tpm, "sha1:+sha256:0,7")
    v = verdict(block)
    assert v.passed, failing(v)
    assert v.facts["pcr_banks"] == "sha1:+sha256:0,7"
    assert v.facts["pcr_values"] == {"sha1": {}, "sha256": block["pcr_values"]["sha256"]}
    assert v.finding("pcr_digest").detail == "2 PCR values hash to pcrDigest"
    without_the_empty_bank = {**block, "pcr_values": {"sha256": block["pcr_values"]["sha256"]}}
    assert verdict(without_the_empty_bank).passed  # an empty bank has no value to give
    assert failing(verdict({**block, "pcr_banks": "sha256:0,7"})) == {
        "pcr_selection": "pcr_selection_mismatch"
    }


#: What a TPM can put in a quote's TPML_PCR_SELECTION: banks in any order (the ones we support), each
#: with any PCRs (none included) in a 3- or 4-byte bitmap.
tpm_selections = st.lists(
    st.tuples(
        st.sampled_from([ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512]), st.sampled_from([3, 4])
    ).flatmap(
        lambda bank: st.builds(
            PCRSelection,
            st.just(bank[0]),
            st.sets(st.integers(0, 8 * bank[1] - 1)).map(lambda s: tuple(sorted(s))),
            st.just(bank[1]),
        )
    ),
    min_size=1,  # a quote over no bank at all has no pcr_banks text: "" is refused as missing
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(tpm_selections)
def test_pcr_banks_text_round_trips_for_every_selection_a_tpm_can_produce(selections):
    quoted = parse_pcr_selection_list(marshal_pcr_selection_list(selections))
    text = selection_text(quoted)
    parsed = parse_pcr_banks(text)
    assert [(s.hash_alg, s.indices) for s in parsed] == [(s.hash_alg, s.indices) for s in selections]
    assert selection_text(parsed) == text
    requoted = parse_pcr_selection_list(marshal_pcr_selection_list(parsed))  # as the router asks for it
    assert [(s.hash_alg, s.indices) for s in requoted] == [(s.hash_alg, s.indices) for s in selections]


@settings(max_examples=100, deadline=None)
@given(tpm_selections)
def test_every_selection_a_tpm_can_produce_verifies(selections):
    values = [
        hashlib.new(s.bank, b"PCR %d" % index).digest() for s in selections for index in s.indices
    ]  # the software TPM has 24 PCRs; these stand for any TPM's values
    attest = _FUZZ_TPM.make_attest((), response_binding(PID, DIGEST))._replace(
        pcr_select=tuple(selections), pcr_digest=hashlib.sha256(b"".join(values)).digest()
    )
    block = {
        **_FUZZ_BLOCK,
        "pcr_banks": selection_text(selections),
        "pcr_values": pcr_value_map(tuple(selections), values),
        "quote_b64": b64(attest.marshal()),
        "signature_b64": b64(_FUZZ_TPM.sign(attest.marshal())),
    }
    v = verdict(block)
    assert v.passed, failing(v)
    assert v.facts["pcr_banks"] == block["pcr_banks"]


def test_pcr_digest_uses_the_signature_hash_not_the_bank_hash():
    tpm = SoftwareTPM("rsa2048-rsassa", hash_alg=ALG.SHA256)
    tpm.extend("sha1", 0, b"boot")
    assert verdict(evidence(tpm, "sha1:0,1")).passed  # sha1 bank, sha256-signed: digest is sha256
    # a quote whose pcrDigest was computed with the bank's hash is refused
    attest = tpm.make_attest(parse_pcr_banks("sha1:0,1"), response_binding(PID, DIGEST))
    wrong = attest._replace(pcr_digest=hashlib.sha1(b"".join(tpm.read(attest.pcr_select))).digest())
    block = with_quote(evidence(tpm, "sha1:0,1"), wrong.marshal(), tpm)
    assert failing(verdict(block)) == {"pcr_digest": "pcr_digest_mismatch"}


def test_quote_shapes_an_attacker_picks_do_not_grow_the_per_aik_cache():
    """Facts derived per AIK are made for the shapes an honest router uses, when the AIK is first
    seen; shapes are attacker-chosen, so the others are built per quote and never kept."""
    from types import MappingProxyType

    from nomyo_audit.tpm._aik import aik_material

    tpm = SoftwareTPM("rsa2048-rsassa")
    block = evidence(tpm)
    assert verdict(block).passed
    material = aik_material(block["aik_pubkey_b64"])
    cached = dict(material.facts_by_shape)
    assert len(cached) == 2 and isinstance(material.facts_by_shape, MappingProxyType)
    sig = parse_signature(base64.b64decode(block["signature_b64"]))
    quote = base64.b64decode(block["quote_b64"])
    shapes = 0
    for sig_alg in (ALG.RSASSA, ALG.RSAPSS, ALG.ECDSA):
        for hash_alg in (ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512):
            for quote_bytes in (quote, len(quote).to_bytes(2, "big") + quote):
                if (sig_alg, hash_alg) == (ALG.RSASSA, ALG.SHA256):
                    continue
                relabelled = sig._replace(sig_alg=sig_alg, hash_alg=hash_alg).marshal()
                forged = {**block, "signature_b64": b64(relabelled), "quote_b64": b64(quote_bytes)}
                v = verdict(forged)
                assert failing(v) == {"signature": "scheme_mismatch"}
                assert v.facts["signature_hash"] == HASH_NAMES[hash_alg]
                shapes += 1
    assert shapes > 16
    assert aik_material(block["aik_pubkey_b64"]) is material and dict(material.facts_by_shape) == cached
    assert verdict(block).passed  # the one honest shape still verifies


def test_ecdsa_r_and_s_with_leading_zeros():
    tpm = SoftwareTPM("ecc256-ecdsa")
    block = evidence(tpm)
    sig = parse_signature(base64.b64decode(block["signature_b64"]))
    padded = Signature(ALG.ECDSA, sig.hash_alg, r=b"\x00" * (40 - len(sig.r)) + sig.r, s=b"\x00" + sig.s)
    assert verdict({**block, "signature_b64": b64(padded.marshal())}).passed


def test_signer_as_plain_name_or_qualified_name(tpm):
    attest = tpm.make_attest(parse_pcr_banks("sha256:0,7,10"), response_binding(PID, DIGEST))
    assert verdict(evidence(tpm)).finding("signer_name").detail.endswith("in the endorsement hierarchy")
    plain = attest._replace(qualified_signer=tpm.public.name)
    assert verdict(with_quote(evidence(tpm), plain.marshal(), tpm)).finding("signer_name").status == "pass"
    owner_qn = tpm.public.qualified_name(b"\x40\x00\x00\x01")
    owner = attest._replace(qualified_signer=owner_qn)
    assert "owner" in verdict(with_quote(evidence(tpm), owner.marshal(), tpm)).finding("signer_name").detail


def test_clock_not_safe_is_recorded(tpm):
    attest = tpm.make_attest(parse_pcr_banks("sha256:0,7,10"), response_binding(PID, DIGEST))
    unsafe = attest._replace(clock_info=type(attest.clock_info)(1, 0, 0, False))
    v = verdict(with_quote(evidence(tpm), unsafe.marshal(), tpm))
    assert v.passed and v.finding("clock_safe").code == "clock_not_safe"


def test_tpm2b_attest_form_is_accepted_and_recorded(tpm):
    block = evidence(tpm)
    raw = base64.b64decode(block["quote_b64"])
    sized = {**block, "quote_b64": b64(len(raw).to_bytes(2, "big") + raw)}
    v = verdict(sized)
    assert v.passed and v.facts["quote_encoding"] == "TPM2B_ATTEST"


def test_expected_nonce_for_attest_before_send(tpm):
    block = evidence(tpm, extra=b"\x42" * 32)
    assert verify_attestation(block, None, expected_nonce=b"\x42" * 32).passed
    assert failing(verify_attestation(block, None, expected_nonce=b"\x43" * 32)) == {
        "nonce_binding": "nonce_mismatch"
    }


def test_verdict_serialises():
    v = verdict(evidence(SoftwareTPM()))
    doc = v.to_dict()
    assert doc["result"] == "pass" and len(doc["findings"]) == len(CHECKS)
    assert set(doc["findings"][0]) == {"check", "status", "code", "detail"}


# -- the verifier stands alone --------------------------------------------------------------------


def test_the_verifier_never_imports_attester_code():
    """An auditor's install verifies without reaching attester code or a TSS library."""
    code = (
        "import sys\n"
        "import nomyo_audit.tpm\n"
        "from nomyo_audit.tpm import verify_attestation\n"
        "from nomyo_audit import Verdict, verify_attestation as top\n"
        "assert top is verify_attestation\n"
        "print(sorted(m for m in sys.modules if m.startswith(('nomyo_audit.attest', 'tpm2_pytss'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_attesters_does_not_import_tpm2_pytss():
    code = (
        "import sys\n"
        "from nomyo_audit.attest import SoftwareTPM, Tpm2QuoteSource\n"
        "print(sorted(m for m in sys.modules if m.startswith('tpm2_pytss')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- fuzzing: verify_attestation never raises on any evidence ------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_evidence_never_raises(data):
    block = dict(_FUZZ_BLOCK)  # one key for all examples: generating one per example is slow
    field = data.draw(st.sampled_from(["quote_b64", "signature_b64", "aik_pubkey_b64"]))
    raw = bytearray(base64.b64decode(block[field]))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    block[field] = b64(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    v = verdict(block)
    assert v.result in ("pass", "fail")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["is_available", "pcr_banks", "pcr_values", "quote_b64", "signature_b64", "aik_pubkey_b64"]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=30)
        | st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
    )
)
def test_fuzz_arbitrary_blocks_never_raise(block):
    assert verdict(block).result in ("pass", "fail")


_FUZZ_TPM = SoftwareTPM("ecc256-ecdsa")
_FUZZ_BLOCK = evidence(_FUZZ_TPM)
