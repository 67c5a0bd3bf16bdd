"""Every fast path of the verifier against its careful path: they must agree on every input.

The verifier reads the common case -- well-formed evidence -- through fast paths (quotes,
signatures, PCR values, base64), and falls back to careful parsers that say exactly what is
wrong. A fast path that accepted something the careful parser refuses, or read it differently,
would be a second, untested definition of valid evidence. So for each pair:

* on any input, the parser as the verifier calls it gives the careful parser's outcome: the same
  value, or the same error code and message;
* the fast path takes everything well-formed that a TPM writes (else it would not be fast);
* each careful parser's success branches are reached here directly.

Inputs: structures generated field by field (sizes at and over every limit), and the real
quotes in tests/fixtures/vectors/tpm-evidence.json with bytes flipped, replaced, inserted,
removed or cut.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import FIXTURES
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm._attest import _parse_attest_careful, _parse_quote_fast
from nomyo_audit.tpm._evidence import (
    MAX_B64,
    _pcr_values_careful,
    _pcr_values_fast,
    b64_field,
    b64_text,
    decode_b64,
    read_pcr_values,
)
from nomyo_audit.tpm._signature import _parse_signature_careful, _parse_signature_fast
from nomyo_audit.tpm._structures import (
    ALG,
    ATTEST_TYPES,
    HASH_NAMES,
    MAX_ATTEST,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    PCRSelection,
    TPMSAttest,
    parse_attest,
    parse_signature,
    pcr_value_map,
)

VECTORS = json.loads((FIXTURES / "vectors" / "tpm-evidence.json").read_text())["vectors"]
GENUINE = [v for v in VECTORS if v["expect"]["result"] == "pass"]


def outcome(parse: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a parser made of its input: its value, or its error's code and message (any other
    exception propagates: a parser that crashes fails the test)."""
    try:
        return "value", parse(*args)
    except EvidenceError as exc:
        return "error", (exc.code, exc.message)


def real(field: str) -> list[bytes]:
    return [base64.b64decode(v["tpm_attestation"][field]) for v in GENUINE]


# -- mutations of real bytes ----------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A real blob with a few bytes flipped, replaced, inserted or removed, then perhaps cut."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "replace", "insert", "delete"]))
        if action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif position < len(data):
            if action == "flip":
                data[position] ^= 1 << draw(st.integers(0, 7))
            elif action == "replace":
                data[position] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x7F, 0x80, 0xFF]))
            else:
                del data[position]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


# -- quotes (TPMS_ATTEST) ---------------------------------------------------------------------------

hash_algs = st.sampled_from([ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512, ALG.NULL, 0x0012, 0x0099])


@st.composite
def pcr_selections(draw: st.DrawFn) -> PCRSelection:
    width = draw(st.integers(0, 5))  # 3 and 4 are what TPMs write; 5 is over the limit
    indices = draw(st.sets(st.integers(0, 8 * width - 1), max_size=8)) if width else set()
    return PCRSelection(draw(hash_algs), tuple(sorted(indices)), width)


@st.composite
def attests(draw: st.DrawFn) -> bytes:
    """TPMS_ATTEST field by field, each size at, under or over its limit."""
    attest = TPMSAttest(
        draw(st.sampled_from([TPM_GENERATED_VALUE, TPM_GENERATED_VALUE ^ 1])),
        draw(st.sampled_from([TPM_ST_ATTEST_QUOTE, *ATTEST_TYPES, 0x8099])),
        draw(st.binary(max_size=67)),  # MAX_NAME is 66
        draw(st.binary(max_size=67)),  # MAX_DATA is 66
        ClockInfo(
            draw(st.integers(0, 2**64 - 1)),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.sampled_from([0, 1, 2, 0xFF])),  # safe, as the byte a TPM (or not) writes
        ),
        draw(st.integers(0, 2**64 - 1)),
        tuple(draw(st.lists(pcr_selections(), max_size=17))),  # MAX_PCR_BANKS is 16
        draw(st.binary(max_size=65)),  # MAX_DIGEST is 64
    )
    data = attest.marshal()
    if draw(st.booleans()):
        data += draw(st.binary(min_size=1, max_size=3))
    return data


def careful_attest(data: bytes) -> TPMSAttest:
    """parse_attest with the careful parser only (the same encoding and size checks first)."""
    encoding = "TPMS_ATTEST"
    magic = TPM_GENERATED_VALUE.to_bytes(4, "big")
    if len(data) >= 6 and data[2:6] == magic and int.from_bytes(data[:2], "big") == len(data) - 2:
        encoding, data = "TPM2B_ATTEST", data[2:]
    if len(data) > MAX_ATTEST:
        return parse_attest(data)  # the size limit is checked before either parser runs
    return _parse_attest_careful(data, encoding)


def check_attest(data: bytes) -> None:
    assert outcome(parse_attest, data) == outcome(careful_attest, data)
    fast = _parse_quote_fast(data, "TPMS_ATTEST")
    careful = outcome(_parse_attest_careful, data, "TPMS_ATTEST")
    if fast is not None:
        assert careful == ("value", fast)
    elif careful[0] == "value":  # the fast path takes every well-formed quote
        assert careful[1].type != TPM_ST_ATTEST_QUOTE


@settings(max_examples=500, deadline=None)
@given(attests())
def test_quote_fast_path_agrees_with_the_careful_parser_on_generated_structures(data):
    check_attest(data)
    check_attest(len(data).to_bytes(2, "big") + data)  # as a TPM2B_ATTEST


@settings(max_examples=500, deadline=None)
@given(mutated(real("quote_b64")))
def test_quote_fast_path_agrees_with_the_careful_parser_on_mutated_real_quotes(data):
    check_attest(data)


# -- signatures (TPMT_SIGNATURE) ---------------------------------------------------------------------

sig_algs = st.sampled_from([ALG.RSASSA, ALG.RSAPSS, ALG.ECDSA, ALG.HMAC, ALG.NULL])


@st.composite
def signatures(draw: st.DrawFn) -> bytes:
    """A TPMT_SIGNATURE head, then an RSA body or ECDSA's r and s, under any label."""
    data = draw(sig_algs).to_bytes(2, "big") + draw(hash_algs).to_bytes(2, "big")
    if draw(st.booleans()):
        for size in (draw(st.sampled_from([0, 1, 32, 48, 66, 67])), draw(st.integers(0, 67))):
            data += size.to_bytes(2, "big") + b"\x01" * size  # MAX_ECC_KEY_BYTES is 66
    else:
        size = draw(st.sampled_from([0, 1, 256, 384, 512, 513]))  # MAX_RSA_KEY_BYTES is 512
        data += size.to_bytes(2, "big") + b"\x03" * size
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=2))
    return data


def check_signature(data: bytes) -> None:
    assert outcome(parse_signature, data) == outcome(_parse_signature_careful, data)
    fast = _parse_signature_fast(data)
    careful = outcome(_parse_signature_careful, data)
    assert (careful[0] == "value") is (fast is not None)  # the fast path takes every valid signature
    if fast is not None:
        assert careful == ("value", fast)


@settings(max_examples=500, deadline=None)
@given(signatures())
def test_signature_fast_paths_agree_with_the_careful_parser_on_generated_signatures(data):
    check_signature(data)


@settings(max_examples=500, deadline=None)
@given(mutated(real("signature_b64")))
def test_signature_fast_paths_agree_with_the_careful_parser_on_mutated_real_signatures(data):
    check_signature(data)


def test_the_real_signatures_cover_rsa_and_ecdsa():
    assert {parse_signature(raw).sig_alg for raw in real("signature_b64")} == {
        ALG.RSASSA,
        ALG.RSAPSS,
        ALG.ECDSA,
    }


# -- PCR values -----------------------------------------------------------------------------------

banks = st.sampled_from([ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512])
quoted_selections = st.lists(
    st.builds(
        PCRSelection,
        banks,
        st.sets(st.integers(0, 31), max_size=6).map(lambda s: tuple(sorted(s))),
        st.just(4),
    ),
    min_size=1,
    max_size=4,
).map(tuple)

#: index keys that are not how the evidence writes an index, each naming a PCR all the same
ODD_INDEX_KEYS = ["07", " 7", "+7", "7 ", "\u0667", "7.0", "-0", "x", "32"]


@st.composite
def pcr_value_blocks(draw: st.DrawFn) -> tuple[tuple[PCRSelection, ...], Any]:
    """A selection and pcr_values as a router writes them, then perhaps altered."""
    selections = draw(quoted_selections)
    values = [
        draw(st.binary(min_size=size, max_size=size))
        for s in selections
        for size in [{ALG.SHA1: 20, ALG.SHA256: 32, ALG.SHA384: 48, ALG.SHA512: 64}[s.hash_alg]]
        for _ in s.indices
    ]
    mapped: Any = pcr_value_map(selections, values)
    for _ in range(draw(st.integers(0, 3))):
        mapped = alter_pcr_values(draw, mapped)
    return selections, mapped


def alter_pcr_values(draw: st.DrawFn, mapped: Any) -> Any:
    if not isinstance(mapped, dict) or not mapped:
        return mapped
    bank = draw(st.sampled_from(sorted(mapped)))
    entries = mapped[bank]
    action = draw(
        st.sampled_from(
            ["rename_bank", "add_bank", "drop_bank", "not_a_dict", "odd_key", "drop", "add", "value", "type"]
        )
    )
    if action == "rename_bank":
        mapped[draw(st.sampled_from([bank.upper(), bank + " ", "sha3_256"]))] = mapped.pop(bank)
    elif action == "add_bank":
        mapped[draw(st.sampled_from(sorted(set(HASH_NAMES.values()) - {bank})))] = draw(
            st.sampled_from([{}, {"0": "00" * 32}])
        )
    elif action == "drop_bank":
        del mapped[bank]
    elif action == "not_a_dict":
        mapped[bank] = draw(st.sampled_from([None, [], "", 7]))
    elif not isinstance(entries, dict):
        return mapped
    elif action == "odd_key" and entries:
        key = draw(st.sampled_from(sorted(entries)))
        entries[draw(st.sampled_from(ODD_INDEX_KEYS)).replace("7", key)] = entries[key]
        if draw(st.booleans()):
            del entries[key]
    elif action == "drop" and entries:
        del entries[draw(st.sampled_from(sorted(entries)))]
    elif action == "add":
        entries[str(draw(st.integers(0, 33)))] = "00" * draw(st.sampled_from([20, 32]))
    elif action == "value" and entries:
        key = draw(st.sampled_from(sorted(entries)))
        if not isinstance(entries[key], str):
            return mapped
        entries[key] = draw(
            st.sampled_from(
                [entries[key].upper(), " " + entries[key], entries[key][:-2], entries[key] + "00", "zz", ""]
            )
        )
    elif action == "type" and entries:
        entries[draw(st.sampled_from(sorted(entries)))] = draw(st.sampled_from([None, 0, b"\x00", ["00"]]))
    return mapped


def careful_pcr_values(values: Any, selections: tuple[PCRSelection, ...]) -> tuple[Any, Any]:
    ordered = _pcr_values_careful(values, selections)
    return ordered, pcr_value_map(selections, ordered)


def check_pcr_values(selections: tuple[PCRSelection, ...], values: Any) -> None:
    careful = outcome(careful_pcr_values, values, selections)
    assert outcome(read_pcr_values, {"pcr_values": values}, selections) == careful
    fast = _pcr_values_fast(values, selections)
    if fast is not None:
        assert careful == ("value", fast)


@settings(max_examples=800, deadline=None)
@given(pcr_value_blocks())
@example(  # a bank listed twice with the same PCR, and a bank the quote does not cover
    (
        (PCRSelection(ALG.SHA256, (0,), 3), PCRSelection(ALG.SHA256, (0,), 3)),
        {"sha256": {"0": "11" * 32}, "sha1": {"3": "22" * 20}},
    )
)
def test_pcr_values_fast_path_agrees_with_the_careful_path(selection_and_values):
    check_pcr_values(*selection_and_values)


@settings(max_examples=300, deadline=None)
@given(quoted_selections.filter(lambda s: len({x.hash_alg for x in s}) == len(s)), st.data())
def test_pcr_values_fast_path_takes_what_a_router_writes(selections, data):
    values = [
        data.draw(st.binary(min_size=n, max_size=n))
        for s in selections
        for n in [{ALG.SHA1: 20, ALG.SHA256: 32, ALG.SHA384: 48, ALG.SHA512: 64}[s.hash_alg]]
        for _ in s.indices
    ]
    written = pcr_value_map(selections, values)
    assert _pcr_values_fast(written, selections) == (values, written)


def test_one_pcr_given_twice_is_refused_not_picked():
    """'7' and '07' both name PCR 7: the evidence is ambiguous, whichever value would hash right."""
    selection = (PCRSelection(ALG.SHA256, (7,), 3),)
    for values in ({"sha256": {"7": "11" * 32, "07": "22" * 32}}, {"sha256": {"07": "11" * 32}}):
        with pytest.raises(EvidenceError) as err:
            careful_pcr_values(values, selection)
        assert err.value.code == "pcr_value_format"
        assert "pcr_values.sha256.07" in err.value.message


def test_a_bank_named_in_another_case_is_not_the_bank():
    with pytest.raises(EvidenceError) as err:
        careful_pcr_values({"SHA256": {"7": "11" * 32}}, (PCRSelection(ALG.SHA256, (7,), 3),))
    assert err.value.code == "pcr_value_unquoted"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GENUINE), st.data())
def test_pcr_values_of_real_vectors_altered(vector, data):
    block = vector["tpm_attestation"]
    quoted = parse_attest(base64.b64decode(block["quote_b64"])).pcr_select
    values = json.loads(json.dumps(block["pcr_values"]))
    for _ in range(data.draw(st.integers(0, 3))):
        values = alter_pcr_values(data.draw, values)
    check_pcr_values(quoted, values)


# -- base64 -----------------------------------------------------------------------------------------


@st.composite
def base64_values(draw: st.DrawFn) -> Any:
    text = base64.b64encode(draw(st.binary(max_size=64))).decode()
    action = draw(
        st.sampled_from(["as is", "unpad", "pad", "space", "newline", "urlsafe", "alien", "long", "type"])
    )
    if action == "unpad":
        text = text.rstrip("=")
    elif action == "pad":
        text += draw(st.sampled_from(["=", "==", "A=", "QQ=="]))
    elif action in ("space", "newline", "alien"):
        position = draw(st.integers(0, len(text)))
        char = {"space": " ", "newline": "\n"}.get(action) or draw(st.sampled_from(["@", "é", "\x00", "-"]))
        text = text[:position] + char + text[position:]
    elif action == "urlsafe":
        text = text.replace("+", "-").replace("/", "_")
    elif action == "long":
        text = "A" * draw(st.sampled_from([MAX_B64 - 4, MAX_B64, MAX_B64 + 4]))
    elif action == "type":
        return draw(st.sampled_from([None, 42, text.encode(), [text], type("Text", (str,), {})(text)]))
    return text


def check_base64(value: Any) -> None:
    block = {"field": value}
    careful = outcome(lambda: decode_b64(b64_text(block, "field"), "field"))
    assert outcome(b64_field, block, "field") == careful


@settings(max_examples=500, deadline=None)
@given(base64_values())
def test_base64_fast_path_agrees_with_the_careful_path(value):
    check_base64(value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(GENUINE), st.sampled_from(["quote_b64", "signature_b64", "aik_pubkey_b64"]), st.data())
def test_base64_of_real_vectors_altered(vector, field, data):
    text = vector["tpm_attestation"][field]
    position = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.sampled_from(["", "=", " ", "\n", "*", "A", "AA"]))
    cut = data.draw(st.integers(position, len(text)))
    check_base64(text[:position] + insert + text[cut:])


# -- each careful parser's success branches, reached directly ----------------------------------------


def test_careful_parsers_accept_every_real_vector_as_the_fast_paths_do():
    encodings, schemes, banks_seen = set(), set(), set()
    for vector in GENUINE:
        block = vector["tpm_attestation"]
        raw = base64.b64decode(block["quote_b64"])
        quote = _parse_attest_careful(raw, "TPMS_ATTEST")
        assert quote == _parse_quote_fast(raw, "TPMS_ATTEST") == parse_attest(raw)
        encodings.add(quote.type)
        signature = base64.b64decode(block["signature_b64"])
        assert _parse_signature_careful(signature) == _parse_signature_fast(signature)
        schemes.add(parse_signature(signature).sig_alg)
        ordered = _pcr_values_careful(block["pcr_values"], quote.pcr_select)
        assert (ordered, pcr_value_map(quote.pcr_select, ordered)) == _pcr_values_fast(
            block["pcr_values"], quote.pcr_select
        )
        banks_seen.update(s.bank for s in quote.pcr_select if not s.indices)
        for field in ("quote_b64", "signature_b64", "aik_pubkey_b64"):
            assert decode_b64(b64_text(block, field), field) == b64_field(block, field)
    assert schemes == {ALG.RSASSA, ALG.RSAPSS, ALG.ECDSA}
    assert banks_seen == {"sha1"}  # an empty bank, from tpm2_quote


def test_careful_attest_parser_returns_structures_of_other_types():
    """Only the careful parser reads a non-quote (the verifier then refuses it by type)."""
    raw = base64.b64decode(GENUINE[0]["tpm_attestation"]["quote_b64"])
    certify = raw[:4] + (0x8017).to_bytes(2, "big") + raw[6:]
    assert _parse_quote_fast(certify, "TPMS_ATTEST") is None
    parsed = _parse_attest_careful(certify, "TPMS_ATTEST")
    assert parsed.type_name == "TPM_ST_ATTEST_CERTIFY" and parsed.pcr_select == ()
    assert parse_attest(certify) == parsed
