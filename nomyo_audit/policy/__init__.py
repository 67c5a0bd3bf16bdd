"""Attestation policies: what a reply's evidence must prove before it is trusted.

A policy is a YAML document (``apiVersion: nomyo-audit/v1``, ``kind:
AttestationPolicy``) of rules: golden PCR values, AIK pins, security tiers,
models, freshness. :func:`load_policy` reads and validates one (I/O at the
edge; ``extends`` layers resolved); :func:`evaluate` applies it to one reply's
evidence (pure: no clock, no I/O), giving a :class:`PolicyResult` with one
:class:`RuleOutcome` per rule.

Saved evidence (responses, ``_metadata`` objects, audit-log records) is
appraised offline with :func:`read_records` (or :func:`parse_records`,
:func:`stored_records`) and :func:`appraise` / :func:`appraise_all`, each giving
an :class:`Appraisal`; :func:`junit_xml` renders appraisals for CI test views.
"""

from ._appraise import (
    Appraisal,
    Record,
    appraise,
    appraise_all,
    parse_records,
    read_records,
    stored_records,
    verify_record,
)
from ._evaluate import KEY_SCOPE, PolicyResult, evaluate
from ._junit import junit_chunks, junit_xml
from ._loader import load_policy, policy_schema, shipped_policies, validate_document
from ._model import (
    MAX_DURATION,
    AikTrustSpec,
    BootEventsSpec,
    CudaDeviceSpec,
    ImaSpec,
    KernelCmdlineSpec,
    Policy,
    PolicyError,
    PolicySpec,
    PolicyViolationError,
    ServingStackSpec,
    parse_duration,
)
from ._rules import RuleOutcome

__all__ = [
    "KEY_SCOPE",
    "MAX_DURATION",
    "AikTrustSpec",
    "Appraisal",
    "BootEventsSpec",
    "CudaDeviceSpec",
    "ImaSpec",
    "KernelCmdlineSpec",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "PolicySpec",
    "PolicyViolationError",
    "Record",
    "RuleOutcome",
    "ServingStackSpec",
    "appraise",
    "appraise_all",
    "evaluate",
    "junit_chunks",
    "junit_xml",
    "load_policy",
    "parse_duration",
    "parse_records",
    "policy_schema",
    "read_records",
    "shipped_policies",
    "stored_records",
    "validate_document",
    "verify_record",
]
