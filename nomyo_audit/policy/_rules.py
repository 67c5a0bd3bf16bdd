"""The rules a policy can state, each compiled once into a check: pure, no I/O, no clock.

Each ``spec`` key names a compiler here (:data:`RULES`, in the order outcomes are
reported). A compiler does the work a rule needs once per policy (durations
parsed, sets built, outcomes made) and returns a *check*: ``(metadata, verdict,
model, now) -> RuleOutcome``, run per request. A check reads only values the
verifier proved (``verdict.facts``, typed :class:`nomyo_audit.tpm.VerdictFacts`)
or the router's metadata, whose every shape gives an outcome, never an exception.
What a check keeps is immutable, so checks run from many threads at once.
"""

import fnmatch
import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ..tpm._structures import HASH_NAMES
from ..tpm._verify import CHECKS, Verdict, parse_pcr_banks
from ._anchor_rule import ANCHORED_MODES, anchored_check
from ._model import PolicySpec, parse_duration

__all__ = ["RULES", "Check", "RuleOutcome"]


class RuleOutcome(NamedTuple):
    """How one rule of a policy judged one reply's evidence: ``pass``, ``fail`` or ``skip``, and why."""

    #: the rule's name in the policy's ``spec`` (``pcrs``, ``max_age``, ...)
    rule: str
    status: Literal["pass", "fail", "skip"]
    #: for people: what was found (a PCR that differs, how old the evidence is)
    detail: str
    #: codes of the verifier findings this outcome rests on
    findings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data (``findings`` a list), as audit records and reports keep it."""
        return {
            "rule": self.rule,
            "status": self.status,
            "detail": self.detail,
            "findings": list(self.findings),
        }


#: A compiled rule: (metadata, verdict, model, now) -> its outcome for one reply.
Check = Callable[[Mapping[str, Any], Verdict, "str | None", "float | None"], RuleOutcome]


def _require_attestation(value: bool, spec: PolicySpec) -> Check:
    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        if not value:
            return RuleOutcome("require_attestation", "skip", "attestation not required")
        if verdict.failures:
            failed = tuple(f.code for f in verdict.failures)
            return RuleOutcome(
                "require_attestation",
                "fail",
                f"the TPM evidence did not verify ({', '.join(failed)})",
                failed,
            )
        return verified

    verified = RuleOutcome("require_attestation", "pass", "the TPM evidence verified", _VERIFIED)
    return check


_VERIFIED = ("signature_valid", "nonce_matches")


def _security_tiers(value: list[str], spec: PolicySpec) -> Check:
    allowed = {tier: RuleOutcome("security_tiers", "pass", f"tier {tier!r} is allowed") for tier in value}

    def check(metadata: Mapping[str, Any], verdict: Any, model: Any, now: Any) -> RuleOutcome:
        tier = metadata.get("security_tier")
        passed = allowed.get(tier) if isinstance(tier, str) else None
        if passed is not None:
            return passed
        return RuleOutcome("security_tiers", "fail", f"tier {tier!r} is not one of {', '.join(value)}")

    return check


def _models(value: list[str], spec: PolicySpec) -> Check:
    def check(metadata: Any, verdict: Any, model: str | None, now: Any) -> RuleOutcome:
        if not isinstance(model, str):
            return RuleOutcome("models", "fail", "the model is not known for this evidence")
        if any(fnmatch.fnmatchcase(model, pattern) for pattern in value):
            return RuleOutcome("models", "pass", f"model {model!r} is allowed")
        return RuleOutcome("models", "fail", f"model {model!r} matches none of {', '.join(value)}")

    return check


_PCR_PROVED = ("pcr_digest_matches",)
# Positions of the findings rules read, looked up once (Verdict.finding does it per call).
_PCR_DIGEST, _PCR_SELECTION, _NONCE_BINDING, _SIGNATURE = (
    CHECKS.index(check) for check in ("pcr_digest", "pcr_selection", "nonce_binding", "signature")
)


def _pcrs(value: Mapping[str, Mapping[str, Any]], spec: PolicySpec) -> Check:
    by_bank = tuple(
        (
            bank,
            tuple(
                (index, None if allowed == "any" else frozenset(allowed))
                for index, allowed in indices.items()
            ),
        )
        for bank, indices in value.items()
    )
    count = sum(len(entries) for _, entries in by_bank)
    passed = RuleOutcome("pcrs", "pass", f"{count} PCR value(s) match the golden values", _PCR_PROVED)

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        digest = verdict.findings[_PCR_DIGEST]
        proved: dict[str, dict[str, str]] | None = verdict.facts.get("pcr_values")
        if digest.status != "pass" or not (type(proved) is dict or isinstance(proved, Mapping)):
            return RuleOutcome(
                "pcrs", "fail", "no PCR values were proved by a verified quote", (digest.code,)
            )
        for bank, entries in by_bank:
            values = proved.get(bank)
            if values is None:
                break
            for index, allowed in entries:
                actual = values.get(index)
                if actual is None or (allowed is not None and actual not in allowed):
                    break
            else:
                continue
            break
        else:
            return passed
        problems = []
        for bank, entries in by_bank:
            values = proved.get(bank) or {}
            for index, allowed in entries:
                actual = values.get(index)
                if actual is None:
                    problems.append(f"{bank} PCR {index} was not quoted")
                elif allowed is not None and actual not in allowed:
                    problems.append(f"{bank} PCR {index} = {actual[:16]}... is not a golden value")
        return RuleOutcome("pcrs", "fail", "; ".join(problems), _PCR_PROVED)

    return check


@lru_cache(maxsize=256)
def _quoted_sets(pcr_banks: str) -> Mapping[str, frozenset[int]]:
    """The verified selection text as {bank: indices}, through the verifier's own parser (read-only)."""
    banks = {HASH_NAMES[s.hash_alg]: frozenset(s.indices) for s in parse_pcr_banks(pcr_banks)}
    return MappingProxyType(banks)


def _pcr_selection(value: Mapping[str, list[int]], spec: PolicySpec) -> Check:
    required = tuple((bank, index) for bank, indices in value.items() for index in indices)
    # By verified selection text (routers repeat theirs), at most 64: immutable outcomes, so threads
    # racing on a miss only store equal values. A plain dict: an lru_cache call costs more than the rule.
    outcomes: dict[str, RuleOutcome] = {}

    def outcome(banks: str, code: str) -> RuleOutcome:
        quoted = _quoted_sets(banks)
        missing = [f"{bank}:{i}" for bank, i in required if i not in quoted.get(bank, ())]
        if missing:
            return RuleOutcome("pcr_selection", "fail", f"not quoted: {', '.join(missing)}", (code,))
        return RuleOutcome("pcr_selection", "pass", f"the quote covers {banks}", (code,))

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        selection = verdict.findings[_PCR_SELECTION]
        if selection.status != "pass":
            return RuleOutcome("pcr_selection", "fail", "no verified PCR selection", (selection.code,))
        stated: str = verdict.facts.get("pcr_banks", "")
        banks = str(stated)
        result = outcomes.get(banks)
        if result is None:
            result = outcome(banks, selection.code)
            if len(outcomes) < 64:
                outcomes[banks] = result
        return result

    return check


def _nonce_binding(value: list[str], spec: PolicySpec) -> Check:
    # nomyo-audit-v2 is nomyo-audit-v1 plus the client key: a policy accepting v1 accepts it too
    names = [*value, "nomyo-audit-v2"] if "nomyo-audit-v1" in value else value
    accepted = {d: RuleOutcome("nonce_binding", "pass", f"bound by {d}", ("nonce_matches",)) for d in names}

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        finding = verdict.findings[_NONCE_BINDING]
        derivation: str | None = verdict.facts.get("nonce_derivation")
        if finding.status == "pass" and derivation in accepted:
            return accepted[derivation]
        if finding.status == "pass":
            return RuleOutcome(
                "nonce_binding",
                "fail",
                f"bound by {derivation}, which this policy does not accept",
                (finding.code,),
            )
        return RuleOutcome("nonce_binding", "fail", "the quote is not bound to this request", (finding.code,))

    return check


def _require_key_binding(value: bool, spec: PolicySpec) -> Check:
    """Whether the quote binds the protocol 1.0 client key the caller holds (``facts.key_binding``,
    set by the verifier from the caller's own key; the router's ``client_key_sha256`` never counts).
    A protocol 2 reply (``_metadata.protocol``, the client's own field) has no client key to
    substitute: its key was chosen by the client inside the sealed request, so the rule passes."""
    bound = RuleOutcome("require_key_binding", "pass", "the quote binds our client key", ("nonce_matches",))
    absent = RuleOutcome(
        "require_key_binding", "fail", "the quote does not bind our client key (the router does not bind it)"
    )
    unproved = RuleOutcome("require_key_binding", "fail", "no verified quote binds our client key")
    skipped = RuleOutcome("require_key_binding", "skip", "client-key binding not required")
    sealed = RuleOutcome(
        "require_key_binding", "pass", "protocol 2: the reply key travels inside the sealed request"
    )

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        if not value:
            return skipped
        if isinstance(metadata, Mapping) and metadata.get("protocol") == "2":  # the client's own field
            return sealed
        binding = verdict.facts.get("key_binding")
        if binding == "bound" and verdict.findings[_NONCE_BINDING].status == "pass":
            return bound
        return absent if binding == "absent" else unproved

    return check


def _aik_trust(value: Mapping[str, Any], spec: PolicySpec) -> Check:
    """``mode`` says how an AIK is trusted; ``pinned`` restricts every mode to the listed keys, so
    ``ek``/``ca`` with pins means anchored AND pinned (a pin never drops an anchor)."""
    mode = value["mode"]
    pins = frozenset(value.get("pinned", ()))
    any_aik = RuleOutcome(
        "aik_trust",
        "pass",
        "any signature-valid AIK (not anchored to a hardware root of trust)",
        ("signature_valid", "aik_not_anchored"),
    )
    pinned_aik = RuleOutcome("aik_trust", "pass", "the AIK is pinned", ("signature_valid",))
    if mode == "any" and pins:
        pinned_aik = pinned_aik._replace(
            detail="the AIK is pinned (not anchored to a hardware root of trust)",
            findings=("signature_valid", "aik_not_anchored"),
        )

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> RuleOutcome:
        signature = verdict.findings[_SIGNATURE]
        if signature.status != "pass":
            return RuleOutcome("aik_trust", "fail", "the quote's signature did not verify", (signature.code,))
        if pins or mode == "pinned":
            fingerprint: str | None = verdict.facts.get("aik_fingerprint")
            if fingerprint not in pins and _aik_name(verdict) not in pins:
                return RuleOutcome(
                    "aik_trust", "fail", f"AIK {str(fingerprint)[:16]}... is not pinned", ("signature_valid",)
                )
            if mode in ("any", "pinned"):
                return pinned_aik
        elif mode == "any":
            return any_aik
        outcome: RuleOutcome = anchored(metadata, verdict, now)
        if pins and outcome.status == "pass":
            return outcome._replace(detail=f"{outcome.detail}, and pinned")
        return outcome

    # ek, ca and the cloud kinds: the AIK must be anchored (the roots are read when a reply first needs them)
    anchored: Any = anchored_check(mode, value) if mode in ANCHORED_MODES else None
    return check


def _aik_name(verdict: Verdict) -> str | None:
    name: str | None = verdict.facts.get("aik_name")
    return name


def _memory_protection(value: list[str], spec: PolicySpec) -> Check:
    passed = RuleOutcome(
        "memory_protection", "pass", f"the router reports {', '.join(value)} (its own word, unattested)"
    )

    def check(metadata: Mapping[str, Any], verdict: Any, model: Any, now: Any) -> RuleOutcome:
        reported = metadata.get("memory_protection")
        if type(reported) is not dict:
            reported = reported if isinstance(reported, Mapping) else {}
        for flag in value:
            if reported.get(flag) is not True:
                missing = [flag for flag in value if reported.get(flag) is not True]
                return RuleOutcome(
                    "memory_protection", "fail", f"the router does not report {', '.join(missing)}"
                )
        return passed

    return check


def _cuda_device(value: Mapping[str, Any], spec: PolicySpec) -> Check:
    hashes = frozenset(value.get("device_hashes", ()))

    def check(metadata: Mapping[str, Any], verdict: Any, model: Any, now: Any) -> RuleOutcome:
        device = metadata.get("cuda_device")
        device = device if isinstance(device, Mapping) else {}
        if "available" in value and device.get("available") is not value["available"]:
            return RuleOutcome(
                "cuda_device",
                "fail",
                f"cuda_device.available is {device.get('available')!r}, required {value['available']!r}",
            )
        device_hash = device.get("device_hash")
        if hashes and not (isinstance(device_hash, str) and device_hash in hashes):
            return RuleOutcome("cuda_device", "fail", "the CUDA device hash is not an allowed one")
        return passed

    passed = RuleOutcome("cuda_device", "pass", "the CUDA device is as required")
    return check


def _max_age(value: int | str, spec: PolicySpec) -> Check:
    stated_skew: int | str = spec.get("clock_skew", 60)
    limit, skew = parse_duration(value), parse_duration(stated_skew)

    def check(metadata: Mapping[str, Any], verdict: Any, model: Any, now: object) -> RuleOutcome:
        processed = metadata.get("processed_at")
        if (
            type(now) in _NUMBERS
            and type(processed) in _NUMBERS
            and -_MAX_SECONDS <= now <= _MAX_SECONDS  # type: ignore[operator]  # NaN compares False
            and -_MAX_SECONDS <= processed <= _MAX_SECONDS  # type: ignore[operator]
            and -skew <= now - processed <= limit + skew  # type: ignore[operator]
        ):
            return passed  # the common case; anything else is told apart below
        at = _seconds(now)
        if at is None:
            return no_time
        then = _seconds(processed)
        if then is None:
            return _unusable_time(processed)
        age = at - then
        if age < -skew:
            return RuleOutcome(
                "max_age", "fail", f"processed_at is {-age:.0f}s in the future (skew allowed: {skew}s)"
            )
        if age > limit + skew:
            return RuleOutcome(
                "max_age", "fail", f"the evidence is {age:.0f}s old (max {limit}s + {skew}s skew)"
            )
        return passed

    passed = RuleOutcome("max_age", "pass", f"the evidence is at most {limit}s old (clock skew {skew}s)")
    no_time = RuleOutcome(
        "max_age",
        "fail",
        "no usable evaluation time was given (evaluate(now=...): the record's own time, or the "
        "present), so freshness cannot be judged",
    )
    return check


def _seconds(value: object) -> float | None:
    """``value`` as finite seconds since the epoch, or None: bools, NaN, infinities and text are not times."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value) if -_MAX_SECONDS <= value <= _MAX_SECONDS else None
    return None


_NUMBERS = frozenset((int, float))  # exactly: bool is not a time
#: About 285 million years: beyond this an integer time is not a time (and would not fit a float).
_MAX_SECONDS = 2**53


def _unusable_time(processed: object) -> RuleOutcome:
    if processed is None:
        detail = "processed_at is missing"
    elif type(processed) is float:
        detail = f"processed_at {processed!r} is not a finite number of seconds"
    elif type(processed) is int:
        detail = f"processed_at ({len(str(abs(processed)))} digits) is not a finite number of seconds"
    elif isinstance(processed, str):
        detail = f"processed_at is not a number of seconds (the text {processed[:24]!r})"
    else:
        detail = f"processed_at is not a number of seconds (a {type(processed).__name__})"
    return RuleOutcome("max_age", "fail", detail)


from ._measured_rules import MEASURED_RULES  # noqa: E402  # it builds RuleOutcome, defined above
from ._platform_rules import PLATFORM_RULES  # noqa: E402  # gce, sev_snp, tdx: cloud anchor facts

#: Each rule's name in ``spec`` and its compiler, in the order outcomes are reported.
RULES: tuple[tuple[str, Callable[[Any, PolicySpec], Check]], ...] = (
    ("require_attestation", _require_attestation),
    ("security_tiers", _security_tiers),
    ("models", _models),
    ("pcrs", _pcrs),
    ("pcr_selection", _pcr_selection),
    ("nonce_binding", _nonce_binding),
    ("require_key_binding", _require_key_binding),
    ("aik_trust", _aik_trust),
    *PLATFORM_RULES,  # gce, sev_snp, tdx
    ("memory_protection", _memory_protection),
    ("cuda_device", _cuda_device),
    ("max_age", _max_age),
    *MEASURED_RULES,  # secure_boot, boot_events, kernel_cmdline, ima, serving_stack
)
