"""One reading of the content digest a client recorded with its verdict, for every consumer.

Records, ``nomyo-audit verify`` and the policy rules all read it through
``tpm.binding.recorded_content_digest``; stored data may be tampered with, so a
malformed value is "no recorded digest", never an exception.
"""

from __future__ import annotations

import json

import pytest

from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit._records import recorded_content_digest as record_digest
from nomyo_audit.policy import evaluate, load_policy
from nomyo_audit.tpm._binding import recorded_content_digest, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot

GOOD = "ab" * 32
MALFORMED = ["zz" * 32, "ab" * 31, "ab" * 33, 12, None, ["ab" * 32], {"x": 1}, "\ud800" * 64]


def test_a_well_formed_digest_is_read_back() -> None:
    assert recorded_content_digest({"content_digest": GOOD}) == bytes.fromhex(GOOD)
    assert record_digest({"verdict": {"content_digest": GOOD}}) == bytes.fromhex(GOOD)


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_digest_is_none(value: object) -> None:
    assert recorded_content_digest({"content_digest": value}) is None
    assert record_digest({"verdict": {"content_digest": value}}) is None


@pytest.mark.parametrize("verification", [None, [], "x", 3, {"content_digest": "zz" * 32}])
def test_policy_evaluation_of_metadata_with_a_malformed_recorded_digest_does_not_raise(
    verification: object,
) -> None:
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    from nomyo_audit.attest._attester import TPMAttester
    from nomyo_audit.tpm._binding import response_binding

    response = {"id": "c1", "model": "echo", "choices": []}
    block = TPMAttester(tpm).evidence(response_binding("pid-1", response_content_digest(response)))
    metadata = {"payload_id": "pid-1", "processed_at": 1000, "tpm_attestation": block,
                "verification": verification}
    result = evaluate(load_policy("development"), metadata, now=1010)
    assert result.outcome in {"pass", "warn", "deny"}
    json.dumps(result.to_dict())
