"""Review R4: AR4SI values with their registered meanings. A quote whose signature does not verify is
"cryptographic validation of the Evidence has failed" (99, in every claim of draft-ietf-rats-ar4si),
not "the Attesting Environment is not recognized" (97) nor "runtime memory includes executables which
are not recognized" (33): nothing in a forged quote says what ran, or which environment signed it."""

from __future__ import annotations

import base64

from test_ear_jwt_vector import appraise, attester, golden  # noqa: F401  (attester is a fixture)


def _forge(block):
    signature = bytearray(base64.b64decode(block["signature_b64"]))
    signature[-1] ^= 1
    block["signature_b64"] = base64.b64encode(bytes(signature)).decode()


def test_a_quote_whose_signature_fails_is_crypto_failed_in_every_claim_it_makes(attester):  # noqa: F811
    tpm = appraise(attester, golden(attester), mutate=_forge)
    made = {claim: value for claim, value in tpm["ear.trustworthiness-vector"].items() if value}
    assert made["instance-identity"] == 99
    assert set(made.values()) == {99}, made
    assert tpm["nomyo-audit.vector-basis"]["instance-identity"] == ["signature"]
    assert tpm["ear.status"] == "contraindicated"
