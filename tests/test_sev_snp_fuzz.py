"""Fuzz the HCL report reader, the SEV-SNP report reader and the SNP appraiser (hypothesis).

Random bytes and real reports with bytes changed, cut or inserted: the readers raise only
EvidenceError with their documented code (hcl_malformed, snp_malformed), never anything else;
the appraiser raises nothing, and passes only when the CPU report and the variable data it binds are
the real ones unchanged (a change in the HCL header's version word is the only unauthenticated
difference that is still a well-formed report).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sev_snp_evidence import AT, aik, read, vcek

from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._hcl import parse_hcl_report
from nomyo_audit.tpm._sev_snp import appraise_sev_snp
from nomyo_audit.tpm._sev_snp_report import parse_snp_report

NAME = "trustee-evidence-v0"
HCL = read(NAME, "hcl_report.bin")
REPORT = read(NAME, "snp_report.bin")
ORIGINAL = parse_hcl_report(HCL)
STORE = TrustStore.bundled()
AIK = aik(NAME)
VCEK = vcek(NAME)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["set", "flip", "cut", "insert"]))
        if action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def only(code: str, parse, data: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        parse(data)
    except EvidenceError as exc:
        assert exc.code == code, exc.code
        assert exc.message and len(exc.message) < 300


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=3000), mutated(HCL)))
def test_hcl_reader_raises_only_hcl_malformed(data: bytes) -> None:
    only("hcl_malformed", parse_hcl_report, data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(min_size=1184, max_size=1184), st.binary(max_size=1300), mutated(REPORT)))
def test_snp_reader_raises_only_snp_malformed(data: bytes) -> None:
    only("snp_malformed", parse_snp_report, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(HCL))
def test_the_appraiser_raises_nothing_and_passes_only_the_real_report(data: bytes) -> None:
    result = appraise_sev_snp(AIK, data, VCEK, [], STORE, at=AT)
    assert result.finding.check == "aik_anchor" and result.finding.status in ("pass", "fail")
    if result.finding.status == "pass":
        parsed = parse_hcl_report(data)
        assert parsed.hw_report == ORIGINAL.hw_report and parsed.variable_data == ORIGINAL.variable_data
    else:
        assert result.facts == {}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VCEK))
def test_a_garbled_vcek_never_passes(data: bytes) -> None:
    result = appraise_sev_snp(AIK, HCL, data, [], STORE, at=AT)
    assert result.finding.status in ("pass", "fail")
    if result.finding.status == "pass":  # only an unsigned part changed that the DER reader repairs
        assert data[: len(VCEK)] == VCEK
