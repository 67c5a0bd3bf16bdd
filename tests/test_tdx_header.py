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
