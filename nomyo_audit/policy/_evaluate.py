"""``evaluate(policy, response_or_metadata) -> PolicyResult``: pure, deterministic, no I/O.

One outcome per rule the policy states, each naming the verifier findings it
rests on. Rules only ever look at values the verifier *proved*: a PCR golden
value is compared with ``verdict.facts["pcr_values"]``, which exists only when
the signed quote covers those values, never with the raw ``pcr_values`` a
router sent. The caller supplies ``now`` (seconds since the epoch) for
``max_age``, so evaluation is reproducible from a stored record: judged at the
record's own time, a record gets the same outcome a year later. Nothing here
reads a clock; without a usable ``now``, ``max_age`` fails rather than guess.

Metadata is input from a router or a stored file: any shape of it (wrong
types, missing fields, NaN times, a response that is not a mapping) gives
failing rule outcomes, never an exception.

A policy is compiled once into one closure per rule (durations parsed, sets
built) and kept beside it, not in it, for as long as it lives: evaluation
happens per request, compilation per policy. What compiled rules keep is
immutable (outcomes, frozensets, read-only mappings), so one policy can be
evaluated from many threads at once.
"""

import operator
import weakref
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from ..tpm._binding import recorded_content_digest, response_content_digest
from ..tpm._verify import Verdict, verify_attestation
from ._model import Policy
from ._rules import RULES, Check, RuleOutcome

__all__ = ["KEY_SCOPE", "PolicyResult", "evaluate"]

Outcome = Literal["pass", "warn", "deny"]
#: Rules that apply to the attestation of a router key before any prompt is sent: the machine's state
#: (its PCRs and the events behind them), not a reply's (``serving_stack`` judges the reply's model).
KEY_SCOPE = (
    "require_attestation",
    "pcrs",
    "pcr_selection",
    "aik_trust",
    "gce",
    "sev_snp",
    "tdx",
    "secure_boot",
    "boot_events",
    "kernel_cmdline",
    "ima",
)


class PolicyResult(NamedTuple):
    """The outcome of every rule applied, and of the policy as a whole.

    Built by :func:`evaluate` only, which derives ``failures`` from ``rules``.
    """

    policy_name: str
    policy_digest: str
    on_failure: str
    rules: tuple[RuleOutcome, ...]
    verdict: Verdict
    #: the rule outcomes whose status is "fail", in rule order
    failures: tuple[RuleOutcome, ...]

    @property
    def passed(self) -> bool:
        """True when no rule failed."""
        return not self.failures

    @property
    def outcome(self) -> Outcome:
        """``pass``; or, with a failing rule, the policy's ``on_failure``: ``warn`` or ``deny``."""
        if not self.failures:
            return "pass"
        return "warn" if self.on_failure == "warn" else "deny"

    def summary(self) -> str:
        """One line for people: the policy, its outcome and each failing rule with its detail."""
        if self.passed:
            return f"policy {self.policy_name}: pass"
        failed = "; ".join(f"{r.rule}: {r.detail}" for r in self.failures)
        return f"policy {self.policy_name}: {self.outcome} ({failed})"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (without the verdict), as audit records and reports keep it."""
        return {
            "policy": self.policy_name,
            "policy_digest": self.policy_digest,
            "outcome": self.outcome,
            "rules": [r.to_dict() for r in self.rules],
        }


def evaluate(
    policy: Policy,
    response_or_metadata: Mapping[str, Any],
    *,
    now: float | None = None,
    verdict: Verdict | None = None,
    model: str | None = None,
    scope: tuple[str, ...] | None = None,
) -> PolicyResult:
    """Appraise one response (or its ``_metadata``) against ``policy``.

    Without ``verdict`` the evidence is verified here (a full response lets the
    response binding be checked). ``scope`` limits the rules applied, as for
    key attestation (:data:`KEY_SCOPE`); rules outside it are not reported.
    ``now`` (seconds since the epoch) is when ``max_age`` is judged.

    Raises nothing for bad evidence or metadata of any shape: they give failing
    rule outcomes. Only a :class:`Policy` built by hand from a ``spec`` that was
    never validated (:func:`load_policy` validates) can raise, when first evaluated.
    """
    if type(response_or_metadata) is not dict and not isinstance(response_or_metadata, Mapping):
        response_or_metadata = _NOTHING  # not even a mapping: every rule judges absent metadata
    inner = response_or_metadata.get("_metadata")
    if inner is not None:  # a response: its _metadata is the evidence, its content is bound
        metadata: Mapping[str, Any] = inner if isinstance(inner, Mapping) else _NOTHING
        if model is None:
            model = response_or_metadata.get("model")
        content_digest = _content_digest(response_or_metadata) if verdict is None else None
    else:
        metadata = response_or_metadata
        content_digest = recorded_content_digest(metadata.get("verification")) if verdict is None else None
    if verdict is None:
        evidence, payload_id = metadata.get("tpm_attestation"), _payload_id(metadata.get("payload_id"))
        verdict = verify_attestation(evidence, payload_id, content_digest=content_digest)
    compiled = _COMPILED.get(id(policy)) or _compile(policy)  # inline: this runs per request
    if scope is None:
        rules = tuple([check(metadata, verdict, model, now) for check in compiled.checks])
    else:
        rules = tuple(
            [check(metadata, verdict, model, now) for rule, check in compiled.rules if rule in scope]
        )
    failures = tuple([r for r in rules if r.status == "fail"]) if "fail" in map(_STATUS, rules) else ()
    return PolicyResult(compiled.name, compiled.digest, compiled.on_failure, rules, verdict, failures)


_STATUS = operator.attrgetter("status")
_NOTHING: Mapping[str, Any] = {}


def _content_digest(response: Mapping[str, Any]) -> bytes | None:
    """The response-content digest, or None for content no canonical JSON holds (it then binds nothing)."""
    try:
        return response_content_digest(response)
    except (TypeError, ValueError, RecursionError):  # odd keys or values, lone surrogates, cycles
        return None


def _payload_id(value: object) -> str | None:
    """The payload id as text that can be encoded, or None (which no quote can be bound to)."""
    if not isinstance(value, str):
        return None
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return None
    return value


class _Compiled(NamedTuple):
    """A policy made ready to evaluate: one check per rule it states, in rule order."""

    rules: tuple[tuple[str, Check], ...]
    checks: tuple[Check, ...]
    name: str
    digest: str
    on_failure: str


#: The compiled form of each live policy, by ``id(policy)``: kept beside the policy, never in it (a
#: frozen value stays a value), and dropped when the policy is (a ``weakref.finalize`` each), so an id
#: is never looked up after it could be reused. Entries are immutable and compiling twice gives equal
#: ones, so two threads that miss at once only both compile.
_COMPILED: dict[int, _Compiled] = {}


def _compile(policy: Policy) -> _Compiled:
    """Compile ``policy`` and keep the result beside it (the first of two racing threads wins)."""
    spec = policy.spec
    stated: Mapping[str, object] = spec  # by rule name: RULES is keyed by text
    rules = tuple((rule, compile_rule(stated[rule], spec)) for rule, compile_rule in RULES if rule in stated)
    checks = tuple(check for _, check in rules)
    compiled = _Compiled(rules, checks, policy.name, policy.digest, policy.on_failure)
    stored = _COMPILED.setdefault(id(policy), compiled)
    if stored is compiled:
        weakref.finalize(policy, _COMPILED.pop, id(policy), None)
    return stored
