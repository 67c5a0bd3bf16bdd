"""Appraising the logs a reply carries (``event_log_b64``, ``ima_log_b64``) against its quote. Pure, no I/O.

The logs are unauthenticated: the router could send any bytes. They count only through replay:
an event is believed when the replay of its PCR, from the log, reaches a value the verified quote
proved. So ``quoted`` is built from ``facts["pcr_values"]`` alone (set only once the values hash
to the signed pcrDigest), never from anything else in the block, and the facts a log gives
(:func:`nomyo_audit.eventlog.summarize_boot` and the others) come from proven events only.

Each field is bounded before it is decoded (its base64 length against the decoded cap), then
parsed and matched; the result is cached by (SHA-256 of the field as sent, which fixes the log's
bytes, and the quoted values) in a small thread-safe LRU bounded by entries and by field size,
since a router sends the same logs with every reply (a hit skips the decode, the parse and the
replay: docs/benchmarks.md).
"""

from __future__ import annotations

import binascii
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..errors import EventLogError
from ..eventlog import (
    MAX_EVENT_LOG_BYTES,
    MAX_IMA_LOG_BYTES,
    LogMatch,
    PcrMatch,
    match_event_log,
    match_ima_log,
    parse_event_log,
    parse_ima_log,
    summarize_boot,
    summarize_ima,
    summarize_serving_stack,
)
from ..eventlog._efi import printable
from ._evidence import strict_b64decode
from ._verdict import Checks, Finding, Measurements, VerdictFacts

__all__ = ["appraise_logs"]


#: ``{bank: {pcr: value}}`` as a hashable key, from ``facts["pcr_values"]``
QuotedKey = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
_Key = tuple[str, bytes, QuotedKey]


class _Outcome(NamedTuple):
    """One log's appraisal, cached: read-only (facts are copied out for each verdict)."""

    finding: Finding
    log: Any  # EventLog | ImaLog | None
    match: LogMatch | None
    facts: tuple[tuple[str, Any], ...]


class _Kind(NamedTuple):
    check: str
    field: str
    prefix: str  # of the EventLogError codes: "eventlog" or "ima"
    what: str
    cap: int
    skip_absent: Finding
    skip_unreached: Finding


_TCG = _Kind(
    "event_log",
    "event_log_b64",
    "eventlog",
    "event log",
    MAX_EVENT_LOG_BYTES,
    Finding("event_log", "skip", "no_event_log", "the reply carries no TCG event log"),
    Finding("event_log", "skip", "not_reached", "the quoted PCR values are not proved"),
)
_IMA = _Kind(
    "ima_log",
    "ima_log_b64",
    "ima",
    "IMA log",
    MAX_IMA_LOG_BYTES,
    Finding("ima_log", "skip", "no_ima_log", "the reply carries no IMA measurement list"),
    Finding("ima_log", "skip", "not_reached", "the quoted PCR values are not proved"),
)


def appraise_logs(block: Mapping[str, Any], facts: VerdictFacts, checks: Checks) -> Measurements | None:
    """Put the ``event_log`` and ``ima_log`` findings of a quote, add their facts; the parsed logs.

    A log is read only once ``facts["pcr_values"]`` is set, that is once the values are proved.
    """
    tcg_field = block.get("event_log_b64")
    ima_field = block.get("ima_log_b64")
    if tcg_field is None and ima_field is None:  # the common case: nothing to parse
        checks.findings.update(_NO_LOGS)
        return None
    pcr_values = facts.get("pcr_values")
    if pcr_values is None:
        for kind, field in ((_TCG, tcg_field), (_IMA, ima_field)):
            checks.put(kind.skip_absent if field is None else kind.skip_unreached)
        return None
    quoted = _quoted_key(pcr_values)
    tcg = _appraise(_TCG, tcg_field, quoted, _parse_tcg, checks, facts)
    ima = _appraise(_IMA, ima_field, quoted, _parse_ima, checks, facts)
    return Measurements(tcg.log, tcg.match, ima.log, ima.match)


_NO_LOGS = {"event_log": _TCG.skip_absent, "ima_log": _IMA.skip_absent}


#: no log to keep (absent, or refused before parsing)
_NO_LOG = _Outcome(_TCG.skip_absent, None, None, ())


def _appraise(
    kind: _Kind,
    field: object,
    quoted: QuotedKey,
    appraise: Callable[[bytes, QuotedKey], _Outcome],
    checks: Checks,
    facts: VerdictFacts,
) -> _Outcome:
    if field is None:
        checks.put(kind.skip_absent)
        return _NO_LOG
    try:
        text = _bounded(kind, field)
        # keyed by the field as sent, which fixes the log's bytes: a hit skips the base64 decode
        key = (kind.check, hashlib.sha256(text).digest(), quoted)
        outcome = _CACHE.get_or_make(key, len(text), lambda: appraise(_decode(kind, text), quoted))
    except EventLogError as exc:
        checks.fail(kind.check, exc.code, exc.message)
        return _NO_LOG
    checks.put(outcome.finding)
    for name, value in outcome.facts:
        facts[name] = _copy(value)  # type: ignore[literal-required]
    return outcome


def _bounded(kind: _Kind, field: object) -> bytes:
    """The field's base64 text as ASCII bytes, its length checked against the cap before anything."""
    if not isinstance(field, str):
        raise EventLogError(f"{kind.field} is not a base64 string", code="bad_base64")
    if len(field) > _b64_length(kind.cap):
        raise EventLogError(
            f"{kind.field} is {len(field)} base64 characters, over the {kind.cap}-byte cap of an {kind.what}",
            code=f"{kind.prefix}_too_large",
        )
    try:
        return field.encode("ascii")
    except UnicodeEncodeError:
        raise EventLogError(f"{kind.field} is not valid base64", code="bad_base64") from None


def _decode(kind: _Kind, text: bytes) -> bytes:
    try:
        data = strict_b64decode(text)
    except (binascii.Error, ValueError):
        raise EventLogError(f"{kind.field} is not valid base64", code="bad_base64") from None
    if len(data) > kind.cap:
        raise EventLogError(
            f"{kind.field} is {len(data)} bytes, over the {kind.cap}-byte cap",
            code=f"{kind.prefix}_too_large",
        )
    return data


def _b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _quoted_key(pcr_values: Mapping[str, Mapping[str, str]]) -> QuotedKey:
    return tuple(sorted((bank, tuple(sorted(entries.items()))) for bank, entries in pcr_values.items()))


def _quoted(key: QuotedKey) -> dict[str, dict[int, bytes]]:
    return {bank: {int(i): bytes.fromhex(v) for i, v in entries} for bank, entries in key}


def _parse_tcg(data: bytes, key: QuotedKey) -> _Outcome:
    try:
        log = parse_event_log(data)
    except EventLogError as exc:
        return _Outcome(Finding("event_log", "fail", exc.code, exc.message), None, None, ())
    match = match_event_log(log, _quoted(key))
    if not match.pcrs:
        return _Outcome(_unquoted(_TCG, log.banks, match, key), log, match, ())
    bad = [m for m in match.pcrs if m.status != "match"]
    if bad:
        events = {e.number: e.type_name for e in log.events}
        detail = _mismatch(bad, lambda n: f"event {n} ({events.get(n, '?')})")
        return _Outcome(Finding("event_log", "fail", "event_log_mismatch", detail), log, match, ())
    bank = _summary_bank(match)
    facts: list[tuple[str, Any]] = [("measured_boot", summarize_boot(log, match, bank))]
    stack = summarize_serving_stack(log, match)
    if stack is not None:
        facts.append(("serving_stack", stack))
    return _Outcome(_matches(_TCG, match), log, match, tuple(facts))


def _parse_ima(data: bytes, key: QuotedKey) -> _Outcome:
    try:
        log = parse_ima_log(data, "binary")
    except EventLogError as exc:
        return _Outcome(Finding("ima_log", "fail", exc.code, exc.message), None, None, ())
    match = match_ima_log(log, _quoted(key))
    if not match.pcrs:
        return _Outcome(_unquoted(_IMA, (), match, key), log, match, ())
    bad = [m for m in match.pcrs if m.status == "mismatch"]
    if bad:
        paths = {e.number: printable(e.path or e.template_name, 120) for e in log.entries}
        detail = _mismatch(bad, lambda n: f"entry {n} ({paths.get(n, '?')})")
        return _Outcome(Finding("ima_log", "fail", "ima_log_mismatch", detail), log, match, ())
    return _Outcome(_matches(_IMA, match), log, match, (("ima", summarize_ima(log, match)),))


def _summary_bank(match: LogMatch) -> str:
    """The bank that proves the most PCRs (sha256 first among equals): the summary reads only
    events proven in its bank (an event proven through another bank has an unproven digest here)."""
    counts: dict[str, int] = {}
    for m in match.pcrs:
        counts[m.bank] = counts.get(m.bank, 0) + 1
    return max(counts, key=lambda bank: (counts[bank], bank == "sha256"))


def _matches(kind: _Kind, match: LogMatch) -> Finding:
    banks = sorted({m.bank for m in match.pcrs})
    pcrs = sorted({m.pcr for m in match.pcrs})
    proven = sum(m.proven for m in match.pcrs)
    unquoted = ""
    if match.unquoted:
        unquoted = f"; PCRs {_ints(match.unquoted)} are not quoted, their events prove nothing"
    return Finding(
        kind.check,
        "pass",
        f"{kind.check}_matches",
        f"the {kind.what} replays to the quoted PCRs {_ints(pcrs)} in {', '.join(banks)} "
        f"({proven} events proven){unquoted}",
    )


def _unquoted(kind: _Kind, banks: tuple[str, ...], match: LogMatch, key: QuotedKey) -> Finding:
    quoted = ", ".join(f"{bank}:{_ints(sorted(int(i) for i, _ in entries))}" for bank, entries in key)
    has = f" (its digests are {', '.join(banks)})" if banks else ""
    return Finding(
        kind.check,
        "skip",
        f"{kind.check}_unquoted",
        f"the {kind.what} extends PCRs {_ints(match.unquoted)}{has}; the quote covers {quoted}: "
        "nothing in it is proven",
    )


def _mismatch(bad: list[PcrMatch], name: Callable[[int], str]) -> str:
    first = bad[0]
    where = "" if first.diverges_at is None else f"; first divergent: {name(first.diverges_at)}"
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return (
        f"{first.bank} PCR {first.pcr}: the log replays to {first.replayed.hex()[:16]} but the quote has "
        f"{first.quoted.hex()[:16]} ({first.proven} of {first.total} events proven){where}{more}"
    )


def _ints(values: list[int] | tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def _copy(value: Any) -> Any:
    """A copy of JSON-ready data: each verdict's facts are its own (the cached ones are shared)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _LogCache:
    """LRU of appraisals by (check, SHA-256 of the field, quoted values); bounded by entries and by
    the size of the logs held (what a parsed log costs in memory grows with it)."""

    def __init__(self, entries: int = 64, budget: int = 16 << 20) -> None:
        self._entries = entries
        self._budget = budget
        self._size = 0
        self._items: OrderedDict[_Key, tuple[_Outcome, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: _Key, size: int, make: Callable[[], _Outcome]) -> _Outcome:
        """The cached outcome for ``key``, or ``make()``'s, kept unless ``size`` alone is over budget.
        An EventLogError from ``make`` passes through and nothing is kept."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        outcome = make()  # outside the lock: two threads may both parse, both get equal results
        if size > self._budget:
            return outcome
        with self._lock:
            if key not in self._items:
                self._items[key] = (outcome, size)
                self._size += size
                while len(self._items) > self._entries or self._size > self._budget:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._size -= dropped
        return outcome

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


_CACHE = _LogCache()
