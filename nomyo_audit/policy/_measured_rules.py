"""Rules on measured events: ``secure_boot``, ``boot_events``, ``kernel_cmdline``, ``ima``, ``serving_stack``.

Golden PCR values say *that* something changed; these rules say *what*: which firmware blob, boot
application, command line, file or router build a quote proves. Each reads only what the verifier
proved: the ``event_log``/``ima_log`` findings, the facts made from proven events
(``measured_boot``, ``serving_stack``), and :attr:`Verdict.measurements` (the proven events and IMA
entries themselves). Never the raw logs of ``_metadata``.

Each rule *fails* (never passes, never raises) when the evidence does not prove what it needs: no
log, a log that did not match the quote, a PCR the quote does not cover, nothing of the kind proven
(an allow-list over no proven event would accept a machine that simply leaves the event out). The
detail says which.

A digest in a policy is compared only with an event's digests in the banks whose replay the quote
proved for that PCR: a log may carry digests of banks that were not quoted, and those are the
router's word. Work that grows with a log is done once per (log, match), kept in a small bounded
table per rule: routers send the same boot log with every reply.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..eventlog import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_IPL,
    EV_POST_CODE,
    EV_POST_CODE2,
    EV_S_CRTM_CONTENTS,
    SERVING_STACK_PCR,
    Event,
    ImaPolicy,
    check_ima,
    decode_event,
)
from ..tpm._verdict import CHECKS, Finding, Verdict
from ._model import PolicySpec

__all__ = [
    "ALLOW_LISTS",
    "FIRMWARE_TYPES",
    "MEASURED_RULES",
    "allow_listed",
    "proven_cmdlines",
    "proven_digests",
]

#: The PCR 0 event types ``boot_events.firmware`` allow-lists (and ``policy from-evidence`` learns).
FIRMWARE_TYPES = frozenset(
    (
        EV_POST_CODE,
        EV_POST_CODE2,
        EV_S_CRTM_CONTENTS,
        EV_EFI_PLATFORM_FIRMWARE_BLOB,
        EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    )
)
_FIRMWARE_PCR, _BOOT_APPLICATION_PCR = 0, 4
#: How many offending events or files an outcome names (each digest in full: auditors look them up).
_NAMED = 5
#: Outcomes kept per rule, by log; routers repeat their logs, so a few suffice.
_CACHED = 64

# RuleOutcome is imported where it is used: _rules imports this module to register the rules.
Check = Callable[[Mapping[str, Any], Verdict, "str | None", "float | None"], Any]


def _index(check: str) -> int | None:
    return CHECKS.index(check) if check in CHECKS else None


_EVENT_LOG, _IMA_LOG = _index("event_log"), _index("ima_log")

_WHY = {
    "no_event_log": "the reply carries no event log",
    "no_ima_log": "the reply carries no IMA measurement list",
    "not_reached": "no PCR values were proved by a verified quote",
    "event_log_unquoted": "the quote covers none of the PCRs the event log extends",
    "ima_log_unquoted": "the quote does not cover PCR 10, which the IMA list extends",
}


def _unproven(rule: str, what: str, finding: Finding | None) -> Any:
    """The failing outcome of a rule whose log check did not pass: says why ``what`` is unproven."""
    from ._rules import RuleOutcome

    if finding is None:
        return RuleOutcome(rule, "fail", f"{what} is unproven: this verifier does not check logs")
    why = _WHY.get(finding.code)
    if why is None:
        why = f"the log did not match the quote ({finding.detail[:300]})"
    return RuleOutcome(rule, "fail", f"{what} is unproven: {why}", (finding.code,))


def _log_finding(verdict: Verdict, index: int | None) -> Finding | None:
    return verdict.findings[index] if index is not None else None


# -- proven TCG events --------------------------------------------------------------------------


class _Proven(NamedTuple):
    """The proven events of one log, each with its digests (hex) in the banks the quote proves."""

    events: tuple[tuple[Event, frozenset[str]], ...]
    pcrs: frozenset[int]
    #: PCRs the log extends that the quote does not cover
    unquoted: frozenset[int]
    #: PCR -> the banks whose replay the quote proves
    banks: Mapping[int, set[str]]


def _proven_banks(match: Any) -> dict[int, set[str]]:
    """PCR -> the banks in which the quote proves its replay (a log's other digests are its word)."""
    proven_banks: dict[int, set[str]] = {}
    for pcr_match in match.pcrs:
        if pcr_match.status == "match":
            proven_banks.setdefault(pcr_match.pcr, set()).add(pcr_match.bank)
    return proven_banks


#: The events each ``boot_events`` allow-list names, by PCR: (the allow-list's key, its event types).
ALLOW_LISTS = (
    (_FIRMWARE_PCR, "firmware", FIRMWARE_TYPES),
    (_BOOT_APPLICATION_PCR, "boot_applications", frozenset((EV_EFI_BOOT_SERVICES_APPLICATION,))),
)


def allow_listed(event: Event, kinds: frozenset[int], proven_banks: Mapping[int, set[str]]) -> bool:
    """Whether an allow-list of ``kinds`` judges ``event``: one of those types, or an event whose data
    its digest does not verify in a proven bank. An event's type is covered by no digest: an
    unlisted firmware blob or boot application logged as another type (an EV_S_CRTM_VERSION, an
    EV_EFI_ACTION, an unknown type) would otherwise escape the list. An event whose digest is the
    hash of its data shows what it measured, and is left to the other rules."""
    if event.type in kinds:
        return True
    return not any(decode_event(event, bank).data_verified for bank in proven_banks.get(event.pcr, ()))


def _proven_in(match: Any, pcr: int, bank: object) -> bool:
    """Whether the quote proves ``pcr``'s replay in ``bank`` (a loop: cheaper than a table per reply)."""
    return any(m.pcr == pcr and m.bank == bank and m.status == "match" for m in match.pcrs)


def proven_digests(measurements: Any) -> _Proven:
    """The proven events of ``measurements``' TCG log with their digests in proven banks only."""
    match = measurements.event_log_match
    proven_banks = _proven_banks(match)
    events = tuple(
        (
            event,
            frozenset(
                event.digests[bank].hex() for bank in proven_banks.get(event.pcr, ()) if bank in event.digests
            ),
        )
        for event in measurements.proven_events()
    )
    pcrs = frozenset(event.pcr for event, _ in events)
    return _Proven(events, pcrs, frozenset(match.unquoted), proven_banks)


def _log_key(measurements: Any) -> tuple[Any, ...] | None:
    log, match = getattr(measurements, "event_log", None), getattr(measurements, "event_log_match", None)
    return None if log is None or match is None else (log.sha256, match)


def _on_proven_event_log(
    rule: str, what: str, read: Callable[[Any], Any], outcome: Callable[[Any], Any]
) -> Check:
    """A rule judged on what ``read`` takes from a proven event log: unproven (no log, a log that did
    not pass ``event_log``) fails, and the outcome is kept per (log, match), since a router sends the
    same log reply after reply."""
    outcomes: dict[Any, Any] = {}

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> Any:
        finding = _log_finding(verdict, _EVENT_LOG)
        key = _log_key(verdict.measurements)
        if finding is None or finding.status != "pass" or key is None:
            return _unproven(rule, what, finding)
        return _cached(outcomes, key, lambda: outcome(read(verdict.measurements)))

    return check


def _cached(table: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """``table[key]``, made on a miss and kept while the table is small (outcomes are immutable)."""
    found = table.get(key)
    if found is None:
        found = make()
        if len(table) < _CACHED:
            table[key] = found
    return found


def _describe(event: Event, digests: frozenset[str]) -> str:
    """``event 12 (EV_EFI_PLATFORM_FIRMWARE_BLOB2 "DXE core") sha256 <hex>``, bounded."""
    summary = decode_event(event).summary[:120]
    digest = min(digests, key=len, default="?")  # one digest, the same bank each time
    return f"event {event.number} ({event.type_name} {summary!r}) {digest}"


def _boot_fact(verdict: Verdict, key: str) -> Any:
    """One value of the ``measured_boot`` fact (made from proven events only), or None."""
    boot = verdict.facts.get("measured_boot")
    return boot.get(key) if isinstance(boot, Mapping) else None


def _unquoted(verdict: Verdict, pcr: int) -> bool:
    """Whether the log extends ``pcr`` and the quote does not cover it (to explain a failure)."""
    match = getattr(verdict.measurements, "event_log_match", None)
    return match is not None and pcr in match.unquoted


def _pcr_unproven(pcr: int, proven: _Proven, what: str) -> str | None:
    if pcr in proven.pcrs:
        return None
    if pcr in proven.unquoted:
        return f"{what} is unproven: the log extends PCR {pcr} but the quote does not cover it"
    return f"{what} is unproven: the quote proves no PCR {pcr} event"


# -- the rules ------------------------------------------------------------------------------------


def secure_boot(value: str, spec: PolicySpec) -> Check:
    """The proven SecureBoot variable (PCR 7, its data verified against its digest) is ``value``."""
    from ._rules import RuleOutcome

    passed = RuleOutcome("secure_boot", "pass", f"secure boot is proven {value}", ("event_log_matches",))

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> Any:
        finding = _log_finding(verdict, _EVENT_LOG)
        if finding is None or finding.status != "pass":
            return _unproven("secure_boot", "the secure boot state", finding)
        state = _boot_fact(verdict, "secure_boot")
        bank = _boot_fact(verdict, "bank")
        match = getattr(verdict.measurements, "event_log_match", None)
        if state is not None and (match is None or not _proven_in(match, 7, bank)):
            # the fact reads one bank for every PCR: a PCR 7 digest in a bank the quote does not
            # cover for PCR 7 "verifies" whatever data the router put beside it
            detail = (
                f"the secure boot state is unproven: it was read in the {str(bank)[:16]} bank, "
                "which the quote does not prove for PCR 7"
            )
            return RuleOutcome("secure_boot", "fail", detail, (finding.code,))
        if state == value:
            return passed
        if state is not None:
            detail = f"secure boot is {state}, the policy requires {value}"
        else:
            detail = (
                "the secure boot state is unproven: the log extends PCR 7 but the quote does not cover it"
                if _unquoted(verdict, 7)
                else "the secure boot state is unproven: no proven PCR 7 event holds the SecureBoot variable"
            )
        return RuleOutcome("secure_boot", "fail", detail, (finding.code,))

    return check


def boot_events(value: Mapping[str, list[str]], spec: PolicySpec) -> Check:
    """Allow-lists of proven firmware (PCR 0) and boot application (PCR 4) digests, and a deny-list."""
    from ._rules import RuleOutcome

    allow = {name: frozenset(value[name]) for _, name, _ in ALLOW_LISTS if name in value}
    deny = frozenset(value.get("deny", ()))

    def outcome(proven: _Proven) -> Any:
        problems: list[str] = []
        counts: list[str] = []
        for pcr, name, kinds in ALLOW_LISTS:
            allowed = allow.get(name)
            if allowed is None:
                continue
            what = name.replace("_", " ")
            unproven = _pcr_unproven(pcr, proven, what)
            events = [
                (e, d) for e, d in proven.events if e.pcr == pcr and allow_listed(e, kinds, proven.banks)
            ]
            if unproven is None and not events:
                unproven = f"{what} is unproven: no proven PCR {pcr} event is of that kind"
            if unproven is not None:
                problems.append(unproven)
                continue
            bad = [_describe(e, d) for e, d in events if not d & allowed]
            if bad:
                problems.append(f"not in boot_events.{name}: {'; '.join(bad[:_NAMED])}{_more(bad)}")
            counts.append(f"{len(events)} {what} event(s)")
        if deny:
            denied = [_describe(e, d) for e, d in proven.events if d & deny]
            if denied:
                problems.append(f"denied by boot_events.deny: {'; '.join(denied[:_NAMED])}{_more(denied)}")
            counts.append(f"none of {len(proven.events)} proven event(s) denied")
        if problems:
            return RuleOutcome("boot_events", "fail", "; ".join(problems), ("event_log_matches",))
        return RuleOutcome("boot_events", "pass", f"allowed: {', '.join(counts)}", ("event_log_matches",))

    return _on_proven_event_log("boot_events", "the boot events", proven_digests, outcome)


def _more(items: list[str]) -> str:
    return f" (and {len(items) - _NAMED} more)" if len(items) > _NAMED else ""


#: The longest kernel command line judged (Linux's COMMAND_LINE_SIZE is at most 4096 on any
#: architecture): a longer proven line fails the rule, so no pattern ever scans more than this.
MAX_CMDLINE = 4096
_CMDLINE_PCRS = (8, 9)
#: GRUB's EV_IPL data prefix of a kernel command line (decode_event's "kernel_cmdline" kind)
_GRUB_CMDLINE = b"kernel_cmdline: "


def proven_cmdlines(measurements: Any) -> tuple[str, ...] | str:
    """The kernel command lines of proven PCR 8/9 EV_IPL events, each data-verified in a bank the
    quote proves for its PCR (the ``measured_boot`` fact reads one bank for every PCR, and keeps 64
    lines of 1024 characters: a ``forbid`` pattern must see every line whole), or why not."""
    proven_banks = _proven_banks(measurements.event_log_match)
    lines: list[str] = []
    for event in measurements.proven_events():
        if event.pcr not in _CMDLINE_PCRS or event.type != EV_IPL:
            continue
        for bank in sorted(proven_banks.get(event.pcr, ())):
            info = decode_event(event, bank)
            if info.kind == "kernel_cmdline" and info.data_verified:
                # the line itself, not the decoder's display text (escaped, cut at 1024 characters)
                measured = bytes(event.data)[len(_GRUB_CMDLINE) :].rstrip(b"\x00")
                if len(measured) > MAX_CMDLINE:
                    return f"event {event.number}'s command line has {len(measured)} bytes (> {MAX_CMDLINE})"
                lines.append(measured.decode("utf-8", errors="replace"))
                break
    return tuple(lines)


def kernel_cmdline(value: Mapping[str, list[str]], spec: PolicySpec) -> Check:
    """Each ``require`` pattern matches some proven kernel command line; no ``forbid`` pattern any."""
    from ._rules import RuleOutcome

    require = tuple((p, re.compile(p)) for p in value.get("require", ()))
    forbid = tuple((p, re.compile(p)) for p in value.get("forbid", ()))
    findings = ("event_log_matches",)

    def outcome(lines: tuple[str, ...] | str) -> Any:
        if isinstance(lines, str):
            detail = f"the kernel command line is refused: {lines}"
            return RuleOutcome("kernel_cmdline", "fail", detail, findings)
        if not lines:
            detail = (
                "the kernel command line is unproven: the quote proves no command line (PCR 8/9 not quoted, "
                "or quoted only in banks whose digests do not cover its data?)"
            )
            return RuleOutcome("kernel_cmdline", "fail", detail, findings)
        problems = [
            f"no command line matches {p!r}" for p, r in require if not any(r.search(x) for x in lines)
        ]
        problems += [
            f"{line[:200]!r} matches forbidden {p!r}" for p, r in forbid for line in lines if r.search(line)
        ]
        if problems:
            return RuleOutcome("kernel_cmdline", "fail", "; ".join(problems[:_NAMED]), findings)
        return RuleOutcome(
            "kernel_cmdline", "pass", f"{len(lines)} proven command line(s) are as required", findings
        )

    return _on_proven_event_log("kernel_cmdline", "the kernel command line", proven_cmdlines, outcome)


def ima(value: Mapping[str, Any], spec: PolicySpec) -> Check:
    """Every proven IMA entry is allowed by the runtime policy and inline digests (Keylime semantics)."""
    from ._rules import RuleOutcome

    if "runtime_policy" in value:  # a spec the loader did not resolve: nothing to appraise against
        unread = RuleOutcome(
            "ima",
            "fail",
            f"the runtime policy {str(value['runtime_policy'])[:80]!r} was not read (load the policy "
            "with load_policy)",
        )
        return lambda metadata, verdict, model, now: unread
    policy = ImaPolicy.from_mapping(value.get("digests", {}), value.get("excludes", ()))
    outcomes: dict[Any, Any] = {}

    def outcome(entries: tuple[Any, ...]) -> Any:
        if not entries:
            return RuleOutcome(
                "ima", "fail", "the IMA list is unproven: the quote proves none of its entries"
            )
        violations = check_ima(entries, policy, limit=_NAMED + 1)
        if violations:
            named = [f"{v.path[:200]!r} {v.digest or '-'} ({v.reason})" for v in violations[:_NAMED]]
            more = " (and more)" if len(violations) > _NAMED else ""
            return RuleOutcome("ima", "fail", f"not allowed: {'; '.join(named)}{more}", ("ima_log_matches",))
        return RuleOutcome(
            "ima", "pass", f"{len(entries)} proven IMA entries are allowed", ("ima_log_matches",)
        )

    def check(metadata: Any, verdict: Verdict, model: Any, now: Any) -> Any:
        finding = _log_finding(verdict, _IMA_LOG)
        measurements = verdict.measurements
        log = getattr(measurements, "ima_log", None)
        match = getattr(measurements, "ima_match", None)
        if finding is None or finding.status != "pass" or log is None or match is None:
            return _unproven("ima", "the IMA list", finding)
        return _cached(outcomes, (log.sha256, match), lambda: outcome(measurements.proven_ima_entries()))  # type: ignore[union-attr]

    return check


def serving_stack(value: Mapping[str, Any], spec: PolicySpec) -> Check:
    """The proven PCR 23 events: the router's version and code, and the reply's model with its weights."""
    from ._rules import RuleOutcome

    versions = tuple(value.get("router_versions", ()))
    matches_version = re.compile("|".join(map(fnmatch.translate, versions or ("*",)))).match
    code = frozenset(value.get("router_code", ()))
    models: Mapping[str, frozenset[str] | None] = {
        name: None if allowed == "any" else frozenset(allowed)
        for name, allowed in value.get("models", {}).items()
    }
    findings = ("event_log_matches",)
    # by (version, code digest, model, whether it is measured, its weights): a router repeats them
    outcomes: dict[tuple[Any, ...], Any] = {}

    def failed(detail: str) -> Any:
        return RuleOutcome("serving_stack", "fail", detail, findings)

    def outcome(version: Any, digest: Any, model: Any, measured: bool, weights: Any) -> Any:
        shown: list[str] = []
        if versions or code:
            if not isinstance(version, str) or not matches_version(version):
                return failed(f"router version {version!r} matches none of {', '.join(versions)}")
            if code and digest not in code:
                return failed(f"router code {digest!r} is not in serving_stack.router_code")
            shown.append(f"router {version}")
        if models:
            if not isinstance(model, str):
                return failed("the reply's model is not known, so its measurement cannot be checked")
            if model not in models:
                return failed(f"model {model[:120]!r} is not listed in serving_stack.models")
            if not measured:
                return failed(f"model {model[:120]!r} is not measured in the proven serving stack")
            allowed = models[model]
            if allowed is not None and weights not in allowed:
                return failed(f"model {model[:120]!r} weights {weights!r} are not an allowed digest")
            shown.append(f"model {model[:120]!r} ({'measured' if allowed is None else 'allowed weights'})")
        return RuleOutcome("serving_stack", "pass", f"proven: {', '.join(shown)}", findings)

    def check(metadata: Any, verdict: Verdict, model: str | None, now: Any) -> Any:
        finding = _log_finding(verdict, _EVENT_LOG)
        if finding is None or finding.status != "pass":
            return _unproven("serving_stack", "the serving stack", finding)
        stack = verdict.facts.get("serving_stack")
        if not isinstance(stack, Mapping):
            why = (
                "the log extends PCR 23 but the quote does not cover it"
                if _unquoted(verdict, SERVING_STACK_PCR)
                else "no PCR 23 event is proven"
            )
            return failed(f"the serving stack is unproven: {why}")
        router: Any = stack.get("router")
        router = router if isinstance(router, Mapping) else {}
        measured_models: Any = stack.get("models")
        identity = measured_models.get(model) if isinstance(measured_models, Mapping) and model else None
        measured = isinstance(identity, Mapping)
        weights = identity.get("weights_sha256") if measured else None  # type: ignore[union-attr]
        key = (router.get("version"), router.get("code_sha256"), model, measured, weights)
        found = outcomes.get(key)
        return found if found is not None else _cached(outcomes, key, lambda: outcome(*key))

    return check


#: The event rules, in the order their outcomes are reported (after the PCR rules).
MEASURED_RULES: tuple[tuple[str, Callable[[Any, PolicySpec], Check]], ...] = (
    ("secure_boot", secure_boot),
    ("boot_events", boot_events),
    ("kernel_cmdline", kernel_cmdline),
    ("ima", ima),
    ("serving_stack", serving_stack),
)
