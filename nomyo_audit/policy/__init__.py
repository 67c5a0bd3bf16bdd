"""YAML attestation policies: load (I/O at the edge), evaluate (pure)."""

from ._evaluate import KEY_SCOPE, PolicyResult, RuleOutcome, evaluate
from ._loader import load_policy, policy_schema, shipped_policies, validate_document
from ._model import Policy, PolicyError, PolicyViolationError, parse_duration

__all__ = [
    "KEY_SCOPE",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "PolicyViolationError",
    "RuleOutcome",
    "evaluate",
    "load_policy",
    "parse_duration",
    "policy_schema",
    "shipped_policies",
    "validate_document",
]
