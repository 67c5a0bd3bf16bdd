"""A Verdict as an IETF RATS EAT Attestation Result (draft-ietf-rats-ear), JSON claims-set.

The mapping never claims more than the evidence gave:

* ``ear.status`` is ``contraindicated`` when any check failed, and at best
  ``warning`` otherwise: without a certificate chain the AIK is not anchored
  to a hardware root of trust, so nomyo-audit never emits ``affirming`` for it.
* In the AR4SI trustworthiness vector only what was appraised is claimed:
  ``instance-identity`` 97 ("not recognized") when the quote's signature,
  signer or AIK attributes fail, ``executables`` 96 ("contraindicated") when
  the PCR evidence is inconsistent (the PCR checks, or an event log or IMA list that does not
  replay to the quote), and 0 ("no claim") everywhere else;
  golden-value appraisal (executables 2 or 33) is the policy's to claim.
  ``hardware`` is 2 ("genuine") only when ``aik_anchor`` passed (an AK certificate chain or a
  credential activation against a certified EK) and the AIK's identity did not fail (an AK
  certificate certifies a key, not the attributes a router presents with it), 97 when an anchor
  failed or the anchored AIK's identity did, else 0.
* The finding codes travel in the ``nomyo-audit.findings`` extension.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ._verify import Verdict

__all__ = ["EAT_PROFILE", "IDENTITY_CHECKS", "to_ear"]

#: The ``eat_profile`` claim of every result: the EAR profile this mapping follows
EAT_PROFILE = "tag:github.com,2023:veraison/ear"
DEFAULT_POLICY_ID = "nomyo-audit/verify-only"
#: the checks that establish the AIK's identity: a hardware anchor is believed only when none failed
IDENTITY_CHECKS = ("evidence_format", "signature", "quote_structure", "signer_name", "aik_attributes")
#: the checks whose failure makes the measured state contraindicated (executables 96)
_PCR_CHECKS = ("pcr_selection", "pcr_digest", "event_log", "ima_log")
#: AR4SI hardware: 2 (affirming: genuine) only for an AIK anchored to a certified TPM, 97
#: (unrecognized) for an anchor offered that did not verify, 0 (no claim) for none
_HARDWARE = {"pass": 2, "fail": 97}


def to_ear(
    verdict: Verdict,
    *,
    issued_at: int,
    policy_id: str = DEFAULT_POLICY_ID,
    submod: str = "tpm",
) -> dict[str, Any]:
    """``verdict`` as an EAR claims-set (JSON-ready), for relying parties that consume IETF RATS
    attestation results; ``issued_at`` is the ``iat`` claim (seconds since the epoch) and
    ``submod`` names the one submodule appraised. The mapping is described in this module's
    docstring. Raises nothing.
    """
    failed = {f.check for f in verdict.failures}
    identity_failed = bool(failed & set(IDENTITY_CHECKS))
    hardware = _HARDWARE.get(verdict.finding("aik_anchor").status, 0)
    vector = {
        "instance-identity": 97 if identity_failed else 0,
        "configuration": 0,
        "executables": 96 if failed & set(_PCR_CHECKS) else 0,
        "file-system": 0,
        "hardware": 97 if hardware == 2 and identity_failed else hardware,
        "runtime-opaque": 0,
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    return {
        "eat_profile": EAT_PROFILE,
        "iat": issued_at,
        "ear.verifier-id": {"developer": "nomyo-audit", "build": f"nomyo-audit {__version__}"},
        "submods": {
            submod: {
                "ear.status": "contraindicated" if failed else "warning",
                "ear.trustworthiness-vector": vector,
                "ear.appraisal-policy-id": policy_id,
                "nomyo-audit.findings": [f.to_dict() for f in verdict.findings],
            }
        },
    }
