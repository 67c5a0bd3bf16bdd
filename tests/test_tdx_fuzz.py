"""Fuzz the TD quote reader and the TDX appraiser: any input is a parsed quote or ``tdx_malformed``
(the one documented exception), and the appraiser raises nothing and never passes a quote whose
meaning changed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tdx_forge import QuoteParts
from test_tdx import aik_of

from nomyo_audit.errors import CertificateError, EvidenceError
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._tdx import appraise_tdx
from nomyo_audit.tpm._tdx_quote import MAX_TD_QUOTE, TdQuote, parse_td_quote
from nomyo_audit.tpm._x509 import read_certificate

FIXTURES = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure-tdx"
QUOTE = (FIXTURES / "trustee" / "td_quote.bin").read_bytes()
HCL = (FIXTURES / "trustee" / "hcl_report.bin").read_bytes()
AT = datetime(2025, 11, 1, tzinfo=timezone.utc)
ORIGINAL = parse_td_quote(QUOTE)
STORE = TrustStore.bundled()
#: a byte of the presented Intel root's signature: the store's copy is used, so the quote still passes
ROOT_SIGNATURE_BYTE = QUOTE.rindex(b"-----END CERTIFICATE-----") - 10


def parse_or_malformed(data: bytes) -> TdQuote | None:
    try:
        return parse_td_quote(data)
    except EvidenceError as exc:
        assert exc.code == "tdx_malformed", exc.code
        return None


def meaning(quote: TdQuote) -> tuple[object, ...]:
    """What the appraiser relies on: every signed or certified part, not the PEM text's whitespace,
    and of a presented certificate the store holds (the root) only its subject and key: the path
    uses the store's copy of an anchor, never the bytes a chain presents (tpm/_chain.py)."""
    chain = []
    for der in quote.pck_chain:
        try:
            certificate = read_certificate(der)
        except CertificateError:
            chain.append(der)
            continue
        anchor = STORE.anchor_for(certificate)
        chain.append((anchor.subject, anchor.spki) if anchor is not None else der)
    return (quote.signed, quote.signature, quote.attestation_key, quote.qe_report, quote.qe_auth_data,
            quote.qe_report_signature, tuple(chain))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=6000))
def test_random_bytes(data: bytes) -> None:
    parse_or_malformed(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_a_real_header_with_random_rest(tail: bytes) -> None:
    parse_or_malformed(QUOTE[:632] + tail)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(QUOTE) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, len(QUOTE)),
)
@example([(ROOT_SIGNATURE_BYTE, ord("A") if QUOTE[ROOT_SIGNATURE_BYTE] != ord("A") else ord("B"))],
         len(QUOTE))  # fmt: skip
def test_mutated_real_quote_never_passes_with_another_meaning(changes, cut) -> None:
    data = bytearray(QUOTE)
    for at, value in changes:
        data[at] = value
    mutated = bytes(data[: max(cut, 636)] if cut < 636 else data)
    parsed = parse_or_malformed(mutated)
    result = appraise_tdx(aik_of("trustee"), HCL, mutated, STORE, at=AT)
    if result.finding.status == "pass":
        assert parsed is not None and meaning(parsed) == meaning(ORIGINAL)
    else:
        assert result.finding.status == "fail" and result.finding.code


@pytest.mark.parametrize(
    "size_at, value",
    [(632, 0xFFFFFFFF), (632, 0), (632 + 4 + 128 + 2, 0xFFFFFFFF), (632 + 4 + 128 + 2, 10)],
)
def test_sizes_that_do_not_add_up(size_at: int, value: int) -> None:
    data = bytearray(QUOTE)
    data[size_at : size_at + 4] = value.to_bytes(4, "little")
    assert parse_or_malformed(bytes(data)) is None


def test_bounds() -> None:
    parts = QuoteParts.of(ORIGINAL)
    assert parse_td_quote(parts.assemble()).pck_chain == ORIGINAL.pck_chain  # the padding is optional
    for bad in (b"", QUOTE[:635], QUOTE + b"\x01", bytes(MAX_TD_QUOTE + 1)):
        assert parse_or_malformed(bad) is None
    many = QuoteParts.of(ORIGINAL)
    pem = many.chain_pem.rstrip(b"\0")
    huge = QuoteParts(**{**many.__dict__, "chain_pem": pem * 3 + b"\0"})  # nine certificates
    assert parse_or_malformed(huge.assemble()) is None
